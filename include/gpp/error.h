/* gpp/error.h - the one error shape shared by the job spec, the HTTP API,
 * the wire protocol and the checkpoint reader.
 *
 * It maps 1:1 onto the API's JSON error:
 *   {"error": {"code": "invalid_argument", "message": "...", "field": "prune.ratio"}}
 * Functions that can fail take a `gpp_error *err` (may be NULL) and fill it;
 * they return 0 on success or a negative GPP_E* code.
 */
#ifndef GPP_ERROR_H
#define GPP_ERROR_H

#include <stdarg.h>

enum {
    GPP_OK = 0,
    GPP_EINVAL = -1,     /* invalid argument / spec (HTTP 422 or 400) */
    GPP_ENOMEM = -2,     /* out of memory */
    GPP_EIO = -3,        /* I/O error (errno in message) */
    GPP_ETOOBIG = -4,    /* over a size or nesting limit (HTTP 413 / 400) */
    GPP_EFORMAT = -5,    /* malformed input: bad JSON, bad frame, corrupt file */
    GPP_EVERSION = -6,   /* unsupported version */
    GPP_ECHECKSUM = -7,  /* checksum mismatch */
    GPP_ENOTFOUND = -8,  /* missing file, name or key */
    GPP_EAGAIN = -9,     /* need more input (incremental decoders) */
    GPP_EUNAVAIL = -10,  /* storage temporarily unavailable: disk full, database
                            locked or busy, I/O error; nothing was written, try
                            again later (code "unavailable", HTTP 503 + Retry-After) */
};

typedef struct gpp_error {
    char code[32];       /* machine code: "invalid_argument", "too_large", "malformed", ... */
    char field[128];     /* field path at fault ("prune.ratio", "model[3].k"), or "" */
    char message[512];   /* one human sentence naming the field, the rule and the value */
} gpp_error;

/* Fill *err (no-op when err is NULL); returns `rc` so callers can
 * `return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.ratio", "...%g", v);` */
int gpp_error_set(gpp_error *err, int rc, const char *code, const char *field,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Clear *err to empty strings (no-op when NULL). */
void gpp_error_clear(gpp_error *err);

/* A short static name for a GPP_E* code ("invalid argument", ...). */
const char *gpp_strerror(int rc);

#endif
