"""A worker that raises or dies ends the run with an error naming it: no hang."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from engine import Engine
from engine.channels import NullSink
from engine.config import Config
from engine.errors import BrokenWorker, RemoteTraceback, WorkerError

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def config() -> Config:
    return Config.from_dict({"workload": {"size": "2MiB"}, "migration": {"channels": 2},
                             "run": {"verify": False}, "sink": {"kind": "null"}})


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
