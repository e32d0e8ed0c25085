"""Method none without copies: pages from the RAM block to the channel, and back.

The direct path (``migration.copy_pages = false``, the default) must put
exactly the bytes of the copying path on the wire, write more scattered
pages than ``IOV_MAX`` in batches, survive partial writes, and keep every
receive-side check: a bad header is refused before any payload byte lands.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading

import numpy as np
import pytest

from engine import Engine, errors, run_batch, wire
from engine.channels import IOV_MAX, BytesSource, FileSink, FileSource, MemoryChannel
from engine.config import Config
from engine.errors import ConfigError
from engine.net.migration import send_migration
from engine.net.transport import TcpSink, TcpSource
from engine.ram import RamBlock, page_views
from engine.receiver import ChannelReader
from test_hostile_sessions import pki  # noqa: F401 - the fixture; tests/ is on sys.path
from test_tcp import ReceiverThread  # tests/ is on sys.path (pytest)

pytestmark = pytest.mark.usefixtures("no_shm_leak")

PAGE = 4096


def small_config(**sections) -> Config:
    data = {"run": {"rounds": 3},
            "workload": {"size": "4MiB", "seed": 11, "dirty_fraction": 0.2},
            "migration": {"channels": 2, "method": "none"}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.from_dict(data)


def none_packet(normal: list[int], zero: list[int] = (), *, payload: bytes | None = None,
                next_packet_size: int | None = None, page_size: int = PAGE) -> bytes:
    """One method-none packet (header + payload) for block pc.ram."""
    if payload is None:
        payload = b"".join(bytes([0x10 + i]) * page_size for i in range(len(normal)))
    header = wire.encode_header(
        page_size=page_size, flags=wire.FLAG_NOCOMP, packet_num=1, ramblock="pc.ram",
        normal_pages=len(normal), zero_pages=len(zero),
        next_packet_size=len(normal) * page_size if next_packet_size is None else next_packet_size,
        pages=np.array([*normal, *zero], np.uint64))
    return header + payload


def reader(source, block: RamBlock, **kwargs) -> ChannelReader:
    return ChannelReader(source, method="none", page_size=block.page_size,
                         blocks={block.name: block}, **kwargs)


# ------------------------------------------------------------- page views

def test_page_views_join_adjacent_pages_and_keep_the_order():
    buf = memoryview(bytearray(b"".join(bytes([i]) * 512 for i in range(16))))
    pages = np.array([3, 4, 5, 1, 7, 8, 0], np.uint64)
    views = page_views(buf, 512, pages)
    assert [len(v) for v in views] == [3 * 512, 512, 2 * 512, 512]
    assert b"".join(views) == b"".join(bytes([i]) * 512 for i in pages.tolist())
    views[0][0] = 0xFF                      # views, not copies
    assert buf[3 * 512] == 0xFF


def test_page_views_refuse_a_page_past_the_buffer():
    with pytest.raises(IndexError, match="page 16"):
        page_views(memoryview(bytearray(16 * 512)), 512, np.array([2, 16], np.uint64))
    assert page_views(memoryview(bytearray(512)), 512, np.array([], np.uint64)) == []


# ------------------------------------------------------------- send side

@pytest.mark.parametrize("qemu_version", ["7.2", "10.0"])
def test_channel_files_are_the_same_bytes_with_and_without_copies(tmp_path, qemu_version):
    files = {}
    for copy_pages in (True, False):
        out = tmp_path / f"copy-{copy_pages}"
        report = run_batch(small_config(migration={"qemu_version": qemu_version,
                                                   "copy_pages": copy_pages},
                                        sink={"kind": "file", "dir": str(out)}))
        assert report.verified is True
        zero = report.totals()["zero_pages"]
        assert (zero > 0) if qemu_version == "10.0" else (zero == 0)
        files[copy_pages] = {f.name: f.read_bytes() for f in sorted(out.glob("channel-*.mfd"))}
    assert sorted(files[False]) == ["channel-0.mfd", "channel-1.mfd"]
    assert all(len(data) > 1 << 20 for data in files[False].values())
    assert files[False] == files[True]


@pytest.mark.parametrize("copy_pages", [False, True])
def test_only_the_copying_path_writes_pages_into_the_slots(copy_pages):
    cfg = small_config(migration={"channels": 1, "copy_pages": copy_pages})
    sink = MemoryChannel(0)
    with Engine(cfg, sinks=[sink]) as engine:
        engine.send(np.arange(engine.block.pages, dtype=np.uint64))
        slots = engine.coordinator.workers[0].slots.buf
        touched = bool(np.frombuffer(slots, np.uint8).any())
        del slots
    assert touched is copy_pages
    assert sink.bytes_written > engine.block.size // 2     # the pages went out either way


def test_a_packet_of_more_scattered_pages_than_iov_max_is_written_in_batches(tmp_path):
    """512-byte pages: 1024 pages a packet, every other one dirty, so 1025 buffers."""
    page_size = 512
    cfg = small_config(migration={"channels": 1, "page_size": page_size, "qemu_version": "7.2"},
                       workload={"size": "2MiB"})
    pages = np.arange(0, (2 << 20) // page_size, 2, dtype=np.uint64)
    per_packet = wire.page_count_for(page_size)
    with RamBlock.create("pc.ram", 2 << 20, page_size) as block:
        block.array[:] = np.random.default_rng(5).integers(1, 255, block.size, dtype=np.uint8)
        if len(page_views(block.buf, page_size, pages[:per_packet])) + 1 <= IOV_MAX:
            pytest.skip(f"IOV_MAX is {IOV_MAX} here; a packet cannot exceed it")
        sink = FileSink(tmp_path, 0)
        with Engine(cfg, blocks=[block], sinks=[sink]) as engine:
            engine.send(pages)
            sink.finish()
        with RamBlock.create("pc.ram", 2 << 20, page_size) as dest:
            rx = reader(FileSource(sink.final_path, 0), dest)
            rx.read_init()
            assert rx.read_until_sync() == len(pages) // per_packet + 1
            rx.close()
            sent = block.array.reshape(-1, page_size)
            got = dest.array.reshape(-1, page_size)
            assert np.array_equal(got[0::2], sent[0::2])
            assert not got[1::2].any()


def test_a_file_sink_writes_more_buffers_than_iov_max(tmp_path):
    buffers = [bytes([i % 251]) * (1 + i % 7) for i in range(2 * IOV_MAX + 3)]
    sink = FileSink(tmp_path, 3)
    sink.write(*buffers)
    sink.finish()
    sink.close()
    assert sink.final_path.read_bytes() == b"".join(buffers)
    assert sink.bytes_written == sum(map(len, buffers))


def test_a_file_sink_resumes_a_partial_writev_in_the_middle_of_a_view(tmp_path, monkeypatch):
    real, calls = __import__("os").writev, []

    def short_writev(fd, views):
        calls.append(len(views))
        budget, cut = 1000, []
        for view in views:                     # at most 1000 bytes, often mid-view
            cut.append(view[:budget])
            budget -= len(cut[-1])
            if not budget:
                break
        return real(fd, cut)

    monkeypatch.setattr("engine.channels.os.writev", short_writev)
    buffers = [bytes([i]) * 300 for i in range(40)]
    sink = FileSink(tmp_path, 0)
    sink.write(*buffers)
    sink.close()
    assert sink.path.read_bytes() == b"".join(buffers)
    assert len(calls) == 12 and max(calls) <= IOV_MAX


class _ShortSocket:
    """A plain socket's face for TcpSink: each sendmsg takes at most 777 bytes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.batches: list[int] = []

    def gettimeout(self):
        return None

    def settimeout(self, value) -> None:
        pass

    def sendmsg(self, views) -> int:
        self.batches.append(len(views))
        taken = b"".join(bytes(v) for v in views)[:777]
        self.data += taken
        return len(taken)


