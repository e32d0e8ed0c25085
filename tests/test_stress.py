"""The stress runner: seeded variation, each fault injected and survived, nothing lost.

Runs are small (2 MiB guests, a few rounds) so the file takes seconds per
test; `multifd-engine stress` runs the same code for hours.
"""

from __future__ import annotations

import pytest

from engine import methods
from engine.config import Config
from engine.stress.plan import plan_migration
from engine.stress.runner import StressRun

pytestmark = pytest.mark.usefixtures("no_shm_leak")

NO_FAULTS = {"kill_rate": 0.0, "corrupt_rate": 0.0, "slow_reader_rate": 0.0,
             "stop_reader_rate": 0.0, "device_faults": False}


def config(stall: float = 10.0, channels: int = 2, **stress) -> Config:
    return Config.from_dict({
        "run": {"worker_restarts": 8},
        "workload": {"size": "2MiB"},
        "migration": {"channels": channels},
        "transport": {"stall_timeout": stall},
        "stress": {**NO_FAULTS, "rounds_per_migration": 2, **stress},
    })


def run(cfg: Config, rounds: int, seed: int):
    summary = StressRun(cfg, rounds=rounds, seed=seed).run()
    assert summary.pages_lost == 0, summary.format_text()
    assert summary.unexpected_errors == [], summary.format_text()
    assert summary.fatal_error is None
    return summary


def test_plans_repeat_from_the_seed_and_cover_every_choice():
    cfg = config(corrupt_rate=0.5, stop_reader_rate=0.5, slow_reader_rate=0.5, device_faults=True)
    plans = [plan_migration(cfg, 1234, i, 3) for i in range(60)]
    assert plans == [plan_migration(cfg, 1234, i, 3) for i in range(60)]
    assert plans != [plan_migration(cfg, 1235, i, 3) for i in range(60)]
    assert {p.page_size for p in plans} == {4096, 16384}
    assert {p.method for p in plans} == set(methods.names())
    assert {p.accelerator for p in plans if p.method == "qpl"} == {"software", "emulated"}
    assert {p.damage[2].kind for p in plans if p.damage} == {"flip", "truncate", "drop", "reorder"}
    assert any(p.stop_reader for p in plans) and any(p.slow_reader for p in plans)
    assert all((p.device_faults is not None) == (p.accelerator == "emulated") for p in plans)
    rounds = [p.round(r) for p in plans for r in range(3)]
    assert all(abs(sum(r.mix.__dict__.values()) - 1) < 1e-9 for r in rounds)
    assert len({round(r.dirty_fraction, 9) for r in rounds}) > 100
    assert plans[7].round(2) == plan_migration(cfg, 1234, 7, 3).round(2)


def test_every_round_verifies_across_methods_and_page_sizes():
    summary = run(config(), rounds=4, seed=11)
    assert summary.ok
    assert summary.rounds == summary.rounds_verified == 4 and summary.migrations == 2
    assert summary.pages > 512 and summary.packets > 0 and summary.wire_bytes > 0
    assert summary.peak_rss["coordinator"] > 0 and summary.peak_rss["worker"] > 0
    data = summary.to_dict()
    for key in ("seed", "rounds", "packets", "pages", "wire_bytes", "throughput_mb_s", "faults",
                "faults_injected", "faults_survived", "pages_lost", "unexpected_errors",
                "peak_rss"):
        assert key in data


def test_killed_workers_are_replaced_and_rounds_still_verify():
    cfg = config(kill_rate=0.3, methods=["qpl", "none"])
    summary = run(cfg, rounds=2, seed=5)
    kills = summary.faults["worker_kill"]
    assert kills.injected > 0 and kills.survived == kills.injected
    # a worker may finish its packet before the signal lands: that death is
    # noticed (and the worker replaced) only when it is next given work
    assert 1 <= summary.worker_restarts <= kills.injected
    assert summary.rounds_verified == 2


