"""The coordinator: dirty batches in, multifd packets out on every channel.

::

    dirty batch (page indices of one RAM block)
        │ split into packets of at most page_count pages, global packet_num
        ▼
    _next_worker ── strictly in turn: the worker after the one used last,
        │            waiting for a free output slot of that one (QEMU
        │            takes the next idle channel instead; strict turns
        │            make the split, and so every channel's bytes, the
        │            same for the same seed)
        ▼
    worker i  ◄─Task──  pipe i  (msgpack frames: numbers only)
        │  payload written into worker i's output slot (shared memory)
        ▼
    _wait_result_or_death ── waits on every pipe and every process sentinel
        │
    _merge_result ── header (engine.wire) + slot, one vectored write to
                     channel i; the slot is free again.  Method none
                     (payload_is_pages): header + the normal pages'
                     views of the RAM block, no slot, no copy

Each worker owns one channel, one pipe and ``slots_per_worker`` output
slots; that slot count bounds the work in flight per worker.  A worker
that reports a failure ends the run with an error naming it and the
packets it had in flight; the first error wins.

A worker that dies without a word (killed, crashed) is replaced when
``worker_restarts`` allows: ``_replace_dead`` starts a new process on the
same channel and the same slots and gives it the dead one's in-flight
packets again, in packet_num order.  Nothing of those packets reached the
channel (a packet is written only when its Result arrives), so the
re-send loses and repeats nothing, and the channel's packet_num order
holds.  Only methods without state across packets can be resumed so
(``Method.resumable``); a zlib or zstd stream dies with its worker.  A
worker that dies more than ``worker_restarts`` times in a row (without
finishing a packet in between) ends the run with BrokenWorker.

Who owns what: the coordinator creates and unlinks every shared-memory
segment (RAM blocks are the caller's, slots are the coordinator's); a slot
is written only by its worker between Task and Result, and read only by
the coordinator between Result and the next Task that names it.  For
method none the payload is read from the RAM block itself when the packet
is written, so a block must not change while a round's packets are in
flight (``Engine.send`` returns after the SYNC; a relay's staging region
is reused only after its packet is written, see engine.relay.incoming).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import multiprocess
import numpy as np
from multiprocess import connection

from engine import errors, methods, threads, wire
from engine.channels import ChannelSink
from engine.report.page_sizes import PageSizeHistogram
from engine.ram import RamBlock, SharedSegment, page_views
from engine.report.timeline import PacketTimeline
from workers import worker as worker_main
from workers.settings import JobSettings
from workers.messages import Bye, Failure, MessageError, Ready, Result, Shutdown, Task, unpack

_MP = multiprocess.get_context("spawn")
# the exit status of a worker whose start ran the user's script again (no main guard)
NO_MAIN_GUARD_EXIT = 86


@contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C; ours is only held back, not lost.

    Ctrl-C is the coordinator's to handle (``close`` stops the workers).  A
    worker that got it too would print its own KeyboardInterrupt traceback
    while importing.  An ignored SIGINT stays ignored across exec (and
    Python then installs no handler); the signal mask would not survive the
    spawn, but a blocked signal is kept pending rather than ignored, so a
    Ctrl-C in this window reaches us once the handler is back.  That holds
    only while no other thread can take SIGINT: one that could would take
    it here and drop it (engine/threads.py).  With such a thread about,
    workers start without the shield: a Ctrl-C may then cost a worker's
    traceback, never the Ctrl-C itself.
    """
    if threading.current_thread() is not threading.main_thread() or threads.others_take(signal.SIGINT):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _refuse_while_bootstrapping() -> None:
    """In a worker that is still importing the main script: leave, quietly.

    The spawn start method imports the parent's main script again in every
    worker; a script without ``if __name__ == "__main__":`` then creates an
    Engine in there too.  Python would print a long RuntimeError per worker;
    instead the worker exits with NO_MAIN_GUARD_EXIT and the parent says
    what is wrong (``MissingMainGuard``) in one line.
    """
    if getattr(_MP.current_process(), "_inheriting", False):
        raise SystemExit(NO_MAIN_GUARD_EXIT)


