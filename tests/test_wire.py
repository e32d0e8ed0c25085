"""Tests of engine.wire: hand-computed byte vectors, every reject case, real captures."""

from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest

from engine import wire
from engine.errors import (
    BadFlags,
    BadInitPacket,
    BadMagic,
    BadOffset,
    BadPageCount,
    BadPayloadSize,
    BadRamBlock,
    BadVersion,
    TruncatedStream,
    WireError,
)

PS = 4096
HS = 1344
C72 = wire.Compat.parse("7.2")
C100 = wire.Compat.parse("10.0")
BLOCKS = {"pc.ram": 1 << 20, "mem": 160 << 20, "pc.bios": 262144}
DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def decoder(*, method: int = wire.FLAG_NOCOMP, compat: wire.Compat = C100,
            blocks=BLOCKS, channel: int = 5) -> wire.HeaderDecoder:
    return wire.HeaderDecoder(channel=channel, page_size=PS, method_flag=method,
                              compat=compat, blocks=blocks)


def header(**kw) -> bytearray:
    """A valid nocomp header (2 normal pages of pc.ram), overridable."""
    args = dict(page_size=PS, flags=0, packet_num=7, ramblock="pc.ram",
                normal_pages=2, zero_pages=0, next_packet_size=2 * PS,
                pages=np.array([3, 4], dtype=np.uint64))
    args.update(kw)
    return bytearray(wire.encode_header(**args))


def put32(buf: bytearray, offset: int, value: int) -> bytearray:
    struct.pack_into(">I", buf, offset, value)
    return buf


def put64(buf: bytearray, offset: int, value: int) -> bytearray:
    struct.pack_into(">Q", buf, offset, value)
    return buf


def reject(dec: wire.HeaderDecoder, buf, cls: type, field: str,
           packet_num: int | None = 7) -> WireError:
    with pytest.raises(cls) as info:
        dec.decode(buf)
    err = info.value
    assert type(err) is cls
    assert err.field == field
    assert err.channel == dec.channel
    assert err.packet_num == packet_num
    return err


# ------------------------------------------------------------------ sizes

@pytest.mark.parametrize("page_size,count,size", [(1024, 512, 4416), (4096, 128, 1344),
                                                  (16384, 32, 576)])
def test_page_count_and_header_size(page_size, count, size):
    assert wire.page_count_for(page_size) == count
    assert wire.header_size(page_size) == size


@pytest.mark.parametrize("page_size", [3000, 256, 131072, 0, -4096, 4096.0])
def test_page_size_rejected(page_size):
    with pytest.raises(ValueError, match=str(page_size)):
        wire.page_count_for(page_size)
    with pytest.raises(ValueError):
        wire.header_size(page_size)


# ----------------------------------------------------------------- compat

def test_compat():
    assert C72.version == (7, 2) and C100 == wire.Compat.DEFAULT
    assert wire.Compat.parse("7.2.22") == C72
    assert [wire.Compat.parse(v).compression_mask for v in ("7.2", "9.0", "9.1", "9.2", "10.0")] \
        == [0x0E, 0x0E, 0x1E, 0x3E, 0x3E]
    assert not C72.zero_pages_in_packets and wire.Compat.parse("9.0").zero_pages_in_packets
    assert wire.Compat.parse("9.1").sync_pages_alloc and not wire.Compat.parse("9.2").sync_pages_alloc
    assert not C72.strict_payload_size and C100.strict_payload_size
    assert not C72.supports(wire.FLAG_QPL) and wire.Compat.parse("9.1").supports(wire.FLAG_QPL)
    assert not wire.Compat.parse("9.1").supports(wire.FLAG_QATZIP) and C100.supports(wire.FLAG_QATZIP)
    for junk in ("", "10", "ten.0", "7.2-rc1", "1.2.3.4"):
        with pytest.raises(ValueError):
            wire.Compat.parse(junk)


# ------------------------------------------------------------ init packet

