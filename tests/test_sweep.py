"""Sweeps on this machine: the sweep file, its validation, the jobs, the report, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.exit_codes import EXIT_ENGINE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from engine.errors import ConfigError
import engine.sweep as sweep_package
from engine.report.schema import load_report
from engine.sweep.report import best_per_guest, pareto_front, points
from engine.sweep.spec import load_sweep

from conftest import SHARED_DATA
from test_interrupt import own_segments as segments

ROOT = Path(__file__).resolve().parents[1]
WL3 = SHARED_DATA / "wl3" / "image.ram.zst"
SMALL = '[base.run]\nrounds = 2\n[base.workload]\nsize = "4MiB"\n'


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def write_image(path: Path, seed: int, size: int = 4 << 20) -> Path:
    """A raw guest image: a quarter zero pages, the rest half text-like, half random."""
    rng = np.random.default_rng(seed)
    pages = size // 4096
    data = np.zeros((pages, 4096), dtype=np.uint8)
    data[pages // 4: pages // 2] = rng.integers(0, 256, (pages // 2 - pages // 4, 4096), dtype=np.uint8)
    data[pages // 2:] = rng.integers(97, 101, (pages - pages // 2, 4096), dtype=np.uint8)
    path.write_bytes(data.tobytes())
    return path


# ---- the sweep file ---------------------------------------------------------

def test_matrix_expands_to_jobs_without_settings_a_method_ignores(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL + '[matrix]\nmigration.method = ["none", "qpl"]\n'
                             'migration.compression = ["fast", "balanced"]\n'
                             'migration.channels = [1, 2]\n'))
    labels = [(j.method, j.setting) for j in sweep.jobs]
    assert labels == [("none", "1 ch"), ("none", "2 ch"), ("qpl", "fast, 1 ch"), ("qpl", "fast, 2 ch"),
                      ("qpl", "balanced, 1 ch"), ("qpl", "balanced, 2 ch")]
    assert all(j.config["run"]["rounds"] == 2 for j in sweep.jobs)
    assert "compression" not in sweep.jobs[0].config.get("migration", {})
    assert [j.index for j in sweep.jobs] == list(range(6))


def test_images_globs_expand_and_size_is_left_out_for_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        write_image(tmp_path / f"g{i}.ram", i, 1 << 20)
    base = tmp_path / "base.toml"
    base.write_text("[run]\nrounds = 1\n")
    sweep = load_sweep(write(tmp_path, f'base = "{base}"\n[matrix]\n'
                             'images = ["g*.ram", "synthetic"]\nworkload.size = ["1MiB", "2MiB"]\n'))
    assert [j.guest for j in sweep.jobs] == ["g0.ram", "g1.ram", "synthetic 1MiB", "synthetic 2MiB"]
    assert sweep.jobs[0].config["workload"] == {"source": "image", "image": str(tmp_path / "g0.ram")}
    assert sweep.matrix["images"] == [str(tmp_path / "g0.ram"), str(tmp_path / "g1.ram"), "synthetic"]


@pytest.mark.parametrize("text, key", [
    ('[matrix]\nimages = ["nothing-here-*.ram"]\n', "matrix.images"),
    ('[matrix]\nmigration.method = ["zstd", "lz4"]\n', "matrix.migration.method"),
    ('[matrix]\nmigration.channels = [1, 0]\n', "matrix.migration.channels"),
    ('[matrix]\nmigration.colour = ["red"]\n', "matrix.migration.colour"),
    ('[matrix]\nmigration.method = "qpl"\n', "matrix.migration.method"),
    ('[matrix]\nmigration.method = []\n', "matrix.migration.method"),
    ('[matrix]\nmigration.channels = [1, 1]\n', "matrix.migration.channels"),
    ('[matrix]\nmigration.channels = [[1, 2]]\n', "matrix.migration.channels"),
    ('[matrix]\nworkload.image = ["x.ram"]\n', "matrix.workload.image"),
    ('[matrix]\nstress.rounds = [1]\n', "matrix.stress.rounds"),
    ('[base.run]\nrounds = 0\n', "base.run.rounds"),
    ('[base.run]\nverify = false\n', "base.run.verify"),
    ('[base.sink]\nkind = "file"\n', "base.sink.kind"),
    ('base = "no-such-base.toml"\n', "base"),
    ('[sweep]\nretries = -1\n', "sweep.retries"),
    ('[sweep]\ntime_budget = 0.5\n', "sweep.time_budget"),
    ('[sweep]\ncolour = 1\n', "sweep.colour"),
    ('[matrix]\nmigration.method = ["zstd", "qpl"]\n[base.migration]\nmethod = "zstd"\n'
     'qemu_version = "8.2"\n', "matrix.migration.method"),
])
def test_bad_sweep_is_refused_before_any_job_naming_the_key(tmp_path, capsys, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    assert caught.value.key == key, str(caught.value)
    report = tmp_path / "r.json"
    assert main(["sweep", str(path), "--json", str(report)]) == EXIT_USAGE
    assert key in capsys.readouterr().err
    assert not report.exists()


# ---- running it -------------------------------------------------------------

@pytest.mark.usefixtures("no_shm_leak")
def test_local_sweep_over_wl3_and_synthetic_methods_by_channels(tmp_path, capsys):
    images = ([str(WL3)] if WL3.is_file() else []) + ["synthetic"]
    path = write(tmp_path, '[base.run]\nrounds = 1\n[base.workload]\nsize = "16MiB"\n'
                 f'[matrix]\nimages = {json.dumps(images)}\n'
                 'migration.method = ["none", "qpl"]\nmigration.channels = [1, 2]\n'
                 '[sweep]\nname = "methods"\n')
    report_path = tmp_path / "sweep.json"
    assert main(["sweep", str(path), "--json", str(report_path), "-q"]) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"sweep: {4 * len(images)} of {4 * len(images)} jobs ok")
    data = load_report(report_path)            # the schema, each job's run report included
    assert data["kind"] == "sweep" and data["executor"] == "local"
    assert len(data["jobs"]) == 4 * len(images)
    for job in data["jobs"]:
        run = job["report"]
        assert job["status"] == "ok" and run["totals"]["verified"] is True
        assert (run["method"], run["channels"]) == (job["axes"]["migration.method"],
                                                     job["axes"]["migration.channels"])
        assert [r["mismatched_pages"] for r in run["rounds"]] == [0]
    summary = data["summary"]
    assert (summary["ok"], summary["errors"], summary["retried"]) == (4 * len(images), 0, [])
    for best in summary["best"]:
        group = [p for p in points(data) if p.guest == best["guest"]]
        assert best["fastest"] == min(group, key=lambda p: p.seconds).index
        frugal = next(p for p in group if p.index == best["fewest_bytes_within_budget"])
        assert frugal.seconds <= best["budget_seconds"]
        assert frugal.wire_bytes == min(p.wire_bytes for p in group if p.seconds <= best["budget_seconds"])
        front = pareto_front(group)
        assert front[0].index == best["fastest"] and len({p.index for p in front}) == len(front)
    if WL3.is_file():                          # the real guest compresses; `none` does not
        wl3 = {(p.method, p.wire_bytes) for p in points(data) if p.guest.endswith("image.ram.zst")}
        assert min(b for m, b in wl3 if m == "qpl") < 0.6 * min(b for m, b in wl3 if m == "none")

    assert main(["report", str(report_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "guest synthetic 16MiB: 4 job(s)" in out and "fastest" in out
    assert "best by time:" in out
    png = tmp_path / "sweep.png"
    assert main(["report", str(report_path), "--plot", str(png)]) == EXIT_OK
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.usefixtures("no_shm_leak")
def test_a_failing_job_in_the_middle_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.ram", 1)
    (tmp_path / "b.ram.zst").write_bytes(b"this is not zstd at all" * 100)
    write_image(tmp_path / "c.ram", 2)
    path = write(tmp_path, '[base.run]\nrounds = 1\n[matrix]\n'
                 'images = ["a.ram", "b.ram.zst", "c.ram"]\nmigration.method = ["zstd"]\n')
    assert main(["sweep", str(path), "--json", "r.json"]) == EXIT_ENGINE
    out = capsys.readouterr().out
    assert "job 1 (b.ram.zst | zstd)" in out
    data = load_report(tmp_path / "r.json")
    assert [j["status"] for j in data["jobs"]] == ["ok", "error", "ok"]
    assert "b.ram.zst" in data["jobs"][1]["error"] or "zst" in data["jobs"][1]["error"].lower()
    assert data["jobs"][1]["report"] is None
    assert data["summary"]["errors"] == 1 and data["summary"]["ok"] == 2


def test_ctrl_c_keeps_the_finished_jobs(tmp_path):
    path = write(tmp_path, '[base.workload]\nsize = "32MiB"\n[base.migration]\nchannels = 2\n'
                 '[matrix]\nrun.rounds = [1, 200]\n')
    report = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sweep", str(path), "-v",
                             "--json", str(report)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()         # -v: a line per finished job
        assert first.startswith("[1/2] job 0"), first + proc.stderr.read()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(segments(proc.pid)) < 3:
            time.sleep(0.05)                   # the second job's RAM and slots: it is running
        assert len(segments(proc.pid)) >= 3
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    data = load_report(report)
    assert [j["status"] for j in data["jobs"]] == ["ok", "not-run"]
    assert data["summary"]["interrupted"] is True
    assert segments(proc.pid) == []


def test_best_by_bytes_stays_within_the_time_budget():
    def job(index, seconds, wire):
        return {"index": index, "guest": "g", "method": "m", "setting": str(index), "status": "ok",
                "error": None, "attempts": 1,
                "report": {"totals": {"send_seconds": seconds, "guest_bytes": 100,
                                      "bytes_on_wire": wire}}}
    data = {"jobs": [job(0, 1.0, 90), job(1, 1.2, 60), job(2, 1.3, 50), job(3, 5.0, 10)]}
    best = best_per_guest(points(data), 1.25)[0]
    assert (best.fastest, best.fewest_bytes_within_budget) == (0, 1)
    assert [p.index for p in pareto_front(points(data))] == [0, 1, 2, 3]
    assert best_per_guest(points(data), 1.3)[0].fewest_bytes_within_budget == 2


def test_cluster_without_dask_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)      # import distributed fails
    monkeypatch.delitem(sys.modules, "engine.sweep.cluster", raising=False)
    monkeypatch.delattr(sweep_package, "cluster", raising=False)   # an earlier import's binding
    path = write(tmp_path, SMALL + '[matrix]\nmigration.method = ["zstd"]\n')
    assert main(["sweep", str(path), "--cluster", "tcp://127.0.0.1:8786"]) == EXIT_USAGE
    assert "pip install 'multifd-engine[cluster]'" in capsys.readouterr().err
