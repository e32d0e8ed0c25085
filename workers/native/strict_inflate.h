/*
 * strict_inflate: raw DEFLATE (RFC 1951) with IAA's 4 KiB history, a unit
 * of its own so tests drive it without a device (workers.codec.strict_inflate).
 *
 * Part of the cffi cdef (see build_native.py): declarations only, and a
 * guard that build_native.py drops.
 */
#ifndef MFD_STRICT_INFLATE_H
#define MFD_STRICT_INFLATE_H

#define MFD_STRICT_HISTORY 4096    /* bytes a distance may reach back */

/*
 * Inflate one raw-DEFLATE stream in[0..in_len) into out[0..cap).  MFD_OK
 * when the final block ends and no whole byte of input is left;
 * MFD_E_INFLATE for a corrupt or truncated stream, or a distance beyond
 * MFD_STRICT_HISTORY or before the start of out; MFD_MORE_OUTPUT when
 * more than cap bytes would come out; MFD_E_TRAILING for input left over.
 * *out_len: bytes written, never more than cap.
 */
int mfd_strict_inflate(const uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t cap,
                       uint32_t *out_len);

#endif
