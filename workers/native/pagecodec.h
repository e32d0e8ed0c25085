/*
 * pagecodec: the per-page loops of multifd-engine, one call per packet.
 *
 * Everything here works on page *indices* (uint64) inside one RAM block;
 * the wire's byte offsets are index * page_size.  Functions return MFD_*
 * status codes; they never print, never abort and never write outside the
 * buffers they are given.  cffi releases the GIL around every call.
 *
 * This file is also part of the cffi cdef: keep it to declarations cffi can
 * parse (no #include, no preprocessor conditionals besides the guard,
 * which build_native.py drops).
 */
#ifndef MFD_PAGECODEC_H
#define MFD_PAGECODEC_H

/* status codes: status.h (MFD_*), the first header of the cdef */

#define MFD_OP_COMPRESS   1
#define MFD_OP_DECOMPRESS 0

/* compression settings of the software path (the `level` arguments) */
#define MFD_SETTING_FAST     0  /* static Huffman codes (IAA's default): fastest */
#define MFD_SETTING_BALANCED 1  /* level 1: a Huffman code fitted to each page */

#define MFD_BUSY_FALLBACK 0     /* after max_retries busy answers: software */
#define MFD_BUSY_RETRY    1     /* keep retrying (QPL v6 series behaviour) */

/*
 * One compression or decompression of one page.  A job array is
 * page_count of these, owned by one worker; the work queue that runs a job
 * may keep private state in `priv`.
 */
typedef struct mfd_job {
    int op;                  /* MFD_OP_* */
    const uint8_t *in;
    uint32_t in_len;
    uint8_t *out;
    uint32_t out_cap;
    uint32_t out_len;        /* result: bytes produced */
    int status;              /* result: MFD_* (or the device's code) */
    int submitted;           /* set by submit, cleared by wait */
    void *priv;
} mfd_job;

/* work queue kinds (mfd_workqueue.kind) */
#define MFD_WQ_SOFTWARE 1       /* mfd_software_queue_new */
#define MFD_WQ_EMULATED 2       /* mfd_emu_queue_new */
#define MFD_WQ_QPL      3       /* mfd_qpl_queue_new */

/*
 * A work queue: the seam between the per-packet loop and whatever runs
 * jobs (the software path, the emulated IAA device, real IAA via libqpl).
 * submit never blocks on a full queue: it answers MFD_BUSY at once.
 * The software queue runs the job inside submit, as QPL's software path.
 */
typedef struct mfd_workqueue {
    int (*submit)(void *ctx, mfd_job *job);
    int (*check)(void *ctx, mfd_job *job);
    int (*wait)(void *ctx, mfd_job *job);
    void *ctx;
    int is_hardware;         /* 1: IAA or its emulation; 0: software */
    int kind;                /* MFD_WQ_*: calls meant for one kind refuse the others */
} mfd_workqueue;

/* counters one packet adds to; the worker sums them per run */
typedef struct mfd_packet_stats {
    uint32_t zero_pages;
    uint32_t normal_pages;
    uint32_t compressed_pages;
    uint32_t raw_pages;        /* sent raw: did not fit or a job failed */
    uint32_t hw_submitted;     /* jobs accepted by a hardware queue */
    uint32_t busy;             /* MFD_BUSY answers */
    uint32_t retries;          /* submit attempts after a busy answer */
    uint32_t sw_fallbacks;     /* pages done in software after busy/submit error */
    uint32_t hw_errors;        /* hardware jobs that completed with an error */
    uint32_t sw_errors;        /* software jobs that failed (page sent raw) */
    uint64_t zero_ns;          /* time in zero-page detection */
    uint64_t compress_ns;      /* time in the compress loop */
} mfd_packet_stats;

/* the version string of the Python package this .so was built for */
const char *mfd_package_version(void);
/* which deflate library runs each direction of the software path, e.g.
 * "isal 2.30" and "libdeflate 1.14" (the build picks deflate_backend.h's files) */
const char *mfd_deflater_library(void);
const char *mfd_inflater_library(void);

/*
 * mfd_find_zero_pages: partition pages[0..n) in place, as QEMU's multifd
 * zero-page detection does (i from the front, j from the back, swap a zero
 * page to the back): normal pages first, zero pages after.  Returns the
 * number of normal pages, or (uint32_t)-1 if an index is outside the block.
 */
uint32_t mfd_find_zero_pages(const uint8_t *block, uint64_t block_len,
                             uint32_t page_size, uint64_t *pages, uint32_t n);

