"""The relay's packet translator: one channel, method A in, method B out.

Real QEMU none channels re-encoded to a relay method and back must give
QEMU's bytes exactly; synthetic streams cover what the captures lack
(7.2's SYNC on a page packet and its empty follow-up, 10.0's zero-only
and device-state packets); damaged input ends in a typed error.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import zstandard

from engine import errors, wire
from engine.channels import BytesSource, MemoryChannel
from engine.relay import device_state
from engine.relay.translator import ChannelTranslator, TranslatorSettings

pytestmark = pytest.mark.usefixtures("no_shm_leak")

PAGE = 4096


def translate(data: bytes, incoming: str, outgoing: str, version: str,
              **settings) -> tuple[bytes, object]:
    """``data`` through one translator; (bytes out, traffic)."""
    sinks: list[MemoryChannel] = []

    def open_sink(init: wire.InitPacket) -> MemoryChannel:
        sinks.append(MemoryChannel(init.channel_id))
        return sinks[-1]

    config = TranslatorSettings(incoming, outgoing, page_size=PAGE,
                                compat=wire.Compat.parse(version), **settings)
    traffic = ChannelTranslator(open_sink, config).run(BytesSource(data))
    return sinks[0].getvalue(), traffic


def capture(shared_data, folder: str, channel: int) -> bytes:
    """A real channel prefix, closed with a SYNC as a completed migration ends."""
    path = shared_data / "wl3" / folder / f"channel-{channel}.mfd.zst"
    with open(path, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    compat = wire.Compat.parse(folder.split("-")[1])
    return data + wire.encode_sync(page_size=PAGE, packet_num=1 << 20, compat=compat)


@pytest.mark.parametrize("method", ["zstd", "qpl", "zlib"])
@pytest.mark.parametrize("folder", ["qemu-7.2-none", "qemu-10.0-none"])
def test_real_none_channels_survive_a_round_trip_byte_for_byte(shared_data, folder, method):
    version = folder.split("-")[1]
    for channel in (0, 1) if method == "zstd" else (0,):   # (each pass starts workers: ~1 s)
        original = capture(shared_data, folder, channel)
        middle, there = translate(original, "none", method, version)
        back, _ = translate(middle, method, "none", version)
        assert back == original, f"channel {channel}"
        assert len(middle) < 0.75 * len(original)        # the page bytes were really recompressed
        assert there.incoming.bytes_in == len(original)
        assert there.bytes_out == len(middle)
        assert there.incoming.sync_packets == 2


def _header(flags, num, normal=0, zero=0, nps=0, block="mem", pages=(), alloc=None) -> bytes:
    return wire.encode_header(page_size=PAGE, flags=flags, packet_num=num, ramblock=block,
                              normal_pages=normal, zero_pages=zero, next_packet_size=nps,
                              pages=np.array(pages, dtype=np.uint64), pages_alloc=alloc)


def _pages(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(rng.integers(0, 4, n * PAGE, dtype=np.uint8))   # compressible, not zero


def stream_72() -> bytes:
    """A 7.2 none channel: setup SYNC, pages, SYNC riding on pages, its empty follow-up."""
    init = wire.InitPacket(bytes(16), 1).encode()
    first = _header(wire.FLAG_SYNC, 1)
    pages = _header(0, 3, normal=3, nps=3 * PAGE, pages=[5, 9, 2]) + _pages(3, 1)
    riding = _header(wire.FLAG_SYNC, 6, normal=2, nps=2 * PAGE, pages=[7, 8]) + _pages(2, 2)
    follow = bytearray(_header(0, 6, nps=2 * PAGE))   # stale size and block name, as 7.2
    follow[64:67] = b"mem"
    follow[320:328] = (7 * PAGE).to_bytes(8, "big")   # a stale offset slot
    return init + first + pages + riding + bytes(follow)


def stream_10() -> bytes:
    """A 10.0 none channel: SYNC, normal + zero pages, zero-only, device state."""
    init = wire.InitPacket(bytes(16), 0).encode()
    sync = _header(wire.FLAG_SYNC, 0, alloc=0, block="")
    mixed = _header(0, 2, normal=2, zero=1, nps=2 * PAGE, pages=[4, 1, 3]) + _pages(2, 3)
    zero_only = _header(0, 4, zero=2, pages=[10, 11], block="pc.rom")
    state = bytearray(device_state.HEADER_SIZE)
    state[:12] = (wire.MULTIFD_MAGIC.to_bytes(4, "big") + (1).to_bytes(4, "big")
                  + wire.FLAG_DEVICE_STATE.to_bytes(4, "big"))
    state[12:18] = b"vfio-0"
    state[268:276] = (7).to_bytes(4, "big") + (5000).to_bytes(4, "big")
    data = bytes(range(256)) * 19 + bytes(136)
    return init + sync + mixed + zero_only + bytes(state) + data + _header(wire.FLAG_SYNC, 5,
                                                                          alloc=0, block="")


@pytest.mark.parametrize(("version", "stream"), [("7.2", stream_72), ("10.0", stream_10)])
def test_every_packet_kind_keeps_its_bytes(version, stream):
    original = stream()
    middle, there = translate(original, "none", "zstd", version)
    back, _ = translate(middle, "zstd", "none", version)
    assert back == original
    assert there.incoming.packets == (4 if version == "7.2" else 5)
    if version == "7.2":
        # the follow-up's stale next_packet_size and the SYNC riding on pages are kept
        assert there.incoming.sync_packets == 2
    else:
        assert there.incoming.device_packets == 1
        assert there.incoming.zero_pages == 3


def test_method_bits_change_on_page_packets_only():
    middle, _ = translate(stream_72(), "none", "zstd", "7.2")
    decoder = wire.HeaderDecoder(channel=1, page_size=PAGE, method_flag=wire.FLAG_ZSTD,
                                 compat=wire.Compat((7, 2)), blocks=None)
    hdr = wire.header_size(PAGE)
    first = decoder.decode(middle[64:64 + hdr])
    assert first.flags == wire.FLAG_SYNC                  # page-less SYNC: no method bits
    second = decoder.decode(middle[64 + hdr:64 + 2 * hdr])
    assert second.flags == wire.FLAG_ZSTD and second.next_packet_size < 3 * PAGE


def test_short_packet_is_a_typed_error():
    data = stream_72()
    with pytest.raises(errors.TruncatedStream) as info:
        translate(data[:64 + wire.header_size(PAGE) + 100], "none", "zstd", "7.2")
    assert info.value.channel == 1 and info.value.field == "header"


def test_bad_header_is_a_typed_error():
    data = bytearray(stream_72())
    data[64 + wire.header_size(PAGE)] ^= 0xFF          # magic of the second packet
    with pytest.raises(errors.BadMagic) as info:
        translate(bytes(data), "none", "zstd", "7.2")
    assert info.value.field == "magic"


def test_a_none_payload_of_the_wrong_size_is_refused_before_it_is_read():
    """The method's recv_check runs before the payload is read, on the relay as in a receiver:
    two pages said to be one page long, and no payload sent after them."""
    init = wire.InitPacket(bytes(16), 1).encode()
    short = _header(0, 3, normal=2, nps=PAGE, pages=[5, 9])
    with pytest.raises(errors.BadPayloadSize) as info:
        translate(init + short, "none", "zstd", "7.2")
    assert (info.value.field, info.value.got, info.value.expected) == (
        "next_packet_size", PAGE, 2 * PAGE)


def test_method_mismatch_is_a_typed_error():
    middle, _ = translate(stream_10(), "none", "qpl", "10.0")
    with pytest.raises(errors.BadFlags) as info:
        translate(middle, "zstd", "none", "10.0")
    assert info.value.field == "flags" and info.value.packet_num == 2


def test_device_state_is_refused_for_a_72_peer():
    data = stream_10()
    start = 64 + 3 * wire.header_size(PAGE) + 2 * PAGE
    with pytest.raises(errors.BadFlags):
        translate(data[:64] + data[start:], "none", "zstd", "7.2")


def test_a_channel_that_ends_mid_round_is_an_error():
    data = stream_10()
    cut = 64 + 2 * wire.header_size(PAGE) + 2 * PAGE      # after the pages, before any SYNC
    with pytest.raises(errors.BarrierError) as info:
        translate(data[:cut], "none", "zstd", "10.0")
    assert info.value.field == "sync"


def kill_on(packet_num: int):
    """A before_dispatch hook that SIGKILLs the worker given ``packet_num`` (first send only)."""
    def hook(worker_id: int, pid: int, number: int, attempt: int) -> None:
        if number == packet_num and attempt == 1:
            os.kill(pid, signal.SIGKILL)
    return hook


def test_a_dead_worker_is_replaced_where_the_method_allows():
    original = stream_72()
    middle, there = translate(original, "none", "qpl", "7.2", worker_restarts=1,
                              before_dispatch=kill_on(3))
    assert there.restarts == 1
    back, _ = translate(middle, "qpl", "none", "7.2")
    assert back == original


def test_a_dead_stream_worker_fails_the_channel():
    with pytest.raises(errors.BrokenWorker, match="zstd keeps one stream per channel"):
        translate(stream_72(), "none", "zstd", "7.2", worker_restarts=1, before_dispatch=kill_on(3))
