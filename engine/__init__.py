"""multifd-engine: QEMU multifd live-migration pages, compressed and moved.

The public API is small::

    from engine import Engine, Receiver, run_batch, load_config

    report = run_batch(load_config("config/default.toml"))
    print(report.format_text())

Everything the engine raises on purpose is an ``EngineError``; see
``engine.errors`` for the families.
"""

__version__ = "0.1.0"    # the one place of the version; pyproject.toml reads it

from engine.errors import (
    AcceleratorError,
    BrokenWorker,
    ConfigError,
    EngineError,
    VerifyError,
    WireError,
    WorkerError,
)

__all__ = [
    "AcceleratorError", "BrokenWorker", "Config", "ConfigError", "Engine", "EngineError", "Receiver", "Report",
    "VerifyError", "WireError", "WorkerError", "__version__", "load_config", "run_batch",
]


def __getattr__(name: str):
    # Imported lazily so `engine.wire` and `engine.errors` stay light for the
    # worker processes and tools that need only them.
    if name in ("Engine", "run_batch"):
        from engine import batch
        return getattr(batch, name)
    if name == "Receiver":
        from engine.receiver import Receiver
        return Receiver
    if name == "Report":
        from engine.report.run import Report
        return Report
    if name in ("Config", "load_config"):
        from engine import config
        return getattr(config, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