INIT_HEX = """
11223344 00000001 000102030405060708090a0b0c0d0e0f 03
00000000000000 0000000000000000000000000000000000000000000000000000000000000000
"""
UUID = bytes(range(16))


def test_init_encode_bytes():
    raw = wire.InitPacket(uuid=UUID, channel_id=3).encode()
    assert raw == h(INIT_HEX) and len(raw) == 64


def test_init_decode():
    pkt = wire.InitPacket.decode(h(INIT_HEX), channels=4, expected_uuid=UUID)
    assert pkt == wire.InitPacket(uuid=UUID, channel_id=3)
    # id < channels accepted; reserved bytes ignored; a longer buffer is fine
    raw = bytearray(h(INIT_HEX)) + b"extra"
    raw[40] = 0xFF
    assert wire.InitPacket.decode(raw, channels=4).channel_id == 3


def init_reject(raw: bytes, cls: type, field: str, **kw) -> None:
    with pytest.raises(cls) as info:
        wire.InitPacket.decode(raw, channel_hint=9, **kw)
    assert type(info.value) is cls
    assert (info.value.field, info.value.channel, info.value.packet_num) == (field, 9, None)


def test_init_short():
    init_reject(h(INIT_HEX)[:63], TruncatedStream, "init")
    init_reject(b"", TruncatedStream, "init")


def test_init_bad_magic():
    init_reject(b"QEVM" + h(INIT_HEX)[4:], BadInitPacket, "magic")


def test_init_bad_version():
    init_reject(h(INIT_HEX)[:4] + b"\0\0\0\2" + h(INIT_HEX)[8:], BadInitPacket, "version")


def test_init_uuid_mismatch():
    init_reject(h(INIT_HEX), BadInitPacket, "uuid", expected_uuid=bytes(16))


def test_init_id_equal_to_channels_rejected():
    # QEMU lets id == channels through (spec §1 step 5); we do not.
    init_reject(h(INIT_HEX), BadInitPacket, "id", channels=3)
    init_reject(h(INIT_HEX), BadInitPacket, "id", channels=1)
    assert wire.InitPacket.decode(h(INIT_HEX), channels=4).channel_id == 3


def test_init_encode_rejects_bad_values():
    with pytest.raises(ValueError):
        wire.InitPacket(uuid=b"short", channel_id=0)
    with pytest.raises(ValueError):
        wire.InitPacket(uuid=UUID, channel_id=256)


# ---------------------------------------------------- header byte vectors

def test_encode_header_bytes():
    raw = wire.encode_header(page_size=PS, flags=0x08, packet_num=0x0102030405060708,
                             ramblock="pc.ram", normal_pages=2, zero_pages=1,
                             next_packet_size=0x1234,
                             pages=np.array([1, 2, 0x10], dtype=np.uint64))
    assert isinstance(raw, bytes) and len(raw) == HS
    assert raw[0:4] == h("11223344")                   # magic
    assert raw[4:8] == h("00000001")                   # version
    assert raw[8:12] == h("00000008")                  # flags (qpl)
    assert raw[12:16] == h("00000080")                 # pages_alloc = 128
    assert raw[16:20] == h("00000002")                 # normal_pages
    assert raw[20:24] == h("00001234")                 # next_packet_size
    assert raw[24:32] == h("0102030405060708")         # packet_num
    assert raw[32:36] == h("00000001")                 # zero_pages
    assert raw[36:64] == bytes(28)                     # reserved
    assert raw[64:71] == b"pc.ram\0" and raw[71:320] == bytes(249)
    assert raw[320:328] == h("0000000000001000")       # page 1
    assert raw[328:336] == h("0000000000002000")       # page 2
    assert raw[336:344] == h("0000000000010000")       # page 0x10 (zero page)
    assert raw[344:] == bytes(HS - 344)                # unused slots zero
    expected = h("""
        11223344 00000001 00000008 00000080 00000002 00001234 0102030405060708 00000001
    """) + bytes(28) + b"pc.ram" + bytes(250) + h(
        "0000000000001000 0000000000002000 0000000000010000") + bytes(1000)
    assert raw == expected


