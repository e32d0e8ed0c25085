"""When packets left, per channel, in time buckets of bounded number.

The coordinator records every packet it writes: when (the moment its
vectored write returned), on which channel, how many pages and bytes, and
how long the worker spent on zero-page detection and compression and the
coordinator on the write.  Packets are summed into buckets of
``bucket_seconds``; when a run outlasts ``max_buckets`` buckets, pairs of
buckets merge and the width doubles, so memory stays
``channels * max_buckets * len(FIELDS)`` numbers however long the run.

The clock starts at the first ``mark_round`` (or the first packet), so
worker start-up is not on the time axis.  Round starts and ends are kept
as marks.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

# what one bucket of one channel sums (ns: nanoseconds of that phase)
FIELDS = ("packets", "pages", "zero_pages", "payload_bytes", "wire_bytes",
          "zero_ns", "compress_ns", "write_ns")


class PacketTimeline:
    """Per-channel packet sums in time buckets; see the module docstring."""

    def __init__(self, channels: Sequence[int], *, bucket_seconds: float = 0.01, max_buckets: int = 200,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if max_buckets < 2 or max_buckets % 2:
            raise ValueError("max_buckets must be even and at least 2")
        self._clock = clock
        self._origin: float | None = None
        self._width = bucket_seconds
        self._max = max_buckets
        self._channels = list(channels)            # channel ids, in row order
        self._row = {channel: row for row, channel in enumerate(self._channels)}
        self._buckets = [[[0] * len(FIELDS) for _ in range(max_buckets)] for _ in self._channels]
        self._used = 0                 # buckets in use (the highest index + 1)
        self._last = 0.0               # seconds of the latest packet
        self._rounds: list[dict[str, Any]] = []     # {round, start, end}

    def _now(self) -> float:
        now = self._clock()
        if self._origin is None:
            self._origin = now
        return now - self._origin

    def mark_round(self, round_index: int) -> None:
        """A precopy round starts now."""
        self._rounds.append({"round": round_index, "start": self._now(), "end": None})

    def end_round(self) -> None:
        """The round marked last is sent (every channel's SYNC written)."""
        if self._rounds:
            self._rounds[-1]["end"] = self._now()

    def record(self, channel: int, pages: int, zero_pages: int, payload_bytes: int,
               wire_bytes: int, zero_ns: int, compress_ns: int, write_ns: int) -> None:
        """One packet was written to ``channel`` just now (called once per packet;
        positional, in FIELDS order after ``packets``, to keep it cheap)."""
        seconds = self._now()
        index = int(seconds / self._width)
        while index >= self._max:
            self._coarsen()
            index = int(seconds / self._width)
        bucket = self._buckets[self._row[channel]][index]
        # unrolled in FIELDS order: this runs once per packet in the coordinator
        bucket[0] += 1
        bucket[1] += pages
        bucket[2] += zero_pages
        bucket[3] += payload_bytes
        bucket[4] += wire_bytes
        bucket[5] += zero_ns
        bucket[6] += compress_ns
        bucket[7] += write_ns
        self._used = max(self._used, index + 1)
        self._last = max(self._last, seconds)

    def _coarsen(self) -> None:
        """Merge bucket pairs: half as many buckets, twice as wide."""
        half = self._max // 2
        for rows in self._buckets:
            merged = [[a + b for a, b in zip(rows[2 * i], rows[2 * i + 1])] for i in range(half)]
            rows[:] = merged + [[0] * len(FIELDS) for _ in range(half)]
        self._width *= 2
        self._used = -(-self._used // 2)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report: buckets up to the last one used."""
        return {
            "bucket_seconds": self._width,
            "seconds": self._last,
            "fields": list(FIELDS),
            "rounds": [dict(r) for r in self._rounds],
            "channels": [{"channel": c, "buckets": [list(b) for b in rows[:self._used]]}
                         for c, rows in zip(self._channels, self._buckets)],
        }
