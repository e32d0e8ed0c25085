"""Safe output: peer strings escaped and bounded; interrupted outputs never look complete.

Before, a 60 KB Refuse reason was echoed whole with its escape sequences,
and the channel files of an interrupted run (file sink, ``recv --record``)
kept their final names and passed ``inspect`` with exit 0.
"""

from __future__ import annotations

import threading

import pytest

from engine import errors
from engine.batch import run_batch
from engine.config import Config
from engine.net import control
from engine.net.migration import send_migration
from engine.net.transport import Address, Listener
from engine.peer_text import printable
from test_hostile_sessions import Receiver, joined  # tests/ is on sys.path (pytest)
from test_hostile_sessions import config as session_config

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def test_printable_escapes_and_bounds():
    assert printable("plain text") == "plain text"
    assert printable("\x1b[2J\x07bell") == "\\x1b[2J\\x07bell"
    long = printable("A" * 60_000, 100)
    assert long.startswith("A" * 100) and long.endswith("(59900 more characters)")
    assert len(long) < 200


def test_a_hostile_refuse_reason_reaches_the_user_escaped_and_bounded():
    listener = Listener(Address("127.0.0.1", 0))

    def refuse() -> None:
        sock, _ = listener.accept(timeout=10, stall_timeout=5, what="sender")
        with sock:
            link = control.ControlChannel(sock)
            link.expect_magic(5)
            link.expect(control.Hello, 5)
            link.send(control.Refuse("\x1b]0;owned\x07" + "R" * 60_000))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    cfg = Config.from_dict({"workload": {"size": "1MiB"}, "migration": {"channels": 1},
                            "transport": {"stall_timeout": 5.0}})
    try:
        with pytest.raises(errors.SessionRefused) as caught:
            send_migration(cfg, listener.address)
    finally:
        thread.join(10)
        listener.close()
    text = str(caught.value)
    assert "\x1b" not in text and "\\x1b]0;owned\\x07" in text
    assert len(text) < 1000 and "more characters" in text


class _Interrupting:
    """A progress callback that interrupts the run in its second round."""

    def __call__(self, round_index: int, done: int, total: int) -> None:
        if round_index == 1:
            raise KeyboardInterrupt


def _file_config(tmp_path) -> Config:
    return Config.from_dict({"run": {"rounds": 2}, "workload": {"size": "1MiB"},
                             "migration": {"channels": 2, "method": "none"},
                             "sink": {"kind": "file", "dir": str(tmp_path / "out")}})


def test_file_sink_outputs_get_their_names_only_on_a_clean_end(tmp_path):
    run_batch(_file_config(tmp_path))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["channel-0.mfd", "channel-1.mfd"]


def test_an_interrupted_run_leaves_aborted_files(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_batch(_file_config(tmp_path), progress=_Interrupting())
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["channel-0.mfd.aborted", "channel-1.mfd.aborted"]


def test_recv_record_of_an_aborted_session_is_marked(tmp_path):
    rx = Receiver(session_config(channels=2, stall_timeout=1.0), record_dir=tmp_path / "rec")
    link, socks = joined(rx.address)
    try:
        link.send(control.Round(0, 1))     # then silence: the round stalls, the session aborts
        error = rx.result()
    finally:
        for sock in socks:
            sock.close()
        link.close()
    assert isinstance(error, errors.ChannelStalled), error
    names = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert names == ["channel-0.mfd.aborted", "channel-1.mfd.aborted"]
