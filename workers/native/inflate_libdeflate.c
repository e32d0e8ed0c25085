/*
 * inflate_libdeflate.c: the decompress half of deflate_backend.h on
 * libdeflate, the fastest decoder measured.
 */
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

const size_t mfd_library_inflater_size = sizeof(mfd_inflater);

int mfd_library_inflater_init(mfd_inflater *f)
{
    f->ld = libdeflate_alloc_decompressor();
    return f->ld != NULL;
}

void mfd_library_inflater_fini(mfd_inflater *f)
{
    libdeflate_free_decompressor(f->ld);
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
