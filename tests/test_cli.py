"""The command line: exit codes, report output, errors a person can act on."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.exit_codes import EXIT_INPUT, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def write_config(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_run_prints_report_and_writes_json(tmp_path, capsys):
    cfg = write_config(tmp_path, '[run]\nrounds = 2\n[workload]\nsize = "2MiB"\n'
                       '[migration]\nchannels = 2\n')
    code = main(["run", cfg, "--json", str(tmp_path / "r.json"), "-q"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "verify: every round byte for byte identical" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["totals"]["pages"] == 512 + data["rounds"][1]["dirty_pages"]
    assert data["method"] == "qpl"


def test_bad_config_is_exit_2_naming_the_key(tmp_path, capsys):
    cfg = write_config(tmp_path, "[migration]\nmethod = 'lz4'\n")
    assert main(["run", cfg]) == EXIT_USAGE
    assert "migration.method" in capsys.readouterr().err


def test_inspect_our_own_stream(tmp_path, capsys):
    cfg = write_config(tmp_path, f'[run]\nrounds = 1\n[workload]\nsize = "1MiB"\n'
                       f'[migration]\nchannels = 1\nmethod = "none"\n'
                       f'[sink]\nkind = "file"\ndir = "{tmp_path / "out"}"\n')
    assert main(["run", cfg, "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "out" / "channel-0.mfd")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "method none" in out
    assert "SYNC" in out


def test_inspect_truncated_stream_is_bad_input(tmp_path, capsys):
    cfg = write_config(tmp_path, f'[run]\nrounds = 1\n[workload]\nsize = "1MiB"\n'
                       f'[migration]\nchannels = 1\n'
                       f'[sink]\nkind = "file"\ndir = "{tmp_path / "out"}"\n')
    assert main(["run", cfg, "-q"]) == EXIT_OK
    path = tmp_path / "out" / "channel-0.mfd"
    data = path.read_bytes()
    path.write_bytes(data[:64 + 1344 + 100])
    capsys.readouterr()
    assert main(["inspect", "--summary", str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "TruncatedStream" in err and "channel 0" in err and "payload" in err


def test_inspect_missing_file(capsys):
    assert main(["inspect", "/nonexistent.mfd"]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
