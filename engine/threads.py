"""Threads the engine starts never take Ctrl-C, SIGTERM or SIGHUP.

Linux hands a signal sent to the process to any thread that does not block
it.  Python runs its handlers in the main thread whichever thread took the
signal, so letting other threads take it gains nothing, and can lose it:
while the coordinator starts a worker, SIGINT is ignored process-wide for a
moment (the worker inherits "ignored") and blocked in the main thread (so a
Ctrl-C stays pending until the handler is back).  Another thread that does
not block SIGINT takes that Ctrl-C instead and, the disposition being
"ignore" right then, drops it: the run goes on as if no key was pressed.

So every thread of ours comes from here, created while the signals are
blocked in the creating thread: a new thread inherits that mask from its
first instruction on.  (The emulated device's C threads do the same in C;
the command line imports numpy, whose BLAS starts threads, the same way.)
Threads we did not start may still take SIGINT; ``others_take`` tells.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextmanager
def main_thread_signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread while inside; pending ones arrive after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` so that it leaves the stop signals to the main thread."""
    with main_thread_signals_blocked():
        thread.start()
    return thread


def start_thread(target: Callable[..., Any], *args: Any, name: str,
                 daemon: bool = True) -> threading.Thread:
    """Start ``target(*args)`` in such a thread."""
    return start(threading.Thread(target=target, args=args, name=name, daemon=daemon))


class ThreadPool(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose threads leave the stop signals to the main thread.

    The executor starts its threads inside ``submit``; that is where the
    signals are blocked.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        with main_thread_signals_blocked():
            return super().submit(fn, *args, **kwargs)


def threads_taking(signum: int, pid: int | None = None) -> list[int]:
    """Thread ids of process ``pid`` (this one) but its main thread that do not block ``signum``."""
    where = f"/proc/{pid or 'self'}/task"
    main = pid or os.getpid()
    bit = 1 << (signum - 1)
    found = []
    for task in os.listdir(where):
        try:
            with open(f"{where}/{task}/status") as status:
                blocked = next(line for line in status if line.startswith("SigBlk:"))
        except (OSError, StopIteration):
            continue                    # the thread ended meanwhile
        if int(task) != main and not int(blocked.split()[1], 16) & bit:
            found.append(int(task))
    return found


def others_take(signum: int) -> bool:
    """Whether a thread of this process other than its main one does not block ``signum``."""
    return bool(threads_taking(signum))
