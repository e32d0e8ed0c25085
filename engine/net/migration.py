"""A migration between two hosts over TCP: ``send_migration`` and ``receive_migration``.

::

    source host                                   destination host
    send_migration(config, "HOST:PORT")           receive_migration(config, "HOST:PORT")
      control connection  ── Hello ────────────►  checks the session, creates RAM blocks
                          ◄──────────── Ready ──
      channel i: TcpSink  ── init packet, ─────►  channel i: TcpSource
        (Engine: workers,    packets, SYNC         (Receiver: one reader thread each)
         coordinator)
      Round i / Flush i   ─────────────────────►  every channel up to its SYNC, then
                          ◄─────────── Synced ──  the flush: the round's barrier
      End (sha256 per block) ──────────────────►  its own digests
                          ◄─────────── Result ──  both ends report the verdict

The data channels carry exactly QEMU's bytes (``engine.net.transport``); the
control connection is ours (``engine.net.control``).  The same ``Engine`` and
``Receiver`` run as in a local batch; only the sinks and sources differ.

Each side fails cleanly and promptly: every connect, read, write and
barrier is bounded by the ``[transport]`` timeouts; the side that gives up
first tells the other over the control connection (best effort), and the
other side reports that reason as ``PeerFailed``.  Everything (workers,
shared memory, sockets) is released on every exit path.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid as uuidlib
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

from engine import errors, methods, wire
from engine.net import control
from engine.batch import Engine, Progress, engine_version, make_source_block
from engine.config import Config
from engine.net.control import ControlChannel
from engine.ram import RamBlock
from engine.receiver import Receiver
from engine.report.run import NORMAL, QUIET, VERBOSE, Report, RoundReport
from engine.report.schema import envelope, machine_facts, now, write_report
from engine.net.transport import Address, Listener, RecordingSource, TcpSink, TcpSource, connect
from engine.workloads import PrecopyRounds
from workers import codec

MAX_BLOCKS = 64
_DIGEST_BYTES_PER_S = 100e6   # a slow machine's sha256: extra time the peer may need at End


def block_digests(blocks: Sequence[RamBlock]) -> dict[str, bytes]:
    """sha256 of every block's bytes, by block name."""
    return {b.name: hashlib.sha256(b.buf).digest() for b in blocks}


def _digest_allowance(blocks: Sequence[tuple[str, int]]) -> float:
    return sum(size for _, size in blocks) / _DIGEST_BYTES_PER_S


def _as_address(address: Address | str) -> Address:
    return address if isinstance(address, Address) else Address.parse(address)


# ------------------------------------------------------------------ sender

def send_migration(config: Config, to: Address | str, *, progress: Progress | None = None) -> Report:
    """Migrate the configured source RAM to a receiver at ``to``; the send report.

    ``report.verified`` is True when both ends' final per-block digests agree.
    """
    address = _as_address(to)
    t = config.transport
    with ExitStack() as stack:
        sock = connect(address, timeout=t.connect_timeout, stall_timeout=t.stall_timeout)
        channel = ControlChannel(sock, peer=str(address), role="sender")
        stack.callback(channel.close)
        with _peer_reason(channel):
            return _send(config, address, channel, stack, progress)


