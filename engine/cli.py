"""``multifd-engine``: the command line.

Each subcommand is one module in ``engine.commands`` with two functions:
``add_parser(subparsers)`` and ``main(args) -> int``.  This module parses,
dispatches, and turns the engine's errors into messages and exit codes.

Exit status (``engine.exit_codes``): 0 success; 1 verification failed
(pages differ); 2 bad usage or bad config (a missing file, an output path
that cannot be written, a bad argument; also: `report --plot` without
matplotlib); 3 bad input (a malformed channel stream, or a report file
that is not ours); 4 the engine failed (a worker died or reported an
error, or an output could not be written: disk full); 5 the peer or the
connection failed (TCP migration: not connected in time, closed, stalled,
refused, or the peer reported an error); 128 + the signal when stopped:
130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP, each after the same
clean-up; 141 standard output was closed early (piped into `head`),
silently.

Every command first removes the shared-memory segments that killed
processes of ours left in /dev/shm (``engine.ram.remove_stale_segments``).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from typing import Sequence

from engine import errors, signals, threads
from engine.exit_codes import (EXIT_ENGINE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_PEER,
                               EXIT_PIPE_CLOSED, EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from engine.commands import COMMANDS     # here, so a Ctrl-C while importing is caught

    parser = argparse.ArgumentParser(
        prog="multifd-engine",
        description="Compress and move guest memory pages as QEMU's multifd migration does.",
        epilog="exit status: 0 ok, 1 verify failed, 2 bad usage/config, 3 bad input, "
               "4 engine failed, 5 peer/connection failed, 128+signal stopped (130 Ctrl-C, "
               "143 SIGTERM, 129 SIGHUP), 141 output pipe closed")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _version() -> str:
    from engine import __version__
    return __version__


def _import_numpy() -> None:
    """numpy's BLAS starts threads on import: started here, they never take Ctrl-C."""
    with threads.main_thread_signals_blocked():
        import numpy  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _import_numpy()
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if getattr(args, "clean_stale_at_start", True):   # doctor shows them instead
        from engine.ram import remove_stale_segments
        remove_stale_segments()
    try:
        with signals.stop_signals_as_interrupts():
            return _handle(args)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # the reader (head, less) has gone: stop quietly, and keep the
        # interpreter's final flush from complaining about it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


def _stdout_closed() -> bool:
    """Standard output is a pipe whose reader has gone (poll says POLLERR)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))


def _handle(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except KeyboardInterrupt as exc:
        print(f"interrupted{f' ({exc})' if isinstance(exc, signals.Stopped) else ''}",
              file=sys.stderr)
        return signals.exit_status(exc)
    except (errors.ConfigError, errors.UsageError, errors.RamBlockError, errors.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ENGINE
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
