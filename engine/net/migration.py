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
import secrets
import time
import uuid as uuidlib
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

from engine import errors, methods, wire
from engine.net import budget, control
from engine.batch import Engine, Progress, check_fits, engine_version, make_source_block
from engine.config import Config
from engine.net.control import ControlChannel
from engine.ram import RamBlock
from engine.receiver import Receiver
from engine.report.run import NORMAL, QUIET, VERBOSE, Report, RoundReport
from engine.report.schema import envelope, machine_facts, now, write_report
from engine.net.auth import SessionAuth, listen_problem
from engine.net.session import TOKEN_BYTES, SessionGate, open_data_channel
from engine.net.transport import Address, Listener, RecordingSource, TcpSink, TcpSource, connect
from engine.peer_text import printable
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
    check_fits(config, receiver=False)
    auth = SessionAuth.from_settings(t)
    with ExitStack() as stack:
        # the block first: the receiver gives a new connection only handshake_timeout
        block = stack.enter_context(make_source_block(config))
        sock = connect(address, timeout=t.connect_timeout, stall_timeout=t.stall_timeout)
        sock = auth.client_socket(sock, address.host, t.handshake_timeout)
        channel = ControlChannel(sock, peer=str(address), role="sender")
        stack.callback(channel.close)
        channel.send_magic()
        auth.prove_sender(channel, t.stall_timeout)
        with _peer_reason(channel):
            return _send(config, address, channel, auth, block, stack, progress)


def _send(config: Config, address: Address, channel: ControlChannel, auth: SessionAuth,
          block: RamBlock, stack: ExitStack, progress: Progress | None) -> Report:
    t, m = config.transport, config.migration
    session = uuidlib.uuid4().bytes
    hello = control.Hello(control.VERSION, session, m.page_size, m.method, m.channel_count,
                          str(m.compat), [(block.name, block.size)])
    channel.send(hello)
    reply = _first_reply(channel, auth, t.stall_timeout)
    if isinstance(reply, control.Refuse):
        raise errors.SessionRefused(f"the receiver refused the session: {printable(reply.reason)}",
                                    peer=str(address))
    if isinstance(reply, control.Error):
        raise control.peer_failed(reply, str(address))
    if not isinstance(reply, control.Ready):
        raise errors.ControlError("expected Ready", field="kind", got=type(reply).__name__)
    sinks = []
    for i in range(hello.channels):
        sock = open_data_channel(address, auth, reply.token, t, i)
        sinks.append(TcpSink(sock, i, peer=str(address), packet_deadline=t.packet_deadline))
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


def _first_reply(channel: ControlChannel, auth: SessionAuth, timeout: float) -> control.Message:
    """The receiver's answer to Hello; a receiver that wants authentication we lack says so."""
    try:
        return channel.receive(timeout)
    except (errors.PeerClosed, errors.ControlError) as exc:
        if auth.mode != "none" or getattr(exc, "field", "length") != "length":
            raise
        raise errors.SessionRefused(f"{exc}; does the receiver expect a pre-shared key "
                                    "(transport.psk_file) or TLS?", peer=channel.peer) from exc


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
    dropped_connections: int = 0    # connections that never joined (scanners, failed authentication)
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
        if self.dropped_connections:
            lines += ["", f"dropped {self.dropped_connections} connection(s) that never joined "
                          "the session (see docs/security.md)"]
        lines += ["", f"final digests: {verdict}"]
        return "\n".join(lines)


def receive_migration(config: Config, listen: Address | str, *,
                      on_listening: Callable[[Address], None] | None = None,
                      record_dir: str | os.PathLike | None = None,
                      insecure: bool = False) -> ReceiveReport:
    """Receive one migration on ``listen``; returns what arrived and the verdict.

    ``on_listening`` is called with the bound address (port 0 picks one)
    before the first accept.  ``record_dir`` keeps every data channel's
    bytes as ``channel-<id>.mfd`` (for ``multifd-engine inspect``).
    Without ``transport.psk_file`` or TLS, only a loopback address is
    allowed unless ``insecure`` (docs/security.md).
    """
    t = config.transport
    address = _as_address(listen)
    auth = SessionAuth.from_settings(t)
    problem = listen_problem(address.host, auth, insecure)
    if problem is not None:
        raise errors.ConfigError("transport.psk_file", problem)
    with ExitStack() as stack:
        listener = Listener(address)
        stack.callback(listener.close)
        if on_listening is not None:
            on_listening(listener.address)
        gate = SessionGate(listener, auth, t)
        channel, hello = gate.sender()
        stack.callback(channel.close)
        with _peer_reason(channel):
            report = _receive(config, gate, channel, hello, stack, record_dir)
            report.dropped_connections = gate.dropped.count
            return report


