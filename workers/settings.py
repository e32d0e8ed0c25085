"""What the config may ask of the workers, as plain data.

The config (``engine.config``) validates against these names and builds
these records, so it imports no native code: a checkout whose
``workers._native`` is not built still reads configs and reports.
``workers.codec`` checks at import that the numbers here equal the C
constants (``MFD_SETTING_*``, ``MFD_BUSY_*``) and the emulator's fields
those of ``mfd_emu_config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# migration.compression: what the software path optimises for; both stay in
# the qpl wire format (raw DEFLATE, 4 KiB window, output below a page)
COMPRESSION_SETTINGS: dict[str, int] = {
    "fast": 0,       # MFD_SETTING_FAST: static Huffman codes, as IAA by default
    "balanced": 1,   # MFD_SETTING_BALANCED: level 1, a Huffman code fitted to each page
}

# migration.busy_policy: what a page does after max_submit_retries busy answers
BUSY_POLICIES: dict[str, int] = {
    "fallback": 0,   # MFD_BUSY_FALLBACK: compress it at once in software
    "retry": 1,      # MFD_BUSY_RETRY: keep retrying (QPL v6 series behaviour)
}

# migration.accelerator: what runs the qpl method's page jobs (workers.workqueue)
ACCELERATORS = ("auto", "iaa", "emulated", "software")


@dataclass
class JobSettings:
    """How a worker's page jobs run (``workers.jobs.PageJobs``)."""

    accelerator: str = "software"
    max_submit_retries: int = 3
    busy_policy: str = "fallback"
    level: int = 1           # a COMPRESSION_SETTINGS value
    device: str = ""         # emulated: the device's control segment ("" = a private device)
    qpl_library: str = ""    # iaa/auto: where libqpl is ("" = $MFD_QPL_LIBRARY, then the search path)


@dataclass(frozen=True)
class FaultSettings:
    """Seeded fault injection (``[emulator.faults]``); rates are per job or submission."""

    seed: int = 1
    busy_storm_rate: float = 0.0    # chance that a submission starts a busy storm
    busy_storm_us: float = 200.0    # a storm refuses every submission for this long
    job_error_rate: float = 0.0     # chance that a job fails (the page goes raw)
    overflow_rate: float = 0.0      # chance that a job reports "output did not fit"
    slow_job_rate: float = 0.0      # chance that a job takes slow_job_us longer
    slow_job_us: float = 1000.0
    init_status: int = 0            # != 0: the hardware probe fails with this QPL status


@dataclass(frozen=True)
class EmulatorSettings:
    """The emulated IAA device (``[emulator]``): one shared work queue and its engines.

    Service time per job is at least ``latency_us + bytes / engine_mb_per_s``
    (decompression ``decompress_speedup`` times faster), +- ``jitter``; the
    defaults are IAA's published figures (spec qpl-and-iaa.md §4, §5).
    """

    queue_size: int = 128
    engines: int = 8
    latency_us: float = 3.0
    engine_mb_per_s: float = 1250.0
    decompress_speedup: float = 1.3
    jitter: float = 0.1
    faults: FaultSettings = field(default_factory=FaultSettings)
