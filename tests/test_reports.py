"""Reports: the one JSON schema, reading it back, tables, plots, quiet/verbose."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import sys

import numpy as np
import pytest

from engine import errors, wire
from engine.batch import run_batch
from engine.cli import main
from engine.exit_codes import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from engine.commands.progress import ProgressLine
from engine.config import Config
from engine.net.migration import ReceiveReport
from engine.report.page_sizes import BUCKETS, PageSizeHistogram
from engine.report.run import Report
from engine.report.schema import SCHEMA, SCHEMA_VERSION, load_report, validate
from engine.report.timeline import FIELDS, PacketTimeline


def small_config(**migration) -> Config:
    return Config.from_dict({"run": {"rounds": 3}, "workload": {"size": "4MiB"},
                             "migration": {"channels": 2, **migration}})


@pytest.fixture(scope="module")
def qpl_report() -> Report:
    return run_batch(small_config())


@pytest.fixture(scope="module")
def zstd_report() -> Report:
    return run_batch(small_config(method="zstd"))


@pytest.fixture
def report_files(tmp_path, qpl_report, zstd_report):
    paths = tmp_path / "qpl.json", tmp_path / "zstd.json"
    qpl_report.write_json(paths[0])
    zstd_report.write_json(paths[1])
    return [str(p) for p in paths]


# ---- the schema and the numbers in it ----------------------------------------

def test_run_report_round_trip(tmp_path, qpl_report):
    path = tmp_path / "r.json"
    qpl_report.write_json(path)
    data = load_report(path)
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert data["kind"] == "run"
    # config tuples (e.g. stress.page_sizes) come back as JSON lists
    assert data["config"] == json.loads(json.dumps(qpl_report.config))
    back = Report.from_dict(data)
    assert abs(back.setup_seconds - qpl_report.setup_seconds) < 1e-3     # QEMU's whole ms
    assert back == dataclasses.replace(qpl_report, config=data["config"],
                                       setup_seconds=back.setup_seconds)
    assert data["totals"] == json.loads(json.dumps(qpl_report.totals()))
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["codec"]["compress"] in ("isal", "libdeflate", "zlib")
    assert [c["path"] for c in machine["iaa"]] == qpl_report.accelerator
    assert data["config"]["migration"]["channels"] == 2


def test_timeline_and_page_sizes_account_for_every_packet_and_page(qpl_report):
    t = qpl_report.totals()
    timeline = qpl_report.timeline
    at = {name: timeline["fields"].index(name) for name in FIELDS}
    sums = {name: sum(b[at[name]] for c in timeline["channels"] for b in c["buckets"])
            for name in FIELDS}
    assert sums["packets"] == t["packets"]
    assert sums["pages"] == t["pages"]
    assert sums["zero_pages"] == t["zero_pages"]
    assert sums["payload_bytes"] == t["payload_bytes"]
    assert sums["compress_ns"] > 0 and sums["write_ns"] > 0
    assert [r["round"] for r in timeline["rounds"]] == [0, 1, 2]
    assert all(r["start"] <= r["end"] for r in timeline["rounds"])
    sizes = qpl_report.page_sizes
    assert sizes["per_page"] is True
    assert sum(sizes["compressed"]) + sizes["raw"] == t["normal_pages"]
    assert sizes["raw"] == t["raw_pages"]
    init_packets = len(qpl_report.send_channels) * len(wire.InitPacket(bytes(16), 0).encode())
    assert sum(r.wire_bytes for r in qpl_report.rounds) == qpl_report.bytes_on_wire - init_packets


def test_stream_methods_have_no_per_page_sizes(zstd_report):
    assert zstd_report.page_sizes["per_page"] is False
    assert "no per-page sizes" in zstd_report.format_text(2)


def test_page_size_histogram_buckets_length_tables_and_raw_pages():
    page_size = 4096
    lengths = np.array([1, 127, 128, 4095, 4096, 4096], dtype=">u4")
    histogram = PageSizeHistogram(page_size)
    histogram.add(memoryview(lengths.tobytes() + b"page bytes follow"), len(lengths))
    histogram.add(memoryview(lengths[:1].tobytes()), 1)
    sizes = histogram.as_dict()
    counts = sizes["compressed"] + [sizes["raw"]]
    assert len(counts) == BUCKETS + 1 and sizes["per_page"] is True
    assert counts[0] == 3 and counts[1] == 1 and counts[BUCKETS - 1] == 1 and counts[BUCKETS] == 2
    assert sum(counts) == 7


def test_timeline_memory_is_bounded_and_coarsening_keeps_the_sums():
    now = [0.0]
    timeline = PacketTimeline([5, 7], bucket_seconds=0.01, max_buckets=8, clock=lambda: now[0])
    timeline.mark_round(0)
    for i in range(1000):                       # 10 s of packets: far past 8 buckets of 10 ms
        now[0] = i * 0.01
        timeline.record(5 if i % 2 else 7, pages=128, zero_pages=1, payload_bytes=10, wire_bytes=20,
                        zero_ns=1, compress_ns=2, write_ns=3)
    data = timeline.as_dict()
    assert [c["channel"] for c in data["channels"]] == [5, 7]
    assert all(len(c["buckets"]) <= 8 for c in data["channels"])
    assert data["bucket_seconds"] >= 10 / 8
    pages = sum(b[FIELDS.index("pages")] for c in data["channels"] for b in c["buckets"])
    assert pages == 1000 * 128


def test_receive_report_is_a_valid_report():
    report = ReceiveReport("0.1.0", "127.0.0.1:1", "zstd", 4096, 2, "10.0", [("pc.ram", 1 << 20)],
                           digests_match=True, config=Config().as_dict())
    data = json.loads(json.dumps(report.to_dict()))
    assert validate(data)["kind"] == "receive"
    assert report.format_text(0) == "final digests: both ends' sha256 per RAM block agree"


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d.pop("schema"), None, "not a multifd-engine report"),
    (lambda d: d.update(schema_version=99), "schema_version", "schema version 99"),
    (lambda d: d.update(kind="benchmark"), "kind", "unknown kind"),
    (lambda d: d.pop("totals"), "totals", "missing"),
    (lambda d: d.update(rounds="three"), "rounds", "must be list"),
    (lambda d: d.update(channels=True), "channels", "must be int"),
    (lambda d: d["rounds"][1].pop("send_seconds"), "rounds[1].send_seconds", "missing"),
    (lambda d: d["machine"].clear() or d.update(machine=[]), "machine", "must be object"),
])
def test_a_report_that_is_not_right_is_a_report_error_naming_the_field(qpl_report, change, field,
                                                                       words):
    data = json.loads(json.dumps(qpl_report.to_dict()))
    change(data)
    with pytest.raises(errors.ReportError) as caught:
        validate(data, "r.json")
    assert caught.value.field == field
    assert words in str(caught.value) and "r.json" in str(caught.value)


def test_files_that_are_not_reports(tmp_path, qpl_report):
    cases = {"not.json": "{ nope", "list.json": "[1, 2]", "empty.json": ""}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(errors.ReportError):
            load_report(tmp_path / name)
    old = json.loads(json.dumps(qpl_report.to_dict()))
    for key in ("schema", "kind", "created", "machine"):
        del old[key]
    old["schema_version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(old))
    with pytest.raises(errors.ReportError, match="schema version 1"):
        load_report(tmp_path / "v1.json")
    with pytest.raises(errors.ReportError, match="no such file"):
        load_report(tmp_path / "missing.json")


# ---- the report command -------------------------------------------------------

def test_report_command_prints_one_report_in_full(report_files, qpl_report, capsys):
    assert main(["report", report_files[0]]) == EXIT_OK
    out = capsys.readouterr().out
    assert "run report" in out and "machine:" in out
    assert "where the time went" in out and "payload bytes per page" in out
    t = qpl_report.totals()
    row = next(line for line in out.splitlines() if line.startswith("qpl, 2 ch"))
    assert f"{t['pages']}" in row and f"{t['ratio']:.2f}" in row and "ok" in row


def test_report_command_compares_two_reports(report_files, qpl_report, zstd_report, capsys):
    assert main(["report", *report_files]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert "time vs 1st" in lines[0] and "wire vs 1st" in lines[0]
    assert lines[1].startswith("qpl, 2 ch") and lines[1].split()[-2:] == ["1.00x", "1.00x"]
    assert lines[2].startswith("zstd, 2 ch")
    wire = zstd_report.bytes_on_wire / qpl_report.bytes_on_wire
    assert lines[2].split()[-1] == f"{wire:.2f}x"


def test_report_command_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rounds": []}')
    assert main(["report", str(bad)]) == EXIT_INPUT
    assert "bad input: ReportError" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_hint(report_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib now fails
    for name in [n for n in sys.modules if n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)               # also when an earlier test drew
    monkeypatch.delitem(sys.modules, "engine.report.plot", raising=False)
    assert main(["report", report_files[0], "--plot", str(tmp_path / "x.png")]) == EXIT_USAGE
    assert "pip install 'multifd-engine[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("which", ["run", "comparison", "bench", "stress"])
def test_plots_are_png_files(report_files, tmp_path, which, capsys):
    pytest.importorskip("matplotlib", reason="plotting needs the 'plot' extra (matplotlib)")
    inputs = {"run": report_files[:1], "comparison": report_files,
              "bench": [_write(tmp_path / "b.json", _bench_report())],
              "stress": [_write(tmp_path / "s.json", _stress_report())]}[which]
    out = tmp_path / f"{which}.png"
    assert main(["report", *inputs, "--plot", str(out)]) == EXIT_OK
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def _write(path, data) -> str:
    validate(data)
    path.write_text(json.dumps(data))
    return str(path)


def _envelope(kind: str) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind,
            "engine_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
            "machine": {"cores": 2, "cpu_model": "x", "codec": {}, "iaa": []}, "config": {}}


def _bench_report() -> dict:
    return {**_envelope("bench"), "bench": "scaling", "guest": "wl3 tiled to 64 MiB",
            "cases": [{"name": "send, 1 worker", "seconds": [1.0, 1.1], "median_seconds": 1.05,
                       "work_bytes": 64 << 20},
                      {"name": "send, 2 workers", "seconds": [0.6], "median_seconds": 0.6,
                       "work_bytes": 64 << 20, "wire_bytes": 20 << 20}],
            "ratios": [{"name": "send speed-up 2 vs 1", "value": 1.75, "goal": 1.7, "met": True}]}


def _stress_report() -> dict:
    return {**_envelope("stress"), "seed": 7, "channels": 2, "rounds": 8, "rounds_verified": 7,
            "pages": 9000, "guest_bytes": 9000 * 4096, "wire_bytes": 12_000_000,
            "round_seconds": 3.5, "pages_lost": 0, "unexpected_errors": [], "ok": True,
            "faults": {"worker_kill": {"injected": 3, "survived": 3},
                       "corrupt_flip": {"injected": 1, "survived": 1}}}


def test_bench_and_stress_reports_print_as_tables(tmp_path, capsys):
    bench = _write(tmp_path / "b.json", _bench_report())
    stress = _write(tmp_path / "s.json", _stress_report())
    assert main(["report", bench]) == EXIT_OK
    out = capsys.readouterr().out
    assert "send speed-up 2 vs 1" in out and "(goal 1.7: met)" in out
    assert main(["report", bench, stress]) == EXIT_OK
    out = capsys.readouterr().out
    assert "send, 2 workers" in out and "stress, seed 7, 2 ch" in out


def test_qemu_section_is_query_migrate_computed_as_qemu_does(qpl_report):
    q, t = qpl_report.to_dict()["qemu"], qpl_report.totals()
    sends = [r.send_seconds for r in qpl_report.rounds]
    assert q["status"] == "completed" and q["setup-time"] >= 1     # workers take a while to start
    assert q["total-time"] == q["setup-time"] + round(sum(sends) * 1e3)
    assert q["downtime"] == round(sends[-1] * 1e3)
    ram = q["ram"]
    assert (ram["transferred"], ram["duplicate"], ram["normal"]) == (
        t["bytes_on_wire"], t["zero_pages"], t["normal_pages"])
    assert ram["normal-bytes"] == t["normal_pages"] * 4096
    transfer_ms = q["total-time"] - q["setup-time"]
    assert ram["mbps"] == pytest.approx(t["bytes_on_wire"] * 8 / transfer_ms / 1000)   # Mbit/s
    line = next(x for x in qpl_report.format_text().splitlines() if x.startswith("query-migrate "))
    assert f"total-time {q['total-time']} ms" in line and f"downtime ~{q['downtime']} ms" in line


def test_version_2_reports_are_still_read_and_version_3_needs_qemu(qpl_report):
    data = json.loads(json.dumps(qpl_report.to_dict()))
    del data["qemu"]
    with pytest.raises(errors.ReportError, match="qemu"):
        validate(data)
    data["schema_version"] = 2
    assert validate(data) is data
    assert Report.from_dict(data).setup_seconds == 0.0


def test_stress_without_faults_says_so_in_table_and_plot(tmp_path, capsys):
    report = {**_stress_report(), "faults": {"worker_kill": {"injected": 0, "survived": 0}}}
    assert main(["report", _write(tmp_path / "s.json", report)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "faults: none injected" in out and "injected  survived" not in out
    pytest.importorskip("matplotlib", reason="plotting needs the 'plot' extra (matplotlib)")
    from engine.report.plot import _stress_figure

    (ax,) = _stress_figure(report).axes
    assert ax.get_legend() is None          # no bars: no legend of two same-coloured entries
    (ax,) = _stress_figure(_stress_report()).axes
    colours = {tuple(h.get_facecolor()) for h in ax.get_legend().legend_handles}
    assert len(colours) == 2 and ax.get_xscale() == "linear"
    wide = {**_stress_report(), "faults": {"worker_kill": {"injected": 1, "survived": 0},
                                           "device_overflow": {"injected": 1000, "survived": 1000}}}
    (ax,) = _stress_figure(wide).axes
    assert ax.get_xscale() == "log"          # the single kill stays visible beside the thousand


def test_phase_legend_does_not_cover_the_bars(qpl_report):
    pytest.importorskip("matplotlib", reason="plotting needs the 'plot' extra (matplotlib)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from engine.report.plot import _run_figure

    figure = _run_figure(qpl_report.to_dict())
    FigureCanvasAgg(figure).draw()
    phases = next(ax for ax in figure.axes if ax.get_title().startswith("Where a packet"))
    legend = phases.get_legend().get_window_extent()
    assert legend.y1 <= phases.get_window_extent().y0     # below the panel, not on it


# ---- quiet, verbose, progress -------------------------------------------------

def test_quiet_prints_only_the_verdict_and_verbose_adds_detail(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nrounds = 2\n[workload]\nsize = "1MiB"\n[migration]\nchannels = 1\n')
    assert main(["run", str(cfg), "-q"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("verify: every round byte for byte identical (")
    assert main(["run", str(cfg)]) == EXIT_OK
    normal = capsys.readouterr().out
    assert "last round:" in normal and "where the time went" not in normal
    assert main(["run", str(cfg), "-v"]) == EXIT_OK
    assert "where the time went" in capsys.readouterr().out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only():
    pipe, tty = io.StringIO(), _Tty()
    for stream in (pipe, tty):
        line = ProgressLine(stream, rounds=2, enabled=True)
        line(0, 5, 10)
        line.finish()
    assert pipe.getvalue() == ""
    assert "round 0 (0..1)" in tty.getvalue() and "5/10 packets" in tty.getvalue()
    quiet = _Tty()
    ProgressLine(quiet, rounds=2, enabled=False)(0, 5, 10)
    assert quiet.getvalue() == ""


def test_progress_line_covers_what_a_longer_line_left():
    tty = _Tty()
    line = ProgressLine(tty, rounds=4, enabled=True)
    line(0, 500, 512)
    line(1, 26, 26)                                    # a shorter line after a longer one
    last = tty.getvalue().rsplit("\r", 1)[1]
    assert last.rstrip() == "round 1 (0..3) [####################] 100% 26/26 packets"
    assert len(last) == len("round 0 (0..3) [###################.]  97% 500/512 packets")


def test_report_to_dict_does_not_share_state_with_the_report(qpl_report):
    data = qpl_report.to_dict()
    before = copy.deepcopy(qpl_report.send_channels)
    data["send_channels"][0]["packets"] = -1
    assert qpl_report.send_channels == before


# ---- damaged report files: bad input, never a traceback ---------------------

def _paths(data, prefix=(), depth=3):
    """Every key path into dicts, and into the first item of lists, up to ``depth``."""
    if depth == 0:
        return
    items = data.items() if isinstance(data, dict) else enumerate(data[:1]) \
        if isinstance(data, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,), depth - 1)


def _damaged(data, path, replacement):
    data = copy.deepcopy(data)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if replacement is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return data


_DELETE = object()


def test_damaged_reports_are_bad_input_or_read_never_a_crash(tmp_path, qpl_report, capsys):
    original = json.loads(json.dumps(qpl_report.to_dict()))
    path = tmp_path / "r.json"
    outcomes = set()
    read = [p for p in _paths(original) if p[0] != "config" or len(p) == 1]   # config: not read
    for key_path in read:
        for replacement in (_DELETE, None, "x", -1, [], {}, [[1]]):
            path.write_text(json.dumps(_damaged(original, key_path, replacement)))
            code = main(["report", str(path)])
            assert code in (EXIT_OK, EXIT_INPUT), (key_path, replacement)
            outcomes.add(code)
    capsys.readouterr()
    assert outcomes == {EXIT_OK, EXIT_INPUT}


def test_damaged_reports_do_not_crash_the_plots(tmp_path, qpl_report, capsys):
    pytest.importorskip("matplotlib", reason="plotting needs the 'plot' extra (matplotlib)")
    original = json.loads(json.dumps(qpl_report.to_dict()))
    path, out = tmp_path / "r.json", tmp_path / "r.png"
    cases = [(("timeline", "channels", 0, "buckets"), [[1]]), (("timeline", "fields"), []),
             (("page_sizes", "compressed"), ["x"]), (("send_channels", 0, "packets"), "x"),
             (("rounds", 0, "wire_bytes"), "x"), (("timeline", "rounds", 0), {"round": 0}),
             (("accelerator",), [1, 2]), (("page_size",), 0)]
    for key_path, replacement in cases:
        path.write_text(json.dumps(_damaged(original, key_path, replacement)))
        assert main(["report", str(path), "--plot", str(out)]) in (EXIT_OK, EXIT_INPUT), key_path
    capsys.readouterr()


def test_stream_methods_print_no_work_queue_counters_and_sync_has_a_column(zstd_report, qpl_report):
    text = zstd_report.format_text()
    assert "work queue" not in text and "hw jobs" not in text and " path" not in text.splitlines()[1]
    assert "work queue" in qpl_report.format_text()
    header = next(line for line in text.splitlines() if line.lstrip().startswith("channel"))
    assert header.split()[:3] == ["channel", "packets", "SYNC"]
