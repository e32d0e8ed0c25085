/*
 * packet_huffman_none.c: the `packet` setting where the build has no ISA-L
 * (see packet_huffman.h): not available, so the caller compresses `packet`
 * as `balanced`.
 */
#include <stddef.h>
#include <stdint.h>

#include "packet_huffman.h"
#include "status.h"         /* MFD_* status codes */

int mfd_packet_huffman_available(void)
{
    return 0;
}

mfd_packet_huffman *mfd_packet_huffman_new(int window_bits)
{
    (void)window_bits;
    return NULL;
}

void mfd_packet_huffman_free(mfd_packet_huffman *ph)
{
    (void)ph;
}

void mfd_packet_huffman_begin(mfd_packet_huffman *ph, const uint8_t *block,
                              uint32_t page_size, const uint64_t *pages, uint32_t n)
{
    (void)ph; (void)block; (void)page_size; (void)pages; (void)n;
}

void mfd_packet_huffman_end(mfd_packet_huffman *ph)
{
    (void)ph;
}

int mfd_packet_huffman_page(mfd_packet_huffman *ph, const uint8_t *in, uint32_t in_len,
                            uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    (void)ph; (void)in; (void)in_len; (void)out; (void)cap; (void)out_len;
    return MFD_E_PARAM;
}
