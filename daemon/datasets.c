/* daemon/datasets.c - see datasets.h. */
#include "datasets.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAX_ITEMS 100000000u   /* sanity bound on a header's count */

/* Find NAME or NAME.gz in dir; fills path and size. 0 or -1. */
static int find_file(const char *dir, const char *name, char *path, size_t n, int64_t *size)
{
    static const char *const suffixes[] = {"", ".gz"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, n, "%s/%s%s", dir, name, suffixes[i]);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            *size = (int64_t)st.st_size;
            return 0;
        }
    }
    return -1;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read an IDX header (gzip or plain): magic, then dims. */
static int idx_header(const char *path, int want_dims, uint32_t dims[3], gpp_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path", "cannot read %s: %s",
                             path, strerror(errno));
    unsigned char h[16];
    int need = 4 + 4 * want_dims;
    int got = gzread(f, h, (unsigned)need);
    gzclose(f);
    if (got != need || h[0] != 0 || h[1] != 0 || h[2] != 0x08 || h[3] != want_dims)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                             "%s is not an IDX file of unsigned bytes with %d dimensions", path,
                             want_dims);
    for (int i = 0; i < want_dims; i++)
        dims[i] = be32(h + 4 + 4 * i);
    if (dims[0] == 0 || dims[0] > IDX_MAX_ITEMS)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                             "%s: implausible item count %u", path, dims[0]);
    return 0;
}

/* The number of classes: the largest label + 1 (labels read through zlib). */
static int idx_classes(const char *path, uint32_t count, int *classes, gpp_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path", "cannot read %s", path);
    unsigned char buf[65536];
    int max = -1;
    gzseek(f, 8, SEEK_SET);
    uint32_t left = count;
    while (left > 0) {
        unsigned want = left < sizeof buf ? left : (unsigned)sizeof buf;
        int got = gzread(f, buf, want);
        if (got <= 0)
            break;
        for (int i = 0; i < got; i++)
            if (buf[i] > max)
                max = buf[i];
        left -= (uint32_t)got;
    }
    gzclose(f);
    if (left != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                             "%s is shorter than its header says", path);
    *classes = max + 1;
    return 0;
}

static cJSON *split_json(uint32_t count, int c, int h, int w)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", count);
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(c));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(h));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(w));
    return o;
}

static void add_file(cJSON *files, const char *path, int64_t size)
{
    const char *base = strrchr(path, '/');
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "name", base ? base + 1 : path);
    cJSON_AddNumberToObject(f, "size", (double)size);
    cJSON_AddItemToArray(files, f);
}

static int inspect_idx(const char *dir, cJSON *info, gpp_error *err)
{
    static const char *const names[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    char paths[4][PATH_MAX];
    int64_t size;
    cJSON *files = cJSON_AddArrayToObject(info, "files");
    for (int i = 0; i < 4; i++) {
        if (find_file(dir, names[i], paths[i], sizeof paths[i], &size) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                                 "%s has no %s[.gz]", dir, names[i]);
        add_file(files, paths[i], size);
    }
    uint32_t img[2][3], lab[2][3];
    for (int s = 0; s < 2; s++) {
        int rc = idx_header(paths[2 * s], 3, img[s], err);
        if (rc == 0)
            rc = idx_header(paths[2 * s + 1], 1, lab[s], err);
        if (rc != 0)
            return rc;
        if (img[s][0] != lab[s][0])
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                                 "%s holds %u images but %u labels", dir, img[s][0], lab[s][0]);
        if (img[s][1] == 0 || img[s][1] > 4096 || img[s][2] == 0 || img[s][2] > 4096)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                                 "%s: implausible image size %ux%u", paths[2 * s], img[s][1],
                                 img[s][2]);
    }
    int classes = 0;
    int rc = idx_classes(paths[1], lab[0][0], &classes, err);
    if (rc != 0)
        return rc;
    cJSON_AddItemToObject(info, "train", split_json(img[0][0], 1, (int)img[0][1], (int)img[0][2]));
    cJSON_AddItemToObject(info, "test", split_json(img[1][0], 1, (int)img[1][1], (int)img[1][2]));
    cJSON_AddNumberToObject(info, "classes", classes);
    return 0;
}

static int inspect_cifar(const char *dir, cJSON *info, gpp_error *err)
{
    cJSON *files = cJSON_AddArrayToObject(info, "files");
    uint32_t train = 0, test = 0;
    for (int i = 1; i <= 6; i++) {
        char name[32], path[PATH_MAX];
        if (i <= 5)
            snprintf(name, sizeof name, "data_batch_%d.bin", i);
        else
            snprintf(name, sizeof name, "test_batch.bin");
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path", "%s has no %s",
                                 dir, name);
        if (st.st_size == 0 || st.st_size % 3073 != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                                 "%s is not a whole number of 3073-byte CIFAR-10 records", path);
        uint32_t count = (uint32_t)(st.st_size / 3073);
        if (i <= 5)
            train += count;
        else
            test = count;
        add_file(files, path, (int64_t)st.st_size);
    }
    cJSON_AddItemToObject(info, "train", split_json(train, 3, 32, 32));
    cJSON_AddItemToObject(info, "test", split_json(test, 3, 32, 32));
    cJSON_AddNumberToObject(info, "classes", 10);
    return 0;
}

int dataset_inspect(const char *format, const char *path, char **info_json, gpp_error *err)
{
    *info_json = NULL;
    if (!path || path[0] != '/')
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                             "path must be an absolute folder on the daemon host");
    if (strlen(path) >= PATH_MAX - 64)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path", "path too long");
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                             "%s is not a folder on the daemon host", path);
    cJSON *info = cJSON_CreateObject();
    if (!info)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    int rc;
    if (strcmp(format, "idx") == 0)
        rc = inspect_idx(path, info, err);
    else if (strcmp(format, "cifar10-bin") == 0)
        rc = inspect_cifar(path, info, err);
    else
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "format",
                           "format must be \"idx\" or \"cifar10-bin\"");
    if (rc == 0) {
        *info_json = cJSON_PrintUnformatted(info);
        if (!*info_json)
            rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    }
    cJSON_Delete(info);
    return rc;
}
