"""What IAA hardware this host has, read from sysfs and /dev (for ``doctor``).

The kernel's idxd driver lists every DSA/IAA device and work queue under
``/sys/bus/dsa/devices``: devices ``iax<N>`` and their work queues
``wq<N>.<M>`` side by side (spec qpl-and-iaa.md §3).  QPL can submit to a
work queue only when its device and the queue are enabled, the queue is
*shared* (QPL ignores dedicated queues) and of type *user*, and its node
``/dev/iax/wq<N>.<M>`` exists and may be opened.  Both roots are
parameters, so tests read fake trees.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SYSFS_ROOT = "/sys/bus/dsa/devices"
DEV_ROOT = "/dev/iax"
_DEVICE = re.compile(r"^iax(\d+)$")
_WQ = re.compile(r"^wq(\d+)\.(\d+)$")


@dataclass(frozen=True)
class WorkQueueInfo:
    """One IAA work queue as sysfs and /dev show it."""

    name: str                   # wq<N>.<M>
    device: str                 # iax<N>
    device_state: str
    state: str
    mode: str                   # shared | dedicated
    type: str                   # user | kernel | ...
    size: int | None
    threshold: int | None
    wq_name: str                # the free-form name accel-config gave it
    node: str | None            # its /dev node, if there is one
    node_access: bool           # that node may be opened read-write

    @property
    def problem(self) -> str:
        """Why QPL cannot use this queue ("" when it can)."""
        if self.device_state != "enabled":
            return f"device {self.device} is {self.device_state or 'in an unknown state'}"
        if self.state != "enabled":
            return f"work queue is {self.state or 'in an unknown state'}"
        if self.mode != "shared":
            return f"{self.mode or 'unknown'} mode (QPL submits to shared work queues only)"
        if self.type != "user":
            return f"type {self.type or 'none'} (QPL needs a user work queue; kernel ones belong to e.g. iaa_crypto)"
        if self.node is None:
            return "no device node"
        if not self.node_access:
            return f"{self.node} may not be opened read-write by this user"
        return ""

    @property
    def usable(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class IaaDevice:
    name: str
    state: str
    numa_node: str
    version: str
    work_queues: list[WorkQueueInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Topology:
    sysfs_root: str
    dev_root: str
    bus_present: bool           # the sysfs root exists (the idxd driver is loaded)
    devices: list[IaaDevice] = field(default_factory=list)

    @property
    def usable(self) -> list[WorkQueueInfo]:
        return [wq for d in self.devices for wq in d.work_queues if wq.usable]

    def summary(self) -> str:
        """One line: how many usable work queues, or why none."""
        if not self.bus_present:
            return f"no IAA: {self.sysfs_root} does not exist (idxd driver not loaded?)"
        if not self.devices:
            return f"no IAA device (iax*) in {self.sysfs_root}"
        usable = self.usable
        if usable:
            return f"{len(usable)} usable IAA work queue(s): {', '.join(w.name for w in usable)}"
        return "no usable IAA work queue (see the reasons above)"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _node(dev_root: Path, wq: str) -> tuple[str | None, bool]:
    node = dev_root / wq
    if not node.exists():
        return None, False
    return str(node), os.access(node, os.R_OK | os.W_OK)


def discover(sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT) -> Topology:
    """Every IAA device and work queue under ``sysfs_root`` (DSA ones are skipped)."""
    root, dev = Path(sysfs_root), Path(dev_root)
    if not root.is_dir():
        return Topology(sysfs_root, dev_root, False)
    entries = sorted(p.name for p in root.iterdir())
    devices: list[IaaDevice] = []
    for name in entries:
        match = _DEVICE.match(name)
        if not match:
            continue
        number, base = match.group(1), root / name
        state = _read(base / "state")
        queues = []
        for wq_name in entries:
            wq = _WQ.match(wq_name)
            if not wq or wq.group(1) != number:
                continue
            w = root / wq_name
            node, access = _node(dev, wq_name)
            queues.append(WorkQueueInfo(
                name=wq_name, device=name, device_state=state, state=_read(w / "state"),
                mode=_read(w / "mode"), type=_read(w / "type"), size=_int(_read(w / "size")),
                threshold=_int(_read(w / "threshold")), wq_name=_read(w / "name"),
                node=node, node_access=access))
        devices.append(IaaDevice(name, state, _read(base / "numa_node"), _read(base / "version"),
                                 queues))
    return Topology(sysfs_root, dev_root, True, devices)
