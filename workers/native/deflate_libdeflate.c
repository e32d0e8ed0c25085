/*
 * deflate_libdeflate.c: the compress half of deflate_backend.h on
 * libdeflate; zlib for pages larger than the window.
 */
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

const size_t mfd_library_deflater_size = sizeof(mfd_deflater);

int mfd_library_deflater_init(mfd_deflater *d, int setting, int window_bits)
{
    d->window_bits = window_bits;
    /* libdeflate has no static-Huffman mode: fast is its level 1 too */
    d->ld = libdeflate_alloc_compressor(1);
    if (!d->ld)
        return 0;
    if (!zlib_raw_deflate_init(&d->z, setting, window_bits)) {
        libdeflate_free_compressor(d->ld);
        return 0;
    }
    return 1;
}

void mfd_library_deflater_fini(mfd_deflater *d)
{
    libdeflate_free_compressor(d->ld);
    deflateEnd(&d->z);
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
