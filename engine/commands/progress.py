"""A one-line progress display that stays out of the way off a terminal."""

from __future__ import annotations

from typing import TextIO


class ProgressLine:
    """One self-rewriting status line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, rounds: int, enabled: bool) -> None:
        self.stream, self.rounds = stream, rounds
        self.enabled = enabled and stream.isatty()
        self._last = -1
        self._width = 0          # of the line on screen, so a shorter one covers all of it

    def __call__(self, round_index: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        percent = 100 * done // max(total, 1)
        if percent == self._last and done != total:
            return
        self._last = percent
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        # rounds count from 0, as in the report (round 0 sends every page)
        self._show(f"round {round_index} (0..{self.rounds - 1}) [{bar}] {percent:3d}% "
                   f"{done}/{total} packets")

    def _show(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
