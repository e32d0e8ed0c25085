"""Coverage-guided fuzzing of the receive side: init packet, packet headers
(``HeaderDecoder``) and payload decoding (``ChannelReader`` with every
method's ``recv`` hook and the C decoders behind it).

One input is one channel stream with a two-byte prefix::

    byte 0   method (index into the registered methods)
    byte 1   bits 0-1: peer QEMU (7.2, 9.0, 9.1, 10.0; one the method works with)
             bits 2-3: page size (4096, 16384, 1024, 4096)
             bit 7:    the stream brings its own init packet (else a valid one is put first)
    rest     the channel's bytes

The destination block is the middle of a larger buffer, fenced on both
sides.  Any exception other than a ``WireError``, a write to the fence, a
write to a page no decoded header named, or a hang is a finding.

Run it (atheris is in the ``fuzz`` extra: ``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_decoder.py fuzz/corpus -max_total_time=600
    python fuzz/fuzz_decoder.py --make-corpus fuzz/corpus      # seed streams, all methods

``fuzz/corpus`` holds the seed streams (``<method>-<page size>``) and small
units a 10-minute run added (``found-*``).  libFuzzer writes a crashing
input to ``crash-<sha1>``; move it to
``fuzz/regressions/`` and ``tests/test_fuzz_regressions.py`` replays it
with every test run from then on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__" and "--make-corpus" not in sys.argv:
    import atheris

    # only our code: instrumenting everything (numpy included) costs some
    # hundred KB per input and ends every long run out of memory
    with atheris.instrument_imports(include=["engine", "workers"]):
        from engine import errors, methods, wire
        from engine.channels import BytesSource
        from engine.receiver import ChannelReader
else:
    from engine import errors, methods, wire
    from engine.channels import BytesSource
    from engine.receiver import ChannelReader

PAGES = 32
GUARD = 2
PATTERN, FENCE = 0x5A, 0xC3
PEERS = ("7.2", "9.0", "9.1", "10.0")
PAGE_SIZES = (4096, 16384, 1024, 4096)
UUID = bytes(range(16))


class FindingError(AssertionError):
    """The receiver did something it must never do."""


class _Target:
    """A fenced destination block, reused from one input to the next."""

    def __init__(self, page_size: int) -> None:
        self.name, self.page_size = "ram0", page_size
        self.size, self.pages = PAGES * page_size, PAGES
        self.whole = np.empty((PAGES + 2 * GUARD, page_size), np.uint8)
        self.buf = memoryview(self.whole.reshape(-1))[GUARD * page_size:(GUARD + PAGES) * page_size]

    def reset(self) -> None:
        self.whole[:] = FENCE
        self.whole[GUARD:GUARD + PAGES] = PATTERN

    def check(self, named: set[int]) -> None:
        if not ((self.whole[:GUARD] == FENCE).all() and (self.whole[GUARD + PAGES:] == FENCE).all()):
            raise FindingError("a write landed outside the destination block")
        untouched = np.ones(PAGES, bool)
        untouched[[p for p in named if p < PAGES]] = False
        if not (self.whole[GUARD:GUARD + PAGES][untouched] == PATTERN).all():
            raise FindingError("a page no decoded header named was written")


class _Recorder(wire.HeaderDecoder):
    """A header decoder that remembers which pages decoded headers named."""

    named: set[int]

    def decode(self, buf):
        header = super().decode(buf)
        self.named.update(int(p) for p in header.pages)   # test code: a few pages per packet
        return header


_TARGETS: dict[int, _Target] = {}


def choose(data: bytes) -> tuple[str, wire.Compat, int, bool]:
    names = methods.names()
    method = names[data[0] % len(names)]
    page_size = PAGE_SIZES[(data[1] >> 2) & 3]
    flag = methods.get(method).flag
    usable = [p for p in PEERS if wire.Compat.parse(p).supports(flag)]
    compat = wire.Compat.parse(usable[(data[1] & 3) % len(usable)])
    return method, compat, page_size, bool(data[1] & 0x80)


def test_one_input(data: bytes) -> None:
    """Decode one stream; raise FindingError (or anything but a WireError) on a finding."""
    if len(data) < 2:
        return
    method, compat, page_size, own_init = choose(data)
    stream = data[2:] if own_init else wire.InitPacket(UUID, 0).encode() + data[2:]
    target = _TARGETS.setdefault(page_size, _Target(page_size))
    target.reset()
    named: set[int] = set()
    reader = ChannelReader(BytesSource(stream), method=method, page_size=page_size,
                           blocks={"ram0": target}, compat=compat)
    try:
        reader.read_init(channels=1, expected_uuid=UUID)
        reader._decoder.__class__ = _Recorder
        reader._decoder.named = named
        reader.read_to_end()
    except errors.WireError:
        pass                                  # the one kind of failure allowed
    finally:
        reader.close()
    target.check(named)


def make_corpus(directory: Path) -> None:
    """Small valid streams of every method and page size, as seeds."""
    from engine import Engine
    from engine.channels import MemoryChannel
    from engine.config import Config
    from engine.ram import RamBlock
    from engine.workloads import PageMix, fill_guest_memory

    directory.mkdir(parents=True, exist_ok=True)
    mix = PageMix(zero=0.5, same_byte=0.2, incompressible=0.05, text=0.15, code=0.05, heap=0.05)
    for m_index, method in enumerate(methods.names()):
        for p_bits, page_size in enumerate(PAGE_SIZES[:3]):
            with RamBlock.create("ram0", 4 * page_size, page_size) as src:
                fill_guest_memory(src, seed=m_index * 10 + p_bits, mix=mix)
                channel = MemoryChannel(0)
                config = Config.from_dict({"migration": {"channels": 1, "method": method,
                                                         "page_size": page_size},
                                           "workload": {"size": 4 * page_size}})
                with Engine(config, blocks=[src], sinks=[channel], uuid=UUID) as engine:
                    engine.send(np.arange(4, dtype=np.uint64))
                    engine.send(np.array([1, 3], dtype=np.uint64))
                init = wire.INIT_PACKET_SIZE
                prefix = bytes([m_index, (p_bits << 2) | PEERS.index("10.0")])
                (directory / f"{method}-{page_size}").write_bytes(prefix + channel.getvalue()[init:])


def main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] == "--make-corpus":
        make_corpus(Path(argv[2]))
        return
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
