/*
 * deflate_isal.c: the compress half of deflate_backend.h on ISA-L's igzip.
 */
#include <stdlib.h>

#include <isa-l.h>

#include "deflate_backend.h"
#include "status.h"

struct mfd_deflater {
    int setting;
    int window_bits;
    struct isal_zstream isal;
    uint8_t *level_buf;
    uint32_t level_buf_size;
};

const char *mfd_deflater_library(void)
{
    return "isal " MFD_STR(ISAL_MAJOR_VERSION) "." MFD_STR(ISAL_MINOR_VERSION);
}

const size_t mfd_library_deflater_size = sizeof(mfd_deflater);

int mfd_library_deflater_init(mfd_deflater *d, int setting, int window_bits)
{
    d->setting = setting;
    d->window_bits = window_bits;
    if (setting == MFD_BACKEND_BALANCED) {
        d->level_buf_size = ISAL_DEF_LVL1_DEFAULT;
        d->level_buf = malloc(d->level_buf_size);
        return d->level_buf != NULL;
    }
    return 1;
}

void mfd_library_deflater_fini(mfd_deflater *d)
{
    free(d->level_buf);
}

int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    struct isal_zstream *s = &d->isal;
    isal_deflate_stateless_init(s);
    s->gzip_flag = IGZIP_DEFLATE;           /* raw: no header, no trailer */
    s->hist_bits = (uint16_t)d->window_bits; /* IAA's receiver: 4 KiB window */
    s->end_of_stream = 1;
    s->flush = NO_FLUSH;
    if (d->setting == MFD_BACKEND_FAST) {
        s->level = 0;
        if (isal_deflate_set_hufftables(s, NULL, IGZIP_HUFFTABLE_STATIC) != COMP_OK)
            return MFD_E_DEFLATE;
    } else {
        s->level = 1;
        s->level_buf = d->level_buf;
        s->level_buf_size = d->level_buf_size;
    }
    s->next_in = (uint8_t *)in;             /* igzip only reads it */
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = cap;
    int ret = isal_deflate_stateless(s);
    if (ret == COMP_OK) {
        if (s->avail_in != 0 || s->total_out > cap)
            return MFD_E_DEFLATE;
        *out_len = s->total_out;
        return MFD_OK;
    }
    if (ret == STATELESS_OVERFLOW)
        return MFD_MORE_OUTPUT;
    return MFD_E_DEFLATE;
}
