"""``Engine`` (the send side of a run) and ``run_batch`` (a whole run).

An ``Engine`` owns what one migration source needs: the source RAM block
in shared memory, one worker process per channel (through the
coordinator), and the channel sinks.  ``run_batch`` adds a receiver with
destination RAM and drives precopy rounds: send a round's dirty batch, let
the receiver read up to every channel's SYNC, verify byte for byte, next
round.  With in-memory channels the receiver reads while the workers still
compress, as over TCP (a local socket pair per channel), so a round takes
about the longer of send and receive, not their sum; file channels are
read after the round is written.  Everything is released on every exit
path, Ctrl-C included.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from engine.channels import ChannelSink, FileSink, FileSource, MemoryChannel, NullSink
from engine.config import Config
from engine.errors import ConfigError, EngineBusy, ImageError, OutputError, RamBlockError
from engine.net import budget
from engine.coordinator import Coordinator, CoordinatorSettings
from engine.devices import receive_jobs, send_jobs
from engine.net.transport import TcpSink, TcpSource
from engine.ram import RamBlock
from engine.receiver import Receiver
from engine.report.run import Report, RoundReport
from engine.report.schema import machine_facts
from engine.threads import ThreadPool
from engine.workloads import PrecopyRounds, fill_guest_memory, load_image
from workers import codec

Progress = Callable[[int, int, int], None]   # (round, packets done, packets in round)


def engine_version() -> str:
    from engine import __version__
    return __version__


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


def check_fits(config: Config, *, receiver: bool) -> None:
    """ConfigError (``workload.size``) if the run cannot fit this host's memory now.

    Checked before anything is allocated: past /dev/shm's capacity the
    run would fail part-way, past the memory limit it would be OOM-killed.
    """
    w = config.workload
    if w.source == "synthetic":
        size, key = w.size, "workload.size"
    elif not w.image.endswith(".zst"):
        size, key = os.path.getsize(w.image), "workload.image"
    else:
        return                                   # the size is known only once unpacked
    problem = budget.run_problem(size, verify=receiver,
                                 memory_sink=receiver and config.sink.kind == "memory")
    if problem is not None:
        raise ConfigError(key, problem)


def make_sinks(config: Config) -> list[ChannelSink]:
    count, kind = config.migration.channel_count, config.sink.kind
    if kind == "file":
        return _file_sinks(config.sink.dir, count)
    if kind == "null":
        return [NullSink(i) for i in range(count)]
    return [MemoryChannel(i) for i in range(count)]


def _file_sinks(directory: str, count: int) -> list[ChannelSink]:
    """One file per channel in ``directory``; a directory that cannot hold them is the
    config's fault (``sink.dir``), said before any worker starts."""
    if Path(directory).exists() and not Path(directory).is_dir():
        raise ConfigError("sink.dir", f"{directory} is a file, not a directory")
    sinks: list[ChannelSink] = []
    try:
        for i in range(count):
            sinks.append(FileSink(directory, i))
    except OutputError as exc:
        for sink in sinks:
            sink.close()
        raise ConfigError("sink.dir", str(exc)) from None
    return sinks


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
    not given).  ``before_dispatch`` is a fault-injection hook (see
    ``CoordinatorSettings``).

    One call at a time: ``send``, ``fill_report`` and ``close`` called
    while another thread is inside one of them raise ``EngineBusy`` at
    once (the coordinator's pipes and counters are not shared between
    threads); use one Engine per thread.
    """

    def __init__(self, config: Config | None = None, *, blocks: Sequence[RamBlock] | None = None,
                 sinks: Sequence[ChannelSink] | None = None, fail_on_packet: int | None = None,
                 uuid: bytes = bytes(16),
                 before_dispatch: Callable[[int, int, int, int], None] | None = None) -> None:
        self.config = config or Config()
        self._stack = ExitStack()
        self._in_use = threading.Lock()
        try:
            if blocks is None:
                blocks = [self._stack.enter_context(make_source_block(self.config))]
            self.blocks = list(blocks)
            setup_started = time.perf_counter()
            self.sinks = list(sinks) if sinks is not None else make_sinks(self.config)
            for sink in self.sinks:
                self._stack.callback(sink.close)
            m = self.config.migration
            # the emulated IAA device (if any) the workers share; stops after them
            jobs, self.device = send_jobs(self.config, self._stack, len(self.sinks))
            self.coordinator = Coordinator(self.blocks, self.sinks, CoordinatorSettings(
                method=m.method, page_size=m.page_size, compat=m.compat, jobs=jobs,
                fail_on_packet=fail_on_packet, uuid=uuid, method_level=m.method_level,
                worker_restarts=self.config.run.worker_restarts, before_dispatch=before_dispatch,
                copy_pages=m.copy_pages))
            self._stack.callback(self.coordinator.close)
            self.coordinator.start()
            # QEMU's setup-time: workers up, channels open, init packets written
            self.setup_seconds = time.perf_counter() - setup_started
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
        with self._one_call("send"):
            return self._send(pages, block, round_index, progress)

    def _send(self, pages: np.ndarray, block: int, round_index: int,
              progress: Progress | None) -> RoundSend:
        self.coordinator.timeline.mark_round(round_index)
        written = self.coordinator.bytes_written()
        started = time.perf_counter()
        packets = self.coordinator.send_pages(block, pages, on_packet=(
            (lambda done, total: progress(round_index, done, total)) if progress else None))
        self.coordinator.sync()
        self.coordinator.timeline.end_round()
        return RoundSend(packets, time.perf_counter() - started,
                         self.coordinator.bytes_written() - written)

    @contextmanager
    def _one_call(self, what: str) -> Iterator[None]:
        if not self._in_use.acquire(blocking=False):
            raise EngineBusy(f"Engine.{what} called while another thread is inside this Engine; "
                             "an Engine serves one call at a time (use one Engine per thread)")
        try:
            yield
        finally:
            self._in_use.release()

    def fill_report(self, report: Report) -> None:
        """Put the send side's counters, timeline, page sizes and machine facts into ``report``."""
        with self._one_call("fill_report"):
            self._fill_report(report)

    def _fill_report(self, report: Report) -> None:
        report.send_channels = self.coordinator.channel_counters()
        report.accelerator = [c["accelerator"] for c in report.send_channels]
        if self.device is not None:
            report.device = self.device.counters()
        report.timeline = self.coordinator.timeline.as_dict()
        report.page_sizes = self.coordinator.page_sizes.as_dict()
        report.machine = machine_facts(report.send_channels)
        report.setup_seconds += self.setup_seconds

    def close(self) -> None:
        with self._one_call("close"):
            self._stack.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def socket_channels(count: int, stack: ExitStack) -> tuple[list[TcpSink], list[TcpSource]]:
    """``count`` in-memory channels whose reading end blocks until bytes come
    (a socket pair each), so a receiver can read while the sender writes."""
    sinks, sources = [], []
    for i in range(count):
        out, into = socket.socketpair()
        sinks.append(TcpSink(out, i, peer="local receiver"))
        sources.append(TcpSource(into, i, peer="local sender"))
        stack.callback(sources[-1].close)
        stack.callback(sinks[-1].close)
    return sinks, sources


