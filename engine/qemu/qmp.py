"""A small QMP client with a deadline on every step.

QMP is QEMU's JSON monitor: a greeting, ``qmp_capabilities``, then one
reply per command, with asynchronous events in between (skipped here).
Every read waits at most ``timeout`` seconds, so a QEMU that went silent
(7.2 loads an incoming migration in its main loop and stops answering)
becomes a ``QmpError`` instead of a hang.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from engine.qemu.errors import QmpError


class _Reset(Exception):
    """The monitor reset a fresh connection (it was still dropping the last client)."""


class Qmp:
    """One QMP connection on a unix socket.  A context manager."""

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            self._buffer = b""
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._open(deadline)
                return
            except _Reset:
                # QEMU serves one client: while it drops the previous one it
                # may reset a new connection; try again until the deadline
                self._sock.close()
                if time.monotonic() >= deadline:
                    raise QmpError(f"QMP at {path} kept resetting the connection") from None
                time.sleep(0.05)
            except BaseException:
                self._sock.close()
                raise

    def _open(self, deadline: float) -> None:
        self._connect(self.path, deadline)
        try:
            greeting = self._message(deadline)
        except QmpError as exc:
            if "reset by peer" in str(exc):
                raise _Reset() from None
            raise
        if "QMP" not in greeting:
            raise QmpError(f"no QMP greeting on {self.path}: {str(greeting)[:80]}")
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.execute("qmp_capabilities")

    def _connect(self, path: str, deadline: float) -> None:
        timeout = self.timeout
        while True:
            try:
                self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
                self._sock.connect(path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise QmpError(f"no QMP socket at {path} within {timeout:g} s") from None
                time.sleep(0.02)
            except OSError as exc:
                raise QmpError(f"cannot connect to QMP at {path}: {exc.strerror or exc}") from None

    @property
    def version_tuple(self) -> tuple[int, int]:
        return (int(self.version.get("major", 0)), int(self.version.get("minor", 0)))

    def execute(self, command: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Run one command; its ``return`` value, or QmpError with QEMU's message."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise QmpError(f"{command}: cannot send ({exc.strerror or exc})") from None
        while True:
            reply = self._message(deadline, command, limit)
            if "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                return reply["return"]

    def _message(self, deadline: float, command: str = "greeting",
                 limit: float | None = None) -> dict[str, Any]:
        """The next reply or greeting; events are skipped."""
        while True:
            message = self._line(deadline, command, self.timeout if limit is None else limit)
            if "event" not in message:
                return message

    def _line(self, deadline: float, command: str, limit: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"{command}: no answer within {limit:g} s "
                               "(QEMU busy or hung)")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError as exc:
                raise QmpError(f"{command}: {exc.strerror or exc}") from None
            if not data:
                raise QmpError(f"{command}: QEMU closed the monitor (it exited?)")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"{command}: not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise QmpError(f"{command}: not a JSON object: {line[:80]!r}")
        return message

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
