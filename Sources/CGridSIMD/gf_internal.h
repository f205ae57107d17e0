/* Internal declarations shared by gf256.c and kernels_x86.c. */
#ifndef GRID_GF_INTERNAL_H
#define GRID_GF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Layout of one prepared coefficient (GRID_GF_TABLE_BYTES = 48 bytes):
 *   [0, 16)   c * i        for the low nibble i
 *   [16, 32)  c * (i << 4) for the high nibble i
 *   [32, 40)  the 8x8 GF(2) bit matrix of "multiply by c" for vgf2p8affineqb
 *   [40]      c itself (portable path)                                      */
#define GRID_GF_AFFINE_OFFSET 32
#define GRID_GF_COEFF_OFFSET 40

#if defined(__x86_64__) || defined(_M_X64)
#define GRID_HAVE_X86_KERNELS 1
#else
#define GRID_HAVE_X86_KERNELS 0
#endif

extern uint8_t grid_gf_mul_table[256][256];

/* Portable kernel over bytes [start, len). */
void grid_gf_portable_range(size_t start, size_t len, size_t nsrc,
                            const uint8_t *const *src, size_t ndst,
                            uint8_t *const *dst, const uint8_t *const *rows);

#if GRID_HAVE_X86_KERNELS
void grid_gf_dot_ssse3(size_t len, size_t nsrc, const uint8_t *const *src,
                       size_t ndst, uint8_t *const *dst, const uint8_t *const *rows);
void grid_gf_dot_avx2(size_t len, size_t nsrc, const uint8_t *const *src,
                      size_t ndst, uint8_t *const *dst, const uint8_t *const *rows);
void grid_gf_dot_gfni(size_t len, size_t nsrc, const uint8_t *const *src,
                      size_t ndst, uint8_t *const *dst, const uint8_t *const *rows);
#endif

#endif
