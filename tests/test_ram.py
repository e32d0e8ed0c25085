"""engine.ram: RAM blocks in POSIX shared memory."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zstandard

from engine.batch import make_source_block
from engine.config import Config
from engine.errors import ConfigError, EngineError, ImageError, RamBlockError
from engine.ram import SHM_DIR, RamBlock, RamBlockSpec, SharedSegment
from engine.workloads import load_image

PAGE = 4096
ROOT = Path(__file__).resolve().parents[1]


def ours() -> set[str]:
    """Our process's segments (other test runs may share /dev/shm)."""
    prefix = f"mfd-{os.getpid()}-"
    return {n for n in os.listdir(SHM_DIR) if n.startswith(prefix)}


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


def _child_write(spec: dict, offset: int, value: int) -> None:
    """Runs in a spawned child: attach by spec, write one byte, check one."""
    block = RamBlock.attach(RamBlockSpec.from_dict(spec))
    try:
        assert block.buf[0] == 0x5A  # the parent's write is visible here
        block.buf[offset] = value
    finally:
        block.close()


# -- SharedSegment -----------------------------------------------------------


def test_segment_create_attach_close_unlink():
    seg = SharedSegment.create("t", 10000)
    try:
        assert seg.name.startswith(f"mfd-{os.getpid()}-") and seg.name.endswith("-t")
        assert seg.size == len(seg.buf) == 10000
        assert os.stat(os.path.join(SHM_DIR, seg.name)).st_mode & 0o777 == 0o600
        seg.buf[9999] = 7
        with SharedSegment.attach(seg.name) as other:  # size None = file size
            assert other.size == 10000 and other.buf[9999] == 7
            other.buf[0] = 3
        assert other.closed
        assert seg.buf[0] == 3
        with SharedSegment.attach(seg.name, 100) as part:
            assert len(part.buf) == 100
    finally:
        seg.close()
        seg.close()
        seg.unlink()
        seg.unlink()
    assert not exists(seg.name)


def test_segment_rejects_zero_and_bad_names():
    with pytest.raises(ValueError):
        SharedSegment.create("zero", 0)
    with pytest.raises(ValueError):
        SharedSegment.create("neg", -1)
    with pytest.raises(FileNotFoundError):
        SharedSegment.attach("mfd-does-not-exist-xyz")
    with pytest.raises(EngineError, match="bad shared-memory segment name"):
        SharedSegment.attach("../etc/passwd")


def test_segment_label_is_made_safe():
    with SharedSegment.create("/rom@etc/acpi tables", 512) as seg:
        try:
            assert "/" not in seg.name and " " not in seg.name
            assert exists(seg.name)
        finally:
            seg.unlink()


def test_segment_attach_larger_than_file_fails():
    seg = SharedSegment.create("small", 4096)
    try:
        with pytest.raises(Exception, match="4096"):
            SharedSegment.attach(seg.name, 8192)
    finally:
        seg.close()
        seg.unlink()


# -- validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, page_size, part, text",
    [
        ("", PAGE, PAGE, "name", "empty"),
        ("a\0b", PAGE, PAGE, "name", "NUL"),
        ("x" * 256, PAGE, PAGE, "name", "256"),
        ("é" * 128, PAGE, PAGE, "name", "256"),  # 256 UTF-8 bytes
        ("pc.ram", 0, PAGE, "size", "0"),
        ("pc.ram", -PAGE, PAGE, "size", str(-PAGE)),
        ("pc.ram", PAGE + 1, PAGE, "size", str(PAGE + 1)),
        ("pc.ram", PAGE, 3000, "page_size", "3000"),
        ("pc.ram", PAGE, 256, "page_size", "256"),
        ("pc.ram", 1 << 18, 1 << 17, "page_size", str(1 << 17)),
        ("pc.ram", PAGE, 4096.0, "page_size", "4096.0"),
    ],
)
def test_bad_parameters_are_ram_block_errors(name, size, page_size, part, text):
    before = ours()
    with pytest.raises(RamBlockError) as info:
        RamBlock.create(name, size, page_size)
    assert info.value.part == part
    assert text in str(info.value)
    assert ours() == before


