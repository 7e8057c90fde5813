/* Data loaders (worker/data): IDX and CIFAR-10 files written here (plain and
 * gzip) with every error case, round-robin limits, the validation split,
 * normalisation, crop-and-flip, shuffling, resume, the class-balanced sampler,
 * the per-class picker, and the real Fashion-MNIST from Debian's
 * dataset-fashion-mnist (or $GPP_FASHION_MNIST_DIR). */
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "gpp/data.h"

static char g_tmp[256];

/* ---- helpers -------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/gpp-test-data-XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh empty folder under g_tmp; returns its path in a static ring. */
static const char *mkdir_tmp(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 512, "%s/%s", g_tmp, name);
    assert_int_equal(mkdir(p, 0700), 0);
    return p;
}

static const char *path_in(const char *dir, const char *file)
{
    static char bufs[8][512];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, file);
    return p;
}

static void write_file(const char *path, const uint8_t *data, size_t len, int gz)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        if (len) assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
        assert_int_equal(gzclose(g), Z_OK);
        return;
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, *len, f), *len);
    fclose(f);
    return p;
}

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* IDX image file bytes: magic, n, rows, cols, then pixel (i, p) = (7i + 3p) & 255. */
static uint8_t *idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, size_t *len)
{
    *len = 16 + (size_t)n * rows * cols;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    be32_put(b, magic); be32_put(b + 4, n); be32_put(b + 8, rows); be32_put(b + 12, cols);
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < (size_t)rows * cols; p++)
            b[16 + i * rows * cols + p] = (uint8_t)((7 * i + 3 * p) & 255);
    return b;
}

/* IDX label file bytes: magic, n, then label i = (3i + 1) % 10. */
static uint8_t *idx_labels(uint32_t magic, uint32_t n, size_t *len)
{
    *len = 8 + (size_t)n;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    be32_put(b, magic); be32_put(b + 4, n);
    for (uint32_t i = 0; i < n; i++) b[8 + i] = (uint8_t)((3 * i + 1) % 10);
    return b;
}

static void write_idx_pair(const char *dir, const char *prefix, uint32_t n, uint32_t rows,
                           uint32_t cols, int gz)
{
    char name[128];
    size_t li, ll;
    uint8_t *im = idx_images(0x803, n, rows, cols, &li), *lb = idx_labels(0x801, n, &ll);
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    write_file(path_in(dir, name), im, li, gz);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    write_file(path_in(dir, name), lb, ll, gz);
    free(im);
    free(lb);
}

static void check_idx_content(const gpp_dataset *ds, uint32_t n, uint32_t rows, uint32_t cols)
{
    assert_int_equal(ds->n, n);
    assert_int_equal(ds->c, 1);
    assert_int_equal(ds->h, rows);
    assert_int_equal(ds->w, cols);
    assert_int_equal(ds->classes, 10);
    assert_int_equal(ds->format, GPP_DATA_IDX);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(ds->labels[i], (3 * i + 1) % 10);
        for (uint32_t p = 0; p < rows * cols; p++)
            assert_int_equal(ds->images[(size_t)i * rows * cols + p], (7 * i + 3 * p) & 255);
    }
}

/* Expect rc and a message containing every given fragment (NULL-terminated). */
static void expect_err(int rc, int want, const gpp_error *err, ...)
{
    if (rc != want) fprintf(stderr, "rc %d (want %d): %s\n", rc, want, err->message);
    assert_int_equal(rc, want);
    va_list ap;
    va_start(ap, err);
    for (const char *frag; (frag = va_arg(ap, const char *));) {
        if (!strstr(err->message, frag))
            fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err->message, frag);
        assert_non_null(strstr(err->message, frag));
    }
    va_end(ap);
}

/* A hand-built data set whose labels are given. */
static gpp_dataset *ds_with_labels(const uint8_t *labels, uint32_t n, uint32_t classes,
                                   uint32_t c, uint32_t h, uint32_t w)
{
    gpp_dataset *ds;
    assert_int_equal(gpp_dataset_new(&ds, n, c, h, w, classes, "hand", NULL), 0);
    memcpy(ds->labels, labels, n);
    for (size_t i = 0; i < (size_t)n * c * h * w; i++)
        ds->images[i] = (uint8_t)((i * 2654435761u) >> 13);
    return ds;
}

static int is_ascending(const uint32_t *a, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++)
        if (a[i - 1] >= a[i]) return 0;
    return 1;
}

/* ---- IDX ------------------------------------------------------------------ */

static void test_idx_plain_and_gz(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *tr, *te;
    const char *plain = mkdir_tmp("mnist-plain"), *gz = mkdir_tmp("mnist-gz"),
               *mixed = mkdir_tmp("mnist-mixed");
    write_idx_pair(plain, "train", 7, 3, 2, 0);
    write_idx_pair(plain, "t10k", 4, 3, 2, 0);
    write_idx_pair(gz, "train", 7, 3, 2, 1);
    write_idx_pair(gz, "t10k", 4, 3, 2, 1);
    write_idx_pair(mixed, "train", 7, 3, 2, 1);
    write_idx_pair(mixed, "t10k", 4, 3, 2, 0);
    const char *dirs[3] = {plain, gz, mixed};
    for (int d = 0; d < 3; d++) {
        assert_int_equal(gpp_data_load(GPP_DATA_IDX, dirs[d], &tr, &te, &err), 0);
        check_idx_content(tr, 7, 3, 2);
        check_idx_content(te, 4, 3, 2);
        assert_string_equal(tr->name, strrchr(dirs[d], '/') + 1);
        gpp_dataset_free(tr);
        gpp_dataset_free(te);
    }
    /* The plain name wins when both exist: make the .gz a bad file. */
    write_file(path_in(plain, "train-images-idx3-ubyte.gz"), (const uint8_t *)"junk", 4, 0);
    assert_int_equal(gpp_data_load_idx(plain, &tr, &te, &err), 0);
    check_idx_content(tr, 7, 3, 2);
    gpp_dataset_free(tr);
    gpp_dataset_free(te);
}

static void test_idx_missing(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *tr = (gpp_dataset *)1, *te = (gpp_dataset *)1;
    const char *empty = mkdir_tmp("idx-empty");
    int rc = gpp_data_load_idx(empty, &tr, &te, &err);
    expect_err(rc, GPP_ENOTFOUND, &err, "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
               empty, NULL);
    assert_null(tr);
    assert_null(te);
    assert_string_equal(err.field, "dataset");

    /* Only the test labels missing. */
    const char *part = mkdir_tmp("idx-part");
    write_idx_pair(part, "train", 3, 2, 2, 0);
    write_idx_pair(part, "t10k", 3, 2, 2, 1);
    assert_int_equal(remove(path_in(part, "t10k-labels-idx1-ubyte.gz")), 0);
    rc = gpp_data_load_idx(part, &tr, &te, &err);
    expect_err(rc, GPP_ENOTFOUND, &err, "t10k-labels-idx1-ubyte", NULL);

    rc = gpp_data_load_idx("/nonexistent/gpp-data", &tr, &te, &err);
    expect_err(rc, GPP_ENOTFOUND, &err, "/nonexistent/gpp-data", NULL);

    const char *missing = path_in(g_tmp, "no-such-images");
    rc = gpp_dataset_read_idx(&tr, missing, path_in(part, "train-labels-idx1-ubyte"), "x", &err);
    expect_err(rc, GPP_ENOTFOUND, &err, missing, NULL);
    assert_null(tr);
}

