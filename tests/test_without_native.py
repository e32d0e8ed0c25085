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


def test_config_and_report_command_run_without_the_extension(report_path, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    config = tmp_path / "run.toml"
    config.write_text('[migration]\nmethod = "zstd"\naccelerator = "emulated"\n'
                      'compression = "fast"\nbusy_policy = "retry"\n\n[emulator.faults]\nseed = 7\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path),
                                                                    os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", SCRIPT, report_path, str(config)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "run report" in result.stdout and "zstd" in result.stdout
