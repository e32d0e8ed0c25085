/*
 * pagecodec.c: the per-page loops of multifd-engine (see pagecodec.h).
 *
 * Raw DEFLATE per page as QEMU's multifd-qpl puts it on the wire, with
 * the fastest library the build found as the software codec
 * (deflate_backend.h), and the per-packet submit/retry/fallback/wait
 * loop of migration/multifd-qpl.c driving any mfd_workqueue.
 *
 * Rules kept everywhere: every page index is checked against the block
 * before any memory is touched, nothing is written outside the (ptr, len)
 * buffers given, nothing prints and nothing aborts.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime under -std=c11 */

#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "status.h"
#include "pagecodec.h"
#include "deflate_backend.h"

#ifndef MFD_PACKAGE_VERSION
#define MFD_PACKAGE_VERSION "unknown (not built by build_native.py)"
#endif

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint32_t rd_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void wr_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/*
 * Index of the first page that lies outside the block, or n if all are
 * inside.  idx < block_len / page_size  <=>  (idx + 1) * page_size <=
 * block_len, without any overflow.
 */
static uint32_t first_bad_index(uint64_t block_len, uint32_t page_size,
                                const uint64_t *pages, uint32_t n)
{
    uint64_t npages = block_len / page_size;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= npages)
            return i;
    return n;
}

static int page_is_zero(const uint8_t *p, uint32_t size)
{
    if (size < 16) {
        uint8_t acc = 0;
        for (uint32_t k = 0; k < size; k++)
            acc |= p[k];
        return acc == 0;
    }
    /* most non-zero pages differ in their first word */
    uint64_t head;
    memcpy(&head, p, sizeof head);
    if (head != 0)
        return 0;
    /* p[0..8) is zero and p[k] == p[k + 8] for every k => all zero */
    return memcmp(p, p + 8, size - 8) == 0;
}

/* ------------------------------------------------------------------ */
/* version strings                                                     */

const char *mfd_package_version(void)
{
    return MFD_PACKAGE_VERSION;
}

/* ------------------------------------------------------------------ */
/* zero pages                                                          */

uint32_t mfd_find_zero_pages(const uint8_t *block, uint64_t block_len,
                             uint32_t page_size, uint64_t *pages, uint32_t n)
{
    if (n == 0)
        return 0;
    if (!block || !pages || page_size == 0)
        return (uint32_t)-1;
    if (first_bad_index(block_len, page_size, pages, n) != n)
        return (uint32_t)-1;

    /* QEMU multifd_send_zero_page_detect(), migration/multifd-zero-page.c */
    int64_t i = 0, j = (int64_t)n - 1;
    while (i <= j) {
        uint64_t idx = pages[i];
        if (!page_is_zero(block + idx * page_size, page_size)) {
            i++;
            continue;
        }
        pages[i] = pages[j];
        pages[j] = idx;
        j--;
    }
    return (uint32_t)i;
}

/* ------------------------------------------------------------------ */
/* software deflate / inflate: deflate_backend.h's library, per page    */

struct mfd_sw {
    mfd_deflater *def;
    mfd_inflater *inf;
};

mfd_sw *mfd_sw_new(int level, int window_bits)
{
    mfd_sw *sw = calloc(1, sizeof *sw);
    if (!sw)
        return NULL;
    /* level is the compression setting: MFD_SETTING_FAST or _BALANCED */
    sw->def = mfd_deflater_new(level, window_bits);
    sw->inf = mfd_inflater_new();
    if (!sw->def || !sw->inf) {
        mfd_sw_free(sw);
        return NULL;
    }
    return sw;
}

void mfd_sw_free(mfd_sw *sw)
{
    if (!sw)
        return;
    mfd_deflater_free(sw->def);
    mfd_inflater_free(sw->inf);
    free(sw);
}

int mfd_sw_compress_page(mfd_sw *sw, const uint8_t *in, uint32_t in_len,
                         uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (!sw)
        return MFD_E_PARAM;
    return mfd_deflater_page(sw->def, in, in_len, out, cap, out_len);
}

