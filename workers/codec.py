"""The Python face of the native page codec (``workers._native``).

This is the only module that imports the cffi extension: the work queues
of the emulated device and of libqpl (``workers.workqueue``) go through it
too.  Every call here is one C call per packet (cffi releases the GIL
around it); there are no per-page Python loops.  At import it checks that
the vocabularies of ``workers.settings`` (which the config reads without
the extension) equal the C constants.

Buffers (RAM blocks, slots, payloads) may be anything exporting the buffer
protocol: ``mmap``, ``memoryview``, ``bytearray``, ``bytes`` (read-only
uses), numpy arrays.  Page lists are numpy ``uint64`` arrays of page
*indices* inside the block (byte offset = index * page_size).

Errors: ``PayloadRejected`` for untrusted payload bytes (the receive
functions; the caller adds channel/packet context), ``CodecError`` for
everything else the native layer refuses (``PageIndexError``, also a
``ValueError``, for a page index outside its block on the trusted side).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pathlib
import time
import tomllib
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import AcceleratorError, CodecError, NativeBuildError
from workers.settings import (BUSY_POLICIES, COMPRESSION_SETTINGS, EmulatorSettings,
                              FaultSettings)

try:
    from workers._native import ffi, lib
except ImportError as exc:  # not built, or built for another Python
    raise NativeBuildError(
        "the native page codec workers._native cannot be imported "
        f"({exc}); build it with `pip install -e .` from the repository root"
    ) from exc


# ---------------------------------------------------------------------------
# build / version check

def _expected_version() -> str:
    try:
        return importlib.metadata.version("multifd-engine")
    except importlib.metadata.PackageNotFoundError:
        pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
        with open(pyproject, "rb") as f:
            return str(tomllib.load(f)["project"]["version"])


_BUILT_VERSION = ffi.string(lib.mfd_package_version()).decode("ascii", "replace")
_PACKAGE_VERSION = _expected_version()
if _BUILT_VERSION != _PACKAGE_VERSION:
    raise NativeBuildError(
        f"workers._native was built for multifd-engine {_BUILT_VERSION!r} but the "
        f"package is {_PACKAGE_VERSION!r}: a stale in-tree build of the native codec "
        f"({getattr(lib, '__file__', 'workers/_native*.so')}); rebuild it with "
        "`pip install -e .` from the repository root"
    )


# ---------------------------------------------------------------------------
# the settings vocabularies are the C constants

def _settings_mismatches() -> list[str]:
    """What differs between workers.settings and the C headers."""
    wanted = {**{f"COMPRESSION_SETTINGS[{k!r}] (MFD_SETTING_{k.upper()})": (v, f"MFD_SETTING_{k.upper()}")
                 for k, v in COMPRESSION_SETTINGS.items()},
              **{f"BUSY_POLICIES[{k!r}] (MFD_BUSY_{k.upper()})": (v, f"MFD_BUSY_{k.upper()}")
                 for k, v in BUSY_POLICIES.items()}}
    out = [f"{what} = {value} but the C constant is {getattr(lib, const, 'missing')}"
           for what, (value, const) in wanted.items() if getattr(lib, const, None) != value]
    emulator = {f.name for f in dataclasses.fields(EmulatorSettings) if f.name != "faults"}
    faults = {f.name for f in dataclasses.fields(FaultSettings)}
    c_fields = {name for name, _ in ffi.typeof("mfd_emu_config").fields} - {"clients", "page_count"}
    if emulator | faults != c_fields:
        out.append(f"EmulatorSettings/FaultSettings fields {sorted(emulator | faults)} are not "
                   f"mfd_emu_config's {sorted(c_fields)}")
    return out


if _mismatches := _settings_mismatches():
    raise NativeBuildError("workers.settings does not match the C headers of workers._native: "
                      + "; ".join(_mismatches))


# ---------------------------------------------------------------------------
# statuses: the one table is native/status.c

def _status_info(status: int) -> Any:
    info = lib.mfd_status_lookup(int(status))
    return None if info == ffi.NULL else info


def status_name(status: int) -> str:
    """``MFD_*`` or ``QPL_STS_*`` name of a status code (``status <n>`` if the table lacks it)."""
    info = _status_info(status)
    if info is not None:
        return ffi.string(info.name).decode()
    if status >= lib.MFD_QPL_STATUS_BASE:
        return f"QPL status {status - lib.MFD_QPL_STATUS_BASE}"
    return f"status {status}"


def status_reason(status: int) -> str:
    """What a status means, for people ("" when its name says it or it is unknown)."""
    info = _status_info(status)
    return ffi.string(info.reason).decode() if info is not None else ""


def qpl_status_text(status: int) -> str:
    """A QPL status (libqpl's own number): ``"501 QPL_STS_INIT_LIBACCEL_NOT_FOUND (...)"``,
    or the bare number when the table does not know it."""
    info = _status_info(lib.MFD_QPL_STATUS_BASE + status)
    if info is None:
        return str(status)
    reason = ffi.string(info.reason).decode()
    return f"{status} {ffi.string(info.name).decode()}" + (f" ({reason})" if reason else "")


def _blames_input(status: int) -> bool:
    """Is a failed receive call the payload's fault (not the caller's or the machine's)?"""
    info = _status_info(status)
    return info is None or bool(info.blames_input)


class PageIndexError(CodecError, ValueError):
    """A page index given by the engine lies outside its RAM block."""


class PayloadRejected(Exception):
    """A received payload was refused by the native decoder.

    ``status``/``name``: the MFD_* code; ``page``: index (into the packet's
    normal pages) of the page at fault, or ``normal_pages`` when the length
    table as a whole is wrong; ``reason``: human text.  The caller turns it
    into a ``WireError`` carrying channel and packet context.
    """

    def __init__(self, status: int, page: int, reason: str | None = None) -> None:
        self.status = status
        self.name = status_name(status)
        self.page = page
        self.reason = reason or status_reason(status) or f"decompression failed ({self.name})"
        super().__init__(f"{self.name} at page {page}: {self.reason}")


def _check(status: int, what: str) -> None:
    """Raise the typed error for a non-OK status of a trusted-side call."""
    if status == lib.MFD_OK:
        return
    cls = PageIndexError if status == lib.MFD_E_PAGE_RANGE else CodecError
    raise cls(f"{what}: {status_name(status)} ({status})", status=status)


def _check_untrusted(status: int, what: str, page: int) -> None:
    """Like ``_check`` for a receive call: input faults are PayloadRejected."""
    if status == lib.MFD_OK:
        return
    if not _blames_input(status):
        _check(status, what)
    raise PayloadRejected(status, page)


# ---------------------------------------------------------------------------
# argument conversion

# Every pointer made from a caller's buffer is used in a ``with`` block, so it
# is released before the function returns or raises.  An exception whose
# traceback still held such pointers crashed CPython 3.11's garbage
# collector after the RAM block they pointed into had been closed.

def _rbuf(buf: Any) -> Any:
    return ffi.from_buffer("uint8_t[]", buf, require_writable=False)


def _wbuf(buf: Any) -> Any:
    try:
        return ffi.from_buffer("uint8_t[]", buf, require_writable=True)
    except (TypeError, BufferError) as exc:
        raise TypeError(f"expected a writable buffer, got {type(buf).__name__}: {exc}") from exc


def _pages_array(pages: Any) -> tuple[np.ndarray, int]:
    """A page list as a native contiguous uint64 array, and its length."""
    arr = np.ascontiguousarray(pages, dtype=np.uint64)
    if arr.ndim != 1:
        raise ValueError(f"page list must be 1-D, got shape {arr.shape}")
    if len(arr) > 0xFFFFFFFF:
        raise ValueError("too many pages for one call")
    return arr, len(arr)


def _pages_ptr(arr: np.ndarray) -> Any:
    """``uint64_t *`` over a native uint64 array; use it in a ``with``."""
    return ffi.from_buffer("uint64_t[]", arr, require_writable=arr.flags.writeable)


def _page_size(page_size: int) -> int:
    page_size = int(page_size)
    if not 1 <= page_size <= 0xFFFFFFFF:
        raise ValueError(f"page_size {page_size} out of range")
    return page_size


def _u32(value: int, what: str) -> int:
    value = int(value)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} out of range 0..2**32-1")
    return value


