"""Real QEMU processes for tests: found, started, always stopped.

``QemuPeer`` starts ``qemu-system-x86_64 -machine none`` whose RAM is a
``memory-backend-file`` in /dev/shm (``share=on``, so a test reads the
destination's RAM as a file), with a QMP unix socket, paused (``-S``),
optionally ``-incoming defer``.  It is stopped by its PID and its files
removed on every exit path.  ``peers()`` says which builds are here; a
test asks for one with ``require(name)``, which skips, saying why, when
it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.qemu.qmp import Qmp

ROOT = Path(__file__).resolve().parents[1]
QPL_BUILD = ROOT / ".." / "shared" / "tools" / "qemu-10.0-qpl"
BACKPORTS_BUILD = Path(os.environ.get("MFD_QEMU_10", "/opt/qemu-10.0/usr/bin/qemu-system-x86_64"))


@dataclass(frozen=True)
class QemuBuild:
    name: str               # "7.2", "10.0", "10.0-qpl"
    binary: Path
    env: dict[str, str] = field(default_factory=dict)
    missing: str = ""       # why it cannot run here, "" when it can

    @property
    def qemu_version(self) -> str:
        return self.name.split("-")[0]


def qpl_library_dir() -> Path | None:
    """A folder whose ``libqpl.so.1`` loads: the build's own, or links to its real file.

    A copy of the build folder may hold ``libqpl.so.1`` as a short text file
    naming its target instead of the symlink it was.
    """
    real = QPL_BUILD.resolve() / "libqpl.so.1.6.0"
    if not real.is_file():
        return None
    if (QPL_BUILD / "libqpl.so.1").stat().st_size > 4096:
        return QPL_BUILD.resolve()
    links = Path(tempfile.gettempdir()) / f"mfd-qpl-lib-{os.getuid()}"
    links.mkdir(exist_ok=True)
    link = links / "libqpl.so.1"
    if not link.exists():
        tmp = links / f"libqpl.so.1.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        os.replace(tmp, link)
    return links


def peers() -> dict[str, QemuBuild]:
    system = shutil.which("qemu-system-x86_64")
    qpl = QPL_BUILD.resolve() / "qemu-system-x86_64"
    qpl_libs = qpl_library_dir()
    return {
        "7.2": QemuBuild("7.2", Path(system or "qemu-system-x86_64"),
                         missing="" if system else "qemu-system-x86_64 not installed "
                         "(apt-get install qemu-system-x86)"),
        "10.0": QemuBuild("10.0", BACKPORTS_BUILD,
                          missing="" if BACKPORTS_BUILD.is_file() else
                          f"QEMU 10.0 not found at {BACKPORTS_BUILD} (.ci/run installs it)"),
        "10.0-qpl": QemuBuild("10.0-qpl", qpl, {"LD_LIBRARY_PATH": str(qpl_libs)},
                              missing="" if qpl.is_file() and qpl_libs else
                              f"QEMU 10.0 with QPL not found at {qpl} (../shared/tools)"),
    }


def require(name: str) -> QemuBuild:
    build = peers()[name]
    if build.missing:
        pytest.skip(build.missing)
    return build


class QemuPeer:
    """One ``-machine none`` QEMU with ``size`` bytes of RAM in /dev/shm.  A context manager."""

    def __init__(self, build: QemuBuild, size: int, *, incoming: bool = True,
                 ram: bytes | None = None, machine: str = "none", block: str = "mem",
                 extra: tuple[str, ...] = (), timeout: float = 10.0) -> None:
        self.build = build
        self.size = size
        self.dir = Path(tempfile.mkdtemp(prefix="mfd-qemu-"))
        self.ram_path = Path("/dev/shm") / f"mfd-qemu-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.qmp_path = str(self.dir / "qmp.sock")
        self.log_path = self.dir / "qemu.log"
        self.process: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        try:
            if ram is not None:
                self.ram_path.write_bytes(ram)
            mib = size >> 20
            args = [str(build.binary), "-machine", f"{machine},memory-backend={block}",
                    "-m", f"{mib}M", "-object",
                    f"memory-backend-file,id={block},size={mib}M,mem-path={self.ram_path},share=on",
                    "-nodefaults", "-nographic", "-S", "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                    *extra]
            if incoming:
                args += ["-incoming", "defer"]
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                env={**os.environ, **build.env}, start_new_session=True)
            self.qmp = self._connect(timeout)
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> Qmp:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_path):
            if self.process.poll() is not None:
                raise RuntimeError(f"QEMU {self.build.name} exited {self.process.returncode}: {self.log()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"QEMU {self.build.name} made no QMP socket in {timeout:g} s")
            time.sleep(0.02)
        return Qmp(self.qmp_path, timeout=max(deadline - time.monotonic(), 1.0))

    def release_qmp(self) -> None:
        """Close our QMP connection: QEMU serves one monitor client at a time."""
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def reconnect_qmp(self, timeout: float = 10.0) -> Qmp:
        self.release_qmp()
        self.qmp = self._connect(timeout)
        return self.qmp

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def ram(self) -> bytes:
        return self.ram_path.read_bytes()

    def wait_status(self, wanted: set[str], timeout: float = 20.0) -> dict:
        """query-migrate until its status is one of ``wanted``; the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp.execute("query-migrate")
            if info.get("status") in wanted or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def exit_code(self, timeout: float = 5.0) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        self.ram_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> QemuPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
