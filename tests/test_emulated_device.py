"""The emulated IAA device: one shared queue, busy answers, faults, counters.

Whole runs use real worker processes sharing one device; every run must
verify byte for byte and the workers' counters must add up to what the
device says it did and injected.
"""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest

from engine import Engine, Receiver, run_batch
from engine.channels import MemoryChannel
from engine.config import Config
from engine.errors import AcceleratorError, CodecError, DecompressError
from engine.ram import RamBlock
from engine.workloads import PageMix, fill_guest_memory
from workers import codec
from workers.jobs import PageJobs
from workers.settings import EmulatorSettings, FaultSettings, JobSettings
from workers.workqueue.emulated import EmulatedDevice

pytestmark = pytest.mark.usefixtures("no_shm_leak")

PAGE = 4096
# no incompressible pages: a page done in software never goes raw, so every
# raw page is one the device made raw (did not fit, overflow, job error)
COMPRESSIBLE = {"zero": 0.1, "same_byte": 0.05, "incompressible": 0.0, "text": 0.35,
                "code": 0.25, "heap": 0.25}

FAULTS = {
    "busy_storms": {"busy_storm_rate": 0.02, "busy_storm_us": 300.0},
    "job_errors": {"job_error_rate": 0.05},
    "overflows": {"overflow_rate": 0.05},
    "slow_jobs": {"slow_job_rate": 0.05, "slow_job_us": 2000.0},
    "full_queue": {},
}


def run_config(channels: int, faults: dict, **migration) -> Config:
    return Config.from_dict({
        "run": {"rounds": 2},
        "workload": {"size": "4MiB", "seed": 11, "mix": COMPRESSIBLE},
        "migration": {"channels": channels, "accelerator": "emulated", **migration},
        "emulator": {"queue_size": 8, "engines": 2, "faults": {"seed": 5, **faults}},
    })


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize("channels", [1, 2])
def test_fault_runs_verify_and_counters_match_what_was_injected(kind, channels):
    report = run_batch(run_config(channels, FAULTS[kind]))
    t, dev = report.totals(), report.device
    assert report.verified is True
    assert set(report.accelerator) == {"emulated"}
    # the workers saw exactly what the one shared device answered
    assert t["hw_submitted"] == dev["accepted"] == dev["jobs_done"] == dev["compress_jobs"]
    assert t["busy"] == dev["busy_full"] + dev["busy_storm"]
    assert t["retries"] + t["sw_fallbacks"] == t["busy"]        # each busy: a retry or, after 3, software
    assert t["hw_errors"] == dev["job_errors"]
    assert t["raw_pages"] == dev["more_output"] + dev["overflows"] + dev["job_errors"]
    assert t["hw_submitted"] + t["sw_fallbacks"] == t["normal_pages"]
    assert t["sw_errors"] == 0
    assert t["busy"] > 0                                    # an 8-entry queue fills up
    injected = {"busy_storms": dev["storms"], "job_errors": dev["job_errors"],
                "overflows": dev["overflows"], "slow_jobs": dev["slow_jobs"]}
    for name, value in injected.items():
        assert (value > 0) == (name == kind), (name, value)
    text = report.format_text()
    assert "emulated IAA" in text and "hardware jobs" in text


def test_retry_policy_never_falls_back():
    report = run_batch(run_config(2, FAULTS["busy_storms"], busy_policy="retry"))
    t, dev = report.totals(), report.device
    assert report.verified is True
    assert t["sw_fallbacks"] == 0 and t["busy"] > 0
    assert t["retries"] == t["busy"] == dev["busy_full"] + dev["busy_storm"]
    assert t["hw_submitted"] == t["normal_pages"] == dev["jobs_done"]


@pytest.fixture
def blocks():
    with RamBlock.create("ram0", 2 << 20, PAGE) as src, RamBlock.create("ram0", 2 << 20, PAGE) as dst:
        fill_guest_memory(src, seed=3)
        yield src, dst


