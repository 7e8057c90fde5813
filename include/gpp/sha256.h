/* gpp/sha256.h - SHA-256 (FIPS 180-4), our own implementation.
 *
 * Artifacts (checkpoints, data set files) are named and checked by their
 * SHA-256; the worker protocol moves them as content-addressed blobs.
 *
 *   gpp_sha256_ctx c;
 *   gpp_sha256_init(&c);
 *   gpp_sha256_update(&c, part1, n1);      any number of times, any split
 *   gpp_sha256_final(&c, digest);          digest: 32 raw bytes
 *
 * or one-shot gpp_sha256(), or gpp_sha256_file() for a file read in chunks.
 * The hex form is 64 lowercase hex digits (what `sha256sum` prints).
 * No allocation anywhere; the context is a plain value (copy it to fork a hash).
 */
#ifndef GPP_SHA256_H
#define GPP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

#define GPP_SHA256_LEN 32       /* raw digest bytes */
#define GPP_SHA256_HEX_LEN 64   /* hex digits, without the terminating NUL */

typedef struct gpp_sha256_ctx {
    uint32_t h[8];          /* chaining state */
    uint64_t nbytes;        /* message bytes hashed so far */
    uint8_t block[64];      /* partial block */
    size_t fill;            /* bytes used in block (0..63) */
} gpp_sha256_ctx;

/* Start a new hash in *c. */
void gpp_sha256_init(gpp_sha256_ctx *c);

/* Hash `len` more bytes of the message (data may be NULL when len is 0). */
void gpp_sha256_update(gpp_sha256_ctx *c, const void *data, size_t len);

/* Finish the hash and write the 32-byte digest to out.  The context is
 * wiped afterwards; init it again to reuse it. */
void gpp_sha256_final(gpp_sha256_ctx *c, uint8_t out[GPP_SHA256_LEN]);

/* One-shot: out = SHA-256(data[0..len)). */
void gpp_sha256(const void *data, size_t len, uint8_t out[GPP_SHA256_LEN]);

/* Write the digest as 64 lowercase hex digits plus a NUL to out. */
void gpp_sha256_hex(const uint8_t digest[GPP_SHA256_LEN],
                    char out[GPP_SHA256_HEX_LEN + 1]);

/* Parse exactly 64 lowercase hex digits (NUL-terminated, nothing more) into
 * a raw digest.  Returns 0, or GPP_EFORMAT (out untouched) when the string
 * is NULL, has another length, or holds anything but [0-9a-f]. */
int gpp_sha256_from_hex(const char *hex, uint8_t out[GPP_SHA256_LEN]);

/* Hash the file at `path`, reading it in 16 KiB chunks (any size, no
 * mapping).  Returns 0, or GPP_EIO (open/read failure, errno text in
 * err->message, code "io_error", field = path). */
int gpp_sha256_file(const char *path, uint8_t out[GPP_SHA256_LEN], gpp_error *err);

#endif
