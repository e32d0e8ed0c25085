"""A benchmark's figures as a report of the common schema (kind ``"bench"``).

A script that takes ``--json PATH`` (``add_argument``) writes every timed
case and every ratio it prints, with the machine it ran on, so that
``multifd-engine report PATH [OTHER.json ...]`` can print or draw it next
to other reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from timing import Timing

from engine.batch import engine_version
from engine.report.schema import envelope, machine_facts, now, write_report


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures as a report "
                        "(kind bench; read it with `multifd-engine report PATH`)")


def case(timing: Timing, work_bytes: int = 0, **known: Any) -> dict[str, Any]:
    """One timed case; ``known`` may add wire_bytes, method, channels."""
    median = timing.median
    return {"name": timing.name, "seconds": list(timing.seconds), "median_seconds": median,
            "work_bytes": work_bytes or None,
            "mb_per_s": work_bytes / median / 1e6 if work_bytes and median else None, **known}


def ratio(name: str, value: float, goal: float | None = None, *,
          higher_is_better: bool = True) -> dict[str, Any]:
    met = None if goal is None else (value >= goal if higher_is_better else value <= goal)
    return {"name": name, "value": value, "goal": goal, "met": met}


def write(path: str | None, *, bench: str, guest: str, cases: list[dict[str, Any]],
          ratios: list[dict[str, Any]], params: argparse.Namespace | dict[str, Any]) -> None:
    """Write the report to ``path`` (nothing when it is None)."""
    if path is None:
        return
    config = dict(vars(params)) if isinstance(params, argparse.Namespace) else dict(params)
    config.pop("json", None)
    data = envelope("bench", engine_version=engine_version(), created=now(),
                    machine=machine_facts(), config=config)
    data.update({"bench": Path(bench).stem, "guest": guest, "cases": cases, "ratios": ratios})
    write_report(path, data)
    print(f"report: {path}")
