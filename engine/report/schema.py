"""The one JSON schema of every report: run, receive, bench, stress, relay and sweep.

Every report file is a JSON object with the common fields (``COMMON``:
what wrote it, when, on which machine, with which config) and the fields
of its ``kind`` (``KINDS``); a sweep report holds a whole run report per
job (``NESTED``).  ``docs/reports.md`` documents the same tables (a test
keeps them equal).  ``load_report`` reads a file back and
checks it: a file that is not JSON, not one of ours, of a schema version
or kind this engine does not read, or with a field missing or of the
wrong type is a ``ReportError`` naming the file and the field.

Version history: 1 = run reports only, no ``kind``; 2 = every kind in one
schema; 3 = run reports add ``qemu`` (the run in ``query-migrate``'s
words).  A reader takes 2 and 3: a field ``since`` a later version is
required only of files of that version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from engine.errors import OutputError, ReportError

SCHEMA = "multifd-engine-report"
SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)


@dataclass(frozen=True)
class Field:
    name: str
    type: str          # "int", "number", "str", "bool", "list", "object"; "X or null" when it may be null
    meaning: str
    since: int = 2     # the schema version that added it; older files need not have it


COMMON = (
    Field("schema", "str", f'always "{SCHEMA}": marks the file as one of ours'),
    Field("schema_version", "int", f"{SCHEMA_VERSION} (2: before `qemu`); a reader refuses versions "
          "it does not know"),
    Field("kind", "str", '"run", "receive", "bench", "stress", "relay" or "sweep": which fields follow'),
    Field("engine_version", "str", "the multifd-engine version that wrote it"),
    Field("created", "str", "when, ISO 8601 UTC"),
    Field("machine", "object", "cores, cpu_model, python, platform, codec {name, compress, "
          "decompress}, iaa [{channel, path, reason}]"),
    Field("config", "object", "the config it ran (every section and key, as `engine.config`); "
          "bench: the parameters of the script"),
)

KINDS: dict[str, tuple[Field, ...]] = {
    "run": (
        Field("method", "str", "none, zlib, zstd or qpl"),
        Field("page_size", "int", "bytes per page"),
        Field("channels", "int", "multifd channels = worker processes"),
        Field("qemu_version", "str", "the peer QEMU the stream is for"),
        Field("codec", "str", "the software codec library per direction"),
        Field("accelerator", "list", "the work-queue path of each channel: iaa, emulated, software, none"),
        Field("rounds", "list", "per precopy round: round, dirty_pages, packets, send_seconds, "
              "receive_seconds, wire_bytes, mismatched_pages (null: not verified), "
              "first_mismatch_offsets"),
        Field("send_channels", "list", "per channel: channel, pid, accelerator, path_reason, packets, "
              "sync_packets, normal_pages, zero_pages, compressed_pages, raw_pages, payload_bytes, "
              "bytes, the work-queue counters, zero_ns, compress_ns, write_ns, restarts"),
        Field("receive_channels", "list", "per channel, the receiver's counters ([] when not verified)"),
        Field("device", "object", "the emulated IAA device's own counters ({} when not used)"),
        Field("final_digests_match", "bool or null", "TCP: both ends' sha256 per RAM block agree; "
              "null for a local run"),
        Field("totals", "object", "pages, normal/zero/raw/compressed pages, packets, guest_bytes, "
              "bytes_on_wire, payload_bytes, ratio, send_seconds, send_mb_per_s, verified, "
              "work-queue counters"),
        Field("timeline", "object or null", "packets per channel in time buckets: bucket_seconds, "
              "seconds, fields, rounds [{round, start, end}], channels [{channel, buckets}]"),
        Field("page_sizes", "object or null", "payload bytes per page: bucket_bytes, page_size, per_page, "
              "compressed (pages per size bucket), raw"),
        Field("qemu", "object", "the run as QEMU's query-migrate reports it: status, total-time, "
              "setup-time, downtime (ms; downtime an estimate), ram {transferred, duplicate, normal, "
              "normal-bytes, page-size, mbps (Mbit/s)}; since version 3", since=3),
    ),
    "receive": (
        Field("peer", "str", "the sender's address"),
        Field("method", "str", "as the sender announced"),
        Field("page_size", "int", "bytes per page"),
        Field("channels", "int", "data channels"),
        Field("qemu_version", "str", "the QEMU stream generation"),
        Field("blocks", "list", "RAM blocks: [name, size]"),
        Field("rounds", "list", "per round: round, pages, packets, seconds"),
        Field("receive_channels", "list", "per channel, the receiver's counters"),
        Field("digests_match", "bool or null", "both ends' final sha256 per RAM block agree; "
              "null: not reached"),
    ),
    "bench": (
        Field("bench", "str", "the benchmark script, e.g. scaling"),
        Field("guest", "str", "the guest pages it ran on"),
        Field("cases", "list", "per measured case: name, seconds (every run), median_seconds, "
              "work_bytes, mb_per_s; wire_bytes, method, channels when known"),
        Field("ratios", "list", "the figures the script prints: name, value, goal (or null), met"),
    ),
    "relay": (
        Field("listen", "str", "the address it listened on"),
        Field("to", "str", "the address it sent to"),
        Field("incoming_method", "str", "what arrived (relay.incoming_method)"),
        Field("outgoing_method", "str", "what left (relay.outgoing_method)"),
        Field("qemu_version", "str", "the QEMU generation at both ends"),
        Field("page_size", "int", "bytes per page"),
        Field("seconds", "number", "from listening to the last connection's end"),
        Field("main_channel", "object", "bytes of QEMU's main channel: forward (to the destination), back"),
        Field("channels", "list", "per multifd channel: channel, packets, sync_packets, device_packets, normal_pages, zero_pages, bytes_in, bytes_out, restarts, accelerator"),
        Field("totals", "object", "packets, pages, bytes_in, bytes_out, ratio (bytes in per byte out; null: nothing out)"),
    ),
    "stress": (
        Field("seed", "int", "repeats the run (--seed)"),
        Field("channels", "int", "worker processes = channels"),
        Field("rounds", "int", "precopy rounds run"),
        Field("rounds_verified", "int", "rounds whose every page arrived and compared equal"),
        Field("pages", "int", "pages of the verified rounds"),
        Field("guest_bytes", "int", "their bytes"),
        Field("wire_bytes", "int", "bytes sent (all rounds)"),
        Field("round_seconds", "number", "time in verified rounds"),
        Field("faults", "object", "per fault kind: injected, survived, detected_error, "
              "detected_verify, harmless"),
        Field("pages_lost", "int", "pages wrong with no fault to explain it (must be 0)"),
        Field("unexpected_errors", "list", "errors no injected fault explains (must be empty)"),
        Field("ok", "bool", "the verdict"),
    ),
    "sweep": (
        Field("sweep", "str", "the sweep's name (sweep.name, else the file's)"),
        Field("file", "str", "the sweep file"),
        Field("executor", "str", '"local", or the Dask scheduler the jobs ran on'),
        Field("matrix", "object", "the matrix as run: key -> values, images expanded to files"),
        Field("jobs", "list", "per job: index, guest, method, setting, axes, status (ok, "
              "verify-failed, error, not-run), error, report (its run report, or null), seconds, "
              "host, attempts, workers, retried"),
        Field("summary", "object", "jobs, ok, verify_failed, errors, not_run, retried (job "
              "indices), interrupted, seconds, time_budget, best per guest [{guest, fastest, "
              "fewest_bytes_within_budget, budget_seconds}]"),
    ),
}

# fields every entry of these lists must have (the report command reads them)
ITEMS: dict[tuple[str, str], tuple[Field, ...]] = {
    ("run", "rounds"): (Field("round", "int", ""), Field("dirty_pages", "int", ""),
                        Field("packets", "int", ""), Field("send_seconds", "number", "")),
    ("run", "send_channels"): (Field("channel", "int", ""),),
    ("receive", "rounds"): (Field("round", "int", ""), Field("pages", "int", ""),
                            Field("seconds", "number", "")),
    ("bench", "cases"): (Field("name", "str", ""), Field("median_seconds", "number", "")),
    ("bench", "ratios"): (Field("name", "str", ""), Field("value", "number", "")),
    ("sweep", "jobs"): tuple(Field(name, kind, "") for name, kind in (
        ("index", "int"), ("guest", "str"), ("method", "str"), ("setting", "str"),
        ("status", "str"), ("error", "str or null"), ("attempts", "int"),
        ("report", "object or null"))),
}

# list entries whose field is itself a whole report (checked as one)
NESTED: dict[tuple[str, str], str] = {("sweep", "jobs"): "report"}

# fields an object-valued field must have when it is not null
OBJECTS: dict[tuple[str, str], tuple[Field, ...]] = {
    ("run", "totals"): tuple(Field(name, kind, "") for name, kind in (
        ("pages", "int"), ("normal_pages", "int"), ("zero_pages", "int"), ("raw_pages", "int"),
        ("packets", "int"), ("guest_bytes", "int"), ("bytes_on_wire", "int"),
        ("payload_bytes", "int"), ("ratio", "number or null"), ("send_seconds", "number"),
        ("send_mb_per_s", "number or null"), ("verified", "bool or null"))),
    ("run", "timeline"): tuple(Field(name, kind, "") for name, kind in (
        ("bucket_seconds", "number"), ("seconds", "number"), ("fields", "list"),
        ("rounds", "list"), ("channels", "list"))),
    ("run", "page_sizes"): tuple(Field(name, kind, "") for name, kind in (
        ("bucket_bytes", "number"), ("page_size", "int"), ("per_page", "bool"),
        ("compressed", "list"), ("raw", "int"))),
    ("run", "qemu"): tuple(Field(name, kind, "", since=3) for name, kind in (
        ("status", "str"), ("total-time", "int"), ("setup-time", "int"), ("downtime", "int"),
        ("ram", "object"))),
    ("sweep", "summary"): tuple(Field(name, kind, "") for name, kind in (
        ("jobs", "int"), ("ok", "int"), ("verify_failed", "int"), ("errors", "int"),
        ("not_run", "int"), ("retried", "list"), ("interrupted", "bool"), ("seconds", "number"),
        ("time_budget", "number"), ("best", "list"))),
}

_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "number": (int, float), "str": (str,), "bool": (bool,),
    "list": (list,), "object": (dict,),
}


def machine_facts(channels: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """This machine: cores, CPU, Python, codec libraries, and each channel's IAA path and why."""
    from workers import codec

    compress, decompress = codec.codec_libraries()
    return {
        "cores": os.cpu_count() or 1,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "codec": {"name": codec.codec_name(), "compress": compress, "decompress": decompress},
        "iaa": [{"channel": c.get("channel"), "path": c.get("accelerator", "?"),
                 "reason": c.get("path_reason", "")} for c in channels],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def envelope(kind: str, *, engine_version: str, created: str, machine: dict[str, Any],
             config: dict[str, Any]) -> dict[str, Any]:
    """The common fields, in order; the kind's fields follow them."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind,
            "engine_version": engine_version, "created": created, "machine": machine,
            "config": config}


def now() -> str:
    """The ``created`` stamp: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dumps(data: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (timelines stay readable)."""
    text = json.dumps(data, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


# a JSON list of numbers only; unambiguous, so no backtracking blow-up
_NUMBER_LIST = re.compile(r"\[\s*([\d.eE+-]+(?:\s*,\s*[\d.eE+-]+)*)\s*\]")


def write_report(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Check ``data`` against the schema, then write it (``-``: to standard output)."""
    validate(data, str(path))
    text = dumps(data)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), path=str(path)) from None


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a report file; ``ReportError`` names what is wrong."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ReportError("no such file", path=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot be read: {exc}", path=name) from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(f"not JSON ({exc})", path=name) from None
    except RecursionError:
        raise ReportError("nested too deeply to be a report", path=name) from None
    except ValueError as exc:     # an integer of thousands of digits, Infinity, NaN
        first = str(exc).split(":")[0]
        raise ReportError(f"holds a number no report has ({first})", path=name) from None
    return validate(data, name)


