/*
 * qpl_defs.h: the few facts of Intel QPL's C API the binding needs, as data.
 *
 * libqpl is loaded at run time (dlopen), so its headers are not needed to
 * build the engine.  Values are those of QPL's include/qpl/c_api/defs.h,
 * status.h and job.h (stable from 1.0.0 through 1.6.0 and later; see the
 * project's spec, qpl-and-iaa.md sections 0, 1.4 and 1.6).  Only the public
 * head of qpl_job is declared: the library's private part follows it inside
 * the allocation, whose size qpl_get_job_size gives.
 */
#ifndef MFD_QPL_DEFS_H
#define MFD_QPL_DEFS_H

#include <stddef.h>
#include <stdint.h>

/* qpl_path_t */
#define QPL_PATH_AUTO      0
#define QPL_PATH_HARDWARE  1
#define QPL_PATH_SOFTWARE  2

/* qpl_operation */
#define QPL_OP_DECOMPRESS  0x00
#define QPL_OP_COMPRESS    0x01

/* job flags */
#define QPL_FLAG_FIRST        0x0001u
#define QPL_FLAG_LAST         0x0002u
#define QPL_FLAG_OMIT_VERIFY  0x4000u

/* qpl_compression_levels */
#define QPL_LEVEL_1  1

/* qpl_status values the binding acts on */
#define QPL_STS_OK                   0
#define QPL_STS_BEING_PROCESSED      1
#define QPL_STS_MORE_OUTPUT_NEEDED   2
#define QPL_STS_QUEUES_ARE_BUSY_ERR  5

/* the oldest release whose submit/check/wait the binding relies on */
#define MFD_QPL_MIN_MAJOR 1
#define MFD_QPL_MIN_MINOR 6

/* the public head of qpl_job on x86-64 (offsets verified against 1.6.0) */
typedef struct mfd_qpl_job_head {
    uint8_t *next_in_ptr;
    uint32_t available_in;
    uint32_t total_in;
    uint8_t *next_out_ptr;
    uint32_t available_out;
    uint32_t total_out;
    uint32_t op;
    uint32_t flags;
    uint32_t crc;
    uint32_t xor_checksum;
    uint32_t last_bit_offset;
    uint32_t level;
    uint32_t statistics_mode;
    void *huffman_table;
    void *dictionary;
} mfd_qpl_job_head;

_Static_assert(offsetof(mfd_qpl_job_head, available_in) == 8, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, next_out_ptr) == 16, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, total_out) == 28, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, op) == 32, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, flags) == 36, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, level) == 52, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, huffman_table) == 64, "qpl_job layout");
_Static_assert(offsetof(mfd_qpl_job_head, dictionary) == 72, "qpl_job layout");

/* the functions resolved with dlsym; every enum argument is an int */
typedef int (*qpl_get_job_size_fn)(int path, uint32_t *size);
typedef int (*qpl_init_job_fn)(int path, void *job);
typedef int (*qpl_job_fn)(void *job);
typedef const char *(*qpl_get_library_version_fn)(void);

#endif
