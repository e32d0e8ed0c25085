"""Real QEMU 7.2 and 10.0 sources into the engine, and the main channel itself.

The source is a real paused ``-machine none`` QEMU whose RAM file holds a
seeded image (some pages zero); the engine receives on loopback and
compares every page with the image.  The main-channel tests need no QEMU.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading

import numpy as np
import pytest

from engine import errors, wire
from engine.channels import MemoryChannel
from engine.cli import main as cli_main
from engine.config import Config
from engine.qemu.destination import receive_from_qemu
from engine.qemu.errors import BadMainChannel
from engine.qemu.main_channel import (Blocks, Device, MainChannelReader, MainChannelWriter,
                                      StreamEnd, SyncPoint, ZeroPages)
from qemu_peer import QemuPeer, require

MIB = 1 << 20
PAGE = 4096


def guest_image(seed: int, size: int = 16 * MIB) -> bytes:
    """Pages of a few byte values (they compress), a third of them zero."""
    rng = np.random.default_rng(seed)
    pages = size // PAGE
    ram = np.zeros((pages, PAGE), dtype=np.uint8)
    filled = rng.choice(pages, pages * 2 // 3, replace=False)
    ram[filled] = rng.integers(0, 8, (filled.size, PAGE), dtype=np.uint8)
    return ram.tobytes()


class Receiving:
    """``receive_from_qemu`` in a thread; its result or error."""

    def __init__(self, cfg: Config, **kwargs) -> None:
        self._address: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=(cfg, kwargs), daemon=True).start()
        self.address = self._address.get(timeout=10)

    def _run(self, cfg: Config, kwargs: dict) -> None:
        try:
            self._out.put(receive_from_qemu(cfg, "127.0.0.1:0", on_listening=self._address.put,
                                            **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._out.put(exc)

    def result(self, timeout: float = 30):
        return self._out.get(timeout=timeout)


def recv_cfg(method: str, channels: int, stall: float = 10.0) -> Config:
    return Config.from_dict({
        "migration": {"method": method, "channels": channels, "accelerator": "software"},
        "transport": {"connect_timeout": 5.0, "accept_timeout": 10.0, "stall_timeout": stall}})


def migrate_from(src: QemuPeer, address, method: str, channels: int) -> dict:
    src.qmp.execute("migrate-set-capabilities",
                    capabilities=[{"capability": "multifd", "state": True}])
    src.qmp.execute("migrate-set-parameters", **{"multifd-channels": channels,
                                                "multifd-compression": method})
    src.qmp.execute("migrate", uri=f"tcp:{address}")
    return src.wait_status({"completed", "failed"}, 20)


CASES = [("7.2", "none", 1), ("7.2", "zlib", 4), ("7.2", "zstd", 2),
         ("10.0", "none", 3), ("10.0", "zstd", 2), ("10.0", "zlib", 1),
         ("10.0-qpl", "qpl", 3)]


@pytest.mark.parametrize("peer,method,channels", CASES)
def test_real_qemu_into_engine(tmp_path, peer, method, channels):
    build = require(peer)
    ram = guest_image(channels)
    image = tmp_path / "guest.raw"
    image.write_bytes(ram)
    rx = Receiving(recv_cfg(method, channels), image=str(image))
    with QemuPeer(build, len(ram), incoming=False, ram=ram) as src:
        info = migrate_from(src, rx.address, method, channels)
        result = rx.result()
    assert not isinstance(result, BaseException), result
    assert info["status"] == "completed"
    assert result.mismatched_pages == 0
    assert result.machine == "none" and result.devices == ["timer", "globalstate"]
    assert result.sync_marker == ("eos" if peer == "7.2" else "flush")
    pages = np.frombuffer(ram, dtype=np.uint8).reshape(-1, PAGE)
    zero_pages = int((~pages.any(axis=1)).sum())
    if peer == "7.2":      # zero pages on the main channel, none in the packets
        assert result.zero_records == zero_pages
        assert sum(c["zero_pages"] for c in result.report.receive_channels) == 0
    else:
        assert result.zero_records == 0
    syncs = [c["sync_packets"] for c in result.report.receive_channels]
    assert syncs == [len(result.report.rounds)] * channels


def test_cli_writes_the_received_ram(tmp_path):
    build = require("10.0")
    ram = guest_image(7)
    out = tmp_path / "received.raw"
    config = tmp_path / "c.toml"
    config.write_text('[migration]\nmethod = "zstd"\nchannels = 2\naccelerator = "software"\n'
                      '[transport]\naccept_timeout = 10.0\nstall_timeout = 10.0\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    codes: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: codes.put(cli_main(
        ["recv", "--qemu", "--listen", f"127.0.0.1:{port}", "--output", str(out), "-q",
         str(config)])), daemon=True).start()
    with QemuPeer(build, len(ram), incoming=False, ram=ram) as src:
        assert migrate_from(src, f"127.0.0.1:{port}", "zstd", 2)["status"] == "completed"
        assert codes.get(timeout=30) == 0
    assert out.read_bytes() == ram


def test_method_mismatch_is_a_clear_error():
    build = require("10.0")
    ram = guest_image(3)
    rx = Receiving(recv_cfg("zlib", 2, stall=10.0))
    with QemuPeer(build, len(ram), incoming=False, ram=ram) as src:
        migrate_from(src, rx.address, "zstd", 2)   # a source without return path may still say completed
        result = rx.result()
    assert isinstance(result, errors.BadFlags), result
    assert "compression bits differ from the method" in str(result)


# ------------------------------------------------ the main channel, no QEMU

def written(compat: str, zero: dict | None = None, rounds: int = 2) -> tuple[bytes, int]:
    out, syncs = bytearray(), []
    writer = MainChannelWriter(out.extend, lambda: syncs.append(len(out)),
                               compat=wire.Compat.parse(compat), blocks=[("mem", 64 * PAGE)],
                               page_size=PAGE)
    writer.start()
    for _ in range(rounds - 1):
        writer.part(zero)
    writer.end(zero)
    assert writer.sync_points == len(syncs) == rounds + 1
    return bytes(out), writer.sync_points


def events(data: bytes) -> list:
    channel = MemoryChannel(0)
    channel.write(data)
    return list(MainChannelReader(channel, page_size=PAGE).events())


@pytest.mark.parametrize("compat,marker", [("7.2", "eos"), ("10.0", "flush")])
def test_written_main_channel_reads_back(compat, marker):
    zero = {"mem": np.array([3, 1, 40], dtype=np.uint64)} if compat == "7.2" else None
    data, points = written(compat, zero, rounds=3)
    got = events(data)
    assert got[0] == Blocks("none", [("mem", 64 * PAGE)])
    assert [e.marker for e in got if isinstance(e, SyncPoint)] == [marker] * points
    assert [e.name for e in got if isinstance(e, Device)] == ["timer", "globalstate"]
    assert isinstance(got[-1], StreamEnd) and got[-1].vmdesc_bytes > 0
    zeros = [e.pages.tolist() for e in got if isinstance(e, ZeroPages)]
    assert zeros == ([[1, 3, 40]] * 3 if zero else [])


def test_10_0_sends_switchover_start_and_flush_records():
    data, _ = written("10.0")
    assert struct.pack(">BHH", 0x08, 11, 0) in data
    flush_then_eos = struct.pack(">QQB", 0x200, 0x10, 0x7E)
    assert data.count(flush_then_eos) == 3
    seven, _ = written("7.2")
    assert flush_then_eos not in seven and seven.count(struct.pack(">QB", 0x10, 0x7E)) == 3


def test_zero_records_are_refused_for_a_9_0_peer():
    with pytest.raises(ValueError, match="zero pages in the packets"):
        written("10.0", {"mem": np.array([1], dtype=np.uint64)})


def test_unknown_device_section_is_named():
    data, _ = written("7.2")
    data = data.replace(b"\x05timer", b"\x05tiMer")
    with pytest.raises(BadMainChannel, match="device section 'tiMer'"):
        events(data)


@pytest.mark.parametrize("cut", [3, 20, 60])
def test_truncated_main_channel_is_bad_input(cut):
    data, _ = written("10.0")
    with pytest.raises(BadMainChannel, match="ended inside"):
        events(data[:cut])


def test_zero_record_outside_its_block_is_refused():
    data, _ = written("7.2", {"mem": np.array([64], dtype=np.uint64)}, rounds=1)
    with pytest.raises(BadMainChannel, match="outside its block"):
        events(data)


# ------------------------------- the writer against a real source's bytes

def record_main_channel(build, ram: bytes) -> bytes:
    """What a real paused -machine none source writes on its main channel."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    streams: list[bytearray] = []
    done = threading.Event()

    def drain(conn: socket.socket, into: bytearray) -> None:
        with conn:
            conn.settimeout(10)
            while data := conn.recv(1 << 20):
                into += data

    def accept() -> None:
        readers = []
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, socket.timeout):
                continue
            streams.append(bytearray())
            readers.append(threading.Thread(target=drain, args=(conn, streams[-1])))
            readers[-1].start()
        for reader in readers:
            reader.join(10)

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    with QemuPeer(build, len(ram), incoming=False, ram=ram) as src:
        info = migrate_from(src, f"127.0.0.1:{server.getsockname()[1]}", "none", 1)
    done.set()
    acceptor.join(20)
    server.close()
    assert info["status"] == "completed"
    return next(bytes(s) for s in streams if s[:4] == b"QEVM")


