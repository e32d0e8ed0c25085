"""Guest RAM blocks held in POSIX shared memory.

A RAM block (see DESIGN.md) is a named, contiguous region of guest RAM.  Its
bytes live in a file under ``/dev/shm`` so that worker processes (started with
``multiprocess``, spawn) attach to it by name and read or write pages without a
copy.  Only page *indices* ever cross a pipe; page bytes stay here.

``multiprocessing.shared_memory`` is deliberately not used: its resource
tracker warns about, and unlinks, segments that children attach to.  The
segment here is the bare POSIX mechanism:

* create: ``os.open(O_CREAT | O_EXCL | O_RDWR, 0o600)``, ``os.ftruncate``,
  space reserved with ``posix_fallocate`` (so a full ``/dev/shm`` is a clean
  error now, not a SIGBUS later), ``mmap``, close the fd;
* attach: ``os.open(O_RDWR)`` + ``mmap``;
* unlink: ``os.unlink``, idempotent.

Names are ``mfd-<pid>-<8 hex random>-<label>``; ``ls /dev/shm/mfd-*`` shows
what a run holds.  A segment made by :meth:`SharedSegment.create` is owned by
the creating process: its name is removed by :meth:`SharedSegment.unlink`, or
at the latest when the object is garbage collected or the interpreter exits
(``weakref.finalize``; only in the creating process, so a forked child that
exits never removes its parent's segments).  A killed process runs no
finalizer: :func:`remove_stale_segments` removes segments whose creator is
gone.

Bad block parameters are ``RamBlockError``s whose ``part`` says which one
(name, size, page size); the caller that took the value from a user names
the config key or flag.

Closing while outside code still holds a view of the bytes (a numpy array made
from :attr:`RamBlock.buf`, a page memoryview) cannot unmap the memory without
leaving those views dangling; in that case ``close`` drops the block's own
references and the mapping goes away when the last outside view does.
"""

from __future__ import annotations

import mmap
import operator
import os
import re
import secrets
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import EngineError, RamBlockError

__all__ = ["SharedSegment", "RamBlockSpec", "RamBlock", "SHM_DIR", "page_views",
           "remove_stale_segments", "stale_segments"]

SHM_DIR = "/dev/shm"
_NAME_PREFIX = "mfd-"
_NAME_MAX = 255  # bytes in one file name (NAME_MAX on Linux)
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STALE_NAME = re.compile(r"mfd-([0-9]+)-[0-9a-f]{8}-")
_MIN_PAGE_SIZE = 512
_MAX_PAGE_SIZE = 65536


def _unlink_path(path: str, owner_pid: int) -> None:
    """Finalizer and unlink body: remove ``path`` if this is the creating process."""
    if os.getpid() != owner_pid:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _safe_label(label: str, room: int) -> str:
    text = _LABEL_UNSAFE.sub("_", str(label)) or "seg"
    return text[:room]


class SharedSegment:
    """One POSIX shared-memory segment: a file under ``/dev/shm``, mapped.

    ``name`` is the file name (no directory), ``size`` the mapped length in
    bytes, ``buf`` a writable memoryview over the whole mapping.
    """

    __slots__ = ("name", "size", "buf", "_mmap", "_owner", "_finalizer", "__weakref__")

    def __init__(self, name: str, size: int, mapping: mmap.mmap, *, owner: bool) -> None:
        self.name = name
        self.size = size
        self._mmap: mmap.mmap | None = mapping
        self.buf: memoryview = memoryview(mapping)
        self._owner = owner
        self._finalizer = (
            weakref.finalize(self, _unlink_path, os.path.join(SHM_DIR, name), os.getpid())
            if owner
            else None
        )

    # -- construction -----------------------------------------------------

    @classmethod
    def create(cls, label: str, size: int) -> "SharedSegment":
        """Create a new zero-filled segment of ``size`` bytes, owned by this process."""
        size = _check_segment_size(size)
        head = f"{_NAME_PREFIX}{os.getpid()}-"
        for _attempt in range(16):
            name = f"{head}{secrets.token_hex(4)}-"
            name += _safe_label(label, _NAME_MAX - len(name))
            path = os.path.join(SHM_DIR, name)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - 16 random collisions in a row
            raise EngineError(f"could not find a free shared-memory name for {label!r}")
        try:
            try:
                os.ftruncate(fd, size)
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                raise EngineError(
                    f"cannot reserve {size} bytes of shared memory in {SHM_DIR} "
                    f"for {name}: {exc.strerror or exc}"
                ) from exc
            mapping = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _unlink_path(path, os.getpid())
            raise
        os.close(fd)
        return cls(name, size, mapping, owner=True)

    @classmethod
    def attach(cls, name: str, size: int | None = None) -> "SharedSegment":
        """Map an existing segment by name; ``size`` None maps the whole file."""
        if not isinstance(name, str) or not name or "/" in name or "\0" in name or name in (".", ".."):
            raise EngineError(f"bad shared-memory segment name {name!r}")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        try:
            file_size = os.fstat(fd).st_size
            if size is None:
                size = file_size
            size = _check_segment_size(size)
            if size > file_size:
                raise EngineError(
                    f"shared-memory segment {name} holds {file_size} bytes, "
                    f"{size} were asked for"
                )
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, mapping, owner=False)

    # -- life cycle -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._mmap is None

    def close(self) -> None:
        """Release the view and unmap.  Idempotent; does not unlink."""
        mapping, self._mmap = self._mmap, None
        if mapping is None:
            return
        buf = self.buf
        try:
            buf.release()
        except BufferError:
            # Someone still holds an export of buf (e.g. a numpy array): the
            # mapping is freed when that goes away.
            return
        try:
            mapping.close()
        except BufferError:
            # Slices of buf are still alive elsewhere; same as above.
            pass

    def unlink(self) -> None:
        """Remove the name from /dev/shm.  Idempotent; mapped views stay valid."""
        if self._finalizer is not None:
            self._finalizer()  # runs _unlink_path once, then is dead
        else:
            try:
                os.unlink(os.path.join(SHM_DIR, self.name))
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SharedSegment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        role = "owner" if self._owner else "attached"
        return f"<SharedSegment {self.name} size={self.size} {role} {state}>"


