/*
 * iaa_emulator.c: the emulated IAA device (see iaa_emulator.h).
 *
 * Control segment layout (one mapping per process, same bytes everywhere):
 *
 *   struct emu_control     header, config copy, counters, segment table
 *   struct emu_cell[Q]     the submission ring (bounded MPMC, Vyukov style)
 *   struct emu_record[C*P] one completion record per client job
 *
 * A record moves FREE -> QUEUED (client submit) -> RUNNING -> DONE (engine)
 * -> FREE (client wait).  Only the client that owns a record writes it while
 * FREE; only the engine that popped it writes it while RUNNING.  Sleeping
 * uses process-shared futexes, so a waiting client or an idle engine costs
 * no CPU, and nothing here holds a lock a dying worker could leave behind.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "status.h"
#include "pagecodec.h"
#include "iaa_emulator.h"
#include "strict_inflate.h"
#include "zlib_raw.h"

#define EMU_MAGIC 0x4d46442d49414145ull     /* "MFD-IAAE" */
#define EMU_VERSION 1
#define EMU_MAX_SEGS 128
#define EMU_NAME_MAX 224
#define EMU_DIRECT 0xffffffffu              /* offset is an address in the device's process */
#define EMU_SPIN 64                         /* polls before a waiting client sleeps */

enum { REC_FREE, REC_QUEUED, REC_RUNNING, REC_DONE };
enum { SEG_EMPTY, SEG_WRITING, SEG_READY };

struct emu_seg {
    _Atomic uint32_t state;
    uint32_t pad;
    uint64_t size;
    char name[EMU_NAME_MAX];
};

struct emu_cell {
    _Atomic uint64_t seq;
    uint32_t record;
    uint32_t pad;
};

struct emu_record {
    _Atomic uint32_t state;
    _Atomic uint32_t waiting;   /* the owner sleeps on state */
    int32_t op;
    int32_t status;
    uint32_t in_seg, out_seg;
    uint64_t in_off, out_off;
    uint32_t in_len, out_cap, out_len;
    int32_t owner;              /* pid of the submitting client */
};

struct emu_stats {
    _Atomic uint64_t v[sizeof(mfd_emu_counters) / sizeof(uint64_t)];
};

struct emu_control {
    uint64_t magic;
    uint32_t version;
    int32_t device_pid;
    uint64_t cells_off, records_off, total_size;
    mfd_emu_config cfg;
    _Atomic uint32_t running;       /* engines take jobs */
    _Atomic uint32_t stopped;       /* engines joined: no record changes any more */
    _Atomic uint32_t next_client;
    _Atomic uint32_t work_seq;      /* futex: bumped per queued job */
    _Atomic uint32_t sleepers;      /* engines asleep on work_seq */
    _Atomic uint64_t enq_pos, deq_pos;
    _Atomic uint32_t queued;        /* jobs in the ring: at most cfg.queue_size */
    uint32_t ring_size;             /* cells: max(2, queue_size), as the ring needs two */
    _Atomic uint64_t submit_seq, job_seq;
    _Atomic int64_t storm_until_ns;
    struct emu_stats stats;
    struct emu_seg segs[EMU_MAX_SEGS];
};