SYNC_HEX = "11223344 00000001 00000001 00000000 00000000 00000000 000000000000002a 00000000"


def test_encode_sync_qemu10_bytes():
    raw = wire.encode_sync(page_size=PS, packet_num=0x2A)
    assert raw == h(SYNC_HEX) + bytes(HS - 36)
    hdr = decoder(method=wire.FLAG_QPL).decode(raw)
    assert hdr.is_sync and hdr.pages_alloc == 0 and hdr.payload_size == 0
    assert hdr.ramblock == "" and hdr.pages.size == 0 and hdr.method_flag == 0


def test_encode_sync_pre92_has_pages_alloc():
    raw = wire.encode_sync(page_size=PS, packet_num=1, compat=wire.Compat.parse("9.1"))
    assert raw[12:16] == h("00000080")


def test_encode_into_out_buffer_overwrites_everything():
    out = bytearray(b"\xAA" * (HS + 10))
    args = dict(page_size=PS, flags=0, packet_num=1, ramblock="mem", normal_pages=1,
                zero_pages=0, next_packet_size=PS, pages=np.array([5], dtype=np.uint64))
    assert wire.encode_header(**args, out=memoryview(out)[:HS]) is None
    assert bytes(out[:HS]) == wire.encode_header(**args)
    assert out[HS:] == b"\xAA" * 10


def test_encode_header_rejects_bad_input():
    ok = dict(page_size=PS, flags=0, packet_num=1, ramblock="mem", normal_pages=1,
              zero_pages=0, next_packet_size=PS, pages=np.array([5], dtype=np.uint64))
    for bad in (dict(ramblock="x" * 256), dict(ramblock="a\0b"), dict(pages=[1, 2]),
                dict(pages=np.array([-1])), dict(flags=1 << 32), dict(packet_num=-1),
                dict(pages=np.array([1 << 62], dtype=np.uint64)),
                dict(normal_pages=129, pages=np.arange(129, dtype=np.uint64)),
                dict(out=bytearray(100)), dict(page_size=3000)):
        with pytest.raises(ValueError):
            wire.encode_header(**{**ok, **bad})
    assert len(wire.encode_header(**{**ok, "ramblock": "x" * 255})) == HS


# ------------------------------------------------------------- decoding

def test_decode_fields_and_views():
    raw = wire.encode_header(page_size=PS, flags=0x08, packet_num=0x0102030405060708,
                             ramblock="pc.ram", normal_pages=2, zero_pages=1,
                             next_packet_size=0x1234,
                             pages=np.array([1, 2, 0x10], dtype=np.uint64))
    hdr = decoder(method=wire.FLAG_QPL).decode(memoryview(raw))
    assert (hdr.flags, hdr.pages_alloc, hdr.normal_pages, hdr.zero_pages) == (8, 128, 2, 1)
    assert (hdr.next_packet_size, hdr.packet_num, hdr.ramblock) == (0x1234, 0x0102030405060708,
                                                                    "pc.ram")
    assert hdr.pages.dtype == np.uint64 and hdr.pages.dtype.isnative
    assert hdr.pages.flags.c_contiguous
    assert hdr.pages.tolist() == [1, 2, 16]
    assert hdr.normal.tolist() == [1, 2] and hdr.zero.tolist() == [16]
    assert hdr.payload_size == 0x1234 and not hdr.is_sync and hdr.method_flag == 8


def qemu72_pageless() -> bytearray:
    """A 7.2 SYNC packet: no pages, stale size, stale block name and offsets."""
    buf = header(flags=wire.FLAG_SYNC, next_packet_size=0x1234, normal_pages=3,
                 pages=np.array([9, 9, 1 << 40], dtype=np.uint64))
    put32(buf, 16, 0)                                   # normal_pages = 0
    buf[64:320] = b"Z" * 256                            # garbage name, no NUL
    return buf


