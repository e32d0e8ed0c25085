"""The import rule between engine/ and workers/ (docs/development.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANYWHERE = {"engine.errors", "engine.ram", "engine.wire"}
ENTRY_POINT = {"workers/worker.py": {"engine.methods"}}


def engine_imports(source: str) -> set[str]:
    """Every engine module ``source`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "engine")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine":     # from engine import errors: the module engine.errors
                found.update(f"engine.{a.name}" for a in node.names)
            elif node.module.split(".")[0] == "engine":
                found.add(node.module)
    return found


def test_the_rule_sees_every_import_form():
    source = ("import engine.wire\nfrom engine import errors, methods\n"
              "def f():\n    from engine.report.run import Report\n")
    assert engine_imports(source) == {"engine.wire", "engine.errors", "engine.methods",
                                      "engine.report.run"}


def test_workers_import_only_what_the_rule_allows():
    files = sorted((ROOT / "workers").rglob("*.py"))
    assert files, "no workers/ sources found"
    broken = []
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        allowed = ANYWHERE | ENTRY_POINT.get(name, set())
        for module in sorted(engine_imports(path.read_text())):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                broken.append(f"{name} imports {module}")
    assert not broken, "workers/ breaks the import rule in docs/development.md: " + "; ".join(broken)


def test_a_worker_process_loads_no_other_engine_module():
    code = ("import sys, workers.worker\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'engine'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    allowed = ANYWHERE | {"engine"} | ENTRY_POINT["workers/worker.py"]
    assert "engine.methods" in out
    assert [m for m in out if not any(m == a or m.startswith(a + ".") for a in allowed)] == []
