"""Work queues: what runs a worker's page jobs.

Every kind exposes the same small surface, the one the per-packet C loop
uses (submit all jobs of a packet, then wait for each):

    name         which path this is ("software", later "emulated", "iaa")
    is_hardware  True for IAA and its emulation (busy answers possible)
    handle       the ``mfd_workqueue *`` the C loop drives
    close()      release it

``open_work_queue`` picks one from the config's ``accelerator`` value.
"""

from __future__ import annotations

from typing import Protocol

from workers.workqueue.software import SoftwareWorkQueue

ACCELERATORS = ("auto", "software")


class WorkQueue(Protocol):
    name: str
    is_hardware: bool
    handle: object

    def close(self) -> None: ...


def open_work_queue(accelerator: str, *, level: int = 1) -> WorkQueue:
    """The work queue for ``accelerator``; ValueError for an unknown one.

    ``auto`` means: the best path this machine has.  Until the IAA path
    exists that is the software path.
    """
    if accelerator in ("auto", "software"):
        return SoftwareWorkQueue(level=level)
    raise ValueError(f"unknown accelerator {accelerator!r}; expected one of {ACCELERATORS}")
