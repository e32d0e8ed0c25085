/*
 * inflate_isal.c: the decompress half of deflate_backend.h on ISA-L's
 * igzip (when libdeflate is not there).
 */
#include <isa-l.h>

#include "deflate_backend.h"
#include "status.h"

struct mfd_inflater {
    struct inflate_state isal;
};

const char *mfd_inflater_library(void)
{
    return "isal " MFD_STR(ISAL_MAJOR_VERSION) "." MFD_STR(ISAL_MINOR_VERSION);
}

const size_t mfd_library_inflater_size = sizeof(mfd_inflater);

int mfd_library_inflater_init(mfd_inflater *f)
{
    isal_inflate_init(&f->isal);
    return 1;
}

void mfd_library_inflater_fini(mfd_inflater *f)
{
    (void)f;                        /* igzip allocated nothing */
}

int mfd_library_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    struct inflate_state *s = &f->isal;
    isal_inflate_reset(s);
    s->crc_flag = ISAL_DEFLATE;
    s->hist_bits = 0;               /* accept any window up to 32 KiB */
    s->next_in = (uint8_t *)in;     /* igzip only reads it */
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = page_size;
    int ret = isal_inflate_stateless(s);
    *produced = s->total_out;
    if (ret == ISAL_DECOMP_OK) {
        if (s->total_out != page_size)
            return MFD_E_INFLATE_SIZE;
        if (s->avail_in != 0)
            return MFD_E_TRAILING;
        return MFD_OK;
    }
    if (ret == ISAL_OUT_OVERFLOW)
        return MFD_E_INFLATE_SIZE;
    return MFD_E_INFLATE;           /* ISAL_END_INPUT (truncated), bad data */
}
