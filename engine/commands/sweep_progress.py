"""What ``sweep`` shows while it runs: a live line on a terminal, or (``-v``) a line per job."""

from __future__ import annotations

import time
from typing import TextIO

from engine.sweep.job import OK, JobResult
from engine.sweep.spec import Job

_REDRAW_SECONDS = 0.25


class SweepProgress:
    """``done/total (failed) | now: job | round | ETA`` on a terminal; silent otherwise.

    ``log``: also one line per finished job on ``log_stream``, terminal or not (``-v``).
    """

    def __init__(self, stream: TextIO, total: int, *, live: bool, log_stream: TextIO | None = None,
                 running_label: str = "now") -> None:
        self.stream, self.total, self.log_stream = stream, total, log_stream
        self.live = live and stream.isatty()
        self.running_label = running_label
        self.done = self.failed = 0
        self.current = ""
        self.round_text = ""
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    # ---- Observer -------------------------------------------------------

    def started(self, job: Job) -> None:
        self.current, self.round_text = job.label, ""
        self._draw(force=True)

    def progress(self, job: Job, round_index: int, done: int, total: int) -> None:
        rounds = job.config.get("run", {}).get("rounds", 4)
        self.round_text = f"round {round_index + 1}/{rounds} {100 * done // max(total, 1)}%"
        self._draw()

    def finished(self, job: Job, result: JobResult) -> None:
        self.done += 1
        self.failed += result.status != OK
        if self.log_stream is not None:
            self._clear()
            self.log_stream.write(job_line(self.done, self.total, job, result) + "\n")
            self.log_stream.flush()
        self._draw(force=True)

    def running(self, labels: list[str]) -> None:
        """Cluster: the jobs under way now."""
        more = f" (+{len(labels) - 1} more)" if len(labels) > 1 else ""
        self.current = labels[0] + more if labels else ""
        self._draw(force=True)

    # ---- the line ------------------------------------------------------

    def eta(self) -> str:
        if not self.done:
            return "?"
        left = (time.monotonic() - self._started) / self.done * (self.total - self.done)
        minutes, seconds = divmod(int(round(left)), 60)
        return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"

    def _draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_SECONDS:
            return
        self._drawn = now
        failed = f" ({self.failed} failed)" if self.failed else ""
        parts = [f"sweep {self.done}/{self.total} done{failed}"]
        if self.current:
            parts.append(f"{self.running_label}: {self.current}")
        if self.round_text:
            parts.append(self.round_text)
        parts.append(f"ETA {self.eta()}")
        text = " | ".join(parts)[:119]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def _clear(self) -> None:
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def finish(self) -> None:
        self._clear()


def job_line(done: int, total: int, job: Job, result: JobResult) -> str:
    """``-v``: one finished job."""
    head = f"[{done}/{total}] job {job.index} {job.label}: {result.status}"
    report = result.report
    if report is not None:
        t = report["totals"]
        ratio = f"{t['ratio']:.2f}" if t["ratio"] else "-"
        head += (f", {t['send_seconds']:.3f} s, {t['bytes_on_wire'] / 1e6:.2f} MB on wire, "
                 f"ratio {ratio}")
    if result.error:
        head += f" ({result.error})"
    if result.retried:
        head += f", {result.attempts} attempts"
    return head
