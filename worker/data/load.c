/* Data set loaders: IDX (plain or gzip) and CIFAR-10 binary (gpp/data.h). */
#include "gpp/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#define FIELD "dataset"

static int err_nomem(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", FIELD, "out of memory loading the data set");
}

static void name_set(gpp_dataset *ds, const char *name)
{
    snprintf(ds->name, sizeof ds->name, "%s", name ? name : "");
}

int gpp_dataset_new(gpp_dataset **out, uint32_t n, uint32_t c, uint32_t h,
                    uint32_t w, uint32_t classes, const char *name,
                    gpp_error *err)
{
    *out = NULL;
    if (n == 0 || c == 0 || c > GPP_DATA_MAX_C || h == 0 || w == 0 ||
        h > GPP_DATA_MAX_SIDE || w > GPP_DATA_MAX_SIDE ||
        classes == 0 || classes > GPP_DATA_MAX_CLASSES)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD,
                             "bad data set shape: n %u, [%u, %u, %u], %u classes "
                             "(limits: c <= %d, side <= %u, classes <= %d)",
                             n, c, h, w, classes, GPP_DATA_MAX_C,
                             GPP_DATA_MAX_SIDE, GPP_DATA_MAX_CLASSES);
    uint64_t bytes = (uint64_t)n * c * h * w;
    if (bytes > GPP_DATA_MAX_BYTES)
        return gpp_error_set(err, GPP_ETOOBIG, "too_large", FIELD,
                             "data set of %llu pixel bytes is over the limit of %llu",
                             (unsigned long long)bytes, (unsigned long long)GPP_DATA_MAX_BYTES);
    gpp_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return err_nomem(err);
    ds->images = calloc((size_t)bytes, 1);
    ds->labels = calloc(n, 1);
    if (!ds->images || !ds->labels) {
        gpp_dataset_free(ds);
        return err_nomem(err);
    }
    ds->n = n; ds->c = c; ds->h = h; ds->w = w; ds->classes = classes;
    name_set(ds, name);
    *out = ds;
    return 0;
}

void gpp_dataset_free(gpp_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    free(ds);
}

void gpp_dataset_class_counts(const gpp_dataset *ds, const uint32_t *idx,
                              uint32_t n, uint32_t *counts)
{
    memset(counts, 0, ds->classes * sizeof *counts);
    if (!idx) {
        for (uint32_t i = 0; i < ds->n; i++) counts[ds->labels[i]]++;
        return;
    }
    for (uint32_t i = 0; i < n; i++) counts[ds->labels[idx[i]]]++;
}

/* ---- IDX -------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An open IDX file (plain or gzip, gzread decides). */
typedef struct idx_file {
    const char *path;
    gzFile gz;
    int cut;            /* the gzip stream ended before its trailer */
} idx_file;

/* Map a gzread failure onto an error naming the file. */
static int gz_fail(gzFile gz, const char *path, gpp_error *err)
{
    int zerr = 0;
    const char *msg = gzerror(gz, &zerr);
    if (zerr == Z_ERRNO)
        return gpp_error_set(err, GPP_EIO, "io_error", FIELD, "%s: read error: %s",
                             path, strerror(errno));
    return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD, "%s: corrupt gzip data: %s",
                         path, msg ? msg : "unknown");
}

/* Read up to len bytes; *got is how many arrived before the end of the data.
 * A gzip stream that ends early (no trailer) also ends the data, and sets
 * f->cut so the caller can report it.  Returns 0 or a negative GPP_E*. */
static int idx_read(idx_file *f, uint8_t *buf, size_t len, size_t *got, gpp_error *err)
{
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f->gz, buf + *got, (unsigned)want);
        if (r <= 0) {
            int zerr = Z_OK;
            gzerror(f->gz, &zerr);
            if (zerr == Z_BUF_ERROR) { f->cut = 1; return 0; }  /* "unexpected end of file" */
            if (zerr != Z_OK) return gz_fail(f->gz, f->path, err);
            return 0;
        }
        *got += (size_t)r;
    }
    return 0;
}