@dataclass
class _InFlight:
    slot: int
    block: int
    pages: np.ndarray           # kept so a replacement worker can be given the packet again
    sends: int = 0              # 1 + re-sends to replacements
    header: bytes | None = None  # send_packet's header; None = the coordinator encodes one

    @property
    def page_count(self) -> int:
        return len(self.pages)


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
    path_reason: str = ""       # why the worker's work queue path was taken
    deaths_in_a_row: int = 0    # reset by every Result
    last_exit_code: int | None = None

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
    method_level: int | None = None   # zlib/zstd level; None = the method's default
    # replacements of one worker allowed in a row; 0 = a death ends the run
    worker_restarts: int = 0
    # workers move all-zero pages to the zero list; None = when the peer
    # knows zero pages in packets (compat).  A relay keeps the split it got.
    zero_page_detection: bool | None = None
    # start() opens every channel with its init packet; False = the caller
    # writes it (a relay forwards the one it received, before any packet)
    write_init: bool = True
    # method none: copy pages into the slots and from there to the channel
    # (the old path, kept to compare with); False = straight from the block
    copy_pages: bool = False
    # fault injection: called just before each Task is written to a worker,
    # with (worker_id, pid, packet_num, attempt); attempt counts from 1 and
    # grows with every try of the packet.  A kill here lands before the
    # worker can read the task, so that packet always dies with it (after
    # the write, a fast worker could finish first).  The stress command
    # kills workers here.
    before_dispatch: Callable[[int, int, int, int], None] | None = None


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
        self._pages_are_payload = self.method.payload_is_pages and not settings.copy_pages
        self._header = bytearray(wire.header_size(settings.page_size))
        self._packet_num = 0
        self._last = -1
        self._sinks = sinks
        self.workers: list[_Worker] = []
        self._closed = False
        # for the report: packets per channel over time, payload bytes per page
        self.timeline = PacketTimeline([sink.channel_id for sink in sinks])
        self.page_sizes = PageSizeHistogram(settings.page_size)

    # ---- life cycle ---------------------------------------------------

    def start(self) -> None:
        """Start one worker per channel and wait until all are ready."""
        try:
            for sink in self._sinks:
                init = wire.InitPacket(self.settings.uuid, sink.channel_id).encode()
                if self.settings.write_init:
                    sink.write(init)
                w = self._start_worker(sink)
                w.count(bytes=len(init) if self.settings.write_init else 0)
                self.workers.append(w)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _start_worker(self, sink: ChannelSink) -> _Worker:
        worker_id = sink.channel_id
        count = self.settings.slots_per_worker
        slots = SharedSegment.create(f"slots{worker_id}", self._slot_size * count)
        try:
            process, conn = self._spawn(worker_id, slots)
        except BaseException:
            slots.close()
            slots.unlink()
            raise
        return _Worker(worker_id, process, conn, sink, slots, list(range(count)))

    def _spawn(self, worker_id: int, slots: SharedSegment) -> tuple[Any, Any]:
        """Start the process of worker ``worker_id`` on ``slots``; (process, our pipe end)."""
        count = self.settings.slots_per_worker
        spec = worker_main.WorkerSpec(
            worker_id=worker_id,
            method=self.method.name,
            page_size=self.page_size,
            blocks=[b.spec().as_dict() for b in self.blocks],
            slots_name=slots.name,
            slot_size=self._slot_size,
            slot_count=count,
            zero_page_detection=self.zero_page_detection,
            jobs=dict(self.settings.jobs.__dict__),
            fail_on_packet=self.settings.fail_on_packet,
            method_level=self.settings.method_level,
            copy_pages=self.settings.copy_pages,
        )
        _refuse_while_bootstrapping()
        ours, theirs = _MP.Pipe(duplex=True)
        process = _MP.Process(target=worker_main.main, args=(theirs, spec.as_dict()),
                              name=f"mfd-worker-{worker_id}", daemon=True)
        try:
            with _sigint_ignored_by_children():
                process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return process, ours

    @property
    def zero_page_detection(self) -> bool:
        detect = self.settings.zero_page_detection
        return self.settings.compat.zero_pages_in_packets if detect is None else detect

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
                    w.accelerator, w.path_reason = message.accelerator, message.path_reason
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
            self._dispatch(self._next_worker(), block_index, pages[start:start + self.page_count])
            if on_packet is not None:
                on_packet(packet + 1, total)
        return total

    def send_packet(self, block_index: int, pages: np.ndarray, header: bytes) -> None:
        """Send one packet of ``pages`` under a header made elsewhere.

        The packet goes out with ``header`` (header_size bytes) as given,
        except for what the encoding decides: the compression bits of flags
        (this method's) and next_packet_size.  Its packet_num, block name,
        offsets and page split are the caller's, so the header must describe
        what the worker will produce (with zero-page detection off: every
        page in ``pages`` normal).  A relay re-encodes a packet it received
        this way.
        """
        if self._closed:
            raise RuntimeError("coordinator is closed")
        if self.zero_page_detection:
            raise RuntimeError("send_packet keeps the header's page split: "
                               "zero_page_detection must be off")
        if len(header) != len(self._header):
            raise ValueError(f"header of {len(header)} bytes; packets have {len(self._header)}")
        pages = self._checked_pages(block_index, pages)
        if len(pages) > self.page_count:
            raise ValueError(f"{len(pages)} pages do not fit in one packet of {self.page_count}")
        w = self._next_worker()
        slot = w.free_slots.pop()
        packet_num = int.from_bytes(header[24:32], "big")
        if packet_num in w.in_flight:
            # QEMU before 9.0 may repeat a packet_num on a channel; one at a time then
            self.flush()
        w.in_flight[packet_num] = _InFlight(slot, block_index, pages, header=bytes(header))
        self._send_task(w, packet_num)

    def flush(self) -> None:
        """Wait until every packet in flight is written to its channel."""
        while any(w.in_flight for w in self.workers):
            self._wait_result_or_death()

    def sync(self) -> None:
        """Wait for every packet in flight, then a SYNC packet on every channel."""
        self.flush()
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
        # one byte per page of the block, not a sorted copy of the batch
        # (np.unique): the coordinator's memory stays flat as RAM grows
        seen = np.zeros(block.pages, dtype=np.bool_)
        seen[pages] = True
        if np.count_nonzero(seen) != len(pages):
            raise ValueError("a dirty batch names a page twice")
        return pages

    def _take_packet_num(self) -> int:
        number = self._packet_num
        self._packet_num += 1
        return number

    def _next_worker(self) -> _Worker:
        """The next worker in turn, once it has a free slot.

        Not the next idle one, as QEMU picks channels: which worker gets a
        packet would then depend on timing, and a worker's compressor
        state (the software codec adapts to what it compressed before) on
        which packets it got, so one seed gave different bytes run to run.
        """
        self._last = (self._last + 1) % len(self.workers)
        w = self.workers[self._last]
        while not w.free_slots:
            self._wait_result_or_death()
        return w

    def _dispatch(self, w: _Worker, block_index: int, pages: np.ndarray) -> None:
        slot = w.free_slots.pop()
        packet_num = self._take_packet_num()
        w.in_flight[packet_num] = _InFlight(slot, block_index, pages)
        self._send_task(w, packet_num)

    def _send_task(self, w: _Worker, packet_num: int) -> None:
        flight = w.in_flight[packet_num]
        flight.sends += 1
        if self.settings.before_dispatch is not None:
            self.settings.before_dispatch(w.worker_id, w.process.pid, packet_num, flight.sends)
        try:
            w.conn.send_bytes(Task(packet_num, flight.block, flight.pages, flight.slot).pack())
        except OSError:
            self._replace_dead(w)   # re-sends this packet too

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
            self._replace_dead(w)
            return None
        except MessageError as exc:
            raise errors.WorkerError(str(exc), worker_id=w.worker_id, kind="protocol") from exc
        if not w.process.is_alive():
            self._replace_dead(w)
        return None

    def _process(self, w: _Worker, message: Any) -> None:
        if isinstance(message, Result):
            self._merge_result(w, message)
        elif isinstance(message, Ready):
            w.accelerator, w.path_reason = message.accelerator, message.path_reason  # a replacement is up
        elif isinstance(message, Failure):
            error = errors.WorkerError(message.message, worker_id=message.worker_id,
                                       packet_num=message.packet_num, kind=message.kind)
            raise error from errors.RemoteTraceback(message.traceback)
        elif not isinstance(message, Bye):
            raise errors.WorkerError(f"unexpected {type(message).__name__}",
                                     worker_id=w.worker_id, kind="protocol")

    def _replace_dead(self, w: _Worker) -> None:
        """Worker ``w`` died: replace it and re-send its packets, or end the run."""
        w.process.join(1.0)
        w.last_exit_code = w.process.exitcode
        w.deaths_in_a_row += 1
        if (self._closed or w.deaths_in_a_row > self.settings.worker_restarts
                or not self.replaceable or w.last_exit_code == NO_MAIN_GUARD_EXIT):
            self._terminate_broken(w)
        w.conn.close()
        w.process, w.conn = self._spawn(w.worker_id, w.slots)
        w.accelerator = "?"
        w.count(restarts=1)
        # The replacement reads its pipe only after setup; the tasks wait
        # there (a few small frames) so the other channels go on meanwhile.
        process = w.process
        for packet_num in sorted(w.in_flight):
            self._send_task(w, packet_num)
            if w.process is not process:
                return   # that one died too; the nested call re-sent everything

    @property
    def replaceable(self) -> bool:
        """Can a dead worker be replaced mid-migration (see ``Method.resumable``)?"""
        return self.method.resumable

    def _terminate_broken(self, w: _Worker) -> None:
        code = w.last_exit_code
        if code == NO_MAIN_GUARD_EXIT:
            raise errors.MissingMainGuard() from None
        packets = sorted(w.in_flight)
        message = f"process {w.process.pid} died (exit code {code}) with packets {packets} in flight"
        if self.settings.worker_restarts and not self.replaceable:
            message += (f"; method {self.method.name} keeps one stream per channel, which died "
                        "with it: a replacement cannot continue the stream")
        elif self.settings.worker_restarts:
            message += (f"; it died {w.deaths_in_a_row} times in a row, more than "
                        f"run.worker_restarts = {self.settings.worker_restarts}")
        raise errors.BrokenWorker(message, worker_id=w.worker_id,
                                  packet_num=packets[0] if packets else None, kind="died")

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
        if not np.array_equal(np.sort(result.pages), np.sort(flight.pages)):
            # the header is made from these, and none's payload read at them
            raise errors.WorkerError("result names other pages than its packet's",
                                     worker_id=w.worker_id, packet_num=result.packet_num,
                                     kind="lost-pages")
        if result.next_packet_size > self._slot_size:
            raise errors.WorkerError(f"payload of {result.next_packet_size} bytes overflows its slot",
                                     worker_id=w.worker_id, packet_num=result.packet_num, kind="protocol")
        if flight.header is None:
            wire.encode_header(
                page_size=self.page_size, flags=self.method.flag, packet_num=result.packet_num,
                ramblock=self.blocks[flight.block].name, normal_pages=result.normal_num,
                zero_pages=result.zero_num, next_packet_size=result.next_packet_size,
                pages=result.pages, out=self._header)
        else:
            self._header[:] = flight.header
            wire.restamp_header(self._header, method_flag=self.method.flag,
                                mask=self.settings.compat.compression_mask,
                                next_packet_size=result.next_packet_size)
        payload = self._payload(w, result, flight)
        write_started = time.perf_counter_ns()
        w.sink.write(self._header, *payload)
        write_ns = time.perf_counter_ns() - write_started
        w.free_slots.append(result.slot)
        w.deaths_in_a_row = 0
        wire_bytes = len(self._header) + result.next_packet_size
        stats = result.stats            # ours: the message is not used after this
        # the worker's counters, with the page split as the Result states it
        stats.update(packets=1, normal_pages=result.normal_num, zero_pages=result.zero_num,
                     payload_bytes=result.next_packet_size, bytes=wire_bytes, write_ns=write_ns)
        counters = w.counters
        for key, value in stats.items():    # about 20 counters, once per packet
            counters[key] = counters.get(key, 0) + value
        self.timeline.record(w.worker_id, flight.page_count, result.zero_num, result.next_packet_size,
                             wire_bytes, stats.get("zero_ns", 0), stats.get("compress_ns", 0),
                             write_ns)

    def _payload(self, w: _Worker, result: Result, flight: _InFlight) -> list[memoryview]:
        """The buffers of a packet's payload: its slot, or none's pages in the RAM block."""
        if self._pages_are_payload:
            if result.next_packet_size != result.normal_num * self.page_size:
                raise errors.WorkerError(
                    f"none payload of {result.next_packet_size} bytes for {result.normal_num} pages",
                    worker_id=w.worker_id, packet_num=result.packet_num, kind="protocol")
            # the header's normal offsets, in its order: none's payload (spec §4.1)
            return page_views(self.blocks[flight.block].buf, self.page_size,
                              result.pages[:result.normal_num])
        start = result.slot * self._slot_size
        payload = w.slots.buf[start:start + result.next_packet_size]
        if self.method.page_length_table and result.normal_num:
            self.page_sizes.add(payload, result.normal_num)
        return [payload]

    # ---- reporting ----------------------------------------------------

    def channel_counters(self) -> list[dict[str, Any]]:
        """Per channel: its worker's pid, path and counters so far."""
        return [{"channel": w.worker_id, "pid": w.process.pid, "accelerator": w.accelerator,
                 "path_reason": w.path_reason, **w.counters} for w in self.workers]

    def bytes_written(self) -> int:
        """Bytes written to every channel so far (init, packets, SYNCs)."""
        return sum(w.counters.get("bytes", 0) for w in self.workers)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]


