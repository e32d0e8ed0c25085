"""The sweep report (kind ``sweep``) and its comparison per guest.

``sweep_report`` puts every job's run report (the same JSON ``run --json``
writes) into one report of the common schema, with a summary: counts,
the jobs that were retried, and per guest the best job by time and the
best by bytes on the wire within a time budget.  ``points`` reads the
jobs back as figures (time, MB/s, wire bytes, ratio, verify);
``format_sweep`` prints one comparison table per guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.report.schema import envelope, machine_facts, now, write_report
from engine.sweep.job import ERROR, NOT_RUN, OK, VERIFY_FAILED
from engine.sweep.outcome import SweepOutcome
from engine.sweep.spec import Sweep

_MB = 1e6


@dataclass(frozen=True)
class Point:
    """One job of a sweep report as the figures a person compares."""

    index: int
    guest: str
    method: str
    setting: str
    status: str
    error: str | None
    seconds: float | None          # send time of all rounds (as `run` reports it)
    guest_bytes: int | None
    wire_bytes: int | None
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status == OK and self.seconds is not None and self.wire_bytes is not None

    @property
    def mb_per_s(self) -> float | None:
        return self.guest_bytes / self.seconds / _MB if self.ok and self.seconds else None

    @property
    def ratio(self) -> float | None:
        return self.guest_bytes / self.wire_bytes if self.ok and self.wire_bytes else None

    @property
    def name(self) -> str:
        return self.method + (f", {self.setting}" if self.setting else "")


@dataclass(frozen=True)
class Best:
    """Per guest: the fastest job, and the fewest wire bytes within budget x its time."""

    guest: str
    fastest: int | None
    fewest_bytes_within_budget: int | None
    budget_seconds: float | None


def sweep_report(sweep: Sweep, outcome: SweepOutcome, *, engine_version: str) -> dict[str, Any]:
    """The sweep report as JSON data (kind "sweep")."""
    data = envelope("sweep", engine_version=engine_version, created=now(),
                    machine=machine_facts(), config=sweep.data)
    jobs = []
    for job, result in zip(sweep.jobs, outcome.results):
        jobs.append({"index": job.index, "guest": job.guest, "method": job.method,
                     "setting": job.setting, "axes": job.axes,
                     **{k: v for k, v in result.as_dict().items() if k != "index"}})
    data.update({"sweep": sweep.name, "file": sweep.path, "executor": outcome.executor,
                 "matrix": sweep.matrix, "jobs": jobs})
    budget = sweep.settings.time_budget
    data["summary"] = {
        "jobs": len(jobs), "ok": outcome.count(OK), "verify_failed": outcome.count(VERIFY_FAILED),
        "errors": outcome.count(ERROR), "not_run": outcome.count(NOT_RUN),
        "retried": outcome.retried, "interrupted": outcome.interrupted,
        "seconds": outcome.seconds, "time_budget": budget,
        "best": [b.__dict__ for b in best_per_guest(points(data), budget)],
    }
    return data


def write_sweep_report(path: str, data: dict[str, Any]) -> None:
    write_report(path, data)


def points(report: dict[str, Any]) -> list[Point]:
    """Every job of a (validated) sweep report, in job order."""
    out = []
    for job in report["jobs"]:
        run = job.get("report") or {}
        totals = run.get("totals") or {}
        out.append(Point(index=job["index"], guest=job["guest"], method=job["method"],
                         setting=job["setting"], status=job["status"], error=job.get("error"),
                         seconds=totals.get("send_seconds"), guest_bytes=totals.get("guest_bytes"),
                         wire_bytes=totals.get("bytes_on_wire"), attempts=job.get("attempts", 0)))
    return out


def by_guest(all_points: list[Point]) -> dict[str, list[Point]]:
    groups: dict[str, list[Point]] = {}
    for p in all_points:
        groups.setdefault(p.guest, []).append(p)
    return groups


def best_of(guest_points: list[Point], budget: float) -> Best:
    ok = [p for p in guest_points if p.ok]
    guest = guest_points[0].guest if guest_points else ""
    if not ok:
        return Best(guest, None, None, None)
    fastest = min(ok, key=lambda p: (p.seconds, p.wire_bytes))
    limit = fastest.seconds * budget
    frugal = min((p for p in ok if p.seconds <= limit), key=lambda p: (p.wire_bytes, p.seconds))
    return Best(guest, fastest.index, frugal.index, limit)


def best_per_guest(all_points: list[Point], budget: float) -> list[Best]:
    return [best_of(group, budget) for group in by_guest(all_points).values()]


def pareto_front(guest_points: list[Point]) -> list[Point]:
    """The jobs no other job beats on both time and wire bytes, fastest first."""
    front: list[Point] = []
    for p in sorted((p for p in guest_points if p.ok), key=lambda p: (p.seconds, p.wire_bytes)):
        if not front or p.wire_bytes < front[-1].wire_bytes:
            front.append(p)
    return front


# ---- text ---------------------------------------------------------------

def format_sweep(report: dict[str, Any]) -> str:
    """One comparison table per guest, then the failed jobs and the summary line."""
    s = report["summary"]
    budget = s["time_budget"]
    lines = [f"sweep {report['sweep']!r} ({report['file']}) on {report['executor']}: "
             f"{s['jobs']} jobs in {s['seconds']:.1f} s"]
    all_points = points(report)
    for guest, group in by_guest(all_points).items():
        lines += ["", *_guest_table(guest, group, budget)]
    failed = [p for p in all_points if p.status in (ERROR, VERIFY_FAILED)]
    if failed:
        lines += ["", "failed jobs:"] + [f"  job {p.index} ({p.guest} | {p.name}): {p.error}"
                                        for p in failed]
    retried = [p for p in all_points if p.attempts > 1]
    if retried:
        lines += ["", "retried jobs (a worker died or the job raised; Dask ran it again):"]
        lines += [f"  job {p.index} ({p.guest} | {p.name}): {p.attempts} attempts, {p.status}"
                  for p in retried]
    lines += ["", verdict_line(report)]
    return "\n".join(lines)


def _guest_table(guest: str, group: list[Point], budget: float) -> list[str]:
    best = best_of(group, budget)
    front = {p.index for p in pareto_front(group)}
    width = max([len(p.name) for p in group] + [7])
    lines = [f"guest {guest}: {len(group)} job(s)",
             f"  {'job':>4}  {'method, setting':<{width}} {'time s':>8} {'MB/s':>8} {'wire MB':>9} "
             f"{'ratio':>6}  {'verify':<13} best"]
    for p in sorted(group, key=lambda p: (not p.ok, p.seconds or 0.0)):
        marks = []
        if p.index == best.fastest:
            marks.append("fastest")
        if p.index == best.fewest_bytes_within_budget:
            marks.append(f"fewest bytes within {budget:g}x")
        if p.index in front and not marks:
            marks.append("pareto")
        lines.append(f"  {p.index:>4}  {p.name:<{width}} {_fmt(p.seconds, '.3f'):>8} "
                     f"{_fmt(p.mb_per_s, '.1f'):>8} {_fmt(p.wire_bytes and p.wire_bytes / _MB, '.2f'):>9} "
                     f"{_fmt(p.ratio, '.2f'):>6}  {p.status:<13} {', '.join(marks)}")
    if best.fastest is not None:
        fastest = next(p for p in group if p.index == best.fastest)
        frugal = next(p for p in group if p.index == best.fewest_bytes_within_budget)
        lines.append(f"  best by time: {fastest.name} ({fastest.seconds:.3f} s); fewest bytes within "
                     f"{budget:g}x that time ({best.budget_seconds:.3f} s): {frugal.name} "
                     f"({frugal.wire_bytes / _MB:.2f} MB, {frugal.seconds:.3f} s)")
    else:
        lines.append("  no job of this guest finished verified")
    return lines


def verdict_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    text = (f"sweep: {s['ok']} of {s['jobs']} jobs ok, {s['verify_failed']} verify failed, "
            f"{s['errors']} errors, {s['not_run']} not run, {len(s['retried'])} retried")
    return text + (" (interrupted)" if s["interrupted"] else "")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
