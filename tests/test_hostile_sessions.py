"""Sessions under attack: scanners, strangers, drippers, wrong keys and certificates.

Before, any first connection took the session (a port scanner's
connect-and-close made ``recv`` exit 5 and the real ``send`` fail), a
foreign connection in the accept window became a data channel, and a peer
sending one byte a second kept the receiver (and its reservation) forever.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine import errors, wire
from engine.cli import main
from engine.exit_codes import EXIT_USAGE
from engine.config import Config
from engine.net import control
from engine.net.migration import receive_migration, send_migration
from engine.net.session import DATA_MAGIC
from engine.net.transport import Address

PAGE = 4096
SEVEN_BYTES = b"MFDC\x00\x00\x00\x03\x91\x91\x00"

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def config(channels: int = 1, **transport) -> Config:
    return Config.from_dict({
        "run": {"rounds": 1}, "workload": {"size": "1MiB"},
        "migration": {"channels": channels, "method": "none"},
        "transport": {"connect_timeout": 5.0, "accept_timeout": 10.0, "stall_timeout": 5.0,
                      "handshake_timeout": 1.0, **transport}})


class Receiver:
    """``receive_migration`` on loopback in a thread."""

    def __init__(self, cfg: Config, **kwargs) -> None:
        self._address: queue.Queue = queue.Queue()
        self._outcome: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=(cfg, kwargs), daemon=True).start()
        self.address: Address = self._address.get(timeout=10)

    def _run(self, cfg: Config, kwargs: dict) -> None:
        try:
            self._outcome.put(receive_migration(cfg, "127.0.0.1:0", on_listening=self._address.put,
                                                **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._outcome.put(exc)

    def result(self, timeout: float = 30):
        return self._outcome.get(timeout=timeout)


def connect(address: Address, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection((address.host, address.port), timeout=5)
    sock.sendall(data)
    return sock


def drip(sock: socket.socket, data: bytes, every: float) -> None:
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return
        time.sleep(every)


# ------------------------------------------------------------ the accept window

def _hello_frame() -> bytes:
    return control.pack(control.Hello(control.VERSION, b"S" * 16, PAGE, "none", 1, "10.0",
                                      [("pc.ram", 1 << 20)]))


def test_strangers_before_the_sender_do_not_end_the_session():
    """Each is dropped and counted; the real sender, behind them all, then migrates."""
    rx = Receiver(config())
    scan = connect(rx.address)
    scan.close()                                              # a port scanner's connect-and-close
    strangers = [connect(rx.address, opening) for opening in (
        SEVEN_BYTES,                                          # crashed recv before
        b"GET / HTTP/1.0\r\n\r\n",
        wire.InitPacket(bytes(16), 0).encode(),                # a data channel first
        b"")]                                                 # silent
    dripping = connect(rx.address)                            # a Hello at 5 bytes a second
    threading.Thread(target=drip, args=(dripping, control.MAGIC + _hello_frame(), 0.2),
                     daemon=True).start()
    try:
        report = send_migration(config(), rx.address)
        received = rx.result()
    finally:
        for sock in [*strangers, dripping]:
            sock.close()
    assert report.final_digests_match, received
    assert received.digests_match and received.dropped_connections == 6


def test_a_stranger_in_the_data_channel_window_is_dropped():
    """Between Ready and the data channels: a connection without the session's token."""
    rx = Receiver(config(channels=2))
    link = control.ControlChannel(connect(rx.address, control.MAGIC))
    stranger = None
    try:
        link.send(control.Hello(control.VERSION, b"S" * 16, PAGE, "none", 2, "10.0",
                                [("pc.ram", 256 * PAGE)]))
        token = link.expect(control.Ready, 5).token
        stranger = connect(rx.address, DATA_MAGIC + b"X" * 16 + wire.InitPacket(b"S" * 16, 0).encode())
        channels = [connect(rx.address, DATA_MAGIC + token + wire.InitPacket(b"S" * 16, i).encode())
                    for i in range(2)]
        zeros = hashlib.sha256(bytes(256 * PAGE)).digest()
        link.send(control.End({"pc.ram": zeros}))        # no rounds: the block stays zero
        result = link.expect(control.Result, 5)
        received = rx.result()
    finally:
        for sock in [stranger, *locals().get("channels", [])]:
            if sock is not None:
                sock.close()
        link.close()
    assert result.ok and received.digests_match
    assert received.dropped_connections == 1


def test_strangers_are_counted_when_no_sender_comes():
    rx = Receiver(config(accept_timeout=1.5))
    connect(rx.address).close()
    error = rx.result()
    assert isinstance(error, errors.ConnectFailed)
    assert "no sender connected" in str(error) and "dropped 1 other connection(s)" in str(error)


# --------------------------------------------------------------- deadlines

def joined(address: Address) -> tuple[control.ControlChannel, list[socket.socket]]:
    """A hand-made sender of a 2-channel session, its data channels connected."""
    link = control.ControlChannel(connect(address, control.MAGIC))
    link.send(control.Hello(control.VERSION, b"S" * 16, PAGE, "none", 2, "10.0",
                            [("pc.ram", 256 * PAGE)]))
    token = link.expect(control.Ready, 5).token
    socks = [connect(address, DATA_MAGIC + token + wire.InitPacket(b"S" * 16, i).encode())
             for i in range(2)]
    return link, socks


