"""``Engine`` (the send side of a run) and ``run_batch`` (a whole run).

An ``Engine`` owns what one migration source needs: the source RAM block
in shared memory, one worker process per channel (through the
coordinator), and the channel sinks.  ``run_batch`` adds a receiver with
destination RAM and drives precopy rounds: send a round's dirty batch, let
the receiver read up to every channel's SYNC, verify byte for byte, next
round.  Everything is released on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Sequence

import numpy as np

from engine.channels import ChannelSink, FileSink, FileSource, MemoryChannel, NullSink
from engine.config import Config
from engine.errors import ConfigError, ImageError, RamBlockError
from engine.coordinator import Coordinator, CoordinatorSettings
from engine.devices import receive_jobs, send_jobs
from engine.ram import RamBlock
from engine.receiver import Receiver
from engine.report.run import Report, RoundReport
from engine.report.schema import machine_facts
from engine.workloads import PrecopyRounds, fill_guest_memory, load_image
from workers import codec

Progress = Callable[[int, int, int], None]   # (round, packets done, packets in round)


def engine_version() -> str:
    try:
        return metadata.version("multifd-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


# the config keys a user edits to set each part of the source block
_BLOCK_KEYS = {"name": "workload.block", "size": "workload.size", "page_size": "migration.page_size"}


def make_source_block(config: Config) -> RamBlock:
    """The source RAM block the config asks for, filled."""
    w, page_size = config.workload, config.migration.page_size
    try:
        if w.source == "image":
            return load_image(w.image, name=w.block, page_size=page_size)
        block = RamBlock.create(w.block, w.size, page_size)
    except RamBlockError as exc:
        raise ConfigError(_BLOCK_KEYS[exc.part], str(exc)) from None
    except ImageError as exc:
        raise ConfigError("workload.image", str(exc)) from None
    try:
        fill_guest_memory(block, seed=w.seed, mix=w.mix)
    except BaseException:
        block.close()
        raise
    return block


def make_sinks(config: Config) -> list[ChannelSink]:
    count, kind = config.migration.channel_count, config.sink.kind
    if kind == "file":
        return [FileSink(config.sink.dir, i) for i in range(count)]
    if kind == "null":
        return [NullSink(i) for i in range(count)]
    return [MemoryChannel(i) for i in range(count)]


@dataclass
class RoundSend:
    packets: int
    seconds: float
    wire_bytes: int = 0        # bytes written to the channels in this round, SYNC included


class Engine:
    """The send side: source RAM, workers, channels.  A context manager.

    ``blocks`` and ``sinks`` default to what the config describes; blocks
    passed in stay the caller's (the engine does not close them).  ``uuid``
    goes into every init packet (all zero, as QEMU without ``-uuid``, when
    not given).  ``after_dispatch`` is a fault-injection hook (see
    ``CoordinatorSettings``).
    """

    def __init__(self, config: Config | None = None, *, blocks: Sequence[RamBlock] | None = None,
                 sinks: Sequence[ChannelSink] | None = None, fail_on_packet: int | None = None,
                 uuid: bytes = bytes(16),
                 after_dispatch: Callable[[int, int, int, int], None] | None = None) -> None:
        self.config = config or Config()
        self._stack = ExitStack()
        try:
            if blocks is None:
                blocks = [self._stack.enter_context(make_source_block(self.config))]
            self.blocks = list(blocks)
            self.sinks = list(sinks) if sinks is not None else make_sinks(self.config)
            for sink in self.sinks:
                self._stack.callback(sink.close)
            m = self.config.migration
            # the emulated IAA device (if any) the workers share; stops after them
            jobs, self.device = send_jobs(self.config, self._stack, len(self.sinks))
            self.coordinator = Coordinator(self.blocks, self.sinks, CoordinatorSettings(
                method=m.method, page_size=m.page_size, compat=m.compat, jobs=jobs,
                fail_on_packet=fail_on_packet, uuid=uuid, method_level=m.method_level,
                worker_restarts=self.config.run.worker_restarts, after_dispatch=after_dispatch))
            self._stack.callback(self.coordinator.close)
            self.coordinator.start()
        except BaseException:
            self._stack.close()
            raise

    @property
    def block(self) -> RamBlock:
        """The (first) source RAM block."""
        return self.blocks[0]

    def send(self, pages: np.ndarray, *, block: int = 0, round_index: int = 0,
             progress: Progress | None = None) -> RoundSend:
        """Send one round's dirty pages of ``block``, then SYNC every channel."""
        self.coordinator.timeline.mark_round(round_index)
        written = self.coordinator.bytes_written()
        started = time.perf_counter()
        packets = self.coordinator.send_pages(block, pages, on_packet=(
            (lambda done, total: progress(round_index, done, total)) if progress else None))
        self.coordinator.sync()
        self.coordinator.timeline.end_round()
        return RoundSend(packets, time.perf_counter() - started,
                         self.coordinator.bytes_written() - written)

    def fill_report(self, report: Report) -> None:
        """Put the send side's counters, timeline, page sizes and machine facts into ``report``."""
        report.send_channels = self.coordinator.channel_counters()
        report.accelerator = [c["accelerator"] for c in report.send_channels]
        if self.device is not None:
            report.device = self.device.counters()
        report.timeline = self.coordinator.timeline.as_dict()
        report.page_sizes = self.coordinator.page_sizes.as_dict()
        report.machine = machine_facts(report.send_channels)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _receiver_for(engine: Engine, stack: ExitStack) -> Receiver:
    m = engine.config.migration
    dest = [stack.enter_context(RamBlock.create(b.name, b.size, b.page_size)) for b in engine.blocks]
    sources = []
    for sink in engine.sinks:
        if isinstance(sink, MemoryChannel):
            sources.append(sink)
        else:
            sources.append(FileSource(sink.path, sink.channel_id))
    jobs, _device = receive_jobs(engine.config, stack, len(sources))
    receiver = stack.enter_context(Receiver(dest, sources, method=m.method, page_size=m.page_size,
                                            compat=m.compat, uuid=bytes(16), jobs=jobs))
    receiver.start()
    return receiver


def run_batch(config: Config | None = None, *, progress: Progress | None = None) -> Report:
    """Run the configured rounds end to end and return the report."""
    config = config or Config()
    with ExitStack() as stack:
        engine = stack.enter_context(Engine(config))
        w = config.workload
        rounds = PrecopyRounds(engine.block, seed=w.seed, dirty_fraction=w.dirty_fraction,
                               hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=w.mix)
        receiver = _receiver_for(engine, stack) if config.run.verify else None
        report = Report(
            engine_version=engine_version(), codec=codec.codec_name(), method=config.migration.method,
            page_size=config.migration.page_size, channels=len(engine.sinks),
            qemu_version=config.migration.qemu_version, accelerator=[], config=config.as_dict())
        for index in range(config.run.rounds):
            batch = rounds.batch(index)
            sent = engine.send(batch, round_index=index, progress=progress)
            entry = RoundReport(index, len(batch), sent.packets, sent.seconds,
                                wire_bytes=sent.wire_bytes)
            if receiver is not None:
                started = time.perf_counter()
                receiver.receive_round()
                entry.receive_seconds = time.perf_counter() - started
                result = receiver.verify(engine.blocks)
                entry.mismatched_pages = result.mismatched_pages
                entry.first_mismatch_offsets = result.first_offsets
            report.rounds.append(entry)
        engine.fill_report(report)
        if receiver is not None:
            report.receive_channels = receiver.counters()
    if config.run.report:
        report.write_json(config.run.report)
    return report
