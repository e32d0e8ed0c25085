"""Benchmark 1: engine overhead.

One worker sends every page of a guest image (method qpl, software path,
null channel) against the raw C loop of the same codec compressing the
same non-zero pages one after the other (``codec.raw_compress_pages``: no
processes, no packets, no zero-page scan).  Prints both medians and
raw / engine (goal >= 0.90).

    python bench/engine_overhead.py [--image RAM] [--size 512MiB] [--runs 5]
                                    [--compression balanced|fast]
"""

from __future__ import annotations

import argparse

import numpy as np

import bench_report
import guest
from timing import interleaved, verdict

from engine.batch import Engine
from engine.channels import NullSink
from engine.config import Config
from workers import codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compression", default="balanced", choices=tuple(codec.COMPRESSION_SETTINGS))
    bench_report.add_argument(parser)
    args = parser.parse_args()

    block, what = guest.load(args)
    with block:
        pages = np.arange(block.pages, dtype=np.uint64)
        nonzero = guest.nonzero_pages(block)
        config = Config.from_dict({"migration": {"channels": 1, "method": "qpl",
                                                 "accelerator": "software",
                                                 "compression": args.compression},
                                   "sink": {"kind": "null"}, "run": {"verify": False}})
        sink = NullSink(0)
        with Engine(config, blocks=[block], sinks=[sink]) as engine:
            raw_bytes = codec.raw_compress_pages(block.buf, block.page_size, nonzero,
                                                 setting=args.compression)
            raw, sent = interleaved(args.runs, {
                "raw C loop, one core": lambda: codec.raw_compress_pages(
                    block.buf, block.page_size, nonzero, setting=args.compression),
                "engine, 1 worker, every page": lambda: engine.send(pages),
            }).values()
        work = len(nonzero) * block.page_size
        print(f"guest: {what}; {block.pages} pages, {len(nonzero)} non-zero")
        print(f"codec: {codec.codec_name()}, compression {args.compression}")
        print(raw.line(work))
        print(sent.line(work))
        print(f"compressed bytes of the non-zero pages: {raw_bytes} "
              f"(ratio {work / raw_bytes:.3f})")
        scan = interleaved(args.runs, {"zero-page scan (C), every page": lambda: codec.find_zero_pages(
            block.buf, block.page_size, pages.copy())})["zero-page scan (C), every page"]
        print(scan.line(block.size))
        ratio = raw.median / sent.median
        print(f"raw / engine: {verdict(ratio, 0.90)}")
        bench_report.write(args.json, bench=__file__, guest=what, params=args, cases=[
            bench_report.case(raw, work, wire_bytes=raw_bytes, channels=1),
            bench_report.case(sent, work, method="qpl", channels=1),
            bench_report.case(scan, block.size)],
            ratios=[bench_report.ratio("raw / engine", ratio, 0.90)])


if __name__ == "__main__":
    main()