/* inflate one page; *produced gets the bytes written (may be < page_size) */
static int sw_inflate(mfd_sw *sw, const uint8_t *in, uint32_t in_len,
                      uint8_t *out, uint32_t page_size, uint32_t *produced)
{
    *produced = 0;
    if (!sw)
        return MFD_E_PARAM;
    return mfd_inflater_page(sw->inf, in, in_len, out, page_size, produced);
}

int mfd_sw_decompress_page(mfd_sw *sw, const uint8_t *in, uint32_t in_len,
                           uint8_t *out, uint32_t page_size)
{
    uint32_t produced;
    return sw_inflate(sw, in, in_len, out, page_size, &produced);
}

/* ------------------------------------------------------------------ */
/* the software work queue                                             */

static int swq_submit(void *ctx, mfd_job *job)
{
    if (!ctx || !job)
        return MFD_E_PARAM;
    mfd_sw *sw = ctx;
    int st;
    uint32_t len = 0;
    if (job->op == MFD_OP_COMPRESS)
        st = mfd_sw_compress_page(sw, job->in, job->in_len, job->out,
                                  job->out_cap, &len);
    else if (job->op == MFD_OP_DECOMPRESS)
        st = sw_inflate(sw, job->in, job->in_len, job->out, job->out_cap, &len);
    else
        return MFD_E_PARAM;
    job->out_len = len;
    job->status = st;
    job->submitted = 1;
    return MFD_OK;
}

int mfd_sync_check(void *ctx, mfd_job *job)
{
    (void)ctx;
    if (!job)
        return MFD_E_PARAM;
    return job->submitted ? job->status : MFD_NOT_SUBMITTED;
}

int mfd_sync_wait(void *ctx, mfd_job *job)
{
    (void)ctx;
    if (!job)
        return MFD_E_PARAM;
    if (!job->submitted)
        return MFD_NOT_SUBMITTED;
    job->submitted = 0;
    return job->status;
}

mfd_workqueue *mfd_software_queue_new(int level)
{
    mfd_workqueue *wq = calloc(1, sizeof *wq);
    if (!wq)
        return NULL;
    mfd_sw *sw = mfd_sw_new(level, 12);     /* IAA's 4 KiB history window */
    if (!sw) {
        free(wq);
        return NULL;
    }
    wq->submit = swq_submit;
    wq->check = mfd_sync_check;
    wq->wait = mfd_sync_wait;
    wq->ctx = sw;
    wq->is_hardware = 0;
    wq->kind = MFD_WQ_SOFTWARE;
    return wq;
}

void mfd_software_queue_free(mfd_workqueue *wq)
{
    if (!wq || wq->kind != MFD_WQ_SOFTWARE)
        return;
    mfd_sw_free(wq->ctx);
    free(wq);
}

/* ------------------------------------------------------------------ */
/* job arrays                                                          */

mfd_job *mfd_jobs_new(uint32_t count)
{
    if (count == 0)
        return NULL;
    mfd_job *jobs = calloc(count, sizeof *jobs);
    if (!jobs)
        return NULL;
    for (uint32_t i = 0; i < count; i++)
        jobs[i].status = MFD_NOT_SUBMITTED;
    return jobs;
}

void mfd_jobs_free(mfd_job *jobs)
{
    free(jobs);
}

/* ------------------------------------------------------------------ */
/* the per-packet submit / wait loop                                   */

static int wq_ok(const mfd_workqueue *wq)
{
    return wq && wq->submit && wq->wait;
}

/*
 * Submit job to wq; on MFD_BUSY retry up to max_retries times (without
 * limit with MFD_BUSY_RETRY).  Returns the last submit answer.
 */
static int submit_retry(mfd_workqueue *wq, mfd_job *job, uint32_t max_retries,
                        int busy_policy, mfd_packet_stats *st)
{
    int rc = wq->submit(wq->ctx, job);
    uint32_t tries = 0;
    while (rc == MFD_BUSY) {
        if (st)
            st->busy++;
        if (busy_policy != MFD_BUSY_RETRY && tries >= max_retries)
            break;
        tries++;
        if (st)
            st->retries++;
        rc = wq->submit(wq->ctx, job);
    }
    return rc;
}

