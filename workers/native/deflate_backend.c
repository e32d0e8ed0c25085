/*
 * deflate_backend.c: per-page raw DEFLATE on the fastest library the build
 * found (see deflate_backend.h and build_native.py).
 *
 * Every page is its own stream, as QEMU's multifd-qpl sends it, so the
 * cost that matters is per stream: all state is allocated once per
 * deflater/inflater and only reset per page; nothing here allocates per
 * page (glibc would hand freed state back to the kernel after each page).
 *
 * Measured on a real guest image (bench/README.md): ISA-L level 1 is ~3x
 * zlib level 1 at about zlib's ratio; libdeflate decodes fastest.
 */
#define ZLIB_CONST

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate_backend.h"
#include "pagecodec.h"      /* MFD_* status codes */

#if defined(MFD_DEFLATE_ISAL) || defined(MFD_INFLATE_ISAL)
#include <isa-l.h>
#endif
#if defined(MFD_DEFLATE_LIBDEFLATE) || defined(MFD_INFLATE_LIBDEFLATE)
#include <libdeflate.h>
#endif

#define STR_(x) #x
#define STR(x) STR_(x)

#if defined(MFD_DEFLATE_ISAL) || defined(MFD_INFLATE_ISAL)
#define ISAL_NAME "isal " STR(ISAL_MAJOR_VERSION) "." STR(ISAL_MINOR_VERSION)
#endif

#if defined(MFD_DEFLATE_ISAL)
#define COMPRESS_NAME ISAL_NAME
#elif defined(MFD_DEFLATE_LIBDEFLATE)
#define COMPRESS_NAME "libdeflate " LIBDEFLATE_VERSION_STRING
#else
#define COMPRESS_NAME "zlib " ZLIB_VERSION
#endif

#if defined(MFD_INFLATE_LIBDEFLATE)
#define INFLATE_NAME "libdeflate " LIBDEFLATE_VERSION_STRING
#elif defined(MFD_INFLATE_ISAL)
#define INFLATE_NAME ISAL_NAME
#else
#define INFLATE_NAME "zlib " ZLIB_VERSION
#endif

const char *mfd_deflate_backend_name(void)
{
    return COMPRESS_NAME " (compress) / " INFLATE_NAME " (decompress)";
}

/* ------------------------------------------------------------------ */
/* zlib: the floor, and the fallback for pages larger than a           */
/* libdeflate window                                                   */

#if !defined(MFD_DEFLATE_ISAL)
static int zlib_deflate_init(z_stream *z, int setting, int window_bits)
{
    /* fast: fixed Huffman codes, as IAA's default; negative bits: raw */
    int strategy = setting == MFD_BACKEND_FAST ? Z_FIXED : Z_DEFAULT_STRATEGY;
    memset(z, 0, sizeof *z);
    return deflateInit2(z, 1, Z_DEFLATED, -window_bits, 8, strategy) == Z_OK;
}