def test_the_config_layer_names_the_key_of_a_bad_block(tmp_path):
    with pytest.raises(ConfigError) as info:
        make_source_block(Config.from_dict({"workload": {"block": "a\0b", "size": "64KiB"}}))
    assert info.value.key == "workload.block" and "NUL" in str(info.value)
    odd = tmp_path / "odd.ram"
    odd.write_bytes(b"\x01" * (PAGE + 1))
    with pytest.raises(ConfigError) as info:
        make_source_block(Config.from_dict({"workload": {"source": "image", "image": str(odd)}}))
    assert info.value.key == "workload.image" and str(odd) in str(info.value)


def test_longest_name_and_page_size_limits_ok():
    with RamBlock.create("x" * 255, 65536, 65536) as a, RamBlock.create("ü" * 127, 512, 512) as b:
        assert a.pages == 1 and b.pages == 1


# -- RamBlock ----------------------------------------------------------------


def test_create_is_zero_filled_and_pages_are_views():
    with RamBlock.create("pc.ram", 8 * PAGE, PAGE) as block:
        assert (block.name, block.size, block.page_size, block.pages) == ("pc.ram", 8 * PAGE, PAGE, 8)
        assert block.array.dtype == np.uint8 and block.array.size == 8 * PAGE
        assert not block.array.any()
        page = block.page(3)
        assert len(page) == PAGE and not page.readonly
        page[:4] = b"abcd"
        assert bytes(block.buf[3 * PAGE : 3 * PAGE + 4]) == b"abcd"
        assert block.array[3 * PAGE] == ord("a")
        assert bytes(block.page(-5)[:4]) == b"abcd"
        assert bytes(block.page(np.int64(3))[:1]) == b"a"
        with pytest.raises(IndexError):
            block.page(8)
        with pytest.raises(IndexError):
            block.page(-9)
        page.release()


def test_spec_round_trips_through_msgpack():
    with RamBlock.create("pc.ram", 4 * PAGE, PAGE) as block:
        spec = block.spec()
        assert spec == RamBlockSpec("pc.ram", 4 * PAGE, PAGE, block.segment.name)
        wire = msgpack.packb(spec.as_dict())
        assert RamBlockSpec.from_dict(msgpack.unpackb(wire)) == spec
        assert RamBlockSpec.from_dict(msgpack.unpackb(wire, raw=True)) == spec
        with pytest.raises(ValueError):
            RamBlockSpec.from_dict({"name": "pc.ram"})
        with pytest.raises(RamBlockError):
            RamBlockSpec.from_dict({**spec.as_dict(), "page_size": 1000})


def test_attach_in_spawned_child_sees_and_writes_the_same_bytes():
    import multiprocess

    ctx = multiprocess.get_context("spawn")
    with RamBlock.create("pc.ram", 16 * PAGE, PAGE) as block:
        block.buf[0] = 0x5A
        child = ctx.Process(target=_child_write, args=(block.spec().as_dict(), 5 * PAGE + 17, 0xA7))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert block.buf[5 * PAGE + 17] == 0xA7
        assert exists(block.segment.name)  # the child only unmapped
        name = block.segment.name
    assert not exists(name)


def test_attached_block_does_not_unlink():
    with RamBlock.create("pc.ram", 2 * PAGE, PAGE) as block:
        other = RamBlock.attach(block.spec())
        assert not other.owner
        other.array[PAGE] = 9
        other.close()
        other.close()
        assert exists(block.segment.name)
        assert block.array[PAGE] == 9
        with pytest.raises(ValueError):
            other.buf


def test_close_is_idempotent_and_removes_the_file():
    block = RamBlock.create("pc.ram", 4 * PAGE, PAGE)
    name = block.segment.name
    assert exists(name)
    block.close()
    assert not exists(name)
    block.close()
    block.segment.unlink()
    assert block.closed
    with pytest.raises(ValueError):
        block.page(0)


def test_close_with_outside_views_still_unlinks_and_keeps_views_valid():
    block = RamBlock.create("pc.ram", 4 * PAGE, PAGE)
    name = block.segment.name
    arr = block.array
    page = block.page(1)
    arr[PAGE] = 42
    block.close()  # may not unmap while arr/page live; must not raise
    assert not exists(name)
    assert arr[PAGE] == 42 and page[0] == 42  # still valid memory
    del arr, page


