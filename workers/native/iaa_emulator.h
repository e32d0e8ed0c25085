/*
 * iaa_emulator: an emulated Intel IAA device with one shared work queue.
 *
 * The device lives in the process that starts it: `engines` native threads
 * serve a bounded submission ring of `queue_size` entries.  Ring, job
 * records and counters sit in one POSIX shared-memory segment (the control
 * segment), so clients in other processes (the engine's workers) submit to
 * the same queue, as the workers of a real host share one IAA WQ.  Page
 * data never passes through the control segment: a job names its input and
 * output as (registered shared-memory segment, offset, length), and the
 * device maps those segments itself.  A client in the device's own process
 * may hand plain addresses instead.
 *
 * Submission never blocks: a full ring (or an injected busy storm) answers
 * MFD_BUSY at once.  Completion is asynchronous; check/wait give each job's
 * own status.  Output is raw DEFLATE (fixed Huffman, zlib level 1, 4 KiB
 * window) and decompression refuses distances beyond 4 KiB, as IAA does.
 *
 * Part of the cffi cdef (see build_native.py): declarations only, and a
 * guard that build_native.py drops.
 */
#ifndef MFD_IAA_EMULATOR_H
#define MFD_IAA_EMULATOR_H

/* how a device behaves; faults are seeded so a run can be repeated */
typedef struct mfd_emu_config {
    uint32_t queue_size;         /* submission ring entries (a shared WQ's size) */
    uint32_t engines;            /* engine threads */
    uint32_t clients;            /* clients (workers, readers) that may attach */
    uint32_t page_count;         /* job records per client */
    double latency_us;           /* service time floor per job: latency + bytes / rate */
    double engine_mb_per_s;      /* compress rate of one engine */
    double decompress_speedup;   /* decompression is this much faster */
    double jitter;               /* service time varies by +- this fraction */
    uint64_t seed;               /* fault injection */
    double busy_storm_rate;      /* chance a submission starts a busy storm */
    double busy_storm_us;        /* how long a storm refuses every submission */
    double job_error_rate;       /* chance a job completes with MFD_E_HW */
    double overflow_rate;        /* chance a job reports MFD_MORE_OUTPUT */
    double slow_job_rate;        /* chance a job takes slow_job_us longer */
    double slow_job_us;
    int32_t init_status;         /* != 0: attaching (the hardware probe) fails with it */
} mfd_emu_config;

/* what the device did and injected; a snapshot */
typedef struct mfd_emu_counters {
    uint64_t submits;            /* submit calls */
    uint64_t accepted;           /* jobs queued */
    uint64_t busy_full;          /* busy answers: ring full */
    uint64_t busy_storm;         /* busy answers: during an injected storm */
    uint64_t storms;             /* injected busy storms */
    uint64_t jobs_done;
    uint64_t compress_jobs;
    uint64_t decompress_jobs;
    uint64_t more_output;        /* compress output did not fit (not injected) */
    uint64_t bad_streams;        /* decompress input refused (not injected) */
    uint64_t job_errors;         /* injected job errors */
    uint64_t overflows;          /* injected output overflows */
    uint64_t slow_jobs;          /* injected slow jobs */
    uint64_t busy_ns;            /* engine time spent on jobs, summed */
} mfd_emu_counters;

typedef struct mfd_emu_device mfd_emu_device;

/* bytes the control segment needs for cfg (0 if cfg is unusable) */
uint64_t mfd_emu_control_size(const mfd_emu_config *cfg);

/*
 * Lay out the control segment /dev/shm/<shm_name> (already created, at least
 * mfd_emu_control_size bytes) and start the engines.  MFD_OK, MFD_E_PARAM
 * (bad config or segment), MFD_E_NOMEM or MFD_E_DEVICE (no threads).
 */
int mfd_emu_device_start(const char *shm_name, const mfd_emu_config *cfg,
                         mfd_emu_device **out);
/* stop taking jobs, finish the running ones, join the engines, unmap; frees dev */
void mfd_emu_device_stop(mfd_emu_device *dev);
void mfd_emu_device_counters(const mfd_emu_device *dev, mfd_emu_counters *out);

/*
 * A work queue on the device whose control segment is shm_name, for up to
 * page_count jobs.  On failure NULL, and *status says why: the device's
 * injected init status, MFD_E_DEVICE (no room, stopped, not a device) or
 * MFD_E_PARAM.
 */
mfd_workqueue *mfd_emu_queue_new(const char *shm_name, uint32_t page_count, int *status);
/* tell the device which shared-memory segment is mapped at [base, base+len) here;
 * MFD_E_WRONG_QUEUE for a queue that is not an emulated device's */
int mfd_emu_queue_map(mfd_workqueue *wq, const char *seg_name, uintptr_t base, uint64_t len);
void mfd_emu_queue_free(mfd_workqueue *wq);

#endif
