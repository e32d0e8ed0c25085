"""Bounded channels (backpressure, stall timeouts) and the channel fault wrappers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine import Engine, Receiver, errors
from engine.stress.bounded_channel import BoundedChannel
from engine.stress.channel_faults import DamagingSink, PacketDamage, SlowSource, StoppingSource
from engine.channels import MemoryChannel
from engine.config import Config
from engine.ram import RamBlock
from engine.workloads import fill_guest_memory


def test_writer_waits_for_the_reader_and_memory_stays_bounded():
    ch = BoundedChannel(3, capacity=1000, stall_timeout=5.0)
    written = []

    def writer():
        for i in range(20):
            ch.sink.write(bytes([i]) * 300)
            written.append(i)
        ch.sink.close()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    assert len(written) == 3                      # 900 bytes fit, the fourth write waits
    out = bytearray()
    buf = memoryview(bytearray(700))
    while n := ch.source.readinto(buf):
        out += buf[:n]
    thread.join(5)
    assert bytes(out) == b"".join(bytes([i]) * 300 for i in range(20))
    assert ch.peak_buffered <= 1000


def test_a_reader_that_stops_becomes_a_write_stall_naming_the_channel():
    ch = BoundedChannel(5, capacity=100, stall_timeout=0.3)
    ch.sink.write(b"x" * 100)
    started = time.monotonic()
    with pytest.raises(errors.ChannelStalled) as caught:
        ch.sink.write(b"y")
    assert 0.25 < time.monotonic() - started < 3
    assert caught.value.channel == 5 and caught.value.side == "write"
    assert "receiver read nothing for 0.3 s" in str(caught.value)


def test_a_sender_that_stops_becomes_a_read_stall_and_abort_frees_both_sides():
    ch = BoundedChannel(1, capacity=100, stall_timeout=0.3)
    with pytest.raises(errors.ChannelStalled) as caught:
        ch.source.readinto(memoryview(bytearray(10)))
    assert caught.value.side == "read"
    ch.abort()
    assert ch.source.readinto(memoryview(bytearray(10))) == 0
    with pytest.raises(BrokenPipeError):
        ch.sink.write(b"z")


def test_a_slow_reader_still_makes_progress_past_the_stall_timeout():
    ch = BoundedChannel(0, capacity=64, stall_timeout=0.2)
    slow = SlowSource(ch.source, 0.05)
    got = bytearray()

    def reader():
        buf = memoryview(bytearray(16))
        while n := slow.readinto(buf):
            got.extend(buf[:n])

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(40):                      # ~0.6 s of writing, never 0.2 s without progress
        ch.sink.write(b"a" * 16)
    ch.sink.close()
    thread.join(5)
    assert len(got) == 640 and ch.peak_buffered <= 64


def test_stopping_source_stops_after_its_bytes_until_released():
    ch = MemoryChannel(0)
    ch.write(b"0123456789")
    stop = StoppingSource(ch)
    stop.arm(4)
    buf = memoryview(bytearray(3))
    assert stop.readinto(buf) == 3 and bytes(buf) == b"012"
    threading.Timer(0.2, stop.release).start()
    started = time.monotonic()
    assert stop.readinto(buf) == 1                 # one byte to the stop point, then it waited
    assert stop.stopped and time.monotonic() - started >= 0.15


@pytest.mark.parametrize("kind", ["flip", "truncate", "drop", "reorder"])
def test_damaging_sink_damages_exactly_the_chosen_packet(kind):
    out = MemoryChannel(0)
    sink = DamagingSink(out)
    packets = [bytes([i]) * 50 for i in range(4)]
    sink.write(packets[0])
    sink.arm(PacketDamage(kind, 1, seed=3))
    for p in packets[1:]:
        sink.write(p[:20], p[20:])                # header + payload, as the coordinator writes
    data = out.getvalue()
    assert sink.injected == {kind: 1}
    assert data.startswith(packets[0] + packets[1])
    damaged = packets[2]
    if kind == "flip":
        assert len(data) == 200 and data[100:150] != damaged
        assert data[150:] == packets[3]
    elif kind == "truncate":
        assert data.endswith(packets[3]) and len(data) < 200
    elif kind == "drop":
        assert data == packets[0] + packets[1] + packets[3]
    else:
        assert data == packets[0] + packets[1] + packets[3] + damaged


def test_backpressure_through_a_real_engine_keeps_the_channel_bounded(no_shm_leak):
    """A slow receiver on bounded channels: the sender waits, memory stays flat,
    every page arrives."""
    page, pages, capacity = 4096, 1024, 256 << 10
    cfg = Config.from_dict({"migration": {"channels": 2, "method": "none"}})
    pipes = [BoundedChannel(i, capacity=capacity, stall_timeout=10) for i in range(2)]
    with RamBlock.create("pc.ram", pages * page, page) as src, \
            RamBlock.create("pc.ram", pages * page, page) as dst:
        fill_guest_memory(src, seed=4)
        with Engine(cfg, blocks=[src], sinks=[p.sink for p in pipes]) as engine, \
                Receiver([dst], [SlowSource(p.source, 0.002) for p in pipes],
                         method="none", page_size=page) as rx:
            rx.start()
            receiving = threading.Thread(target=rx.receive_round)
            receiving.start()
            engine.send(np.arange(pages, dtype=np.uint64))
            receiving.join(60)
            assert rx.verify([src]).ok
    packet = 1344 + 128 * page                    # one whole packet may exceed the budget
    assert all(p.bytes_written > 2 * capacity for p in pipes)
    assert max(p.peak_buffered for p in pipes) <= max(capacity, packet)
