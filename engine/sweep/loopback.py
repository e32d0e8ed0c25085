"""A real Dask cluster confined to 127.0.0.1, for the tests and ``bench/sweep_overhead.py``.

``dask scheduler`` and ``dask worker`` processes started as the docs tell
a cluster's owner to (``--resources node=1 --nworkers 1 --nthreads 1``),
stopped through their own PIDs.  They stay in the caller's session: with
Linux's autogroup scheduling a new session is a CPU group of its own, and
on a busy machine its jobs ran 2-4 times slower than the caller's, which
would skew any comparison with local runs.  Every listener
is bound to 127.0.0.1: the Dask protocol (``--host``) and the HTTP
endpoint a scheduler and a worker open even without a dashboard
(``--dashboard-address``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
START_SECONDS = 90.0


def dask_command(*args: str) -> list[str]:
    """The ``dask`` command of this Python (``python -m dask``: found wherever pip put scripts)."""
    return [sys.executable, "-m", "dask", *args]


class LoopbackCluster:
    """A scheduler and ``workers`` workers on 127.0.0.1; logs in ``directory``.  A context manager."""

    def __init__(self, directory: Path, workers: int = 2) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen] = []
        try:
            self.scheduler = self._start_scheduler()
            self.address = self._address()
            self.nannies = [self.start_worker(f"node-{i}") for i in range(workers)]
            if workers:
                self.wait_for_workers(workers)
        except BaseException:
            self.stop()
            raise

    def _start(self, argv: list[str], name: str) -> subprocess.Popen:
        with open(self.directory / f"{name}.log", "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _start_scheduler(self) -> subprocess.Popen:
        self.scheduler_file = self.directory / "scheduler.json"
        return self._start(dask_command("scheduler", "--host", HOST, "--port", "0", "--no-dashboard",
                                        "--dashboard-address", f"{HOST}:0",
                                        "--scheduler-file", str(self.scheduler_file)), "scheduler")

    def _address(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                address = json.loads(self.scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                if self.scheduler.poll() is not None:
                    raise RuntimeError(f"dask scheduler exited; see {self.directory}/scheduler.log")
                time.sleep(0.1)
                continue
            if not address.startswith(f"tcp://{HOST}:"):
                raise RuntimeError(f"the scheduler listens on {address}, not on {HOST}")
            return address
        raise RuntimeError(f"dask scheduler did not start; see {self.directory}/scheduler.log")

    def start_worker(self, name: str) -> subprocess.Popen:
        """One worker ("node") with the resource node=1; returns its nanny process."""
        return self._start(dask_command("worker", self.address, "--host", HOST, "--nworkers", "1",
                                        "--nthreads", "1", "--resources", "node=1",
                                        "--no-dashboard", "--dashboard-address", f"{HOST}:0",
                                        "--name", name), name)

    def wait_for_workers(self, count: int, timeout: float = START_SECONDS) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=timeout)

    def stop(self) -> None:
        """Workers first, then the scheduler: SIGTERM, SIGKILL after 20 s."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
