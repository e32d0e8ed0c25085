"""Run a stress: migration after migration, each round checked, faults injected.

::

    plan_migration(seed, i) ─► Engine (workers; WorkerKiller as before_dispatch)
                                  │ StressChannels: DamagingSink, then a bounded
                                  │ in-process channel or a loopback socket,
                                  ▼ then StoppingSource / SlowSource
                               Receiver readers, one thread each, reading while
                               the engine sends; then verify byte for byte

A round runs its receive side concurrently with its send side, so bounded
channels give backpressure and a stalled side becomes ``ChannelStalled``;
at the end of a round the sender waits for every reader to reach its SYNC,
as long as the reader keeps taking bytes (``_await_readers``).
The first error of a round wins (``_FirstError``); it aborts every channel
so the other side stops at once instead of waiting for its own timeout.
A round that fails ends its migration (the streams are no longer in step)
and the next migration starts fresh.  An error no injected fault explains
is recorded as unexpected, and the run goes on; a worker that keeps dying
(``BrokenWorker``), or a migration that cannot start, ends the run.

Everything a migration holds (worker processes, shared memory, threads)
sits on one ``ExitStack``, so a failure or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine import errors, methods, wire
from engine.batch import Engine
from engine.config import Config
from engine.devices import receive_jobs
from engine.ram import RamBlock
from engine.receiver import ChannelReader, Receiver
from engine.stress.channels import StressChannels
from engine.stress.memory import read_memory
from engine.stress.plan import (MigrationPlan, RoundPlan, available_accelerators,
                                available_methods, plan_migration)
from engine.stress.summary import StressSummary
from engine.stress.worker_killer import WorkerKiller
from engine.threads import ThreadPool
from engine.workloads import PrecopyRounds

Status = Callable[[StressSummary, str], None]

# how long past the stall timeout a round may take before it counts as a hang
_HANG_MARGIN = 30.0


class _FirstError:
    """The first error of a round; claiming it aborts the round's channels."""

    def __init__(self, abort: Callable[[], None]) -> None:
        self._abort = abort
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def claim(self, error: BaseException) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = error
        self._abort()


@dataclass
class _Round:
    """What happened in one round, for classifying it."""

    plan: RoundPlan
    pages: int
    error: BaseException | None
    seconds: float
    mismatched: int = 0
    mismatch_offsets: dict[str, list[int]] | None = None
    received: int = 0
    damage: str | None = None    # the kind of damage that struck in this round
    stopped: bool = False
    kills: int = 0


