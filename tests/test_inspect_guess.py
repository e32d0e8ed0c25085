"""inspect tells a QEMU stream's generation from evidence anywhere in it.

A 7.2 channel may open with page-less SYNCs that look like 10.0's; the
proof (a stale next_packet_size, a SYNC riding on a page packet) can come
late, or only in another channel.  No --qemu-version hint is needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import wire
from engine.inspection import guess_stream, inspect_channels

pytestmark = pytest.mark.usefixtures("no_shm_leak")

PAGE = 4096


def _header(**fields) -> bytes:
    return wire.encode_header(page_size=PAGE, ramblock="mem", **fields)


def test_evidence_after_many_packets_proves_7_2(tmp_path):
    # 100 packets of one page each, then a page-less packet repeating the
    # previous packet's size as 7.2 does: a 10.0 reading would refuse it.
    out = bytearray(wire.InitPacket(bytes(16), 0).encode())
    page = np.full(PAGE, 0x5A, dtype=np.uint8).tobytes()
    for num in range(100):
        out += _header(flags=0, packet_num=num, normal_pages=1, zero_pages=0,
                       next_packet_size=PAGE, pages=[num]) + page
    out += _header(flags=0, packet_num=100, normal_pages=0, zero_pages=0,
                   next_packet_size=PAGE, pages=[])
    path = tmp_path / "channel-0.mfd"
    path.write_bytes(out)

    assert guess_stream([path], PAGE).qemu_version == "7.2"
    result = inspect_channels([path])
    assert result.qemu_version == "7.2"
    assert result.channels[0].normal_pages == 100


def test_a_channel_without_evidence_first_does_not_decide(shared_data, tmp_path):
    # A real 7.2 zstd migration with a third channel that only carried its
    # opening page-less SYNC, listed first.
    folder = shared_data / "wl3" / "qemu-7.2-zstd"
    quiet = tmp_path / "channel-2.mfd"
    quiet.write_bytes(wire.InitPacket(bytes(16), 2).encode()
                      + wire.encode_sync(page_size=PAGE, packet_num=2, compat=wire.Compat.parse("7.2")))
    files = [quiet, *sorted(folder.glob("channel-*.mfd.zst"))]

    result = inspect_channels(files, image=shared_data / "wl3" / "image.ram.zst")
    assert result.qemu_version == "7.2"
    assert result.method == "zstd"
    assert result.mismatched_pages == 0 and result.pages_checked > 8000
    assert [c.channel for c in result.channels] == [2, 0, 1]


def test_zero_pages_anywhere_prove_9_0_or_later(shared_data):
    files = sorted((shared_data / "wl3" / "qemu-10.0-zstd").glob("channel-*.mfd.zst"))
    assert guess_stream(files, PAGE).qemu_version == "10.0"