/* Images file of 7 images 3x2 cut to every interesting length, plain and gz. */
static void test_idx_truncated(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *ds;
    const char *dir = mkdir_tmp("idx-trunc");
    size_t li, ll;
    uint8_t *im = idx_images(0x803, 7, 3, 2, &li), *lb = idx_labels(0x801, 7, &ll);
    assert_int_equal(li, 58);
    const char *lp = path_in(dir, "labels");
    write_file(lp, lb, ll, 0);
    const size_t cuts[] = {0, 3, 10, 15, 16, 17, 40, 57};
    for (int gz = 0; gz < 2; gz++)
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char ip[512], want[128];
            snprintf(ip, sizeof ip, "%s/images-%zu%s", dir, cuts[i], gz ? ".gz" : "");
            write_file(ip, im, cuts[i], gz);
            int rc = gpp_dataset_read_idx(&ds, ip, lp, "t", &err);
            if (cuts[i] >= 16)
                snprintf(want, sizeof want, "expected 58 bytes, found %zu", cuts[i]);
            else
                snprintf(want, sizeof want, "expected a 16-byte header, found %zu bytes", cuts[i]);
            expect_err(rc, GPP_EFORMAT, &err, ip, "is truncated", want, NULL);
            assert_null(ds);
        }
    /* Labels truncated. */
    const char *ip = path_in(dir, "images-full");
    write_file(ip, im, li, 0);
    for (int gz = 0; gz < 2; gz++) {
        const char *lt = path_in(dir, gz ? "labels-short.gz" : "labels-short");
        write_file(lt, lb, ll - 2, gz);
        int rc = gpp_dataset_read_idx(&ds, ip, lt, "t", &err);
        expect_err(rc, GPP_EFORMAT, &err, lt, "is truncated", "expected 15 bytes, found 13", NULL);
    }
    /* A gzip stream cut short (not a short payload compressed whole). */
    const char *gzp = path_in(dir, "images-cut.gz");
    write_file(gzp, im, li, 1);
    size_t glen;
    uint8_t *g = read_file(gzp, &glen);
    write_file(gzp, g, glen - 12, 0);    /* drop the CRC/size trailer and more */
    int rc = gpp_dataset_read_idx(&ds, gzp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, gzp, "is truncated", NULL);
    /* Only the trailer missing: every byte decodes, the stream still ends early. */
    write_file(gzp, g, glen - 4, 0);
    rc = gpp_dataset_read_idx(&ds, gzp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, gzp, "is truncated", NULL);
    /* A corrupted byte in the trailer's CRC. */
    g[glen - 6] ^= 0x5a;
    write_file(gzp, g, glen, 0);
    rc = gpp_dataset_read_idx(&ds, gzp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, gzp, "corrupt gzip data", NULL);
    free(g);
    free(im);
    free(lb);
}

static void test_idx_trailing(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *ds;
    const char *dir = mkdir_tmp("idx-trail");
    size_t li, ll;
    uint8_t *im = idx_images(0x803, 7, 3, 2, &li), *lb = idx_labels(0x801, 7, &ll);
    uint8_t *big = calloc(li + 3, 1);
    memcpy(big, im, li);
    const char *lp = path_in(dir, "labels");
    write_file(lp, lb, ll, 0);
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = path_in(dir, gz ? "images.gz" : "images");
        write_file(ip, big, li + 3, gz);
        int rc = gpp_dataset_read_idx(&ds, ip, lp, "t", &err);
        expect_err(rc, GPP_EFORMAT, &err, ip, "3 trailing bytes", "expected 58 bytes, found 61", NULL);
    }
    /* Trailing bytes after the labels. */
    const char *ip = path_in(dir, "images-ok");
    write_file(ip, im, li, 0);
    uint8_t *lbig = calloc(ll + 1, 1);
    memcpy(lbig, lb, ll);
    const char *lt = path_in(dir, "labels-long.gz");
    write_file(lt, lbig, ll + 1, 1);
    int rc = gpp_dataset_read_idx(&ds, ip, lt, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, lt, "1 trailing bytes", NULL);
    free(im); free(lb); free(big); free(lbig);
}

static void test_idx_magic_and_counts(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *ds;
    const char *dir = mkdir_tmp("idx-magic");
    size_t li, ll;
    uint8_t *im = idx_images(0x803, 7, 3, 2, &li), *lb = idx_labels(0x801, 7, &ll);
    const char *ip = path_in(dir, "images"), *lp = path_in(dir, "labels");
    write_file(ip, im, li, 0);
    write_file(lp, lb, ll, 1);

    /* Labels given as images and the other way round. */
    int rc = gpp_dataset_read_idx(&ds, lp, ip, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, lp, "bad magic number 0x00000801", "expected 0x00000803", NULL);
    /* Wrong dimension count in the magic (0x804: 4 dimensions). */
    uint8_t *bad = idx_images(0x804, 7, 3, 2, &li);
    const char *bp = path_in(dir, "images-4d.gz");
    write_file(bp, bad, li, 1);
    rc = gpp_dataset_read_idx(&ds, bp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, bp, "bad magic number 0x00000804", NULL);
    /* A label file with the float type byte. */
    uint8_t *badl = idx_labels(0x0d01, 7, &ll);
    const char *blp = path_in(dir, "labels-float");
    write_file(blp, badl, ll, 0);
    rc = gpp_dataset_read_idx(&ds, ip, blp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, blp, "bad magic number 0x00000d01", "expected 0x00000801", NULL);

    /* Count mismatch. */
    uint8_t *six = idx_labels(0x801, 6, &ll);
    const char *sp = path_in(dir, "labels-6");
    write_file(sp, six, ll, 0);
    rc = gpp_dataset_read_idx(&ds, ip, sp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, "count mismatch", "7 images", "6 labels", ip, sp, NULL);

    /* Zero images declared. */
    uint8_t *zero = idx_images(0x803, 0, 3, 2, &li);
    const char *zp = path_in(dir, "images-0");
    write_file(zp, zero, li, 0);
    rc = gpp_dataset_read_idx(&ds, zp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, zp, "declares 0 images", NULL);
    /* A header declaring a huge count is refused before anything is read. */
    be32_put(zero + 4, 0xffffffffu);
    write_file(zp, zero, 16, 1);
    rc = gpp_dataset_read_idx(&ds, zp, lp, "t", &err);
    expect_err(rc, GPP_EFORMAT, &err, "declares 4294967295 images", NULL);
    free(im); free(lb); free(bad); free(badl); free(six); free(zero);
}

