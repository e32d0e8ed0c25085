/*
 * rawloop.c: the codec in a plain loop, no job array, no work queue, no
 * packet (see rawloop.h).
 */
#include <stdint.h>
#include <stdlib.h>

#include "status.h"
#include "pagecodec.h"
#include "deflate_backend.h"
#include "rawloop.h"

int mfd_raw_compress_pages(int setting, const uint8_t *block, uint64_t block_len,
                           uint32_t page_size, const uint64_t *pages, uint32_t n,
                           uint64_t *out_bytes)
{
    if (!out_bytes || page_size < 2 || (n > 0 && (!block || !pages)))
        return MFD_E_PARAM;
    if (setting != MFD_SETTING_FAST && setting != MFD_SETTING_BALANCED)
        return MFD_E_PARAM;
    *out_bytes = 0;
    uint64_t npages = block_len / page_size;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= npages)
            return MFD_E_PAGE_RANGE;
    mfd_deflater *d = mfd_deflater_new(setting, 12);
    uint8_t *scratch = malloc(page_size);
    int status = d && scratch ? MFD_OK : MFD_E_NOMEM;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n && status == MFD_OK; i++) {
        uint32_t len = 0;
        int st = mfd_deflater_page(d, block + pages[i] * page_size, page_size,
                                   scratch, page_size - 1, &len);
        if (st == MFD_OK)
            total += len;
        else if (st == MFD_MORE_OUTPUT)
            total += page_size;
        else
            status = st;
    }
    free(scratch);
    mfd_deflater_free(d);
    *out_bytes = total;
    return status;
}
