"""``multifd-engine send --to HOST:PORT [CONFIG]``: migrate to a receiver over TCP."""

from __future__ import annotations

import argparse
import sys

from engine.commands import verbosity
from engine.commands.progress import ProgressLine
from engine.commands.config_argument import add_config_argument, config_from
from engine.report.run import QUIET
from engine.exit_codes import EXIT_OK, EXIT_VERIFY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="migrate the configured guest RAM to `recv --listen` over TCP")
    add_config_argument(p)
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver's address")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.net.migration import send_migration

    config = config_from(args)
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=args.verbosity > QUIET)
    try:
        report = send_migration(config, args.to, progress=progress)
    finally:
        progress.finish()
    print(report.format_text(args.verbosity), flush=True)
    if args.json:
        report.write_json(args.json)
    return EXIT_OK if report.verified else EXIT_VERIFY
