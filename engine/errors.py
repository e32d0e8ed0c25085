"""The engine's error families.

Every error the engine raises on purpose is an ``EngineError``.  Errors about
bytes that arrived from a channel are ``WireError``s and carry *where* they
happened (channel, packet number, field) and *what* was wrong (got, expected)
as attributes, not only in the message, in the spirit of QEMU's
"received X, expected Y" messages.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """A config file, key or value is wrong; ``key`` names it (``section.key``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}" if key else f"config: {message}")
        self.key = key


class CodecError(EngineError):
    """The native codec failed in a way that is not about untrusted input.

    ``status`` is the native status code (``MFD_*``) when there is one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NativeBuildError(EngineError, ImportError):
    """The native extension ``workers._native`` cannot serve this checkout.

    It is not built, built for another Python or another version of the
    package, or its C constants disagree with ``workers.settings``.  An
    ``ImportError`` too: it is raised while ``workers.codec`` is imported.
    """


class WireError(EngineError):
    """Untrusted channel bytes were malformed.

    ``channel`` is the channel id (or None before the init packet names it),
    ``packet_num`` the packet's number when the header got that far (else
    None), ``field`` the field that was wrong, ``got`` and ``expected`` the
    values involved.
    """

    def __init__(
        self,
        message: str,
        *,
        channel: int | None = None,
        packet_num: int | None = None,
        field: str | None = None,
        got: Any = None,
        expected: Any = None,
    ) -> None:
        self.reason = message
        self.channel = channel
        self.packet_num = packet_num
        self.field = field
        self.got = got
        self.expected = expected
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = []
        if self.channel is not None:
            where.append(f"channel {self.channel}")
        if self.packet_num is not None:
            where.append(f"packet {self.packet_num}")
        if self.field is not None:
            where.append(f"field {self.field}")
        text = self.reason
        if self.got is not None or self.expected is not None:
            text += f" (got {self.got!r}, expected {self.expected!r})"
        return f"{', '.join(where)}: {text}" if where else text


class TruncatedStream(WireError):
    """The stream ended inside an init packet, a header or a payload."""


class BadInitPacket(WireError):
    """Init packet: bad magic, version, uuid, channel id, or id bound twice."""


class BadMagic(WireError):
    """A packet header's magic is not 0x11223344."""


class BadVersion(WireError):
    """A packet header's version is not 1."""


class BadFlags(WireError):
    """Unknown flag bits, wrong compression bits, SYNC with DEVICE_STATE."""


class BadPageCount(WireError):
    """pages_alloc, normal_pages or zero_pages out of range."""


class BadRamBlock(WireError):
    """ramblock name not NUL-terminated, or names no known RAM block."""


class BadOffset(WireError):
    """A page offset is unaligned, outside its block, or repeated in a packet."""


class BadPayloadSize(WireError):
    """next_packet_size or a per-page length disagrees with the packet."""


class DecompressError(WireError):
    """A page failed to decompress, or did not give exactly one page."""


class BarrierError(WireError):
    """A channel ended or stalled before the round's SYNC barrier completed."""


class ChannelStalled(EngineError):
    """A channel made no progress for its stall timeout (``transport.stall_timeout``).

    The peer stopped reading (``side`` = "write": the sender could not hand
    over bytes) or stopped sending (``side`` = "read").  ``channel`` names
    the channel, ``seconds`` the timeout that ran out.
    """

    def __init__(self, message: str, *, channel: int, side: str, seconds: float) -> None:
        super().__init__(f"channel {channel}: {message}")
        self.channel = channel
        self.side = side
        self.seconds = seconds


class WorkerError(EngineError):
    """A worker process reported a failure while handling a packet.

    ``worker_id`` names the worker (= its channel), ``packet_num`` the packet
    it was handling (None during setup), ``kind`` a short failure kind.
    The worker's traceback text, when there is one, is the ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: int,
        packet_num: int | None = None,
        kind: str = "error",
    ) -> None:
        where = f"worker {worker_id}"
        if packet_num is not None:
            where += f", packet {packet_num}"
        super().__init__(f"{where}: {message}")
        self.worker_id = worker_id
        self.packet_num = packet_num
        self.kind = kind


class BrokenWorker(WorkerError):
    """A worker process died without reporting why (killed, crashed)."""


class RemoteTraceback(Exception):
    """Holds a worker's traceback text; set as ``__cause__`` of a WorkerError."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class VerifyError(EngineError):
    """Destination RAM differs from the source after a round."""

    def __init__(self, message: str, *, mismatched_offsets: list[int]) -> None:
        super().__init__(message)
        self.mismatched_offsets = mismatched_offsets


class AcceleratorError(EngineError):
    """The accelerator the config asks for is not usable here.

    libqpl is missing or too old, no IAA work queue is usable, or the
    hardware probe failed; ``status`` is the QPL (or device) status when
    there is one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(EngineError):
    """A connection to the peer failed (TCP migration).

    ``channel`` names the data channel, None for the control connection;
    ``peer`` is the other end's address when known.  A stalled data channel
    is a ``ChannelStalled`` instead.
    """

    def __init__(self, message: str, *, channel: int | None = None, peer: str | None = None) -> None:
        where = "control connection" if channel is None else f"channel {channel}"
        super().__init__(f"{where}{f' ({peer})' if peer else ''}: {message}")
        self.channel = channel
        self.peer = peer


class ConnectFailed(TransportError):
    """No connection within ``transport.connect_timeout`` / ``accept_timeout``."""


class PeerClosed(TransportError):
    """The peer closed or reset a connection the protocol still needed."""


class PeerStalled(TransportError):
    """The control connection made no progress for ``transport.stall_timeout``."""


class PeerFailed(TransportError):
    """The peer reported an error of its own; its text is in the message."""


class SessionRefused(TransportError):
    """The two ends disagree on the session (method, page size, channels, ...)."""


class ControlError(WireError):
    """The control connection carried bytes that are not our protocol."""


class ReportError(EngineError):
    """A report file is not a multifd-engine report this engine can read.

    Not JSON, not one of ours, a schema version or kind this engine does
    not know, or a field missing or of the wrong type; ``path`` names the
    file and ``field`` the field at fault (None when the file as a whole
    is wrong).
    """

    def __init__(self, message: str, *, path: str, field: str | None = None) -> None:
        where = f"{path}: field {field!r}" if field else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.field = field


class RamBlockError(EngineError):
    """A RAM block's parameters are unusable.

    ``part`` says which: ``"name"``, ``"size"`` or ``"page_size"``.  The
    layer that took the value from a user (the config, a command line)
    names where it came from.
    """

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


class ImageError(EngineError):
    """A guest memory image cannot be loaded; ``path`` names the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
