"""What a run migrates: seeded synthetic guest memory or a memory image.

``content`` makes the bytes of each synthetic page class, ``rounds`` the
page mix, the first fill and the precopy dirty rounds, ``images`` loads a
real guest's memory dump.
"""

from engine.workloads.images import load_image
from engine.workloads.rounds import PageCounts, PageMix, PrecopyRounds, dirty_count, fill_guest_memory

__all__ = ["PageCounts", "PageMix", "PrecopyRounds", "dirty_count", "fill_guest_memory", "load_image"]
