"""Sweeps on a real local Dask cluster: a scheduler and two workers ("nodes"), all on 127.0.0.1.

The cluster is started here and stopped through its processes' own PIDs.
Each worker is started as the docs say (``--resources node=1 --nworkers 1``),
with no dashboard, and the HTTP endpoint every scheduler and worker opens
even then (health, metrics) is bound to 127.0.0.1 too: nothing listens on or
connects to any other address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the cluster extra: pip install 'multifd-engine[cluster]'")

from engine.cli import main  # noqa: E402
from engine.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_PEER  # noqa: E402
from engine.report.schema import load_report  # noqa: E402
from engine.sweep.loopback import HOST, LoopbackCluster  # noqa: E402
from test_interrupt import children_of, own_segments as segments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def busy_worker(cluster: LoopbackCluster, timeout: float = 60) -> tuple[int, int]:
    """(Dask worker process, its job's process) of a job under way: its shared memory exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in (p for nanny in cluster.nannies for p in children_of(nanny.pid)):
            for job in children_of(worker):
                if len(segments(job)) >= 3:
                    return worker, job
        time.sleep(0.05)
    raise AssertionError("no worker started a job")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    started = LoopbackCluster(tmp, workers=2)
    try:
        yield started
    finally:
        started.stop()


def sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def jobs_of(path: Path) -> list[dict]:
    return load_report(path)["jobs"]


# two channels: packets go to the channels in turn and a page's stream does not depend on the
# worker (docs/concepts.md, Channels), so every byte count is the same here and on the cluster
SAME = ('[base.run]\nrounds = 2\n[base.workload]\nsize = "8MiB"\n[base.migration]\nchannels = 2\n'
        '[matrix]\nmigration.method = ["zstd", "qpl"]\nworkload.seed = [3, 4]\n')


def test_cluster_runs_every_job_with_the_local_results(cluster, tmp_path, capsys):
    path = sweep_file(tmp_path, SAME)
    assert main(["sweep", str(path), "--json", str(tmp_path / "local.json"), "-q"]) == EXIT_OK
    assert main(["sweep", str(path), "--cluster", cluster.address, "--json",
                 str(tmp_path / "cluster.json"), "-q"]) == EXIT_OK
    assert "4 of 4 jobs ok" in capsys.readouterr().out
    local, remote = jobs_of(tmp_path / "local.json"), jobs_of(tmp_path / "cluster.json")
    assert load_report(tmp_path / "cluster.json")["executor"] == cluster.address
    for here, there in zip(local, remote, strict=True):
        assert there["status"] == "ok" and there["attempts"] == 1 and there["workers"]
        assert there["report"]["config"]["workload"]["seed"] == here["axes"]["workload.seed"]
        for key in ("pages", "bytes_on_wire", "payload_bytes", "zero_pages", "verified"):
            assert here["report"]["totals"][key] == there["report"]["totals"][key], key
        assert ([r["wire_bytes"] for r in here["report"]["rounds"]]
                == [r["wire_bytes"] for r in there["report"]["rounds"]])


def test_a_worker_killed_mid_job_is_retried_not_lost(cluster, tmp_path):
    path = sweep_file(tmp_path, '[base.run]\nrounds = 30\n[base.workload]\nsize = "16MiB"\n'
                      '[base.migration]\nchannels = 1\n[matrix]\nworkload.seed = [1, 2]\n')
    report = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sweep", str(path), "--cluster",
                             cluster.address, "--json", str(report), "-q"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim, job_process = busy_worker(cluster)
        os.kill(victim, signal.SIGKILL)      # the node's worker dies mid-job; its nanny restarts it
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_OK, out + err
    data = load_report(report)
    assert [j["status"] for j in data["jobs"]] == ["ok", "ok"]
    retried = data["summary"]["retried"]
    assert len(retried) == 1, data["jobs"]
    job = data["jobs"][retried[0]]
    assert job["attempts"] == 2 and job["retried"] is True and len(job["workers"]) == 2
    assert job["report"]["totals"]["verified"] is True
    cluster.wait_for_workers(2)
    deadline = time.monotonic() + 10          # the orphaned job stopped and released its memory
    while time.monotonic() < deadline and segments(job_process):
        time.sleep(0.1)
    assert segments(job_process) == [], "the killed worker's job left its shared memory"


def test_ctrl_c_cancels_running_jobs_and_keeps_finished_ones(cluster, tmp_path):
    path = sweep_file(tmp_path, '[base.workload]\nsize = "32MiB"\n[base.migration]\nchannels = 1\n'
                      '[matrix]\nrun.rounds = [1, 400]\nworkload.seed = [1, 2]\n')
    report = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sweep", str(path), "--cluster",
                             cluster.address, "--json", str(report), "-v"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        finished = [proc.stdout.readline(), proc.stdout.readline()]   # -v: the two short jobs
        assert [line[:5] for line in finished] == ["[1/4]", "[2/4]"], finished + [proc.stderr.read()]
        _, busy = busy_worker(cluster)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C on the machine that runs `sweep`
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED, err
    data = load_report(report)
    assert data["summary"]["interrupted"] is True
    assert [j["status"] for j in data["jobs"]] == ["ok", "ok", "not-run", "not-run"]
    deadline = time.monotonic() + 15          # the running job stopped: its engine is gone
    while time.monotonic() < deadline and segments(busy):
        time.sleep(0.1)
    assert segments(busy) == []


def test_unreachable_scheduler_is_exit_5(tmp_path, capsys, monkeypatch):
    from engine.sweep import cluster

    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 2.0)
    path = sweep_file(tmp_path, '[matrix]\nmigration.method = ["zstd"]\n')
    import socket

    with socket.socket() as s:                 # a loopback port nobody listens on
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    assert main(["sweep", str(path), "--cluster", f"tcp://{HOST}:{port}"]) == EXIT_PEER
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_an_image_a_node_cannot_read_fails_that_job_only(cluster, tmp_path, monkeypatch):
    from engine.sweep.cluster import run_on_cluster
    from engine.sweep.spec import load_sweep
    from test_sweep import write_image

    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.ram", 1, 1 << 20)
    write_image(tmp_path / "b.ram", 2, 1 << 20)
    sweep = load_sweep(sweep_file(tmp_path, '[base.run]\nrounds = 1\n[base.migration]\nchannels = 1\n'
                                  '[matrix]\nimages = ["a.ram", "b.ram"]\n'))
    (tmp_path / "b.ram").unlink()            # gone after the check: the node does not see it
    outcome = run_on_cluster(sweep, cluster.address)
    assert [r.status for r in outcome.results] == ["ok", "error"]
    assert "workload.image" in outcome.results[1].error and "b.ram" in outcome.results[1].error
    assert outcome.results[1].attempts == 1           # a config error is not retried


def test_a_scheduler_without_node_workers_says_how_to_start_them(tmp_path, capsys, monkeypatch):
    from engine.sweep import cluster as executor

    monkeypatch.setattr(executor, "WORKER_WAIT_SECONDS", 1.0)
    path = sweep_file(tmp_path, '[matrix]\nmigration.method = ["zstd"]\n')
    with LoopbackCluster(tmp_path, workers=0) as empty:
        assert main(["sweep", str(path), "--cluster", empty.address]) == EXIT_PEER
    assert "--resources node=1" in capsys.readouterr().err
