"""engine.workloads: synthetic guest memory and precopy rounds."""

from __future__ import annotations

import hashlib
import time
import zlib

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.ram import RamBlock
from engine.workloads import PageCounts, PageMix, PrecopyRounds, dirty_count, fill_guest_memory

PAGE = 4096


def deflate1(page: bytes) -> int:
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    return len(c.compress(page) + c.flush())


def digest(block: RamBlock) -> str:
    return hashlib.sha256(block.buf).hexdigest()


@pytest.fixture(scope="module")
def filled16():
    """16 MiB of default-mix memory, seed 1, and its counts."""
    with RamBlock.create("pc.ram", 16 << 20, PAGE) as block:
        counts = fill_guest_memory(block, seed=1)
        yield block, counts


# -- mix ----------------------------------------------------------------------


def test_measured_mix_matches_real_guests(filled16):
    block, counts = filled16
    pages = block.array.reshape(block.pages, PAGE)
    assert counts == PageCounts(zero=614, same_byte=287, incompressible=328, text=1024, code=819, heap=1024)
    assert counts.total == block.pages

    zero = ~pages.any(axis=1)
    same = (pages == pages[:, :1]).all(axis=1) & ~zero
    sizes = np.array([deflate1(pages[i].tobytes()) for i in range(block.pages)])
    nofit = sizes >= PAGE - 1

    assert 0.09 <= zero.mean() <= 0.20
    assert 0.04 <= same.mean() <= 0.12
    assert 0.04 <= nofit.mean() <= 0.16
    assert zero.sum() == counts.zero and same.sum() == counts.same_byte
    assert (pages[same, 0] == 0xCC).mean() > 0.5  # mostly the init poison

    rest = sizes[~zero & ~same & ~nofit]
    assert 1300 <= np.median(rest) <= 1700
    # A spread, not one size (the wl3 guest: p10 212 .. p90 2702 over non-zero pages).
    p10, p90 = np.percentile(rest, [10, 90])
    assert p10 < 900 and p90 > 2000


def test_pages_are_not_copies_of_each_other(filled16):
    block, _ = filled16
    pages = block.array.reshape(block.pages, PAGE)
    data = pages[pages.any(axis=1) & ~(pages == pages[:, :1]).all(axis=1)]
    unique = {hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in data}
    assert len(unique) == len(data)


# -- determinism ------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes():
    with RamBlock.create("a", 1 << 20, PAGE) as a, RamBlock.create("b", 1 << 20, PAGE) as b:
        b.array[:] = 0xEE  # fill writes every page, whatever was there
        ca = fill_guest_memory(a, seed=42)
        cb = fill_guest_memory(b, seed=42)
        assert ca == cb
        assert digest(a) == digest(b)
        fill_guest_memory(b, seed=43)
        assert digest(a) != digest(b)
        differ = (a.array.reshape(-1, PAGE) != b.array.reshape(-1, PAGE)).any(axis=1)
        assert differ.mean() > 0.8


@pytest.mark.parametrize("page_size", [512, 1024, 16384, 65536])
def test_other_page_sizes(page_size):
    with RamBlock.create("pc.ram", 2 << 20, page_size) as block:
        counts = fill_guest_memory(block, seed=7)
        assert counts.total == block.pages
        pages = block.array.reshape(block.pages, page_size)
        zero = ~pages.any(axis=1)
        same = (pages == pages[:, :1]).all(axis=1) & ~zero
        assert zero.sum() == counts.zero and same.sum() == counts.same_byte
        assert abs(zero.mean() - 0.15) < 0.01
        sample = np.flatnonzero(~zero & ~same)[:64]
        sizes = [deflate1(pages[i].tobytes()) for i in sample]
        assert max(sizes) >= page_size  # some incompressible
        assert min(sizes) < page_size * 0.6  # some data compresses


def test_custom_mix_and_validation():
    with RamBlock.create("pc.ram", 64 * PAGE, PAGE) as block:
        counts = fill_guest_memory(block, seed=1, mix=PageMix.from_dict({"same_byte": 0.5, "text": 0.5}))
        assert (counts.same_byte, counts.text, counts.zero) == (32, 32, 0)
        fill_guest_memory(block, seed=1, mix=PageMix(0, 0, 0, 0, 0, 1))
        assert block.array.any()
        counts = fill_guest_memory(block, seed=1, mix=PageMix.from_dict({"zero": 1}))
        assert counts.zero == 64 and not block.array.any()
    assert PageMix.from_dict({}) == PageMix()
    with pytest.raises(ConfigError) as info:
        PageMix.from_dict({"zero": 0.5, "texts": 0.5})
    assert info.value.key == "workload.mix.texts"
    with pytest.raises(ConfigError) as info:
        PageMix(zero=0.2)
    assert info.value.key == "workload.mix"
    with pytest.raises(ConfigError) as info:
        PageMix.from_dict({"zero": -0.1, "text": 1.1})
    assert info.value.key == "workload.mix.zero"
    with pytest.raises(ConfigError) as info:
        PageMix.from_dict({"zero": "half"})
    assert info.value.key == "workload.mix.zero"
    with pytest.raises(ConfigError):
        fill_guest_memory(None, seed=-1)


