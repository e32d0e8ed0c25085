"""The software codec's compression settings side by side, per page.

Every 128-page packet of the guest goes through the engine's own C packet
calls (``PageJobs.compress`` / ``decompress``: zero pages dropped as QEMU
does, each page its own raw-DEFLATE stream, 4 KiB window, raw when it
does not shrink), once per setting, on one core, no processes.  Prints per
setting: payload bytes (deterministic), compress and decompress µs per
non-zero page (medians, the settings interleaved so drift hits each alike),
and each against ``balanced`` and ``fast``; the decoded guest is compared
with the source.

    python bench/codec_settings.py [--image RAM] [--size 160MiB] [--runs 5]
                                   [--settings fast,balanced,packet]
"""

from __future__ import annotations

import argparse

import numpy as np

import bench_report
import guest
from timing import interleaved

from engine.ram import RamBlock
from workers import codec
from workers.jobs import JobSettings, PageJobs

PACKET_PAGES = 128


def packets(block: RamBlock) -> list[np.ndarray]:
    """Each packet's normal pages, as the engine's sender finds them."""
    out = []
    for start in range(0, block.pages, PACKET_PAGES):
        pages = np.arange(start, min(start + PACKET_PAGES, block.pages), dtype=np.uint64)
        normal = codec.find_zero_pages(block.buf, block.page_size, pages)
        if normal:
            out.append(pages[:normal].copy())
    return out


class SettingRun:
    """One setting's job array, its payloads, and a destination to decode into."""

    def __init__(self, setting: str, block: RamBlock, normal: list[np.ndarray]) -> None:
        self.block, self.normal = block, normal
        self.jobs = PageJobs(PACKET_PAGES, JobSettings(accelerator="software",
                                                      level=codec.COMPRESSION_SETTINGS[setting]))
        self.slot = bytearray(PACKET_PAGES * (4 + block.page_size))
        self.payloads: list[bytes] = []
        self.dest = bytearray(block.size)

    def compress(self) -> None:
        self.payloads = []
        for pages in self.normal:
            size, _ = self.jobs.compress(self.block.buf, self.block.page_size, pages, self.slot)
            self.payloads.append(bytes(self.slot[:size]))

    def decompress(self) -> None:
        for pages, payload in zip(self.normal, self.payloads):
            self.jobs.decompress(payload, pages, self.dest, self.block.page_size)

    def wire_bytes(self) -> int:
        return sum(map(len, self.payloads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser, size="160MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settings", default=",".join(codec.COMPRESSION_SETTINGS))
    bench_report.add_argument(parser)
    args = parser.parse_args()
    settings = args.settings.split(",")
    for name in settings:
        if name not in codec.COMPRESSION_SETTINGS:
            parser.error(f"--settings: {name!r} is not one of {', '.join(codec.COMPRESSION_SETTINGS)}")

    block, what = guest.load(args)
    with block:
        normal = packets(block)
        n = sum(map(len, normal))
        runs = {name: SettingRun(name, block, normal) for name in settings}
        compress = interleaved(args.runs, {name: run.compress for name, run in runs.items()})
        decompress = interleaved(args.runs, {name: run.decompress for name, run in runs.items()})
        print(f"guest: {what}; {block.pages} pages, {n} non-zero in {len(normal)} packets")
        print(f"codec: {codec.codec_name()}; medians of {args.runs} runs, one core")
        print(f"{'setting':<10} {'payload MB':>11} {'compress µs/page':>17} "
              f"{'decompress µs/page':>19}  bytes / time vs balanced, vs fast")
        cases, ratios = [], []
        for name, run in runs.items():
            if run.dest != block.buf:
                raise SystemExit(f"{name}: the decoded guest differs from the source")
            line = (f"{name:<10} {run.wire_bytes() / 1e6:11.3f} "
                    f"{compress[name].median / n * 1e6:17.2f} {decompress[name].median / n * 1e6:19.2f}")
            for base in ("balanced", "fast"):
                if base in runs and base != name:
                    byte_ratio = run.wire_bytes() / runs[base].wire_bytes()
                    time_ratio = ((compress[name].median + decompress[name].median)
                                  / (compress[base].median + decompress[base].median))
                    line += f"  {base}: {byte_ratio:.3f} / {time_ratio:.2f}"
                    ratios += [bench_report.ratio(f"{name} / {base} bytes", byte_ratio),
                               bench_report.ratio(f"{name} / {base} compress+decompress time", time_ratio)]
            print(line)
            work = n * block.page_size
            compress[name].name = f"{name} compress"
            decompress[name].name = f"{name} decompress"
            cases += [bench_report.case(compress[name], work, wire_bytes=run.wire_bytes(), method="qpl"),
                      bench_report.case(decompress[name], work, method="qpl")]
        print("time: compress + decompress medians; the decoded guest matched the source for every setting")
        bench_report.write(args.json, bench=__file__, guest=what, params=args, cases=cases, ratios=ratios)


if __name__ == "__main__":
    main()
