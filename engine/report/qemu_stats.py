"""A run in QEMU's words: the fields of ``query-migrate`` a QEMU user reads.

Computed as QEMU computes them (migration/migration.c, ram.c):

- ``setup-time``: ms from the start until the setup phase is done; here
  workers started, channels opened, init packets written;
- ``total-time``: ms from the start to completion; here setup plus every
  round's send time (a local run receives and verifies between rounds,
  which QEMU's destination does while the source sends: left out);
- ``downtime``: ms the guest is stopped for the final stage; here an
  estimate, the last round's send time, as if it were the stop-and-copy
  round (device state not included);
- ``ram.transferred``: bytes written to the channels (init, headers,
  payloads, SYNCs); ``ram.duplicate``: zero pages; ``ram.normal``: pages
  sent with data, ``ram.normal-bytes`` = normal * page size;
- ``ram.mbps``: transferred * 8 / (total-time - setup-time), in Mbit/s
  (10^6 bits) -- bits on the wire, unlike the report's MB/s of guest RAM.

QEMU keeps the times in whole milliseconds; so does this.
"""

from __future__ import annotations

from typing import Any


def query_migrate(*, setup_seconds: float, round_seconds: list[float], transferred: int,
                  zero_pages: int, normal_pages: int, page_size: int) -> dict[str, Any]:
    """The ``qemu`` section of a run report."""
    setup = round(setup_seconds * 1e3)
    total = setup + round(sum(round_seconds) * 1e3)
    transfer_ms = total - setup
    return {
        "status": "completed",
        "setup-time": setup,
        "total-time": total,
        "downtime": round(round_seconds[-1] * 1e3) if round_seconds else 0,
        "ram": {
            "transferred": transferred,
            "duplicate": zero_pages,
            "normal": normal_pages,
            "normal-bytes": normal_pages * page_size,
            "page-size": page_size,
            "mbps": transferred * 8.0 / transfer_ms / 1000 if transfer_ms else 0.0,
        },
    }


def format_line(stats: dict[str, Any]) -> str:
    """The text report's line: total time and the downtime estimate, as query-migrate says."""
    return (f"query-migrate   total-time {stats['total-time']} ms (setup-time "
            f"{stats['setup-time']} ms), downtime ~{stats['downtime']} ms (the last round), "
            f"mbps {stats['ram']['mbps']:.1f}")