@pytest.mark.parametrize("peer", ["7.2", "10.0"])
def test_writer_writes_what_a_real_source_writes(peer):
    """Header, START, ZERO records, device sections and EOF: byte for byte as QEMU's."""
    build = require(peer)
    ram = guest_image(5, size=4 * MIB)
    real = record_main_channel(build, ram)
    pages = np.frombuffer(ram, dtype=np.uint8).reshape(-1, PAGE)
    zero = np.flatnonzero(~pages.any(axis=1)).astype(np.uint64)
    ours = bytearray()
    writer = MainChannelWriter(ours.extend, lambda: None, compat=wire.Compat.parse(peer),
                               blocks=[("mem", len(ram))], page_size=PAGE, runstate="prelaunch")
    writer.start()
    start_end = len(ours) - 13 - (8 if writer.rule.flush_records else 0)
    assert real[:start_end] == ours[:start_end]             # header, START, block list
    writer.end({"mem": zero} if peer == "7.2" else None)
    devices = ours.index(b"\x04\x00\x00\x00\x00\x05timer")
    tail = ours[devices:ours.index(b"\x06", devices + 150)]   # up to the VM description
    assert tail in real                                       # timer, globalstate, EOF
    got = [e.pages for e in events(real) if isinstance(e, ZeroPages)]
    assert np.array_equal(np.sort(np.concatenate(got)) if got else [], zero if peer == "7.2" else [])
