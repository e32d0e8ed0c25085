"""``--set section.key=value``: change one config key on the command line.

The value is read as a TOML value (``2``, ``false``, ``0.2``, ``"text"``);
a value that is not TOML is taken as a string as written (``zstd``,
``64MiB``, ``auto``).  A key whose default is a string keeps a number as
written too, so ``migration.qemu_version=7.2`` is the string "7.2".  The
result goes through the same validation as a file: an unknown key or a
bad value is a ``ConfigError`` naming ``section.key``.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Sequence

from engine.config import Config, read_toml
from engine.errors import ConfigError


def load_config_with(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """The config in ``path`` (None: the built-in default) with ``overrides`` applied."""
    data = read_toml(path) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_key(data, keys, value)
    return Config.from_dict(data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"section.key=value"`` -> (["section", "key"], value)."""
    name, sep, raw = text.partition("=")
    keys = name.strip().split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise ConfigError(name.strip(), f"--set {text!r}: expected section.key=value")
    return keys, _value(keys, raw.strip())


def _value(keys: list[str], raw: str) -> Any:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    if isinstance(value, float) and isinstance(_default(keys), str):
        return raw          # a version like 7.2 is text
    return value


def _default(keys: list[str]) -> Any:
    value: Any = Config().as_dict()
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def set_key(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """``data[k0][k1]... = value``, making tables on the way."""
    table = data
    for depth, key in enumerate(keys[:-1]):
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(".".join(keys[:depth + 1]), "is a value, not a table")
    table[keys[-1]] = value
