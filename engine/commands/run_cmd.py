"""``multifd-engine run [CONFIG]``: a batch of precopy rounds and its report."""

from __future__ import annotations

import argparse
import sys

from engine.commands import verbosity
from engine.commands.config_argument import add_config_argument, config_from
from engine.commands.progress import ProgressLine
from engine.report.run import QUIET
from engine.exit_codes import EXIT_OK, EXIT_VERIFY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a batch of precopy rounds and print a report")
    add_config_argument(p)
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.batch import run_batch

    config = config_from(args)
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=args.verbosity > QUIET)
    try:
        report = run_batch(config, progress=progress)
    finally:
        progress.finish()
    print(report.format_text(args.verbosity))
    if args.json:
        report.write_json(args.json)
    return EXIT_VERIFY if report.verified is False else EXIT_OK
