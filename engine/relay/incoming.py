"""The receiving half of a relayed channel: packets in, pages into staging.

Every byte is checked by the decoders ``recv`` uses: the init packet by
``wire.InitPacket.decode``, headers by ``wire.HeaderDecoder`` (in its
lenient mode: a relay does not know the QEMU's RAM blocks, the destination
QEMU checks names and ranges), payloads by the method's ``recv`` hook with
the same size bound as ``engine.receiver``.  Device-state packets are
checked by ``engine.relay.device_state``.

A packet's normal pages are decoded, in offset order, into one *region* of
the channel's staging RAM block (shared memory), where the worker that
re-encodes them reads them.  Regions are used in turn; with one more region
than the worker has output slots, a region is never overwritten while its
packet is still with the worker (the coordinator hands out a packet only
when a slot is free, and a worker's results come back in order).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine import errors, methods, wire
from engine.channels import ChannelSource
from engine.methods import MethodParams
from engine.ram import RamBlock
from engine.relay import device_state
from workers.settings import JobSettings

_COPY_CHUNK = 1 << 20   # device-state data is copied through in pieces of this size


@dataclass(frozen=True)
class RamPacket:
    """A RAM (or SYNC) packet: its header as received, and where its pages are."""

    raw: bytes                  # the header bytes exactly as they arrived
    header: wire.PacketHeader
    staged: np.ndarray          # staging page indices of the normal pages, in order

    @property
    def has_pages(self) -> bool:
        return bool(self.header.normal_pages or self.header.zero_pages)


@dataclass(frozen=True)
class DevicePacket:
    """A device-state packet; its data is still on the source (``copy_data``)."""

    raw: bytes
    header: device_state.DeviceStateHeader


@dataclass
class IncomingCounters:
    packets: int = 0
    sync_packets: int = 0
    device_packets: int = 0
    normal_pages: int = 0
    zero_pages: int = 0
    bytes_in: int = 0


class IncomingChannel:
    """Reads and validates one channel, decoding its pages into ``staging``."""

    def __init__(self, source: ChannelSource, *, method: str, page_size: int,
                 compat: wire.Compat, staging: RamBlock, regions: int,
                 jobs: JobSettings | None = None) -> None:
        self.source = source
        self.channel: int = source.channel_id
        self.method = methods.get(method)
        self.page_size = page_size
        self.compat = compat
        self.page_count = wire.page_count_for(page_size)
        if staging.pages < regions * self.page_count:
            raise ValueError(f"staging block of {staging.pages} pages is smaller than "
                             f"{regions} regions of {self.page_count}")
        self.staging = staging
        self.regions = regions
        self.counters = IncomingCounters()
        self._jobs = jobs or JobSettings()
        self._region = 0
        self._open_round = True      # no SYNC yet, or pages after the last one
        self._header = memoryview(bytearray(wire.header_size(page_size)))
        self._device_header = memoryview(bytearray(device_state.HEADER_SIZE))
        self._payload = memoryview(bytearray(self.method.slot_size(page_size)))
        self._decoder: wire.HeaderDecoder | None = None
        self._state: Any = None
        self.init_bytes = b""         # the init packet as it arrived

    def read_init(self, *, channels: int | None = None) -> wire.InitPacket:
        """Read and check the 64-byte init packet; the channel is then named by its id."""
        buf = memoryview(bytearray(wire.INIT_PACKET_SIZE))
        self._read_exactly(buf, "init", "stream ended inside the init packet")
        init = wire.InitPacket.decode(buf, channels=channels, channel_hint=self.channel)
        self.init_bytes = buf.tobytes()
        self.counters.bytes_in += len(buf)
        self.channel = init.channel_id
        self._decoder = wire.HeaderDecoder(channel=self.channel, page_size=self.page_size,
                                           method_flag=self.method.flag, compat=self.compat,
                                           blocks=None, any_method=True)
        self._state = self.method.recv_setup(MethodParams(self.channel, self.page_size, self._jobs))
        return init

    def next_packet(self) -> RamPacket | DevicePacket | None:
        """The next packet, validated and its pages staged; None at a clean end."""
        if self._decoder is None:
            raise RuntimeError("read_init first")
        prefix = self._header[:device_state.PREFIX_SIZE]
        got = self.source.readinto(prefix)
        if got == 0:
            return self._end()
        if got < len(prefix):
            raise errors.TruncatedStream("stream ended inside a packet header", channel=self.channel,
                                         field="header", got=got, expected=len(self._header))
        self.counters.packets += 1
        if device_state.is_device_state(prefix):
            return self._device_packet(prefix)
        self._read_exactly(self._header[len(prefix):], "header",
                           "stream ended inside a packet header")
        header = self._decoder.decode(self._header)
        raw = self._header.tobytes()
        staged = self._stage(header)
        if header.is_sync:
            self._open_round = False
        elif header.pages.size:
            self._open_round = True
        c = self.counters
        c.sync_packets += header.is_sync
        c.normal_pages += header.normal_pages
        c.zero_pages += header.zero_pages
        c.bytes_in += len(raw) + header.payload_size
        return RamPacket(raw, header, staged)

    def _end(self) -> None:
        """A clean end comes only after a round's SYNC, as a source that completed sends it.

        No SYNC at all, or pages after the last one, mean the sender (QEMU or
        the upstream relay) gave up mid-migration; passing that on as a clean
        end would leave a destination waiting at its next sync point.  (7.2's
        empty packet after a SYNC riding on pages carries no pages, so it may
        come last.)
        """
        if self._open_round:
            raise errors.BarrierError("channel ended without the round's SYNC: the sender "
                                      "gave up mid-migration", channel=self.channel, field="sync")
        return None

    def _stage(self, header: wire.PacketHeader) -> np.ndarray:
        if not header.pages.size:
            return np.empty(0, dtype=np.uint64)
        size = header.payload_size
        limit = self.method.max_payload(header.normal_pages, self.page_size)
        if size > limit:
            raise errors.BadPayloadSize("payload larger than the packet's pages allow",
                                        channel=self.channel, packet_num=header.packet_num,
                                        field="next_packet_size", got=size, expected=f"<= {limit}")
        if header.normal_pages:
            self.method.recv_check(self._state, header)
        payload = self._payload[:size]
        got = self.source.readinto(payload)
        if got < size:
            raise errors.TruncatedStream("stream ended inside a payload", channel=self.channel,
                                         packet_num=header.packet_num, field="payload",
                                         got=got, expected=size)
        first = self._region * self.page_count
        self._region = (self._region + 1) % self.regions
        staged = np.arange(first, first + header.normal_pages, dtype=np.uint64)
        if header.normal_pages:
            # the method decodes into staging: normal pages retargeted, zero pages kept
            target = replace(header, pages=np.concatenate([staged, header.zero]))
            self.method.recv(self._state, target, payload, self.staging)
        return staged

    def _device_packet(self, prefix: memoryview) -> DevicePacket:
        self._device_header[:len(prefix)] = prefix
        self._read_exactly(self._device_header[len(prefix):], "header",
                           "stream ended inside a device-state header")
        header = device_state.decode(self._device_header, channel=self.channel,
                                     allowed=self.compat.version >= (10, 0))
        self.counters.device_packets += 1
        self.counters.bytes_in += device_state.HEADER_SIZE + header.next_packet_size
        return DevicePacket(self._device_header.tobytes(), header)

    def copy_data(self, packet: DevicePacket, write: Any) -> None:
        """Pass a device-state packet's data to ``write(view)`` in pieces."""
        left = packet.header.next_packet_size
        chunk = self._payload[:min(len(self._payload), _COPY_CHUNK)]
        while left:
            piece = chunk[:min(left, len(chunk))]
            self._read_exactly(piece, "payload", "stream ended inside device-state data")
            write(piece)
            left -= len(piece)

    def _read_exactly(self, view: memoryview, field: str, message: str) -> None:
        got = self.source.readinto(view)
        if got < len(view):
            raise errors.TruncatedStream(message, channel=self.channel, field=field,
                                         got=got, expected=len(view))

    def close(self) -> None:
        if self._state is not None:
            self.method.recv_cleanup(self._state)
            self._state = None
        self.source.close()
