"""What a run did, as numbers: per round, per channel, and in total.

``Report`` is plain data (``to_dict`` / ``write_json``) with a text form for
the terminal (``format_text``).  The JSON carries a schema version so two
reports can be compared.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class RoundReport:
    round: int
    dirty_pages: int
    packets: int
    send_seconds: float
    receive_seconds: float | None = None
    mismatched_pages: int | None = None       # None: not verified
    first_mismatch_offsets: dict[str, list[int]] = field(default_factory=dict)


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
    schema_version: int = SCHEMA_VERSION

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
            "send_mb_per_s": guest / seconds / 1e6 if seconds else None,
            "verified": self.verified,
            **{key: self._sum(key) for key in WORK_QUEUE_COUNTERS},
        }

    # ---- output -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["totals"] = self.totals()
        return out

    def write_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    def format_text(self) -> str:
        t = self.totals()
        mb = 1e6
        lines = [
            f"multifd-engine {self.engine_version}: method {self.method}, {self.channels} channel(s), "
            f"page size {self.page_size}, peer QEMU {self.qemu_version}",
            f"codec {self.codec}; work queue path: {', '.join(sorted(set(self.accelerator)))}",
            *[f"  why: {reason}" for reason in sorted({c.get('path_reason', '') for c in
                                                       self.send_channels} - {''})],
            "",
            f"{'round':>5} {'pages':>9} {'packets':>8} {'send s':>8} {'recv s':>8}  verify",
        ]
        for r in self.rounds:
            recv = f"{r.receive_seconds:8.3f}" if r.receive_seconds is not None else f"{'-':>8}"
            lines.append(f"{r.round:>5} {r.dirty_pages:>9} {r.packets:>8} {r.send_seconds:8.3f} "
                         f"{recv}  {_verdict(r.mismatched_pages)}")
        lines += [
            "",
            f"pages sent      {t['pages']:>12}  (normal {t['normal_pages']}, zero {t['zero_pages']}, "
            f"raw {t['raw_pages']})",
            f"bytes on wire   {t['bytes_on_wire']:>12}  ({t['bytes_on_wire'] / mb:.1f} MB of "
            f"{t['guest_bytes'] / mb:.1f} MB guest RAM)",
            f"ratio           {_num(t['ratio'], '.2f'):>12}",
            f"send            {_num(t['send_mb_per_s'], '.1f'):>12}  MB/s of guest RAM "
            f"({t['send_seconds']:.3f} s)",
            "work queue      " + ", ".join(f"{_LABELS[k]} {t[k]}" for k in WORK_QUEUE_COUNTERS),
            *_device_lines(self.device),
            "",
            f"{'channel':>7} {'packets':>8} {'normal':>8} {'zero':>7} {'raw':>7} {'MB':>9} "
            f"{'hw jobs':>8} {'busy':>6} {'retries':>7} {'fallback':>8} {'hw err':>6} {'sw err':>6}  path",
        ]
        for c in self.send_channels:
            lines.append(
                f"{c['channel']:>7} {c.get('packets', 0):>8} {c.get('normal_pages', 0):>8} "
                f"{c.get('zero_pages', 0):>7} {c.get('raw_pages', 0):>7} {c.get('bytes', 0) / mb:>9.2f} "
                f"{c.get('hw_submitted', 0):>8} {c.get('busy', 0):>6} {c.get('retries', 0):>7} "
                f"{c.get('sw_fallbacks', 0):>8} {c.get('hw_errors', 0):>6} {c.get('sw_errors', 0):>6}  "
                f"{c.get('accelerator', '?')}")
        lines += ["", f"verify: {_verdict_total(self.verified)}"]
        if self.final_digests_match is not None:
            lines[-1] = ("verify: both ends' final sha256 per RAM block agree"
                         if self.final_digests_match else "verify: FAILED: final digests differ")
        for r in self.rounds:
            for block, offsets in r.first_mismatch_offsets.items():
                shown = ", ".join(f"{o:#x}" for o in offsets)
                lines.append(f"  round {r.round}: {r.mismatched_pages} page(s) of {block!r} differ, "
                             f"first at {shown}")
        return "\n".join(lines)


# per-worker work-queue counters (PacketStats), summed per channel and run
WORK_QUEUE_COUNTERS = ("hw_submitted", "busy", "retries", "sw_fallbacks", "hw_errors", "sw_errors")
_LABELS = {"hw_submitted": "hardware jobs", "busy": "busy answers", "retries": "retries",
           "sw_fallbacks": "software fallbacks", "hw_errors": "hardware errors",
           "sw_errors": "software errors"}


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
