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
        checks = [r.mismatched_pages for r in self.rounds if r.mismatched_pages is not None]
        if not checks:
            return None
        return all(m == 0 for m in checks)

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
            "",
            f"{'channel':>7} {'packets':>8} {'normal':>8} {'zero':>7} {'raw':>7} {'MB':>9} "
            f"{'busy':>6} {'fallback':>8}  path",
        ]
        for c in self.send_channels:
            lines.append(
                f"{c['channel']:>7} {c.get('packets', 0):>8} {c.get('normal_pages', 0):>8} "
                f"{c.get('zero_pages', 0):>7} {c.get('raw_pages', 0):>7} {c.get('bytes', 0) / mb:>9.2f} "
                f"{c.get('busy', 0):>6} {c.get('sw_fallbacks', 0):>8}  {c.get('accelerator', '?')}")
        lines += ["", f"verify: {_verdict_total(self.verified)}"]
        for r in self.rounds:
            for block, offsets in r.first_mismatch_offsets.items():
                shown = ", ".join(f"{o:#x}" for o in offsets)
                lines.append(f"  round {r.round}: {r.mismatched_pages} page(s) of {block!r} differ, "
                             f"first at {shown}")
        return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(mismatched: int | None) -> str:
    if mismatched is None:
        return "-"
    return "ok" if mismatched == 0 else f"{mismatched} page(s) differ"


def _verdict_total(verified: bool | None) -> str:
    return {None: "not checked", True: "every round byte for byte identical",
            False: "FAILED"}[verified]
