"""``multifd-engine send --to HOST:PORT [CONFIG]``: migrate to a receiver over TCP."""

from __future__ import annotations

import argparse
import sys

from engine.commands import verbosity
from engine.commands.progress import ProgressLine
from engine.commands.config_argument import add_config_argument, add_set_argument, config_from
from engine.commands.output_path import check_output_file, text_stream
from engine.report.run import QUIET


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="migrate the configured guest RAM to `recv --listen` over TCP")
    add_config_argument(p)
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver's address")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON "
                   "(-: to standard output, the text report then to standard error)")
    add_set_argument(p)
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.cli import EXIT_OK, EXIT_VERIFY
    from engine.net.migration import send_migration

    config = config_from(args)
    check_output_file(args.json, "--json")
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=args.verbosity > QUIET)
    try:
        report = send_migration(config, args.to, progress=progress)
    finally:
        progress.finish()
    print(report.format_text(args.verbosity), file=text_stream(args.json), flush=True)
    if args.json:
        report.write_json(args.json)
    return EXIT_OK if report.verified else EXIT_VERIFY
