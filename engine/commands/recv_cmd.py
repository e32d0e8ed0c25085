"""``multifd-engine recv --listen HOST:PORT [CONFIG]``: receive one migration over TCP.

``recv --qemu --listen HOST:PORT`` receives a real QEMU source instead
(``engine.qemu.destination``), checked against ``--image`` or written
to ``--output``.
"""

from __future__ import annotations

import argparse

from engine.commands import verbosity
from engine.commands.config_argument import add_config_argument, config_from
from engine.exit_codes import EXIT_OK, EXIT_VERIFY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recv", help="receive one migration from `send --to`, or from a real "
                       "QEMU source (`--qemu`), over TCP")
    add_config_argument(p, "TOML config; method, page size, channels and QEMU version must "
                        "match the sender's")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to listen on (port 0: any free port, printed)")
    p.add_argument("--record", metavar="DIR", help="keep each data channel's bytes as "
                   "DIR/channel-<id>.mfd (readable with `inspect`)")
    p.add_argument("--qemu", action="store_true", help="the sender is a real QEMU source "
                   "(-machine none with one memory backend) migrating with multifd; "
                   "migration.method and migration.channels must match its settings")
    p.add_argument("--image", metavar="FILE", help="with --qemu: compare the received RAM "
                   "page for page with this raw memory image (.zst allowed)")
    p.add_argument("--output", metavar="FILE", help="with --qemu: write the received RAM here")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError

    if not args.qemu and (args.image or args.output):
        raise ConfigError("", "--image and --output go with --qemu")
    if args.qemu and args.record:
        raise ConfigError("", "--record does not go with --qemu")
    config = config_from(args)
    if args.qemu:
        from engine.qemu.destination import receive_from_qemu
        result = receive_from_qemu(config, args.listen, image=args.image, output=args.output,
                                   on_listening=lambda a: print(f"listening on {a}", flush=True))
        print(result.format_text(args.verbosity), flush=True)
        if args.json:
            from engine.report.schema import write_report
            write_report(args.json, result.to_dict())
        return EXIT_OK if result.ok else EXIT_VERIFY

    from engine.net.migration import receive_migration

    report = receive_migration(config, args.listen, record_dir=args.record,
                               on_listening=lambda a: print(f"listening on {a}", flush=True))
    print(report.format_text(args.verbosity), flush=True)
    if args.json:
        report.write_json(args.json)
    return EXIT_OK if report.digests_match else EXIT_VERIFY