static int idx_open(idx_file *f, const char *path, gpp_error *err)
{
    f->path = path;
    f->gz = gzopen(path, "rb");
    if (!f->gz) {
        if (errno == ENOENT)
            return gpp_error_set(err, GPP_ENOTFOUND, "not_found", FIELD,
                                 "%s: no such file", path);
        return gpp_error_set(err, GPP_EIO, "io_error", FIELD, "%s: cannot open: %s",
                             path, strerror(errno));
    }
    return 0;
}

static void idx_close(idx_file *f)
{
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

/* Read and check the header: magic, then ndims big-endian dimensions. */
static int idx_header(idx_file *f, uint32_t magic, const char *what, uint32_t *dims,
                      int ndims, gpp_error *err)
{
    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims, got;
    int rc = idx_read(f, hdr, hlen, &got, err);
    if (rc < 0) return rc;
    if (got >= 4 && be32(hdr) != magic)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s: bad magic number 0x%08x, expected 0x%08x (IDX %s)",
                             f->path, be32(hdr), magic, what);
    if (got < hlen)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s is truncated: expected a %zu-byte header, found %zu bytes",
                             f->path, hlen, got);
    for (int i = 0; i < ndims; i++) dims[i] = be32(hdr + 4 + 4 * i);
    return 0;
}

/* Read exactly `len` payload bytes into dst and check that nothing follows.
 * hlen is the header size, for the messages' whole-file byte counts. */
static int idx_payload(idx_file *f, uint8_t *dst, size_t len, size_t hlen, gpp_error *err)
{
    size_t got;
    int rc = idx_read(f, dst, len, &got, err);
    if (rc < 0) return rc;
    if (got < len)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s is truncated: expected %zu bytes, found %zu",
                             f->path, hlen + len, hlen + got);
    uint8_t scratch[4096];
    size_t extra = 0, n;
    do {
        rc = idx_read(f, scratch, sizeof scratch, &n, err);
        if (rc < 0) return rc;
        extra += n;
    } while (n == sizeof scratch);
    if (f->cut)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s is truncated: the gzip stream ends before its trailer",
                             f->path);
    if (extra)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s has %zu trailing bytes: expected %zu bytes, found %zu",
                             f->path, extra, hlen + len, hlen + len + extra);
    return 0;
}

/* For a plain (not gzip) file, compare its size with the header's before
 * anything is allocated; a gzip file's size is checked while it is read. */
static int idx_plain_size(idx_file *f, uint64_t expect, gpp_error *err)
{
    struct stat st;
    if (!gzdirect(f->gz) || stat(f->path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    uint64_t size = (uint64_t)st.st_size;
    if (size < expect)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s is truncated: expected %llu bytes, found %llu", f->path,
                             (unsigned long long)expect, (unsigned long long)size);
    if (size > expect)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s has %llu trailing bytes: expected %llu bytes, found %llu",
                             f->path, (unsigned long long)(size - expect),
                             (unsigned long long)expect, (unsigned long long)size);
    return 0;
}

