"""Whole runs: send -> channels -> receive -> verify, with real worker processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Engine, Receiver, methods, run_batch, wire
from engine.channels import MemoryChannel
from engine.config import Config
from engine.inspection import inspect_channels
from engine.ram import RamBlock
from engine.workloads import fill_guest_memory

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def small_config(**sections) -> Config:
    data = {
        "run": {"rounds": 3},
        "workload": {"size": "4MiB", "seed": 7, "dirty_fraction": 0.1},
        "migration": {"channels": 2},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Config.from_dict(data)


@pytest.mark.parametrize("method", methods.names())   # a new method is tested here unasked
@pytest.mark.parametrize("channels", [1, 2])
def test_rounds_verify_byte_for_byte(method, channels):
    report = run_batch(small_config(migration={"method": method, "channels": channels}))
    totals = report.totals()
    assert report.verified is True
    assert [r.mismatched_pages for r in report.rounds] == [0, 0, 0]
    assert report.rounds[0].dirty_pages == 1024          # round 0 sends every page
    assert 0 < report.rounds[1].dirty_pages < 1024
    assert totals["pages"] == totals["normal_pages"] + totals["zero_pages"]
    assert totals["zero_pages"] > 0
    assert totals["sync_packets"] == 3 * channels
    assert len(report.send_channels) == channels
    if channels == 2:
        assert all(c["packets"] > 0 for c in report.send_channels)
    if methods.get(method).page_length_table:
        assert totals["raw_pages"] > 0                  # incompressible pages went raw
        assert totals["compressed_pages"] + totals["raw_pages"] == totals["normal_pages"]
        assert report.page_sizes["per_page"] is True
    if methods.get(method).flag == wire.FLAG_NOCOMP:
        assert totals["payload_bytes"] == totals["normal_pages"] * 4096
    else:
        assert totals["ratio"] > 2.0


def test_old_qemu_peer_gets_no_zero_pages():
    report = run_batch(small_config(migration={"method": "none", "qemu_version": "7.2"}))
    assert report.verified is True
    assert report.totals()["zero_pages"] == 0
    assert report.totals()["normal_pages"] == report.totals()["pages"]


@pytest.mark.parametrize("page_size", [1024, 16384])
def test_other_page_sizes(page_size):
    report = run_batch(small_config(migration={"page_size": page_size}))
    assert report.verified is True
    assert report.rounds[0].dirty_pages == (4 << 20) // page_size


def test_file_sink_streams_are_readable_by_inspect(tmp_path):
    out = tmp_path / "out"
    report = run_batch(small_config(sink={"kind": "file", "dir": str(out)},
                                    run={"report": str(tmp_path / "r.json")}))
    files = sorted(out.glob("channel-*.mfd"))
    assert [f.name for f in files] == ["channel-0.mfd", "channel-1.mfd"]
    assert sum(f.stat().st_size for f in files) == report.bytes_on_wire
    result = inspect_channels(files)
    assert result.method == "qpl"
    assert sum(c.packets for c in result.channels) == report.totals()["packets"] + 6
    assert sum(c.normal_pages for c in result.channels) == report.totals()["normal_pages"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["totals"]["verified"] is True
    assert saved["schema_version"] == 3 and saved["kind"] == "run"


def test_library_engine_and_receiver_with_own_blocks():
    with RamBlock.create("ram0", 2 << 20, 4096) as src, RamBlock.create("ram0", 2 << 20, 4096) as dst:
        fill_guest_memory(src, seed=3)
        channels = [MemoryChannel(0), MemoryChannel(1)]
        config = Config.from_dict({"migration": {"channels": 2}})
        with Engine(config, blocks=[src], sinks=channels) as engine, \
                Receiver([dst], channels, method="qpl", page_size=4096) as receiver:
            receiver.start()
            engine.send(np.arange(src.pages, dtype=np.uint64))
            receiver.receive_round()
            assert receiver.verify([src]).ok
            # a second round touching a few pages, one of them made zero
            src.array[:4096] = 0
            src.array[5 * 4096:5 * 4096 + 10] = 0xAB
            engine.send(np.array([0, 5], dtype=np.uint64))
            receiver.receive_round()
            assert receiver.verify([src]).ok
            assert not dst.array[:4096].any()


def test_verify_names_pages_that_differ():
    with RamBlock.create("ram0", 1 << 20, 4096) as src, RamBlock.create("ram0", 1 << 20, 4096) as dst:
        fill_guest_memory(src, seed=5)
        channels = [MemoryChannel(0)]
        config = Config.from_dict({"migration": {"channels": 1}})
        with Engine(config, blocks=[src], sinks=channels) as engine, \
                Receiver([dst], channels, method="qpl", page_size=4096) as receiver:
            receiver.start()
            engine.send(np.arange(src.pages, dtype=np.uint64))
            receiver.receive_round()
            src.array[7 * 4096] ^= 0xFF          # changed but never sent
            result = receiver.verify([src])
            assert result.mismatched_pages == 1
            assert result.first_offsets == {"ram0": [7 * 4096]}


def test_a_failing_receiver_stops_an_overlapped_round(monkeypatch):
    """The receiver reads while the workers send (memory channels are socket
    pairs); when it fails, the sender, blocked on a full channel, must fail too
    instead of waiting for ever, and the receiver's error is the one raised."""
    from engine.receiver import Receiver as RealReceiver

    def refuse(self):
        raise RuntimeError("receiver refused the round")

    monkeypatch.setattr(RealReceiver, "receive_round", refuse)
    # method none, 4 MiB: far more than a socket pair buffers
    with pytest.raises(RuntimeError, match="receiver refused the round"):
        run_batch(small_config(migration={"method": "none", "channels": 2}, run={"rounds": 1}))


@pytest.mark.parametrize("raised", [RuntimeError("the sender failed"), KeyboardInterrupt()])
def test_a_failing_sender_keeps_its_own_error_in_an_overlapped_round(monkeypatch, raised):
    """The sender fails mid-round: its error (or Ctrl-C) is raised, not the
    "channel ended" that the receiver meets once the channels close."""
    from engine.batch import Engine as BatchEngine

    def send_then_fail(self, batch, **kwargs):
        raise raised                    # before the round's SYNC: the receiver waits

    monkeypatch.setattr(BatchEngine, "send", send_then_fail)
    with pytest.raises(type(raised)):
        run_batch(small_config(migration={"method": "none", "channels": 2}, run={"rounds": 1}))


def test_an_overlapped_round_reports_send_and_receive():
    report = run_batch(small_config(run={"rounds": 2}))
    assert report.verified is True
    for r in report.rounds:
        # the receiver started with the round and can only finish after the last SYNC
        assert r.receive_seconds >= 0.9 * r.send_seconds


def test_the_same_seed_puts_the_same_bytes_on_every_channel(tmp_path):
    """Packets go to the channels strictly in turn, so nothing in the split depends on timing."""
    channels = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        run_batch(Config.from_dict({"run": {"rounds": 2}, "workload": {"size": "4MiB"},
                                    "migration": {"channels": 3},
                                    "sink": {"kind": "file", "dir": str(out)}}))
        channels.append([(out / f"channel-{i}.mfd").read_bytes() for i in range(3)])
    assert channels[0] == channels[1]
