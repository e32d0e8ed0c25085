"""The ``[stress]`` config section: what ``multifd-engine stress`` varies and injects.

Rates are chances: ``kill_rate`` per packet handed to a worker, the others
per migration.  Empty ``methods`` / ``accelerators`` mean "all there are".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from engine import methods, wire
from engine.stress.channel_faults import DAMAGE_KINDS
from engine.errors import ConfigError
from engine.units import parse_duration, parse_size
from workers.settings import ACCELERATORS


@dataclass(frozen=True)
class StressSettings:
    rounds: int = 20                    # precopy rounds in all, each verified
    duration: float = 0.0               # seconds ("10m" in TOML); 0 = until ``rounds``
    seed: int = 0                       # 0 = draw one (the summary prints it)
    rounds_per_migration: int = 4       # rounds before the next migration draws anew
    page_sizes: tuple[int, ...] = (4096, 16384)
    methods: tuple[str, ...] = ()       # () = every method the peer QEMU knows
    accelerators: tuple[str, ...] = ()  # () = "software", and "emulated" when it exists
    dirty_fraction: tuple[float, float] = (0.01, 0.30)   # each round draws from this range
    kill_rate: float = 0.01             # per packet: SIGKILL the worker that took it
    corrupt_rate: float = 0.2           # per migration: damage one packet in its channel
    corrupt_kinds: tuple[str, ...] = DAMAGE_KINDS
    slow_reader_rate: float = 0.2       # per migration: one channel's receiver is slow
    stop_reader_rate: float = 0.05      # per migration: one channel's receiver stops reading
    device_faults: bool = True          # emulated device: busy storms, job errors, overflows, slow jobs
    channel_capacity: int = 4 << 20     # bytes a channel holds before the sender waits
    transport: str = "memory"           # data channels: in-process "memory" or loopback "tcp"

    @classmethod
    def from_dict(cls, data: Any) -> StressSettings:
        if not isinstance(data, dict):
            raise ConfigError("stress", f"must be a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"stress.{key}", f"unknown key; allowed: {', '.join(sorted(known))}")
        values = {key: _PARSERS[key](f"stress.{key}", value) for key, value in data.items()}
        return cls(**values)


def _int(low: int, high: int):
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(key, f"must be an integer {low}..{high}, got {value!r}")
        return value
    return parse


def _rate(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(key, f"must be a chance within 0..1, got {value!r}")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def _list(key: str, value: Any, item: type) -> tuple:
    if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool)
                                              for v in value):
        raise ConfigError(key, f"must be a list of {item.__name__}s, got {value!r}")
    return tuple(value)


def _page_sizes(key: str, value: Any) -> tuple[int, ...]:
    sizes = _list(key, value, int)
    if not sizes:
        raise ConfigError(key, "needs at least one page size")
    for size in sizes:
        try:
            wire.page_count_for(size)
        except ValueError:
            raise ConfigError(key, f"{size} is not a power of two from 512 to 65536") from None
    return sizes


def _names(known: Callable[[], tuple[str, ...]]):
    def parse(key: str, value: Any) -> tuple[str, ...]:
        names = _list(key, value, str)
        allowed = known()
        for name in names:
            if name not in allowed:
                raise ConfigError(key, f"{name!r} is not one of: {', '.join(allowed)}")
        return names
    return parse


def _fraction_range(key: str, value: Any) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] <= value[1] <= 1):
        raise ConfigError(key, f"must be [low, high] with 0 <= low <= high <= 1, got {value!r}")
    return float(value[0]), float(value[1])


def _one_of(allowed: tuple[str, ...]):
    def parse(key: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(key, f"{value!r} is not one of: {', '.join(allowed)}")
        return value
    return parse


def _capacity(key: str, value: Any) -> int:
    size = parse_size(key, value)
    if not 64 << 10 <= size <= 1 << 30:
        raise ConfigError(key, f"must be 64KiB..1GiB, got {size} bytes")
    return size


_PARSERS = {
    "rounds": _int(1, 10**9),
    "duration": parse_duration,
    "seed": _int(0, 2**63 - 1),
    "rounds_per_migration": _int(1, 10**6),
    "page_sizes": _page_sizes,
    "methods": _names(methods.names),
    "accelerators": _names(lambda: tuple(a for a in ACCELERATORS if a != "auto")),
    "dirty_fraction": _fraction_range,
    "kill_rate": _rate,
    "corrupt_rate": _rate,
    "corrupt_kinds": _names(lambda: DAMAGE_KINDS),
    "slow_reader_rate": _rate,
    "stop_reader_rate": _rate,
    "device_faults": _bool,
    "channel_capacity": _capacity,
    "transport": _one_of(("memory", "tcp")),
}
