"""``-q`` / ``-v``: how much a command prints.

quiet: only the final verdict line (the exit status says the rest), no
progress display; normal: the report (rounds, totals, channels); verbose:
the report with where each packet's time went and the page-size
histogram (``recv``: every counter of every channel; ``stress``: a line
per finished round).
"""

from __future__ import annotations

import argparse

from engine.report.run import NORMAL, QUIET, VERBOSE


RUN_DETAIL = ("also where each packet's time went (zero scan, compress, write), the payload "
              "size histogram, and the full reason for the work-queue path")


def add_arguments(parser: argparse.ArgumentParser, verbose: str = RUN_DETAIL) -> None:
    """``-q`` and ``-v``; ``verbose`` says what ``-v`` adds for this command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_const", dest="verbosity", const=QUIET,
                       default=NORMAL, help="print only the final verdict line; no progress display")
    group.add_argument("-v", "--verbose", action="store_const", dest="verbosity", const=VERBOSE,
                       help=verbose)
