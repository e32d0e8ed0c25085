"""Methods zlib and zstd: QEMU's bytes going out, hostile bytes coming in.

* Our channels decode with a plain QEMU-style receiver loop (one persistent
  decompressor per channel, written here with the Python libraries only).
* Re-encoding the pages of real QEMU 7.2 and 10.0 zlib channels with our
  sender gives QEMU's payloads back byte for byte; zstd decodes the same.
* Feeding a packet's pages one by one (QEMU) or in one call (us) gives the
  same bytes.
* The receiver bounds next_packet_size before reading, and turns a corrupt
  stream, a stream end, short output and leftover input into typed errors.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import zstandard

from engine import Engine, errors, methods, wire
from engine.channels import BytesSource, MemoryChannel
from engine.config import Config
from engine.methods import MethodParams
from engine.ram import RamBlock
from engine.receiver import ChannelReader
from engine.workloads import fill_guest_memory
from workers import codec

PAGE = 4096
HDR = wire.header_size(PAGE)
STREAM_METHODS = ["zlib", "zstd"]

pytestmark = pytest.mark.usefixtures("no_shm_leak")


# --------------------------------------------------------------- helpers

def reference_decompressor(method: str):
    """What a QEMU receiver keeps per channel, from the Python libraries."""
    if method == "zlib":
        return zlib.decompressobj(15)
    return zstandard.ZstdDecompressor().decompressobj()


def walk(data: bytes):
    """(header fields, offsets, payload) of every packet of one channel's bytes."""
    pos = wire.INIT_PACKET_SIZE
    while pos < len(data):
        flags, _alloc, normal, size, num, zero = struct.unpack_from(">IIIIQI", data, pos + 8)
        offsets = np.frombuffer(data, ">u8", normal + zero, pos + 320).astype(np.uint64)
        pos += HDR
        payload = data[pos:pos + size] if normal else b""
        pos += len(payload)
        yield flags, normal, num, offsets, payload


def engine_channel(method: str, src: RamBlock, rounds, qemu="10.0") -> bytes:
    channel = MemoryChannel(0)
    config = Config.from_dict({"migration": {"channels": 1, "method": method, "qemu_version": qemu}})
    with Engine(config, blocks=[src], sinks=[channel]) as engine:
        for pages in rounds:
            engine.send(pages)
    return channel.getvalue()


def stream_bytes(method: str, packets, *, ramblock="ram0") -> bytes:
    """A channel: init packet, then (pages, payload, next_packet_size) packets."""
    out = bytearray(wire.InitPacket(bytes(16), 0).encode())
    for num, (pages, payload, size) in enumerate(packets):
        out += wire.encode_header(page_size=PAGE, flags=methods.get(method).flag, packet_num=num,
                                  ramblock=ramblock, normal_pages=len(pages), zero_pages=0,
                                  next_packet_size=len(payload) if size is None else size,
                                  pages=np.asarray(pages, np.uint64))
        out += payload
    return bytes(out)


def receive(method: str, data: bytes, pages: int = 64):
    """Read a channel into a fresh block; returns (error or None, block bytes)."""
    with RamBlock.create("ram0", pages * PAGE, PAGE) as dst:
        reader = ChannelReader(BytesSource(data), method=method, page_size=PAGE,
                               blocks={"ram0": dst})
        try:
            reader.read_init(channels=1)
            reader.read_to_end()
            return None, bytes(dst.buf)
        except errors.WireError as exc:
            return exc, bytes(dst.buf)
        finally:
            reader.close()