class StressRun:
    """One stress run; ``run()`` returns its summary (also on an early end)."""

    def __init__(self, config: Config, *, rounds: int | None = None, duration: float | None = None,
                 seed: int | None = None, status: Status | None = None) -> None:
        s = config.stress
        self.config = config
        self.rounds = rounds if rounds is not None else (None if duration else s.rounds)
        self.duration = duration if duration is not None else (s.duration or None)
        if self.rounds is None and self.duration is None:
            self.rounds = s.rounds
        self.seed = seed or s.seed or int(np.random.SeedSequence().entropy % (2**63 - 1)) or 1
        self.status = status
        _check(config)
        self.summary = StressSummary(seed=self.seed, channels=config.migration.channel_count)

    def run(self) -> StressSummary:
        started = time.monotonic()
        try:
            index = 0
            while not self._done(started):
                # always the full plan, so migration i is the same whatever came before
                count = self.config.stress.rounds_per_migration
                self._migration(plan_migration(self.config, self.seed, index, count), started)
                index += 1
        except errors.EngineError as exc:    # a worker that keeps dying; a migration that cannot start
            self.summary.fatal_error = f"{type(exc).__name__}: {exc}"
        except KeyboardInterrupt:
            self.summary.interrupted = True
            raise
        finally:
            self.summary.elapsed_seconds = time.monotonic() - started
        return self.summary

    def _done(self, started: float) -> bool:
        if self.rounds is not None and self.summary.rounds >= self.rounds:
            return True
        return self.duration is not None and time.monotonic() - started >= self.duration

    # ---- one migration --------------------------------------------------

    def _migration(self, plan: MigrationPlan, started: float) -> None:
        config = _migration_config(self.config, plan)
        self.summary.migrations += 1
        for what, value in (("method", plan.method), ("page_size", plan.page_size),
                            ("accelerator", plan.accelerator)):
            self.summary.count_variation(what, value)
        t = config.transport
        channels = StressChannels.create(self.config.stress.transport,
                                         config.migration.channel_count, plan,
                                         capacity=self.config.stress.channel_capacity, settings=t)
        self._judge_hostile_client(plan, channels)
        # a zlib or zstd stream dies with its worker: no kills where nothing can resume
        resumable = methods.get(plan.method).resumable
        killer = WorkerKiller(self.config.stress.kill_rate if resumable else 0.0, plan.kill_seed)
        with ExitStack() as stack:
            stack.callback(channels.close)
            # a migration that cannot start ends the run (run() says why)
            engine = stack.enter_context(Engine(config, sinks=channels.damagers,
                                                before_dispatch=killer))
            receiver = self._receiver(config, engine, channels, stack)
            pool = ThreadPool(channels.count, thread_name_prefix="mfd-stress-rx")
            stack.callback(pool.shutdown, wait=True)
            stack.callback(channels.abort)             # runs first: frees every waiting thread
            errors_before = len(self.summary.unexpected_errors)
            clean = True           # every round verified: the counters must add up
            for r in range(plan.rounds):
                round_plan = plan.round(r)
                outcome = self._round(plan, round_plan, engine, receiver, channels, pool, killer)
                if not self._judge(plan, outcome, channels):
                    clean = False
                    break
                if self._done(started):
                    break
            self._collect(plan, engine, channels)
            if engine.device is not None:
                survived = len(self.summary.unexpected_errors) == errors_before
                self._collect_device(plan, engine, clean and not killer.kills, survived)

    def _receiver(self, config: Config, engine: Engine, channels: StressChannels,
                  stack: ExitStack) -> Receiver:
        m = config.migration
        dest = [stack.enter_context(RamBlock.create(b.name, b.size, b.page_size))
                for b in engine.blocks]
        jobs, _device = receive_jobs(config, stack, channels.count)
        receiver = stack.enter_context(Receiver(dest, channels.sources, method=m.method,
                                                page_size=m.page_size, compat=m.compat,
                                                uuid=bytes(16), jobs=jobs, copy_pages=m.copy_pages))
        receiver.start()
        return receiver

    # ---- one round ------------------------------------------------------

    def _round(self, plan: MigrationPlan, rp: RoundPlan, engine: Engine, receiver: Receiver,
               channels: StressChannels, pool: ThreadPoolExecutor, killer: WorkerKiller) -> _Round:
        batch = (np.arange(engine.block.pages, dtype=np.uint64) if rp.index == 0
                 else _dirty_batch(engine.block, self.config, plan, rp))
        if rp.damage is not None:
            channel, damage = rp.damage
            channels.damagers[channel].arm(damage)
        if rp.stop_reader is not None:
            channel, after = rp.stop_reader
            channels.stoppers[channel].arm(after)
        damage_before, kills_before = channels.damage_done(), killer.kills
        received_before = _received_pages(receiver)
        first = _FirstError(channels.abort)
        readers = [pool.submit(_read_round, r, first) for r in receiver.readers]
        started = time.perf_counter()
        try:
            engine.send(batch, round_index=rp.index, progress=self._progress(plan))
            for sink in channels.damagers:
                sink.flush()
            self._await_readers(readers, channels)
        except Exception as exc:  # noqa: BLE001 - classified by _judge; Ctrl-C goes up
            first.claim(exc)
        self._wait_readers(readers, first)
        outcome = _Round(rp, len(batch), first.error, time.perf_counter() - started,
                         kills=killer.kills - kills_before,
                         damage=_new_damage(damage_before, channels.damage_done()),
                         stopped=any(s.stopped for s in channels.stoppers))
        if first.error is None:
            result = receiver.verify(engine.blocks)
            outcome.mismatched = result.mismatched_pages
            outcome.mismatch_offsets = result.first_offsets
            outcome.received = _received_pages(receiver) - received_before
        self._sample_memory(engine, channels)
        return outcome

    def _await_readers(self, readers: list[Future], channels: StressChannels) -> None:
        """The sender's end of round: wait for every reader to reach its SYNC.

        A reader that takes no byte for ``stall_timeout`` meanwhile is a
        receiver that stopped reading: ``ChannelStalled`` on its channel, as
        a sender waiting for a flush acknowledgement would report it.
        """
        stall = self.config.transport.stall_timeout
        seen = [s.bytes_read for s in channels.stoppers]
        since = [time.monotonic()] * len(seen)
        while not all(r.done() for r in readers):
            wait(readers, timeout=min(0.05, stall))
            now = time.monotonic()
            for i, (reader, source) in enumerate(zip(readers, channels.stoppers)):
                if source.bytes_read != seen[i]:
                    seen[i], since[i] = source.bytes_read, now
                elif not reader.done() and now - since[i] >= stall:
                    raise errors.ChannelStalled(
                        f"the receiver read nothing for {stall:g} s before the round's SYNC",
                        channel=source.channel_id, side="write", seconds=stall)

    def _wait_readers(self, readers: list[Future], first: _FirstError) -> None:
        limit = self.config.transport.stall_timeout + _HANG_MARGIN
        _, pending = wait(readers, timeout=limit)
        if pending:
            first.claim(TimeoutError(f"receiver still busy {limit:.0f} s after the send side "
                                     "finished or failed: a hang"))
            wait(readers, timeout=_HANG_MARGIN)

    def _progress(self, plan: MigrationPlan):
        if self.status is None:
            return None
        last = [0.0]

        def progress(round_index: int, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.25:
                last[0] = now
                self.status(self.summary, plan.describe())
        return progress

    # ---- judging --------------------------------------------------------

    def _judge(self, plan: MigrationPlan, o: _Round, channels: StressChannels) -> bool:
        """Count the round; True if the migration may go on."""
        s = self.summary
        damage = o.damage
        expected = self._expected_error(o, damage)
        if o.error is not None and not expected:
            if isinstance(o.error, errors.BrokenWorker):
                raise o.error
            self._unexpected(plan, o.plan.index, o.error)
        if o.kills:
            s.fault("worker_kill").injected += o.kills
            if o.error is None or expected:
                s.fault("worker_kill").survived += o.kills
        if damage is not None:
            self._judge_damage(plan, o, damage)
        elif o.error is None and (o.mismatched or o.received != o.pages):
            s.pages_lost += max(o.mismatched, o.pages - o.received)
            if o.received > o.pages:
                self._unexpected(plan, o.plan.index, RuntimeError(
                    f"receiver applied {o.received} pages of a {o.pages}-page round"))
        if o.stopped and o.plan.stop_reader is not None:
            s.fault("stop_reader").injected += 1
            if isinstance(o.error, errors.ChannelStalled):
                s.fault("stop_reader").survived += 1
                s.fault("stop_reader").detected_error += 1
        s.rounds += 1
        verified = o.error is None and not o.mismatched and o.received == o.pages
        if verified:
            s.rounds_verified += 1
            s.pages += o.pages
            s.guest_bytes += o.pages * plan.page_size
            s.round_seconds += o.seconds
        if self.status is not None:
            self.status(s, plan.describe())
        return verified

    def _expected_error(self, o: _Round, damage: str | None) -> bool:
        if o.error is None:
            return False
        if o.stopped and isinstance(o.error, errors.ChannelStalled):
            return True
        return damage is not None and isinstance(o.error, (errors.WireError, errors.ChannelStalled))

    def _judge_hostile_client(self, plan: MigrationPlan, channels: StressChannels) -> None:
        """Survived: the stranger was dropped and the channels joined (the rounds then verify)."""
        if plan.hostile_client is None:
            return
        count = self.summary.fault(f"hostile_{plan.hostile_client}")
        count.injected += 1
        if channels.dropped == 1:
            count.survived += 1
            count.detected_error += 1
        else:
            self._unexpected(plan, None, RuntimeError(
                f"hostile client ({plan.hostile_client}): {channels.dropped} connections dropped, "
                "expected 1"))

    def _judge_damage(self, plan: MigrationPlan, o: _Round, kind: str) -> None:
        count = self.summary.fault(f"corrupt_{kind}")
        count.injected += 1
        how, detail = "", ""
        if o.error is not None:
            if isinstance(o.error, (errors.WireError, errors.ChannelStalled)):
                count.detected_error += 1
                count.survived += 1
                how, detail = "error", f"{type(o.error).__name__}: {o.error}"
        elif o.mismatched or o.received != o.pages:
            count.detected_verify += 1
            count.survived += 1
            offsets = "; ".join(f"{name!r} {', '.join(hex(x) for x in found[:4])}"
                                for name, found in (o.mismatch_offsets or {}).items())
            first = f", first at {offsets}" if offsets else ""
            how, detail = "verify", (f"{o.mismatched} pages differ{first}; "
                                     f"{o.received} of {o.pages} pages arrived")
        else:
            count.harmless += 1
            count.survived += 1
        if how and len(self.summary.detections) < 20:
            self.summary.detections.append({"migration": plan.index, "round": o.plan.index,
                                            "kind": kind, "how": how, "detail": detail})

    def _unexpected(self, plan: MigrationPlan, round_index: int | None, error: BaseException) -> None:
        self.summary.unexpected_errors.append({
            "migration": plan.index, "round": round_index, "plan": plan.describe(),
            "type": type(error).__name__, "message": str(error)})

    # ---- after a migration ----------------------------------------------

    def _collect(self, plan: MigrationPlan, engine: Engine, channels: StressChannels) -> None:
        s = self.summary
        counters = engine.coordinator.channel_counters()
        s.packets += sum(c.get("packets", 0) for c in counters)
        s.wire_bytes += sum(c.get("bytes", 0) for c in counters)
        s.worker_restarts += sum(c.get("restarts", 0) for c in counters)
        if channels.slow is not None and channels.slow.reads:
            slow = s.fault("slow_reader")
            slow.injected += 1
            if channels.peak_buffered() <= _channel_bound(self.config, plan):
                slow.survived += 1

    def _collect_device(self, plan: MigrationPlan, engine: Engine, exact: bool,
                        survived: bool) -> None:
        """Count the device's injected faults; check the workers saw exactly them.

        ``exact``: every round verified and no worker was killed.  A killed
        worker's counters die with it while the device counted its jobs.
        """
        s = self.summary
        device = {k: int(v) for k, v in engine.device.counters().items()}
        for key, value in device.items():
            s.device_counters[key] = s.device_counters.get(key, 0) + value
        for kind, key in _DEVICE_FAULTS.items():
            if device.get(key, 0):
                count = s.fault(kind)
                count.injected += device[key]
                count.survived += device[key] if survived else 0
        if exact:
            seen = _sum_counters(engine.coordinator.channel_counters())
            for text, left, right in _device_checks(seen, device):
                if left != right:
                    self._unexpected(plan, None, RuntimeError(
                        f"device and worker counters disagree: {text} ({left} != {right})"))

    def _sample_memory(self, engine: Engine, channels: StressChannels) -> None:
        s = self.summary
        s.peak_channel_bytes = max(s.peak_channel_bytes, channels.peak_buffered())
        own = read_memory()
        if own is not None:
            s.note_peak(s.peak_rss, "coordinator", own.peak)
            s.note_peak(s.peak_anon, "coordinator", own.anon)
        for pid in engine.coordinator.worker_pids():
            mem = read_memory(pid)
            if mem is not None:
                s.note_peak(s.peak_rss, "worker", mem.peak)
                s.note_peak(s.peak_anon, "worker", mem.anon)


_DEVICE_FAULTS = {"device_busy_storm": "storms", "device_job_error": "job_errors",
                  "device_overflow": "overflows", "device_slow_job": "slow_jobs"}


def _sum_counters(channels: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in channels:
        for key, value in c.items():
            if isinstance(value, int) and key not in ("channel", "pid"):
                total[key] = total.get(key, 0) + value
    return total


def _device_checks(seen: dict[str, int], device: dict[str, int]) -> list[tuple[str, int, int]]:
    """What the workers counted against what the one shared device answered."""
    get = seen.get
    return [
        ("busy answers seen vs given", get("busy", 0), device["busy_full"] + device["busy_storm"]),
        ("hardware errors seen vs injected", get("hw_errors", 0), device["job_errors"]),
        ("jobs submitted vs accepted", get("hw_submitted", 0), device["accepted"]),
        ("hardware + software pages vs normal pages",
         get("hw_submitted", 0) + get("sw_fallbacks", 0), get("normal_pages", 0)),
    ]


def _read_round(reader: ChannelReader, first: _FirstError) -> int:
    try:
        return reader.read_until_sync()
    except BaseException as exc:
        first.claim(exc)
        raise


def _received_pages(receiver: Receiver) -> int:
    return sum(c["normal_pages"] + c["zero_pages"] for c in receiver.counters())


def _new_damage(before: dict[str, int], after: dict[str, int]) -> str | None:
    """The damage that struck between two counts (a damage armed in one round
    strikes in a later one when its channel got fewer packets than planned)."""
    return next((kind for kind, n in after.items() if n > before.get(kind, 0)), None)


def _channel_bound(config: Config, plan: MigrationPlan) -> int:
    """Most bytes a bounded channel may hold: its capacity, or one packet beyond."""
    packet = wire.header_size(plan.page_size) + methods.get(plan.method).slot_size(plan.page_size)
    return max(config.stress.channel_capacity, packet)


def _dirty_batch(block: RamBlock, config: Config, plan: MigrationPlan, rp: RoundPlan) -> np.ndarray:
    """Rewrite a drawn share of the pages with the round's mix; their indices."""
    w = config.workload
    # A fresh precopy schedule whose round 1 is this round: round 0 of a
    # schedule only names every page, so skipping it costs nothing.
    rounds = PrecopyRounds(block, seed=plan.workload_seed + rp.index, dirty_fraction=rp.dirty_fraction,
                           hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=rp.mix)
    rounds.batch(0)
    return rounds.batch(1)


def _migration_config(config: Config, plan: MigrationPlan) -> Config:
    data = config.as_dict()
    data.pop("stress")
    data["migration"].update(page_size=plan.page_size, method=plan.method,
                             accelerator=plan.accelerator)
    data["workload"].update(seed=plan.workload_seed, mix=plan.mix.as_dict(), source="synthetic")
    if plan.device_faults is not None:
        data["emulator"]["faults"].update(plan.device_faults.as_dict())
    return Config.from_dict(data)


def _check(config: Config) -> None:
    """Config problems a stress run would only meet later, named now."""
    s = config.stress
    for size in s.page_sizes:
        if config.workload.size % size:
            raise errors.ConfigError("stress.page_sizes", f"workload.size {config.workload.size} "
                                     f"is not a multiple of page size {size}")
    if not available_methods(config):
        raise errors.ConfigError("stress.methods", f"none of them is known to QEMU "
                                 f"{config.migration.qemu_version}")
    if not available_accelerators(config):
        raise errors.ConfigError("stress.accelerators", "no accelerator to draw from")
