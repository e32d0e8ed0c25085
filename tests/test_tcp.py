"""Migration over TCP: two hosts, QEMU's bytes on every data channel, no hangs.

The two-host test runs the receiver and the sender in two network
namespaces joined by a veth pair when it runs as root with ``ip`` (CI does);
elsewhere the same test runs on loopback.  The other tests use loopback:
fake peers that send bad init packets, stop reading, or die.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import errors, methods, wire
from engine.net import control
from engine.cli import main
from engine.exit_codes import EXIT_OK, EXIT_PEER
from engine.config import Config, load_config
from engine.inspection import inspect_channels
from engine.net.migration import receive_migration, send_migration
from engine.ram import RamBlock
from engine.net.transport import Address, Listener
from engine.workloads import fill_guest_memory

ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def config(**sections) -> Config:
    data = {"run": {"rounds": 1}, "workload": {"size": "2MiB"},
            "migration": {"channels": 2, "method": "none"},
            "transport": {"connect_timeout": 5.0, "accept_timeout": 10.0, "stall_timeout": 5.0}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.from_dict(data)


class ReceiverThread:
    """``receive_migration`` on loopback in a thread; ``result()`` is its report or error."""

    def __init__(self, cfg: Config, **kwargs) -> None:
        self._address: queue.Queue = queue.Queue()
        self._outcome: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(cfg, kwargs), daemon=True)
        self._thread.start()
        self.address = self._address.get(timeout=10)

    def _run(self, cfg: Config, kwargs: dict) -> None:
        try:
            self._outcome.put(receive_migration(cfg, "127.0.0.1:0", on_listening=self._address.put,
                                                **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._outcome.put(exc)

    def result(self, timeout: float = 30):
        outcome = self._outcome.get(timeout=timeout)
        self._thread.join(timeout)
        return outcome


# ------------------------------------------------------------- the happy path

@pytest.mark.parametrize("method", methods.names())
def test_data_channels_carry_qemu_bytes(tmp_path, method):
    """What arrives on each socket is a QEMU channel: inspect decodes it to the image."""
    image = tmp_path / "guest.ram"
    with RamBlock.create("pc.ram", 1024 * PAGE, PAGE) as block:
        fill_guest_memory(block, seed=3)
        image.write_bytes(block.buf)
    cfg = config(workload={"source": "image", "image": str(image)}, migration={"method": method})
    rx = ReceiverThread(cfg, record_dir=tmp_path / "rec")
    sent = send_migration(cfg, rx.address)
    received = rx.result()
    assert sent.verified is True and received.digests_match is True
    files = sorted((tmp_path / "rec").glob("channel-*.mfd"))
    assert [f.name for f in files] == ["channel-0.mfd", "channel-1.mfd"]
    result = inspect_channels(files, image=image, block="pc.ram", method=method)
    assert result.mismatched_pages == 0
    assert result.pages_checked == 1024
    assert sum(c.packets for c in result.channels) == sum(c["packets"] for c in received.receive_channels)


def test_rounds_keep_the_barrier_and_agree(tmp_path):
    cfg = config(run={"rounds": 4}, workload={"size": "8MiB"}, migration={"method": "zlib"})
    rx = ReceiverThread(cfg)
    sent = send_migration(cfg, rx.address)
    received = rx.result()
    assert received.digests_match is True and sent.verified is True
    assert [r.round for r in received.rounds] == [0, 1, 2, 3]
    for mine, theirs in zip(sent.rounds, received.rounds):
        # every packet the sender wrote in a round, plus one SYNC per channel, and no more
        assert theirs.packets == mine.packets + 2
        assert theirs.pages == mine.dirty_pages


# ---------------------------------------------------------- two hosts (CLI)

def _netns_usable() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@contextmanager
def two_hosts():
    """(prefix, address) of the receiving host and the sender's prefix.

    Two network namespaces joined by a veth pair (10.201.0.1 and .2, only
    inside them) when possible, else both on loopback.
    """
    if not _netns_usable():
        yield [], "127.0.0.1", []
        return
    tag = f"mfd{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    steps = [["netns", "add", a], ["netns", "add", b],
             ["link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb"],
             ["link", "set", f"{tag}va", "netns", a], ["link", "set", f"{tag}vb", "netns", b],
             ["-n", a, "addr", "add", "10.201.0.1/24", "dev", f"{tag}va"],
             ["-n", b, "addr", "add", "10.201.0.2/24", "dev", f"{tag}vb"],
             ["-n", a, "link", "set", f"{tag}va", "up"], ["-n", b, "link", "set", f"{tag}vb", "up"],
             ["-n", a, "link", "set", "lo", "up"], ["-n", b, "link", "set", "lo", "up"]]
    try:
        try:
            for step in steps:
                subprocess.run(["ip", *step], check=True, capture_output=True, timeout=10)
        except subprocess.CalledProcessError as exc:   # no netns here (a container): loopback
            warnings.warn(f"two-host test on loopback: `ip {' '.join(exc.cmd[1:])}` failed: "
                          f"{exc.stderr.decode(errors='replace').strip()}")
            yield [], "127.0.0.1", []
            return
        yield ["ip", "netns", "exec", a], "10.201.0.1", ["ip", "netns", "exec", b]
    finally:
        for ns in (a, b):   # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _listening_port(proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("listening on "):
                return int(line.rsplit(":", 1)[1])
        if proc.poll() is not None:
            break
    raise AssertionError(f"receiver never listened: {proc.stderr.read() if proc.poll() is not None else ''}")


def test_two_hosts_over_the_network(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[run]\nrounds = 3\n[workload]\nsize = "8MiB"\n'
                   '[migration]\nchannels = 2\nmethod = "zstd"\n'
                   '[transport]\nconnect_timeout = 10.0\nstall_timeout = 10.0\naccept_timeout = 20.0\n')
    cli = [sys.executable, "-m", "engine.cli"]
    with two_hosts() as (recv_ns, host, send_ns):
        listen = f"{host}:{47000 if recv_ns else 0}"
        recv = subprocess.Popen([*recv_ns, *cli, "recv", "--listen", listen, str(cfg)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            port = _listening_port(recv, 30)
            send = subprocess.run([*send_ns, *cli, "send", "--to", f"{host}:{port}", "-q", str(cfg)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)
            recv_out, recv_err = recv.communicate(timeout=60)
        finally:
            if recv.poll() is None:
                os.killpg(recv.pid, signal.SIGKILL)
                recv.wait(10)
    assert send.returncode == EXIT_OK, send.stderr
    assert recv.returncode == EXIT_OK, recv_err
    assert "both ends' final sha256 per RAM block agree" in send.stdout
    # from the other host's address when there are two hosts
    assert f"received from {'10.201.0.2' if recv_ns else '127.0.0.1'}:" in recv_out


# ------------------------------------------------------------- init packets

def connection(address: Address, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection((address.host, address.port), timeout=5)
    sock.sendall(first_bytes)
    return sock


def init_packet(channel: int, session: bytes = b"S" * 16) -> bytes:
    return wire.InitPacket(session, channel).encode()


@pytest.mark.parametrize("case", ["uuid", "id", "twice", "magic", "extra"])
def test_receiver_checks_every_init_packet(case):
    rx = ReceiverThread(config(transport={"stall_timeout": 3.0, "connect_timeout": 3.0}))
    link = control.ControlChannel(connection(rx.address, control.MAGIC))
    inits = {"uuid": [init_packet(0), init_packet(1, b"X" * 16)],
             "id": [init_packet(0), init_packet(2)],
             "twice": [init_packet(1), init_packet(1)],
             "magic": [init_packet(0), b"\x11\x22\x33\x45" + init_packet(1)[4:]],
             "extra": [init_packet(0), init_packet(1), init_packet(0)]}[case]
    # the data connections wait in the listener's queue, behind the control
    # connection, until the session is set up: all of them are there in time
    socks = [connection(rx.address, init) for init in inits]
    try:
        link.send(control.Hello(control.VERSION, b"S" * 16, PAGE, "none", 2, "10.0",
                                [("pc.ram", 256 * PAGE)]))
        error = rx.result()
        told = link.peer_error(5)
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.BadInitPacket), error
    field = {"uuid": "uuid", "id": "id", "twice": "id", "magic": "magic", "extra": "connections"}[case]
    assert error.field == field
    assert told is not None and told.error == "BadInitPacket"   # the sender hears why


def test_first_connection_must_be_the_control_connection():
    rx = ReceiverThread(config())
    sock = connection(rx.address, init_packet(0))
    try:
        error = rx.result()
    finally:
        sock.close()
    assert isinstance(error, errors.ControlError)
    assert error.field == "magic" and "data channel" in str(error)


def test_mismatched_sessions_are_refused_on_both_ends():
    rx = ReceiverThread(config(migration={"method": "zstd"}))
    with pytest.raises(errors.SessionRefused, match="method 'zlib'"):
        send_migration(config(migration={"method": "zlib"}), rx.address)
    assert isinstance(rx.result(), errors.SessionRefused)


# ---------------------------------------------------------------- timeouts

def test_connect_and_accept_time_out():
    with _closed_port() as port:
        started = time.monotonic()
        with pytest.raises(errors.ConnectFailed, match="refused"):
            send_migration(config(transport={"connect_timeout": 0.5}), f"127.0.0.1:{port}")
        assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(errors.ConnectFailed, match="no sender connected"):
        receive_migration(config(transport={"accept_timeout": 0.5}), "127.0.0.1:0")
    assert time.monotonic() - started < 5


@contextmanager
def _closed_port():
    listener = Listener(Address("127.0.0.1", 0))
    port = listener.address.port
    listener.close()
    yield port


def test_cli_connection_failure_is_exit_5(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[workload]\nsize = "1MiB"\n[transport]\nconnect_timeout = 0.3\n')
    with _closed_port() as port:
        assert main(["send", "--to", f"127.0.0.1:{port}", "-q", str(cfg)]) == EXIT_PEER
    assert "connection failed: ConnectFailed" in capsys.readouterr().err


def test_sender_times_out_when_the_receiver_stops_reading():
    """A receiver that takes the session, then reads nothing: the sender's write stalls."""
    listener = Listener(Address("127.0.0.1", 0))
    held = []

    def silent_receiver():
        sock, _ = listener.accept(timeout=10, stall_timeout=10, what="sender")
        link = control.ControlChannel(sock)
        link.expect_magic(5)
        link.expect(control.Hello, 5)
        link.send(control.Ready())
        data, _ = listener.accept(timeout=10, stall_timeout=10, what="channel")
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        held.extend([link, data])       # open, never read

    thread = threading.Thread(target=silent_receiver, daemon=True)
    thread.start()
    cfg = config(workload={"size": "48MiB"}, migration={"channels": 1},
                 transport={"stall_timeout": 1.0})
    started = time.monotonic()
    try:
        with pytest.raises(errors.ChannelStalled) as info:
            send_migration(cfg, listener.address)
        elapsed = time.monotonic() - started
    finally:
        thread.join(10)
        for item in held:
            item.close()
        listener.close()
    assert info.value.side == "write" and info.value.channel == 0
    assert elapsed < 15