/* counter slots, in mfd_emu_counters order */
enum {
    C_SUBMITS, C_ACCEPTED, C_BUSY_FULL, C_BUSY_STORM, C_STORMS, C_JOBS_DONE,
    C_COMPRESS, C_DECOMPRESS, C_MORE_OUTPUT, C_BAD_STREAMS, C_JOB_ERRORS,
    C_OVERFLOWS, C_SLOW_JOBS, C_BUSY_NS,
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void count(struct emu_control *ctl, int which, uint64_t n)
{
    atomic_fetch_add_explicit(&ctl->stats.v[which], n, memory_order_relaxed);
}

/* process-shared futex wait with a timeout in ns; spurious returns are fine */
static void futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts = { timeout_ns / 1000000000, timeout_ns % 1000000000 };
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int count)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* splitmix64 of (seed, sequence number, decision): a uniform double in [0, 1) */
static double chance(uint64_t seed, uint64_t seq, uint64_t what)
{
    uint64_t z = seed + seq * 0x9e3779b97f4a7c15ull + what * 0xd1b54a32d192ed03ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static struct emu_cell *cells(struct emu_control *ctl)
{
    return (struct emu_cell *)((uint8_t *)ctl + ctl->cells_off);
}

static struct emu_record *records(struct emu_control *ctl)
{
    return (struct emu_record *)((uint8_t *)ctl + ctl->records_off);
}

static int config_ok(const mfd_emu_config *c)
{
    return c && c->queue_size >= 1 && c->queue_size <= (1u << 20) &&
           c->engines >= 1 && c->engines <= 256 &&
           c->clients >= 1 && c->clients <= 4096 &&
           c->page_count >= 1 && c->page_count <= 65536 &&
           c->latency_us >= 0 && c->engine_mb_per_s > 0 && c->decompress_speedup > 0 &&
           c->jitter >= 0 && c->jitter < 1 && c->busy_storm_us >= 0 && c->slow_job_us >= 0;
}

static uint64_t align64(uint64_t n)
{
    return (n + 63) & ~(uint64_t)63;
}

static uint32_t ring_cells(const mfd_emu_config *c)
{
    return c->queue_size < 2 ? 2 : c->queue_size;
}

uint64_t mfd_emu_control_size(const mfd_emu_config *cfg)
{
    if (!config_ok(cfg))
        return 0;
    uint64_t size = align64(sizeof(struct emu_control));
    size += align64((uint64_t)ring_cells(cfg) * sizeof(struct emu_cell));
    size += (uint64_t)cfg->clients * cfg->page_count * sizeof(struct emu_record);
    return size;
}

/* map /dev/shm/<name>: its whole length, or fail if shorter than min_size */
static void *map_segment(const char *name, uint64_t min_size, uint64_t *len_out)
{
    char path[16 + EMU_NAME_MAX];
    if (!name || !*name || strchr(name, '/') || strlen(name) >= EMU_NAME_MAX)
        return NULL;
    memcpy(path, "/dev/shm/", 9);
    strcpy(path + 9, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= min_size && st.st_size > 0)
        p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return NULL;
    *len_out = (uint64_t)st.st_size;
    return p;
}

/* ------------------------------------------------------------------ */
/* the submission ring                                                 */

static int ring_push(struct emu_control *ctl, uint32_t record)
{
    struct emu_cell *ring = cells(ctl);
    uint64_t q = ctl->ring_size;
    uint64_t pos = atomic_load_explicit(&ctl->enq_pos, memory_order_relaxed);
    for (;;) {
        struct emu_cell *cell = &ring[pos % q];
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&ctl->enq_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                cell->record = record;
                atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
                return 1;
            }
        } else if (diff < 0) {
            return 0;               /* full: the queue answers busy */
        } else {
            pos = atomic_load_explicit(&ctl->enq_pos, memory_order_relaxed);
        }
    }
}

