"""The receiver: channels in, pages into the destination RAM blocks.

::

    channel i source ──► ChannelReader i (one thread per channel)
                           │ header: engine.wire.HeaderDecoder (untrusted bytes)
                           │ zero pages: cleared in the destination block (C)
                           │ payload: bounded by the method, read into a
                           │   reusable buffer, decoded by the method's recv
                           │   hook straight into the destination block (C,
                           │   GIL released, so channels decode in parallel);
                           │   method none (payload_is_pages): checked by
                           │   recv_check, then read straight into the
                           │   destination pages (readv / recvmsg_into)
                           ▼
                         stops at SYNC ── Receiver.receive_round waits until
                                          every channel reached it (barrier)

After a round, ``verify`` compares destination and source byte for byte
and names the pages that differ.  ``ChannelReader`` also serves
``multifd-engine inspect``, in a lenient mode that accepts RAM blocks it
does not hold (it decodes their pages into scratch and counts them).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_EXCEPTION, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engine import errors, methods, wire
from engine.channels import ChannelSource
from engine.methods import MethodParams
from engine.ram import RamBlock, page_views
from engine.threads import ThreadPool
from workers import codec
from workers.settings import JobSettings


@dataclass(frozen=True)
class PacketInfo:
    """What one decoded packet was (for counters and ``inspect``)."""

    packet_num: int
    flags: int
    ramblock: str
    normal_pages: int
    zero_pages: int
    next_packet_size: int
    payload_size: int
    known_block: bool

    @property
    def is_sync(self) -> bool:
        return bool(self.flags & wire.FLAG_SYNC)


@dataclass
class ChannelCounters:
    packets: int = 0
    sync_packets: int = 0
    normal_pages: int = 0
    zero_pages: int = 0
    other_block_pages: int = 0
    bytes: int = 0
    decode_ns: int = 0

    def add(self, info: PacketInfo, header_bytes: int, decode_ns: int) -> None:
        self.packets += 1
        self.sync_packets += info.is_sync
        self.normal_pages += info.normal_pages
        self.zero_pages += info.zero_pages
        if not info.known_block:
            self.other_block_pages += info.normal_pages + info.zero_pages
        self.bytes += header_bytes + info.payload_size
        self.decode_ns += decode_ns


class _Scratch:
    """Where pages of a block we do not hold are decoded (lenient mode)."""

    def __init__(self, page_size: int) -> None:
        count = wire.page_count_for(page_size)
        self.buf = memoryview(bytearray(count * page_size))
        self.pages = np.arange(count, dtype=np.uint64)


class ChannelReader:
    """Reads, validates and applies the packets of one channel.

    ``blocks`` maps RAM block names to destination blocks.  With
    ``lenient=True`` packets naming other blocks are accepted and decoded
    into scratch memory (``inspect`` reading a real QEMU stream); otherwise
    they are a ``BadRamBlock`` error.  ``on_pages`` (block name, page
    indices) is called for every page applied, for coverage tracking.

    Method none's payload is read straight into the destination pages
    when the source can fill many buffers at once (``readinto_views``)
    and ``copy_pages`` is False; the header, its offsets and the payload
    size are checked first, so a bad packet is refused before any byte of
    its payload lands.  A stream that ends inside such a payload has
    written part of it: the round fails anyway (``TruncatedStream``).
    """

    def __init__(self, source: ChannelSource, *, method: str, page_size: int,
                 blocks: Mapping[str, RamBlock], compat: wire.Compat = wire.Compat.DEFAULT,
                 jobs: JobSettings | None = None, lenient: bool = False,
                 on_pages: Callable[[str, np.ndarray], None] | None = None,
                 counters: ChannelCounters | None = None, copy_pages: bool = False) -> None:
        self.source = source
        self.channel: int = source.channel_id
        self.method = methods.get(method)
        self.page_size = page_size
        self.compat = compat
        self.blocks = dict(blocks)
        self.lenient = lenient
        self.on_pages = on_pages
        self.counters = counters if counters is not None else ChannelCounters()
        self._jobs = jobs or JobSettings()
        self._header = memoryview(bytearray(wire.header_size(page_size)))
        self._scratch = _Scratch(page_size) if lenient else None
        # none without a copy: only sources that fill many buffers in one call
        self._direct = (self.method.payload_is_pages and not copy_pages
                        and hasattr(source, "readinto_views"))
        # the payload buffer (none read directly: only its empty packets use it)
        payload_bytes = 0 if self._direct else self.method.slot_size(page_size)
        self._payload = memoryview(bytearray(payload_bytes))
        self._decoder: wire.HeaderDecoder | None = None
        self._state: Any = None

    def read_init(self, *, channels: int | None = None,
                  expected_uuid: bytes | None = None) -> wire.InitPacket:
        """Read and check the 64-byte init packet; the channel is then named by its id."""
        buf = memoryview(bytearray(wire.INIT_PACKET_SIZE))
        got = self.source.readinto(buf)
        if got < len(buf):
            raise errors.TruncatedStream("stream ended inside the init packet", channel=self.channel,
                                         field="init", got=got, expected=len(buf))
        init = wire.InitPacket.decode(buf, channels=channels, expected_uuid=expected_uuid,
                                      channel_hint=self.channel)
        self.channel = init.channel_id
        self._setup()
        return init

    def _setup(self) -> None:
        # lenient: blocks we hold are range-checked, others go to scratch
        sizes = {name: b.size for name, b in self.blocks.items()}
        self._decoder = wire.HeaderDecoder(channel=self.channel, page_size=self.page_size,
                                           method_flag=self.method.flag, compat=self.compat,
                                           blocks=sizes, other_blocks=self.lenient)
        self._state = self.method.recv_setup(MethodParams(self.channel, self.page_size, self._jobs))

    def next_packet(self) -> PacketInfo | None:
        """Decode and apply the next packet; None at a clean end of stream."""
        if self._decoder is None:
            self._setup()
        got = self.source.readinto(self._header)
        if got == 0:
            return None
        if got < len(self._header):
            raise errors.TruncatedStream("stream ended inside a packet header", channel=self.channel,
                                         field="header", got=got, expected=len(self._header))
        started = time.perf_counter_ns()
        header = self._decoder.decode(self._header)
        info = self._apply(header)
        self.counters.add(info, len(self._header), time.perf_counter_ns() - started)
        return info

    def _apply(self, header: wire.PacketHeader) -> PacketInfo:
        size = header.payload_size
        limit = self.method.max_payload(header.normal_pages, self.page_size)
        if size > limit:
            raise errors.BadPayloadSize("payload larger than the packet's pages allow",
                                        channel=self.channel, packet_num=header.packet_num,
                                        field="next_packet_size", got=size, expected=f"<= {limit}")
        if header.normal_pages:
            self.method.recv_check(self._state, header)
        known = not header.pages.size or header.ramblock in self.blocks
        if self._direct and header.normal_pages:
            self._read_into_pages(header, known, size)
        else:
            self._read_and_decode(header, known, size)
        if header.pages.size and self.on_pages is not None:
            self.on_pages(header.ramblock if known else "", header.pages)
        return PacketInfo(header.packet_num, header.flags, header.ramblock, header.normal_pages,
                          header.zero_pages, header.next_packet_size, size, known)

    def _read_and_decode(self, header: wire.PacketHeader, known: bool, size: int) -> None:
        """The payload into the reusable buffer, then the method's recv into the block."""
        payload = self._payload[:size]
        self._check_read(header, self.source.readinto(payload), size)
        if header.pages.size:
            block, normal, zero = self._target(header, known)
            codec.clear_pages(block.buf, self.page_size, zero)
            if header.normal_pages:
                target = header if known else _Retargeted(header, normal)
                self.method.recv(self._state, target, payload, block)

    def _read_into_pages(self, header: wire.PacketHeader, known: bool, size: int) -> None:
        """Method none: the payload read straight into its pages (recv_check passed)."""
        block, normal, zero = self._target(header, known)
        views = page_views(block.buf, self.page_size, normal)
        codec.clear_pages(block.buf, self.page_size, zero)    # first, as the copying path
        self._check_read(header, self.source.readinto_views(views), size)

    def _check_read(self, header: wire.PacketHeader, got: int, size: int) -> None:
        if got < size:
            raise errors.TruncatedStream("stream ended inside a payload", channel=self.channel,
                                         packet_num=header.packet_num, field="payload",
                                         got=got, expected=size)

    def _target(self, header: wire.PacketHeader, known: bool):
        if known:
            return self.blocks[header.ramblock], header.normal, header.zero
        scratch = self._scratch  # lenient only: the decoder accepted the name
        n, z = header.normal_pages, header.zero_pages
        return scratch, scratch.pages[:n], scratch.pages[n:n + z]

    def read_until_sync(self) -> int:
        """Apply packets up to and including the next SYNC; returns packets read.

        A channel that ends first broke the round's barrier.
        """
        count = 0
        while True:
            info = self.next_packet()
            if info is None:
                raise errors.BarrierError("channel ended before the round's SYNC packet",
                                          channel=self.channel, field="sync")
            count += 1
            if info.is_sync:
                return count

    def read_to_end(self) -> int:
        count = 0
        while self.next_packet() is not None:
            count += 1
        return count

    def close(self) -> None:
        if self._state is not None:
            self.method.recv_cleanup(self._state)
            self._state = None
        self.source.close()


