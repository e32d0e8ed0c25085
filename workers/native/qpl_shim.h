/*
 * qpl_shim: the engine's binding of Intel QPL (libqpl, 1.6 or newer),
 * loaded at run time with dlopen so the engine builds and runs without it.
 *
 * A loaded library gives work queues that the per-packet loop of
 * pagecodec.c drives like any other: a hardware queue of page_count
 * hardware jobs (IAA), or a software queue of one software job (QPL's
 * CPU path, QEMU's fallback).  QPL statuses other than OK, being
 * processed, more output and queues busy come back as
 * MFD_QPL_STATUS_BASE + the QPL status.
 *
 * MFD_QPL_STATUS_BASE is in status.h.
 * Part of the cffi cdef (see build_native.py): declarations only, and a
 * guard that build_native.py drops.
 */
#ifndef MFD_QPL_SHIM_H
#define MFD_QPL_SHIM_H

/* the path argument of mfd_qpl_queue_new (QPL's qpl_path_t values) */
#define MFD_QPL_PATH_HARDWARE 1
#define MFD_QPL_PATH_SOFTWARE 2

typedef struct mfd_qpl mfd_qpl;

/* load libqpl from path (a file, or a name the loader searches); NULL and a
 * message in err (NUL-terminated, at most err_cap bytes) if it cannot be
 * loaded, lacks a function, or is older than 1.6 */
mfd_qpl *mfd_qpl_open(const char *path, char *err, uint32_t err_cap);
/* forget the handle; the library stays loaded (queues may still use it) */
void mfd_qpl_close(mfd_qpl *q);
/* qpl_get_library_version(), e.g. "1.6.0" */
const char *mfd_qpl_version(const mfd_qpl *q);

/*
 * Is IAA usable?  Inits one hardware job and frees it: the QPL status of
 * qpl_init_job(hardware) (0 = yes; 501 no libaccel-config, 503 no usable
 * work queue, ...).  A job whose init failed is freed unused: QPL leaves it
 * half switched to the software path inside a hardware-sized allocation.
 */
int mfd_qpl_probe_hardware(mfd_qpl *q);

/* a work queue of count jobs on path (1 hardware, 2 software: count is then
 * 1); NULL and *qpl_status (a QPL status, or MFD_E_NOMEM / MFD_E_PARAM) on
 * failure */
mfd_workqueue *mfd_qpl_queue_new(mfd_qpl *q, int path, uint32_t count, int *qpl_status);
void mfd_qpl_queue_free(mfd_workqueue *wq);

#endif
