"""Replay the fuzz target's seed corpus and every input it ever flagged.

``fuzz/fuzz_decoder.py`` is the atheris target; the inputs in
``fuzz/regressions/`` once made it find something.  Each one must now be
decoded or refused with a WireError, inside the fence, quickly.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
INPUTS = sorted(p for d in ("corpus", "regressions") for p in (FUZZ / d).iterdir()
                if p.is_file() and p.suffix != ".md")


def _target():
    spec = importlib.util.spec_from_file_location("fuzz_decoder", FUZZ / "fuzz_decoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TARGET = _target()


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_fuzz_input_is_handled(path):
    started = time.monotonic()
    TARGET.test_one_input(path.read_bytes())
    assert time.monotonic() - started < 5.0


def test_target_reports_a_write_outside_the_block():
    """The fence check can fail: a target whose fence is dirtied says so."""
    target = TARGET._Target(4096)
    target.reset()
    target.whole[0, 0] ^= 1
    with pytest.raises(TARGET.FindingError, match="outside the destination block"):
        target.check(set())
    target.reset()
    target.whole[TARGET.GUARD + 3, 7] ^= 1
    with pytest.raises(TARGET.FindingError, match="no decoded header named"):
        target.check({1, 2})
    target.check({3})
