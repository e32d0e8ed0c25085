"""A sweep file: a base config and a matrix of values; its jobs.

A sweep is one TOML file with three optional parts::

    base = "config/default.toml"       # a config `run` accepts, by path ...
    [base.run]                         # ... or inline ([base.*] tables); not both
    rounds = 2
    [matrix]                           # each key a list; every point of the product is a job
    images = ["guests/*.ram.zst", "synthetic"]
    migration.method = ["zstd", "qpl"]
    migration.channels = [1, 2]
    workload.seed = [1, 2]
    [sweep]
    name = "methods on our guests"

``images`` lists memory images (paths or globs, relative to the directory
you run from) and the word ``synthetic`` for the base's seeded synthetic
guest.  Every other matrix key is a config key (``section.key``) of
``run``, ``workload``, ``migration`` or ``emulator``.  Values that do not
apply to a job are left out of it, so no job is run twice: the qpl-only
keys for other methods, the zlib/zstd levels for other methods, and the
synthetic guest's size and mix for images.

``load_sweep`` checks everything before any job starts: every job's config
is built and validated as ``run`` would, an image pattern that matches no
file is an error, and every error is a ``ConfigError`` naming the key in
the sweep file (``matrix.migration.method``, ``base.run.rounds``,
``sweep.retries``).
"""

from __future__ import annotations

import copy
import glob
import itertools
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import ConfigError

SYNTHETIC = "synthetic"
_MATRIX_SECTIONS = ("run", "workload", "migration", "emulator")
# keys a sweep sets itself: each job is one verified run in memory, its report goes into the sweep's
_FIXED = {"workload.source": "images", "workload.image": "images", "run.report": "--json",
          "run.verify": "every job is verified", "sink.kind": "memory", "sink.dir": "memory"}
# keys that only one method reads; for the other methods they are left out of a job
_METHOD_ONLY = {"migration.compression": "qpl", "migration.accelerator": "qpl",
                "migration.max_submit_retries": "qpl", "migration.busy_policy": "qpl",
                "migration.qpl_library": "qpl", "migration.zlib_level": "zlib",
                "migration.zstd_level": "zstd"}


@dataclass(frozen=True)
class SweepSettings:
    """The ``[sweep]`` table."""

    name: str = ""              # a title for the report; "" = the file's name
    retries: int = 2            # cluster: runs of a job that raised, again (Dask's retries=)
    time_budget: float = 1.25   # "best by bytes": fewest wire bytes within this x the fastest time
    report: str = ""            # also write the sweep report here ("" = only --json)


@dataclass(frozen=True)
class Job:
    """One point of the matrix: one ``run`` of the engine."""

    index: int
    guest: str                  # what is migrated: an image path, or "synthetic, 16 MiB"
    setting: str                # the varied settings besides the method, e.g. "fast, 2 ch"
    axes: dict[str, Any]        # the matrix values this job uses (key -> value)
    config: dict[str, Any]      # the whole config, as TOML data (Config.from_dict)

    @property
    def method(self) -> str:
        return self.config.get("migration", {}).get("method", Config().migration.method)

    @property
    def label(self) -> str:
        return f"{self.guest} | {self.method}" + (f", {self.setting}" if self.setting else "")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its settings, the expanded matrix and every job."""

    path: str
    name: str
    settings: SweepSettings
    matrix: dict[str, list[Any]]            # images expanded to files
    jobs: list[Job] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)   # base (resolved), matrix, sweep: for reports


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read, expand and validate a sweep file; ``ConfigError`` names the key at fault."""
    data = _read_toml(path, "")
    _only(data, "", {"base", "matrix", "sweep"})
    settings = _settings(data.get("sweep", {}))
    base = _base(data.get("base", {}))
    matrix = _matrix(data.get("matrix", {}))
    jobs = _jobs(base, matrix)
    name = settings.name or Path(path).stem
    return Sweep(path=str(path), name=name, settings=settings, matrix=matrix, jobs=jobs,
                 data={"base": base, "matrix": matrix, "sweep": settings.__dict__})


