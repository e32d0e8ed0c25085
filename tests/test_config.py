"""Config: the embedded default, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from engine import methods
from engine.config import Config, MigrationSettings, load_config
from engine.units import parse_size
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_is_the_embedded_default():
    assert load_config(ROOT / "config" / "default.toml") == Config()
    assert load_config(None) == Config()


def test_every_default_key_is_documented_in_default_toml():
    data = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    documented = {(s, k) for s, keys in data.items() for k in keys if k != "mix"}
    expected = {(s, k) for s, keys in Config().as_dict().items() for k in keys if k != "mix"}
    assert documented == expected


@pytest.mark.parametrize("data, key, words", [
    ({"run": {"roundz": 3}}, "run.roundz", "unknown key"),
    ({"bogus": {}}, "bogus", "unknown key"),
    ({"run": {"rounds": 0}}, "run.rounds", "at least 1"),
    ({"run": {"rounds": "3"}}, "run.rounds", "integer"),
    ({"run": {"verify": 1}}, "run.verify", "true or false"),
    ({"migration": {"method": "lz4"}}, "migration.method", "not one of"),
    ({"migration": {"page_size": 3000}}, "migration.page_size", "power of two"),
    ({"migration": {"channels": 0}}, "migration.channels", "1..255"),
    ({"migration": {"channels": "many"}}, "migration.channels", "auto"),
    ({"migration": {"qemu_version": "seven"}}, "migration.qemu_version", "QEMU version"),
    ({"migration": {"method": "qpl", "qemu_version": "7.2"}}, "migration.method", "does not know"),
    ({"migration": {"accelerator": "gpu"}}, "migration.accelerator", "not one of"),
    ({"migration": {"busy_policy": "panic"}}, "migration.busy_policy", "not one of"),
    ({"workload": {"size": "12 parsecs"}}, "workload.size", "not a size"),
    ({"workload": {"size": 5000}}, "workload.size", "multiple of the page size"),
    ({"workload": {"source": "disk"}}, "workload.source", "not one of"),
    ({"workload": {"source": "image"}}, "workload.image", "needs the path"),
    ({"workload": {"source": "image", "image": "/nonexistent"}}, "workload.image", "no such file"),
    ({"workload": {"dirty_fraction": 1.5}}, "workload.dirty_fraction", "0..1"),
    ({"workload": {"mix": {"zero": 0.5}}}, "workload.mix", ""),
    ({"workload": {"mix": {"gold": 0.5}}}, "workload.mix.gold", ""),
    ({"sink": {"kind": "null"}}, "run.verify", "null sink"),
])
def test_bad_config_names_the_key(data, key, words):
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(data)
    assert caught.value.key.startswith(key)
    assert words in str(caught.value)


LEVELLED = [name for name in methods.names() if methods.get(name).levels is not None]


@pytest.mark.parametrize("name", LEVELLED)
def test_a_method_with_levels_has_its_level_key(name):
    method = methods.get(name)
    assert getattr(MigrationSettings(), f"{name}_level") == method.default_level
    top = method.levels.stop - 1
    config = Config.from_dict({"migration": {"method": name, f"{name}_level": top}})
    assert config.migration.method_level == top
    with pytest.raises(ConfigError) as caught:
        Config.from_dict({"migration": {f"{name}_level": top + 1}})
    assert caught.value.key == f"migration.{name}_level"
    assert f"multifd-{name}-level" in str(caught.value)


def test_methods_without_levels_have_no_method_level():
    for name in methods.names():
        if methods.get(name).levels is None:
            assert Config.from_dict({"migration": {"method": name}}).migration.method_level is None


def test_sizes():
    assert parse_size("k", "64MiB") == 64 << 20
    assert parse_size("k", "1GiB") == 1 << 30
    assert parse_size("k", 8192) == 8192


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nrounds = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_channels_auto_is_the_core_count(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert Config().migration.channel_count == 6