static void test_idx_mislabelled(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *ds;
    const char *dir = mkdir_tmp("idx-label");
    size_t li, ll;
    uint8_t *im = idx_images(0x803, 7, 3, 2, &li), *lb = idx_labels(0x801, 7, &ll);
    const char *ip = path_in(dir, "images");
    write_file(ip, im, li, 0);
    for (int gz = 0; gz < 2; gz++) {
        lb[8 + 5] = 12;
        const char *lp = path_in(dir, gz ? "labels.gz" : "labels");
        write_file(lp, lb, ll, gz);
        int rc = gpp_dataset_read_idx(&ds, ip, lp, "t", &err);
        expect_err(rc, GPP_EFORMAT, &err, "mislabelled: label 12 at index 5 in", lp,
                   "must be < 10", NULL);
        assert_null(ds);
    }
    lb[8 + 5] = 9;   /* the largest valid label */
    const char *lp = path_in(dir, "labels-ok");
    write_file(lp, lb, ll, 0);
    assert_int_equal(gpp_dataset_read_idx(&ds, ip, lp, "t", &err), 0);
    assert_int_equal(ds->labels[5], 9);
    gpp_dataset_free(ds);
    free(im); free(lb);
}

/* ---- CIFAR-10 ---------------------------------------------------------------- */

static uint8_t *cifar_bytes(uint32_t records, uint32_t salt, size_t *len)
{
    *len = (size_t)records * 3073;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    for (uint32_t r = 0; r < records; r++) {
        b[(size_t)r * 3073] = (uint8_t)((r + salt) % 10);
        for (uint32_t p = 0; p < 3072; p++)
            b[(size_t)r * 3073 + 1 + p] = (uint8_t)((p * 5 + r * 11 + salt) & 255);
    }
    return b;
}

static void test_cifar_files(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *ds;
    const char *dir = mkdir_tmp("cifar-files");
    size_t la, lb;
    uint8_t *a = cifar_bytes(3, 0, &la), *b = cifar_bytes(2, 4, &lb);
    const char *pa = path_in(dir, "a.bin"), *pb = path_in(dir, "b.bin");
    write_file(pa, a, la, 0);
    write_file(pb, b, lb, 0);
    const char *paths[2] = {pa, pb};
    assert_int_equal(gpp_dataset_read_cifar10(&ds, paths, 2, 0, "cifar", &err), 0);
    assert_int_equal(ds->n, 5);
    assert_int_equal(ds->c, 3);
    assert_int_equal(ds->h, 32);
    assert_int_equal(ds->w, 32);
    assert_int_equal(ds->classes, 10);
    assert_int_equal(ds->format, GPP_DATA_CIFAR10);
    for (uint32_t i = 0; i < 5; i++) {
        const uint8_t *rec = i < 3 ? a + (size_t)i * 3073 : b + (size_t)(i - 3) * 3073;
        assert_int_equal(ds->labels[i], rec[0]);
        assert_memory_equal(ds->images + (size_t)i * 3072, rec + 1, 3072);
    }
    gpp_dataset_free(ds);

    /* Records per file enforced. */
    int rc = gpp_dataset_read_cifar10(&ds, paths, 2, 3, "cifar", &err);
    expect_err(rc, GPP_EFORMAT, &err, pb, "holds 2 records, expected 3", NULL);
    assert_null(ds);

    /* Size not a multiple of 3073, at several lengths. */
    const size_t bad[] = {1, 3072, 3074, 3073 * 2 + 5};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[64];
        write_file(pa, a, bad[i] <= la ? bad[i] : la, 0);
        if (bad[i] > la) {   /* extend with zeros */
            FILE *f = fopen(pa, "ab");
            for (size_t k = la; k < bad[i]; k++) fputc(0, f);
            fclose(f);
        }
        rc = gpp_dataset_read_cifar10(&ds, paths, 2, 0, "cifar", &err);
        snprintf(want, sizeof want, "size %zu bytes", bad[i]);
        expect_err(rc, GPP_EFORMAT, &err, pa, want, "not a positive multiple of 3073", NULL);
    }
    write_file(pa, a, 0, 0);
    rc = gpp_dataset_read_cifar10(&ds, paths, 2, 0, "cifar", &err);
    expect_err(rc, GPP_EFORMAT, &err, pa, "size 0 bytes", NULL);

    /* Label out of range. */
    a[3073 * 2] = 10;
    write_file(pa, a, la, 0);
    rc = gpp_dataset_read_cifar10(&ds, paths, 2, 0, "cifar", &err);
    expect_err(rc, GPP_EFORMAT, &err, "mislabelled: label 10 at index 2 in", pa, NULL);

    /* Missing file. */
    const char *nope[1] = {path_in(dir, "nope.bin")};
    rc = gpp_dataset_read_cifar10(&ds, nope, 1, 0, "cifar", &err);
    expect_err(rc, GPP_ENOTFOUND, &err, nope[0], NULL);
    free(a);
    free(b);
}

/* A standard CIFAR-10 folder made of sparse files (all zero but a few
 * labelled records). */
static void make_sparse_cifar(const char *dir, int skip)
{
    for (int i = 0; i < 6; i++) {
        if (i == skip) continue;
        char name[64];
        if (i < 5) snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        FILE *f = fopen(path_in(dir, name), "wb");
        assert_non_null(f);
        assert_int_equal(ftruncate(fileno(f), 3073L * 10000), 0);
        /* Record 17 of each file: label i + 1, first pixel 200 + i. */
        fseek(f, 3073L * 17, SEEK_SET);
        fputc(i + 1, f);
        fputc(200 + i, f);
        assert_int_equal(fclose(f), 0);
    }
}

static void test_cifar_folder(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *tr, *te;
    const char *empty = mkdir_tmp("cifar-empty");
    int rc = gpp_data_load(GPP_DATA_CIFAR10, empty, &tr, &te, &err);
    expect_err(rc, GPP_ENOTFOUND, &err, "data_batch_1.bin", empty, NULL);
    assert_null(tr);

    const char *no_test = mkdir_tmp("cifar-no-test");
    make_sparse_cifar(no_test, 5);
    rc = gpp_data_load_cifar10(no_test, &tr, &te, &err);
    expect_err(rc, GPP_ENOTFOUND, &err, "test_batch.bin", NULL);

    const char *dir = mkdir_tmp("cifar-10-batches-bin");
    make_sparse_cifar(dir, -1);
    assert_int_equal(gpp_data_load_cifar10(dir, &tr, &te, &err), 0);
    assert_int_equal(tr->n, 50000);
    assert_int_equal(te->n, 10000);
    assert_string_equal(tr->name, "cifar-10-batches-bin");
    for (int i = 0; i < 5; i++) {
        uint32_t k = (uint32_t)i * 10000 + 17;
        assert_int_equal(tr->labels[k], i + 1);
        assert_int_equal(tr->images[(size_t)k * 3072], 200 + i);
        assert_int_equal(tr->labels[k - 1], 0);
    }
    assert_int_equal(te->labels[17], 6);
    assert_int_equal(te->images[17 * 3072], 205);
    gpp_dataset_free(tr);
    gpp_dataset_free(te);

    /* A short standard file. */
    FILE *f = fopen(path_in(dir, "data_batch_3.bin"), "r+b");
    assert_int_equal(ftruncate(fileno(f), 3073L * 9999), 0);
    fclose(f);
    rc = gpp_data_load_cifar10(dir, &tr, &te, &err);
    expect_err(rc, GPP_EFORMAT, &err, "data_batch_3.bin", "holds 9999 records, expected 10000", NULL);
}

