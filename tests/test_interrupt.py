"""Ctrl-C in the middle of a run: exit status 130, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def own_segments(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{pid}-")]


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_ctrl_c_releases_workers_and_shared_memory(tmp_path):
    cfg = tmp_path / "big.toml"
    cfg.write_text('[run]\nrounds = 50\n[workload]\nsize = "64MiB"\n[migration]\nchannels = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(cfg), "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(own_segments(proc.pid)) < 3:
            time.sleep(0.1)                   # RAM block + two slot segments: workers are up
        assert len(own_segments(proc.pid)) >= 3, "the run never got going"
        workers = children_of(proc.pid)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)    # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert own_segments(proc.pid) == []
    # children (workers, and multiprocess's resource tracker, which leaves
    # when its parent's pipe closes) are gone within a few seconds
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
