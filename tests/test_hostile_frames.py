"""Hostile bytes get typed errors: control frames of every shape, zero pages outside a block.

Each case is an attack found on an earlier main: a 7-byte control frame
whose message kind is a list crashed ``unpack`` with a TypeError; a fake
receiver answering ``[[0]]`` to Hello crashed ``send``; a zero-page offset
past the block's end reached the C clear loop (``inspect --image``) instead
of being a wire error.
"""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest

from engine import errors, methods, wire
from engine.cli import main
from engine.exit_codes import EXIT_INPUT
from engine.config import Config
from engine.net import control
from engine.net.migration import send_migration
from engine.net.transport import Listener, Address
from engine.ram import RamBlock
from engine.receiver import ChannelReader
from engine.channels import BytesSource

PAGE = 4096
SEVEN_BYTES = b"MFDC\x00\x00\x00\x03\x91\x91\x00"

pytestmark = pytest.mark.usefixtures("no_shm_leak")


@pytest.mark.parametrize("item", [
    [[0]], [{}], [None], [True], [1.5], ["Ready"], [0, *([1] * 7)], [3, True, 1], [3, 1, 2.0],
    [6, {"pc.ram": "not bytes"}], [7, True, {"a": 1}], [0, 1, b"u" * 16, 4096, "none", 1, "10.0",
                                                         [["pc.ram", True]]],
    [5, 0, 0, [1]], {"kind": 1}, "text", 7,
])
def test_every_unexpected_shape_is_a_control_error(item):
    with pytest.raises(errors.ControlError):
        control.unpack(msgpack.packb(item, use_bin_type=True))


def test_the_seven_byte_frame_is_a_control_error():
    assert SEVEN_BYTES[:4] == control.MAGIC
    with pytest.raises(errors.ControlError, match="unknown control message"):
        control.unpack(SEVEN_BYTES[8:])


@pytest.mark.parametrize("body", [b"\xc1", b"\x91", b"\x92\x01", b"\xd4\x00\x00",
                                  b"\x81\x91\x00\x00", b"\x91" * 5000])
def test_undecodable_bodies_are_control_errors(body):
    with pytest.raises(errors.ControlError):
        control.unpack(body)


def _fake_receiver(answer: bytes) -> tuple[Listener, threading.Thread]:
    listener = Listener(Address("127.0.0.1", 0))

    def serve() -> None:
        sock, _ = listener.accept(timeout=10, stall_timeout=5, what="sender")
        with sock:
            sock.settimeout(5)
            try:
                sock.recv(1 << 16)          # magic and Hello (and the session's first bytes)
                sock.sendall(answer)
                sock.recv(1 << 16)          # the sender's Error, then its close
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _config() -> Config:
    return Config.from_dict({"run": {"rounds": 1}, "workload": {"size": "1MiB"},
                             "migration": {"channels": 1, "method": "none"},
                             "transport": {"connect_timeout": 5.0, "stall_timeout": 5.0}})


def test_a_receiver_answering_a_list_gets_a_control_error():
    body = msgpack.packb([[0]])
    listener, thread = _fake_receiver(len(body).to_bytes(4, "big") + body)
    try:
        with pytest.raises(errors.ControlError):
            send_migration(_config(), listener.address)
    finally:
        thread.join(10)
        listener.close()


def test_cli_send_to_a_hostile_receiver_is_bad_input(capsys, tmp_path):
    body = msgpack.packb([[0]])
    listener, thread = _fake_receiver(len(body).to_bytes(4, "big") + body)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nrounds = 1\n[workload]\nsize = "1MiB"\n'
                   '[migration]\nchannels = 1\nmethod = "none"\n')
    try:
        code = main(["send", "--to", str(listener.address), str(cfg), "-q"])
    finally:
        thread.join(10)
        listener.close()
    assert code == EXIT_INPUT
    assert "ControlError" in capsys.readouterr().err


# ------------------------------------------------------------- zero pages

BLOCK_PAGES = 16


def _zero_page_stream(index: int) -> bytes:
    """One channel: init packet, one packet with one normal page and a zero page at ``index``."""
    flag = methods.get("none").flag
    header = wire.encode_header(page_size=PAGE, flags=flag, packet_num=7, ramblock="pc.ram",
                                normal_pages=1, zero_pages=1, next_packet_size=PAGE,
                                pages=np.array([0, index], dtype=np.uint64))
    return wire.InitPacket(bytes(16), 0).encode() + header + b"\x01" * PAGE


def test_zero_page_outside_the_block_is_a_wire_error():
    with RamBlock.create("pc.ram", BLOCK_PAGES * PAGE, PAGE) as dst:
        reader = ChannelReader(BytesSource(_zero_page_stream(BLOCK_PAGES + 3)), method="none",
                               page_size=PAGE, blocks={"pc.ram": dst})
        try:
            reader.read_init(channels=1)
            with pytest.raises(errors.BadOffset) as caught:
                reader.read_to_end()
        finally:
            reader.close()
    error = caught.value
    assert (error.channel, error.packet_num, error.field) == (0, 7, "offset[1]")


def test_inspect_image_names_the_zero_page_outside_the_block(tmp_path, capsys):
    channel = tmp_path / "channel-0.mfd"
    channel.write_bytes(_zero_page_stream(BLOCK_PAGES + 3))
    image = tmp_path / "guest.ram"
    image.write_bytes(bytes(BLOCK_PAGES * PAGE))
    code = main(["inspect", str(channel), "--image", str(image), "--summary"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    assert "channel 0, packet 7, field offset[1]" in err and "outside its RAM block" in err


def test_inspect_image_still_reads_a_good_zero_page(tmp_path, capsys):
    channel = tmp_path / "channel-0.mfd"
    channel.write_bytes(_zero_page_stream(BLOCK_PAGES - 1))
    image = tmp_path / "guest.ram"
    image.write_bytes(b"\x01" * PAGE + bytes((BLOCK_PAGES - 1) * PAGE))
    assert main(["inspect", str(channel), "--image", str(image), "--summary"]) == 0
    assert "2 pages of 'pc.ram' checked, 0 differ" in capsys.readouterr().out