def test_receiver_times_out_when_the_sender_goes_quiet():
    """A sender that starts a round and sends nothing: the channel read stalls."""
    rx = ReceiverThread(config(transport={"stall_timeout": 1.0}))
    link = control.ControlChannel(connection(rx.address, control.MAGIC))
    socks = [connection(rx.address, init_packet(i)) for i in range(2)]
    try:
        link.send(control.Hello(control.VERSION, b"S" * 16, PAGE, "none", 2, "10.0",
                                [("pc.ram", 256 * PAGE)]))
        link.send(control.Round(0, 256))
        started = time.monotonic()
        error = rx.result()
        elapsed = time.monotonic() - started
        told = link.peer_error(5)
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.ChannelStalled), error
    assert error.side == "read" and elapsed < 10
    assert told is not None and told.error == "ChannelStalled"


def _kill_and_clean(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # a SIGKILLed process cannot unlink its own shared memory
    for name in os.listdir("/dev/shm"):
        if name.startswith(f"mfd-{proc.pid}-"):
            os.unlink(f"/dev/shm/{name}")


def test_sender_fails_promptly_when_the_receiver_dies(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[run]\nrounds = 500\n[workload]\nsize = "8MiB"\ndirty_fraction = 0.5\n'
                        '[migration]\nchannels = 2\nmethod = "none"\n[transport]\nstall_timeout = 2.0\n')
    recv = subprocess.Popen([sys.executable, "-m", "engine.cli", "recv", "--listen", "127.0.0.1:0",
                             str(cfg_file)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed_at = []

    def kill_on_round_two(round_index: int, done: int, total: int) -> None:
        if round_index == 2 and not killed_at:
            os.killpg(recv.pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    try:
        port = _listening_port(recv, 30)
        with pytest.raises((errors.TransportError, errors.ChannelStalled)):
            send_migration(load_config(cfg_file), f"127.0.0.1:{port}", progress=kill_on_round_two)
        assert killed_at and time.monotonic() - killed_at[0] < 10
    finally:
        _kill_and_clean(recv)


def test_receiver_fails_promptly_when_the_sender_dies(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[run]\nrounds = 500\n[workload]\nsize = "8MiB"\ndirty_fraction = 0.5\n'
                        '[migration]\nchannels = 2\nmethod = "none"\n[transport]\nstall_timeout = 2.0\n')
    cfg = load_config(cfg_file)
    address: queue.Queue = queue.Queue()
    outcome: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            outcome.put(receive_migration(cfg, "127.0.0.1:0", on_listening=address.put))
        except BaseException as exc:  # noqa: BLE001
            outcome.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = address.get(timeout=10).port
    send = subprocess.Popen([sys.executable, "-m", "engine.cli", "send", "--to", f"127.0.0.1:{port}",
                             "-q", str(cfg_file)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_segments(send.pid)) < 3:
            time.sleep(0.1)                # source block + slots: rounds are under way
        time.sleep(0.5)
        os.killpg(send.pid, signal.SIGKILL)
        killed = time.monotonic()
        error = outcome.get(timeout=30)
        assert time.monotonic() - killed < 10
    finally:
        _kill_and_clean(send)
        thread.join(10)
    assert isinstance(error, (errors.WireError, errors.TransportError, errors.ChannelStalled)), error


def _segments(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{pid}-")]
