"""A worker that raises ends the run with an error naming it; one that dies
is replaced and given its packets again, up to run.worker_restarts times in a
row; past that (or with restarts off) the run ends naming it: never a hang."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from engine import Engine, Receiver
from engine.channels import MemoryChannel, NullSink
from engine.config import Config
from engine.errors import BrokenWorker, RemoteTraceback, WorkerError
from engine.ram import RamBlock
from engine.workloads import fill_guest_memory

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def config(restarts: int = 0) -> Config:
    return Config.from_dict({"workload": {"size": "2MiB"}, "migration": {"channels": 2},
                             "run": {"verify": False, "worker_restarts": restarts},
                             "sink": {"kind": "null"}})


def test_worker_exception_names_worker_packet_and_cause():
    with pytest.raises(WorkerError) as caught:
        with Engine(config(), fail_on_packet=3) as engine:
            engine.send(np.arange(512, dtype=np.uint64))
    error = caught.value
    assert error.packet_num == 3
    assert error.worker_id in (0, 1)
    assert error.kind == "packet"
    assert "injected failure on packet 3" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "Traceback" in error.__cause__.text


def test_killed_worker_is_noticed():
    with pytest.raises(BrokenWorker) as caught:
        with Engine(config()) as engine:
            victim = engine.coordinator.workers[1]
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.join(5)
            engine.send(np.arange(512, dtype=np.uint64))
    assert caught.value.worker_id == 1
    assert "died" in str(caught.value)
    assert "-9" in str(caught.value)


def test_all_worker_processes_are_gone_after_close():
    with Engine(config()) as engine:
        pids = engine.coordinator.worker_pids()
        engine.send(np.arange(64, dtype=np.uint64))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_batch_is_refused_before_any_worker_sees_it():
    with Engine(config()) as engine:
        with pytest.raises(ValueError, match="outside block"):
            engine.send(np.array([10**6], dtype=np.uint64))
        with pytest.raises(ValueError, match="twice"):
            engine.send(np.array([1, 1], dtype=np.uint64))
        assert isinstance(engine.sinks[0], NullSink)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_killed_worker_is_replaced_and_nothing_is_lost_or_repeated():
    """Two workers SIGKILLed mid-packet: replacements get the packets again and
    the receiver sees every packet exactly once, in packet_num order."""
    killed: list[tuple[int, int, int]] = []

    def kill_first_tries(worker_id: int, pid: int, packet_num: int, attempt: int) -> None:
        if packet_num in (2, 5) and attempt == 1:
            killed.append((worker_id, pid, packet_num))
            _kill(pid)

    cfg = Config.from_dict({"migration": {"channels": 2, "method": "qpl"},
                            "run": {"worker_restarts": 1}})
    channels = [MemoryChannel(0), MemoryChannel(1)]
    with RamBlock.create("pc.ram", 1024 * 4096, 4096) as src, \
            RamBlock.create("pc.ram", 1024 * 4096, 4096) as dst:
        fill_guest_memory(src, seed=5)
        with Engine(cfg, blocks=[src], sinks=channels, before_dispatch=kill_first_tries) as engine, \
                Receiver([dst], channels, method="qpl", page_size=4096) as rx:
            first_pids = engine.coordinator.worker_pids()
            rx.start()
            engine.send(np.arange(1024, dtype=np.uint64))
            numbers = []
            for reader in rx.readers:
                seen = []
                while not (info := reader.next_packet()).is_sync:
                    seen.append(info.packet_num)
                assert seen == sorted(seen)              # per-channel order kept
                numbers += seen
            assert sorted(numbers) == list(range(8))    # 1024 pages / 128: each packet once
            assert sum(c["normal_pages"] + c["zero_pages"] for c in rx.counters()) == 1024
            assert rx.verify([src]).ok
            counters = engine.coordinator.channel_counters()
            assert sum(c.get("restarts", 0) for c in counters) == 2
            assert sum(c["packets"] for c in counters) == 8
            assert set(engine.coordinator.worker_pids()).isdisjoint({pid for _, pid, _ in killed})
            assert set(engine.coordinator.worker_pids()) != set(first_pids)
    assert len(killed) == 2


def test_worker_that_keeps_dying_ends_the_run_naming_it():
    def kill_every_try_of_packet_3(worker_id: int, pid: int, packet_num: int, attempt: int) -> None:
        if packet_num == 3:
            _kill(pid)

    with pytest.raises(BrokenWorker) as caught:
        with Engine(config(restarts=2), before_dispatch=kill_every_try_of_packet_3) as engine:
            engine.send(np.arange(512, dtype=np.uint64))
    text = str(caught.value)
    in_flight = text.split("packets [")[1].split("]")[0].split(", ")
    assert "3" in in_flight and caught.value.packet_num == int(in_flight[0])
    assert text.startswith(f"worker {caught.value.worker_id}")
    assert "died 3 times in a row" in text and "run.worker_restarts = 2" in text
    assert "exit code -9" in text


def test_a_dead_stream_worker_is_not_replaced():
    """zlib keeps one stream per channel in its worker: a replacement could not
    continue it, so the death ends the run and says why."""
    def kill_packet_1(worker_id: int, pid: int, packet_num: int, attempt: int) -> None:
        if packet_num == 1:
            _kill(pid)

    cfg = Config.from_dict({"workload": {"size": "2MiB"},
                            "migration": {"channels": 2, "method": "zlib"},
                            "run": {"verify": False, "worker_restarts": 3},
                            "sink": {"kind": "null"}})
    with pytest.raises(BrokenWorker, match="keeps one stream per channel") as caught:
        with Engine(cfg, before_dispatch=kill_packet_1) as engine:
            engine.send(np.arange(512, dtype=np.uint64))
    assert "exit code -9" in str(caught.value)


@pytest.mark.parametrize("method", ["none", "qpl"])
@pytest.mark.parametrize("wrong, says", [
    ([0, 1, 2, 3], "accounted for"),                 # one page short
    ([0, 1, 2, 3, 200], "other pages"),              # a page the packet did not have
    ([0, 1, 2, 3, 3], "other pages"),                # a page twice, one lost
])
def test_a_result_that_does_not_account_for_its_packets_pages_is_refused(method, wrong, says):
    """A worker must hand back exactly its packet's pages: the header is made from them
    and method none's payload is read from the RAM block at them."""
    from engine.coordinator import _InFlight
    from workers.messages import Result

    cfg = Config.from_dict({"workload": {"size": "1MiB"}, "run": {"rounds": 1},
                            "migration": {"channels": 1, "method": method}})
    sink = MemoryChannel(0)
    with Engine(cfg, sinks=[sink]) as engine:
        coordinator = engine.coordinator
        w = coordinator.workers[0]
        slot = w.free_slots[0]
        w.in_flight[7] = _InFlight(slot, 0, np.arange(5, dtype=np.uint64))
        before = sink.bytes_written
        forged = Result(7, slot, normal_num=len(wrong), zero_num=5 - len(wrong),
                        next_packet_size=len(wrong) * 4096,
                        pages=np.array(wrong, dtype=np.uint64), stats={})
        with pytest.raises(WorkerError, match=says) as caught:
            coordinator._merge_result(w, forged)
        assert caught.value.kind == "lost-pages"
        assert sink.bytes_written == before              # nothing of it was written
