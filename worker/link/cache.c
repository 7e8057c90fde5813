/* worker/link/cache.c - the worker's content-addressed cache and its log
 * lines (see wl_internal.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gpp/sha256.h"
#include "wl_internal.h"

/* wl_log: see wl_internal.h. */
void wl_log(const char *level, const char *msg, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s prog=gpp-worker pid=%d"
                     " msg=\"%s\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level, (int)getpid(), msg);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line - 2 && fmt && fmt[0]) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (k > 0)
            n += k;
    }
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

static int mkdir_one(const char *p)
{
    return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir_one(buf) != 0)
                return -1;
            *p = '/';
        }
    }
    return mkdir_one(buf);
}

/* wl_cache_open: see wl_internal.h. */
int wl_cache_open(const char *dir, gpp_error *err)
{
    static const char *const subs[] = {"blobs", "tmp", "work", "datasets"};
    char p[PATH_MAX];
    if (mkdir_p(dir) != 0)
        return gpp_error_set(err, GPP_EIO, "io_error", "cache-dir", "cannot create %s: %s",
                             dir, strerror(errno));
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (snprintf(p, sizeof p, "%s/%s", dir, subs[i]) >= (int)sizeof p || mkdir_one(p) != 0)
            return gpp_error_set(err, GPP_EIO, "io_error", "cache-dir", "cannot create %s: %s",
                                 p, strerror(errno));
    }
    /* leftovers of a crash */
    snprintf(p, sizeof p, "%s/tmp", dir);
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char f[PATH_MAX + 300];
        snprintf(f, sizeof f, "%s/%s", p, e->d_name);
        unlink(f);
    }
    if (d)
        closedir(d);
    /* temporary files of a mid-stage checkpoint whose writer died
     * (NAME.tmp.PID, gpp_ckpt_writer_write_file) */
    snprintf(p, sizeof p, "%s/work", dir);
    d = opendir(p);
    while (d && (e = readdir(d))) {
        const char *t = strstr(e->d_name, ".gppm.tmp.");
        if (!t)
            continue;
        char *end = NULL;
        long pid = strtol(t + 10, &end, 10);
        if (!end || *end || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            char f[PATH_MAX + 300];
            snprintf(f, sizeof f, "%s/%s", p, e->d_name);
            unlink(f);
        }
    }
    if (d)
        closedir(d);
    return 0;
}

/* wl_cache_work_path: see wl_internal.h. */
void wl_cache_work_path(const char *dir, const char *stage_id, const char *what, char *buf,
                        size_t n)
{
    snprintf(buf, n, "%s/work/%s.%s.gppm", dir, stage_id, what);
}

/* wl_cache_blob_path: see wl_internal.h. */
void wl_cache_blob_path(const char *dir, const char *hex, char *buf, size_t n)
{
    snprintf(buf, n, "%s/blobs/%s", dir, hex);
}

/* wl_cache_has: see wl_internal.h. */
int wl_cache_has(const char *dir, const char *hex, int64_t size)
{
    char p[PATH_MAX + 80];
    struct stat st;
    wl_cache_blob_path(dir, hex, p, sizeof p);
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    return size < 0 || (int64_t)st.st_size == size;
}

static bool is_hex64(const char *s)
{
    uint8_t d[GPP_SHA256_LEN];
    return strlen(s) == 64 && gpp_sha256_from_hex(s, d) == 0;
}

/* wl_cache_list: see wl_internal.h. */
size_t wl_cache_list(const char *dir, char (*names)[65], size_t max)
{
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/blobs", dir);
    DIR *d = opendir(p);
    size_t n = 0;
    struct dirent *e;
    while (d && n < max && (e = readdir(d))) {
        if (is_hex64(e->d_name)) {
            memcpy(names[n], e->d_name, 64);
            names[n][64] = '\0';
            n++;
        }
    }
    if (d)
        closedir(d);
    return n;
}

/* wl_file_sha256: see wl_internal.h. */
int wl_file_sha256(const char *path, char hex[65], int64_t *size)
{
    uint8_t dig[GPP_SHA256_LEN];
    struct stat st;
    if (stat(path, &st) != 0 || gpp_sha256_file(path, dig, NULL) != 0)
        return GPP_EIO;
    gpp_sha256_hex(dig, hex);
    *size = (int64_t)st.st_size;
    return 0;
}

/* wl_cache_dataset: see wl_internal.h. */
int wl_cache_dataset(const char *dir, const char *name, size_t n, const gpp_proto_file *files,
                     char *out_dir, size_t out_n, gpp_error *err)
{
    /* the set's id: the hash of its file names and hashes */
    gpp_sha256_ctx c;
    gpp_sha256_init(&c);
    for (size_t i = 0; i < n; i++) {
        gpp_sha256_update(&c, files[i].name, strlen(files[i].name));
        gpp_sha256_update(&c, " ", 1);
        gpp_sha256_update(&c, files[i].sha256, 64);
        gpp_sha256_update(&c, "\n", 1);
    }
    uint8_t dig[GPP_SHA256_LEN];
    char hex[65];
    gpp_sha256_final(&c, dig);
    gpp_sha256_hex(dig, hex);
    hex[16] = '\0';
    char setdir[PATH_MAX], sub[PATH_MAX + 200];
    if (snprintf(setdir, sizeof setdir, "%s/datasets/%s", dir, hex) >= (int)sizeof setdir)
        return gpp_error_set(err, GPP_EIO, "io_error", "cache-dir", "cache path too long");
    snprintf(sub, sizeof sub, "%s/%s", setdir, name);
    if (mkdir_one(setdir) != 0 || mkdir_one(sub) != 0)
        return gpp_error_set(err, GPP_EIO, "io_error", "cache-dir", "cannot create %s: %s", sub,
                             strerror(errno));
    for (size_t i = 0; i < n; i++) {
        if (strchr(files[i].name, '/') || files[i].name[0] == '.')
            return gpp_error_set(err, GPP_EINVAL, "invalid_data", "dataset",
                                 "odd file name '%s' in the data set", files[i].name);
        char link_path[PATH_MAX + 400], target[PATH_MAX + 80], tmp[PATH_MAX + 420];
        snprintf(link_path, sizeof link_path, "%s/%s", sub, files[i].name);
        wl_cache_blob_path(dir, files[i].sha256, target, sizeof target);
        char cur[PATH_MAX + 80];
        ssize_t k = readlink(link_path, cur, sizeof cur - 1);
        if (k > 0) {
            cur[k] = '\0';
            if (strcmp(cur, target) == 0)
                continue;
        }
        snprintf(tmp, sizeof tmp, "%s.tmp%d", link_path, (int)getpid());
        unlink(tmp);
        if (symlink(target, tmp) != 0 || rename(tmp, link_path) != 0) {
            unlink(tmp);
            return gpp_error_set(err, GPP_EIO, "io_error", "cache-dir", "cannot link %s: %s",
                                 link_path, strerror(errno));
        }
    }
    snprintf(out_dir, out_n, "%s", setdir);
    return 0;
}
