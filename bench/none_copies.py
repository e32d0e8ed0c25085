"""Issue 16 item 5: method none with its pages copied, and without.

The copying path (``migration.copy_pages = true``): a worker copies a
packet's normal pages into its output slot, the coordinator writes header
+ slot; the receiver reads the payload into a buffer and copies each page
to its place.  The direct path (the default): the coordinator writes
header + the pages' views of the RAM block (``writev`` / ``sendmsg``),
the receiver reads straight into the destination pages (``readv`` /
``recvmsg_into``), as QEMU writes guest RAM to its socket.

Cases, each copy against direct in the same run (interleaved where cheap):

* changed send work per packet: the real guest's non-zero pages, 128 a
  packet, each packet copied into a slot and written with its header to a
  file in /dev/shm (rewound after each packet), against written from page
  views (one process, no workers: only the work that changed);
* receive from memory and from a file: one recorded round (2 channels'
  worth on one, QEMU 10.0 packets) read back by a ``ChannelReader``;
* a whole round over TCP loopback: ``vs_qemu.run_engine`` (2 channels,
  send and receive at once, verified byte for byte);
* QEMU 7.2's own none on the same image (``vs_qemu.run_qemu``), when
  ``--qemu`` is installed.

    python bench/none_copies.py [--runs 5] [--size 160MiB | --image RAM]
                                [--qemu qemu-system-x86_64] [--no-qemu] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

import bench_report
import guest
import vs_qemu
from timing import Timing, interleaved

from engine import wire
from engine.batch import Engine
from engine.channels import BytesSource, FileSink, FileSource, MemoryChannel
from engine.config import Config
from engine.ram import RamBlock, page_views
from engine.receiver import ChannelReader
from workers import codec

PAGE = guest.PAGE_SIZE
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


def packets(block: RamBlock) -> list[np.ndarray]:
    """The guest's non-zero pages in packets of page_count, as the coordinator splits them."""
    pages = guest.nonzero_pages(block)
    count = wire.page_count_for(PAGE)
    return [pages[i:i + count] for i in range(0, len(pages), count)]


def send_work(block: RamBlock, runs: int, work: Path) -> tuple[dict[str, Timing], int]:
    """Seconds to write every packet (header + payload) with a FileSink, copied or not.

    The file (in /dev/shm) is rewound after every packet, so each packet
    overwrites the same page cache: the kernel still copies every byte
    from the buffers, but tmpfs allocating pages for a growing file (the
    same cost in both cases, and most of the time) is left out.
    """
    chunks = packets(block)
    header = bytearray(wire.header_size(PAGE))
    slot = memoryview(bytearray(wire.page_count_for(PAGE) * PAGE))
    sink = FileSink(work, 0)
    rewind = sink._fd        # the bench's own sink: rewound, never read
    sink.write(header, slot)

    def copied() -> None:
        for pages in chunks:        # per packet, as the worker + coordinator do it
            size = codec.none_send_packet(block.buf, PAGE, pages, slot)
            os.lseek(rewind, 0, os.SEEK_SET)
            sink.write(header, slot[:size])

    def direct() -> None:
        for pages in chunks:
            os.lseek(rewind, 0, os.SEEK_SET)
            sink.write(header, *page_views(block.buf, PAGE, pages))

    try:
        cases = {"send work, copied": copied, "send work, direct": direct}
        return interleaved(runs, cases), len(chunks)
    finally:
        sink.close()
        Path(sink.path).unlink()


def record_round(block: RamBlock) -> bytes:
    """One channel's stream of a whole round of ``block`` (QEMU 10.0 packets, method none)."""
    config = Config.from_dict({"migration": {"channels": 1, "method": "none"}})
    sink = MemoryChannel(0)
    with Engine(config, blocks=[block], sinks=[sink]) as engine:
        engine.send(np.arange(block.pages, dtype=np.uint64))
    return sink.getvalue()


def receive(block: RamBlock, stream: bytes, runs: int, work: Path) -> dict[str, Timing]:
    """Seconds to read the recorded round into a destination block, copied or not."""
    path = work / "round.mfd"
    path.write_bytes(stream)
    cases = {}
    with RamBlock.create(block.name, block.size, PAGE) as dest:
        for where in ("memory", "file"):
            for copy_pages in (True, False):
                name = f"receive from {where}, {'copied' if copy_pages else 'direct'}"
                cases[name] = _reader_run(dest, stream, path, where, copy_pages)
        timings = interleaved(runs, cases)
        if codec.compare_pages(block.buf, dest.buf, PAGE, 1)[0]:
            raise RuntimeError("the received round differs from the source")
    path.unlink()
    return timings


