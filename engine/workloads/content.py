"""Seeded synthetic page content: the byte pools of each page class and the page writer.

``write_pages`` gives each page fresh content of its class; which pages and
which classes is ``engine.workloads.rounds``'s business.

What real guests look like
--------------------------
Measured on four real Linux guests, per page:

* 9-20 % of pages are zero;
* 4-12 % are one repeated non-zero byte, mostly 0xCC (the kernel poisons freed
  init memory with it), some 0x6B / 0xA5 (slab poison), 0xFF, 0x5A;
* 4-16 % do not compress below a page (random data, compressed files);
* the rest is text, code and heap whose raw DEFLATE level-1 size (one stream
  per 4 KiB page) has a median of 1.3-1.7 KiB.  The ``wl3`` guest in
  ``../shared/data`` has p10 212, p25 677, p50 1309, p75 1895, p90 2702
  bytes over its non-zero pages.

How it is made (fast, vectorised)
---------------------------------
Seeded *pools* are built together on first use: 4 MiB each of text-, code- and
heap-like bytes and of random bytes (~0.1 s per class).  A pool is made of 64 KiB segments of
different styles and densities, so page-sized windows from different offsets
compress differently.  Each data page is a page-sized window of its class's
pool at a seeded random offset (numpy fancy indexing over a strided window
view), plus a few random byte edits so that no two pages are copies.  There
is no Python loop over pages: a 256 MiB block fills in a fraction of a second.
Pages of one class share a 4 MiB pool, so a streaming compressor whose window
spans several pages (QEMU's multifd zlib and zstd keep one stream per channel)
now and then finds a match in an earlier page; per-page compressors (QPL/IAA,
the measurements above) never do.

Everything comes from ``numpy.random.Generator(PCG64(...))`` seeded from the
user's seed, so the bytes are identical for the same seed, size, page size and
mix on any machine (with the same numpy release: numpy does not promise the
same streams across releases).
"""

from __future__ import annotations

import re

import numpy as np

CLASSES = ("zero", "same_byte", "incompressible", "text", "code", "heap")
_POOLED = tuple(i for i, name in enumerate(CLASSES) if name not in ("zero", "same_byte"))
_POOL_SIZE = 4 << 20
_SEGMENT = 64 << 10
_CHUNK_BYTES = 8 << 20  # bytes gathered per fancy-indexing step
_LUT = 1 << 14  # resolution of token probabilities

# Stream tags: every random stream is PCG64 seeded from (tag, seed[, round]).
_TAG_POOLS = 0x504F4F4C  # "POOL"

# Same-byte pages: which byte, how often.
_SAME_BYTES = np.array([0xCC, 0x6B, 0xA5, 0xFF, 0x5A], np.uint8)
_SAME_BYTE_P = np.array([0.70, 0.10, 0.06, 0.09, 0.05])


def seeded_rng(*words: int) -> np.random.Generator:
    """The random stream of (tag, seed[, round]): the same bytes on every machine."""
    return np.random.Generator(np.random.PCG64(list(words)))


