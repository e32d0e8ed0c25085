"""QEMU's main migration channel through a relay: byte for byte, both ways.

The main channel (machine type, RAM block list, sync points, device state,
the end marker; ../shared/spec/qemu-main-channel.md) is never parsed: one
thread per direction copies whatever arrives.  An end of stream in one
direction is passed on as a half close (``shutdown(SHUT_WR)``), so each
QEMU sees its peer's close as it would without the relay.

Reads wait without a deadline: QEMU paces this channel, and the way back
(destination to source) is silent for a whole precopy migration.  Writes
wait at most ``stall_timeout`` for the peer to take bytes.  A session that
gives up shuts the sockets down, which also ends a waiting read; that end
is not passed on (``aborted``), the session resets both sides instead.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from engine import errors, threads

_CHUNK = 1 << 20


@dataclass
class Direction:
    name: str                   # "forward" (source to destination) or "back"
    bytes: int = 0
    done: bool = False          # ended by a clean end of stream


class MainChannelForwarder:
    """Copies ``source`` ↔ ``destination``; ``on_error`` hears the first fault."""

    def __init__(self, source: socket.socket, destination: socket.socket, *,
                 stall_timeout: float, on_error: Callable[[BaseException], None],
                 peers: tuple[str, str] = ("source", "destination"),
                 aborted: threading.Event | None = None) -> None:
        self.stall_timeout = stall_timeout
        self.on_error = on_error
        self.aborted = aborted or threading.Event()   # set: an end is not passed on
        self.forward = Direction("forward")
        self.back = Direction("back")
        for sock in (source, destination):
            sock.setblocking(False)
        self._threads = [
            threading.Thread(target=self._pump, args=(source, destination, self.forward, peers[1]),
                             name="mfd-relay-main-forward", daemon=True),
            threading.Thread(target=self._pump, args=(destination, source, self.back, peers[0]),
                             name="mfd-relay-main-back", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            threads.start(thread)

    @property
    def finished(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _pump(self, src: socket.socket, dst: socket.socket, direction: Direction, dst_peer: str) -> None:
        buf = memoryview(bytearray(_CHUNK))
        try:
            while True:
                _wait(src, select.POLLIN, None)
                try:
                    n = src.recv_into(buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    if not self.aborted.is_set():
                        _half_close(dst)
                    direction.done = True
                    return
                self._send_all(dst, buf[:n], dst_peer)
                direction.bytes += n
        except OSError as exc:
            self.on_error(errors.PeerClosed(f"main channel ({direction.name}): "
                                            f"{exc.strerror or exc}", peer=dst_peer))
        except errors.EngineError as exc:
            self.on_error(exc)

    def _send_all(self, dst: socket.socket, view: memoryview, peer: str) -> None:
        while view:
            if not _wait(dst, select.POLLOUT, self.stall_timeout):
                raise errors.PeerStalled(f"main channel: the peer took no bytes for "
                                         f"{self.stall_timeout:g} s", peer=peer)
            try:
                sent = dst.send(view)
            except BlockingIOError:
                continue
            view = view[sent:]


def _wait(sock: socket.socket, event: int, timeout: float | None) -> bool:
    """Wait for ``event`` (or an error or hang-up, which the next call reports)."""
    poller = select.poll()
    poller.register(sock, event)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


def _half_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass    # the peer is gone already: nothing to tell it
