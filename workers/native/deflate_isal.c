/*
 * deflate_isal.c: the compress half of deflate_backend.h on ISA-L's igzip.
 */
#define _DEFAULT_SOURCE     /* mmap's MAP_ANONYMOUS (and MAP_FIXED_NOREPLACE) under -std=c11 */

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <isa-l.h>

#include "deflate_backend.h"
#include "status.h"

/*
 * Where the isal_zstream lives decides a few bytes of level 1's output.
 *
 * ISA-L's level-1 deflate body (the x86 assembly, every CPU variant, still
 * so in 2.32) writes the first byte of a stream as a literal and then
 * hashes the bytes at position 2 from the wrong register: the 32-bit value
 * it hashes is the isal_zstream's address shifted right by 16, not the
 * input.  So position 2 goes into the hash-table slot crc32c(address >> 16)
 * & hash_mask instead of its own.  The stream stays valid (every match is
 * checked against the input), but when that slot is one the page itself
 * filled first (position 0's or 1's), a later match is missed and the page
 * comes out a few bytes longer or shorter: the same page gave different
 * streams in different processes (ASLR) and in different deflaters of one
 * process.
 *
 * So each deflater maps its isal_zstream at an address whose bits 16..47
 * hash to one fixed slot: then that wrong slot is the same for every
 * deflater and a page's stream depends on the page alone.  The slot is not
 * 0, where a run of zero bytes hashes (almost every page looks that up).
 * Level 1's table has 8192 slots; a smaller input only masks it further,
 * which keeps the slot fixed.  Level 0 (the fast setting) hashes its input.
 */
#define STREAM_SLOT 1u              /* the fixed slot, of ... */
#define STREAM_SLOTS 8192u          /* ... level 1's largest table (hash_mask + 1) */
#define ADDRESS_SHIFT 16            /* the address bits below this do not count */
#define LOW_BITS 15                 /* the fewest low bits of (address >> 16) that reach every slot */

struct mfd_deflater {
    int setting;
    int window_bits;
    struct isal_zstream *isal;      /* a mapping of its own, see above */
    uint8_t *level_buf;
    uint32_t level_buf_size;
};

/* what the x86 crc32 instruction gives from 0 for 4 bytes (CRC-32C, no final xor) */
static uint32_t crc32c_u32(uint32_t v)
{
    uint32_t crc = v;
    for (int i = 0; i < 32; i++)
        crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    return crc;
}

/* the table slot ISA-L files position 2 under for a stream at unit << 16 */
static uint32_t slot_of(uintptr_t unit)
{
    return crc32c_u32((uint32_t)unit) & (STREAM_SLOTS - 1);
}

/*
 * slot_of is linear (a CRC from 0, no final xor): slot_of(a ^ b) ==
 * slot_of(a) ^ slot_of(b).  Its low 15 bits reach all 8192 slots, 4 ways
 * each: every 2^15 units (2 GiB) of address space hold 4 places that fit.
 * low_for[s] is one low part with slot s, low_zero[] the 4 with slot 0.
 */
static uint16_t low_for[STREAM_SLOTS];
static uint16_t low_zero[4];
static pthread_once_t low_once = PTHREAD_ONCE_INIT;

static void build_low(void)
{
    unsigned zeros = 0;
    for (uint32_t lo = (1u << LOW_BITS) - 1; lo > 0; lo--) {
        uint32_t s = slot_of(lo);
        if (s == 0) {
            if (zeros < 3)
                low_zero[1 + zeros++] = (uint16_t)lo;
        } else
            low_for[s] = (uint16_t)lo;
    }
}

