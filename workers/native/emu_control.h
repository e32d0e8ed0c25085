/*
 * emu_control.h: the emulated IAA device's control segment, shared by the
 * device (iaa_emulator.c), its clients (emu_client.c) and the ring
 * (emu_ring.c).  Internal: not part of the cffi cdef.
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
#ifndef MFD_EMU_CONTROL_H
#define MFD_EMU_CONTROL_H

#include <stdatomic.h>
#include <stdint.h>

#include "status.h"
#include "pagecodec.h"
#include "iaa_emulator.h"

#define EMU_MAGIC 0x4d46442d49414145ull     /* "MFD-IAAE" */
#define EMU_VERSION 2
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
    uint64_t cells_off, owners_off, records_off, total_size;
    mfd_emu_config cfg;
    _Atomic uint32_t running;       /* engines take jobs */
    _Atomic uint32_t stopped;       /* engines joined: no record changes any more */
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

/* shared by the device (iaa_emulator.c), its clients (emu_client.c) and
 * the ring (emu_ring.c); emu_control.c */
int64_t emu_now_ns(void);
void emu_count(struct emu_control *ctl, int which, uint64_t n);
/* process-shared futex wait with a timeout in ns; spurious returns are fine */
void emu_futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns);
void emu_futex_wake(_Atomic uint32_t *addr, int count);
/* splitmix64 of (seed, sequence number, decision): a uniform double in [0, 1) */
double emu_chance(uint64_t seed, uint64_t seq, uint64_t what);
struct emu_cell *emu_cells(struct emu_control *ctl);
struct emu_record *emu_records(struct emu_control *ctl);
_Atomic int32_t *emu_owners(struct emu_control *ctl);
void emu_control_init(struct emu_control *ctl, const mfd_emu_config *cfg, uint64_t size);
/* map /dev/shm/<name>: its whole length, or NULL if shorter than min_size */
void *emu_map_segment(const char *name, uint64_t min_size, uint64_t *len_out);

/* the submission ring (emu_ring.c): 0 when full / empty */
int emu_ring_push(struct emu_control *ctl, uint32_t record);
int emu_ring_pop(struct emu_control *ctl, uint32_t *record);

#endif
