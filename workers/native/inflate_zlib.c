/*
 * inflate_zlib.c: the decompress half of deflate_backend.h on zlib, the
 * floor every build has.
 */
#define ZLIB_CONST

#include <stdlib.h>
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

mfd_inflater *mfd_inflater_new(void)
{
    mfd_inflater *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    /* the receiver reads any raw-DEFLATE page, whatever window made it */
    if (inflateInit2(&f->z, -15) != Z_OK) {
        free(f);
        return NULL;
    }
    return f;
}

void mfd_inflater_free(mfd_inflater *f)
{
    if (!f)
        return;
    inflateEnd(&f->z);
    free(f);
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
