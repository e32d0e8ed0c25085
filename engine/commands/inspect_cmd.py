"""``multifd-engine inspect FILE...``: what is in channel files, page by page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import errors, methods
from engine.exit_codes import EXIT_OK, EXIT_VERIFY
from engine.peer_text import printable


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print the packets of multifd channel files")
    p.add_argument("files", nargs="+", help="channel files (.mfd, or .mfd.zst)")
    p.add_argument("--image", metavar="IMG",
                   help="memory image to check the pages against (.zst allowed)")
    p.add_argument("--block", metavar="NAME",
                   help="RAM block the image holds (default: the block most pages name)")
    p.add_argument("--method", choices=methods.names(), help="default: from the packets")
    p.add_argument("--qemu-version", metavar="V",
                   help="peer QEMU, e.g. 7.2 or 10.0 (default: guessed)")
    p.add_argument("--page-size", type=int, default=4096, metavar="N",
                   help="bytes per page of the stream (default 4096)")
    p.add_argument("--summary", action="store_true", help="no per-packet lines")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.inspection import inspect_channels

    for f in args.files + ([args.image] if args.image else []):
        if not Path(f).is_file():
            raise errors.UsageError(f"no such file: {f}")

    for f in args.files:
        if f.endswith((".aborted", ".partial")):
            print(f"note: {f} is from a session that did not end cleanly: the stream may stop "
                  "short", file=sys.stderr)

    def show(channel, info) -> None:
        if not args.summary:
            kind = "SYNC" if info.is_sync else ""
            block = printable(info.ramblock, 64) or "-"
            print(f"ch{channel.channel} packet {info.packet_num:>6} flags {info.flags:#04x} "
                  f"{block:<24} normal {info.normal_pages:>4} zero {info.zero_pages:>4} "
                  f"payload {info.payload_size:>8} {kind}")

    result = inspect_channels(args.files, page_size=args.page_size, method=args.method,
                              qemu_version=args.qemu_version, image=args.image, block=args.block,
                              on_packet=show)
    main = printable(repr(result.block), 80) if result.block is not None else "none (no page in the files)"
    print(f"method {result.method}, QEMU {result.qemu_version} stream, main block {main}")
    for c in result.channels:
        numbers = f"{c.first_packet}-{c.last_packet}" if c.first_packet is not None else "-"
        print(f"  channel {c.channel} ({c.path}): {c.packets} packets ({c.sync_packets} SYNC), "
              f"normal {c.normal_pages}, zero {c.zero_pages}, other-block pages "
              f"{c.other_block_pages}, {c.bytes} bytes, packet_num {numbers}")
    if args.image:
        return _image_verdict(result, args.block)
    return EXIT_OK


def _image_verdict(result, block_asked: str | None) -> int:

    seen = result.block_pages()
    if block_asked is not None and block_asked not in seen:
        blocks = ", ".join(f"{name!r} ({pages} pages)" for name, pages in seen.most_common())
        raise errors.UsageError(f"--block {block_asked!r}: no page of that block in these files "
                                f"(blocks: {blocks or 'none, the files hold no page'})")
    if result.pages_checked == 0:
        print("image check: nothing checked (the files hold no page): not a pass")
        return EXIT_VERIFY
    verdict = "ok" if result.ok else "MISMATCH"
    print(f"image check: {result.pages_checked} pages of {result.block!r} checked, "
          f"{result.mismatched_pages} differ: {verdict}")
    for offset in result.mismatched_offsets:
        print(f"  differs at {offset:#x}")
    return EXIT_OK if result.ok else EXIT_VERIFY
