"""Method ``qpl``: every normal page its own raw-DEFLATE stream (spec §4.4).

Payload: ``normal_pages`` BE u32 lengths, then the pages in offset order;
a length equal to the page size means the page went raw.  The work is done
by the worker's ``PageJobs`` (job array + work queue + software fallback),
so the same code runs on the software path, the emulated IAA device and
real IAA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import wire
from engine.methods import Method, register
from engine.methods.payload_errors import wire_error


class _State:
    def __init__(self, params: Any) -> None:
        from workers.jobs import PageJobs  # the native build: only where a hook runs it

        self.channel = params.channel
        self.page_size = params.page_size
        self.jobs = PageJobs(params.page_count, params.jobs)


class Qpl(Method):
    name = "qpl"
    flag = wire.FLAG_QPL
    uses_work_queue = True      # its pages run on PageJobs: IAA, the emulated device or software
    resumable = True            # every page is its own stream
    page_length_table = True    # spec §4.4: the payload starts with the pages' lengths

    def slot_size(self, page_size: int) -> int:
        n = wire.page_count_for(page_size)
        return 4 * n + n * page_size

    def max_payload(self, normal_pages: int, page_size: int) -> int:
        return 4 * normal_pages + normal_pages * page_size

    def send_setup(self, params: Any) -> _State:
        return _State(params)

    def send_prepare(self, state: _State, block: Any, pages: np.ndarray, slot: memoryview) -> tuple[int, dict[str, int]]:
        if len(pages) == 0:
            return 0, {}
        size, stats = state.jobs.compress(block.buf, state.page_size, pages, slot)
        return size, stats.as_dict()

    def map_shared_memory(self, state: _State, segments: list[tuple[str, memoryview]]) -> None:
        state.jobs.map_shared_memory(segments)

    def send_path(self, state: _State) -> tuple[str, str]:
        return state.jobs.path, state.jobs.path_reason

    def send_cleanup(self, state: _State) -> None:
        state.jobs.close()

    def recv_setup(self, params: Any) -> _State:
        return _State(params)

    def recv(self, state: _State, header: wire.PacketHeader, payload: memoryview, block: Any) -> None:
        from workers.codec import PayloadRejected

        try:
            state.jobs.decompress(payload, header.normal, block.buf, state.page_size)
        except PayloadRejected as exc:
            raise wire_error(exc, state.channel, header, state.page_size) from None

    def recv_cleanup(self, state: _State) -> None:
        state.jobs.close()


register(Qpl())
