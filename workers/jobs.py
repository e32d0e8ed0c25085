"""A worker's page jobs: its private job array, its work queue, and the
software queue that takes a page over when the work queue stays busy.

This is the engine's counterpart of the per-channel state QEMU's multifd-qpl
keeps: ``page_count`` jobs, one per page of a packet, a handle on the
accelerator, and one software job that is always there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers import codec
from workers.workqueue import WorkQueue, open_work_queue
from workers.workqueue.software import SoftwareWorkQueue

BUSY_POLICIES = ("fallback", "retry")


@dataclass
class JobSettings:
    accelerator: str = "software"
    max_submit_retries: int = 3
    busy_policy: str = "fallback"
    level: int = 1


class PageJobs:
    """Compress or decompress the normal pages of one packet per call."""

    def __init__(self, page_count: int, settings: JobSettings) -> None:
        if settings.busy_policy not in BUSY_POLICIES:
            raise ValueError(f"busy_policy {settings.busy_policy!r} not in {BUSY_POLICIES}")
        self.settings = settings
        self.jobs = codec.JobArray(page_count)
        self.queue: WorkQueue = open_work_queue(settings.accelerator, level=settings.level)
        self.fallback = SoftwareWorkQueue(level=settings.level)

    @property
    def path(self) -> str:
        """Which path runs the jobs (reported per worker)."""
        return self.queue.name

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
        self.fallback.close()
        self.queue.close()
        self.jobs.close()
