"""Method ``zlib``: one zlib stream per channel, across packets (spec §4.2).

Exactly QEMU's multifd-zlib: the stream is set up once per channel (zlib
wrapper, windowBits 15, memLevel 8, level ``multifd-zlib-level``, default
1), each packet's normal pages are fed in offset order and the packet ends
on a sync flush; the stream is never finished.  So the zlib header starts
the channel's first payload, and no Adler-32 ever follows.  Feeding the
pages one by one (as QEMU does, and as our C loop does) or in one call gives
the same bytes: the tests re-encode real QEMU 7.2 and 10.0 streams and get
them back byte for byte.

The receiver keeps one inflate stream per channel, refuses a payload larger
than ``compressBound(normal_pages * page_size)`` before reading it (QEMU
reads it into a 1 MiB buffer unchecked), and requires every page to come
out whole, the stream not to end, and no input to be left over.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import wire
from engine.methods import Method, register
from engine.methods.payload_errors import wire_error

# QEMU's receive buffer; no packet of 512 KiB of pages may claim more
RECV_BUFFER = 1 << 20


def compress_bound(size: int) -> int:
    """zlib's compressBound(size): the largest payload ``size`` bytes of pages make."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13


class _State:
    def __init__(self, params: Any, stream: Any) -> None:
        self.channel = params.channel
        self.page_size = params.page_size
        self.stream = stream


class Zlib(Method):
    name = "zlib"
    flag = wire.FLAG_ZLIB
    default_level = 1
    levels = range(0, 10)
    resumable = False   # the channel's stream lives in its worker: no replacement can continue it

    def slot_size(self, page_size: int) -> int:
        return self.max_payload(wire.page_count_for(page_size), page_size)

    def max_payload(self, normal_pages: int, page_size: int) -> int:
        return min(compress_bound(normal_pages * page_size), RECV_BUFFER)

    def send_setup(self, params: Any) -> _State:
        from workers.codec import ZlibStream  # the native build: only where a hook runs it

        level = self.default_level if params.level is None else params.level
        return _State(params, ZlibStream.deflater(level))

    def send_prepare(self, state: _State, block: Any, pages: np.ndarray, slot: memoryview) -> tuple[int, dict[str, int]]:
        if len(pages) == 0:
            return 0, {}   # the stream is not touched, as QEMU skips compression
        limit = self.max_payload(len(pages), state.page_size)
        size = state.stream.send_packet(block.buf, state.page_size, pages, slot[:limit])
        return size, {"normal_pages": len(pages), "compressed_pages": len(pages)}

    def send_cleanup(self, state: _State) -> None:
        state.stream.close()

    def recv_setup(self, params: Any) -> _State:
        from workers.codec import ZlibStream

        return _State(params, ZlibStream.inflater())

    def recv(self, state: _State, header: wire.PacketHeader, payload: memoryview, block: Any) -> None:
        from workers.codec import PayloadRejected

        try:
            state.stream.recv_packet(payload, header.normal, block.buf, state.page_size)
        except PayloadRejected as exc:
            raise wire_error(exc, state.channel, header, state.page_size) from None

    def recv_cleanup(self, state: _State) -> None:
        state.stream.close()


register(Zlib())