def _send(config: Config, address: Address, channel: ControlChannel, stack: ExitStack,
          progress: Progress | None) -> Report:
    t, m = config.transport, config.migration
    block = stack.enter_context(make_source_block(config))
    session = uuidlib.uuid4().bytes
    hello = control.Hello(control.VERSION, session, m.page_size, m.method, m.channel_count,
                          str(m.compat), [(block.name, block.size)])
    channel.send_magic()
    channel.send(hello)
    reply = channel.receive(t.stall_timeout)
    if isinstance(reply, control.Refuse):
        raise errors.SessionRefused(f"the receiver refused the session: {reply.reason}",
                                    peer=str(address))
    if not isinstance(reply, control.Ready):
        raise errors.ControlError("expected Ready", field="kind", got=type(reply).__name__)
    sinks = []
    for i in range(hello.channels):
        sock = connect(address, timeout=t.connect_timeout, stall_timeout=t.stall_timeout, channel=i)
        sinks.append(TcpSink(sock, i, peer=str(address)))
        stack.callback(sinks[-1].close)
    engine = stack.enter_context(Engine(config, blocks=[block], sinks=sinks, uuid=session))
    report = Report(engine_version=engine_version(), codec=codec.codec_name(), method=m.method,
                    page_size=m.page_size, channels=len(sinks), qemu_version=m.qemu_version,
                    accelerator=[], config=config.as_dict())
    w = config.workload
    rounds = PrecopyRounds(block, seed=w.seed, dirty_fraction=w.dirty_fraction,
                           hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=w.mix)
    for index in range(config.run.rounds):
        batch = rounds.batch(index)
        channel.send(control.Round(index, len(batch)))
        sent = engine.send(batch, round_index=index, progress=progress)
        channel.send(control.Flush(index))
        synced = channel.expect(control.Synced, t.stall_timeout)
        if synced.index != index:
            raise errors.ControlError("Synced for another round", field="index",
                                      got=synced.index, expected=index)
        report.rounds.append(RoundReport(index, len(batch), sent.packets, sent.seconds,
                                         receive_seconds=synced.seconds, wire_bytes=sent.wire_bytes))
    digests = block_digests([block])
    channel.send(control.End(digests))
    result = channel.expect(control.Result, t.stall_timeout + _digest_allowance(hello.blocks))
    report.final_digests_match = bool(result.ok and result.digests == digests)
    engine.fill_report(report)
    return report


@contextmanager
def _peer_reason(channel: ControlChannel) -> Iterator[None]:
    """Whatever ends a session is told to the peer; the peer's own reason wins."""
    try:
        yield
    except BaseException as exc:
        failed = _peer_failure(channel, exc)
        if failed is None:
            raise
        raise failed from exc


def _peer_failure(channel: ControlChannel, exc: BaseException) -> errors.PeerFailed | None:
    """Tell the peer why we stop; PeerFailed if the peer had failed first.

    When the peer gave up first (a bad packet, a timeout of its own), it
    said why on the control connection, and our socket error is only the
    echo of that: the peer's reason is the better message.
    """
    if isinstance(exc, (errors.PeerFailed, errors.SessionRefused)):
        return None
    channel.report_error(exc)
    if not isinstance(exc, errors.EngineError):
        return None    # an interrupt or a bug of ours: say nothing more
    peer = channel.peer_error(0.5)
    if peer is None:
        return None
    return control.peer_failed(peer, channel.peer)


# ---------------------------------------------------------------- receiver

@dataclass
class ReceivedRound:
    round: int
    pages: int          # as the sender announced
    packets: int
    seconds: float


