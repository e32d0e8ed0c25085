"""A sweep report as a picture: which setting should I use?

One panel per guest: every job is a point at (send time, bytes on the
wire), coloured by method and labelled with its setting; the Pareto front
(no other job is both faster and smaller) is a dashed line; the fastest
job and the one with the fewest bytes within the time budget are ringed
and named in the panel's title; the time budget is shaded.  Lower left is
better.  Jobs that failed are listed under their panel, not drawn.
Needs matplotlib (the ``plot`` extra), like ``engine.report.plot``.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from engine.sweep.report import Point, best_of, by_guest, pareto_front, points

_MB = 1e6
_METHOD_COLOURS = {"none": "#7f7f7f", "zlib": "#ff7f0e", "zstd": "#2ca02c", "qpl": "#1f77b4"}
_OTHER = "#9467bd"
_COLUMNS = 2


def sweep_figure(report: dict[str, Any]) -> Figure:
    s = report["summary"]
    groups = by_guest(points(report))
    columns = min(_COLUMNS, max(len(groups), 1))
    rows = max(1, math.ceil(len(groups) / columns))
    figure = Figure(figsize=(8.5 * columns, 6.2 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    failed = s["errors"] + s["verify_failed"]
    figure.suptitle(
        f"Sweep {report['sweep']!r}: {s['ok']} of {s['jobs']} jobs verified"
        + (f", {failed} failed" if failed else "") + (f", {s['not_run']} not run" if s["not_run"] else "")
        + f" ({report['executor']})\nEach point is one job: the time to send every round "
        "against the bytes it put on the wire. Lower left is better.", fontsize=13)
    for ax, (guest, group) in zip(axes, groups.items()):
        _guest_panel(ax, guest, group, s["time_budget"])
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    methods = sorted({p.method for group in groups.values() for p in group})
    figure.legend(handles=_legend(methods, s["time_budget"]), loc="outside lower center",
                  ncol=min(len(methods) + 4, 8), fontsize=9, frameon=False)
    return figure


def _guest_panel(ax: Any, guest: str, group: list[Point], budget: float) -> None:
    ok = [p for p in group if p.ok]
    best = best_of(group, budget)
    if not ok:
        ax.set_title(f"{guest}\nno job finished verified", fontsize=10)
        _failed_note(ax, group)
        return
    fastest = next(p for p in ok if p.index == best.fastest)
    frugal = next(p for p in ok if p.index == best.fewest_bytes_within_budget)
    ax.set_title(f"{guest}\nfastest: {fastest.name} ({fastest.seconds:.2f} s); fewest bytes within "
                 f"{budget:g}x that time: {frugal.name} ({frugal.wire_bytes / _MB:.1f} MB)",
                 fontsize=10)
    x_max = max(p.seconds for p in ok) * 1.25
    ax.axvspan(0, best.budget_seconds, color="#2ca02c", alpha=0.07, linewidth=0)
    ax.axvline(best.budget_seconds, color="#2ca02c", linestyle=":", linewidth=1)
    front = pareto_front(group)
    ax.plot([p.seconds for p in front], [p.wire_bytes / _MB for p in front], color="black",
            linestyle="--", linewidth=1, drawstyle="steps-post", zorder=1)
    y_max = max(p.wire_bytes for p in ok) / _MB * 1.15
    for p in ok:
        ax.scatter(p.seconds, p.wire_bytes / _MB, s=60, color=_METHOD_COLOURS.get(p.method, _OTHER),
                   edgecolor="black" if p in front else "none", linewidth=0.8, zorder=3)
    _label_points(ax, sorted(ok, key=lambda p: p.seconds), x_max, y_max)
    ax.scatter(fastest.seconds, fastest.wire_bytes / _MB, s=260, facecolor="none",
               edgecolor="#d62728", linewidth=2, zorder=4)
    ax.scatter(frugal.seconds, frugal.wire_bytes / _MB, s=420, marker="D", facecolor="none",
               edgecolor="#2ca02c", linewidth=2, zorder=4)
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, y_max)
    ax.set_xlabel("seconds to send all rounds (less is faster)")
    ax.set_ylabel("MB on the wire (less is smaller)")
    ax.grid(alpha=0.3)
    _failed_note(ax, group)


def _label_points(ax: Any, ordered: list[Point], x_max: float, y_max: float) -> None:
    """Each point's name beside it, at the first nearby spot no earlier label covers."""
    box = ax.get_position()
    width = box.width * ax.figure.get_figwidth() * 72          # the axes in points
    height = box.height * ax.figure.get_figheight() * 72
    taken: list[tuple[float, float, float, float]] = []
    for p in ordered:
        x, y = p.seconds / x_max * width, p.wire_bytes / _MB / y_max * height
        size = 4.0 * len(p.name)                                 # fontsize 7: ~4 pt a character
        spots = [(dx, dy) for dy in (4, -12, 14, -22, 24, -32) for dx in (6, -6 - size)]
        rects = [(x + dx, y + dy, x + dx + size, y + dy + 9) for dx, dy in spots]
        free = [i for i, r in enumerate(rects) if not any(_overlap(r, t) for t in taken)]
        i = free[0] if free else 0
        taken.append(rects[i])
        far = i >= 2                                             # a leader line says whose label
        ax.annotate(p.name, (p.seconds, p.wire_bytes / _MB), xytext=spots[i],
                    textcoords="offset points", fontsize=7, color="#333333",
                    arrowprops={"arrowstyle": "-", "color": "#aaaaaa", "lw": 0.6} if far else None)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _failed_note(ax: Any, group: list[Point]) -> None:
    failed = [p for p in group if not p.ok]
    if not failed:
        return
    text = "not drawn: " + "; ".join(f"job {p.index} {p.name}: {p.status}" for p in failed[:4])
    text += f" (+{len(failed) - 4} more)" if len(failed) > 4 else ""
    ax.text(0.01, 0.99, text, transform=ax.transAxes, va="top", fontsize=8, color="#d62728",
            wrap=True)


def _legend(methods: list[str], budget: float) -> list[Line2D]:
    handles = [Line2D([], [], marker="o", linestyle="", color=_METHOD_COLOURS.get(m, _OTHER),
                      markersize=8, label=f"method {m}") for m in methods]
    handles += [
        Line2D([], [], color="black", linestyle="--", label="Pareto front: no job is both faster and smaller"),
        Line2D([], [], marker="o", linestyle="", markersize=13, markerfacecolor="none",
               markeredgecolor="#d62728", markeredgewidth=2, label="fastest"),
        Line2D([], [], marker="D", linestyle="", markersize=13, markerfacecolor="none",
               markeredgecolor="#2ca02c", markeredgewidth=2,
               label="fewest bytes within the time budget"),
        Line2D([], [], color="#2ca02c", alpha=0.3, linewidth=8, label=f"time budget: up to {budget:g}x the fastest time"),
    ]
    return handles
