"""One multifd channel through a relay: method A in, method B out, packet for packet.

::

    source ──► IncomingChannel ── init packet, validated ──► forwarded as it came ─────┐
               │ header: HeaderDecoder      page-less packet (SYNC, 7.2's empty         │
               │ payload: method A's recv     follow-up): after the packets before  ──►├─► sink
               │   into a staging region      it, its header unchanged                  │
               ▼                            device state (0x40): likewise, data copied ►│
             Coordinator.send_packet ── the channel's worker encodes the staged pages   │
               with method B; the header goes out as received but for the method   ──►┘
               bits and next_packet_size

Packets map one to one and keep their order, packet_num, block name,
offsets (7.2's stale slots too), normal/zero split, pages_alloc, SYNC bit,
and the stale next_packet_size 7.2 leaves on page-less packets.  Zero pages
are not looked for again: a 9.0+ packet's zero list is carried as is, and a
7.2 stream has none.  A page-less packet waits for every packet before it,
so nothing is batched across a SYNC.  So none→B→none gives back QEMU's
bytes exactly.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from engine import wire
from engine.channels import ChannelSink, ChannelSource
from engine.coordinator import Coordinator, CoordinatorSettings
from engine.ram import RamBlock
from engine.relay.incoming import DevicePacket, IncomingChannel, IncomingCounters
from workers.settings import JobSettings


@dataclass(frozen=True)
class TranslatorSettings:
    incoming_method: str
    outgoing_method: str
    page_size: int = 4096
    compat: wire.Compat = wire.Compat.DEFAULT
    channels: int | None = None          # init packet ids must be below this
    recv_jobs: JobSettings = field(default_factory=JobSettings)
    send_jobs: JobSettings = field(default_factory=JobSettings)
    method_level: int | None = None      # outgoing zlib/zstd level
    worker_restarts: int = 0
    slots_per_worker: int = 2
    result_timeout: float = 300.0
    # fault injection, as CoordinatorSettings.before_dispatch (tests kill workers here)
    before_dispatch: Callable[[int, int, int, int], None] | None = None


@dataclass
class ChannelTraffic:
    """What went through one channel, for the relay's report."""

    channel: int
    incoming: IncomingCounters
    bytes_out: int = 0
    restarts: int = 0
    accelerator: str = "?"

    def as_dict(self) -> dict:
        return {"channel": self.channel, **self.incoming.__dict__, "bytes_out": self.bytes_out,
                "restarts": self.restarts, "accelerator": self.accelerator}


SinkFactory = Callable[[wire.InitPacket], ChannelSink]


class _LateSink:
    """The coordinator's channel before the outgoing connection exists.

    A translator starts its worker before QEMU connects (a worker takes a
    second or more to start); the real sink is attached once the init
    packet says which channel this is.
    """

    def __init__(self, index: int) -> None:
        self.channel_id = index
        self.sink: ChannelSink | None = None

    @property
    def bytes_written(self) -> int:
        return self.sink.bytes_written if self.sink is not None else 0

    def write(self, *buffers) -> None:
        if self.sink is None:
            raise RuntimeError("the channel's connection is not open yet")
        self.sink.write(*buffers)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class ChannelTranslator:
    """Relays one channel to the sink ``open_sink(init)`` returns.

    ``prepare`` starts the channel's worker and staging memory (a relay does
    it before QEMU connects); ``run(source)`` relays, returns at the
    source's clean end and raises on any fault; ``close`` releases
    everything (``run`` does, on every exit path).
    """

    def __init__(self, open_sink: SinkFactory, settings: TranslatorSettings, *,
                 index: int = 0) -> None:
        self.open_sink = open_sink
        self.settings = settings
        self.traffic = ChannelTraffic(index, IncomingCounters())
        self._late = _LateSink(index)
        self._stack = ExitStack()
        self._staging: RamBlock | None = None
        self.coordinator: Coordinator | None = None

    @property
    def regions(self) -> int:
        return self.settings.slots_per_worker + 1    # see engine.relay.incoming

    def prepare(self) -> None:
        """Create the staging block and start the worker (idempotent)."""
        if self.coordinator is not None:
            return
        s = self.settings
        page_count = wire.page_count_for(s.page_size)
        try:
            self._staging = self._stack.enter_context(RamBlock.create(
                f"relay{self._late.channel_id}", self.regions * page_count * s.page_size,
                s.page_size))
            coordinator = Coordinator([self._staging], [self._late], CoordinatorSettings(
                method=s.outgoing_method, page_size=s.page_size, compat=s.compat,
                jobs=s.send_jobs, slots_per_worker=s.slots_per_worker,
                result_timeout=s.result_timeout, method_level=s.method_level,
                worker_restarts=s.worker_restarts, zero_page_detection=False,
                before_dispatch=s.before_dispatch, write_init=False))
            self._stack.callback(coordinator.close)
            coordinator.start()
            self.coordinator = coordinator
        except BaseException:
            self.close()
            raise

    def run(self, source: ChannelSource) -> ChannelTraffic:
        s = self.settings
        try:
            self.prepare()
            incoming = IncomingChannel(source, method=s.incoming_method, page_size=s.page_size,
                                       compat=s.compat, staging=self._staging,
                                       regions=self.regions, jobs=s.recv_jobs)
            self._stack.callback(incoming.close)
            self.traffic.incoming = incoming.counters
            init = incoming.read_init(channels=s.channels)
            self.traffic.channel = init.channel_id
            sink = self.open_sink(init)
            self._late.sink = sink
            self._stack.callback(sink.close)
            sink.write(incoming.init_bytes)     # forwarded as it came
            try:
                self._relay(incoming, self.coordinator, sink)
            finally:
                self._count(self.coordinator, sink)
        finally:
            self.close()
        return self.traffic

    def close(self) -> None:
        self._stack.close()

    def _relay(self, incoming: IncomingChannel, coordinator: Coordinator, sink: ChannelSink) -> None:
        while (packet := incoming.next_packet()) is not None:
            if isinstance(packet, DevicePacket):
                coordinator.flush()
                sink.write(packet.raw)
                incoming.copy_data(packet, sink.write)
            elif packet.has_pages:
                coordinator.send_packet(0, packet.staged, packet.raw)
            else:
                coordinator.flush()
                sink.write(packet.raw)
        coordinator.flush()

    def _count(self, coordinator: Coordinator, sink: ChannelSink) -> None:
        self.traffic.bytes_out = sink.bytes_written
        counters = coordinator.channel_counters()
        if counters:
            self.traffic.restarts = counters[0].get("restarts", 0)
            self.traffic.accelerator = counters[0]["accelerator"]
