"""``inspect`` tells QEMU generations apart from the whole stream, not its first packets.

A 7.2 channel may begin like a 10.0 one (a page-less SYNC, then page
packets); what proves 7.2, a page-less packet with a stale
``next_packet_size``, can come late and in another channel (issue 11).
"""

from __future__ import annotations

import numpy as np

from engine import wire
from engine.inspection import guess_stream, inspect_channels

PAGE = 4096


def packet(num: int, pages: list[int], *, flags: int = 0, stale: int = 0) -> bytes:
    """A method-none packet of ``pages`` (each page filled with its index), or page-less."""
    payload = b"".join(bytes([p % 251 + 1]) * PAGE for p in pages)
    header = wire.encode_header(page_size=PAGE, flags=flags, packet_num=num, ramblock="mem",
                                normal_pages=len(pages), zero_pages=0,
                                next_packet_size=len(payload) or stale,
                                pages=np.array(pages, dtype=np.uint64))
    return header + payload


def channel_file(path, channel: int, packets: list[bytes]) -> str:
    path.write_bytes(wire.InitPacket(bytes(16), channel).encode() + b"".join(packets))
    return str(path)


def test_late_evidence_in_another_channel_proves_7_2(tmp_path):
    sync = wire.FLAG_SYNC
    # channel 0: a setup SYNC, then 100 packets of one page: nothing tells
    first = channel_file(tmp_path / "channel-0.mfd", 0, [packet(0, [], flags=sync)]
                         + [packet(1 + i, [i]) for i in range(100)] + [packet(101, [], flags=sync)])
    # channel 1: the same start, and 7.2's SYNC after pages, with a stale size
    second = channel_file(tmp_path / "channel-1.mfd", 1, [packet(200, [], flags=sync)]
                          + [packet(201 + i, [100 + i]) for i in range(80)]
                          + [packet(300, [], flags=sync, stale=PAGE)])
    assert guess_stream(first, PAGE).qemu_version == "10.0"     # no evidence: either reading
    assert guess_stream([first, second], PAGE).qemu_version == "7.2"
    image = tmp_path / "image.raw"
    image.write_bytes(b"".join(bytes([p % 251 + 1]) * PAGE for p in range(180)))
    result = inspect_channels([first, second], page_size=PAGE, image=image)
    assert result.qemu_version == "7.2" and result.method == "none" and result.block == "mem"
    assert result.pages_checked == 180 and result.mismatched_pages == 0
