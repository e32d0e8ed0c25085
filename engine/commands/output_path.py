"""Output paths a command will write, checked before the work starts.

A run that takes minutes should not fail at its last step because
``--json`` names a directory that does not exist.  ``-`` is standard
output and always fine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from engine.errors import UsageError

STDOUT = "-"


def check_output_file(path: str | None, option: str) -> None:
    """``UsageError`` unless ``path`` (a file to create or replace) can be written."""
    if path is None or path == STDOUT:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot be written (read-only or no permission)")


def check_output_dir(path: str | os.PathLike | None, option: str) -> None:
    """``UsageError`` unless ``path`` is a writable directory or can be created as one."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a directory")
    existing = next(p for p in (target, *target.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot be written (read-only or no permission)")


def text_stream(json_path: str | None) -> TextIO:
    """Where the text report goes: standard error when the JSON takes standard output."""
    return sys.stderr if json_path == STDOUT else sys.stdout
