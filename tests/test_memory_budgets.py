"""Memory budgets: a peer cannot make the receiver reserve more than it allows.

Before, about 100 unauthenticated bytes (a Hello declaring 48 blocks of
64 MiB) got 3 GiB of /dev/shm reserved; 255 zstd channels could take
9 GiB of decoder windows; ``run`` with a guest larger than /dev/shm failed
part-way (exit 4), and a size past 2**63 was an OverflowError traceback.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from engine import errors
from engine.cli import main
from engine.exit_codes import EXIT_USAGE
from engine.config import Config
from engine.net import budget, control
from engine.net.migration import receive_migration

PAGE = 4096
ROOMY = budget.HostMemory(shm_free=64 << 30, available=64 << 30)

pytestmark = pytest.mark.usefixtures("no_shm_leak")


def _receiver(cfg: Config):
    """receive_migration in a thread; (address, outcome list, thread)."""
    ready, outcome = threading.Event(), []
    address = []

    def run() -> None:
        try:
            outcome.append(receive_migration(cfg, "127.0.0.1:0",
                                             on_listening=lambda a: (address.append(a), ready.set())))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return address[0], outcome, thread


def _shm_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"mfd-{os.getpid()}-")}


def test_a_hostile_hello_is_refused_before_any_reservation():
    cfg = Config.from_dict({"migration": {"channels": 2, "method": "none"},
                            "transport": {"max_ram": "64MiB", "accept_timeout": 10.0,
                                          "stall_timeout": 5.0}})
    address, outcome, thread = _receiver(cfg)
    before = _shm_names()
    with socket.create_connection((address.host, address.port), timeout=5) as sock:
        link = control.ControlChannel(sock)
        link.send_magic()
        link.send(control.Hello(control.VERSION, b"u" * 16, PAGE, "none", 2, "10.0",
                                [(f"block{i}", 64 << 20) for i in range(48)]))
        reply = link.receive(5)
        assert _shm_names() == before                  # nothing reserved for it
    thread.join(10)
    assert isinstance(reply, control.Refuse), reply
    assert "3.0 GiB of RAM blocks" in reply.reason and "transport.max_ram" in reply.reason
    assert isinstance(outcome[0], errors.SessionRefused)


def test_the_default_budget_follows_free_shm_and_memory():
    tight = budget.HostMemory(shm_free=1 << 30, available=8 << 30)
    assert budget.host_ram_budget(tight) == int(0.8 * (1 << 30))
    problem = budget.session_memory_problem(3 << 30, 2, "none", PAGE, max_ram=0,
                                            decoder_limit=0, host=tight)
    assert problem and "what /dev/shm and available memory allow" in problem
    assert budget.session_memory_problem(512 << 20, 2, "none", PAGE, max_ram=0,
                                         decoder_limit=0, host=tight) is None


def test_an_explicit_max_ram_still_needs_the_shm_space():
    small_shm = budget.HostMemory(shm_free=1 << 30, available=64 << 30)
    problem = budget.session_memory_problem(2 << 30, 1, "none", PAGE, max_ram=8 << 30,
                                            decoder_limit=0, host=small_shm)
    assert problem and "/dev/shm has 1.0 GiB free" in problem


def test_zstd_decoders_are_bounded_across_channels():
    assert budget.decoder_bytes("zstd", PAGE) > 32 << 20
    problem = budget.session_memory_problem(1 << 20, 32, "zstd", PAGE, max_ram=0,
                                            decoder_limit=256 << 20, host=ROOMY)
    assert problem and "32 zstd channels" in problem and "transport.decoder_budget" in problem
    assert budget.session_memory_problem(1 << 20, 4, "zstd", PAGE, max_ram=0,
                                         decoder_limit=256 << 20, host=ROOMY) is None
    assert budget.session_memory_problem(1 << 20, 32, "none", PAGE, max_ram=0,
                                         decoder_limit=256 << 20, host=ROOMY) is None


def test_auto_channels_are_capped():
    from engine.net.migration import session_problem

    cfg = Config.from_dict({"migration": {"channels": "auto", "method": "none"}})
    hello = control.Hello(control.VERSION, b"u" * 16, PAGE, "none", 255, "10.0",
                          [("pc.ram", 1 << 20)])
    problem = session_problem(hello, cfg)
    assert problem and f"at most {budget.MAX_AUTO_CHANNELS}" in problem


def test_run_refuses_a_guest_larger_than_shm(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[workload]\nsize = "500000GiB"\n[migration]\nchannels = 1\n')
    assert main(["run", str(cfg), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "config workload.size:" in err and "/dev/shm" in err and "Traceback" not in err


def test_run_counts_the_destination_and_the_memory_channels():
    host = budget.HostMemory(shm_free=64 << 30, available=2 << 30)
    problem = budget.run_problem(768 << 20, verify=True, memory_sink=True, host=host)
    assert problem and "3x" in problem                   # the OOM-kill of a 1 GiB cgroup
    assert budget.run_problem(768 << 20, verify=False, memory_sink=False, host=host) is None


@pytest.mark.parametrize("value", ["99999999999999999999999999GiB", 2**70, "9" * 100])
def test_huge_sizes_are_config_errors(tmp_path, capsys, value):
    cfg = tmp_path / "c.toml"
    text = f'"{value}"' if isinstance(value, str) else str(value)
    if isinstance(value, int) and value >= 2**63:
        text = f'"{value}"'           # TOML integers stop at 2**63 - 1
    cfg.write_text(f'[workload]\nsize = {text}\n')
    assert main(["run", str(cfg), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "config workload.size" in err and "Traceback" not in err


def test_max_ram_takes_sizes():
    cfg = Config.from_dict({"transport": {"max_ram": "2GiB", "decoder_budget": 1 << 28}})
    assert (cfg.transport.max_ram, cfg.transport.decoder_budget) == (2 << 30, 1 << 28)
    with pytest.raises(errors.ConfigError, match="transport.max_ram"):
        Config.from_dict({"transport": {"max_ram": "lots"}})