def _wq(queue: Any) -> Any:
    """The ``mfd_workqueue *`` of a work-queue object, or the cdata itself."""
    handle = getattr(queue, "handle", queue)
    if handle is None:
        raise ValueError("work queue is closed")
    if not isinstance(handle, ffi.CData) or ffi.typeof(handle) != ffi.typeof("mfd_workqueue *"):
        raise TypeError(f"expected a work queue (mfd_workqueue *), got {queue!r}")
    if handle == ffi.NULL:
        raise ValueError("work queue is closed")
    return handle


def _first_out_of_range(pages: np.ndarray, block_len: int, page_size: int) -> int:
    bad = np.flatnonzero(pages >= np.uint64(block_len // page_size))
    return int(bad[0]) if len(bad) else len(pages)


# ---------------------------------------------------------------------------
# public API

def codec_name() -> str:
    """The deflate library of each direction of this build, e.g.
    ``"isal 2.30 (compress) / libdeflate 1.14 (decompress)"``."""
    compress = ffi.string(lib.mfd_deflater_library()).decode()
    decompress = ffi.string(lib.mfd_inflater_library()).decode()
    return f"{compress} (compress) / {decompress} (decompress)"


def codec_libraries() -> tuple[str, str]:
    """(compress, decompress) library names of this build, e.g. ``("isal", "libdeflate")``."""
    compress, decompress = codec_name().split(" / ")
    return compress.split()[0], decompress.split()[0]


def raw_compress_pages(block: Any, page_size: int, pages: np.ndarray, *,
                       setting: str = "balanced") -> int:
    """The codec alone in a C loop (benchmark baseline): compressed bytes of ``pages``.

    Each page is its own stream capped below a page, as the qpl method;
    a page that does not shrink counts ``page_size`` bytes.
    """
    page_size = _page_size(page_size)
    arr, n = _pages_array(pages)
    out_bytes = ffi.new("uint64_t *")
    with _pages_ptr(arr) as cpages, _rbuf(block) as blk:
        status = lib.mfd_raw_compress_pages(COMPRESSION_SETTINGS[setting], blk, len(blk),
                                            page_size, cpages, n, out_bytes)
    _check(status, "raw_compress_pages")
    return int(out_bytes[0])


def find_zero_pages(block: Any, page_size: int, pages: np.ndarray,
                    stats: "PacketStats | None" = None) -> int:
    """Partition ``pages`` in place as QEMU does: normal pages first.

    ``pages`` must be a writable, contiguous, native ``uint64`` array.
    Returns the number of normal pages (they are ``pages[:n]``, the zero
    pages ``pages[n:]``).  An index outside the block raises
    ``PageIndexError`` (a ``CodecError`` and ``ValueError``) and leaves
    ``pages`` untouched.  With ``stats``, adds ``zero_pages`` and
    ``zero_ns``.
    """
    if not (isinstance(pages, np.ndarray) and pages.dtype == np.uint64
            and pages.dtype.isnative and pages.ndim == 1 and pages.flags.c_contiguous):
        raise TypeError("pages must be a 1-D contiguous native uint64 numpy array")
    page_size = _page_size(page_size)
    n = _u32(len(pages), "page count")
    if n == 0:
        return 0
    t0 = time.monotonic_ns() if stats is not None else 0
    with _rbuf(block) as blk, ffi.from_buffer("uint64_t[]", pages, require_writable=True) as cpages:
        block_len = len(blk)
        normal = lib.mfd_find_zero_pages(blk, block_len, page_size, cpages, n)
    if normal == 0xFFFFFFFF:
        bad = _first_out_of_range(pages, block_len, page_size)
        raise PageIndexError(
            f"find_zero_pages: MFD_E_PAGE_RANGE: page index {int(pages[bad]) if bad < n else '?'} "
            f"outside a block of {block_len // page_size} pages"
        )
    if stats is not None:
        stats.zero_ns += time.monotonic_ns() - t0
        stats.zero_pages += n - normal
    return int(normal)


class JobArray:
    """``count`` native jobs (``mfd_job *``), one per page of a packet."""

    def __init__(self, count: int) -> None:
        count = _u32(count, "job count")
        if count == 0:
            raise ValueError("a job array needs at least one job")
        ptr = lib.mfd_jobs_new(count)
        if ptr == ffi.NULL:
            raise MemoryError(f"cannot allocate {count} jobs")
        self.handle = ffi.gc(ptr, lib.mfd_jobs_free)
        self.count = count

    def close(self) -> None:
        """Free the jobs now (otherwise when the object is collected)."""
        if self.handle is not None:
            ffi.release(self.handle)
            self.handle = None

    def _ptr(self, needed: int) -> Any:
        if self.handle is None:
            raise ValueError("job array is closed")
        if needed > self.count:
            raise ValueError(f"{needed} pages but only {self.count} jobs")
        return self.handle


class SoftwareQueue:
    """The software work queue: raw DEFLATE (4 KiB window) run in submit.

    This is what QPL's software path does, so the per-packet loop is the
    same for software and hardware; a software queue never answers busy.
    ``handle`` is the ``mfd_workqueue *``.  One queue per thread: it owns one
    compressor and one decompressor (``codec_name()``) that every job
    reuses.  ``level`` is a ``COMPRESSION_SETTINGS`` value.
    """

    name = "software"
    is_hardware = False

    def __init__(self, level: int = 1) -> None:
        ptr = lib.mfd_software_queue_new(int(level))
        if ptr == ffi.NULL:
            raise CodecError(f"cannot create a software queue (level {level})")
        self.handle = ffi.gc(ptr, lib.mfd_software_queue_free)

    def close(self) -> None:
        """Free the queue now (otherwise when the object is collected)."""
        if self.handle is not None:
            ffi.release(self.handle)
            self.handle = None


@dataclass
class PacketStats:
    """Counters of ``mfd_packet_stats``; summed per worker run."""

    zero_pages: int = 0
    normal_pages: int = 0
    compressed_pages: int = 0
    raw_pages: int = 0
    hw_submitted: int = 0
    busy: int = 0
    retries: int = 0
    sw_fallbacks: int = 0
    hw_errors: int = 0
    sw_errors: int = 0
    zero_ns: int = 0
    compress_ns: int = 0

    @classmethod
    def _from_c(cls, c: Any) -> "PacketStats":
        return cls(**{name: int(getattr(c, name)) for name in _STATS_FIELDS})

    def add(self, other: "PacketStats") -> "PacketStats":
        """Add ``other``'s counters to this one (in place); returns self."""
        for name in _STATS_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        # not dataclasses.asdict: its deep copy cost ~130 us per packet
        return {name: getattr(self, name) for name in _STATS_FIELDS}


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(PacketStats))
if _STATS_FIELDS != tuple(name for name, _ in ffi.typeof("mfd_packet_stats").fields):
    raise NativeBuildError("PacketStats does not match mfd_packet_stats in pagecodec.h")

def qpl_send_packet(jobs: JobArray, wq: Any, fallback: Any, *, max_retries: int,
                    busy_policy: str, block: Any, page_size: int, pages: np.ndarray,
                    slot: Any) -> tuple[int, PacketStats]:
    """Build one packet's qpl payload (spec §4.4, QEMU's §7.1 loop) in ``slot``.

    ``pages`` are the normal pages only.  Each page is submitted to ``wq``
    (a work-queue object or its ``mfd_workqueue *``); busy answers are
    retried ``max_retries`` times (``busy_policy="retry"``: forever), then
    the page is compressed at once on ``fallback``.  Pages that do not
    shrink below ``page_size`` bytes, or whose job failed, go raw.
    ``slot`` needs ``4n + n * page_size`` bytes.  Returns
    ``(next_packet_size, stats)``.
    """
    page_size = _page_size(page_size)
    try:
        policy = BUSY_POLICIES[busy_policy]
    except KeyError:
        raise ValueError(f"busy_policy {busy_policy!r} not in {tuple(BUSY_POLICIES)}") from None
    arr, n = _pages_array(pages)
    stats = ffi.new("mfd_packet_stats *")
    if n == 0:
        return 0, PacketStats()
    need = 4 * n + n * page_size
    payload_len = ffi.new("uint64_t *")
    with _pages_ptr(arr) as cpages, _rbuf(block) as blk, _wbuf(slot) as out:
        if len(out) < need:
            raise ValueError(f"slot of {len(out)} bytes, {need} needed for {n} pages")
        status = lib.mfd_qpl_send_packet(
            jobs._ptr(n), _wq(wq), _wq(fallback), _u32(max_retries, "max_retries"), policy,
            blk, len(blk), page_size, cpages, n, out, len(out), payload_len, stats)
    _check(status, "qpl_send_packet")
    return int(payload_len[0]), PacketStats._from_c(stats)


def qpl_recv_packet(jobs: JobArray, wq: Any, fallback: Any, *, max_retries: int,
                    payload: Any, pages: np.ndarray, block: Any, page_size: int) -> None:
    """Check one qpl payload and decode it straight into ``block``.

    The length table is validated before anything is written.  Raises
    ``PayloadRejected`` for a bad table, a bad page stream or a page index
    outside the block; ``CodecError`` for failures that are not the
    payload's fault.
    """
    page_size = _page_size(page_size)
    arr, n = _pages_array(pages)
    if n == 0:
        if len(memoryview(payload)) != 0:
            raise PayloadRejected(lib.MFD_E_LEN_SUM, 0)
        return
    bad_page = ffi.new("uint32_t *")
    with _pages_ptr(arr) as cpages, _rbuf(payload) as data, _wbuf(block) as blk:
        status = lib.mfd_qpl_recv_packet(
            jobs._ptr(n), _wq(wq), _wq(fallback), _u32(max_retries, "max_retries"),
            data, len(data), cpages, n, blk, len(blk), page_size, bad_page)
    _check_untrusted(status, "qpl_recv_packet", int(bad_page[0]))


def none_send_packet(block: Any, page_size: int, pages: np.ndarray, slot: Any) -> int:
    """Copy the normal pages into ``slot`` (method none); returns the payload size."""
    page_size = _page_size(page_size)
    arr, n = _pages_array(pages)
    if n == 0:
        return 0
    with _pages_ptr(arr) as cpages, _rbuf(block) as blk, _wbuf(slot) as out:
        if len(out) < n * page_size:
            raise ValueError(f"slot of {len(out)} bytes, {n * page_size} needed for {n} pages")
        status = lib.mfd_none_send_packet(blk, len(blk), page_size, cpages, n, out, len(out))
    _check(status, "none_send_packet")
    return n * page_size


def none_recv_packet(payload: Any, pages: np.ndarray, block: Any, page_size: int) -> None:
    """Copy a none payload into ``block``; PayloadRejected on a size or index problem."""
    page_size = _page_size(page_size)
    arr, n = _pages_array(pages)
    size = memoryview(payload).nbytes
    if size != n * page_size:
        raise PayloadRejected(lib.MFD_E_LEN_SUM, n,
                              f"payload of {size} bytes, expected {n} * {page_size}")
    if n == 0:
        return
    with _pages_ptr(arr) as cpages, _rbuf(payload) as data, _wbuf(block) as blk:
        block_len = len(blk)
        status = lib.mfd_none_recv_packet(data, len(data), cpages, n, blk, block_len, page_size)
    page = _first_out_of_range(arr, block_len, page_size) if status == lib.MFD_E_PAGE_RANGE else n
    _check_untrusted(status, "none_recv_packet", page)


def clear_pages(block: Any, page_size: int, pages: np.ndarray) -> None:
    """Zero the given pages of ``block`` (receiver side of zero pages)."""
    page_size = _page_size(page_size)
    arr, n = _pages_array(pages)
    if n == 0:
        return
    with _pages_ptr(arr) as cpages, _wbuf(block) as blk:
        status = lib.mfd_clear_pages(blk, len(blk), page_size, cpages, n)
    _check(status, "clear_pages")


def compare_pages(a: Any, b: Any, page_size: int, max_report: int = 64) -> tuple[int, np.ndarray]:
    """Compare two equally long buffers page by page.

    Returns ``(mismatching page count, the first max_report mismatching
    page indices as uint64)``.  A trailing partial page counts as a page.
    """
    page_size = _page_size(page_size)
    max_report = max(0, int(max_report))
    out = np.zeros(max(max_report, 1), dtype=np.uint64)
    with _rbuf(a) as ca, _rbuf(b) as cb, _pages_ptr(out) as cout:
        if len(ca) != len(cb):
            raise ValueError(f"buffers differ in length: {len(ca)} != {len(cb)}")
        total = lib.mfd_compare_pages(ca, cb, len(ca), page_size, cout, max_report)
    if total == 0xFFFFFFFFFFFFFFFF:
        raise CodecError("compare_pages: MFD_E_PARAM")
    return int(total), out[:min(int(total), max_report)].copy()


class SoftwareCodec:
    """One page at a time through the software codec (4 KiB window): for tests and tools.

    ``level`` is a ``COMPRESSION_SETTINGS`` value; ``window_bits`` bounds
    every match distance of the compressor (12: IAA's 4 KiB history).
    """

    def __init__(self, level: int = 1, window_bits: int = 12) -> None:
        ptr = lib.mfd_sw_new(int(level), int(window_bits))
        if ptr == ffi.NULL:
            raise CodecError(f"cannot create a software codec (level {level})")
        self._sw = ffi.gc(ptr, lib.mfd_sw_free)

    def close(self) -> None:
        """Free the codec state now."""
        if self._sw is not None:
            ffi.release(self._sw)
            self._sw = None

    def compress_page(self, page: Any) -> bytes | None:
        """Raw DEFLATE of ``page`` in at most ``len(page) - 1`` bytes, else None."""
        out_len = ffi.new("uint32_t *")
        with _rbuf(page) as src:
            if len(src) < 2:
                raise ValueError("a page has at least 2 bytes")
            out = ffi.new("uint8_t[]", len(src) - 1)
            status = lib.mfd_sw_compress_page(self._sw, src, len(src), out, len(src) - 1, out_len)
        if status == lib.MFD_MORE_OUTPUT:
            return None
        _check(status, "compress_page")
        return bytes(ffi.buffer(out, out_len[0]))

    def decompress_page(self, data: Any, page_size: int) -> bytes:
        """Inflate one page stream; PayloadRejected unless exactly one page comes out."""
        page_size = _page_size(page_size)
        out = ffi.new("uint8_t[]", page_size)
        with _rbuf(data) as src:
            if len(src) == 0:
                raise PayloadRejected(lib.MFD_E_LEN_ZERO, 0)
            status = lib.mfd_sw_decompress_page(self._sw, src, len(src), out, page_size)
        _check_untrusted(status, "decompress_page", 0)
        return bytes(ffi.buffer(out, page_size))


def zlib_version() -> str:
    """The zlib that method zlib's streams run on, e.g. ``"1.2.13"``."""
    return ffi.string(lib.mfd_zstream_zlib_version()).decode()


class ZlibStream:
    """One channel's zlib stream (method ``zlib``), kept across packets.

    ``ZlibStream.deflater(level)`` on the send side, ``ZlibStream.inflater()``
    on the receive side; one C call per packet runs the stream over the
    packet's pages as QEMU's multifd-zlib does (spec §4.2).  After any error
    the stream refuses further packets: a channel cannot resynchronise.
    """

    def __init__(self, handle: Any, deflating: bool) -> None:
        self._z = ffi.gc(handle, lib.mfd_zstream_free)
        self.deflating = deflating

    @classmethod
    def deflater(cls, level: int) -> "ZlibStream":
        if not 0 <= int(level) <= 9:
            raise ValueError(f"zlib level {level} outside 0..9")
        handle = lib.mfd_zlib_deflate_new(int(level))
        if handle == ffi.NULL:
            raise MemoryError("cannot create a zlib deflate stream")
        return cls(handle, True)

    @classmethod
    def inflater(cls) -> "ZlibStream":
        handle = lib.mfd_zlib_inflate_new()
        if handle == ffi.NULL:
            raise MemoryError("cannot create a zlib inflate stream")
        return cls(handle, False)

    def close(self) -> None:
        """Free the stream now (otherwise when the object is collected)."""
        if self._z is not None:
            ffi.release(self._z)
            self._z = None

    def _handle(self) -> Any:
        if self._z is None:
            raise ValueError("zlib stream is closed")
        return self._z

    def send_packet(self, block: Any, page_size: int, pages: np.ndarray, slot: Any) -> int:
        """Compress the normal ``pages`` into ``slot``; returns next_packet_size."""
        page_size = _page_size(page_size)
        arr, n = _pages_array(pages)
        if n == 0:
            return 0
        payload_len = ffi.new("uint64_t *")
        with _pages_ptr(arr) as cpages, _rbuf(block) as blk, _wbuf(slot) as out:
            status = lib.mfd_zlib_send_packet(self._handle(), blk, len(blk), page_size,
                                              cpages, n, out, len(out), payload_len)
        if status == lib.MFD_MORE_OUTPUT:
            raise CodecError(f"zlib_send_packet: {n} pages do not fit a slot of {len(slot)} bytes")
        _check(status, "zlib_send_packet")
        return int(payload_len[0])

    def recv_packet(self, payload: Any, pages: np.ndarray, block: Any, page_size: int) -> None:
        """Inflate one payload straight into ``pages`` of ``block``.

        ``PayloadRejected`` names the page at fault (``page == len(pages)``:
        input left after the last page).
        """
        page_size = _page_size(page_size)
        arr, n = _pages_array(pages)
        bad_page = ffi.new("uint32_t *")
        with _pages_ptr(arr) as cpages, _rbuf(payload) as data, _wbuf(block) as blk:
            block_len = len(blk)
            status = lib.mfd_zlib_recv_packet(self._handle(), data, len(data), cpages, n,
                                              blk, block_len, page_size, bad_page)
        if status == lib.MFD_OK:
            return
        page = int(bad_page[0])
        if status == lib.MFD_E_PAGE_RANGE:
            page = _first_out_of_range(arr, block_len, page_size)
        reason = _ZLIB_REASONS.get(status_name(status))
        if not _blames_input(status):
            _check(status, "zlib_recv_packet")
        raise PayloadRejected(status, page, reason)


_ZLIB_REASONS = {
    "MFD_E_INFLATE": "the channel's zlib stream is corrupt here",
    "MFD_E_INFLATE_SIZE": "the payload ended inside this page (short output)",
    "MFD_E_TRAILING": "input left over after the packet's last page",
    "MFD_E_STREAM_END": "the channel's zlib stream ended (never happens in a QEMU channel)",
}


def strict_inflate(data: Any, cap: int) -> bytes:
    """Inflate one raw-DEFLATE stream as IAA does: no distance beyond 4 KiB.

    The emulated device's decoder (``native/strict_inflate.c``) on its own;
    ``PayloadRejected`` for a corrupt, truncated or too-far-reaching
    stream, more than ``cap`` bytes of output, or input left over.
    """
    cap = _u32(cap, "cap")
    out = ffi.new("uint8_t[]", max(cap, 1))
    out_len = ffi.new("uint32_t *")
    with _rbuf(data) as src:
        status = lib.mfd_strict_inflate(src, len(src), out, cap, out_len)
    _check_untrusted(status, "strict_inflate", 0)
    return bytes(ffi.buffer(out, out_len[0]))


def release(handle: Any) -> None:
    """Free a native object (a device, a queue, libqpl) now, not when it is collected."""
    ffi.release(handle)


# ---------------------------------------------------------------------------
# the emulated IAA device (native/iaa_emulator.c); workers.workqueue.emulated
# owns its lifecycle and its work queues

EMULATOR_COUNTERS = tuple(name for name, _ in ffi.typeof("mfd_emu_counters").fields)


def _emulator_config(settings: EmulatorSettings, clients: int, page_count: int) -> Any:
    cfg = ffi.new("mfd_emu_config *")
    for f in dataclasses.fields(EmulatorSettings):
        if f.name != "faults":
            setattr(cfg, f.name, getattr(settings, f.name))
    for f in dataclasses.fields(FaultSettings):
        setattr(cfg, f.name, getattr(settings.faults, f.name))
    cfg.clients = clients
    cfg.page_count = page_count
    return cfg


def emulator_control_size(settings: EmulatorSettings, clients: int, page_count: int) -> int:
    """Bytes the control segment of such a device needs; 0: the settings are unusable."""
    return int(lib.mfd_emu_control_size(_emulator_config(settings, clients, page_count)))


def start_emulator(segment: str, settings: EmulatorSettings, clients: int, page_count: int) -> Any:
    """Start a device whose control segment is /dev/shm/``segment``; its handle.

    ``stop_emulator`` stops it and frees the handle.
    """
    out = ffi.new("mfd_emu_device **")
    status = lib.mfd_emu_device_start(segment.encode(), _emulator_config(settings, clients, page_count),
                                      out)
    if status != lib.MFD_OK:
        raise CodecError(f"cannot start the emulated IAA device: {status_name(status)}", status=status)
    return out[0]


def stop_emulator(device: Any) -> None:
    """Stop a device's engines (jobs still queued fail) and free it."""
    lib.mfd_emu_device_stop(device)


def emulator_counters(device: Any) -> dict[str, int]:
    """What the device did and injected so far."""
    snap = ffi.new("mfd_emu_counters *")
    lib.mfd_emu_device_counters(device, snap)
    return {name: int(getattr(snap, name)) for name in EMULATOR_COUNTERS}


def open_emulated_queue(segment: str, page_count: int) -> Any:
    """A work queue (``mfd_workqueue *``) on the device of control segment ``segment``.

    The attach is the hardware probe: a refusal (the device's injected
    init status, no room, no device) is an ``AcceleratorError``.
    """
    status = ffi.new("int *")
    ptr = lib.mfd_emu_queue_new(segment.encode(), int(page_count), status)
    if ptr == ffi.NULL:
        code = int(status[0])
        raise AcceleratorError(f"emulated IAA device {segment!r} refused a work queue: "
                               f"{status_name(code)}", status=code)
    return ffi.gc(ptr, lib.mfd_emu_queue_free)


def map_emulated_segment(queue: Any, name: str, buf: Any) -> None:
    """Tell an emulated device's queue that segment ``name`` is mapped here as ``buf``.

    A queue of another kind is refused by the C side (``MFD_E_WRONG_QUEUE``).
    """
    # only the address range is kept: the queue compares job pointers
    # with it and never reads through it (the device maps by name)
    with ffi.from_buffer("uint8_t[]", buf) as ptr:
        base, length = int(ffi.cast("uintptr_t", ptr)), len(ptr)
    status = lib.mfd_emu_queue_map(_wq(queue), name.encode(), base, length)
    if status != lib.MFD_OK:
        raise CodecError(f"cannot register segment {name} with the emulated device: "
                         f"{status_name(status)}: {status_reason(status)}", status=status)


# ---------------------------------------------------------------------------
# libqpl, loaded at run time (native/qpl_shim.c); workers.workqueue.qpl
# chooses where from

def qpl_open(path: str) -> Any:
    """libqpl loaded from ``path``; ``AcceleratorError`` saying why it cannot be."""
    err = ffi.new("char[]", 512)
    handle = lib.mfd_qpl_open(path.encode(), err, 512)
    if handle == ffi.NULL:
        raise AcceleratorError(ffi.string(err).decode(errors="replace"))
    return ffi.gc(handle, lib.mfd_qpl_close)


def qpl_version(library: Any) -> str:
    """qpl_get_library_version() of a loaded libqpl, e.g. ``"1.6.0"``."""
    return ffi.string(lib.mfd_qpl_version(library)).decode()


def qpl_probe_hardware(library: Any) -> int:
    """QPL status of initialising one hardware job (0: IAA is usable)."""
    return int(lib.mfd_qpl_probe_hardware(library))


def open_qpl_queue(library: Any, *, hardware: bool, page_count: int) -> Any:
    """``page_count`` hardware jobs (IAA), or QPL's one software job, as a work queue."""
    status = ffi.new("int *")
    path = lib.MFD_QPL_PATH_HARDWARE if hardware else lib.MFD_QPL_PATH_SOFTWARE
    ptr = lib.mfd_qpl_queue_new(library, path, int(page_count), status)
    if ptr == ffi.NULL:
        kind = "hardware" if hardware else "software"
        raise CodecError(f"libqpl {qpl_version(library)}: cannot set up {page_count} {kind} "
                         f"job(s): {qpl_status_text(int(status[0]))}", status=int(status[0]))
    return ffi.gc(ptr, lib.mfd_qpl_queue_free)
