"""Damaged streams from a real run: typed errors, nothing written out of place.

Each case takes a valid one-channel qpl stream made by the engine, damages
one thing, and checks that the receiver raises the right WireError naming
channel, packet and field, and that no page outside the damaged packet's
own pages changed in the destination block.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engine import errors, wire
from engine.channels import BytesSource, MemoryChannel
from engine.config import Config
from engine import Engine
from engine.ram import RamBlock
from engine.receiver import ChannelReader
from engine.workloads import fill_guest_memory

PAGE = 4096
HDR = wire.header_size(PAGE)

pytestmark = pytest.mark.usefixtures("no_shm_leak")


@pytest.fixture(scope="module")
def stream():
    """(bytes of channel 0, source block bytes) for a 256-page qpl round."""
    with RamBlock.create("ram0", 256 * PAGE, PAGE) as src:
        fill_guest_memory(src, seed=11)
        channel = MemoryChannel(0)
        with Engine(Config.from_dict({"migration": {"channels": 1}}), blocks=[src],
                    sinks=[channel]) as engine:
            engine.send(np.arange(256, dtype=np.uint64))
        return channel.getvalue(), bytes(src.buf)


def first_packet(data: bytes):
    header = wire.HeaderDecoder(channel=0, page_size=PAGE, method_flag=wire.FLAG_QPL,
                                compat=wire.Compat.DEFAULT, blocks=None).decode(data[64:64 + HDR])
    return header


def receive(data: bytes):
    """Read the damaged stream into a guarded block; returns (error, block bytes)."""
    with RamBlock.create("ram0", 256 * PAGE, PAGE) as dst:
        dst.array[:] = 0x5A                       # a pattern no page of ours has
        reader = ChannelReader(BytesSource(data), method="qpl", page_size=PAGE,
                               blocks={"ram0": dst})
        try:
            reader.read_init(channels=1)
            reader.read_to_end()
            error = None
        except errors.WireError as exc:
            error = exc
        finally:
            reader.close()
        return error, bytes(dst.buf)


def untouched_outside(block: bytes, allowed_pages) -> bool:
    view = np.frombuffer(block, np.uint8).reshape(-1, PAGE)
    mask = np.ones(len(view), bool)
    mask[np.asarray(list(allowed_pages), dtype=np.int64)] = False
    return bool((view[mask] == 0x5A).all())


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_clean_stream_decodes(stream):
    data, source = stream
    error, block = receive(data)
    assert error is None
    assert block == source


def test_length_table_sum_mismatch(stream):
    data, _ = stream
    h = first_packet(data)
    # the first page's length grows by one: 4n + sum no longer matches
    length = struct.unpack_from(">I", data, 64 + HDR)[0]
    bad = patch(data, 64 + HDR, ">I", length + 1 if length < PAGE else length - 1)
    error, block = receive(bad)
    assert isinstance(error, errors.BadPayloadSize)
    assert (error.channel, error.packet_num, error.field) == (0, h.packet_num, "next_packet_size")
    # zero pages are cleared before the payload is read (as QEMU); no normal
    # page is written because the whole length table is checked first
    assert untouched_outside(block, h.zero)


def test_corrupt_page_stream(stream):
    data, _ = stream
    h = first_packet(data)
    lengths = struct.unpack_from(f">{h.normal_pages}I", data, 64 + HDR)
    page = next(i for i, n in enumerate(lengths) if 8 < n < PAGE)
    start = 64 + HDR + 4 * h.normal_pages + sum(lengths[:page])
    bad = bytearray(data)
    bad[start:start + lengths[page]] = b"\xff" * lengths[page]   # invalid block type 3
    error, block = receive(bytes(bad))
    assert isinstance(error, errors.DecompressError)
    assert error.field == f"page[{page}]" and error.packet_num == h.packet_num
    assert untouched_outside(block, h.pages)


def test_truncated_payload(stream):
    data, _ = stream
    h = first_packet(data)
    error, block = receive(data[:64 + HDR + h.next_packet_size - 1])
    assert isinstance(error, errors.TruncatedStream)
    assert (error.field, error.packet_num) == ("payload", h.packet_num)
    assert untouched_outside(block, h.zero)


def test_truncated_header(stream):
    data, _ = stream
    error, _ = receive(data[:64 + 100])
    assert isinstance(error, errors.TruncatedStream) and error.field == "header"


def test_offset_outside_block(stream):
    data, _ = stream
    bad = patch(data, 64 + 320, ">Q", 256 * PAGE)
    error, block = receive(bad)
    assert isinstance(error, errors.BadOffset) and error.field == "offset[0]"
    assert untouched_outside(block, [])


def test_oversized_next_packet_size_is_refused_before_reading(stream):
    data, _ = stream
    bad = patch(data, 64 + 20, ">I", 0xFFFFFFF0)
    error, _ = receive(bad)
    assert isinstance(error, errors.BadPayloadSize) and error.field == "next_packet_size"


def test_wrong_method_bits(stream):
    data, _ = stream
    bad = patch(data, 64 + 8, ">I", wire.FLAG_ZLIB)
    error, _ = receive(bad)
    assert isinstance(error, errors.BadFlags) and error.field == "flags"


def test_init_packet_for_another_channel_count(stream):
    data, _ = stream
    bad = patch(data, 24, ">B", 1)                 # id 1 on a one-channel receiver
    error, _ = receive(bad)
    assert isinstance(error, errors.BadInitPacket) and error.field == "id"


def test_barrier_broken_by_early_end(stream):
    data, _ = stream
    # cut the stream right before its SYNC packet
    cut = len(data) - HDR
    with RamBlock.create("ram0", 256 * PAGE, PAGE) as dst:
        reader = ChannelReader(BytesSource(data[:cut]), method="qpl", page_size=PAGE,
                               blocks={"ram0": dst})
        reader.read_init()
        with pytest.raises(errors.BarrierError):
            reader.read_until_sync()
        reader.close()
