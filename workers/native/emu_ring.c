/*
 * emu_ring.c: the emulated device's submission ring, a bounded MPMC queue
 * of record indices in the control segment (Vyukov style): clients push,
 * engines pop, nobody blocks.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "emu_control.h"

/* ------------------------------------------------------------------ */
/* the submission ring                                                 */

int emu_ring_push(struct emu_control *ctl, uint32_t record)
{
    struct emu_cell *ring = emu_cells(ctl);
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

int emu_ring_pop(struct emu_control *ctl, uint32_t *record)
{
    struct emu_cell *ring = emu_cells(ctl);
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
