"""``multifd-engine send --qemu HOST:PORT [--qmp SOCKET] [CONFIG]``: into a real QEMU.

The send command's second destination (``send_cmd`` parses, this runs):
the configured RAM goes into a QEMU started with ``-incoming``, and the
verdict is the destination's own (``query-migrate``) when ``--qmp`` names
its monitor.
"""

from __future__ import annotations

import argparse
import sys
import uuid as uuidlib

from engine.commands.config_argument import config_from
from engine.commands.progress import ProgressLine
from engine.errors import ConfigError
from engine.report.run import QUIET


def parse_uuid(text: str | None) -> bytes:
    if text is None:
        return bytes(16)
    try:
        return uuidlib.UUID(text).bytes
    except ValueError:
        raise ConfigError("", f"--uuid {text!r} is not a UUID") from None


def main(args: argparse.Namespace) -> int:
    from engine.exit_codes import EXIT_OK, EXIT_PEER, EXIT_VERIFY
    from engine.qemu.source import send_to_qemu

    config = config_from(args)
    uuid = parse_uuid(args.uuid)
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=args.verbosity > QUIET)
    try:
        result = send_to_qemu(config, args.qemu, qmp_path=args.qmp, uuid=uuid, progress=progress)
    finally:
        progress.finish()
    print(result.format_text(args.verbosity), flush=True)
    if args.json:
        from engine.report.schema import write_report
        write_report(args.json, result.to_dict())
    if not result.ok:
        return EXIT_PEER
    return EXIT_VERIFY if result.verified is False else EXIT_OK
