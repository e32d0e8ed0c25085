"""Benchmark: a real QEMU migration direct, and through a relay pair, on a shaped link.

Two network namespaces (the source host and the destination host) joined
by a veth pair whose both ends ``tc netem`` shapes to a rate and a delay.
A real source QEMU (``-machine none``, RAM = the guest image, paused) in
one, a real destination QEMU in the other; per link, three cases:

* ``none direct``: QEMU to QEMU over the link, multifd ``none``;
* ``zstd direct``: the same with ``zstd`` (level 1);
* ``relay <method>``: QEMU ``none`` to a relay beside it (source
  namespace, loopback), the wire method over the link to the peer relay,
  ``none`` to the destination QEMU (destination namespace, loopback).

Per case: migration time (``migrate`` until the destination has loaded
everything and left ``inmigrate``; relays are started
``--relay-warmup`` seconds before ``migrate``, so their workers are up), bytes on the link (the veth's transmit counters, both
ways, TCP/IP headers included), CPU seconds per side (every process of
that host: QEMU, relay and its workers, from ``wait4``).  The destination's
RAM is compared with the image after every run.

    python bench/relay.py [--image RAM] [--qemu 7.2|10.0] [--links 1gbit,10gbit,none]
                          [--delay 1ms] [--wire qpl] [--runs 1] [--json PATH]

Needs root (``ip netns``) and a QEMU; the namespaces get 10.203.0.1/.2,
reachable only inside them, and are deleted on every exit path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import bench_report
import guest
from timing import Timing

from engine.qemu.qmp import Qmp

REPO = Path(__file__).resolve().parent.parent
QEMU = {"7.2": "qemu-system-x86_64",
        "10.0": os.environ.get("MFD_QEMU_10", "/opt/qemu-10.0/usr/bin/qemu-system-x86_64")}
SOURCE_IP, DEST_IP = "10.203.0.1", "10.203.0.2"
PORT = 4450


@dataclass
class Link:
    name: str
    rate: str | None      # tc rate, e.g. "1gbit"; None = not limited
    delay: str


@dataclass
class Result:
    case: str
    link: str
    seconds: float
    link_bytes: int
    cpu_source: float
    cpu_destination: float


# ---------------------------------------------------------------- the hosts

class Hosts:
    """Two namespaces joined by a shaped veth pair."""

    def __init__(self, tag: str) -> None:
        self.source, self.destination = f"{tag}s", f"{tag}d"
        self.source_dev, self.destination_dev = f"{tag}vs", f"{tag}vd"

    def create(self) -> None:
        s, d, vs, vd = self.source, self.destination, self.source_dev, self.destination_dev
        for step in (["netns", "add", s], ["netns", "add", d],
                     ["link", "add", vs, "type", "veth", "peer", "name", vd],
                     ["link", "set", vs, "netns", s], ["link", "set", vd, "netns", d],
                     ["-n", s, "addr", "add", f"{SOURCE_IP}/24", "dev", vs],
                     ["-n", d, "addr", "add", f"{DEST_IP}/24", "dev", vd],
                     ["-n", s, "link", "set", vs, "up"], ["-n", d, "link", "set", vd, "up"],
                     ["-n", s, "link", "set", "lo", "up"], ["-n", d, "link", "set", "lo", "up"]):
            _ip(*step)

    def shape(self, link: Link) -> str:
        """Shape both ends; says how (netem rate + delay, else tbf rate only)."""
        how = ""
        for ns, dev in ((self.source, self.source_dev), (self.destination, self.destination_dev)):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
            subprocess.run([*tc, "del", "dev", dev, "root"], capture_output=True)
            netem = ["delay", link.delay] + (["rate", link.rate] if link.rate else [])
            # a queue long enough for the rate x delay product at 10 Gbit/s
            if subprocess.run([*tc, "add", "dev", dev, "root", "netem", *netem, "limit", "100000"],
                              capture_output=True).returncode == 0:
                how = f"netem delay {link.delay}" + (f" rate {link.rate}" if link.rate else "")
            elif link.rate:
                # no netem in this kernel: the rate alone (token bucket), no added delay
                burst = max(_bits(link.rate) // 8 // 250, 64 << 10)
                subprocess.run([*tc, "add", "dev", dev, "root", "tbf", "rate", link.rate,
                                "burst", str(burst), "latency", "20ms"], check=True,
                               capture_output=True)
                how = f"tbf rate {link.rate}, no delay (netem unavailable)"
            else:
                how = "not shaped (netem unavailable)"
        return how

    def link_bytes(self) -> int:
        total = 0
        for ns, dev in ((self.source, self.source_dev), (self.destination, self.destination_dev)):
            path = f"/sys/class/net/{dev}/statistics/tx_bytes"
            out = subprocess.run(["ip", "netns", "exec", ns, "cat", path], check=True,
                                 capture_output=True, text=True).stdout
            total += int(out)
        return total

    def delete(self) -> None:
        for ns in (self.source, self.destination):    # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _bits(rate: str) -> int:
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return int(float(rate[: -len(unit)]) * factor)
    return int(rate)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


# ------------------------------------------------------------ the processes

class Process:
    """A process inside a namespace, stopped by its PID; ``cpu`` from wait4."""

    def __init__(self, ns: str, args: list[str], **popen) -> None:
        self.popen = subprocess.Popen(["ip", "netns", "exec", ns, *args], **popen)
        self.cpu = 0.0

    def reap(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                self.cpu = usage.ru_utime + usage.ru_stime
                return self.popen.returncode
            if time.monotonic() > deadline:
                os.kill(self.popen.pid, signal.SIGKILL)
                timeout = 10
                deadline = time.monotonic() + timeout
            time.sleep(0.02)


class Qemu(Process):
    def __init__(self, ns: str, binary: str, ram: Path, size_mib: int, qmp: Path,
                 incoming: bool) -> None:
        args = [binary, "-machine", "none,memory-backend=mem", "-m", f"{size_mib}M", "-object",
                f"memory-backend-file,id=mem,size={size_mib}M,mem-path={ram},share=on",
                "-nodefaults", "-nographic", "-S", "-qmp", f"unix:{qmp},server=on,wait=off"]
        super().__init__(ns, args + (["-incoming", "defer"] if incoming else []),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.qmp = Qmp(str(qmp), timeout=30)
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.reap(0)
                    raise
                time.sleep(0.05)

    def multifd(self, method: str) -> None:
        self.qmp.execute("migrate-set-capabilities",
                         capabilities=[{"capability": "multifd", "state": True}])
        self.qmp.execute("migrate-set-parameters", **{"multifd-channels": 2,
                         "multifd-compression": method, "max-bandwidth": 100 << 30})

    def stop(self) -> int:
        try:
            self.qmp.execute("quit")
        except Exception:
            pass
        self.qmp.close()
        return self.reap(10)


class Relay(Process):
    def __init__(self, ns: str, tmp: Path, name: str, version: str, incoming: str,
                 outgoing: str, listen: str, to: str) -> None:
        config = tmp / f"{name}.toml"
        config.write_text(f'[migration]\nqemu_version = "{version}"\nmethod = "none"\n'
                          f'[relay]\nincoming_method = "{incoming}"\n'
                          f'outgoing_method = "{outgoing}"\n')
        super().__init__(ns, [sys.executable, "-m", "engine.cli", "relay", "--listen", listen,
                              "--to", to, str(config), "-q"],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
        line = self.popen.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"relay {name} did not start: {line!r}")


# ---------------------------------------------------------------- one case

def migrate(hosts: Hosts, link: Link, case: str, args, image: Path, size_mib: int,
            tmp: Path) -> Result:
    binary = QEMU[args.qemu]
    wire = case.split()[1] if case.startswith("relay") else None
    method = "none" if wire else case.split()[0]
    dest_ram = Path(f"/dev/shm/mfd-bench-relay-{os.getpid()}-dst")
    dest_ram.unlink(missing_ok=True)
    with ExitStack() as stack:
        stack.callback(dest_ram.unlink, missing_ok=True)
        source = Qemu(hosts.source, binary, image, size_mib, tmp / "src.qmp", incoming=False)
        stack.callback(source.stop)
        destination = Qemu(hosts.destination, binary, dest_ram, size_mib, tmp / "dst.qmp",
                           incoming=True)
        stack.callback(destination.stop)
        source.multifd(method)
        destination.multifd(method)
        relays: list[Relay] = []
        if wire:
            destination.qmp.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{PORT + 1}")
            relays.append(Relay(hosts.destination, tmp, "dst", args.qemu, wire, "none",
                                f"{DEST_IP}:{PORT}", f"127.0.0.1:{PORT + 1}"))
            relays.append(Relay(hosts.source, tmp, "src", args.qemu, "none", wire,
                                f"127.0.0.1:{PORT + 2}", f"{DEST_IP}:{PORT}"))
            uri = f"tcp:127.0.0.1:{PORT + 2}"
            time.sleep(args.relay_warmup)   # the relays start their workers before QEMU connects
        else:
            destination.qmp.execute("migrate-incoming", uri=f"tcp:{DEST_IP}:{PORT}")
            uri = f"tcp:{DEST_IP}:{PORT}"
        before = hosts.link_bytes()
        started = time.monotonic()
        source.qmp.execute("migrate", uri=uri)
        _wait_loaded(source, destination)
        seconds = time.monotonic() - started
        link_bytes = hosts.link_bytes() - before
        for relay in relays:
            if relay.reap(60) != 0:
                raise RuntimeError(f"a relay failed in case {case!r}")
        if dest_ram.read_bytes() != image.read_bytes():
            raise RuntimeError(f"case {case!r}: the destination's RAM differs from the image")
        stack.close()
        cpu_source = source.cpu + (relays[1].cpu if relays else 0.0)
        cpu_destination = destination.cpu + (relays[0].cpu if relays else 0.0)
    return Result(case, link.name, seconds, link_bytes, cpu_source, cpu_destination)


def _wait_loaded(source: Qemu, destination: Qemu, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = source.qmp.execute("query-migrate").get("status")
        if status == "failed":
            raise RuntimeError(f"migration failed: {source.qmp.execute('query-migrate')}")
        if status == "completed":
            # the destination's monitor may be busy while it loads
            if destination.qmp.execute("query-status", timeout=600)["status"] != "inmigrate":
                return
        time.sleep(0.01)
    raise RuntimeError("migration did not complete")


# -------------------------------------------------------------------- main

@contextmanager
def image_file(args) -> Iterator[tuple[Path, int, str]]:
    """The guest image as a raw file in /dev/shm (QEMU's RAM file is a copy of it)."""
    block, described = guest.load(args, name="mem")
    path = Path(f"/dev/shm/mfd-bench-relay-{os.getpid()}-image")
    try:
        path.write_bytes(block.buf)
        yield path, block.size >> 20, described
    finally:
        block.close()
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    guest.add_arguments(parser, size="160MiB")
    parser.add_argument("--qemu", default="7.2", choices=sorted(QEMU))
    parser.add_argument("--links", default="1gbit,10gbit,none",
                        help="tc rates, comma-separated; none = not limited")
    parser.add_argument("--delay", default="1ms", help="netem delay on each end")
    parser.add_argument("--wire", default="qpl", help="the relays' wire method")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--relay-warmup", type=float, default=3.0,
                        help="seconds between starting the relays and migrate (worker start)")
    bench_report.add_argument(parser)
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("bench/relay.py needs root and iproute2 (ip netns, tc)")
    links = [Link(r, None if r == "none" else r, args.delay) for r in args.links.split(",")]
    cases = ["none direct", "zstd direct", f"relay {args.wire}"]
    hosts = Hosts(f"mfdrl{os.getpid() % 100000}")
    results: list[Result] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mfd-bench-relay-") as tmp:
        image, size_mib, described = stack.enter_context(image_file(args))
        stack.callback(hosts.delete)
        hosts.create()
        print(f"guest: {described}; QEMU {args.qemu}; 2 channels; delay {args.delay} each end")
        for link in links:
            print(f"link {link.name}: {hosts.shape(link)}", flush=True)
            for _ in range(args.runs):
                for case in cases:
                    result = migrate(hosts, link, case, args, image, size_mib, Path(tmp))
                    results.append(result)
                    print(f"{link.name:>7} {case:<12} {result.seconds:7.2f} s  link "
                          f"{result.link_bytes / 1e6:8.1f} MB  cpu source "
                          f"{result.cpu_source:6.2f} s  destination {result.cpu_destination:6.2f} s",
                          flush=True)
    _summary(results, links, cases, args, described)


