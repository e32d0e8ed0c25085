"""The worker process: one per channel, turns tasks into packet payloads.

::

    coordinator ──Task(packet_num, block, pages, slot)──►  worker
                                                            │ attach RAM blocks + own slots (shared memory)
                                                            │ zero-page partition (C)
                                                            │ method.send_prepare: job array on the
                                                            │   work queue, payload into the slot (C);
                                                            │   skipped for none (payload_is_pages)
    coordinator ◄──Result(packet_num, slot, normal/zero, ───┘
                   next_packet_size, pages, stats)

The worker never sends page bytes: it reads pages from the RAM blocks in
shared memory and writes payloads into its own output slots, which the
coordinator writes to the channel and then frees.  It handles one task at a
time, in the order they arrive, so a channel's packets keep their order.

A packet that raises becomes a ``Failure`` (kind, message, traceback text)
and the worker goes on waiting: the coordinator decides to stop.  A setup
that raises also becomes a ``Failure``, sent before the worker exits.
``Shutdown`` is answered with ``Bye`` after cleanup.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any


from engine import methods
from engine.methods import MethodParams
from engine.ram import RamBlock, RamBlockSpec, SharedSegment
from workers import codec
from workers.settings import JobSettings
from workers.messages import Bye, Failure, Ready, Result, Shutdown, Task, unpack


@dataclass
class WorkerSpec:
    """Everything a worker needs, sent once at start (plain data)."""

    worker_id: int
    method: str
    page_size: int
    blocks: list[dict]                 # RamBlockSpec.as_dict() each
    slots_name: str                    # shared-memory segment of this worker's slots
    slot_size: int
    slot_count: int
    zero_page_detection: bool
    jobs: dict = field(default_factory=dict)       # JobSettings fields
    fail_on_packet: int | None = None  # fault injection: raise on this packet
    method_level: int | None = None    # zlib/zstd level; None = the method's default
    # a method whose payload is its pages (none): False = the coordinator
    # writes them from the RAM block and this worker copies nothing
    copy_pages: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.blocks: list[RamBlock] = []
        self.slots: SharedSegment | None = None
        self.method = methods.get(spec.method)
        self.state: Any = None
        self.blocks = [RamBlock.attach(RamBlockSpec.from_dict(b)) for b in spec.blocks]
        self.slots = SharedSegment.attach(spec.slots_name)
        params = MethodParams(spec.worker_id, spec.page_size, JobSettings(**spec.jobs),
                              level=spec.method_level)
        self.state = self.method.send_setup(params)
        # none's payload is the normal pages: the coordinator writes them
        # from the RAM block itself, so send_prepare would only copy them
        self.pages_are_payload = self.method.payload_is_pages and not spec.copy_pages
        # a device-backed work queue reaches pages and slots by segment name
        self.method.map_shared_memory(self.state, [(b.segment.name, b.buf) for b in self.blocks]
                                      + [(self.slots.name, self.slots.buf)])

    def handle(self, task: Task) -> Result:
        spec = self.spec
        if spec.fail_on_packet is not None and task.packet_num == spec.fail_on_packet:
            raise RuntimeError(f"injected failure on packet {task.packet_num}")
        if not 0 <= task.slot < spec.slot_count:
            raise ValueError(f"slot {task.slot} outside 0..{spec.slot_count - 1}")
        block = self.blocks[task.block]
        pages = task.pages
        started = time.perf_counter_ns()
        if spec.zero_page_detection:
            normal = codec.find_zero_pages(block.buf, spec.page_size, pages)
        else:
            normal = len(pages)
        zero_ns = time.perf_counter_ns() - started
        prepare_started = time.perf_counter_ns()
        if self.pages_are_payload:
            size, stats = normal * spec.page_size, {"normal_pages": normal, "raw_pages": normal}
        else:
            start = task.slot * spec.slot_size
            slot = self.slots.buf[start:start + spec.slot_size]
            size, stats = self.method.send_prepare(self.state, block, pages[:normal], slot)
        prepare_ns = time.perf_counter_ns() - prepare_started
        stats = dict(stats)
        stats["zero_ns"] = stats.get("zero_ns", 0) + zero_ns
        # methods that do not time their own loop (zlib, zstd, none): the hook's time
        stats["compress_ns"] = stats.get("compress_ns") or prepare_ns
        return Result(task.packet_num, task.slot, normal, len(pages) - normal, size, pages, stats)

    def close(self) -> None:
        if self.state is not None:
            self.method.send_cleanup(self.state)
            self.state = None
        if self.slots is not None:
            self.slots.close()
            self.slots = None
        for block in self.blocks:
            block.close()
        self.blocks = []


def _failure(worker_id: int, packet_num: int | None, kind: str, exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))
    return Failure(worker_id, packet_num, kind, f"{type(exc).__name__}: {exc}", text).pack()


def main(conn: Any, spec_dict: dict) -> None:
    """Entry point of a worker process (the target the coordinator starts)."""
    spec = WorkerSpec(**spec_dict)
    try:
        worker = _Worker(spec)
    except BaseException as exc:  # noqa: BLE001 - reported, then the process exits
        conn.send_bytes(_failure(spec.worker_id, None, "setup", exc))
        return
    try:
        conn.send_bytes(Ready(spec.worker_id, os.getpid(),
                              *worker.method.send_path(worker.state)).pack())
        _serve(conn, worker)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the coordinator went away or the user interrupted: just clean up
    except BaseException as exc:  # noqa: BLE001 - a bug in the loop itself: say so
        _try_send(conn, _failure(spec.worker_id, None, "worker", exc))
    finally:
        worker.close()
    _try_send(conn, Bye(spec.worker_id).pack())


def _try_send(conn: Any, frame: bytes) -> None:
    try:
        conn.send_bytes(frame)
    except (OSError, EOFError):
        pass  # nobody is listening any more


def _serve(conn: Any, worker: _Worker) -> None:
    while True:
        message = unpack(conn.recv_bytes())
        if isinstance(message, Shutdown):
            return
        if not isinstance(message, Task):
            conn.send_bytes(_failure(worker.spec.worker_id, None, "protocol",
                                     TypeError(f"unexpected message {type(message).__name__}")))
            continue
        try:
            reply = worker.handle(message).pack()
        except Exception as exc:  # noqa: BLE001 - every packet error goes back as a Failure
            reply = _failure(worker.spec.worker_id, message.packet_num, "packet", exc)
        conn.send_bytes(reply)


