"""Channel transports: where a channel's bytes go and where they come from.

A channel carries exactly what a multifd socket would: the 64-byte init
packet, then packets (header, payload).  Sinks take vectored writes so a
header and a payload slot leave in one call without being joined; sources
fill caller-owned buffers (``readinto``) so payloads land where they are
decoded.

Sinks:   FileSink (``<dir>/channel-<id>.mfd``), MemoryChannel, NullSink.

A channel file is written as ``<name>.partial`` and gets its final name
only when the run that wrote it calls ``finish()`` and closes it; one that
is closed without (an error, Ctrl-C, SIGTERM) becomes ``<name>.aborted``,
so an interrupted stream never looks complete to ``inspect``.
Sources: FileSource, MemoryChannel (one object is both ends of an
         in-process channel).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Protocol

import zstandard

from engine.errors import CorruptFile, OutputError

_COMPACT_AT = 1 << 20  # a memory channel drops bytes already read past this


class ChannelSink(Protocol):
    channel_id: int
    bytes_written: int

    def write(self, *buffers) -> None:
        """Write every buffer, in order, completely."""

    def close(self) -> None: ...


class ChannelSource(Protocol):
    channel_id: int

    def readinto(self, view: memoryview) -> int:
        """Fill as much of ``view`` as the channel has; 0 only at its end."""

    def close(self) -> None: ...


def channel_file_name(channel_id: int) -> str:
    return f"channel-{channel_id}.mfd"


def partial_name(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def settle(current: Path, final: Path, complete: bool) -> Path:
    """Move a finished output to ``final``, an unfinished one to ``<final>.aborted``."""
    target = final if complete else final.with_name(final.name + ".aborted")
    try:
        os.replace(current, target)
    except FileNotFoundError:
        return current
    return target


class FileSink:
    """Append a channel's bytes to ``<dir>/channel-<id>.mfd`` with writev.

    ``path`` is where the bytes are now: the ``.partial`` name until
    ``finish()`` and ``close()``, then the final (or ``.aborted``) one.
    """

    def __init__(self, directory: str | os.PathLike, channel_id: int) -> None:
        self.channel_id = channel_id
        self.final_path = Path(directory) / channel_file_name(channel_id)
        self.path = partial_name(self.final_path)
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), path=str(self.final_path)) from None
        self.bytes_written = 0
        self._complete = False

    def finish(self) -> None:
        """The stream is complete: ``close`` gives it its final name."""
        self._complete = True

    def write(self, *buffers) -> None:
        if self._fd is None:
            raise ValueError(f"channel {self.channel_id}: sink is closed")
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        while views:
            try:
                done = os.writev(self._fd, views)
            except OSError as exc:      # disk full, quota, I/O error
                raise OutputError(exc.strerror or str(exc), path=str(self.path)) from None
            self.bytes_written += done
            views = _advance(views, done)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path = settle(self.path, self.final_path, self._complete)


def _advance(views: list[memoryview], done: int) -> list[memoryview]:
    """Drop ``done`` bytes from the front of a list of views (partial writev)."""
    while views and done >= len(views[0]):
        done -= len(views[0])
        views = views[1:]
    if views and done:
        views = [views[0][done:], *views[1:]]
    return views


class NullSink:
    """Discard everything, count the bytes (for benchmarks)."""

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.bytes_written = 0

    def write(self, *buffers) -> None:
        self.bytes_written += sum(len(memoryview(b).cast("B")) for b in buffers)

    def close(self) -> None:
        pass


class MemoryChannel:
    """An in-process channel: a sink and a source over one growing buffer.

    Bytes already read are dropped now and then, so a long run does not
    keep its whole stream in memory.
    """

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self._buf = bytearray()
        self._pos = 0
        self.bytes_written = 0

    def write(self, *buffers) -> None:
        for b in buffers:
            self._buf += memoryview(b).cast("B")
            self.bytes_written += len(memoryview(b).cast("B"))

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = memoryview(self._buf)[self._pos:self._pos + n]
        self._pos += n
        # drop what was read once it is most of the buffer, so each byte
        # is moved at most a bounded number of times (linear, not quadratic)
        if self._pos >= _COMPACT_AT and 2 * self._pos >= len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        return n

    def getvalue(self) -> bytes:
        """The bytes not yet read (for tests and tools)."""
        return bytes(self._buf[self._pos:])

    def close(self) -> None:
        pass


class FileSource:
    """Read a channel file; ``.zst`` files are decompressed as they are read."""

    def __init__(self, path: str | os.PathLike, channel_id: int) -> None:
        self.channel_id = channel_id
        self.path = Path(path)
        raw = open(self.path, "rb")
        if self.path.suffix == ".zst":
            self._file: io.RawIOBase = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        else:
            self._file = raw

    def readinto(self, view: memoryview) -> int:
        got = 0
        while got < len(view):
            try:
                n = self._file.readinto(view[got:])
            except zstandard.ZstdError as exc:
                raise CorruptFile(f"{self.path}: damaged zstd data ({exc})",
                                  channel=self.channel_id) from None
            if not n:
                break
            got += n
        return got

    def close(self) -> None:
        self._file.close()


class BytesSource:
    """A source over a bytes-like object (tests, fuzzing)."""

    def __init__(self, data, channel_id: int = 0) -> None:
        self.channel_id = channel_id
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), len(self._view) - self._pos)
        view[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        pass
