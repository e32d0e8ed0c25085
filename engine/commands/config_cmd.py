"""``multifd-engine config show [CONFIG]``: the effective config, every key, as TOML.

What a command would run with: the file (or the default), the ``--set``s,
and every key the file leaves out at its default.  The output is a valid
config, ready to copy into a new file and edit.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.commands.config_argument import (add_config_argument, add_set_argument, config_from,
                                             config_path)
from engine.config import Config

_MIB = 1 << 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective config (every key) as TOML")
    actions = p.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print the effective config, every default included")
    add_config_argument(show)
    add_set_argument(show)
    show.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from engine.exit_codes import EXIT_OK

    config = config_from(args)
    source = config_path(args) or "the built-in defaults"
    overrides = "".join(f" --set {o}" for o in args.overrides)
    print(f"# multifd-engine config show: {source}{overrides}, every key\n")
    print(config_toml(config), end="")
    return EXIT_OK


def config_toml(config: Config) -> str:
    """``config`` as TOML that ``load_config`` reads back to an equal Config."""
    lines: list[str] = []
    for section, values in config.as_dict().items():
        lines += _table(section, values)
    return "\n".join(lines) + "\n"


def _table(name: str, values: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    nested = []
    for key, value in values.items():
        if isinstance(value, dict):
            nested.append((f"{name}.{key}", value))
        else:
            lines.append(f"{key} = {_value(f'{name}.{key}', value)}")
    lines.append("")
    for sub, table in nested:
        lines += _table(sub, table)
    return lines


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "workload.size" and value % _MIB == 0:
        return f'"{value // _MIB}MiB"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)        # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(key, v) for v in value) + "]"
    raise TypeError(f"{key}: no TOML form for {type(value).__name__}")
