"""``multifd-engine doctor`` and IAA discovery, on fake sysfs and /dev trees."""

from __future__ import annotations

import pytest

from engine.cli import main
from engine.commands.doctor_cmd import qpl_path
from workers.workqueue.discovery import discover
from workers.workqueue.qpl import IaaProbe


def fake_host(tmp_path, devices: dict[str, str], wqs: dict[str, dict[str, str]],
              nodes: tuple[str, ...] = ()) -> tuple[str, str]:
    """A sysfs bus directory with the given devices/wqs, and a /dev/iax with nodes."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    sysfs.mkdir()
    dev.mkdir()
    for name, state in devices.items():
        (sysfs / name).mkdir()
        (sysfs / name / "state").write_text(state + "\n")
        (sysfs / name / "numa_node").write_text("0\n")
        (sysfs / name / "version").write_text("0x100\n")
    for name, attrs in wqs.items():
        (sysfs / name).mkdir()
        for key, value in {"state": "enabled", "mode": "shared", "type": "user", "size": "128",
                           "threshold": "128", "name": "qpl", **attrs}.items():
            (sysfs / name / key).write_text(value + "\n")
    for node in nodes:
        (dev / node).write_text("")
    return str(sysfs), str(dev)


def test_discovery_says_which_queues_qpl_can_use(tmp_path):
    sysfs, dev = fake_host(
        tmp_path,
        devices={"iax1": "enabled", "iax3": "disabled", "dsa0": "enabled"},
        wqs={"wq1.0": {}, "wq1.1": {"mode": "dedicated"}, "wq1.2": {"type": "kernel"},
             "wq1.3": {"state": "disabled"}, "wq1.4": {}, "wq3.0": {}, "wq0.0": {}},
        nodes=("wq1.0", "wq1.1", "wq1.2", "wq3.0", "wq0.0"))
    topology = discover(sysfs, dev)
    assert [d.name for d in topology.devices] == ["iax1", "iax3"]       # dsa0 is not IAA
    problems = {wq.name: wq.problem for d in topology.devices for wq in d.work_queues}
    assert problems["wq1.0"] == ""
    assert "dedicated" in problems["wq1.1"]
    assert "kernel" in problems["wq1.2"]
    assert "disabled" in problems["wq1.3"]
    assert problems["wq1.4"] == "no device node"
    assert "iax3 is disabled" in problems["wq3.0"]
    assert [wq.name for wq in topology.usable] == ["wq1.0"]
    assert topology.devices[0].work_queues[0].size == 128
    assert "1 usable IAA work queue(s): wq1.0" == topology.summary()


def test_discovery_without_the_bus_or_devices(tmp_path):
    missing = discover(str(tmp_path / "nowhere"), str(tmp_path / "dev"))
    assert not missing.bus_present and not missing.devices
    assert "does not exist" in missing.summary()
    sysfs, dev = fake_host(tmp_path, devices={"dsa0": "enabled"}, wqs={"wq0.0": {}})
    assert "no IAA device" in discover(sysfs, dev).summary()


def test_qpl_path_for_each_accelerator(tmp_path):
    sysfs, dev = fake_host(tmp_path, {"iax1": "enabled"}, {"wq1.0": {}}, ("wq1.0",))
    topology = discover(sysfs, dev)
    missing = IaaProbe(None, "libqpl.so.1: cannot open shared object file", None)
    no_hw = IaaProbe("1.6.0", "/opt/libqpl.so.1", 503)
    good = IaaProbe("1.6.0", "/opt/libqpl.so.1", 0)
    assert qpl_path("auto", good, topology)[0] == "iaa"
    assert qpl_path("iaa", good, topology)[0] == "iaa"
    way, why = qpl_path("auto", missing, topology)
    assert way == "software" and "cannot open" in why
    way, why = qpl_path("auto", no_hw, topology)
    assert way == "software" and "503" in why and "wq1.0" in why
    assert qpl_path("iaa", missing, topology)[0] == "error"
    assert qpl_path("emulated", missing, topology)[0] == "emulated"
    assert qpl_path("software", good, topology)[0] == "software"


def test_doctor_command_prints_devices_and_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)              # no config/default.toml here: built-in defaults
    sysfs, dev = fake_host(tmp_path, {"iax1": "enabled"},
                           {"wq1.0": {}, "wq1.1": {"mode": "dedicated"}}, ("wq1.0", "wq1.1"))
    missing_lib = str(tmp_path / "libqpl.so.1")
    assert main(["doctor", "--sysfs", sysfs, "--dev", dev, "--qpl-library", missing_lib]) == 0
    out = capsys.readouterr().out
    assert "iax1" in out and "wq1.0" in out and "usable" in out
    assert "not usable: dedicated mode" in out
    assert "libqpl           not usable" in out
    qpl_line = next(line for line in out.splitlines() if line.strip().startswith("qpl "))
    assert "software" in qpl_line and "auto:" in qpl_line
    config = tmp_path / "iaa.toml"
    config.write_text(f'[migration]\naccelerator = "iaa"\nqpl_library = "{missing_lib}"\n')
    assert main(["doctor", str(config), "--sysfs", sysfs, "--dev", dev]) == 2
    assert "cannot run" in capsys.readouterr().out


@pytest.mark.parametrize("sysfs_state", ["missing", "empty"])
def test_doctor_without_iaa(tmp_path, capsys, monkeypatch, sysfs_state):
    monkeypatch.chdir(tmp_path)
    sysfs = tmp_path / "sys"
    if sysfs_state == "empty":
        sysfs.mkdir()
    assert main(["doctor", "--sysfs", str(sysfs), "--dev", str(tmp_path / "dev"),
                 "--qpl-library", str(tmp_path / "none.so")]) == 0
    out = capsys.readouterr().out
    assert ("does not exist" if sysfs_state == "missing" else "no IAA device") in out
