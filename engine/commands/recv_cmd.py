"""``multifd-engine recv --listen HOST:PORT [CONFIG]``: receive one migration over TCP."""

from __future__ import annotations

import argparse

from engine.commands import verbosity
from engine.commands.config_argument import add_config_argument, add_set_argument, config_from
from engine.commands.output_path import check_output_dir, check_output_file, text_stream


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recv", help="receive one migration from `send --to` over TCP")
    add_config_argument(p, "TOML config; method, page size, channels and QEMU version must "
                        "match the sender's")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to listen on (port 0: any free port, printed)")
    p.add_argument("--record", metavar="DIR", help="keep each data channel's bytes as "
                   "DIR/channel-<id>.mfd (readable with `inspect`)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON "
                   "(-: to standard output, the text report then to standard error)")
    add_set_argument(p)
    verbosity.add_arguments(p, "also every counter of every channel")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.cli import EXIT_OK, EXIT_VERIFY
    from engine.net.migration import receive_migration

    config = config_from(args)
    check_output_file(args.json, "--json")
    check_output_dir(args.record, "--record")
    text = text_stream(args.json)
    report = receive_migration(config, args.listen, record_dir=args.record,
                               on_listening=lambda a: print(f"listening on {a}", file=text,
                                                            flush=True))
    print(report.format_text(args.verbosity), file=text, flush=True)
    if args.json:
        report.write_json(args.json)
    return EXIT_OK if report.digests_match else EXIT_VERIFY
