"""Errors of the real-QEMU path, in the engine's families (so the CLI maps them).

A main channel that is not what QEMU writes is bad input (a ``WireError``);
a QEMU peer that refuses, stops reading or fails is a connection failure
(a ``TransportError``, exit 5) whose message names the likely cause.
"""

from __future__ import annotations

from engine.errors import TransportError, WireError


class BadMainChannel(WireError):
    """The main migration stream is malformed or holds a section we cannot parse."""


class QmpError(TransportError):
    """QMP failed: no greeting, no answer in time, or an error returned."""


class DestinationFailed(TransportError):
    """A real QEMU destination refused the migration or stopped taking bytes."""
