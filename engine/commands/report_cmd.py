"""``multifd-engine report REPORT.json [...] [--plot OUT.png]``: read, compare, draw reports."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from engine.commands.output_path import check_output_file
from engine.errors import ReportError, UsageError
from engine.exit_codes import EXIT_OK, EXIT_USAGE

PLOT_HINT = "plotting needs matplotlib: pip install 'multifd-engine[plot]'"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print reports (run, send, recv, bench, stress, sweep JSON) as "
                       "tables, or draw them with --plot")
    p.add_argument("reports", nargs="+", metavar="REPORT.json",
                   help="reports written with --json (several: compared side by side)")
    p.add_argument("--plot", metavar="OUT.png", help="draw a PNG instead of printing tables "
                   "(needs the 'plot' extra: matplotlib)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.report.schema import load_report
    from engine.report.table import all_rows, format_comparison, format_details

    for path in args.reports:
        if not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    check_output_file(args.plot, "--plot")
    if args.plot:
        try:
            from engine.report.plot import plot_reports
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("matplotlib"):
                raise
            print(f"error: {PLOT_HINT}", file=sys.stderr)
            return EXIT_USAGE
    reports = [(path, load_report(path)) for path in args.reports]
    if args.plot:
        with _malformed(args.reports):
            plot_reports(reports, args.plot)
        print(f"wrote {args.plot}")
        return EXIT_OK
    with _malformed(args.reports):
        text = format_details(reports[0][1], reports[0][0]) if len(reports) == 1 else ""
        if len(reports) > 1 or reports[0][1]["kind"] != "sweep":   # a sweep's details compare already
            text += ("\n\n" if text else "") + format_comparison(all_rows(reports))
    print(text)
    return EXIT_OK


@contextmanager
def _malformed(paths: list[str]):
    """A report that passed the schema check but whose inner values are not what
    the engine writes (a number where a list belongs, a bucket too short) is bad
    input too, not a traceback."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        raise ReportError(f"a value inside is not what this engine writes ({type(exc).__name__}: "
                          f"{exc})", path=", ".join(paths)) from exc