@dataclass
class ReceiveReport:
    """What the destination received; ``digests_match`` is the final verdict."""

    engine_version: str
    peer: str
    method: str
    page_size: int
    channels: int
    qemu_version: str
    blocks: list[tuple[str, int]]
    rounds: list[ReceivedRound] = field(default_factory=list)
    receive_channels: list[dict[str, Any]] = field(default_factory=list)
    digests_match: bool | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report in the common schema (kind "receive")."""
        out = envelope("receive", engine_version=self.engine_version, created=self.created,
                       machine=self.machine, config=self.config)
        body = asdict(self)
        for key in ("engine_version", "created", "machine", "config"):
            del body[key]
        return {**out, **body}

    def write_json(self, path: str | os.PathLike) -> None:
        write_report(path, self.to_dict())

    def format_text(self, verbosity: int = NORMAL) -> str:
        """QUIET: the verdict line; NORMAL: rounds and channels; VERBOSE: every counter."""
        verdict = {True: "both ends' sha256 per RAM block agree", False: "DIFFER",
                   None: "not reached"}[self.digests_match]
        if verbosity <= QUIET:
            return f"final digests: {verdict}"
        lines = [f"multifd-engine {self.engine_version}: received from {self.peer}: method "
                 f"{self.method}, {self.channels} channel(s), page size {self.page_size}, "
                 f"QEMU {self.qemu_version} stream",
                 "", f"{'round':>5} {'pages':>9} {'packets':>8} {'recv s':>8}"]
        lines += [f"{r.round:>5} {r.pages:>9} {r.packets:>8} {r.seconds:8.3f}" for r in self.rounds]
        # packets as the sender counts them: data packets, the SYNCs (one per round) apart
        lines += ["", f"{'channel':>7} {'packets':>8} {'SYNC':>5} {'normal':>8} {'zero':>7} {'MB':>9}"]
        lines += [f"{c['channel']:>7} {c['packets'] - c['sync_packets']:>8} {c['sync_packets']:>5} "
                  f"{c['normal_pages']:>8} {c['zero_pages']:>7} {c['bytes'] / 1e6:>9.2f}"
                  for c in self.receive_channels]
        if verbosity >= VERBOSE:
            lines += [""] + [f"channel {c['channel']}: " + ", ".join(f"{k} {v}" for k, v in c.items()
                                                                     if k != "channel")
                             for c in self.receive_channels]
        lines += ["", f"final digests: {verdict}"]
        return "\n".join(lines)


def receive_migration(config: Config, listen: Address | str, *,
                      on_listening: Callable[[Address], None] | None = None,
                      record_dir: str | os.PathLike | None = None) -> ReceiveReport:
    """Receive one migration on ``listen``; returns what arrived and the verdict.

    ``on_listening`` is called with the bound address (port 0 picks one)
    before the first accept.  ``record_dir`` keeps every data channel's
    bytes as ``channel-<id>.mfd`` (for ``multifd-engine inspect``).
    """
    t = config.transport
    with ExitStack() as stack:
        listener = Listener(_as_address(listen))
        stack.callback(listener.close)
        if on_listening is not None:
            on_listening(listener.address)
        sock, peer = listener.accept(timeout=t.accept_timeout, stall_timeout=t.stall_timeout,
                                     what="sender")
        channel = ControlChannel(sock, peer=peer, role="receiver")
        stack.callback(channel.close)
        with _peer_reason(channel):
            return _receive(config, listener, channel, stack, record_dir)


def _receive(config: Config, listener: Listener, channel: ControlChannel, stack: ExitStack,
             record_dir: str | os.PathLike | None) -> ReceiveReport:
    t, m = config.transport, config.migration
    channel.expect_magic(t.stall_timeout)
    hello = channel.expect(control.Hello, t.stall_timeout)
    problem = session_problem(hello, config)
    if problem is not None:
        channel.send(control.Refuse(problem))
        raise errors.SessionRefused(f"refused the sender's session: {problem}", peer=channel.peer)
    dest = [stack.enter_context(RamBlock.create(name, size, hello.page_size))
            for name, size in hello.blocks]
    channel.send(control.Ready())
    sources = _accept_channels(listener, hello.channels, t, channel.peer, record_dir, stack)
    listener.close()
    receiver = stack.enter_context(Receiver(
        dest, sources, method=hello.method, page_size=hello.page_size,
        compat=wire.Compat.parse(hello.qemu_version), uuid=hello.uuid, jobs=m.jobs))
    receiver.start()
    for reader in receiver.readers:
        if isinstance(reader.source, RecordingSource):
            reader.source.name_by_channel(reader.channel)
    report = ReceiveReport(engine_version(), channel.peer, hello.method, hello.page_size,
                           hello.channels, hello.qemu_version, list(hello.blocks),
                           config=config.as_dict(), machine=machine_facts())
    _serve_rounds(channel, receiver, report, t.stall_timeout + _digest_allowance(hello.blocks))
    report.receive_channels = receiver.counters()
    return report


def _accept_channels(listener: Listener, count: int, t: Any, peer: str,
                     record_dir: str | os.PathLike | None, stack: ExitStack) -> list:
    """Exactly ``count`` data connections, then none more."""
    deadline = time.monotonic() + t.connect_timeout
    sources: list = []
    for index in range(count):
        left = max(deadline - time.monotonic(), 0.001)
        sock, addr = listener.accept(timeout=left, stall_timeout=t.stall_timeout,
                                     what=f"data channel ({index} of {count} connected)")
        source: Any = TcpSource(sock, index, peer=addr)
        if record_dir is not None:
            source = RecordingSource(source, record_dir, index)
        stack.callback(source.close)
        sources.append(source)
    if listener.pending():
        raise errors.BadInitPacket(f"more connections than the session's {count} channels",
                                   field="connections", got=count + 1, expected=count)
    return sources


def _serve_rounds(channel: ControlChannel, receiver: Receiver, report: ReceiveReport,
                  end_timeout: float) -> None:
    """Rounds until End: each round's channels up to SYNC, then its flush."""
    while True:
        message = channel.receive(end_timeout)
        if isinstance(message, control.Error):
            raise control.peer_failed(message, channel.peer)
        if isinstance(message, control.End):
            digests = block_digests(receiver.blocks)
            report.digests_match = message.digests == digests
            channel.send(control.Result(report.digests_match, digests))
            return
        if not isinstance(message, control.Round) or message.index != len(report.rounds):
            raise errors.ControlError("expected the next Round or End", field="kind",
                                      got=repr(message)[:80], expected=f"Round {len(report.rounds)}")
        started = time.perf_counter()
        packets = receiver.receive_round()
        flush = channel.expect(control.Flush, end_timeout)
        if flush.index != message.index:
            raise errors.ControlError("flush for another round", field="index",
                                      got=flush.index, expected=message.index)
        seconds = time.perf_counter() - started
        channel.send(control.Synced(message.index, packets, seconds))
        report.rounds.append(ReceivedRound(message.index, message.pages, packets, seconds))