static void test_parse(void **state)
{
    (void)state;
    gpp_error err;
    gpp_data_format f;
    gpp_data_augment a;
    assert_int_equal(gpp_data_format_parse("idx", &f, &err), 0);
    assert_int_equal(f, GPP_DATA_IDX);
    assert_int_equal(gpp_data_format_parse("cifar10-bin", &f, &err), 0);
    assert_int_equal(f, GPP_DATA_CIFAR10);
    expect_err(gpp_data_format_parse("csv", &f, &err), GPP_EINVAL, &err, "\"csv\"", NULL);
    assert_string_equal(err.field, "dataset.format");
    assert_int_equal(gpp_data_augment_parse("auto", GPP_DATA_CIFAR10, &a, &err), 0);
    assert_int_equal(a, GPP_DATA_AUG_CROP_FLIP);
    assert_int_equal(gpp_data_augment_parse("auto", GPP_DATA_IDX, &a, &err), 0);
    assert_int_equal(a, GPP_DATA_AUG_NONE);
    assert_int_equal(gpp_data_augment_parse("crop-flip", GPP_DATA_IDX, &a, &err), 0);
    assert_int_equal(a, GPP_DATA_AUG_CROP_FLIP);
    assert_int_equal(gpp_data_augment_parse("none", GPP_DATA_CIFAR10, &a, &err), 0);
    assert_int_equal(a, GPP_DATA_AUG_NONE);
    expect_err(gpp_data_augment_parse("rotate", GPP_DATA_IDX, &a, &err), GPP_EINVAL, &err,
               "\"rotate\"", NULL);
    assert_string_equal(err.field, "data.augment");
}

/* ---- splits ---------------------------------------------------------------- */

static void test_limit_round_robin(void **state)
{
    (void)state;
    gpp_error err;
    uint32_t *idx, n;
    /*                       0  1  2  3  4  5  6  7  8  9 10 */
    const uint8_t lab[11] = {2, 0, 0, 1, 2, 0, 1, 1, 0, 2, 0};
    gpp_dataset *ds = ds_with_labels(lab, 11, 3, 1, 2, 2);
    /* Round 0: class 0 -> 1, class 1 -> 3, class 2 -> 0; round 1: 2, 6, 4; ... */
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 5, &err), 0);
    assert_int_equal(n, 5);
    const uint32_t want5[5] = {0, 1, 2, 3, 6};
    assert_memory_equal(idx, want5, sizeof want5);
    free(idx);
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 1, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 1);
    free(idx);
    /* Class 2 runs out after 3 (0, 4, 9); class 1 after 3 (3, 6, 7). */
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 10, &err), 0);
    const uint32_t want10[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(n, 10);
    assert_memory_equal(idx, want10, sizeof want10);
    free(idx);
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 9, &err), 0);
    const uint32_t want9[9] = {0, 1, 2, 3, 4, 5, 6, 7, 9};   /* 8 is class 0's 4th */
    assert_int_equal(n, 9);
    assert_memory_equal(idx, want9, sizeof want9);
    free(idx);
    /* 0 (null) and over-large limits take everything. */
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 0, &err), 0);
    assert_int_equal(n, 11);
    free(idx);
    assert_int_equal(gpp_data_limit(&idx, &n, ds, 1000, &err), 0);
    assert_int_equal(n, 11);
    assert_true(is_ascending(idx, n));
    free(idx);
    gpp_dataset_free(ds);
}

static void test_split(void **state)
{
    (void)state;
    gpp_error err;
    enum { N = 400, K = 4 };
    uint8_t lab[N], tlab[60];
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)((i * i + i / 7) % K);   /* uneven classes */
    for (int i = 0; i < 60; i++) tlab[i] = (uint8_t)(i % K);
    gpp_dataset *tr = ds_with_labels(lab, N, K, 1, 2, 2);
    gpp_dataset *te = ds_with_labels(tlab, 60, K, 1, 2, 2);
    uint32_t full[K];
    gpp_dataset_class_counts(tr, NULL, 0, full);

    gpp_data_split_opts o = {.train_limit = 0, .test_limit = 20, .val_fraction = 0.2, .seed = 5};
    gpp_data_split *s, *s2, *s3;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    assert_int_equal(s->n_train + s->n_val, N);
    assert_true(is_ascending(s->train, s->n_train));
    assert_true(is_ascending(s->val, s->n_val));
    /* Disjoint and covering. */
    uint8_t seen[N] = {0};
    for (uint32_t i = 0; i < s->n_train; i++) seen[s->train[i]] |= 1;
    for (uint32_t i = 0; i < s->n_val; i++) seen[s->val[i]] |= 2;
    for (int i = 0; i < N; i++) assert_true(seen[i] == 1 || seen[i] == 2);
    /* Stratified: round(0.2 * n_k) of every class. */
    uint32_t vc[K];
    gpp_dataset_class_counts(tr, s->val, s->n_val, vc);
    for (int k = 0; k < K; k++) assert_int_equal(vc[k], (uint32_t)floor(0.2 * full[k] + 0.5));
    /* Test limit: round-robin, 5 per class. */
    assert_int_equal(s->n_test, 20);
    for (uint32_t i = 0; i < 20; i++) assert_int_equal(s->test[i], i);

    /* Deterministic per seed, different for another seed. */
    assert_int_equal(gpp_data_split_new(&s2, tr, te, &o, &err), 0);
    assert_int_equal(s2->n_val, s->n_val);
    assert_memory_equal(s2->val, s->val, s->n_val * sizeof *s->val);
    assert_memory_equal(s2->train, s->train, s->n_train * sizeof *s->train);
    o.seed = 6;
    assert_int_equal(gpp_data_split_new(&s3, tr, te, &o, &err), 0);
    assert_int_equal(s3->n_val, s->n_val);
    assert_true(memcmp(s3->val, s->val, s->n_val * sizeof *s->val) != 0);
    gpp_data_split_free(s2);
    gpp_data_split_free(s3);
    gpp_data_split_free(s);

    /* With a train limit: val is drawn from the limited set only. */
    o.train_limit = 40;
    o.test_limit = 0;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    uint32_t *lim, nl;
    assert_int_equal(gpp_data_limit(&lim, &nl, tr, 40, &err), 0);
    assert_int_equal(s->n_train + s->n_val, 40);
    uint8_t inlim[N] = {0};
    for (uint32_t i = 0; i < nl; i++) inlim[lim[i]] = 1;
    for (uint32_t i = 0; i < s->n_train; i++) assert_true(inlim[s->train[i]]);
    for (uint32_t i = 0; i < s->n_val; i++) assert_true(inlim[s->val[i]]);
    gpp_dataset_class_counts(tr, s->val, s->n_val, vc);
    for (int k = 0; k < K; k++) assert_int_equal(vc[k], 2);   /* round(0.2 * 10) */
    assert_int_equal(s->n_test, 60);
    free(lim);
    gpp_data_split_free(s);

    /* val_from_test: every (limited) training image trains; the validation
     * share comes out of the limited test set, stratified, disjoint from the
     * test images left, and the same for the same seed. */
    o.val_from_test = 1;
    o.test_limit = 40;
    o.val_fraction = 0.25;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    assert_true(s->val_in_test);
    assert_int_equal(s->n_train, 40);
    assert_int_equal(gpp_data_limit(&lim, &nl, tr, 40, &err), 0);
    assert_memory_equal(s->train, lim, 40 * sizeof *lim);
    free(lim);
    assert_int_equal(s->n_val + s->n_test, 40);
    assert_true(is_ascending(s->val, s->n_val) && is_ascending(s->test, s->n_test));
    uint8_t tseen[60] = {0};
    for (uint32_t i = 0; i < s->n_test; i++) tseen[s->test[i]] |= 1;
    for (uint32_t i = 0; i < s->n_val; i++) tseen[s->val[i]] |= 2;
    for (int i = 0; i < 60; i++) assert_true(i < 40 ? tseen[i] == 1 || tseen[i] == 2 : tseen[i] == 0);
    gpp_dataset_class_counts(te, s->val, s->n_val, vc);
    for (int k = 0; k < K; k++) assert_int_equal(vc[k], 3);   /* round(0.25 * 10) */
    assert_int_equal(gpp_data_split_new(&s2, tr, te, &o, &err), 0);
    assert_memory_equal(s2->val, s->val, s->n_val * sizeof *s->val);
    gpp_data_split_free(s2);
    gpp_data_split_free(s);
    o.val_from_test = 0;
    o.test_limit = 0;
    o.val_fraction = 0.2;

    /* val_fraction 0: everything trains. */
    o.val_fraction = 0;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    assert_int_equal(s->n_val, 0);
    assert_int_equal(s->n_train, 40);
    gpp_data_split_free(s);

    o.val_fraction = 1.0;
    expect_err(gpp_data_split_new(&s, tr, te, &o, &err), GPP_EINVAL, &err, "val_fraction", NULL);
    assert_string_equal(err.field, "data.val_fraction");
    o.val_fraction = -0.1;
    expect_err(gpp_data_split_new(&s, tr, te, &o, &err), GPP_EINVAL, &err, "[0, 1)", NULL);
    o.val_fraction = NAN;
    expect_err(gpp_data_split_new(&s, tr, te, &o, &err), GPP_EINVAL, &err, "val_fraction", NULL);
    assert_null(s);

    /* Mismatched shapes. */
    gpp_dataset *odd = ds_with_labels(tlab, 60, K, 1, 3, 2);
    o.val_fraction = 0.1;
    expect_err(gpp_data_split_new(&s, tr, odd, &o, &err), GPP_EINVAL, &err, "do not match", NULL);
    gpp_dataset_free(odd);
    gpp_dataset_free(tr);
    gpp_dataset_free(te);
}

