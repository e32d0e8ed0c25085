"""The page mix and precopy dirty rounds of a synthetic guest.

:func:`fill_guest_memory` writes every page of a :class:`~engine.ram.RamBlock`
with a seeded page mix that follows real guest memory
(``engine.workloads.content`` makes the bytes), and :class:`PrecopyRounds`
produces the dirty batches of a precopy migration (round 0 sends every page,
later rounds dirty a fraction of the pages, mostly from a hot set, and
rewrite them in place).

Default mix (:class:`PageMix`)
------------------------------

==============  =======  ==================================================
class           share    why
==============  =======  ==================================================
zero            15 %     middle of the measured 9-20 %: never-touched and
                         freed-and-cleared memory
same_byte        7 %     middle of 4-12 %: 0xCC init poison (70 % of these
                         pages), slab poison 0x6B/0xA5, 0xFF, 0x5A
incompressible   8 %     middle of 4-16 %: random bytes (keys, hashes,
                         gzip/zstd file-cache pages); never fit in a page
text            25 %     page cache of text files: prose and changelogs,
                         kernel/syslog lines, source code, NUL-separated
                         string tables; ~1.1-1.9 KiB (p10-p90)
code            20 %     x86-64 instruction streams (prologues, calls,
                         int3/nop padding, jump tables); the least
                         compressible data, ~2.0-2.5 KiB
heap            25 %     structs of pointers, small ints, counters, flags,
                         floats and free (zero) slots, from sparse (~0.2
                         KiB) to dense (~1.8 KiB)
==============  =======  ==================================================

Measured on 16 MiB of 4 KiB pages with the default mix: the data pages
(text, code, heap) have a median raw DEFLATE-1 size of ~1.45-1.5 KiB (p10
~0.5 KiB, p90 ~2.3 KiB); over all non-zero pages p10/p25/p50/p75/p90 are about
0.2/0.9/1.5/2.1/2.65 KiB, against the wl3 guest's 0.21/0.68/1.31/1.90/2.70.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError
from engine.workloads.content import CLASSES, Pools, seeded_rng, split_counts, write_pages

if TYPE_CHECKING:  # pragma: no cover
    from engine.ram import RamBlock

__all__ = ["PageMix", "PageCounts", "fill_guest_memory", "PrecopyRounds", "dirty_count"]

# Stream tags: every random stream is PCG64 seeded from (tag, seed[, round]).
_TAG_FILL = 0x46494C4C  # "FILL"
_TAG_HOT = 0x484F5421  # "HOT!"
_TAG_ROUND = 0x524F4E44  # "ROND"


# --------------------------------------------------------------------------
# Parameters


def _check_fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(key, f"must be a number between 0 and 1, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must be between 0 and 1, got {value!r}")
    return value


@dataclass(frozen=True)
class PageMix:
    """Fractions of pages per class; they must sum to 1."""

    zero: float = 0.15
    same_byte: float = 0.07
    incompressible: float = 0.08
    text: float = 0.25
    code: float = 0.20
    heap: float = 0.25

    def __post_init__(self) -> None:
        total = 0.0
        for name in CLASSES:
            value = _check_fraction(f"workload.mix.{name}", getattr(self, name))
            object.__setattr__(self, name, value)
            total += value
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                "workload.mix",
                f"fractions must sum to 1, they sum to {total:.6g} "
                f"({', '.join(f'{n}={getattr(self, n):g}' for n in CLASSES)})",
            )

    @classmethod
    def from_dict(cls, d: dict) -> "PageMix":
        """Build from a config table.  Keys not given are 0; an empty table is the default mix."""
        if not isinstance(d, dict):
            raise ConfigError("workload.mix", f"must be a table, got {type(d).__name__}")
        for key in d:
            if key not in CLASSES:
                raise ConfigError(
                    f"workload.mix.{key}", f"unknown page class (known: {', '.join(CLASSES)})"
                )
        if not d:
            return cls()
        return cls(**{name: d.get(name, 0.0) for name in CLASSES})

    def as_dict(self) -> dict:
        return asdict(self)

    def fractions(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in CLASSES], dtype=np.float64)


@dataclass
class PageCounts:
    """How many pages of each class were written."""

    zero: int = 0
    same_byte: int = 0
    incompressible: int = 0
    text: int = 0
    code: int = 0
    heap: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict:
        return asdict(self)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError("workload.seed", f"must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if seed < 0:
        raise ConfigError("workload.seed", f"must be a non-negative integer, got {seed}")
    return seed


def dirty_count(pages: int, dirty_fraction: float) -> int:
    """Pages dirtied per round: round(pages * fraction), at least 1 when fraction > 0."""
    fraction = _check_fraction("workload.dirty_fraction", dirty_fraction)
    pages = int(pages)
    if pages <= 0 or fraction == 0.0:
        return 0
    return min(pages, max(1, int(math.floor(pages * fraction + 0.5))))


def _classes_for(n: int, mix: PageMix, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    counts = split_counts(n, mix.fractions())
    classes = np.repeat(np.arange(len(CLASSES), dtype=np.int8), counts)
    return rng.permutation(classes), counts


def _pages2d(block: "RamBlock") -> np.ndarray:
    arr = block.array
    return arr[: block.pages * block.page_size].reshape(block.pages, block.page_size)


def fill_guest_memory(block: "RamBlock", *, seed: int, mix: PageMix = PageMix()) -> PageCounts:
    """Write every page of ``block`` with seeded synthetic guest memory; counts per class."""
    seed = _check_seed(seed)
    if not isinstance(mix, PageMix):
        raise ConfigError("workload.mix", f"must be a PageMix, got {type(mix).__name__}")
    pages2d = _pages2d(block)
    rng = seeded_rng(_TAG_FILL, seed)
    classes, counts = _classes_for(block.pages, mix, rng)
    write_pages(pages2d, np.arange(block.pages, dtype=np.int64), classes, Pools(seed), rng)
    return PageCounts(**{name: int(c) for name, c in zip(CLASSES, counts)})


class PrecopyRounds:
    """Round 0 sends every page; each later round mutates a fraction of the pages (drawn mostly from a hot set) and sends only those.

    The hot set is a fixed, seeded ``hot_fraction`` of the pages.  Each round
    ``r > 0`` dirties ``dirty_count(pages, dirty_fraction)`` distinct pages:
    ``hot_share`` of them from the hot set (as far as it reaches), the rest
    from the other pages, and rewrites them in place with fresh content drawn
    from ``mix`` (so pages change class: zero -> data, data -> zero, ...).
    Round ``r`` depends only on the seed and ``r`` (and the earlier rounds
    having run), so two instances with the same seed produce the same bytes.
    """

    def __init__(
        self,
        block: "RamBlock",
        *,
        seed: int,
        dirty_fraction: float = 0.05,
        hot_fraction: float = 0.1,
        hot_share: float = 0.8,
        mix: PageMix = PageMix(),
    ) -> None:
        self.block = block
        self.seed = _check_seed(seed)
        self.dirty_fraction = _check_fraction("workload.dirty_fraction", dirty_fraction)
        self.hot_fraction = _check_fraction("workload.hot_fraction", hot_fraction)
        self.hot_share = _check_fraction("workload.hot_share", hot_share)
        if not isinstance(mix, PageMix):
            raise ConfigError("workload.mix", f"must be a PageMix, got {type(mix).__name__}")
        self.mix = mix
        self.pages = block.pages
        hot_n = 0 if self.hot_fraction == 0 else max(1, int(math.floor(self.pages * self.hot_fraction + 0.5)))
        hot_n = min(hot_n, self.pages)
        hot_rng = seeded_rng(_TAG_HOT, self.seed)
        self.hot = np.sort(hot_rng.choice(self.pages, size=hot_n, replace=False)).astype(np.int64)
        self.per_round = dirty_count(self.pages, self.dirty_fraction)
        self._next = 0
        self._pools: Pools | None = None

    def batch(self, round_index: int) -> np.ndarray:
        """Sorted unique uint64 page indices of round ``round_index``'s dirty batch."""
        if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)):
            raise TypeError(f"round index must be an integer, got {round_index!r}")
        r = int(round_index)
        if r != self._next:
            raise ValueError(f"precopy round {r} asked for, round {self._next} is next (rounds run in order)")
        if r == 0:
            self._next = 1
            return np.arange(self.pages, dtype=np.uint64)
        rng = seeded_rng(_TAG_ROUND, self.seed, r)
        index = self._pick(rng)
        if index.size:
            if self._pools is None:
                self._pools = Pools(self.seed)
            classes, _ = _classes_for(index.size, self.mix, rng)
            write_pages(_pages2d(self.block), index, classes, self._pools, rng)
        self._next = r + 1
        return index.astype(np.uint64)

    def _pick(self, rng: np.random.Generator) -> np.ndarray:
        n = self.per_round
        if n == 0:
            return np.empty(0, np.int64)
        n_hot = min(int(math.floor(n * self.hot_share + 0.5)), self.hot.size)
        hot = np.sort(self.hot[rng.choice(self.hot.size, size=n_hot, replace=False)]) if n_hot else np.empty(0, np.int64)
        n_cold = n - n_hot
        # Cold pages: ranks among the pages not already picked, mapped back to
        # page numbers (no big "available" array is built).
        ranks = np.sort(rng.choice(self.pages - n_hot, size=n_cold, replace=False)).astype(np.int64)
        shifted = hot - np.arange(n_hot, dtype=np.int64)
        cold = ranks + np.searchsorted(shifted, ranks, side="right")
        return np.sort(np.concatenate([hot, cold]))
