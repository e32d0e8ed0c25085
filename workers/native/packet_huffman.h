/*
 * packet_huffman: one dynamic Huffman code per packet (ISA-L's igzip).
 *
 * The `packet` compression setting.  A histogram over the packet's pages
 * (every PACKET_HUFFMAN_SAMPLE-th page) gives one Huffman code; every page
 * is then compressed on its own at ISA-L level 0 with that code, so each
 * page is still a complete raw-DEFLATE stream with its own dynamic header,
 * independently decodable, as the qpl wire format demands.  The code is
 * built lazily, on the first page compressed after mfd_packet_huffman_begin,
 * so a fallback queue that never runs pays nothing.
 *
 * Needs ISA-L: the build compiles packet_huffman_isal.c when it compresses
 * with ISA-L, else packet_huffman_none.c, where mfd_packet_huffman_available()
 * is 0 and the caller compresses as `balanced`.  Internal to the native
 * layer: not part of the cffi cdef.
 */
#ifndef MFD_PACKET_HUFFMAN_H
#define MFD_PACKET_HUFFMAN_H

#include <stdint.h>

typedef struct mfd_packet_huffman mfd_packet_huffman;

/* 1 when this build has ISA-L, which the setting needs */
int mfd_packet_huffman_available(void);

/* NULL without ISA-L, on a window outside 9..15, or without memory */
mfd_packet_huffman *mfd_packet_huffman_new(int window_bits);
void mfd_packet_huffman_free(mfd_packet_huffman *ph);

/*
 * The pages the next compressions belong to (indices already checked
 * against the block).  The pointers are kept until mfd_packet_huffman_end:
 * both must bracket one packet's compressions.
 */
void mfd_packet_huffman_begin(mfd_packet_huffman *ph, const uint8_t *block,
                              uint32_t page_size, const uint64_t *pages, uint32_t n);
/* forget the packet: a page compressed after this gets a code of its own */
void mfd_packet_huffman_end(mfd_packet_huffman *ph);

/*
 * One raw-DEFLATE stream of in[0..in_len) into out[0..cap) with the
 * packet's code (built now if it is not yet), every match distance
 * <= 1 << window_bits.  MFD_OK, MFD_MORE_OUTPUT or MFD_E_DEFLATE.
 */
int mfd_packet_huffman_page(mfd_packet_huffman *ph, const uint8_t *in, uint32_t in_len,
                            uint8_t *out, uint32_t cap, uint32_t *out_len);

#endif