def test_a_dripping_data_channel_is_cut_off_by_the_packet_deadline():
    rx = Receiver(config(channels=2, packet_deadline=1.0, stall_timeout=5.0))
    link, socks = joined(rx.address)
    try:
        link.send(control.Round(0, 1))
        started = time.monotonic()
        threading.Thread(target=drip, args=(socks[0], b"\x11\x22\x33\x44" * 100, 0.1),
                         daemon=True).start()
        error = rx.result()
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.ChannelStalled), error
    assert "transport.packet_deadline" in str(error) and elapsed < 4


def test_a_round_that_never_ends_is_cut_off_by_the_round_deadline():
    rx = Receiver(config(channels=2, round_deadline=1.0, stall_timeout=5.0))
    link, socks = joined(rx.address)
    try:
        link.send(control.Round(0, 1))
        started = time.monotonic()
        error = rx.result()
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.ChannelStalled), error
    assert "transport.round_deadline" in str(error) and elapsed < 4


def test_a_dripping_control_frame_is_cut_off():
    """Once the session is up, a control frame must come whole within its timeout."""
    rx = Receiver(config(channels=2, stall_timeout=1.0))
    link, socks = joined(rx.address)
    frame = control.pack(control.Round(0, 1))
    try:
        started = time.monotonic()
        threading.Thread(target=drip, args=(link.sock, frame, 0.4), daemon=True).start()
        error = rx.result()
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.PeerStalled), error
    assert elapsed < 4


# ------------------------------------------------------------ authentication

def test_recv_refuses_a_public_address_without_authentication(capsys):
    with pytest.raises(errors.ConfigError, match="not a loopback address"):
        receive_migration(config(), "0.0.0.0:0")          # refused before anything binds
    assert main(["recv", "--listen", "0.0.0.0:0"]) == EXIT_USAGE
    assert "--insecure" in capsys.readouterr().err


def _psk(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text(name * 16)
    return str(path)


def test_a_psk_pair_migrates(tmp_path):
    key = _psk(tmp_path, "k")
    rx = Receiver(config(psk_file=key))
    report = send_migration(config(psk_file=key), rx.address)
    assert report.final_digests_match and rx.result().digests_match


def test_a_wrong_psk_is_refused_on_both_ends(tmp_path):
    rx = Receiver(config(psk_file=_psk(tmp_path, "k"), accept_timeout=1.0))
    with pytest.raises(errors.AuthenticationFailed, match="does not hold the pre-shared key"):
        send_migration(config(psk_file=_psk(tmp_path, "x")), rx.address)
    error = rx.result()
    assert isinstance(error, errors.ConnectFailed) and "dropped 1" in str(error)


def test_a_short_psk_is_a_config_error(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(errors.ConfigError, match="transport.psk_file"):
        send_migration(config(psk_file=str(short)), "127.0.0.1:1")


# --------------------------------------------------------------- mutual TLS

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str) -> None:
    (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                   "extendedKeyUsage=serverAuth,clientAuth\n"
                                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA with a sender and a receiver certificate, and a rogue CA with one of its own."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "receiver", "ca")
    _leaf(d, "sender", "ca")
    _leaf(d, "rogue", "rogue-ca")
    return d


def tls(pki: Path, name: str, ca: str = "ca", **extra) -> Config:
    return config(tls_cert=str(pki / f"{name}.pem"), tls_key=str(pki / f"{name}.key"),
                  tls_ca=str(pki / f"{ca}.pem"), **extra)


def test_a_tls_pair_migrates(pki):
    rx = Receiver(tls(pki, "receiver"))
    report = send_migration(tls(pki, "sender"), rx.address)
    assert report.final_digests_match and rx.result().digests_match


@pytest.mark.parametrize("wrong", ["sender", "receiver"])
def test_a_certificate_from_another_ca_is_refused_on_both_ends(pki, wrong):
    rx = Receiver(tls(pki, "rogue" if wrong == "receiver" else "receiver", accept_timeout=1.0))
    sender = tls(pki, "rogue" if wrong == "sender" else "sender")
    with pytest.raises((errors.AuthenticationFailed, errors.PeerClosed)):
        send_migration(sender, rx.address)
    error = rx.result()
    assert isinstance(error, errors.ConnectFailed) and "dropped 1" in str(error), error
    assert "AuthenticationFailed" in str(error)


def test_a_key_that_does_not_match_its_certificate_is_a_config_error(pki):
    bad = config(tls_cert=str(pki / "sender.pem"), tls_key=str(pki / "receiver.key"),
                 tls_ca=str(pki / "ca.pem"))
    with pytest.raises(errors.ConfigError, match="transport.tls_key"):
        send_migration(bad, "127.0.0.1:1")


@pytest.mark.parametrize("receiver_mode", ["psk", "tls"])
def test_a_sender_without_authentication_is_told_what_is_missing(tmp_path, pki, receiver_mode):
    cfg = (config(psk_file=_psk(tmp_path, "k"), accept_timeout=1.0) if receiver_mode == "psk"
           else tls(pki, "receiver", accept_timeout=1.0))
    rx = Receiver(cfg)
    with pytest.raises(errors.SessionRefused, match="pre-shared key .* or TLS"):
        send_migration(config(stall_timeout=3.0), rx.address)
    assert isinstance(rx.result(), errors.ConnectFailed)
