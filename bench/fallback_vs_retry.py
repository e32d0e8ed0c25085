"""Does falling back to software when the IAA queue is full pay?

The experiment QEMU's reviewers asked for on the multifd-qpl series: the
same guest pages through the emulated IAA device, made scarce (few
engines, a small shared queue), with 2 workers, once with
``busy_policy = "fallback"`` (QEMU 9.1: after 3 busy answers the worker
compresses the page itself) and once with ``"retry"`` (the v6 series:
resubmit until the queue takes it).  Both engines are started before
timing and sent the whole guest in turn (interleaved runs).  Prints the
median pages/s of each, fallback / retry, and the counters of one send.

    python bench/fallback_vs_retry.py [--engines 1] [--queue-size 8] [--runs 5]
                                      [--image RAM | --size 256MiB] [--channels 2]
"""

from __future__ import annotations

import argparse

import guest
from timing import interleaved

from engine.batch import Engine
from engine.channels import NullSink
from engine.config import Config

POLICIES = ("fallback", "retry")
SHOWN = ("hw_submitted", "busy", "retries", "sw_fallbacks", "raw_pages", "hw_errors")


def make_engine(args: argparse.Namespace, block, policy: str) -> Engine:
    config = Config.from_dict({
        "run": {"verify": False},
        "migration": {"channels": args.channels, "accelerator": "emulated", "busy_policy": policy},
        "emulator": {"engines": args.engines, "queue_size": args.queue_size,
                     "latency_us": args.latency_us},
        "sink": {"kind": "null"},
    })
    return Engine(config, blocks=[block], sinks=[NullSink(i) for i in range(args.channels)])


def counters(engine: Engine, sends: int) -> dict[str, float]:
    channels = engine.coordinator.channel_counters()
    return {key: sum(c.get(key, 0) for c in channels) / sends for key in SHOWN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser, size="256MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--engines", type=int, default=1, help="emulated IAA engines (default 1)")
    parser.add_argument("--queue-size", type=int, default=8, help="shared queue entries (default 8)")
    parser.add_argument("--latency-us", type=float, default=3.0)
    args = parser.parse_args()

    block, description = guest.load(args)
    with block:
        pages = guest.nonzero_pages(block)
        print(f"guest: {description}; {len(pages)} non-zero pages")
        print(f"emulated IAA: {args.engines} engine(s), queue of {args.queue_size}, "
              f"{args.channels} workers; {args.runs} runs each, interleaved\n")
        engines = {policy: make_engine(args, block, policy) for policy in POLICIES}
        try:
            timings = interleaved(args.runs, {p: (lambda e=e: e.send(pages)) for p, e in engines.items()})
            sends = args.runs + 1                                  # with the warm-up
            rates = {}
            for policy in POLICIES:
                t = timings[policy]
                rates[policy] = len(pages) / t.median
                shown = ", ".join(f"{k} {v:.0f}" for k, v in counters(engines[policy], sends).items())
                print(f"{policy:<9} {rates[policy]:>10.0f} pages/s   {t.line()}")
                print(f"{'':<9} per send: {shown}")
        finally:
            for engine in engines.values():
                engine.close()
    print(f"\nfallback / retry: {rates['fallback'] / rates['retry']:.2f}x pages/s")


if __name__ == "__main__":
    main()
