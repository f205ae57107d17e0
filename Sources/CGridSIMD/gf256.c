/*
 * gf256.c: GF(2^8)/0x11D arithmetic tables, table preparation, the portable
 * kernel and run-time dispatch.  The x86 kernels live in kernels_x86.c.
 */
#include "gridsimd.h"
#include "gf_internal.h"

#include <string.h>

uint8_t grid_gf_mul_table[256][256];
static uint8_t gf_exp[512];
static int gf_log[256];

/* Built once when the library loads: 64 KiB, a few microseconds. */
__attribute__((constructor)) static void grid_gf_build_tables(void)
{
    unsigned x = 1;
    for (int i = 0; i < 255; i++) {
        gf_exp[i] = (uint8_t)x;
        gf_log[x] = i;
        x <<= 1;
        if (x & 0x100)
            x ^= 0x11D;
    }
    for (int i = 255; i < 512; i++)
        gf_exp[i] = gf_exp[i - 255];
    gf_log[0] = -1;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            grid_gf_mul_table[a][b] =
                (a == 0 || b == 0) ? 0 : gf_exp[gf_log[a] + gf_log[b]];
}

uint8_t grid_gf_mul(uint8_t a, uint8_t b) { return grid_gf_mul_table[a][b]; }

void grid_gf_prepare(const uint8_t *coeffs, size_t count, uint8_t *tables)
{
    for (size_t n = 0; n < count; n++) {
        uint8_t c = coeffs[n];
        uint8_t *t = tables + n * GRID_GF_TABLE_BYTES;
        memset(t, 0, GRID_GF_TABLE_BYTES);
        for (int i = 0; i < 16; i++) {
            t[i] = grid_gf_mul_table[c][i];
            t[16 + i] = grid_gf_mul_table[c][i << 4];
        }
        /*
         * GFNI affine matrix: output bit i of vgf2p8affineqb is the parity of
         * (matrix byte 7-i AND input byte).  Multiplying by c is linear over
         * GF(2): output bit i = XOR over input bits j of bit i of c*2^j.
         */
        uint64_t m = 0;
        for (int i = 0; i < 8; i++) {
            uint8_t row = 0;
            for (int j = 0; j < 8; j++)
                row |= (uint8_t)(((grid_gf_mul_table[c][1u << j] >> i) & 1u) << j);
            m |= (uint64_t)row << (8 * (7 - i));
        }
        memcpy(t + GRID_GF_AFFINE_OFFSET, &m, 8);
        t[GRID_GF_COEFF_OFFSET] = c;
    }
}

void grid_gf_portable_range(size_t start, size_t len, size_t nsrc,
                            const uint8_t *const *src, size_t ndst,
                            uint8_t *const *dst, const uint8_t *const *rows)
{
    for (size_t p = 0; p < ndst; p++) {
        uint8_t *d = dst[p];
        for (size_t j = 0; j < nsrc; j++) {
            const uint8_t *t =
                grid_gf_mul_table[rows[p][j * GRID_GF_TABLE_BYTES + GRID_GF_COEFF_OFFSET]];
            const uint8_t *s = src[j];
            if (j == 0)
                for (size_t i = start; i < len; i++)
                    d[i] = t[s[i]];
            else
                for (size_t i = start; i < len; i++)
                    d[i] ^= t[s[i]];
        }
    }
}

int grid_simd_supported(int path)
{
    switch (path) {
    case GRID_SIMD_PORTABLE:
        return 1;
#if GRID_HAVE_X86_KERNELS
    case GRID_SIMD_SSSE3:
        __builtin_cpu_init();
        return __builtin_cpu_supports("ssse3") ? 1 : 0;
    case GRID_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    case GRID_SIMD_GFNI:
        __builtin_cpu_init();
        return (__builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw"))
                   ? 1
                   : 0;
#endif
    default:
        return 0;
    }
}

int grid_gf_dot_prod(int path, size_t len, size_t nsrc, const uint8_t *const *src,
                     size_t ndst, uint8_t *const *dst, const uint8_t *const *rows)
{
    if (nsrc == 0 || nsrc > GRID_GF_MAX_SOURCES || !grid_simd_supported(path))
        return -1;
    if (len == 0 || ndst == 0)
        return 0;
    switch (path) {
#if GRID_HAVE_X86_KERNELS
    case GRID_SIMD_SSSE3:
        grid_gf_dot_ssse3(len, nsrc, src, ndst, dst, rows);
        return 0;
    case GRID_SIMD_AVX2:
        grid_gf_dot_avx2(len, nsrc, src, ndst, dst, rows);
        return 0;
    case GRID_SIMD_GFNI:
        grid_gf_dot_gfni(len, nsrc, src, ndst, dst, rows);
        return 0;
#endif
    default:
        grid_gf_portable_range(0, len, nsrc, src, ndst, dst, rows);
        return 0;
    }
}
