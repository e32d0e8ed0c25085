/*
 * qpl_shim.c: Intel QPL as an mfd_workqueue (see qpl_shim.h).
 *
 * Mirrors migration/multifd-qpl.c: hardware jobs are submitted without
 * blocking and collected with qpl_wait_job; the software job runs inside
 * submit (QPL's software path is synchronous anyway).  Every job is one
 * independent raw-DEFLATE stream (FIRST|LAST), level 1, fixed Huffman;
 * compression skips QPL's verify pass (OMIT_VERIFY), as QEMU does.
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "pagecodec.h"
#include "qpl_shim.h"
#include "qpl_defs.h"

_Static_assert(MFD_QPL_PATH_HARDWARE == QPL_PATH_HARDWARE, "qpl_path_t");
_Static_assert(MFD_QPL_PATH_SOFTWARE == QPL_PATH_SOFTWARE, "qpl_path_t");

struct qpl_api {
    qpl_get_job_size_fn get_job_size;
    qpl_init_job_fn init_job;
    qpl_job_fn submit_job, check_job, wait_job, execute_job, fini_job;
    qpl_get_library_version_fn get_library_version;
};

struct mfd_qpl {
    struct qpl_api api;
    char version[32];
};

struct qpl_queue {
    mfd_workqueue wq;               /* first: the queue handle is the queue */
    struct qpl_api api;
    int path;
    uint32_t count, bound;
    void **jobs;                    /* count qpl_job allocations */
    void **bindings;                /* jobs handed out; job->priv points at one entry */
};

static void set_err(char *err, uint32_t cap, const char *fmt, const char *a, const char *b)
{
    if (err && cap)
        snprintf(err, cap, fmt, a ? a : "", b ? b : "");
}

static int version_ok(const char *v)
{
    unsigned major = 0, minor = 0;
    if (!v || sscanf(v, "%u.%u", &major, &minor) != 2)
        return 0;
    return major > MFD_QPL_MIN_MAJOR || (major == MFD_QPL_MIN_MAJOR && minor >= MFD_QPL_MIN_MINOR);
}

mfd_qpl *mfd_qpl_open(const char *path, char *err, uint32_t err_cap)
{
    if (err && err_cap)
        err[0] = '\0';
    if (!path || !*path) {
        set_err(err, err_cap, "no library path given%s%s", NULL, NULL);
        return NULL;
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        set_err(err, err_cap, "%s%s", dlerror(), NULL);
        return NULL;
    }
    struct qpl_api api;
    struct { const char *name; void **slot; } syms[] = {
        { "qpl_get_job_size", (void **)&api.get_job_size },
        { "qpl_init_job", (void **)&api.init_job },
        { "qpl_submit_job", (void **)&api.submit_job },
        { "qpl_check_job", (void **)&api.check_job },
        { "qpl_wait_job", (void **)&api.wait_job },
        { "qpl_execute_job", (void **)&api.execute_job },
        { "qpl_fini_job", (void **)&api.fini_job },
        { "qpl_get_library_version", (void **)&api.get_library_version },
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot) {
            set_err(err, err_cap, "%s has no function %s", path, syms[i].name);
            dlclose(lib);
            return NULL;
        }
    }
    const char *version = api.get_library_version();
    if (!version_ok(version)) {
        set_err(err, err_cap, "libqpl %s at %s is too old: 1.6 or newer is needed",
                version ? version : "(no version)", path);
        dlclose(lib);
        return NULL;
    }
    mfd_qpl *q = calloc(1, sizeof *q);
    if (!q) {
        set_err(err, err_cap, "out of memory%s%s", NULL, NULL);
        dlclose(lib);
        return NULL;
    }
    q->api = api;
    snprintf(q->version, sizeof q->version, "%s", version);
    /* the library stays loaded for the process: queues keep its functions */
    return q;
}

void mfd_qpl_close(mfd_qpl *q)
{
    free(q);
}

const char *mfd_qpl_version(const mfd_qpl *q)
{
    return q ? q->version : "";
}

static int map_status(int qpl_status)
{
    switch (qpl_status) {
    case QPL_STS_OK:
        return MFD_OK;
    case QPL_STS_BEING_PROCESSED:
        return MFD_BEING_PROCESSED;
    case QPL_STS_MORE_OUTPUT_NEEDED:
        return MFD_MORE_OUTPUT;
    case QPL_STS_QUEUES_ARE_BUSY_ERR:
        return MFD_BUSY;
    default:
        return MFD_QPL_STATUS_BASE + qpl_status;
    }
}

/* a job of `path`, initialised; NULL and *status on failure (the allocation is freed) */
static void *job_new(const struct qpl_api *api, int path, int *status)
{
    uint32_t size = 0;
    *status = api->get_job_size(path, &size);
    if (*status != QPL_STS_OK)
        return NULL;
    void *job = aligned_alloc(64, ((size_t)size + 63) & ~(size_t)63);
    if (!job) {
        *status = MFD_E_NOMEM;
        return NULL;
    }
    memset(job, 0, size);
    *status = api->init_job(path, job);
    if (*status != QPL_STS_OK) {
        free(job);      /* "init failure is a trap": never use, never fini */
        return NULL;
    }
    return job;
}

static void job_free(const struct qpl_api *api, void *job)
{
    if (job) {
        api->fini_job(job);
        free(job);
    }
}

int mfd_qpl_probe_hardware(mfd_qpl *q)
{
    if (!q)
        return MFD_E_PARAM;
    int status;
    void *job = job_new(&q->api, QPL_PATH_HARDWARE, &status);
    job_free(&q->api, job);
    return status;
}

