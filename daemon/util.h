/* daemon/util.h - small helpers shared by the daemon's modules (prefix gpp__):
 * time, randomness, base64url/base32 text, constant-time compare, a growable
 * string buffer, file-system durability (fsync of files and folders). */
#ifndef GPPD_UTIL_H
#define GPPD_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall-clock time in unix milliseconds. */
int64_t gpp__now_ms(void);

/* Monotonic time in nanoseconds (for durations). */
uint64_t gpp__mono_ns(void);

/* Fill buf with n bytes from getrandom(2). Returns 0 or GPP_EIO. */
int gpp__random(void *buf, size_t n);

/* Encode n bytes as base64url without padding; out needs 4*ceil(n/3)+1 bytes.
 * Returns the number of characters written (NUL not counted). */
size_t gpp__base64url(const uint8_t *in, size_t n, char *out);

/* Decode base64url (no padding) of `len` characters into out (cap bytes).
 * Returns the decoded length, or -1 on a bad character/length or overflow. */
long gpp__base64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* Write `prefix` followed by nchars random base32 characters
 * [a-z2-7] and a NUL into out (size outsz). Returns 0 or GPP_EIO/GPP_EINVAL. */
int gpp__random_id(const char *prefix, size_t nchars, char *out, size_t outsz);

/* Constant-time equality of two n-byte buffers: true when equal. */
bool gpp__ct_equal(const void *a, const void *b, size_t n);

/* Format unix ms as RFC 3339 UTC with milliseconds ("2025-01-02T03:04:05.678Z")
 * into out (at least 32 bytes). */
void gpp__fmt_time(int64_t ms, char out[32]);

/* fsync the folder at `path` (after a rename or create inside it).
 * Returns 0 or GPP_EIO. */
int gpp__fsync_dir(const char *path);

/* mkdir -p: create `path` and missing parents; the last component gets
 * `mode`, parents 0755. Existing folders are fine. Returns 0 or GPP_EIO. */
int gpp__mkdir_p(const char *path, unsigned mode);

/* Parse a whole decimal integer in [lo, hi]; returns 0, or -1 when s is
 * empty, has other characters, or is out of range. */
int gpp__parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* A growable NUL-terminated byte buffer. On allocation failure it sets
 * `failed` and further appends do nothing; check it once at the end. */
typedef struct gpp__buf {
    char *data;      /* NUL-terminated while len < cap; owned */
    size_t len;      /* bytes used, NUL not counted */
    size_t cap;      /* bytes allocated */
    bool failed;     /* an allocation failed */
} gpp__buf;

/* Append n bytes. */
void gpp__buf_add(gpp__buf *b, const void *p, size_t n);
/* Append a NUL-terminated string. */
void gpp__buf_puts(gpp__buf *b, const char *s);
/* Append printf-formatted text. */
void gpp__buf_printf(gpp__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one
 * (reads at most up to the first byte that breaks the sequence). */
size_t gpp__utf8_len(const unsigned char *s);
/* Append s as a JSON string literal (quotes included, escapes as needed;
 * a byte that is not part of valid UTF-8 becomes U+FFFD, so the text is
 * always valid JSON). */
void gpp__buf_json_str(gpp__buf *b, const char *s);
/* Append a double as JSON: shortest text that reads back exactly; NaN and
 * infinities as null. */
void gpp__buf_json_num(gpp__buf *b, double v);
/* Hand the data to the caller (who frees it) and reset *b; NULL if failed. */
char *gpp__buf_take(gpp__buf *b, size_t *len);
/* Free the data; the buffer may be reused. */
void gpp__buf_free(gpp__buf *b);

#endif
