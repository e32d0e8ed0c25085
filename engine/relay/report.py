"""The report of one relayed migration: bytes in and out per channel, compression."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from engine.relay.translator import ChannelTraffic
from engine.report.run import NORMAL, QUIET
from engine.report.schema import envelope, machine_facts, now, write_report


@dataclass
class RelayReport:
    listen: str
    to: str
    incoming_method: str
    outgoing_method: str
    qemu_version: str
    page_size: int
    seconds: float = 0.0
    main_forward: int = 0           # main channel bytes, source to destination
    main_back: int = 0              # and back
    channels: list[ChannelTraffic] = field(default_factory=list)

    @property
    def bytes_in(self) -> int:
        return sum(c.incoming.bytes_in for c in self.channels)

    @property
    def bytes_out(self) -> int:
        return sum(c.bytes_out for c in self.channels)

    @property
    def ratio(self) -> float | None:
        """Multifd bytes in per byte out: above 1 the relay compressed."""
        return self.bytes_in / self.bytes_out if self.bytes_out else None

    def totals(self) -> dict[str, Any]:
        pages = sum(c.incoming.normal_pages + c.incoming.zero_pages for c in self.channels)
        return {"packets": sum(c.incoming.packets for c in self.channels), "pages": pages,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "ratio": self.ratio}

    def to_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """The report in the common schema (kind "relay")."""
        from engine.batch import engine_version

        channels = [c.as_dict() for c in self.channels]
        return {**envelope("relay", engine_version=engine_version(), created=now(),
                           machine=machine_facts(channels), config=config),
                "listen": self.listen, "to": self.to, "incoming_method": self.incoming_method,
                "outgoing_method": self.outgoing_method, "qemu_version": self.qemu_version,
                "page_size": self.page_size, "seconds": self.seconds,
                "main_channel": {"forward": self.main_forward, "back": self.main_back},
                "channels": channels, "totals": self.totals()}

    def write_json(self, path: str | os.PathLike, config: dict[str, Any]) -> None:
        write_report(path, self.to_dict(config))

    def format_text(self, verbosity: int = NORMAL) -> str:
        ratio = f"{self.ratio:.2f}x" if self.ratio else "n/a"
        verdict = (f"relayed {self.listen} -> {self.to} ({self.incoming_method} -> "
                   f"{self.outgoing_method}, QEMU {self.qemu_version}) in {self.seconds:.2f} s: "
                   f"{_mib(self.bytes_in)} in, {_mib(self.bytes_out)} out on "
                   f"{len(self.channels)} channels, {ratio}")
        if verbosity <= QUIET:
            return verdict
        lines = [verdict,
                 f"main channel: {self.main_forward} B forward, {self.main_back} B back",
                 f"{'channel':>7} {'packets':>8} {'sync':>5} {'normal':>8} {'zero':>7} "
                 f"{'bytes in':>12} {'bytes out':>12} {'in/out':>7} {'restarts':>8}  path"]
        for c in self.channels:
            i = c.incoming
            each = f"{i.bytes_in / c.bytes_out:.2f}" if c.bytes_out else "n/a"
            lines.append(f"{c.channel:>7} {i.packets:>8} {i.sync_packets:>5} {i.normal_pages:>8} "
                         f"{i.zero_pages:>7} {i.bytes_in:>12} {c.bytes_out:>12} {each:>7} "
                         f"{c.restarts:>8}  {c.accelerator}")
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
