"""Sizes and durations as a config writes them: "256MiB", "10m".

A leaf module (it imports only the error types), so every settings module
can parse its values without importing ``engine.config``.
"""

from __future__ import annotations

import re
from typing import Any

from engine.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|K|M|G)?\s*$")
_UNITS = {None: 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20,
          "G": 1 << 30, "GiB": 1 << 30}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600}


def parse_size(key: str, value: Any) -> int:
    """Bytes from an int or a string like "256MiB"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(key, f"{value!r} is not a size (bytes, or e.g. \"64MiB\", \"1GiB\")")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_duration(key: str, value: Any) -> float:
    """Seconds from a number or a string like "90s", "10m", "2h"; "" = 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if value == "":
        return 0.0
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(key, f"{value!r} is not a duration (seconds, or e.g. \"90s\", \"10m\", \"2h\")")
    return float(match.group(1)) * _SECONDS[match.group(2)]
