"""Benchmark 4: the engine against real QEMU, on the same guest image.

QEMU side: two ``qemu-system-x86_64`` processes on this machine
(``-machine none``), both with their RAM in a ``memory-backend-file`` (the
source's file is the image; ``-S``, never run), multifd with 2 channels,
``max-bandwidth`` 100 GB/s, migrated over loopback TCP once per method
(none, zlib, zstd with ``--qemu``, Debian's 7.2; ``--qemu-new-methods``,
default qpl and zstd, with ``--qemu-new``, by default the QEMU 10.0.13
with QPL of shared/tools/qemu-10.0-qpl).  Time: from ``migrate`` until
``query-migrate`` says completed; bytes: counted by a relay in one more,
untimed migration (every channel, the main one included).
The destination's RAM file is compared with the image after each run.

Engine side: the same image, 2 channels over loopback TCP, sending and
receiving at the same time in one process (2 worker processes compress,
2 receiver threads decode), verified byte for byte.  Time: from the first
packet until the receiver has every page; worker start excluded (as
QEMU's process start is).

Prints every median, the ratios, and issue 16's two goals for every qpl
setting: A, <= 0.67x QEMU 7.2 zstd's time at <= 1.15x QEMU 7.2 zlib's
wire bytes; B, <= 0.67x QEMU qpl's time with fewer bytes than QEMU qpl.

    python bench/vs_qemu.py [--image RAM] [--size 512MiB] [--runs 3]
                            [--qemu qemu-system-x86_64] [--qemu-new PATH]
                            [--qemu-new-methods qpl,zstd]

``--image`` takes any raw guest RAM file, e.g. the ``mem-path`` file of a
VM started with ``-object memory-backend-file,id=mem,size=512M,
mem-path=guest.ram,share=on -machine memory-backend=mem`` after it was
stopped; without it, the real wl3 guest of shared/data is tiled to
``--size`` (or the engine's generator with ``--synthetic``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bench_report
import guest
from timing import Timing, verdict

from engine import methods
from engine.batch import Engine
from engine.config import Config
from engine.ram import RamBlock
from engine.receiver import Receiver
from engine.workloads import load_image
from engine.net.transport import TcpSink, TcpSource
from workers import codec

QEMU_METHODS = ("none", "zlib", "zstd", "qpl")
_REPO = Path(__file__).resolve().parent.parent
QEMU_QPL_CANDIDATES = (_REPO.parent / "shared/tools/qemu-10.0-qpl/qemu-system-x86_64",
                       Path("/work/shared/tools/qemu-10.0-qpl/qemu-system-x86_64"))


def _default_qemu_new() -> str | None:
    return next((str(p) for p in QEMU_QPL_CANDIDATES if p.is_file()), None)


@dataclass
class Outcome:
    """One side's runs of one method."""

    who: str
    method: str
    timing: Timing
    wire_bytes: int

    def line(self) -> str:
        return f"{self.timing.line()}  wire {self.wire_bytes / 1e6:8.1f} MB"


# ---------------------------------------------------------------------------
# QEMU