def test_a_tcp_sink_resumes_partial_sends_and_batches_under_iov_max():
    sock = _ShortSocket()
    buffers = [bytes([i % 256]) * 5 for i in range(IOV_MAX + 700)]
    sink = TcpSink(sock, 0)
    sink.write(*buffers)
    assert bytes(sock.data) == b"".join(buffers)
    assert sink.bytes_written == len(sock.data)
    assert max(sock.batches) <= IOV_MAX and len(sock.batches) > 1


def test_a_socket_pair_carries_more_views_than_iov_max_both_ways():
    a, b = socket.socketpair()
    with a, b:
        data = bytes(np.random.default_rng(1).integers(0, 256, 3 * IOV_MAX * 8, dtype=np.uint8))
        out = [memoryview(data)[i:i + 8] for i in range(0, len(data), 8)]
        TcpSink(a, 0).write(*out)
        landing = bytearray(len(data))
        views = [memoryview(landing)[i:i + 8] for i in range(0, len(landing), 8)]
        assert TcpSource(b, 0).readinto_views(views) == len(data)
        assert bytes(landing) == data


# ------------------------------------------------------------- receive side

def _filled_block(pages: int = 16) -> RamBlock:
    block = RamBlock.create("pc.ram", pages * PAGE, PAGE)
    block.array[:] = 0xAA
    return block


