"""Errors of the real-QEMU path, in the engine's families (so the CLI maps them).

A main channel that is not what QEMU writes is bad input (a ``WireError``);
a QEMU peer that refuses, stops reading or fails is a connection failure
(a ``TransportError``, exit 5) whose message names the likely cause.
"""

from __future__ import annotations

from engine.errors import EngineError, TransportError, WireError


class BadMainChannel(WireError):
    """The main migration stream is malformed or holds a section we cannot parse."""


class _QemuPeerError(TransportError):
    """A TransportError about a QEMU process rather than one of our connections."""

    what = "QEMU"

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        EngineError.__init__(self, f"{self.what}{f' ({peer})' if peer else ''}: {message}")
        self.channel = None
        self.peer = peer


class QmpError(_QemuPeerError):
    """QMP failed: no greeting, no answer in time, or an error returned."""

    what = "QMP"


class DestinationFailed(_QemuPeerError):
    """A real QEMU destination refused the migration or stopped taking bytes."""

    what = "destination QEMU"


class SourceFailed(_QemuPeerError):
    """A real QEMU source sent a migration this receiver could not complete."""

    what = "source QEMU"
