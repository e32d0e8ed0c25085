"""The accelerator side of a run: which work-queue settings workers and
readers get, and the emulated IAA device they share.

A real host has one set of IAA devices that every migration channel shares;
the emulated device stands for them, so an Engine starts one device for
all its workers (and a receiver one for all its readers), and hands them
its name through ``JobSettings.device``.  ``accelerator = "iaa"`` is
checked here, in the Engine's process, before any worker starts, so a host
without IAA gets one clear ``AcceleratorError`` instead of one per worker.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace

from engine import methods, wire
from engine.config import Config
from engine.errors import AcceleratorError
from workers.settings import FaultSettings, JobSettings
from workers.workqueue.emulated import EmulatedDevice

# places for queues attached while a dead worker's place still has jobs with the device
_SPARE_CLIENTS = 8


def uses_work_queue(method: str) -> bool:
    """Does ``method`` run its pages on PageJobs (and so on an accelerator)?"""
    return methods.get(method).uses_work_queue


def require_iaa(qpl_library: str) -> None:
    """Raise ``AcceleratorError`` unless libqpl loads and its IAA probe passes."""
    from workers.workqueue.qpl import probe_iaa

    probe = probe_iaa(qpl_library)
    if probe.usable:
        return
    hint = "" if probe.version is None else "; `multifd-engine doctor` shows the devices and work queues"
    raise AcceleratorError(f"accelerator = \"iaa\" but {probe.problem()}{hint}", status=probe.probe)


def send_jobs(config: Config, stack: ExitStack, channels: int) -> tuple[JobSettings, EmulatedDevice | None]:
    """Job settings for an Engine's workers, and the device they share (if emulated).

    The device is entered into ``stack``: it stops when the stack closes,
    after the workers (entered later) are gone.
    """
    return _jobs(config, stack, channels, faults=config.emulator.faults)


def receive_jobs(config: Config, stack: ExitStack, channels: int) -> tuple[JobSettings, EmulatedDevice | None]:
    """The same for a receiver's readers: the destination host's own device.

    Faults are injected on the sending side only: a receiver that meets a
    failed decompression must stop the migration, as QEMU does.
    """
    return _jobs(config, stack, channels, faults=FaultSettings())


def _jobs(config: Config, stack: ExitStack, channels: int,
          faults: FaultSettings) -> tuple[JobSettings, EmulatedDevice | None]:
    m = config.migration
    jobs = m.jobs
    if not uses_work_queue(m.method):
        return jobs, None
    if m.accelerator == "iaa":
        require_iaa(m.qpl_library)
    if m.accelerator != "emulated":
        return jobs, None
    device = stack.enter_context(EmulatedDevice(
        replace(config.emulator, faults=faults), clients=2 * channels + _SPARE_CLIENTS,
        page_count=wire.page_count_for(m.page_size)))
    return replace(jobs, device=device.name), device