class _Qmp:
    """A QMP connection over a unix socket: commands in, answers out."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile("rwb")
        self._read()                      # greeting
        self.run("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self._file.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            message = json.loads(line)
            if "event" not in message:
                return message

    def run(self, command: str, **arguments) -> object:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._file.write(json.dumps(request).encode() + b"\n")
        self._file.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"QMP {command}: {answer['error']}")
        return answer.get("return")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class _Qemu:
    """One paused QEMU whose RAM is a file, driven over QMP."""

    def __init__(self, binary: str, ram_file: Path, size_mib: int, qmp_path: Path,
                 incoming: bool, env: dict[str, str]) -> None:
        # machine none: the guest RAM is the only RAM block, and a QEMU
        # without firmware files (the QPL build) runs it too
        args = [binary, "-machine", "none,memory-backend=mem", "-accel", "tcg", "-m", f"{size_mib}M",
                "-smp", "1", "-nodefaults", "-display", "none", "-S",
                "-object", f"memory-backend-file,id=mem,size={size_mib}M,mem-path={ram_file},share=on",
                "-qmp", f"unix:{qmp_path},server=on,wait=off"]
        if incoming:
            args += ["-incoming", "defer"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=env)
        try:
            self.qmp = _Qmp(qmp_path)
        except BaseException:
            self.stop()
            raise

    def multifd(self, method: str, channels: int) -> None:
        self.qmp.run("migrate-set-capabilities",
                     capabilities=[{"capability": "multifd", "state": True}])
        self.qmp.run("migrate-set-parameters", **{"multifd-channels": channels,
                                                  "multifd-compression": method,
                                                  "max-bandwidth": 100 * 10**9})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def qemu_environment(binary: str, work: Path) -> dict[str, str]:
    """The environment to run ``binary`` in.

    A QEMU shipped with its own libqpl beside it (shared/tools/qemu-10.0-qpl,
    no RUNPATH) finds it through LD_LIBRARY_PATH.  A copy of that folder may
    have turned the libqpl.so.1 symlink into a small file holding the
    target's name; then a real link to the library is made under ``work``.
    """
    env = dict(os.environ)
    folder = Path(binary).resolve().parent
    libraries = sorted(folder.glob("libqpl.so.1.*"), key=lambda p: p.stat().st_size)
    if not libraries:
        return env
    links = work / "qemu-libs"
    links.mkdir(exist_ok=True)
    (links / "libqpl.so.1").unlink(missing_ok=True)
    (links / "libqpl.so.1").symlink_to(libraries[-1])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(links), env.get("LD_LIBRARY_PATH")]))
    return env


def qemu_version(binary: str, env: dict[str, str]) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True,
                         env=env).stdout
    major, minor = out.split("version ")[1].split()[0].split(".")[:2]
    return int(major), int(minor)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CountingProxy:
    """Loopback TCP relay that counts the bytes going one way (source to destination).

    Used only for a separate, untimed migration per method: QEMU 7.2
    counts pages before compression in ``ram.transferred`` and
    ``multifd-bytes``, so the wire has to be counted on the wire.
    """

    def __init__(self, target_port: int) -> None:
        self.forward_bytes = 0
        self._target = target_port
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return                           # closed
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, count), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while n := src.recv_into(buf):
                dst.sendall(view[:n])
                if count:
                    with self._lock:
                        self.forward_bytes += n
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()
        for t in self._threads:
            t.join(10)


def migrate_once(binary: str, image: Path, size_mib: int, method: str, work: Path, *,
                 count_bytes: bool = False) -> tuple[float, int]:
    """One QEMU-to-QEMU migration over loopback: (seconds, wire bytes or 0).

    With ``count_bytes`` the source talks to a counting relay in front of
    the destination (slower: for the byte count only, not the time).
    """
    dest_ram = work / "dest.ram"
    dest_ram.unlink(missing_ok=True)
    env = qemu_environment(binary, work)
    src = dst = None
    try:
        dst = _Qemu(binary, dest_ram, size_mib, work / "dst.qmp", incoming=True, env=env)
        src = _Qemu(binary, image, size_mib, work / "src.qmp", incoming=False, env=env)
        for q in (dst, src):
            q.multifd(method, 2)
        port = _free_port()
        dst.qmp.run("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        proxy = _CountingProxy(port) if count_bytes else None
        started = time.perf_counter()
        src.qmp.run("migrate", uri=f"tcp:127.0.0.1:{proxy.port if proxy else port}")
        while True:
            info = src.qmp.run("query-migrate")
            status = info.get("status")
            if status == "completed":
                seconds = time.perf_counter() - started
                break
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"QEMU migration {method}: {info}")
            time.sleep(0.002)
        _wait_incoming_done(dst)
        transferred = 0
        if proxy is not None:
            src.stop()
            dst.stop()
            proxy.close()
            transferred = proxy.forward_bytes
    finally:
        for q in (src, dst):
            if q is not None:
                q.stop()
    if not _same_file(image, dest_ram):
        raise RuntimeError(f"QEMU migration {method}: destination RAM differs from the image")
    return seconds, transferred


def _wait_incoming_done(dst: _Qemu, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dst.qmp.run("query-status").get("status") != "inmigrate":
            return
        time.sleep(0.01)
    raise RuntimeError("destination QEMU never finished the incoming migration")


def _same_file(a: Path, b: Path) -> bool:
    with load_image(a, name="a") as x, load_image(b, name="b") as y:
        return x.size == y.size and codec.compare_pages(x.buf, y.buf, 4096, 1)[0] == 0


def run_qemu(binary: str, image: Path, size_mib: int, runs: int, work: Path,
             methods_wanted: tuple[str, ...] = QEMU_METHODS) -> list[Outcome]:
    version = qemu_version(binary, qemu_environment(binary, work))
    label = f"QEMU {version[0]}.{version[1]}"
    wanted = [m for m in methods_wanted if m != "qpl" or version >= (9, 1)]
    outcomes = []
    for method in wanted:
        timing = Timing(f"{label} {method}")
        try:
            for _ in range(runs):
                seconds, _ = migrate_once(binary, image, size_mib, method, work)
                timing.seconds.append(seconds)
            _, transferred = migrate_once(binary, image, size_mib, method, work, count_bytes=True)
        except RuntimeError as exc:  # e.g. a QEMU built without qpl
            print(f"{label} {method}: skipped ({exc})")
            continue
        outcomes.append(Outcome(label, method, timing, transferred))
        print(outcomes[-1].line(), flush=True)
    return outcomes


# ---------------------------------------------------------------------------
# the engine

def _loopback_pairs(count: int) -> tuple[list[TcpSink], list[TcpSource]]:
    """``count`` connected loopback TCP channels: (sending ends, receiving ends)."""
    sinks, sources = [], []
    with socket.create_server(("127.0.0.1", 0)) as server:
        for i in range(count):
            out = socket.create_connection(server.getsockname())
            into, _ = server.accept()
            sinks.append(TcpSink(out, i))
            sources.append(TcpSource(into, i))
    return sinks, sources


def run_engine(block: RamBlock, method: str, compression: str, runs: int, *,
               copy_pages: bool = False) -> Outcome:
    """``runs`` rounds of the whole block over loopback TCP, after one to warm up.

    ``copy_pages`` (method none) takes the copying path on both ends
    (bench/none_copies.py compares the two).
    """
    config = Config.from_dict({"migration": {"channels": 2, "method": method,
                                             "accelerator": "software",
                                             "compression": compression,
                                             "copy_pages": copy_pages},
                               "run": {"verify": True}})
    pages = np.arange(block.pages, dtype=np.uint64)
    name = f"engine {method}" + (f" ({compression})" if method == "qpl" else "")
    name += " (copy_pages)" if copy_pages else ""
    timing, wire_bytes = Timing(name), 0
    with RamBlock.create(block.name, block.size, block.page_size) as dest, \
         ThreadPoolExecutor(1) as receiving:
        for _ in range(runs + 1):            # the first run warms up
            sinks, sources = _loopback_pairs(2)
            with Engine(config, blocks=[block], sinks=sinks) as engine, \
                 Receiver([dest], sources, method=method, page_size=block.page_size,
                          copy_pages=copy_pages) as rx:
                rx.start()
                written = sum(s.bytes_written for s in sinks)
                started = time.perf_counter()
                received = receiving.submit(rx.receive_round)   # at the same time, as QEMU's
                engine.send(pages)
                received.result()
                seconds = time.perf_counter() - started
                wire_bytes = sum(s.bytes_written for s in sinks) - written
                if not rx.verify([block]).ok:
                    raise RuntimeError(f"{name}: destination differs from the source")
            timing.seconds.append(seconds)
        timing.seconds = timing.seconds[1:]
    outcome = Outcome("engine", method, timing, wire_bytes)
    print(outcome.line(), flush=True)
    return outcome


# ---------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qemu", default="qemu-system-x86_64", help="the reference QEMU (Debian's 7.2)")
    parser.add_argument("--qemu-new", default=_default_qemu_new(),
                        help="a QEMU >= 9.1 built with QPL (default: shared/tools/qemu-10.0-qpl when "
                             "present; \"\" for none)")
    parser.add_argument("--qemu-new-methods", default="qpl,zstd",
                        help="methods to migrate with --qemu-new (default qpl,zstd)")
    parser.add_argument("--engine-only", action="store_true")
    bench_report.add_argument(parser)
    args = parser.parse_args()

    block, what = guest.load(args)
    with block, tempfile.TemporaryDirectory(prefix="mfd-vs-qemu-", dir="/dev/shm"
                                            if os.path.isdir("/dev/shm") else None) as tmp:
        work = Path(tmp)
        size_mib, guest_bytes = block.size >> 20, block.size
        print(f"guest: {what}; {block.pages} pages, {len(guest.nonzero_pages(block))} non-zero")
        print(f"engine codec: {codec.codec_name()}; {os.cpu_count()} cores", flush=True)
        qemu: list[Outcome] = []
        binaries = [b for b in (args.qemu, args.qemu_new) if b and shutil.which(b)]
        if binaries and not args.engine_only:
            image = work / "source.ram"
            guest.write_raw(block, image)
            for binary in binaries:
                wanted = (QEMU_METHODS if binary == args.qemu
                          else tuple(m for m in args.qemu_new_methods.split(",") if m))
                qemu += run_qemu(shutil.which(binary), image, size_mib, args.runs, work, wanted)
            image.unlink()
        elif not args.engine_only:
            print(f"no {args.qemu} here: QEMU side skipped (apt-get install qemu-system-x86)")
        engine = [run_engine(block, "qpl", c, args.runs) for c in codec.COMPRESSION_SETTINGS]
        engine += [run_engine(block, m, "balanced", args.runs)
                   for m in ("none", "zlib", "zstd") if m in methods.names()]
    goals = _ratios(qemu, engine)
    bench_report.write(args.json, bench=__file__, guest=what, params=args, ratios=goals, cases=[
        bench_report.case(o.timing, guest_bytes, wire_bytes=o.wire_bytes, method=o.method, channels=2)
        for o in qemu + engine])


def _ratios(qemu: list[Outcome], engine: list[Outcome]) -> list[dict]:
    """Print the ratios; returns the goals (bench_report.ratio) for the JSON report."""
    ref = {o.method: o for o in qemu if o.who.startswith("QEMU 7.")}
    new = {o.method: o for o in qemu if not o.who.startswith("QEMU 7.")}
    ours = {o.timing.name: o for o in engine}
    print("\nratios (engine / QEMU):")
    for name, o in ours.items():
        for peer in (ref, new):
            for m, q in peer.items():
                print(f"  {name:<24} / {q.timing.name:<16} time {o.timing.median / q.timing.median:6.2f}"
                      f"  bytes {o.wire_bytes / q.wire_bytes:5.2f}")
    goals = _qpl_goals(ref, new, [o for o in engine if o.method == "qpl"])
    if not ref:
        return goals
    print("\ngoals of issue 6 (against QEMU 7.2):")
    qpl = ours.get("engine qpl (balanced)")
    if qpl and "zlib" in ref:
        goals.append(bench_report.ratio("qpl time / QEMU zlib time", qpl.timing.median
                                        / ref["zlib"].timing.median, 0.15, higher_is_better=False))
        print(f"  qpl time / QEMU zlib time:   {verdict(qpl.timing.median / ref['zlib'].timing.median, 0.15, higher_is_better=False)}")
    none = ours.get("engine none")
    if none and "none" in ref:
        goals.append(bench_report.ratio("none time / QEMU none time", none.timing.median
                                        / ref["none"].timing.median, 1.2, higher_is_better=False))
        print(f"  none time / QEMU none time:  {verdict(none.timing.median / ref['none'].timing.median, 1.2, higher_is_better=False)}")
    return goals


def _qpl_goals(ref: dict[str, Outcome], new: dict[str, Outcome], qpl: list[Outcome]) -> list[dict]:
    """Issue 16's two goals for every engine qpl setting, and which setting is best.

    A: <= 0.67x QEMU 7.2 zstd's time at <= 1.15x QEMU 7.2 zlib's wire bytes;
    B: <= 0.67x QEMU qpl's time with fewer wire bytes than QEMU qpl.
    """
    checks = []                           # (label, name, value, goal, strict)
    if "zstd" in ref and "zlib" in ref:
        checks += [("A", "time / QEMU 7.2 zstd time", lambda o: o.timing.median / ref["zstd"].timing.median, 0.67),
                   ("A", "bytes / QEMU 7.2 zlib bytes", lambda o: o.wire_bytes / ref["zlib"].wire_bytes, 1.15)]
    if "qpl" in new:
        q = new["qpl"]
        checks += [("B", f"time / {q.who} qpl time", lambda o: o.timing.median / q.timing.median, 0.67),
                   ("B", f"bytes / {q.who} qpl bytes", lambda o: o.wire_bytes / q.wire_bytes, 1.0)]
    if not checks or not qpl:
        return []
    print("\ngoals of issue 16 (A: <= 0.67x QEMU 7.2 zstd's time at <= 1.15x QEMU 7.2 zlib's bytes;"
          "\n                   B: <= 0.67x QEMU qpl's time with fewer bytes than QEMU qpl):")
    goals, met = [], {}
    for o in qpl:
        for label, name, value_of, goal in checks:
            value = value_of(o)
            goals.append(bench_report.ratio(f"{o.timing.name} {name}", value, goal, higher_is_better=False))
            met[o.timing.name] = met.get(o.timing.name, 0) + (value <= goal)
            print(f"  {label} {o.timing.name:<24} {name:<28} {verdict(value, goal, higher_is_better=False)}")
    best = max(qpl, key=lambda o: (met[o.timing.name], -o.timing.median))
    print(f"  best setting: {best.timing.name} ({met[best.timing.name]} of {len(checks)} checks met)")
    return goals


if __name__ == "__main__":
    main()
