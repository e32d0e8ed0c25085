"""An in-process channel with a byte budget: backpressure and stall detection.

``MemoryChannel`` keeps whatever is written until it is read, so a sender
that runs ahead of its receiver grows it without bound.  A
``BoundedChannel`` holds at most ``capacity`` bytes, as a socket's buffers
do: the writer waits while the reader lags, so memory stays flat however
slow the receiver is.  A side that waits without any progress from the
other for ``stall_timeout`` seconds gets ``ChannelStalled`` instead of
hanging: a receiver that stopped reading, or a sender that stopped sending.

::

    coordinator ── sink.write() ──► [ chunks ≤ capacity ] ──► source.readinto() ── ChannelReader
                   waits while full                           waits while empty

The two ends are separate objects (``sink`` and ``source``) because an
``Engine`` closes its sinks and a ``Receiver`` its sources: closing the sink
means "no more bytes" (the reader drains, then sees the end), closing the
source means "the reader is gone" (writes then fail with
``BrokenPipeError``, as on a socket whose peer closed).  ``abort`` ends
both at once; a harness calls it to stop the other side after a failure.
Writer and reader run on different threads; one lock guards the buffer.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from engine.errors import ChannelStalled

DEFAULT_CAPACITY = 4 << 20


class BoundedChannel:
    """Both ends of one in-process channel; see the module docstring.

    ``peak_buffered`` is the most bytes it ever held: at most
    ``capacity``, or one write when a single write is larger (a write
    into an empty channel always goes through).
    """

    def __init__(self, channel_id: int, *, capacity: int = DEFAULT_CAPACITY,
                 stall_timeout: float = 30.0) -> None:
        if capacity <= 0 or stall_timeout <= 0:
            raise ValueError("capacity and stall_timeout must be positive")
        self.channel_id = channel_id
        self.capacity = capacity
        self.stall_timeout = stall_timeout
        self.peak_buffered = 0
        self.bytes_written = 0
        self.bytes_read = 0
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._writer_done = False
        self._reader_gone = False
        self._cond = threading.Condition()
        self.sink = _SinkEnd(self)
        self.source = _SourceEnd(self)

    # ---- writer side ----------------------------------------------------

    def write(self, *buffers) -> None:
        # one copy: the caller reuses its buffers (an output slot) at once
        data = memoryview(b"".join(buffers))
        if not len(data):
            return
        with self._cond:
            self._wait(lambda: self._buffered == 0 or self._buffered + len(data) <= self.capacity,
                       side="write", what=f"a {len(data)}-byte write")
            self._chunks.append(data)
            self._buffered += len(data)
            self.bytes_written += len(data)
            self.peak_buffered = max(self.peak_buffered, self._buffered)
            self._cond.notify_all()

    def close_writer(self) -> None:
        with self._cond:
            self._writer_done = True
            self._cond.notify_all()

    # ---- reader side ----------------------------------------------------

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` completely; less only at the end of the stream."""
        view = memoryview(view).cast("B")
        got = 0
        with self._cond:
            while got < len(view):
                if not self._wait(lambda: self._buffered > 0, side="read", what="more bytes",
                                  until_end=True):
                    break                        # the writer closed: end of stream
                got += self._take(view[got:])
            self._cond.notify_all()
        return got

    def _take(self, view: memoryview) -> int:
        n = 0
        while n < len(view) and self._chunks:
            chunk = self._chunks[0]
            part = min(len(chunk), len(view) - n)
            view[n:n + part] = chunk[:part]
            n += part
            if part == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[part:]
        self._buffered -= n
        self.bytes_read += n
        return n

    def close_reader(self) -> None:
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def abort(self) -> None:
        """End both sides now: writes fail, reads see the end of the stream."""
        with self._cond:
            self._writer_done = True
            self._reader_gone = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    # ---- waiting --------------------------------------------------------

    def _wait(self, ready, *, side: str, what: str, until_end: bool = False) -> bool:
        """Wait (lock held) until ``ready()``; False when the stream ended instead.

        The stall clock restarts whenever the other side makes progress.
        """
        progress = self._progress(side)
        deadline = time.monotonic() + self.stall_timeout
        while True:
            if side == "write" and self._reader_gone:
                raise BrokenPipeError(f"channel {self.channel_id}: the receiver closed the channel")
            if side == "write" and self._writer_done:
                raise ValueError(f"channel {self.channel_id}: sink is closed")
            if ready():
                return True
            if until_end and (self._writer_done or self._reader_gone):
                return False
            if self._progress(side) != progress:
                progress = self._progress(side)
                deadline = time.monotonic() + self.stall_timeout
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._stalled(side, what)
            self._cond.wait(left)

    def _progress(self, side: str) -> int:
        # the writer waits on the reader's progress and the other way round
        return self.bytes_read if side == "write" else self.bytes_written

    def _stalled(self, side: str, what: str) -> ChannelStalled:
        if side == "write":
            text = (f"the receiver read nothing for {self.stall_timeout:g} s "
                    f"({self._buffered} bytes waiting, {what} not taken)")
        else:
            text = f"the sender wrote nothing for {self.stall_timeout:g} s (waiting for {what})"
        return ChannelStalled(text, channel=self.channel_id, side=side, seconds=self.stall_timeout)


class _SinkEnd:
    """The writing end: a ``ChannelSink``."""

    def __init__(self, channel: BoundedChannel) -> None:
        self._channel = channel
        self.channel_id = channel.channel_id

    @property
    def bytes_written(self) -> int:
        return self._channel.bytes_written

    def write(self, *buffers) -> None:
        self._channel.write(*buffers)

    def close(self) -> None:
        self._channel.close_writer()


class _SourceEnd:
    """The reading end: a ``ChannelSource``."""

    def __init__(self, channel: BoundedChannel) -> None:
        self._channel = channel
        self.channel_id = channel.channel_id

    def readinto(self, view: memoryview) -> int:
        return self._channel.readinto(view)

    def close(self) -> None:
        self._channel.close_reader()