/*
 * Run a copy of job at once on the fallback queue (submit + wait); store
 * the outcome (status, out_len) in job.  job itself is never handed to the
 * fallback queue, so whatever the main queue keeps in job->priv is left
 * alone.  Returns the job's status.
 */
static int run_fallback(mfd_workqueue *fb, mfd_job *job)
{
    mfd_job tmp = *job;
    tmp.priv = NULL;
    tmp.submitted = 0;
    tmp.out_len = 0;
    tmp.status = MFD_NOT_SUBMITTED;
    int st = fb->submit(fb->ctx, &tmp);
    if (st == MFD_OK)
        st = fb->wait(fb->ctx, &tmp);
    job->status = st;
    job->out_len = st == MFD_OK ? tmp.out_len : 0;
    job->submitted = 0;
    return st;
}

int mfd_qpl_send_packet(mfd_job *jobs, mfd_workqueue *wq, mfd_workqueue *fallback,
                        uint32_t max_retries, int busy_policy,
                        const uint8_t *block, uint64_t block_len, uint32_t page_size,
                        const uint64_t *pages, uint32_t normal_num,
                        uint8_t *slot, uint64_t slot_cap, uint64_t *payload_len,
                        mfd_packet_stats *stats)
{
    mfd_packet_stats scratch;
    if (!stats) {
        memset(&scratch, 0, sizeof scratch);
        stats = &scratch;
    }
    if (!payload_len)
        return MFD_E_PARAM;
    *payload_len = 0;
    if (!wq_ok(wq) || !wq_ok(fallback) || page_size < 2)
        return MFD_E_PARAM;
    if (busy_policy != MFD_BUSY_FALLBACK && busy_policy != MFD_BUSY_RETRY)
        return MFD_E_PARAM;
    if (normal_num == 0)
        return MFD_OK;              /* QEMU: no payload at all */
    if (!jobs || !block || !pages || !slot)
        return MFD_E_PARAM;
    const uint64_t n = normal_num;
    const uint64_t table = 4 * n;
    if (slot_cap < table + n * page_size)
        return MFD_E_PARAM;
    if (first_bad_index(block_len, page_size, pages, normal_num) != normal_num)
        return MFD_E_PAGE_RANGE;

    const int hw = wq->is_hardware != 0;
    uint8_t *data = slot + table;
    uint64_t t0 = now_ns();

    /* submit phase: job i compresses page i into data slot i */
    for (uint32_t i = 0; i < normal_num; i++) {
        mfd_job *job = &jobs[i];
        job->op = MFD_OP_COMPRESS;
        job->in = block + pages[i] * page_size;
        job->in_len = page_size;
        job->out = data + (uint64_t)i * page_size;
        job->out_cap = page_size - 1;   /* a page that does not shrink fails */
        job->out_len = 0;
        job->status = MFD_NOT_SUBMITTED;
        job->submitted = 0;
        int rc = submit_retry(wq, job, max_retries, busy_policy, stats);
        if (rc == MFD_OK) {
            job->submitted = 1;
            if (hw)
                stats->hw_submitted++;
            continue;
        }
        /* busy after the retries, or a submit error: software, at once */
        stats->sw_fallbacks++;
        int st = run_fallback(fallback, job);
        if (st != MFD_OK && st != MFD_MORE_OUTPUT)
            stats->sw_errors++;
    }

    /* wait phase, in page order; job->status ends as the page's outcome */
    for (uint32_t i = 0; i < normal_num; i++) {
        mfd_job *job = &jobs[i];
        if (!job->submitted)
            continue;               /* done by the fallback in submit */
        int st = wq->wait(wq->ctx, job);
        job->submitted = 0;
        if (st != MFD_OK && st != MFD_MORE_OUTPUT) {
            if (hw)
                stats->hw_errors++;
            else
                stats->sw_errors++;
        }
        job->status = st;
    }

    /*
     * compaction: page i's data moves from data + i * page_size to
     * data + sum(len[<i]); each len[j] <= page_size, so the destination
     * never lies after the source and never reaches slot i + 1.
     */
    uint64_t off = 0;
    for (uint32_t i = 0; i < normal_num; i++) {
        mfd_job *job = &jobs[i];
        uint8_t *src = data + (uint64_t)i * page_size;
        uint32_t len;
        if (job->status == MFD_OK && job->out_len > 0 && job->out_len < page_size) {
            len = job->out_len;
            if (data + off != src)
                memmove(data + off, src, len);
            stats->compressed_pages++;
        } else {
            if (job->status == MFD_OK) {
                /* a queue that claims success with an impossible length */
                if (hw)
                    stats->hw_errors++;
                else
                    stats->sw_errors++;
            }
            len = page_size;
            memcpy(data + off, block + pages[i] * page_size, page_size);
            stats->raw_pages++;
        }
        wr_be32(slot + 4 * (uint64_t)i, len);
        off += len;
    }

    *payload_len = table + off;
    stats->normal_pages += normal_num;
    stats->compress_ns += now_ns() - t0;
    return MFD_OK;
}

