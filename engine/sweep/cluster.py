"""Running a sweep's jobs as tasks of a Dask distributed scheduler (``sweep --cluster``).

Needs the optional extra ``cluster`` (``pip install 'multifd-engine[cluster]'``)
here and on every node; importing this module without Dask raises
ModuleNotFoundError, which the command turns into that hint.

- Each job is one task asking for the worker resource ``node=1``: with every
  worker started ``--resources node=1`` (one per node), two jobs never share
  a node's cores and ``/dev/shm``.  On its node a task runs the engine as
  ``run`` does (worker processes, shared memory, the C codec), in a process
  of its own (``engine.sweep.node``).
- Images are read from the path the sweep names, which every node must see;
  a node that cannot read it fails that job (its ``ConfigError``), no other.
- A task sends back the job's ``JobResult``: the same run report JSON.
- Dask's own mechanisms retry: a task on a worker that dies is run again on
  another one (bounded by the scheduler's ``distributed.scheduler.allowed-failures``),
  and a task that raised an error worth retrying runs again up to
  ``sweep.retries`` times (``retries=``).  Every start of a task is logged as
  a Dask event (topic ``TOPIC``), so the report knows which jobs ran twice.
- Ctrl-C: the queued tasks are cancelled, and the running ones see the
  sweep's cancel ``Event`` within half a second and interrupt their job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from distributed import Client, Event, get_worker

from engine.errors import EngineError
from engine.ram import remove_stale_segments
from engine.sweep.job import ERROR, NOT_RUN, JobResult, describe
from engine.sweep.outcome import Observer, SweepOutcome, Unobserved
from engine.sweep.spec import Job, Sweep
from engine.threads import ThreadPool

TOPIC = "multifd-engine-sweep"
NODE = {"node": 1}                  # the worker resource each job asks for
CONNECT_SECONDS = 10.0              # to reach the scheduler
WORKER_WAIT_SECONDS = 30.0          # for a worker offering `node` to join
CANCEL_POLL_SECONDS = 0.5           # a running task checks the cancel event this often
STOP_WAIT_SECONDS = 15.0            # Ctrl-C: wait this long for running jobs to stop
_POLL_SECONDS = 0.1                 # the client looks for finished tasks this often
_SHOW_SECONDS = 0.5                 # and asks which jobs run where this often (progress line)


class ClusterUnavailable(EngineError):
    """The scheduler cannot be reached, or no worker offers the resource ``node``."""


# ---- on a node ------------------------------------------------------------

class JobProcessFailed(EngineError):
    """The job's process on the node failed in a way worth a retry (Dask ``retries=``)."""


def run_task(job: Job, sweep_id: str) -> JobResult:
    """One job as one Dask task, on the node it landed on (in a process of its own:
    ``engine.sweep.node`` says why)."""
    worker = get_worker()
    attempt = uuid.uuid4().hex
    note = {"sweep": sweep_id, "job": job.index, "attempt": attempt, "worker": worker.address}
    worker.log_event(TOPIC, {**note, "event": "start"})
    try:
        remove_stale_segments()         # left by a job process on this node that was killed
        result = _run_in_process(job, Event(f"{sweep_id}-cancel"))
        result.workers = [worker.address]
        return result
    finally:
        worker.log_event(TOPIC, {**note, "event": "end"})


