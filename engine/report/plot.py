"""Reports as pictures: ``multifd-engine report ... --plot OUT.png``.

Needs matplotlib, the optional extra ``plot`` (``pip install
'multifd-engine[plot]'``); importing this module without it raises
ModuleNotFoundError, which the command turns into that hint.

What is drawn:

- one run report: bytes on the wire per page (the compressed-size
  distribution with the zero and raw shares), guest RAM sent per channel
  over time, where a packet's time went (zero scan, compress, write), and
  the time of each precopy round;
- one stress report: faults injected and survived per kind;
- one sweep report: time against bytes on the wire, one point per job, per
  guest (``engine.sweep.plot``);
- one bench report, or several reports: the measured things side by side
  (time, bytes on the wire, throughput; a bench's ratios against their
  goals).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state), so
two plots in one process do not share anything.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.report.table import Row, all_rows

_MB = 1e6
_PHASE_LABELS = (("zero_ns", "zero-page scan (worker)", "#9aa5b1"),
                 ("compress_ns", "compress (worker)", "#1f77b4"),
                 ("write_ns", "write to channel (coordinator)", "#ff7f0e"))
_MAX_POINTS = 120          # throughput lines are rebinned to at most this many points ...
_PACKETS_PER_POINT = 4     # ... each holding this many packets of a channel on average
_MAX_CHANNEL_LINES = 8     # more channels: thin unlabelled lines, the total labelled


def plot_reports(reports: Sequence[tuple[str, dict[str, Any]]], out: str | os.PathLike) -> None:
    """Draw ``reports`` ((path, validated report) pairs) into the PNG ``out``."""
    if len(reports) == 1 and reports[0][1]["kind"] == "run":
        figure = _run_figure(reports[0][1])
    elif len(reports) == 1 and reports[0][1]["kind"] == "stress":
        figure = _stress_figure(reports[0][1])
    elif len(reports) == 1 and reports[0][1]["kind"] == "sweep":
        from engine.sweep.plot import sweep_figure
        figure = sweep_figure(reports[0][1])
    else:
        bench = reports[0][1] if len(reports) == 1 and reports[0][1]["kind"] == "bench" else None
        figure = _comparison_figure(all_rows(list(reports)), bench)
    FigureCanvasAgg(figure)
    figure.savefig(out, dpi=100)


# ---- one run ------------------------------------------------------------

def _run_figure(r: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(14, 9.5), layout="constrained")
    (sizes, throughput), (phases, rounds) = figure.subplots(2, 2)
    t = r["totals"]
    verdict = {True: "verified", False: "VERIFY FAILED", None: "not verified"}[t["verified"]]
    paths = "/".join(sorted(set(r["accelerator"])))
    figure.suptitle(
        f"multifd-engine {r['engine_version']}: method {r['method']}, {r['channels']} channels "
        f"({paths} path), {t['guest_bytes'] / _MB:.0f} MB of guest RAM → "
        f"{t['bytes_on_wire'] / _MB:.1f} MB on the wire (ratio {_fmt(t['ratio'], '.2f')}), {verdict}\n"
        f"{_machine_text(r['machine'])}", fontsize=12)
    _page_size_panel(sizes, r)
    _throughput_panel(throughput, r)
    _phase_panel(phases, r)
    _round_panel(rounds, r)
    return figure


def _page_size_panel(ax: Any, r: dict[str, Any]) -> None:
    t, sizes, page_size = r["totals"], r.get("page_sizes") or {}, r["page_size"]
    zero = t["zero_pages"]
    ax.set_title(f"Bytes on the wire per page ({page_size}-byte pages)")
    if not sizes.get("per_page"):
        _shares_without_sizes(ax, r)
        return
    width, counts, raw = sizes["bucket_bytes"], sizes["compressed"], sizes["raw"]
    total = sum(counts) + raw + zero
    share = [100 * c / total for c in counts]
    ax.bar([i * width for i in range(len(counts))], share, width=width, align="edge",
           color="#1f77b4", label=f"compressed: {sum(counts)} pages")
    ax.bar([page_size], [100 * raw / total], width=width, align="edge", color="#d62728",
           label=f"raw (did not shrink): {raw} pages")
    ax.bar([-2 * width], [100 * zero / total], width=width, align="edge", color="#7f7f7f",
           label=f"zero (no payload): {zero} pages")
    normal = t["normal_pages"]
    if normal:
        mean = (t["payload_bytes"] - 4 * normal) / normal
        ax.axvline(mean, color="black", linestyle="--", linewidth=1,
                   label=f"mean of non-zero pages: {mean:.0f} bytes")
    for x, pages, text in ((-1.5 * width, zero, "zero"), (page_size + width / 2, raw, "raw")):
        ax.annotate(text, (x, 100 * pages / total), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-3 * width, page_size + 2 * width)
    ax.set_xlabel("payload bytes of one page (length table excluded)")
    ax.set_ylabel("% of all pages sent")
    ax.legend(loc="upper center", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _shares_without_sizes(ax: Any, r: dict[str, Any]) -> None:
    t = r["totals"]
    normal, zero = t["normal_pages"], t["zero_pages"]
    mean = t["payload_bytes"] / normal if normal else 0.0
    total = max(normal + zero, 1)
    ax.bar(["zero (no payload)", "normal"], [100 * zero / total, 100 * normal / total],
           color=["#7f7f7f", "#1f77b4"])
    ax.set_ylabel("% of all pages sent")
    ax.text(0.5, 0.92, f"method {r['method']} compresses each packet as one stream: no sizes per page.\n"
            f"Mean payload per normal page: {mean:.0f} of {r['page_size']} bytes",
            transform=ax.transAxes, ha="center", va="top", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})


def _throughput_panel(ax: Any, r: dict[str, Any]) -> None:
    ax.set_title("Guest RAM sent per channel over time")
    timeline = r.get("timeline")
    if not timeline or not timeline["channels"] or not timeline["channels"][0]["buckets"]:
        ax.text(0.5, 0.5, "no timeline in this report", ha="center", transform=ax.transAxes)
        return
    pages_at, packets_at = timeline["fields"].index("pages"), timeline["fields"].index("packets")
    page_size = r["page_size"]
    total: list[float] = []
    many = len(timeline["channels"]) > _MAX_CHANNEL_LINES
    busiest = max(sum(b[packets_at] for b in c["buckets"]) for c in timeline["channels"])
    points = min(_MAX_POINTS, max(10, busiest // _PACKETS_PER_POINT))
    for channel in timeline["channels"]:
        pages = [b[pages_at] for b in channel["buckets"]]
        times, rates = _rebinned(pages, timeline["bucket_seconds"], page_size, points)
        total = [a + b for a, b in zip(total, rates)] if total else rates
        if many:
            ax.plot(times, rates, color="#1f77b4", alpha=0.3, linewidth=0.8)
        else:
            ax.plot(times, rates, linewidth=1.2, label=f"channel {channel['channel']}")
    ax.plot(times, total, color="black", linewidth=1.8, label="all channels")
    labelled = -math.inf
    span = max(timeline["seconds"], 1e-9)
    for i, mark in enumerate(timeline["rounds"]):
        if mark.get("end") is not None:
            ax.axvspan(mark["start"], mark["end"], color="#1f77b4", alpha=0.07, linewidth=0,
                       label="a round being sent (gaps: receive + verify)" if i == 0 else None)
        ax.axvline(mark["start"], color="#999999", linestyle=":", linewidth=1)
        if mark["start"] - labelled > 0.04 * span:     # labels closer than that would overlap
            labelled = mark["start"]
            ax.annotate(f"round {mark['round']}", (mark["start"], 1),
                        xycoords=("data", "axes fraction"), xytext=(-1, -4),
                        textcoords="offset points", fontsize=8, color="#555555", rotation=90,
                        ha="right", va="top")
    ax.set_xlabel("seconds since the first round started")
    ax.set_ylabel("MB/s of guest RAM")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize=9, frameon=False)
    ax.grid(alpha=0.3)


def _rebinned(pages: list[int], width: float, page_size: int,
              points: int) -> tuple[list[float], list[float]]:
    """(bucket centres, MB/s), with at most ``points`` buckets."""
    factor = max(1, math.ceil(len(pages) / points))
    sums = [sum(pages[i:i + factor]) for i in range(0, len(pages), factor)]
    wide = width * factor
    return ([(i + 0.5) * wide for i in range(len(sums))],
            [s * page_size / wide / _MB for s in sums])


def _phase_panel(ax: Any, r: dict[str, Any]) -> None:
    ax.set_title("Where a packet's time went (mean per packet)")
    channels = r["send_channels"]
    names = [f"channel {c['channel']}" for c in channels]
    left = [0.0] * len(channels)
    for key, label, colour in _PHASE_LABELS:
        values = [c.get(key, 0) / max(c.get("packets", 0), 1) / 1e3 for c in channels]
        ax.barh(names, values, left=left, color=colour, label=label)
        for y, (x0, v) in enumerate(zip(left, values)):
            if v > 0.08 * max(sum(_phase_means(c)) for c in channels):
                ax.text(x0 + v / 2, y, f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="white")
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("µs per packet (a packet: up to 128 pages of 4 KiB)"
                  if r["page_size"] == 4096 else "µs per packet")
    # below the panel, as the throughput panel's: inside, it hid the end of a bar
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=9, frameon=False)
    ax.grid(axis="x", alpha=0.3)


def _phase_means(c: dict[str, Any]) -> list[float]:
    return [c.get(key, 0) / max(c.get("packets", 0), 1) / 1e3 for key, _, _ in _PHASE_LABELS]


def _round_panel(ax: Any, r: dict[str, Any]) -> None:
    ax.set_title("Send time per precopy round (the last one ~ downtime)")
    rounds = r["rounds"]
    ms = [x["send_seconds"] * 1e3 for x in rounds]
    colours = ["#1f77b4"] * (len(rounds) - 1) + ["#d62728"]
    bars = ax.bar([str(x["round"]) for x in rounds], ms, color=colours)
    for bar, x in zip(bars, rounds):
        wire = x.get("wire_bytes")
        text = (f"{x['send_seconds'] * 1e3:.0f} ms\n{x['dirty_pages']} pages"
                + (f"\n{wire / _MB:.1f} MB" if wire is not None else ""))
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xlabel("round (0 sends every page; later rounds the pages dirtied since)")
    ax.set_ylabel("ms")
    ax.set_ylim(0, max(ms + [1.0]) * 1.3)
    ax.grid(axis="y", alpha=0.3)


# ---- stress -------------------------------------------------------------

def _stress_figure(r: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(11, 6.5), layout="constrained")
    ax = figure.subplots()
    verdict = "ok" if r["ok"] else "FAILED"
    figure.suptitle(
        f"Stress run, seed {r['seed']}: {r['rounds']} rounds on {r['channels']} channels, "
        f"{r['rounds_verified']} verified; pages lost {r['pages_lost']}, unexpected errors "
        f"{len(r['unexpected_errors'])}: {verdict}\n{_machine_text(r['machine'])}", fontsize=12)
    kinds = sorted(k for k, f in r["faults"].items() if f.get("injected", 0))
    ax.set_title("Faults injected and survived, per kind")
    if not kinds:
        # no bars: a legend would show default colours for both, and an axis nothing
        ax.text(0.5, 0.5, "no fault was injected in this run", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    injected = [r["faults"][k].get("injected", 0) for k in kinds]
    survived = [r["faults"][k].get("survived", 0) for k in kinds]
    y = list(range(len(kinds)))
    ax.barh([i - 0.2 for i in y], injected, height=0.4, color="#7f7f7f", label="injected")
    ax.barh([i + 0.2 for i in y], survived, height=0.4, color="#2ca02c",
            label="survived (caught, or harmless)")
    counts = [c for c in injected + survived if c]
    # a kind injected once beside one injected a thousand times: on a linear
    # axis the small bars vanish
    log = bool(counts) and max(counts) > 50 * min(counts)
    floor = 0.5 if log else 0.0          # where a bar of 0 ends on the axis
    for i, (a, b) in enumerate(zip(injected, survived)):
        ax.text(max(a, floor), i - 0.2, f" {a}", va="center", fontsize=8)
        ax.text(max(b, floor), i + 0.2, f" {b}", va="center", fontsize=8)
    ax.set_yticks(y, kinds)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ax.set_xlim(floor, max(counts) * 3)
        ax.set_xlabel("faults (log scale)")
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(0, max(injected + survived + [1]) * 1.1)
        ax.set_xlabel("faults")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return figure


# ---- several things side by side -----------------------------------------

def _comparison_figure(rows: list[Row], bench: dict[str, Any] | None) -> Figure:
    ratios = bench["ratios"] if bench else []
    last_rounds = [r.last_round_seconds for r in rows]
    show_last = any(v is not None for v in last_rounds)
    panels = 3 + bool(ratios) + show_last
    height = max(3.5, 1.2 + 0.5 * len(rows))
    figure = Figure(figsize=(4.6 * panels, height + 1.2), layout="constrained")
    axes = list(figure.subplots(1, panels))
    title = (f"bench {bench['bench']}: {bench['guest']}" if bench
             else f"{len(rows)} reports side by side: time, bytes on the wire, throughput")
    figure.suptitle(title, fontsize=12)
    labels = [r.label for r in rows]
    _hbars(axes.pop(0), labels, [r.seconds for r in rows], "Time",
           "seconds (run: all rounds' send time; bench: median)", "{:.3f} s", "#1f77b4")
    _wire_panel(axes.pop(0), labels, rows)
    _hbars(axes.pop(0), labels, [r.mb_per_s for r in rows], "Throughput", "MB/s of guest RAM",
           "{:.0f} MB/s", "#2ca02c", show_labels=False)
    if show_last:
        _hbars(axes.pop(0), labels, [None if v is None else v * 1e3 for v in last_rounds],
               "Last precopy round (~ downtime)", "ms", "{:.1f} ms", "#d62728", show_labels=False)
    if ratios:
        _ratio_panel(axes.pop(0), ratios)
    return figure


def _hbars(ax: Any, labels: list[str], values: list[float | None], title: str, xlabel: str,
           fmt: str, colour: str, *, show_labels: bool = True) -> None:
    y = list(range(len(labels)))
    shown = [v or 0.0 for v in values]
    ax.barh(y, shown, color=colour)
    for i, v in enumerate(values):
        ax.text(v or 0.0, i, " " + (fmt.format(v) if v is not None else "n/a"), va="center",
                fontsize=8)
    ax.set_yticks(y, labels if show_labels else [""] * len(labels))
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(shown + [1e-9]) * 1.3)
    ax.grid(axis="x", alpha=0.3)


def _wire_panel(ax: Any, labels: list[str], rows: list[Row]) -> None:
    y = list(range(len(rows)))
    guest = [(r.guest_bytes or 0) / _MB for r in rows]
    wire = [(r.wire_bytes or 0) / _MB for r in rows]
    ax.barh(y, guest, color="#dddddd", edgecolor="#999999", label="guest RAM")
    ax.barh(y, wire, height=0.5, color="#ff7f0e", label="on the wire")
    for i, r in enumerate(rows):
        text = f" {wire[i]:.1f} MB" + (f" (ratio {r.ratio:.2f})" if r.ratio else "") \
            if r.wire_bytes is not None else " n/a"
        ax.text(max(guest[i], wire[i]), i, text, va="center", fontsize=8)
    ax.set_yticks(y, [""] * len(rows))
    ax.invert_yaxis()
    ax.set_title("Bytes on the wire")
    ax.set_xlabel("MB")
    ax.set_xlim(0, max(guest + wire + [1e-9]) * 1.45)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)


def _ratio_panel(ax: Any, ratios: list[dict[str, Any]]) -> None:
    names = [x["name"] for x in ratios]
    values = [x["value"] for x in ratios]
    colours = ["#2ca02c" if x.get("met", True) else "#d62728" for x in ratios]
    y = list(range(len(ratios)))
    ax.barh(y, values, color=colours)
    for i, x in enumerate(ratios):
        if x.get("goal") is not None:
            ax.plot([x["goal"], x["goal"]], [i - 0.4, i + 0.4], color="black", linestyle="--")
        ax.text(x["value"], i, f" {x['value']:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_title("Ratios (dashed: goal; green met, red missed)")
    ax.set_xlabel("ratio")
    ax.set_xlim(0, max(values + [x.get("goal") or 0 for x in ratios] + [1e-9]) * 1.3)
    ax.grid(axis="x", alpha=0.3)


def _machine_text(m: dict[str, Any]) -> str:
    codec = m.get("codec", {})
    return (f"{m.get('cores', '?')} cores, {m.get('cpu_model', '?')}; software codec "
            f"{codec.get('compress', '?')}/{codec.get('decompress', '?')}")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
