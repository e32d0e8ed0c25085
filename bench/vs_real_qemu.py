"""Engine → real QEMU destination against real QEMU source → real QEMU destination.

Both sides migrate the same guest image into the same kind of destination:
a paused ``qemu-system-x86_64 -machine none`` whose RAM is a
``memory-backend-file`` in /dev/shm, multifd on, the same method and
channel count, over loopback TCP.  The QEMU source is the same binary with
the image as its RAM file; the engine source is ``send --qemu`` (one
precopy round: every page, as QEMU's first pass of a paused guest).

Time: from the moment the source starts sending (QEMU: ``migrate``; the
engine: its first main-channel byte, after its workers started and its
connections opened, while QEMU sets its channels up inside its time) until
the destination's ``query-migrate`` says completed (polled every 2 ms by
the bench, every 5 ms by the engine).  Bytes: everything the source wrote,
main channel included, counted by a relay in one more, untimed migration
per side and method.  The destination's RAM is compared with the image
after every run.  Medians of ``--runs``, both sides in one run, interleaved.

    python bench/vs_real_qemu.py [--image RAM | --size 64MiB] [--runs 5]
                                 [--peer 10.0|7.2|10.0-qpl] [--channels 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import guest
from timing import Timing
from vs_qemu import _CountingProxy, _free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from qemu_peer import QemuPeer, peers  # noqa: E402  (the tests' QEMU harness)

from engine.config import Config  # noqa: E402
from engine.qemu.source import send_to_qemu  # noqa: E402

METHODS = {"7.2": ("none", "zlib", "zstd"), "10.0": ("none", "zlib", "zstd"),
           "10.0-qpl": ("none", "zlib", "zstd", "qpl")}


@dataclass
class Side:
    name: str
    timing: Timing
    wire_bytes: list[int] = field(default_factory=list)

    def line(self, guest_bytes: int) -> str:
        wire = statistics.median(self.wire_bytes) if self.wire_bytes else 0
        return f"{self.timing.line(guest_bytes)}  wire {wire / 1e6:7.1f} MB"


def wait_completed(qmp, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = qmp.execute("query-migrate").get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"migration {status}")
        time.sleep(0.002)
    raise RuntimeError("migration did not complete")


def multifd(qmp, method: str, channels: int) -> None:
    qmp.execute("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
    qmp.execute("migrate-set-parameters", **{"multifd-channels": channels,
                                            "multifd-compression": method,
                                            "max-bandwidth": 100 * 10**9})


def qemu_to_qemu(build, image: bytes, method: str, channels: int, count: bool) -> tuple[float, int]:
    with QemuPeer(build, len(image)) as dst, \
         QemuPeer(build, len(image), incoming=False, ram=image) as src:
        for q in (dst.qmp, src.qmp):
            multifd(q, method, channels)
        port = _free_port()
        dst.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        proxy = _CountingProxy(port) if count else None
        started = time.perf_counter()
        src.qmp.execute("migrate", uri=f"tcp:127.0.0.1:{proxy.port if proxy else port}")
        wait_completed(dst.qmp)
        seconds = time.perf_counter() - started
        if dst.ram() != image:
            raise RuntimeError(f"QEMU → QEMU {method}: destination RAM differs")
    if proxy is not None:
        proxy.close()
    return seconds, proxy.forward_bytes if proxy else 0


def engine_to_qemu(build, image: bytes, config: Config,
                   count: bool) -> tuple[float, int]:
    with QemuPeer(build, len(image)) as dst:
        dst.release_qmp()
        port = _free_port()
        target = port
        proxy = None
        if count:       # the relay must listen before migrate-incoming: prepare by hand
            dst.reconnect_qmp()
            multifd(dst.qmp, config.migration.method, config.migration.channel_count)
            dst.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
            proxy = _CountingProxy(port)
            target = proxy.port
            dst.release_qmp()
        result = send_to_qemu(config, f"127.0.0.1:{target}", qmp_path=dst.qmp_path,
                              configure_destination=not count)
        seconds = result.destination.seconds
        if not count and result.verified is not True:
            raise RuntimeError(f"engine → QEMU: {result.format_text(0)}")
    if proxy is not None:
        proxy.close()
    return seconds, proxy.forward_bytes if proxy else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    guest.add_arguments(parser, size="64MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--peer", default="10.0", choices=sorted(METHODS))
    parser.add_argument("--methods", nargs="*", help="default: every method the peer knows")
    args = parser.parse_args()

    build = peers()[args.peer]
    if build.missing:
        sys.exit(f"no QEMU {args.peer} here: {build.missing}")
    block, what = guest.load(args, name="mem")
    with block:
        image = bytes(block.buf)
    with_image = Path("/dev/shm") / f"mfd-bench-image-{os.getpid()}.raw"
    print(f"guest: {what}; QEMU {args.peer} ({build.binary}), -machine none, "
          f"{args.channels} channels, {args.runs} runs", flush=True)
    try:
        with_image.write_bytes(image)
        base = Config.from_dict({
            "run": {"rounds": 1},
            "workload": {"source": "image", "image": str(with_image), "block": "mem"},
            "migration": {"channels": args.channels, "qemu_version": build.qemu_version,
                          "method": "none", "accelerator": "software"}})
        for method in args.methods or METHODS[args.peer]:
            config = replace(base, migration=replace(base.migration, method=method))
            qemu = Side(f"QEMU {args.peer} → QEMU, {method}", Timing(f"QEMU → QEMU {method}"))
            ours = Side(f"engine → QEMU, {method}", Timing(f"engine → QEMU {method}"))
            for _ in range(args.runs):        # interleaved: drift hits both alike
                qemu.timing.seconds.append(qemu_to_qemu(build, image, method, args.channels, False)[0])
                ours.timing.seconds.append(engine_to_qemu(build, image, config, False)[0])
            qemu.wire_bytes.append(qemu_to_qemu(build, image, method, args.channels, True)[1])
            ours.wire_bytes.append(engine_to_qemu(build, image, config, True)[1])
            for side in (qemu, ours):
                print(side.line(len(image)), flush=True)
            ratio = qemu.timing.median / ours.timing.median
            wire = statistics.median(ours.wire_bytes) / statistics.median(qemu.wire_bytes)
            print(f"  engine speed vs QEMU: {ratio:.2f}x; engine bytes / QEMU bytes: {wire:.3f}",
                  flush=True)
    finally:
        with_image.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