def _check_segment_size(size: Any) -> int:
    if isinstance(size, bool):
        raise ValueError(f"shared-memory segment size must be an integer, got {size!r}")
    try:
        size = operator.index(size)
    except TypeError:
        raise ValueError(f"shared-memory segment size must be an integer, got {size!r}") from None
    if size <= 0:
        raise ValueError(f"shared-memory segment size must be positive, got {size}")
    return size


def stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Names of ``mfd-<pid>-...`` segments whose creating process no longer runs.

    Only meaningful when /dev/shm is not shared with another PID namespace
    (a PID from another namespace looks dead here).
    """
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return []
    return [name for name in sorted(names)
            if (match := _STALE_NAME.match(name)) and _creator_gone(int(match.group(1)))]


def _creator_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink the :func:`stale_segments`; returns the names removed.

    For clean-up after a run was killed (SIGKILL: no finalizers run).
    Every command calls it at start; ``multifd-engine doctor --clean`` too.
    """
    removed = []
    for name in stale_segments(shm_dir):
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


# -- validation of block parameters ------------------------------------------


def _check_name(name: Any) -> str:
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise RamBlockError("name", f"RAM block name {name!r} is not UTF-8") from None
    if not isinstance(name, str):
        raise RamBlockError("name", f"RAM block name must be a string, got {name!r}")
    if not name:
        raise RamBlockError("name", "RAM block name is empty")
    if "\0" in name:
        raise RamBlockError("name", f"RAM block name {name!r} contains a NUL byte")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise RamBlockError("name", f"RAM block name {name!r} is not valid UTF-8") from None
    if len(encoded) > 255:
        raise RamBlockError(
            "name", f"RAM block name is {len(encoded)} UTF-8 bytes, at most 255 fit: {name[:40]!r}..."
        )
    return name


