/*
 * strict_inflate.c: raw DEFLATE decoded straight from RFC 1951 with IAA's
 * 4 KiB history (see strict_inflate.h).
 *
 * zlib's inflate checks a distance only against its window *and* the
 * output of the current call, so with one call per page it accepts
 * distances up to the page size whatever windowBits says.  This decoder
 * refuses every distance beyond MFD_STRICT_HISTORY, as IAA does (QPL
 * status 217).  It favours plain code over speed: the emulated device
 * uses it only for pages larger than the history.
 */
#include <stdint.h>
#include <string.h>

#include "status.h"
#include "strict_inflate.h"

struct bitin {
    const uint8_t *in;
    uint32_t len, pos;          /* bytes */
    uint64_t buf;
    uint32_t cnt;               /* bits in buf */
};

struct huff {
    uint16_t count[16];         /* codes of each length */
    uint16_t symbol[320];       /* symbols in canonical order */
};

static int bits(struct bitin *b, uint32_t n, uint32_t *v)
{
    while (b->cnt < n) {
        if (b->pos == b->len)
            return 0;
        b->buf |= (uint64_t)b->in[b->pos++] << b->cnt;
        b->cnt += 8;
    }
    *v = (uint32_t)(b->buf & ((1ull << n) - 1));
    b->buf >>= n;
    b->cnt -= n;
    return 1;
}

/* canonical Huffman code of n symbols; 0 if over-subscribed */
static int huff_build(struct huff *h, const uint8_t *lengths, uint32_t n)
{
    uint16_t offs[16];
    memset(h->count, 0, sizeof h->count);
    for (uint32_t s = 0; s < n; s++)
        h->count[lengths[s]]++;
    int left = 1;
    for (int len = 1; len < 16; len++) {
        left = 2 * left - h->count[len];
        if (left < 0)
            return 0;
    }
    offs[1] = 0;
    for (int len = 1; len < 15; len++)
        offs[len + 1] = offs[len] + h->count[len];
    for (uint32_t s = 0; s < n; s++)
        if (lengths[s])
            h->symbol[offs[lengths[s]]++] = (uint16_t)s;
    return 1;
}