static void test_pick_per_class(void **state)
{
    (void)state;
    gpp_error err;
    enum { N = 90 };
    uint8_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)(i < 2 ? 2 : i % 2);   /* class 2 has 2 */
    gpp_dataset *ds = ds_with_labels(lab, N, 3, 1, 1, 1);
    uint32_t *p, n, *q, m, cnt[3];
    assert_int_equal(gpp_data_pick_per_class(&p, &n, ds, NULL, 0, 10, 1, &err), 0);
    assert_int_equal(n, 22);
    gpp_dataset_class_counts(ds, p, n, cnt);
    assert_int_equal(cnt[0], 10);
    assert_int_equal(cnt[1], 10);
    assert_int_equal(cnt[2], 2);
    assert_true(is_ascending(p, n));
    /* Deterministic for a seed; another seed picks others. */
    assert_int_equal(gpp_data_pick_per_class(&q, &m, ds, NULL, 0, 10, 1, &err), 0);
    assert_memory_equal(p, q, n * sizeof *p);
    free(q);
    assert_int_equal(gpp_data_pick_per_class(&q, &m, ds, NULL, 0, 10, 2, &err), 0);
    assert_int_equal(m, n);
    assert_true(memcmp(p, q, n * sizeof *p) != 0);
    free(q);
    free(p);
    /* From a subset: picks stay inside it. */
    uint32_t sub[30];
    for (int i = 0; i < 30; i++) sub[i] = (uint32_t)(60 + i);
    assert_int_equal(gpp_data_pick_per_class(&p, &n, ds, sub, 30, 4, 3, &err), 0);
    assert_int_equal(n, 8);
    for (uint32_t i = 0; i < n; i++) assert_true(p[i] >= 60);
    free(p);
    expect_err(gpp_data_pick_per_class(&p, &n, ds, NULL, 0, 0, 1, &err), GPP_EINVAL, &err,
               "at least 1", NULL);
    gpp_dataset_free(ds);
}

/* ---- normalisation and augmentation ------------------------------------------ */

static void test_norm(void **state)
{
    (void)state;
    gpp_error err;
    const uint8_t lab[3] = {0, 1, 0};
    gpp_dataset *ds = ds_with_labels(lab, 3, 2, 2, 1, 2);   /* [3, 2, 1, 2] */
    /* image i, channel c, pixel p; channel 1 of image 2 differs. */
    const uint8_t px[12] = {0, 255, 10, 10,   51, 102, 10, 10,   7, 9, 10, 200};
    memcpy(ds->images, px, 12);
    gpp_data_norm nm;
    assert_int_equal(gpp_data_norm_compute(&nm, ds, NULL, 0, &err), 0);
    assert_int_equal(nm.c, 2);
    for (int c = 0; c < 2; c++) {
        double m = 0, v = 0;
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 2; p++) m += px[i * 4 + c * 2 + p] / 255.0;
        m /= 6;
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 2; p++) {
                double d = px[i * 4 + c * 2 + p] / 255.0 - m;
                v += d * d;
            }
        v /= 6;
        assert_float_equal(nm.mean[c], m, 1e-7);
        assert_float_equal(nm.std[c], sqrt(v), 1e-7);
    }
    /* Over images 0 and 1 only: channel 1 is constant 10 -> std 1. */
    const uint32_t sub[2] = {0, 1};
    assert_int_equal(gpp_data_norm_compute(&nm, ds, sub, 2, &err), 0);
    assert_float_equal(nm.mean[1], 10 / 255.0, 1e-7);
    assert_float_equal(nm.std[1], 1.0, 1e-7);
    assert_float_equal(nm.mean[0], (0 + 255 + 51 + 102) / 4.0 / 255.0, 1e-7);
    expect_err(gpp_data_norm_compute(&nm, ds, sub, 0, &err), GPP_EINVAL, &err, "at least one", NULL);

    /* The normalised batch is (x/255 - mean)/std. */
    assert_int_equal(gpp_data_norm_compute(&nm, ds, NULL, 0, &err), 0);
    float x[12];
    int y[3];
    const uint32_t order[3] = {2, 0, 1};
    gpp_data_fill(x, y, ds, order, 3, &nm, GPP_DATA_AUG_NONE, NULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(y[i], lab[order[i]]);
        for (int c = 0; c < 2; c++)
            for (int p = 0; p < 2; p++) {
                double want = (px[order[i] * 4 + c * 2 + p] / 255.0 - nm.mean[c]) / nm.std[c];
                assert_float_equal(x[i * 4 + c * 2 + p], want, 1e-6);
            }
    }
    /* No normalisation: x/255. */
    gpp_data_fill(x, NULL, ds, order, 3, NULL, GPP_DATA_AUG_NONE, NULL);
    for (int i = 0; i < 12; i++) assert_float_equal(x[i], px[order[i / 4] * 4 + i % 4] / 255.0, 1e-7);
    gpp_data_norm id;
    gpp_data_norm_identity(&id, 2);
    float x2[12];
    gpp_data_fill(x2, NULL, ds, order, 3, &id, GPP_DATA_AUG_NONE, NULL);
    assert_memory_equal(x, x2, sizeof x);
    gpp_dataset_free(ds);
}

