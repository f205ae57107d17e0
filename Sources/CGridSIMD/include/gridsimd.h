/*
 * gridsimd.h: GF(2^8) multiply-accumulate kernels for grid's Reed-Solomon codec.
 *
 * Field: GF(2^8) with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D),
 * the field zfec (and so Tahoe-LAFS) uses.
 *
 * One operation does all the work:
 *
 *     dst[p][i] = XOR over j of  c[p][j] * src[j][i]     for 0 <= i < len
 *
 * where c[p][j] is the coefficient whose prepared table starts at
 * rows[p] + j * GRID_GF_TABLE_BYTES.  Tables come from grid_gf_prepare() and hold
 * what every kernel needs (nibble lookup tables for the shuffle kernels, the
 * 8x8 bit matrix for GFNI, the coefficient itself for the portable path), so
 * the same tables serve every path.
 *
 * Paths are chosen by the caller (GridCodec picks the best one once at run time,
 * or the one named by GRID_SIMD).  Every path gives identical bytes; tests
 * prove it.
 */
#ifndef GRID_SIMD_H
#define GRID_SIMD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    GRID_SIMD_PORTABLE = 0, /* table lookup, any CPU */
    GRID_SIMD_SSSE3 = 1,    /* 128-bit split-nibble pshufb */
    GRID_SIMD_AVX2 = 2,     /* 256-bit split-nibble vpshufb */
    GRID_SIMD_GFNI = 3,     /* 512-bit vgf2p8affineqb (AVX-512BW + GFNI) */
    GRID_SIMD_PATH_COUNT = 4
};

/* Bytes of prepared table per coefficient. */
#define GRID_GF_TABLE_BYTES 48

/* Largest number of sources one call may take (k <= 256 in Tahoe). */
#define GRID_GF_MAX_SOURCES 256

/* 1 when this CPU and OS can run the path, else 0. */
int grid_simd_supported(int path);

/* Product in GF(2^8)/0x11D. */
uint8_t grid_gf_mul(uint8_t a, uint8_t b);

/* Writes count * GRID_GF_TABLE_BYTES bytes of tables for coeffs[0..count). */
void grid_gf_prepare(const uint8_t *coeffs, size_t count, uint8_t *tables);

/*
 * dst[p] = sum_j c[p][j] * src[j], for p < ndst, over len bytes.
 * nsrc must be 1..GRID_GF_MAX_SOURCES.  dst buffers must not overlap src.
 * Returns 0, or -1 when the path is not supported here (nothing written).
 */
int grid_gf_dot_prod(int path, size_t len,
                     size_t nsrc, const uint8_t *const *src,
                     size_t ndst, uint8_t *const *dst,
                     const uint8_t *const *rows);

#ifdef __cplusplus
}
#endif
#endif
