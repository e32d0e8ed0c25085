"""How much memory a process holds, from ``/proc/<pid>/status``.

``peak`` is the kernel's high-water mark of the resident set (VmHWM);
``anon`` the private (anonymous) part of the current one (RssAnon), which
leaves out the shared-memory RAM blocks a process has touched and so shows
a leak most clearly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessMemory:
    rss: int        # bytes resident now (VmRSS)
    peak: int       # highest resident ever (VmHWM)
    anon: int       # private resident bytes now (RssAnon)


def read_memory(pid: int | str = "self") -> ProcessMemory | None:
    """The memory figures of ``pid``; None when it is gone (or not on Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            values[key] = int(rest.split()[0]) * 1024       # reported in kB
    if "VmRSS" not in values:
        return None       # a zombie has no memory lines
    return ProcessMemory(values["VmRSS"], values.get("VmHWM", values["VmRSS"]),
                         values.get("RssAnon", 0))
