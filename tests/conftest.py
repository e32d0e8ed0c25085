"""Shared fixtures: where the real QEMU data is, and a /dev/shm leak check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shm_segments(pid: int | None = None) -> set[str]:
    """Our segments in /dev/shm: made by ``pid`` (default: this process)."""
    prefix = f"mfd-{os.getpid() if pid is None else pid}-"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip that says it is missing (CI has it)."""
    if not (SHARED_DATA / "wl3" / "manifest.json").is_file():
        pytest.skip(f"real QEMU captures not found at {SHARED_DATA.resolve()} (CI has them)")
    return SHARED_DATA


@pytest.fixture
def no_shm_leak():
    """Fails the test if it leaves shared-memory segments of ours behind."""
    before = shm_segments()
    yield
    leaked = shm_segments() - before
    assert not leaked, f"leaked /dev/shm segments: {sorted(leaked)}"
