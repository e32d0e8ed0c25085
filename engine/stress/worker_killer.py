"""The kill fault: SIGKILL the worker about to be handed a packet.

Plugged into the coordinator as its ``before_dispatch`` hook, so the victim
dies with that packet in flight and unread (killed after the hand-over, a
fast worker could finish the packet first and the kill would cost nothing).  Whether a given send of a packet is hit
depends only on the seed, the packet number and the attempt, so a run
repeats; each re-send to a replacement is a new attempt with its own draw.
"""

from __future__ import annotations

import os
import signal

import numpy as np

_TAG_KILL = 0x6B11


class WorkerKiller:
    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.seed = seed
        self.kills = 0
        self._killed: set[int] = set()

    def __call__(self, worker_id: int, pid: int, packet_num: int, attempt: int) -> None:
        if self.rate <= 0 or pid in self._killed:
            return                # a second packet may reach it before its death is noticed
        draw = np.random.default_rng([_TAG_KILL, self.seed, packet_num, attempt]).random()
        if draw < self.rate:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return            # already gone (it died on its own): not our kill
            self._killed.add(pid)
            self.kills += 1
