"""A worker's page jobs: its private job array, its work queue, and the
software queue that takes a page over when the work queue stays busy.

This is the engine's counterpart of the per-channel state QEMU's multifd-qpl
keeps: ``page_count`` jobs, one per page of a packet, a handle on the
accelerator, and one software job that is always there.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from workers import codec
from workers.settings import BUSY_POLICIES, JobSettings
from workers.workqueue import WorkQueue, open_work_queues


class PageJobs:
    """Compress or decompress the normal pages of one packet per call."""

    def __init__(self, page_count: int, settings: JobSettings) -> None:
        if settings.busy_policy not in BUSY_POLICIES:
            raise ValueError(f"busy_policy {settings.busy_policy!r} not in {tuple(BUSY_POLICIES)}")
        self.settings = settings
        self.jobs = codec.JobArray(page_count)
        try:
            self._queues = open_work_queues(
                settings.accelerator, page_count=page_count, level=settings.level,
                device=settings.device, qpl_library=settings.qpl_library)
        except BaseException:
            self.jobs.close()
            raise
        self.queue: WorkQueue = self._queues.queue
        self.fallback: WorkQueue = self._queues.fallback

    @property
    def path(self) -> str:
        """Which path runs the jobs (reported per worker)."""
        return self.queue.name

    @property
    def path_reason(self) -> str:
        """Why that path (e.g. why ``auto`` stayed on software)."""
        return self._queues.reason

    def map_shared_memory(self, segments: Iterable[tuple[str, Any]]) -> None:
        """Tell a device-backed queue where the shared segments (name, buffer) lie.

        A worker calls this with its RAM blocks and output slots, so jobs
        on them reach the emulated device as segment offsets.
        """
        mapper = getattr(self.queue, "map_shared_memory", None)
        if mapper is not None:
            for name, buf in segments:
                mapper(name, buf)

    def compress(self, block, page_size: int, pages: np.ndarray, slot) -> tuple[int, codec.PacketStats]:
        """qpl payload of ``pages`` (normal pages only) into ``slot``; returns its size."""
        return codec.qpl_send_packet(
            self.jobs, self.queue.handle, self.fallback.handle,
            max_retries=self.settings.max_submit_retries,
            busy_policy=self.settings.busy_policy,
            block=block, page_size=page_size, pages=pages, slot=slot,
        )

    def decompress(self, payload, pages: np.ndarray, block, page_size: int) -> None:
        """Decode a qpl payload into ``block``; raises codec.PayloadRejected."""
        codec.qpl_recv_packet(
            self.jobs, self.queue.handle, self.fallback.handle,
            max_retries=self.settings.max_submit_retries,
            payload=payload, pages=pages, block=block, page_size=page_size,
        )

    def close(self) -> None:
        self._queues.close()
        self.jobs.close()
