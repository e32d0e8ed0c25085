"""Channel transports: where a channel's bytes go and where they come from.

A channel carries exactly what a multifd socket would: the 64-byte init
packet, then packets (header, payload).  Sinks take vectored writes so a
header and a payload slot (or, for method none, the header and the pages
themselves, straight from the RAM block) leave in one call without being
joined; a write of more buffers than the system's ``IOV_MAX`` goes out in
batches of at most that many.  Sources fill caller-owned buffers
(``readinto``) so payloads land where they are decoded; a source that can
also fill many buffers in one call (``readinto_views``: ``readv``,
``recvmsg_into``) lets method none read straight into destination pages.

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


def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (ValueError, OSError):
        value = -1
    return value if value > 0 else 1024     # POSIX leaves it unset only where it is unlimited


# buffers one writev / readv / sendmsg / recvmsg_into takes at most; more is
# EINVAL (files) or EMSGSIZE (sockets), and a 512-byte-page none packet of
# scattered pages is 1024 pages + its header
IOV_MAX = _iov_max()


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


class VectoredSource(ChannelSource, Protocol):
    """A source that also fills a list of buffers in one go (optional)."""

    def readinto_views(self, views: list[memoryview]) -> int:
        """Fill ``views`` in order, like ``readinto`` on their concatenation."""


def byte_views(buffers) -> list[memoryview]:
    """Flat byte views of the non-empty ``buffers`` (what writev and sendmsg take)."""
    return [memoryview(b).cast("B") for b in buffers if len(b)]


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
        views = byte_views(buffers)
        while views:
            try:
                done = os.writev(self._fd, views[:IOV_MAX])
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
    """What is left of ``views`` once ``done`` bytes from the front went (a partial writev)."""
    first = 0
    while first < len(views) and done >= len(views[first]):
        done -= len(views[first])
        first += 1
    rest = views[first:]
    if rest and done:
        rest[0] = rest[0][done:]
    return rest


def _fill_each(source: ChannelSource, views: list[memoryview]) -> int:
    """``readinto_views`` for a source that copies anyway: one ``readinto`` per view."""
    got = 0
    for view in views:
        n = source.readinto(view)
        got += n
        if n < len(view):
            break
    return got


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

    def readinto_views(self, views: list[memoryview]) -> int:
        return _fill_each(self, views)

    def getvalue(self) -> bytes:
        """The bytes not yet read (for tests and tools)."""
        return bytes(self._buf[self._pos:])

    def close(self) -> None:
        pass


class FileSource:
    """Read a channel file; ``.zst`` files are decompressed as they are read.

    A plain file is read unbuffered: a payload goes from the page cache
    straight to its buffer, and ``readinto_views`` is one ``readv`` (per
    ``IOV_MAX`` buffers), with no read-ahead buffer in between to bypass.
    """

    def __init__(self, path: str | os.PathLike, channel_id: int) -> None:
        self.channel_id = channel_id
        self.path = Path(path)
        raw = open(self.path, "rb", buffering=0)
        self._fd: int | None = None
        if self.path.suffix == ".zst":
            self._file: io.RawIOBase = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        else:
            self._file = raw
            self._fd = raw.fileno()

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

    def readinto_views(self, views: list[memoryview]) -> int:
        if self._fd is None:
            return _fill_each(self, views)      # zstd decompresses into each view
        views = byte_views(views)
        got = 0
        while views:
            n = os.readv(self._fd, views[:IOV_MAX])
            if not n:
                break
            got += n
            views = _advance(views, n)
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

    def readinto_views(self, views: list[memoryview]) -> int:
        return _fill_each(self, views)

    def close(self) -> None:
        pass
