"""``multifd-engine inspect FILE...``: what is in channel files, page by page."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import errors, methods
from engine.exit_codes import EXIT_OK, EXIT_VERIFY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print the packets of multifd channel files")
    p.add_argument("files", nargs="+", help="channel files (.mfd, or .mfd.zst)")
    p.add_argument("--image", help="memory image to check the pages against (.zst allowed)")
    p.add_argument("--block", help="RAM block the image holds (default: the block most pages name)")
    p.add_argument("--method", choices=methods.names(), help="default: from the packets")
    p.add_argument("--qemu-version", help="peer QEMU, e.g. 7.2 or 10.0 (default: guessed)")
    p.add_argument("--page-size", type=int, default=4096)
    p.add_argument("--summary", action="store_true", help="no per-packet lines")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
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
