"""The optional CONFIG argument of the job commands, and how it resolves.

No argument means ``config/default.toml`` when the current directory has
one (a checkout), else the same values built in (``engine.config``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import Config, load_config

DEFAULT_CONFIG = Path("config/default.toml")


def add_config_argument(parser: argparse.ArgumentParser, what: str = "TOML config") -> None:
    parser.add_argument("config", nargs="?", help=f"{what} (default: {DEFAULT_CONFIG} if it "
                        "exists, else the same values built in)")


def config_path(args: argparse.Namespace) -> str | Path | None:
    """The file the config comes from; None for the built-in values."""
    return args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)


def config_from(args: argparse.Namespace) -> Config:
    """The config the command line names, or the default one."""
    return load_config(config_path(args))
