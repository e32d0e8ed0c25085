"""The engine as a migration source into a real QEMU started with ``-incoming``.

::

    engine                                       QEMU -incoming
      (--qmp) capabilities, parameters,   ──►    QMP
              migrate-incoming tcp:HOST:PORT
      main connection: MainChannelWriter  ──►    main channel (first connection)
      channel i: init packet (QEMU's UUID),──►   multifd channel i
                 packets, SYNCs
      (--qmp) query-migrate until done    ◄──    status, error-desc

Precopy round 0 sends every page, the later rounds the dirty ones; every
round but the last is a RAM PART, the last is END.  Zero pages go as ZERO
records on the main channel when the peer is older than 9.0, inside the
packets otherwise.  Every step is bounded by the ``[transport]``
timeouts; a destination that refuses or stops reading ends in a
``DestinationFailed`` (exit 5) that names the likely cause.
"""

from __future__ import annotations

import mmap
import os
import socket
import time
import uuid as uuidlib
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine import errors
from engine.batch import Engine, Progress, engine_version, make_source_block
from engine.config import Config, WorkloadSettings
from engine.net.transport import Address, TcpSink, connect
from engine.qemu.errors import DestinationFailed, QmpError
from engine.qemu.main_channel import MainChannelWriter
from engine.qemu.qmp import Qmp
from engine.ram import RamBlock
from engine.report.run import NORMAL, QUIET, Report, RoundReport
from engine.workloads import PrecopyRounds
from workers import codec

_DONE = {"completed", "failed", "cancelled"}
MACHINE = "none"        # the machine type a RAM-only source is (spec §1)
QEMU_BLOCK = "mem"      # QEMU's block name for memory-backend-*,id=mem


@dataclass
class DestinationOutcome:
    """What the destination said at the end (``--qmp``), and what the main channel carried."""

    status: str = "not reached"      # query-migrate's status; "sent" without QMP
    error: str = ""                  # query-migrate's error-desc
    main_channel_bytes: int = 0
    sync_points: int = 0
    qemu: str = ""                   # the destination's version (QMP greeting)
    seconds: float = 0.0             # first main-channel byte until the destination said completed
    started: float = field(default=0.0, repr=False)   # perf_counter() at the first byte
    ram_file: str = ""               # the destination's RAM, when this host could read it
    mismatched_pages: int | None = None      # against the source; None: not compared
    first_mismatch_offsets: list[int] = field(default_factory=list)


@dataclass
class QemuSendResult:
    report: Report
    destination: DestinationOutcome = field(default_factory=DestinationOutcome)

    @property
    def ok(self) -> bool:
        return self.destination.status in ("completed", "sent")

    @property
    def verified(self) -> bool | None:
        """Every page of the destination's RAM equals the source's (None: not compared)."""
        d = self.destination
        return None if d.mismatched_pages is None else d.mismatched_pages == 0

    def format_text(self, verbosity: int = NORMAL) -> str:
        d = self.destination
        verdict = (f"destination QEMU {d.qemu or '?'}: {d.status}"
                   + (f" after {d.seconds:.3f} s" if d.seconds else "")
                   + (f" ({d.error})" if d.error else ""))
        if d.mismatched_pages == 0:
            verdict += f"; every page of its RAM ({d.ram_file}) equals the source's"
        elif d.mismatched_pages:
            verdict += (f"; {d.mismatched_pages} pages of its RAM ({d.ram_file}) DIFFER "
                        f"(first at offsets {d.first_mismatch_offsets})")
        if verbosity <= QUIET:
            return verdict
        # the engine's own verify line says "not checked": the verdict below replaces it
        text = self.report.format_text(verbosity).removesuffix("verify: not checked").rstrip()
        return "\n".join([text, "",
                          f"main channel    {d.main_channel_bytes:>12} bytes, {d.sync_points} sync points",
                          verdict])

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out["qemu_destination"] = {k: v for k, v in self.destination.__dict__.items()
                                   if k != "started"}
        return out


