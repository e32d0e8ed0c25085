"""One stress migration's channels, over memory or TCP, with the fault wrappers.

::

    transport "memory":  DamagingSink ─► BoundedChannel ─► StoppingSource [─► SlowSource]
    transport "tcp":     DamagingSink ─► TcpSink ═ loopback ═ TcpSource ─► StoppingSource [─► SlowSource]

Over TCP the channels join as ``recv``'s do, through the receiver's
``SessionGate`` with the session's token, behind the plan's hostile client
when it has one (``engine.stress.hostile_client``); ``dropped`` counts the
connections the gate turned away.

Both stall the same way: a sender blocked on a channel nobody reads gets
``ChannelStalled`` after ``transport.stall_timeout`` (the bounded channel's
budget, or the socket buffers and their timeout), and so does a reader
whose sender went quiet.  ``abort`` frees every thread waiting on either
side at once (shutting a socket down wakes a blocked ``recv``).
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.net import transport
from engine.net.auth import SessionAuth
from engine.net.session import TOKEN_BYTES, SessionGate, open_data_channel
from engine.stress import hostile_client
from engine.stress.bounded_channel import BoundedChannel
from engine.stress.channel_faults import DamagingSink, SlowSource, StoppingSource
from engine.stress.plan import MigrationPlan

if TYPE_CHECKING:
    from engine.config import TransportSettings

TRANSPORTS = ("memory", "tcp")


@dataclass
class StressChannels:
    damagers: list[DamagingSink]
    stoppers: list[StoppingSource]
    slow: SlowSource | None
    pipes: list[BoundedChannel] = field(default_factory=list)         # memory
    sockets: list[socket.socket] = field(default_factory=list)        # tcp
    dropped: int = 0                                                  # tcp: strangers turned away

    @classmethod
    def create(cls, kind: str, count: int, plan: MigrationPlan, *, capacity: int,
               settings: TransportSettings) -> StressChannels:
        stall, dropped = settings.stall_timeout, 0
        if kind == "tcp":
            sinks, sources, sockets, dropped = _tcp(count, settings, plan.hostile_client)
            pipes = []
        else:
            pipes = [BoundedChannel(i, capacity=capacity, stall_timeout=stall) for i in range(count)]
            sinks, sources, sockets = [p.sink for p in pipes], [p.source for p in pipes], []
        stoppers = [StoppingSource(s) for s in sources]
        slow = None
        if plan.slow_reader is not None:
            channel, delay = plan.slow_reader
            slow = SlowSource(stoppers[channel], delay)
        return cls([DamagingSink(s) for s in sinks], stoppers, slow, pipes, sockets, dropped)

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


def _tcp(count: int, settings: TransportSettings, hostile: str | None):
    listener = transport.Listener(transport.Address("127.0.0.1", 0))
    gate = SessionGate(listener, SessionAuth(), settings)
    token = secrets.token_bytes(TOKEN_BYTES)
    sinks, sources, sockets = [], [], []
    stranger = hostile_client.attack(listener.address, hostile) if hostile else None
    try:
        # the connections wait in the listener's queue, the stranger first
        outs = [open_data_channel(listener.address, SessionAuth(), token, settings, i)
                for i in range(count)]
        sockets += outs
        joined = gate.channels(count, token)
        sockets += [sock for sock, _ in joined]
        for i, (out, (into, peer)) in enumerate(zip(outs, joined)):
            sinks.append(transport.TcpSink(out, i, peer=peer))
            sources.append(transport.TcpSource(into, i, peer=peer))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        listener.close()
        if stranger is not None:
            stranger.close()
    return sinks, sources, sockets, gate.dropped.count
