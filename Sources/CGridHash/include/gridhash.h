/*
 * gridhash.h: SHA-256 compression of several independent messages at once.
 *
 * Tahoe hashes every block of every share (SHA256d of a tag and the block), so an upload
 * at 3-of-10 feeds 3.33 bytes to SHA-256 for each byte of the file, in blocks of equal
 * length. One SHA-256 stream is latency-bound on the SHA extensions (each
 * sha256rnds2 waits for the one before it); two streams interleaved keep the unit busy.
 *
 * Only the compression function is here: callers (GridCrypto.SHA256Lanes) lay out
 * the messages, padding included, and check every result against OpenSSL in tests.
 * State words are SHA-256's H0..H7 in their usual order.
 */
#ifndef GRID_HASH_H
#define GRID_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    GRID_SHA256_PORTABLE = 0, /* plain C, any CPU */
    GRID_SHA256_SHANI = 1,    /* x86 SHA extensions (SHA-NI) with SSE4.1 */
    GRID_SHA256_AVX512 = 2    /* AVX-512 (F and BW): 16 messages in the lanes of zmm registers; compress16 only */
};

/* 1 when this CPU can run the path, else 0. */
int grid_sha256_supported(int path);

/*
 * Compresses nblocks 64-byte blocks of two messages into their states at once
 * (state0 with data0, state1 with data1). Returns 0, or -1 when the path is not
 * supported here (nothing changed).
 */
int grid_sha256_compress2(int path, uint32_t state0[8], uint32_t state1[8],
                          const uint8_t *data0, const uint8_t *data1, size_t nblocks);

/* Compresses nblocks 64-byte blocks of one message. Returns 0 or -1 as above. */
int grid_sha256_compress1(int path, uint32_t state[8], const uint8_t *data, size_t nblocks);

/*
 * Compresses nblocks 64-byte blocks of each of `lanes` messages (1..16) at once:
 * message i's state is states[8i .. 8i+7] and its bytes start at data[i]. AVX-512 runs
 * them in the lanes of one vector (the fewer the lanes, the more of the work is thrown
 * away); the other paths run them one after the other. Returns 0 or -1 as above.
 */
int grid_sha256_compress16(int path, uint32_t *states, const uint8_t *const *data, unsigned lanes, size_t nblocks);

#ifdef __cplusplus
}
#endif
#endif
