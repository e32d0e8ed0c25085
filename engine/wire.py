"""QEMU multifd wire format: init packet, RAM packet header, SYNC packet.

Encoders write the exact bytes a QEMU sender puts on a multifd channel;
decoders treat every byte as untrusted and report problems only through the
``engine.errors`` classes, carrying channel, packet number and field.
Payloads (per compression method) and cross-channel state (ids bound twice,
SYNC barriers) belong to other modules.

Layout and rules follow ../shared/spec/multifd-wire-format.md (§1 init
packet, §2 header, §3 flags, §9 reject list, §10 real-stream quirks).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import numpy as np

from engine.errors import (
    BadFlags,
    BadInitPacket,
    BadMagic,
    BadOffset,
    BadPageCount,
    BadPayloadSize,
    BadRamBlock,
    BadVersion,
    TruncatedStream,
)

__all__ = [
    "MULTIFD_MAGIC", "MULTIFD_VERSION", "MULTIFD_PACKET_SIZE", "INIT_PACKET_SIZE",
    "HEADER_FIXED_SIZE", "RAMBLOCK_NAME_SIZE", "FLAG_SYNC", "FLAG_NOCOMP", "FLAG_ZLIB",
    "FLAG_ZSTD", "FLAG_QPL", "FLAG_UADK", "FLAG_QATZIP", "FLAG_DEVICE_STATE",
    "KNOWN_FLAGS", "METHOD_BITS", "METHOD_FLAGS", "page_count_for", "header_size",
    "Compat", "InitPacket", "PacketHeader", "encode_header", "encode_sync",
    "restamp_header", "HeaderDecoder",
]

MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1
MULTIFD_PACKET_SIZE = 524288
INIT_PACKET_SIZE = 64
HEADER_FIXED_SIZE = 320
RAMBLOCK_NAME_SIZE = 256

FLAG_SYNC = 0x01
FLAG_NOCOMP = 0x00
FLAG_ZLIB = 0x02
FLAG_ZSTD = 0x04
FLAG_QPL = 0x08
FLAG_UADK = 0x10
FLAG_QATZIP = 0x20
FLAG_DEVICE_STATE = 0x40
KNOWN_FLAGS = 0x7F
# Widest compression mask any QEMU uses (spec §3.1, 9.2+).
METHOD_BITS = 0x3E
METHOD_FLAGS = frozenset({FLAG_NOCOMP, FLAG_ZLIB, FLAG_ZSTD, FLAG_QPL, FLAG_UADK, FLAG_QATZIP})

_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_RAMBLOCK_OFFSET = 64

# magic, version, flags, pages_alloc, normal_pages, next_packet_size,
# packet_num, zero_pages (spec §2.1); then reserved and the block name.
_PREFIX = struct.Struct(">IIIIIIQI")
_FIXED = struct.Struct(">IIIIIIQI28x256s")
_INIT = struct.Struct(">II16sB39x")


# --------------------------------------------------------------------- sizes

def page_count_for(page_size: int) -> int:
    """Pages one packet may describe: 524288 / page_size (spec §0)."""
    if (
        not isinstance(page_size, int)
        or isinstance(page_size, bool)
        or page_size < 512
        or page_size > 65536
        or page_size & (page_size - 1)
    ):
        raise ValueError(
            f"page_size {page_size!r} is not a power of two between 512 and 65536"
        )
    return MULTIFD_PACKET_SIZE // page_size


def header_size(page_size: int) -> int:
    """Bytes of one RAM packet header: 320 + 8 * page_count (1344 for 4 KiB)."""
    return HEADER_FIXED_SIZE + 8 * page_count_for(page_size)


# -------------------------------------------------------------------- compat

# First QEMU release that knows each compression method (spec §3.1).
_METHOD_SINCE = {
    FLAG_NOCOMP: (0, 0), FLAG_ZLIB: (5, 0), FLAG_ZSTD: (5, 0),
    FLAG_QPL: (9, 1), FLAG_UADK: (9, 1), FLAG_QATZIP: (9, 2),
}
_VERSION_RE = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.\d{1,4})?")


@dataclass(frozen=True)
class Compat:
    """What the peer QEMU version implies for the bytes on the wire."""

    version: tuple[int, int]
    DEFAULT: ClassVar[Compat]

    def __post_init__(self) -> None:
        v = self.version
        if (
            not isinstance(v, tuple)
            or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
        ):
            raise ValueError(f"QEMU version must be a (major, minor) tuple, got {v!r}")

    @classmethod
    def parse(cls, text: str) -> Compat:
        """Parse "7.2", "10.0" (a trailing ".patch" is ignored)."""
        m = _VERSION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"not a QEMU version: {text!r} (expected e.g. '7.2' or '10.0')")
        return cls((int(m.group(1)), int(m.group(2))))

    def __str__(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def compression_mask(self) -> int:
        """Bits the peer compares with its method (spec §3.1)."""
        if self.version < (9, 1):
            return 0x0E
        if self.version < (9, 2):
            return 0x1E
        return 0x3E

    @property
    def zero_pages_in_packets(self) -> bool:
        """Peer understands ``zero_pages`` (9.0+, spec §2.2, §5)."""
        return self.version >= (9, 0)

    @property
    def sync_pages_alloc(self) -> bool:
        """SYNC packets carry pages_alloc = page_count (before 9.2, spec §6)."""
        return self.version < (9, 2)

    def supports(self, method_flag: int) -> bool:
        """The peer knows this compression method (spec §3.1 "Since").

        The mask alone is not enough: 0x0E already covers QPL's 0x08.
        """
        since = _METHOD_SINCE.get(method_flag)
        return (
            since is not None
            and self.version >= since
            and method_flag & ~self.compression_mask == 0
        )

    @property
    def strict_payload_size(self) -> bool:
        """Nonzero next_packet_size without normal pages is an error (9.0+).

        Before 9.0 it is the stale value of the previous packet (spec §10).
        """
        return self.version >= (9, 0)


Compat.DEFAULT = Compat((10, 0))


# --------------------------------------------------------------- init packet

@dataclass(frozen=True)
class InitPacket:
    """The 64-byte packet that opens every multifd channel (spec §1)."""

    uuid: bytes
    channel_id: int

    def __post_init__(self) -> None:
        if not isinstance(self.uuid, (bytes, bytearray)) or len(self.uuid) != 16:
            raise ValueError(f"uuid must be 16 bytes, got {self.uuid!r}")
        if not isinstance(self.channel_id, int) or not 0 <= self.channel_id <= 255:
            raise ValueError(f"channel id must be 0..255, got {self.channel_id!r}")
        object.__setattr__(self, "uuid", bytes(self.uuid))

    def encode(self) -> bytes:
        return _INIT.pack(MULTIFD_MAGIC, MULTIFD_VERSION, bytes(self.uuid), self.channel_id)

    @classmethod
    def decode(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        channels: int | None = None,
        expected_uuid: bytes | None = None,
        channel_hint: int | None = None,
    ) -> InitPacket:
        """Validate the first 64 bytes of ``buf`` (spec §1 steps 1-5).

        ``channel_hint`` is only used to label errors (the id is untrusted
        until checked); the "id bound twice" check is the caller's.
        """
        mv = _bytes_view(buf)

        def fail(cls_: type, field: str, msg: str, got: Any, expected: Any) -> NoReturn:
            raise cls_(msg, channel=channel_hint, field=field, got=got, expected=expected)

        if mv.nbytes < INIT_PACKET_SIZE:
            fail(TruncatedStream, "init", "init packet truncated", mv.nbytes, INIT_PACKET_SIZE)
        magic, version, uuid, cid = _INIT.unpack_from(mv, 0)
        if magic != MULTIFD_MAGIC:
            fail(BadInitPacket, "magic", "bad init packet magic", hex(magic), hex(MULTIFD_MAGIC))
        if version != MULTIFD_VERSION:
            fail(BadInitPacket, "version", "bad init packet version", version, MULTIFD_VERSION)
        if expected_uuid is not None and uuid != bytes(expected_uuid):
            fail(BadInitPacket, "uuid", f"uuid mismatch on channel id {cid}",
                 uuid.hex(), bytes(expected_uuid).hex())
        # QEMU only rejects id > channels (spec §1 step 5); id == channels is
        # one past the end, so reject it too.
        if channels is not None and cid >= channels:
            fail(BadInitPacket, "id", "channel id out of range", cid, f"< {channels}")
        return cls(uuid=uuid, channel_id=cid)


# -------------------------------------------------------------- RAM header

@dataclass(frozen=True, eq=False)
class PacketHeader:
    """A decoded RAM packet header; ``pages`` are page indices (offset // page_size)."""

    flags: int
    pages_alloc: int
    normal_pages: int
    zero_pages: int
    next_packet_size: int
    packet_num: int
    ramblock: str
    pages: np.ndarray

    @property
    def is_sync(self) -> bool:
        return bool(self.flags & FLAG_SYNC)

    @property
    def method_flag(self) -> int:
        return self.flags & METHOD_BITS

    @property
    def payload_size(self) -> int:
        # No payload follows a packet without normal pages, whatever
        # next_packet_size says (QEMU 7.2 leaves a stale value, spec §10).
        return 0 if self.normal_pages == 0 else self.next_packet_size

    @property
    def normal(self) -> np.ndarray:
        return self.pages[: self.normal_pages]

    @property
    def zero(self) -> np.ndarray:
        return self.pages[self.normal_pages:]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PacketHeader):
            return NotImplemented
        return (
            self.flags == other.flags
            and self.pages_alloc == other.pages_alloc
            and self.normal_pages == other.normal_pages
            and self.zero_pages == other.zero_pages
            and self.next_packet_size == other.next_packet_size
            and self.packet_num == other.packet_num
            and self.ramblock == other.ramblock
            and np.array_equal(self.pages, other.pages)
        )

    __hash__ = None  # type: ignore[assignment]


