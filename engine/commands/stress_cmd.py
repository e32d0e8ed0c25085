"""``multifd-engine stress [CONFIG]``: migrations on every core, faults injected, all verified."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TextIO

from engine.commands import verbosity
from engine.commands.config_argument import add_config_argument, config_from
from engine.exit_codes import EXIT_ENGINE, EXIT_OK, EXIT_VERIFY
from engine.report.run import NORMAL, QUIET, VERBOSE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stress", help="stress every core with varied migrations and injected "
                       "faults; every round verified")
    add_config_argument(p, "TOML config, its [stress] section above all")
    p.add_argument("--rounds", type=int, metavar="N", help="precopy rounds in all (stress.rounds)")
    p.add_argument("--duration", metavar="TIME", help="run this long instead, e.g. 90s, 10m, 2h "
                   "(stress.duration); with --rounds, whichever comes first")
    p.add_argument("--workers", metavar="N|auto", help="worker processes = channels "
                   "(migration.channels; auto = one per core)")
    p.add_argument("--seed", type=int, help="repeat a run: the seed its summary printed")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


class StatusLine:
    """A live one-line status on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._width = 0

    def __call__(self, summary, migration: str) -> None:
        if not self.enabled:
            return
        text = summary.status_line(migration)[:119]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


class RoundLog:
    """``-v``: one line per finished round, terminal or not."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._rounds = 0

    def __call__(self, summary, migration: str) -> None:
        if summary.rounds == self._rounds:
            return          # a progress call within the round
        self._rounds = summary.rounds
        self.stream.write(f"round {summary.rounds} (migration {summary.migrations}: {migration}): "
                          f"{summary.rounds_verified} verified, pages lost {summary.pages_lost}, "
                          f"unexpected errors {len(summary.unexpected_errors)}\n")
        self.stream.flush()

    def finish(self) -> None:
        pass


def _text(summary, level: int) -> str:
    return summary.verdict_line() if level <= QUIET else summary.format_text()


def main(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.stress.runner import StressRun
    from engine.units import parse_duration

    config = config_from(args)
    if args.workers is not None:
        channels = "auto" if args.workers == "auto" else _count(args.workers)
        config = replace(config, migration=replace(config.migration, channels=channels))
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError("stress.rounds", f"--rounds must be at least 1, got {args.rounds}")
    duration = parse_duration("stress.duration", args.duration) if args.duration else None
    status = (RoundLog(sys.stdout) if args.verbosity >= VERBOSE
              else StatusLine(sys.stderr, enabled=args.verbosity == NORMAL))
    runner = StressRun(config, rounds=args.rounds, duration=duration, seed=args.seed, status=status)
    try:
        summary = runner.run()
    except KeyboardInterrupt:
        status.finish()
        print(_text(runner.summary, args.verbosity))
        raise
    status.finish()
    print(_text(summary, args.verbosity))
    if args.json:
        summary.write_json(args.json, config.as_dict())
    if summary.fatal_error or summary.unexpected_errors:
        return EXIT_ENGINE
    if summary.pages_lost:
        return EXIT_VERIFY
    return EXIT_OK


def _count(text: str) -> int:
    from engine.errors import ConfigError

    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 255:
        raise ConfigError("migration.channels", f"--workers must be auto or 1..255, got {text!r}")
    return count
