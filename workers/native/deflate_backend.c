/*
 * deflate_backend.c: the allocation and the argument checks of
 * deflate_backend.h, once for whichever deflate_<library>.c and
 * inflate_<library>.c the build chose.
 */
#include <stddef.h>
#include <stdlib.h>

#include "deflate_backend.h"
#include "status.h"

mfd_deflater *mfd_deflater_new(int setting, int window_bits)
{
    if (setting != MFD_BACKEND_FAST && setting != MFD_BACKEND_BALANCED)
        return NULL;
    if (window_bits < 9 || window_bits > 15)
        return NULL;
    mfd_deflater *d = calloc(1, mfd_library_deflater_size);
    if (d && !mfd_library_deflater_init(d, setting, window_bits)) {
        free(d);
        return NULL;
    }
    return d;
}

void mfd_deflater_free(mfd_deflater *d)
{
    if (!d)
        return;
    mfd_library_deflater_fini(d);
    free(d);
}

int mfd_deflater_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (!d || !in || !out || !out_len || in_len == 0 || cap == 0)
        return MFD_E_PARAM;
    *out_len = 0;
    return mfd_library_deflate_page(d, in, in_len, out, cap, out_len);
}

mfd_inflater *mfd_inflater_new(void)
{
    mfd_inflater *f = calloc(1, mfd_library_inflater_size);
    if (f && !mfd_library_inflater_init(f)) {
        free(f);
        return NULL;
    }
    return f;
}

void mfd_inflater_free(mfd_inflater *f)
{
    if (!f)
        return;
    mfd_library_inflater_fini(f);
    free(f);
}

int mfd_inflater_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    uint32_t scratch;
    if (!produced)
        produced = &scratch;
    *produced = 0;
    if (!f || !in || !out || in_len == 0 || page_size == 0)
        return MFD_E_PARAM;
    return mfd_library_inflate_page(f, in, in_len, out, page_size, produced);
}