def _bytes_view(buf: Any) -> memoryview:
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _check_uint(name: str, value: Any, limit: int) -> None:
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= limit:
        raise ValueError(f"{name} must be an integer in 0..{limit}, got {value!r}")


def _encode_name(ramblock: str) -> bytes:
    name = ramblock.encode("utf-8")
    if len(name) >= RAMBLOCK_NAME_SIZE or b"\0" in name:
        raise ValueError(f"ramblock name must be at most 255 bytes without NUL: {ramblock!r}")
    return name


def _page_offsets(pages: Any, n: int, page_count: int, page_size: int) -> np.ndarray:
    """Byte offsets (native uint64) of ``n`` page indices, checked to fit."""
    if n > page_count:
        raise ValueError(f"{n} pages do not fit in a packet of {page_count}")
    arr = np.asarray(pages)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"pages must be a 1-d array of normal_pages + zero_pages = {n} entries")
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind not in "ui" or (arr.dtype.kind == "i" and arr.min() < 0):
        raise ValueError("pages must be non-negative integer page indices")
    idx = arr.astype(np.uint64, copy=False)
    if int(idx.max()) > _U64_MAX // page_size:
        raise ValueError("page index too large for a u64 byte offset")
    return idx * np.uint64(page_size)


def encode_header(
    *,
    page_size: int,
    flags: int,
    packet_num: int,
    ramblock: str,
    normal_pages: int,
    zero_pages: int,
    next_packet_size: int,
    pages: Any,
    pages_alloc: int | None = None,
    out: bytearray | memoryview | None = None,
) -> bytes | None:
    """Write one RAM packet header (spec §2.1): header_size(page_size) bytes.

    ``pages`` are page indices, normal first then zero.  Offset slots past
    them are zero, as 9.2+ sends them.  Field values are written as given
    (no protocol checks: that is the decoder's job), only their ranges are
    checked.  With ``out`` (at least header_size bytes) the header goes to
    its start and None is returned; otherwise new bytes are returned.
    """
    count = page_count_for(page_size)
    size = HEADER_FIXED_SIZE + 8 * count
    if pages_alloc is None:
        pages_alloc = count
    for name, value in (("flags", flags), ("pages_alloc", pages_alloc),
                        ("normal_pages", normal_pages), ("zero_pages", zero_pages),
                        ("next_packet_size", next_packet_size)):
        _check_uint(name, value, _U32_MAX)
    _check_uint("packet_num", packet_num, _U64_MAX)
    n = int(normal_pages) + int(zero_pages)
    offsets = _page_offsets(pages, n, count, page_size)
    name = _encode_name(ramblock)

    buf = bytearray(size) if out is None else out
    if memoryview(buf).nbytes < size:
        raise ValueError(f"out holds {memoryview(buf).nbytes} bytes, header needs {size}")
    _FIXED.pack_into(buf, 0, MULTIFD_MAGIC, MULTIFD_VERSION, flags, pages_alloc,
                     normal_pages, next_packet_size, packet_num, zero_pages, name)
    slots = np.frombuffer(buf, dtype=">u8", count=count, offset=HEADER_FIXED_SIZE)
    slots[:n] = offsets
    slots[n:] = 0
    return bytes(buf) if out is None else None


