"""Reports side by side, as rows a person compares: the ``report`` command's tables.

Every kind of report (run, receive, bench, stress, relay, sweep) becomes one or more
``Row``s with the same columns, in the units QEMU users read: pages, MB
(10^6 bytes), MB/s of guest RAM, compression ratio, and round times in
milliseconds.  ``format_details`` prints one report in full,
``format_comparison`` the rows of several.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.report.run import VERBOSE, Report

_MB = 1e6


@dataclass
class Row:
    """One thing measured: a run, a received migration, a bench case, a stress run or a sweep's job."""

    label: str
    kind: str
    method: str | None = None
    channels: int | None = None
    pages: int | None = None
    guest_bytes: int | None = None
    wire_bytes: int | None = None
    seconds: float | None = None              # run: send time; bench: median; stress: verified rounds
    last_round_seconds: float | None = None   # the last precopy round (downtime-like)
    verified: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.guest_bytes and self.wire_bytes:
            return self.guest_bytes / self.wire_bytes
        return None

    @property
    def mb_per_s(self) -> float | None:
        if self.guest_bytes and self.seconds:
            return self.guest_bytes / self.seconds / _MB
        return None


def rows_of(report: dict[str, Any]) -> list[Row]:
    """The rows of one validated report (``report_schema.load_report``)."""
    return _ROWS[report["kind"]](report)


def _run_rows(r: dict[str, Any]) -> list[Row]:
    t = r["totals"]
    paths = "/".join(sorted(set(r["accelerator"]) - {"none"}))
    rounds = r["rounds"]
    label = f"{r['method']}, {r['channels']} ch" + (f", {paths}" if paths else "")
    return [Row(label=label, kind="run", method=r["method"],
                channels=r["channels"], pages=t["pages"], guest_bytes=t["guest_bytes"],
                wire_bytes=t["bytes_on_wire"], seconds=t["send_seconds"],
                last_round_seconds=rounds[-1]["send_seconds"] if rounds else None,
                verified=t["verified"])]


def _receive_rows(r: dict[str, Any]) -> list[Row]:
    pages = sum(x["pages"] for x in r["rounds"])
    return [Row(label=f"{r['method']}, {r['channels']} ch, received", kind="receive",
                method=r["method"], channels=r["channels"], pages=pages,
                guest_bytes=pages * r["page_size"],
                wire_bytes=sum(int(c.get("bytes", 0)) for c in r["receive_channels"]),
                seconds=sum(x["seconds"] for x in r["rounds"]),
                last_round_seconds=r["rounds"][-1]["seconds"] if r["rounds"] else None,
                verified=r["digests_match"])]


def _bench_rows(r: dict[str, Any]) -> list[Row]:
    return [Row(label=c["name"], kind="bench", method=c.get("method"), channels=c.get("channels"),
                guest_bytes=c.get("work_bytes"), wire_bytes=c.get("wire_bytes"),
                seconds=c["median_seconds"]) for c in r["cases"]]


def _stress_rows(r: dict[str, Any]) -> list[Row]:
    return [Row(label=f"stress, seed {r['seed']}, {r['channels']} ch", kind="stress",
                channels=r["channels"], pages=r["pages"], guest_bytes=r["guest_bytes"],
                wire_bytes=r["wire_bytes"], seconds=r["round_seconds"], verified=r["ok"])]


def _relay_rows(r: dict[str, Any]) -> list[Row]:
    # "guest" bytes are the multifd bytes that arrived, "wire" bytes those sent on
    t = r["totals"]
    return [Row(label=f"relay {r['incoming_method']} -> {r['outgoing_method']}, "
                      f"{len(r['channels'])} ch", kind="relay", method=r["outgoing_method"],
                channels=len(r["channels"]), pages=t["pages"], guest_bytes=t["bytes_in"],
                wire_bytes=t["bytes_out"], seconds=r["seconds"])]


def _sweep_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for job in r["jobs"]:
        label = f"{job['guest']} | {job['method']}" + (f", {job['setting']}" if job["setting"] else "")
        if job["report"] is None:
            rows.append(Row(label=label, kind="sweep", method=job["method"],
                            verified=None if job["status"] == "not-run" else False))
            continue
        row = _run_rows(job["report"])[0]
        row.label, row.kind = label, "sweep"
        rows.append(row)
    return rows


_ROWS = {"run": _run_rows, "receive": _receive_rows, "bench": _bench_rows, "stress": _stress_rows,
         "relay": _relay_rows, "sweep": _sweep_rows}


def all_rows(reports: list[tuple[str, dict[str, Any]]]) -> list[Row]:
    """Rows of several (path, report) pairs; labels made unique with the file name."""
    rows = [(path, row) for path, report in reports for row in rows_of(report)]
    labels = [row.label for _, row in rows]
    for path, row in rows:
        if labels.count(row.label) > 1:
            row.label = f"{row.label} [{Path(path).stem}]"
    return [row for _, row in rows]


# ---- text ---------------------------------------------------------------

