"""Method ``zstd``: one zstd stream per channel, across packets (spec §4.3).

As QEMU's multifd-zstd: one compression stream per channel at level
``multifd-zstd-level`` (default 1), each packet's normal pages fed in
offset order and flushed (``ZSTD_e_flush``) at the end of the packet; the
frame is never ended, so its header starts the channel's first payload and
no content size or end mark ever follows.  The library is python-zstandard;
it takes the packet's pages gathered into one buffer (a C copy), which gives
the same bytes as QEMU's page-by-page feeding (the tests check it), and
writes its output through a writer straight into the packet's slot.

The receiver keeps one decompression stream per channel, refuses a payload
larger than ``ZSTD_compressBound(normal_pages * page_size)`` before reading
it, and decodes through a writer that stops the library as soon as the
output would pass ``normal_pages * page_size`` bytes (so a hostile payload
cannot expand without bound), then copies the pages to their places (C).
A frame that ends and a new frame that starts are accepted, as QEMU's
``ZSTD_decompressStream`` loop does; every other problem is a typed error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from engine import errors, wire
from engine.methods import Method, register
from engine.methods.payload_errors import wire_error

RECV_BUFFER = 1 << 20
# QEMU accepts levels 0..20; level 20 uses a 32 MiB window (log 25), so a
# peer cannot make a channel's decoder allocate more than that
MAX_WINDOW = 1 << 25


def compress_bound(size: int) -> int:
    """ZSTD_compressBound(size)."""
    small = ((128 << 10) - size) >> 11 if size < (128 << 10) else 0
    return size + (size >> 8) + small


class _Overflow(Exception):
    """The stream produced more than the packet's pages."""


class _BoundedWriter:
    """The file the library writes to: bytes go straight into ``target``, up to ``limit``.

    The sender points it at the packet's output slot, the receiver at the
    stage where one packet's decompressed pages gather before they are placed.
    """

    def __init__(self) -> None:
        self.target = memoryview(b"")
        self.limit = 0
        self.pos = 0

    def start(self, target: memoryview, limit: int) -> None:
        self.target, self.limit, self.pos = target, limit, 0

    def write(self, data: bytes) -> int:
        end = self.pos + len(data)
        if end > self.limit:
            raise _Overflow
        self.target[self.pos:end] = data
        self.pos = end
        return len(data)


class _SendState:
    def __init__(self, params: Any, level: int) -> None:
        self.page_size = params.page_size
        self.pages = memoryview(bytearray(params.page_count * params.page_size))
        self.out = _BoundedWriter()
        self.stream = zstandard.ZstdCompressor(level=level).stream_writer(
            self.out, write_size=zstandard.COMPRESSION_RECOMMENDED_OUTPUT_SIZE, closefd=False)


class _RecvState:
    def __init__(self, params: Any) -> None:
        self.channel = params.channel
        self.page_size = params.page_size
        self.pages = memoryview(bytearray(params.page_count * params.page_size))
        self.stage = _BoundedWriter()
        # write_size above a whole packet: when the input runs out, output
        # can only be left inside the library if this buffer filled, i.e.
        # the packet already produced too much
        self.stream = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_writer(
            self.stage, write_size=params.page_count * params.page_size + 1)


class Zstd(Method):
    name = "zstd"
    flag = wire.FLAG_ZSTD
    default_level = 1
    levels = range(0, 21)
    resumable = False   # the channel's stream lives in its worker: no replacement can continue it

    def slot_size(self, page_size: int) -> int:
        return self.max_payload(wire.page_count_for(page_size), page_size)

    def max_payload(self, normal_pages: int, page_size: int) -> int:
        return min(compress_bound(normal_pages * page_size), RECV_BUFFER)

    def send_setup(self, params: Any) -> _SendState:
        return _SendState(params, self.default_level if params.level is None else params.level)

    def send_prepare(self, state: _SendState, block: Any, pages: np.ndarray, slot: memoryview) -> tuple[int, dict[str, int]]:
        n = len(pages)
        if n == 0:
            return 0, {}   # the stream is not touched, as QEMU skips compression
        from workers import codec  # the native build: only where a hook runs it

        size = codec.none_send_packet(block.buf, state.page_size, pages, state.pages)
        limit = min(len(slot), self.max_payload(n, state.page_size))
        state.out.start(slot, limit)
        try:
            state.stream.write(state.pages[:size])
            state.stream.flush(zstandard.FLUSH_BLOCK)
        except _Overflow:
            raise errors.CodecError(f"zstd payload for {n} pages exceeds {limit} bytes") from None
        return state.out.pos, {"normal_pages": n, "compressed_pages": n}

    def send_cleanup(self, state: _SendState) -> None:
        state.stream = None

    def recv_setup(self, params: Any) -> _RecvState:
        return _RecvState(params)

    def recv(self, state: _RecvState, header: wire.PacketHeader, payload: memoryview, block: Any) -> None:
        from workers import codec

        if state.stream is None:
            self._fail(state, header, "payload", "the channel's zstd stream failed on an earlier packet")
        expected = header.normal_pages * state.page_size
        stage = state.stage
        stage.start(state.pages, expected)
        try:
            state.stream.write(payload)
        except _Overflow:
            self._fail(state, header, "payload", "input left over: more output than the packet's pages")
        except zstandard.ZstdError as exc:
            page = stage.pos // state.page_size
            self._fail(state, header, f"page[{page}]", f"zstd stream is corrupt here: {exc}")
        if stage.pos != expected:
            page = stage.pos // state.page_size
            self._fail(state, header, f"page[{page}]", "the payload ended inside this page "
                       f"(short output: {stage.pos} of {expected} bytes)")
        try:
            codec.none_recv_packet(state.pages[:expected], header.normal, block.buf, state.page_size)
        except codec.PayloadRejected as exc:
            raise wire_error(exc, state.channel, header, state.page_size) from None

    def _fail(self, state: _RecvState, header: wire.PacketHeader, field: str, reason: str) -> None:
        state.stream = None   # a channel cannot resynchronise after this
        raise errors.DecompressError(reason, channel=state.channel, packet_num=header.packet_num,
                                     field=field)

    def recv_cleanup(self, state: _RecvState) -> None:
        state.stream = None


register(Zstd())
