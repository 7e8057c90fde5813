/* daemon/tokens.c - see tokens.h. */
#include "tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpp/error.h"
#include "gpp/sha256.h"
#include "util.h"

static const struct {
    const char *role, *prefix;
} tags[] = {
    {"admin", "gpp_adm_"},
    {"user", "gpp_usr_"},
    {"worker", "gpp_wrk_"},
};

int token_generate(const char *role, char out[TOKEN_TEXT_LEN + 1])
{
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        if (strcmp(role, tags[i].role) != 0)
            continue;
        uint8_t rnd[32];
        if (gpp__random(rnd, sizeof rnd) != 0)
            return GPP_EIO;
        memcpy(out, tags[i].prefix, 8);
        gpp__base64url(rnd, sizeof rnd, out + 8);
        memset(rnd, 0, sizeof rnd);
        return 0;
    }
    return GPP_EINVAL;
}

const char *token_check(const char *text, size_t len)
{
    if (len != TOKEN_TEXT_LEN)
        return NULL;
    const char *role = NULL;
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (memcmp(text, tags[i].prefix, 8) == 0)
            role = tags[i].role;
    if (!role)
        return NULL;
    uint8_t raw[33];
    if (gpp__base64url_decode(text + 8, TOKEN_TEXT_LEN - 8, raw, sizeof raw) != 32)
        return NULL;
    return role;
}

void token_hash(const char *text, size_t len, uint8_t out[32])
{
    gpp_sha256(text, len, out);
}

int token_read_file(const char *path, char out[TOKEN_TEXT_LEN + 1])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? GPP_ENOTFOUND : GPP_EIO;
    char buf[TOKEN_TEXT_LEN + 8];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        return GPP_EIO;
    size_t len = (size_t)n;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        len--;
    if (!token_check(buf, len))
        return GPP_EFORMAT;
    memcpy(out, buf, len);
    out[len] = '\0';
    return 0;
}

int token_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return GPP_EIO;
    char buf[TOKEN_TEXT_LEN + 2];
    size_t len = strlen(text);
    if (len > TOKEN_TEXT_LEN) {
        close(fd);
        return GPP_EINVAL;
    }
    memcpy(buf, text, len);
    buf[len++] = '\n';
    ssize_t w = write(fd, buf, len);
    int rc = (w == (ssize_t)len && fchmod(fd, 0600) == 0 && fsync(fd) == 0) ? 0 : GPP_EIO;
    if (close(fd) != 0)
        rc = GPP_EIO;
    if (rc != 0) {
        unlink(path);
        return rc;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    return gpp__fsync_dir(dirname(dir));
}
