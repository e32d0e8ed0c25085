"""The engine as a source into real QEMU 7.2 and 10.0 destinations (not mocks).

Each test starts a real ``qemu-system-x86_64 -machine none`` whose RAM is a
file in /dev/shm, migrates the engine's RAM into it and compares that file
page for page with the engine's source RAM, then ``cont`` → ``running``.
Tests skip, saying why, where a QEMU build is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import numpy as np
import pytest

from engine import errors
from engine.batch import make_source_block
from engine.cli import main as cli_main
from engine.exit_codes import EXIT_PEER
from engine.config import Config
from engine.qemu.errors import DestinationFailed
from engine.qemu.source import qemu_config, send_to_qemu
from engine.workloads import PrecopyRounds
from qemu_peer import QemuPeer, require

MIB = 1 << 20
PAGE = 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_cfg(build, *, method="none", channels=2, rounds=1, size=16 * MIB, stall=10.0, **workload):
    return Config.from_dict({
        "run": {"rounds": rounds},
        "workload": {"size": size, "dirty_fraction": 0.1, **workload},
        "migration": {"method": method, "channels": channels, "qemu_version": build.qemu_version,
                      "accelerator": "software"},
        "transport": {"connect_timeout": 5.0, "stall_timeout": stall},
    })


def expected_ram(cfg: Config) -> bytes:
    """The source RAM after every round, rebuilt from the same seed."""
    cfg = qemu_config(cfg)
    with make_source_block(cfg) as block:
        w = cfg.workload
        rounds = PrecopyRounds(block, seed=w.seed, dirty_fraction=w.dirty_fraction,
                               hot_fraction=w.hot_fraction, hot_share=w.hot_share, mix=w.mix)
        for index in range(cfg.run.rounds):
            rounds.batch(index)
        return bytes(block.buf)


def differing_pages(a: bytes, b: bytes) -> int:
    x = np.frombuffer(a, dtype=np.uint8).reshape(-1, PAGE)
    y = np.frombuffer(b, dtype=np.uint8).reshape(-1, PAGE)
    return int((x != y).any(axis=1).sum())


def migrate(dst: QemuPeer, cfg: Config, **kwargs):
    dst.release_qmp()       # QEMU serves one QMP client at a time: the engine's now
    try:
        return send_to_qemu(cfg, f"127.0.0.1:{free_port()}", qmp_path=dst.qmp_path, **kwargs)
    finally:
        if dst.process.poll() is None:
            dst.reconnect_qmp()


CASES = [
    ("7.2", "none", 1, 1), ("7.2", "zlib", 3, 4), ("7.2", "zstd", 2, 1),
    ("10.0", "none", 2, 4), ("10.0", "zstd", 4, 1), ("10.0", "zlib", 1, 4),
    ("10.0-qpl", "qpl", 2, 4),
]


@pytest.mark.parametrize("peer,method,channels,rounds", CASES)
def test_engine_into_real_qemu(peer, method, channels, rounds):
    build = require(peer)
    cfg = qemu_cfg(build, method=method, channels=channels, rounds=rounds)
    with QemuPeer(build, 16 * MIB) as dst:
        result = migrate(dst, cfg)
        assert result.destination.status == "completed", dst.log()
        assert result.destination.sync_points == rounds + 1
        assert differing_pages(dst.ram(), expected_ram(cfg)) == 0
        assert result.verified is True and result.destination.ram_file == str(dst.ram_path)
        dst.qmp.execute("cont")
        assert dst.qmp.execute("query-status")["status"] == "running"
    sync = [c["sync_packets"] for c in result.report.send_channels]
    assert sync == [rounds + 1] * channels      # one per sync point, on every channel
    if peer == "7.2" and rounds == 1:           # zero pages as ZERO records, not in packets
        ram = np.frombuffer(expected_ram(cfg), dtype=np.uint8).reshape(-1, PAGE)
        zero = int((~ram.any(axis=1)).sum())
        assert zero > 0
        sent = sum(c["normal_pages"] + c["zero_pages"] for c in result.report.send_channels)
        assert sent == len(ram) - zero
        assert result.destination.main_channel_bytes > 9 * zero


# ------------------------------------------------------------ negative cases

def failure(dst: QemuPeer, cfg: Config, seconds: float, **kwargs) -> str:
    started = time.monotonic()
    with pytest.raises(errors.TransportError) as caught:
        migrate(dst, cfg, **kwargs)
    assert time.monotonic() - started < seconds
    return str(caught.value)


@pytest.mark.parametrize("peer", ["7.2", "10.0"])
def test_block_size_mismatch_is_named(peer):
    build = require(peer)
    with QemuPeer(build, 32 * MIB) as dst:
        message = failure(dst, qemu_cfg(build, stall=3.0), 20)
        assert "'mem' is 33554432 bytes there, 16777216 here" in message
        assert dst.exit_code() == 1 and "ize mismatch" in dst.log()


def test_machine_type_mismatch_is_named():
    build = require("7.2")      # Debian's 7.2 has the firmware a pc machine loads
    with QemuPeer(build, 16 * MIB, machine="pc") as dst:
        message = failure(dst, qemu_cfg(build, stall=3.0), 20)
        assert "machine type is 'pc-i440fx-7.2'" in message
        assert dst.exit_code() == 1 and "Machine type received is 'none'" in dst.log()


def test_block_name_mismatch_is_named():
    build = require("10.0")
    with QemuPeer(build, 16 * MIB) as dst:
        message = failure(dst, qemu_cfg(build, stall=3.0, block="ram0"), 20)
        assert "no RAM block 'ram0'" in message and "['mem']" in message
        assert dst.exit_code() == 1 and 'Unknown ramblock "ram0"' in dst.log()


@pytest.mark.parametrize("peer", ["7.2", "10.0"])
def test_uuid_mismatch_is_named(peer):
    build = require(peer)
    with QemuPeer(build, 16 * MIB) as dst:
        other = uuid.uuid4()
        message = failure(dst, qemu_cfg(build, stall=3.0), 20, uuid=other.bytes)
        assert "UUID is 00000000-0000-0000-0000-000000000000" in message
        if peer == "10.0":
            assert dst.exit_code() == 1
        assert f"received uuid '{other}'" in dst.log()    # 7.2 logs it and stays inmigrate
        assert str(other) in message


def incoming(dst: QemuPeer, **params) -> int:
    """Set the destination up as a test wants it (not as the engine would); its port."""
    dst.qmp.execute("migrate-set-capabilities",
                    capabilities=[{"capability": "multifd", "state": True}])
    dst.qmp.execute("migrate-set-parameters", **params)
    port = free_port()
    dst.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    dst.release_qmp()
    return port


def test_method_mismatch_is_named():
    build = require("10.0")
    with QemuPeer(build, 16 * MIB) as dst:
        port = incoming(dst, **{"multifd-channels": 2, "multifd-compression": "zlib"})
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as caught:
            send_to_qemu(qemu_cfg(build, method="zstd", stall=3.0), f"127.0.0.1:{port}",
                         qmp_path=dst.qmp_path, configure_destination=False)
        assert time.monotonic() - started < 20
        assert dst.exit_code() == 1 and "flags received 4 flags expected 2" in dst.log()
    assert "multifd-compression is 'zlib', the engine sends 'zstd'" in str(caught.value)


def test_channel_count_mismatch_is_named():
    build = require("10.0")
    with QemuPeer(build, 16 * MIB) as dst:
        port = incoming(dst, **{"multifd-channels": 2})
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as caught:
            send_to_qemu(qemu_cfg(build, channels=3, stall=3.0), f"127.0.0.1:{port}",
                         qmp_path=dst.qmp_path, configure_destination=False)
        assert time.monotonic() - started < 20
        assert dst.exit_code() == 1 and "Extra incoming migration connection" in dst.log()
    assert "expects 2 channels, the engine opened 3" in str(caught.value)


def test_destination_killed_mid_migration_fails_cleanly(no_shm_leak):
    """Killed while pages flow: a TransportError (the CLI's exit 5), nothing left behind."""
    build = require("10.0")
    cfg = qemu_cfg(build, method="zstd", channels=2, rounds=2, size=32 * MIB, stall=5.0)
    with QemuPeer(build, 32 * MIB) as dst:
        pid = dst.process.pid

        def kill_on_packet(round_index, done, total):
            if round_index == 0 and done == 8:
                os.kill(pid, 9)

        started = time.monotonic()
        with pytest.raises(errors.TransportError) as caught:
            _send_killed(dst, cfg, kill_on_packet)
        assert time.monotonic() - started < 20
        assert dst.exit_code() == -9
    assert isinstance(caught.value, DestinationFailed) and "destination" in str(caught.value)
    assert not workers_alive()


def test_destination_that_stops_reading_is_named_in_time(no_shm_leak):
    """SIGSTOPped mid-migration: no byte taken for stall_timeout, a named error, no hang."""
    build = require("10.0")
    cfg = qemu_cfg(build, method="none", channels=2, size=32 * MIB, stall=2.0)
    with QemuPeer(build, 32 * MIB) as dst:
        pid = dst.process.pid

        def stop_on_packet(round_index, done, total):
            if round_index == 0 and done == 4:
                os.kill(pid, signal.SIGSTOP)

        started = time.monotonic()
        try:
            with pytest.raises(DestinationFailed) as caught:
                _send_killed(dst, cfg, stop_on_packet)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert time.monotonic() - started < 20
    assert "stopped taking bytes" in str(caught.value)
    assert not workers_alive()


def _send_killed(dst: QemuPeer, cfg: Config, progress) -> None:
    dst.release_qmp()
    send_to_qemu(cfg, f"127.0.0.1:{free_port()}", qmp_path=dst.qmp_path, progress=progress)


def test_cli_exit_5_when_no_destination_listens(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[workload]\nsize = "1MiB"\n[migration]\nchannels = 1\nmethod = "none"\n'
                      '[transport]\nconnect_timeout = 0.5\n')
    assert cli_main(["send", "--qemu", f"127.0.0.1:{free_port()}", "-q", str(config)]) == EXIT_PEER
    err = capsys.readouterr().err
    assert "destination QEMU" in err and "Traceback" not in err


def workers_alive() -> list[int]:
    """Our worker processes still running (multiprocess's resource tracker is not one)."""
    alive = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _parent(int(name)) == os.getpid():
            try:
                cmdline = open(f"/proc/{name}/cmdline", "rb").read()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                alive.append(int(name))
    return alive


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_cli_one_command_into_a_real_qemu(tmp_path, capsys):
    """The walk-through's command: exit 0, the destination's verdict, its RAM equal."""
    build = require("10.0")
    config = tmp_path / "qemu.toml"
    config.write_text('[run]\nrounds = 2\n[workload]\nsize = "16MiB"\n'
                      '[migration]\nmethod = "zstd"\nchannels = 2\nqemu_version = "10.0"\n'
                      'accelerator = "software"\n')
    with QemuPeer(build, 16 * MIB) as dst:
        dst.release_qmp()
        code = cli_main(["send", "--qemu", f"127.0.0.1:{free_port()}", "--qmp", dst.qmp_path,
                         "-q", str(config)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.startswith("destination QEMU 10.0.") and "completed" in out
        assert f"every page of its RAM ({dst.ram_path}) equals the source's" in out
