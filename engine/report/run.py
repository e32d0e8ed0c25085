"""What a run did, as numbers: per round, per channel, and in total.

``Report`` is plain data with a text form for the terminal
(``format_text``, three levels of detail) and a JSON form of the common
report schema (``to_dict`` / ``write_json``, kind ``"run"``; see
``engine.report.schema``); ``from_dict`` reads that JSON back.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.report.qemu_stats import format_line as format_qemu_line
from engine.report.qemu_stats import query_migrate
from engine.report.schema import envelope, now, write_report

QUIET, NORMAL, VERBOSE = 0, 1, 2
_MB = 1e6


@dataclass
class RoundReport:
    round: int
    dirty_pages: int
    packets: int
    send_seconds: float
    receive_seconds: float | None = None
    mismatched_pages: int | None = None       # None: not verified
    first_mismatch_offsets: dict[str, list[int]] = field(default_factory=dict)
    wire_bytes: int | None = None             # bytes written in this round, SYNC included


@dataclass
class Report:
    engine_version: str
    codec: str
    method: str
    page_size: int
    channels: int
    qemu_version: str
    accelerator: list[str]                     # the path each channel's worker ran
    config: dict[str, Any]
    rounds: list[RoundReport] = field(default_factory=list)
    send_channels: list[dict[str, Any]] = field(default_factory=list)
    receive_channels: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, int] = field(default_factory=dict)   # the emulated IAA device's own counters
    # TCP migrations: both ends' sha256 per RAM block agree (None: not a TCP run)
    final_digests_match: bool | None = None
    created: str = field(default_factory=now)
    machine: dict[str, Any] = field(default_factory=dict)  # report_schema.machine_facts()
    timeline: dict[str, Any] | None = None                 # timeline.PacketTimeline.as_dict()
    page_sizes: dict[str, Any] | None = None               # page_sizes.PageSizeHistogram.as_dict()
    setup_seconds: float = 0.0     # workers started, channels opened (the JSON has it in "qemu")

    # ---- derived figures ----------------------------------------------

    def _sum(self, key: str) -> int:
        return sum(int(c.get(key, 0)) for c in self.send_channels)

    @property
    def pages_sent(self) -> int:
        return sum(r.dirty_pages for r in self.rounds)

    @property
    def bytes_on_wire(self) -> int:
        return self._sum("bytes")

    @property
    def send_seconds(self) -> float:
        return sum(r.send_seconds for r in self.rounds)

    @property
    def verified(self) -> bool | None:
        """True if every round verified, False if one did not, None if not checked."""
        checks = [r.mismatched_pages == 0 for r in self.rounds if r.mismatched_pages is not None]
        if self.final_digests_match is not None:
            checks.append(self.final_digests_match)
        if not checks:
            return None
        return all(checks)

    def totals(self) -> dict[str, Any]:
        guest = self.pages_sent * self.page_size
        wire = self.bytes_on_wire
        seconds = self.send_seconds
        return {
            "pages": self.pages_sent,
            "normal_pages": self._sum("normal_pages"),
            "zero_pages": self._sum("zero_pages"),
            "raw_pages": self._sum("raw_pages"),
            "compressed_pages": self._sum("compressed_pages"),
            "packets": self._sum("packets"),
            "sync_packets": self._sum("sync_packets"),
            "guest_bytes": guest,
            "bytes_on_wire": wire,
            "payload_bytes": self._sum("payload_bytes"),
            "ratio": guest / wire if wire else None,
            "send_seconds": seconds,
            "send_mb_per_s": guest / seconds / _MB if seconds else None,
            "verified": self.verified,
            **{key: self._sum(key) for key in WORK_QUEUE_COUNTERS},
        }

    def qemu(self) -> dict[str, Any]:
        """The run as QEMU's ``query-migrate`` would report it (``engine.report.qemu_stats``)."""
        return query_migrate(setup_seconds=self.setup_seconds,
                             round_seconds=[r.send_seconds for r in self.rounds],
                             transferred=self.bytes_on_wire, zero_pages=self._sum("zero_pages"),
                             normal_pages=self._sum("normal_pages"), page_size=self.page_size)

    # ---- JSON ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The report in the common schema (kind "run")."""
        out = envelope("run", engine_version=self.engine_version, created=self.created,
                       machine=self.machine, config=self.config)
        body = asdict(self)
        for key in ("engine_version", "created", "machine", "config", "setup_seconds"):
            del body[key]
        out.update(body)
        out["totals"] = self.totals()
        out["qemu"] = self.qemu()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A Report from ``to_dict`` output (checked by ``report_schema.validate`` first)."""
        names = {f.name for f in fields(cls)} - {"setup_seconds"}
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(data.get("qemu"), dict):          # schema version 3 on
            values["setup_seconds"] = data["qemu"].get("setup-time", 0) / 1e3
        round_names = {f.name for f in fields(RoundReport)}
        values["rounds"] = [RoundReport(**{k: v for k, v in r.items() if k in round_names})
                            for r in data.get("rounds", [])]
        return cls(**values)

    def write_json(self, path: str | os.PathLike) -> None:
        write_report(path, self.to_dict())

    # ---- text ---------------------------------------------------------

    def format_text(self, verbosity: int = NORMAL) -> str:
        """QUIET: the verdict line; NORMAL: rounds, totals, channels; VERBOSE: also
        where the time went per packet and the page sizes."""
        if verbosity <= QUIET:
            return self._verdict_line(with_figures=True)
        t = self.totals()
        lines = [
            f"multifd-engine {self.engine_version}: method {self.method}, {self.channels} channel(s), "
            f"page size {self.page_size}, peer QEMU {self.qemu_version}",
            *self._path_lines(verbosity),
            "",
            *self._round_lines(),
            "",
            f"pages sent      {t['pages']:>12}  (normal {t['normal_pages']}, zero {t['zero_pages']}, "
            f"raw {t['raw_pages']})",
            f"bytes on wire   {t['bytes_on_wire']:>12}  ({t['bytes_on_wire'] / _MB:.1f} MB of "
            f"{t['guest_bytes'] / _MB:.1f} MB guest RAM)",
            f"ratio           {_num(t['ratio'], '.2f'):>12}",
            f"send            {_num(t['send_mb_per_s'], '.1f'):>12}  MB/s of guest RAM "
            f"({t['send_seconds']:.3f} s)",
            format_qemu_line(self.qemu()),
            *(["work queue      " + ", ".join(f"{_LABELS[k]} {t[k]}" for k in WORK_QUEUE_COUNTERS)]
              if self.uses_work_queue else []),
            *_device_lines(self.device),
            "",
            *self._channel_lines(),
        ]
        if verbosity >= VERBOSE:
            lines += ["", *self._time_split_lines(), "", *self._page_size_lines()]
        lines += ["", self._verdict_line(with_figures=False)]
        for r in self.rounds:
            for block, offsets in r.first_mismatch_offsets.items():
                shown = ", ".join(f"{o:#x}" for o in offsets)
                lines.append(f"  round {r.round}: {r.mismatched_pages} page(s) of {block!r} differ, "
                             f"first at {shown}")
        return "\n".join(lines)

    @property
    def uses_work_queue(self) -> bool:
        """Did any channel's pages go through a work queue (qpl), so its counters mean something?"""
        return any(path != "none" for path in self.accelerator)

    def _path_lines(self, verbosity: int) -> list[str]:
        """The codec, and the work-queue path with why: in a few words, in full with -v."""
        paths = sorted({(c.get("accelerator", "?"), c.get("path_reason", ""))
                        for c in self.send_channels} - {("none", "")})
        if verbosity < VERBOSE:
            return [f"codec {self.codec}" + "".join(f"; {path} path: {path_summary(reason)}"
                                                    for path, reason in paths)]
        lines = [f"codec {self.codec}"]
        for path, reason in paths:
            lines.append(textwrap.fill(reason, 100, initial_indent=f"{path} path: ",
                                       subsequent_indent="  "))
        return lines

    def _verdict_line(self, *, with_figures: bool) -> str:
        if self.final_digests_match is not None:
            line = ("verify: both ends' final sha256 per RAM block agree" if self.final_digests_match
                    else "verify: FAILED: final digests differ")
        else:
            line = f"verify: {_verdict_total(self.verified)}"
        if with_figures:
            t = self.totals()
            line += (f" ({t['pages']} pages, {t['bytes_on_wire'] / _MB:.1f} MB on wire, ratio "
                     f"{_num(t['ratio'], '.2f')}, {_num(t['send_mb_per_s'], '.1f')} MB/s)")
        return line

    def _round_lines(self) -> list[str]:
        lines = [f"{'round':>5} {'pages':>9} {'packets':>8} {'MB wire':>9} {'send ms':>9} "
                 f"{'MB/s':>8} {'recv ms':>9}  verify"]
        for r in self.rounds:
            wire = f"{r.wire_bytes / _MB:9.2f}" if r.wire_bytes is not None else f"{'-':>9}"
            rate = r.dirty_pages * self.page_size / r.send_seconds / _MB if r.send_seconds else 0.0
            recv = f"{r.receive_seconds * 1e3:9.1f}" if r.receive_seconds is not None else f"{'-':>9}"
            lines.append(f"{r.round:>5} {r.dirty_pages:>9} {r.packets:>8} {wire} "
                         f"{r.send_seconds * 1e3:9.1f} {rate:8.1f} {recv}  "
                         f"{_verdict(r.mismatched_pages)}")
        if len(self.rounds) > 1:
            last = self.rounds[-1]
            lines.append(f"last round: {last.dirty_pages} pages in {last.send_seconds * 1e3:.1f} ms "
                         "(were it the stop-and-copy round, this would be the downtime)")
        return lines

    def _channel_lines(self) -> list[str]:
        """Per channel; ``packets`` are data packets, the SYNC packets (one per channel
        per round, no pages) apart, so a receiver's count (both) is their sum."""
        queue = self.uses_work_queue
        lines = [f"{'channel':>7} {'packets':>8} {'SYNC':>5} {'normal':>8} {'zero':>7} {'raw':>7} "
                 f"{'MB':>9}" + (f" {'hw jobs':>8} {'busy':>6} {'retries':>7} {'fallback':>8} "
                                 f"{'hw err':>6} {'sw err':>6}  path" if queue else "")]
        for c in self.send_channels:
            line = (f"{c['channel']:>7} {c.get('packets', 0):>8} {c.get('sync_packets', 0):>5} "
                    f"{c.get('normal_pages', 0):>8} {c.get('zero_pages', 0):>7} "
                    f"{c.get('raw_pages', 0):>7} {c.get('bytes', 0) / _MB:>9.2f}")
            if queue:
                line += (f" {c.get('hw_submitted', 0):>8} {c.get('busy', 0):>6} "
                         f"{c.get('retries', 0):>7} {c.get('sw_fallbacks', 0):>8} "
                         f"{c.get('hw_errors', 0):>6} {c.get('sw_errors', 0):>6}  "
                         f"{c.get('accelerator', '?')}")
            lines.append(line)
        return lines

    def _time_split_lines(self) -> list[str]:
        lines = ["where the time went, per packet (mean µs):",
                 f"{'channel':>7} {'packets':>8} {'zero scan':>10} {'compress':>10} {'write':>10}"]
        for c in self.send_channels:
            packets = c.get("packets", 0) or 1
            lines.append(f"{c['channel']:>7} {c.get('packets', 0):>8} "
                         + " ".join(f"{c.get(k, 0) / packets / 1e3:10.1f}" for k in PHASES))
        return lines

    def _page_size_lines(self) -> list[str]:
        sizes = self.page_sizes
        t = self.totals()
        if not sizes or not sizes.get("per_page"):
            normal = t["normal_pages"]
            mean = t["payload_bytes"] / normal if normal else 0.0
            return [f"page sizes: method {self.method} has no per-page sizes; mean payload per normal "
                    f"page {mean:.0f} bytes of {self.page_size}"]
        width, counts = sizes["bucket_bytes"], sizes["compressed"]
        compressed = sum(counts)
        lines = [f"payload bytes per page (pages; zero pages {t['zero_pages']}, raw {sizes['raw']}):"]
        for i, count in enumerate(counts):
            if count:
                share = count / max(compressed + sizes["raw"], 1)
                lines.append(f"  {i * width:6.0f}..{(i + 1) * width:6.0f}  {count:>9}  "
                             f"{'#' * round(share * 50)}")
        return lines


