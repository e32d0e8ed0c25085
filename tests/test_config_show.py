"""``config show`` prints a config that reads back equal; ``--set`` is checked like the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from engine.cli import main
from engine.exit_codes import EXIT_OK, EXIT_USAGE
from engine.commands.config_cmd import config_toml
from engine.config import Config, load_config
from engine.config_overrides import load_config_with, parse_override
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_defaults_read_back_equal():
    text = config_toml(Config())
    assert Config.from_dict(tomllib.loads(text)) == Config()
    assert 'size = "256MiB"' in text and "[workload.mix]" in text and "[emulator.faults]" in text


@pytest.mark.parametrize("name", ["default.toml", "stress-soak.toml", "iaa.toml", "tcp-pair.toml"])
def test_ready_configs_read_back_equal(name):
    config = load_config(ROOT / "config" / name)
    assert Config.from_dict(tomllib.loads(config_toml(config))) == config


def test_config_show_prints_every_key_with_the_sets(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # no config/ here: the built-in defaults
    assert main(["config", "show", "--set", "migration.method=zstd",
                 "--set", "migration.qemu_version=7.2", "--set", "run.rounds=2"]) == EXIT_OK
    out = capsys.readouterr().out
    config = Config.from_dict(tomllib.loads(out))
    assert (config.migration.method, config.migration.qemu_version, config.run.rounds) == (
        "zstd", "7.2", 2)
    assert config.workload == Config().workload


@pytest.mark.parametrize("text, keys, value", [
    ("migration.method=zstd", ["migration", "method"], "zstd"),
    ("run.rounds=2", ["run", "rounds"], 2),
    ("run.verify=false", ["run", "verify"], False),
    ("workload.size=64MiB", ["workload", "size"], "64MiB"),
    ("migration.qemu_version=10.0", ["migration", "qemu_version"], "10.0"),
    ("workload.mix.zero=0.5", ["workload", "mix", "zero"], 0.5),
    ('sink.dir="123"', ["sink", "dir"], "123"),
    ("stress.page_sizes=[4096]", ["stress", "page_sizes"], [4096]),
])
def test_set_values(text, keys, value):
    assert parse_override(text) == (keys, value)


@pytest.mark.parametrize("text, key", [
    ("migration.metod=zstd", "migration.metod"),
    ("migration.method=lz4", "migration.method"),
    ("run.rounds=many", "run.rounds"),
    ("rounds=2", "rounds"),
    ("run.rounds", "run.rounds"),
])
def test_bad_sets_name_the_key(text, key):
    with pytest.raises(ConfigError) as caught:
        load_config_with(None, [text])
    assert caught.value.key == key


def test_set_changes_a_run(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[workload]\nsize = "1MiB"\n[migration]\nchannels = 1\n')
    assert main(["run", str(tmp_path / "c.toml"), "--set", "migration.method=zstd",
                 "--set", "run.rounds=1", "-q", "--json", str(tmp_path / "r.json")]) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "zstd" and len(report["rounds"]) == 1


def test_set_on_a_bad_key_is_exit_2(capsys):
    assert main(["run", "--set", "migration.metod=zstd"]) == EXIT_USAGE
    assert "migration.metod" in capsys.readouterr().err