def _reader_run(dest: RamBlock, stream: bytes, path: Path, where: str, copy_pages: bool):
    def run() -> None:
        source = BytesSource(stream) if where == "memory" else FileSource(path, 0)
        reader = ChannelReader(source, method="none", page_size=PAGE, blocks={dest.name: dest},
                               copy_pages=copy_pages)
        reader.read_init()
        reader.read_to_end()
        reader.close()
    return run


def tcp_rounds(block: RamBlock, runs: int) -> dict[str, vs_qemu.Outcome]:
    """A whole round over loopback TCP, copy and direct alternating one run at a time."""
    outcomes: dict[str, vs_qemu.Outcome] = {}
    for _ in range(runs):
        for copy_pages in (True, False):
            one = vs_qemu.run_engine(block, "none", "balanced", 1, copy_pages=copy_pages)
            name = one.timing.name
            if name in outcomes:
                outcomes[name].timing.seconds += one.timing.seconds
            else:
                outcomes[name] = one
    return outcomes


def qemu_none(block: RamBlock, binary: str, runs: int, work: Path) -> vs_qemu.Outcome | None:
    image = work / "source.ram"
    guest.write_raw(block, image)
    try:
        found = vs_qemu.run_qemu(binary, image, block.size >> 20, runs, work, ("none",))
    finally:
        image.unlink()
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser, size="160MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--qemu", default="qemu-system-x86_64", help="QEMU 7.2 (Debian's)")
    parser.add_argument("--no-qemu", action="store_true", help="skip QEMU's none")
    bench_report.add_argument(parser)
    args = parser.parse_args()

    block, what = guest.load(args)
    with block, tempfile.TemporaryDirectory(prefix="mfd-none-copies-", dir=_SHM) as tmp:
        work = Path(tmp)
        print(f"guest: {what}; {block.pages} pages, {len(guest.nonzero_pages(block))} non-zero; "
              f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}", flush=True)
        send, count = send_work(block, args.runs, work)
        received = receive(block, record_round(block), args.runs, work)
        payload = len(guest.nonzero_pages(block)) * PAGE    # what send and receive move
        for timing in [*send.values(), *received.values()]:
            print(timing.line(payload), flush=True)
        rounds = tcp_rounds(block, args.runs)
        binary = None if args.no_qemu else shutil.which(args.qemu)
        qemu = qemu_none(block, binary, args.runs, work) if binary else None
        if binary is None and not args.no_qemu:
            print(f"no {args.qemu} here: QEMU's none skipped")
    ratios = _ratios(send, count, received, rounds, qemu)
    cases = [bench_report.case(t, payload) for t in [*send.values(), *received.values()]]
    cases += [bench_report.case(o.timing, block.size, wire_bytes=o.wire_bytes, method="none",
                                channels=2) for o in [*rounds.values(), *([qemu] if qemu else [])]]
    bench_report.write(args.json, bench=__file__, guest=what, params=args, ratios=ratios,
                       cases=cases)


def _ratios(send: dict[str, Timing], count: int, received: dict[str, Timing],
            rounds: dict[str, vs_qemu.Outcome], qemu: vs_qemu.Outcome | None) -> list[dict]:
    """Print copied / direct (above 1: direct is faster) and direct / QEMU; return them."""
    out = []

    def ratio(name: str, value: float) -> None:
        print(f"  {name:<46} {value:6.2f}")
        out.append(bench_report.ratio(name, value))

    copied, direct = send["send work, copied"].median, send["send work, direct"].median
    print(f"\nsend work per packet ({count} packets): copied {copied / count * 1e6:.1f} µs, "
          f"direct {direct / count * 1e6:.1f} µs")
    print("ratios (copied / direct: above 1 the direct path is faster):")
    ratio("send work per packet, copied / direct", copied / direct)
    for where in ("memory", "file"):
        ratio(f"receive from {where}, copied / direct",
              received[f"receive from {where}, copied"].median
              / received[f"receive from {where}, direct"].median)
    by_copy = {o.timing.name.endswith("copy_pages)"): o for o in rounds.values()}
    ratio("round over TCP loopback, copied / direct",
          by_copy[True].timing.median / by_copy[False].timing.median)
    if qemu is not None:
        print("against QEMU (engine / QEMU: below 1 the engine is faster):")
        ratio(f"engine none direct / {qemu.timing.name}",
              by_copy[False].timing.median / qemu.timing.median)
        ratio(f"engine none copied / {qemu.timing.name}",
              by_copy[True].timing.median / qemu.timing.median)
        print(f"  wire bytes: engine {by_copy[False].wire_bytes / 1e6:.1f} MB, "
              f"QEMU {qemu.wire_bytes / 1e6:.1f} MB (main channel included)")
    return out


if __name__ == "__main__":
    main()