def send_to_qemu(config: Config, to: Address | str, *, qmp_path: str | None = None,
                 uuid: bytes = bytes(16), progress: Progress | None = None,
                 configure_destination: bool = True) -> QemuSendResult:
    """Migrate the configured RAM into the QEMU listening at ``to``.

    With ``qmp_path``, the destination's multifd settings are made to match
    the config and ``migrate-incoming`` started (unless
    ``configure_destination`` is False: it was done already), and its
    ``query-migrate`` verdict is awaited.
    """
    address = to if isinstance(to, Address) else Address.parse(to)
    config = qemu_config(config)
    t = config.transport
    with ExitStack() as stack:
        qmp, facts = None, None
        if qmp_path is not None:
            qmp = stack.enter_context(Qmp(qmp_path, timeout=t.connect_timeout))
            if configure_destination:
                prepare_destination(qmp, config, address)
            facts = DestinationFacts.read(qmp)
        block = stack.enter_context(make_source_block(config))
        outcome = DestinationOutcome(qemu=_version(qmp))
        info: dict[str, Any] = {}
        try:
            with ExitStack() as session:
                report = _migrate(config, address, block, uuid, outcome, session, progress)
                outcome.status = "sent"
                if qmp is not None:
                    # asked while the channels are open: the destination completes
                    # at the main channel's EOF, not at the channels' close
                    info = wait_for_destination(qmp, t.stall_timeout)
                    outcome.seconds = time.perf_counter() - outcome.started
        except (errors.TransportError, errors.ChannelStalled) as exc:
            raise DestinationFailed(_failure(exc, qmp, facts, config, block, uuid),
                                    peer=str(address)) from exc
        if qmp is not None:
            outcome.status, outcome.error = info.get("status", "?"), info.get("error-desc", "")
            if outcome.status != "completed":
                raise DestinationFailed(
                    f"the destination's migration is {outcome.status}"
                    + (f": {outcome.error}" if outcome.error else "")
                    + f"; {likely_causes(facts, config, block, uuid)}", peer=str(address))
            compare_destination_ram(qmp, block, outcome)
        return QemuSendResult(report, outcome)


def compare_destination_ram(qmp: Qmp, block: RamBlock, outcome: DestinationOutcome) -> None:
    """Page for page against the destination's RAM, when it is a file this host can read.

    A ``memory-backend-file`` with ``share=on`` on this host is; QMP names its path.
    """
    try:
        path = qmp.execute("qom-get", path=f"/objects/{block.name}", property="mem-path")
        shared = qmp.execute("qom-get", path=f"/objects/{block.name}", property="share")
    except QmpError:
        return      # not a file backend (or not ours to read)
    if not shared or not os.path.isfile(path) or os.path.getsize(path) != block.size:
        return
    with open(path, "rb") as f:
        ram = mmap.mmap(f.fileno(), block.size, prot=mmap.PROT_READ)
        try:
            count, first = codec.compare_pages(block.buf, ram, block.page_size, 8)
        finally:
            ram.close()
    outcome.ram_file = path
    outcome.mismatched_pages = count
    outcome.first_mismatch_offsets = [int(i) * block.page_size for i in first]


def _version(qmp: Qmp | None) -> str:
    if qmp is None:
        return ""
    v = qmp.version
    return f"{v.get('major', '?')}.{v.get('minor', '?')}.{v.get('micro', '?')}"


def prepare_destination(qmp: Qmp, config: Config, address: Address) -> None:
    """Set multifd, channel count, compression and level, then migrate-incoming."""
    m = config.migration
    qmp.execute("migrate-set-capabilities",
                capabilities=[{"capability": "multifd", "state": True}])
    params: dict[str, Any] = {"multifd-channels": m.channel_count,
                              "multifd-compression": m.method}
    if m.method in ("zlib", "zstd"):
        params[f"multifd-{m.method}-level"] = m.method_level
    qmp.execute("migrate-set-parameters", **params)
    qmp.execute("migrate-incoming", uri=f"tcp:{address}")


