"""QEMU 10.0's device-state packets (flag 0x40): a validating header decoder.

A device-state packet (spec §3.3) is a 276-byte header, then
``next_packet_size`` bytes of opaque device data.  The relay never looks
into the data; it checks the header as a QEMU receiver does and copies the
packet through.  The first 12 bytes (magic, version, flags) are the same
as a RAM packet's, so a reader tells the two apart by the flags.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine import errors, wire

PREFIX_SIZE = 12                  # magic, version, flags: shared with RAM headers
HEADER_SIZE = 276
IDSTR_SIZE = 256

_PREFIX = struct.Struct(">III")
_REST = struct.Struct(">256sII")  # idstr, instance_id, next_packet_size


@dataclass(frozen=True)
class DeviceStateHeader:
    flags: int
    idstr: str
    instance_id: int
    next_packet_size: int


def flags_of(prefix: bytes | bytearray | memoryview) -> int:
    """The flags word of a packet's first 12 bytes (not yet validated)."""
    return _PREFIX.unpack_from(prefix, 0)[2]


def is_device_state(prefix: bytes | bytearray | memoryview) -> bool:
    return bool(flags_of(prefix) & wire.FLAG_DEVICE_STATE)


def decode(header: bytes | bytearray | memoryview, *, channel: int,
           allowed: bool) -> DeviceStateHeader:
    """Validate a whole 276-byte device-state header.

    ``allowed`` is False where QEMU refuses such packets (a peer before
    10.0, or a compressing method); then any device-state packet is an error.
    """
    def fail(cls: type, field: str, message: str, got: object, expected: object) -> None:
        raise cls(message, channel=channel, field=field, got=got, expected=expected)

    if len(header) != HEADER_SIZE:
        fail(errors.TruncatedStream, "header", "device-state header truncated", len(header),
             HEADER_SIZE)
    magic, version, flags = _PREFIX.unpack_from(header, 0)
    if magic != wire.MULTIFD_MAGIC:
        fail(errors.BadMagic, "magic", "bad packet magic", hex(magic), hex(wire.MULTIFD_MAGIC))
    if version != wire.MULTIFD_VERSION:
        fail(errors.BadVersion, "version", "bad packet version", version, wire.MULTIFD_VERSION)
    if flags != wire.FLAG_DEVICE_STATE:
        fail(errors.BadFlags, "flags", "a device-state packet has flags 0x40 and nothing else",
             hex(flags), hex(wire.FLAG_DEVICE_STATE))
    if not allowed:
        fail(errors.BadFlags, "flags", "device-state packet where the configured QEMU and "
             "method cannot have one (10.0+ with method none only)", hex(flags), "no 0x40")
    raw_id, instance_id, size = _REST.unpack_from(header, PREFIX_SIZE)
    if raw_id[-1] != 0:
        fail(errors.BadRamBlock, "idstr", "device idstr not NUL-terminated", raw_id[:32],
             "NUL at byte 255")
    if size == 0:
        fail(errors.BadPayloadSize, "next_packet_size", "empty device-state packet", 0, "> 0")
    idstr = raw_id[: raw_id.index(0)].decode("utf-8", errors="replace")
    return DeviceStateHeader(flags, idstr, instance_id, size)
