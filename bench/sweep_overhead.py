"""Benchmark: what running jobs as a sweep costs.

The same 8 jobs (a synthetic guest, zstd and qpl x 1 and 2 channels x 2
seeds, every round verified) run three ways, each timed as the wall time a
user waits for the whole batch:

- ``multifd-engine sweep`` on this machine;
- ``multifd-engine sweep --cluster`` on a one-worker Dask cluster on
  127.0.0.1 (scheduler and worker started once, before the timing);
- 8 separate ``multifd-engine run`` commands, one after another.

Medians over ``--runs``, the cases interleaved; prints sweep / separate
(goal <= 1.03) and cluster / separate (goal <= 1.10).

    python bench/sweep_overhead.py [--runs 3] [--size 32MiB] [--rounds 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_report
from timing import interleaved, verdict

from engine.sweep.loopback import LoopbackCluster
from engine.sweep.spec import load_sweep

ENGINE = [sys.executable, "-m", "engine.cli"]
ROOT = Path(__file__).resolve().parents[1]


def sweep_text(size: str, rounds: int) -> str:
    return (f'[base.run]\nrounds = {rounds}\n[base.workload]\nsize = "{size}"\n[matrix]\n'
            'migration.method = ["zstd", "qpl"]\nmigration.channels = [1, 2]\nworkload.seed = [1, 2]\n')


def toml_text(data: dict[str, Any], prefix: str = "") -> str:
    """A config's TOML data written back (tables of scalars and lists; enough for a job)."""
    plain = [f"{key} = {json.dumps(value)}" for key, value in data.items() if not isinstance(value, dict)]
    text = (f"[{prefix}]\n" if prefix and plain else "") + "".join(line + "\n" for line in plain)
    for key, value in data.items():
        if isinstance(value, dict):
            text += toml_text(value, f"{prefix}.{key}" if prefix else key)
    return text


def command(argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="32MiB", help="synthetic guest RAM of each job")
    parser.add_argument("--rounds", type=int, default=4)
    bench_report.add_argument(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        directory = Path(tmp)
        sweep_path = directory / "sweep.toml"
        sweep_path.write_text(sweep_text(args.size, args.rounds))
        jobs = load_sweep(sweep_path).jobs
        configs = []
        for job in jobs:
            configs.append(directory / f"job-{job.index}.toml")
            configs[-1].write_text(toml_text(job.config))
        with LoopbackCluster(directory, workers=1) as cluster:
            local, remote, separate = interleaved(args.runs, {
                f"sweep, {len(jobs)} jobs, here": lambda: command(
                    [*ENGINE, "sweep", str(sweep_path), "-q"]),
                f"sweep --cluster, {len(jobs)} jobs, 1 worker": lambda: command(
                    [*ENGINE, "sweep", str(sweep_path), "-q", "--cluster", cluster.address]),
                f"{len(jobs)} separate run commands": lambda: [command(
                    [*ENGINE, "run", str(path), "-q"]) for path in configs],
            }).values()
    print(f"jobs: {', '.join(j.label for j in jobs)}")
    for timing in (local, remote, separate):
        print(timing.line())
    local_ratio, remote_ratio = local.median / separate.median, remote.median / separate.median
    print(f"sweep / separate runs:   {verdict(local_ratio, 1.03, higher_is_better=False)}")
    print(f"cluster / separate runs: {verdict(remote_ratio, 1.10, higher_is_better=False)}")
    bench_report.write(args.json, bench=__file__, guest=f"synthetic {args.size}, {len(jobs)} jobs",
                       params=args, cases=[bench_report.case(t) for t in (local, remote, separate)],
                       ratios=[bench_report.ratio("sweep / separate", local_ratio, 1.03,
                                                  higher_is_better=False),
                               bench_report.ratio("cluster / separate", remote_ratio, 1.10,
                                                  higher_is_better=False)])


if __name__ == "__main__":
    main()
