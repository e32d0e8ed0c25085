"""The QMP client's deadlines and errors, against a fake monitor (no QEMU needed)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from engine.qemu.errors import QmpError
from engine.qemu.qmp import Qmp

GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}, "capabilities": []}}


def monitor(path: str, replies: list[dict | None]) -> threading.Thread:
    """A one-client monitor: greeting, then one reply per request (None: silence)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            conn.sendall(json.dumps(GREETING).encode() + b"\n")
            reader = conn.makefile("rb")
            for reply in replies:
                if not reader.readline():
                    return
                if reply is None:
                    time.sleep(2)
                    return
                conn.sendall(json.dumps({"event": "X"}).encode() + b"\n"
                             + json.dumps(reply).encode() + b"\n")
            reader.readline()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_answers_and_skips_events(tmp_path):
    path = str(tmp_path / "qmp")
    monitor(path, [{"return": {}}, {"return": {"status": "setup"}}])
    with Qmp(path, timeout=2) as qmp:
        assert qmp.version_tuple == (10, 0)
        assert qmp.execute("query-migrate") == {"status": "setup"}


def test_an_error_reply_is_a_qmp_error(tmp_path):
    path = str(tmp_path / "qmp")
    monitor(path, [{"return": {}}, {"error": {"class": "GenericError", "desc": "no such thing"}}])
    with Qmp(path, timeout=2) as qmp, pytest.raises(QmpError, match="migrate-incoming: no such thing"):
        qmp.execute("migrate-incoming", uri="tcp:127.0.0.1:1")


def test_a_silent_monitor_times_out(tmp_path):
    path = str(tmp_path / "qmp")
    monitor(path, [{"return": {}}, None])
    with Qmp(path, timeout=2) as qmp:
        started = time.monotonic()
        with pytest.raises(QmpError, match="no answer within 0.3 s"):
            qmp.execute("query-migrate", timeout=0.3)
        assert time.monotonic() - started < 1.5


def test_no_socket_is_a_qmp_error_in_time(tmp_path):
    started = time.monotonic()
    with pytest.raises(QmpError, match="no QMP socket"):
        Qmp(str(tmp_path / "absent"), timeout=0.3)
    assert time.monotonic() - started < 1.5
