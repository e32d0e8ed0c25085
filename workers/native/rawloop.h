/*
 * rawloop: the software codec alone, in a plain C loop, for the benchmarks
 * to hold the engine against (bench/engine_overhead.py).
 *
 * Part of the cffi cdef (see build_native.py): declarations only, and a
 * guard that build_native.py drops.
 */
#ifndef MFD_RAWLOOP_H
#define MFD_RAWLOOP_H

/*
 * mfd_raw_compress_pages: compress pages[0..n) of `block` one after the
 * other, each as its own stream into one page of scratch (cap page_size - 1,
 * as the qpl method), with the same backend and setting as the software
 * work queue.  *out_bytes = the sum of compressed sizes, page_size for a
 * page that did not shrink.  MFD_OK, MFD_E_PARAM, MFD_E_NOMEM,
 * MFD_E_PAGE_RANGE or MFD_E_DEFLATE.
 */
int mfd_raw_compress_pages(int setting, const uint8_t *block, uint64_t block_len,
                           uint32_t page_size, const uint64_t *pages, uint32_t n,
                           uint64_t *out_bytes);

#endif
