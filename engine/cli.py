"""``multifd-engine``: the command line.

Each subcommand is one module in ``engine.commands`` with two functions:
``add_parser(subparsers)`` and ``main(args) -> int``.  This module parses,
dispatches, and turns the engine's errors into messages and exit codes.

Exit status (``engine.exit_codes``): 0 success; 1 verification failed
(pages differ); 2 bad usage or bad config (also: `report --plot` without matplotlib); 3 bad input (a
malformed channel stream, or a report file that is not ours); 4 the engine
failed (a worker died or reported an error); 5 the peer or the connection
failed (TCP migration: not connected in time, closed, stalled, refused, or
the peer reported an error); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from engine import errors
from engine.commands import COMMANDS
from engine.exit_codes import EXIT_ENGINE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_PEER, EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multifd-engine",
        description="Compress and move guest memory pages as QEMU's multifd migration does.",
        epilog="exit status: 0 ok, 1 verify failed, 2 bad usage/config, 3 bad input, "
               "4 engine failed, 5 peer/connection failed, 130 interrupted")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (errors.ConfigError, errors.RamBlockError, errors.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.TransportError, errors.ChannelStalled) as exc:
        print(f"connection failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PEER
    except (errors.WireError, errors.ReportError) as exc:
        print(f"bad input: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except errors.EngineError as exc:
        print(f"engine failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if isinstance(exc.__cause__, errors.RemoteTraceback):
            print(exc.__cause__.text, file=sys.stderr)
        return EXIT_ENGINE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