def test_fill_speed():
    with RamBlock.create("pc.ram", 64 << 20, PAGE) as block:
        started = time.perf_counter()
        fill_guest_memory(block, seed=9)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"64 MiB took {elapsed:.2f} s"


# -- precopy rounds -----------------------------------------------------------------


def test_dirty_count():
    assert dirty_count(1000, 0.0) == 0
    assert dirty_count(1000, 1e-9) == 1
    assert dirty_count(1000, 0.05) == 50
    assert dirty_count(1000, 1.0) == 1000
    with pytest.raises(ConfigError) as info:
        dirty_count(1000, 1.5)
    assert info.value.key == "workload.dirty_fraction"


def test_precopy_rounds(filled16):
    block, _ = filled16
    rounds = PrecopyRounds(block, seed=5, dirty_fraction=0.05, hot_fraction=0.1, hot_share=0.8)
    first = rounds.batch(0)
    assert first.dtype == np.uint64 and np.array_equal(first, np.arange(block.pages))
    hot = set(rounds.hot.tolist())
    assert len(hot) == round(block.pages * 0.1)
    seen = []
    for r in (1, 2, 3):
        before = block.array.reshape(block.pages, PAGE).copy()
        batch = rounds.batch(r)
        after = block.array.reshape(block.pages, PAGE)
        assert batch.dtype == np.uint64
        assert np.all(np.diff(batch.astype(np.int64)) > 0)  # sorted, unique
        assert batch.size == dirty_count(block.pages, 0.05)
        from_hot = np.mean([int(i) in hot for i in batch])
        assert 0.75 <= from_hot <= 0.9
        changed = np.flatnonzero((before != after).any(axis=1))
        assert set(changed.tolist()) <= set(batch.tolist())  # nothing else touched
        assert len(changed) / batch.size > 0.8  # dirty pages really change
        seen.append(batch)
    assert not np.array_equal(seen[0], seen[1])
    with pytest.raises(ValueError):
        rounds.batch(2)
    with pytest.raises(ValueError):
        rounds.batch(5)


def test_precopy_rounds_are_deterministic():
    results = []
    for _ in range(2):
        with RamBlock.create("pc.ram", 4 << 20, PAGE) as block:
            fill_guest_memory(block, seed=3)
            rounds = PrecopyRounds(block, seed=3, dirty_fraction=0.1)
            batches = [rounds.batch(r) for r in range(4)]
            results.append((digest(block), batches))
    (d1, b1), (d2, b2) = results
    assert d1 == d2
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))


def test_precopy_pages_change_class():
    with RamBlock.create("pc.ram", 2 << 20, PAGE) as block:
        fill_guest_memory(block, seed=8)
        pages = block.array.reshape(block.pages, PAGE)
        zero_before = ~pages.any(axis=1)
        rounds = PrecopyRounds(block, seed=8, dirty_fraction=0.5, hot_fraction=0.0)
        rounds.batch(0)
        batch = rounds.batch(1).astype(np.int64)
        zero_after = ~pages.any(axis=1)
        assert (zero_before[batch] & ~zero_after[batch]).any()  # zero -> data
        assert (~zero_before[batch] & zero_after[batch]).any()  # data -> zero


def test_precopy_validation_and_edges():
    with RamBlock.create("pc.ram", 8 * PAGE, PAGE) as block:
        for key, kwargs in [
            ("workload.dirty_fraction", {"dirty_fraction": -0.1}),
            ("workload.hot_fraction", {"hot_fraction": 2}),
            ("workload.hot_share", {"hot_share": float("nan")}),
        ]:
            with pytest.raises(ConfigError) as info:
                PrecopyRounds(block, seed=1, **kwargs)
            assert info.value.key == key
        rounds = PrecopyRounds(block, seed=1, dirty_fraction=0.01)  # < 1 page: still one
        rounds.batch(0)
        assert rounds.batch(1).size == 1
        none = PrecopyRounds(block, seed=1, dirty_fraction=0.0)
        none.batch(0)
        assert none.batch(1).size == 0 and none.batch(1 + 1).dtype == np.uint64
        everything = PrecopyRounds(block, seed=1, dirty_fraction=1.0, hot_fraction=1.0)
        everything.batch(0)
        assert np.array_equal(everything.batch(1), np.arange(8, dtype=np.uint64))
