"""Run configuration: TOML in, validated dataclasses out.

Every key has a default; the defaults *are* the embedded default run, and
``config/default.toml`` spells them out (a test keeps the two equal).
Unknown sections or keys and bad values are ``ConfigError``s that name the
key (``section.key``) and say what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine import methods, wire
from engine.errors import ConfigError
from engine.stress.settings import StressSettings
from engine.units import parse_size
from engine.workloads import PageMix
from workers.settings import (ACCELERATORS, BUSY_POLICIES, COMPRESSION_SETTINGS, EmulatorSettings,
                              FaultSettings, JobSettings)

SOURCES = ("synthetic", "image")
SINKS = ("memory", "file", "null")


@dataclass(frozen=True)
class RunSettings:
    rounds: int = 4
    verify: bool = True
    report: str = ""            # JSON report path; "" = none
    worker_restarts: int = 3    # replacements of a dead worker in a row before the run fails


@dataclass(frozen=True)
class WorkloadSettings:
    source: str = "synthetic"   # "synthetic" | "image"
    size: int = 256 << 20       # bytes (synthetic); "256MiB" in TOML
    image: str = ""             # raw memory image (source = "image"); .zst allowed
    block: str = "pc.ram"       # RAM block name on the wire
    seed: int = 1
    dirty_fraction: float = 0.05
    hot_fraction: float = 0.10
    hot_share: float = 0.80
    mix: PageMix = field(default_factory=PageMix)


@dataclass(frozen=True)
class MigrationSettings:
    page_size: int = 4096
    channels: int | str = "auto"    # a number, or "auto" = one per core
    method: str = "qpl"
    qemu_version: str = "10.0"      # the peer QEMU: decides zero pages and flag mask
    accelerator: str = "auto"
    max_submit_retries: int = 3
    busy_policy: str = "fallback"
    qpl_library: str = ""           # libqpl to load; "" = $MFD_QPL_LIBRARY, then the search path
    compression: str = "balanced"   # qpl software path: "fast" | "balanced" | "packet" (COMPRESSION_SETTINGS)
    zlib_level: int = 1             # QEMU's multifd-zlib-level, 0..9
    zstd_level: int = 1             # QEMU's multifd-zstd-level, 0..20
    copy_pages: bool = False        # method none: copy pages through a buffer (the old path)

    @property
    def channel_count(self) -> int:
        return (os.cpu_count() or 1) if self.channels == "auto" else int(self.channels)

    @property
    def compat(self) -> wire.Compat:
        return wire.Compat.parse(self.qemu_version)

    @property
    def method_level(self) -> int | None:
        """``<method>_level`` of a method with levels; None for the others."""
        return level_of(self, methods.get(self.method))

    @property
    def jobs(self) -> JobSettings:
        return JobSettings(accelerator=self.accelerator, max_submit_retries=self.max_submit_retries,
                           busy_policy=self.busy_policy, qpl_library=self.qpl_library,
                           level=COMPRESSION_SETTINGS.get(self.compression, JobSettings.level))


@dataclass(frozen=True)
class TransportSettings:
    """TCP migration (``send --to`` / ``recv --listen``); seconds."""

    connect_timeout: float = 10.0   # establish a connection (the sender retries while refused)
    accept_timeout: float = 120.0   # the receiver waits this long for a sender to connect
    stall_timeout: float = 30.0     # a read, write or SYNC barrier without progress this long fails
    handshake_timeout: float = 5.0  # a new connection's opening (TLS, PSK, magic, Hello, token)
    packet_deadline: float = 60.0   # one packet header or payload arrives whole within this
    round_deadline: float = 3600.0  # one round: every channel up to its SYNC
    max_ram: int = 0                # bytes of RAM blocks a sender may make us reserve; 0 = auto
    decoder_budget: int = 0         # bytes of decoders over all channels; 0 = auto
    psk_file: str = ""              # pre-shared key: HMAC challenge-response, per-session token
    tls_cert: str = ""              # mutual TLS: this end's certificate (PEM) ...
    tls_key: str = ""               # ... its private key (PEM) ...
    tls_ca: str = ""                # ... and the CA that signed the peer's


@dataclass(frozen=True)
class RelaySettings:
    """``multifd-engine relay``: what each side of a relay speaks (set on QEMU by QMP)."""

    incoming_method: str = "none"   # what arrives at --listen: the source QEMU's or the peer relay's
    outgoing_method: str = "qpl"    # what leaves for --to: the peer relay's or the destination QEMU's
    channels: int = 2               # QEMU's multifd-channels: the most multifd connections taken


@dataclass(frozen=True)
class SinkSettings:
    kind: str = "memory"        # "memory" | "file" | "null"
    dir: str = "out"            # for kind = "file"


@dataclass(frozen=True)
class Config:
    run: RunSettings = field(default_factory=RunSettings)
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    stress: StressSettings = field(default_factory=StressSettings)
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        _no_unknown("", data, {f.name for f in fields(cls)})
        config = cls(
            run=_section(RunSettings, "run", data.get("run", {})),
            workload=_workload(data.get("workload", {})),
            migration=_section(MigrationSettings, "migration", data.get("migration", {})),
            sink=_section(SinkSettings, "sink", data.get("sink", {})),
            transport=_transport(data.get("transport", {})),
            relay=_section(RelaySettings, "relay", data.get("relay", {})),
            stress=StressSettings.from_dict(data.get("stress", {})),
            emulator=_emulator(data.get("emulator", {})),
        )
        _validate(config)
        return config

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for reports); sizes in bytes, the mix as fractions."""
        out: dict[str, Any] = {}
        for f in fields(self):
            section = getattr(self, f.name)
            out[f.name] = {k.name: getattr(section, k.name) for k in fields(section)}
        out["workload"]["mix"] = dict(self.workload.mix.__dict__)
        out["emulator"]["faults"] = dict(self.emulator.faults.__dict__)
        return out


