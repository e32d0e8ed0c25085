"""The hostile-client fault: strangers in a TCP migration's accept window.

Over ``stress.transport = "tcp"`` a migration's data channels join through
the receiver's ``SessionGate``, as ``recv``'s do, and a drawn migration
first sees a stranger connect to the same port, ahead of the real channels:

* ``scan``: a port scanner's connect-and-close;
* ``garbage``: an HTTP request;
* ``token``: the data-channel opening with a wrong token of its own and a
  valid init packet behind it (a would-be hijack);
* ``frame``: the 7-byte control frame that once crashed ``recv``;
* ``short``: four bytes of the opening, then close.

The receiver must drop it (counted) and the migration must go on unharmed:
the stress summary counts it ``survived`` only then.
"""

from __future__ import annotations

import secrets
import socket

from engine import wire
from engine.net.session import DATA_MAGIC, TOKEN_BYTES
from engine.net.transport import Address

HOSTILE_KINDS = ("scan", "garbage", "token", "frame", "short")

_OPENINGS = {
    "scan": b"",
    "garbage": b"GET / HTTP/1.1\r\nHost: mfd\r\n\r\n",
    "frame": b"MFDC\x00\x00\x00\x03\x91\x91\x00",
    "short": DATA_MAGIC,
}


def attack(address: Address, kind: str) -> socket.socket:
    """Connect to ``address`` and send ``kind``'s bytes; the caller closes the socket."""
    sock = socket.create_connection((address.host, address.port), timeout=5)
    try:
        if kind == "token":
            sock.sendall(DATA_MAGIC + secrets.token_bytes(TOKEN_BYTES)
                         + wire.InitPacket(bytes(16), 0).encode())
        else:
            sock.sendall(_OPENINGS[kind])
        if kind in ("scan", "short"):
            sock.shutdown(socket.SHUT_WR)      # gone before the receiver reads a byte
    except OSError:
        pass                                   # the receiver may drop it first
    return sock
