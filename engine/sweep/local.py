"""Running a sweep's jobs one after another on this machine.

Each job is a whole ``run``: its worker processes have every core, as
``run`` gives them.  A failing job is recorded and the next one starts;
Ctrl-C stops the job under way (the engine releases its workers and
shared memory) and the outcome keeps every finished result.
"""

from __future__ import annotations

import time

from engine.sweep.job import NOT_RUN, JobResult, run_job
from engine.sweep.outcome import Observer, SweepOutcome, Unobserved
from engine.sweep.spec import Sweep


def run_locally(sweep: Sweep, observer: Observer | None = None) -> SweepOutcome:
    """Run every job here, in order; never raises for a failing job or Ctrl-C."""
    observer = observer or Unobserved()
    results = [JobResult(job.index, NOT_RUN) for job in sweep.jobs]
    outcome = SweepOutcome("local", results, 0.0)
    started = time.perf_counter()
    try:
        for job in sweep.jobs:
            observer.started(job)
            result = run_job(job, progress=lambda r, d, t, job=job: observer.progress(job, r, d, t))
            results[job.index] = result
            observer.finished(job, result)
    except KeyboardInterrupt:
        outcome.interrupted = True
    outcome.seconds = time.perf_counter() - started
    return outcome