def _run_in_process(job: Job, cancel: Event) -> JobResult:
    proc = subprocess.Popen([sys.executable, "-m", "engine.sweep.node"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = _wait(proc, json.dumps(dataclasses.asdict(job)), cancel)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if out is None:
        return JobResult(job.index, NOT_RUN, error="cancelled: the sweep was interrupted")
    try:
        data = json.loads(out)
    except ValueError:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
        raise JobProcessFailed(f"job {job.index}: its process ended without a result: {last}") from None
    if "transient" in data:
        raise JobProcessFailed(f"job {job.index}: {data['transient']}")
    return JobResult(**{k: v for k, v in data.items() if k != "retried"})


def _wait(proc: subprocess.Popen, job_text: str, cancel: Event) -> tuple[str | None, str]:
    """(stdout, stderr) of the job process; (None, "") when the sweep was cancelled first."""
    reader = ThreadPool(1, thread_name_prefix="mfd-job-output")
    output = reader.submit(proc.communicate, job_text)
    try:
        while True:
            try:
                return output.result(timeout=CANCEL_POLL_SECONDS)
            except FutureTimeout:
                if cancel.is_set():
                    proc.send_signal(signal.SIGINT)      # the job stops as `run` does on Ctrl-C
                    try:
                        output.result(timeout=STOP_WAIT_SECONDS)
                    except FutureTimeout:
                        pass
                    return None, ""
    finally:
        reader.shutdown(wait=False)


# ---- on the machine that runs `sweep` -----------------------------------------

class _Attempts:
    """Every task start and end of one sweep, from the Dask events (thread-safe appends)."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id
        self.events: dict[str, dict[str, Any]] = {}     # attempt -> its start note (+ "ended")

    def record(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("sweep") != self.sweep_id:
            return
        entry = self.events.setdefault(msg["attempt"], {**msg, "ended": False})
        if msg.get("event") == "end":
            entry["ended"] = True

    def of_job(self, index: int) -> list[dict[str, Any]]:
        return [e for e in list(self.events.values()) if e["job"] == index]

    def running(self, alive: set[str]) -> list[int]:
        return [e["job"] for e in list(self.events.values())
                if not e["ended"] and e["worker"] in alive]


def run_on_cluster(sweep: Sweep, address: str, observer: Observer | None = None) -> SweepOutcome:
    """Run every job as a task of the scheduler at ``address``; never raises for a failing
    job or Ctrl-C.  ``ClusterUnavailable`` when the cluster cannot take the jobs."""
    observer = observer or Unobserved()
    client = _connect(address)
    try:
        _wait_for_node_workers(client, address)
        return _run(client, sweep, address, observer)
    finally:
        client.close(timeout=CONNECT_SECONDS)


def _connect(address: str) -> Client:
    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address}: "
                                 f"{describe(exc)}") from None


def _node_workers(client: Client) -> set[str]:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return {a for a, w in workers.items() if w.get("resources", {}).get("node", 0) >= 1}


def _wait_for_node_workers(client: Client, address: str) -> None:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while not _node_workers(client):
        if time.monotonic() > deadline:
            raise ClusterUnavailable(
                f"no worker of the scheduler at {address} offers the resource node=1 after "
                f"{WORKER_WAIT_SECONDS:.0f} s; start one per node with: dask worker {address} "
                "--resources node=1 --nworkers 1")
        time.sleep(0.5)


def _run(client: Client, sweep: Sweep, address: str, observer: Observer) -> SweepOutcome:
    sweep_id = f"mfd-sweep-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    attempts = _Attempts(sweep_id)
    client.subscribe_topic(TOPIC, attempts.record)
    results = [JobResult(job.index, NOT_RUN) for job in sweep.jobs]
    outcome = SweepOutcome(address, results, 0.0)
    started = time.perf_counter()
    futures = {client.submit(run_task, job, sweep_id, key=f"{sweep_id}-job-{job.index}",
                             resources=NODE, retries=sweep.settings.retries, pure=False): job
               for job in sweep.jobs}
    pending = set(futures)
    shown = 0.0
    try:
        while pending:
            if client.status in ("closing", "closed"):     # the scheduler is gone for good
                for future in pending:
                    job = futures[future]
                    results[job.index] = JobResult(job.index, ERROR,
                                                   error=f"lost the Dask scheduler at {address}")
                break
            done = {f for f in pending if f.done()}
            pending -= done
            for future in sorted(done, key=lambda f: futures[f].index):
                job = futures[future]
                results[job.index] = _result_of(future, job, attempts)
                observer.finished(job, results[job.index])
            if time.monotonic() - shown >= _SHOW_SECONDS:
                shown = time.monotonic()
                _show_running(observer, sweep, attempts, client)
            if not done:
                time.sleep(_POLL_SECONDS)
    except KeyboardInterrupt:
        outcome.interrupted = True
        _stop(client, sweep_id, pending, attempts)
    outcome.seconds = time.perf_counter() - started
    if client.status == "running":
        _final_attempts(client, attempts, results)
        client.unsubscribe_topic(TOPIC)
    return outcome


def _result_of(future: Any, job: Job, attempts: _Attempts) -> JobResult:
    if future.status == "finished":
        result = future.result()
    elif future.status == "error":     # raised on every try, or its workers kept dying
        result = JobResult(job.index, ERROR, error=describe(future.exception()))
    else:
        result = JobResult(job.index, NOT_RUN, error=f"task {future.status}")
    tries = attempts.of_job(job.index)
    result.attempts = max(len(tries), result.attempts)
    result.workers = [t["worker"] for t in tries] or result.workers
    return result


def _show_running(observer: Observer, sweep: Sweep, attempts: _Attempts, client: Client) -> None:
    show = getattr(observer, "running", None)
    if show is not None:
        show([sweep.jobs[i].label for i in attempts.running(set(client.scheduler_info(
            n_workers=-1).get("workers", {})))])


def _stop(client: Client, sweep_id: str, pending: set[Any], attempts: _Attempts) -> None:
    """Ctrl-C: drop the queued tasks, tell the running ones to stop, wait (bounded) for them."""
    try:
        Event(f"{sweep_id}-cancel", client=client).set()
        client.cancel(list(pending))
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and attempts.running(_node_workers(client)):
            time.sleep(_POLL_SECONDS)
    except KeyboardInterrupt:
        pass                            # a second Ctrl-C: leave now


def _final_attempts(client: Client, attempts: _Attempts, results: list[JobResult]) -> None:
    """Events that arrived after their task's result: count them too."""
    try:
        for event in client.get_events(TOPIC):
            attempts.record(event)
    except (OSError, TimeoutError):
        return
    for result in results:
        tries = attempts.of_job(result.index)
        if len(tries) > result.attempts:
            result.attempts = len(tries)
            result.workers = [t["worker"] for t in tries]
