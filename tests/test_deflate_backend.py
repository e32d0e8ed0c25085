"""The software codec's library backend and its compression settings.

Whatever library the build picked (``codec.codec_name()``), every page the
engine emits must be a standard raw-DEFLATE stream that uses only 4 KiB of
history (an IAA receiver's window), for every page size, and the decoder
must keep the receive contract (exactly one page, stream end, all input).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from engine.config import Config
from engine.errors import ConfigError
from workers import codec
from workers.jobs import PageJobs
from workers.settings import JobSettings

SETTINGS = tuple(codec.COMPRESSION_SETTINGS)


def inflate_4k(data: bytes) -> bytes:
    """Inflate with a 4 KiB window, as IAA would: a farther distance fails."""
    d = zlib.decompressobj(-12)
    out = d.decompress(data) + d.flush()
    assert d.eof and d.unused_data == b""
    return out


def text_page(rng: np.random.Generator, size: int) -> bytes:
    words = [b"migration", b"page", b"qemu", b"multifd", b"channel", b"sync", b"ram", b"0x7f3a"]
    out = bytearray()
    while len(out) < size:
        out += words[int(rng.integers(len(words)))] + b" " * int(rng.integers(1, 3))
    return bytes(out[:size])


def far_repeat_page(rng: np.random.Generator, size: int) -> bytes:
    """A page whose second half repeats its first: the cheap matches lie > 4 KiB back."""
    half = rng.integers(0, 256, size // 2, dtype=np.uint8).tobytes()
    return half + half


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_pages_inflate_with_a_4k_window(rng, setting, page_size):
    c = codec.SoftwareCodec(level=codec.COMPRESSION_SETTINGS[setting])
    pages = [text_page(rng, page_size), far_repeat_page(rng, page_size),
             bytes(page_size - 1) + b"\1", (b"\xcc" * 3000 + text_page(rng, 1096)) * (page_size // 4096)]
    for page in pages:
        data = c.compress_page(page)
        if data is None:
            continue  # did not shrink: sent raw
        assert len(data) < page_size
        assert inflate_4k(data) == page
        assert c.decompress_page(data, page_size) == page
    if page_size // 2 > 4096:
        # the repeat lies beyond the window: it must not have shrunk the page
        far = c.compress_page(pages[1])
        assert far is None or len(far) > page_size * 0.9
    c.close()


def test_settings_trade_bytes_for_speed(rng):
    """fast sends static-Huffman blocks (when the library has them); balanced fits a code per page."""
    fast = codec.SoftwareCodec(level=codec.COMPRESSION_SETTINGS["fast"])
    balanced = codec.SoftwareCodec(level=codec.COMPRESSION_SETTINGS["balanced"])
    pages = [text_page(rng, 4096) for _ in range(16)]
    fast_out = [fast.compress_page(p) for p in pages]
    balanced_out = [balanced.compress_page(p) for p in pages]
    assert {data[0] >> 1 & 3 for data in balanced_out} == {2}  # dynamic Huffman
    if codec.codec_libraries()[0] == "libdeflate":  # no static mode: fast is its level 1 too
        assert fast_out == balanced_out
    else:
        assert {data[0] >> 1 & 3 for data in fast_out} == {1}  # fixed Huffman
        assert sum(map(len, balanced_out)) < sum(map(len, fast_out))
    fast.close()
    balanced.close()


def packet_payload_pages(payload: bytes, n: int) -> list[bytes]:
    """The page streams of a qpl payload (length table, then the data)."""
    lengths = np.frombuffer(payload[:4 * n], dtype=">u4")
    ends = 4 * n + np.cumsum(lengths)
    return [payload[int(end - length):int(end)] for end, length in zip(ends, lengths)]


@pytest.mark.parametrize("page_size", [4096, 65536])
def test_packet_setting_shares_one_code_across_the_packet(rng, page_size):
    """packet: one dynamic code per packet, in each page's own header; pages outside
    the histogram's sample (with bytes no sampled page has) still encode."""
    n = 12
    pages = [text_page(rng, page_size) for _ in range(n)]
    pages[1] = pages[1][:2048] + bytes(range(256)) * 4 + pages[1][3072:]  # page 1 is not sampled
    block = bytearray(b"".join(pages))
    indices = np.arange(n, dtype=np.uint64)
    sizes = {}
    for setting in ("fast", "packet"):
        jobs = PageJobs(128, JobSettings(accelerator="software",
                                         level=codec.COMPRESSION_SETTINGS[setting]))
        slot = bytearray(4 * n + n * page_size)
        size, stats = jobs.compress(block, page_size, indices, slot)
        assert stats.compressed_pages == n
        streams = packet_payload_pages(bytes(slot[:size]), n)
        assert [inflate_4k(s) for s in streams] == pages
        out = bytearray(len(block))
        jobs.decompress(bytes(slot[:size]), indices, out, page_size)
        assert out == block
        jobs.close()
        sizes[setting] = size
        if setting == "packet" and codec.codec_libraries()[0] == "isal":
            assert {s[0] >> 1 & 3 for s in streams} == {2}        # dynamic Huffman
            assert len({s[:24] for s in streams}) == 1            # one header for all
    if codec.codec_libraries()[0] == "isal":
        assert sizes["packet"] < sizes["fast"]


