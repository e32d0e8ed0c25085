"""Benchmark 3: the engine against what a user would write.

The naive version: ``multiprocessing.Pool`` (one process per core) mapping
``zlib.compress(page, 1)`` over every page of the guest, each page sliced
to ``bytes`` and pickled to a worker (default chunking).  The engine: the
same pages through one worker per core (method qpl, software path, null
channels).  Pool and engine processes are started before timing.  Prints
medians and pool / engine (goal >= 5).

    python bench/vs_pool.py [--image RAM] [--size 512MiB] [--runs 5]
                            [--compression balanced|fast]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import zlib

import numpy as np

import bench_report
import guest
from timing import interleaved, verdict

from engine.batch import Engine
from engine.channels import NullSink
from engine.config import Config
from workers import codec


def _compress(page: bytes) -> bytes:
    return zlib.compress(page, 1)


def _naive(pool, buf: memoryview, page_size: int) -> int:
    # what a user would write: a page list, pool.map, sizes summed
    pages = [bytes(buf[i:i + page_size]) for i in range(0, len(buf), page_size)]
    return sum(len(c) for c in pool.map(_compress, pages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compression", default="balanced", choices=tuple(codec.COMPRESSION_SETTINGS))
    bench_report.add_argument(parser)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    block, what = guest.load(args)
    with block:
        pages = np.arange(block.pages, dtype=np.uint64)
        config = Config.from_dict({"migration": {"channels": cores, "method": "qpl",
                                                 "accelerator": "software",
                                                 "compression": args.compression},
                                   "sink": {"kind": "null"}, "run": {"verify": False}})
        sinks = [NullSink(i) for i in range(cores)]
        with multiprocessing.get_context("spawn").Pool(cores) as pool, \
             Engine(config, blocks=[block], sinks=sinks) as engine:
            naive_bytes = _naive(pool, block.buf, block.page_size)
            pool_t, engine_t = interleaved(args.runs, {
                f"Pool({cores}) + zlib.compress per page": lambda: _naive(pool, block.buf, block.page_size),
                f"engine, {cores} workers, {args.compression}": lambda: engine.send(pages),
            }).values()
        engine_bytes = sum(s.bytes_written for s in sinks) // (args.runs + 1)
    print(f"guest: {what}; codec {codec.codec_name()}")
    print(pool_t.line(block.size))
    print(engine_t.line(block.size))
    print(f"bytes: pool {naive_bytes} (zlib streams, no headers), engine {engine_bytes} (wire)")
    print(f"pool / engine: {verdict(pool_t.median / engine_t.median, 5)}")
    bench_report.write(args.json, bench=__file__, guest=what, params=args, cases=[
        bench_report.case(pool_t, block.size, wire_bytes=naive_bytes, method="zlib", channels=cores),
        bench_report.case(engine_t, block.size, wire_bytes=engine_bytes, method="qpl",
                          channels=cores)],
        ratios=[bench_report.ratio("pool / engine", pool_t.median / engine_t.median, 5)])


if __name__ == "__main__":
    main()