/* the next symbol, or -1 (input ended or no such code) */
static int huff_decode(struct bitin *b, const struct huff *h)
{
    int code = 0, first = 0, index = 0;
    for (int len = 1; len < 16; len++) {
        uint32_t bit;
        if (!bits(b, 1, &bit))
            return -1;
        code |= (int)bit;
        int count = h->count[len];
        if (code - first < count)
            return h->symbol[index + (code - first)];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

static const uint16_t LEN_BASE[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                      35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                      3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t DIST_BASE[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                                       257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
                                       8193, 12289, 16385, 24577};
static const uint8_t DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                       7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* literals and matches of one Huffman block into out[*pos..cap) */
static int inflate_codes(struct bitin *b, const struct huff *lit, const struct huff *dist,
                         uint8_t *out, uint32_t cap, uint32_t *pos)
{
    for (;;) {
        int sym = huff_decode(b, lit);
        if (sym < 0)
            return MFD_E_INFLATE;
        if (sym < 256) {
            if (*pos == cap)
                return MFD_MORE_OUTPUT;
            out[(*pos)++] = (uint8_t)sym;
            continue;
        }
        if (sym == 256)
            return MFD_OK;
        sym -= 257;
        uint32_t extra, len, d;
        if (sym >= 29 || !bits(b, LEN_EXTRA[sym], &extra))
            return MFD_E_INFLATE;
        len = LEN_BASE[sym] + extra;
        int dsym = huff_decode(b, dist);
        if (dsym < 0 || dsym >= 30 || !bits(b, DIST_EXTRA[dsym], &extra))
            return MFD_E_INFLATE;
        d = DIST_BASE[dsym] + extra;
        if (d > MFD_STRICT_HISTORY || d > *pos)
            return MFD_E_INFLATE;   /* beyond the history, or before the page */
        if (len > cap - *pos)
            return MFD_MORE_OUTPUT;
        for (uint32_t k = 0; k < len; k++, (*pos)++)
            out[*pos] = out[*pos - d];
    }
}

static int inflate_stored(struct bitin *b, uint8_t *out, uint32_t cap, uint32_t *pos)
{
    b->buf = 0;                     /* skip to a byte boundary */
    b->cnt = 0;
    if (b->len - b->pos < 4)
        return MFD_E_INFLATE;
    const uint8_t *p = b->in + b->pos;
    uint32_t len = p[0] | (uint32_t)p[1] << 8, nlen = p[2] | (uint32_t)p[3] << 8;
    b->pos += 4;
    if (len != (~nlen & 0xffffu) || len > b->len - b->pos)
        return MFD_E_INFLATE;
    if (len > cap - *pos)
        return MFD_MORE_OUTPUT;
    memcpy(out + *pos, b->in + b->pos, len);
    b->pos += len;
    *pos += len;
    return MFD_OK;
}

static int dynamic_tables(struct bitin *b, struct huff *lit, struct huff *dist)
{
    static const uint8_t ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t lengths[320] = {0};
    uint32_t nlen, ndist, ncode, v;
    if (!bits(b, 5, &nlen) || !bits(b, 5, &ndist) || !bits(b, 4, &ncode))
        return 0;
    nlen += 257;
    ndist += 1;
    ncode += 4;
    if (nlen > 286 || ndist > 30)
        return 0;
    for (uint32_t i = 0; i < ncode; i++) {
        if (!bits(b, 3, &v))
            return 0;
        lengths[ORDER[i]] = (uint8_t)v;
    }
    struct huff lencode;
    if (!huff_build(&lencode, lengths, 19))
        return 0;
    memset(lengths, 0, sizeof lengths);
    for (uint32_t i = 0; i < nlen + ndist;) {
        int sym = huff_decode(b, &lencode);
        if (sym < 0)
            return 0;
        if (sym < 16) {
            lengths[i++] = (uint8_t)sym;
            continue;
        }
        uint32_t repeat, value = 0;
        if (sym == 16) {
            if (i == 0 || !bits(b, 2, &repeat))
                return 0;
            value = lengths[i - 1];
            repeat += 3;
        } else if (sym == 17) {
            if (!bits(b, 3, &repeat))
                return 0;
            repeat += 3;
        } else {
            if (!bits(b, 7, &repeat))
                return 0;
            repeat += 11;
        }
        if (i + repeat > nlen + ndist)
            return 0;
        while (repeat--)
            lengths[i++] = (uint8_t)value;
    }
    if (lengths[256] == 0)
        return 0;                   /* no end-of-block code */
    return huff_build(lit, lengths, nlen) && huff_build(dist, lengths + nlen, ndist);
}

static void fixed_tables(struct huff *lit, struct huff *dist)
{
    uint8_t lengths[320];
    uint32_t s = 0;
    for (; s < 144; s++) lengths[s] = 8;
    for (; s < 256; s++) lengths[s] = 9;
    for (; s < 280; s++) lengths[s] = 7;
    for (; s < 288; s++) lengths[s] = 8;
    huff_build(lit, lengths, 288);
    for (s = 0; s < 30; s++) lengths[s] = 5;
    huff_build(dist, lengths, 30);
}

int mfd_strict_inflate(const uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t cap,
                       uint32_t *out_len)
{
    if (!in || !out || !out_len)
        return MFD_E_PARAM;
    struct bitin b = { in, in_len, 0, 0, 0 };
    struct huff lit, dist;
    uint32_t pos = 0, last = 0, type;
    int status = MFD_OK;
    while (status == MFD_OK && !last) {
        if (!bits(&b, 1, &last) || !bits(&b, 2, &type))
            status = MFD_E_INFLATE;
        else if (type == 0)
            status = inflate_stored(&b, out, cap, &pos);
        else if (type == 1) {
            fixed_tables(&lit, &dist);
            status = inflate_codes(&b, &lit, &dist, out, cap, &pos);
        } else if (type == 2 && dynamic_tables(&b, &lit, &dist))
            status = inflate_codes(&b, &lit, &dist, out, cap, &pos);
        else
            status = MFD_E_INFLATE;
    }
    *out_len = pos;
    if (status == MFD_OK && b.pos != b.len)
        status = MFD_E_TRAILING;    /* whole bytes left after the final block */
    return status;
}
