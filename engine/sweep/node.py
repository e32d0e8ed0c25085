"""One job in a process of its own on a cluster node: ``python -m engine.sweep.node``.

The engine starts its workers with ``spawn``, and a spawned process
imports its parent's ``__main__`` first: in a Dask worker that is the
``dask`` command, whose imports cost every engine worker about half a
second.  A job in a process of its own also stops on SIGINT exactly as
``run`` stops on Ctrl-C, and leaves nothing behind in the long-lived Dask
worker.  So the task (``engine.sweep.cluster.run_task``) starts this
process and only waits for it: the job's JSON on standard input, its
``JobResult`` as JSON on standard output (``{"transient": "..."}`` for an
error worth a retry).  SIGINT stops the job as Ctrl-C stops
``run``; a process whose Dask worker died stops itself the same way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from engine.sweep.job import describe, run_job
from engine.sweep.spec import Job
from engine.threads import start_thread

_PARENT_POLL_SECONDS = 0.5


def _stop_when_orphaned(parent: int) -> None:
    """The worker that started us died: interrupt the job, which releases its shared memory."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGINT)


def main() -> int:
    job = Job(**json.load(sys.stdin))
    start_thread(_stop_when_orphaned, os.getppid(), name="mfd-orphan-watch")
    try:
        result = run_job(job, raise_transient=True)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:        # worth a retry (not one of job.DETERMINISTIC)
        json.dump({"transient": describe(exc)}, sys.stdout)
        return 0
    json.dump(result.as_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