def _summary(results: list[Result], links: list[Link], cases: list[str], args, described: str) -> None:
    report_cases, ratios = [], []
    print("\nmedians:")
    for link in links:
        medians = {}
        for case in cases:
            mine = [r for r in results if r.link == link.name and r.case == case]
            timing = Timing(f"{link.name} {case}", [r.seconds for r in mine])
            medians[case] = timing.median
            link_bytes = sorted(r.link_bytes for r in mine)[len(mine) // 2]
            print(f"{link.name:>7} {case:<12} {timing.median:7.2f} s  link {link_bytes / 1e6:8.1f} MB")
            report_cases.append(bench_report.case(timing, wire_bytes=link_bytes, channels=2,
                                                  method=case.split()[-1 if case.startswith("relay") else 0]))
        relay = medians[f"relay {args.wire}"]
        speedup = medians["none direct"] / relay
        goal = 2.0 if link.rate == "1gbit" else None
        print(f"{link.name:>7} none direct / relay {args.wire}: {speedup:.2f}x"
              + (f" (goal >= {goal:.0f}x)" if goal else ""))
        ratios.append(bench_report.ratio(f"{link.name}: none direct / relay {args.wire}", speedup,
                                         goal))
        if link.rate is None:
            overhead = relay / medians["none direct"] - 1
            print(f"{link.name:>7} relay overhead over none direct: {overhead * 100:+.0f} % "
                  "(goal <= +15 %)")
    bench_report.write(args.json, bench="relay", guest=described, cases=report_cases, ratios=ratios,
                       params=args)


if __name__ == "__main__":
    main()