def split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split n into integer counts proportional to fractions (largest remainder)."""
    raw = fractions / fractions.sum() * n
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    short = n - int(counts.sum())
    counts[order[: max(short, 0)]] += 1
    while counts.sum() > n:  # pragma: no cover - float rounding guard
        counts[int(np.argmax(counts))] -= 1
    return counts


# --------------------------------------------------------------------------
# Token rendering: a table of byte strings with "marker" cells that become
# random characters, sampled into one long byte stream without Python loops.

_D, _X, _L, _R, _S, _H = 256, 257, 258, 259, 260, 261  # digit, hex, letter, any byte, small disp, high byte
_MARKERS = {"D": [_D], "X": [_X], "L": [_L], "R": [_R], "S": [_S], "H": [_H]}
_MARKER_RE = re.compile(r"\{([DXLRSH])\}")


def _token_table(tokens: list) -> tuple[np.ndarray, np.ndarray]:
    """tokens: str (latin-1, with {D}{X}{L}{R}{S}{H} markers) or list of ints."""
    cells = []
    for tok in tokens:
        if isinstance(tok, str):
            if "{" in tok:
                parts = _MARKER_RE.split(tok)
                out = []
                for i, part in enumerate(parts):
                    out.extend(_MARKERS[part] if i % 2 else part.encode("latin-1"))
                cells.append(out)
            else:
                cells.append(tok.encode("latin-1"))
        else:
            cells.append(bytes(tok))
    lengths = np.fromiter((len(c) for c in cells), np.int64, len(cells))
    table = np.zeros((len(cells), int(lengths.max())), np.int16)
    for i, c in enumerate(cells):
        table[i, : len(c)] = c if isinstance(c, list) else np.frombuffer(c, np.uint8)
    return table, lengths


class _TokenSet:
    """A token table (one row per token, markers as values >= 256) and its sizes."""

    def __init__(self, tokens: list) -> None:
        self.table, self.lengths = _token_table(tokens)
        self.size = len(self.lengths)
        self.width = self.table.shape[1]
        self.flat = self.table.reshape(-1)
        self.markers = [m for m in (_D, _X, _L, _R, _S, _H) if (self.table == m).any()]


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def _marker_bytes(rng: np.random.Generator, marker: int, k: int) -> np.ndarray:
    if marker == _D:
        return rng.integers(48, 58, k, dtype=np.uint8)
    if marker == _X:
        return _HEX_DIGITS[rng.integers(0, 16, k)]
    if marker == _L:
        return rng.integers(97, 123, k, dtype=np.uint8)
    if marker == _R:
        return rng.integers(0, 256, k, dtype=np.uint8)
    if marker == _S:  # small stack/struct displacements: multiples of 8, mostly positive
        return ((rng.integers(-3, 13, k) * 8) & 0xFF).astype(np.uint8)
    return np.where(rng.random(k) < 0.75, 0x00, 0xFF).astype(np.uint8)  # _H


def _render(rng: np.random.Generator, ts: _TokenSet, probs: np.ndarray, nbytes: int) -> np.ndarray:
    """Sample tokens of ``ts`` with probabilities ``probs``; exactly ``nbytes`` bytes."""
    probs = probs / probs.sum()
    # Token draws through a quantised inverse-CDF lookup table: much faster
    # than choice(p=...) for tens of thousands of draws per segment.
    cdf = np.cumsum(probs)
    lut = np.minimum(np.searchsorted(cdf, (np.arange(_LUT) + 0.5) / _LUT * cdf[-1], side="right"), ts.size - 1)
    mean = float((ts.lengths[lut]).mean())
    count = int(nbytes / mean * 1.2) + 64
    while True:
        ids = lut[rng.integers(0, _LUT, count)]
        lens = ts.lengths[ids]
        ends = np.cumsum(lens)
        if ends[-1] >= nbytes:
            break
        count *= 2  # pragma: no cover - 20 % slack is plenty
    last = int(np.searchsorted(ends, nbytes)) + 1
    ids, lens, ends = ids[:last], lens[:last], ends[:last]
    # Flat cell index of every output byte: the token's row start plus the
    # position inside the token, built with one cumsum instead of np.repeat.
    starts = ends - lens
    row = ids * ts.width - starts  # add the output position to get the cell
    step = np.zeros(int(ends[-1]), np.int64)
    step[starts[1:]] = np.diff(row)
    step[0] = row[0]
    cells = ts.flat[(np.cumsum(step) + np.arange(step.size))[:nbytes]]
    data = cells.astype(np.uint8)
    if ts.markers:
        where = np.flatnonzero(cells >= 256)
        kinds = cells[where]
        for marker in ts.markers:
            at = where[kinds == marker]
            if at.size:
                data[at] = _marker_bytes(rng, marker, at.size)
    return data


def _zipf_probs(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return p / p.sum()


# -- text ------------------------------------------------------------------

_COMMON_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she all their there been one has will more if no "
    "when would who so what up its out about into than them can only other new some time "
    "could these two may then do first any my now such like our over man me even most made "
    "after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "file files version package debian release changes upstream fix fixed bug update added "
    "support copyright license software free source code build new removed patch use "
    "kernel memory page device driver error warning info module system user process "
    "function return value data buffer size length number string list table entry object"
).split()

_LOG_LINES = [
    "kernel: usb {D}-{D}: new high-speed USB device number {D} using ehci-pci",
    "kernel: EXT4-fs (vda{D}): mounted filesystem with ordered data mode. Quota mode: none.",
    "kernel: audit: type=1400 audit({D}{D}{D}{D}{D}{D}{D}{D}{D}{D}.{D}{D}{D}:{D}{D}): apparmor=\"STATUS\" "
    "operation=\"profile_load\" profile=\"unconfined\" name=\"/usr/bin/man\" pid={D}{D}{D} comm=\"apparmor_parser\"",
    "systemd[1]: Started Session {D}{D} of User root.",
    "systemd[1]: Starting Daily apt download activities...",
    "systemd[1]: Finished Daily apt download activities.",
    "systemd[1]: Reached target Timers.",
    "systemd[1]: Listening on D-Bus System Message Bus Socket.",
    "kernel: e1000 0000:00:03.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: RX",
    "kernel: pci 0000:00:0{D}.0: [8086:{X}{X}{X}{X}] type 00 class 0x0{X}0000",
    "kernel: random: crng init done",
    "CRON[{D}{D}{D}{D}]: (root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
    "sshd[{D}{D}{D}]: Accepted publickey for root from 10.0.{D}.{D}{D} port {D}{D}{D}{D}{D} ssh2: RSA SHA256:{L}{L}{L}{L}{L}{L}{L}{L}",
    "kernel: Memory: {D}{D}{D}{D}{D}{D}K/{D}{D}{D}{D}{D}{D}K available ({D}{D}{D}{D}{D}K kernel code)",
    "dhclient[{D}{D}{D}]: DHCPACK of 10.0.2.{D}{D} from 10.0.2.2",
    "kernel: clocksource: tsc: mask: 0xffffffffffffffff max_cycles: 0x{X}{X}{X}{X}{X}{X}{X}, max_idle_ns: {D}{D}{D}{D}{D} ns",
]


def _source_lines(rng: np.random.Generator, idents: list[str], n: int) -> list[str]:
    """Lines of Python- and C-like source: indentation, keywords, identifiers."""
    shapes = [
        "{i}{a} = {b}({c}, {d})", "{i}if {a} is None:", "{i}return {a}.{b}", "{i}self.{a} = {a}",
        "{i}for {a} in range(len({b})):", "{i}{a}.{b}({c})", "{i}# {a} {b} {c} {d}",
        "{i}raise ValueError(f\"{a} {{{b}}} {c}\")", "{i}def {a}(self, {b}, {c}=None):",
        "{i}{a} += {b}", "{i}static int {a}(struct {b} *{c}, size_t {d})", "{i}if ({a} < 0)",
        "{i}\treturn -{A};", "{i}{a}->{b} = {c};", "{i}}}", "", "{i}except {A}Error as exc:",
    ]
    lines = []
    picks = rng.integers(0, len(idents), (n, 4))
    for k in range(n):
        shape = shapes[int(rng.integers(0, len(shapes)))]
        a, b, c, d = (idents[j] for j in picks[k])
        indent = " " * (4 * int(rng.integers(0, 4)))
        lines.append(shape.format(i=indent, a=a, b=b, c=c, d=d, A=a.upper()) + "\n")
    return lines


def _synthetic_words(rng: np.random.Generator, n: int) -> list[str]:
    syllables = (
        "ba be bi bo bu ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu "
        "ra re ri ro ru sa se si so su ta te ti to tu st tr pr ch sh th er an in on en al"
    ).split()
    lens = rng.integers(1, 4, n)
    picks = rng.integers(0, len(syllables), (n, 3))
    return list(dict.fromkeys("".join(syllables[j] for j in picks[i, : lens[i]]) for i in range(n)))


class _TextStyles:
    """Page-cache text: prose/changelogs, logs, source code, string tables."""

    def __init__(self, rng: np.random.Generator) -> None:
        words = list(dict.fromkeys(_COMMON_WORDS + _synthetic_words(rng, 3000)))
        self.vocab = len(words)
        self.prose = _TokenSet(
            [w + " " for w in words] + [". ", ", ", "\n", ".\n\n", "\n  * ", "({D}{D}{D}{D}) ", "\n\t"]
        )
        stamps = ["[{D}{D}{D}{D}.{D}{D}{D}{D}{D}{D}] ", "Nov 30 0{D}:{D}{D}:{D}{D} guest "]
        self.log = _TokenSet([s + line + "\n" for s in stamps for line in _LOG_LINES])
        self.source = _TokenSet(_source_lines(rng, words[:400], 500))
        self.strtab = _TokenSet(
            [w + "\0" for w in words[:1500]]
            + ["/usr/lib/x86_64-linux-gnu/", "\0" * 32, "\0" * 8, "LC_{L}{L}{L}=", "{L}{L}{L}{L}{L}{L}{X}{X}\0"]
        )

    def segment(self, rng: np.random.Generator, style: int) -> np.ndarray:
        if style == 0:  # prose / changelogs
            ts = self.prose
            vocab = int(rng.integers(40, 1200))  # vocabulary of this text
            words = np.zeros(self.vocab)
            words[:vocab] = _zipf_probs(vocab, rng.uniform(1.0, 1.2))
            probs = np.concatenate([words * 0.87, [0.05, 0.04, 0.025, 0.005, 0.005, 0.0025, 0.0025]])
        elif style == 1:  # kernel / service logs
            ts = self.log
            n = len(_LOG_LINES)
            line = _zipf_probs(n, rng.uniform(0.5, 1.5))[rng.permutation(n)]
            share = rng.uniform(0, 1)
            probs = np.concatenate([line * share, line * (1 - share)])
        elif style == 2:  # source code, configs
            ts = self.source
            probs = _zipf_probs(ts.size, rng.uniform(0.8, 1.2))[rng.permutation(ts.size)]
        else:  # NUL-separated string tables, environment blocks
            ts = self.strtab
            probs = np.concatenate([_zipf_probs(1500, rng.uniform(0.6, 1.0)) * 0.75, [0.03, 0.1, 0.08, 0.02, 0.02]])
        return _render(rng, ts, probs, _SEGMENT)


# -- code --------------------------------------------------------------------

_X86 = [  # (template, weight); {R} any byte, {S} small displacement, {H} high byte of a rel32
    ([0x55], 2), ([0x48, 0x89, 0xE5], 2), ([0x5D], 2), ([0xC3], 2), ([0x41, 0x57], 1), ([0x41, 0x56], 1),
    ([0x53], 1.5), ([0x5B], 1.5), ("\x48\x83\xec{S}", 2), ("\x48\x83\xc4{S}", 2),
    ("\x48\x8b\x45{S}", 5), ("\x48\x89\x45{S}", 4), ("\x8b\x45{S}", 3), ("\x89\x45{S}", 3),
    ("\x48\x8b\x43{S}", 4), ("\x48\x8b\x7b{S}", 3), ("\x48\x89\x43{S}", 3), ("\x48\x8d\x7c\x24{S}", 2),
    ("\x48\x8b\x87{R}{S}\x00\x00", 2), ("\x48\x8d\x3d{R}{R}{S}{H}", 3), ("\x48\x8d\x35{R}{R}{S}{H}", 2),
    ("\xe8{R}{R}{S}{H}", 8), ("\xe9{R}{S}{H}{H}", 2), ("\x74{R}", 4), ("\x75{R}", 4), ("\xeb{R}", 3),
    ("\x0f\x84{R}{S}\x00\x00", 2), ("\x0f\x85{R}{S}\x00\x00", 2), ([0x48, 0x85, 0xC0], 4), ([0x85, 0xC0], 3),
    ([0x48, 0x89, 0xDF], 3), ([0x48, 0x89, 0xC7], 3), ([0x4C, 0x89, 0xE7], 2), ([0x31, 0xC0], 3),
    ([0x31, 0xD2], 1.5), ("\xbe{R}{S}\x00\x00", 2), ("\xba{S}\x00\x00\x00", 2), ("\xb8{S}\x00\x00\x00", 2),
    ("\x83\xf8{S}", 2), ("\x48\x83\xf8{S}", 2), ("\x41\xb8{R}{S}\x00\x00", 1), ("\x0f\xb6\x45{S}", 1),
    ("\x48\xc7\x45{S}\x00\x00\x00\x00", 2), ("\xc7\x45{S}{S}\x00\x00\x00", 2),
    ([0x0F, 0x1F, 0x44, 0x00, 0x00], 1.5), ([0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00], 1),
    ("\x48\x8b\x05{R}{R}{S}{H}", 2), ("\xff\x15{R}{R}{S}{H}", 1),
    ("\x49\x89{R}", 2), ("\x4c\x8b{R}{S}", 2), ("\x48\x63{R}", 1), ("\x48\xc1\xe0{S}", 1),
    # idioms: prologues, epilogues, call sequences
    ("\x55\x48\x89\xe5\x41\x57\x41\x56\x41\x55\x41\x54\x53\x48\x83\xec{S}", 2),
    ("\x48\x83\xc4{S}\x5b\x41\x5c\x41\x5d\x41\x5e\x41\x5f\x5d\xc3", 2),
    ("\x48\x8b\x7d{S}\xe8{R}{R}{S}{H}\x85\xc0\x75{R}", 3),
    ("\x48\x89\xdf\xe8{R}{R}{S}{H}\x48\x89\xc3\x48\x85\xc0\x74{R}", 2),
    ("\x66\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00", 0.5),
]
_X86_IDIOMS = 5  # the last entries of _X86
_X86_EXTRA = [  # padding and data found between functions
    [0xCC] * 4, [0x90], [0xCC] * 8, [0xCC] * 13, [0x0F, 0x1F, 0x80, 0, 0, 0, 0],
    "{R}{R}{H}{H}", "\0\0\0\0\0\0\0\0", "{R}{S}\0\0",
]


class _CodeStyles:
    """x86-64 instruction streams: dense .text, padded functions, jump tables."""

    def __init__(self) -> None:
        self.ts = _TokenSet([t for t, _ in _X86] + _X86_EXTRA)
        self.weights = np.array([w for _, w in _X86], np.float64)

    def segment(self, rng: np.random.Generator, style: int) -> np.ndarray:
        # Per-segment flavour: each stretch of code has its own instruction mix.
        w = self.weights * rng.uniform(0.3, 1.7, self.weights.size)
        w[-_X86_IDIOMS:] *= rng.uniform(0.5, 10.0)  # how "compiler-regular" the code is
        if style == 0:  # dense .text
            extra = [0.01, 0.01, 0, 0, 0, 0, 0, 0]
        elif style == 1:  # functions with int3/nop alignment padding
            extra = [0, 0, 0.04, 0.02, 0.03, 0, 0, 0]
        else:  # .text with jump tables and rodata
            extra = [0, 0, 0, 0, 0, 0.08, 0.05, 0.06]
        extra = np.array(extra)
        probs = np.concatenate([w / w.sum() * (1 - extra.sum()), extra])
        return _render(rng, self.ts, probs, _SEGMENT)


# -- heap --------------------------------------------------------------------


def _heap_segment(rng: np.random.Generator, density: float) -> np.ndarray:
    """Arrays of structs: 8-byte fields of a per-segment layout; free slots are zero."""
    fields_n = int(rng.integers(3, 17))
    records = _SEGMENT // (8 * fields_n) + 1
    # field kinds: 0 zero, 1 kernel ptr, 2 user ptr, 3 small int, 4 counter, 5 flags, 6 random, 7 double, 8 ascii
    kinds_p = np.array([0.26, 0.14, 0.14, 0.18, 0.06, 0.06, 0.05, 0.05, 0.06])
    kinds = rng.choice(len(kinds_p), size=fields_n, p=kinds_p / kinds_p.sum())
    kbase = np.uint64(0xFFFF888000000000) + np.uint64(int(rng.integers(0, 1 << 16)) << 20)
    ubase = np.uint64(int(rng.choice([0x000055D0, 0x00007F3A])) << 24 | int(rng.integers(0, 1 << 16)) << 16)
    words = np.zeros((records, fields_n), "<u8")  # little-endian on every machine
    for f, kind in enumerate(kinds):
        if kind == 1:
            span = 1 << int(rng.integers(12, 24))
            col = kbase + (rng.integers(0, span, records, dtype=np.uint64) << np.uint64(6))
        elif kind == 2:
            span = 1 << int(rng.integers(10, 22))
            col = ubase + (rng.integers(0, span, records, dtype=np.uint64) << np.uint64(4))
        elif kind == 3:
            col = rng.integers(0, 1 << int(rng.integers(2, 17)), records, dtype=np.uint64)
        elif kind == 4:
            start = int(rng.integers(0, 1 << 20))
            col = np.arange(start, start + records, dtype=np.uint64) * np.uint64(int(rng.integers(1, 9)))
        elif kind == 5:
            col = (np.uint64(1) << rng.integers(0, 12, records, dtype=np.uint64)) | np.uint64(
                int(rng.integers(0, 1 << 8)) << 16
            )
        elif kind == 6:
            col = rng.integers(0, 1 << 63, records, dtype=np.uint64) * np.uint64(2)
        elif kind == 7:
            col = np.round(rng.normal(0, 1e3, records), int(rng.integers(0, 4))).astype("<f8").view("<u8")
        elif kind == 8:
            col = rng.integers(97, 123, (records, 8), dtype=np.uint8)
            col[:, int(rng.integers(3, 8)) :] = 0
            col = col.view("<u8").reshape(records)
        else:
            continue
        words[:, f] = col
    # Free slots and sparsely used fields: zero whole records.
    used = rng.random(records) < density
    words[~used] = 0
    return words.reshape(-1).view(np.uint8)[:_SEGMENT].copy()


# --------------------------------------------------------------------------
# Pools


class Pools:
    """Seeded byte pools of the data classes, all built on first use.

    All at once, not one per class as needed: a run's memory then settles
    after the first pages are written, instead of stepping up by a pool
    whenever a later round's mix first draws another class.  Every pool has
    its own random stream (seed, class), so its bytes are the same either way.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._pools: dict[int, np.ndarray] = {}

    def pool(self, cls: int) -> np.ndarray:
        if not self._pools:
            for c in _POOLED:
                self._pools[c] = self._build(c, seeded_rng(_TAG_POOLS, self.seed, c))
        return self._pools[cls]

    @staticmethod
    def _build(cls: int, rng: np.random.Generator) -> np.ndarray:
        nseg = _POOL_SIZE // _SEGMENT
        name = CLASSES[cls]
        if name == "incompressible":
            return rng.integers(0, 256, _POOL_SIZE, dtype=np.uint8)
        if name == "text":  # styles in fixed proportions, order shuffled per seed
            text = _TextStyles(rng)
            styles = np.repeat(np.arange(4), split_counts(nseg, np.array([0.40, 0.25, 0.20, 0.15])))
            rng.shuffle(styles)
            return np.concatenate([text.segment(rng, int(s)) for s in styles])
        if name == "code":
            code = _CodeStyles()
            styles = np.repeat(np.arange(3), split_counts(nseg, np.array([0.45, 0.35, 0.20])))
            rng.shuffle(styles)
            return np.concatenate([code.segment(rng, int(s)) for s in styles])
        if name == "heap":  # 40 % sparse segments (mostly free slots), 60 % dense
            sparse = int(nseg * 0.4)
            density = np.concatenate([rng.uniform(0.02, 0.3, sparse), rng.uniform(0.3, 1.0, nseg - sparse)])
            rng.shuffle(density)
            return np.concatenate([_heap_segment(rng, float(d)) for d in density])
        raise ValueError(f"page class {name} has no pool")