def _read_toml(path: str | os.PathLike, key: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(key, f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(key, f"{path} is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"{path} is not valid TOML: {exc}") from None


def _only(data: Any, section: str, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(section, f"must be a table, got {data!r}")
    for key in data:
        if key not in allowed:
            name = f"{section}.{key}" if section else key
            raise ConfigError(name, f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _settings(data: Any) -> SweepSettings:
    _only(data, "sweep", {f.name for f in fields(SweepSettings)})
    defaults = SweepSettings()
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"sweep.{key}", f"must be a string, got {value!r}")
        if not isinstance(default, str) and (isinstance(value, bool)
                                             or not isinstance(value, type(default) | int)):
            raise ConfigError(f"sweep.{key}", f"must be a number, got {value!r}")
    settings = SweepSettings(**data)
    if not 0 <= settings.retries <= 100:
        raise ConfigError("sweep.retries", f"must be 0..100, got {settings.retries}")
    if not 1.0 <= settings.time_budget <= 1000.0:
        raise ConfigError("sweep.time_budget", "must be 1..1000 (times the fastest job's time), "
                          f"got {settings.time_budget}")
    return SweepSettings(**{**settings.__dict__, "time_budget": float(settings.time_budget)})


def _base(value: Any) -> dict[str, Any]:
    """The base config as TOML data: a file's, or the inline tables."""
    if isinstance(value, str):
        value = _read_toml(value, "base")
    elif not isinstance(value, dict):
        raise ConfigError("base", f"must be the path of a config or its tables, got {value!r}")
    try:
        Config.from_dict(_without_image(value))
    except ConfigError as exc:
        raise ConfigError(f"base.{exc.key}" if exc.key else "base", str(exc).split(": ", 1)[1]) from None
    flat = _flatten(value)
    if flat.get("run.verify", True) is not True:
        raise ConfigError("base.run.verify", "cannot be false in a sweep: every job is verified")
    if flat.get("run.report", ""):
        raise ConfigError("base.run.report", "must be empty in a sweep: each job's report goes "
                          "into the sweep report (--json, sweep.report)")
    if flat.get("sink.kind", "memory") != "memory":
        raise ConfigError("base.sink.kind", "a sweep's jobs send into memory (channel files of "
                          "its jobs would overwrite each other); leave [sink] out")
    return value


def _without_image(base: dict[str, Any]) -> dict[str, Any]:
    """The base minus its image: the matrix's images replace it, so it need not exist."""
    data = copy.deepcopy(base)
    if isinstance(data.get("workload"), dict):
        data["workload"].pop("image", None)
        if data["workload"].get("source") == "image":
            data["workload"].pop("source")
    return data


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _matrix(data: Any) -> dict[str, list[Any]]:
    if not isinstance(data, dict):
        raise ConfigError("matrix", f"must be a table of lists, got {data!r}")
    known = set(_flatten(Config().as_dict()))
    matrix: dict[str, list[Any]] = {}
    for key, values in _flatten(data).items():
        name = f"matrix.{key}"
        if key in _FIXED:
            raise ConfigError(name, f"cannot be varied in a sweep (it is set by: {_FIXED[key]})")
        if key != "images" and (key not in known or key.split(".")[0] not in _MATRIX_SECTIONS):
            raise ConfigError(name, "unknown key; allowed: images and the keys of "
                              + ", ".join(f"[{s}]" for s in _MATRIX_SECTIONS))
        if not isinstance(values, list) or not values:
            raise ConfigError(name, f"must be a non-empty list of values, got {values!r}")
        for value in values:
            if isinstance(value, (list, dict)):
                raise ConfigError(name, f"each value must be a number, string or boolean, got {value!r}")
            if values.count(value) > 1:
                raise ConfigError(name, f"{value!r} is listed twice")
        matrix[key] = _images(values) if key == "images" else values
    return matrix


def _images(patterns: list[Any]) -> list[str]:
    """Image paths (absolute, so every node reads the same file) and "synthetic"."""
    images: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError("matrix.images", f"must be paths, globs or \"{SYNTHETIC}\", got {pattern!r}")
        if pattern == SYNTHETIC:
            found = [SYNTHETIC]
        else:
            found = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                           if os.path.isfile(p))
            if not found:
                raise ConfigError("matrix.images", f"{pattern!r} matches no file "
                                  f"(relative paths are from {os.getcwd()})")
        images += [os.path.abspath(p) if p != SYNTHETIC else p for p in found
                   if (os.path.abspath(p) if p != SYNTHETIC else p) not in images]
    return images


def _jobs(base: dict[str, Any], matrix: dict[str, list[Any]]) -> list[Job]:
    guests = matrix.get("images", [None])
    axes = [key for key in matrix if key != "images"]
    jobs: list[Job] = []
    seen: set[tuple] = set()
    for guest in guests:
        for values in itertools.product(*(matrix[key] for key in axes)):
            point = _applicable(base, guest, dict(zip(axes, values)))
            identity = (guest, tuple(sorted(point.items(), key=lambda kv: kv[0])))
            if identity in seen:
                continue
            seen.add(identity)
            config = _job_config(base, guest, point)
            jobs.append(Job(index=len(jobs), guest=_guest_label(guest, config, point, matrix),
                            setting=_setting_label(point, matrix), axes=point, config=config))
    return jobs


def _applicable(base: dict[str, Any], guest: str | None, point: dict[str, Any]) -> dict[str, Any]:
    """The values of ``point`` this job reads (see the module docstring)."""
    method = point.get("migration.method", base.get("migration", {}).get("method",
                                                                          Config().migration.method))
    image = guest not in (None, SYNTHETIC) or (
        guest is None and base.get("workload", {}).get("source") == "image")
    return {key: value for key, value in point.items()
            if _METHOD_ONLY.get(key, method) == method
            and not (image and (key == "workload.size" or key.startswith("workload.mix.")))}


def _job_config(base: dict[str, Any], guest: str | None, point: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    if guest == SYNTHETIC:
        point = {"workload.source": "synthetic", "workload.image": "", **point}
    elif guest is not None:
        point = {"workload.source": "image", "workload.image": guest, **point}
    for key, value in point.items():
        table = data
        *sections, last = key.split(".")
        for section in sections:
            table = table.setdefault(section, {})
        table[last] = value
    try:
        Config.from_dict(data)
    except ConfigError as exc:
        if exc.key in ("workload.image", "workload.source") and exc.key in point:
            where = "matrix.images"
        else:
            where = f"matrix.{exc.key}" if exc.key in point else f"base.{exc.key}"
        shown = ", ".join(f"{k} = {v!r}" for k, v in point.items() if k != "workload.source")
        raise ConfigError(where, f"{str(exc).split(': ', 1)[1]} (in the job {shown})") from None
    return data


def _guest_label(guest: str | None, config: dict[str, Any], point: dict[str, Any],
                 matrix: dict[str, list[Any]]) -> str:
    workload = config.get("workload", {})
    if guest not in (None, SYNTHETIC) or workload.get("source") == "image":
        label = _short_path(guest or workload.get("image", ""))
    else:
        size = workload.get("size", Config().workload.size)
        label = f"synthetic {size}" if isinstance(size, str) else f"synthetic {size / 2**20:g} MiB"
    varied = [f"{key.split('.')[-1]} {value}" for key, value in point.items()
              if key.startswith("workload.") and key != "workload.size" and len(matrix[key]) > 1]
    return ", ".join([label, *varied])


def _short_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path


def _setting_label(point: dict[str, Any], matrix: dict[str, list[Any]]) -> str:
    parts = []
    for key, value in point.items():
        if key.startswith("workload.") or key == "migration.method" or len(matrix[key]) < 2:
            continue
        if key == "migration.channels":
            parts.append(f"{value} ch")
        elif key == "migration.page_size":
            parts.append(f"{value // 1024} KiB pages" if value >= 1024 else f"{value} B pages")
        elif key == "migration.compression":
            parts.append(str(value))
        else:
            parts.append(f"{key.split('.')[-1]} {value}")
    return ", ".join(parts)
