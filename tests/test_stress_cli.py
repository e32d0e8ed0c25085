"""`multifd-engine stress` as a user runs it: summary, JSON, exit status, and
nothing left behind (processes, /dev/shm, temporary files) after a failed
run or Ctrl-C; memory flat however many rounds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


NO_FAULTS = {"kill_rate": "0.0", "corrupt_rate": "0.0", "slow_reader_rate": "0.0",
             "stop_reader_rate": "0.0"}


def write_config(tmp_path: Path, stress: dict[str, str], extra: str = "") -> Path:
    cfg = tmp_path / "stress.toml"
    keys = "".join(f"{k} = {v}\n" for k, v in {**NO_FAULTS, **stress}.items())
    cfg.write_text('[workload]\nsize = "4MiB"\n[migration]\nchannels = 2\n'
                   '[transport]\nstall_timeout = 10.0\n' + extra + "[stress]\n" + keys)
    return cfg


def group_members(pgid: int) -> list[int]:
    """Processes still in the run's process group (workers included)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def start(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "stress", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out.decode(), err.decode()


def assert_nothing_left(proc: subprocess.Popen, tmp_path: Path) -> None:
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(proc.pid) == []
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{proc.pid}-")] == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_summary_and_json(tmp_path):
    cfg = write_config(tmp_path, {"rounds_per_migration": "2", "methods": '["qpl", "none"]'})
    report = tmp_path / "summary.json"
    proc = start(tmp_path, str(cfg), "--rounds", "3", "--seed", "77", "--workers", "2",
                 "--json", str(report))
    out, err = finish(proc)
    assert proc.returncode == 0, out + err
    assert "seed                77" in out and "pages lost          0" in out
    assert "result              ok" in out
    data = json.loads(report.read_text())
    assert data["seed"] == 77 and data["rounds"] == 3 and data["ok"] is True
    assert data["pages_lost"] == 0 and data["unexpected_errors"] == []
    assert data["channels"] == 2 and data["packets"] > 0 and data["throughput_mb_s"] > 0
    assert set(data["peak_rss"]) == {"coordinator", "worker"}
    assert_nothing_left(proc, tmp_path)


def test_a_worker_that_keeps_dying_ends_the_run_and_leaves_nothing(tmp_path):
    cfg = write_config(tmp_path, {"methods": '["qpl"]', "kill_rate": "1.0"},
                       extra="[run]\nworker_restarts = 1\n")
    proc = start(tmp_path, str(cfg), "--rounds", "3")
    out, err = finish(proc)
    assert proc.returncode == 4, out + err
    assert "ended early         BrokenWorker" in out
    assert "died 2 times in a row, more than run.worker_restarts = 1" in out
    assert_nothing_left(proc, tmp_path)


def test_ctrl_c_stops_cleanly_and_leaves_nothing(tmp_path):
    cfg = write_config(tmp_path, {"rounds": "1000", "kill_rate": "0.02"})
    proc = start(tmp_path, str(cfg))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(
                [n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{proc.pid}-")]) < 3:
            time.sleep(0.1)                   # RAM blocks and slots: a migration is running
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "ended early         interrupted" in out
    assert_nothing_left(proc, tmp_path)


def peak_memory(tmp_path: Path, rounds: int) -> dict:
    cfg = write_config(tmp_path, {"rounds_per_migration": "1000", "methods": '["qpl"]',
                                  "page_sizes": "[4096]", "dirty_fraction": "[0.3, 0.5]"})
    report = tmp_path / f"rss{rounds}.json"
    # A fixed mmap threshold: glibc otherwise raises it when a large block
    # is freed, and from then on keeps such blocks in the heap, so the
    # coordinator's anonymous memory steps up by about 9 MiB in round 3 of
    # one run and round 12 of the next (measured): noise, not growth.
    proc = start(tmp_path, str(cfg), "--rounds", str(rounds), "--seed", "5", "--json", str(report),
                 env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    out, err = finish(proc)
    assert proc.returncode == 0, out + err
    data = json.loads(report.read_text())
    return {"rss": data["peak_rss"], "anon": data["peak_anon"]}


def test_memory_stays_flat_as_rounds_grow(tmp_path):
    """Peak RSS of the coordinator and the workers after 6 and after 18 rounds
    of one migration (the same worker processes throughout).  Both counts are
    past the warm-up (the first page-size binning runs after 32 packets, and
    the receiver's threads take their malloc arenas in the first rounds), so
    what grows between them grows with the rounds."""
    few, many = peak_memory(tmp_path, 6), peak_memory(tmp_path, 18)
    for kind in ("rss", "anon"):
        for process in ("coordinator", "worker"):
            grew = many[kind][process] - few[kind][process]
            assert grew <= 4 << 20, (kind, process, few, many)