def test_qemu72_stale_header_accepted():
    hdr = decoder(compat=C72).decode(qemu72_pageless())
    assert hdr.is_sync and hdr.normal_pages == 0 and hdr.pages_alloc == 128
    assert hdr.next_packet_size == 0x1234 and hdr.payload_size == 0
    assert hdr.ramblock == "" and hdr.pages.size == 0


def test_qemu72_stale_size_rejected_by_10():
    err = reject(decoder(compat=C100), qemu72_pageless(), BadPayloadSize, "next_packet_size")
    assert err.got == 0x1234


def test_qemu72_stale_offset_slots_ignored():
    buf = header(normal_pages=2, pages=np.array([3, 4], dtype=np.uint64))
    for slot, value in ((2, 3 * PS), (3, 5), (127, 1 << 63)):  # dup, unaligned, huge
        put64(buf, 320 + 8 * slot, value)
    assert decoder(compat=C72).decode(buf).pages.tolist() == [3, 4]


def test_sync_carrying_pages_qemu72():
    buf = header(flags=wire.FLAG_SYNC | wire.FLAG_ZLIB)
    hdr = decoder(method=wire.FLAG_ZLIB, compat=C72).decode(buf)
    assert hdr.is_sync and hdr.normal.tolist() == [3, 4]


def test_zero_only_packet():
    buf = header(flags=wire.FLAG_ZSTD, normal_pages=0, zero_pages=2, next_packet_size=0)
    hdr = decoder(method=wire.FLAG_ZSTD).decode(buf)
    assert hdr.zero.tolist() == [3, 4] and hdr.normal.size == 0 and hdr.payload_size == 0


def test_lenient_blocks_accepts_any_name():
    buf = header(ramblock="/rom@etc/acpi/tables", pages=np.array([1 << 30, 0], np.uint64))
    assert decoder(blocks=None).decode(buf).ramblock == "/rom@etc/acpi/tables"
    reject(decoder(blocks=None), put64(buf, 328, 1 << 42), BadOffset, "offset[1]")


# ---------------------------------------------------- §9: every packet

def test_reject_short_buffer():
    buf = header()
    reject(decoder(), buf[:-1], TruncatedStream, "header", None)
    reject(decoder(), buf + b"\0", TruncatedStream, "header", None)
    reject(decoder(), b"", TruncatedStream, "header", None)


def test_reject_bad_magic():
    err = reject(decoder(), put32(header(), 0, 0x5145564D), BadMagic, "magic")
    assert err.got == hex(0x5145564D)


def test_reject_bad_version():
    reject(decoder(), put32(header(), 4, 2), BadVersion, "version")


def test_reject_unknown_flag_bit():
    reject(decoder(), header(flags=0x80), BadFlags, "flags")
    reject(decoder(), header(flags=1 << 31), BadFlags, "flags")


def test_reject_device_state_flag():
    reject(decoder(), header(flags=wire.FLAG_DEVICE_STATE), BadFlags, "flags")
    reject(decoder(), header(flags=wire.FLAG_DEVICE_STATE | wire.FLAG_SYNC), BadFlags, "flags")


def test_reject_compression_bits_mismatch():
    # pages flagged zlib on a qpl channel
    err = reject(decoder(method=wire.FLAG_QPL), header(flags=wire.FLAG_ZLIB), BadFlags, "flags")
    assert (err.got, err.expected) == ("0x2", "0x8")
    # zero-only pages carry the method bits too
    buf = header(flags=0, normal_pages=0, zero_pages=2, next_packet_size=0)
    reject(decoder(method=wire.FLAG_ZSTD), buf, BadFlags, "flags")


def test_newer_bit_masked_away_by_old_peer():
    # 0x20 (qatzip, 9.2+) is invisible through the 7.2 mask 0x0E.
    assert decoder(compat=C72).decode(header(flags=0x20)).normal.tolist() == [3, 4]
    assert decoder(method=wire.FLAG_ZLIB, compat=C72).decode(header(flags=0x22)).flags == 0x22
    reject(decoder(method=wire.FLAG_ZLIB, compat=C72), header(flags=0x20), BadFlags, "flags")
    # ... but a 10.0 peer sees it
    reject(decoder(compat=C100), header(flags=0x20), BadFlags, "flags")


