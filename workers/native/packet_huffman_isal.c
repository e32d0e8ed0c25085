/*
 * packet_huffman_isal.c: one Huffman code per packet (see packet_huffman.h).
 *
 * Measured on the real wl3 guest (bench/README.md, bench/codec_settings.py):
 * a code fitted to each page (ISA-L level 1) spends about half its time
 * building that code; one code per 128-page packet costs a fraction of a
 * microsecond per page and keeps most of the ratio, since neighbouring
 * guest pages are alike.  The histogram, not the build, is then the main
 * extra cost over static codes, so only every SAMPLE-th page feeds it:
 * isal_create_hufftables gives every literal, length and distance a code,
 * so a page outside the sample still encodes (only less tightly).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "packet_huffman.h"
#include "status.h"         /* MFD_* status codes */

#include <isa-l.h>

/* 1 page in 4: +0.4 % bytes on wl3 for a histogram a quarter the cost */
#define PACKET_HUFFMAN_SAMPLE 4

struct mfd_packet_huffman {
    int window_bits;
    int built;                      /* table matches the current packet */
    const uint8_t *block;           /* current packet, or NULL */
    const uint64_t *pages;
    uint32_t page_size;
    uint32_t n;
    struct isal_zstream stream;
    struct isal_huff_histogram histogram;
    struct isal_hufftables table;
};

int mfd_packet_huffman_available(void)
{
    return 1;
}

mfd_packet_huffman *mfd_packet_huffman_new(int window_bits)
{
    if (window_bits < 9 || window_bits > 15)
        return NULL;
    mfd_packet_huffman *ph = calloc(1, sizeof *ph);
    if (ph)
        ph->window_bits = window_bits;
    return ph;
}

void mfd_packet_huffman_free(mfd_packet_huffman *ph)
{
    free(ph);
}

void mfd_packet_huffman_begin(mfd_packet_huffman *ph, const uint8_t *block,
                              uint32_t page_size, const uint64_t *pages, uint32_t n)
{
    if (!ph)
        return;
    ph->block = block;
    ph->page_size = page_size;
    ph->pages = pages;
    ph->n = block && pages ? n : 0;
    ph->built = 0;
}

void mfd_packet_huffman_end(mfd_packet_huffman *ph)
{
    if (ph)
        mfd_packet_huffman_begin(ph, NULL, 0, NULL, 0);
}

/* the code of the current packet, or of `in` alone outside a packet */
static int build_table(mfd_packet_huffman *ph, const uint8_t *in, uint32_t in_len)
{
    memset(&ph->histogram, 0, sizeof ph->histogram);
    if (ph->n == 0) {
        isal_update_histogram((uint8_t *)in, (int)in_len, &ph->histogram);
    } else {
        for (uint32_t i = 0; i < ph->n; i += PACKET_HUFFMAN_SAMPLE)
            isal_update_histogram((uint8_t *)ph->block + ph->pages[i] * ph->page_size,
                                  (int)ph->page_size, &ph->histogram);
    }
    if (isal_create_hufftables(&ph->table, &ph->histogram) != 0)
        return MFD_E_DEFLATE;
    ph->built = ph->n != 0;         /* a lone page's code is not kept */
    return MFD_OK;
}

int mfd_packet_huffman_page(mfd_packet_huffman *ph, const uint8_t *in, uint32_t in_len,
                            uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (!ph || !in || !out || !out_len || in_len == 0 || cap == 0 || in_len > INT32_MAX)
        return MFD_E_PARAM;
    *out_len = 0;
    if (!ph->built) {
        int st = build_table(ph, in, in_len);
        if (st != MFD_OK)
            return st;
    }
    struct isal_zstream *s = &ph->stream;
    isal_deflate_stateless_init(s);
    s->gzip_flag = IGZIP_DEFLATE;               /* raw: no header, no trailer */
    s->hist_bits = (uint16_t)ph->window_bits;   /* IAA's receiver: 4 KiB window */
    s->end_of_stream = 1;
    s->flush = NO_FLUSH;
    s->level = 0;
    if (isal_deflate_set_hufftables(s, &ph->table, IGZIP_HUFFTABLE_CUSTOM) != COMP_OK)
        return MFD_E_DEFLATE;
    s->next_in = (uint8_t *)in;                 /* igzip only reads it */
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = cap;
    int ret = isal_deflate_stateless(s);
    if (ret == COMP_OK) {
        if (s->avail_in != 0 || s->total_out > cap)
            return MFD_E_DEFLATE;
        *out_len = s->total_out;
        return MFD_OK;
    }
    if (ret == STATELESS_OVERFLOW)
        return MFD_MORE_OUTPUT;
    return MFD_E_DEFLATE;
}