/* len zeroed bytes at exactly unit << 16, or NULL */
static void *map_at(uintptr_t unit, size_t len)
{
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_FIXED_NOREPLACE
    flags |= MAP_FIXED_NOREPLACE;   /* never over a mapping that is there */
#endif
    void *want = (void *)(unit << ADDRESS_SHIFT);
    void *p = mmap(want, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (p != want) {                /* a kernel that took the address as a hint */
        munmap(p, len);
        return NULL;
    }
    return p;
}

/*
 * A zeroed isal_zstream at an address that fits (see above), or NULL.
 * Tries the places that fit from where the kernel would map it now
 * downwards, the way the kernel itself fills the address space, so as not
 * to take the room kept above the mappings for the main stack to grow.
 */
static struct isal_zstream *map_stream(void)
{
    size_t len = sizeof(struct isal_zstream);
    void *probe = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED)
        return NULL;
    uintptr_t home = (uintptr_t)probe >> ADDRESS_SHIFT;
    if (slot_of(home) == STREAM_SLOT)
        return probe;
    munmap(probe, len);
    if (pthread_once(&low_once, build_low) != 0)
        return NULL;
    for (uintptr_t high = home >> LOW_BITS; high > 0; high--) {
        uintptr_t base = high << LOW_BITS;
        uint32_t lo = low_for[STREAM_SLOT ^ slot_of(base)];
        uintptr_t fits[4];
        for (int k = 0; k < 4; k++)
            fits[k] = base | (lo ^ low_zero[k]);
        for (int k = 0; k < 4; k++) {   /* highest first */
            int top = k;
            for (int j = k + 1; j < 4; j++)
                if (fits[j] > fits[top])
                    top = j;
            uintptr_t unit = fits[top];
            fits[top] = fits[k];
            void *p;
            if (unit < home && slot_of(unit) == STREAM_SLOT && (p = map_at(unit, len)))
                return p;
        }
    }
    return NULL;
}

const char *mfd_deflater_library(void)
{
    return "isal " MFD_STR(ISAL_MAJOR_VERSION) "." MFD_STR(ISAL_MINOR_VERSION);
}

const size_t mfd_library_deflater_size = sizeof(mfd_deflater);

int mfd_library_deflater_init(mfd_deflater *d, int setting, int window_bits)
{
    d->setting = setting;
    d->window_bits = window_bits;
    d->isal = map_stream();
    if (!d->isal)
        return 0;
    if (setting == MFD_BACKEND_BALANCED) {
        d->level_buf_size = ISAL_DEF_LVL1_DEFAULT;
        /*
         * Zeroed, not malloc'd: ISA-L keeps its match hash table here and
         * does not clear all of it per page, so entries no page has written
         * yet would be whatever the allocator left.  The output stays valid
         * either way (matches are checked against the input), but its size
         * would vary run to run for the same pages.
         */
        d->level_buf = calloc(1, d->level_buf_size);
        if (!d->level_buf) {
            munmap(d->isal, sizeof *d->isal);
            return 0;
        }
    }
    return 1;
}

void mfd_library_deflater_fini(mfd_deflater *d)
{
    free(d->level_buf);
    if (d->isal)
        munmap(d->isal, sizeof *d->isal);
}

int mfd_library_deflate_page(mfd_deflater *d, const uint8_t *in, uint32_t in_len,
                             uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    struct isal_zstream *s = d->isal;
    isal_deflate_stateless_init(s);
    s->gzip_flag = IGZIP_DEFLATE;           /* raw: no header, no trailer */
    s->hist_bits = (uint16_t)d->window_bits; /* IAA's receiver: 4 KiB window */
    s->end_of_stream = 1;
    s->flush = NO_FLUSH;
    if (d->setting == MFD_BACKEND_FAST) {
        s->level = 0;
        if (isal_deflate_set_hufftables(s, NULL, IGZIP_HUFFTABLE_STATIC) != COMP_OK)
            return MFD_E_DEFLATE;
    } else {
        s->level = 1;
        s->level_buf = d->level_buf;
        s->level_buf_size = d->level_buf_size;
    }
    s->next_in = (uint8_t *)in;             /* igzip only reads it */
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = cap;
    int ret = isal_deflate_stateless(s);
    if (ret == COMP_OK) {
        if (s->avail_in != 0 || s->total_out > cap)
            return MFD_E_DEFLATE;
        *out_len = s->total_out;
        return MFD_OK;
    }
    if (ret == STATELESS_OVERFLOW)
        return MFD_MORE_OUTPUT;
    return MFD_E_DEFLATE;
}
