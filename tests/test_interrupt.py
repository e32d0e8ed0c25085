"""Ctrl-C in the middle of a run: exit status 130, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def own_segments(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{pid}-")]


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_ctrl_c_releases_workers_and_shared_memory(tmp_path):
    cfg = tmp_path / "big.toml"
    cfg.write_text('[run]\nrounds = 50\n[workload]\nsize = "64MiB"\n[migration]\nchannels = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(cfg), "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(own_segments(proc.pid)) < 3:
            time.sleep(0.1)                   # RAM block + two slot segments: workers are up
        assert len(own_segments(proc.pid)) >= 3, "the run never got going"
        workers = children_of(proc.pid)
        assert _threads_taking_sigint(proc.pid) == []     # numpy's BLAS threads included
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)    # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert own_segments(proc.pid) == []
    # children (workers, and multiprocess's resource tracker, which leaves
    # when its parent's pipe closes) are gone within a few seconds
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- a Ctrl-C while a worker starts is not lost --------------------------
# The coordinator ignores SIGINT for the moment it starts a worker (the
# worker inherits "ignored") and blocks it in the main thread, so that the
# Ctrl-C stays pending.  Another thread that could take SIGINT would take it
# then and drop it (engine/threads.py): numpy's BLAS thread did, and the
# stress command ran on for minutes after a Ctrl-C.

def _ctrl_c_while_a_worker_starts() -> bool:
    """True when the Ctrl-C sent inside the start window reaches the main thread."""
    from engine.coordinator import _sigint_ignored_by_children

    try:
        with _sigint_ignored_by_children():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)            # other threads had every chance to take it
        time.sleep(0.2)
    except KeyboardInterrupt:
        return True
    return False


def _threads_taking_sigint(pid: int | None = None) -> list[int]:
    from engine.threads import threads_taking

    return threads_taking(signal.SIGINT, pid)


def test_ctrl_c_while_a_worker_starts_beside_a_foreign_thread():
    """A thread we did not start (a library's) takes SIGINT: the Ctrl-C still arrives."""
    import threading

    done = threading.Event()
    thread = threading.Thread(target=done.wait, daemon=True)
    thread.start()
    try:
        assert _threads_taking_sigint()
        assert _ctrl_c_while_a_worker_starts()
    finally:
        done.set()
        thread.join()


_OURS_ONLY = """
import signal, threading
from engine.cli import _import_numpy
_import_numpy()                                  # as the command line does, first
from engine import threads
from workers.workqueue.emulated import EmulatedDevice
from tests.test_interrupt import _ctrl_c_while_a_worker_starts, _threads_taking_sigint

done = threading.Event()
waiter = threads.start_thread(done.wait, name="test-waiter")
pool = threads.ThreadPool(2, thread_name_prefix="test-pool")
futures = [pool.submit(done.wait) for _ in range(2)]
with EmulatedDevice(clients=1, page_count=16):
    print("threads", len(threading.enumerate()), "taking SIGINT", _threads_taking_sigint(),
          "others_take", threads.others_take(signal.SIGINT),
          "arrives", _ctrl_c_while_a_worker_starts())
done.set()
"""


def test_the_engines_threads_leave_ctrl_c_to_the_main_thread():
    """Ours (Python and the emulated device's C threads) and numpy's block it: the shield stays up."""
    result = subprocess.run([sys.executable, "-c", _OURS_ONLY], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "threads 4 taking SIGINT [] others_take False arrives True"
