"""Real Intel IAA through Intel QPL (libqpl, 1.6 or newer), found at run time.

libqpl is not a build dependency: ``native/qpl_shim.c`` loads it with
dlopen when a worker asks for it, from ``migration.qpl_library`` if set,
else from ``$MFD_QPL_LIBRARY``, else as ``libqpl.so.1`` / ``libqpl.so``
through the loader's usual search (``LD_LIBRARY_PATH``, ldconfig).  So a
libqpl installed after the engine is picked up without a rebuild.

Per worker, as QEMU's multifd-qpl: one software job always (the fallback),
a hardware probe (one hardware job initialised and freed: a failed init is
never reused), and, when the probe passes, ``page_count`` hardware jobs.
``probe_iaa`` is that probe with its verdict: the one check behind
``accelerator = "auto"`` / ``"iaa"`` and ``multifd-engine doctor``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine.errors import AcceleratorError
from workers import codec
from workers.codec import qpl_status_text

ENV_VAR = "MFD_QPL_LIBRARY"
DEFAULT_NAMES = ("libqpl.so.1", "libqpl.so")


def library_candidates(configured: str = "") -> tuple[str, ...]:
    """Where libqpl is looked for, in order (see the module docstring)."""
    if configured:
        return (configured,)
    from_env = os.environ.get(ENV_VAR, "")
    return (from_env,) if from_env else DEFAULT_NAMES


class QplLibrary:
    """A loaded libqpl: its version, the hardware probe, work queues."""

    def __init__(self, configured: str = "") -> None:
        errors = []
        for candidate in library_candidates(configured):
            try:
                self._handle = codec.qpl_open(candidate)
            except AcceleratorError as exc:
                errors.append(str(exc))
                continue
            self.path = candidate
            self.version = codec.qpl_version(self._handle)
            return
        source = ("migration.qpl_library" if configured else
                  f"${ENV_VAR}" if os.environ.get(ENV_VAR) else
                  f"the library search path (set ${ENV_VAR} or migration.qpl_library)")
        raise AcceleratorError(f"libqpl (1.6 or newer) not usable from {source}: "
                               + "; ".join(errors))

    def probe_hardware(self) -> int:
        """QPL status of initialising one hardware job (0: IAA is usable)."""
        return codec.qpl_probe_hardware(self._handle)

    def queue(self, *, hardware: bool, page_count: int) -> QplWorkQueue:
        return QplWorkQueue(self, hardware=hardware, page_count=page_count)


class QplWorkQueue:
    """``page_count`` hardware jobs (IAA), or the one software job of QPL."""

    is_hardware: bool

    def __init__(self, library: QplLibrary, *, hardware: bool, page_count: int) -> None:
        self.handle = codec.open_qpl_queue(library._handle, hardware=hardware, page_count=page_count)
        self.is_hardware = hardware
        self.name = "iaa" if hardware else "qpl-software"

    def close(self) -> None:
        if self.handle is not None:
            codec.release(self.handle)
            self.handle = None


@dataclass(frozen=True)
class IaaProbe:
    """libqpl as a worker finds it, and its IAA hardware probe."""

    version: str | None          # None: libqpl is not usable
    detail: str                  # where libqpl is, or why it is not usable
    probe: int | None            # QPL status of the hardware probe (0: IAA is usable)
    library: QplLibrary | None = field(default=None, compare=False, repr=False)

    @property
    def usable(self) -> bool:
        return self.version is not None and self.probe == 0

    def problem(self) -> str:
        """Why IAA is not usable ("" when it is)."""
        if self.version is None:
            return self.detail
        if self.probe != 0:
            return (f"libqpl {self.version} ({self.detail}) finds no usable IAA: hardware probe "
                    f"failed with {qpl_status_text(self.probe)}")
        return ""

    def require(self) -> QplLibrary:
        """The loaded libqpl; ``AcceleratorError`` (with the probe's status) if IAA is not usable."""
        if not self.usable or self.library is None:
            raise AcceleratorError(self.problem(), status=self.probe)
        return self.library


def probe_iaa(configured: str = "") -> IaaProbe:
    """Load libqpl (see ``library_candidates``) and run its hardware probe."""
    try:
        library = QplLibrary(configured)
    except AcceleratorError as exc:
        return IaaProbe(None, str(exc), None)
    return IaaProbe(library.version, library.path, library.probe_hardware(), library)
