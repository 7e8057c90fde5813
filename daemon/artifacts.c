/* daemon/artifacts.c - see artifacts.h. */
#include "artifacts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

struct artifacts {
    char dir[PATH_MAX];
    char tmp[PATH_MAX];
};

struct artifacts_writer {
    artifacts *a;
    int fd;
    char path[PATH_MAX];      /* the temporary file */
    gpp_sha256_ctx sha;
    int64_t size;
};

static bool hex_ok(const char *hex)
{
    uint8_t d[GPP_SHA256_LEN];
    return gpp_sha256_from_hex(hex, d) == 0;
}

int artifacts_open(artifacts **out, const char *dir, gpp_error *err)
{
    *out = NULL;
    artifacts *a = calloc(1, sizeof *a);
    if (!a)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    if (snprintf(a->dir, sizeof a->dir, "%s", dir) >= (int)sizeof a->dir ||
        snprintf(a->tmp, sizeof a->tmp, "%s/tmp", dir) >= (int)sizeof a->tmp) {
        free(a);
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data-dir", "path too long");
    }
    if (gpp__mkdir_p(a->dir, 0700) != 0 || gpp__mkdir_p(a->tmp, 0700) != 0) {
        int e = errno;
        free(a);
        return gpp_error_set(err, GPP_EIO, "io_error", "data-dir", "cannot create %s: %s", dir,
                             strerror(e));
    }
    DIR *d = opendir(a->tmp);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof p, "%s/%s", a->tmp, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    *out = a;
    return 0;
}

void artifacts_close(artifacts *a)
{
    free(a);
}

int artifacts_path(const artifacts *a, const char *hex, char *buf, size_t n)
{
    if (!hex || !hex_ok(hex))
        return GPP_EINVAL;
    if ((size_t)snprintf(buf, n, "%s/%s", a->dir, hex) >= n)
        return GPP_EINVAL;
    return 0;
}

int artifacts_exists(const artifacts *a, const char *hex)
{
    char p[PATH_MAX];
    if (artifacts_path(a, hex, p, sizeof p) != 0)
        return GPP_EINVAL;
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) ? 1 : 0;
}

int artifacts_remove(const artifacts *a, const char *hex)
{
    char p[PATH_MAX];
    if (artifacts_path(a, hex, p, sizeof p) != 0)
        return GPP_EINVAL;
    return unlink(p) == 0 || errno == ENOENT ? 0 : GPP_EIO;
}

int artifacts_writer_begin(artifacts *a, artifacts_writer **out, gpp_error *err)
{
    *out = NULL;
    artifacts_writer *w = calloc(1, sizeof *w);
    if (!w)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    w->a = a;
    if ((size_t)snprintf(w->path, sizeof w->path, "%s/part-XXXXXX", a->tmp) >= sizeof w->path) {
        free(w);
        return gpp_error_set(err, GPP_EINVAL, "internal", "", "artifact path too long");
    }
    w->fd = mkostemp(w->path, O_CLOEXEC);
    if (w->fd < 0) {
        int e = errno;
        free(w);
        return gpp_error_set(err, GPP_EIO, "unavailable", "", "cannot create a file in %s: %s",
                             a->tmp, strerror(e));
    }
    gpp_sha256_init(&w->sha);
    *out = w;
    return 0;
}

int artifacts_writer_append(artifacts_writer *w, const void *data, size_t len, gpp_error *err)
{
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t r = write(w->fd, p, left);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return gpp_error_set(err, GPP_EIO, "unavailable", "", "cannot write an artifact: %s",
                                 strerror(errno));
        }
        p += r;
        left -= (size_t)r;
    }
    gpp_sha256_update(&w->sha, data, len);
    w->size += (int64_t)len;
    return 0;
}

void artifacts_writer_abort(artifacts_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->path);
    free(w);
}

int artifacts_writer_commit(artifacts_writer *w, const char *expect_hex,
                            char out_hex[GPP_SHA256_HEX_LEN + 1], int64_t *size_out,
                            gpp_error *err)
{
    uint8_t digest[GPP_SHA256_LEN];
    char hex[GPP_SHA256_HEX_LEN + 1];
    int rc = 0;
    gpp_sha256_final(&w->sha, digest);
    gpp_sha256_hex(digest, hex);
    if (expect_hex && strcmp(expect_hex, hex) != 0) {
        rc = gpp_error_set(err, GPP_ECHECKSUM, "checksum_mismatch", "sha256",
                           "the data has sha256 %s, not %.64s", hex, expect_hex);
        goto fail;
    }
    if (fsync(w->fd) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "fsync of an artifact failed: %s",
                           strerror(errno));
        goto fail;
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "close of an artifact failed: %s",
                           strerror(errno));
        goto fail;
    }
    w->fd = -1;
    char final[PATH_MAX];
    if (artifacts_path(w->a, hex, final, sizeof final) != 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "internal", "", "artifact path too long");
        goto fail;
    }
    if (rename(w->path, final) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "cannot rename an artifact: %s",
                           strerror(errno));
        goto fail;
    }
    if (gpp__fsync_dir(w->a->dir) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "fsync of %s failed: %s", w->a->dir,
                           strerror(errno));
        free(w);
        return rc;
    }
    if (out_hex)
        memcpy(out_hex, hex, sizeof hex);
    if (size_out)
        *size_out = w->size;
    free(w);
    return 0;
fail:
    artifacts_writer_abort(w);
    return rc;
}

int artifacts_put(artifacts *a, const void *data, size_t len, const char *expect_hex,
                  char out_hex[GPP_SHA256_HEX_LEN + 1], gpp_error *err)
{
    uint8_t digest[GPP_SHA256_LEN];
    char hex[GPP_SHA256_HEX_LEN + 1];
    gpp_sha256(data, len, digest);
    gpp_sha256_hex(digest, hex);
    if (expect_hex && strcmp(expect_hex, hex) != 0)
        return gpp_error_set(err, GPP_ECHECKSUM, "checksum_mismatch", "sha256",
                             "the data has sha256 %s, not %.64s", hex, expect_hex);
    if (artifacts_exists(a, hex) == 1) {
        if (out_hex)
            memcpy(out_hex, hex, sizeof hex);
        return 0;
    }
    artifacts_writer *w;
    int rc = artifacts_writer_begin(a, &w, err);
    if (rc != 0)
        return rc;
    rc = artifacts_writer_append(w, data, len, err);
    if (rc != 0) {
        artifacts_writer_abort(w);
        return rc;
    }
    return artifacts_writer_commit(w, hex, out_hex, NULL, err);
}

int artifacts_verify(const artifacts *a, const char *hex, gpp_error *err)
{
    char p[PATH_MAX];
    if (artifacts_path(a, hex, p, sizeof p) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "sha256",
                             "not a sha256: 64 lowercase hex digits");
    struct stat st;
    if (stat(p, &st) != 0)
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "sha256", "no artifact %s", hex);
    uint8_t digest[GPP_SHA256_LEN];
    char got[GPP_SHA256_HEX_LEN + 1];
    int rc = gpp_sha256_file(p, digest, err);
    if (rc != 0)
        return rc;
    gpp_sha256_hex(digest, got);
    if (strcmp(got, hex) != 0)
        return gpp_error_set(err, GPP_ECHECKSUM, "checksum_mismatch", "sha256",
                             "artifact %s is corrupt (its content hashes to %s)", hex, got);
    return 0;
}
