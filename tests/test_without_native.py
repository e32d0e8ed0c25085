"""The config and the commands that need no C import without workers._native.

A checkout whose extension is not built (or built for another Python) must
still read configs and print reports; only what runs pages needs the build.
The subprocess gets a ``sitecustomize`` that makes ``workers._native``
unimportable, as on such a checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from engine.batch import run_batch
from engine.config import Config

BLOCKER = textwrap.dedent("""
    import sys

    class NoNativeBuild:
        def find_spec(self, name, path=None, target=None):
            if name == "workers._native":
                raise ImportError("workers._native is not built (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoNativeBuild())
""")

SCRIPT = textwrap.dedent("""
    import sys

    import engine.config
    from engine.cli import main

    config = engine.config.load_config(sys.argv[2])
    assert config.migration.method == "zstd", config.migration
    try:
        import workers.codec
    except ImportError as exc:
        assert "pip install -e ." in str(exc), exc
    else:
        raise AssertionError("workers._native was importable: the blocker did not work")
    status = main(["report", sys.argv[1]])
    assert "workers._native" not in sys.modules
    sys.exit(status)
""")


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> str:
    config = Config.from_dict({"run": {"rounds": 1}, "workload": {"size": "1MiB"},
                               "migration": {"channels": 1, "method": "zstd"}})
    path = tmp_path_factory.mktemp("report") / "run.json"
    run_batch(config).write_json(path)
    return str(path)


def blocked_env(tmp_path) -> dict[str, str]:
    """The environment of a subprocess that cannot import workers._native."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    path = [str(tmp_path), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))


def test_config_and_report_command_run_without_the_extension(report_path, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[migration]\nmethod = "zstd"\naccelerator = "emulated"\n'
                      'compression = "fast"\nbusy_policy = "retry"\n\n[emulator.faults]\nseed = 7\n')
    result = subprocess.run([sys.executable, "-c", SCRIPT, report_path, str(config)],
                            capture_output=True, text=True, env=blocked_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "run report" in result.stdout and "zstd" in result.stdout


def test_a_command_that_needs_the_extension_says_so_in_one_line(tmp_path):
    script = "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", script, "inspect", str(tmp_path / "ch0.bin")],
                            capture_output=True, text=True, env=blocked_env(tmp_path),
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 4, result.stderr          # EXIT_ENGINE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("engine failed: NativeBuildError: "), lines
    assert "workers._native" in lines[0] and "pip install -e ." in lines[0]
