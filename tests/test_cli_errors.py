"""Every command's error cases, run as a user runs them: one line, the documented code.

Each case is a real ``python -m engine.cli`` process, so what is asserted is
what a terminal shows: the exit status, a single line on standard error,
and never a Python traceback.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.exit_codes import (EXIT_ENGINE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK,
                               EXIT_PIPE_CLOSED, EXIT_USAGE, EXIT_VERIFY)

ROOT = Path(__file__).resolve().parents[1]


def engine_cli(*args: str, cwd: Path, timeout: float = 60, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, env=_env(), **popen)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, err)
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def run_outputs(tmp_path_factory) -> Path:
    """A small qpl run's channel files (``out/``) and its report (``r.json``)."""
    where = tmp_path_factory.mktemp("run")
    (where / "c.toml").write_text('[run]\nrounds = 1\n[workload]\nsize = "1MiB"\n'
                                  f'[migration]\nchannels = 1\n[sink]\nkind = "file"\n'
                                  f'dir = "{where / "out"}"\n')
    assert main(["run", str(where / "c.toml"), "-q", "--json", str(where / "r.json")]) == EXIT_OK
    return where


# ---- config and output paths ---------------------------------------------

def test_json_path_in_a_missing_directory_fails_before_the_run(tmp_path):
    started = time.monotonic()
    result = engine_cli("run", "--json", "/nonexistent/x.json", cwd=tmp_path)
    assert_one_line(result, EXIT_USAGE, "--json", "/nonexistent")
    assert "verify" not in result.stdout       # nothing ran
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("content, needle", [
    (b"[run]\nrounds = 1 # \xff\n", "not UTF-8"),
    (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "too deeply"),
], ids=["not-utf8", "deep"])
def test_unreadable_config_files(tmp_path, content, needle):
    (tmp_path / "c.toml").write_bytes(content)
    assert_one_line(engine_cli("run", "c.toml", cwd=tmp_path), EXIT_USAGE, "config", needle)


def test_config_path_that_is_a_directory(tmp_path):
    (tmp_path / "d.toml").mkdir()
    assert_one_line(engine_cli("send", "--to", "127.0.0.1:1", "d.toml", cwd=tmp_path), EXIT_USAGE,
                    "is a directory")


def test_sink_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "c.toml").write_text('[workload]\nsize = "1MiB"\n[sink]\nkind = "file"\ndir = "f"\n')
    assert_one_line(engine_cli("run", "c.toml", cwd=tmp_path), EXIT_USAGE, "sink.dir", "not a directory")


def test_file_sink_on_a_full_disk(tmp_path):
    (tmp_path / "out").mkdir()
    # every write: ENOSPC (the sink writes NAME.partial and renames it at a clean end)
    (tmp_path / "out" / "channel-0.mfd.partial").symlink_to("/dev/full")
    (tmp_path / "c.toml").write_text('[run]\nrounds = 1\n[workload]\nsize = "1MiB"\n'
                                     '[migration]\nchannels = 1\n[sink]\nkind = "file"\n'
                                     'dir = "out"\n')
    assert_one_line(engine_cli("run", "c.toml", "-q", cwd=tmp_path), EXIT_ENGINE,
                    "channel-0.mfd", "No space left on device")


def test_record_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    assert_one_line(engine_cli("recv", "--listen", "127.0.0.1:0", "--record", "f", cwd=tmp_path),
                    EXIT_USAGE, "--record", "not a directory")


# ---- addresses: not config problems -------------------------------------

def test_send_to_an_address_without_a_port(tmp_path):
    err = assert_one_line(engine_cli("send", "--to", "127.0.0.1", cwd=tmp_path), EXIT_USAGE,
                          "HOST:PORT")
    assert "config" not in err


def test_recv_on_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = assert_one_line(engine_cli("recv", "--listen", f"127.0.0.1:{port}", cwd=tmp_path),
                              EXIT_USAGE, "cannot listen")
    assert "config" not in err


# ---- inspect ------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--page-size", "1000"], "page size 1000"),
    (["--qemu-version", "abc"], "'abc' is not a QEMU version"),
    (["--qemu-version", "7.2"], "QEMU 7.2 does not know method 'qpl'"),
], ids=["page-size", "version", "7.2-on-qpl"])
def test_inspect_arguments(run_outputs, args, needle):
    result = engine_cli("inspect", *args, "out/channel-0.mfd", cwd=run_outputs)
    assert_one_line(result, EXIT_USAGE, needle)


def test_inspect_missing_file_is_usage_like_report(tmp_path):
    assert_one_line(engine_cli("inspect", "nope.mfd", cwd=tmp_path), EXIT_USAGE, "no such file")
    assert_one_line(engine_cli("report", "nope.json", cwd=tmp_path), EXIT_USAGE, "no such file")


def test_inspect_random_bytes(tmp_path):
    (tmp_path / "x.mfd").write_bytes(os.urandom(4096))
    assert_one_line(engine_cli("inspect", "x.mfd", cwd=tmp_path), EXIT_INPUT,
                    "not a multifd stream (bad init packet magic)")


def test_inspect_corrupt_zst(run_outputs, tmp_path):
    import zstandard

    data = zstandard.ZstdCompressor().compress((run_outputs / "out" / "channel-0.mfd").read_bytes())
    damaged = bytearray(data)
    damaged[6:70] = b"\xff" * 64        # the frame header and the first block's
    (tmp_path / "c.mfd.zst").write_bytes(bytes(damaged))
    assert_one_line(engine_cli("inspect", "--summary", "c.mfd.zst", cwd=tmp_path), EXIT_INPUT,
                    "c.mfd.zst", "zstd")


