"""The software codec's library backend and its two compression settings.

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


def test_compression_setting_in_config():
    assert Config().migration.compression == "balanced"
    fast = Config.from_dict({"migration": {"compression": "fast"}})
    assert fast.migration.jobs.level == codec.COMPRESSION_SETTINGS["fast"]
    assert Config().migration.jobs.level == codec.COMPRESSION_SETTINGS["balanced"]
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"migration": {"compression": "best"}})
    assert info.value.key == "migration.compression"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(6)
