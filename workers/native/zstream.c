/*
 * zstream.c: the per-channel zlib stream of method `zlib` (see zstream.h).
 *
 * The loops follow QEMU's multifd-zlib send and receive hooks: one deflate
 * call sequence per page, the last page with Z_SYNC_FLUSH; one inflate
 * sequence per page, each into its own destination page.  Our receiver is
 * stricter than QEMU's: it also refuses input left over after the last page.
 */
#define ZLIB_CONST                /* z_stream.next_in is const */

#include <stdint.h>
#include <stdlib.h>
#include <zlib.h>

#include "status.h"
#include "pagecodec.h"
#include "zstream.h"

struct mfd_zstream {
    z_stream zs;
    int deflating;           /* 1: deflate stream, 0: inflate stream */
    int failed;              /* first error status; the stream is unusable after it */
};

const char *mfd_zstream_zlib_version(void)
{
    return zlibVersion();
}

mfd_zstream *mfd_zlib_deflate_new(int level)
{
    if (level < 0 || level > Z_BEST_COMPRESSION)
        return NULL;
    mfd_zstream *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    /* zlib wrapper (windowBits 15), memLevel 8, as QEMU's deflateInit(level) */
    if (deflateInit2(&z->zs, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    z->deflating = 1;
    return z;
}

mfd_zstream *mfd_zlib_inflate_new(void)
{
    mfd_zstream *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    if (inflateInit2(&z->zs, 15) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

void mfd_zstream_free(mfd_zstream *z)
{
    if (!z)
        return;
    if (z->deflating)
        deflateEnd(&z->zs);
    else
        inflateEnd(&z->zs);
    free(z);
}

static int fail(mfd_zstream *z, int status)
{
    z->failed = status;
    return status;
}

static int pages_in_block(uint64_t block_len, uint32_t page_size,
                          const uint64_t *pages, uint32_t n)
{
    uint64_t npages = block_len / page_size;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= npages)
            return 0;
    return 1;
}

int mfd_zlib_send_packet(mfd_zstream *z, const uint8_t *block, uint64_t block_len,
                         uint32_t page_size, const uint64_t *pages, uint32_t normal_num,
                         uint8_t *slot, uint64_t slot_cap, uint64_t *payload_len)
{
    if (!z || !z->deflating || !payload_len || page_size == 0)
        return MFD_E_PARAM;
    *payload_len = 0;
    if (z->failed)
        return z->failed;
    if (normal_num == 0)
        return MFD_OK;
    if (!block || !pages || !slot)
        return MFD_E_PARAM;
    if (!pages_in_block(block_len, page_size, pages, normal_num))
        return MFD_E_PAGE_RANGE;

    z_stream *zs = &z->zs;
    uint64_t cap = slot_cap > UINT32_MAX ? UINT32_MAX : slot_cap;
    zs->next_out = slot;
    zs->avail_out = (uInt)cap;
    for (uint32_t i = 0; i < normal_num; i++) {
        int flush = i + 1 == normal_num ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        int ret;
        zs->next_in = block + pages[i] * page_size;
        zs->avail_in = page_size;
        do {
            ret = deflate(zs, flush);
        } while (ret == Z_OK && zs->avail_in && zs->avail_out);
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            return fail(z, MFD_E_DEFLATE);
        if (zs->avail_in)
            return fail(z, MFD_MORE_OUTPUT);
    }
    /* a sync flush that filled the slot exactly may have more to say */
    if (zs->avail_out == 0)
        return fail(z, MFD_MORE_OUTPUT);
    *payload_len = cap - zs->avail_out;
    return MFD_OK;
}

/* inflate until the page is full, the input is used up, or an error */
static int inflate_page(z_stream *zs, int flush)
{
    int ret;
    do {
        ret = inflate(zs, flush);
    } while (ret == Z_OK && zs->avail_in && zs->avail_out);
    return ret;
}

static int inflate_status(int ret)
{
    switch (ret) {
    case Z_OK:
    case Z_BUF_ERROR:        /* no progress possible: judged by avail_out */
        return MFD_OK;
    case Z_STREAM_END:
        return MFD_E_STREAM_END;
    case Z_MEM_ERROR:
        return MFD_E_NOMEM;
    default:                 /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
        return MFD_E_INFLATE;
    }
}

int mfd_zlib_recv_packet(mfd_zstream *z, const uint8_t *payload, uint64_t payload_len,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *block, uint64_t block_len, uint32_t page_size,
                         uint32_t *bad_page)
{
    if (!z || z->deflating || !bad_page || page_size == 0 || payload_len > UINT32_MAX)
        return MFD_E_PARAM;
    *bad_page = 0;
    if (z->failed)
        return z->failed;
    if (normal_num == 0)
        return payload_len ? MFD_E_TRAILING : MFD_OK;
    if (!pages || !block || (payload_len && !payload))
        return MFD_E_PARAM;
    if (!pages_in_block(block_len, page_size, pages, normal_num))
        return MFD_E_PAGE_RANGE;

    z_stream *zs = &z->zs;
    static const uint8_t no_input;
    zs->next_in = payload_len ? payload : &no_input;
    zs->avail_in = (uInt)payload_len;
    for (uint32_t i = 0; i < normal_num; i++) {
        *bad_page = i;
        zs->next_out = block + pages[i] * page_size;
        zs->avail_out = page_size;
        int status = inflate_status(inflate_page(zs, i + 1 == normal_num ? Z_SYNC_FLUSH : Z_NO_FLUSH));
        if (status != MFD_OK)
            return fail(z, status);
        if (zs->avail_out)
            return fail(z, MFD_E_INFLATE_SIZE);
    }
    *bad_page = normal_num;
    if (zs->avail_in) {
        /* input that makes no output (an empty block) is harmless: consume
         * it with no room for output; anything left after that would have
         * been page data beyond the packet */
        uint8_t none;
        zs->next_out = &none;
        zs->avail_out = 0;
        int status = inflate_status(inflate(zs, Z_SYNC_FLUSH));
        if (status != MFD_OK)
            return fail(z, status);
        if (zs->avail_in)
            return fail(z, MFD_E_TRAILING);
    }
    return MFD_OK;
}
