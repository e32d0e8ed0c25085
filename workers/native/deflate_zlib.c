/*
 * deflate_zlib.c: the compress half of deflate_backend.h on zlib, the
 * floor every build has.
 */
#include "zlib_raw.h"

struct mfd_deflater {
    z_stream z;
};

const char *mfd_deflater_library(void)
{
    return "zlib " ZLIB_VERSION;
}

const size_t mfd_library_deflater_size = sizeof(mfd_deflater);

int mfd_library_deflater_init(mfd_deflater *d, int setting, int window_bits)
{
    return zlib_raw_deflate_init(&d->z, setting, window_bits);
}

void mfd_library_deflater_fini(mfd_deflater *d)
{
    deflateEnd(&d->z);
}

int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    return zlib_raw_deflate_page(&d->z, in, in_len, out, cap, out_len);
}