def encode_sync(
    *,
    page_size: int,
    packet_num: int,
    compat: Compat = Compat.DEFAULT,
    out: bytearray | memoryview | None = None,
) -> bytes | None:
    """A page-less SYNC packet header as QEMU 9.2+ sends it (spec §6).

    pages_alloc is page_count instead of 0 for peers before 9.2.
    """
    alloc = page_count_for(page_size) if compat.sync_pages_alloc else 0
    return encode_header(
        page_size=page_size, flags=FLAG_SYNC, packet_num=packet_num, ramblock="",
        normal_pages=0, zero_pages=0, next_packet_size=0,
        pages=np.empty(0, dtype=np.uint64), pages_alloc=alloc, out=out,
    )


_FLAGS_AT = struct.Struct(">I")
_NEXT_PACKET_SIZE_OFFSET = 20


def restamp_header(header: bytearray | memoryview, *, method_flag: int, mask: int,
                   next_packet_size: int) -> None:
    """Give an encoded header another method and payload size, in place.

    Only the compression bits (``mask``) of flags and next_packet_size
    change; every other byte (packet_num, block name, offsets, stale slots,
    SYNC) stays as it was.  A relay re-encoding a packet uses this.
    """
    _check_uint("next_packet_size", next_packet_size, _U32_MAX)
    (flags,) = _FLAGS_AT.unpack_from(header, 8)
    _FLAGS_AT.pack_into(header, 8, (flags & ~mask) | method_flag)
    _FLAGS_AT.pack_into(header, _NEXT_PACKET_SIZE_OFFSET, next_packet_size)


