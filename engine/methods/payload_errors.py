"""Turn a native decoder's rejection into a WireError with its context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import errors, wire

if TYPE_CHECKING:
    from workers.codec import PayloadRejected

_SIZE_STATUSES = {"MFD_E_PAYLOAD_SHORT", "MFD_E_LEN_ZERO", "MFD_E_LEN_TOO_BIG", "MFD_E_LEN_SUM"}


def wire_error(exc: PayloadRejected, channel: int, header: wire.PacketHeader,
               page_size: int) -> errors.WireError:
    """The typed error for a payload the codec refused.

    Length-table problems are ``BadPayloadSize`` on ``len[i]`` (or
    ``next_packet_size`` when the table as a whole is wrong); stream
    problems are ``DecompressError`` on ``page[i]``, naming the page's
    offset in its block.
    """
    n = header.normal_pages
    on_page = exc.page < n
    if exc.name in _SIZE_STATUSES:
        cls: type[errors.WireError] = errors.BadPayloadSize
        field = f"len[{exc.page}]" if on_page else "next_packet_size"
    else:
        cls = errors.DecompressError
        field = f"page[{exc.page}]" if on_page else "payload"
    reason = exc.reason
    if on_page:
        offset = int(header.normal[exc.page]) * page_size
        reason += f" (page at offset {offset:#x} of {header.ramblock!r})"
    return cls(reason, channel=channel, packet_num=header.packet_num, field=field)