def session_problem(hello: control.Hello, config: Config) -> str | None:
    """Why this receiver cannot take the sender's session, or None."""
    m = config.migration
    if hello.version != control.VERSION:
        return f"control protocol version {hello.version}, this receiver speaks {control.VERSION}"
    if len(hello.uuid) != 16:
        return f"session uuid of {len(hello.uuid)} bytes, expected 16"
    if hello.method != m.method:
        return f"method {hello.method!r}, this receiver is configured for {m.method!r}"
    if hello.page_size != m.page_size:
        return f"page size {hello.page_size}, this receiver is configured for {m.page_size}"
    if not 1 <= hello.channels <= 255:
        return f"{hello.channels} channels (1..255 allowed)"
    if m.channels != "auto" and hello.channels != m.channel_count:
        return f"{hello.channels} channels, this receiver is configured for {m.channel_count}"
    try:
        compat = wire.Compat.parse(hello.qemu_version)
    except ValueError:
        return f"QEMU version {hello.qemu_version!r} is not one"
    if compat != m.compat:
        return f"a QEMU {compat} stream, this receiver is configured for QEMU {m.compat}"
    if hello.method not in methods.names() or not compat.supports(methods.get(hello.method).flag):
        return f"method {hello.method!r} with QEMU {compat}"
    return _blocks_problem(hello.blocks, hello.page_size)


def _blocks_problem(blocks: list[tuple[str, int]], page_size: int) -> str | None:
    if not 1 <= len(blocks) <= MAX_BLOCKS:
        return f"{len(blocks)} RAM blocks (1..{MAX_BLOCKS} allowed)"
    names = [name for name, _ in blocks]
    if len(set(names)) != len(names):
        return "a RAM block name appears twice"
    for name, size in blocks:
        encoded = name.encode("utf-8", "replace")
        if not name or len(encoded) > 255 or "\0" in name:
            return f"RAM block name {name[:40]!r} (1..255 bytes, no NUL)"
        if size <= 0 or size % page_size:
            return f"RAM block {name!r} of {size} bytes (a positive multiple of {page_size})"
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    total = sum(size for _, size in blocks)
    if total > memory:
        return f"{total} bytes of RAM blocks, this machine has {memory}"
    return None
