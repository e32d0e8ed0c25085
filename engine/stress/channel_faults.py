"""Faults injected into channels between a sender and its receiver.

::

    coordinator ─► DamagingSink ─► channel ─► SlowSource / StoppingSource ─► ChannelReader
                   flip, truncate,            a slow receiver, or one
                   drop, reorder              that stops reading

``DamagingSink`` wraps any ``ChannelSink``.  The coordinator writes one
packet per ``write`` call (header and payload together; the init packet
and SYNC packets alone), so the wrapper damages whole packets: once armed
with a ``PacketDamage`` it counts the packets that pass and damages the
chosen one.  Everything else goes through untouched, without a copy.
What it did is counted in ``injected`` (kind -> packets).

The source wrappers stand for a receiver that cannot keep up
(``SlowSource``: a pause before every read) and one that stops reading
(``StoppingSource``: after a given number of bytes it reads nothing more
until released, so the sender's stall timeout has to notice).

All choices come from the seed in the damage plan, so a run can be
repeated.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

DAMAGE_KINDS = ("flip", "truncate", "drop", "reorder")


@dataclass(frozen=True)
class PacketDamage:
    """Damage the ``packet``-th packet written after arming (0 = the next one)."""

    kind: str
    packet: int
    seed: int

    def __post_init__(self) -> None:
        if self.kind not in DAMAGE_KINDS:
            raise ValueError(f"unknown damage {self.kind!r}; known: {', '.join(DAMAGE_KINDS)}")


class DamagingSink:
    """A ``ChannelSink`` that damages one chosen packet on its way through."""

    def __init__(self, sink, damage: PacketDamage | None = None) -> None:
        self._sink = sink
        self.channel_id = sink.channel_id
        self.injected: dict[str, int] = {}
        self.damaged_packets: list[bytes] = []      # headers of what was damaged (first bytes)
        self._damage: PacketDamage | None = None
        self._countdown = 0
        self._held: bytes | None = None
        if damage is not None:
            self.arm(damage)

    @property
    def bytes_written(self) -> int:
        return self._sink.bytes_written

    def arm(self, damage: PacketDamage) -> None:
        """Damage the ``damage.packet``-th packet from now on."""
        self._damage = damage
        self._countdown = damage.packet

    def write(self, *buffers) -> None:
        if self._damage is not None and self._countdown == 0:
            damage, self._damage = self._damage, None
            self._apply(damage, b"".join(buffers))
            return
        if self._damage is not None:
            self._countdown -= 1
        self._sink.write(*buffers)
        self._release_held()

    def _apply(self, damage: PacketDamage, packet: bytes) -> None:
        rng = np.random.default_rng(damage.seed)
        self.injected[damage.kind] = self.injected.get(damage.kind, 0) + 1
        self.damaged_packets.append(packet[:64])
        if damage.kind == "flip":
            out = bytearray(packet)
            for pos in rng.integers(0, len(out), size=int(rng.integers(1, 4))):
                out[pos] ^= 1 << int(rng.integers(0, 8))
            self._sink.write(out)
        elif damage.kind == "truncate":
            self._sink.write(packet[:int(rng.integers(0, len(packet)))])
        elif damage.kind == "reorder":
            self._held = packet       # goes out right after the next packet
        # "drop": nothing goes out
        if damage.kind != "reorder":
            self._release_held()

    def _release_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._sink.write(held)

    def flush(self) -> None:
        """Send a packet still held back for reordering (the sender's end of round)."""
        self._release_held()

    def close(self) -> None:
        try:
            self._release_held()
        except (OSError, ValueError):
            pass              # the channel is already gone: the packet is lost with it
        finally:
            self._sink.close()


class SlowSource:
    """A ``ChannelSource`` that pauses ``delay`` seconds before every read."""

    def __init__(self, source, delay: float) -> None:
        self._source = source
        self.channel_id = source.channel_id
        self.delay = delay
        self.reads = 0

    def readinto(self, view: memoryview) -> int:
        time.sleep(self.delay)
        self.reads += 1
        return self._source.readinto(view)

    def close(self) -> None:
        self._source.close()


class StoppingSource:
    """A ``ChannelSource`` that stops reading once armed and ``after`` bytes later.

    Stopped, a read waits until ``release()`` and then reports the end of
    the stream.  ``stopped`` tells whether it got that far.
    """

    def __init__(self, source) -> None:
        self._source = source
        self.channel_id = source.channel_id
        self._left: int | None = None
        self._released = threading.Event()
        self.stopped = False
        self.bytes_read = 0          # progress, for a harness waiting on the reader

    def arm(self, after: int) -> None:
        self._left = after

    def readinto(self, view: memoryview) -> int:
        got = self._read(view)
        self.bytes_read += got
        return got

    def _read(self, view: memoryview) -> int:
        if self._left is None:
            return self._source.readinto(view)
        view = memoryview(view).cast("B")
        got = 0
        if self._left > 0:
            got = self._source.readinto(view[:min(len(view), self._left)])
            self._left -= got
            if got == len(view) or self._left > 0:
                return got        # filled before the stop point, or the stream ended
        self.stopped = True
        self._released.wait()
        return got

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._source.close()