static int ring_pop(struct emu_control *ctl, uint32_t *record)
{
    struct emu_cell *ring = cells(ctl);
    uint64_t q = ctl->ring_size;
    uint64_t pos = atomic_load_explicit(&ctl->deq_pos, memory_order_relaxed);
    for (;;) {
        struct emu_cell *cell = &ring[pos % q];
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - (pos + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&ctl->deq_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                *record = cell->record;
                atomic_store_explicit(&cell->seq, pos + q, memory_order_release);
                return 1;
            }
        } else if (diff < 0) {
            return 0;               /* empty */
        } else {
            pos = atomic_load_explicit(&ctl->deq_pos, memory_order_relaxed);
        }
    }
}

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
        void *p = map_segment(s->name, s->size, &got);
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
    int64_t left = deadline - now_ns();
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
    struct emu_record *rec = &records(ctl)[index];
    int64_t t0 = now_ns();
    atomic_store(&rec->state, REC_RUNNING);
    uint64_t seq = atomic_fetch_add(&ctl->job_seq, 1);
    int op = rec->op;
    uint32_t out_len = 0;
    int status;

    count(ctl, op == MFD_OP_COMPRESS ? C_COMPRESS : C_DECOMPRESS, 1);
    int64_t model = service_ns(c, op, op == MFD_OP_COMPRESS ? rec->in_len : rec->out_cap,
                               chance(c->seed, seq, 1));
    if (c->slow_job_rate > 0 && chance(c->seed, seq, 2) < c->slow_job_rate) {
        model += (int64_t)(c->slow_job_us * 1e3);
        count(ctl, C_SLOW_JOBS, 1);
    }
    const uint8_t *in = resolve(dev, rec->in_seg, rec->in_off, rec->in_len);
    uint8_t *out = resolve(dev, rec->out_seg, rec->out_off, rec->out_cap);
    if (!in || !out || rec->in_len == 0 || rec->out_cap == 0 || !owner_alive(rec->owner)) {
        /* a dead client's jobs are dropped, as the kernel drains a dead
         * process's descriptors: its replacement reuses the same slots */
        status = MFD_E_DEVICE;
    } else if (c->job_error_rate > 0 && chance(c->seed, seq, 3) < c->job_error_rate) {
        status = MFD_E_HW;
        count(ctl, C_JOB_ERRORS, 1);
    } else if (c->overflow_rate > 0 && chance(c->seed, seq, 4) < c->overflow_rate) {
        status = MFD_MORE_OUTPUT;
        count(ctl, C_OVERFLOWS, 1);
    } else if (op == MFD_OP_COMPRESS) {
        status = emu_compress(e, in, rec->in_len, out, rec->out_cap, &out_len);
        if (status == MFD_MORE_OUTPUT)
            count(ctl, C_MORE_OUTPUT, 1);
    } else {
        status = emu_decompress(e, in, rec->in_len, out, rec->out_cap, &out_len);
        if (status != MFD_OK)
            count(ctl, C_BAD_STREAMS, 1);
    }
    if (status != MFD_OK)
        out_len = 0;
    sleep_until(t0 + model);

    rec->status = status;
    rec->out_len = out_len;
    count(ctl, C_JOBS_DONE, 1);
    count(ctl, C_BUSY_NS, (uint64_t)(now_ns() - t0));
    atomic_store(&rec->state, REC_DONE);
    if (atomic_load(&rec->waiting))
        futex_wake(&rec->state, INT_MAX);
}

