"""Tests of the native page codec (workers/native/pagecodec.c via workers.codec)."""

from __future__ import annotations

import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from engine.errors import CodecError
from workers import codec

PAGE_SIZES = [1024, 4096, 16384]
ffi, lib = codec.ffi, codec.lib

WORDS = np.array(
    "the of and to in is that for it as with was on be by this are or from at an "
    "page memory migration multifd channel packet qemu guest zero normal deflate "
    "compress send receive offset block ramblock host device queue job window".split()
)


# ---------------------------------------------------------------------------
# helpers

def text_page(rng: np.random.Generator, size: int) -> bytes:
    """A compressible, text-like page."""
    words = rng.choice(WORDS, size=size // 3)
    data = " ".join(words).encode()
    return (data * (size // len(data) + 1))[:size] if len(data) < size else data[:size]


def random_page(rng: np.random.Generator, size: int) -> bytes:
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def make_block(rng: np.random.Generator, page_size: int, kinds: list[str]) -> bytearray:
    """One page per entry of ``kinds``: 'zero', 'text', 'random', 'tail' (one
    nonzero byte at the very end), 'head' (nonzero only in byte 0)."""
    block = bytearray(page_size * len(kinds))
    for i, kind in enumerate(kinds):
        off = i * page_size
        if kind == "text":
            block[off:off + page_size] = text_page(rng, page_size)
        elif kind == "random":
            block[off:off + page_size] = random_page(rng, page_size)
        elif kind == "tail":
            block[off + page_size - 1] = 1
        elif kind == "head":
            block[off] = 0x80
        elif kind == "mid":
            block[off + 8 + int(rng.integers(0, page_size - 8))] = 7
    return block


def ref_partition(block: bytes, page_size: int, pages: list[int]) -> tuple[int, list[int]]:
    """QEMU's multifd_send_zero_page_detect(), in Python."""
    pages = list(pages)
    i, j = 0, len(pages) - 1
    while i <= j:
        off = pages[i] * page_size
        if any(block[off:off + page_size]):
            i += 1
            continue
        pages[i], pages[j] = pages[j], pages[i]
        j -= 1
    return i, pages


def parse_qpl(payload: bytes, n: int) -> list[bytes]:
    lens = struct.unpack(f">{n}I", payload[:4 * n])
    out, off = [], 4 * n
    for length in lens:
        out.append(payload[off:off + length])
        off += length
    assert off == len(payload)
    return out


def inflate(data: bytes, wbits: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data) + d.flush()
    assert d.eof and d.unused_data == b""
    return out


def raw_deflate(data: bytes, wbits: int = -12, level: int = 1) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def build_payload(streams: list[bytes]) -> bytes:
    return struct.pack(f">{len(streams)}I", *map(len, streams)) + b"".join(streams)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240917)


@pytest.fixture
def sw():
    q = codec.SoftwareQueue(level=1)
    yield q
    q.close()


def send(jobs, wq, fallback, block, page_size, pages, *, max_retries=3, busy_policy="fallback"):
    slot = bytearray(4 * len(pages) + len(pages) * page_size)
    size, stats = codec.qpl_send_packet(
        jobs, wq, fallback, max_retries=max_retries, busy_policy=busy_policy,
        block=block, page_size=page_size, pages=pages, slot=slot)
    return bytes(slot[:size]), stats


def recv(jobs, wq, fallback, payload, pages, block, page_size, *, max_retries=3):
    codec.qpl_recv_packet(jobs, wq, fallback, max_retries=max_retries,
                          payload=payload, pages=pages, block=block, page_size=page_size)


# ---------------------------------------------------------------------------
# zero pages

@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_zero_page_partition_matches_qemu(rng, page_size):
    kinds = ["zero", "text", "random", "tail", "head", "mid"]
    for trial in range(40):
        count = int(rng.integers(0, 40))
        probs = rng.dirichlet(np.ones(len(kinds)))
        block = make_block(rng, page_size, list(rng.choice(kinds, size=count, p=probs)))
        # a random subset, in random order
        pages = rng.permutation(count)[: int(rng.integers(0, count + 1))].astype(np.uint64)
        want_n, want = ref_partition(block, page_size, [int(p) for p in pages])
        got = pages.copy()
        n = codec.find_zero_pages(block, page_size, got)
        assert n == want_n
        assert got.tolist() == want  # order included


def test_zero_page_partition_buffers_and_stats(rng):
    page_size = 4096
    kinds = ["zero", "text", "zero", "zero", "tail", "zero"]
    block = np.frombuffer(make_block(rng, page_size, kinds), dtype=np.uint8).copy()
    pages = np.arange(len(kinds), dtype=np.uint64)
    stats = codec.PacketStats()
    n = codec.find_zero_pages(memoryview(block), page_size, pages, stats)
    assert n == 2 and sorted(pages[:n].tolist()) == [1, 4]
    assert stats.zero_pages == 4 and stats.zero_ns > 0
    assert codec.find_zero_pages(block, page_size, np.zeros(0, dtype=np.uint64)) == 0


def test_zero_page_out_of_range(rng):
    block = bytearray(4 * 4096)
    pages = np.array([0, 1, 4, 2], dtype=np.uint64)
    before = pages.copy()
    with pytest.raises(codec.PageIndexError) as info:
        codec.find_zero_pages(block, 4096, pages)
    assert isinstance(info.value, CodecError) and isinstance(info.value, ValueError)
    assert (pages == before).all()
    with pytest.raises(codec.PageIndexError):
        codec.find_zero_pages(block, 4096, np.array([2**63], dtype=np.uint64))
    with pytest.raises(TypeError):
        codec.find_zero_pages(block, 4096, np.array([0, 1], dtype=np.int64))


# ---------------------------------------------------------------------------
# qpl send

@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_qpl_send_payload_format(rng, sw, page_size):
    kinds = ["text", "random", "text", "tail", "random", "text", "head", "text"]
    block = make_block(rng, page_size, kinds)
    pages = rng.permutation(len(kinds)).astype(np.uint64)
    jobs = codec.JobArray(len(kinds))
    payload, stats = send(jobs, sw, sw, block, page_size, pages)
    n = len(pages)
    streams = parse_qpl(payload, n)
    assert len(payload) == 4 * n + sum(map(len, streams))
    raw = 0
    for idx, data in zip(pages.tolist(), streams):
        page = bytes(block[idx * page_size:(idx + 1) * page_size])
        if kinds[idx] == "random":
            assert len(data) == page_size and data == page
            raw += 1
            continue
        assert 0 < len(data) < page_size
        assert inflate(data, -15) == page
        assert inflate(data, -12) == page  # only 4 KiB distances
    assert stats.normal_pages == n
    assert stats.raw_pages == raw and stats.compressed_pages == n - raw
    assert stats.sw_errors == stats.hw_errors == stats.busy == stats.hw_submitted == 0
    assert stats.compress_ns > 0
    jobs.close()


@pytest.mark.skipif(codec.codec_libraries()[0] != "zlib",
                    reason="this build compresses with another library (MFD_CODEC=zlib builds the zlib one)")
def test_qpl_send_compresses_like_python_zlib(rng, sw):
    """Same zlib, same parameters: byte-identical to zlib.compressobj(1, DEFLATED, -12)."""
    page_size = 4096
    block = make_block(rng, page_size, ["text"] * 4)
    pages = np.arange(4, dtype=np.uint64)
    payload, _ = send(codec.JobArray(4), sw, sw, block, page_size, pages)
    for i, data in enumerate(parse_qpl(payload, 4)):
        assert data == raw_deflate(bytes(block[i * page_size:(i + 1) * page_size]))


def test_qpl_send_empty_and_errors(rng, sw):
    block = make_block(rng, 4096, ["text"] * 3)
    jobs = codec.JobArray(2)
    size, stats = codec.qpl_send_packet(
        jobs, sw, sw, max_retries=3, busy_policy="fallback", block=block, page_size=4096,
        pages=np.zeros(0, dtype=np.uint64), slot=bytearray(0))
    assert size == 0 and stats == codec.PacketStats()
    with pytest.raises(codec.PageIndexError):
        send(jobs, sw, sw, block, 4096, np.array([0, 3], dtype=np.uint64))
    with pytest.raises(ValueError):  # more pages than jobs
        send(jobs, sw, sw, block, 4096, np.arange(3, dtype=np.uint64))
    with pytest.raises(ValueError):  # slot too small
        codec.qpl_send_packet(jobs, sw, sw, max_retries=3, busy_policy="fallback", block=block,
                              page_size=4096, pages=np.arange(2, dtype=np.uint64),
                              slot=bytearray(2 * 4096))
    with pytest.raises(ValueError):
        send(jobs, sw, sw, block, 4096, np.arange(2, dtype=np.uint64), busy_policy="spin")
    with pytest.raises(TypeError):
        send(jobs, object(), sw, block, 4096, np.arange(2, dtype=np.uint64))


# ---------------------------------------------------------------------------
# qpl recv

@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_qpl_round_trip(rng, sw, page_size):
    kinds = ["text", "random", "zero", "tail", "text", "random", "head", "text", "zero"]
    block = np.frombuffer(make_block(rng, page_size, kinds), dtype=np.uint8).copy()
    pages = rng.permutation(len(kinds)).astype(np.uint64)
    n = codec.find_zero_pages(block, page_size, pages)
    jobs = codec.JobArray(len(kinds))
    payload, _ = send(jobs, sw, sw, block, page_size, pages[:n])
    dest = np.full(len(block), 0xAA, dtype=np.uint8)
    codec.clear_pages(dest, page_size, pages[n:])
    recv(jobs, sw, sw, memoryview(payload), pages[:n], dest, page_size)
    total, first = codec.compare_pages(block, dest, page_size)
    assert total == 0 and len(first) == 0
    assert bytes(dest) == bytes(block)


def test_qpl_recv_accepts_32k_window_streams(rng, sw):
    """The receiver inflates any raw DEFLATE page, not only 4 KiB-window ones."""
    page_size = 16384
    half = text_page(rng, page_size // 2)
    page = half + half  # matches 8 KiB back: needs a window > 4 KiB
    stream = raw_deflate(page, wbits=-15)
    assert len(stream) < page_size
    dest = bytearray(page_size)
    recv(codec.JobArray(1), sw, sw, build_payload([stream]), np.zeros(1, np.uint64), dest, page_size)
    assert dest == page


def reject(sw, payload, pages, block, page_size):
    with pytest.raises(codec.PayloadRejected) as info:
        recv(codec.JobArray(max(1, len(pages))), sw, sw, payload, pages, block, page_size)
    return info.value


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_qpl_recv_rejects(rng, sw, page_size):
    good_page = text_page(rng, page_size)
    good = raw_deflate(good_page)
    raw = random_page(rng, page_size)
    pages = np.array([3, 1, 0], dtype=np.uint64)
    n = len(pages)
    sentinel = bytes([0x5A]) * (4 * page_size)

    def check(payload, name, page, *, untouched=True):
        dest = bytearray(sentinel)
        exc = reject(sw, payload, pages, dest, page_size)
        assert exc.name == name and exc.status == getattr(lib, name)
        assert exc.page == page and exc.reason
        if untouched:  # table rejected: no destination page written
            assert dest == sentinel
        return dest

    # payload not longer than its table
    check(build_payload([good, good, good])[:4 * n], "MFD_E_PAYLOAD_SHORT", n)
    check(b"", "MFD_E_PAYLOAD_SHORT", n)
    # a zero length (page 1), a length > page size (page 2)
    check(build_payload([good, b"", good]), "MFD_E_LEN_ZERO", 1)
    too_big = struct.pack(">3I", len(good), len(good), page_size + 1) + good + good + raw + b"x"
    check(too_big, "MFD_E_LEN_TOO_BIG", 2)
    # 4n + sum != payload length, both ways
    check(build_payload([good, raw, good]) + b"\0", "MFD_E_LEN_SUM", n)
    check(build_payload([good, raw, good])[:-1], "MFD_E_LEN_SUM", n)

    # stream problems on page 1: pages before it may be written, not after
    corrupt = b"\xff" * 40  # BTYPE 11: invalid block type
    check(build_payload([good, corrupt, good]), "MFD_E_INFLATE", 1, untouched=False)
    truncated = good[: len(good) // 2]
    check(build_payload([good, truncated, good]), "MFD_E_INFLATE", 1, untouched=False)
    short = raw_deflate(good_page[:-1])  # inflates to page_size - 1 bytes
    check(build_payload([good, short, good]), "MFD_E_INFLATE_SIZE", 1, untouched=False)
    long = raw_deflate(good_page + b"x")  # inflates to page_size + 1 bytes
    dest = check(build_payload([good, long, good]), "MFD_E_INFLATE_SIZE", 1, untouched=False)
    # page 1 (block page 1) overflowed: nothing written past it (block page 2)
    assert dest[2 * page_size:3 * page_size] == sentinel[:page_size]
    trailing = good + b"\0\0"
    check(build_payload([good, trailing, good]), "MFD_E_TRAILING", 1, untouched=False)

    # page index outside the block: rejected before any write
    dest = bytearray(sentinel)
    bad_pages = np.array([0, 4, 1], dtype=np.uint64)
    with pytest.raises(codec.PayloadRejected) as info:
        recv(codec.JobArray(3), sw, sw, build_payload([good, good, good]), bad_pages, dest, page_size)
    assert info.value.name == "MFD_E_PAGE_RANGE" and info.value.page == 1
    assert dest == sentinel


def test_qpl_recv_no_pages(sw):
    jobs = codec.JobArray(1)
    recv(jobs, sw, sw, b"", np.zeros(0, np.uint64), bytearray(4096), 4096)
    with pytest.raises(codec.PayloadRejected) as info:
        recv(jobs, sw, sw, b"\0" * 8, np.zeros(0, np.uint64), bytearray(4096), 4096)
    assert info.value.name == "MFD_E_LEN_SUM"


def test_qpl_recv_big_endian_page_array(rng, sw):
    """Page arrays straight off the wire (big-endian) are converted, not misread."""
    page_size = 4096
    block = make_block(rng, page_size, ["text", "random", "text"])
    pages = np.array([2, 0, 1], dtype=np.uint64)
    payload, _ = send(codec.JobArray(3), sw, sw, block, page_size, pages)
    dest = bytearray(len(block))
    recv(codec.JobArray(3), sw, sw, payload, pages.astype(">u8"), dest, page_size)
    assert dest == block


# ---------------------------------------------------------------------------
# a scripted "hardware" queue: busy answers, submit errors, failed jobs

class FakeHardwareQueue:
    """Runs jobs on a software queue, but answers busy/errors as scripted.

    ``busy(page_index_in_call, attempt)`` -> True for a busy answer;
    ``submit_error`` / ``wait_status``: {job number: status}.
    """

    def __init__(self, *, busy=lambda job, attempt: False, submit_error=None, wait_status=None):
        self.sw = codec.SoftwareQueue()
        self.busy = busy
        self.submit_error = submit_error or {}
        self.wait_status = wait_status or {}
        self.attempts: dict[int, int] = {}
        self.base = None
        self._cbs = (
            ffi.callback("int(void *, mfd_job *)", self._submit),
            ffi.callback("int(void *, mfd_job *)", self._check),
            ffi.callback("int(void *, mfd_job *)", self._wait),
        )
        self.handle = ffi.new("mfd_workqueue *")
        self.handle.submit, self.handle.check, self.handle.wait = self._cbs
        self.handle.is_hardware = 1

    def bind(self, jobs: codec.JobArray) -> None:
        self.base = int(ffi.cast("uintptr_t", jobs.handle))

    def _num(self, job) -> int:
        return (int(ffi.cast("uintptr_t", job)) - self.base) // ffi.sizeof("mfd_job")

    def _submit(self, ctx, job):
        k = self._num(job)
        attempt = self.attempts.get(k, 0)
        self.attempts[k] = attempt + 1
        if self.busy(k, attempt):
            return lib.MFD_BUSY
        if k in self.submit_error:
            return self.submit_error[k]
        s = self.sw.handle
        return s.submit(s.ctx, job)

    def _check(self, ctx, job):
        s = self.sw.handle
        return s.check(s.ctx, job)

    def _wait(self, ctx, job):
        s = self.sw.handle
        st = s.wait(s.ctx, job)
        return self.wait_status.get(self._num(job), st)


def test_busy_fallback_after_max_retries(rng, sw):
    page_size = 4096
    block = make_block(rng, page_size, ["text"] * 6)
    pages = np.arange(6, dtype=np.uint64)
    jobs = codec.JobArray(6)
    # page 1: busy twice then accepted; page 3: always busy -> fallback
    hw = FakeHardwareQueue(busy=lambda k, a: (k == 1 and a < 2) or k == 3)
    hw.bind(jobs)
    payload, stats = send(jobs, hw, sw, block, page_size, pages, max_retries=3)
    assert hw.attempts[1] == 3 and hw.attempts[3] == 4  # 1 + max_retries
    assert stats.busy == 2 + 4 and stats.retries == 2 + 3
    assert stats.sw_fallbacks == 1 and stats.hw_submitted == 5
    assert stats.compressed_pages == 6 and stats.raw_pages == 0
    for i, data in enumerate(parse_qpl(payload, 6)):
        assert inflate(data, -12) == bytes(block[i * page_size:(i + 1) * page_size])
    # receive through the same busy queue
    hw.attempts.clear()
    dest = bytearray(len(block))
    recv(jobs, hw, sw, payload, pages, dest, page_size, max_retries=3)
    assert dest == block and hw.attempts[3] == 4


def test_busy_retry_without_limit(rng, sw):
    page_size = 1024
    block = make_block(rng, page_size, ["text"] * 3)
    pages = np.arange(3, dtype=np.uint64)
    jobs = codec.JobArray(3)
    hw = FakeHardwareQueue(busy=lambda k, a: k == 2 and a < 50)
    hw.bind(jobs)
    payload, stats = send(jobs, hw, sw, block, page_size, pages, max_retries=3, busy_policy="retry")
    assert hw.attempts[2] == 51 and stats.retries == 50 and stats.busy == 50
    assert stats.sw_fallbacks == 0 and stats.hw_submitted == 3


def test_submit_error_and_failed_jobs(rng, sw):
    page_size = 4096
    kinds = ["text", "text", "random", "text", "text"]
    block = make_block(rng, page_size, kinds)
    pages = np.arange(5, dtype=np.uint64)
    jobs = codec.JobArray(5)
    hw = FakeHardwareQueue(submit_error={0: lib.MFD_E_PARAM},
                           wait_status={1: lib.MFD_E_HW, 3: 217})
    hw.bind(jobs)
    payload, stats = send(jobs, hw, sw, block, page_size, pages)
    lens = [len(d) for d in parse_qpl(payload, 5)]
    assert lens[0] < page_size  # submit error -> software fallback, compressed
    assert lens[1] == lens[2] == lens[3] == page_size  # failed jobs and random page: raw
    assert lens[4] < page_size
    assert stats.sw_fallbacks == 1 and stats.hw_errors == 2 and stats.raw_pages == 3
    assert stats.compressed_pages == 2 and stats.hw_submitted == 4
    dest = bytearray(len(block))
    recv(jobs, sw, sw, payload, pages, dest, page_size)
    assert dest == block
    # a hardware decompress failure on the receiver: rejected, names the page
    hw2 = FakeHardwareQueue(wait_status={4: 217})
    hw2.bind(jobs)
    with pytest.raises(codec.PayloadRejected) as info:
        recv(jobs, hw2, sw, payload, pages, bytearray(len(block)), page_size)
    assert info.value.page == 4 and info.value.status == 217


# ---------------------------------------------------------------------------
# none method, clear, compare, software codec, stats

@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_none_round_trip(rng, page_size):
    block = make_block(rng, page_size, ["text", "random", "zero", "tail"])
    pages = np.array([3, 0, 1], dtype=np.uint64)
    slot = bytearray(3 * page_size)
    assert codec.none_send_packet(block, page_size, pages, slot) == 3 * page_size
    assert slot == b"".join(bytes(block[p * page_size:(p + 1) * page_size]) for p in pages.tolist())
    dest = bytearray(len(block))
    codec.none_recv_packet(bytes(slot), pages, dest, page_size)
    codec.clear_pages(dest, page_size, np.array([2], np.uint64))
    assert dest == block


def test_none_rejects(rng):
    page_size = 4096
    dest = bytearray(2 * page_size)
    pages = np.array([0, 1], dtype=np.uint64)
    with pytest.raises(codec.PayloadRejected) as info:
        codec.none_recv_packet(b"\0" * (page_size + 1), pages, dest, page_size)
    assert info.value.name == "MFD_E_LEN_SUM"
    with pytest.raises(codec.PayloadRejected) as info:
        codec.none_recv_packet(b"\1" * (2 * page_size), np.array([1, 2], np.uint64), dest, page_size)
    assert info.value.name == "MFD_E_PAGE_RANGE" and info.value.page == 1
    assert dest == bytearray(2 * page_size)
    with pytest.raises(codec.PageIndexError):
        codec.none_send_packet(dest, page_size, np.array([2], np.uint64), bytearray(page_size))
    with pytest.raises(codec.PageIndexError):
        codec.clear_pages(dest, page_size, np.array([5], np.uint64))
    with pytest.raises(TypeError):  # read-only destination
        codec.clear_pages(bytes(dest), page_size, pages)


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_compare_pages(rng, page_size):
    a = np.frombuffer(make_block(rng, page_size, ["text"] * 20), dtype=np.uint8).copy()
    b = a.copy()
    planted = [0, 7, 8, 19]
    for p in planted:
        b[p * page_size + int(rng.integers(0, page_size))] ^= 0x10
    total, first = codec.compare_pages(a, b, page_size)
    assert total == 4 and first.tolist() == planted and first.dtype == np.uint64
    total, first = codec.compare_pages(a, b, page_size, max_report=2)
    assert total == 4 and first.tolist() == [0, 7]
    total, first = codec.compare_pages(memoryview(a), bytes(a), page_size, max_report=0)
    assert total == 0 and len(first) == 0
    with pytest.raises(ValueError):
        codec.compare_pages(a, b[:-1], page_size)


def test_software_codec(rng):
    c = codec.SoftwareCodec(level=1)
    page = text_page(rng, 4096)
    data = c.compress_page(page)
    assert data is not None and len(data) < 4096 and inflate(data, -12) == page
    assert c.decompress_page(data, 4096) == page
    assert c.compress_page(random_page(rng, 4096)) is None
    with pytest.raises(codec.PayloadRejected) as info:
        c.decompress_page(data + b"\0", 4096)
    assert info.value.name == "MFD_E_TRAILING"
    with pytest.raises(codec.PayloadRejected) as info:
        c.decompress_page(data, 4097)
    assert info.value.name == "MFD_E_INFLATE_SIZE"
    c.close()


def test_packet_stats_and_names():
    a = codec.PacketStats(normal_pages=3, compress_ns=10)
    b = codec.PacketStats(normal_pages=2, raw_pages=1, compress_ns=5)
    assert a.add(b) is a
    assert a.as_dict()["normal_pages"] == 5 and a.raw_pages == 1 and a.compress_ns == 15
    assert set(a.as_dict()) == {name for name, _ in ffi.typeof("mfd_packet_stats").fields}
    assert set(codec.codec_libraries()) <= {"isal", "libdeflate", "zlib"}
    assert codec.codec_name().endswith(" (decompress)")
    assert codec.status_name(lib.MFD_E_LEN_SUM) == "MFD_E_LEN_SUM"
    assert codec.status_name(217) == "status 217"


def test_closed_objects():
    jobs = codec.JobArray(2)
    jobs.close()
    jobs.close()
    q = codec.SoftwareQueue()
    q.close()
    with pytest.raises(ValueError):
        send(jobs, codec.SoftwareQueue(), codec.SoftwareQueue(), bytearray(4096), 4096,
             np.zeros(1, np.uint64))
    with pytest.raises(ValueError):
        send(codec.JobArray(1), q, q, bytearray(4096), 4096, np.zeros(1, np.uint64))


def test_hardware_more_output_is_raw_not_error(rng, sw):
    page_size = 4096
    block = make_block(rng, page_size, ["text"] * 3)
    jobs = codec.JobArray(3)
    hw = FakeHardwareQueue(wait_status={1: lib.MFD_MORE_OUTPUT})
    hw.bind(jobs)
    payload, stats = send(jobs, hw, sw, block, page_size, np.arange(3, dtype=np.uint64))
    assert [len(d) == page_size for d in parse_qpl(payload, 3)] == [False, True, False]
    assert stats.raw_pages == 1 and stats.hw_errors == 0 and stats.sw_errors == 0


def _import_codec_with(prelude: str) -> subprocess.CompletedProcess:
    # NativeBuildError is an ImportError: an importer can catch it as one
    code = (prelude + "\ntry:\n    import workers.codec\nexcept ImportError as exc:\n"
            "    raise SystemExit(f'ImportError ({type(exc).__name__}): {exc}')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).resolve().parent.parent)


def test_stale_build_is_refused():
    proc = _import_codec_with("import importlib.metadata as m; m.version = lambda name: '99.0'")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "stale" in proc.stderr and "pip install -e ." in proc.stderr


def test_missing_build_is_explained():
    proc = _import_codec_with("import sys; sys.modules['workers._native'] = None")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "pip install -e ." in proc.stderr


def test_recv_mutated_payloads_never_crash(rng, sw):
    """Random corruption of a good payload: decoded or PayloadRejected, nothing else."""
    page_size = 1024
    block = make_block(rng, page_size, ["text", "random", "text", "tail"])
    pages = np.arange(4, dtype=np.uint64)
    jobs = codec.JobArray(4)
    good, _ = send(jobs, sw, sw, block, page_size, pages)
    outcomes = set()
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            bad = bad[: int(rng.integers(0, len(bad)))]
        dest = bytearray(len(block) + 64)
        view = memoryview(dest)[: len(block)]
        try:
            recv(jobs, sw, sw, bytes(bad), pages, view, page_size)
            outcomes.add("ok")
        except codec.PayloadRejected as exc:
            outcomes.add(exc.name)
        assert dest[len(block):] == bytes(64)  # nothing past the block
    assert len(outcomes) > 2


def test_settings_that_disagree_with_the_c_constants_refuse_the_import():
    script = ("import workers.settings as s; s.BUSY_POLICIES['retry'] = 9; "
              "import workers.codec")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "NativeBuildError" in result.stderr
    assert "BUSY_POLICIES['retry'] (MFD_BUSY_RETRY) = 9 but the C constant is 1" in result.stderr
