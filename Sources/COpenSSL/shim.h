#ifndef GRID_COPENSSL_SHIM_H
#define GRID_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

/* OpenSSL exposes these as macros, which Swift cannot call: thin inline wrappers. */

/* TLS 1.3 only. */
static inline int grid_ssl_ctx_tls13_only(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
}

/* Non-blocking friendly modes; release buffers of idle connections to save memory. */
static inline void grid_ssl_ctx_set_modes(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Read as much as the socket has (up to the buffer) in one read(2), not each record's
       5-byte header and then its body: two system calls per 16 KiB record otherwise. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 128 * 1024);
}

static int grid_ssl_accept_any_certificate(int preverify_ok, X509_STORE_CTX *ctx) {
    (void)preverify_ok;
    (void)ctx;
    return 1; /* grid pins the peer's public key itself after the handshake */
}

/* Ask for the peer's certificate but accept any: trust comes from the pinned key. */
static inline void grid_ssl_ctx_request_any_peer_cert(SSL_CTX *ctx) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, grid_ssl_accept_any_certificate);
}

static inline int grid_x509_set_name(X509 *x, const char *cn) {
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0))
        return 0;
    return X509_set_issuer_name(x, name);
}

static inline long grid_ssl_session_cache_off(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}

static inline int grid_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
#endif
