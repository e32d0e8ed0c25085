"""What an executor hands back (``SweepOutcome``) and tells on the way (``Observer``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.sweep.job import ERROR, NOT_RUN, OK, VERIFY_FAILED, JobResult
from engine.sweep.spec import Job


class Observer(Protocol):
    """Told about jobs as they go (the progress line, the -v log)."""

    def started(self, job: Job) -> None: ...

    def progress(self, job: Job, round_index: int, done: int, total: int) -> None: ...

    def finished(self, job: Job, result: JobResult) -> None: ...


class Unobserved:
    """An Observer that ignores everything."""

    def started(self, job: Job) -> None:
        pass

    def progress(self, job: Job, round_index: int, done: int, total: int) -> None:
        pass

    def finished(self, job: Job, result: JobResult) -> None:
        pass


@dataclass
class SweepOutcome:
    """Every job's result, in job order (``not-run`` for a job that never finished)."""

    executor: str                       # "local", or the Dask scheduler's address
    results: list[JobResult]
    seconds: float                      # wall time of the whole sweep
    interrupted: bool = False           # Ctrl-C: the finished results are kept

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> int:
        return self.count(ERROR) + self.count(VERIFY_FAILED)

    @property
    def all_ok(self) -> bool:
        return self.count(OK) == len(self.results)

    @property
    def retried(self) -> list[int]:
        return [r.index for r in self.results if r.retried]

    @property
    def not_run(self) -> int:
        return self.count(NOT_RUN)
