"""The software work queue: jobs run on the calling thread inside submit.

This is what QPL's software path does, so the per-packet loop is the same
for software and hardware; a software queue never answers busy.
"""

from __future__ import annotations

from workers import codec


class SoftwareWorkQueue:
    name = "software"
    is_hardware = False

    def __init__(self, *, level: int = 1) -> None:
        self._queue = codec.SoftwareQueue(level=level)
        self.handle = self._queue.handle

    def close(self) -> None:
        self._queue.close()
