/*
 * deflate_backend.c: the argument checks of deflate_backend.h, once for
 * whichever deflate_<library>.c and inflate_<library>.c the build chose.
 */
#include <stddef.h>

#include "deflate_backend.h"
#include "status.h"

mfd_deflater *mfd_deflater_new(int setting, int window_bits)
{
    if (setting != MFD_BACKEND_FAST && setting != MFD_BACKEND_BALANCED)
        return NULL;
    if (window_bits < 9 || window_bits > 15)
        return NULL;
    return mfd_library_deflater_new(setting, window_bits);
}

int mfd_deflater_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (!d || !in || !out || !out_len || in_len == 0 || cap == 0)
        return MFD_E_PARAM;
    *out_len = 0;
    return mfd_library_deflate_page(d, in, in_len, out, cap, out_len);
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