def _receive(config: Config, gate: SessionGate, channel: ControlChannel, hello: control.Hello,
             stack: ExitStack, record_dir: str | os.PathLike | None) -> ReceiveReport:
    t, m = config.transport, config.migration
    problem = session_problem(hello, config)
    if problem is not None:
        problem = printable(problem)      # it quotes the sender's own strings
        channel.send(control.Refuse(problem))
        raise errors.SessionRefused(f"refused the sender's session: {problem}", peer=channel.peer)
    dest = [stack.enter_context(RamBlock.create(name, size, hello.page_size))
            for name, size in hello.blocks]
    token = secrets.token_bytes(TOKEN_BYTES)
    channel.send(control.Ready(token))
    sources = _data_sources(gate.channels(hello.channels, token), t, record_dir, stack)
    gate.listener.close()
    receiver = stack.enter_context(Receiver(
        dest, sources, method=hello.method, page_size=hello.page_size,
        compat=wire.Compat.parse(hello.qemu_version), uuid=hello.uuid, jobs=m.jobs,
        copy_pages=m.copy_pages))
    receiver.start()
    for reader in receiver.readers:
        if isinstance(reader.source, RecordingSource):
            reader.source.name_by_channel(reader.channel)
    report = ReceiveReport(engine_version(), channel.peer, hello.method, hello.page_size,
                           hello.channels, hello.qemu_version, list(hello.blocks),
                           config=config.as_dict(), machine=machine_facts())
    _serve_rounds(channel, receiver, report, t.stall_timeout + _digest_allowance(hello.blocks),
                  round_deadline=t.round_deadline)
    for reader in receiver.readers:
        if isinstance(reader.source, RecordingSource):
            reader.source.finish()
    report.receive_channels = receiver.counters()
    return report


def _data_sources(connections: list, t: Any, record_dir: str | os.PathLike | None,
                  stack: ExitStack) -> list:
    sources: list = []
    for index, (sock, addr) in enumerate(connections):
        source: Any = TcpSource(sock, index, peer=addr, packet_deadline=t.packet_deadline)
        if record_dir is not None:
            source = RecordingSource(source, record_dir, index)
        stack.callback(source.close)
        sources.append(source)
    return sources


def _serve_rounds(channel: ControlChannel, receiver: Receiver, report: ReceiveReport,
                  end_timeout: float, *, round_deadline: float) -> None:
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
        _set_round_end(receiver, time.monotonic() + round_deadline)
        try:
            packets = receiver.receive_round()
        except (errors.BarrierError, errors.TruncatedStream) as exc:
            raise _channel_end_cause(channel, exc) from exc
        flush = channel.expect(control.Flush, end_timeout)
        if flush.index != message.index:
            raise errors.ControlError("flush for another round", field="index",
                                      got=flush.index, expected=message.index)
        seconds = time.perf_counter() - started
        channel.send(control.Synced(message.index, packets, seconds))
        report.rounds.append(ReceivedRound(message.index, message.pages, packets, seconds))


def _set_round_end(receiver: Receiver, ends: float) -> None:
    for reader in receiver.readers:
        source = reader.source
        tcp = source.source if isinstance(source, RecordingSource) else source
        tcp.round_ends = ends


def _channel_end_cause(channel: ControlChannel, exc: errors.WireError) -> errors.EngineError:
    """Why a data channel ended mid-round: the sender's death or reason, else ``exc``.

    A sender that is killed closes every connection at once; its data
    channels then end early, which alone would look like bad input.
    """
    try:
        for _ in range(16):    # the round's Flush may come first
            message = channel.receive(0.5)
            if isinstance(message, control.Error):
                return control.peer_failed(message, channel.peer)
    except errors.PeerClosed:
        return errors.PeerClosed(f"the sender went away mid-round ({exc.reason})",
                                 channel=exc.channel, peer=channel.peer)
    except errors.EngineError:
        pass
    return exc


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
    if m.channels == "auto" and hello.channels > budget.MAX_AUTO_CHANNELS:
        return (f"{hello.channels} channels, a receiver with channels = \"auto\" takes at most "
                f"{budget.MAX_AUTO_CHANNELS}")
    try:
        compat = wire.Compat.parse(hello.qemu_version)
    except ValueError:
        return f"QEMU version {hello.qemu_version!r} is not one"
    if compat != m.compat:
        return f"a QEMU {compat} stream, this receiver is configured for QEMU {m.compat}"
    if hello.method not in methods.names() or not compat.supports(methods.get(hello.method).flag):
        return f"method {hello.method!r} with QEMU {compat}"
    t = config.transport
    return _blocks_problem(hello.blocks, hello.page_size) or budget.session_memory_problem(
        sum(size for _, size in hello.blocks), hello.channels, hello.method, hello.page_size,
        max_ram=t.max_ram, decoder_limit=t.decoder_budget)


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
    return None