/* software deflate/inflate state: one per worker, reused for every page;
 * level is MFD_SETTING_*, window_bits (9..15) bounds every match distance */
typedef struct mfd_sw mfd_sw;
mfd_sw *mfd_sw_new(int level, int window_bits);
void mfd_sw_free(mfd_sw *sw);
/* one raw-DEFLATE stream of in[0..in_len) into out[0..cap): MFD_OK,
 * MFD_MORE_OUTPUT (did not fit) or MFD_E_DEFLATE */
int mfd_sw_compress_page(mfd_sw *sw, const uint8_t *in, uint32_t in_len,
                         uint8_t *out, uint32_t cap, uint32_t *out_len);
/* inflate one page: MFD_OK only if the stream ends, all input is used and
 * exactly page_size bytes come out */
int mfd_sw_decompress_page(mfd_sw *sw, const uint8_t *in, uint32_t in_len,
                           uint8_t *out, uint32_t page_size);

/* check and wait of a queue whose submit runs the job at once (software
 * paths): the job's own stored status is the answer; wait also marks the
 * job as collected */
int mfd_sync_check(void *ctx, mfd_job *job);
int mfd_sync_wait(void *ctx, mfd_job *job);

/* the software work queue: submit runs the job at once on `sw`;
 * level is MFD_SETTING_*, the window IAA's 4 KiB */
mfd_workqueue *mfd_software_queue_new(int level);
void mfd_software_queue_free(mfd_workqueue *wq);

/* job arrays */
mfd_job *mfd_jobs_new(uint32_t count);
void mfd_jobs_free(mfd_job *jobs);

/*
 * mfd_qpl_send_packet: build the qpl payload of one packet into `slot`.
 * pages[0..normal_num) are the normal pages (already partitioned).
 * As QEMU's multifd-qpl: submit every page to `wq` (retrying a busy queue
 * up to max_retries times, then, with MFD_BUSY_FALLBACK, compressing that
 * page at once on `fallback`), then wait for each job in order; a page
 * whose output does not fit in page_size - 1 bytes, or whose job failed,
 * is sent raw.  `wq` may itself be the software queue.
 * slot layout on return: normal_num BE u32 lengths, then the page data;
 * slot_cap must be >= 4 * normal_num + normal_num * page_size.
 * jobs must hold >= normal_num entries.  *payload_len = next_packet_size.
 */
int mfd_qpl_send_packet(mfd_job *jobs, mfd_workqueue *wq, mfd_workqueue *fallback,
                        uint32_t max_retries, int busy_policy,
                        const uint8_t *block, uint64_t block_len, uint32_t page_size,
                        const uint64_t *pages, uint32_t normal_num,
                        uint8_t *slot, uint64_t slot_cap, uint64_t *payload_len,
                        mfd_packet_stats *stats);

/*
 * mfd_qpl_recv_packet: check and decode one qpl payload straight into the
 * destination block.  Validates the length table (payload_len > 4n, every
 * len in 1..page_size, 4n + sum == payload_len) before writing anything;
 * then each page is copied raw (len == page_size) or decompressed through
 * `wq` (busy: retry, then `fallback`).  On error *bad_page is the index
 * (0..n) of the page at fault, or n when the table as a whole is wrong.
 */
int mfd_qpl_recv_packet(mfd_job *jobs, mfd_workqueue *wq, mfd_workqueue *fallback,
                        uint32_t max_retries,
                        const uint8_t *payload, uint64_t payload_len,
                        const uint64_t *pages, uint32_t normal_num,
                        uint8_t *block, uint64_t block_len, uint32_t page_size,
                        uint32_t *bad_page);

/* none method: copy pages into slot / slot into the block */
int mfd_none_send_packet(const uint8_t *block, uint64_t block_len, uint32_t page_size,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *slot, uint64_t slot_cap);
int mfd_none_recv_packet(const uint8_t *payload, uint64_t payload_len,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *block, uint64_t block_len, uint32_t page_size);

/* zero the given pages of a block (receiver side of zero pages) */
int mfd_clear_pages(uint8_t *block, uint64_t block_len, uint32_t page_size,
                    const uint64_t *pages, uint32_t n);

/* compare two blocks page by page; writes up to max_out mismatching page
 * indices to out and returns the total number of mismatching pages */
uint64_t mfd_compare_pages(const uint8_t *a, const uint8_t *b, uint64_t len,
                           uint32_t page_size, uint64_t *out, uint64_t max_out);

#endif
