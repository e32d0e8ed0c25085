"""A round with the receiver reading while the workers compress, against
receiving after sending (what ``run`` did before).

Both send every page of the guest through 2 workers and receive it with 2
channel readers (threads), verified byte for byte; ``sequential`` writes
into in-memory channels and reads them once the round is written,
``overlapped`` runs the receiver at the same time over a local socket pair
per channel (``engine.batch.socket_channels``, as ``run`` now does).
Prints the medians and sequential / overlapped; on 2 cores the workers and
the readers share them, so the gain is bounded by the spare CPU.

    python bench/overlap.py [--image RAM] [--size 160MiB] [--runs 5]
                            [--compression balanced|fast|packet]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np

import bench_report
import guest
from timing import Timing

from engine.batch import Engine, socket_channels
from engine.channels import MemoryChannel
from engine.config import Config
from engine.ram import RamBlock
from engine.receiver import Receiver
from workers import codec

CHANNELS = 2


def one_round(config: Config, block: RamBlock, dest: RamBlock, overlapped: bool) -> float:
    """Seconds from the first packet until the receiver has the whole round."""
    pages = np.arange(block.pages, dtype=np.uint64)
    with ExitStack() as stack:
        if overlapped:
            sinks, sources = socket_channels(CHANNELS, stack)
        else:
            sinks = sources = [MemoryChannel(i) for i in range(CHANNELS)]
        engine = stack.enter_context(Engine(config, blocks=[block], sinks=sinks))
        rx = stack.enter_context(Receiver([dest], sources, method="qpl", page_size=block.page_size))
        rx.start()
        started = time.perf_counter()
        if overlapped:
            with ThreadPoolExecutor(1) as receiving:
                received = receiving.submit(rx.receive_round)
                engine.send(pages)
                received.result()
        else:
            engine.send(pages)
            rx.receive_round()
        seconds = time.perf_counter() - started
        if not rx.verify([block]).ok:
            raise SystemExit("the destination differs from the source")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser, size="160MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compression", default="balanced", choices=tuple(codec.COMPRESSION_SETTINGS))
    bench_report.add_argument(parser)
    args = parser.parse_args()
    config = Config.from_dict({"migration": {"channels": CHANNELS, "method": "qpl",
                                             "accelerator": "software",
                                             "compression": args.compression}})
    block, what = guest.load(args)
    with block, RamBlock.create(block.name, block.size, block.page_size) as dest:
        timings = {mode: Timing(f"{mode} send + receive") for mode in ("sequential", "overlapped")}
        for run in range(args.runs + 1):              # the first of each warms up
            for mode, timing in timings.items():
                seconds = one_round(config, block, dest, mode == "overlapped")
                if run:
                    timing.seconds.append(seconds)
        print(f"guest: {what}; qpl ({args.compression}), {CHANNELS} workers, {CHANNELS} readers")
        for timing in timings.values():
            print(timing.line(block.size))
        ratio = timings["sequential"].median / timings["overlapped"].median
        print(f"sequential / overlapped: {ratio:.2f} (worker start excluded, verified)")
        bench_report.write(args.json, bench=__file__, guest=what, params=args,
                           cases=[bench_report.case(t, block.size, method="qpl", channels=CHANNELS)
                                  for t in timings.values()],
                           ratios=[bench_report.ratio("sequential / overlapped", ratio)])


if __name__ == "__main__":
    main()