static int zlib_deflate_page(z_stream *z, const uint8_t *in, uint32_t in_len,
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

#if !defined(MFD_INFLATE_LIBDEFLATE) && !defined(MFD_INFLATE_ISAL)
static int zlib_inflate_page(z_stream *z, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    if (inflateReset(z) != Z_OK)
        return MFD_E_INFLATE;
    z->next_in = in;
    z->avail_in = in_len;
    z->next_out = out;
    z->avail_out = page_size;       /* never a byte past the page */
    int ret = inflate(z, Z_FINISH);
    *produced = page_size - z->avail_out;
    switch (ret) {
    case Z_STREAM_END:
        if (z->avail_in != 0)
            return MFD_E_TRAILING;
        if (z->avail_out != 0)
            return MFD_E_INFLATE_SIZE;
        return MFD_OK;
    case Z_OK:
    case Z_BUF_ERROR:
        /* output full before the stream ended: more than one page */
        if (z->avail_out == 0)
            return MFD_E_INFLATE_SIZE;
        return MFD_E_INFLATE;       /* input ended inside the stream */
    case Z_MEM_ERROR:
        return MFD_E_NOMEM;
    default:                        /* Z_DATA_ERROR, Z_NEED_DICT, ... */
        return MFD_E_INFLATE;
    }
}
#endif

/* ------------------------------------------------------------------ */
/* compression                                                         */

struct mfd_deflater {
    int setting;
    int window_bits;
#if defined(MFD_DEFLATE_ISAL)
    struct isal_zstream isal;
    uint8_t *level_buf;
    uint32_t level_buf_size;
#elif defined(MFD_DEFLATE_LIBDEFLATE)
    struct libdeflate_compressor *ld;
    z_stream z;                     /* pages larger than the window */
#else
    z_stream z;
#endif
};

mfd_deflater *mfd_deflater_new(int setting, int window_bits)
{
    if (setting != MFD_BACKEND_FAST && setting != MFD_BACKEND_BALANCED)
        return NULL;
    if (window_bits < 9 || window_bits > 15)
        return NULL;
    mfd_deflater *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->setting = setting;
    d->window_bits = window_bits;
#if defined(MFD_DEFLATE_ISAL)
    if (setting == MFD_BACKEND_BALANCED) {
        d->level_buf_size = ISAL_DEF_LVL1_DEFAULT;
        /*
         * Zeroed, not malloc'd: ISA-L keeps its match hash table here and
         * does not clear all of it per page, so entries no page has written
         * yet would be whatever the allocator left.  The output stays valid
         * either way (matches are checked against the input), but its size
         * would vary run to run for the same pages.
         */
        d->level_buf = calloc(1, d->level_buf_size);
        if (!d->level_buf) {
            free(d);
            return NULL;
        }
    }
#elif defined(MFD_DEFLATE_LIBDEFLATE)
    /* libdeflate has no static-Huffman mode: fast is its level 1 too */
    d->ld = libdeflate_alloc_compressor(1);
    if (!d->ld) {
        free(d);
        return NULL;
    }
    if (!zlib_deflate_init(&d->z, setting, window_bits)) {
        libdeflate_free_compressor(d->ld);
        free(d);
        return NULL;
    }
#else
    if (!zlib_deflate_init(&d->z, setting, window_bits)) {
        free(d);
        return NULL;
    }
#endif
    return d;
}

void mfd_deflater_free(mfd_deflater *d)
{
    if (!d)
        return;
#if defined(MFD_DEFLATE_ISAL)
    free(d->level_buf);
#elif defined(MFD_DEFLATE_LIBDEFLATE)
    libdeflate_free_compressor(d->ld);
    deflateEnd(&d->z);
#else
    deflateEnd(&d->z);
#endif
    free(d);
}

#if defined(MFD_DEFLATE_ISAL)
static int isal_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    struct isal_zstream *s = &d->isal;
    isal_deflate_stateless_init(s);
    s->gzip_flag = IGZIP_DEFLATE;           /* raw: no header, no trailer */
    s->hist_bits = (uint16_t)d->window_bits; /* IAA's receiver: 4 KiB window */
    s->end_of_stream = 1;
    s->flush = NO_FLUSH;
    if (d->setting == MFD_BACKEND_FAST) {
        s->level = 0;
        if (isal_deflate_set_hufftables(s, NULL, IGZIP_HUFFTABLE_STATIC) != COMP_OK)
            return MFD_E_DEFLATE;
    } else {
        s->level = 1;
        s->level_buf = d->level_buf;
        s->level_buf_size = d->level_buf_size;
    }
    s->next_in = (uint8_t *)in;             /* igzip only reads it */
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
#endif

int mfd_deflater_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (!d || !in || !out || !out_len || in_len == 0 || cap == 0)
        return MFD_E_PARAM;
    *out_len = 0;
#if defined(MFD_DEFLATE_ISAL)
    return isal_deflate_page(d, in, in_len, out, cap, out_len);
#elif defined(MFD_DEFLATE_LIBDEFLATE)
    /* its window is 32 KiB: only a page no longer than ours keeps every
     * distance inside the window the receiver may have */
    if (in_len > (1u << d->window_bits))
        return zlib_deflate_page(&d->z, in, in_len, out, cap, out_len);
    size_t n = libdeflate_deflate_compress(d->ld, in, in_len, out, cap);
    if (n == 0)
        return MFD_MORE_OUTPUT;
    *out_len = (uint32_t)n;
    return MFD_OK;
#else
    return zlib_deflate_page(&d->z, in, in_len, out, cap, out_len);
#endif
}

