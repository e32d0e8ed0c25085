"""How big pages are on the wire: a histogram of per-page payload lengths.

A method with a length table (``Method.page_length_table``; ``qpl``, spec
§4.4) starts its payload with one big-endian u32 length per normal page,
so each packet's sizes are known without touching a page.  The
coordinator, which holds the payload while it writes the packet, keeps a
copy of that table (4 bytes a page) and buckets the queued tables with
numpy every ``_BATCH`` packets: the method's hot path does nothing for
the report.

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


def bucket_counts(length_tables: bytes, page_size: int) -> np.ndarray:
    """Pages per bucket of one or more concatenated length tables: ``BUCKETS + 1`` counts."""
    lengths = np.frombuffer(length_tables, dtype=">u4").astype(np.int64)
    buckets = np.minimum(lengths * BUCKETS // page_size, BUCKETS)
    return np.bincount(buckets, minlength=BUCKETS + 1)


class PageSizeHistogram:
    """The page sizes of every packet one engine sent (coordinator side).

    ``add`` runs once per packet in the coordinator, so it only queues the
    table; the queued tables are bucketed with numpy every ``_BATCH`` packets.
    """

    _BATCH = 32     # packets; the numpy temporaries take 8 bytes a page of a batch

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._counts = np.zeros(BUCKETS + 1, dtype=np.int64)
        self._pending: list[bytes] = []
        self._packets = 0

    def add(self, length_table: memoryview, normal_pages: int) -> None:
        """One packet's payload, which starts with ``normal_pages`` BE u32 lengths."""
        self._pending.append(bytes(length_table[:4 * normal_pages]))
        self._packets += 1
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._counts += bucket_counts(b"".join(self._pending), self.page_size)
            self._pending.clear()

    def as_dict(self) -> dict[str, Any]:
        """``per_page`` is False when no packet carried per-page sizes."""
        self._flush()
        return {"bucket_bytes": self.page_size / BUCKETS, "page_size": self.page_size,
                "per_page": self._packets > 0,
                "compressed": self._counts[:BUCKETS].tolist(), "raw": int(self._counts[BUCKETS])}
