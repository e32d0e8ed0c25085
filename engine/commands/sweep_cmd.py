"""``multifd-engine sweep SWEEP.toml``: many guests x settings, here or on a Dask cluster."""

from __future__ import annotations

import argparse
import sys

from engine.commands import verbosity
from engine.commands.output_path import check_output_file, text_stream
from engine.commands.sweep_progress import SweepProgress
from engine.exit_codes import EXIT_ENGINE, EXIT_INTERRUPTED, EXIT_OK, EXIT_PEER, EXIT_USAGE, EXIT_VERIFY
from engine.report.run import QUIET, VERBOSE

CLUSTER_HINT = ("--cluster needs Dask distributed: pip install 'multifd-engine[cluster]' "
                "(on this machine and on every node)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run every job of a sweep file (guests x settings), each "
                       "verified, and compare them; locally or on a Dask cluster")
    p.add_argument("sweep", metavar="SWEEP.toml", help="the sweep file: a base config and a "
                   "[matrix] of values (docs/sweeps.md)")
    p.add_argument("--json", metavar="PATH", help="also write the sweep report as JSON")
    p.add_argument("--cluster", metavar="tcp://HOST:PORT", help="run the jobs as tasks of this "
                   "Dask scheduler (workers started with --resources node=1); default: one after "
                   "another here")
    verbosity.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.batch import engine_version
    from engine.sweep.local import run_locally
    from engine.sweep.report import format_sweep, sweep_report, verdict_line, write_sweep_report
    from engine.sweep.spec import load_sweep

    cluster, unavailable = None, _Never
    if args.cluster:
        try:
            from engine.sweep import cluster
        except ModuleNotFoundError as exc:
            if not (exc.name or "").split(".")[0] in ("dask", "distributed"):
                raise
            print(f"error: {CLUSTER_HINT}", file=sys.stderr)
            return EXIT_USAGE
        unavailable = cluster.ClusterUnavailable
    sweep = load_sweep(args.sweep)
    check_output_file(args.json, "--json")
    check_output_file(sweep.settings.report or None, "sweep.report")
    progress = SweepProgress(sys.stderr, len(sweep.jobs), live=args.verbosity > QUIET,
                             log_stream=sys.stdout if args.verbosity >= VERBOSE else None,
                             running_label="running" if cluster else "now")
    try:
        if cluster is not None:
            outcome = cluster.run_on_cluster(sweep, args.cluster, progress)
        else:
            outcome = run_locally(sweep, progress)
    except unavailable as exc:
        print(f"connection failed: {exc}", file=sys.stderr)
        return EXIT_PEER
    finally:
        progress.finish()
    data = sweep_report(sweep, outcome, engine_version=engine_version())
    for path in dict.fromkeys(p for p in (args.json, sweep.settings.report) if p):
        write_sweep_report(path, data)
    print(format_sweep(data) if args.verbosity > QUIET else verdict_line(data),
          file=text_stream(args.json), flush=True)
    if outcome.interrupted:
        print("interrupted: the finished jobs are in the report", file=sys.stderr)
        return EXIT_INTERRUPTED
    if data["summary"]["errors"] or data["summary"]["not_run"]:
        return EXIT_ENGINE
    return EXIT_VERIFY if data["summary"]["verify_failed"] else EXIT_OK


class _Never(Exception):
    """Stands in for ClusterUnavailable on a local sweep (nothing raises it)."""
