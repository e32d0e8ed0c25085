"""``multifd-engine doctor``: which path each method will take here, and why.

Reads the IAA devices and work queues (sysfs, /dev/iax), loads libqpl the
way a worker would and runs its hardware probe, names the software codec,
then says for every method which path its pages take with the config's
``migration.accelerator``.  Last, it lists shared-memory segments that
killed runs left in /dev/shm (``--clean`` removes them; every other
command removes them when it starts).  Exit status 2 when the config asks for
``accelerator = "iaa"`` and this host cannot give it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.commands.config_argument import add_config_argument, config_from, config_path
from engine.exit_codes import EXIT_OK, EXIT_USAGE
from workers.workqueue.discovery import DEV_ROOT, SYSFS_ROOT, Topology, discover

if TYPE_CHECKING:
    from workers.workqueue.qpl import IaaProbe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show IAA devices, libqpl and the path each method takes")
    add_config_argument(p)
    p.add_argument("--sysfs", default=SYSFS_ROOT, metavar="ROOT",
                   help=f"where the dsa bus devices are (default {SYSFS_ROOT})")
    p.add_argument("--dev", default=DEV_ROOT, metavar="ROOT",
                   help=f"where the IAA work-queue nodes are (default {DEV_ROOT})")
    p.add_argument("--qpl-library", metavar="PATH",
                   help="libqpl to try (default: migration.qpl_library, $MFD_QPL_LIBRARY, the search path)")
    p.add_argument("--clean", action="store_true",
                   help="remove the shared-memory segments that killed runs left in /dev/shm")
    p.set_defaults(handler=main, clean_stale_at_start=False)


def qpl_path(accelerator: str, qpl: IaaProbe, topology: Topology) -> tuple[str, str]:
    """(path, why) the qpl method's pages take with ``accelerator``."""
    if accelerator == "software":
        return "software", "migration.accelerator = \"software\""
    if accelerator == "emulated":
        return "emulated", "the emulated IAA device ([emulator]), software when a page stays busy"
    if qpl.version is None:
        why = qpl.detail
    elif not qpl.usable:
        why = f"{qpl.problem()}; {topology.summary()}"
    else:
        return "iaa", (f"libqpl {qpl.version} and IAA: page_count hardware jobs per worker, "
                       "QPL's software job when the queue stays busy")
    if accelerator == "iaa":
        return "error", f"accelerator = \"iaa\" cannot run: {why}"
    return "software", f"auto: {why}"


def _device_lines(topology: Topology) -> list[str]:
    lines = [f"IAA devices      {topology.sysfs_root} (nodes in {topology.dev_root})"]
    for device in topology.devices:
        lines.append(f"  {device.name:<6} {device.state or '?':<9} numa {device.numa_node or '?'}  "
                     f"version {device.version or '?'}")
        for wq in device.work_queues:
            verdict = "usable" if wq.usable else f"not usable: {wq.problem}"
            lines.append(f"    {wq.name:<7} {wq.state or '?':<9} {wq.mode or '?':<9} "
                         f"{wq.type or '?':<6} size {wq.size if wq.size is not None else '?':<4} "
                         f"name {wq.wq_name or '-':<10} {verdict}")
    lines.append(f"  {topology.summary()}")
    return lines


def _leftover_lines(clean: bool) -> list[str]:
    import os

    from engine.ram import SHM_DIR, remove_stale_segments, stale_segments

    names = stale_segments()
    sizes = {}
    for name in names:
        try:
            sizes[name] = os.stat(os.path.join(SHM_DIR, name)).st_size
        except FileNotFoundError:
            sizes[name] = 0
    removed = set(remove_stale_segments()) if clean else set()
    total = sum(sizes.values())
    if not names:
        return [f"shared memory    no segments left by killed runs in {SHM_DIR}"]
    what = "removed" if clean else "left by killed runs (doctor --clean removes them)"
    lines = [f"shared memory    {len(names)} segment(s), {total / 2**20:.1f} MiB, {what}:"]
    lines += [f"  {name}  {sizes[name] / 2**20:.1f} MiB{'  removed' if name in removed else ''}"
              for name in names]
    return lines


def main(args: argparse.Namespace) -> int:
    from engine import methods
    from engine.batch import engine_version
    from engine.devices import uses_work_queue
    from workers import codec
    from workers.codec import qpl_status_text
    from workers.workqueue.qpl import probe_iaa

    config = config_from(args)
    m = config.migration
    qpl_library = args.qpl_library if args.qpl_library is not None else m.qpl_library
    topology = discover(args.sysfs, args.dev)
    qpl = probe_iaa(qpl_library)
    if qpl.version is None:
        libqpl = f"not usable: {qpl.detail}"
    else:
        probe = "passed" if qpl.probe == 0 else f"failed with {qpl_status_text(qpl.probe)}"
        libqpl = f"{qpl.version} ({qpl.detail}); hardware probe {probe}"
    lines = [f"multifd-engine {engine_version()} doctor", "",
             f"software codec   {codec.codec_name()}",
             f"libqpl           {libqpl}", *_device_lines(topology), "",
             f"accelerator = \"{m.accelerator}\" ({config_path(args) or 'built-in default'})"]
    failed = False
    for name in methods.names():
        if uses_work_queue(name):
            way, why = qpl_path(m.accelerator, qpl, topology)
            failed |= way == "error"
        elif methods.get(name).payload_is_pages and m.copy_pages:
            way, why = "copy", "no compression: pages are copied (migration.copy_pages = true)"
        else:
            way, why = methods.get(name).cpu_path
        lines.append(f"  {name:<5} {way:<9} {why}")
    lines += ["", *_leftover_lines(args.clean)]
    print("\n".join(lines))
    return EXIT_USAGE if failed else EXIT_OK
