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