def pages_of(seed: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    text = b"multifd packet of guest pages %d; " * 200
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(rng.bytes(PAGE))
        else:
            out.append((text % tuple(range(i, i + 200)))[:PAGE])
    return out


class _Block:
    def __init__(self, data) -> None:
        self.buf = memoryview(bytearray(data))


def our_payloads(method: str, packets_pages, level=None):
    """Payloads our send hook makes for consecutive packets on one channel."""
    m = methods.get(method)
    state = m.send_setup(MethodParams(0, PAGE, level=level))
    slot = memoryview(bytearray(m.slot_size(PAGE)))
    try:
        for pages in packets_pages:
            block = _Block(b"".join(pages))
            size, _ = m.send_prepare(state, block, np.arange(len(pages), dtype=np.uint64), slot)
            yield bytes(slot[:size])
    finally:
        m.send_cleanup(state)


# -------------------------------------------------- our bytes, QEMU's loop

@pytest.mark.parametrize("method", STREAM_METHODS)
def test_our_channel_decodes_with_a_qemu_style_loop(method):
    with RamBlock.create("ram0", 600 * PAGE, PAGE) as src:
        fill_guest_memory(src, seed=5)
        again = np.arange(0, 600, 7, dtype=np.uint64)
        data = engine_channel(method, src, [np.arange(600, dtype=np.uint64), again])
        source = np.frombuffer(src.buf, np.uint8).reshape(-1, PAGE)
        d = reference_decompressor(method)
        payloads, seen = [], 0
        for flags, normal, _num, offsets, payload in walk(data):
            if not normal:
                continue
            out = d.decompress(payload)
            assert len(out) == normal * PAGE       # every packet yields exactly its pages
            got = np.frombuffer(out, np.uint8).reshape(normal, PAGE)
            assert np.array_equal(got, source[(offsets[:normal] // PAGE).astype(np.int64)])
            assert flags & wire.METHOD_BITS == methods.get(method).flag
            payloads.append(payload)
            seen += normal
        assert seen > 400 and len(payloads) > 5
    if method == "zlib":
        assert payloads[0][:2] == b"\x78\x01"                  # level 1 header, once
        assert all(p[:2] != b"\x78\x01" for p in payloads[1:])
        assert all(p.endswith(b"\x00\x00\xff\xff") for p in payloads)   # sync flush, no trailer
    else:
        magic = b"\x28\xb5\x2f\xfd"
        assert payloads[0].startswith(magic)
        assert not any(p.startswith(magic) for p in payloads[1:])   # one frame per channel
        assert not d.eof                                             # never ended


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_our_receiver_round_trips_through_the_engine(method):
    with RamBlock.create("ram0", 300 * PAGE, PAGE) as src:
        fill_guest_memory(src, seed=9)
        data = engine_channel(method, src, [np.arange(300, dtype=np.uint64)], qemu="7.2")
        with RamBlock.create("ram0", 300 * PAGE, PAGE) as dst:
            reader = ChannelReader(BytesSource(data), method=method, page_size=PAGE,
                                   blocks={"ram0": dst}, compat=wire.Compat.parse("7.2"))
            try:
                reader.read_init(channels=1)
                reader.read_to_end()
            finally:
                reader.close()
            assert bytes(dst.buf) == bytes(src.buf)


# --------------------------------------------- byte for byte against QEMU

def capture_packets(path):
    """(pages, QEMU's payload) of each page-carrying packet of a real channel file."""
    with open(path, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    d = None
    for flags, normal, _num, _offsets, payload in walk(data):
        if not normal:
            continue
        method = {wire.FLAG_ZLIB: "zlib", wire.FLAG_ZSTD: "zstd"}[flags & wire.METHOD_BITS]
        d = d or reference_decompressor(method)
        out = d.decompress(payload)
        yield [out[i * PAGE:(i + 1) * PAGE] for i in range(normal)], payload


# zlib and libzstd of the Debian 12 builds that made the captures
CAPTURE_ZLIB = "1.2.13"
CAPTURE_ZSTD = (1, 5, 4)


@pytest.mark.parametrize("folder", ["qemu-7.2-zlib", "qemu-10.0-zlib"])
def test_zlib_re_encodes_real_qemu_channels_byte_for_byte(shared_data, folder):
    if codec.zlib_version() != CAPTURE_ZLIB:
        pytest.skip(f"byte identity needs QEMU's zlib {CAPTURE_ZLIB}; this build links {codec.zlib_version()}")
    for path in sorted((shared_data / "wl3" / folder).glob("channel-*.mfd.zst")):
        packets = list(capture_packets(path))
        ours = list(our_payloads("zlib", [pages for pages, _ in packets]))
        assert len(ours) == len(packets) > 30
        for index, ((_, theirs), mine) in enumerate(zip(packets, ours)):
            assert mine == theirs, f"{path.name}: packet {index} differs"


@pytest.mark.parametrize("folder", ["qemu-7.2-zstd", "qemu-10.0-zstd"])
def test_zstd_re_encodes_real_qemu_channels(shared_data, folder):
    """Same algorithm as QEMU; the bytes match only with QEMU's libzstd version."""
    for path in sorted((shared_data / "wl3" / folder).glob("channel-*.mfd.zst")):
        packets = list(capture_packets(path))
        ours = list(our_payloads("zstd", [pages for pages, _ in packets]))
        d = reference_decompressor("zstd")
        for (pages, theirs), mine in zip(packets, ours):
            assert d.decompress(mine) == b"".join(pages)
            if zstandard.ZSTD_VERSION == CAPTURE_ZSTD:
                assert mine == theirs
        assert len(ours) == len(packets) > 30


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_zlib_one_call_per_packet_equals_qemu_page_by_page(level):
    packets = [pages_of(seed, count) for seed, count in ((1, 128), (2, 1), (3, 77), (4, 128))]
    qemu = zlib.compressobj(level, zlib.DEFLATED, 15)
    expected = [b"".join(qemu.compress(p) for p in pages) + qemu.flush(zlib.Z_SYNC_FLUSH)
                for pages in packets]
    assert list(our_payloads("zlib", packets, level=level)) == expected


@pytest.mark.parametrize("level", [1, 3, 19])
def test_zstd_gathered_pages_equal_page_by_page_feeding(level):
    packets = [pages_of(seed, count) for seed, count in ((1, 128), (2, 1), (3, 77), (4, 128))]
    qemu = zstandard.ZstdCompressor(level=level).compressobj()
    expected = [b"".join(qemu.compress(p) for p in pages)
                + qemu.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for pages in packets]
    assert list(our_payloads("zstd", packets, level=level)) == expected


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_incompressible_packets_stay_within_the_receivers_bound(method):
    m = methods.get(method)
    rng = np.random.default_rng(3)
    sizes = [1, 2, 128, 127, 128, 1]
    packets = [[rng.bytes(PAGE) for _ in range(n)] for n in sizes]
    for pages, payload in zip(packets, our_payloads(method, packets, level=9)):
        assert len(payload) <= m.max_payload(len(pages), PAGE)


# --------------------------------------------------- hostile bytes coming in

def good_packets(method: str, counts=(8, 8, 8)):
    """Consecutive (pages, payload) packets of one channel and their page bytes."""
    all_pages = pages_of(7, sum(counts))
    packets, start = [], 0
    for n in counts:
        packets.append(all_pages[start:start + n])
        start += n
    payloads = list(our_payloads(method, packets))
    indices, start = [], 0
    for n in counts:
        indices.append(list(range(start, start + n)))
        start += n
    return list(zip(indices, payloads)), b"".join(all_pages)


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_clean_channel_decodes(method):
    packets, source = good_packets(method)
    error, block = receive(method, stream_bytes(method, [(p, d, None) for p, d in packets]))
    assert error is None
    assert block[:len(source)] == source


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_payload_size_bounded_before_reading(method):
    packets, _ = good_packets(method)
    claimed = methods.get(method).max_payload(8, PAGE) + 1
    data = stream_bytes(method, [(packets[0][0], packets[0][1], claimed)])
    error, _ = receive(method, data)
    assert isinstance(error, errors.BadPayloadSize)
    assert (error.channel, error.packet_num, error.field) == (0, 0, "next_packet_size")
    assert error.got == claimed


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_corrupt_stream_names_packet_and_page(method):
    packets, _ = good_packets(method)
    pages, payload = packets[1]
    bad = bytearray(payload)
    bad[:3] = b"\xff\xff\xff"        # a block of the reserved type, in either format
    data = stream_bytes(method, [(packets[0][0], packets[0][1], None), (pages, bytes(bad), None)])
    error, _ = receive(method, data)
    assert isinstance(error, errors.DecompressError)
    assert (error.channel, error.packet_num) == (0, 1)
    assert error.field.startswith(("page[", "payload"))


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_short_output_is_an_error(method):
    packets, _ = good_packets(method)
    pages, payload = packets[0]
    claimed = pages + [60]                       # one page more than the payload holds
    error, _ = receive(method, stream_bytes(method, [(claimed, payload, None)]))
    assert isinstance(error, errors.DecompressError)
    assert (error.packet_num, error.field) == (0, "page[8]")
    assert "short" in str(error) or "ended inside" in str(error)


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_leftover_input_is_an_error(method):
    packets, _ = good_packets(method)
    pages, payload = packets[0]
    error, _ = receive(method, stream_bytes(method, [(pages[:-1], payload, None)]))
    assert isinstance(error, errors.DecompressError)
    assert (error.packet_num, error.field) == (0, "payload")
    assert "left over" in str(error)


def test_zlib_stream_end_inside_the_channel_is_an_error():
    pages = pages_of(1, 4)
    c = zlib.compressobj(1, zlib.DEFLATED, 15)
    first = b"".join(c.compress(p) for p in pages) + c.flush(zlib.Z_FINISH)   # stream ends
    data = stream_bytes("zlib", [([0, 1, 2, 3], first, None), ([4], first, None)])
    error, _ = receive("zlib", data)
    assert isinstance(error, errors.DecompressError)
    assert (error.packet_num, error.field) == (0, "page[3]")
    assert "ended" in str(error)


def test_zstd_bomb_stops_at_the_packets_pages():
    """A tiny payload that would expand to 64 MiB: refused after one packet's worth."""
    c = zstandard.ZstdCompressor(level=1).compressobj()
    bomb = c.compress(bytes(64 << 20)) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert len(bomb) < 8192
    error, _ = receive("zstd", stream_bytes("zstd", [(list(range(4)), bomb, None)]))
    assert isinstance(error, errors.DecompressError)
    assert error.field == "payload" and "left over" in str(error)


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_garbage_payload_is_a_typed_error(method):
    data = stream_bytes(method, [(list(range(4)), os.urandom(3000), None)])
    error, _ = receive(method, data)
    assert isinstance(error, errors.DecompressError)
    assert error.packet_num == 0
