/*
 * emu_control.c: the control segment of the emulated IAA device: its
 * layout, counters, futexes and seeded chances (see emu_control.h).
 */
#define _GNU_SOURCE

#include <fcntl.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "emu_control.h"

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

int64_t emu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void emu_count(struct emu_control *ctl, int which, uint64_t n)
{
    atomic_fetch_add_explicit(&ctl->stats.v[which], n, memory_order_relaxed);
}

/* process-shared futex wait with a timeout in ns; spurious returns are fine */
void emu_futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts = { timeout_ns / 1000000000, timeout_ns % 1000000000 };
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, expected, &ts, NULL, 0);
}

void emu_futex_wake(_Atomic uint32_t *addr, int count)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* splitmix64 of (seed, sequence number, decision): a uniform double in [0, 1) */
double emu_chance(uint64_t seed, uint64_t seq, uint64_t what)
{
    uint64_t z = seed + seq * 0x9e3779b97f4a7c15ull + what * 0xd1b54a32d192ed03ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

struct emu_cell *emu_cells(struct emu_control *ctl)
{
    return (struct emu_cell *)((uint8_t *)ctl + ctl->cells_off);
}

struct emu_record *emu_records(struct emu_control *ctl)
{
    return (struct emu_record *)((uint8_t *)ctl + ctl->records_off);
}

/* per client place: the pid of the process that holds it, 0 while free */
_Atomic int32_t *emu_owners(struct emu_control *ctl)
{
    return (_Atomic int32_t *)((uint8_t *)ctl + ctl->owners_off);
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
    size += align64((uint64_t)cfg->clients * sizeof(_Atomic int32_t));
    size += (uint64_t)cfg->clients * cfg->page_count * sizeof(struct emu_record);
    return size;
}

/* lay out a zeroed control segment of size bytes for cfg; the magic last */
void emu_control_init(struct emu_control *ctl, const mfd_emu_config *cfg, uint64_t size)
{
    memset(ctl, 0, size);
    ctl->version = EMU_VERSION;
    ctl->device_pid = (int32_t)getpid();
    ctl->cfg = *cfg;
    ctl->cells_off = align64(sizeof(struct emu_control));
    ctl->ring_size = ring_cells(cfg);
    ctl->owners_off = ctl->cells_off + align64((uint64_t)ctl->ring_size * sizeof(struct emu_cell));
    ctl->records_off = ctl->owners_off + align64((uint64_t)cfg->clients * sizeof(_Atomic int32_t));
    ctl->total_size = size;
    for (uint64_t i = 0; i < ctl->ring_size; i++)
        atomic_store(&emu_cells(ctl)[i].seq, i);
    atomic_store(&ctl->running, 1);
    atomic_thread_fence(memory_order_seq_cst);
    ctl->magic = EMU_MAGIC;       /* clients check it last */
}

/* map /dev/shm/<name>: its whole length, or fail if shorter than min_size */
void *emu_map_segment(const char *name, uint64_t min_size, uint64_t *len_out)
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
