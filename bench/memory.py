"""Benchmark 5: the coordinator's memory does not grow with guest RAM.

For each size (default 64 MiB and 1 GiB) a fresh process creates the
guest block in shared memory, has a child process fill it (so the pages
are not counted against the coordinator: they are the guest's, not its
own), then sends every page through 2 workers to null channels and
reports its own peak RSS (``VmHWM``) and anonymous memory (``RssAnon``).
Prints both and large / small (goal < 1.2).

    python bench/memory.py [--sizes 64MiB,1GiB]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys

import numpy as np

import guest

from engine.units import parse_size


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _fill(spec: dict) -> None:
    from engine.ram import RamBlock, RamBlockSpec
    from engine.workloads import fill_guest_memory
    with RamBlock.attach(RamBlockSpec.from_dict(spec)) as block:
        fill_guest_memory(block, seed=1)


def measure_one(size: int) -> dict:
    """Run in a fresh interpreter: one size, one send of every page."""
    from engine.batch import Engine
    from engine.channels import NullSink
    from engine.config import Config
    from engine.ram import RamBlock

    with RamBlock.create("pc.ram", size, guest.PAGE_SIZE) as block:
        filler = multiprocessing.get_context("spawn").Process(target=_fill, args=(block.spec().as_dict(),))
        filler.start()
        filler.join()
        if filler.exitcode != 0:
            raise RuntimeError(f"filler exited with {filler.exitcode}")
        config = Config.from_dict({"migration": {"channels": 2, "method": "qpl",
                                                 "accelerator": "software"},
                                   "sink": {"kind": "null"}, "run": {"verify": False}})
        sinks = [NullSink(0), NullSink(1)]
        with Engine(config, blocks=[block], sinks=sinks) as engine:
            engine.send(np.arange(block.pages, dtype=np.uint64))
            wire = sum(s.bytes_written for s in sinks)
        return {"size": size, "vm_hwm": _status("VmHWM"), "rss_anon": _status("RssAnon"),
                "rss_shmem": _status("RssShmem"), "wire": wire}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64MiB,1GiB")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(parse_size("--one", args.one))))
        return
    results = []
    for text in args.sizes.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", text], check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        print(f"guest {r['size'] >> 20:6d} MiB: coordinator peak RSS {r['vm_hwm'] / 2**20:7.1f} MiB, "
              f"anonymous {r['rss_anon'] / 2**20:6.1f} MiB, shared mapped {r['rss_shmem'] / 2**20:6.1f} MiB, "
              f"wire {r['wire'] / 1e6:.0f} MB")
    small, large = results[0], results[-1]
    ratio = large["vm_hwm"] / small["vm_hwm"]
    met = "met" if ratio < 1.2 else "MISSED"
    print(f"peak RSS {large['size'] >> 20} MiB / {small['size'] >> 20} MiB guest: {ratio:.2f} (goal < 1.2: {met})")


if __name__ == "__main__":
    main()
