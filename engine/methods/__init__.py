"""Compression methods: one object per method, with the same few hooks.

Modelled on QEMU's multifd methods table.  Hooks run where the work is:
the ``send_*`` hooks inside a worker process, the ``recv_*`` hooks in a
receiver's channel reader.  Each hook gets the per-channel state its setup
returned, so two engines (or two channels) never share method state.

Hook contract (what ``Method`` implementations must do):

``send_setup(params)``
    Called once per worker when it starts.  Allocate everything the hot
    path needs (job arrays, work queues, streams) and return it as state.
``send_prepare(state, block, pages, slot)``
    Called once per packet after zero-page detection, with only the normal
    pages.  Write the packet's payload into ``slot`` (a shared-memory view
    of at least ``slot_size`` bytes) and return ``(next_packet_size,
    stats)``.  Must not allocate per page; may be called with no pages.
``send_cleanup(state)``
    Free what setup allocated.  Called once, also after errors.
``recv_setup(params)``
    Called once per channel of a receiver; returns state.
``recv_check(state, header)``
    Called once per packet that carries normal pages, after the header was
    validated and before any payload byte is read.  Reject what the header
    alone shows to be wrong (a payload size the pages cannot have) with a
    ``WireError`` subclass.  ``Method`` accepts every header.
``recv(state, header, payload, block)``
    Called once per packet that carries normal pages, after the header was
    validated (``recv_check`` included) and the zero pages cleared.  Decode ``payload`` (exactly
    ``header.payload_size`` bytes, already bounded by ``max_payload``)
    straight into ``block``.  Untrusted: raise a ``WireError`` subclass that
    names the channel, the packet and the field on any inconsistency.
``recv_cleanup(state)``
    Free what recv_setup allocated.

``map_shared_memory(state, segments)``
    Called once per worker after ``send_setup``, with the (name, view)
    pairs of its RAM blocks and output slots.  A method whose work queue
    is a device that reaches pages by segment name maps them here.
``send_path(state)``
    ``(path, reason)``: where this worker's pages go (``"iaa"``,
    ``"emulated"``, ``"software"``; ``"none"`` without a work queue), for
    the report.

Attributes every method has (``Method`` gives the defaults):

``resumable`` (False)
    True when a fresh ``send_setup`` can take over a channel in the middle
    of a migration: nothing carries from one packet to the next.  The
    coordinator replaces a dead worker only then; a per-channel stream
    (zlib, zstd) died with its worker, and the receiver's half of it
    cannot follow a new one.
``uses_work_queue`` (False)
    Its pages run on ``PageJobs`` and so on an accelerator: IAA, the
    emulated device or software.  The Engine starts the emulated device
    and checks ``accelerator = "iaa"`` only for these.
``levels``, ``default_level`` (None)
    The compression levels QEMU accepts for it (``multifd-<name>-level``)
    and its default; the config key ``migration.<name>_level`` sets one.
``page_length_table`` (False)
    Its payload starts with one big-endian u32 length per normal page;
    the report's page-size histogram is made from that table.
``payload_is_pages`` (False)
    The payload is the normal pages themselves, raw, in offset order
    (``none``).  The coordinator then writes the pages from the RAM block
    to the channel (``writev`` / ``sendmsg``) and the receiver reads them
    straight into the destination pages, unless ``migration.copy_pages``
    asks for the copying hooks; the worker's ``send_prepare`` is skipped.
``cpu_path``
    ``(path, reason)`` doctor shows for a method without a work queue.

Adding a method is one new module here (plus its C loop): the module
subclasses ``Method`` and ends with ``register(TheMethod())``, as each of
QEMU's multifd-*.c files registers its ops; importing ``engine.methods``
imports every module of the package.  Registration refuses a duplicate
name or flag.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import wire
from workers.settings import JobSettings


@dataclass(frozen=True)
class MethodParams:
    """What a method's setup needs to know about its channel."""

    channel: int
    page_size: int
    jobs: JobSettings = field(default_factory=JobSettings)
    level: int | None = None     # compression level of stream methods; None = the method's default

    @property
    def page_count(self) -> int:
        return wire.page_count_for(self.page_size)


class Method:
    """The hooks every method implements and the attributes it may override."""

    name: str
    flag: int
    resumable: bool = False
    uses_work_queue: bool = False
    levels: range | None = None
    default_level: int | None = None
    page_length_table: bool = False
    payload_is_pages: bool = False
    cpu_path: tuple[str, str] = ("software", "one compression stream per channel on the CPU")

    def slot_size(self, page_size: int) -> int:
        """Bytes of output slot one packet's payload may need."""
        raise NotImplementedError

    def max_payload(self, normal_pages: int, page_size: int) -> int:
        """Largest next_packet_size a receiver accepts for that many pages."""
        raise NotImplementedError

    def send_setup(self, params: MethodParams) -> Any:
        raise NotImplementedError

    def send_prepare(self, state: Any, block: Any, pages: np.ndarray,
                     slot: memoryview) -> tuple[int, dict[str, int]]:
        raise NotImplementedError

    def send_cleanup(self, state: Any) -> None:
        raise NotImplementedError

    def recv_setup(self, params: MethodParams) -> Any:
        raise NotImplementedError

    def recv_check(self, state: Any, header: wire.PacketHeader) -> None:
        """Reject a header whose payload cannot be right, before reading it."""

    def recv(self, state: Any, header: wire.PacketHeader, payload: memoryview, block: Any) -> None:
        raise NotImplementedError

    def recv_cleanup(self, state: Any) -> None:
        raise NotImplementedError

    def map_shared_memory(self, state: Any, segments: list[tuple[str, memoryview]]) -> None:
        pass

    def send_path(self, state: Any) -> tuple[str, str]:
        return "none", ""


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> None:
    """Add a method; a second method with the same name or flag is a bug."""
    if method.name in _REGISTRY:
        raise RuntimeError(f"method {method.name!r} registered twice")
    for other in _REGISTRY.values():
        if other.flag == method.flag:
            raise RuntimeError(f"methods {other.name!r} and {method.name!r} share flag {method.flag:#x}")
    _REGISTRY[method.name] = method


def get(name: str) -> Method:
    """The method called ``name``; KeyError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Every method, in flag order (QEMU's MultiFDCompression order)."""
    return tuple(sorted(_REGISTRY, key=lambda name: _REGISTRY[name].flag))


def by_flag(flag: int) -> Method | None:
    """The method whose compression bits are ``flag``, if any."""
    return next((m for m in _REGISTRY.values() if m.flag == flag), None)


def _load_every_method() -> None:
    """Import every module of this package; a method's module registers it on import."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_load_every_method()