def test_damaged_packets_are_caught_by_a_typed_error_or_verify():
    cfg = config(stall=1.0, channels=1, corrupt_rate=1.0, rounds_per_migration=1,
                 methods=["none", "qpl", "zlib"], page_sizes=[4096])
    summary = run(cfg, rounds=4, seed=4)
    damage = {k: f for k, f in summary.faults.items() if k.startswith("corrupt_")}
    assert sum(f.injected for f in damage.values()) == 4
    assert all(f.survived == f.injected for f in damage.values())
    assert sum(f.detected_error for f in damage.values()) >= 1
    assert sum(f.detected_verify for f in damage.values()) >= 1
    for d in summary.detections:
        if d["how"] == "error":
            assert "channel" in d["detail"]           # the error names where it happened
        else:
            assert "pages differ, first at" in d["detail"]


def test_a_receiver_that_stops_reading_ends_in_a_stall_error():
    cfg = config(stall=1.0, channels=1, stop_reader_rate=1.0, rounds_per_migration=1,
                 methods=["none"])
    summary = run(cfg, rounds=1, seed=3)
    stop = summary.faults["stop_reader"]
    assert stop.injected >= 1 and stop.survived == stop.injected == stop.detected_error
    assert summary.elapsed_seconds < 30


def test_a_slow_receiver_keeps_the_channels_bounded():
    capacity = 128 << 10
    cfg = config(slow_reader_rate=1.0, rounds_per_migration=1, methods=["none"],
                 page_sizes=[4096], channel_capacity=capacity)
    summary = run(cfg, rounds=1, seed=8)
    assert summary.faults["slow_reader"].survived == 1
    assert summary.peak_channel_bytes <= 1344 + 128 * 4096      # one packet over the budget at most


def test_emulated_device_faults_are_survived_and_counted_alike_on_both_sides():
    cfg = config(methods=["qpl"], accelerators=["emulated"], device_faults=True)
    summary = run(cfg, rounds=2, seed=2)
    injected = {k: f.injected for k, f in summary.faults.items() if k.startswith("device_")}
    assert sum(injected.values()) > 0
    assert all(summary.faults[k].survived == v for k, v in injected.items())
    assert summary.device_counters["accepted"] > 0


def test_over_tcp_stalls_and_damage_are_caught_the_same_way():
    """Data channels over loopback sockets (engine.net.transport): a receiver that
    stops reading and damaged packets end as typed errors or verify findings."""
    cfg = config(stall=1.0, channels=1, transport="tcp", stop_reader_rate=1.0, corrupt_rate=1.0,
                 rounds_per_migration=1, methods=["none", "qpl"], page_sizes=[4096])
    summary = run(cfg, rounds=3, seed=6)
    stop = summary.faults["stop_reader"]
    assert stop.injected >= 1 and stop.survived == stop.injected
    damage = [f for k, f in summary.faults.items() if k.startswith("corrupt_")]
    assert all(f.survived == f.injected for f in damage)


def test_over_tcp_hostile_clients_are_dropped_and_nothing_is_lost():
    """A stranger connects ahead of every migration's channels; each is turned away."""
    from engine.stress.hostile_client import HOSTILE_KINDS

    cfg = config(channels=1, transport="tcp", hostile_client_rate=1.0, rounds_per_migration=1,
                 methods=["none"], page_sizes=[4096])
    plans = [plan_migration(cfg, 9, i, 1) for i in range(40)]
    assert {p.hostile_client for p in plans} == set(HOSTILE_KINDS)
    assert all(p.hostile_client is None for p in
               (plan_migration(config(hostile_client_rate=1.0), 9, i, 1) for i in range(5)))
    summary = run(cfg, rounds=3, seed=9)
    hostile = {k: f for k, f in summary.faults.items() if k.startswith("hostile_")}
    assert sum(f.injected for f in hostile.values()) == 3
    assert all(f.survived == f.injected for f in hostile.values())
    assert summary.rounds_verified == 3 and summary.ok
