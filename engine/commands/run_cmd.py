"""``multifd-engine run [CONFIG]``: a batch of precopy rounds and its report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.commands import verbosity
from engine.commands.progress import ProgressLine
from engine.config import load_config
from engine.report import QUIET

DEFAULT_CONFIG = Path("config/default.toml")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a batch of precopy rounds and print a report")
    p.add_argument("config", nargs="?", help=f"TOML config (default: {DEFAULT_CONFIG} if it "
                   "exists, else the same values built in)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.batch import run_batch
    from engine.cli import EXIT_OK, EXIT_VERIFY

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_config(path)
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=args.verbosity > QUIET)
    try:
        report = run_batch(config, progress=progress)
    finally:
        progress.finish()
    print(report.format_text(args.verbosity))
    if args.json:
        report.write_json(args.json)
    return EXIT_VERIFY if report.verified is False else EXIT_OK
