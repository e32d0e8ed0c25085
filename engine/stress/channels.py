"""One stress migration's channels, over memory or TCP, with the fault wrappers.

::

    transport "memory":  DamagingSink ─► BoundedChannel ─► StoppingSource [─► SlowSource]
    transport "tcp":     DamagingSink ─► TcpSink ═ loopback ═ TcpSource ─► StoppingSource [─► SlowSource]

Both stall the same way: a sender blocked on a channel nobody reads gets
``ChannelStalled`` after ``transport.stall_timeout`` (the bounded channel's
budget, or the socket buffers and their timeout), and so does a reader
whose sender went quiet.  ``abort`` frees every thread waiting on either
side at once (shutting a socket down wakes a blocked ``recv``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from engine.net import transport
from engine.stress.bounded_channel import BoundedChannel
from engine.stress.channel_faults import DamagingSink, SlowSource, StoppingSource
from engine.stress.plan import MigrationPlan

TRANSPORTS = ("memory", "tcp")


@dataclass
class StressChannels:
    damagers: list[DamagingSink]
    stoppers: list[StoppingSource]
    slow: SlowSource | None
    pipes: list[BoundedChannel] = field(default_factory=list)         # memory
    sockets: list[socket.socket] = field(default_factory=list)        # tcp

    @classmethod
    def create(cls, kind: str, count: int, plan: MigrationPlan, *, capacity: int,
               stall: float, connect_timeout: float) -> StressChannels:
        if kind == "tcp":
            sinks, sources, sockets = _tcp(count, stall, connect_timeout)
            pipes = []
        else:
            pipes = [BoundedChannel(i, capacity=capacity, stall_timeout=stall) for i in range(count)]
            sinks, sources, sockets = [p.sink for p in pipes], [p.source for p in pipes], []
        stoppers = [StoppingSource(s) for s in sources]
        slow = None
        if plan.slow_reader is not None:
            channel, delay = plan.slow_reader
            slow = SlowSource(stoppers[channel], delay)
        return cls([DamagingSink(s) for s in sinks], stoppers, slow, pipes, sockets)

    @property
    def count(self) -> int:
        return len(self.damagers)

    @property
    def sources(self) -> list:
        """What the receiver reads: the stopping (and maybe slow) wrappers."""
        return [self.slow if self.slow is not None and s.channel_id == self.slow.channel_id else s
                for s in self.stoppers]

    def abort(self) -> None:
        for pipe in self.pipes:
            pipe.abort()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass                    # already closed by its owner
        for stopper in self.stoppers:
            stopper.release()

    def close(self) -> None:
        """Close what the engine and receiver did not (they close their ends)."""
        for sock in self.sockets:
            sock.close()

    def damage_done(self) -> dict[str, int]:
        """Damaged packets so far, per kind, over every channel."""
        done: dict[str, int] = {}
        for damager in self.damagers:
            for kind, n in damager.injected.items():
                done[kind] = done.get(kind, 0) + n
        return done

    def peak_buffered(self) -> int:
        """Most bytes one memory channel held (0 over TCP: the kernel bounds it)."""
        return max((p.peak_buffered for p in self.pipes), default=0)


def _tcp(count: int, stall: float, connect_timeout: float):
    listener = transport.Listener(transport.Address("127.0.0.1", 0))
    sinks, sources, sockets = [], [], []
    try:
        for i in range(count):
            out = transport.connect(listener.address, timeout=connect_timeout,
                                    stall_timeout=stall, channel=i)
            sockets.append(out)
            into, peer = listener.accept(timeout=connect_timeout, stall_timeout=stall,
                                         what="channel", channel=i)
            sockets.append(into)
            sinks.append(transport.TcpSink(out, i, peer=peer))
            sources.append(transport.TcpSource(into, i, peer=peer))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        listener.close()
    return sinks, sources, sockets
