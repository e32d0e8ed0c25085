"""zlib and zstd send hooks against QEMU's loop written in Python.

```sh
python bench/stream_methods.py [--runs 5] [--image RAM | --size 64MiB]
```

For each method, the guest's non-zero pages go through one channel's
stream packet by packet (128 pages each), twice per run:

* ours: the method's ``send_prepare`` (zlib: one C call per packet that
  runs the stream over the pages; zstd: pages gathered in C, one
  python-zstandard call per packet);
* baseline: QEMU's algorithm in plain Python, ``compress(page)`` for each
  page then a flush, with the same library and level.

Both make the same bytes (the tests prove it); the ratio is what the
per-page Python work costs.
"""

from __future__ import annotations

import argparse
import zlib

import guest
import zstandard
from timing import interleaved

from engine import methods, wire
from engine.methods import MethodParams


def ours(method: str, block, packets) -> None:
    m = methods.get(method)
    state = m.send_setup(MethodParams(0, block.page_size))
    slot = memoryview(bytearray(m.slot_size(block.page_size)))
    try:
        for pages in packets:
            m.send_prepare(state, block, pages, slot)
    finally:
        m.send_cleanup(state)


def qemu_loop(method: str, block, packets) -> None:
    size = block.page_size
    view = block.buf
    if method == "zlib":
        stream, flush = zlib.compressobj(1, zlib.DEFLATED, 15), (lambda s: s.flush(zlib.Z_SYNC_FLUSH))
    else:
        stream = zstandard.ZstdCompressor(level=1).compressobj()
        flush = lambda s: s.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)  # noqa: E731
    for pages in packets:
        for page in pages.tolist():   # the per-page loop being measured
            stream.compress(view[page * size:(page + 1) * size])
        flush(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    guest.add_arguments(parser, size="64MiB")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    block, what = guest.load(args)
    with block:
        pages = guest.nonzero_pages(block)
        count = wire.page_count_for(block.page_size)
        packets = [pages[i:i + count] for i in range(0, len(pages), count)]
        work = len(pages) * block.page_size
        print(f"guest: {what}; {len(pages)} non-zero pages, {len(packets)} packets, "
              f"median of {args.runs} runs")
        for method in ("zlib", "zstd"):
            t = interleaved(args.runs, {
                f"{method}: ours (one call per packet)": lambda: ours(method, block, packets),
                f"{method}: QEMU's loop in Python": lambda: qemu_loop(method, block, packets),
            })
            mine, base = t.values()
            print(mine.line(work))
            print(base.line(work))
            print(f"{method}: ours / baseline speed = {base.median / mine.median:.2f}")


if __name__ == "__main__":
    main()