class HeaderDecoder:
    """Validates packet headers of one channel.

    Applies every check of spec §2.3 and the §9 "Every packet" and "RAM
    header" lists.  ``blocks`` maps RAM block names to used_length in bytes;
    None is lenient (any name, no range check; alignment and duplicates are
    still checked).  ``other_blocks`` accepts names outside ``blocks`` (not
    range-checked: their size is unknown) while still checking the known ones.
    ``any_method`` accepts a method the QEMU version does not know, for the
    link between two relays, where no QEMU reads the bits (the bits must
    still fit the version's mask).
    """

    def __init__(
        self,
        *,
        channel: int,
        page_size: int,
        method_flag: int,
        compat: Compat,
        blocks: Mapping[str, int] | None,
        other_blocks: bool = False,
        any_method: bool = False,
    ) -> None:
        self.page_count = page_count_for(page_size)
        known = method_flag in METHOD_FLAGS and not method_flag & ~compat.compression_mask
        if not (known if any_method else compat.supports(method_flag)):
            raise ValueError(
                f"method flag {method_flag:#x} is not a method QEMU {compat} can use"
            )
        self.channel = channel
        self.page_size = page_size
        self.header_size = HEADER_FIXED_SIZE + 8 * self.page_count
        self.method_flag = method_flag
        self.compat = compat
        self.blocks = blocks
        self.other_blocks = other_blocks
        self._shift = page_size.bit_length() - 1
        self._mask = compat.compression_mask

    def _error(self, cls: type, field: str, msg: str, packet_num: int | None,
               got: Any = None, expected: Any = None) -> Exception:
        return cls(msg, channel=self.channel, packet_num=packet_num, field=field,
                   got=got, expected=expected)

    def decode(self, buf: bytes | bytearray | memoryview) -> PacketHeader:
        """Decode exactly header_size bytes; raise an engine.errors class on any fault."""
        mv = _bytes_view(buf)
        if mv.nbytes != self.header_size:
            raise self._error(TruncatedStream, "header", "packet header truncated", None,
                              mv.nbytes, self.header_size)
        magic, version, flags, alloc, normal, nps, num, zero = _PREFIX.unpack_from(mv, 0)
        self._check_counts(magic, version, flags, alloc, normal, nps, num, zero)
        n = normal + zero
        if n == 0:
            # spec §2.3 step 8: no block lookup; a stale name is not looked at.
            return PacketHeader(flags, alloc, normal, zero, nps, num, "",
                                np.empty(0, dtype=np.uint64))
        name = self._ramblock(mv, num)
        pages = self._pages(mv, n, name, num)
        return PacketHeader(flags, alloc, normal, zero, nps, num, name, pages)

    def _check_counts(self, magic: int, version: int, flags: int, alloc: int,
                      normal: int, nps: int, num: int, zero: int) -> None:
        if magic != MULTIFD_MAGIC:
            raise self._error(BadMagic, "magic", "bad packet magic", num,
                              hex(magic), hex(MULTIFD_MAGIC))
        if version != MULTIFD_VERSION:
            raise self._error(BadVersion, "version", "bad packet version", num,
                              version, MULTIFD_VERSION)
        if flags & ~KNOWN_FLAGS:
            raise self._error(BadFlags, "flags", "unknown flag bits", num,
                              hex(flags), f"bits within {KNOWN_FLAGS:#x}")
        if flags & FLAG_DEVICE_STATE:
            what = "SYNC with DEVICE_STATE" if flags & FLAG_SYNC else "device state unsupported"
            raise self._error(BadFlags, "flags", what, num, hex(flags), "no 0x40")
        if alloc > self.page_count:
            raise self._error(BadPageCount, "pages_alloc", "pages_alloc too large", num,
                              alloc, f"<= {self.page_count}")
        if normal > alloc:
            raise self._error(BadPageCount, "normal_pages", "normal_pages exceeds pages_alloc",
                              num, normal, f"<= {alloc}")
        if zero > alloc - normal:
            raise self._error(BadPageCount, "zero_pages", "zero_pages exceeds free slots",
                              num, zero, f"<= {alloc - normal}")
        if zero and not self.compat.zero_pages_in_packets:
            raise self._error(BadPageCount, "zero_pages",
                              f"zero pages in packets need QEMU 9.0+, peer is {self.compat}",
                              num, zero, 0)
        if normal + zero and (flags & self._mask) != self.method_flag:
            raise self._error(BadFlags, "flags", "compression bits differ from the method",
                              num, hex(flags & self._mask), hex(self.method_flag))
        if normal == 0 and nps and self.compat.strict_payload_size:
            raise self._error(BadPayloadSize, "next_packet_size",
                              "payload size on a packet without normal pages", num, nps, 0)

    def _ramblock(self, mv: memoryview, num: int) -> str:
        raw = mv[_RAMBLOCK_OFFSET:HEADER_FIXED_SIZE].tobytes()
        end = raw.find(b"\0")
        if end < 0:
            raise self._error(BadRamBlock, "ramblock", "ramblock name not NUL-terminated",
                              num, raw[:32], "NUL within 256 bytes")
        try:
            name = raw[:end].decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(BadRamBlock, "ramblock", "ramblock name is not UTF-8",
                              num, raw[:end], None) from None
        if self.blocks is not None and name not in self.blocks and not self.other_blocks:
            raise self._error(BadRamBlock, "ramblock", "unknown RAM block", num,
                              name, sorted(self.blocks))
        return name

    def _pages(self, mv: memoryview, n: int, name: str, num: int) -> np.ndarray:
        off = np.frombuffer(mv, dtype=">u8", count=n, offset=HEADER_FIXED_SIZE).astype(np.uint64)
        used = None if self.blocks is None or name not in self.blocks else int(self.blocks[name])
        limit = None if used is None else used - self.page_size
        ok = not int(np.bitwise_or.reduce(off)) & (self.page_size - 1)
        if ok and limit is not None:
            ok = int(off.max()) <= limit
        if ok and n > 1:
            s = np.sort(off)
            ok = not np.count_nonzero(s[1:] == s[:-1])
        if not ok:
            raise self._offset_error(off, limit, used, num)
        off >>= np.uint64(self._shift)
        return off

    def _offset_error(self, off: np.ndarray, limit: int | None, used: int | None,
                      num: int) -> Exception:
        """Error for the first offset (in array order) that fails any check."""
        unaligned = (off & np.uint64(self.page_size - 1)) != 0
        if limit is None:
            outside = np.zeros(off.size, dtype=bool)
        elif limit < 0:
            outside = np.ones(off.size, dtype=bool)
        else:
            outside = off > np.uint64(min(limit, _U64_MAX))
        order = np.argsort(off, kind="stable")
        repeat = np.zeros(off.size, dtype=bool)
        repeat[order[1:][off[order][1:] == off[order][:-1]]] = True
        i = int(np.argmax(unaligned | outside | repeat))
        got = int(off[i])
        field = f"offset[{i}]"
        if unaligned[i]:
            return self._error(BadOffset, field, "offset not page aligned", num,
                               got, f"multiple of {self.page_size}")
        if outside[i]:
            return self._error(BadOffset, field, "page outside its RAM block", num,
                               got, f"offset + {self.page_size} <= {used}")
        first = int(np.flatnonzero(off == off[i])[0])
        return self._error(BadOffset, field, f"offset repeats offset[{first}] in one packet",
                           num, got, "unique offsets")