# per-worker work-queue counters (PacketStats), summed per channel and run
WORK_QUEUE_COUNTERS = ("hw_submitted", "busy", "retries", "sw_fallbacks", "hw_errors", "sw_errors")
# where a packet's time goes: the worker's zero scan and compression, the coordinator's write
PHASES = ("zero_ns", "compress_ns", "write_ns")
_LABELS = {"hw_submitted": "hardware jobs", "busy": "busy answers", "retries": "retries",
           "sw_fallbacks": "software fallbacks", "hw_errors": "hardware errors",
           "sw_errors": "software errors"}


def path_summary(reason: str) -> str:
    """A work-queue path's reason in a few words: "libqpl not found", "IAA hardware
    probe failed", 'accelerator = "software"' (the reasons put that first)."""
    return reason.removeprefix("auto: ").split(" (")[0].split(": ")[0]


def _device_lines(device: dict[str, int]) -> list[str]:
    if not device:
        return []
    d = device
    return [
        f"emulated IAA    {d['jobs_done']} jobs, busy answers {d['busy_full'] + d['busy_storm']} "
        f"(queue full {d['busy_full']}, {d['storms']} storm(s) {d['busy_storm']}), did not fit "
        f"{d['more_output']}",
        f"  injected      job errors {d['job_errors']}, overflows {d['overflows']}, "
        f"slow jobs {d['slow_jobs']}",
    ]


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(mismatched: int | None) -> str:
    if mismatched is None:
        return "-"
    return "ok" if mismatched == 0 else f"{mismatched} page(s) differ"


def _verdict_total(verified: bool | None) -> str:
    return {None: "not checked", True: "every round byte for byte identical",
            False: "FAILED"}[verified]