int mfd_qpl_recv_packet(mfd_job *jobs, mfd_workqueue *wq, mfd_workqueue *fallback,
                        uint32_t max_retries,
                        const uint8_t *payload, uint64_t payload_len,
                        const uint64_t *pages, uint32_t normal_num,
                        uint8_t *block, uint64_t block_len, uint32_t page_size,
                        uint32_t *bad_page)
{
    uint32_t scratch;
    if (!bad_page)
        bad_page = &scratch;
    *bad_page = normal_num;
    if (!wq_ok(wq) || !wq_ok(fallback) || page_size == 0)
        return MFD_E_PARAM;
    if (normal_num == 0) {
        if (payload_len != 0)
            return MFD_E_LEN_SUM;   /* 4n + sum = 0 */
        return MFD_OK;
    }
    if (!jobs || !pages || !block)
        return MFD_E_PARAM;

    /* the whole length table first: nothing is written before this */
    const uint64_t n = normal_num;
    const uint64_t table = 4 * n;
    if (payload_len <= table)
        return MFD_E_PAYLOAD_SHORT;
    if (!payload)
        return MFD_E_PARAM;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < normal_num; i++) {
        uint32_t len = rd_be32(payload + 4 * (uint64_t)i);
        if (len == 0) {
            *bad_page = i;
            return MFD_E_LEN_ZERO;
        }
        if (len > page_size) {
            *bad_page = i;
            return MFD_E_LEN_TOO_BIG;
        }
        sum += len;
    }
    if (table + sum != payload_len)
        return MFD_E_LEN_SUM;
    uint32_t bad = first_bad_index(block_len, page_size, pages, normal_num);
    if (bad != normal_num) {
        *bad_page = bad;
        return MFD_E_PAGE_RANGE;
    }

    int err = MFD_OK;
    uint32_t err_page = normal_num;
    uint32_t submitted_upto = 0;    /* jobs [0, submitted_upto) were set up */
    const uint8_t *data = payload + table;
    uint64_t off = 0;

    /* submit phase */
    for (uint32_t i = 0; i < normal_num; i++) {
        uint32_t len = rd_be32(payload + 4 * (uint64_t)i);
        uint8_t *dst = block + pages[i] * page_size;
        mfd_job *job = &jobs[i];
        job->submitted = 0;
        job->status = MFD_NOT_SUBMITTED;
        submitted_upto = i + 1;
        if (len == page_size) {
            memcpy(dst, data + off, page_size);
            job->status = MFD_OK;
            job->out_len = page_size;
            off += len;
            continue;
        }
        job->op = MFD_OP_DECOMPRESS;
        job->in = data + off;
        job->in_len = len;
        job->out = dst;
        job->out_cap = page_size;
        job->out_len = 0;
        off += len;
        int rc = submit_retry(wq, job, max_retries, MFD_BUSY_FALLBACK, NULL);
        if (rc == MFD_OK) {
            job->submitted = 1;
            continue;
        }
        int st = run_fallback(fallback, job);
        if (st == MFD_OK && job->out_len != page_size)
            st = MFD_E_INFLATE_SIZE;
        if (st != MFD_OK) {
            if (st == MFD_MORE_OUTPUT)
                st = MFD_E_INFLATE_SIZE;
            err = st;
            err_page = i;
            break;                  /* stop submitting; drain below */
        }
    }

    /* wait phase: every submitted job is waited for, even after an error */
    for (uint32_t i = 0; i < submitted_upto; i++) {
        mfd_job *job = &jobs[i];
        if (!job->submitted)
            continue;
        int st = wq->wait(wq->ctx, job);
        job->submitted = 0;
        job->status = st;
        if (st == MFD_OK && job->out_len != page_size)
            st = MFD_E_INFLATE_SIZE;
        if (st == MFD_MORE_OUTPUT)
            st = MFD_E_INFLATE_SIZE;
        if (st != MFD_OK && i < err_page) {
            err = st;
            err_page = i;
        }
    }

    if (err != MFD_OK) {
        *bad_page = err_page;
        return err;
    }
    return MFD_OK;
}

