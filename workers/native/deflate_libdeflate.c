/*
 * deflate_libdeflate.c: the compress half of deflate_backend.h on
 * libdeflate; zlib for pages larger than the window.
 */
#include <stdlib.h>

#include <libdeflate.h>

#include "zlib_raw.h"

struct mfd_deflater {
    int window_bits;
    struct libdeflate_compressor *ld;
    z_stream z;                     /* pages larger than the window */
};

const char *mfd_deflater_library(void)
{
    return "libdeflate " LIBDEFLATE_VERSION_STRING;
}

mfd_deflater *mfd_library_deflater_new(int setting, int window_bits)
{
    mfd_deflater *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->window_bits = window_bits;
    /* libdeflate has no static-Huffman mode: fast is its level 1 too */
    d->ld = libdeflate_alloc_compressor(1);
    if (!d->ld) {
        free(d);
        return NULL;
    }
    if (!zlib_raw_deflate_init(&d->z, setting, window_bits)) {
        libdeflate_free_compressor(d->ld);
        free(d);
        return NULL;
    }
    return d;
}

void mfd_deflater_free(mfd_deflater *d)
{
    if (!d)
        return;
    libdeflate_free_compressor(d->ld);
    deflateEnd(&d->z);
    free(d);
}

int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    /* its window is 32 KiB: only a page no longer than ours keeps every
     * distance inside the window the receiver may have */
    if (in_len > (1u << d->window_bits))
        return zlib_raw_deflate_page(&d->z, in, in_len, out, cap, out_len);
    size_t n = libdeflate_deflate_compress(d->ld, in, in_len, out, cap);
    if (n == 0)
        return MFD_MORE_OUTPUT;
    *out_len = (uint32_t)n;
    return MFD_OK;
}
