"""The engine as a migration destination for a real QEMU source (``-machine none``).

::

    QEMU source                           engine (recv --qemu --listen HOST:PORT)
      main connection ("QEVM")     ──►    MainChannelReader: blocks, ZERO records,
                                          sync points, device sections, EOF
      channel i (init packet)      ──►    ChannelReader i, one thread each: packets
                                          up to a SYNC, then wait for the main
                                          stream to reach its sync point

Connections are told apart by their first four bytes, as QEMU 8.0+ does.
A channel thread that reads a SYNC stops until the main stream reaches the
sync point (QEMU's barrier), so pages of the next pass never race the ZERO
records of this one.  The generation is read from the stream itself: a
FLUSH record in START means the source syncs on FLUSH (8.1+, decoded as
a 10.0 stream), none means every EOS syncs (7.2).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine import errors, threads, wire
from engine.batch import engine_version
from engine.config import Config
from engine.net.migration import ReceivedRound, ReceiveReport
from engine.net.transport import Address, Listener, TcpSource
from engine.qemu.errors import BadMainChannel, SourceFailed
from engine.qemu.main_channel import (QEVM_MAGIC, Blocks, Device, MainChannelReader, StreamEnd,
                                      SyncPoint, ZeroPages)
from engine.ram import RamBlock
from engine.workloads.images import load_image
from engine.receiver import ChannelReader, Receiver
from engine.report.run import NORMAL, QUIET
from engine.report.schema import machine_facts
from workers import codec

MAX_BLOCKS = 64


@dataclass
class QemuReceiveResult:
    """What a real QEMU source sent, and the verdict against ``--image``."""

    report: ReceiveReport
    machine: str = ""
    sync_marker: str = ""            # "flush" (8.1+) or "eos" (7.2)
    devices: list[str] = field(default_factory=list)
    zero_records: int = 0
    main_channel_bytes: int = 0
    mismatched_pages: int | None = None      # None: no image to compare with
    first_mismatch_offsets: list[int] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.mismatched_pages in (None, 0)

    def verdict(self) -> str:
        if self.mismatched_pages is None:
            return f"received; RAM written to {self.output}" if self.output else "received"
        if self.mismatched_pages == 0:
            return "verify: every page equals the image"
        return (f"verify: FAILED, {self.mismatched_pages} pages differ from the image "
                f"(first at offsets {self.first_mismatch_offsets})")

    def format_text(self, verbosity: int = NORMAL) -> str:
        if verbosity <= QUIET:
            return self.verdict()
        text = self.report.format_text(verbosity).rsplit("\n", 1)[0]
        return "\n".join([
            text,
            f"main channel    {self.main_channel_bytes} bytes: machine {self.machine!r}, "
            f"{len(self.report.rounds)} sync points ({self.sync_marker}), "
            f"{self.zero_records} ZERO records, devices {', '.join(self.devices) or 'none'}",
            self.verdict()])

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out["qemu_source"] = {k: v for k, v in self.__dict__.items() if k != "report"}
        return out


def receive_from_qemu(config: Config, listen: Address | str, *, image: str | None = None,
                      output: str | None = None,
                      on_listening: Callable[[Address], None] | None = None) -> QemuReceiveResult:
    """Receive one migration from a real QEMU source on ``listen``."""
    address = listen if isinstance(listen, Address) else Address.parse(listen)
    t, m = config.transport, config.migration
    with ExitStack() as stack:
        expected = stack.enter_context(load_image(image, name="image",
                                                  page_size=m.page_size)) if image else None
        listener = Listener(address)
        stack.callback(listener.close)
        if on_listening is not None:
            on_listening(listener.address)
        main, channels, peer = _accept_all(listener, m.channel_count, t, stack)
        listener.close()
        session = _Session(config, main, channels, peer, stack)
        result = session.run()
        block = session.blocks[0]
        if expected is not None:
            if expected.size != block.size:
                raise errors.VerifyError(f"the image is {expected.size} bytes, the source's RAM "
                                         f"block {block.name!r} {block.size}")
            count, first = codec.compare_pages(expected.buf, block.buf, m.page_size, 8)
            result.mismatched_pages = count
            result.first_mismatch_offsets = [int(i) * m.page_size for i in first]
        if output:
            Path(output).write_bytes(block.buf)
            result.output = str(output)
        result.report.digests_match = None if expected is None else result.mismatched_pages == 0
        return result


def _accept_all(listener: Listener, count: int, t: Any, stack: ExitStack
                ) -> tuple[socket.socket, list[TcpSource], str]:
    """The main connection and ``count`` channels, told apart by their magic."""
    main, channels, peer = None, [], ""
    deadline = None
    while main is None or len(channels) < count:
        if deadline is None:
            timeout, what = t.accept_timeout, "QEMU source"
        else:
            timeout, what = max(deadline - time.monotonic(), 0.001), (
                f"multifd channel ({len(channels)} of {count} connected; is the source's "
                f"multifd-channels {count}?)" if main is not None else "main channel")
        sock, addr = listener.accept(timeout=timeout, stall_timeout=t.stall_timeout, what=what)
        stack.callback(sock.close)
        deadline = deadline or time.monotonic() + t.connect_timeout
        magic = _peek_magic(sock, addr)
        if magic == QEVM_MAGIC and main is None:
            main, peer = sock, addr
        elif magic == wire.MULTIFD_MAGIC:
            channels.append(TcpSource(sock, len(channels), peer=addr))
        else:
            raise BadMainChannel("a connection that is neither a main channel nor a multifd "
                                 "channel (or a second main channel)", field="magic",
                                 got=hex(magic), expected=f"{QEVM_MAGIC:#x} once, then "
                                 f"{wire.MULTIFD_MAGIC:#x}")
        if len(channels) > count:
            raise errors.BadInitPacket(f"more multifd channels than the configured {count}",
                                       field="connections", got=len(channels), expected=count)
    return main, channels, peer


def _peek_magic(sock: socket.socket, peer: str) -> int:
    data = b""
    while len(data) < 4:
        try:
            data = sock.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
        except (TimeoutError, socket.timeout):
            raise errors.ChannelStalled(f"the source ({peer}) sent no magic",
                                        side="read", seconds=sock.gettimeout()) from None
        if not data:
            raise errors.PeerClosed("closed before its first bytes", peer=peer)
    return struct.unpack(">I", data[:4])[0]


class _MainSource:
    """The main socket as a ``readinto`` source; a stall or a reset names the main channel."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self._sock = sock
        self._peer = peer

    def readinto(self, view: memoryview) -> int:
        view = memoryview(view).cast("B")
        got = 0
        while got < len(view):
            try:
                n = self._sock.recv_into(view[got:])
            except (TimeoutError, socket.timeout):
                raise SourceFailed(f"the main channel sent nothing for "
                                   f"{self._sock.gettimeout():g} s", peer=self._peer) from None
            except OSError as exc:
                raise SourceFailed(f"main channel: {exc.strerror or exc}", peer=self._peer) from None
            if n == 0:
                break
            got += n
        return got


