/*
 * status.c: the one table of status codes (see status.h).
 *
 * The Python binding reads names, reasons and whom a failure blames from
 * here; nothing else keeps a copy.
 */
#include <stddef.h>

#include "status.h"

#define QPL(n) (MFD_QPL_STATUS_BASE + (n))

/* QPL statuses: include/qpl/c_api/status.h */
static const mfd_status_info STATUSES[] = {
    { MFD_OK, "MFD_OK", "", 0 },
    { MFD_BEING_PROCESSED, "MFD_BEING_PROCESSED", "the job is still in flight", 0 },
    { MFD_MORE_OUTPUT, "MFD_MORE_OUTPUT", "the output did not fit", 1 },
    { MFD_BUSY, "MFD_BUSY", "the work queue is full", 0 },
    { MFD_NOT_SUBMITTED, "MFD_NOT_SUBMITTED", "the job was never submitted", 0 },
    { MFD_E_PARAM, "MFD_E_PARAM", "a bad argument", 0 },
    { MFD_E_NOMEM, "MFD_E_NOMEM", "out of memory", 0 },
    { MFD_E_WRONG_QUEUE, "MFD_E_WRONG_QUEUE",
      "the work queue is of another kind than this call needs", 0 },
    { MFD_E_PAYLOAD_SHORT, "MFD_E_PAYLOAD_SHORT",
      "payload is not longer than its length table (next_packet_size <= 4 * normal_pages)", 1 },
    { MFD_E_LEN_ZERO, "MFD_E_LEN_ZERO", "a page length is 0", 1 },
    { MFD_E_LEN_TOO_BIG, "MFD_E_LEN_TOO_BIG", "a page length is larger than the page size", 1 },
    { MFD_E_LEN_SUM, "MFD_E_LEN_SUM", "next_packet_size disagrees with the page lengths", 1 },
    { MFD_E_INFLATE, "MFD_E_INFLATE", "the page's DEFLATE stream is corrupt or truncated", 1 },
    { MFD_E_INFLATE_SIZE, "MFD_E_INFLATE_SIZE",
      "the page did not decompress to exactly one page", 1 },
    { MFD_E_TRAILING, "MFD_E_TRAILING", "bytes left after the page's DEFLATE stream ended", 1 },
    { MFD_E_DEFLATE, "MFD_E_DEFLATE", "the compressor failed", 0 },
    { MFD_E_HW, "MFD_E_HW", "the decompression job failed", 1 },
    { MFD_E_PAGE_RANGE, "MFD_E_PAGE_RANGE", "a page index lies outside its RAM block", 1 },
    { MFD_E_DEVICE, "MFD_E_DEVICE",
      "the work queue's device is gone or refused the job's buffers", 0 },
    { MFD_E_STREAM_END, "MFD_E_STREAM_END",
      "the channel's compression stream ended inside the channel", 1 },
    { QPL(0), "QPL_STS_OK", "", 0 },
    { QPL(2), "QPL_STS_MORE_OUTPUT_NEEDED", "", 1 },
    { QPL(5), "QPL_STS_QUEUES_ARE_BUSY_ERR", "", 1 },
    { QPL(6), "QPL_STS_LIBRARY_INTERNAL_ERR", "", 1 },
    { QPL(8), "QPL_STS_NOT_SUPPORTED_BY_WQ", "", 1 },
    { QPL(54), "QPL_STS_PATH_ERR", "", 1 },
    { QPL(217), "QPL_STS_BAD_DIST_ERR", "", 1 },
    { QPL(500), "QPL_STS_INIT_HW_NOT_SUPPORTED", "", 1 },
    { QPL(501), "QPL_STS_INIT_LIBACCEL_NOT_FOUND", "libaccel-config.so.1 missing or too old", 1 },
    { QPL(502), "QPL_STS_INIT_LIBACCEL_ERROR", "", 1 },
    { QPL(503), "QPL_STS_INIT_WORK_QUEUES_NOT_AVAILABLE",
      "no enabled shared IAA work queue we may open", 1 },
};

const mfd_status_info *mfd_status_lookup(int status)
{
    for (size_t i = 0; i < sizeof STATUSES / sizeof STATUSES[0]; i++)
        if (STATUSES[i].code == status)
            return &STATUSES[i];
    return NULL;
}
