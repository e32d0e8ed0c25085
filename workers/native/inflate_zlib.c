/*
 * inflate_zlib.c: the decompress half of deflate_backend.h on zlib, the
 * floor every build has.
 */
#define ZLIB_CONST

#include <zlib.h>

#include "deflate_backend.h"
#include "status.h"

struct mfd_inflater {
    z_stream z;
};

const char *mfd_inflater_library(void)
{
    return "zlib " ZLIB_VERSION;
}

const size_t mfd_library_inflater_size = sizeof(mfd_inflater);

int mfd_library_inflater_init(mfd_inflater *f)
{
    /* the receiver reads any raw-DEFLATE page, whatever window made it */
    return inflateInit2(&f->z, -15) == Z_OK;
}

void mfd_library_inflater_fini(mfd_inflater *f)
{
    inflateEnd(&f->z);
}

int mfd_library_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    z_stream *z = &f->z;
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
