/*
 * sha256.c: SHA-256 compression (FIPS 180-4), one, two or sixteen messages at a time.
 *
 * Three paths, chosen by the caller: portable C, the x86 SHA extensions, and AVX-512
 * (sixteen messages in vector lanes; see compress_x16). The SHA-NI
 * path keeps the state as two vectors, ABEF and CDGH, which is what sha256rnds2 takes;
 * each group of four rounds adds four schedule words and constants and runs two
 * sha256rnds2. compress2 runs two messages' rounds interleaved, so one message's
 * rounds fill the latency of the other's.
 */
#include "gridhash.h"

#include <string.h>

static const uint32_t K[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* ------------------------------------------------------------------ portable */

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress_portable(uint32_t h[8], const uint8_t *p, size_t nblocks) {
    for (; nblocks > 0; nblocks--, p += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
}

/* ------------------------------------------------------------------ SHA-NI */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

#define SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))

static int shani_supported(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int sse41 = (c >> 19) & 1, ssse3 = (c >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return sse41 && ssse3 && ((b >> 29) & 1);
}

/* H0..H7 -> (ABEF, CDGH) as sha256rnds2 wants them. */
SHANI_TARGET static inline void shani_load(const uint32_t h[8], __m128i *abef, __m128i *cdgh) {
    __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    *abef = _mm_alignr_epi8(cdab, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

SHANI_TARGET static inline void shani_store(uint32_t h[8], __m128i abef, __m128i cdgh) {
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

/*
 * Rounds 4g..4g+3 of lane L. m[L][0..3] hold the schedule words of groups g, g+1, g+2,
 * g+3 (mod 4) in the making: group g's are ready; after this step group g+1's are
 * finished (msg2) and group g+3's have had their msg1.
 */
#define SHANI_GROUP(L, g)                                                               \
    do {                                                                                \
        __m128i wk = _mm_add_epi32(m[L][(g) & 3], _mm_load_si128((const __m128i *)&K[4 * (g)])); \
        cdgh[L] = _mm_sha256rnds2_epu32(cdgh[L], abef[L], wk);                          \
        if ((g) >= 3 && (g) < 15) {                                                     \
            __m128i t = _mm_alignr_epi8(m[L][(g) & 3], m[L][((g) + 3) & 3], 4);         \
            m[L][((g) + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(m[L][((g) + 1) & 3], t), m[L][(g) & 3]); \
        }                                                                               \
        abef[L] = _mm_sha256rnds2_epu32(abef[L], cdgh[L], _mm_shuffle_epi32(wk, 0x0E)); \
        if ((g) >= 1 && (g) < 13)                                                       \
            m[L][((g) + 3) & 3] = _mm_sha256msg1_epu32(m[L][((g) + 3) & 3], m[L][(g) & 3]); \
    } while (0)

/* Both lanes' rounds of one group, lane 0 then lane 1 (LANES is 1 or 2). */
#define SHANI_STEP(g)                               \
    do {                                            \
        SHANI_GROUP(0, g);                          \
        if (LANES > 1) SHANI_GROUP(LANES - 1, g);   \
    } while (0)

#define SHANI_BODY                                                                      \
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL); \
    for (size_t blk = 0; blk < nblocks; blk++) {                                        \
        __m128i m[LANES][4], abef0[LANES], cdgh0[LANES];                               \
        for (int l = 0; l < LANES; l++) {                                               \
            abef0[l] = abef[l];                                                         \
            cdgh0[l] = cdgh[l];                                                         \
            for (int i = 0; i < 4; i++)                                                 \
                m[l][i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data[l] + 64 * blk + 16 * i)), bswap); \
        }                                                                               \
        SHANI_STEP(0); SHANI_STEP(1); SHANI_STEP(2); SHANI_STEP(3);                     \
        SHANI_STEP(4); SHANI_STEP(5); SHANI_STEP(6); SHANI_STEP(7);                     \
        SHANI_STEP(8); SHANI_STEP(9); SHANI_STEP(10); SHANI_STEP(11);                   \
        SHANI_STEP(12); SHANI_STEP(13); SHANI_STEP(14); SHANI_STEP(15);                 \
        for (int l = 0; l < LANES; l++) {                                               \
            abef[l] = _mm_add_epi32(abef[l], abef0[l]);                                 \
            cdgh[l] = _mm_add_epi32(cdgh[l], cdgh0[l]);                                 \
        }                                                                               \
    }

SHANI_TARGET static void compress_shani1(uint32_t h[8], const uint8_t *p, size_t nblocks) {
    enum { LANES = 1 };
    const uint8_t *data[1] = {p};
    __m128i abef[1], cdgh[1];
    shani_load(h, &abef[0], &cdgh[0]);
    SHANI_BODY
    shani_store(h, abef[0], cdgh[0]);
}

SHANI_TARGET static void compress_shani2(uint32_t h0[8], uint32_t h1[8], const uint8_t *p0, const uint8_t *p1,
                                         size_t nblocks) {
    enum { LANES = 2 };
    const uint8_t *data[2] = {p0, p1};
    __m128i abef[2], cdgh[2];
    shani_load(h0, &abef[0], &cdgh[0]);
    shani_load(h1, &abef[1], &cdgh[1]);
    SHANI_BODY
    shani_store(h0, abef[0], cdgh[0]);
    shani_store(h1, abef[1], cdgh[1]);
}

/* ------------------------------------------------------------------ AVX-512, 16 lanes */

/*
 * Sixteen messages at once, one per 32-bit lane of a zmm register: the state words and
 * schedule words of lane i belong to message i. Each block's 16 rows (64 bytes of each
 * message) are loaded and transposed so that vector t holds word t of every message;
 * the rounds are then plain SHA-256 on vectors (rotates and the three-input boolean
 * functions are single AVX-512 instructions). Lanes past `lanes` hash lane 0's bytes
 * and are thrown away.
 */
#define X16_TARGET __attribute__((target("avx512f,avx512bw")))

static int x16_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

/* 16 rows of 16 words -> 16 vectors of one word from each row (see the comment above). */
X16_TARGET static inline void x16_transpose(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    __m512i u[16]; /* u[4g+o], 128-bit chunk c: word 4c+o of rows 4g..4g+3 */
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int o = 0; o < 4; o++) { /* a 4x4 transpose of 128-bit chunks */
        __m512i x0 = _mm512_shuffle_i32x4(u[o], u[4 + o], 0x44);
        __m512i x1 = _mm512_shuffle_i32x4(u[o], u[4 + o], 0xEE);
        __m512i x2 = _mm512_shuffle_i32x4(u[8 + o], u[12 + o], 0x44);
        __m512i x3 = _mm512_shuffle_i32x4(u[8 + o], u[12 + o], 0xEE);
        r[o] = _mm512_shuffle_i32x4(x0, x2, 0x88);
        r[4 + o] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
        r[8 + o] = _mm512_shuffle_i32x4(x1, x3, 0x88);
        r[12 + o] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
    }
}

#define X16_ROR(x, n) _mm512_ror_epi32((x), (n))
#define X16_XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define X16_ROUND(a, b, c, d, e, f, g, h, t)                                                       \
    do {                                                                                           \
        __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, X16_XOR3(X16_ROR(e, 6), X16_ROR(e, 11), X16_ROR(e, 25))), \
                                      _mm512_add_epi32(_mm512_ternarylogic_epi32(e, f, g, 0xCA),  \
                                                       _mm512_add_epi32(w[(t) & 15], _mm512_set1_epi32((int)K[t])))); \
        __m512i t2 = _mm512_add_epi32(X16_XOR3(X16_ROR(a, 2), X16_ROR(a, 13), X16_ROR(a, 22)),     \
                                      _mm512_ternarylogic_epi32(a, b, c, 0xE8));                   \
        d = _mm512_add_epi32(d, t1);                                                               \
        h = _mm512_add_epi32(t1, t2);                                                              \
    } while (0)
/* Schedule word t (16 <= t < 64) into w[t & 15], which held word t - 16. */
#define X16_SCHEDULE(t)                                                                            \
    do {                                                                                           \
        __m512i w15 = w[((t) - 15) & 15], w2 = w[((t) - 2) & 15];                                  \
        __m512i s0 = X16_XOR3(X16_ROR(w15, 7), X16_ROR(w15, 18), _mm512_srli_epi32(w15, 3));        \
        __m512i s1 = X16_XOR3(X16_ROR(w2, 17), X16_ROR(w2, 19), _mm512_srli_epi32(w2, 10));         \
        w[(t) & 15] = _mm512_add_epi32(_mm512_add_epi32(w[(t) & 15], s0),                           \
                                       _mm512_add_epi32(w[((t) - 7) & 15], s1));                    \
    } while (0)
#define X16_EIGHT(t)                                         \
    do {                                                     \
        if ((t) >= 16) {                                     \
            for (int q = 0; q < 8; q++) X16_SCHEDULE((t) + q); \
        }                                                    \
        X16_ROUND(a, b, c, d, e, f, g, h, (t) + 0);          \
        X16_ROUND(h, a, b, c, d, e, f, g, (t) + 1);          \
        X16_ROUND(g, h, a, b, c, d, e, f, (t) + 2);          \
        X16_ROUND(f, g, h, a, b, c, d, e, (t) + 3);          \
        X16_ROUND(e, f, g, h, a, b, c, d, (t) + 4);          \
        X16_ROUND(d, e, f, g, h, a, b, c, (t) + 5);          \
        X16_ROUND(c, d, e, f, g, h, a, b, (t) + 6);          \
        X16_ROUND(b, c, d, e, f, g, h, a, (t) + 7);          \
    } while (0)

X16_TARGET static void compress_x16(uint32_t *states, const uint8_t *const *data, unsigned lanes, size_t nblocks) {
    const uint8_t *p[16];
    for (unsigned i = 0; i < 16; i++) p[i] = data[i < lanes ? i : 0];
    const __mmask16 live = (__mmask16)((1u << lanes) - 1);
    const __m512i rows = _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120);
    const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
    __m512i s[8];
    for (int j = 0; j < 8; j++) s[j] = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, rows, states + j, 4);
    for (size_t blk = 0; blk < nblocks; blk++) {
        __m512i w[16];
        for (int i = 0; i < 16; i++) w[i] = _mm512_loadu_si512((const void *)(p[i] + 64 * blk));
        x16_transpose(w);
        for (int i = 0; i < 16; i++) w[i] = _mm512_shuffle_epi8(w[i], bswap);
        __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
        X16_EIGHT(0); X16_EIGHT(8); X16_EIGHT(16); X16_EIGHT(24);
        X16_EIGHT(32); X16_EIGHT(40); X16_EIGHT(48); X16_EIGHT(56);
        s[0] = _mm512_add_epi32(s[0], a); s[1] = _mm512_add_epi32(s[1], b);
        s[2] = _mm512_add_epi32(s[2], c); s[3] = _mm512_add_epi32(s[3], d);
        s[4] = _mm512_add_epi32(s[4], e); s[5] = _mm512_add_epi32(s[5], f);
        s[6] = _mm512_add_epi32(s[6], g); s[7] = _mm512_add_epi32(s[7], h);
    }
    for (int j = 0; j < 8; j++) _mm512_mask_i32scatter_epi32(states + j, live, rows, s[j], 4);
}
#else
static int x16_supported(void) { return 0; }
static void compress_x16(uint32_t *states, const uint8_t *const *data, unsigned lanes, size_t nblocks) {
    (void)states; (void)data; (void)lanes; (void)nblocks;
}
#endif