def test_forgotten_block_is_unlinked_when_collected():
    block = RamBlock.create("forgotten", PAGE, PAGE)
    name = block.segment.name
    del block
    gc.collect()
    assert not exists(name)


def test_forgotten_block_is_unlinked_at_interpreter_exit():
    code = textwrap.dedent(
        """
        import sys
        from engine.ram import RamBlock
        keep = RamBlock.create("atexit", 4096, 4096)
        sys.modules["__main__"].keep_alive = [keep]  # alive until shutdown
        print(keep.segment.name)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert name.startswith("mfd-")
    assert not exists(name)


# -- images --------------------------------------------------------------------


def _image_bytes(pages: int) -> bytes:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, pages * PAGE, dtype=np.uint8)
    data[PAGE : 2 * PAGE] = 0
    return data.tobytes()


def test_load_image_raw_round_trip(tmp_path):
    data = _image_bytes(16)
    path = tmp_path / "guest.ram"
    path.write_bytes(data)
    with load_image(path) as block:
        assert block.name == "pc.ram" and block.size == len(data) and block.pages == 16
        assert bytes(block.buf) == data
    with load_image(str(path), name="ram1", page_size=1024) as block:
        assert block.name == "ram1" and block.pages == 64
        assert bytes(block.buf) == data


def test_load_image_zst_round_trip(tmp_path):
    data = _image_bytes(16)
    single = tmp_path / "guest.ram.zst"  # content size in the frame header
    single.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    streamed = tmp_path / "streamed.ram.zst"  # size unknown: written as a stream
    with open(streamed, "wb") as f, zstandard.ZstdCompressor().stream_writer(f, closefd=False) as w:
        w.write(data[: 5 * PAGE])
        w.write(data[5 * PAGE :])
    frames = tmp_path / "frames.ram.zst"  # two frames: the first header lies about the total
    cctx = zstandard.ZstdCompressor()
    frames.write_bytes(cctx.compress(data[: 4 * PAGE]) + cctx.compress(data[4 * PAGE :]))
    for path in (single, streamed, frames):
        with load_image(path) as block:
            assert block.size == len(data), path
            assert bytes(block.buf) == data, path


@pytest.mark.parametrize("suffix", ["", ".zst"])
@pytest.mark.parametrize("size", [0, PAGE + 100])
def test_load_image_bad_size_names_path(tmp_path, suffix, size):
    path = tmp_path / f"odd.ram{suffix}"
    data = b"\x01" * size
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if suffix else data)
    before = ours()
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert ours() == before


def test_load_image_missing_or_corrupt(tmp_path):
    with pytest.raises(ImageError, match="nope.ram"):
        load_image(tmp_path / "nope.ram")
    bad = tmp_path / "bad.ram.zst"
    bad.write_bytes(b"this is not zstd at all" * 10)
    before = ours()
    with pytest.raises(ImageError, match="bad.ram.zst"):
        load_image(bad)
    truncated = tmp_path / "cut.ram.zst"
    truncated.write_bytes(zstandard.ZstdCompressor().compress(_image_bytes(4))[:-40])
    with pytest.raises(ImageError, match="cut.ram.zst"):
        load_image(truncated)
    assert ours() == before


# -- leak check ------------------------------------------------------------------


def test_no_mfd_segments_left_behind(tmp_path):
    before = ours()
    image = tmp_path / "g.ram"
    image.write_bytes(_image_bytes(4))
    blocks = [RamBlock.create(f"b{i}", 4 * PAGE, PAGE) for i in range(5)]
    blocks.append(load_image(image))
    assert len(ours() - before) == 6
    attached = [RamBlock.attach(b.spec()) for b in blocks]
    with pytest.raises(RamBlockError):
        RamBlock.create("bad", 4 * PAGE + 1, PAGE)
    for b in attached + blocks:
        b.close()
    assert ours() == before


def test_remove_stale_segments_only_touches_dead_creators(tmp_path):
    from engine.ram import remove_stale_segments

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    names = {
        "stale": f"mfd-{int(dead.stdout)}-0123abcd-pc.ram",
        "ours": f"mfd-{os.getpid()}-0123abcd-pc.ram",
        "init": "mfd-1-0123abcd-pc.ram",  # pid 1 always runs
        "other": "not-ours",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_segments(str(tmp_path)) == [names["stale"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "stale")