/* ------------------------------------------------------------------ */
/* decompression                                                       */

struct mfd_inflater {
#if defined(MFD_INFLATE_LIBDEFLATE)
    struct libdeflate_decompressor *ld;
#elif defined(MFD_INFLATE_ISAL)
    struct inflate_state isal;
#else
    z_stream z;
#endif
};

mfd_inflater *mfd_inflater_new(void)
{
    mfd_inflater *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
#if defined(MFD_INFLATE_LIBDEFLATE)
    f->ld = libdeflate_alloc_decompressor();
    if (!f->ld) {
        free(f);
        return NULL;
    }
#elif defined(MFD_INFLATE_ISAL)
    isal_inflate_init(&f->isal);
#else
    /* the receiver reads any raw-DEFLATE page, whatever window made it */
    if (inflateInit2(&f->z, -15) != Z_OK) {
        free(f);
        return NULL;
    }
#endif
    return f;
}

void mfd_inflater_free(mfd_inflater *f)
{
    if (!f)
        return;
#if defined(MFD_INFLATE_LIBDEFLATE)
    libdeflate_free_decompressor(f->ld);
#elif defined(MFD_INFLATE_ISAL)
    /* nothing allocated */
#else
    inflateEnd(&f->z);
#endif
    free(f);
}

#if defined(MFD_INFLATE_LIBDEFLATE)
static int libdeflate_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                                   uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    size_t used = 0, made = 0;
    enum libdeflate_result r = libdeflate_deflate_decompress_ex(
        f->ld, in, in_len, out, page_size, &used, &made);
    switch (r) {
    case LIBDEFLATE_SUCCESS:
        *produced = (uint32_t)made;
        if (made != page_size)
            return MFD_E_INFLATE_SIZE;
        if (used != in_len)
            return MFD_E_TRAILING;
        return MFD_OK;
    case LIBDEFLATE_INSUFFICIENT_SPACE:
        *produced = page_size;      /* it may have filled the page */
        return MFD_E_INFLATE_SIZE;
    default:
        /* libdeflate may have written part of the page before failing */
        *produced = page_size;
        return MFD_E_INFLATE;
    }
}
#endif

#if defined(MFD_INFLATE_ISAL) && !defined(MFD_INFLATE_LIBDEFLATE)
static int isal_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    struct inflate_state *s = &f->isal;
    isal_inflate_reset(s);
    s->crc_flag = ISAL_DEFLATE;
    s->hist_bits = 0;               /* accept any window up to 32 KiB */
    s->next_in = (uint8_t *)in;     /* igzip only reads it */
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = page_size;
    int ret = isal_inflate_stateless(s);
    *produced = s->total_out;
    if (ret == ISAL_DECOMP_OK) {
        if (s->total_out != page_size)
            return MFD_E_INFLATE_SIZE;
        if (s->avail_in != 0)
            return MFD_E_TRAILING;
        return MFD_OK;
    }
    if (ret == ISAL_OUT_OVERFLOW)
        return MFD_E_INFLATE_SIZE;
    return MFD_E_INFLATE;           /* ISAL_END_INPUT (truncated), bad data */
}
#endif

int mfd_inflater_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    uint32_t scratch;
    if (!produced)
        produced = &scratch;
    *produced = 0;
    if (!f || !in || !out || in_len == 0 || page_size == 0)
        return MFD_E_PARAM;
#if defined(MFD_INFLATE_LIBDEFLATE)
    return libdeflate_inflate_page(f, in, in_len, out, page_size, produced);
#elif defined(MFD_INFLATE_ISAL)
    return isal_inflate_page(f, in, in_len, out, page_size, produced);
#else
    return zlib_inflate_page(&f->z, in, in_len, out, page_size, produced);
#endif
}