#if !(defined(__x86_64__) || defined(__i386__))
static int shani_supported(void) { return 0; }
static void compress_shani1(uint32_t h[8], const uint8_t *p, size_t n) { (void)h; (void)p; (void)n; }
static void compress_shani2(uint32_t a[8], uint32_t b[8], const uint8_t *p, const uint8_t *q, size_t n) {
    (void)a; (void)b; (void)p; (void)q; (void)n;
}
#endif

/* ------------------------------------------------------------------ dispatch */

int grid_sha256_supported(int path) {
    switch (path) {
    case GRID_SHA256_PORTABLE: return 1;
    case GRID_SHA256_SHANI: {
        static int cached = -1;
        if (cached < 0) cached = shani_supported();
        return cached;
    }
    case GRID_SHA256_AVX512: {
        static int cached = -1;
        if (cached < 0) cached = x16_supported();
        return cached;
    }
    default: return 0;
    }
}

int grid_sha256_compress16(int path, uint32_t *states, const uint8_t *const *data, unsigned lanes, size_t nblocks) {
    if (lanes < 1 || lanes > 16 || !grid_sha256_supported(path)) return -1;
    if (path == GRID_SHA256_AVX512) {
        compress_x16(states, data, lanes, nblocks);
    } else {
        for (unsigned i = 0; i < lanes; i++) {
            if (path == GRID_SHA256_SHANI) compress_shani1(states + 8 * i, data[i], nblocks);
            else compress_portable(states + 8 * i, data[i], nblocks);
        }
    }
    return 0;
}

int grid_sha256_compress2(int path, uint32_t state0[8], uint32_t state1[8],
                          const uint8_t *data0, const uint8_t *data1, size_t nblocks) {
    if (!grid_sha256_supported(path)) return -1;
    if (path == GRID_SHA256_SHANI) {
        compress_shani2(state0, state1, data0, data1, nblocks);
    } else {
        compress_portable(state0, data0, nblocks);
        compress_portable(state1, data1, nblocks);
    }
    return 0;
}

int grid_sha256_compress1(int path, uint32_t state[8], const uint8_t *data, size_t nblocks) {
    if (!grid_sha256_supported(path)) return -1;
    if (path == GRID_SHA256_SHANI) compress_shani1(state, data, nblocks);
    else compress_portable(state, data, nblocks);
    return 0;
}
