"""Real QEMU 7.2 and 10.0 streams decode, page for page, to the guest image.

This is how we know our decoder speaks QEMU's format and not only our own.
The captures and their manifest live in ../shared/data (see its README).
"""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.inspection import inspect_channels

pytestmark = pytest.mark.usefixtures("no_shm_leak")

CAPTURES = ["qemu-10.0-qpl", "qemu-10.0-none", "qemu-10.0-zlib", "qemu-10.0-zstd",
            "qemu-7.2-none", "qemu-7.2-zlib", "qemu-7.2-zstd"]


@pytest.mark.parametrize("folder", CAPTURES)
def test_capture_decodes_to_the_image(shared_data, folder):
    files = sorted((shared_data / "wl3" / folder).glob("channel-*.mfd.zst"))
    image = shared_data / "wl3" / "image.ram.zst"
    result = inspect_channels(files, image=image)
    assert result.block == "mem"
    assert result.mismatched_pages == 0, result.mismatched_offsets
    assert result.pages_checked > 1000
    expected = _expected(shared_data, folder)
    got = {c.channel: (c.packets, c.normal_pages, c.zero_pages, c.sync_packets) for c in result.channels}
    assert got == expected


def _expected(shared_data, folder):
    # the per-channel table of ../shared/data/README.md, as the manifest has it
    manifest = json.loads((shared_data / "wl3" / "manifest.json").read_text())
    capture = next(c for c in manifest["captures"] if c["folder"] == folder)
    out = {}
    for ch in capture["channel_files"]:
        out[ch["channel_id"]] = (ch["packets"], ch["normal_pages"], ch["zero_pages"], ch["sync_packets"])
    return out


def test_inspect_cli_on_a_capture(shared_data, capsys):
    files = sorted((shared_data / "wl3" / "qemu-10.0-qpl").glob("channel-*.mfd.zst"))
    code = main(["inspect", "--summary", "--image", str(shared_data / "wl3" / "image.ram.zst"),
                 *map(str, files)])
    out = capsys.readouterr().out
    assert code == 0
    assert "method qpl" in out
    assert "0 differ: ok" in out


def test_other_block_pages_are_the_same_with_or_without_an_image(shared_data):
    """Without --image the reader holds no block; the main one is still not 'other'."""
    files = sorted((shared_data / "wl3" / "qemu-10.0-qpl").glob("channel-*.mfd.zst"))
    bare = inspect_channels(files)
    checked = inspect_channels(files, image=shared_data / "wl3" / "image.ram.zst")
    assert bare.block == checked.block == "mem"
    assert ([c.other_block_pages for c in bare.channels]
            == [c.other_block_pages for c in checked.channels])
    assert sum(c.other_block_pages for c in bare.channels) < sum(
        c.normal_pages + c.zero_pages for c in bare.channels)
