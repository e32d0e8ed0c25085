"""Real Intel IAA through Intel QPL (libqpl, 1.6 or newer), found at run time.

libqpl is not a build dependency: ``native/qpl_shim.c`` loads it with
dlopen when a worker asks for it, from ``migration.qpl_library`` if set,
else from ``$MFD_QPL_LIBRARY``, else as ``libqpl.so.1`` / ``libqpl.so``
through the loader's usual search (``LD_LIBRARY_PATH``, ldconfig).  So a
libqpl installed after the engine is picked up without a rebuild.

Per worker, as QEMU's multifd-qpl: one software job always (the fallback),
a hardware probe (one hardware job initialised and freed: a failed init is
never reused), and, when the probe passes, ``page_count`` hardware jobs.
"""

from __future__ import annotations

import os

from engine.errors import AcceleratorError, CodecError
from workers.codec import ffi, lib

ENV_VAR = "MFD_QPL_LIBRARY"
DEFAULT_NAMES = ("libqpl.so.1", "libqpl.so")
PATH_HARDWARE, PATH_SOFTWARE = 1, 2

# QPL statuses a user may meet here (include/qpl/c_api/status.h)
QPL_STATUS_NAMES = {
    0: "QPL_STS_OK",
    2: "QPL_STS_MORE_OUTPUT_NEEDED",
    5: "QPL_STS_QUEUES_ARE_BUSY_ERR",
    6: "QPL_STS_LIBRARY_INTERNAL_ERR",
    8: "QPL_STS_NOT_SUPPORTED_BY_WQ",
    54: "QPL_STS_PATH_ERR",
    217: "QPL_STS_BAD_DIST_ERR",
    500: "QPL_STS_INIT_HW_NOT_SUPPORTED",
    501: "QPL_STS_INIT_LIBACCEL_NOT_FOUND (libaccel-config.so.1 missing or too old)",
    502: "QPL_STS_INIT_LIBACCEL_ERROR",
    503: "QPL_STS_INIT_WORK_QUEUES_NOT_AVAILABLE (no enabled shared IAA work queue we may open)",
}


def qpl_status_text(status: int) -> str:
    """``"501 QPL_STS_INIT_LIBACCEL_NOT_FOUND (...)"``, or the bare number."""
    name = QPL_STATUS_NAMES.get(status)
    return f"{status} {name}" if name else str(status)


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
            err = ffi.new("char[]", 512)
            handle = lib.mfd_qpl_open(candidate.encode(), err, 512)
            if handle != ffi.NULL:
                self.path = candidate
                self._handle = ffi.gc(handle, lib.mfd_qpl_close)
                self.version = ffi.string(lib.mfd_qpl_version(self._handle)).decode()
                return
            errors.append(ffi.string(err).decode(errors="replace"))
        source = ("migration.qpl_library" if configured else
                  f"${ENV_VAR}" if os.environ.get(ENV_VAR) else
                  f"the library search path (set ${ENV_VAR} or migration.qpl_library)")
        raise AcceleratorError(f"libqpl not found (1.6 or newer, from {source}): "
                               + "; ".join(errors))

    def probe_hardware(self) -> int:
        """QPL status of initialising one hardware job (0: IAA is usable)."""
        return int(lib.mfd_qpl_probe_hardware(self._handle))

    def queue(self, *, hardware: bool, page_count: int) -> QplWorkQueue:
        return QplWorkQueue(self, hardware=hardware, page_count=page_count)


class QplWorkQueue:
    """``page_count`` hardware jobs (IAA), or the one software job of QPL."""

    is_hardware: bool

    def __init__(self, library: QplLibrary, *, hardware: bool, page_count: int) -> None:
        status = ffi.new("int *")
        path = PATH_HARDWARE if hardware else PATH_SOFTWARE
        ptr = lib.mfd_qpl_queue_new(library._handle, path, int(page_count), status)
        if ptr == ffi.NULL:
            kind = "hardware" if hardware else "software"
            raise CodecError(f"libqpl {library.version}: cannot set up {page_count} {kind} "
                             f"job(s): {qpl_status_text(int(status[0]))}")
        self.handle = ffi.gc(ptr, lib.mfd_qpl_queue_free)
        self.is_hardware = hardware
        self.name = "iaa" if hardware else "qpl-software"

    def close(self) -> None:
        if self.handle is not None:
            ffi.release(self.handle)
            self.handle = None