def _migrate(config: Config, address: Address, block: RamBlock, uuid: bytes,
             outcome: DestinationOutcome, stack: ExitStack, progress: Progress | None) -> Report:
    t, m, w = config.transport, config.migration, config.workload
    main = _MainConnection(connect(address, timeout=t.connect_timeout,
                                   stall_timeout=t.stall_timeout), str(address))
    stack.callback(main.close)
    sinks = []
    for i in range(m.channel_count):
        sock = connect(address, timeout=t.connect_timeout, stall_timeout=t.stall_timeout, channel=i)
        sinks.append(TcpSink(sock, i, peer=str(address)))
        stack.callback(sinks[-1].close)
    engine = stack.enter_context(Engine(config, blocks=[block], sinks=sinks, uuid=uuid))
    coordinator = engine.coordinator
    writer = MainChannelWriter(main.write, coordinator.sync, compat=m.compat,
                               blocks=[(block.name, block.size)], page_size=m.page_size,
                               machine=MACHINE)
    report = Report(engine_version=engine_version(), codec=codec.codec_name(), method=m.method,
                    page_size=m.page_size, channels=len(sinks), qemu_version=m.qemu_version,
                    accelerator=[], config=config.as_dict())
    rounds = PrecopyRounds(block, seed=w.seed, dirty_fraction=w.dirty_fraction,
                           hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=w.mix)
    outcome.started = time.perf_counter()
    writer.start()
    for index in range(config.run.rounds):
        batch = rounds.batch(index)
        started, written = time.perf_counter(), coordinator.bytes_written()
        coordinator.timeline.mark_round(index)
        pages, zero = split_zero_pages(block, batch, writer.rule.zero_records)
        packets = coordinator.send_pages(0, pages, on_packet=(
            (lambda done, total: progress(index, done, total)) if progress else None))
        zero_records = {block.name: zero} if zero.size else None
        if index == config.run.rounds - 1:
            writer.end(zero_records)
        else:
            writer.part(zero_records)
        coordinator.timeline.end_round()
        report.rounds.append(RoundReport(index, len(batch), packets, time.perf_counter() - started,
                                         wire_bytes=coordinator.bytes_written() - written))
    engine.fill_report(report)
    outcome.main_channel_bytes, outcome.sync_points = writer.bytes_written, writer.sync_points
    return report


def qemu_config(config: Config) -> Config:
    """``config`` with the RAM block named as QEMU names ``memory-backend-*,id=mem``.

    The engine's default block name, ``pc.ram``, is what QEMU calls RAM it
    allocates itself; a ``-machine none`` destination with a memory backend
    calls it after the backend id.  A block name set in the config is kept.
    """
    if config.workload.block != WorkloadSettings.block:
        return config
    return replace(config, workload=replace(config.workload, block=QEMU_BLOCK))


