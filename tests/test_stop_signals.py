"""SIGTERM and SIGHUP stop every command as Ctrl-C does; killed runs are cleaned up later.

systemd, docker and ``kill`` send SIGTERM; before, it left the run's RAM
blocks in /dev/shm (1.5 GiB for a 768 MiB ``run``).  Now each command exits
128 + the signal with nothing of its own left, tells a peer why, and every
command removes what a SIGKILLed run left (``doctor`` lists it first).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.ram import SHM_DIR, SharedSegment

ROOT = Path(__file__).resolve().parents[1]
SMALL = ('[run]\nrounds = 100000\n[workload]\nsize = "4MiB"\ndirty_fraction = 0.5\n'
         '[migration]\nchannels = 2\nmethod = "none"\n'
         '[transport]\nstall_timeout = 5.0\nconnect_timeout = 5.0\naccept_timeout = 10.0\n')


def own_segments(pid: int) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"mfd-{pid}-")]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_for_segments(proc: subprocess.Popen, count: int = 3) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(own_segments(proc.pid)) < count:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert len(own_segments(proc.pid)) >= count, "the command never got going"
    time.sleep(0.3)


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return err.decode()


def test_run_stops_cleanly(tmp_path, sig=signal.SIGTERM):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL)
    proc = start("run", str(cfg), "-q")
    wait_for_segments(proc)
    os.kill(proc.pid, sig)               # the process only, as `kill` and systemd do
    err = finish(proc)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted (stopped by {signal.Signals(sig).name})" in err
    assert own_segments(proc.pid) == []


def test_stress_stops_cleanly_on_sighup(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[workload]\nsize = "4MiB"\n[migration]\nchannels = 2\n'
                   '[stress]\nrounds = 100000\nkill_rate = 0.0\ncorrupt_rate = 0.0\n'
                   'slow_reader_rate = 0.0\nstop_reader_rate = 0.0\n')
    proc = start("stress", str(cfg), "-q")
    wait_for_segments(proc)
    os.kill(proc.pid, signal.SIGHUP)        # a closed terminal
    err = finish(proc)
    assert proc.returncode == 129, err
    assert "interrupted (stopped by SIGHUP)" in err
    assert own_segments(proc.pid) == []


@pytest.mark.parametrize("victim", ["send", "recv"])
def test_tcp_pair_stops_cleanly_and_the_peer_hears_why(tmp_path, victim):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL)
    recv = start("recv", "--listen", "127.0.0.1:0", str(cfg), "-q")
    try:
        line = recv.stdout.readline().decode()
        port = re.search(r":(\d+)$", line.strip()).group(1)
        send = start("send", "--to", f"127.0.0.1:{port}", str(cfg), "-q")
        stopped, other = (send, recv) if victim == "send" else (recv, send)
        wait_for_segments(send)
        wait_for_segments(recv, 1)
        os.kill(stopped.pid, signal.SIGTERM)
        stopped_err = finish(stopped)
        other_err = finish(other)
    finally:
        for proc in (recv, locals().get("send")):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert stopped.returncode == 143, stopped_err
    assert other.returncode == 5, other_err
    assert "stopped by SIGTERM" in other_err        # the peer was told why
    assert own_segments(send.pid) == [] and own_segments(recv.pid) == []


def test_killed_runs_are_listed_by_doctor_and_removed_by_any_command(tmp_path, capsys):
    from engine.cli import main

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    name = f"mfd-{pid}-0123abcd-pc.ram"
    Path(SHM_DIR, name).write_bytes(b"x" * 8192)     # what a SIGKILLed run leaves
    try:
        with SharedSegment.create("mine", 4096) as mine:   # a live process's segment stays
            assert main(["doctor"]) == 0
            out = capsys.readouterr().out
            assert name in out and "doctor --clean" in out and mine.name not in out
            assert Path(SHM_DIR, name).exists()                 # doctor alone only lists
            assert main(["doctor", "--clean"]) == 0
            assert not Path(SHM_DIR, name).exists()
            Path(SHM_DIR, name).write_bytes(b"x")
            main(["report", str(tmp_path / "missing.json")])   # any command, even one that fails
            assert not Path(SHM_DIR, name).exists()
            assert Path(SHM_DIR, mine.name).exists()
            mine.unlink()
    finally:
        Path(SHM_DIR, name).unlink(missing_ok=True)