static void test_crop_flip_hand(void **state)
{
    (void)state;
    /* 1 x 2 x 3 image, pad 1; padded:
     *   0 0 0 0 0
     *   0 1 2 3 0
     *   0 4 5 6 0
     *   0 0 0 0 0 */
    const uint8_t in[6] = {1, 2, 3, 4, 5, 6};
    uint8_t out[6], back[6];
    gpp_data_crop_flip(out, in, 1, 2, 3, 1, 0, 2, 0);
    const uint8_t a[6] = {0, 0, 0, 2, 3, 0};
    assert_memory_equal(out, a, 6);
    gpp_data_crop_flip(out, in, 1, 2, 3, 1, 0, 2, 1);
    const uint8_t b[6] = {0, 0, 0, 0, 3, 2};
    assert_memory_equal(out, b, 6);
    gpp_data_crop_flip(out, in, 1, 2, 3, 1, 2, 0, 0);
    const uint8_t c[6] = {0, 4, 5, 0, 0, 0};
    assert_memory_equal(out, c, 6);
    /* Centre crop = identity; flip of flip = identity. */
    gpp_data_crop_flip(out, in, 1, 2, 3, 1, 1, 1, 0);
    assert_memory_equal(out, in, 6);
    gpp_data_crop_flip(out, in, 1, 2, 3, 1, 1, 1, 1);
    const uint8_t f[6] = {3, 2, 1, 6, 5, 4};
    assert_memory_equal(out, f, 6);
    gpp_data_crop_flip(back, out, 1, 2, 3, 1, 1, 1, 1);
    assert_memory_equal(back, in, 6);
}

/* gpp_data_fill with crop-flip equals a crop/flip computed here from the
 * same draws on an explicitly padded image. */
static void test_crop_flip_fill(void **state)
{
    (void)state;
    enum { C = 3, H = 32, W = 32, P = GPP_DATA_CROP_PAD, NI = 6 };
    const uint8_t lab[NI] = {0, 1, 2, 3, 4, 5};
    gpp_dataset *ds = ds_with_labels(lab, NI, 10, C, H, W);
    gpp_data_norm nm;
    assert_int_equal(gpp_data_norm_compute(&nm, ds, NULL, 0, NULL), 0);
    float *x = malloc(sizeof(float) * NI * C * H * W);
    int y[NI];
    const uint32_t order[NI] = {5, 3, 1, 0, 2, 4};
    gpp_rng r, ref;
    gpp_rng_seed(&r, 1234);
    ref = r;
    gpp_data_fill(x, y, ds, order, NI, &nm, GPP_DATA_AUG_CROP_FLIP, &r);
    int flips = 0, moved = 0;
    static uint8_t padded[C][H + 2 * P][W + 2 * P];
    for (int i = 0; i < NI; i++) {
        uint32_t dy = gpp_rng_below(&ref, 2 * P + 1), dx = gpp_rng_below(&ref, 2 * P + 1);
        uint32_t flip = gpp_rng_below(&ref, 2);
        flips += (int)flip;
        moved += dy != P || dx != P;
        const uint8_t *img = ds->images + (size_t)order[i] * C * H * W;
        memset(padded, 0, sizeof padded);
        for (int c = 0; c < C; c++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++)
                    padded[c][yy + P][xx + P] = img[(c * H + yy) * W + xx];
        for (int c = 0; c < C; c++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) {
                    int sx = flip ? W - 1 - xx : xx;
                    uint8_t v = padded[c][yy + dy][sx + dx];
                    float want = ((float)v / 255.0f - nm.mean[c]) / nm.std[c];
                    assert_float_equal(x[((size_t)i * C + c) * H * W + yy * W + xx], want, 1e-6);
                }
        assert_int_equal(y[i], lab[order[i]]);
    }
    assert_memory_equal(&r, &ref, sizeof r);   /* exactly three draws per image */
    assert_true(moved > 0);
    (void)flips;
    free(x);
    gpp_dataset_free(ds);
}

/* ---- iterator ------------------------------------------------------------------- */