int gpp_dataset_read_idx(gpp_dataset **out, const char *images_path,
                         const char *labels_path, const char *name,
                         gpp_error *err)
{
    idx_file fi = {0}, fl = {0};
    gpp_dataset *ds = NULL;
    uint32_t idims[3] = {0, 0, 0}, ldims[1] = {0};
    int rc;

    *out = NULL;
    if ((rc = idx_open(&fi, images_path, err)) < 0) goto done;
    if ((rc = idx_open(&fl, labels_path, err)) < 0) goto done;
    if ((rc = idx_header(&fi, 0x00000803, "unsigned-byte images, 3 dimensions", idims, 3, err)) < 0)
        goto done;
    if ((rc = idx_header(&fl, 0x00000801, "unsigned-byte labels, 1 dimension", ldims, 1, err)) < 0)
        goto done;
    if (idims[0] == 0 || idims[0] > GPP_DATA_MAX_N || idims[1] == 0 || idims[2] == 0 ||
        idims[1] > GPP_DATA_MAX_SIDE || idims[2] > GPP_DATA_MAX_SIDE) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                           "%s: header declares %u images of %ux%u (limits: 1..%u images, "
                           "sides 1..%u)", images_path, idims[0], idims[1], idims[2],
                           GPP_DATA_MAX_N, GPP_DATA_MAX_SIDE);
        goto done;
    }
    if (ldims[0] != idims[0]) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                           "count mismatch: %s holds %u images but %s holds %u labels",
                           images_path, idims[0], labels_path, ldims[0]);
        goto done;
    }
    if ((rc = idx_plain_size(&fi, 16 + (uint64_t)idims[0] * idims[1] * idims[2], err)) < 0 ||
        (rc = idx_plain_size(&fl, 8 + (uint64_t)ldims[0], err)) < 0)
        goto done;
    if ((rc = gpp_dataset_new(&ds, idims[0], 1, idims[1], idims[2], GPP_DATA_IDX_CLASSES,
                              name, err)) < 0)
        goto done;
    ds->format = GPP_DATA_IDX;
    if ((rc = idx_payload(&fi, ds->images, (size_t)ds->n * ds->h * ds->w, 16, err)) < 0)
        goto done;
    if ((rc = idx_payload(&fl, ds->labels, ds->n, 8, err)) < 0)
        goto done;
    for (uint32_t i = 0; i < ds->n; i++) {
        if (ds->labels[i] >= ds->classes) {
            rc = gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                               "mislabelled: label %u at index %u in %s (labels must be < %u)",
                               ds->labels[i], i, labels_path, ds->classes);
            goto done;
        }
    }
    *out = ds;
    ds = NULL;
    rc = 0;
done:
    idx_close(&fi);
    idx_close(&fl);
    gpp_dataset_free(ds);
    return rc;
}

/* ---- CIFAR-10 --------------------------------------------------------------- */

/* Check one file's size; *records gets its record count. */
static int cifar_size(const char *path, uint32_t expect, uint32_t *records, gpp_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return gpp_error_set(err, GPP_ENOTFOUND, "not_found", FIELD, "%s: no such file", path);
        return gpp_error_set(err, GPP_EIO, "io_error", FIELD, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD, "%s is not a regular file", path);
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0 || size % GPP_DATA_CIFAR10_RECORD != 0)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s: size %llu bytes is not a positive multiple of %d "
                             "(1 label byte + 3072 pixel bytes per record)",
                             path, (unsigned long long)size, GPP_DATA_CIFAR10_RECORD);
    uint64_t rec = size / GPP_DATA_CIFAR10_RECORD;
    if (expect && rec != expect)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                             "%s holds %llu records, expected %u", path,
                             (unsigned long long)rec, expect);
    if (rec > GPP_DATA_MAX_N)
        return gpp_error_set(err, GPP_ETOOBIG, "too_large", FIELD,
                             "%s holds %llu records, over the limit of %u", path,
                             (unsigned long long)rec, GPP_DATA_MAX_N);
    *records = (uint32_t)rec;
    return 0;
}

/* Read `records` records of path into ds starting at image `first`. */
static int cifar_read(gpp_dataset *ds, uint32_t first, const char *path, uint32_t records,
                      gpp_error *err)
{
    enum { CHUNK = 1024 };
    const size_t px = GPP_DATA_CIFAR10_RECORD - 1;
    uint8_t *buf = NULL;
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return gpp_error_set(err, GPP_ENOTFOUND, "not_found", FIELD, "%s: no such file", path);
        return gpp_error_set(err, GPP_EIO, "io_error", FIELD, "%s: cannot open: %s", path,
                             strerror(errno));
    }
    buf = malloc((size_t)CHUNK * GPP_DATA_CIFAR10_RECORD);
    if (!buf) { rc = err_nomem(err); goto done; }
    for (uint32_t r = 0; r < records; r += CHUNK) {
        uint32_t m = records - r < CHUNK ? records - r : CHUNK;
        size_t want = (size_t)m * GPP_DATA_CIFAR10_RECORD;
        if (fread(buf, 1, want, f) != want) {
            rc = ferror(f) ? gpp_error_set(err, GPP_EIO, "io_error", FIELD, "%s: read error: %s",
                                           path, strerror(errno))
                           : gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                                           "%s is truncated: shrank while being read", path);
            goto done;
        }
        for (uint32_t i = 0; i < m; i++) {
            const uint8_t *rec = buf + (size_t)i * GPP_DATA_CIFAR10_RECORD;
            uint32_t k = first + r + i;
            if (rec[0] >= ds->classes) {
                rc = gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                                   "mislabelled: label %u at index %u in %s (labels must be < %u)",
                                   rec[0], r + i, path, ds->classes);
                goto done;
            }
            ds->labels[k] = rec[0];
            memcpy(ds->images + (size_t)k * px, rec + 1, px);
        }
    }
