"""QEMU's main migration stream for a RAM-only machine: write it and read it.

The first connection of a QEMU migration is the main channel
(../shared/spec/qemu-main-channel.md).  For ``-machine none`` with one
memory backend it holds, big-endian::

    "QEVM" 3 | CONFIGURATION machine
    START ram: MEM_SIZE, block list      [FLUSH] EOS footer   sync point
    PART  ram: ZERO records (< 9.0 only) [FLUSH] EOS footer   one per precopy pass
    [COMMAND SWITCHOVER_START] (10.0+)
    END   ram: ZERO records              [FLUSH] EOS footer   the last pass
    FULL "timer", FULL "globalstate" | EOF | VMDESCRIPTION

Every RAM section here is one sync point: the destination waits, at that
point, for one SYNC packet on every multifd channel.  QEMU before 8.1 syncs
at every RAM EOS, later ones at MULTIFD_FLUSH records (written in START,
where a pass over the dirty bitmap ends, and in END).  ``MainChannelWriter``
calls its ``sync`` callback exactly where it writes a sync point, so the
SYNC packets on the channels and the main channel cannot disagree.

``MainChannelReader`` reads what a real QEMU source writes and yields
events (blocks, zero pages, sync points, device sections, the end); it
accepts both generations' sync rules, decided by whether START carries a
FLUSH record.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from engine import wire
from engine.qemu.errors import BadMainChannel

QEVM_MAGIC = 0x5145564D
QEVM_VERSION = 3

SECTION_EOF = 0x00
SECTION_START = 0x01
SECTION_PART = 0x02
SECTION_END = 0x03
SECTION_FULL = 0x04
SECTION_SUBSECTION = 0x05
VMDESCRIPTION = 0x06
CONFIGURATION = 0x07
COMMAND = 0x08
SECTION_FOOTER = 0x7E

RAM_ZERO = 0x02
RAM_MEM_SIZE = 0x04
RAM_PAGE = 0x08
RAM_EOS = 0x10
RAM_CONTINUE = 0x20
RAM_XBZRLE = 0x40
RAM_COMPRESS_PAGE = 0x100
RAM_MULTIFD_FLUSH = 0x200
_RAM_FLAG_MASK = 0xFFF       # flags live in the low bits of a page-aligned offset

CMD_SWITCHOVER_START = 11
RAM_SECTION_VERSION = 4

# Section ids and device sections as a real -machine none source writes
# them (captured from Debian's 7.2.22 and 10.0.2, paused); the destination
# finds FULL sections by name, so only their payloads must fit.
_RAM_SECTION_ID = {"7": 2, "10": 1}
_GLOBALSTATE_ID = {"7": 4, "10": 3}
TIMER_SIZE = 24              # cpu_ticks_offset, unused, cpu_clock_offset
GLOBALSTATE_SIZE = 104       # be32 length + runstate (and 10.0's suspend flags)

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class SyncRule:
    """Where the sync points of a QEMU generation are (spec §4)."""

    flush_records: bool        # MULTIFD_FLUSH records (8.1+), else every RAM EOS
    zero_records: bool         # zero pages as ZERO records on the main channel (< 9.0)
    switchover_start: bool     # 10.0+ sends SWITCHOVER_START before END

    @classmethod
    def for_peer(cls, compat: wire.Compat) -> SyncRule:
        return cls(flush_records=compat.version >= (8, 1),
                   zero_records=not compat.zero_pages_in_packets,
                   switchover_start=compat.version >= (10, 0))


def _generation(compat: wire.Compat) -> str:
    return "10" if compat.version >= (10, 0) else "7"


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"name {text!r} must be 1..255 bytes")
    return _U8.pack(len(raw)) + raw


# ------------------------------------------------------------------ writer

class MainChannelWriter:
    """Writes the main channel; ``write`` takes bytes, ``sync`` SYNCs every multifd channel.

    Call ``start()``, then ``part(zero)`` once per precopy pass but the
    last, then ``end(zero)``.  ``zero`` maps block names to the page
    indices that go as ZERO records (empty for 9.0+ peers, whose zero
    pages travel in the packets).
    """

    def __init__(self, write: Callable[[bytes], None], sync: Callable[[], None], *,
                 compat: wire.Compat, blocks: Sequence[tuple[str, int]], page_size: int,
                 machine: str = "none", runstate: str = "running") -> None:
        self._write = write
        self._sync = sync
        self.compat = compat
        self.rule = SyncRule.for_peer(compat)
        self.blocks = list(blocks)
        self.page_size = page_size
        self.machine = machine
        self.runstate = runstate
        self._gen = _generation(compat)
        self._section = _RAM_SECTION_ID[self._gen]
        self.sync_points = 0
        self.bytes_written = 0

    def _put(self, data: bytes) -> None:
        self._write(data)
        self.bytes_written += len(data)

    def start(self) -> None:
        head = _U32.pack(QEVM_MAGIC) + _U32.pack(QEVM_VERSION)
        machine = self.machine.encode()
        head += _U8.pack(CONFIGURATION) + _U32.pack(len(machine)) + machine
        head += (_U8.pack(SECTION_START) + _U32.pack(self._section) + _name("ram")
                 + _U32.pack(0) + _U32.pack(RAM_SECTION_VERSION))
        total = sum(size for _, size in self.blocks)
        head += _U64.pack(total | RAM_MEM_SIZE)
        for name, size in self.blocks:
            head += _name(name) + _U64.pack(size)
        self._put(head)
        self._sync_point()

    def part(self, zero: dict[str, np.ndarray] | None = None) -> None:
        self._put(_U8.pack(SECTION_PART) + _U32.pack(self._section) + self._zero_records(zero))
        self._sync_point()

    def end(self, zero: dict[str, np.ndarray] | None = None) -> None:
        if self.rule.switchover_start:
            self._put(_U8.pack(COMMAND) + _U16.pack(CMD_SWITCHOVER_START) + _U16.pack(0))
        self._put(_U8.pack(SECTION_END) + _U32.pack(self._section) + self._zero_records(zero))
        self._sync_point()
        self._put(self._devices() + _U8.pack(SECTION_EOF) + self._vmdesc())

    def _sync_point(self) -> None:
        """SYNC every channel, then the marker the destination syncs on, EOS, footer."""
        self._sync()
        self.sync_points += 1
        marker = _U64.pack(RAM_MULTIFD_FLUSH) if self.rule.flush_records else b""
        self._put(marker + _U64.pack(RAM_EOS) + _U8.pack(SECTION_FOOTER) + _U32.pack(self._section))

    def _zero_records(self, zero: dict[str, np.ndarray] | None) -> bytes:
        if not zero:
            return b""
        if not self.rule.zero_records:
            raise ValueError(f"QEMU {self.compat} takes zero pages in the packets, not as records")
        out = bytearray()
        for name, pages in zero.items():
            pages = np.sort(np.asarray(pages, dtype=np.uint64))
            if not pages.size:
                continue
            flags = (pages * np.uint64(self.page_size)) | np.uint64(RAM_ZERO | RAM_CONTINUE)
            flags[0] &= ~np.uint64(RAM_CONTINUE)
            # 9 bytes a record: be64 offset|flags, one fill byte; the first names the block
            records = np.zeros(pages.size, dtype=[("f", ">u8"), ("b", "u1")])
            records["f"] = flags
            raw = records.tobytes()
            out += raw[:8] + _name(name) + raw[8:]
        return bytes(out)

    def _devices(self) -> bytes:
        timer = self._full(0, "timer", 2, bytes(TIMER_SIZE))
        state = self.runstate.encode()
        if self._gen == "10":
            body = state.ljust(32, b"\0")[:32] + b"\x01\x00" + bytes(66)   # has_/vm_was_suspended
        else:
            body = state.ljust(100, b"\0")[:100]
        data = _U32.pack(len(state) + 1) + body
        return timer + self._full(_GLOBALSTATE_ID[self._gen], "globalstate", 1, data)

    @staticmethod
    def _full(section: int, name: str, version: int, data: bytes) -> bytes:
        return (_U8.pack(SECTION_FULL) + _U32.pack(section) + _name(name) + _U32.pack(0)
                + _U32.pack(version) + data + _U8.pack(SECTION_FOOTER) + _U32.pack(section))

    def _vmdesc(self) -> bytes:
        text = json.dumps({"page_size": self.page_size, "devices": [
            {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2},
            {"name": "globalstate", "instance_id": 0, "vmsd_name": "globalstate", "version": 1},
        ]}).encode()
        return _U8.pack(VMDESCRIPTION) + _U32.pack(len(text)) + text


# ------------------------------------------------------------------ reader

@dataclass(frozen=True)
class Blocks:
    """START's block list: (name, used_length) in the source's order."""
    machine: str
    blocks: list[tuple[str, int]]


@dataclass(frozen=True)
class ZeroPages:
    """Pages of one block the source sent as ZERO records (fill byte 0)."""
    block: str
    pages: np.ndarray


@dataclass(frozen=True)
class SyncPoint:
    """Every multifd channel must deliver one SYNC before the stream goes on."""
    section: str     # "start", "part", "end"
    marker: str      # "flush" or "eos"


@dataclass(frozen=True)
class Device:
    name: str
    instance: int
    version: int
    size: int


@dataclass(frozen=True)
class StreamEnd:
    vmdesc_bytes: int


_DEVICE_SIZES = {("timer", 2): TIMER_SIZE, ("globalstate", 1): GLOBALSTATE_SIZE}
_MAX_VMDESC = 16 << 20
_SECTION_NAMES = {SECTION_START: "start", SECTION_PART: "part", SECTION_END: "end"}


class ByteReader:
    """Exact reads from a channel source (``readinto``), counting bytes."""

    def __init__(self, source) -> None:
        self._source = source
        self.offset = 0

    def read(self, n: int, what: str) -> bytes:
        buf = bytearray(n)
        got = self._source.readinto(memoryview(buf)) if n else 0
        if got < n:
            raise BadMainChannel(f"main channel ended inside {what}", field=what,
                                 got=self.offset + got, expected=f"{n} more bytes")
        self.offset += n
        return bytes(buf)

    def u8(self, what: str) -> int:
        return self.read(1, what)[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.read(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.read(8, what))[0]

    def name(self, what: str) -> str:
        return self.read(self.u8(what), what).decode("utf-8", "replace")


class MainChannelReader:
    """Parses a real source's main channel into events (``events()``).

    ``page_size`` is the target page size both ends use.  Anything this
    reader cannot take (a device section it does not know, page data on
    the main channel, XBZRLE, a block outside START's list) is a
    ``BadMainChannel`` naming it.
    """

    def __init__(self, source, *, page_size: int) -> None:
        self.r = ByteReader(source)
        self.page_size = page_size
        self.flush_records: bool | None = None
        self.blocks: dict[str, int] = {}
        self.machine = ""
        self._ram_section: int | None = None
        self._block: str | None = None
        self._zero_block = ""

    def _fail(self, what: str, got: object, expected: object = None) -> BadMainChannel:
        return BadMainChannel(what, field=f"main channel byte {self.r.offset}", got=got,
                              expected=expected)

    def events(self) -> Iterator[object]:
        magic, version = self.r.u32("magic"), self.r.u32("version")
        if magic != QEVM_MAGIC or version != QEVM_VERSION:
            raise self._fail("not a QEMU migration stream", f"{magic:#x} v{version}",
                             f"{QEVM_MAGIC:#x} v{QEVM_VERSION}")
        while True:
            kind = self.r.u8("section type")
            if kind == SECTION_EOF:
                yield StreamEnd(self._vmdesc())
                return
            if kind == CONFIGURATION:
                self.machine = self.r.read(self.r.u32("machine type length"), "machine type").decode(
                    "utf-8", "replace")
            elif kind == SECTION_START:
                yield from self._start()
            elif kind in (SECTION_PART, SECTION_END):
                yield from self._ram_iteration(kind)
            elif kind == SECTION_FULL:
                yield self._device()
            elif kind == COMMAND:
                self._command()
            else:
                raise self._fail("unknown section type", f"{kind:#x}")

    def _start(self) -> Iterator[object]:
        section, name = self.r.u32("section id"), self.r.name("section name")
        instance, version = self.r.u32("instance"), self.r.u32("version")
        if name != "ram" or version != RAM_SECTION_VERSION:
            raise self._fail("cannot parse iterative section", f"{name!r} v{version} "
                             f"instance {instance}", f"'ram' v{RAM_SECTION_VERSION}")
        self._ram_section = section
        header = self.r.u64("RAM total")
        if not header & RAM_MEM_SIZE:
            raise self._fail("RAM START without MEM_SIZE", hex(header))
        total, listed = header & ~_RAM_FLAG_MASK, 0
        while listed < total:
            block, size = self.r.name("block name"), self.r.u64("block size")
            if size == 0 or size % self.page_size or block in self.blocks:
                raise self._fail("bad RAM block in START", f"{block!r} of {size} bytes")
            self.blocks[block] = size
            listed += size
        if listed != total:
            raise self._fail("RAM block sizes do not add up", listed, total)
        yield Blocks(self.machine, list(self.blocks.items()))
        self.flush_records = False
        yield from self._records("start")

    def _ram_iteration(self, kind: int) -> Iterator[object]:
        section = self.r.u32("section id")
        if section != self._ram_section:
            raise self._fail("RAM iteration for an unknown section", section, self._ram_section)
        yield from self._records(_SECTION_NAMES[kind])

    def _records(self, section: str) -> Iterator[object]:
        """RAM records up to EOS, then the footer; ZERO runs are batched."""
        zero: list[int] = []
        flushed = False
        while True:
            word = self.r.u64("RAM record")
            flags, offset = word & _RAM_FLAG_MASK, word & ~_RAM_FLAG_MASK
            if flags & RAM_ZERO:
                block = self._record_block(flags)
                if self.r.u8("zero fill byte") != 0:
                    raise self._fail("ZERO record with a nonzero fill byte", "nonzero", 0)
                if offset + self.page_size > self.blocks[block]:
                    raise self._fail("ZERO record outside its block", offset, self.blocks[block])
                if zero and block != self._zero_block:
                    yield self._zero_pages(zero)
                    zero = []
                self._zero_block = block
                zero.append(offset // self.page_size)
                continue
            if zero:
                yield self._zero_pages(zero)
                zero = []
            if flags & RAM_MULTIFD_FLUSH:
                if section == "start":
                    self.flush_records = True
                flushed = True
                yield SyncPoint(section, "flush")
            elif flags & RAM_EOS:
                if not self.flush_records and not flushed:
                    yield SyncPoint(section, "eos")
                self._footer()
                return
            else:
                raise self._fail("RAM record this receiver cannot take (page data belongs on "
                                 "the multifd channels)", hex(flags))

    def _record_block(self, flags: int) -> str:
        if not flags & RAM_CONTINUE:
            self._block = self.r.name("block name")
        if self._block not in self.blocks:
            raise self._fail("RAM record for a block not in START", self._block, sorted(self.blocks))
        return self._block

    def _zero_pages(self, pages: list[int]) -> ZeroPages:
        return ZeroPages(self._zero_block, np.asarray(pages, dtype=np.uint64))

    def _footer(self) -> None:
        marker, section = self.r.u8("section footer"), self.r.u32("section footer id")
        if marker != SECTION_FOOTER:
            raise self._fail("missing section footer", f"{marker:#x}", f"{SECTION_FOOTER:#x}")

    def _device(self) -> Device:
        section, name = self.r.u32("section id"), self.r.name("device name")
        instance, version = self.r.u32("instance"), self.r.u32("version")
        size = _DEVICE_SIZES.get((name, version))
        if size is None:
            raise self._fail(f"device section {name!r} (instance {instance}, version {version}) "
                             "this receiver cannot parse; it takes a RAM-only -machine none "
                             "source: timer v2, globalstate v1", name)
        self.r.read(size, f"device section {name!r}")
        self._footer()
        return Device(name, instance, version, size)

    def _command(self) -> None:
        command, length = _U16.unpack(self.r.read(2, "command")), self.r.read(2, "command length")
        self.r.read(_U16.unpack(length)[0], f"command {command[0]}")

    def _vmdesc(self) -> int:
        try:
            kind = self.r.u8("vmdescription")
        except BadMainChannel:
            return 0      # the description is optional
        if kind != VMDESCRIPTION:
            raise self._fail("expected the VM description", f"{kind:#x}", f"{VMDESCRIPTION:#x}")
        size = self.r.u32("vmdescription length")
        if size > _MAX_VMDESC:
            raise self._fail("VM description too large", size, f"<= {_MAX_VMDESC}")
        self.r.read(size, "vmdescription")
        return size
