"""Joining a session: the receiver's accept loop drops whatever is not its sender.

Before a byte of it is trusted or anything is reserved for it, a new
connection must finish its opening within ``transport.handshake_timeout``::

    control connection:  [TLS handshake]  "MFDC"  [pre-shared-key exchange]  Hello
    data connection:     [TLS handshake]  "MFDS"  session token (16 bytes, from Ready)
                         then QEMU's init packet and packets, unchanged

A connection that closes (a port scanner's connect-and-close), stays
silent, fails TLS or the key exchange, or opens with anything else is
dropped and counted, and the receiver goes on waiting for its sender until
``accept_timeout`` (control) or ``connect_timeout`` (data channels).  The
token ties data connections to the control connection's session: only the
sender that was told it in ``Ready`` can present it.  It is ours, on the
engine-to-engine path only.
"""

from __future__ import annotations

import hmac
import socket
import time
from dataclasses import dataclass

from engine import errors
from engine.net import control
from engine.net.auth import SessionAuth
from engine.net.control import ControlChannel
from engine.net.transport import Address, Listener, connect
from engine.peer_text import printable

DATA_MAGIC = b"MFDS"
TOKEN_BYTES = 16


@dataclass
class Dropped:
    """Connections the receiver dropped before they joined, and the last one's reason."""

    count: int = 0
    last: str = ""

    def add(self, peer: str, exc: BaseException) -> None:
        self.count += 1
        self.last = printable(f"{peer}: {type(exc).__name__}: {exc}", 200)

    def note(self) -> str:
        return f"; dropped {self.count} other connection(s), last {self.last}" if self.count else ""


class SessionGate:
    """The receiver's accept loops: the sender's control connection, then its data channels."""

    def __init__(self, listener: Listener, auth: SessionAuth, t) -> None:
        self.listener = listener
        self.auth = auth
        self.t = t
        self.dropped = Dropped()

    def sender(self) -> tuple[ControlChannel, control.Hello]:
        """The first connection that opens as a sender and says Hello."""
        ends = time.monotonic() + self.t.accept_timeout
        while True:
            sock, peer = self._accept(ends, "sender", None)
            try:
                sock = self.auth.server_socket(sock, self.t.handshake_timeout)
                channel = ControlChannel(sock, peer=peer, role="receiver")
                channel.expect_magic(self.t.handshake_timeout)
                self.auth.check_sender(channel, self.t.handshake_timeout)
                hello = channel.expect(control.Hello, self.t.handshake_timeout)
            except (errors.EngineError, OSError) as exc:
                self.dropped.add(peer, exc)
                sock.close()
                continue
            sock.settimeout(self.t.stall_timeout)
            return channel, hello

    def channels(self, count: int, token: bytes) -> list[tuple[socket.socket, str]]:
        """``count`` data connections that present ``token``; others are dropped."""
        ends = time.monotonic() + self.t.connect_timeout
        joined: list[tuple[socket.socket, str]] = []
        try:
            while len(joined) < count:
                sock, peer = self._accept(ends, f"data channel ({len(joined)} of {count} "
                                                "connected)", len(joined))
                try:
                    sock = self.auth.server_socket(sock, self.t.handshake_timeout)
                    _expect_token(sock, token, self.t.handshake_timeout, peer)
                except (errors.EngineError, OSError) as exc:
                    self.dropped.add(peer, exc)
                    sock.close()
                    continue
                sock.settimeout(self.t.stall_timeout)
                joined.append((sock, peer))
        except BaseException:
            for sock, _ in joined:
                sock.close()
            raise
        return joined

    def _accept(self, ends: float, what: str, channel: int | None) -> tuple[socket.socket, str]:
        try:
            return self.listener.accept(timeout=max(ends - time.monotonic(), 0.001),
                                        stall_timeout=self.t.handshake_timeout, what=what,
                                        channel=channel)
        except errors.ConnectFailed as exc:
            raise errors.ConnectFailed(f"{exc}{self.dropped.note()}") from None


def _expect_token(sock: socket.socket, token: bytes, timeout: float, peer: str) -> None:
    want = DATA_MAGIC + token
    got = bytearray()
    ends = time.monotonic() + timeout
    while len(got) < len(want):
        left = ends - time.monotonic()
        if left <= 0:
            raise errors.PeerStalled("no session token in time", peer=peer)
        sock.settimeout(left)
        try:
            chunk = sock.recv(len(want) - len(got))
        except (TimeoutError, socket.timeout):
            raise errors.PeerStalled("no session token in time", peer=peer) from None
        if not chunk:
            raise errors.PeerClosed("closed before its session token", peer=peer)
        got += chunk
    if not hmac.compare_digest(bytes(got), want):
        raise errors.AuthenticationFailed("not this session's token", peer=peer)


def open_data_channel(address: Address, auth: SessionAuth, token: bytes, t, channel: int
                      ) -> socket.socket:
    """The sending end of one data connection: connected, authenticated, token presented."""
    sock = connect(address, timeout=t.connect_timeout, stall_timeout=t.stall_timeout,
                   channel=channel)
    sock = auth.client_socket(sock, address.host, t.handshake_timeout)
    try:
        sock.sendall(DATA_MAGIC + token)
    except OSError as exc:
        sock.close()
        raise errors.PeerClosed(f"cannot send the session token: {exc.strerror or exc}",
                                channel=channel, peer=str(address)) from None
    return sock
