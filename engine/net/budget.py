"""Memory budgets: what a peer may make this host reserve, and what a run needs.

A receiver reserves every RAM block the sender declares in its Hello
(``posix_fallocate`` in ``/dev/shm``) and one decoder per channel (zstd:
up to a 32 MiB window each).  Both are checked against budgets before
anything is allocated, and a refusal tells the peer why:

* ``transport.max_ram``: the sum of the declared RAM blocks; 0 (default)
  is what this host can give now, :func:`host_ram_budget`;
* ``transport.decoder_budget``: the decoders of all channels together; 0
  (default) is an eighth of the available memory, at least 256 MiB;
* a receiver configured with ``channels = "auto"`` takes at most
  ``MAX_AUTO_CHANNELS`` channels.

``run_problem`` does the same sum for a local ``run`` before it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import methods, wire
from engine.methods import zlib as zlib_method
from engine.methods import zstd as zstd_method
from engine.ram import SHM_DIR

HEADROOM = 0.8                  # share of the free memory a session may take
MAX_AUTO_CHANNELS = 64
MIN_DECODER_BUDGET = 256 << 20
_ZLIB_WINDOW = 64 << 10         # inflate's 32 KiB window and its state, rounded up


@dataclass(frozen=True)
class HostMemory:
    """What this host can give now, in bytes."""

    shm_free: int               # /dev/shm free space
    available: int              # MemAvailable, or the cgroup's room if smaller

    @classmethod
    def now(cls, shm_dir: str = SHM_DIR) -> HostMemory:
        return cls(_shm_free(shm_dir), _available_memory())


def _shm_free(shm_dir: str) -> int:
    try:
        st = os.statvfs(shm_dir)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _available_memory() -> int:
    available = _meminfo_available()
    room = _cgroup_room()
    return available if room is None else min(available, room)


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1); None if unlimited."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit, usage = base / "memory.max", base / "memory.current"
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit, usage = base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"
        else:
            continue
        try:
            text = limit.read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return max(int(text) - int(usage.read_text()), 0)
        except (OSError, ValueError):
            continue
    return None


def host_ram_budget(host: HostMemory) -> int:
    """Bytes of RAM blocks a session may reserve when ``transport.max_ram`` is 0."""
    return int(min(host.shm_free, host.available) * HEADROOM)


def decoder_bytes(method: str, page_size: int) -> int:
    """What one receiving channel of ``method`` holds: header, payload slot, decoder."""
    slot = wire.header_size(page_size) + methods.get(method).slot_size(page_size)
    if method == "zstd":
        return slot + zstd_method.MAX_WINDOW + zstd_method.RECV_BUFFER
    if method == "zlib":
        return slot + _ZLIB_WINDOW + zlib_method.RECV_BUFFER
    return slot


def decoder_budget(configured: int, host: HostMemory) -> int:
    return configured or max(host.available // 8, MIN_DECODER_BUDGET)


def session_memory_problem(blocks: int, channels: int, method: str, page_size: int, *,
                           max_ram: int, decoder_limit: int,
                           host: HostMemory | None = None) -> str | None:
    """Why a session of ``blocks`` bytes over ``channels`` channels does not fit, or None."""
    host = host or HostMemory.now()
    ram_limit = max_ram or host_ram_budget(host)
    if blocks > ram_limit:
        which = "transport.max_ram" if max_ram else "transport.max_ram = 0: what /dev/shm and " \
                                                    "available memory allow"
        return f"{_size(blocks)} of RAM blocks, more than this receiver's {_size(ram_limit)} ({which})"
    if blocks > host.shm_free:
        return f"{_size(blocks)} of RAM blocks, {SHM_DIR} has {_size(host.shm_free)} free"
    need = channels * decoder_bytes(method, page_size)
    limit = decoder_budget(decoder_limit, host)
    if need > limit:
        return (f"{channels} {method} channels need {_size(need)} of decoders, more than this "
                f"receiver's {_size(limit)} (transport.decoder_budget)")
    return None


def run_problem(size: int, *, verify: bool, memory_sink: bool,
                host: HostMemory | None = None) -> str | None:
    """Why a local run of a ``size``-byte guest does not fit this host now, or None.

    /dev/shm holds the source block and, when verifying, the destination
    block; an in-memory sink also holds up to a whole round's stream
    (round 0 sends every page), in the process's own memory.
    """
    host = host or HostMemory.now()
    shm = size * (2 if verify else 1)
    total = shm + (size if memory_sink else 0)
    if shm > host.shm_free:
        return (f"a {_size(size)} guest needs {_size(shm)} of {SHM_DIR} "
                f"({'source and destination blocks' if verify else 'the source block'}), "
                f"it has {_size(host.shm_free)} free")
    if total > host.available:
        return (f"a {_size(size)} guest needs about {_size(total)} of memory "
                f"({total // size}x: blocks{' and the in-memory channels' if memory_sink else ''}),"
                f" {_size(host.available)} is available")
    return None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"
