"""Method ``none``: the payload is the normal pages, raw, in offset order
(spec §4.1, next_packet_size = normal_pages * page_size).

Its payload is the pages themselves (``payload_is_pages``), so by default
no hook here copies anything: the coordinator writes the pages from the
RAM block and the receiver reads into the destination pages, as QEMU
writes guest RAM to the socket.  ``send_prepare`` and ``recv`` are the
copying path ``migration.copy_pages = true`` keeps (and the one a
source without vectored reads, or a relay's staging, still takes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import errors, wire
from engine.methods import Method, register
from engine.methods.payload_errors import wire_error


class NoComp(Method):
    name = "none"
    flag = wire.FLAG_NOCOMP
    resumable = True            # nothing carries from packet to packet
    payload_is_pages = True
    cpu_path = ("direct", "no compression: pages go between RAM and the channel "
                "without a copy (migration.copy_pages = false)")

    def slot_size(self, page_size: int) -> int:
        return wire.page_count_for(page_size) * page_size

    def max_payload(self, normal_pages: int, page_size: int) -> int:
        return normal_pages * page_size

    def send_setup(self, params: Any) -> Any:
        return params

    def send_prepare(self, state: Any, block: Any, pages: np.ndarray, slot: memoryview) -> tuple[int, dict[str, int]]:
        from workers import codec  # the native build: only where a hook runs it

        size = codec.none_send_packet(block.buf, state.page_size, pages, slot)
        return size, {"normal_pages": len(pages), "raw_pages": len(pages)}

    def send_cleanup(self, state: Any) -> None:
        pass

    def recv_setup(self, params: Any) -> Any:
        return params

    def recv_check(self, state: Any, header: wire.PacketHeader) -> None:
        expected = header.normal_pages * state.page_size
        if header.next_packet_size != expected:
            raise errors.BadPayloadSize(
                "none payload must be normal_pages * page_size",
                channel=state.channel, packet_num=header.packet_num,
                field="next_packet_size", got=header.next_packet_size, expected=expected,
            )

    def recv(self, state: Any, header: wire.PacketHeader, payload: memoryview, block: Any) -> None:
        from workers import codec

        try:
            codec.none_recv_packet(payload, header.normal, block.buf, state.page_size)
        except codec.PayloadRejected as exc:
            raise wire_error(exc, state.channel, header, state.page_size) from None

    def recv_cleanup(self, state: Any) -> None:
        pass


register(NoComp())
