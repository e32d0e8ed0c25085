"""The emulated IAA device, and the work queue a worker or reader has on it.

::

    Engine (its process)                         worker processes
      EmulatedDevice ── control segment ──────── EmulatedWorkQueue (one each)
        engine threads (C)   ring + records         submit: job -> (segment, offset)
           │                 in /dev/shm            wait:   its own job record
           └─ maps the RAM-block and slot segments the workers register

One device stands for one host's IAA with one shared work queue: every
worker of an Engine submits to the same bounded ring, and ``engines``
native threads of the Engine's process serve it (the workers' Python never
runs a job).  Page data stays in the shared memory the engine already uses;
a job carries segment ids and offsets.  Queues in the device's own process
(a receiver's readers) may hand plain addresses.

The C side is ``native/iaa_emulator.c``; faults (busy storms, job errors,
output overflows, slow jobs, a failing init) are seeded and counted, so a
test can compare what the workers saw with what the device injected.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields
from typing import Any

from engine.errors import AcceleratorError, CodecError
from engine.ram import SharedSegment
from workers.codec import ffi, lib, status_name


@dataclass(frozen=True)
class FaultSettings:
    """Seeded fault injection (``[emulator.faults]``); rates are per job or submission."""

    seed: int = 1
    busy_storm_rate: float = 0.0    # chance that a submission starts a busy storm
    busy_storm_us: float = 200.0    # a storm refuses every submission for this long
    job_error_rate: float = 0.0     # chance that a job fails (the page goes raw)
    overflow_rate: float = 0.0      # chance that a job reports "output did not fit"
    slow_job_rate: float = 0.0      # chance that a job takes slow_job_us longer
    slow_job_us: float = 1000.0
    init_status: int = 0            # != 0: the hardware probe fails with this QPL status


@dataclass(frozen=True)
class EmulatorSettings:
    """The device (``[emulator]``): one shared work queue and its engines.

    Service time per job is at least ``latency_us + bytes / engine_mb_per_s``
    (decompression ``decompress_speedup`` times faster), +- ``jitter``; the
    defaults are IAA's published figures (spec qpl-and-iaa.md §4, §5).
    """

    queue_size: int = 128
    engines: int = 8
    latency_us: float = 3.0
    engine_mb_per_s: float = 1250.0
    decompress_speedup: float = 1.3
    jitter: float = 0.1
    faults: FaultSettings = field(default_factory=FaultSettings)


_COUNTER_NAMES = tuple(name for name, _ in ffi.typeof("mfd_emu_counters").fields)


def _config(settings: EmulatorSettings, clients: int, page_count: int) -> Any:
    cfg = ffi.new("mfd_emu_config *")
    for f in fields(EmulatorSettings):
        if f.name != "faults":
            setattr(cfg, f.name, getattr(settings, f.name))
    for f in fields(FaultSettings):
        setattr(cfg, f.name, getattr(settings.faults, f.name))
    cfg.clients = clients
    cfg.page_count = page_count
    return cfg


class EmulatedDevice:
    """An emulated IAA device with its engine threads, in this process.

    ``clients`` work queues (one per worker or reader) of up to
    ``page_count`` jobs each may attach, from any process, by ``name``.
    ``close`` stops the engines and removes the control segment; the
    counters stay readable.  A context manager.
    """

    def __init__(self, settings: EmulatorSettings | None = None, *, clients: int,
                 page_count: int) -> None:
        self.settings = settings or EmulatorSettings()
        cfg = _config(self.settings, int(clients), int(page_count))
        size = lib.mfd_emu_control_size(cfg)
        if size == 0:
            raise ValueError(f"unusable emulator settings {self.settings} "
                             f"for {clients} clients of {page_count} jobs")
        self._segment = SharedSegment.create("iaa-emu", size)
        self._segment.close()                   # the C side maps it by name
        self._final: dict[str, int] | None = None
        out = ffi.new("mfd_emu_device **")
        status = lib.mfd_emu_device_start(self.name.encode(), cfg, out)
        if status != lib.MFD_OK:
            self._segment.unlink()
            raise CodecError(f"cannot start the emulated IAA device: {status_name(status)}")
        self._dev = out[0]
        # a device nobody closed still stops (and joins its threads) at exit
        self._stop = weakref.finalize(self, lib.mfd_emu_device_stop, self._dev)

    @property
    def name(self) -> str:
        """The control segment's name: what a work queue attaches to."""
        return self._segment.name

    def counters(self) -> dict[str, int]:
        """What the device did and injected so far (after close: in total)."""
        if self._final is not None:
            return dict(self._final)
        snap = ffi.new("mfd_emu_counters *")
        lib.mfd_emu_device_counters(self._dev, snap)
        return {name: int(getattr(snap, name)) for name in _COUNTER_NAMES}

    def close(self) -> None:
        """Stop the engines (jobs still queued fail), free everything."""
        if self._final is not None:
            return
        self._final = self.counters()
        self._stop()
        self._dev = ffi.NULL
        self._segment.unlink()

    def __enter__(self) -> EmulatedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmulatedWorkQueue:
    """A work queue on an emulated device, for ``page_count`` jobs.

    The hardware probe is the attach: a device configured with a failing
    ``init_status`` refuses it, and nothing of the attempt is kept.
    """

    name = "emulated"
    is_hardware = True

    def __init__(self, device: str, page_count: int) -> None:
        status = ffi.new("int *")
        ptr = lib.mfd_emu_queue_new(device.encode(), int(page_count), status)
        if ptr == ffi.NULL:
            code = int(status[0])
            raise AcceleratorError(
                f"emulated IAA device {device!r} refused a work queue: {status_name(code)}",
                status=code)
        self.handle = ffi.gc(ptr, lib.mfd_emu_queue_free)

    def map_shared_memory(self, name: str, buf: Any) -> None:
        """Tell the device that segment ``name`` is mapped here as ``buf``.

        Jobs whose pages lie in ``buf`` then reach the device as (segment,
        offset); the device maps the segment itself.
        """
        # only the address range is kept: the queue compares job pointers
        # with it and never reads through it (the device maps by name)
        with ffi.from_buffer("uint8_t[]", buf) as ptr:
            base, length = int(ffi.cast("uintptr_t", ptr)), len(ptr)
        status = lib.mfd_emu_queue_map(self.handle, name.encode(), base, length)
        if status != lib.MFD_OK:
            raise CodecError(f"cannot register segment {name} with the emulated device: "
                             f"{status_name(status)}")

    def close(self) -> None:
        if self.handle is not None:
            ffi.release(self.handle)
            self.handle = None
