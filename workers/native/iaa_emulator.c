/*
 * iaa_emulator.c: the emulated IAA device, its engine threads (see
 * iaa_emulator.h); the control segment is emu_control.h's, the ring
 * emu_ring.c's, the clients' work queue emu_client.c's.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "emu_control.h"
#include "strict_inflate.h"
#include "zlib_raw.h"

/* ------------------------------------------------------------------ */
/* the device: engines                                                 */

struct emu_engine {
    struct mfd_emu_device *dev;
    pthread_t thread;
    int started;
    z_stream def, inf;
};

struct mfd_emu_device {
    struct emu_control *ctl;
    uint64_t map_len;
    pthread_mutex_t seg_lock;       /* lazy mapping of data segments */
    void *seg_map[EMU_MAX_SEGS];
    uint64_t seg_len[EMU_MAX_SEGS];
    uint32_t engine_count;
    struct emu_engine *engines;
};

/* the address of [off, off + len) of segment seg, or NULL */
static uint8_t *resolve(struct mfd_emu_device *dev, uint32_t seg, uint64_t off, uint64_t len)
{
    if (seg == EMU_DIRECT)
        return (uint8_t *)(uintptr_t)off;
    if (seg >= EMU_MAX_SEGS)
        return NULL;
    struct emu_seg *s = &dev->ctl->segs[seg];
    if (atomic_load(&s->state) != SEG_READY)
        return NULL;
    pthread_mutex_lock(&dev->seg_lock);
    if (!dev->seg_map[seg]) {
        uint64_t got = 0;
        void *p = emu_map_segment(s->name, s->size, &got);
        if (p) {
            dev->seg_map[seg] = p;
            dev->seg_len[seg] = got;
        }
    }
    uint8_t *base = dev->seg_map[seg];
    uint64_t size = dev->seg_len[seg];
    pthread_mutex_unlock(&dev->seg_lock);
    if (!base || off > size || len > size - off)
        return NULL;
    return base + off;
}

static int emu_compress(struct emu_engine *e, const uint8_t *in, uint32_t in_len,
                        uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    int status = zlib_raw_deflate_page(&e->def, in, in_len, out, cap, out_len);
    return status == MFD_E_DEFLATE ? MFD_E_HW : status;     /* the device's job failed */
}

/* IAA's inflater has a 4 KiB history: farther distances are an error */
static int emu_decompress(struct emu_engine *e, const uint8_t *in, uint32_t in_len,
                          uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    if (cap > MFD_STRICT_HISTORY)
        return mfd_strict_inflate(in, in_len, out, cap, out_len);
    /* a page of at most 4 KiB cannot reach farther back: zlib is exact here */
    z_stream *z = &e->inf;
    if (inflateReset(z) != Z_OK)
        return MFD_E_HW;
    z->next_in = (uint8_t *)in;
    z->avail_in = in_len;
    z->next_out = out;
    z->avail_out = cap;
    int ret = inflate(z, Z_FINISH);
    *out_len = cap - z->avail_out;
    if (ret == Z_STREAM_END)
        return z->avail_in ? MFD_E_TRAILING : MFD_OK;
    if ((ret == Z_OK || ret == Z_BUF_ERROR) && z->avail_out == 0)
        return MFD_MORE_OUTPUT;
    return MFD_E_INFLATE;
}

/* the modelled service time of a job, in ns */
static int64_t service_ns(const mfd_emu_config *c, int op, uint32_t bytes, double jitter_u)
{
    double rate = c->engine_mb_per_s * 1e6;
    if (op == MFD_OP_DECOMPRESS)
        rate *= c->decompress_speedup;
    double ns = c->latency_us * 1e3 + (double)bytes / rate * 1e9;
    ns *= 1.0 + c->jitter * (2.0 * jitter_u - 1.0);
    return ns > 0 ? (int64_t)ns : 0;
}

