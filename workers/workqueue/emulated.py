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
from typing import Any

from engine.ram import SharedSegment
from workers import codec
from workers.settings import EmulatorSettings


class EmulatedDevice:
    """An emulated IAA device with its engine threads, in this process.

    ``clients`` work queues (one per worker or reader) of up to
    ``page_count`` jobs each may be attached at once, from any process, by
    ``name``; a queue's place is free again when it is closed, or when its
    process is gone and its jobs have finished (a killed worker's
    replacement takes it over).
    ``close`` stops the engines and removes the control segment; the
    counters stay readable.  A context manager.
    """

    def __init__(self, settings: EmulatorSettings | None = None, *, clients: int,
                 page_count: int) -> None:
        self.settings = settings or EmulatorSettings()
        clients, page_count = int(clients), int(page_count)
        size = codec.emulator_control_size(self.settings, clients, page_count)
        if size == 0:
            raise ValueError(f"unusable emulator settings {self.settings} "
                             f"for {clients} clients of {page_count} jobs")
        self._segment = SharedSegment.create("iaa-emu", size)
        self._segment.close()                   # the C side maps it by name
        self._final: dict[str, int] | None = None
        try:
            self._dev = codec.start_emulator(self.name, self.settings, clients, page_count)
        except BaseException:
            self._segment.unlink()
            raise
        # a device nobody closed still stops (and joins its threads) at exit
        self._stop = weakref.finalize(self, codec.stop_emulator, self._dev)

    @property
    def name(self) -> str:
        """The control segment's name: what a work queue attaches to."""
        return self._segment.name

    def counters(self) -> dict[str, int]:
        """What the device did and injected so far (after close: in total)."""
        if self._final is not None:
            return dict(self._final)
        return codec.emulator_counters(self._dev)

    def close(self) -> None:
        """Stop the engines (jobs still queued fail), free everything."""
        if self._final is not None:
            return
        self._final = self.counters()
        self._stop()
        self._dev = None
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
        self.handle = codec.open_emulated_queue(device, page_count)

    def map_shared_memory(self, name: str, buf: Any) -> None:
        """Tell the device that segment ``name`` is mapped here as ``buf``.

        Jobs whose pages lie in ``buf`` then reach the device as (segment,
        offset); the device maps the segment itself.
        """
        codec.map_emulated_segment(self.handle, name, buf)

    def close(self) -> None:
        if self.handle is not None:
            codec.release(self.handle)
            self.handle = None