def _no_constant(name: str) -> Any:
    """Python's json reads Infinity and NaN, which JSON does not have and no report holds."""
    raise ValueError(f"{name} is not a JSON number")


def validate(data: Any, path: str = "<report>") -> dict[str, Any]:
    """``data`` if it is a report of this schema; ReportError otherwise."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version == 1 and isinstance(data, dict) and "rounds" in data:
            raise ReportError("a run report of schema version 1 (written before reports were "
                              f"unified); this engine reads version {SCHEMA_VERSION}: run it again",
                              path=path, field="schema_version")
        raise ReportError(f'not a multifd-engine report (no "schema": "{SCHEMA}")', path=path)
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ReportError(f"schema version {version!r}; this engine reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}", path=path, field="schema_version")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ReportError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}", path=path, field="kind")
    _check_fields(data, COMMON + KINDS[kind], path, "", version)
    for (object_kind, name), fields in OBJECTS.items():
        if object_kind == kind and isinstance(data.get(name), dict):
            _check_fields(data[name], fields, path, f"{name}.", version)
    for (item_kind, list_name), fields in ITEMS.items():
        if item_kind == kind:
            for i, entry in enumerate(data[list_name]):
                if not isinstance(entry, dict):
                    raise ReportError(f"must be an object, got {_type_name(entry)}", path=path,
                                      field=f"{list_name}[{i}]")
                _check_fields(entry, fields, path, f"{list_name}[{i}].", version)
                inner = NESTED.get((item_kind, list_name))
                if inner and entry[inner] is not None:
                    validate(entry[inner], f"{path}: {list_name}[{i}].{inner}")
    return data


def _check_fields(data: dict[str, Any], fields: Iterable[Field], path: str, prefix: str,
                  version: int) -> None:
    for f in fields:
        if f.name not in data and f.since > version:
            continue        # a field newer than the file
        if f.name not in data:
            raise ReportError("missing", path=path, field=prefix + f.name)
        value = data[f.name]
        base, _, null = f.type.partition(" or ")
        if value is None and null:
            continue
        allowed = _TYPES[base]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ReportError(f"must be {f.type}, got {_type_name(value)}", path=path,
                              field=prefix + f.name)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "str", bool: "bool", int: "int", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
