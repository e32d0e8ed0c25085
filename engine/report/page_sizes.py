"""How big pages are on the wire: a histogram of per-page payload lengths.

A ``qpl`` payload starts with one big-endian u32 length per normal page
(spec §4.4), so each packet's sizes are known without touching a page.
The worker that built the payload turns that table into ``BUCKETS + 1``
counts with numpy (one call per packet, no per-page Python loop) and sends
them in its Result stats; the coordinator adds them up in a
``PageSizeHistogram``.

Bucket ``i < BUCKETS`` counts pages whose payload length ``L`` satisfies
``i * page_size / BUCKETS <= L < (i + 1) * page_size / BUCKETS``; the last
bucket counts pages sent raw (``L == page_size``).  Zero pages have no
payload and are counted apart.  Stream methods (zlib, zstd) compress a
packet as one stream, so they have no per-page sizes at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BUCKETS = 32          # compressed sizes; one more bucket holds the raw pages
STATS_KEY = "size_hist"
_COUNT = np.dtype("<u4")
_PACKED = (BUCKETS + 1) * _COUNT.itemsize


def packet_histogram(length_table: Any, normal_pages: int, page_size: int) -> bytes:
    """Counts per bucket of one qpl payload's length table: ``BUCKETS + 1`` little-endian u32.

    Bytes rather than a list: the coordinator sums them with one numpy call
    per batch of packets instead of converting Python ints.
    """
    lengths = np.frombuffer(length_table, dtype=">u4", count=normal_pages).astype(np.int64)
    buckets = np.minimum(lengths * BUCKETS // page_size, BUCKETS)
    return np.bincount(buckets, minlength=BUCKETS + 1).astype(_COUNT).tobytes()


def histogram_counts(raw: bytes) -> list[int]:
    """The counts ``packet_histogram`` packed."""
    return np.frombuffer(raw, dtype=_COUNT).tolist()


class PageSizeHistogram:
    """The sum of the per-packet histograms of one engine (coordinator side).

    ``add`` runs once per packet in the coordinator, so it only queues the
    counts; they are summed with numpy every ``_BATCH`` packets.
    """

    _BATCH = 256

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._counts = np.zeros(BUCKETS + 1, dtype=np.int64)
        self._pending: list[bytes] = []
        self._packets = 0

    def add(self, packed: bytes) -> None:
        """One packet's ``packet_histogram``."""
        if not isinstance(packed, bytes) or len(packed) != _PACKED:
            raise ValueError(f"a packed page-size histogram is {_PACKED} bytes")
        self._pending.append(packed)
        self._packets += 1
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = np.frombuffer(b"".join(self._pending), dtype=_COUNT).reshape(-1, BUCKETS + 1)
            self._counts += table.sum(axis=0, dtype=np.int64)
            self._pending.clear()

    def as_dict(self) -> dict[str, Any]:
        """``per_page`` is False when no packet carried per-page sizes."""
        self._flush()
        return {"bucket_bytes": self.page_size / BUCKETS, "page_size": self.page_size,
                "per_page": self._packets > 0,
                "compressed": self._counts[:BUCKETS].tolist(), "raw": int(self._counts[BUCKETS])}