def _receiver_for(engine: Engine, stack: ExitStack, sources: list | None = None) -> Receiver:
    m = engine.config.migration
    dest = [stack.enter_context(RamBlock.create(b.name, b.size, b.page_size)) for b in engine.blocks]
    if sources is None:
        sources = []
        for sink in engine.sinks:
            if isinstance(sink, MemoryChannel):
                sources.append(sink)
            else:
                sources.append(FileSource(sink.path, sink.channel_id))
    jobs, _device = receive_jobs(engine.config, stack, len(sources))
    receiver = stack.enter_context(Receiver(dest, sources, method=m.method, page_size=m.page_size,
                                            compat=m.compat, uuid=bytes(16), jobs=jobs,
                                            copy_pages=m.copy_pages))
    receiver.start()
    return receiver


def run_batch(config: Config | None = None, *, progress: Progress | None = None) -> Report:
    """Run the configured rounds end to end and return the report."""
    config = config or Config()
    check_fits(config, receiver=config.run.verify)
    with ExitStack() as stack:
        overlapped = config.run.verify and config.sink.kind == "memory"
        sinks, sources = (socket_channels(config.migration.channel_count, stack) if overlapped
                          else (None, None))
        engine = stack.enter_context(Engine(config, sinks=sinks))
        w = config.workload
        rounds = PrecopyRounds(engine.block, seed=w.seed, dirty_fraction=w.dirty_fraction,
                               hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=w.mix)
        receiver_started = time.perf_counter()
        receiver = _receiver_for(engine, stack, sources) if config.run.verify else None
        receiver_setup = time.perf_counter() - receiver_started
        receiving = stack.enter_context(ThreadPool(1, thread_name_prefix="mfd-round"))
        report = Report(
            engine_version=engine_version(), codec=codec.codec_name(), method=config.migration.method,
            page_size=config.migration.page_size, channels=len(engine.sinks),
            qemu_version=config.migration.qemu_version, accelerator=[], config=config.as_dict(),
            setup_seconds=receiver_setup)
        for index in range(config.run.rounds):
            batch = rounds.batch(index)
            if overlapped:
                sent, received_seconds = _overlapped_round(engine, receiver, receiving, sources,
                                                           batch, index, progress)
            else:
                sent = engine.send(batch, round_index=index, progress=progress)
            entry = RoundReport(index, len(batch), sent.packets, sent.seconds,
                                wire_bytes=sent.wire_bytes)
            if receiver is not None:
                if not overlapped:
                    started = time.perf_counter()
                    receiver.receive_round()
                    received_seconds = time.perf_counter() - started
                entry.receive_seconds = received_seconds
                result = receiver.verify(engine.blocks)
                entry.mismatched_pages = result.mismatched_pages
                entry.first_mismatch_offsets = result.first_offsets
            report.rounds.append(entry)
        engine.fill_report(report)
        if receiver is not None:
            report.receive_channels = receiver.counters()
        for sink in engine.sinks:
            if isinstance(sink, FileSink):
                sink.finish()
    if config.run.report:
        report.write_json(config.run.report)
    return report


