"""What each migration and round of a stress run does, drawn from one seed.

Migration ``i`` of a run with seed ``S`` depends only on ``(S, i)`` and the
config, so the printed seed repeats the run: the same page sizes, methods,
accelerators, page mixes, dirty fractions and faults in the same places.
(Which worker a packet lands on depends on timing, so a kill aimed at a
packet may hit another channel; the packet is the same.)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from engine import methods, wire
from engine.stress.channel_faults import PacketDamage
from engine.config import Config
from engine.workloads import PageMix
from workers.settings import ACCELERATORS

_TAG_MIGRATION = 0x57E5
_TAG_ROUND = 0x57E6
_MIX_CLASSES = tuple(f.name for f in fields(PageMix))


@dataclass(frozen=True)
class DeviceFaults:
    """Emulated-device fault rates drawn for one migration ([emulator.faults])."""

    seed: int
    busy_storm_rate: float
    job_error_rate: float
    overflow_rate: float
    slow_job_rate: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RoundPlan:
    index: int                          # round within its migration; 0 sends every page
    mix: PageMix                        # content of the pages it dirties (rounds > 0)
    dirty_fraction: float
    damage: tuple[int, PacketDamage] | None = None     # (channel, damage)
    stop_reader: tuple[int, int] | None = None         # (channel, bytes read before it stops)


@dataclass(frozen=True)
class MigrationPlan:
    index: int
    seed: int                           # the run's seed
    rounds: int
    workload_seed: int
    page_size: int
    method: str
    accelerator: str
    mix: PageMix                        # the guest's content at the start
    damage: tuple[int, int, PacketDamage] | None       # (round, channel, damage)
    stop_reader: tuple[int, int, int] | None          # (round, channel, bytes before it stops)
    slow_reader: tuple[int, float] | None   # (channel, seconds before every read)
    kill_seed: int
    device_faults: DeviceFaults | None
    dirty_range: tuple[float, float] = (0.01, 0.30)

    def describe(self) -> str:
        return f"{self.method} {self.page_size // 1024}K {self.accelerator}"

    def round(self, r: int) -> RoundPlan:
        """Round ``r``: drawn from (seed, migration, r) alone, so rounds cost nothing up front."""
        rng = np.random.default_rng([_TAG_ROUND, self.seed, self.index, r])
        damage = self.damage[1:] if self.damage is not None and self.damage[0] == r else None
        stop = self.stop_reader[1:] if self.stop_reader is not None and self.stop_reader[0] == r else None
        return RoundPlan(r, _mix(rng), float(rng.uniform(*self.dirty_range)), damage, stop)


def available_methods(config: Config) -> tuple[str, ...]:
    """The methods a stress run draws from: configured, or all the peer knows."""
    compat = config.migration.compat
    chosen = config.stress.methods or methods.names()
    return tuple(m for m in chosen if compat.supports(methods.get(m).flag))


def available_accelerators(config: Config) -> tuple[str, ...]:
    if config.stress.accelerators:
        return config.stress.accelerators
    return tuple(a for a in ("software", "emulated") if a in ACCELERATORS)


def plan_migration(config: Config, seed: int, index: int, rounds: int) -> MigrationPlan:
    """Migration ``index`` of a run with ``seed``: ``rounds`` rounds."""
    s = config.stress
    rng = np.random.default_rng([_TAG_MIGRATION, seed, index])
    page_size = int(rng.choice(s.page_sizes))
    method = str(rng.choice(available_methods(config)))
    accelerator = (str(rng.choice(available_accelerators(config)))
                   if methods.get(method).uses_work_queue else "software")
    channels = config.migration.channel_count
    pages = config.workload.size // page_size
    plan = MigrationPlan(index, seed, rounds, int(rng.integers(1, 2**31)), page_size, method,
                         accelerator, _mix(rng), None, None, None, int(rng.integers(2**63)), None,
                         s.dirty_fraction)
    damage = stop = slow = device = None
    if rng.random() < s.corrupt_rate and s.corrupt_kinds:
        r = int(rng.integers(rounds))
        packets = _packets_per_channel(plan.round(r), pages, page_size, channels)
        damage = (r, int(rng.integers(channels)),
                  PacketDamage(str(rng.choice(s.corrupt_kinds)), int(rng.integers(packets + 1)),
                               int(rng.integers(2**63))))
    if rng.random() < s.stop_reader_rate:
        r = int(rng.integers(rounds))
        packets = _packets_per_channel(plan.round(r), pages, page_size, channels)
        # headers alone make this many bytes on a channel, so it stops inside the round
        after = int(rng.integers(max(1, packets * wire.header_size(page_size) // 2)))
        stop = (r, int(rng.integers(channels)), after)
    if rng.random() < s.slow_reader_rate:
        slow = (int(rng.integers(channels)), float(rng.uniform(0.0002, 0.002)))
    if accelerator == "emulated" and s.device_faults:
        rates = rng.uniform(0.0, [0.02, 0.02, 0.02, 0.01])
        device = DeviceFaults(int(rng.integers(1, 2**63)), *(float(x) for x in rates))
    return replace(plan, damage=damage, stop_reader=stop, slow_reader=slow, device_faults=device)


def _mix(rng: np.random.Generator) -> PageMix:
    shares = rng.dirichlet(np.full(len(_MIX_CLASSES), 0.8))
    shares[-1] = 1.0 - shares[:-1].sum()      # exactly 1 despite rounding
    return PageMix(**{name: float(max(0.0, v)) for name, v in zip(_MIX_CLASSES, shares)})


def _packets_per_channel(plan: RoundPlan, pages: int, page_size: int, channels: int) -> int:
    sent = pages if plan.index == 0 else int(pages * plan.dirty_fraction)
    return max(1, -(-sent // wire.page_count_for(page_size)) // channels)
