"""TCP channels: sockets as channel sinks and sources, with timeouts.

A multifd data channel over TCP carries exactly what QEMU's does: the
64-byte init packet, then packets.  ``TcpSink`` and ``TcpSource`` give a
connected socket the ``write(*buffers)`` / ``readinto(view)`` faces of
``engine.channels``, so the coordinator and the receiver use them as they
use files and memory.

Nothing waits forever:

* connecting retries a refused connection until ``connect_timeout``;
* accepting gives up after its timeout;
* every read and write waits at most ``stall_timeout`` for progress (the
  socket timeout), so a peer that stops reading or sending, or vanishes,
  becomes ``ChannelStalled`` / ``PeerClosed`` instead of a hang;
* a peer that keeps making a little progress (one byte a second) is cut
  off too: a packet's header or payload must arrive whole within
  ``packet_deadline`` of its first byte, a packet be taken whole within
  ``packet_deadline``, and a round end by ``round_ends`` (set per round).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from engine import errors
from engine.channels import IOV_MAX, _advance, byte_views, channel_file_name, partial_name, settle

_RETRY_REFUSED = 0.05   # seconds between attempts while the listener is not up yet


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT`` (``[v6]:PORT`` for IPv6); port 0 = any free port (listening)."""
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise errors.UsageError(f"{text!r} is not HOST:PORT (a port is needed, e.g. 127.0.0.1:4444)")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def connect(address: Address, *, timeout: float, stall_timeout: float,
            channel: int | None = None) -> socket.socket:
    """A connected socket; retries a refused connection until ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            sock = socket.create_connection((address.host, address.port), timeout=max(left, 0.001))
            break
        except ConnectionRefusedError:
            if left <= _RETRY_REFUSED:
                raise errors.ConnectFailed(f"refused for {timeout:g} s", channel=channel,
                                           peer=str(address)) from None
            time.sleep(_RETRY_REFUSED)
        except (TimeoutError, socket.timeout):
            raise errors.ConnectFailed(f"no connection within {timeout:g} s", channel=channel,
                                       peer=str(address)) from None
        except OSError as exc:
            raise errors.ConnectFailed(f"cannot connect: {exc.strerror or exc}", channel=channel,
                                       peer=str(address)) from None
    _tune(sock, stall_timeout)
    return sock


def _tune(sock: socket.socket, stall_timeout: float) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(stall_timeout)


class Listener:
    """A listening socket that accepts with a timeout."""

    def __init__(self, address: Address, *, backlog: int = 256) -> None:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((address.host, address.port))
            self._sock.listen(backlog)
        except OSError as exc:
            self._sock.close()
            raise errors.UsageError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        host, port = self._sock.getsockname()[:2]
        self.address = Address(host, port)

    def accept(self, *, timeout: float, stall_timeout: float, what: str,
               channel: int | None = None) -> tuple[socket.socket, str]:
        """The next connection and its peer address; ConnectFailed after ``timeout``."""
        self._sock.settimeout(timeout)
        try:
            sock, peer = self._sock.accept()
        except (TimeoutError, socket.timeout):
            raise errors.ConnectFailed(f"no {what} connected within {timeout:g} s",
                                       channel=channel, peer=str(self.address)) from None
        _tune(sock, stall_timeout)
        return sock, f"{peer[0]}:{peer[1]}"

    def close(self) -> None:
        self._sock.close()


class TcpSink:
    """A data channel's sending end: vectored writes, each stall bounded."""

    def __init__(self, sock: socket.socket, channel_id: int, *, peer: str = "",
                 packet_deadline: float | None = None) -> None:
        self.channel_id = channel_id
        self.peer = peer
        self.bytes_written = 0
        self._sock: socket.socket | None = sock
        self._timeout = sock.gettimeout()       # None: a blocking socket (run's socket pairs)
        self._deadline = packet_deadline

    def write(self, *buffers) -> None:
        if self._sock is None:
            raise ValueError(f"channel {self.channel_id}: sink is closed")
        views = byte_views(buffers)
        ends = None if self._deadline is None else time.monotonic() + self._deadline
        while views:
            try:
                self._sock.settimeout(_wait(self._timeout, ends))
                done = _send_views(self._sock, views)
            except (TimeoutError, socket.timeout):
                if ends is not None and time.monotonic() >= ends:
                    raise errors.ChannelStalled(
                        f"the peer ({self.peer}) took less than a packet in {self._deadline:g} s "
                        "(transport.packet_deadline)", channel=self.channel_id, side="write",
                        seconds=self._deadline) from None
                raise errors.ChannelStalled(
                    f"the peer ({self.peer}) took no bytes for {self._timeout:g} s",
                    channel=self.channel_id, side="write", seconds=self._timeout) from None
            except OSError as exc:
                raise _closed(exc, self.channel_id, self.peer) from None
            self.bytes_written += done
            views = _advance(views, done)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TcpSource:
    """A data channel's receiving end: fills caller buffers, each stall bounded."""

    def __init__(self, sock: socket.socket, channel_id: int, *, peer: str = "",
                 packet_deadline: float | None = None) -> None:
        self.channel_id = channel_id
        self.peer = peer
        self._sock: socket.socket | None = sock
        self._timeout = sock.gettimeout()       # None: a blocking socket (run's socket pairs)
        self._deadline = packet_deadline
        self.round_ends: float | None = None     # time.monotonic() the current round must end by

    def readinto(self, view: memoryview) -> int:
        return self.readinto_views([view])

    def readinto_views(self, views: list[memoryview]) -> int:
        """Fill ``views`` in order (method none: the destination pages themselves).

        The stall timeout, the packet deadline (from the first byte) and the
        round deadline hold for the whole list, as for one ``readinto``.
        """
        if self._sock is None:
            raise ValueError(f"channel {self.channel_id}: source is closed")
        views = byte_views(views)
        got, packet_ends = 0, None
        while views:
            ends = min((t for t in (packet_ends, self.round_ends) if t is not None), default=None)
            try:
                self._sock.settimeout(_wait(self._timeout, ends))
                n = _recv_views(self._sock, views)
            except (TimeoutError, socket.timeout):
                raise self._stalled(ends) from None
            except OSError as exc:
                raise _closed(exc, self.channel_id, self.peer) from None
            if n == 0:
                break
            if got == 0 and self._deadline is not None:
                packet_ends = time.monotonic() + self._deadline
            got += n
            views = _advance(views, n)
        return got

    def abort(self) -> None:
        """Wake a read blocked on this socket (another channel failed the round)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _stalled(self, ends: float | None) -> errors.ChannelStalled:
        if ends is None or time.monotonic() < ends:
            return errors.ChannelStalled(f"the peer ({self.peer}) sent no bytes for "
                                         f"{self._timeout:g} s", channel=self.channel_id,
                                         side="read", seconds=self._timeout)
        if ends == self.round_ends:
            return errors.ChannelStalled(f"the peer ({self.peer}) did not finish the round in "
                                         "time (transport.round_deadline)",
                                         channel=self.channel_id, side="read", seconds=0.0)
        return errors.ChannelStalled(f"the peer ({self.peer}) sent less than a packet in "
                                     f"{self._deadline:g} s (transport.packet_deadline)",
                                     channel=self.channel_id, side="read",
                                     seconds=self._deadline or 0.0)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _wait(stall_timeout: float | None, ends: float | None) -> float | None:
    """The socket timeout of the next call: the stall timeout, or less before a deadline.

    None (a socket without a timeout) stays blocking until a deadline; never 0,
    which would make the socket non-blocking.
    """
    if ends is None:
        return stall_timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left if stall_timeout is None else min(stall_timeout, left)


def _send_views(sock: socket.socket, views: list[memoryview]) -> int:
    """Bytes taken by one send: vectored on a plain socket, ``IOV_MAX`` buffers at most.

    A TLS socket has no sendmsg; a packet's header and payload (or a none
    packet's pages) go joined in one ``sendall``, so they fill whole TLS
    records instead of a small one per buffer (measured: bench/tls.py).
    TLS encrypts into its own buffer, so the join is a copy it would make
    anyway in a different place.
    """
    if isinstance(sock, ssl.SSLSocket):
        data = views[0] if len(views) == 1 else b"".join(views)
        sock.sendall(data)
        return len(data)
    return sock.sendmsg(views[:IOV_MAX])


def _recv_views(sock: socket.socket, views: list[memoryview]) -> int:
    """Bytes one receive put into the front of ``views`` (all of them on a plain socket).

    A TLS socket has no recvmsg_into: it fills the first view only, and the
    caller goes on with the rest.
    """
    if len(views) == 1 or isinstance(sock, ssl.SSLSocket):
        return sock.recv_into(views[0])
    return sock.recvmsg_into(views[:IOV_MAX])[0]


def _closed(exc: OSError, channel: int | None, peer: str) -> errors.EngineError:
    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED):
        return errors.PeerClosed("the peer closed the connection", channel=channel, peer=peer)
    return errors.TransportError(f"socket error: {exc.strerror or exc}", channel=channel, peer=peer)


class RecordingSource:
    """A source that also appends every byte it delivers to a file.

    ``recv --record DIR`` keeps what arrived on each data channel, so it can
    be read again with ``multifd-engine inspect``.  The file is named after
    the accept order until ``name_by_channel`` knows the channel id, and is
    ``.partial`` until the session ends cleanly (``finish``, then ``close``);
    an aborted session leaves it ``.aborted``.
    """

    def __init__(self, source: TcpSource, directory: str | os.PathLike, index: int) -> None:
        self.source = source
        self.channel_id = source.channel_id
        self._dir = Path(directory)
        self.final_path = self._dir / f"connection-{index}.mfd"
        self.path = partial_name(self.final_path)
        self._complete = False
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            # unbuffered: a full disk fails the write that hit it, not a flush at close
            self._file = open(self.path, "wb", buffering=0)
        except OSError as exc:
            raise errors.OutputError(exc.strerror or str(exc), path=str(self.final_path)) from None

    def readinto(self, view: memoryview) -> int:
        got = self.source.readinto(view)
        data = memoryview(view).cast("B")[:got]
        try:
            while data:
                data = data[self._file.write(data):]
        except OSError as exc:      # disk full: the recording, not the migration, failed
            raise errors.OutputError(exc.strerror or str(exc), path=str(self.path)) from None
        return got

    def abort(self) -> None:
        self.source.abort()

    def name_by_channel(self, channel_id: int) -> None:
        self.final_path = self._dir / channel_file_name(channel_id)
        target = partial_name(self.final_path)
        os.replace(self.path, target)
        self.path = target

    def finish(self) -> None:
        self._complete = True

    def close(self) -> None:
        try:
            if not self._file.closed:
                self._file.close()
                self.path = settle(self.path, self.final_path, self._complete)
        finally:
            self.source.close()
