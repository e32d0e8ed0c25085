/*
 * deflate_backend: the raw-DEFLATE library behind the software path.
 *
 * One page in, one complete raw-DEFLATE stream out (and back).  Which
 * library runs is fixed at build time, per direction: build_native.py
 * compiles exactly one deflate_<library>.c (isal, libdeflate, zlib) and
 * one inflate_<library>.c, each implementing its half of the library
 * section below; deflate_backend.c checks the arguments for all of them.
 *
 * Every page is its own stream, as QEMU's multifd-qpl sends it, so the
 * cost that matters is per stream: all state is allocated once per
 * deflater/inflater and only reset per page; nothing allocates per page
 * (glibc would hand freed state back to the kernel after each page).
 * Measured on a real guest image (bench/README.md): ISA-L level 1 is ~3x
 * zlib level 1 at about zlib's ratio; libdeflate decodes fastest.
 *
 * Internal to the native layer: not part of the cffi cdef (pagecodec.h is).
 */
#ifndef MFD_DEFLATE_BACKEND_H
#define MFD_DEFLATE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* compression settings; the values are MFD_SETTING_* of pagecodec.h */
#define MFD_BACKEND_FAST     0   /* static Huffman codes where the library has them */
#define MFD_BACKEND_BALANCED 1   /* level 1: a Huffman code fitted to each page */

#define MFD_STR_(x) #x
#define MFD_STR(x) MFD_STR_(x)

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

/* each direction's library and version, e.g. "isal 2.30", "libdeflate 1.14" */
const char *mfd_deflater_library(void);
const char *mfd_inflater_library(void);

/*
 * What each library file implements.  deflate_backend.c allocates the
 * state (zeroed, of the library's size) and frees it, and calls these with
 * checked arguments only: a setting of MFD_BACKEND_*, window_bits 9..15,
 * non-NULL buffers, in_len, cap and page_size above 0; *out_len and
 * *produced start at 0.  An init that fails (0) has released what it took.
 */
extern const size_t mfd_library_deflater_size;
int mfd_library_deflater_init(mfd_deflater *d, int setting, int window_bits);
void mfd_library_deflater_fini(mfd_deflater *d);
int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len);

extern const size_t mfd_library_inflater_size;
int mfd_library_inflater_init(mfd_inflater *f);
void mfd_library_inflater_fini(mfd_inflater *f);
int mfd_library_inflate_page(mfd_inflater *f, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t page_size, uint32_t *produced);

#endif
