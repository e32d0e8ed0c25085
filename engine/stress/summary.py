"""What a stress run did: counts, faults and their outcomes, memory, errors.

A fault of each kind is *injected* when it actually happened (a kill that
found its worker, a damage whose packet came), and *survived* when the
engine dealt with it as it must:

- ``worker_kill``: the replacement took over and the round verified (or
  ended on another injected fault's error);
- ``corrupt_*``: the receiver stopped with a typed error naming the
  channel (``detected_error``), or verify named the damaged pages
  (``detected_verify``), or the damage changed nothing (``harmless``);
- ``slow_reader``: the round verified and the channel never held more
  than its capacity;
- ``stop_reader``: the stall timeout turned it into ``ChannelStalled``;
- ``device_*``: the emulated device's faults; pages fell back and the
  round verified;
- ``hostile_*``: a stranger connected ahead of a TCP migration's channels
  and the receiver dropped it (``detected_error``); its rounds then count
  as any others.

``pages_lost`` counts pages that verify found wrong with no fault to
explain it; ``unexpected_errors`` every error no injected fault explains.
Both must be 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.report.schema import SCHEMA_VERSION, envelope, machine_facts, now, write_report


@dataclass
class FaultCount:
    injected: int = 0
    survived: int = 0
    detected_error: int = 0
    detected_verify: int = 0
    harmless: int = 0


@dataclass
class StressSummary:
    seed: int
    channels: int
    rounds: int = 0                            # rounds run, also those a fault ended
    rounds_verified: int = 0                   # rounds whose every page arrived and compared equal
    migrations: int = 0
    packets: int = 0                           # data packets sent (all rounds)
    pages: int = 0                             # pages of the verified rounds
    guest_bytes: int = 0                       # their pages * page size
    wire_bytes: int = 0                        # bytes sent (all rounds)
    round_seconds: float = 0.0                 # time in verified rounds (send, receive, verify)
    elapsed_seconds: float = 0.0
    worker_restarts: int = 0
    faults: dict[str, FaultCount] = field(default_factory=dict)
    pages_lost: int = 0
    unexpected_errors: list[dict[str, Any]] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)   # how damage was caught (first few)
    fatal_error: str | None = None             # what ended the run early (a worker that keeps dying)
    interrupted: bool = False
    peak_rss: dict[str, int] = field(default_factory=dict)       # process -> bytes (VmHWM)
    peak_anon: dict[str, int] = field(default_factory=dict)      # process -> bytes (RssAnon, sampled)
    peak_channel_bytes: int = 0                # most bytes one channel ever held
    device_counters: dict[str, int] = field(default_factory=dict)
    variation: dict[str, dict[str, int]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=now)

    @property
    def ok(self) -> bool:
        return (self.pages_lost == 0 and not self.unexpected_errors and self.fatal_error is None
                and not self.interrupted)

    @property
    def throughput_mb_s(self) -> float:
        return self.guest_bytes / self.round_seconds / 1e6 if self.round_seconds else 0.0

    def fault(self, kind: str) -> FaultCount:
        return self.faults.setdefault(kind, FaultCount())

    def count_variation(self, what: str, value: Any) -> None:
        counts = self.variation.setdefault(what, {})
        counts[str(value)] = counts.get(str(value), 0) + 1

    def note_peak(self, table: dict[str, int], process: str, value: int) -> None:
        table[process] = max(table.get(process, 0), value)

    # ---- output -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["throughput_mb_s"] = round(self.throughput_mb_s, 1)
        out["faults_injected"] = sum(f.injected for f in self.faults.values())
        out["faults_survived"] = sum(f.survived for f in self.faults.values())
        return out

    def to_report(self, config: dict[str, Any]) -> dict[str, Any]:
        """The summary in the common report schema (kind "stress"; engine.report.schema)."""
        from engine.batch import engine_version   # engine.batch imports much; only here

        out = envelope("stress", engine_version=engine_version(), created=self.created,
                       machine=machine_facts(), config=config)
        out.update((k, v) for k, v in self.to_dict().items() if k not in out)
        return out

    def write_json(self, path: str, config: dict[str, Any] | None = None) -> None:
        write_report(path, self.to_report(config or {}))

    def verdict_line(self) -> str:
        """The one line ``stress -q`` prints."""
        return (f"result {'ok' if self.ok else 'FAILED'}: seed {self.seed}, {self.rounds} rounds "
                f"({self.rounds_verified} verified), pages lost {self.pages_lost}, unexpected "
                f"errors {len(self.unexpected_errors)}")

    def status_line(self, migration: str = "") -> str:
        injected = sum(f.injected for f in self.faults.values())
        return (f"round {self.rounds} migration {self.migrations} {migration} "
                f"{self.throughput_mb_s:.0f} MB/s faults {injected} "
                f"lost {self.pages_lost} errors {len(self.unexpected_errors)}")

    def format_text(self) -> str:
        lines = [
            f"seed                {self.seed}   (--seed {self.seed} repeats this run)",
            f"rounds              {_count(self.rounds, 'round')} in "
            f"{_count(self.migrations, 'migration')}, {self.rounds_verified} verified, "
            f"{self.channels} channels, {self.elapsed_seconds:.1f} s",
            f"packets             {self.packets}",
            f"pages verified      {self.pages}  ({self.guest_bytes / _MB:.1f} MB of guest pages)",
            f"bytes on wire       {self.wire_bytes}  ({self.wire_bytes / _MB:.1f} MB)",
            f"throughput          {self.throughput_mb_s:.1f} MB/s of guest pages (verified rounds)",
            f"worker restarts     {self.worker_restarts}",
            *self._fault_lines(),
            f"pages lost          {self.pages_lost}",
            f"unexpected errors   {len(self.unexpected_errors)}",
        ]
        for error in self.unexpected_errors[:10]:
            lines.append(f"  migration {error['migration']} round {error['round']} "
                         f"({error['plan']}): {error['type']}: {error['message']}")
        for d in self.detections[:5]:
            lines.append(f"  caught {d['kind']} (migration {d['migration']} round {d['round']}) "
                         f"by {d['how']}: {d['detail']}")
        rss = ", ".join(f"{p} {v / _MB:.0f} MB" for p, v in self.peak_rss.items())
        lines.append(f"peak RSS            {rss or '-'}")
        lines.append(f"peak channel bytes  {self.peak_channel_bytes}")
        for what, counts in sorted(self.variation.items()):
            lines.append(f"{what:<20}" + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        if self.fatal_error:
            lines.append(f"ended early         {self.fatal_error}")
        if self.interrupted:
            lines.append("ended early         interrupted")
        lines.append("result              " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)

    def _fault_lines(self) -> list[str]:
        """Faults per kind; how a damaged packet was caught only where that is how the
        kind is counted (the three add up to survived)."""
        injected = {kind: f for kind, f in sorted(self.faults.items()) if f.injected}
        if not injected:
            return ["faults              none injected"]
        lines = ["faults              injected  survived  how (error / verify / harmless)"]
        for kind, f in injected.items():
            how = (f.detected_error, f.detected_verify, f.harmless)
            shown = f"{how[0]} / {how[1]} / {how[2]}" if sum(how) and sum(how) == f.survived else ""
            lines.append(f"  {kind:<18}{f.injected:>8}  {f.survived:>8}  {shown}".rstrip())
        return lines


_MB = 1e6     # 10^6 bytes, as `report` prints the same numbers


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
