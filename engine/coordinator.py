"""The coordinator: dirty batches in, multifd packets out on every channel.

::

    dirty batch (page indices of one RAM block)
        │ split into packets of at most page_count pages, global packet_num
        ▼
    _next_idle_worker ── round-robin over workers with a free output slot,
        │                starting after the one used last (as QEMU picks
        │                the next idle channel)
        ▼
    worker i  ◄─Task──  pipe i  (msgpack frames: numbers only)
        │  payload written into worker i's output slot (shared memory)
        ▼
    _wait_result_or_death ── waits on every pipe and every process sentinel
        │
    _merge_result ── header (engine.wire) + slot, one vectored write to
                     channel i; the slot is free again

Each worker owns one channel, one pipe and ``slots_per_worker`` output
slots; that slot count bounds the work in flight per worker.  A worker
that reports a failure, or dies without a word, ends the run with an
error naming it and the packets it had in flight; the first error wins.

Who owns what: the coordinator creates and unlinks every shared-memory
segment (RAM blocks are the caller's, slots are the coordinator's); a slot
is written only by its worker between Task and Result, and read only by
the coordinator between Result and the next Task that names it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import multiprocess
import numpy as np
from multiprocess import connection

from engine import errors, methods, wire
from engine.channels import ChannelSink
from engine.ram import RamBlock, SharedSegment
from workers import worker as worker_main
from workers.jobs import JobSettings
from workers.messages import Bye, Failure, MessageError, Ready, Result, Shutdown, Task, unpack

_MP = multiprocess.get_context("spawn")


@dataclass
class _InFlight:
    slot: int
    block: int
    page_count: int


@dataclass
class _Worker:
    worker_id: int
    process: Any
    conn: Any
    sink: ChannelSink
    slots: SharedSegment
    free_slots: list[int]
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    accelerator: str = "?"

    def count(self, **values: int) -> None:
        for key, value in values.items():
            self.counters[key] = self.counters.get(key, 0) + value


@dataclass
class CoordinatorSettings:
    method: str
    page_size: int
    compat: wire.Compat = wire.Compat.DEFAULT
    jobs: JobSettings = field(default_factory=JobSettings)
    slots_per_worker: int = 2
    start_timeout: float = 120.0
    result_timeout: float = 300.0
    fail_on_packet: int | None = None
    uuid: bytes = bytes(16)


class Coordinator:
    """Owns the worker processes and their slots; writes packets to sinks."""

    def __init__(self, blocks: list[RamBlock], sinks: list[ChannelSink],
                 settings: CoordinatorSettings) -> None:
        if not sinks:
            raise ValueError("at least one channel is needed")
        self.blocks = blocks
        self.settings = settings
        self.method = methods.get(settings.method)
        self.page_size = settings.page_size
        self.page_count = wire.page_count_for(settings.page_size)
        self._slot_size = self.method.slot_size(settings.page_size)
        self._header = bytearray(wire.header_size(settings.page_size))
        self._packet_num = 0
        self._last = -1
        self._sinks = sinks
        self.workers: list[_Worker] = []
        self._closed = False

    # ---- life cycle ---------------------------------------------------

    def start(self) -> None:
        """Start one worker per channel and wait until all are ready."""
        try:
            for sink in self._sinks:
                init = wire.InitPacket(self.settings.uuid, sink.channel_id).encode()
                sink.write(init)
                w = self._start_worker(sink)
                w.count(bytes=len(init))
                self.workers.append(w)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _start_worker(self, sink: ChannelSink) -> _Worker:
        worker_id = sink.channel_id
        count = self.settings.slots_per_worker
        slots = SharedSegment.create(f"slots{worker_id}", self._slot_size * count)
        spec = worker_main.WorkerSpec(
            worker_id=worker_id,
            method=self.method.name,
            page_size=self.page_size,
            blocks=[b.spec().as_dict() for b in self.blocks],
            slots_name=slots.name,
            slot_size=self._slot_size,
            slot_count=count,
            zero_page_detection=self.settings.compat.zero_pages_in_packets,
            jobs=dict(self.settings.jobs.__dict__),
            fail_on_packet=self.settings.fail_on_packet,
        )
        ours, theirs = _MP.Pipe(duplex=True)
        process = _MP.Process(target=worker_main.main, args=(theirs, spec.as_dict()),
                              name=f"mfd-worker-{worker_id}", daemon=True)
        process.start()
        theirs.close()
        return _Worker(worker_id, process, ours, sink, slots, list(range(count)))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        waiting = {w.worker_id: w for w in self.workers}
        while waiting:
            left = deadline - time.monotonic()
            handles = [w.conn for w in waiting.values()] + [w.process.sentinel for w in waiting.values()]
            if left <= 0 or not connection.wait(handles, timeout=left):
                raise errors.WorkerError(f"not ready after {self.settings.start_timeout:.0f} s",
                                         worker_id=min(waiting), kind="setup")
            for w in list(waiting.values()):
                message = self._poll(w)
                if isinstance(message, Ready):
                    w.accelerator = message.accelerator
                    del waiting[w.worker_id]
                elif message is not None:
                    raise errors.WorkerError(f"unexpected {type(message).__name__} during setup",
                                             worker_id=w.worker_id, kind="protocol")

    def close(self) -> None:
        """Stop every worker (politely, then firmly) and free the slots."""
        if self._closed:
            return
        self._closed = True
        for w in self.workers:
            if w.process.is_alive():
                try:
                    w.conn.send_bytes(Shutdown().pack())
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + 5.0
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(2.0)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2.0)
            w.conn.close()
            w.slots.close()
            w.slots.unlink()

    # ---- sending ------------------------------------------------------

    def send_pages(self, block_index: int, pages: np.ndarray,
                   on_packet: Callable[[int, int], None] | None = None) -> int:
        """Send the dirty ``pages`` (indices) of one block; returns packets queued.

        Returns once every packet is handed to a worker; ``sync`` waits for
        them to be written.
        """
        if self._closed:
            raise RuntimeError("coordinator is closed")
        pages = self._checked_pages(block_index, pages)
        total = -(-len(pages) // self.page_count)
        for packet, start in enumerate(range(0, len(pages), self.page_count)):  # per packet
            self._dispatch(self._next_idle_worker(), block_index, pages[start:start + self.page_count])
            if on_packet is not None:
                on_packet(packet + 1, total)
        return total

    def sync(self) -> None:
        """Wait for every packet in flight, then a SYNC packet on every channel."""
        while any(w.in_flight for w in self.workers):
            self._wait_result_or_death()
        for w in self.workers:
            sync = wire.encode_sync(page_size=self.page_size, packet_num=self._take_packet_num(),
                                    compat=self.settings.compat)
            w.sink.write(sync)
            w.count(sync_packets=1, bytes=len(sync))

    def _checked_pages(self, block_index: int, pages: np.ndarray) -> np.ndarray:
        if not 0 <= block_index < len(self.blocks):
            raise ValueError(f"no RAM block {block_index}; there are {len(self.blocks)}")
        pages = np.ascontiguousarray(pages, dtype=np.uint64)
        block = self.blocks[block_index]
        if len(pages) and int(pages.max()) >= block.pages:
            raise ValueError(f"page index {int(pages.max())} outside block {block.name!r} "
                             f"({block.pages} pages)")
        if len(np.unique(pages)) != len(pages):
            raise ValueError("a dirty batch names a page twice")
        return pages

    def _take_packet_num(self) -> int:
        number = self._packet_num
        self._packet_num += 1
        return number

    def _next_idle_worker(self) -> _Worker:
        count = len(self.workers)
        while True:
            for step in range(1, count + 1):
                w = self.workers[(self._last + step) % count]
                if w.free_slots:
                    self._last = (self._last + step) % count
                    return w
            self._wait_result_or_death()

    def _dispatch(self, w: _Worker, block_index: int, pages: np.ndarray) -> None:
        slot = w.free_slots.pop()
        packet_num = self._take_packet_num()
        w.in_flight[packet_num] = _InFlight(slot, block_index, len(pages))
        try:
            w.conn.send_bytes(Task(packet_num, block_index, pages, slot).pack())
        except OSError:
            self._terminate_broken(w)

    def _wait_result_or_death(self) -> None:
        busy = [w for w in self.workers if w.in_flight]
        handles = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        if not connection.wait(handles, timeout=self.settings.result_timeout):
            w = busy[0]
            raise errors.WorkerError(
                f"no result for packets {sorted(w.in_flight)} in {self.settings.result_timeout:.0f} s",
                worker_id=w.worker_id, packet_num=min(w.in_flight), kind="timeout")
        for w in busy:
            message = self._poll(w)
            if message is not None:
                self._process(w, message)

    def _poll(self, w: _Worker) -> Any:
        """The worker's next message if one is waiting; broken if it died."""
        try:
            if w.conn.poll():
                return unpack(w.conn.recv_bytes())
        except (EOFError, OSError):
            self._terminate_broken(w)
        except MessageError as exc:
            raise errors.WorkerError(str(exc), worker_id=w.worker_id, kind="protocol") from exc
        if not w.process.is_alive():
            self._terminate_broken(w)
        return None

    def _process(self, w: _Worker, message: Any) -> None:
        if isinstance(message, Result):
            self._merge_result(w, message)
        elif isinstance(message, Failure):
            error = errors.WorkerError(message.message, worker_id=message.worker_id,
                                       packet_num=message.packet_num, kind=message.kind)
            raise error from errors.RemoteTraceback(message.traceback)
        elif not isinstance(message, Bye):
            raise errors.WorkerError(f"unexpected {type(message).__name__}",
                                     worker_id=w.worker_id, kind="protocol")

    def _terminate_broken(self, w: _Worker) -> None:
        w.process.join(1.0)
        code = w.process.exitcode
        packets = sorted(w.in_flight)
        raise errors.BrokenWorker(
            f"process {w.process.pid} died (exit code {code}) with packets {packets} in flight",
            worker_id=w.worker_id, packet_num=packets[0] if packets else None, kind="died")

    def _merge_result(self, w: _Worker, result: Result) -> None:
        flight = w.in_flight.pop(result.packet_num, None)
        if flight is None or flight.slot != result.slot:
            raise errors.WorkerError(f"result for packet {result.packet_num} it was not given",
                                     worker_id=w.worker_id, packet_num=result.packet_num, kind="protocol")
        if result.normal_num + result.zero_num != flight.page_count or len(result.pages) != flight.page_count:
            raise errors.WorkerError(
                f"accounted for {result.normal_num} normal + {result.zero_num} zero pages "
                f"of {flight.page_count}", worker_id=w.worker_id, packet_num=result.packet_num,
                kind="lost-pages")
        if result.next_packet_size > self._slot_size:
            raise errors.WorkerError(f"payload of {result.next_packet_size} bytes overflows its slot",
                                     worker_id=w.worker_id, packet_num=result.packet_num, kind="protocol")
        wire.encode_header(
            page_size=self.page_size, flags=self.method.flag, packet_num=result.packet_num,
            ramblock=self.blocks[flight.block].name, normal_pages=result.normal_num,
            zero_pages=result.zero_num, next_packet_size=result.next_packet_size,
            pages=result.pages, out=self._header)
        start = result.slot * self._slot_size
        w.sink.write(self._header, w.slots.buf[start:start + result.next_packet_size])
        w.free_slots.append(result.slot)
        w.count(packets=1, normal_pages=result.normal_num, zero_pages=result.zero_num,
                payload_bytes=result.next_packet_size,
                bytes=len(self._header) + result.next_packet_size)
        w.count(**{k: v for k, v in result.stats.items() if k not in ("normal_pages", "zero_pages")})

    # ---- reporting ----------------------------------------------------

    def channel_counters(self) -> list[dict[str, Any]]:
        """Per channel: its worker's pid, path and counters so far."""
        return [{"channel": w.worker_id, "pid": w.process.pid, "accelerator": w.accelerator,
                 **w.counters} for w in self.workers]

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]