@pytest.mark.parametrize("send_path, receive_path", [("emulated", "software"), ("software", "emulated")])
def test_either_path_decodes_the_other(blocks, send_path, receive_path):
    src, dst = blocks
    channels = [MemoryChannel(0), MemoryChannel(1)]
    config = Config.from_dict({"migration": {"channels": 2, "accelerator": send_path}})
    with EmulatedDevice(clients=2, page_count=128) as rx_device, \
            Engine(config, blocks=[src], sinks=channels) as engine, \
            Receiver([dst], channels, method="qpl", page_size=PAGE,
                     jobs=JobSettings(accelerator=receive_path, device=rx_device.name)) as receiver:
        receiver.start()
        engine.send(np.arange(src.pages, dtype=np.uint64))
        receiver.receive_round()
        assert receiver.verify([src]).ok
        counters = engine.coordinator.channel_counters()
        if send_path == "emulated":
            assert sum(c["hw_submitted"] for c in counters) > 0
        else:
            assert rx_device.counters()["decompress_jobs"] > 0


def test_receiver_job_error_names_channel_packet_and_page(blocks):
    src, dst = blocks
    channels = [MemoryChannel(0)]
    config = Config.from_dict({"migration": {"channels": 1, "accelerator": "software"}})
    failing = EmulatorSettings(faults=FaultSettings(job_error_rate=1.0))
    with EmulatedDevice(failing, clients=1, page_count=128) as rx_device, \
            Engine(config, blocks=[src], sinks=channels) as engine, \
            Receiver([dst], channels, method="qpl", page_size=PAGE,
                     jobs=JobSettings(accelerator="emulated", device=rx_device.name)) as receiver:
        receiver.start()
        engine.send(np.arange(64, dtype=np.uint64))
        with pytest.raises(DecompressError) as caught:
            receiver.receive_round()
    error = caught.value
    assert error.channel == 0 and error.packet_num == 0
    assert error.field.startswith("page[")
    assert "MFD_E_HW" in str(error) or "failed" in str(error)


