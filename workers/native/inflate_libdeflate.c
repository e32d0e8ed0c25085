/*
 * inflate_libdeflate.c: the decompress half of deflate_backend.h on
 * libdeflate, the fastest decoder measured.
 */
#include <stdlib.h>

#include <libdeflate.h>

#include "deflate_backend.h"
#include "status.h"

struct mfd_inflater {
    struct libdeflate_decompressor *ld;
};

const char *mfd_inflater_library(void)
{
    return "libdeflate " LIBDEFLATE_VERSION_STRING;
}

mfd_inflater *mfd_inflater_new(void)
{
    mfd_inflater *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->ld = libdeflate_alloc_decompressor();
    if (!f->ld) {
        free(f);
        return NULL;
    }
    return f;
}

void mfd_inflater_free(mfd_inflater *f)
{
    if (!f)
        return;
    libdeflate_free_decompressor(f->ld);
    free(f);
}

int mfd_library_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
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
