"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

systemd, docker and ``kill`` send SIGTERM; a closed terminal sends SIGHUP.
Their default action ends the process on the spot: no ``finally`` runs, so
shared memory stays in ``/dev/shm`` and the peer is never told.  Inside
:func:`stop_signals_as_interrupts` they raise :class:`Stopped` instead, a
``KeyboardInterrupt``, so every path that is clean for Ctrl-C (workers
stopped, segments unlinked, the peer told why) is clean for them too.
Further stop signals during that clean-up are ignored: a second SIGTERM
must not cut the clean-up short (SIGKILL still does).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` is which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process its signal ended."""
    return 128 + (interrupt.signum if isinstance(interrupt, Stopped) else signal.SIGINT)


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """SIGTERM/SIGHUP raise ``Stopped`` in the main thread while inside; restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield                       # only the main thread may set handlers
        return

    def stop(signum: int, _frame: object) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