def level_of(m: MigrationSettings, method: methods.Method) -> int | None:
    """``migration.<name>_level`` for a method with levels (QEMU's multifd-<name>-level)."""
    if method.levels is None:
        return None
    return getattr(m, f"{method.name}_level")


def load_config(path: str | os.PathLike | None) -> Config:
    """Config from a TOML file; None = the embedded default."""
    if path is None:
        return Config()
    return Config.from_dict(read_toml(path))


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The TOML file ``path`` as data; ``ConfigError`` for every way it can be unreadable."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"no such config file: {path}") from None
    except IsADirectoryError:
        raise ConfigError("", f"{path} is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path} is not UTF-8 text (byte {exc.start}), so not TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError("", f"{path} nests arrays or tables too deeply") from None


def _no_unknown(section: str, data: Any, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(section, f"must be a table, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            name = f"{section}.{key}" if section else key
            raise ConfigError(name, f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _section(cls: type, name: str, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    _no_unknown(name, data, set(known))
    values = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        values[key] = _typed(f"{name}.{key}", value, default)
    return cls(**values)


def _typed(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int) and not (key == "migration.channels"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if isinstance(default, str) and key != "migration.channels":
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    return value


def _workload(data: dict[str, Any]) -> WorkloadSettings:
    data = dict(data)
    mix = data.pop("mix", {})
    if not isinstance(mix, dict):
        raise ConfigError("workload.mix", "must be a table of fractions")
    size = data.pop("size", None)
    settings = _section(WorkloadSettings, "workload", data)
    extra: dict[str, Any] = {"mix": PageMix.from_dict(mix)}
    if size is not None:
        extra["size"] = parse_size("workload.size", size)
    return WorkloadSettings(**{**settings.__dict__, **extra})


def _transport(data: dict[str, Any]) -> TransportSettings:
    data = dict(data)
    sizes = {key: parse_size(f"transport.{key}", data.pop(key))
             for key in ("max_ram", "decoder_budget") if key in data}
    settings = _section(TransportSettings, "transport", data)
    return TransportSettings(**{**settings.__dict__, **sizes})


def _validate_transport(t: TransportSettings) -> None:
    for key in ("connect_timeout", "accept_timeout", "stall_timeout", "handshake_timeout",
                "packet_deadline", "round_deadline"):
        if not 0 < getattr(t, key) <= 86400:
            raise ConfigError(f"transport.{key}", f"must be seconds in (0, 86400], "
                              f"got {getattr(t, key)}")
    for key in ("max_ram", "decoder_budget"):
        if getattr(t, key) < 0:
            raise ConfigError(f"transport.{key}",
                              f"must be bytes >= 0 (0 = auto), got {getattr(t, key)}")
    tls = [k for k in ("tls_cert", "tls_key", "tls_ca") if getattr(t, k)]
    if tls and len(tls) != 3:
        missing = sorted({"tls_cert", "tls_key", "tls_ca"} - set(tls))
        raise ConfigError(f"transport.{missing[0]}",
                          "mutual TLS needs tls_cert, tls_key and tls_ca")
    if tls and t.psk_file:
        raise ConfigError("transport.psk_file", "choose one: a pre-shared key or TLS, not both")
    # the files are read when a session starts (engine.net.auth), naming the key if unusable


def _emulator(data: dict[str, Any]) -> EmulatorSettings:
    data = dict(data)
    faults = data.pop("faults", {})
    if not isinstance(faults, dict):
        raise ConfigError("emulator.faults", "must be a table")
    settings = _section(EmulatorSettings, "emulator", data)
    fault_settings = _section(FaultSettings, "emulator.faults", faults)
    return EmulatorSettings(**{**settings.__dict__, "faults": fault_settings})


def _validate_emulator(e: EmulatorSettings) -> None:
    bounds = {"queue_size": (1, 65536), "engines": (1, 64), "latency_us": (0, 1e6),
              "engine_mb_per_s": (1e-3, 1e6), "decompress_speedup": (1e-3, 1e3),
              "jitter": (0, 0.99)}
    for key, (low, high) in bounds.items():
        if not low <= getattr(e, key) <= high:
            raise ConfigError(f"emulator.{key}", f"must be within {low}..{high}, got {getattr(e, key)}")
    f = e.faults
    for key in ("busy_storm_rate", "job_error_rate", "overflow_rate", "slow_job_rate"):
        if not 0.0 <= getattr(f, key) <= 1.0:
            raise ConfigError(f"emulator.faults.{key}", f"must be within 0..1, got {getattr(f, key)}")
    for key in ("busy_storm_us", "slow_job_us"):
        if not 0.0 <= getattr(f, key) <= 60e6:
            raise ConfigError(f"emulator.faults.{key}", f"must be 0..60e6 µs, got {getattr(f, key)}")
    if not 0 <= f.seed < 2**64:
        raise ConfigError("emulator.faults.seed", f"must be 0..2**64-1, got {f.seed}")
    if not 0 <= f.init_status <= 999:
        raise ConfigError("emulator.faults.init_status",
                          f"must be 0 (the probe passes) or a QPL status 1..999, got {f.init_status}")


def _validate_relay(r: RelaySettings, compat: wire.Compat) -> None:
    # either side may face a QEMU or the peer relay (any method), so only
    # the QEMU generation's compression mask binds both
    for key in ("incoming_method", "outgoing_method"):
        name = getattr(r, key)
        _choice(f"relay.{key}", name, methods.names())
        if methods.get(name).flag & ~compat.compression_mask:
            raise ConfigError(f"relay.{key}", f"method {name!r} does not fit the flag mask of "
                              f"QEMU {compat}")
    if not 1 <= r.channels <= 255:
        raise ConfigError("relay.channels", f"must be 1..255 (QEMU's multifd-channels), "
                          f"got {r.channels}")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of: {', '.join(allowed)}")


def _validate(c: Config) -> None:
    if c.run.rounds < 1:
        raise ConfigError("run.rounds", f"must be at least 1, got {c.run.rounds}")
    if not 0 <= c.run.worker_restarts <= 1000:
        raise ConfigError("run.worker_restarts", f"must be 0..1000, got {c.run.worker_restarts}")
    w, m = c.workload, c.migration
    _choice("workload.source", w.source, SOURCES)
    if w.source == "image" and not w.image:
        raise ConfigError("workload.image", "source = \"image\" needs the path of a memory image")
    if w.source == "image" and not Path(w.image).is_file():
        raise ConfigError("workload.image", f"no such file: {w.image}")
    for key in ("dirty_fraction", "hot_fraction", "hot_share"):
        if not 0.0 <= getattr(w, key) <= 1.0:
            raise ConfigError(f"workload.{key}", f"must be within 0..1, got {getattr(w, key)}")
    try:
        wire.page_count_for(m.page_size)
    except ValueError:
        raise ConfigError("migration.page_size", f"{m.page_size} is not a power of two "
                          "from 512 to 65536") from None
    if w.source == "synthetic" and (w.size <= 0 or w.size % m.page_size):
        raise ConfigError("workload.size", f"{w.size} bytes is not a positive multiple of "
                          f"the page size {m.page_size}")
    if not (m.channels == "auto" or (isinstance(m.channels, int) and not isinstance(m.channels, bool)
                                     and 1 <= m.channels <= 255)):
        raise ConfigError("migration.channels", f"must be \"auto\" or 1..255, got {m.channels!r}")
    _choice("migration.method", m.method, methods.names())
    try:
        compat = m.compat
    except ValueError:
        raise ConfigError("migration.qemu_version", f"{m.qemu_version!r} is not a QEMU version "
                          "like \"7.2\" or \"10.0\"") from None
    if not compat.supports(methods.get(m.method).flag):
        raise ConfigError("migration.method", f"QEMU {m.qemu_version} does not know method "
                          f"{m.method!r} (its receiver would reject the flag)")
    _choice("migration.accelerator", m.accelerator, ACCELERATORS)
    _choice("migration.busy_policy", m.busy_policy, tuple(BUSY_POLICIES))
    _validate_emulator(c.emulator)
    _choice("migration.compression", m.compression, tuple(COMPRESSION_SETTINGS))
    if not 0 <= m.max_submit_retries <= 1_000_000:
        raise ConfigError("migration.max_submit_retries", f"must be 0..1000000, got {m.max_submit_retries}")
    for method in map(methods.get, methods.names()):
        level = level_of(m, method)
        if method.levels is not None and level not in method.levels:
            levels = method.levels
            raise ConfigError(f"migration.{method.name}_level", f"must be {levels.start}.."
                              f"{levels.stop - 1} (as QEMU's multifd-{method.name}-level), got {level}")
    _validate_transport(c.transport)
    _validate_relay(c.relay, compat)
    _choice("sink.kind", c.sink.kind, SINKS)
    if c.sink.kind == "null" and c.run.verify:
        raise ConfigError("run.verify", "a null sink keeps no bytes to verify; "
                          "set run.verify = false or sink.kind = \"memory\"/\"file\"")