def _overlapped_round(engine: Engine, receiver: Receiver, receiving: ThreadPoolExecutor,
                      sources: list[TcpSource], batch: np.ndarray, index: int,
                      progress: Progress | None) -> tuple[RoundSend, float]:
    """Send a round while the receiver reads it: (the send, seconds from the
    round's start until the receiver has every channel's SYNC)."""
    started = time.perf_counter()

    def receive() -> float:
        receiver.receive_round()
        return time.perf_counter() - started

    received: Future = receiving.submit(receive)
    # a receiver that fails stops reading: closing its ends fails the sender's
    # next write at once instead of leaving it blocked on a full channel
    received.add_done_callback(lambda f: f.exception() and [s.close() for s in sources])
    try:
        sent = engine.send(batch, round_index=index, progress=progress)
    except BaseException as exc:
        # The receiver's error is the cause only if it came first (the sender
        # then failed writing to the ends it closed).  Once the sinks close
        # below, the receiver fails in any case, with "channel ended": that
        # must not hide the sender's own error, nor Ctrl-C or SIGTERM.
        receiver_failed_first = received.done() and received.exception() is not None
        for sink in engine.sinks:
            sink.close()                # the receiver sees the channels end
        if receiver_failed_first and isinstance(exc, Exception):
            raise received.exception() from None
        raise
    return sent, received.result()
