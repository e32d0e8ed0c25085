"""Medians and ratios, the only way bench/ reports speed.

Every benchmark measures its baseline in the same run, on the same pages,
and prints ``median`` seconds over ``runs`` repetitions plus the ratio.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Timing:
    """Seconds of each run of one measured thing."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def line(self, work_bytes: int = 0) -> str:
        rate = f"  {work_bytes / self.median / 1e6:8.1f} MB/s" if work_bytes else ""
        spread = f"(min {min(self.seconds):.3f}, max {max(self.seconds):.3f}, n={len(self.seconds)})"
        return f"{self.name:<44} median {self.median:8.3f} s{rate}  {spread}"


def measure(name: str, run: Callable[[], object], runs: int, *, warmup: int = 1) -> Timing:
    """Time ``run()`` ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    timing = Timing(name)
    for _ in range(runs):
        started = time.perf_counter()
        run()
        timing.seconds.append(time.perf_counter() - started)
    return timing


def interleaved(runs: int, cases: dict[str, Callable[[], object]]) -> dict[str, Timing]:
    """Time several cases round-robin, so drift on a shared machine hits each alike."""
    timings = {name: Timing(name) for name in cases}
    for run in cases.values():
        run()  # warm-up
    for _ in range(runs):
        for name, run in cases.items():
            started = time.perf_counter()
            run()
            timings[name].seconds.append(time.perf_counter() - started)
    return timings


def verdict(ratio: float, goal: float, *, higher_is_better: bool = True) -> str:
    met = ratio >= goal if higher_is_better else ratio <= goal
    sign = ">=" if higher_is_better else "<="
    return f"{ratio:.2f} (goal {sign} {goal:g}: {'met' if met else 'MISSED'})"
