"""Who may join a session: mutual TLS (x509) or a pre-shared key.

Anchored on QEMU's ``tls-creds-x509`` for migration, with a lighter
alternative for hosts without a PKI:

* **mutual TLS** (``transport.tls_cert``, ``tls_key``, ``tls_ca``): every
  connection, control and data, is TLS; each end presents its certificate
  and accepts only one signed by ``tls_ca``.  The sender also checks that
  the receiver's certificate names the host it connects to (as QEMU does
  by default), so the receiver's certificate needs that IP or DNS name.
* **pre-shared key** (``transport.psk_file``): after the control magic,
  a challenge-response proves to each end that the other holds the key,
  without sending it::

      sender   ── client nonce (32) ───────────────────────────────►
               ◄── server nonce (32), HMAC(key, "recv" cn sn) ─────  receiver
               ── HMAC(key, "send" sn cn) ─────────────────────────►

  The bytes then travel in the clear: the key authenticates, it does not
  encrypt (docs/security.md).

Either way, data connections present the session's token (``Ready``) before
they count as channels (``engine.net.session``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from engine import errors
from engine.net.control import ControlChannel

NONCE = 32
MIN_KEY = 16                    # bytes of key material a psk_file must hold
_SENDER, _RECEIVER = b"mfd-psk send", b"mfd-psk recv"


@dataclass(frozen=True)
class SessionAuth:
    """How this end proves itself and checks the peer; neither field: no authentication."""

    psk: bytes | None = None
    server_tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, t) -> SessionAuth:
        """From ``[transport]``; ConfigError naming the key when a file is unusable."""
        if t.psk_file:
            return cls(psk=_read_key(t.psk_file))
        if t.tls_cert:
            return cls(server_tls=_context(t, ssl.PROTOCOL_TLS_SERVER),
                       client_tls=_context(t, ssl.PROTOCOL_TLS_CLIENT))
        return cls()

    @property
    def mode(self) -> str:
        return "tls" if self.server_tls else "psk" if self.psk else "none"

    # ---- the receiving end -----------------------------------------------

    def server_socket(self, sock: socket.socket, timeout: float) -> socket.socket:
        """``sock`` after the TLS handshake (when TLS is on); AuthenticationFailed if it fails."""
        if self.server_tls is None:
            return sock
        sock.settimeout(timeout)
        try:
            return self.server_tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            raise errors.AuthenticationFailed(f"TLS handshake failed: {_reason(exc)}") from None

    def check_sender(self, channel: ControlChannel, timeout: float) -> None:
        """The pre-shared-key exchange, receiving end: the sender must prove the key."""
        if self.psk is None:
            return
        client_nonce = channel.read_raw(NONCE, timeout, "the sender's nonce")
        server_nonce = secrets.token_bytes(NONCE)
        channel.send_raw(server_nonce + self._mac(_RECEIVER, client_nonce, server_nonce))
        proof = channel.read_raw(hashlib.sha256().digest_size, timeout, "the sender's proof")
        if not hmac.compare_digest(proof, self._mac(_SENDER, server_nonce, client_nonce)):
            raise errors.AuthenticationFailed("the sender does not hold the pre-shared key",
                                              peer=channel.peer)

    # ---- the sending end ----------------------------------------------------

    def client_socket(self, sock: socket.socket, host: str, timeout: float) -> socket.socket:
        if self.client_tls is None:
            return sock
        stall = sock.gettimeout()
        sock.settimeout(timeout)
        try:
            wrapped = self.client_tls.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise errors.AuthenticationFailed(f"TLS handshake failed: {_reason(exc)}",
                                              peer=host) from None
        wrapped.settimeout(stall)
        return wrapped

    def prove_sender(self, channel: ControlChannel, timeout: float) -> None:
        """The pre-shared-key exchange, sending end: the receiver must prove the key first."""
        if self.psk is None:
            return
        client_nonce = secrets.token_bytes(NONCE)
        channel.send_raw(client_nonce)
        try:
            reply = channel.read_raw(NONCE + hashlib.sha256().digest_size, timeout,
                                     "the receiver's proof")
        except errors.PeerClosed:
            raise errors.AuthenticationFailed("the receiver closed the connection during the "
                                              "pre-shared-key exchange (does it use one?)",
                                              peer=channel.peer) from None
        server_nonce, proof = reply[:NONCE], reply[NONCE:]
        if not hmac.compare_digest(proof, self._mac(_RECEIVER, client_nonce, server_nonce)):
            raise errors.AuthenticationFailed("the receiver does not hold the pre-shared key",
                                              peer=channel.peer)
        channel.send_raw(self._mac(_SENDER, server_nonce, client_nonce))

    def _mac(self, role: bytes, first: bytes, second: bytes) -> bytes:
        assert self.psk is not None
        return hmac.new(self.psk, role + first + second, hashlib.sha256).digest()


def _read_key(path: str) -> bytes:
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise errors.ConfigError("transport.psk_file", f"cannot read {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY:
        raise errors.ConfigError("transport.psk_file", f"{path} holds {len(key)} bytes of key, "
                                 f"at least {MIN_KEY} are needed (e.g. `openssl rand -hex 32`)")
    return key


def _context(t, protocol: int) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED            # mutual: the client's certificate too
    try:
        context.load_verify_locations(cafile=t.tls_ca)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ConfigError("transport.tls_ca", f"cannot load {t.tls_ca}: {_reason(exc)}") from None
    try:
        context.load_cert_chain(t.tls_cert, t.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ConfigError("transport.tls_key", f"cannot load {t.tls_cert} with {t.tls_key}: "
                                 f"{_reason(exc)} (a PEM certificate and its private key)") from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def listen_problem(host: str, auth: SessionAuth, insecure: bool) -> str | None:
    """Why ``recv`` should not listen on ``host`` with ``auth``, or None.

    Without authentication anyone who can reach the port can send pages
    into this host's memory: only loopback is allowed then, unless the user
    says ``--insecure``.
    """
    if auth.mode != "none" or insecure or _loopback(host):
        return None
    return (f"{host} is not a loopback address and no authentication is configured: set "
            "transport.psk_file or transport.tls_cert/tls_key/tls_ca (docs/security.md), "
            "or pass --insecure")


def _loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                               for info in infos)