class _ChannelThread:
    """Reads one channel up to each SYNC, then waits for the main stream's release."""

    def __init__(self, reader: ChannelReader) -> None:
        self.reader = reader
        self.arrived = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.packets = 0
        self.ended = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"mfd-qemu-recv-{reader.channel}")

    def _run(self) -> None:
        try:
            while True:
                info = self.reader.next_packet()
                if info is None:
                    self.ended = True
                    return
                self.packets += 1
                if info.is_sync:
                    self.arrived.release()
                    self.release.acquire()
                    if self.error is not None:
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.arrived.release()   # wakes a main thread waiting at a barrier

    def wait(self, timeout: float, point: int) -> None:
        if not self.arrived.acquire(timeout=timeout):
            raise errors.BarrierError(f"no SYNC for sync point {point} within {timeout:g} s",
                                      channel=self.reader.channel, field="sync")
        if self.error is not None:
            raise self.error
        if self.ended:
            raise errors.BarrierError(f"channel ended before the SYNC of sync point {point}",
                                      channel=self.reader.channel, field="sync")


class _Session:
    def __init__(self, config: Config, main: socket.socket, channels: list[TcpSource], peer: str,
                 stack: ExitStack) -> None:
        self.config = config
        self.stack = stack
        self.peer = peer
        self.sources = channels
        self.main = MainChannelReader(_MainSource(main, peer), page_size=config.migration.page_size)
        self.blocks: list[RamBlock] = []
        self.threads: list[_ChannelThread] = []
        self.receiver: Receiver | None = None

    def run(self) -> QemuReceiveResult:
        m = self.config.migration
        report = ReceiveReport(engine_version(), self.peer, m.method, m.page_size, len(self.sources),
                               "?", [], config=self.config.as_dict(), machine=machine_facts())
        result = QemuReceiveResult(report)
        started = time.perf_counter()
        try:
            for event in self.main.events():
                if isinstance(event, Blocks):
                    self._create_blocks(event, report)
                elif isinstance(event, ZeroPages):
                    codec.clear_pages(self._block(event.block).buf, m.page_size, event.pages)
                    result.zero_records += len(event.pages)
                elif isinstance(event, SyncPoint):
                    self._barrier(event, report, started)
                    result.sync_marker = event.marker
                    started = time.perf_counter()
                elif isinstance(event, Device):
                    result.devices.append(event.name)
                elif isinstance(event, StreamEnd):
                    self._finish()
        finally:
            self._stop()
        result.machine = self.main.machine
        result.main_channel_bytes = self.main.r.offset
        if self.receiver is not None:
            report.receive_channels = self.receiver.counters()
        return result

    def _create_blocks(self, event: Blocks, report: ReceiveReport) -> None:
        if not 1 <= len(event.blocks) <= MAX_BLOCKS:
            raise BadMainChannel(f"{len(event.blocks)} RAM blocks (1..{MAX_BLOCKS} taken)")
        page_size = self.config.migration.page_size
        self.blocks = [self.stack.enter_context(RamBlock.create(name, size, page_size))
                       for name, size in event.blocks]
        report.blocks = list(event.blocks)

    def _block(self, name: str) -> RamBlock:
        return next(b for b in self.blocks if b.name == name)

    def _start_channels(self, marker: str, report: ReceiveReport) -> None:
        m = self.config.migration
        compat = wire.Compat((10, 0) if marker == "flush" else (7, 2))
        report.qemu_version = str(compat)
        self.receiver = self.stack.enter_context(Receiver(
            self.blocks, self.sources, method=m.method, page_size=m.page_size, compat=compat,
            uuid=None, jobs=m.jobs, copy_pages=m.copy_pages))
        self.receiver.start()
        self.threads = [_ChannelThread(r) for r in self.receiver.readers]
        for thread in self.threads:
            threads.start(thread.thread)

    def _barrier(self, event: SyncPoint, report: ReceiveReport, started: float) -> None:
        if not self.blocks:
            raise BadMainChannel("a sync point before the RAM block list")
        if self.receiver is None:
            self._start_channels(event.marker, report)
        point = len(report.rounds)
        before = sum(t.packets for t in self.threads)
        for thread in self.threads:
            thread.wait(self.config.transport.stall_timeout, point)
        packets = sum(t.packets for t in self.threads) - before
        for thread in self.threads:
            thread.release.release()
        report.rounds.append(ReceivedRound(point, 0, packets, time.perf_counter() - started))

    def _finish(self) -> None:
        """The source closes its channels after EOF; wait (bounded) for every thread."""
        deadline = time.monotonic() + self.config.transport.stall_timeout
        for thread in self.threads:
            thread.thread.join(max(deadline - time.monotonic(), 0.001))
            if thread.error is not None:
                raise thread.error

    def _stop(self) -> None:
        for thread in self.threads:
            if thread.thread.is_alive():
                thread.error = thread.error or errors.BarrierError("stopped", field="sync")
                thread.release.release()
        for source in self.sources:
            source.close()
        for thread in self.threads:
            thread.thread.join(2.0)