def test_device_refuses_distances_beyond_4k_the_software_path_accepts():
    page_size = 16384
    half = bytes(np.random.default_rng(1).integers(97, 123, page_size // 2, dtype=np.uint8))
    page = half + half                                  # matches 8 KiB back
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    stream = c.compress(page) + c.flush()
    payload = len(stream).to_bytes(4, "big") + stream
    pages = np.zeros(1, dtype=np.uint64)
    software = PageJobs(8, JobSettings(accelerator="software"))
    emulated = PageJobs(8, JobSettings(accelerator="emulated"))     # a private device
    try:
        dest = bytearray(page_size)
        software.decompress(payload, pages, dest, page_size)
        assert dest == page
        with pytest.raises(codec.PayloadRejected) as caught:
            emulated.decompress(payload, pages, bytearray(page_size), page_size)
        assert caught.value.name == "MFD_E_INFLATE" and caught.value.page == 0
    finally:
        software.close()
        emulated.close()


def test_failed_init_is_a_clear_error_and_keeps_nothing():
    with EmulatedDevice(EmulatorSettings(faults=FaultSettings(init_status=503)),
                        clients=1, page_count=128) as device:
        with pytest.raises(AcceleratorError) as caught:
            PageJobs(128, JobSettings(accelerator="emulated", device=device.name))
        assert caught.value.status == 503
        assert device.counters()["submits"] == 0


def test_a_stopped_device_sends_every_page_through_software():
    rng = np.random.default_rng(2)
    block = np.frombuffer(bytes(rng.integers(97, 100, 16 * PAGE, dtype=np.uint8)), np.uint8).copy()
    pages = np.arange(16, dtype=np.uint64)
    device = EmulatedDevice(clients=1, page_count=128)
    jobs = PageJobs(128, JobSettings(accelerator="emulated", device=device.name))
    try:
        slot = bytearray(4 * 16 + 16 * PAGE)
        _, before = jobs.compress(block, PAGE, pages, slot)
        device.close()
        size, after = jobs.compress(block, PAGE, pages, slot)
        assert before.hw_submitted == 16
        assert after.hw_submitted == 0 and after.sw_fallbacks == 16
        dest = np.zeros_like(block)
        PageJobs(128, JobSettings()).decompress(memoryview(slot)[:size], pages, dest, PAGE)
        assert bytes(dest) == bytes(block)
    finally:
        jobs.close()
        device.close()


def test_bad_emulator_config_names_the_key():
    from engine.errors import ConfigError

    for data, key in [({"emulator": {"engines": 0}}, "emulator.engines"),
                      ({"emulator": {"queue_size": "big"}}, "emulator.queue_size"),
                      ({"emulator": {"faults": {"job_error_rate": 2}}}, "emulator.faults.job_error_rate"),
                      ({"emulator": {"faults": {"storms": 1}}}, "emulator.faults.storms"),
                      ({"emulator": {"faults": {"init_status": -1}}}, "emulator.faults.init_status")]:
        with pytest.raises(ConfigError) as caught:
            Config.from_dict(data)
        assert caught.value.key == key
    assert isinstance(Config().emulator.faults, FaultSettings)
    assert PageMix(**COMPRESSIBLE)


@pytest.mark.parametrize("page_size", [8192, 65536])
def test_device_decodes_4k_window_streams_of_large_pages(page_size):
    """Large pages go through the device's own strict inflater: stored,
    fixed and dynamic blocks of 4 KiB-window streams all decode."""
    rng = np.random.default_rng(page_size)
    words = np.array("page memory channel packet guest zero offset block".split())
    text = " ".join(rng.choice(words, page_size // 3)).encode()[:page_size]
    noise = rng.integers(0, 256, page_size, dtype=np.uint8).tobytes()
    fixed = zlib.compressobj(6, zlib.DEFLATED, -12, 8, zlib.Z_FIXED)
    mixed = zlib.compressobj(6, zlib.DEFLATED, -12)     # a stored block, then a dynamic one
    pages_data = [text, noise[:page_size // 4] + text[:3 * page_size // 4]]
    streams = [fixed.compress(text) + fixed.flush(),
               mixed.compress(pages_data[1][:page_size // 4]) + mixed.flush(zlib.Z_FULL_FLUSH)
               + mixed.compress(pages_data[1][page_size // 4:]) + mixed.flush()]
    assert all(len(s) < page_size for s in streams)
    payload = b"".join(len(s).to_bytes(4, "big") for s in streams) + b"".join(streams)
    pages = np.arange(len(streams), dtype=np.uint64)
    jobs = PageJobs(8, JobSettings(accelerator="emulated"))
    try:
        dest = bytearray(len(streams) * page_size)
        jobs.decompress(payload, pages, dest, page_size)
        assert bytes(dest) == b"".join(pages_data)
        for bad in (streams[0][:-3], streams[0] + b"\0"):       # truncated, trailing
            one = len(bad).to_bytes(4, "big") + bad
            with pytest.raises(codec.PayloadRejected):
                jobs.decompress(one, pages[:1], bytearray(page_size), page_size)
    finally:
        jobs.close()


def test_a_queue_of_one_entry_still_round_trips():
    rng = np.random.default_rng(4)
    block = np.frombuffer(bytes(rng.integers(97, 104, 32 * PAGE, dtype=np.uint8)), np.uint8).copy()
    pages = np.arange(32, dtype=np.uint64)
    with EmulatedDevice(EmulatorSettings(queue_size=1, engines=1), clients=2, page_count=128) as dev:
        tx = PageJobs(128, JobSettings(accelerator="emulated", device=dev.name))
        rx = PageJobs(128, JobSettings(accelerator="emulated", device=dev.name))
        try:
            slot = bytearray(4 * 32 + 32 * PAGE)
            size, stats = tx.compress(block, PAGE, pages, slot)
            assert stats.busy > 0 and stats.hw_submitted >= 1
            assert stats.hw_submitted + stats.sw_fallbacks == 32
            dest = np.zeros_like(block)
            rx.decompress(memoryview(slot)[:size], pages, dest, PAGE)
            assert bytes(dest) == bytes(block)
        finally:
            tx.close()
            rx.close()
    counters = dev.counters()
    assert counters["busy_full"] >= stats.busy and counters["compress_jobs"] == stats.hw_submitted


def test_a_killed_worker_is_replaced_on_the_shared_device(blocks):
    """The replacement attaches to the same device as a new client; the dead
    one's queued jobs are dropped, and every page still arrives intact."""
    import os
    import signal

    src, dst = blocks

    def kill_once(worker_id: int, pid: int, packet_num: int, attempt: int) -> None:
        if packet_num == 2 and attempt == 1:
            os.kill(pid, signal.SIGKILL)

    config = Config.from_dict({
        "run": {"worker_restarts": 1},
        "migration": {"channels": 2, "accelerator": "emulated"},
        "emulator": {"queue_size": 8, "engines": 2,
                     "faults": {"slow_job_rate": 1.0, "slow_job_us": 3000.0}}})
    channels = [MemoryChannel(0), MemoryChannel(1)]
    with Engine(config, blocks=[src], sinks=channels, before_dispatch=kill_once) as engine, \
            Receiver([dst], channels, method="qpl", page_size=PAGE) as receiver:
        receiver.start()
        engine.send(np.arange(src.pages, dtype=np.uint64))
        receiver.receive_round()
        assert receiver.verify([src]).ok
        counters = engine.coordinator.channel_counters()
        assert sum(c.get("restarts", 0) for c in counters) == 1
        assert {c["accelerator"] for c in counters} == {"emulated"}


def test_a_foreign_work_queue_is_refused_not_cast():
    """mfd_emu_queue_map checks the queue's kind before it reads an emulator client."""
    software = codec.SoftwareQueue()
    try:
        with pytest.raises(CodecError) as caught:
            codec.map_emulated_segment(software, "mfd-not-a-device-queue", bytearray(4096))
        assert codec.status_name(caught.value.status) == "MFD_E_WRONG_QUEUE"
        assert "another kind" in str(caught.value)
        # the software queue is untouched and still runs jobs
        jobs = codec.JobArray(1)
        page = bytes(range(256)) * 16
        slot = bytearray(4 + 4096)
        size, _ = codec.qpl_send_packet(jobs, software, software, max_retries=0,
                                        busy_policy="fallback", block=page, page_size=4096,
                                        pages=np.array([0], dtype=np.uint64), slot=slot)
        assert 4 < size < 4 + 4096
    finally:
        software.close()


def test_software_fallback_with_the_packet_setting():
    """Pages the busy device hands to the fallback queue use the packet's code
    (built lazily there, from the packet's pages): the run still verifies."""
    report = run_batch(run_config(1, FAULTS["busy_storms"], compression="packet"))
    t = report.totals()
    assert report.verified is True
    assert t["sw_fallbacks"] > 0 and t["sw_errors"] == 0


# ---- client places: a killed worker's place is taken over ----------------

def _attach_in_a_process(name: str, *, then: str) -> subprocess.Popen:
    """A process attaches a queue to device ``name``, then exits or dies (``then``)."""
    script = ("import os, signal, sys\n"
              "from workers import codec\n"
              f"q = codec.open_emulated_queue({name!r}, 16)\n"
              "print('attached', flush=True)\n"
              + {"dies": "os.kill(os.getpid(), signal.SIGKILL)\n",
                 "holds": "sys.stdin.read()\n"}[then])
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_a_killed_workers_place_is_taken_over_and_a_live_ones_is_not():
    """A stress run replaced more killed workers than the device had spare places: refused."""
    with EmulatedDevice(clients=1, page_count=16) as device:
        holder = _attach_in_a_process(device.name, then="holds")
        try:
            assert holder.stdout.readline().strip() == "attached"
            with pytest.raises(AcceleratorError, match="MFD_E_DEVICE"):
                codec.open_emulated_queue(device.name, 16)      # its one place is held
        finally:
            holder.communicate("", timeout=30)
        for _ in range(3):          # three workers in a row, each killed holding the place
            killed = _attach_in_a_process(device.name, then="dies")
            out, _ = killed.communicate(timeout=30)
            assert out.strip() == "attached" and killed.returncode == -9
        queue = codec.open_emulated_queue(device.name, 16)       # and one more after them
        assert queue != codec.ffi.NULL


def test_a_closed_queue_frees_its_place_in_the_same_process():
    with EmulatedDevice(clients=1, page_count=16) as device:
        for _ in range(3):
            queue = codec.open_emulated_queue(device.name, 16)
            codec.ffi.release(queue)
