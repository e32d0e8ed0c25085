"""The guest image a benchmark runs on.

In order of preference: ``--image PATH`` (any raw RAM file, e.g. a QEMU
``memory-backend-file`` ``mem-path``; ``.zst`` allowed), then the real
160 MiB Linux guest of ``shared/data/wl3`` tiled to the size asked for
(its pages are a real guest's: kernel, page cache, heaps, 20 % zero), then
the engine's seeded generator.  ``describe`` says which one was used.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from engine.ram import RamBlock
from engine.units import parse_size
from engine.workloads import fill_guest_memory, load_image

PAGE_SIZE = 4096
_REPO = Path(__file__).resolve().parent.parent
WL3_CANDIDATES = (_REPO.parent / "shared/data/wl3/image.ram.zst",
                  Path("/work/shared/data/wl3/image.ram.zst"))


def add_arguments(parser: argparse.ArgumentParser, *, size: str = "512MiB") -> None:
    parser.add_argument("--image", help="raw guest RAM file (.zst allowed); default: wl3 tiled, "
                                        "else the engine's generator")
    parser.add_argument("--size", default=size, help=f"guest size when no --image (default {size})")
    parser.add_argument("--synthetic", action="store_true", help="use the engine's generator")


def wl3_image() -> Path | None:
    return next((p for p in WL3_CANDIDATES if p.is_file()), None)


def load(args: argparse.Namespace, name: str = "pc.ram") -> tuple[RamBlock, str]:
    """The source block and a line describing it."""
    if args.image:
        block = load_image(args.image, name=name, page_size=PAGE_SIZE)
        return block, f"image {args.image} ({block.size >> 20} MiB)"
    size = parse_size("--size", args.size)
    real = None if args.synthetic else wl3_image()
    block = RamBlock.create(name, size, PAGE_SIZE)
    try:
        if real is None:
            fill_guest_memory(block, seed=1)
            return block, f"engine generator, seed 1 ({size >> 20} MiB)"
        with load_image(real, name="wl3", page_size=PAGE_SIZE) as src:
            _tile(src.buf, block.buf)
        return block, f"real Linux guest wl3 ({real}) tiled to {size >> 20} MiB"
    except BaseException:
        block.close()
        raise


def _tile(src: memoryview, dst: memoryview) -> None:
    for start in range(0, len(dst), len(src)):  # a few tiles, not pages
        n = min(len(src), len(dst) - start)
        dst[start:start + n] = src[:n]


def write_raw(block: RamBlock, path: str | os.PathLike) -> None:
    """The block as a raw RAM file (QEMU's memory-backend-file mem-path)."""
    with open(path, "wb") as f:
        f.write(block.buf)


def nonzero_pages(block: RamBlock) -> np.ndarray:
    """Indices of the pages that are not all zero (numpy, no per-page Python)."""
    words = np.frombuffer(block.buf, dtype=np.uint64).reshape(-1, block.page_size // 8)
    return np.flatnonzero(words.any(axis=1)).astype(np.uint64)
