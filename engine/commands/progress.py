"""A one-line progress display that stays out of the way off a terminal."""

from __future__ import annotations

from typing import TextIO


class ProgressLine:
    """One self-rewriting status line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, rounds: int, enabled: bool) -> None:
        self.stream, self.rounds = stream, rounds
        self.enabled = enabled and stream.isatty()
        self._last = -1

    def __call__(self, round_index: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        percent = 100 * done // max(total, 1)
        if percent == self._last and done != total:
            return
        self._last = percent
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        self.stream.write(f"\rround {round_index + 1}/{self.rounds} [{bar}] {percent:3d}% "
                          f"{done}/{total} packets")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._last >= 0:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()
