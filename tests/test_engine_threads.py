"""One Engine from two threads: the second concurrent call is refused, cleanly.

Before, two threads sending on one Engine hung in the coordinator's wait or
failed with "undecodable message frame".
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine import Engine, Receiver, errors
from engine.channels import MemoryChannel
from engine.config import Config
from engine.ram import RamBlock
from engine.workloads import fill_guest_memory

PAGE = 4096
PAGES = 512

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def test_a_second_concurrent_call_is_refused_and_the_engine_goes_on():
    inside, tried = threading.Event(), threading.Event()

    def hold_first_call(*_args) -> None:       # as a packet is dispatched, in the first call
        if not inside.is_set():
            inside.set()
            tried.wait(10)

    config = Config.from_dict({"migration": {"channels": 2, "method": "none"}})
    with RamBlock.create("pc.ram", PAGES * PAGE, PAGE) as src, \
         RamBlock.create("pc.ram", PAGES * PAGE, PAGE) as dst:
        fill_guest_memory(src, seed=3)
        channels = [MemoryChannel(0), MemoryChannel(1)]
        with Engine(config, blocks=[src], sinks=channels, before_dispatch=hold_first_call) as engine, \
             Receiver([dst], channels, method="none", page_size=PAGE) as rx:
            rx.start()
            outcome: list = []
            first = threading.Thread(target=lambda: outcome.append(
                engine.send(np.arange(PAGES, dtype=np.uint64))), daemon=True)
            first.start()
            assert inside.wait(30)
            with pytest.raises(errors.EngineBusy, match="one call at a time"):
                engine.send(np.arange(PAGES, dtype=np.uint64), round_index=1)
            with pytest.raises(errors.EngineBusy):
                engine.close()
            tried.set()
            first.join(30)
            assert outcome and outcome[0].packets > 0          # the first call finished
            rx.receive_round()
            assert rx.verify([src]).ok
            engine.send(np.arange(PAGES // 2, dtype=np.uint64), round_index=1)   # still usable
            rx.receive_round()
            assert rx.verify([src]).ok
