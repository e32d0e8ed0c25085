"""Messages between the coordinator and its workers, msgpack-framed.

The one module both sides import.  Only numbers and short strings cross the
process boundary: packet numbers, block ids, page indices, lengths, slot ids
and counters; never page bytes (those stay in shared memory).  Each message
is a msgpack array whose first item is a kind tag.

    coordinator -> worker : Task, Shutdown
    worker -> coordinator : Ready, Result, Failure, Bye
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import msgpack
import numpy as np

TASK, SHUTDOWN, READY, RESULT, FAILURE, BYE = range(6)


@dataclass(frozen=True)
class Task:
    """Build the payload of one packet into output slot ``slot``."""

    packet_num: int
    block: int                  # index into the worker's RAM block list
    pages: np.ndarray           # uint64 page indices, at most page_count
    slot: int

    def pack(self) -> bytes:
        return msgpack.packb(
            [TASK, self.packet_num, self.block, _indices_bytes(self.pages), self.slot]
        )


@dataclass(frozen=True)
class Shutdown:
    """Finish and exit; the worker answers with Bye."""

    def pack(self) -> bytes:
        return msgpack.packb([SHUTDOWN])


@dataclass(frozen=True)
class Ready:
    """The worker attached its memory and set its method up."""

    worker_id: int
    pid: int
    accelerator: str            # which work queue path it runs
    path_reason: str = ""       # why that path (e.g. why auto stayed on software)

    def pack(self) -> bytes:
        return msgpack.packb([READY, self.worker_id, self.pid, self.accelerator, self.path_reason])


@dataclass(frozen=True)
class Result:
    """The payload of packet ``packet_num`` sits in slot ``slot``.

    ``pages`` holds the packet's page indices partitioned as QEMU does:
    ``normal_num`` normal pages, then the zero pages.
    """

    packet_num: int
    slot: int
    normal_num: int
    zero_num: int
    next_packet_size: int
    pages: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    def pack(self) -> bytes:
        return msgpack.packb(
            [RESULT, self.packet_num, self.slot, self.normal_num, self.zero_num,
             self.next_packet_size, _indices_bytes(self.pages), self.stats]
        )


@dataclass(frozen=True)
class Failure:
    """The worker could not handle a packet (or could not start)."""

    worker_id: int
    packet_num: int | None
    kind: str
    message: str
    traceback: str

    def pack(self) -> bytes:
        return msgpack.packb(
            [FAILURE, self.worker_id, self.packet_num, self.kind, self.message, self.traceback]
        )


@dataclass(frozen=True)
class Bye:
    """Answer to Shutdown: the worker cleaned up and is exiting."""

    worker_id: int

    def pack(self) -> bytes:
        return msgpack.packb([BYE, self.worker_id])


Message = Union[Task, Shutdown, Ready, Result, Failure, Bye]


class MessageError(ValueError):
    """A frame that is not a message of this protocol."""


def _indices_bytes(pages: np.ndarray) -> bytes:
    return np.ascontiguousarray(pages, dtype="<u8").tobytes()


def _indices(raw: bytes) -> np.ndarray:
    # a private copy: frombuffer over msgpack's bytes would be read-only and
    # the worker partitions the array in place
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def unpack(frame: bytes) -> Message:
    """Decode one frame; MessageError if it is not one of ours."""
    try:
        item: list[Any] = msgpack.unpackb(frame)
        kind, rest = item[0], item[1:]
        if kind == TASK:
            packet_num, block, pages, slot = rest
            return Task(packet_num, block, _indices(pages), slot)
        if kind == SHUTDOWN:
            return Shutdown()
        if kind == READY:
            return Ready(*rest)
        if kind == RESULT:
            packet_num, slot, normal, zero, size, pages, stats = rest
            return Result(packet_num, slot, normal, zero, size, _indices(pages), stats)
        if kind == FAILURE:
            return Failure(*rest)
        if kind == BYE:
            return Bye(*rest)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise MessageError(f"undecodable message frame: {exc}") from exc
    raise MessageError(f"unknown message kind {kind!r}")
