"""One job of a sweep: one verified ``run`` of the engine, and what became of it.

``run_job`` is what both executors call, here or on a cluster node: it
builds the job's config (validated again where it runs: a missing image
on a node is that job's error), runs the rounds with ``run_batch`` and
returns a ``JobResult`` holding the run report as JSON data.  A job that
fails is a result with its error, not an exception, unless the caller
asks to see the errors worth retrying (``raise_transient``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from engine.errors import ConfigError, ReportError, VerifyError, WireError
from engine.sweep.spec import Job

OK, VERIFY_FAILED, ERROR, NOT_RUN = "ok", "verify-failed", "error", "not-run"
# failures that would happen again on any node: recorded at once, never retried
DETERMINISTIC = (ConfigError, WireError, VerifyError, ReportError)

Progress = Callable[[int, int, int], None]   # run_batch's: (round, packets done, packets in round)


@dataclass
class JobResult:
    index: int
    status: str                          # ok, verify-failed, error, not-run
    error: str | None = None             # "Type: message" when status is error
    report: dict[str, Any] | None = None  # the run report (kind "run") as JSON data
    seconds: float = 0.0                 # wall time on the node, loading the guest included
    host: str = ""                       # the node (host name, pid) it last ran on
    attempts: int = 0                    # times it was started (> 1: retried)
    workers: list[str] = field(default_factory=list)   # cluster: the Dask workers it started on

    @property
    def retried(self) -> bool:
        return self.attempts > 1

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["retried"] = self.retried
        return out


def run_job(job: Job, *, progress: Progress | None = None,
            raise_transient: bool = False) -> JobResult:
    """Run ``job`` and return its result; KeyboardInterrupt propagates.

    ``raise_transient``: errors not in ``DETERMINISTIC`` (a worker process
    killed, shared memory full, a library failing) are raised, so that a
    cluster's retry mechanism runs the job again; otherwise they are recorded.
    """
    from engine.batch import run_batch
    from engine.config import Config

    started = time.perf_counter()
    host = f"{socket.gethostname()} pid {os.getpid()}"
    try:
        report = run_batch(Config.from_dict(job.config), progress=progress)
    except Exception as exc:
        if raise_transient and not isinstance(exc, DETERMINISTIC):
            raise
        return JobResult(job.index, ERROR, error=describe(exc),
                         seconds=time.perf_counter() - started, host=host, attempts=1)
    status = OK if report.verified else VERIFY_FAILED
    error = None if report.verified else "verify: pages differ between source and destination"
    return JobResult(job.index, status, error=error, report=report.to_dict(),
                     seconds=time.perf_counter() - started, host=host, attempts=1)


def describe(exc: BaseException) -> str:
    """One line naming the error: ``Type: message``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