@pytest.mark.parametrize("kind", ["bytes", "file", "tcp"])
def test_a_payload_cut_short_is_a_truncated_stream(tmp_path, kind):
    stream = none_packet([1, 2, 3])[:-PAGE // 2]
    if kind == "file":
        (tmp_path / "c.mfd").write_bytes(stream)
        source = FileSource(tmp_path / "c.mfd", 0)
    elif kind == "tcp":
        a, b = socket.socketpair()
        a.sendall(stream)
        a.close()
        source = TcpSource(b, 0)
    else:
        source = BytesSource(stream)
    with _filled_block() as block:
        rx = reader(source, block)
        assert rx._direct
        with pytest.raises(errors.TruncatedStream) as caught:
            rx.next_packet()
        rx.close()
    e = caught.value
    assert (e.field, e.got, e.expected) == ("payload", 3 * PAGE - PAGE // 2, 3 * PAGE)


@pytest.mark.parametrize("case", ["outside the block", "wrong payload size", "page twice"])
def test_a_bad_header_is_refused_before_any_payload_byte_lands(case):
    if case == "outside the block":
        stream, error, field = none_packet([2, 16]), errors.BadOffset, "offset[1]"
    elif case == "page twice":
        stream, error, field = none_packet([2, 5, 2]), errors.BadOffset, "offset[2]"
    else:
        stream = none_packet([2, 3], next_packet_size=PAGE)
        error, field = errors.BadPayloadSize, "next_packet_size"
    source = BytesSource(stream)
    with _filled_block() as block:
        rx = reader(source, block)
        with pytest.raises(error) as caught:
            rx.next_packet()
        untouched = bool((block.array == 0xAA).all())
        rx.close()
    assert caught.value.field == field
    assert untouched
    assert source._pos == wire.header_size(PAGE)         # not a payload byte was read


@pytest.mark.parametrize("copy_pages", [False, True])
def test_a_10_0_packet_clears_its_zero_pages_and_fills_its_normal_ones(copy_pages):
    stream = none_packet([5, 6, 9], zero=[1, 7]) + none_packet([10], zero=[11])
    with _filled_block() as block:
        rx = reader(BytesSource(stream), block, copy_pages=copy_pages)
        assert rx._direct is not copy_pages
        first, second = rx.next_packet(), rx.next_packet()
        assert rx.next_packet() is None
        pages = block.array.reshape(-1, PAGE).copy()
        rx.close()
    assert (first.normal_pages, first.zero_pages, second.zero_pages) == (3, 2, 1)
    assert [int(pages[i][0]) for i in (5, 6, 9, 10)] == [0x10, 0x11, 0x12, 0x10]
    assert (pages[[5, 6, 9]] == np.array([[0x10], [0x11], [0x12]], np.uint8)).all()
    assert not pages[[1, 7, 11]].any()
    assert (pages[[0, 2, 3, 4, 8, 12, 13, 14, 15]] == 0xAA).all()


def test_a_source_without_vectored_reads_takes_the_copying_path():
    class Plain:                       # readinto only, as a stress or recording wrapper
        channel_id = 0

        def __init__(self, data: bytes) -> None:
            self._inner = BytesSource(data)
            self.reads = 0

        def readinto(self, view) -> int:
            self.reads += 1
            return self._inner.readinto(view)

        def close(self) -> None:
            pass

    source = Plain(none_packet([0, 1, 4]))
    with _filled_block() as block:
        rx = reader(source, block)
        assert not rx._direct
        rx.next_packet()
        page4 = bytes(block.page(4))
        rx.close()
    assert source.reads == 2                 # header, payload: not one read per page
    assert page4 == bytes([0x12]) * PAGE


# ------------------------------------------------------------- whole rounds

def _tcp_config(copy_pages: bool, **transport) -> Config:
    return small_config(migration={"copy_pages": copy_pages},
                        transport={"connect_timeout": 5.0, "accept_timeout": 10.0,
                                   "stall_timeout": 5.0, **transport})


@pytest.mark.parametrize("sender_copies, receiver_copies", [(False, False), (True, False),
                                                             (False, True)])
def test_rounds_over_tcp_loopback_verify(sender_copies, receiver_copies):
    rx = ReceiverThread(_tcp_config(receiver_copies))
    sent = send_migration(_tcp_config(sender_copies), rx.address)
    received = rx.result()
    assert not isinstance(received, BaseException), received
    assert sent.verified is True and received.digests_match is True
    assert [r.round for r in received.rounds] == [0, 1, 2]


def test_tls_sockets_send_joined_and_receive_view_by_view(pki):
    """SSLSocket has neither sendmsg nor recvmsg_into: the fallbacks carry the pages."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / "receiver.pem", pki / "receiver.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(pki / "ca.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: accepted.put(server_ctx.wrap_socket(
        listener.accept()[0], server_side=True)), daemon=True).start()
    client = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()),
                                    server_hostname="127.0.0.1")
    server = accepted.get(timeout=10)
    with listener, client, server:
        client.settimeout(10)
        server.settimeout(10)
        data = bytes(np.random.default_rng(2).integers(0, 256, (IOV_MAX + 200) * 64, np.uint8))
        views = [memoryview(data)[i:i + 64] for i in range(0, len(data), 64)]
        writer = threading.Thread(target=TcpSink(client, 0).write, args=views)
        writer.start()
        landing = bytearray(len(data))
        got = TcpSource(server, 0).readinto_views(
            [memoryview(landing)[i:i + 64] for i in range(0, len(landing), 64)])
        writer.join(10)
    assert got == len(data) and bytes(landing) == data


# ------------------------------------------------------------- the setting

def test_copy_pages_is_a_checked_migration_key():
    assert Config().migration.copy_pages is False
    assert small_config(migration={"copy_pages": True}).migration.copy_pages is True
    with pytest.raises(ConfigError, match="migration.copy_pages"):
        small_config(migration={"copy_pages": "yes"})
