/*
 * kernels_x86.c: SSSE3, AVX2 and GFNI (AVX-512) GF(2^8) dot-product kernels.
 *
 * Each kernel computes a group of up to G output rows at once, so that every
 * source byte is loaded once per group, and keeps the G accumulators in
 * registers.  Long buffers are walked in blocks so the sources of one block
 * stay in L1/L2 while every group is computed.  Functions carry their own
 * target attributes; nothing here runs unless grid_simd_supported() said so.
 */
#include "gridsimd.h"
#include "gf_internal.h"

#if GRID_HAVE_X86_KERNELS
#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define BLOCK_BYTES 16384

static inline uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------------ GFNI */

#define GFNI_TARGET __attribute__((target("avx512f,avx512bw,gfni")))
#define GFNI_MAX_GROUP 8

/*
 * G rows, U 64-byte vectors per row and iteration (G * U <= 16 accumulators;
 * U > 1 gives independent dependency chains when G is small).
 */
INLINE GFNI_TARGET void gfni_group(size_t start, size_t end, size_t nsrc,
                                   const uint8_t *const *src, uint8_t *const *dst,
                                   const uint8_t *const *rows, const int G, const int U)
{
    const uint8_t *r[GFNI_MAX_GROUP];
    uint8_t *d[GFNI_MAX_GROUP];
    for (int p = 0; p < G; p++) {
        r[p] = rows[p] + GRID_GF_AFFINE_OFFSET;
        d[p] = dst[p];
    }
    size_t i = start;
    const size_t step = 64 * (size_t)U;
    for (; i + step <= end; i += step) {
        __m512i acc[16];
        for (size_t j = 0; j < nsrc; j++) {
            const uint8_t *s = src[j] + i;
            __m512i x[4];
            for (int u = 0; u < U; u++)
                x[u] = _mm512_loadu_si512((const void *)(s + 64 * u));
            for (int p = 0; p < G; p++) {
                const __m512i m =
                    _mm512_set1_epi64((long long)load_u64(r[p] + j * GRID_GF_TABLE_BYTES));
                for (int u = 0; u < U; u++) {
                    __m512i v = _mm512_gf2p8affine_epi64_epi8(x[u], m, 0);
                    acc[p * U + u] = j ? _mm512_xor_si512(acc[p * U + u], v) : v;
                }
            }
        }
        for (int p = 0; p < G; p++)
            for (int u = 0; u < U; u++)
                _mm512_storeu_si512((void *)(d[p] + i + 64 * u), acc[p * U + u]);
    }
    /* Remaining whole vectors, then a masked tail. */
    for (; i < end; i += 64) {
        size_t n = end - i;
        __mmask64 mask = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
        __m512i acc[GFNI_MAX_GROUP];
        for (size_t j = 0; j < nsrc; j++) {
            __m512i x = _mm512_maskz_loadu_epi8(mask, (const void *)(src[j] + i));
            for (int p = 0; p < G; p++) {
                const __m512i m =
                    _mm512_set1_epi64((long long)load_u64(r[p] + j * GRID_GF_TABLE_BYTES));
                __m512i v = _mm512_gf2p8affine_epi64_epi8(x, m, 0);
                acc[p] = j ? _mm512_xor_si512(acc[p], v) : v;
            }
        }
        for (int p = 0; p < G; p++)
            _mm512_mask_storeu_epi8((void *)(d[p] + i), mask, acc[p]);
        if (n <= 64)
            break;
    }
}

GFNI_TARGET void grid_gf_dot_gfni(size_t len, size_t nsrc, const uint8_t *const *src,
                                  size_t ndst, uint8_t *const *dst,
                                  const uint8_t *const *rows)
{
    for (size_t off = 0; off < len; off += BLOCK_BYTES) {
        size_t end = off + BLOCK_BYTES < len ? off + BLOCK_BYTES : len;
        for (size_t p = 0; p < ndst; p += GFNI_MAX_GROUP) {
            size_t g = ndst - p < GFNI_MAX_GROUP ? ndst - p : GFNI_MAX_GROUP;
            uint8_t *const *dp = dst + p;
            const uint8_t *const *rp = rows + p;
            switch (g) {
            case 1: gfni_group(off, end, nsrc, src, dp, rp, 1, 4); break;
            case 2: gfni_group(off, end, nsrc, src, dp, rp, 2, 4); break;
            case 3: gfni_group(off, end, nsrc, src, dp, rp, 3, 2); break;
            case 4: gfni_group(off, end, nsrc, src, dp, rp, 4, 2); break;
            case 5: gfni_group(off, end, nsrc, src, dp, rp, 5, 2); break;
            case 6: gfni_group(off, end, nsrc, src, dp, rp, 6, 2); break;
            case 7: gfni_group(off, end, nsrc, src, dp, rp, 7, 2); break;
            default: gfni_group(off, end, nsrc, src, dp, rp, 8, 2); break;
            }
        }
    }
}

/* ------------------------------------------------------------------ AVX2 */

#define AVX2_TARGET __attribute__((target("avx2")))
#define SHUF_MAX_GROUP 6