static void test_shuffle(void **state)
{
    (void)state;
    gpp_error err;
    enum { N = 100 };
    uint8_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)(i % 10);
    gpp_dataset *ds = ds_with_labels(lab, N, 10, 1, 2, 2);
    uint32_t idx[70];
    for (int i = 0; i < 70; i++) idx[i] = (uint32_t)(i + 30);   /* a subset */
    gpp_data_iter_opts o = {.batch_size = 16, .order = GPP_DATA_SHUFFLE, .seed = 9};
    gpp_data_iter *a, *b, *c;
    assert_int_equal(gpp_data_iter_new(&a, ds, idx, 70, &o, &err), 0);
    assert_int_equal(gpp_data_iter_new(&b, ds, idx, 70, &o, &err), 0);
    o.seed = 10;
    assert_int_equal(gpp_data_iter_new(&c, ds, idx, 70, &o, &err), 0);
    assert_int_equal(gpp_data_iter_batches(a), 5);
    uint32_t na, nb, nc;
    const uint32_t *oa = gpp_data_iter_order(a, &na), *ob = gpp_data_iter_order(b, &nb),
                   *oc = gpp_data_iter_order(c, &nc);
    assert_int_equal(na, 70);
    assert_memory_equal(oa, ob, 70 * sizeof *oa);
    assert_true(memcmp(oa, oc, 70 * sizeof *oa) != 0);
    /* A permutation of idx, not the identity. */
    uint8_t seen[N] = {0};
    for (uint32_t i = 0; i < na; i++) {
        assert_true(oa[i] >= 30 && oa[i] < 100);
        assert_int_equal(seen[oa[i]]++, 0);
    }
    assert_true(memcmp(oa, idx, sizeof idx) != 0);
    uint32_t first[70];
    memcpy(first, oa, sizeof first);
    /* Batches follow the order; the last is partial; then the epoch ends. */
    float x[16 * 4];
    int y[16];
    uint32_t counts[6];
    for (int k = 0; k < 5; k++) {
        counts[k] = gpp_data_iter_next(a, x, y);
        for (uint32_t i = 0; i < counts[k]; i++) {
            uint32_t j = first[k * 16 + i];
            assert_int_equal(y[i], lab[j]);
            assert_float_equal(x[i * 4 + 1], ds->images[j * 4 + 1] / 255.0, 1e-7);
        }
    }
    assert_int_equal(counts[0], 16);
    assert_int_equal(counts[4], 6);
    assert_int_equal(gpp_data_iter_next(a, x, y), 0);
    gpp_data_pos pos;
    gpp_data_iter_get_pos(a, &pos);
    assert_int_equal(pos.epoch, 1);
    assert_int_equal(pos.batch, 0);
    /* The next epoch is another permutation. */
    oa = gpp_data_iter_order(a, &na);
    assert_true(memcmp(oa, first, sizeof first) != 0);
    memset(seen, 0, sizeof seen);
    for (uint32_t i = 0; i < na; i++) assert_int_equal(seen[oa[i]]++, 0);
    gpp_data_iter_free(a);
    gpp_data_iter_free(b);
    gpp_data_iter_free(c);

    /* Sequential order and drop_last. */
    o.order = GPP_DATA_SEQUENTIAL;
    o.drop_last = 1;
    assert_int_equal(gpp_data_iter_new(&a, ds, idx, 70, &o, &err), 0);
    assert_int_equal(gpp_data_iter_batches(a), 4);
    oa = gpp_data_iter_order(a, &na);
    assert_memory_equal(oa, idx, sizeof idx);
    for (int k = 0; k < 4; k++) assert_int_equal(gpp_data_iter_next(a, NULL, y), 16);
    assert_int_equal(y[15], lab[idx[63]]);
    assert_int_equal(gpp_data_iter_next(a, NULL, y), 0);
    gpp_data_iter_free(a);
    o.batch_size = 71;
    expect_err(gpp_data_iter_new(&a, ds, idx, 70, &o, &err), GPP_EINVAL, &err, "batch_size 71", NULL);
    o.batch_size = 0;
    expect_err(gpp_data_iter_new(&a, ds, idx, 70, &o, &err), GPP_EINVAL, &err, "batch_size", NULL);
    gpp_data_norm bad;
    gpp_data_norm_identity(&bad, 3);
    o.batch_size = 8;
    o.norm = &bad;
    expect_err(gpp_data_iter_new(&a, ds, idx, 70, &o, &err), GPP_EINVAL, &err, "3 channels", NULL);
    gpp_dataset_free(ds);
}

/* Run an iterator for `total` next() calls, storing every batch. */
static void record(gpp_data_iter *it, int total, size_t xs, float *x, int *y, uint32_t *m, uint32_t bs)
{
    for (int k = 0; k < total; k++)
        m[k] = gpp_data_iter_next(it, x + (size_t)k * xs, y + (size_t)k * bs);
}

static void check_resume(gpp_dataset *ds, const uint32_t *idx, uint32_t n,
                         const gpp_data_iter_opts *o)
{
    gpp_error err;
    enum { CALLS = 40 };
    const size_t xs = (size_t)o->batch_size * ds->c * ds->h * ds->w;
    float *xa = calloc(CALLS * xs, sizeof *xa), *xb = calloc(CALLS * xs, sizeof *xb);
    int *ya = calloc((size_t)CALLS * o->batch_size, sizeof *ya);
    int *yb = calloc((size_t)CALLS * o->batch_size, sizeof *yb);
    uint32_t ma[CALLS], mb[CALLS];
    gpp_data_iter *a, *b, *c;
    assert_int_equal(gpp_data_iter_new(&a, ds, idx, n, o, &err), 0);
    record(a, CALLS, xs, xa, ya, ma, o->batch_size);
    int ends = 0;
    for (int k = 0; k < CALLS; k++) ends += ma[k] == 0;
    assert_true(ends >= 2);                   /* crosses epochs */
    const int stops[] = {0, 1, 3, 7, 8, 9, 15, 23};
    for (size_t s = 0; s < sizeof stops / sizeof stops[0]; s++) {
        int k = stops[s];
        memset(xb, 0, CALLS * xs * sizeof *xb);
        assert_int_equal(gpp_data_iter_new(&b, ds, idx, n, o, &err), 0);
        record(b, k, xs, xb, yb, mb, o->batch_size);
        gpp_data_pos pos, back;
        uint64_t words[GPP_DATA_POS_WORDS];
        gpp_data_iter_get_pos(b, &pos);
        gpp_data_pos_pack(&pos, words);
        gpp_data_iter_free(b);
        /* A fresh iterator made with another seed, then restored. */
        gpp_data_iter_opts o2 = *o;
        o2.seed = o->seed + 1000;
        assert_int_equal(gpp_data_iter_new(&c, ds, idx, n, &o2, &err), 0);
        gpp_data_pos_unpack(&back, words);
        assert_memory_equal(&back, &pos, sizeof pos);
        assert_int_equal(gpp_data_iter_set_pos(c, &back, &err), 0);
        record(c, CALLS - k, xs, xb + (size_t)k * xs, yb + (size_t)k * o->batch_size, mb + k,
               o->batch_size);
        gpp_data_iter_free(c);
        assert_memory_equal(ma, mb, sizeof ma);
        assert_memory_equal(xa, xb, CALLS * xs * sizeof *xa);
        for (int j = 0; j < CALLS; j++)
            assert_memory_equal(ya + (size_t)j * o->batch_size, yb + (size_t)j * o->batch_size,
                                ma[j] * sizeof *ya);
    }
    /* Bad positions are refused and leave the iterator alone. */
    gpp_data_pos pos;
    gpp_data_iter_get_pos(a, &pos);
    gpp_data_pos bad = pos;
    bad.batch = gpp_data_iter_batches(a) + 1;
    expect_err(gpp_data_iter_set_pos(a, &bad, &err), GPP_EINVAL, &err, "past the", NULL);
    bad = pos;
    memset(&bad.aug_rng, 0, sizeof bad.aug_rng);
    expect_err(gpp_data_iter_set_pos(a, &bad, &err), GPP_EINVAL, &err, "all zero", NULL);
    gpp_data_pos now;
    gpp_data_iter_get_pos(a, &now);
    assert_memory_equal(&now, &pos, sizeof pos);
    gpp_data_iter_free(a);
    free(xa); free(xb); free(ya); free(yb);
}

static void test_resume(void **state)
{
    (void)state;
    enum { N = 60 };
    uint8_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)((i * 7) % 3);
    gpp_dataset *ds = ds_with_labels(lab, N, 3, 3, 8, 8);
    uint32_t idx[50];
    for (int i = 0; i < 50; i++) idx[i] = (uint32_t)(i * 59 % N);
    gpp_data_norm nm;
    assert_int_equal(gpp_data_norm_compute(&nm, ds, idx, 50, NULL), 0);
    gpp_data_iter_opts o = {.batch_size = 8, .order = GPP_DATA_SHUFFLE,
                            .augment = GPP_DATA_AUG_CROP_FLIP, .norm = &nm, .seed = 77};
    check_resume(ds, idx, 50, &o);                 /* 7 batches, last partial */
    o.order = GPP_DATA_BALANCED;
    o.min_per_class = 2;
    check_resume(ds, idx, 50, &o);                 /* 6 batches */
    o.order = GPP_DATA_SEQUENTIAL;
    o.augment = GPP_DATA_AUG_NONE;
    o.drop_last = 1;
    check_resume(ds, idx, 50, &o);
    gpp_dataset_free(ds);
}

