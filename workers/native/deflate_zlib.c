/*
 * deflate_zlib.c: the compress half of deflate_backend.h on zlib, the
 * floor every build has.
 */
#include <stdlib.h>

#include "zlib_raw.h"

struct mfd_deflater {
    z_stream z;
};

const char *mfd_deflater_library(void)
{
    return "zlib " ZLIB_VERSION;
}

mfd_deflater *mfd_library_deflater_new(int setting, int window_bits)
{
    mfd_deflater *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (!zlib_raw_deflate_init(&d->z, setting, window_bits)) {
        free(d);
        return NULL;
    }
    return d;
}

void mfd_deflater_free(mfd_deflater *d)
{
    if (!d)
        return;
    deflateEnd(&d->z);
    free(d);
}

int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    return zlib_raw_deflate_page(&d->z, in, in_len, out, cap, out_len);
}
