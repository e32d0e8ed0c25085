"""``multifd-engine send --to HOST:PORT [CONFIG]``: migrate to a receiver over TCP.

``send --qemu HOST:PORT [--qmp SOCKET]`` migrates into a real QEMU
started with ``-incoming`` instead (``engine.qemu.source``).
"""

from __future__ import annotations

import argparse
import sys

from engine.commands import verbosity
from engine.commands.progress import ProgressLine
from engine.commands.config_argument import add_config_argument, config_from
from engine.report.run import QUIET
from engine.exit_codes import EXIT_OK, EXIT_VERIFY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="migrate the configured guest RAM to `recv --listen` "
                       "or to a real QEMU (`--qemu`) over TCP")
    add_config_argument(p)
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", metavar="HOST:PORT", help="the receiver's address")
    to.add_argument("--qemu", metavar="HOST:PORT",
                    help="a real QEMU destination's -incoming address (tcp)")
    p.add_argument("--qmp", metavar="SOCKET", help="with --qemu: the destination's QMP unix "
                   "socket; the engine sets its multifd capability and parameters, starts "
                   "migrate-incoming (QEMU started with -incoming defer) and reads its verdict")
    p.add_argument("--uuid", metavar="UUID", 
                   help="with --qemu: the UUID in the init packets, the destination's -uuid "
                   "(default all zero, as QEMU without -uuid)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.qemu is None and (args.qmp is not None or args.uuid is not None):
        from engine.errors import ConfigError
        raise ConfigError("", "--qmp and --uuid go with --qemu")
    if args.qemu is not None:
        from engine.commands import send_qemu
        return send_qemu.main(args)
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