static void test_balanced(void **state)
{
    (void)state;
    gpp_error err;
    enum { N = 300, K = 5, B = 20, M = 2 };
    uint8_t lab[N];
    /* Class 4 is rare (12 samples), the others share the rest. */
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)(i % 25 == 3 ? 4 : (i * 13 / 7) % 4);
    gpp_dataset *ds = ds_with_labels(lab, N, K, 1, 1, 1);
    uint32_t cnt[K];
    gpp_dataset_class_counts(ds, NULL, 0, cnt);
    assert_int_equal(cnt[4], 12);
    uint32_t idx[N];
    for (int i = 0; i < N; i++) idx[i] = (uint32_t)i;
    gpp_data_iter_opts o = {.batch_size = B, .order = GPP_DATA_BALANCED, .min_per_class = M,
                            .seed = 3};
    gpp_data_iter *it, *it2;
    assert_int_equal(gpp_data_iter_new(&it, ds, idx, N, &o, &err), 0);
    assert_int_equal(gpp_data_iter_new(&it2, ds, idx, N, &o, &err), 0);
    assert_int_equal(gpp_data_iter_batches(it), N / B);
    int y[B], y2[B];
    for (int epoch = 0; epoch < 3; epoch++) {
        uint32_t used[N] = {0}, m, n_ord;
        const uint32_t *ord = gpp_data_iter_order(it, &n_ord);
        assert_int_equal(n_ord, N / B * B);
        for (uint32_t b = 0; (m = gpp_data_iter_next(it, NULL, y)) > 0; b++) {
            assert_int_equal(m, B);
            assert_int_equal(gpp_data_iter_next(it2, NULL, y2), B);
            assert_memory_equal(y, y2, sizeof y);          /* deterministic */
            uint32_t per[K] = {0};
            for (int i = 0; i < B; i++) {
                per[y[i]]++;
                used[ord[b * B + i]]++;
                for (int j = 0; j < i; j++) assert_int_not_equal(ord[b * B + i], ord[b * B + j]);
            }
            for (int k = 0; k < K; k++) assert_true(per[k] >= M);
        }
        assert_int_equal(gpp_data_iter_next(it2, NULL, y2), 0);
        /* About once: the common classes' samples at most once an epoch, the
         * rare class cycled (15 batches x 2 over 12 samples: 2 or 3 times). */
        uint32_t once = 0;
        for (int i = 0; i < N; i++) {
            if (lab[i] == 4) assert_true(used[i] >= 2 && used[i] <= 3);
            else assert_true(used[i] <= 1);
            once += used[i] == 1;
        }
        assert_true(once >= N - 12 - B);
    }
    gpp_data_iter_free(it2);
    gpp_data_iter_free(it);

    o.batch_size = 9;
    expect_err(gpp_data_iter_new(&it, ds, idx, N, &o, &err), GPP_EINVAL, &err,
               "batch_size 9 is smaller than 5 classes x 2 per class", NULL);
    assert_null(it);
    o.batch_size = 20;
    o.min_per_class = 0;
    expect_err(gpp_data_iter_new(&it, ds, idx, N, &o, &err), GPP_EINVAL, &err, "min_per_class", NULL);
    /* A class with fewer samples in the subset than min_per_class. */
    uint32_t sub[40], ns = 0;
    int got4 = 0;
    for (int i = 0; i < N && ns < 40; i++) {
        if (lab[i] == 4 && got4++) continue;
        sub[ns++] = (uint32_t)i;
    }
    o.min_per_class = 2;
    expect_err(gpp_data_iter_new(&it, ds, sub, ns, &o, &err), GPP_EINVAL, &err,
               "class 4 has 1 samples", NULL);
    gpp_dataset_free(ds);
}

/* ---- the real Fashion-MNIST ---------------------------------------------------- */

static void test_fashion_mnist(void **state)
{
    (void)state;
    gpp_error err;
    gpp_dataset *tr, *te;
    const char *dir = getenv("GPP_FASHION_MNIST_DIR");
    if (!dir) dir = "/usr/share/datasets/fashion-mnist";
    int rc = gpp_data_load_idx(dir, &tr, &te, &err);
    if (rc) fprintf(stderr, "%s (install dataset-fashion-mnist)\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(tr->n, 60000);
    assert_int_equal(te->n, 10000);
    assert_int_equal(tr->c, 1);
    assert_int_equal(tr->h, 28);
    assert_int_equal(tr->w, 28);
    assert_string_equal(tr->name, "fashion-mnist");
    uint32_t cnt[10];
    gpp_dataset_class_counts(tr, NULL, 0, cnt);
    for (int k = 0; k < 10; k++) assert_int_equal(cnt[k], 6000);
    gpp_dataset_class_counts(te, NULL, 0, cnt);
    for (int k = 0; k < 10; k++) assert_int_equal(cnt[k], 1000);

    gpp_data_split_opts o = {.val_fraction = 0.1, .seed = 1};
    gpp_data_split *s;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    assert_int_equal(s->n_train, 54000);
    assert_int_equal(s->n_val, 6000);
    assert_int_equal(s->n_test, 10000);
    gpp_dataset_class_counts(tr, s->val, s->n_val, cnt);
    for (int k = 0; k < 10; k++) assert_int_equal(cnt[k], 600);
    /* The widely quoted Fashion-MNIST statistics: mean 0.2860, std 0.3530. */
    gpp_data_norm nm;
    assert_int_equal(gpp_data_norm_compute(&nm, tr, NULL, 0, &err), 0);
    assert_float_equal(nm.mean[0], 0.2860, 0.0005);
    assert_float_equal(nm.std[0], 0.3530, 0.0005);
    gpp_data_split_free(s);
    /* A quick-run limit: the first 100 of each class in turn. */
    o.train_limit = 1000;
    o.test_limit = 500;
    assert_int_equal(gpp_data_split_new(&s, tr, te, &o, &err), 0);
    assert_int_equal(s->n_train + s->n_val, 1000);
    assert_int_equal(s->n_test, 500);
    gpp_dataset_class_counts(te, s->test, s->n_test, cnt);
    for (int k = 0; k < 10; k++) assert_int_equal(cnt[k], 50);
    gpp_data_split_free(s);
    gpp_dataset_free(tr);
    gpp_dataset_free(te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain_and_gz),
        cmocka_unit_test(test_idx_missing),
        cmocka_unit_test(test_idx_truncated),
        cmocka_unit_test(test_idx_trailing),
        cmocka_unit_test(test_idx_magic_and_counts),
        cmocka_unit_test(test_idx_mislabelled),
        cmocka_unit_test(test_cifar_files),
        cmocka_unit_test(test_cifar_folder),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_limit_round_robin),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_pick_per_class),
        cmocka_unit_test(test_norm),
        cmocka_unit_test(test_crop_flip_hand),
        cmocka_unit_test(test_crop_flip_fill),
        cmocka_unit_test(test_shuffle),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_balanced),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