/* ------------------------------------------------------------------ */
/* none method, zero pages, comparison                                 */

int mfd_none_send_packet(const uint8_t *block, uint64_t block_len, uint32_t page_size,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *slot, uint64_t slot_cap)
{
    if (page_size == 0)
        return MFD_E_PARAM;
    if (normal_num == 0)
        return MFD_OK;
    if (!block || !pages || !slot)
        return MFD_E_PARAM;
    if (slot_cap < (uint64_t)normal_num * page_size)
        return MFD_E_PARAM;
    if (first_bad_index(block_len, page_size, pages, normal_num) != normal_num)
        return MFD_E_PAGE_RANGE;
    for (uint32_t i = 0; i < normal_num; i++)
        memcpy(slot + (uint64_t)i * page_size, block + pages[i] * page_size, page_size);
    return MFD_OK;
}

int mfd_none_recv_packet(const uint8_t *payload, uint64_t payload_len,
                         const uint64_t *pages, uint32_t normal_num,
                         uint8_t *block, uint64_t block_len, uint32_t page_size)
{
    if (page_size == 0)
        return MFD_E_PARAM;
    if (payload_len != (uint64_t)normal_num * page_size)
        return MFD_E_LEN_SUM;
    if (normal_num == 0)
        return MFD_OK;
    if (!payload || !pages || !block)
        return MFD_E_PARAM;
    if (first_bad_index(block_len, page_size, pages, normal_num) != normal_num)
        return MFD_E_PAGE_RANGE;
    for (uint32_t i = 0; i < normal_num; i++)
        memcpy(block + pages[i] * page_size, payload + (uint64_t)i * page_size, page_size);
    return MFD_OK;
}

int mfd_clear_pages(uint8_t *block, uint64_t block_len, uint32_t page_size,
                    const uint64_t *pages, uint32_t n)
{
    if (page_size == 0)
        return MFD_E_PARAM;
    if (n == 0)
        return MFD_OK;
    if (!block || !pages)
        return MFD_E_PARAM;
    if (first_bad_index(block_len, page_size, pages, n) != n)
        return MFD_E_PAGE_RANGE;
    for (uint32_t i = 0; i < n; i++)
        memset(block + pages[i] * page_size, 0, page_size);
    return MFD_OK;
}

/* a trailing partial page counts as one page; (uint64_t)-1 on bad args */
uint64_t mfd_compare_pages(const uint8_t *a, const uint8_t *b, uint64_t len,
                           uint32_t page_size, uint64_t *out, uint64_t max_out)
{
    if (page_size == 0 || (max_out > 0 && !out))
        return (uint64_t)-1;
    if (len == 0)
        return 0;
    if (!a || !b)
        return (uint64_t)-1;
    uint64_t total = 0;
    for (uint64_t off = 0, idx = 0; off < len; off += page_size, idx++) {
        uint64_t size = len - off < page_size ? len - off : page_size;
        if (memcmp(a + off, b + off, size) != 0) {
            if (total < max_out)
                out[total] = idx;
            total++;
        }
    }
    return total;
}
