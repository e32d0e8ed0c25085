"""Benchmark 2: scaling from one channel to two, send side and receive side.

Send: every page of a guest image through 1 worker, then through 2
workers (method qpl, software path, null channels).  Receive: the streams
those runs wrote, decoded by 1 channel reader, then by 2 (one thread each;
the C decoder releases the GIL).  Prints medians and the speed-ups
(goal >= 1.7 on 2 cores).

    python bench/scaling.py [--image RAM] [--size 512MiB] [--runs 5]
                            [--compression balanced|fast]
"""

from __future__ import annotations

import argparse

import numpy as np

import bench_report
import guest
from timing import interleaved, verdict

from engine.batch import Engine
from engine.channels import BytesSource, MemoryChannel, NullSink
from engine.config import Config
from engine.ram import RamBlock
from engine.receiver import Receiver
from workers import codec


def _config(channels: int, compression: str) -> Config:
    return Config.from_dict({"migration": {"channels": channels, "method": "qpl",
                                           "accelerator": "software", "compression": compression},
                             "sink": {"kind": "null"}, "run": {"verify": False}})


def _record(block: RamBlock, pages: np.ndarray, channels: int, compression: str) -> list[bytes]:
    """One round of every page, as each channel's bytes."""
    sinks = [MemoryChannel(i) for i in range(channels)]
    with Engine(_config(channels, compression), blocks=[block], sinks=sinks) as engine:
        engine.send(pages)
    return [sink.getvalue() for sink in sinks]


def _receive(dest: RamBlock, streams: list[bytes]) -> None:
    sources = [BytesSource(data, i) for i, data in enumerate(streams)]
    with Receiver([dest], sources, method="qpl", page_size=dest.page_size) as rx:
        rx.start()
        rx.receive_round()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compression", default="balanced", choices=tuple(codec.COMPRESSION_SETTINGS))
    bench_report.add_argument(parser)
    args = parser.parse_args()

    block, what = guest.load(args)
    with block, RamBlock.create(block.name, block.size, block.page_size) as dest:
        pages = np.arange(block.pages, dtype=np.uint64)
        with Engine(_config(1, args.compression), blocks=[block], sinks=[NullSink(0)]) as one, \
             Engine(_config(2, args.compression), blocks=[block],
                    sinks=[NullSink(0), NullSink(1)]) as two:
            send1, send2 = interleaved(args.runs, {
                "send, 1 worker": lambda: one.send(pages),
                "send, 2 workers": lambda: two.send(pages),
            }).values()
        streams1 = _record(block, pages, 1, args.compression)
        streams2 = _record(block, pages, 2, args.compression)
        recv1, recv2 = interleaved(args.runs, {
            "receive, 1 channel reader": lambda: _receive(dest, streams1),
            "receive, 2 channel readers": lambda: _receive(dest, streams2),
        }).values()
        mismatched, _ = codec.compare_pages(block.buf, dest.buf, block.page_size)
    work = block.size
    print(f"guest: {what}; codec {codec.codec_name()}, compression {args.compression}")
    for timing in (send1, send2, recv1, recv2):
        print(timing.line(work))
    print(f"wire bytes: {sum(map(len, streams2))}; destination mismatched pages: {mismatched}")
    print(f"send speed-up 2 vs 1:    {verdict(send1.median / send2.median, 1.7)}")
    print(f"receive speed-up 2 vs 1: {verdict(recv1.median / recv2.median, 1.7)}")
    wire1, wire2 = sum(map(len, streams1)), sum(map(len, streams2))
    bench_report.write(args.json, bench=__file__, guest=what, params=args, cases=[
        bench_report.case(send1, work, wire_bytes=wire1, method="qpl", channels=1),
        bench_report.case(send2, work, wire_bytes=wire2, method="qpl", channels=2),
        bench_report.case(recv1, work, wire_bytes=wire1, method="qpl", channels=1),
        bench_report.case(recv2, work, wire_bytes=wire2, method="qpl", channels=2)],
        ratios=[bench_report.ratio("send speed-up 2 vs 1", send1.median / send2.median, 1.7),
                bench_report.ratio("receive speed-up 2 vs 1", recv1.median / recv2.median, 1.7)])


if __name__ == "__main__":
    main()
