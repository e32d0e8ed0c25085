"""``-q`` / ``-v``: how much a command prints.

quiet: only the final verdict line (the exit status says the rest), no
progress display; normal: the report; verbose: the report with per-round
and per-channel detail (where the time went, page sizes).
"""

from __future__ import annotations

import argparse

from engine.report.run import NORMAL, QUIET, VERBOSE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_const", dest="verbosity", const=QUIET,
                       default=NORMAL, help="print only the final verdict line; no progress display")
    group.add_argument("-v", "--verbose", action="store_const", dest="verbosity", const=VERBOSE,
                       help="also per-round and per-channel detail")