def _check_int(part: str, what: str, value: Any) -> int:
    if isinstance(value, bool):
        raise RamBlockError(part, f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise RamBlockError(part, f"{what} must be an integer, got {value!r}") from None


def _check_page_size(page_size: Any) -> int:
    page_size = _check_int("page_size", "page size", page_size)
    if (
        page_size < _MIN_PAGE_SIZE
        or page_size > _MAX_PAGE_SIZE
        or page_size & (page_size - 1)
    ):
        raise RamBlockError(
            "page_size",
            f"page size {page_size} is not a power of two between "
            f"{_MIN_PAGE_SIZE} and {_MAX_PAGE_SIZE}",
        )
    return page_size


def _check_size(size: Any, page_size: int) -> int:
    size = _check_int("size", "RAM block size", size)
    if size <= 0 or size % page_size:
        raise RamBlockError(
            "size",
            f"RAM block size {size} is not a positive multiple of the page size {page_size}",
        )
    return size


# -- RAM blocks ----------------------------------------------------------------


@dataclass(frozen=True)
class RamBlockSpec:
    """What crosses to a worker: plain fields, msgpack-able through as_dict()."""

    name: str
    size: int
    page_size: int
    shm_name: str

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "page_size": self.page_size,
            "shm_name": self.shm_name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RamBlockSpec":
        if not isinstance(d, dict):
            raise ValueError(f"RAM block spec must be a mapping, got {type(d).__name__}")
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        missing = [k for k in ("name", "size", "page_size", "shm_name") if k not in fields]
        if missing:
            raise ValueError(f"RAM block spec lacks {missing[0]!r}")
        unknown = sorted(set(fields) - {"name", "size", "page_size", "shm_name"})
        if unknown:
            raise ValueError(f"RAM block spec has an unknown key {unknown[0]!r}")
        shm_name = fields["shm_name"]
        if isinstance(shm_name, bytes):
            shm_name = shm_name.decode("utf-8", "replace")
        if not isinstance(shm_name, str) or not shm_name or "/" in shm_name or "\0" in shm_name:
            raise ValueError(f"RAM block spec has a bad shared-memory name {shm_name!r}")
        name = _check_name(fields["name"])
        page_size = _check_page_size(fields["page_size"])
        size = _check_size(fields["size"], page_size)
        return cls(name=name, size=size, page_size=page_size, shm_name=shm_name)


class RamBlock:
    """A named RAM block whose bytes live in a :class:`SharedSegment`.

    The process that made the block (``create``) owns it and
    removes the shared-memory name in ``close``; attached blocks only unmap.
    """

    def __init__(self, name: str, size: int, page_size: int, segment: SharedSegment, *, owner: bool) -> None:
        self.name = name
        self.size = size
        self.page_size = page_size
        self.pages = size // page_size
        self.segment = segment
        self._owner = owner
        self._array: np.ndarray | None = None

    # -- construction -----------------------------------------------------

    @classmethod
    def create(cls, name: str, size: int, page_size: int) -> "RamBlock":
        """A new zero-filled block, owned by this process."""
        name = _check_name(name)
        page_size = _check_page_size(page_size)
        size = _check_size(size, page_size)
        segment = SharedSegment.create(name, size)
        return cls(name, size, page_size, segment, owner=True)

    @classmethod
    def attach(cls, spec: RamBlockSpec) -> "RamBlock":
        """Map the block another process created (not an owner)."""
        if isinstance(spec, dict):
            spec = RamBlockSpec.from_dict(spec)
        name = _check_name(spec.name)
        page_size = _check_page_size(spec.page_size)
        size = _check_size(spec.size, page_size)
        segment = SharedSegment.attach(spec.shm_name, size)
        return cls(name, size, page_size, segment, owner=False)

    # -- access -----------------------------------------------------------

    @property
    def buf(self) -> memoryview:
        """Writable memoryview over the whole block."""
        if self.segment.closed:
            raise ValueError(f"RAM block {self.name!r} is closed")
        return self.segment.buf

    @property
    def array(self) -> np.ndarray:
        """The block as a writable numpy uint8 array (no copy)."""
        if self._array is None:
            self._array = np.frombuffer(self.buf, np.uint8)
        return self._array

    def page(self, index: int) -> memoryview:
        """Writable memoryview of page ``index`` (negative counts from the end)."""
        i = operator.index(index)
        if i < 0:
            i += self.pages
        if not 0 <= i < self.pages:
            raise IndexError(f"page {index} outside RAM block {self.name!r} of {self.pages} pages")
        off = i * self.page_size
        return self.buf[off : off + self.page_size]

    def spec(self) -> RamBlockSpec:
        return RamBlockSpec(name=self.name, size=self.size, page_size=self.page_size, shm_name=self.segment.name)

    @property
    def owner(self) -> bool:
        return self._owner

    @property
    def closed(self) -> bool:
        return self.segment.closed

    # -- life cycle -------------------------------------------------------

    def close(self) -> None:
        """Unmap; the owner also removes the shared-memory name.  Idempotent."""
        self._array = None
        self.segment.close()
        if self._owner:
            self.segment.unlink()

    def __enter__(self) -> "RamBlock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self):
        raise TypeError("a RamBlock does not cross processes; send block.spec() and RamBlock.attach() it")

    def __repr__(self) -> str:
        role = "owner" if self._owner else "attached"
        state = "closed" if self.closed else "open"
        return (
            f"<RamBlock {self.name!r} {self.size} bytes, {self.pages} x {self.page_size} "
            f"({self.segment.name}, {role}, {state})>"
        )


def page_views(buf: memoryview, page_size: int, pages: np.ndarray) -> list[memoryview]:
    """Views of the pages ``pages`` (indices) of ``buf``, in that order, without a copy.

    A run of adjacent indices (i, i+1, ...) becomes one view, so a packet
    of contiguous pages is one iovec for ``writev`` / ``sendmsg`` /
    ``recvmsg_into``.  Method none sends and receives its payload through
    these (its payload is the normal pages in offset order, spec §4.1).
    ``IndexError`` if a page lies outside ``buf``: callers check indices
    first (the coordinator its dirty batch, the receiver the header), this
    only keeps a bug from reading or writing past the block.
    """
    indices = np.asarray(pages, dtype=np.uint64).tolist()
    if not indices:
        return []
    if (max(indices) + 1) * page_size > len(buf):
        raise IndexError(f"page {max(indices)} outside a buffer of {len(buf) // page_size} pages")
    # A loop per page, once per packet (at most 128 for 4 KiB pages): a
    # memoryview slice per run has to be made in Python anyway, and this
    # measured 17 µs for 128 scattered pages where numpy's run finding
    # took 27 µs (3.5 against 4 µs for one run).
    views = []
    start = previous = indices[0]
    for index in indices[1:]:
        if index != previous + 1:
            views.append(buf[start * page_size:(previous + 1) * page_size])
            start = index
        previous = index
    views.append(buf[start * page_size:(previous + 1) * page_size])
    return views