def test_decoder_keeps_the_receive_contract(rng):
    c = codec.SoftwareCodec()
    page = text_page(rng, 4096)
    data = c.compress_page(page)
    cases = {
        "MFD_E_TRAILING": (data + b"\0\0", 4096),
        "MFD_E_INFLATE_SIZE": (data, 8192),           # stream ends a page early
        "MFD_E_INFLATE": (data[: len(data) // 2], 4096),  # truncated
    }
    for name, (stream, size) in cases.items():
        with pytest.raises(codec.PayloadRejected) as info:
            c.decompress_page(stream, size)
        assert info.value.name == name
    with pytest.raises(codec.PayloadRejected) as info:
        c.decompress_page(data, 2048)                 # more than one page comes out
    assert info.value.name == "MFD_E_INFLATE_SIZE"
    with pytest.raises(codec.PayloadRejected):
        c.decompress_page(b"\xff" * 40, 4096)         # not DEFLATE at all
    c.close()


def test_bad_settings_are_refused():
    with pytest.raises(codec.CodecError):
        codec.SoftwareCodec(level=7)  # not a setting
    with pytest.raises(codec.CodecError):
        codec.SoftwareCodec(window_bits=8)
    with pytest.raises(codec.CodecError):
        codec.SoftwareQueue(level=-1)


@pytest.mark.parametrize("setting", SETTINGS)
def test_raw_loop_matches_the_packet_loop(rng, setting):
    """The benchmark's raw C loop produces exactly what the engine puts on the wire."""
    page_size = 4096
    kinds = [text_page(rng, page_size) for _ in range(6)] + [rng.bytes(page_size)]
    block = bytearray(b"".join(kinds))
    pages = np.arange(len(kinds), dtype=np.uint64)
    level = codec.COMPRESSION_SETTINGS[setting]
    jobs = PageJobs(128, JobSettings(accelerator="software", level=level))
    slot = bytearray(4 * len(kinds) + len(kinds) * page_size)
    size, stats = jobs.compress(block, page_size, pages, slot)
    assert stats.raw_pages == 1
    assert codec.raw_compress_pages(block, page_size, pages, setting=setting) == size - 4 * len(kinds)
    jobs.close()
    with pytest.raises(codec.PageIndexError):
        codec.raw_compress_pages(block, page_size, np.array([len(kinds)], dtype=np.uint64))


def crc32c_u32(values: np.ndarray) -> np.ndarray:
    """CRC-32C from 0, no final xor, of each little-endian uint32 (the x86 crc32 instruction)."""
    crc = values.astype(np.uint32)
    for _ in range(32):
        crc = (crc >> np.uint32(1)) ^ (np.uint32(0x82F63B78) & (np.uint32(0) - (crc & np.uint32(1))))
    return crc


def pages_opening_every_hash_slot() -> np.ndarray:
    """8192 4 KiB pages: page s opens with 4 bytes that ISA-L level 1 hashes to
    table slot s (its hash: crc32c of the 4 bytes, masked to 8192 slots), and
    that opening comes back three times later in the page."""
    slots = 8192
    values = np.arange(1 << 16, dtype=np.uint32)
    hashed = crc32c_u32(values) & np.uint32(slots - 1)
    order = np.argsort(hashed, kind="stable")
    first = order[np.searchsorted(hashed[order], np.arange(slots))]
    assert (hashed[first] == np.arange(slots)).all()
    opening = np.zeros((slots, 16), dtype=np.uint8)
    opening[:, :4] = values[first].astype("<u4").view(np.uint8).reshape(slots, 4)
    opening[:, 4:] = np.frombuffer(b"\xa5multifd\x5a\x3c\xc3\x96", dtype=np.uint8)
    pages = np.zeros((slots, 4096), dtype=np.uint8)
    for offset in (0, 1000, 2000, 3000):
        pages[:, offset:offset + 16] = opening
    return pages


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_pages_stream_does_not_depend_on_the_codec(setting):
    """Codecs at different addresses put out the same bytes for the same page.

    ISA-L 2.30's level-1 body files one hash-table entry of every stream
    under a slot taken from the address of the isal_zstream instead of
    the input; when that slot is the one the page's opening hashes to, a
    match is missed.  These pages open with every slot once, so any two
    codecs whose streams sit in different 64 KiB of address space differ
    on two pages unless the codec pins that slot.
    """
    pages = pages_opening_every_hash_slot()
    codecs = [codec.SoftwareCodec(level=codec.COMPRESSION_SETTINGS[setting]) for _ in range(4)]
    outputs = [[c.compress_page(page) for page in pages] for c in codecs]
    for c in codecs:
        c.close()
    assert all(data is not None for data in outputs[0])
    for k, other in enumerate(outputs[1:], 1):
        differ = [i for i, (a, b) in enumerate(zip(outputs[0], other)) if a != b]
        assert not differ, f"codec {k} differs from codec 0 on pages {differ[:8]}"
    assert inflate_4k(outputs[0][5]) == pages[5].tobytes()


def test_compression_setting_in_config():
    assert Config().migration.compression == "balanced"
    fast = Config.from_dict({"migration": {"compression": "fast"}})
    assert fast.migration.jobs.level == codec.COMPRESSION_SETTINGS["fast"]
    assert Config().migration.jobs.level == codec.COMPRESSION_SETTINGS["balanced"]
    packet = Config.from_dict({"migration": {"compression": "packet"}})
    assert packet.migration.jobs.level == codec.COMPRESSION_SETTINGS["packet"]
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"migration": {"compression": "best"}})
    assert info.value.key == "migration.compression"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(6)