done:
    free(buf);
    fclose(f);
    return rc;
}

int gpp_dataset_read_cifar10(gpp_dataset **out, const char *const *paths,
                             size_t npaths, uint32_t records_per_file,
                             const char *name, gpp_error *err)
{
    uint32_t *recs = NULL;
    gpp_dataset *ds = NULL;
    uint64_t total = 0;
    int rc = 0;

    *out = NULL;
    if (npaths == 0 || npaths > 1024)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD,
                             "CIFAR-10: %zu files given (1..1024)", npaths);
    recs = calloc(npaths, sizeof *recs);
    if (!recs) return err_nomem(err);
    for (size_t i = 0; i < npaths; i++) {
        if ((rc = cifar_size(paths[i], records_per_file, &recs[i], err)) < 0) goto done;
        total += recs[i];
    }
    if (total > GPP_DATA_MAX_N) {
        rc = gpp_error_set(err, GPP_ETOOBIG, "too_large", FIELD,
                           "CIFAR-10 files hold %llu records, over the limit of %u",
                           (unsigned long long)total, GPP_DATA_MAX_N);
        goto done;
    }
    if ((rc = gpp_dataset_new(&ds, (uint32_t)total, 3, 32, 32, 10, name, err)) < 0) goto done;
    ds->format = GPP_DATA_CIFAR10;
    uint32_t first = 0;
    for (size_t i = 0; i < npaths; i++) {
        if ((rc = cifar_read(ds, first, paths[i], recs[i], err)) < 0) goto done;
        first += recs[i];
    }
    *out = ds;
    ds = NULL;
done:
    free(recs);
    gpp_dataset_free(ds);
    return rc;
}

/* ---- folders ---------------------------------------------------------------- */

/* The last path component of dir, without trailing slashes. */
static void base_name(char *out, size_t cap, const char *dir)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    size_t n = len - start;
    if (n >= cap) n = cap - 1;
    memcpy(out, dir + start, n);
    out[n] = '\0';
}

static int dir_check(const char *dir, gpp_error *err)
{
    struct stat st;
    if (!dir || !*dir)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD, "no data set folder given");
    if (stat(dir, &st) != 0)
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", FIELD, "%s: no such folder", dir);
    if (!S_ISDIR(st.st_mode))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD, "%s is not a folder", dir);
    return 0;
}

/* path = dir/file, or dir/file.gz when only that exists. */
static int idx_path(char *path, size_t cap, const char *dir, const char *file, gpp_error *err)
{
    struct stat st;
    if ((size_t)snprintf(path, cap, "%s/%s", dir, file) >= cap - 3)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD, "path too long: %s", dir);
    if (stat(path, &st) == 0) return 0;
    strcat(path, ".gz");
    if (stat(path, &st) == 0) return 0;
    return gpp_error_set(err, GPP_ENOTFOUND, "not_found", FIELD,
                         "missing IDX file: neither %s/%s nor %s exists", dir, file, path);
}