def write_pages(
    pages2d: np.ndarray, index: np.ndarray, classes: np.ndarray, pools: Pools, rng: np.random.Generator
) -> None:
    """Write fresh content of class ``classes[i]`` into page ``index[i]`` (index sorted)."""
    page_size = pages2d.shape[1]
    chunk = max(1, _CHUNK_BYTES // page_size)
    for cls in range(len(CLASSES)):
        idx = index[classes == cls]
        if idx.size == 0:
            continue
        if cls == 0:
            pages2d[idx] = 0
            continue
        if cls == 1:
            values = _SAME_BYTES[rng.choice(len(_SAME_BYTES), size=idx.size, p=_SAME_BYTE_P)]
            for s in range(0, idx.size, chunk):
                pages2d[idx[s : s + chunk]] = values[s : s + chunk, None]
            continue
        pool = pools.pool(cls)
        # Windows start on 8-byte boundaries (structs stay aligned in a page).
        windows = np.lib.stride_tricks.as_strided(
            pool, shape=((pool.size - page_size) // 8 + 1, page_size), strides=(8, 1), writeable=False
        )
        starts = rng.integers(0, windows.shape[0], idx.size)
        for s in range(0, idx.size, chunk):
            pages2d[idx[s : s + chunk]] = windows[starts[s : s + chunk]]
        # A few random byte edits per page so no two pages are identical.
        edits = max(2, page_size // 1024)
        rows = np.repeat(idx, edits)
        cols = rng.integers(0, page_size, rows.size)
        vals = rng.integers(1, 256, rows.size, dtype=np.uint8)
        pages2d[rows, cols] = vals


