"""Read channel files someone else wrote (real QEMU, or us) and say what is in them.

``inspect_channels`` walks every packet of every channel file with the same
validating reader the receiver uses, in its lenient mode (RAM blocks we do
not hold are decoded into scratch and counted), and, given a memory image,
reconstructs one block's pages and compares each page it covered with the
image.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine import errors, methods, wire
from engine.channels import FileSource
from engine.ram import RamBlock
from engine.receiver import ChannelCounters, ChannelReader, PacketInfo
from engine.workloads.images import load_image
from workers import codec

@dataclass
class StreamGuess:
    """What a quick look at a channel's first packets suggests."""

    method: str | None
    qemu_version: str
    block: str | None


@dataclass(kw_only=True)
class ChannelSummary(ChannelCounters):
    """One channel file: the reader's counters, plus where it came from."""

    path: str
    channel: int
    first_packet: int | None = None
    last_packet: int | None = None


@dataclass
class InspectResult:
    method: str
    qemu_version: str
    block: str | None
    channels: list[ChannelSummary] = field(default_factory=list)
    pages_checked: int = 0
    mismatched_offsets: list[int] = field(default_factory=list)
    mismatched_pages: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatched_pages == 0


@dataclass
class _Evidence:
    """What the raw headers of channel files say, before any of it is trusted."""

    method_flag: int | None = None
    old: bool = False        # proves QEMU < 9.0: stale sizes, SYNC riding on pages
    new: bool = False        # proves QEMU >= 9.0: zero pages inside packets
    blocks: Counter = field(default_factory=Counter)


def guess_stream(paths: str | Path | Sequence[str | Path], page_size: int) -> StreamGuess:
    """Method, QEMU generation and main block from every packet header of every channel.

    Reads raw header fields without trusting them beyond this guess (the
    real walk validates everything) and skips payloads.  QEMU 7.2 gives
    itself away by a stale ``next_packet_size`` on a page-less packet or a
    SYNC on a packet with pages, wherever in which channel it appears; zero
    pages inside packets mean 9.0 or later.  With no evidence either way,
    both readings of the stream are the same, and "10.0" is said.
    """
    evidence = _Evidence()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        _scan(path, page_size, evidence)
    method = methods.by_flag(evidence.method_flag) if evidence.method_flag is not None else None
    version = "7.2" if evidence.old and not evidence.new else "10.0"
    block = evidence.blocks.most_common(1)[0][0] if evidence.blocks else None
    return StreamGuess(method.name if method else None, version, block)


def _scan(path: str | Path, page_size: int, evidence: _Evidence) -> None:
    source = FileSource(path, 0)        # .zst channel files too: read, not seek
    header = memoryview(bytearray(wire.header_size(page_size)))
    scratch = memoryview(bytearray(1 << 20))
    try:
        if source.readinto(scratch[:wire.INIT_PACKET_SIZE]) < wire.INIT_PACKET_SIZE:
            return
        while source.readinto(header) == len(header):
            magic, _version, flags, _alloc, normal, payload, _num, zero = struct.unpack_from(
                ">IIIIIIQI", header)
            if magic != wire.MULTIFD_MAGIC:
                return          # not a packet: the walk will say so
            if normal + zero:
                if evidence.method_flag is None:
                    evidence.method_flag = flags & wire.METHOD_BITS
                name = bytes(header[64:320]).split(b"\0", 1)[0].decode("utf-8", "replace")
                evidence.blocks[name] += normal + zero
                evidence.old |= bool(flags & wire.FLAG_SYNC)
            else:
                evidence.old |= payload != 0
            evidence.new |= zero > 0
            while normal and payload:
                step = min(payload, len(scratch))
                if source.readinto(scratch[:step]) < step:
                    return
                payload -= step
    finally:
        source.close()


def inspect_channels(paths: Sequence[str | Path], *, page_size: int = 4096,
                     method: str | None = None, qemu_version: str | None = None,
                     image: str | Path | None = None, block: str | None = None,
                     on_packet: Callable[[ChannelSummary, PacketInfo], None] | None = None,
                     ) -> InspectResult:
    """Walk every packet of ``paths``; with ``image``, check ``block``'s pages against it."""
    guess = guess_stream(paths, page_size)
    method = method or guess.method
    if method is None:
        flag_hint = "no packet with pages in its first packets"
        raise errors.BadFlags(f"cannot tell the method ({flag_hint}); pass --method",
                              field="flags")
    compat = wire.Compat.parse(qemu_version or guess.qemu_version)
    block = block or guess.block
    result = InspectResult(method, str(compat), block)
    reference = load_image(image, name=block or "image", page_size=page_size) if image else None
    dest = RamBlock.create(reference.name, reference.size, page_size) if reference else None
    covered = np.zeros(reference.pages if reference else 0, dtype=bool)

    def mark(name: str, pages: np.ndarray) -> None:
        if dest is not None and name == dest.name:
            covered[pages] = True

    try:
        blocks = {dest.name: dest} if dest else {}
        for path in paths:
            result.channels.append(_walk(path, method, page_size, compat, blocks, mark, on_packet))
        if dest is not None:
            _compare(result, reference, dest, covered, page_size)
    finally:
        for b in (reference, dest):
            if b is not None:
                b.close()
    return result


def _walk(path, method, page_size, compat, blocks, mark, on_packet) -> ChannelSummary:
    # the reader counts straight into the summary
    summary = ChannelSummary(path=str(path), channel=0, bytes=wire.INIT_PACKET_SIZE)
    reader = ChannelReader(FileSource(path, 0), method=method, page_size=page_size, blocks=blocks,
                           compat=compat, lenient=True, on_pages=mark, counters=summary)
    try:
        summary.channel = reader.read_init().channel_id
        while (info := reader.next_packet()) is not None:
            if summary.first_packet is None:
                summary.first_packet = info.packet_num
            summary.last_packet = info.packet_num
            if on_packet is not None:
                on_packet(summary, info)
        return summary
    finally:
        reader.close()


def _compare(result: InspectResult, reference: RamBlock, dest: RamBlock,
             covered: np.ndarray, page_size: int) -> None:
    count, first = codec.compare_pages(reference.buf, dest.buf, page_size, reference.pages)
    bad = first[covered[first]] if count else first
    result.pages_checked = int(covered.sum())
    result.mismatched_pages = int(len(bad))
    result.mismatched_offsets = [int(p) * page_size for p in bad[:16]]
