/*
 * zstream: the per-channel zlib stream of multifd method `zlib`, run over
 * the pages of one packet per call.
 *
 * As QEMU's multifd-zlib (spec §4.2): one stream per channel that lives
 * across packets (zlib wrapper, windowBits 15, memLevel 8, default
 * strategy), the packet's normal pages fed in offset order, Z_SYNC_FLUSH at
 * the end of each packet; the frame is never finished.  The receiver keeps
 * one inflate stream per channel and inflates page by page straight into
 * the destination block.
 *
 * Status codes are status.h's MFD_*.
 * Part of the cffi cdef (see build_native.py): declarations only, and a
 * guard that build_native.py drops.
 */
#ifndef MFD_ZSTREAM_H
#define MFD_ZSTREAM_H

typedef struct mfd_zstream mfd_zstream;

/* the zlib these streams run on (zlibVersion()), e.g. "1.2.13" */
const char *mfd_zstream_zlib_version(void);

/* a deflate stream at `level` (0..9); NULL on a bad level or no memory */
mfd_zstream *mfd_zlib_deflate_new(int level);
/* an inflate stream; NULL on no memory */
mfd_zstream *mfd_zlib_inflate_new(void);
void mfd_zstream_free(mfd_zstream *z);

/*
 * mfd_zlib_send_packet: compress pages[0..normal_num) of `block`, in order,
 * into `slot` with the channel's deflate stream, ending on a sync flush.
 * *payload_len = next_packet_size.  MFD_MORE_OUTPUT if slot_cap is too
 * small (the stream is then unusable), MFD_E_PAGE_RANGE for a page outside
 * the block (checked before the stream is touched), MFD_E_DEFLATE if zlib
 * fails.  normal_num == 0 leaves the stream untouched and writes nothing.
 */
int mfd_zlib_send_packet(mfd_zstream *z, const uint8_t *block, uint64_t block_len,
                         uint32_t page_size, const uint64_t *pages, uint32_t normal_num,
                         uint8_t *slot, uint64_t slot_cap, uint64_t *payload_len);

/*
 * mfd_zlib_recv_packet: inflate one packet's payload with the channel's
 * stream, page i straight to pages[i] of `block`.  Every page must come out
 * whole and the payload must be used up: MFD_E_INFLATE (corrupt stream),
 * MFD_E_STREAM_END (the stream ended), MFD_E_INFLATE_SIZE (the payload ran
 * out inside page *bad_page), MFD_E_TRAILING (input left after the last
 * page: *bad_page = normal_num), MFD_E_PAGE_RANGE (checked first).
 */
int mfd_zlib_recv_packet(mfd_zstream *z, const uint8_t *payload, uint64_t payload_len,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *block, uint64_t block_len, uint32_t page_size,
                         uint32_t *bad_page);

#endif
