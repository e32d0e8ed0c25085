"""Guest memory images: a raw (or zstd-compressed) dump loaded into a RAM block.

The bytes go straight from the file (or the zstd decoder) into shared
memory with ``readinto``; no full copy is made in Python.  Every problem
with the file is an ``ImageError`` naming it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from engine.errors import ImageError
from engine.ram import RamBlock

_IMAGE_CHUNK = 64 << 20  # bytes per readinto() when loading an image


def load_image(path: str | os.PathLike, name: str = "pc.ram", page_size: int = 4096) -> RamBlock:
    """A new RAM block (owned by this process) holding the image at ``path``; ``.zst``: zstd."""
    path = os.fspath(path)
    try:
        if str(path).endswith(".zst"):
            return _from_zst(path, name, page_size)
        return _from_raw(path, name, page_size)
    except OSError as exc:
        raise ImageError(path, f"cannot read image: {exc.strerror or exc}") from exc


def _image_size_ok(path: str, size: int, page_size: int) -> int:
    if size <= 0 or size % page_size:
        raise ImageError(path, f"image size {size} is not a non-zero multiple of the page size {page_size}")
    return size


def _from_raw(path: str, name: str, page_size: int) -> RamBlock:
    with open(path, "rb", buffering=0) as f:
        size = _image_size_ok(path, os.fstat(f.fileno()).st_size, page_size)
        return _filled_block(path, name, size, page_size, f, "shrank")


def _from_zst(path: str, name: str, page_size: int) -> RamBlock:
    import zstandard

    def reader(f: BinaryIO):
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=False)

    try:
        with open(path, "rb") as f:
            header = f.read(18)  # ZSTD_FRAMEHEADERSIZE_MAX
            try:
                hint = zstandard.get_frame_parameters(header).content_size
            except zstandard.ZstdError:
                raise ImageError(path, "not a zstd stream") from None
            if hint in (0, zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) or hint < 0:
                hint = None
            if hint is not None:
                # Single-frame files carry the size: decompress once.
                size = _image_size_ok(path, hint, page_size)
                f.seek(0)
                block = RamBlock.create(name, size, page_size)
                try:
                    with reader(f) as r:
                        got = _fill_from(r, block.buf)
                        extra = r.read(1)
                except BaseException:
                    block.close()
                    raise
                if got == size and not extra:
                    return block
                block.close()  # several frames: size from the first was a lie
            # Size unknown: count once, then decompress into shared memory.
            f.seek(0)
            size = 0
            with reader(f) as r:
                while chunk := r.read(_IMAGE_CHUNK // 4):
                    size += len(chunk)
            size = _image_size_ok(path, size, page_size)
            f.seek(0)
            with reader(f) as r:
                return _filled_block(path, name, size, page_size, r, "changed")
    except zstandard.ZstdError as exc:
        raise ImageError(path, f"bad zstd data: {exc}") from exc


def _filled_block(path: str, name: str, size: int, page_size: int, f: BinaryIO, change: str) -> RamBlock:
    """A new block of ``size`` bytes read from ``f``; an error when ``f`` holds fewer."""
    block = RamBlock.create(name, size, page_size)
    try:
        got = _fill_from(f, block.buf)
        if got != size:
            raise ImageError(path, f"image {change} while loading ({got} of {size} bytes)")
    except BaseException:
        block.close()
        raise
    return block


def _fill_from(f, buf: memoryview) -> int:
    """readinto() ``buf`` from ``f`` until it is full or the stream ends; bytes read."""
    total = len(buf)
    pos = 0
    while pos < total:
        end = min(total, pos + _IMAGE_CHUNK)
        with buf[pos:end] as view:
            n = f.readinto(view)
        if not n:
            break
        pos += n
    return pos
