/*
 * status: every status code of the native layer, and the one table that
 * names them (status.c).
 *
 * 0..9 mirror QPL's processing codes where they mean the same.  A QPL
 * status the libqpl binding passes on is MFD_QPL_STATUS_BASE + that
 * status; the table names the QPL statuses a user may meet.
 *
 * First header of the cffi cdef (see build_native.py): declarations and
 * integer #defines only; build_native.py drops the guard lines.
 */
#ifndef MFD_STATUS_H
#define MFD_STATUS_H

#define MFD_OK              0
#define MFD_BEING_PROCESSED 1   /* job still in flight (check) */
#define MFD_MORE_OUTPUT     2   /* output did not fit: send the page raw */
#define MFD_BUSY            5   /* work queue full: nothing was queued */
#define MFD_NOT_SUBMITTED   7   /* check/wait on a job never submitted */
#define MFD_E_PARAM        50   /* caller bug: bad argument */
#define MFD_E_NOMEM        51
#define MFD_E_WRONG_QUEUE  52   /* a work queue of another kind than the call needs */
#define MFD_E_PAYLOAD_SHORT 60  /* qpl: next_packet_size <= 4 * normal_pages */
#define MFD_E_LEN_ZERO     61   /* qpl: a page length is 0 */
#define MFD_E_LEN_TOO_BIG  62   /* qpl: a page length > page_size */
#define MFD_E_LEN_SUM      63   /* qpl: 4n + sum(len) != next_packet_size */
#define MFD_E_INFLATE      64   /* a page's stream is corrupt */
#define MFD_E_INFLATE_SIZE 65   /* a page inflated to != page_size bytes */
#define MFD_E_TRAILING     66   /* bytes left after a page's stream ended */
#define MFD_E_DEFLATE      67   /* the compressor itself failed */
#define MFD_E_HW           68   /* a hardware job failed (status in job) */
#define MFD_E_PAGE_RANGE   69   /* a page index lies outside the block */
#define MFD_E_DEVICE       70   /* the device is gone, full of clients, or refused a buffer */
#define MFD_E_STREAM_END   80   /* zlib: the channel's stream ended inside the channel */
#define MFD_QPL_STATUS_BASE 1000

typedef struct mfd_status_info {
    int code;
    const char *name;          /* "MFD_E_LEN_SUM", "QPL_STS_BAD_DIST_ERR" */
    const char *reason;        /* what it means, for people; "" if the name says it */
    int blames_input;          /* 1: a receive call failed because of its payload */
} mfd_status_info;

/* the table's entry for status, or NULL if the table does not know it */
const mfd_status_info *mfd_status_lookup(int status);

#endif
