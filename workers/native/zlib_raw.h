/*
 * zlib_raw.h: one page into one raw-DEFLATE stream with zlib, for the
 * compressors that use zlib (deflate_zlib.c; deflate_libdeflate.c for pages
 * larger than the window).  Internal: not part of the cffi cdef.
 */
#ifndef MFD_ZLIB_RAW_H
#define MFD_ZLIB_RAW_H

#define ZLIB_CONST

#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "deflate_backend.h"
#include "status.h"

static inline int zlib_raw_deflate_init(z_stream *z, int setting, int window_bits)
{
    /* fast: fixed Huffman codes, as IAA's default; negative bits: raw */
    int strategy = setting == MFD_BACKEND_FAST ? Z_FIXED : Z_DEFAULT_STRATEGY;
    memset(z, 0, sizeof *z);
    return deflateInit2(z, 1, Z_DEFLATED, -window_bits, 8, strategy) == Z_OK;
}

static inline int zlib_raw_deflate_page(z_stream *z, const uint8_t *in, uint32_t in_len,
                                        uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (deflateReset(z) != Z_OK)
        return MFD_E_DEFLATE;
    z->next_in = in;
    z->avail_in = in_len;
    z->next_out = out;
    z->avail_out = cap;
    int ret = deflate(z, Z_FINISH);
    if (ret == Z_STREAM_END) {
        *out_len = cap - z->avail_out;
        return MFD_OK;
    }
    if (ret == Z_OK || ret == Z_BUF_ERROR)
        return MFD_MORE_OUTPUT;
    return MFD_E_DEFLATE;
}

#endif
