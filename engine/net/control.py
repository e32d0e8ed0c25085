"""The control connection of a TCP migration: ours, not QEMU's.

QEMU's main migration channel carries device state and the RAM section
markers; we need only the part that frames the multifd channels, so the
control connection carries a few msgpack messages instead::

    sender                                   receiver
    "MFDC" Hello(uuid, page size, method,  ─►  checks it against its config,
           channels, peer QEMU, RAM blocks)    creates the destination blocks
                                          ◄─  Ready(token) | Refuse(reason)
    (data channels connect: "MFDS" token, init packet, then packets)
    Round(i, pages)                       ─►  channels read up to their SYNC
    Flush(i)                              ─►  barrier: every channel synced
                                          ◄─  Synced(i, packets, seconds)
    ...
    End(sha256 per block)                 ─►  compares with its own
                                          ◄─  Result(ok, sha256 per block)
    Error(kind, message): either side, before it gives up.

Frames are a 4-byte big-endian length and a msgpack array whose first item
is the kind.  The connection opens with the 4 bytes ``MFDC`` so it cannot be
mistaken for a data channel (those open with ``MFDS`` and the session's
token, ``engine.net.session``), then the pre-shared-key exchange when one
is configured (``engine.net.auth``).  Frames
from the peer are untrusted: a bad one is a ``ControlError``.  Page bytes
never travel here.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import astuple, dataclass, field
from typing import Any, ClassVar, Union

import msgpack

from engine import errors, signals
from engine.peer_text import printable

MAGIC = b"MFDC"
VERSION = 2     # 2: Ready carries the session token that data connections present
MAX_FRAME = 1 << 16
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Hello:
    kind: ClassVar[int] = 0
    version: int
    uuid: bytes
    page_size: int
    method: str
    channels: int
    qemu_version: str
    blocks: list[tuple[str, int]]          # (name, bytes)


@dataclass(frozen=True)
class Ready:
    kind: ClassVar[int] = 1
    token: bytes                            # data connections open with it (engine.net.session)


@dataclass(frozen=True)
class Refuse:
    kind: ClassVar[int] = 2
    reason: str


@dataclass(frozen=True)
class Round:
    kind: ClassVar[int] = 3
    index: int
    pages: int


@dataclass(frozen=True)
class Flush:
    kind: ClassVar[int] = 4
    index: int


@dataclass(frozen=True)
class Synced:
    kind: ClassVar[int] = 5
    index: int
    packets: int
    seconds: float


@dataclass(frozen=True)
class End:
    kind: ClassVar[int] = 6
    digests: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    kind: ClassVar[int] = 7
    ok: bool
    digests: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    kind: ClassVar[int] = 8
    error: str                              # the error class name
    message: str


Message = Union[Hello, Ready, Refuse, Round, Flush, Synced, End, Result, Error]
_TYPES: dict[int, type] = {cls.kind: cls for cls in (Hello, Ready, Refuse, Round, Flush, Synced,
                                                      End, Result, Error)}
# field types of each message, checked on receipt: the peer is untrusted
_FIELD_TYPES: dict[type, tuple[type | tuple[type, ...], ...]] = {
    Hello: (int, bytes, int, str, int, str, list), Ready: (bytes,), Refuse: (str,),
    Round: (int, int), Flush: (int,), Synced: (int, int, (int, float)), End: (dict,),
    Result: (bool, dict), Error: (str, str),
}


def pack(message: Message) -> bytes:
    body = msgpack.packb([message.kind, *astuple(message)], use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def unpack(body: bytes) -> Message:
    """One frame's message; ControlError for anything that is not exactly one of ours."""
    try:
        item = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several kinds on bad input
        raise errors.ControlError(f"undecodable control frame: {type(exc).__name__}",
                                  field="frame") from None
    if not isinstance(item, list) or not item or not _is_int(item[0]) or item[0] not in _TYPES:
        kind = item[0] if isinstance(item, list) and item else item
        raise errors.ControlError("unknown control message", field="kind", got=repr(kind)[:40])
    cls, values = _TYPES[item[0]], item[1:]
    types = _FIELD_TYPES[cls]
    if len(values) != len(types) or not all(_is_a(v, t) for v, t in zip(values, types)):
        raise errors.ControlError(f"malformed {cls.__name__} message", field=cls.__name__,
                                  got=repr(values)[:80])
    if cls is Hello:
        values[-1] = _blocks(values[-1])
    if cls in (End, Result) and not _is_digests(values[-1]):
        raise errors.ControlError(f"malformed digests in {cls.__name__}", field="digests",
                                  got=repr(values[-1])[:80])
    return cls(*values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_a(value: Any, types: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not an int (msgpack keeps them apart)."""
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in wanted
    return isinstance(value, wanted)


def _is_digests(raw: Any) -> bool:
    return isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, bytes)
                                         for k, v in raw.items())


def _blocks(raw: list) -> list[tuple[str, int]]:
    if not all(isinstance(b, list) and len(b) == 2 and isinstance(b[0], str)
               and _is_int(b[1]) for b in raw):
        raise errors.ControlError("malformed RAM block list", field="blocks", got=repr(raw)[:80])
    return [(name, size) for name, size in raw]


INTERRUPTED = "Interrupted"     # Error.error of an end stopped by a signal; the message names its role


def peer_failed(message: Error, peer: str) -> errors.PeerFailed:
    """The peer's Error as our exception: an interrupted peer is said in words,
    anything else escaped and bounded (it is the peer's text)."""
    if message.error == INTERRUPTED:
        role, _, how = message.message.partition(":")
        who = role if role in ("sender", "receiver") else "peer"
        how = printable(how.strip(), 40) if how else "Ctrl-C"
        return errors.PeerFailed(f"the {who} was interrupted ({how})", peer=peer)
    return errors.PeerFailed(f"{printable(message.error, 60)}: {printable(message.message)}",
                             peer=peer)


class ControlChannel:
    """One end of the control connection: send and receive whole messages.

    ``role`` ("sender" or "receiver") is this end's, told to the peer when
    a Ctrl-C stops it.
    """

    def __init__(self, sock: socket.socket, *, peer: str = "", role: str = "peer") -> None:
        self.sock = sock
        self.peer = peer
        self.role = role

    # ---- opening ------------------------------------------------------

    def send_magic(self) -> None:
        self._send(MAGIC)

    def expect_magic(self, timeout: float) -> None:
        got = self._read(len(MAGIC), timeout, "the connection's first bytes")
        if got != MAGIC:
            what = ("a multifd data channel (its init packet)" if got == b"\x11\x22\x33\x44"
                    else "not a control connection")
            raise errors.ControlError(f"first connection is {what}", field="magic",
                                      got=got.hex(), expected=MAGIC.hex())

    def send_raw(self, data: bytes) -> None:
        """Bytes outside any frame (the pre-shared-key exchange)."""
        self._send(data)

    def read_raw(self, size: int, timeout: float, what: str) -> bytes:
        return self._read(size, timeout, what)

    # ---- messages -----------------------------------------------------

    def send(self, message: Message) -> None:
        self._send(pack(message))

    def receive(self, timeout: float) -> Message:
        (length,) = _LENGTH.unpack(self._read(_LENGTH.size, timeout, "a control frame"))
        if length > MAX_FRAME:
            raise errors.ControlError("control frame too large", field="length",
                                      got=length, expected=f"<= {MAX_FRAME}")
        return unpack(self._read(length, timeout, "a control frame"))

    def expect(self, cls: type, timeout: float) -> Any:
        """The next message, which must be a ``cls``; the peer's Error becomes PeerFailed."""
        message = self.receive(timeout)
        if isinstance(message, Error):
            raise peer_failed(message, self.peer)
        if not isinstance(message, cls):
            raise errors.ControlError(f"expected {cls.__name__}", field="kind",
                                      got=type(message).__name__, expected=cls.__name__)
        return message

    def peer_error(self, timeout: float) -> Error | None:
        """The peer's Error message if one arrives within ``timeout``, else None."""
        try:
            for _ in range(16):    # a round's worth of messages may come first
                message = self.receive(timeout)
                if isinstance(message, Error):
                    return message
        except errors.EngineError:
            pass
        return None

    def report_error(self, exc: BaseException) -> None:
        """Tell the peer why we give up (best effort: it may be gone)."""
        try:
            self.sock.settimeout(1.0)
            if isinstance(exc, KeyboardInterrupt):
                # Ctrl-C says the role alone; SIGTERM/SIGHUP add "stopped by SIG..."
                why = f"{self.role}: {exc}" if isinstance(exc, signals.Stopped) else self.role
                self.send(Error(INTERRUPTED, why))
            else:
                self.send(Error(type(exc).__name__, str(exc)[:2000]))
        except (OSError, errors.EngineError):
            pass    # the peer is gone: nothing to tell

    def close(self) -> None:
        self.sock.close()

    # ---- bytes --------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (TimeoutError, socket.timeout):
            raise errors.PeerStalled("the peer took no control bytes", peer=self.peer) from None
        except OSError as exc:
            raise errors.PeerClosed(f"cannot send: {exc.strerror or exc}", peer=self.peer) from None

    def _read(self, size: int, timeout: float, what: str) -> bytes:
        """``size`` bytes within ``timeout`` in all: a peer that drips is cut off too."""
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        ends = time.monotonic() + timeout
        while got < size:
            left = ends - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                n = self.sock.recv_into(view[got:])
            except (TimeoutError, socket.timeout):
                raise errors.PeerStalled(f"no {what} within {timeout:g} s"
                                         + (f" ({got} of {size} bytes came)" if got else ""),
                                         peer=self.peer) from None
            except OSError as exc:
                raise errors.PeerClosed(f"reading {what}: {exc.strerror or exc}",
                                        peer=self.peer) from None
            if n == 0:
                raise errors.PeerClosed(f"the peer closed the connection (waiting for {what})",
                                        peer=self.peer)
            got += n
        return bytes(buf)
