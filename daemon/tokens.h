/* daemon/tokens.h - bearer token text (prefix token_).
 *
 * A token is "gpp_" + a role tag ("adm", "usr", "wrk") + "_" + 43 characters
 * of base64url (32 random bytes from getrandom), e.g. gpp_usr_3q2-...; only
 * its SHA-256 is stored. */
#ifndef GPPD_TOKENS_H
#define GPPD_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_TEXT_LEN 51      /* 8 + 43 */
#define TOKEN_PREFIX_LEN 12    /* shown in lists: "gpp_usr_AbCd" */

/* Draw a new token for `role` ("admin", "user", "worker") into out.
 * Returns 0, GPP_EINVAL for an unknown role, GPP_EIO without randomness. */
int token_generate(const char *role, char out[TOKEN_TEXT_LEN + 1]);

/* Check the shape of a token text of len bytes (not NUL-terminated):
 * returns the role it claims ("admin", "user", "worker") or NULL. */
const char *token_check(const char *text, size_t len);

/* SHA-256 of the token text. */
void token_hash(const char *text, size_t len, uint8_t out[32]);

/* Read a token file (one token, optional trailing newline) into out.
 * Returns 0, GPP_ENOTFOUND when missing, GPP_EFORMAT when it holds no token. */
int token_read_file(const char *path, char out[TOKEN_TEXT_LEN + 1]);

/* Create `path` with mode 0600 (O_CREAT|O_EXCL: never overwrites), write the
 * token and a newline, fsync it and its folder. Returns 0 or GPP_EIO. */
int token_write_file(const char *path, const char *text);

#endif
