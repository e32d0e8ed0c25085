"""``multifd-engine relay --listen HOST:PORT --to HOST:PORT [CONFIG]``: relay one QEMU migration."""

from __future__ import annotations

import argparse
import signal

from engine.commands import verbosity
from engine.commands.config_argument import add_config_argument, config_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("relay", help="relay one live QEMU migration, re-encoding its multifd "
                       "channels ([relay] incoming_method -> outgoing_method)")
    add_config_argument(p, "TOML config; [relay] says what each side speaks, "
                        "migration.qemu_version the QEMU generation")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="where the source QEMU (or the peer relay) connects (port 0: any free "
                   "port, printed)")
    p.add_argument("--to", required=True, metavar="HOST:PORT",
                   help="the peer relay, or the destination QEMU's -incoming address")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.exit_codes import EXIT_OK
    from engine.relay.session import relay_migration

    config = config_from(args)
    # a relay is stopped like a service: SIGTERM tears down as Ctrl-C does, closing
    # both QEMUs' connections and freeing the workers and shared memory
    signal.signal(signal.SIGTERM, _interrupt)
    report = relay_migration(config, args.listen, args.to,
                             on_listening=lambda a: print(f"listening on {a}", flush=True))
    print(report.format_text(args.verbosity), flush=True)
    if args.json:
        report.write_json(args.json, config.as_dict())
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