def test_pageless_sync_with_method_bits_zero_is_fine():
    raw = wire.encode_sync(page_size=PS, packet_num=7)
    assert decoder(method=wire.FLAG_ZLIB).decode(raw).is_sync


def test_decoder_rejects_method_the_peer_cannot_use():
    with pytest.raises(ValueError):
        decoder(method=wire.FLAG_QPL, compat=C72)
    with pytest.raises(ValueError):
        decoder(method=0x06)


# ---------------------------------------------------- §9: RAM header

def test_reject_pages_alloc_too_large():
    reject(decoder(), header(pages_alloc=129), BadPageCount, "pages_alloc")


def test_small_pages_alloc_accepted():
    assert decoder().decode(header(pages_alloc=2)).pages_alloc == 2


def test_reject_normal_above_alloc():
    reject(decoder(), header(pages_alloc=1), BadPageCount, "normal_pages")


def test_reject_zero_above_free_slots():
    buf = header(normal_pages=100, zero_pages=28, next_packet_size=100 * PS,
                 pages=np.arange(128, dtype=np.uint64))
    assert decoder().decode(buf).zero_pages == 28
    reject(decoder(), put32(buf, 32, 29), BadPageCount, "zero_pages")   # 100 + 29 > 128
    reject(decoder(), put32(buf, 32, 0xFFFFFFFF), BadPageCount, "zero_pages")


def test_reject_zero_pages_for_pre90_peer():
    buf = header(normal_pages=1, zero_pages=1, next_packet_size=PS)
    assert decoder(compat=wire.Compat.parse("9.0")).decode(buf).zero.tolist() == [4]
    reject(decoder(compat=C72), buf, BadPageCount, "zero_pages")


def test_reject_ramblock_without_nul():
    buf = header()
    buf[64:320] = b"m" * 256
    reject(decoder(), buf, BadRamBlock, "ramblock")
    reject(decoder(blocks=None), buf, BadRamBlock, "ramblock")


def test_reject_ramblock_not_utf8():
    buf = header()
    buf[64:67] = b"\xff\xfe\0"
    reject(decoder(blocks=None), buf, BadRamBlock, "ramblock")


def test_reject_unknown_ramblock():
    err = reject(decoder(), header(ramblock="pc.rom"), BadRamBlock, "ramblock")
    assert err.got == "pc.rom"


def test_reject_unaligned_offset():
    err = reject(decoder(), put64(header(), 328, 4 * PS + 8), BadOffset, "offset[1]")
    assert err.got == 4 * PS + 8


def test_reject_offset_past_block_end():
    last = (1 << 20) // PS - 1                       # pc.ram holds 256 pages
    assert decoder().decode(header(pages=np.array([0, last], np.uint64))).pages[1] == last
    reject(decoder(), header(pages=np.array([0, last + 1], np.uint64)), BadOffset, "offset[1]")
    reject(decoder(), header(pages=np.array([1 << 50, 0], np.uint64)), BadOffset, "offset[0]")
    tiny = decoder(blocks={"pc.ram": PS - 1})        # used_length < page_size
    reject(tiny, header(pages=np.array([0, 0], np.uint64)), BadOffset, "offset[0]")


def test_reject_duplicate_offsets():
    pages = np.array([7, 3, 9, 3, 7], dtype=np.uint64)
    buf = header(normal_pages=3, zero_pages=2, pages=pages)
    err = reject(decoder(), buf, BadOffset, "offset[3]")   # second occurrence of page 3
    assert err.got == 3 * PS
    # a normal and a zero page at one offset is a duplicate too
    buf = header(normal_pages=1, zero_pages=1, pages=np.array([4, 4], np.uint64))
    reject(decoder(), buf, BadOffset, "offset[1]")