def format_comparison(rows: list[Row]) -> str:
    """One line per row; with several rows, time and wire bytes relative to the first."""
    width = max([len(r.label) for r in rows] + [6])
    header = (f"{'report':<{width}} {'pages':>9} {'guest MB':>9} {'wire MB':>9} {'ratio':>6} "
              f"{'time s':>8} {'MB/s':>8} {'last round ms':>13} {'verify':>7}")
    several = len(rows) > 1
    if several:
        header += f" {'time vs 1st':>11} {'wire vs 1st':>11}"
    lines = [header]
    first = rows[0]
    for r in rows:
        line = (f"{r.label:<{width}} {_int(r.pages):>9} {_mb(r.guest_bytes):>9} {_mb(r.wire_bytes):>9} "
                f"{_fmt(r.ratio, '.2f'):>6} {_fmt(r.seconds, '.3f'):>8} {_fmt(r.mb_per_s, '.1f'):>8} "
                f"{_fmt(_ms(r.last_round_seconds), '.1f'):>13} {_verdict(r.verified):>7}")
        if several:
            line += (f" {_relative(r.seconds, first.seconds):>11} "
                     f"{_relative(r.wire_bytes, first.wire_bytes):>11}")
        lines.append(line)
    return "\n".join(lines)


def format_details(report: dict[str, Any], path: str) -> str:
    """One report in full: what ran where, then its kind's own numbers."""
    lines = [f"{path}: {report['kind']} report, multifd-engine {report['engine_version']}, "
             f"created {report['created']}", _machine_line(report["machine"]), ""]
    kind = report["kind"]
    if kind == "run":
        lines.append(Report.from_dict(report).format_text(VERBOSE))
    elif kind == "receive":
        lines += _receive_lines(report)
    elif kind == "bench":
        lines += _bench_lines(report)
    elif kind == "relay":
        lines.append(format_comparison(rows_of(report)))
    elif kind == "sweep":
        from engine.sweep.report import format_sweep
        lines.append(format_sweep(report))
    else:
        lines += _stress_lines(report)
    return "\n".join(lines)


def _machine_line(m: dict[str, Any]) -> str:
    codec = m.get("codec", {})
    return (f"machine: {m.get('cores', '?')} cores, {m.get('cpu_model', '?')}, Python "
            f"{m.get('python', '?')}; codec {codec.get('compress', '?')} (compress) / "
            f"{codec.get('decompress', '?')} (decompress)")


def _receive_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"received from {r['peer']}: method {r['method']}, {r['channels']} channel(s), "
             f"page size {r['page_size']}", "",
             f"{'round':>5} {'pages':>9} {'packets':>8} {'recv ms':>9}"]
    lines += [f"{x['round']:>5} {x['pages']:>9} {x.get('packets', 0):>8} {x['seconds'] * 1e3:9.1f}"
              for x in r["rounds"]]
    verdict = {True: "both ends' sha256 per RAM block agree", False: "DIFFER",
               None: "not reached"}[r["digests_match"]]
    return lines + ["", f"final digests: {verdict}"]


def _bench_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"bench {r['bench']} on {r['guest']}", "",
             f"{'case':<48} {'median s':>9} {'MB/s':>9} {'runs':>5}"]
    for c in r["cases"]:
        rate = c.get("mb_per_s")
        lines.append(f"{c['name']:<48} {c['median_seconds']:9.3f} {_fmt(rate, '.1f'):>9} "
                     f"{len(c.get('seconds', [])):>5}")
    lines.append("")
    for x in r["ratios"]:
        goal = x.get("goal")
        verdict = "" if goal is None else f"  (goal {goal:g}: {'met' if x.get('met') else 'MISSED'})"
        lines.append(f"{x['name']:<48} {x['value']:9.2f}{verdict}")
    return lines


def _stress_lines(r: dict[str, Any]) -> list[str]:
    rate = r["guest_bytes"] / r["round_seconds"] / _MB if r["round_seconds"] else 0.0
    lines = [f"seed {r['seed']}, {r['channels']} channels: {r['rounds']} rounds, "
             f"{r['rounds_verified']} verified",
             f"pages verified {r['pages']} ({r['guest_bytes'] / _MB:.1f} MB), wire {r['wire_bytes'] / _MB:.1f} MB, "
             f"{rate:.1f} MB/s",
             ""]
    injected = {kind: f for kind, f in sorted(r["faults"].items()) if f.get("injected", 0)}
    if injected:
        lines.append(f"{'fault':<20} {'injected':>9} {'survived':>9}")
    else:
        lines.append("faults: none injected")
    for kind, f in injected.items():
        lines.append(f"{kind:<20} {f.get('injected', 0):>9} {f.get('survived', 0):>9}")
    lines += ["", f"pages lost {r['pages_lost']}, unexpected errors {len(r['unexpected_errors'])}",
              "result " + ("ok" if r["ok"] else "FAILED")]
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / _MB:.1f}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _relative(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _verdict(verified: bool | None) -> str:
    return {None: "-", True: "ok", False: "FAILED"}[verified]