INLINE AVX2_TARGET void avx2_group(size_t start, size_t end, size_t nsrc,
                                   const uint8_t *const *src, uint8_t *const *dst,
                                   const uint8_t *const *rows, const int G, const int U)
{
    const uint8_t *r[SHUF_MAX_GROUP];
    uint8_t *d[SHUF_MAX_GROUP];
    for (int p = 0; p < G; p++) {
        r[p] = rows[p];
        d[p] = dst[p];
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const size_t step = 32 * (size_t)U;
    size_t i = start;
    for (; i + step <= end; i += step) {
        __m256i acc[SHUF_MAX_GROUP * 2];
        for (size_t j = 0; j < nsrc; j++) {
            const uint8_t *s = src[j] + i;
            __m256i lo[2], hi[2];
            for (int u = 0; u < U; u++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(s + 32 * u));
                lo[u] = _mm256_and_si256(x, low4);
                hi[u] = _mm256_and_si256(_mm256_srli_epi64(x, 4), low4);
            }
            for (int p = 0; p < G; p++) {
                const uint8_t *t = r[p] + j * GRID_GF_TABLE_BYTES;
                __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t));
                __m256i th =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(t + 16)));
                for (int u = 0; u < U; u++) {
                    __m256i v = _mm256_xor_si256(_mm256_shuffle_epi8(tl, lo[u]),
                                                 _mm256_shuffle_epi8(th, hi[u]));
                    acc[p * U + u] = j ? _mm256_xor_si256(acc[p * U + u], v) : v;
                }
            }
        }
        for (int p = 0; p < G; p++)
            for (int u = 0; u < U; u++)
                _mm256_storeu_si256((__m256i *)(d[p] + i + 32 * u), acc[p * U + u]);
    }
    if (i < end)
        grid_gf_portable_range(i, end, nsrc, src, (size_t)G, dst, rows);
}

#define AVX2_GROUP 4
AVX2_TARGET void grid_gf_dot_avx2(size_t len, size_t nsrc, const uint8_t *const *src,
                                  size_t ndst, uint8_t *const *dst,
                                  const uint8_t *const *rows)
{
    for (size_t off = 0; off < len; off += BLOCK_BYTES) {
        size_t end = off + BLOCK_BYTES < len ? off + BLOCK_BYTES : len;
        for (size_t p = 0; p < ndst; p += AVX2_GROUP) {
            size_t g = ndst - p < AVX2_GROUP ? ndst - p : AVX2_GROUP;
            uint8_t *const *dp = dst + p;
            const uint8_t *const *rp = rows + p;
            switch (g) {
            case 1: avx2_group(off, end, nsrc, src, dp, rp, 1, 2); break;
            case 2: avx2_group(off, end, nsrc, src, dp, rp, 2, 2); break;
            case 3: avx2_group(off, end, nsrc, src, dp, rp, 3, 2); break;
            case 4: avx2_group(off, end, nsrc, src, dp, rp, 4, 2); break;
            case 5: avx2_group(off, end, nsrc, src, dp, rp, 5, 1); break;
            default: avx2_group(off, end, nsrc, src, dp, rp, 6, 1); break;
            }
        }
    }
}

/* ----------------------------------------------------------------- SSSE3 */

#define SSSE3_TARGET __attribute__((target("ssse3")))

INLINE SSSE3_TARGET void ssse3_group(size_t start, size_t end, size_t nsrc,
                                     const uint8_t *const *src, uint8_t *const *dst,
                                     const uint8_t *const *rows, const int G)
{
    const uint8_t *r[SHUF_MAX_GROUP];
    uint8_t *d[SHUF_MAX_GROUP];
    for (int p = 0; p < G; p++) {
        r[p] = rows[p];
        d[p] = dst[p];
    }
    const __m128i low4 = _mm_set1_epi8(0x0f);
    size_t i = start;
    for (; i + 16 <= end; i += 16) {
        __m128i acc[SHUF_MAX_GROUP];
        for (size_t j = 0; j < nsrc; j++) {
            __m128i x = _mm_loadu_si128((const __m128i *)(src[j] + i));
            __m128i lo = _mm_and_si128(x, low4);
            __m128i hi = _mm_and_si128(_mm_srli_epi64(x, 4), low4);
            for (int p = 0; p < G; p++) {
                const uint8_t *t = r[p] + j * GRID_GF_TABLE_BYTES;
                __m128i tl = _mm_loadu_si128((const __m128i *)t);
                __m128i th = _mm_loadu_si128((const __m128i *)(t + 16));
                __m128i v = _mm_xor_si128(_mm_shuffle_epi8(tl, lo), _mm_shuffle_epi8(th, hi));
                acc[p] = j ? _mm_xor_si128(acc[p], v) : v;
            }
        }
        for (int p = 0; p < G; p++)
            _mm_storeu_si128((__m128i *)(d[p] + i), acc[p]);
    }
    if (i < end)
        grid_gf_portable_range(i, end, nsrc, src, (size_t)G, dst, rows);
}

SSSE3_TARGET void grid_gf_dot_ssse3(size_t len, size_t nsrc, const uint8_t *const *src,
                                    size_t ndst, uint8_t *const *dst,
                                    const uint8_t *const *rows)
{
    for (size_t off = 0; off < len; off += BLOCK_BYTES) {
        size_t end = off + BLOCK_BYTES < len ? off + BLOCK_BYTES : len;
        for (size_t p = 0; p < ndst; p += SHUF_MAX_GROUP) {
            size_t g = ndst - p < SHUF_MAX_GROUP ? ndst - p : SHUF_MAX_GROUP;
            uint8_t *const *dp = dst + p;
            const uint8_t *const *rp = rows + p;
            switch (g) {
            case 1: ssse3_group(off, end, nsrc, src, dp, rp, 1); break;
            case 2: ssse3_group(off, end, nsrc, src, dp, rp, 2); break;
            case 3: ssse3_group(off, end, nsrc, src, dp, rp, 3); break;
            case 4: ssse3_group(off, end, nsrc, src, dp, rp, 4); break;
            case 5: ssse3_group(off, end, nsrc, src, dp, rp, 5); break;
            default: ssse3_group(off, end, nsrc, src, dp, rp, 6); break;
            }
        }
    }
}

#endif /* GRID_HAVE_X86_KERNELS */