def test_first_bad_offset_in_array_order_wins():
    buf = header(normal_pages=3, pages=np.array([1, 2, 2], np.uint64), next_packet_size=3 * PS)
    put64(buf, 320, 1 << 50)                          # offset[0] outside, offset[2] repeats
    err = reject(decoder(), buf, BadOffset, "offset[0]")
    assert "outside" in err.reason


def test_garbage_never_escapes_as_other_errors():
    rng = np.random.default_rng(1)
    dec = decoder(blocks=None)
    base = header()
    for _ in range(300):
        buf = bytearray(base)
        for pos in rng.integers(0, 64 + 8 * 4, size=3):
            buf[pos] = int(rng.integers(0, 256))
        try:
            dec.decode(buf)
        except WireError:
            pass


# ---------------------------------------------------------- round trip

def test_round_trip_random_headers():
    rng = np.random.default_rng(20240607)
    names = ["mem", "pc.bios", "/rom@etc/acpi/tables", "é" * 127]
    for _ in range(400):
        page_size = int(rng.choice([1024, 4096, 16384, 65536]))
        count = wire.page_count_for(page_size)
        n = int(rng.integers(0, count + 1))
        normal = int(rng.integers(0, n + 1))
        method = int(rng.choice([0, 2, 4, 8, 16, 32]))
        flags = (method if n else 0) | int(rng.integers(0, 2))
        pages = rng.choice(1 << 20, size=n, replace=False).astype(np.uint64)
        nps = int(rng.integers(1, 1 << 32)) if normal else 0
        kw = dict(page_size=page_size, flags=flags, packet_num=int(rng.integers(0, 1 << 63)),
                  ramblock=str(rng.choice(names)) if n else "", normal_pages=normal,
                  zero_pages=n - normal, next_packet_size=nps, pages=pages,
                  pages_alloc=int(rng.integers(n, count + 1)))
        raw = wire.encode_header(**kw)
        assert len(raw) == wire.header_size(page_size)
        assert raw[320 + 8 * n:] == bytes(8 * (count - n))
        dec = wire.HeaderDecoder(channel=0, page_size=page_size, method_flag=method,
                                 compat=C100, blocks={name: 1 << 40 for name in names})
        hdr = dec.decode(raw)
        assert hdr == wire.PacketHeader(flags, kw["pages_alloc"], normal, n - normal, nps,
                                        kw["packet_num"], kw["ramblock"], pages)
        assert wire.encode_header(**{**kw, "pages": hdr.pages}) == raw


# ------------------------------------------------------- real captures

def walk_capture(path: pathlib.Path, method: int, compat: wire.Compat) -> dict:
    zstandard = pytest.importorskip("zstandard")
    with open(path, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    init = wire.InitPacket.decode(data[:64], channels=2, expected_uuid=bytes(16))
    dec = wire.HeaderDecoder(channel=init.channel_id, page_size=PS, method_flag=method,
                             compat=compat, blocks=None)
    pos, stats = 64, dict(packets=0, sync=0, normal=0, zero=0)
    view = memoryview(data)
    while pos < len(data):
        hdr = dec.decode(view[pos:pos + HS])
        pos += HS + hdr.payload_size
        stats["packets"] += 1
        stats["sync"] += hdr.is_sync
        stats["normal"] += hdr.normal_pages
        stats["zero"] += hdr.zero_pages
    assert init.channel_id == 0
    assert pos == len(data), "walk must end exactly at EOF"
    return stats


@pytest.mark.skipif(not (DATA / "wl3").is_dir(), reason=f"capture data not found at {DATA}")
@pytest.mark.parametrize("folder,method,compat,expected", [
    ("qemu-10.0-qpl", wire.FLAG_QPL, C100, dict(packets=51, sync=1, normal=3881, zero=2519)),
    ("qemu-7.2-none", wire.FLAG_NOCOMP, C72, dict(packets=8, sync=1, normal=896, zero=0)),
])
def test_real_capture_headers(folder, method, compat, expected):
    path = DATA / "wl3" / folder / "channel-0.mfd.zst"
    if not path.is_file():
        pytest.skip(f"capture file not found: {path}")
    assert walk_capture(path, method, compat) == expected