static void sleep_until(int64_t deadline)
{
    int64_t left = deadline - emu_now_ns();
    if (left <= 0)
        return;
    struct timespec ts = { left / 1000000000, left % 1000000000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int owner_alive(int32_t pid)
{
    return pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH;
}

static void run_job(struct emu_engine *e, uint32_t index)
{
    struct mfd_emu_device *dev = e->dev;
    struct emu_control *ctl = dev->ctl;
    const mfd_emu_config *c = &ctl->cfg;
    struct emu_record *rec = &emu_records(ctl)[index];
    int64_t t0 = emu_now_ns();
    atomic_store(&rec->state, REC_RUNNING);
    uint64_t seq = atomic_fetch_add(&ctl->job_seq, 1);
    int op = rec->op;
    uint32_t out_len = 0;
    int status;

    emu_count(ctl, op == MFD_OP_COMPRESS ? C_COMPRESS : C_DECOMPRESS, 1);
    int64_t model = service_ns(c, op, op == MFD_OP_COMPRESS ? rec->in_len : rec->out_cap,
                               emu_chance(c->seed, seq, 1));
    if (c->slow_job_rate > 0 && emu_chance(c->seed, seq, 2) < c->slow_job_rate) {
        model += (int64_t)(c->slow_job_us * 1e3);
        emu_count(ctl, C_SLOW_JOBS, 1);
    }
    const uint8_t *in = resolve(dev, rec->in_seg, rec->in_off, rec->in_len);
    uint8_t *out = resolve(dev, rec->out_seg, rec->out_off, rec->out_cap);
    if (!in || !out || rec->in_len == 0 || rec->out_cap == 0 || !owner_alive(rec->owner)) {
        /* a dead client's jobs are dropped, as the kernel drains a dead
         * process's descriptors: its replacement reuses the same slots */
        status = MFD_E_DEVICE;
    } else if (c->job_error_rate > 0 && emu_chance(c->seed, seq, 3) < c->job_error_rate) {
        status = MFD_E_HW;
        emu_count(ctl, C_JOB_ERRORS, 1);
    } else if (c->overflow_rate > 0 && emu_chance(c->seed, seq, 4) < c->overflow_rate) {
        status = MFD_MORE_OUTPUT;
        emu_count(ctl, C_OVERFLOWS, 1);
    } else if (op == MFD_OP_COMPRESS) {
        status = emu_compress(e, in, rec->in_len, out, rec->out_cap, &out_len);
        if (status == MFD_MORE_OUTPUT)
            emu_count(ctl, C_MORE_OUTPUT, 1);
    } else {
        status = emu_decompress(e, in, rec->in_len, out, rec->out_cap, &out_len);
        if (status != MFD_OK)
            emu_count(ctl, C_BAD_STREAMS, 1);
    }
    if (status != MFD_OK)
        out_len = 0;
    sleep_until(t0 + model);

    rec->status = status;
    rec->out_len = out_len;
    emu_count(ctl, C_JOBS_DONE, 1);
    emu_count(ctl, C_BUSY_NS, (uint64_t)(emu_now_ns() - t0));
    atomic_store(&rec->state, REC_DONE);
    if (atomic_load(&rec->waiting))
        emu_futex_wake(&rec->state, INT_MAX);
}

static void *engine_main(void *arg)
{
    struct emu_engine *e = arg;
    struct emu_control *ctl = e->dev->ctl;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  /* short modelled waits stay short */
    while (atomic_load(&ctl->running)) {
        uint32_t index;
        if (!emu_ring_pop(ctl, &index)) {
            uint32_t seq = atomic_load(&ctl->work_seq);
            atomic_fetch_add(&ctl->sleepers, 1);
            int got = emu_ring_pop(ctl, &index);
            if (!got)
                emu_futex_wait(&ctl->work_seq, seq, 50000000);
            atomic_fetch_sub(&ctl->sleepers, 1);
            if (!got)
                continue;
        }
        atomic_fetch_sub(&ctl->queued, 1);    /* the entry leaves the queue for an engine */
        run_job(e, index);
    }
    return NULL;
}

static int engine_init(struct emu_engine *e, struct mfd_emu_device *dev)
{
    e->dev = dev;
    /* fixed Huffman (fast), as IAA by default; window 12 = 4 KiB of history */
    if (!zlib_raw_deflate_init(&e->def, MFD_BACKEND_FAST, 12))
        return 0;
    if (inflateInit2(&e->inf, -12) != Z_OK) {
        deflateEnd(&e->def);
        return 0;
    }
    return 1;
}

static void device_free(struct mfd_emu_device *dev)
{
    for (uint32_t i = 0; i < EMU_MAX_SEGS; i++)
        if (dev->seg_map[i])
            munmap(dev->seg_map[i], dev->seg_len[i]);
    if (dev->ctl)
        munmap(dev->ctl, dev->map_len);
    pthread_mutex_destroy(&dev->seg_lock);
    free(dev->engines);
    free(dev);
}

static void engines_stop(struct mfd_emu_device *dev)
{
    struct emu_control *ctl = dev->ctl;
    atomic_store(&ctl->running, 0);
    emu_futex_wake(&ctl->work_seq, INT_MAX);
    for (uint32_t i = 0; i < dev->engine_count; i++) {
        struct emu_engine *e = &dev->engines[i];
        if (e->started)
            pthread_join(e->thread, NULL);
        if (e->dev) {
            deflateEnd(&e->def);
            inflateEnd(&e->inf);
        }
    }
    atomic_store(&ctl->stopped, 1);
    /* clients asleep on a record that will never finish: wake them all */
    struct emu_record *recs = emu_records(ctl);
    uint64_t n = (uint64_t)ctl->cfg.clients * ctl->cfg.page_count;
    for (uint64_t i = 0; i < n; i++)
        if (atomic_load(&recs[i].waiting))
            emu_futex_wake(&recs[i].state, INT_MAX);
}

int mfd_emu_device_start(const char *shm_name, const mfd_emu_config *cfg,
                         mfd_emu_device **out)
{
    if (!out)
        return MFD_E_PARAM;
    *out = NULL;
    uint64_t need = mfd_emu_control_size(cfg);
    if (need == 0)
        return MFD_E_PARAM;
    struct mfd_emu_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return MFD_E_NOMEM;
    pthread_mutex_init(&dev->seg_lock, NULL);
    dev->engines = calloc(cfg->engines, sizeof *dev->engines);
    dev->ctl = emu_map_segment(shm_name, need, &dev->map_len);
    if (!dev->engines || !dev->ctl) {
        int status = dev->engines ? MFD_E_PARAM : MFD_E_NOMEM;
        device_free(dev);
        return status;
    }
    emu_control_init(dev->ctl, cfg, need);

    /*
     * Engine threads take no signals: they inherit a full mask.  A thread
     * that could take SIGINT would drop a Ctrl-C the host process ignores
     * for a moment (engine/threads.py says when).
     */
    sigset_t all, caller;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &caller);
    int status = MFD_OK;
    for (uint32_t i = 0; i < cfg->engines; i++) {
        struct emu_engine *e = &dev->engines[i];
        dev->engine_count = i + 1;
        if (!engine_init(e, dev) ||
            pthread_create(&e->thread, NULL, engine_main, e) != 0) {
            status = MFD_E_DEVICE;
            break;
        }
        e->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &caller, NULL);
    if (status != MFD_OK) {
        engines_stop(dev);
        device_free(dev);
        return status;
    }
    *out = dev;
    return MFD_OK;
}

void mfd_emu_device_stop(mfd_emu_device *dev)
{
    if (!dev)
        return;
    engines_stop(dev);
    device_free(dev);
}

void mfd_emu_device_counters(const mfd_emu_device *dev, mfd_emu_counters *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!dev || !dev->ctl)
        return;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = atomic_load(&dev->ctl->stats.v[i]);
}
