"""Work queues: what runs a worker's page jobs.

Every kind exposes the same small surface, the one the per-packet C loop
uses (submit all jobs of a packet, then wait for each):

    name         which path this is: "software", "emulated", "iaa",
                 "qpl-software" (QPL's CPU path, the fallback next to "iaa")
    is_hardware  True for IAA and its emulation (busy answers possible)
    handle       the ``mfd_workqueue *`` the C loop drives
    close()      release it

``open_work_queues`` turns the config's ``accelerator`` into the queue that
runs the jobs, the software queue that takes a page over when it stays
busy, and a sentence saying why this path was taken:

    software   the engine's software path (native DEFLATE, 4 KiB window)
    emulated   the emulated IAA device (``workers.workqueue.emulated``),
               software fallback as above
    iaa        real IAA through libqpl: page_count hardware jobs, QPL's
               software job as the fallback (QEMU's multifd-qpl); a clear
               ``AcceleratorError`` where there is none
    auto       iaa when libqpl loads and the hardware probe passes (the
               probe needs a usable work queue), else software
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import AcceleratorError
from workers.settings import ACCELERATORS


class WorkQueue(Protocol):
    name: str
    is_hardware: bool
    handle: object

    def close(self) -> None: ...


@dataclass
class OpenedQueues:
    """The queues of one PageJobs and why they were chosen."""

    queue: WorkQueue
    fallback: WorkQueue
    reason: str
    owned: list[Any] = field(default_factory=list)   # closed after the queues

    def close(self) -> None:
        for thing in [self.fallback, self.queue, *self.owned]:
            thing.close()


def open_work_queues(accelerator: str, *, page_count: int, level: int = 1, device: str = "",
                     qpl_library: str = "") -> OpenedQueues:
    """The queues for ``accelerator`` (see the module docstring).

    ``device`` is the control segment of an emulated device to attach to;
    without one, ``emulated`` starts a private device in this process.
    ``qpl_library`` overrides where libqpl is looked for.
    """
    from workers.codec import SoftwareQueue  # the native build: not needed to read settings

    if accelerator == "software":
        return OpenedQueues(SoftwareQueue(level), SoftwareQueue(level), "accelerator = \"software\"")
    if accelerator == "emulated":
        return _emulated(device, page_count, level)
    if accelerator in ("iaa", "auto"):
        try:
            return _iaa(qpl_library, page_count)
        except AcceleratorError as exc:
            if accelerator == "iaa":
                raise AcceleratorError(f"accelerator = \"iaa\" but {exc}", status=exc.status) from None
            return OpenedQueues(SoftwareQueue(level), SoftwareQueue(level), f"auto: {exc}")
    raise ValueError(f"unknown accelerator {accelerator!r}; expected one of {ACCELERATORS}")


def _emulated(device: str, page_count: int, level: int) -> OpenedQueues:
    from workers.codec import SoftwareQueue
    from workers.workqueue.emulated import EmulatedDevice, EmulatedWorkQueue

    owned: list[Any] = []
    if not device:
        private = EmulatedDevice(clients=1, page_count=page_count)
        owned.append(private)
        device = private.name
    try:
        queue = EmulatedWorkQueue(device, page_count)
    except BaseException:
        for thing in owned:
            thing.close()
        raise
    reason = "emulated IAA device" + (" (private to this queue)" if owned else "")
    return OpenedQueues(queue, SoftwareQueue(level), reason, owned)


def _iaa(qpl_library: str, page_count: int) -> OpenedQueues:
    from workers.workqueue.qpl import probe_iaa

    library = probe_iaa(qpl_library).require()
    fallback = library.queue(hardware=False, page_count=1)
    try:
        queue = library.queue(hardware=True, page_count=page_count)
    except BaseException:
        fallback.close()
        raise
    return OpenedQueues(queue, fallback, f"libqpl {library.version} ({library.path}), IAA probe passed")