class _Retargeted:
    """A header whose normal pages point somewhere else (scratch memory)."""

    def __init__(self, header: wire.PacketHeader, normal: np.ndarray) -> None:
        self._header = header
        self.normal = normal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._header, name)


@dataclass
class VerifyResult:
    """Outcome of comparing destination with source, per RAM block."""

    mismatched_pages: int = 0
    first_offsets: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mismatched_pages == 0


class Receiver:
    """Receives every channel into destination RAM blocks.

    Usage::

        with Receiver(dest_blocks, sources, method="qpl", page_size=4096) as rx:
            rx.start()                 # init packets
            rx.receive_round()         # up to every channel's SYNC
            result = rx.verify(source_blocks)
    """

    def __init__(self, blocks: Sequence[RamBlock], sources: Sequence[ChannelSource], *,
                 method: str, page_size: int, compat: wire.Compat = wire.Compat.DEFAULT,
                 uuid: bytes | None = None, jobs: JobSettings | None = None,
                 copy_pages: bool = False) -> None:
        self.blocks = list(blocks)
        self.page_size = page_size
        self.uuid = uuid
        self.readers = [ChannelReader(s, method=method, page_size=page_size,
                                      blocks={b.name: b for b in self.blocks}, compat=compat,
                                      jobs=jobs, copy_pages=copy_pages) for s in sources]
        self._pool = ThreadPool(max_workers=max(1, len(self.readers)),
                                thread_name_prefix="mfd-recv")

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Read every channel's init packet: ids below the channel count, none twice."""
        seen: dict[int, int] = {}
        for index, reader in enumerate(self.readers):
            init = reader.read_init(channels=len(self.readers), expected_uuid=self.uuid)
            if init.channel_id in seen:
                raise errors.BadInitPacket("channel id already bound to another connection",
                                           channel=init.channel_id, field="id",
                                           got=init.channel_id)
            seen[init.channel_id] = index

    def receive_round(self) -> int:
        """Read every channel up to its next SYNC, in parallel; packets read."""
        return sum(self._on_every_channel(ChannelReader.read_until_sync))

    def _on_every_channel(self, step: Callable[[ChannelReader], int]) -> list[int]:
        """``step`` on every channel in parallel; the first error ends the others' waits.

        A source that can be aborted (a socket) is, so a round with one bad
        channel fails now, not after the others' stall timeouts.
        """
        futures = [self._pool.submit(step, r) for r in self.readers]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for reader in self.readers:
                abort = getattr(reader.source, "abort", None)
                if abort is not None:
                    abort()
        results, first_error = [], failed[0].exception() if failed else None
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - the first error wins
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def verify(self, sources: Sequence[RamBlock], max_report: int = 16) -> VerifyResult:
        """Compare each destination block with the source block of that name."""
        result = VerifyResult()
        by_name = {b.name: b for b in self.blocks}
        for src in sources:
            dst = by_name[src.name]
            count, first = codec.compare_pages(src.buf, dst.buf, self.page_size, max_report)
            if count:
                result.mismatched_pages += count
                result.first_offsets[src.name] = [int(i) * self.page_size for i in first]
        return result

    def counters(self) -> list[dict[str, int]]:
        return [{"channel": r.channel, **r.counters.__dict__} for r in self.readers]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for reader in self.readers:
            reader.close()
