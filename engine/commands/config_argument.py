"""The optional CONFIG argument of the job commands, ``--set``, and how they resolve.

No argument means ``config/default.toml`` when the current directory has
one (a checkout), else the default config shipped with the package (the
same values, built in: ``engine.config``).  ``--set section.key=value``
(repeatable) changes keys after the file is read, validated like it
(``engine.config_overrides``).
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from engine.config import Config
from engine.config_overrides import load_config_with

DEFAULT_CONFIG = Path("config/default.toml")


def add_config_argument(parser: argparse.ArgumentParser, what: str = "TOML config") -> None:
    parser.add_argument("config", nargs="?", help=f"{what} (default: {DEFAULT_CONFIG} if it "
                        "exists, else the same values built in)")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        dest="overrides", help="change one config key, e.g. --set "
                        "migration.method=zstd (repeatable; checked like the file)")


def config_path(args: argparse.Namespace) -> str | Path | None:
    """The file the config comes from; None for the built-in values."""
    return args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else shipped_default())


def shipped_default() -> Path | None:
    """``default.toml`` as installed with a wheel; None in a checkout (it has config/)."""
    try:
        path = files("engine.ready_configs") / "default.toml"
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def config_from(args: argparse.Namespace) -> Config:
    """The config the command line names, or the default one, with its ``--set``s."""
    return load_config_with(config_path(args), getattr(args, "overrides", ()))
