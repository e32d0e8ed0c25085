"""The libqpl binding: loading at run time, clear errors, and (where libqpl
is installed) QPL's own jobs through the same per-packet loop.

No distribution ships libqpl, so the tests that need it skip unless it is
found ($MFD_QPL_LIBRARY, or libqpl.so.1 on the library search path).  The
loading errors are checked on every machine with small fake libraries.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from engine import Engine, run_batch
from engine.config import Config
from engine.errors import AcceleratorError
from engine.report.run import VERBOSE
from workers import codec
from workers.workqueue import open_work_queues
from workers.workqueue.qpl import QplLibrary

PAGE = 4096


@pytest.fixture(scope="module")
def qpl() -> QplLibrary:
    try:
        return QplLibrary()
    except AcceleratorError as exc:
        pytest.skip(f"libqpl is not installed here (set $MFD_QPL_LIBRARY to run these): {exc}")


def fake_library(tmp_path, version: str, *, missing: str = "") -> str:
    """A shared library that looks like libqpl from the outside."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake libqpl")
    functions = {
        "qpl_get_job_size": "int qpl_get_job_size(int p, unsigned *s) { *s = 256; return 0; }",
        "qpl_init_job": "int qpl_init_job(int p, void *j) { return 0; }",
        "qpl_submit_job": "int qpl_submit_job(void *j) { return 0; }",
        "qpl_check_job": "int qpl_check_job(void *j) { return 0; }",
        "qpl_wait_job": "int qpl_wait_job(void *j) { return 0; }",
        "qpl_execute_job": "int qpl_execute_job(void *j) { return 0; }",
        "qpl_fini_job": "int qpl_fini_job(void *j) { return 0; }",
        "qpl_get_library_version": f'const char *qpl_get_library_version(void) {{ return "{version}"; }}',
    }
    source = tmp_path / "fakeqpl.c"
    source.write_text("\n".join(body for name, body in functions.items() if name != missing))
    library = tmp_path / f"libfakeqpl-{version}-{missing or 'all'}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return str(library)


# ---------------------------------------------------------------------------
# on every machine

def test_missing_library_is_named(monkeypatch):
    monkeypatch.setenv("MFD_QPL_LIBRARY", "/nonexistent/libqpl.so.1")
    with pytest.raises(AcceleratorError, match=r"\$MFD_QPL_LIBRARY.*/nonexistent/libqpl.so.1"):
        QplLibrary()
    with pytest.raises(AcceleratorError, match="migration.qpl_library"):
        QplLibrary("/nonexistent/libqpl.so")


def test_too_old_or_incomplete_library_is_refused(tmp_path):
    with pytest.raises(AcceleratorError, match="1.5.0 .* too old: 1.6 or newer"):
        QplLibrary(fake_library(tmp_path, "1.5.0"))
    with pytest.raises(AcceleratorError, match="no function qpl_wait_job"):
        QplLibrary(fake_library(tmp_path, "1.6.0", missing="qpl_wait_job"))
    assert QplLibrary(fake_library(tmp_path, "1.10.2")).version == "1.10.2"


def test_iaa_without_libqpl_is_a_clear_error_before_any_worker(no_shm_leak):
    config = Config.from_dict({"workload": {"size": "1MiB"}, "run": {"verify": False},
                               "sink": {"kind": "null"},
                               "migration": {"accelerator": "iaa", "channels": 1,
                                             "qpl_library": "/nonexistent/libqpl.so.1"}})
    with pytest.raises(AcceleratorError, match="accelerator = \"iaa\" but libqpl"):
        Engine(config)


