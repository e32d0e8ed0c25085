"""The docs and the ready configs cannot drift from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from engine.config import Config, load_config
from engine.errors import ConfigError
from engine.report.schema import COMMON, KINDS
from engine.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_ROW = re.compile(r"^\| `([\w.]+)` \| `(.*)` \| .* \|$")


def _documented_config() -> dict[str, str]:
    """``section.key`` -> the default as written (TOML) in docs/config.md."""
    rows = {}
    for line in (DOCS / "config.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = match.group(2)
    return rows


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_config_reference_documents_every_key():
    assert set(_documented_config()) == set(_flat(Config().as_dict()))


def test_config_reference_defaults_are_the_default_config():
    nested: dict = {}
    for key, text in _documented_config().items():
        *path, last = key.split(".")
        table = nested
        for part in path:
            table = table.setdefault(part, {})
        table[last] = tomllib.loads(f"v = {text}")["v"]
    assert Config.from_dict(nested) == Config()


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_ready_config_is_valid(path, monkeypatch):
    monkeypatch.chdir(ROOT)     # relative image paths are relative to the repository root
    sweep = "[matrix]" in path.read_text()
    try:
        config = load_sweep(path).jobs[0].config if sweep else load_config(path)
    except ConfigError as exc:
        if (exc.key in ("workload.image", "matrix.images")
                and not (ROOT / ".." / "shared" / "data").is_dir()):
            pytest.skip(f"{path.name} runs on ../shared/data, which is not beside this checkout")
        raise
    text = path.read_text()
    assert text.startswith("#") and text.count("#") >= 10, f"{path.name} needs its comments"
    assert (config["migration"]["method"] if sweep else config.migration.method)


def test_report_schema_tables_match_the_code():
    text = (DOCS / "reports.md").read_text()
    tables = re.split(r"^### ", text, flags=re.M)
    documented = {}
    for table in tables:
        title = table.splitlines()[0]
        rows = re.findall(r"^\| `(\w+)` \| ([\w ]+) \| ", table, flags=re.M)
        if title == "Every report":
            documented["common"] = rows
        elif title.startswith("kind `"):
            documented[title.split("`")[1]] = rows
    expected = {"common": [(f.name, f.type) for f in COMMON],
                **{kind: [(f.name, f.type) for f in fields] for kind, fields in KINDS.items()}}
    assert documented == expected


def test_docs_links_resolve_and_readme_links_the_guide():
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    assert "docs/index.md" in (ROOT / "README.md").read_text()
    for image in DOCS.glob("*.png"):
        assert image.stat().st_size < 200_000, f"{image.name} is too big for the repository"


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


def test_library_snippets_run_as_scripts(tmp_path):
    """Each Python snippet of docs/library.md, saved as a script and run as shown,
    on a small default config and a small guest image."""
    import os
    import subprocess
    import sys

    snippets = _blocks(DOCS / "library.md", "python")
    assert len(snippets) >= 2
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "default.toml").write_text(
        '[run]\nrounds = 2\n[workload]\nsize = "2MiB"\n[migration]\nchannels = 2\n')
    (tmp_path / "config" / "sweep-synthetic.toml").write_text(
        '[base.run]\nrounds = 2\n[base.workload]\nsize = "2MiB"\n'
        '[matrix]\nmigration.method = ["none", "qpl"]\n')
    pattern = (bytes(range(256)) * 16 + bytes(4096)) * 128            # 1 MiB: data and zero pages
    (tmp_path / "guest.ram").write_bytes(pattern)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i, code in enumerate(snippets):
        script = tmp_path / f"snippet{i}.py"
        script.write_text(code)
        result = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, text=True,
                                capture_output=True, timeout=180)
        assert result.returncode == 0, f"snippet {i}:\n{code}\n{result.stderr}"
    assert (tmp_path / "run.json").is_file()
    assert (tmp_path / "sweep.json").is_file()


def test_toml_snippets_are_valid_configs(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    for page in DOCS.glob("*.md"):
        for text in _blocks(page, "toml"):
            if re.search(r"^\[matrix\]", text, flags=re.M):
                _check_sweep_snippet(text, tmp_path / "sweep.toml")
                continue
            try:
                Config.from_dict(tomllib.loads(text))
            except ConfigError as exc:
                if exc.key == "workload.image" and not (ROOT / ".." / "shared" / "data").is_dir():
                    continue        # a snippet on ../shared/data, which is not beside this checkout
                raise


def _check_sweep_snippet(text: str, path: Path) -> None:
    """A sweep file, loaded as `sweep` loads it; its image globs are examples of
    a fleet not on this machine, so they become the synthetic guest."""
    from engine.sweep.spec import load_sweep

    path.write_text(re.sub(r"^images = \[.*\]", 'images = ["synthetic"]', text, flags=re.M))
    assert load_sweep(path).jobs


def test_ci_runs_the_readme_test_command():
    commands = _blocks(ROOT / "README.md", "sh")[1].strip().splitlines()
    assert len(commands) == 2 and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