def test_inspect_image_block_not_in_the_stream(run_outputs, tmp_path):
    (tmp_path / "img").write_bytes(bytes(1 << 20))
    channel = str(run_outputs / "out" / "channel-0.mfd")
    result = engine_cli("inspect", "--summary", "--image", "img", "--block", "nope", channel,
                        cwd=tmp_path)
    assert_one_line(result, EXIT_USAGE, "'nope'", "'pc.ram'")
    assert ": ok" not in result.stdout


def test_inspect_image_with_no_page_checked_is_not_ok(run_outputs, tmp_path):
    (tmp_path / "img").write_bytes(bytes(1 << 20))
    (tmp_path / "init.mfd").write_bytes((run_outputs / "out" / "channel-0.mfd").read_bytes()[:64])
    result = engine_cli("inspect", "--summary", "--method", "qpl", "--image", "img", "init.mfd",
                        cwd=tmp_path)
    assert result.returncode == EXIT_VERIFY
    assert "nothing checked" in result.stdout and ": ok" not in result.stdout


def test_inspect_without_image_counts_no_other_block_pages(run_outputs):
    result = engine_cli("inspect", "--summary", "out/channel-0.mfd", cwd=run_outputs)
    assert result.returncode == EXIT_OK
    assert "other-block pages 0," in result.stdout and "normal 0," not in result.stdout


# ---- report -------------------------------------------------------------

def test_report_plot_into_a_missing_directory(run_outputs):
    assert_one_line(engine_cli("report", "r.json", "--plot", "/nonexistent/x.png", cwd=run_outputs),
                    EXIT_USAGE, "--plot", "/nonexistent")


@pytest.mark.parametrize("number", ["Infinity", "NaN", "1" * 5000], ids=["inf", "nan", "5000-digits"])
def test_report_with_numbers_json_has_not(run_outputs, tmp_path, number):
    text = (run_outputs / "r.json").read_text().replace('"page_size": 4096', f'"page_size": {number}')
    (tmp_path / "r.json").write_text(text)
    assert_one_line(engine_cli("report", "r.json", cwd=tmp_path), EXIT_INPUT, "number")


def test_report_nested_too_deeply(tmp_path):
    (tmp_path / "r.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line(engine_cli("report", "r.json", cwd=tmp_path), EXIT_INPUT, "nested")


# ---- pipes and Ctrl-C ----------------------------------------------------

@pytest.mark.parametrize("command", [["inspect", "out/channel-0.mfd"], ["report", "r.json"]])
def test_output_into_a_closed_pipe_ends_quietly(run_outputs, command):
    """``... | head``: the reader is gone before the first write."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *command], cwd=run_outputs,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == EXIT_PIPE_CLOSED
    assert err == ""


def test_ctrl_c_while_stress_workers_start(tmp_path):
    (tmp_path / "c.toml").write_text('[migration]\nchannels = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "stress", "c.toml", "--rounds",
                             "100"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(1.2)         # the parent is up, its workers are importing
        os.killpg(proc.pid, signal.SIGINT)      # as a terminal's Ctrl-C: every process
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == "interrupted"


def test_version(tmp_path):
    from engine import __version__

    result = engine_cli("--version", cwd=tmp_path)
    assert result.returncode == EXIT_OK and result.stdout.strip() == f"multifd-engine {__version__}"


def test_script_without_main_guard_is_told_so_in_one_line(tmp_path):
    (tmp_path / "unguarded.py").write_text(
        "from engine import Config, run_batch\n"
        "try:\n"
        "    run_batch(Config.from_dict({'workload': {'size': '1MiB'}, 'run': {'rounds': 1},\n"
        "                                'migration': {'channels': 2}}))\n"
        "except Exception as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}')\n")
    result = subprocess.run([sys.executable, "unguarded.py"], cwd=tmp_path, env=_env(), text=True,
                            capture_output=True, timeout=120)
    assert result.stderr == ""        # no worker printed anything
    assert result.stdout.startswith("MissingMainGuard: ")
    assert 'if __name__ == "__main__":' in result.stdout


def test_an_interrupted_sender_is_named_by_the_receiver():
    from engine.errors import PeerFailed
    from engine.net import control

    a, b = socket.socketpair()
    with a, b:
        sender = control.ControlChannel(a, peer="receiver-address", role="sender")
        receiver = control.ControlChannel(b, peer="sender-address", role="receiver")
        sender.report_error(KeyboardInterrupt())
        with pytest.raises(PeerFailed, match=r"the sender was interrupted \(Ctrl-C\)"):
            receiver.expect(control.Round, 5)


def test_recv_record_on_a_full_disk(tmp_path):
    from engine.config import load_config
    from engine.errors import TransportError
    from engine.net.migration import send_migration

    (tmp_path / "rec").mkdir()
    for i in range(2):
        # every write: ENOSPC (written as NAME.partial, renamed at a clean end)
        (tmp_path / "rec" / f"connection-{i}.mfd.partial").symlink_to("/dev/full")
    (tmp_path / "c.toml").write_text('[run]\nrounds = 1\n[workload]\nsize = "2MiB"\n'
                                     '[migration]\nchannels = 2\nmethod = "none"\n')
    recv = subprocess.Popen([sys.executable, "-m", "engine.cli", "recv", "--listen", "127.0.0.1:0",
                             "--record", "rec", "c.toml"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        address = recv.stdout.readline().split()[-1]          # "listening on HOST:PORT"
        with pytest.raises(TransportError, match="No space left on device"):
            send_migration(load_config(tmp_path / "c.toml"), address)
        err = recv.stderr.read()
        assert recv.wait(60) == EXIT_ENGINE
    finally:
        if recv.poll() is None:
            os.killpg(recv.pid, signal.SIGKILL)
    assert re.fullmatch(r"error: cannot write rec/connection-[01]\.mfd\.partial: "
                        r"No space left on device", err.strip()), err