def test_auto_without_libqpl_runs_software_and_says_why(no_shm_leak):
    report = run_batch(Config.from_dict({
        "run": {"rounds": 1}, "workload": {"size": "1MiB"},
        "migration": {"accelerator": "auto", "channels": 1,
                      "qpl_library": "/nonexistent/libqpl.so.1"}}))
    assert report.verified is True
    assert report.accelerator == ["software"]
    reason = report.send_channels[0]["path_reason"]
    assert reason.startswith("auto:") and "/nonexistent/libqpl.so.1" in reason
    header = report.format_text().splitlines()[1]
    assert header.endswith("; software path: libqpl not found")        # one line, a few words
    assert "/nonexistent/libqpl.so.1" in report.format_text(VERBOSE)    # -v: all of it


# ---------------------------------------------------------------------------
# with a real libqpl

def test_version_and_hardware_probe(qpl):
    major, minor = (int(x) for x in qpl.version.split(".")[:2])
    assert (major, minor) >= (1, 6)
    status = qpl.probe_hardware()
    opened = open_work_queues("auto", page_count=128)
    try:
        if status == 0:
            assert opened.queue.name == "iaa" and opened.fallback.name == "qpl-software"
        else:
            # no IAA here: the failed hardware job was freed, auto stays on software
            assert opened.queue.name == "software"
            assert f"{status}" in opened.reason and "probe failed" in opened.reason
            with pytest.raises(AcceleratorError) as caught:
                open_work_queues("iaa", page_count=128)
            assert caught.value.status == status
    finally:
        opened.close()


def make_pages(rng: np.random.Generator, kinds: list[str]) -> np.ndarray:
    words = np.array("guest page memory queue packet channel offset zero".split())
    out = []
    for kind in kinds:
        if kind == "text":
            out.append(" ".join(rng.choice(words, PAGE // 3)).encode()[:PAGE])
        else:
            out.append(rng.integers(0, 256, PAGE, dtype=np.uint8).tobytes())
    return np.frombuffer(b"".join(out), dtype=np.uint8).copy()


def test_qpl_software_job_round_trips_with_the_engines_software_path(qpl):
    rng = np.random.default_rng(7)
    kinds = ["text", "random", "text", "text", "random", "text"]
    block = make_pages(rng, kinds)
    pages = rng.permutation(len(kinds)).astype(np.uint64)
    n = len(kinds)
    qsw = qpl.queue(hardware=False, page_count=1)
    engine_sw = codec.SoftwareQueue()
    jobs = codec.JobArray(n)
    try:
        slot = bytearray(4 * n + n * PAGE)
        size, stats = codec.qpl_send_packet(jobs, qsw, qsw, max_retries=3, busy_policy="fallback",
                                            block=block, page_size=PAGE, pages=pages, slot=slot)
        assert stats.raw_pages == kinds.count("random")
        assert stats.compressed_pages == kinds.count("text") and stats.sw_errors == 0
        for receiver in (qsw, engine_sw):                 # QPL's output, either decoder
            dest = np.zeros_like(block)
            codec.qpl_recv_packet(jobs, receiver, receiver, max_retries=3,
                                  payload=memoryview(slot)[:size], pages=pages, block=dest,
                                  page_size=PAGE)
            assert bytes(dest) == bytes(block)
        # the engine's software output, decoded by QPL
        size, _ = codec.qpl_send_packet(jobs, engine_sw, engine_sw, max_retries=3,
                                        busy_policy="fallback", block=block, page_size=PAGE,
                                        pages=pages, slot=slot)
        dest = np.zeros_like(block)
        codec.qpl_recv_packet(jobs, qsw, qsw, max_retries=3, payload=memoryview(slot)[:size],
                              pages=pages, block=dest, page_size=PAGE)
        assert bytes(dest) == bytes(block)
        # a corrupt page is refused by QPL with its own status, naming the page
        bad = bytearray(slot[:size])
        bad[4 * n + 1:4 * n + 9] = b"\xff" * 8
        with pytest.raises(codec.PayloadRejected) as caught:
            codec.qpl_recv_packet(jobs, qsw, qsw, max_retries=3, payload=bad, pages=pages,
                                  block=np.zeros_like(block), page_size=PAGE)
        assert caught.value.page == 0
    finally:
        jobs.close()
        qsw.close()
        engine_sw.close()