static void *engine_main(void *arg)
{
    struct emu_engine *e = arg;
    struct emu_control *ctl = e->dev->ctl;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  /* short modelled waits stay short */
    while (atomic_load(&ctl->running)) {
        uint32_t index;
        if (!ring_pop(ctl, &index)) {
            uint32_t seq = atomic_load(&ctl->work_seq);
            atomic_fetch_add(&ctl->sleepers, 1);
            int got = ring_pop(ctl, &index);
            if (!got)
                futex_wait(&ctl->work_seq, seq, 50000000);
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
    futex_wake(&ctl->work_seq, INT_MAX);
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
    struct emu_record *recs = records(ctl);
    uint64_t n = (uint64_t)ctl->cfg.clients * ctl->cfg.page_count;
    for (uint64_t i = 0; i < n; i++)
        if (atomic_load(&recs[i].waiting))
            futex_wake(&recs[i].state, INT_MAX);
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
    dev->ctl = map_segment(shm_name, need, &dev->map_len);
    if (!dev->engines || !dev->ctl) {
        int status = dev->engines ? MFD_E_PARAM : MFD_E_NOMEM;
        device_free(dev);
        return status;
    }
    struct emu_control *ctl = dev->ctl;
    memset(ctl, 0, need);
    ctl->version = EMU_VERSION;
    ctl->device_pid = (int32_t)getpid();
    ctl->cfg = *cfg;
    ctl->cells_off = align64(sizeof(struct emu_control));
    ctl->ring_size = ring_cells(cfg);
    ctl->records_off = ctl->cells_off + align64((uint64_t)ctl->ring_size * sizeof(struct emu_cell));
    ctl->total_size = need;
    for (uint64_t i = 0; i < ctl->ring_size; i++)
        atomic_store(&cells(ctl)[i].seq, i);
    atomic_store(&ctl->running, 1);
    atomic_thread_fence(memory_order_seq_cst);
    ctl->magic = EMU_MAGIC;       /* clients check it last */

    for (uint32_t i = 0; i < cfg->engines; i++) {
        struct emu_engine *e = &dev->engines[i];
        dev->engine_count = i + 1;
        if (!engine_init(e, dev) ||
            pthread_create(&e->thread, NULL, engine_main, e) != 0) {
            engines_stop(dev);
            device_free(dev);
            return MFD_E_DEVICE;
        }
        e->started = 1;
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

/* ------------------------------------------------------------------ */
/* clients: the work queue a worker or reader drives                   */

struct emu_binding {
    uint32_t record;
};

struct emu_map {
    uintptr_t base;
    uint64_t len;
    uint32_t seg;
};

struct emu_client {
    mfd_workqueue wq;               /* first: the queue handle is the client */
    struct emu_control *ctl;
    uint64_t map_len;
    int same_process;
    int32_t pid;
    uint32_t page_count, bound;
    struct emu_binding *bindings;   /* page_count; job->priv points at one */
    uint32_t nmaps;
    struct emu_map maps[EMU_MAX_SEGS];
};

/* the record of job, binding a fresh one on first use; NULL if none is left */
static struct emu_record *bind(struct emu_client *cl, mfd_job *job)
{
    struct emu_binding *b = job->priv;
    if (!(b >= cl->bindings && b < cl->bindings + cl->page_count)) {
        if (cl->bound == cl->page_count)
            return NULL;
        b = &cl->bindings[cl->bound++];
        job->priv = b;
    }
    return &records(cl->ctl)[b->record];
}

static struct emu_record *bound_record(struct emu_client *cl, mfd_job *job)
{
    struct emu_binding *b = job->priv;
    if (!(b >= cl->bindings && b < cl->bindings + cl->bound))
        return NULL;
    return &records(cl->ctl)[b->record];
}

/* (segment, offset) of [p, p + len), or 0 if no registered segment holds it */
static int locate(struct emu_client *cl, const void *p, uint64_t len, uint32_t *seg, uint64_t *off)
{
    uintptr_t a = (uintptr_t)p;
    for (uint32_t i = 0; i < cl->nmaps; i++) {
        struct emu_map *m = &cl->maps[i];
        if (a >= m->base && a - m->base <= m->len && len <= m->len - (a - m->base)) {
            *seg = m->seg;
            *off = a - m->base;
            return 1;
        }
    }
    if (!cl->same_process)
        return 0;
    *seg = EMU_DIRECT;
    *off = a;
    return 1;
}

/* a busy storm refuses every submission until it ends (seeded start) */
static int storm_busy(struct emu_control *ctl)
{
    const mfd_emu_config *c = &ctl->cfg;
    if (c->busy_storm_rate <= 0)
        return 0;
    int64_t now = now_ns();
    if (now < atomic_load(&ctl->storm_until_ns))
        return 1;
    uint64_t seq = atomic_fetch_add(&ctl->submit_seq, 1);
    if (chance(c->seed, seq, 5) >= c->busy_storm_rate)
        return 0;
    atomic_store(&ctl->storm_until_ns, now + (int64_t)(c->busy_storm_us * 1e3));
    count(ctl, C_STORMS, 1);
    return 1;
}

static int emu_submit(void *ctx, mfd_job *job)
{
    struct emu_client *cl = ctx;
    if (!cl || !job || (job->op != MFD_OP_COMPRESS && job->op != MFD_OP_DECOMPRESS))
        return MFD_E_PARAM;
    struct emu_control *ctl = cl->ctl;
    if (!atomic_load(&ctl->running))
        return MFD_E_DEVICE;
    struct emu_record *rec = bind(cl, job);
    if (!rec || atomic_load(&rec->state) != REC_FREE)
        return MFD_E_PARAM;
    uint32_t in_seg, out_seg;
    uint64_t in_off, out_off;
    if (!locate(cl, job->in, job->in_len, &in_seg, &in_off) ||
        !locate(cl, job->out, job->out_cap, &out_seg, &out_off))
        return MFD_E_DEVICE;
    count(ctl, C_SUBMITS, 1);
    if (storm_busy(ctl)) {
        count(ctl, C_BUSY_STORM, 1);
        return MFD_BUSY;
    }
    rec->op = job->op;
    rec->in_seg = in_seg;
    rec->in_off = in_off;
    rec->in_len = job->in_len;
    rec->out_seg = out_seg;
    rec->out_off = out_off;
    rec->out_cap = job->out_cap;
    rec->out_len = 0;
    rec->status = MFD_BEING_PROCESSED;
    rec->owner = cl->pid;
    atomic_store(&rec->waiting, 0);
    atomic_store(&rec->state, REC_QUEUED);
    uint32_t index = (uint32_t)(rec - records(ctl));
    int room = atomic_fetch_add(&ctl->queued, 1) < ctl->cfg.queue_size;
    if (!room || !ring_push(ctl, index)) {
        atomic_fetch_sub(&ctl->queued, 1);
        atomic_store(&rec->state, REC_FREE);
        count(ctl, C_BUSY_FULL, 1);
        return MFD_BUSY;
    }
    count(ctl, C_ACCEPTED, 1);
    atomic_fetch_add(&ctl->work_seq, 1);
    if (atomic_load(&ctl->sleepers))
        futex_wake(&ctl->work_seq, 1);
    return MFD_OK;
}

static int emu_check(void *ctx, mfd_job *job)
{
    struct emu_client *cl = ctx;
    if (!cl || !job)
        return MFD_E_PARAM;
    struct emu_record *rec = bound_record(cl, job);
    if (!rec)
        return MFD_NOT_SUBMITTED;
    switch (atomic_load(&rec->state)) {
    case REC_FREE:
        return MFD_NOT_SUBMITTED;
    case REC_DONE:
        return rec->status;
    default:
        return atomic_load(&cl->ctl->stopped) ? MFD_E_DEVICE : MFD_BEING_PROCESSED;
    }
}

static int emu_wait(void *ctx, mfd_job *job)
{
    struct emu_client *cl = ctx;
    if (!cl || !job)
        return MFD_E_PARAM;
    struct emu_record *rec = bound_record(cl, job);
    if (!rec || atomic_load(&rec->state) == REC_FREE)
        return MFD_NOT_SUBMITTED;
    for (int spin = 0; atomic_load(&rec->state) != REC_DONE; spin++) {
        if (atomic_load(&cl->ctl->stopped)) {
            if (atomic_load(&rec->state) == REC_DONE)
                break;
            atomic_store(&rec->state, REC_FREE);    /* never to be served */
            return MFD_E_DEVICE;
        }
        if (spin < EMU_SPIN) {
            sched_yield();
            continue;
        }
        atomic_store(&rec->waiting, 1);
        uint32_t state = atomic_load(&rec->state);
        if (state != REC_DONE)
            futex_wait(&rec->state, state, 50000000);
        atomic_store(&rec->waiting, 0);
    }
    int status = rec->status;
    job->out_len = rec->out_len;
    job->status = status;
    atomic_store(&rec->state, REC_FREE);
    return status;
}

mfd_workqueue *mfd_emu_queue_new(const char *shm_name, uint32_t page_count, int *status)
{
    int scratch;
    if (!status)
        status = &scratch;
    *status = MFD_E_PARAM;
    if (page_count == 0)
        return NULL;
    uint64_t len = 0;
    struct emu_control *ctl = map_segment(shm_name, sizeof(struct emu_control), &len);
    if (!ctl) {
        *status = MFD_E_DEVICE;
        return NULL;
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (ctl->magic != EMU_MAGIC || ctl->version != EMU_VERSION || ctl->total_size > len ||
        !atomic_load(&ctl->running)) {
        munmap(ctl, len);
        *status = MFD_E_DEVICE;
        return NULL;
    }
    if (ctl->cfg.init_status != 0) {
        /* the hardware probe failed: nothing of this attempt is kept */
        *status = ctl->cfg.init_status;
        munmap(ctl, len);
        return NULL;
    }
    if (page_count > ctl->cfg.page_count) {
        munmap(ctl, len);
        return NULL;
    }
    uint32_t id = atomic_fetch_add(&ctl->next_client, 1);
    struct emu_client *cl = id < ctl->cfg.clients ? calloc(1, sizeof *cl) : NULL;
    struct emu_binding *bindings = cl ? calloc(page_count, sizeof *bindings) : NULL;
    if (!bindings) {
        *status = cl ? MFD_E_NOMEM : MFD_E_DEVICE;
        free(cl);
        munmap(ctl, len);
        return NULL;
    }
    for (uint32_t i = 0; i < page_count; i++)
        bindings[i].record = id * ctl->cfg.page_count + i;
    cl->ctl = ctl;
    cl->map_len = len;
    cl->pid = (int32_t)getpid();
    cl->same_process = ctl->device_pid == cl->pid;
    cl->page_count = page_count;
    cl->bindings = bindings;
    cl->wq.submit = emu_submit;
    cl->wq.check = emu_check;
    cl->wq.wait = emu_wait;
    cl->wq.ctx = cl;
    cl->wq.is_hardware = 1;
    cl->wq.kind = MFD_WQ_EMULATED;
    *status = MFD_OK;
    return &cl->wq;
}

int mfd_emu_queue_map(mfd_workqueue *wq, const char *seg_name, uintptr_t base, uint64_t len)
{
    if (!wq || !seg_name || !*seg_name || strchr(seg_name, '/') ||
        strlen(seg_name) >= EMU_NAME_MAX || len == 0)
        return MFD_E_PARAM;
    if (wq->kind != MFD_WQ_EMULATED)
        return MFD_E_WRONG_QUEUE;   /* not an emu_client: its layout is another queue's */
    struct emu_client *cl = (struct emu_client *)wq;
    if (cl->nmaps == EMU_MAX_SEGS)
        return MFD_E_DEVICE;
    struct emu_control *ctl = cl->ctl;
    uint32_t found = EMU_MAX_SEGS;
    for (uint32_t i = 0; i < EMU_MAX_SEGS && found == EMU_MAX_SEGS; i++) {
        struct emu_seg *s = &ctl->segs[i];
        uint32_t state = atomic_load(&s->state);
        if (state == SEG_READY && strcmp(s->name, seg_name) == 0 && s->size >= len) {
            found = i;
        } else if (state == SEG_EMPTY) {
            uint32_t expected = SEG_EMPTY;
            if (atomic_compare_exchange_strong(&s->state, &expected, SEG_WRITING)) {
                strcpy(s->name, seg_name);
                s->size = len;
                atomic_store(&s->state, SEG_READY);
                found = i;
            }
        }
    }
    if (found == EMU_MAX_SEGS)
        return MFD_E_DEVICE;
    cl->maps[cl->nmaps++] = (struct emu_map){ base, len, found };
    return MFD_OK;
}

void mfd_emu_queue_free(mfd_workqueue *wq)
{
    if (!wq || wq->kind != MFD_WQ_EMULATED)
        return;
    struct emu_client *cl = (struct emu_client *)wq;
    munmap(cl->ctl, cl->map_len);
    free(cl->bindings);
    free(cl);
}