def split_zero_pages(block: RamBlock, batch: np.ndarray, zero_records: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(pages for the channels, pages for ZERO records); no records for 9.0+ peers."""
    pages = np.ascontiguousarray(batch, dtype=np.uint64).copy()
    if not zero_records or not pages.size:
        return pages, np.empty(0, dtype=np.uint64)
    normal = codec.find_zero_pages(block.buf, block.page_size, pages)
    return np.sort(pages[:normal]), np.sort(pages[normal:])


class _MainConnection:
    """The main channel's socket: whole writes, each stall bounded."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self._sock = sock
        self.peer = peer

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except (TimeoutError, socket.timeout):
            raise errors.ChannelStalled(f"the destination ({self.peer}) took no main-channel "
                                        f"bytes for {self._sock.gettimeout():g} s",
                                        side="write", seconds=self._sock.gettimeout()) from None
        except OSError as exc:
            raise errors.PeerClosed(f"main channel: {exc.strerror or exc}", peer=self.peer) from None

    def close(self) -> None:
        self._sock.close()


def wait_for_destination(qmp: Qmp, timeout: float) -> dict[str, Any]:
    """query-migrate until the destination is done; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = qmp.execute("query-migrate", timeout=max(deadline - time.monotonic(), 0.1))
        except QmpError as exc:
            raise QmpError(f"{exc}; a QEMU 7.2 destination stops answering QMP while it "
                           "waits for a SYNC or a page that never comes") from None
        if info.get("status") in _DONE or time.monotonic() >= deadline:
            return info
        time.sleep(0.02)


@dataclass(frozen=True)
class DestinationFacts:
    """What the destination's QMP said before the migration: enough to name a mismatch
    later, when a failed QEMU may have exited or stopped answering."""

    memdevs: dict[str, int]
    compression: str
    channels: int | None
    uuid: str
    machine: str

    @classmethod
    def read(cls, qmp: Qmp) -> DestinationFacts:
        memdevs = {d.get("id", ""): int(d.get("size", 0)) for d in qmp.execute("query-memdev")}
        params = qmp.execute("query-migrate-parameters")
        machine = str(qmp.execute("qom-get", path="/machine", property="type"))
        return cls(memdevs, params.get("multifd-compression", "none"),
                   params.get("multifd-channels"), qmp.execute("query-uuid").get("UUID", ""),
                   machine.removesuffix("-machine"))

    def differences(self, config: Config, block: RamBlock, uuid: bytes) -> list[str]:
        m = config.migration
        found = []
        if self.machine != MACHINE:
            found.append(f"the destination's machine type is {self.machine!r}, the engine's "
                         f"main channel says {MACHINE!r} (start QEMU with -machine {MACHINE})")
        if block.name not in self.memdevs:
            found.append(f"the destination has no RAM block {block.name!r} (its memory "
                         f"backends: {sorted(self.memdevs)}); set workload.block")
        elif self.memdevs[block.name] != block.size:
            found.append(f"RAM block {block.name!r} is {self.memdevs[block.name]} bytes there, "
                         f"{block.size} here")
        if self.compression != m.method:
            found.append(f"the destination's multifd-compression is {self.compression!r}, "
                         f"the engine sends {m.method!r}")
        if self.channels != m.channel_count:
            found.append(f"the destination expects {self.channels} channels, "
                         f"the engine opened {m.channel_count}")
        ours = str(uuidlib.UUID(bytes=bytes(uuid)))
        if self.uuid and self.uuid != ours:
            found.append(f"the destination's UUID is {self.uuid}, the engine's init packets "
                         f"carry {ours} (set it with --uuid)")
        return found


def likely_causes(facts: DestinationFacts | None, config: Config, block: RamBlock,
                  uuid: bytes) -> str:
    """What differs between the engine's migration and the destination, as far as known."""
    m = config.migration
    found = facts.differences(config, block, uuid) if facts is not None else []
    if found:
        return "likely cause: " + "; ".join(found)
    return (f"likely causes: the destination's RAM block names and sizes (engine: "
            f"{block.name!r} of {block.size} bytes), machine type (engine: {MACHINE!r}), "
            f"multifd method (engine: {m.method}), channel count (engine: {m.channel_count}), "
            f"UUID (engine: {uuidlib.UUID(bytes=bytes(uuid))}), or a QEMU version other than "
            f"the configured {m.qemu_version}")


def _failure(exc: BaseException, qmp: Qmp | None, facts: DestinationFacts | None,
             config: Config, block: RamBlock, uuid: bytes) -> str:
    what = (f"the destination stopped taking bytes ({exc})"
            if isinstance(exc, errors.ChannelStalled) else f"the destination failed ({exc})")
    if qmp is not None:
        try:
            info = qmp.execute("query-migrate", timeout=2)
            if info.get("error-desc"):
                what += f"; it says: {info['error-desc']}"
        except QmpError:
            what += "; its QMP no longer answers (exited, or busy loading)"
    return f"{what}; {likely_causes(facts, config, block, uuid)}"


