"""``multifd-engine``: run a batch, or inspect channel files.

Exit status: 0 success; 1 verification failed (pages differ); 2 bad usage
or bad config; 3 bad input (a malformed channel stream); 4 the engine
failed (a worker died or reported an error); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence, TextIO

from engine import errors
from engine.config import load_config

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_INPUT, EXIT_ENGINE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_CONFIG = Path("config/default.toml")


class ProgressLine:
    """One self-rewriting status line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, rounds: int, enabled: bool) -> None:
        self.stream, self.rounds = stream, rounds
        self.enabled = enabled and stream.isatty()
        self._last = -1

    def __call__(self, round_index: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        percent = 100 * done // max(total, 1)
        if percent == self._last and done != total:
            return
        self._last = percent
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        self.stream.write(f"\rround {round_index + 1}/{self.rounds} [{bar}] {percent:3d}% "
                          f"{done}/{total} packets")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._last >= 0:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multifd-engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a batch of precopy rounds and print a report")
    run.add_argument("config", nargs="?", help=f"TOML config (default: {DEFAULT_CONFIG} if it "
                     "exists, else the embedded default)")
    run.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    inspect = sub.add_parser("inspect", help="print the packets of multifd channel files")
    inspect.add_argument("files", nargs="+", help="channel files (.mfd, or .mfd.zst)")
    inspect.add_argument("--image", help="memory image to check the pages against (.zst allowed)")
    inspect.add_argument("--block", help="RAM block the image holds (default: the block most "
                         "pages name)")
    inspect.add_argument("--method", choices=("none", "qpl"), help="default: from the packets")
    inspect.add_argument("--qemu-version", help="peer QEMU, e.g. 7.2 or 10.0 (default: guessed)")
    inspect.add_argument("--page-size", type=int, default=4096)
    inspect.add_argument("--summary", action="store_true", help="no per-packet lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        return _inspect(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.WireError as exc:
        print(f"bad input: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except errors.EngineError as exc:
        print(f"engine failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if exc.__cause__ is not None and isinstance(exc.__cause__, errors.RemoteTraceback):
            print(exc.__cause__.text, file=sys.stderr)
        return EXIT_ENGINE


def _run(args: argparse.Namespace) -> int:
    from engine.batch import run_batch

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_config(path)
    progress = ProgressLine(sys.stderr, config.run.rounds, enabled=not args.quiet)
    try:
        report = run_batch(config, progress=progress)
    finally:
        progress.finish()
    print(report.format_text())
    if args.json:
        report.write_json(args.json)
    return EXIT_VERIFY if report.verified is False else EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from engine.inspection import inspect_channels

    for f in args.files + ([args.image] if args.image else []):
        if not Path(f).is_file():
            raise errors.ConfigError("", f"no such file: {f}")

    def show(channel, info) -> None:
        if not args.summary:
            kind = "SYNC" if info.is_sync else ""
            print(f"ch{channel.channel} packet {info.packet_num:>6} flags {info.flags:#04x} "
                  f"{info.ramblock or '-':<24} normal {info.normal_pages:>4} zero {info.zero_pages:>4} "
                  f"payload {info.payload_size:>8} {kind}")

    result = inspect_channels(args.files, page_size=args.page_size, method=args.method,
                              qemu_version=args.qemu_version, image=args.image, block=args.block,
                              on_packet=show)
    print(f"method {result.method}, QEMU {result.qemu_version} stream, main block {result.block!r}")
    for c in result.channels:
        print(f"  channel {c.channel} ({c.path}): {c.packets} packets ({c.sync_packets} SYNC), "
              f"normal {c.normal_pages}, zero {c.zero_pages}, other-block pages "
              f"{c.other_block_pages}, {c.bytes} bytes, packet_num {c.first_packet}-{c.last_packet}")
    if args.image:
        verdict = "ok" if result.ok else "MISMATCH"
        print(f"image check: {result.pages_checked} pages of {result.block!r} checked, "
              f"{result.mismatched_pages} differ: {verdict}")
        for offset in result.mismatched_offsets:
            print(f"  differs at {offset:#x}")
        return EXIT_OK if result.ok else EXIT_VERIFY
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
