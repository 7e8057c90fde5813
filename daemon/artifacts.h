/* daemon/artifacts.h - content-addressed files under DATA_DIR/artifacts/,
 * named by their SHA-256 (64 lowercase hex digits).  A file is written to a
 * temporary name in artifacts/tmp/, fsynced, checked against the expected
 * sha256 (if any), renamed into place and the folder fsynced, so a name
 * never refers to a partial or wrong file, even after a crash. */
#ifndef GPPD_ARTIFACTS_H
#define GPPD_ARTIFACTS_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"
#include "gpp/sha256.h"

typedef struct artifacts artifacts;

/* Open (creating) DIR and DIR/tmp (mode 0700); leftovers in tmp/ from a
 * crash are removed. *out is freed with artifacts_close. */
int artifacts_open(artifacts **out, const char *dir, gpp_error *err);
void artifacts_close(artifacts *a);

/* Write len bytes as an artifact. expect_hex (may be NULL) is the sha256 the
 * data must have (GPP_ECHECKSUM, code "checksum_mismatch", otherwise).
 * out_hex receives the name. Writing an existing artifact is a no-op. */
int artifacts_put(artifacts *a, const void *data, size_t len, const char *expect_hex,
                  char out_hex[GPP_SHA256_HEX_LEN + 1], gpp_error *err);

/* Streaming writer, for blobs that arrive in chunks. */
typedef struct artifacts_writer artifacts_writer;
int artifacts_writer_begin(artifacts *a, artifacts_writer **out, gpp_error *err);
int artifacts_writer_append(artifacts_writer *w, const void *data, size_t len, gpp_error *err);
/* Finish: fsync, check expect_hex (may be NULL), rename, fsync the folder;
 * frees w in every case. *size_out (may be NULL) receives the length. */
int artifacts_writer_commit(artifacts_writer *w, const char *expect_hex,
                            char out_hex[GPP_SHA256_HEX_LEN + 1], int64_t *size_out,
                            gpp_error *err);
/* Drop an unfinished writer (removes its temporary file). NULL is fine. */
void artifacts_writer_abort(artifacts_writer *w);

/* Path of an artifact (whether or not it exists) into buf; GPP_EINVAL for a
 * name that is not 64 lowercase hex digits. */
int artifacts_path(const artifacts *a, const char *hex, char *buf, size_t n);

/* 1 if the artifact file exists, 0 if not, < 0 for a bad name. */
int artifacts_exists(const artifacts *a, const char *hex);

/* Remove an artifact file (an upload gppd refused, or one no upload and no
 * job names any more): 0 (also when it is not there), GPP_EINVAL, GPP_EIO. */
int artifacts_remove(const artifacts *a, const char *hex);

/* Re-hash an artifact file and compare with its name: 0, GPP_ECHECKSUM,
 * GPP_ENOTFOUND or GPP_EIO. */
int artifacts_verify(const artifacts *a, const char *hex, gpp_error *err);

#endif