int gpp_data_load_idx(const char *dir, gpp_dataset **train, gpp_dataset **test,
                      gpp_error *err)
{
    static const char *const files[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    char paths[4][4096], name[64];
    int rc;

    *train = *test = NULL;
    if ((rc = dir_check(dir, err)) < 0) return rc;
    for (int i = 0; i < 4; i++)
        if ((rc = idx_path(paths[i], sizeof paths[i], dir, files[i], err)) < 0) return rc;
    base_name(name, sizeof name, dir);
    if ((rc = gpp_dataset_read_idx(train, paths[0], paths[1], name, err)) < 0) return rc;
    if ((rc = gpp_dataset_read_idx(test, paths[2], paths[3], name, err)) < 0) {
        gpp_dataset_free(*train);
        *train = NULL;
        return rc;
    }
    if ((*train)->h != (*test)->h || (*train)->w != (*test)->w) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", FIELD,
                           "%s: training images are %ux%u but test images %ux%u", dir,
                           (*train)->h, (*train)->w, (*test)->h, (*test)->w);
        gpp_dataset_free(*train);
        gpp_dataset_free(*test);
        *train = *test = NULL;
    }
    return rc;
}

int gpp_data_load_cifar10(const char *dir, gpp_dataset **train,
                          gpp_dataset **test, gpp_error *err)
{
    char paths[6][4096], name[64];
    const char *trainp[5], *testp[1];
    int rc;

    *train = *test = NULL;
    if ((rc = dir_check(dir, err)) < 0) return rc;
    for (int i = 0; i < 6; i++) {
        int len = i < 5 ? snprintf(paths[i], sizeof paths[i], "%s/data_batch_%d.bin", dir, i + 1)
                        : snprintf(paths[i], sizeof paths[i], "%s/test_batch.bin", dir);
        if ((size_t)len >= sizeof paths[i])
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", FIELD, "path too long: %s", dir);
        if (i < 5) trainp[i] = paths[i];
    }
    testp[0] = paths[5];
    /* Every file's presence and size first, so a missing test file is found
     * before 150 MB are read. */
    for (int i = 0; i < 6; i++) {
        uint32_t rec;
        if ((rc = cifar_size(paths[i], GPP_DATA_CIFAR10_RECORDS, &rec, err)) < 0) return rc;
    }
    base_name(name, sizeof name, dir);
    if ((rc = gpp_dataset_read_cifar10(train, trainp, 5, GPP_DATA_CIFAR10_RECORDS, name, err)) < 0)
        return rc;
    if ((rc = gpp_dataset_read_cifar10(test, testp, 1, GPP_DATA_CIFAR10_RECORDS, name, err)) < 0) {
        gpp_dataset_free(*train);
        *train = NULL;
    }
    return rc;
}

int gpp_data_load(gpp_data_format format, const char *dir, gpp_dataset **train,
                  gpp_dataset **test, gpp_error *err)
{
    switch (format) {
    case GPP_DATA_IDX: return gpp_data_load_idx(dir, train, test, err);
    case GPP_DATA_CIFAR10: return gpp_data_load_cifar10(dir, train, test, err);
    }
    *train = *test = NULL;
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "dataset.format",
                         "unknown data set format %d", (int)format);
}

int gpp_data_format_parse(const char *s, gpp_data_format *out, gpp_error *err)
{
    if (s && strcmp(s, "idx") == 0) { *out = GPP_DATA_IDX; return 0; }
    if (s && strcmp(s, "cifar10-bin") == 0) { *out = GPP_DATA_CIFAR10; return 0; }
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "dataset.format",
                         "dataset.format must be \"idx\" or \"cifar10-bin\", not \"%s\"",
                         s ? s : "(null)");
}

int gpp_data_augment_parse(const char *s, gpp_data_format format,
                           gpp_data_augment *out, gpp_error *err)
{
    if (s && strcmp(s, "none") == 0) { *out = GPP_DATA_AUG_NONE; return 0; }
    if (s && strcmp(s, "crop-flip") == 0) { *out = GPP_DATA_AUG_CROP_FLIP; return 0; }
    if (s && strcmp(s, "auto") == 0) {
        *out = format == GPP_DATA_CIFAR10 ? GPP_DATA_AUG_CROP_FLIP : GPP_DATA_AUG_NONE;
        return 0;
    }
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data.augment",
                         "data.augment must be \"auto\", \"none\" or \"crop-flip\", not \"%s\"",
                         s ? s : "(null)");
}
