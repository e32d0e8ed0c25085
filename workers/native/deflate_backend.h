/*
 * deflate_backend: the raw-DEFLATE library behind the software path.
 *
 * One page in, one complete raw-DEFLATE stream out (and back).  Which
 * library runs is fixed at build time, per direction, by the macros
 * build_native.py defines:
 *
 *   MFD_DEFLATE_ISAL        compress with ISA-L's igzip
 *   MFD_DEFLATE_LIBDEFLATE  compress with libdeflate (pages <= the window)
 *   MFD_INFLATE_LIBDEFLATE  decompress with libdeflate
 *   MFD_INFLATE_ISAL        decompress with ISA-L's igzip
 *
 * and zlib, always linked, for everything else.  Internal to the native
 * layer: not part of the cffi cdef (pagecodec.h is).
 */
#ifndef MFD_DEFLATE_BACKEND_H
#define MFD_DEFLATE_BACKEND_H

#include <stdint.h>

/* compression settings; the values are MFD_SETTING_* of pagecodec.h */
#define MFD_BACKEND_FAST     0   /* static Huffman codes where the library has them */
#define MFD_BACKEND_BALANCED 1   /* level 1: a Huffman code fitted to each page */

typedef struct mfd_deflater mfd_deflater;
typedef struct mfd_inflater mfd_inflater;

/* NULL on a bad setting, a window outside 9..15, or no memory */
mfd_deflater *mfd_deflater_new(int setting, int window_bits);
void mfd_deflater_free(mfd_deflater *d);

/*
 * One raw-DEFLATE stream of in[0..in_len) into out[0..cap), every match
 * distance <= 1 << window_bits.  MFD_OK, MFD_MORE_OUTPUT (did not fit) or
 * MFD_E_DEFLATE.  Allocates nothing.
 */
int mfd_deflater_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t cap, uint32_t *out_len);

mfd_inflater *mfd_inflater_new(void);
void mfd_inflater_free(mfd_inflater *f);

/*
 * Inflate one page stream into out[0..page_size).  MFD_OK only if the
 * stream ends, every input byte is used and exactly page_size bytes come
 * out; else MFD_E_INFLATE, MFD_E_INFLATE_SIZE, MFD_E_TRAILING or
 * MFD_E_NOMEM.  *produced: bytes written (never more than page_size).
 */
int mfd_inflater_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t page_size, uint32_t *produced);

/* e.g. "isal 2.30 (compress) / libdeflate 1.14 (decompress)" */
const char *mfd_deflate_backend_name(void);

#endif