static void prepare(void *qjob, const mfd_job *job)
{
    mfd_qpl_job_head *h = qjob;
    h->next_in_ptr = (uint8_t *)job->in;
    h->available_in = job->in_len;
    h->total_in = 0;
    h->next_out_ptr = job->out;
    h->available_out = job->out_cap;
    h->total_out = 0;
    h->crc = 0;
    h->level = QPL_LEVEL_1;
    if (job->op == MFD_OP_COMPRESS) {
        h->op = QPL_OP_COMPRESS;
        h->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST | QPL_FLAG_OMIT_VERIFY;
    } else {
        h->op = QPL_OP_DECOMPRESS;
        h->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST;
    }
}

static int op_ok(const mfd_job *job)
{
    return job && (job->op == MFD_OP_COMPRESS || job->op == MFD_OP_DECOMPRESS) &&
           job->in && job->out;
}

/* the qpl job bound to job, binding the next free one on first use */
static void *bind(struct qpl_queue *qq, mfd_job *job, int create)
{
    void **b = job->priv;
    if (b >= qq->bindings && b < qq->bindings + qq->bound)
        return *b;
    if (!create || qq->bound == qq->count)
        return NULL;
    b = &qq->bindings[qq->bound++];
    job->priv = b;
    return *b;
}

/* hardware: queue the job and return at once (busy if every WQ refused) */
static int hw_submit(void *ctx, mfd_job *job)
{
    struct qpl_queue *qq = ctx;
    if (!qq || !op_ok(job))
        return MFD_E_PARAM;
    void *qjob = bind(qq, job, 1);
    if (!qjob)
        return MFD_E_PARAM;
    prepare(qjob, job);
    return map_status(qq->api.submit_job(qjob));
}

static int hw_finish(struct qpl_queue *qq, mfd_job *job, int qpl_status)
{
    int status = map_status(qpl_status);
    mfd_qpl_job_head *h = bind(qq, job, 0);
    job->out_len = status == MFD_OK && h ? h->total_out : 0;
    job->status = status;
    return status;
}

static int hw_check(void *ctx, mfd_job *job)
{
    struct qpl_queue *qq = ctx;
    if (!qq || !job)
        return MFD_E_PARAM;
    void *qjob = bind(qq, job, 0);
    if (!qjob)
        return MFD_NOT_SUBMITTED;
    int st = qq->api.check_job(qjob);
    return st == QPL_STS_BEING_PROCESSED ? MFD_BEING_PROCESSED : hw_finish(qq, job, st);
}

static int hw_wait(void *ctx, mfd_job *job)
{
    struct qpl_queue *qq = ctx;
    if (!qq || !job)
        return MFD_E_PARAM;
    void *qjob = bind(qq, job, 0);
    if (!qjob)
        return MFD_NOT_SUBMITTED;
    return hw_finish(qq, job, qq->api.wait_job(qjob));
}

/* software: one job, run to the end inside submit, as pagecodec's software queue */
static int sw_submit(void *ctx, mfd_job *job)
{
    struct qpl_queue *qq = ctx;
    if (!qq || !op_ok(job))
        return MFD_E_PARAM;
    mfd_qpl_job_head *h = qq->jobs[0];
    prepare(h, job);
    int status = map_status(qq->api.execute_job(h));
    job->out_len = status == MFD_OK ? h->total_out : 0;
    job->status = status;
    job->submitted = 1;
    return MFD_OK;
}

void mfd_qpl_queue_free(mfd_workqueue *wq)
{
    if (!wq || wq->kind != MFD_WQ_QPL)
        return;
    struct qpl_queue *qq = (struct qpl_queue *)wq;
    for (uint32_t i = 0; qq->jobs && i < qq->count; i++)
        job_free(&qq->api, qq->jobs[i]);
    free(qq->jobs);
    free(qq->bindings);
    free(qq);
}

mfd_workqueue *mfd_qpl_queue_new(mfd_qpl *q, int path, uint32_t count, int *qpl_status)
{
    int scratch;
    if (!qpl_status)
        qpl_status = &scratch;
    *qpl_status = MFD_E_PARAM;
    if (!q || count == 0 || (path != QPL_PATH_HARDWARE && path != QPL_PATH_SOFTWARE))
        return NULL;
    if (path == QPL_PATH_SOFTWARE)
        count = 1;
    struct qpl_queue *qq = calloc(1, sizeof *qq);
    if (qq)
        qq->wq.kind = MFD_WQ_QPL;   /* first: the error paths free it as one */
    if (!qq || !(qq->jobs = calloc(count, sizeof *qq->jobs)) ||
        !(qq->bindings = calloc(count, sizeof *qq->bindings))) {
        *qpl_status = MFD_E_NOMEM;
        mfd_qpl_queue_free(qq ? &qq->wq : NULL);
        return NULL;
    }
    qq->api = q->api;
    qq->path = path;
    qq->count = count;
    for (uint32_t i = 0; i < count; i++) {
        qq->jobs[i] = job_new(&qq->api, path, qpl_status);
        if (!qq->jobs[i]) {
            mfd_qpl_queue_free(&qq->wq);
            return NULL;
        }
        qq->bindings[i] = qq->jobs[i];
    }
    int hw = path == QPL_PATH_HARDWARE;
    qq->wq.submit = hw ? hw_submit : sw_submit;
    qq->wq.check = hw ? hw_check : mfd_sync_check;
    qq->wq.wait = hw ? hw_wait : mfd_sync_wait;
    qq->wq.ctx = qq;
    qq->wq.is_hardware = hw;
    *qpl_status = QPL_STS_OK;
    return &qq->wq;
}
