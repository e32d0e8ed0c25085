"""Real QEMU migrations through a pair of relays (``multifd-engine relay``).

    source QEMU ─none─► relay A ─wire method─► relay B ─none─► destination QEMU

Both QEMUs are ``-machine none`` with 32 MiB of RAM in /dev/shm (see
``qemu_peer``); every socket is on 127.0.0.1.  A migration must leave the
destination's RAM equal to the source's page for page and the guest
running after ``cont``; a relay that is killed, or that meets a corrupt
packet, must make both QEMUs fail promptly and leave nothing behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.qemu.errors import QmpError
from qemu_peer import QemuPeer, require

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32 << 20
PAGE = 4096
STALL = 5.0           # [transport] stall_timeout of the relays here
FAIL_WITHIN = 3 * STALL
NOTICE = 5.0          # how long a destination is given to report its failure


def guest_image() -> bytes:
    """Compressible pages, a run of zero pages and a few random ones."""
    rng = np.random.default_rng(12)
    image = rng.integers(0, 6, SIZE, dtype=np.uint8)
    image[: 2 << 20] = 0
    image[8 << 20: 9 << 20] = rng.integers(0, 256, 1 << 20, dtype=np.uint8)
    return image.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A ``multifd-engine relay`` process, started and always stopped by its PID."""

    def __init__(self, tmp: Path, name: str, version: str, incoming: str, outgoing: str,
                 to: str) -> None:
        config = tmp / f"{name}.toml"
        config.write_text(f'[migration]\nqemu_version = "{version}"\nmethod = "none"\n'
                          f'[relay]\nincoming_method = "{incoming}"\noutgoing_method = "{outgoing}"\n'
                          f'[transport]\nstall_timeout = {STALL}\naccept_timeout = 60.0\n')
        self.stderr_path = tmp / f"{name}.err"
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "relay", "--listen", "127.0.0.1:0",
                 "--to", to, str(config)], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            pytest.fail(f"relay {name} did not start: {line!r} {self.stderr()}")
        self.address = line.split()[-1]

    def children(self) -> list[int]:
        """PIDs of the worker processes (and anything else it started)."""
        out = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, ValueError):
                continue
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                out.append(int(entry.name))
        return out

    def wait(self, timeout: float) -> tuple[int | None, str, str]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, "", self.stderr()
        return self.process.returncode, out, self.stderr()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=10)


@pytest.fixture
def relays(tmp_path):
    started: list[Relay] = []

    def start(*args) -> Relay:
        started.append(Relay(tmp_path, f"relay{len(started)}", *args))
        return started[-1]

    yield start
    for relay in started:
        relay.stop()


def enable_multifd(peer: QemuPeer, **parameters) -> None:
    peer.qmp.execute("migrate-set-capabilities",
                     capabilities=[{"capability": "multifd", "state": True}])
    peer.qmp.execute("migrate-set-parameters", **{"multifd-channels": 2,
                                                  "multifd-compression": "none", **parameters})


def pair(build, relays, wire: str, **source_parameters):
    """Source and destination QEMU with the relay pair between them, the source migrating."""
    image = guest_image()
    source = QemuPeer(build, SIZE, incoming=False, ram=image)
    try:
        destination = QemuPeer(build, SIZE, incoming=True)
    except BaseException:
        source.close()
        raise
    try:
        enable_multifd(source, **source_parameters)
        enable_multifd(destination)
        port = free_port()
        destination.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        version = build.qemu_version
        b = relays(version, wire, "none", f"127.0.0.1:{port}")
        a = relays(version, "none", wire, b.address)
        source.qmp.execute("migrate", uri=f"tcp:{a.address}")
    except BaseException:
        source.close()
        destination.close()
        raise
    return image, source, destination, a, b


