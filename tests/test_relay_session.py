"""Two relay sessions between a scripted QEMU source and destination (no QEMU needed).

The "source" connects a main channel and two multifd channels to relay A;
relay A sends zstd to relay B; relay B connects to the "destination",
which records what arrives.  Main channel bytes must arrive unchanged both
ways, multifd channels byte for byte; a bad packet must reset the
destination's connections and fail both relays.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from engine import errors, wire
from engine.config import Config
from engine.relay.session import RelaySession
from engine.report.schema import load_report
from engine.report.table import format_details
from test_relay_translator import stream_10

pytestmark = pytest.mark.usefixtures("no_shm_leak")

MAIN = b"QEVM" + bytes(range(256)) * 40     # opaque to the relay
BACK = b"return path bytes"


def relay_config(incoming: str, outgoing: str) -> Config:
    return Config.from_dict({
        "migration": {"qemu_version": "10.0", "method": "none"},
        "relay": {"incoming_method": incoming, "outgoing_method": outgoing, "channels": 2},
        "transport": {"stall_timeout": 5.0, "accept_timeout": 20.0, "connect_timeout": 5.0}})


class Destination:
    """Accepts a main channel and two multifd channels, keeps every byte (or the error)."""

    def __init__(self, *, reads: bool = True) -> None:
        self.reads = reads      # False: takes the connections and never reads a byte
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conns = []
        try:
            while len(conns) < 3:
                conns.append(self.listener.accept()[0])
            conns[0].sendall(BACK)
            conns[0].shutdown(socket.SHUT_WR)
        except OSError as exc:      # a relay that failed early connects fewer
            self.errors.append(exc)
        if not self.reads:
            for conn in conns:
                conn.settimeout(30)
                try:
                    conn.recv(1, socket.MSG_PEEK)   # wait for the relay's reset or end
                    conn.recv(1 << 30, socket.MSG_PEEK | socket.MSG_TRUNC)
                except OSError as exc:
                    self.errors.append(exc)
            return
        readers = [threading.Thread(target=self._read, args=(c, i)) for i, c in enumerate(conns)]
        self.received = [b""] * 3
        for r in readers:
            r.start()
        for r in readers:
            r.join()

    def _read(self, conn: socket.socket, index: int) -> None:
        data = bytearray()
        conn.settimeout(30)
        try:
            while chunk := conn.recv(1 << 16):
                data += chunk
        except OSError as exc:
            self.errors.append(exc)
        self.received[index] = bytes(data)
        conn.close()

    def join(self) -> None:
        self._thread.join(60)
        self.listener.close()


def run_relay(session: RelaySession, outcome: dict, ready: threading.Event) -> None:
    def listening(address) -> None:
        outcome["address"] = str(address)
        ready.set()
    try:
        outcome["report"] = session.run(listening)
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        outcome["error"] = exc
        ready.set()


def start_relay(incoming: str, outgoing: str, to: str) -> tuple[dict, threading.Thread]:
    outcome: dict = {}
    ready = threading.Event()
    session = RelaySession(relay_config(incoming, outgoing), "127.0.0.1:0", to)
    thread = threading.Thread(target=run_relay, args=(session, outcome, ready), daemon=True)
    thread.start()
    assert ready.wait(30)
    return outcome, thread


def migrate(channels: list[bytes], destination: Destination | None = None
            ) -> tuple[Destination, dict, dict, bytes]:
    destination = destination or Destination()
    b, b_thread = start_relay("zstd", "none", destination.address)
    a, a_thread = start_relay("none", "zstd", b["address"])
    host, port = a["address"].rsplit(":", 1)
    main = socket.create_connection((host, int(port)))
    main.sendall(MAIN)
    sockets = [socket.create_connection((host, int(port))) for _ in channels]
    for sock, data in zip(sockets, channels):
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass        # the relay gave up already
    back = bytearray()
    try:
        main.shutdown(socket.SHUT_WR)
    except OSError:
        pass            # reset by a relay that gave up
    main.settimeout(30)
    try:
        while chunk := main.recv(1 << 16):
            back += chunk
    except OSError:
        pass
    for sock in [main, *sockets]:
        sock.close()
    a_thread.join(60)
    b_thread.join(60)
    destination.join()
    return destination, a, b, bytes(back)


def channel_stream(channel_id: int) -> bytes:
    data = bytearray(stream_10())
    data[24] = channel_id
    return bytes(data)


def test_main_channel_both_ways_and_channels_byte_for_byte(tmp_path):
    channels = [channel_stream(0), channel_stream(1)]
    destination, a, b, back = migrate(channels)
    assert "error" not in a and "error" not in b, (a.get("error"), b.get("error"))
    assert destination.received[0] == MAIN
    assert back == BACK
    assert sorted(destination.received[1:]) == sorted(channels)
    report = a["report"]
    assert [c.channel for c in report.channels] == [0, 1]
    assert report.main_forward == len(MAIN) and report.main_back == len(BACK)
    assert report.bytes_in == sum(map(len, channels))
    assert 0 < report.bytes_out < report.bytes_in
    assert b["report"].bytes_out == report.bytes_in
    # the JSON report is one of ours, and `report` reads it
    report.write_json(tmp_path / "relay.json", relay_config("none", "zstd").as_dict())
    data = load_report(tmp_path / "relay.json")
    assert data["kind"] == "relay" and data["totals"]["bytes_in"] == report.bytes_in
    assert "relay none -> zstd, 2 ch" in format_details(data, "relay.json")


def test_a_bad_packet_resets_the_destination_and_fails_both_relays():
    bad = bytearray(channel_stream(1))
    bad[64 + 1344 + 8] = 0x7F                 # flags of the page packet: every bit
    destination, a, b, _ = migrate([channel_stream(0), bytes(bad)])
    assert isinstance(a.get("error"), errors.BadFlags), a
    assert a["error"].channel == 1 and a["error"].field == "flags"
    assert isinstance(b.get("error"), (errors.TransportError, errors.WireError)), b
    assert any(isinstance(e, ConnectionResetError) for e in destination.errors), destination.errors


def random_pages_stream(channel_id: int, packets: int) -> bytes:
    """A 10.0 none channel of incompressible pages (so nothing shrinks on the way)."""
    rng = np.random.default_rng(channel_id)
    data = bytearray(wire.InitPacket(bytes(16), channel_id).encode())
    data += wire.encode_sync(page_size=4096, packet_num=0)
    for n in range(packets):
        pages = np.arange(n * 128, (n + 1) * 128, dtype=np.uint64)
        data += wire.encode_header(page_size=4096, flags=0, packet_num=n + 1, ramblock="mem",
                                   normal_pages=128, zero_pages=0, next_packet_size=128 * 4096,
                                   pages=pages)
        data += rng.integers(0, 256, 128 * 4096, dtype=np.uint8).tobytes()
    return bytes(data + wire.encode_sync(page_size=4096, packet_num=packets + 1))


def test_a_destination_that_stops_reading_fails_both_relays_in_time():
    # 32 MiB a channel: more than the socket buffers between relay B and the destination
    channels = [random_pages_stream(0, 64), random_pages_stream(1, 64)]
    started = time.monotonic()
    _, a, b, _ = migrate(channels, Destination(reads=False))
    assert isinstance(b.get("error"), errors.ChannelStalled), b
    assert isinstance(a.get("error"), (errors.TransportError, errors.ChannelStalled)), a
    assert time.monotonic() - started < 30
