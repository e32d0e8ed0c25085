"""The emulated device's RFC 1951 decoder on its own: IAA's 4 KiB history."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from workers import codec


def raw_deflate(data: bytes, window_bits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
    return c.compress(data) + c.flush()


@pytest.fixture
def far_match() -> bytes:
    """8 KiB whose second half repeats bytes 5000 back: only a match that far shrinks it."""
    head = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    return head + head[:8192 - 5000]


def test_valid_streams_decode(far_match):
    text = b"the emulated device decodes what IAA decodes " * 180
    for window_bits in (12, 15):
        stream = raw_deflate(text, window_bits)
        assert codec.strict_inflate(stream, len(text)) == text
    stored = raw_deflate(far_match[:5000], 12)       # random: a stored block
    assert codec.strict_inflate(stored, 5000) == far_match[:5000]
    near = raw_deflate(far_match, 12)                 # a 4 KiB window: no far match
    assert codec.strict_inflate(near, len(far_match)) == far_match


def test_a_distance_beyond_4_kib_is_refused(far_match):
    far = raw_deflate(far_match, 15)
    assert len(far) < 6000 and zlib.decompress(far, -15) == far_match   # zlib takes it
    with pytest.raises(codec.PayloadRejected) as caught:
        codec.strict_inflate(far, len(far_match))
    assert caught.value.name == "MFD_E_INFLATE"


def test_truncated_and_overlong_input_is_refused():
    text = b"0123456789abcdef" * 600
    stream = raw_deflate(text, 12)
    for cut in (1, len(stream) // 2, len(stream) - 1):
        with pytest.raises(codec.PayloadRejected) as caught:
            codec.strict_inflate(stream[:cut], len(text))
        assert caught.value.name == "MFD_E_INFLATE"
    with pytest.raises(codec.PayloadRejected) as caught:
        codec.strict_inflate(stream + b"\0", len(text))
    assert caught.value.name == "MFD_E_TRAILING"
    with pytest.raises(codec.PayloadRejected) as caught:
        codec.strict_inflate(stream, len(text) - 1)
    assert caught.value.name == "MFD_MORE_OUTPUT"