def destination_failed(peer: QemuPeer, timeout: float) -> str:
    """How the destination gave up: its exit or a failed status; '' if it did not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            return f"exited {peer.process.returncode}"
        try:
            if peer.qmp.execute("query-migrate", timeout=1.0).get("status") == "failed":
                return "failed"
        except QmpError:
            pass    # exiting
        time.sleep(0.1)
    return ""


def shm_of(pids) -> list[str]:
    prefixes = tuple(f"mfd-{pid}-" for pid in pids)
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefixes)]


@pytest.mark.parametrize(("version", "wire"), [("7.2", "zstd"), ("7.2", "qpl"),
                                               ("10.0", "qpl"), ("10.0", "zlib")])
def test_migration_through_two_relays(relays, version, wire):
    build = require(version)
    image, source, destination, a, b = pair(build, relays, wire)
    with source, destination:
        info = source.wait_status({"completed", "failed"}, timeout=60)
        assert info["status"] == "completed", (info, destination.log(), a.stderr(), b.stderr())
        code_a, out_a, err_a = a.wait(30)
        code_b, out_b, err_b = b.wait(30)
        assert (code_a, code_b) == (0, 0), (err_a, err_b)
        got = destination.ram()
        differ = [i for i in range(0, SIZE, PAGE) if got[i:i + PAGE] != image[i:i + PAGE]]
        assert differ == []
        destination.qmp.execute("cont")
        assert destination.qmp.execute("query-status")["status"] == "running"
    # the report: bytes in and out per channel, and the compression achieved
    assert f"(none -> {wire}, QEMU {version})" in out_a
    assert "bytes in" in out_a and out_a.count("\n") >= 4
    ratio = float(out_a.split("channels, ")[1].split("x")[0])
    assert ratio > 1.5


@pytest.mark.parametrize(("source_method", "destination_method"), [("none", "qpl"), ("qpl", "none")])
def test_one_relay_speaks_qemu_qpl(relays, source_method, destination_method):
    """The relay's qpl is QEMU's: a real multifd-qpl QEMU (10.0.13, QPL's
    software path) takes it, and sends what the relay decodes."""
    build = require("10.0-qpl")
    image = guest_image()
    with QemuPeer(build, SIZE, incoming=False, ram=image) as source, \
            QemuPeer(build, SIZE, incoming=True) as destination:
        enable_multifd(source, **{"multifd-compression": source_method})
        enable_multifd(destination, **{"multifd-compression": destination_method})
        port = free_port()
        destination.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        relay = relays("10.0", source_method, destination_method, f"127.0.0.1:{port}")
        source.qmp.execute("migrate", uri=f"tcp:{relay.address}")
        info = source.wait_status({"completed", "failed"}, timeout=60)
        assert info["status"] == "completed", (info, destination.log(), relay.stderr())
        code, out, err = relay.wait(30)
        assert code == 0, err
        assert f"({source_method} -> {destination_method}, QEMU 10.0)" in out
        assert destination.ram() == image
        destination.qmp.execute("cont")
        assert destination.qmp.execute("query-status")["status"] == "running"


@pytest.mark.parametrize(("version", "how"), [("10.0", signal.SIGTERM), ("7.2", signal.SIGKILL)],
                         ids=["10.0-SIGTERM", "7.2-SIGKILL"])
def test_relay_killed_mid_migration(relays, version, how):
    build = require(version)
    # 1 MiB/s: the 32 MiB take half a minute, so the kill lands mid-migration
    _, source, destination, a, b = pair(build, relays, "qpl", **{"max-bandwidth": 1 << 20})
    with source, destination:
        assert source.wait_status({"active"}, timeout=20)["status"] == "active"
        time.sleep(1.0)
        workers = a.children()
        assert workers, "the relay runs its workers as child processes"
        os.kill(a.process.pid, how)
        killed = time.monotonic()
        info = source.wait_status({"failed", "completed"}, timeout=FAIL_WITHIN)
        assert info["status"] == "failed", info
        code_a, _, err_a = a.wait(FAIL_WITHIN)
        code_b, _, err_b = b.wait(FAIL_WITHIN)
        assert code_a is not None and code_b is not None, (err_a, err_b)
        # the peer relay gave up too: its channels were reset or ended mid-round.
        # But a channel cut right after a SYNC (7.2 syncs at every RAM section)
        # looks like a clean end downstream; the peer then passes it on (exit 0)
        # and the destination QEMU, cut off mid-stream, is the one that fails.
        assert (code_b, err_b.split(":")[0]) in {(5, "connection failed"), (3, "bad input"),
                                                 (0, "")}, err_b
        if how == signal.SIGTERM:
            assert code_a == 130 and "interrupted" in err_a
        assert time.monotonic() - killed < FAIL_WITHIN
        # Every connection of the destination was reset.  A destination reading
        # its main channel then fails; one blocked at a multifd sync point
        # (7.2 and 10.0 alike, measured) does not notice, and QMP hangs with it:
        # it never completes, and only its management can stop it.
        outcome = destination_failed(destination, NOTICE)
        assert outcome or destination.process.poll() is None
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        left = shm_of([b.process.pid] + ([a.process.pid] if how == signal.SIGTERM else []))
        assert left == []
        # a SIGKILLed process cannot unlink its segments (`remove_stale_segments`
        # is for that); the test removes the killed relay's own
        for name in shm_of([a.process.pid]):
            Path("/dev/shm", name).unlink(missing_ok=True)


def test_corrupt_packet_between_the_relays(relays, tmp_path):
    build = require("10.0")
    image = guest_image()
    with QemuPeer(build, SIZE, incoming=False, ram=image) as source, \
            QemuPeer(build, SIZE, incoming=True) as destination, \
            CorruptingProxy(offset=64 + 1344) as proxy:    # the second packet's magic
        enable_multifd(source)
        enable_multifd(destination)
        port = free_port()
        destination.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        b = relays("10.0", "zstd", "none", f"127.0.0.1:{port}")
        proxy.start(b.address)
        a = relays("10.0", "none", "zstd", proxy.address)
        source.qmp.execute("migrate", uri=f"tcp:{a.address}")
        code_b, _, err_b = b.wait(FAIL_WITHIN)
        assert code_b == 3 and "bad input: BadMagic" in err_b, err_b
        assert "packet" in err_b and "field magic" in err_b
        code_a, _, err_a = a.wait(FAIL_WITHIN)
        assert code_a == 5, err_a
        # a precopy source without a return path completes once it has sent
        # everything; if it got that far before the reset came, it cannot fail
        info = source.wait_status({"failed", "completed"}, timeout=FAIL_WITHIN)
        assert info["status"] in {"failed", "completed"}, info
        # as in the kill test: a destination blocked at a sync point does not notice
        assert destination_failed(destination, NOTICE) or destination.process.poll() is None


class CorruptingProxy:
    """A TCP proxy on 127.0.0.1 that flips one byte of every multifd connection."""

    def __init__(self, *, offset: int) -> None:
        self.offset = offset
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._process: subprocess.Popen | None = None

    def start(self, to: str) -> None:
        # a child process, so the proxy dies with the test whatever happens
        code = _PROXY.format(fd=self._listener.fileno(), to=to, offset=self.offset)
        self._process = subprocess.Popen([sys.executable, "-c", code],
                                         pass_fds=(self._listener.fileno(),))

    def __enter__(self) -> CorruptingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
        self._listener.close()


_PROXY = """
import socket, struct, threading
listener = socket.socket(fileno={fd})
host, port = "{to}".rsplit(":", 1)

def pump(src, dst, offset):
    seen = 0
    try:
        while data := src.recv(65536):
            if seen <= offset < seen + len(data):
                data = bytearray(data)
                data[offset - seen] ^= 0xFF
            seen += len(data)
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)         # an end is passed on as an end
    except OSError:                          # a reset as a reset
        for s in (src, dst):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            s.close()

index = 0
while True:
    conn, _ = listener.accept()
    out = socket.create_connection((host, int(port)))
    offset = {offset} if index else -1      # the first connection is the main channel
    index += 1
    threading.Thread(target=pump, args=(conn, out, offset), daemon=True).start()
    threading.Thread(target=pump, args=(out, conn, -1), daemon=True).start()
"""
