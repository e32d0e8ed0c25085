/*
 * emu_client.c: the work queue a worker or reader has on an emulated IAA
 * device (mfd_emu_queue_*, see iaa_emulator.h): submit, check and wait
 * through the control segment, from any process.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu_control.h"

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
    uint32_t id;                    /* its place: records id * cfg.page_count on */
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
    return &emu_records(cl->ctl)[b->record];
}

static struct emu_record *bound_record(struct emu_client *cl, mfd_job *job)
{
    struct emu_binding *b = job->priv;
    if (!(b >= cl->bindings && b < cl->bindings + cl->bound))
        return NULL;
    return &emu_records(cl->ctl)[b->record];
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
    int64_t now = emu_now_ns();
    if (now < atomic_load(&ctl->storm_until_ns))
        return 1;
    uint64_t seq = atomic_fetch_add(&ctl->submit_seq, 1);
    if (emu_chance(c->seed, seq, 5) >= c->busy_storm_rate)
        return 0;
    atomic_store(&ctl->storm_until_ns, now + (int64_t)(c->busy_storm_us * 1e3));
    emu_count(ctl, C_STORMS, 1);
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
    emu_count(ctl, C_SUBMITS, 1);
    if (storm_busy(ctl)) {
        emu_count(ctl, C_BUSY_STORM, 1);
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
    uint32_t index = (uint32_t)(rec - emu_records(ctl));
    int room = atomic_fetch_add(&ctl->queued, 1) < ctl->cfg.queue_size;
    if (!room || !emu_ring_push(ctl, index)) {
        atomic_fetch_sub(&ctl->queued, 1);
        atomic_store(&rec->state, REC_FREE);
        emu_count(ctl, C_BUSY_FULL, 1);
        return MFD_BUSY;
    }
    emu_count(ctl, C_ACCEPTED, 1);
    atomic_fetch_add(&ctl->work_seq, 1);
    if (atomic_load(&ctl->sleepers))
        emu_futex_wake(&ctl->work_seq, 1);
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
            emu_futex_wait(&rec->state, state, 50000000);
        atomic_store(&rec->waiting, 0);
    }
    int status = rec->status;
    job->out_len = rec->out_len;
    job->status = status;
    atomic_store(&rec->state, REC_FREE);
    return status;
}

/* ------------------------------------------------------------------ */
/* client places: page_count job records each, cfg.clients of them      */

static int process_gone(int32_t pid)
{
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/* no job of place id is queued or running: the device will not touch it */
static int place_idle(struct emu_control *ctl, uint32_t id)
{
    struct emu_record *recs = emu_records(ctl) + (uint64_t)id * ctl->cfg.page_count;
    for (uint32_t i = 0; i < ctl->cfg.page_count; i++) {
        uint32_t state = atomic_load(&recs[i].state);
        if (state == REC_QUEUED || state == REC_RUNNING)
            return 0;
    }
    return 1;
}

/*
 * A place for process pid: a free one, else one whose process is gone and
 * whose jobs have all finished.  A worker that was killed and replaced
 * leaves its place behind; taking such places over keeps a run with many
 * replacements from running out of them.  Its finished records are reset
 * for the new owner.  Returns 0 when every place is held.
 */
static int claim_place(struct emu_control *ctl, int32_t pid, uint32_t *id_out)
{
    _Atomic int32_t *owners = emu_owners(ctl);
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t id = 0; id < ctl->cfg.clients; id++) {
            int32_t owner = atomic_load(&owners[id]);
            if (pass == 0 ? owner != 0
                          : owner == 0 || !process_gone(owner) || !place_idle(ctl, id))
                continue;
            if (!atomic_compare_exchange_strong(&owners[id], &owner, pid))
                continue;           /* another process took it first */
            struct emu_record *recs = emu_records(ctl) + (uint64_t)id * ctl->cfg.page_count;
            for (uint32_t i = 0; i < ctl->cfg.page_count; i++) {
                atomic_store(&recs[i].waiting, 0);
                atomic_store(&recs[i].state, REC_FREE);
            }
            *id_out = id;
            return 1;
        }
    }
    return 0;
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
    struct emu_control *ctl = emu_map_segment(shm_name, sizeof(struct emu_control), &len);
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
    uint32_t id;
    if (!claim_place(ctl, (int32_t)getpid(), &id)) {
        *status = MFD_E_DEVICE;     /* every place held by a live process */
        munmap(ctl, len);
        return NULL;
    }
    struct emu_client *cl = calloc(1, sizeof *cl);
    struct emu_binding *bindings = cl ? calloc(page_count, sizeof *bindings) : NULL;
    if (!bindings) {
        *status = MFD_E_NOMEM;
        free(cl);
        atomic_store(&emu_owners(ctl)[id], 0);
        munmap(ctl, len);
        return NULL;
    }
    for (uint32_t i = 0; i < page_count; i++)
        bindings[i].record = id * ctl->cfg.page_count + i;
    cl->ctl = ctl;
    cl->id = id;
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
    /* its place is free again once no job of it is left with the device */
    if (place_idle(cl->ctl, cl->id)) {
        int32_t me = cl->pid;
        atomic_compare_exchange_strong(&emu_owners(cl->ctl)[cl->id], &me, 0);
    }
    munmap(cl->ctl, cl->map_len);
    free(cl->bindings);
    free(cl);
}
