/* Unit tests for the checkpoint format (gpp/ckpt.h): round trips, the byte
 * layout, every truncation and every byte flip of a small file, hand-crafted
 * inconsistent files with a valid CRC, invalid JSON, writer refusals and the
 * atomic file write. */
#include <dirent.h>
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

#include "gpp/ckpt.h"

static const char *NET_JSON =
    "{\"format\":\"gppm\",\"network\":{\"input\":[1,5,5],\"classes\":10,\"layers\":["
    "{\"type\":\"conv\",\"name\":\"conv1\",\"out\":4,\"k\":3},"
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":10}]},"
    "\"meta\":{\"stage\":\"train\",\"note\":\"caf\xc3\xa9\"},\"state\":{\"step\":7}}";

/* ---- helpers ----------------------------------------------------------- */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return get32(p) | ((uint64_t)get32(p + 4) << 32); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute the trailer CRC of a (possibly edited) file in place. */
static void fix_crc(uint8_t *b, size_t n)
{
    put32(b + n - 8, (uint32_t)crc32(0, b, (uInt)(n - 8)));
}

static float value_at(size_t t, size_t i)
{
    return (float)((double)(t + 1) * 0.25 - (double)i * 0.0625 + (i % 3 == 0 ? 1e-3 : 0.0));
}

/* A small checkpoint: conv1.weight [4,1,3,3], conv1.bias [4], fc1.weight
 * [10,36], fc1.bias [10], and with `optim` optim/conv1.weight [4,1,3,3]. */
typedef struct sample {
    float w1[36], b1[4], w2[360], b2[10], m1[36];
} sample;

static void sample_fill(sample *s)
{
    for (size_t i = 0; i < 36; i++) s->w1[i] = value_at(0, i);
    for (size_t i = 0; i < 4; i++) s->b1[i] = value_at(1, i);
    for (size_t i = 0; i < 360; i++) s->w2[i] = value_at(2, i);
    for (size_t i = 0; i < 10; i++) s->b2[i] = value_at(3, i);
    for (size_t i = 0; i < 36; i++) s->m1[i] = -value_at(4, i);
}

static gpp_ckpt_writer *sample_writer(sample *s, int optim)
{
    sample_fill(s);
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(NET_JSON);
    assert_non_null(w);
    gpp_error err;
    const int64_t d_w1[] = {4, 1, 3, 3}, d_b1[] = {4}, d_w2[] = {10, 36}, d_b2[] = {10};
    assert_int_equal(gpp_ckpt_writer_add(w, "conv1.weight", 4, d_w1, s->w1, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "conv1.bias", 1, d_b1, s->b1, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "fc1.weight", 2, d_w2, s->w2, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "fc1.bias", 1, d_b2, s->b2, &err), 0);
    if (optim)
        assert_int_equal(gpp_ckpt_writer_add(w, "optim/conv1.weight", 4, d_w1, s->m1, &err), 0);
    return w;
}

static uint8_t *sample_bytes(int optim, size_t *len)
{
    sample s;
    gpp_ckpt_writer *w = sample_writer(&s, optim);
    uint8_t *buf = NULL;
    gpp_error err;
    int rc = gpp_ckpt_writer_write_buffer(w, &buf, len, &err);
    if (rc) fail_msg("write_buffer: %s", err.message);
    gpp_ckpt_writer_free(w);
    return buf;
}

static void check_sample(const gpp_ckpt *c, int optim)
{
    sample s;
    sample_fill(&s);
    assert_string_equal(gpp_ckpt_json(c), NET_JSON);
    assert_int_equal(gpp_ckpt_tensor_count(c), optim ? 5 : 4);
    assert_int_equal(gpp_ckpt_has_optim(c), optim);
    const gpp_tensor_view *v = gpp_ckpt_tensor(c, 0);
    assert_string_equal(v->name, "conv1.weight");
    assert_int_equal(v->ndim, 4);
    assert_int_equal(v->dims[0], 4);
    assert_int_equal(v->dims[1], 1);
    assert_int_equal(v->dims[2], 3);
    assert_int_equal(v->dims[3], 3);
    assert_int_equal(v->count, 36);
    assert_memory_equal(v->data, s.w1, sizeof s.w1);
    v = gpp_ckpt_find(c, "fc1.weight");
    assert_non_null(v);
    assert_ptr_equal(v, gpp_ckpt_tensor(c, 2));
    assert_int_equal(v->ndim, 2);
    assert_int_equal(v->dims[0], 10);
    assert_int_equal(v->dims[1], 36);
    assert_memory_equal(v->data, s.w2, sizeof s.w2);
    v = gpp_ckpt_find(c, "fc1.bias");
    assert_non_null(v);
    assert_memory_equal(v->data, s.b2, sizeof s.b2);
    v = gpp_ckpt_find(c, "conv1.bias");
    assert_non_null(v);
    assert_memory_equal(v->data, s.b1, sizeof s.b1);
    v = gpp_ckpt_find(c, "optim/conv1.weight");
    if (optim) {
        assert_non_null(v);
        assert_memory_equal(v->data, s.m1, sizeof s.m1);
    } else {
        assert_null(v);
    }
    assert_null(gpp_ckpt_find(c, "conv1"));
    assert_null(gpp_ckpt_tensor(c, gpp_ckpt_tensor_count(c)));
    for (size_t i = 0; i < gpp_ckpt_tensor_count(c); i++)
        assert_int_equal((uintptr_t)gpp_ckpt_tensor(c, i)->data % 64, 0);
}

static int read_rc(const uint8_t *b, size_t n, gpp_error *err)
{
    gpp_ckpt *c = NULL;
    int rc = gpp_ckpt_read_buffer(b, n, &c, err);
    if (rc == 0) assert_non_null(c);
    else assert_null(c);
    gpp_ckpt_free(c);
    return rc;
}

static void assert_refused(const uint8_t *b, size_t n, int want_rc, const char *want_msg)
{
    gpp_error err;
    gpp_error_clear(&err);
    int rc = read_rc(b, n, &err);
    if (rc != want_rc || !strstr(err.message, want_msg))
        fail_msg("want rc %d and a message with \"%s\"; got rc %d: %s", want_rc, want_msg, rc,
                 err.message);
}

static char tmpdir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_ckpt.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    return rmdir(tmpdir);
}

static int dir_entries(const char *dir, char names[][128], int max)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n < max) snprintf(names[n], 128, "%.127s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* ---- a crafter for hand-made files with a valid CRC --------------------- */

typedef struct entry {
    const char *name;
    int name_len;          /* -1: strlen(name) */
    uint8_t dtype, ndim;
    uint64_t dims[10];
    uint64_t offset, nbytes;
} entry;

typedef struct craft {
    const char *json;
    uint32_t version, flags;
    uint64_t data_offset;  /* 0: first 64-byte boundary after the table */
    size_t n;
    entry e[4];
    uint64_t data_end;     /* 0: end of the furthest tensor */
} craft;

/* A valid file: "a" [2,3] at data_offset, "b" [5] at the next boundary. */
static craft craft_valid(void)
{
    craft k = {.json = "{\"network\":{\"layers\":[]}}", .version = 1, .n = 2};
    k.e[0] = (entry){.name = "a", .name_len = -1, .dtype = 1, .ndim = 2, .dims = {2, 3}, .nbytes = 24};
    k.e[1] = (entry){.name = "b", .name_len = -1, .dtype = 1, .ndim = 1, .dims = {5}, .nbytes = 20};
    return k;
}

static uint8_t *craft_build(craft *k, size_t *len)
{
    size_t jl = strlen(k->json);
    size_t tab = 0;
    for (size_t i = 0; i < k->n; i++) {
        size_t nl = k->e[i].name_len < 0 ? strlen(k->e[i].name) : (size_t)k->e[i].name_len;
        tab += 2 + nl + 2 + 8 * (size_t)k->e[i].ndim + 16;
    }
    uint64_t table_end = 32 + jl + tab;
    if (!k->data_offset) k->data_offset = (table_end + 63) & ~(uint64_t)63;
    uint64_t pos = k->data_offset;
    for (size_t i = 0; i < k->n; i++) {
        if (!k->e[i].offset) { k->e[i].offset = (pos + 63) & ~(uint64_t)63; }
        pos = k->e[i].offset + k->e[i].nbytes;
    }
    uint64_t end = k->data_end ? k->data_end : k->data_offset;
    for (size_t i = 0; !k->data_end && i < k->n; i++)
        if (k->e[i].offset + k->e[i].nbytes > end) end = k->e[i].offset + k->e[i].nbytes;
    if (end < table_end) end = table_end;
    size_t n = (size_t)end + 8;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    memcpy(b, GPP_CKPT_MAGIC, 8);
    put32(b + 8, k->version);
    put32(b + 12, k->flags);
    put32(b + 16, (uint32_t)jl);
    put32(b + 20, (uint32_t)k->n);
    put64(b + 24, k->data_offset);
    memcpy(b + 32, k->json, jl);
    size_t o = 32 + jl;
    for (size_t i = 0; i < k->n; i++) {
        const entry *e = &k->e[i];
        size_t nl = e->name_len < 0 ? strlen(e->name) : (size_t)e->name_len;
        b[o] = (uint8_t)nl;
        b[o + 1] = (uint8_t)(nl >> 8);
        memcpy(b + o + 2, e->name, nl);
        o += 2 + nl;
        b[o++] = e->dtype;
        b[o++] = e->ndim;
        for (int d = 0; d < e->ndim; d++) { put64(b + o, e->dims[d]); o += 8; }
        put64(b + o, e->offset);
        put64(b + o + 8, e->nbytes);
        o += 16;
    }
    for (uint64_t p = k->data_offset; p + 4 <= end; p += 4) {
        float f = (float)p * 0.5f;
        memcpy(b + p, &f, 4);
    }
    memcpy(b + n - 4, GPP_CKPT_END_MARKER, 4);
    fix_crc(b, n);
    *len = n;
    return b;
}

static void craft_refused(craft k, const char *want_msg)
{
    size_t n;
    uint8_t *b = craft_build(&k, &n);
    assert_refused(b, n, GPP_EFORMAT, want_msg);
    free(b);
}

/* ---- tests ------------------------------------------------------------- */

static void test_roundtrip_buffer(void **state)
{
    (void)state;
    for (int optim = 0; optim <= 1; optim++) {
        size_t n;
        uint8_t *b = sample_bytes(optim, &n);
        gpp_ckpt *c = NULL;
        gpp_error err;
        assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
        check_sample(c, optim);
        gpp_ckpt_free(c);
        free(b);
    }
}

static void test_roundtrip_file(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/s.gppm", tmpdir);
    for (int optim = 0; optim <= 1; optim++) {
        sample s;
        gpp_ckpt_writer *w = sample_writer(&s, optim);
        gpp_error err;
        assert_int_equal(gpp_ckpt_writer_write_file(w, path, &err), 0);
        gpp_ckpt_writer_free(w);
        gpp_ckpt *c = NULL;
        assert_int_equal(gpp_ckpt_read_file(path, &c, &err), 0);
        check_sample(c, optim);
        gpp_ckpt_free(c);
        /* the file holds the same bytes as the buffer writer's */
        size_t n;
        uint8_t *b = sample_bytes(optim, &n);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t *fb = malloc(n + 1);
        assert_int_equal(fread(fb, 1, n + 1, f), n);
        fclose(f);
        assert_memory_equal(fb, b, n);
        free(fb);
        free(b);
    }
}

static void test_zero_tensors(void **state)
{
    (void)state;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new("{\"network\":{}}");
    uint8_t *b;
    size_t n;
    gpp_error err;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), 0);
    /* header + 14 bytes of JSON, padded to 64, then the trailer */
    assert_int_equal(n, 64 + 8);
    assert_int_equal(get64(b + 24), 64);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_string_equal(gpp_ckpt_json(c), "{\"network\":{}}");
    assert_int_equal(gpp_ckpt_tensor_count(c), 0);
    assert_int_equal(gpp_ckpt_has_optim(c), 0);
    assert_null(gpp_ckpt_tensor(c, 0));
    assert_null(gpp_ckpt_find(c, "x"));
    gpp_ckpt_free(c);
    free(b);
    char path[400];
    snprintf(path, sizeof path, "%s/empty.gppm", tmpdir);
    assert_int_equal(gpp_ckpt_writer_write_file(w, path, &err), 0);
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), 0);
    assert_int_equal(gpp_ckpt_tensor_count(c), 0);
    gpp_ckpt_free(c);
    gpp_ckpt_writer_free(w);
}

static void test_scalar(void **state)
{
    (void)state;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new("{\"network\":{}}");
    const float x = 3.5f, y[1] = {-2.0f};
    const int64_t d1[] = {1};
    gpp_error err;
    assert_int_equal(gpp_ckpt_writer_add(w, "scale", 0, NULL, &x, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "one", 1, d1, y, &err), 0);
    uint8_t *b;
    size_t n;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), 0);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    const gpp_tensor_view *v = gpp_ckpt_find(c, "scale");
    assert_non_null(v);
    assert_int_equal(v->ndim, 0);
    assert_int_equal(v->count, 1);
    assert_true(v->data[0] == 3.5f);
    v = gpp_ckpt_find(c, "one");
    assert_int_equal(v->ndim, 1);
    assert_int_equal(v->dims[0], 1);
    assert_true(v->data[0] == -2.0f);
    assert_int_equal((uintptr_t)v->data % 64, 0);
    gpp_ckpt_free(c);
    free(b);
    gpp_ckpt_writer_free(w);
}

static void test_many_tensors(void **state)
{
    (void)state;
    enum { N = 300 };
    /* tensor i has ndim i % 9, dims 1 or 2 (at most 256 elements) and its
     * data at data + 64 * i */
    float *data = malloc(sizeof(float) * (64 * N + 256));
    assert_non_null(data);
    for (size_t i = 0; i < 64 * N + 256; i++) data[i] = (float)i * 0.5f - 1000.0f;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(NET_JSON);
    gpp_error err;
    for (int i = 0; i < N; i++) {
        char name[64];
        int ndim = i % 9;
        int64_t dims[8];
        for (int d = 0; d < ndim; d++) dims[d] = 1 + (i + d) % 2;
        snprintf(name, sizeof name, "layer%03d.weight", i);
        assert_int_equal(gpp_ckpt_writer_add(w, name, ndim, dims, data + 64 * i, &err), 0);
    }
    uint8_t *b;
    size_t n;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), 0);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal(gpp_ckpt_tensor_count(c), N);
    assert_int_equal(gpp_ckpt_has_optim(c), 0);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "layer%03d.weight", i);
        const gpp_tensor_view *v = gpp_ckpt_tensor(c, (size_t)i);
        assert_string_equal(v->name, name);
        assert_ptr_equal(gpp_ckpt_find(c, name), v);
        assert_int_equal(v->ndim, i % 9);
        size_t count = 1;
        for (int d = 0; d < v->ndim; d++) {
            assert_int_equal(v->dims[d], 1 + (i + d) % 2);
            count *= (size_t)v->dims[d];
        }
        for (int d = v->ndim; d < 8; d++) assert_int_equal(v->dims[d], 0);
        assert_int_equal(v->count, count);
        assert_int_equal((uintptr_t)v->data % 64, 0);
        assert_memory_equal(v->data, data + 64 * i, count * 4);
    }
    gpp_ckpt_free(c);
    free(b);
    gpp_ckpt_writer_free(w);
    free(data);
}

static void test_layout(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(1, &n);
    size_t jl = strlen(NET_JSON);
    assert_memory_equal(b, "GPPM\r\n\x1a\n", 8);
    assert_int_equal(get32(b + 8), 1);
    assert_int_equal(get32(b + 12), GPP_CKPT_FLAG_OPTIM);
    assert_int_equal(get32(b + 16), jl);
    assert_int_equal(get32(b + 20), 5);
    uint64_t data_offset = get64(b + 24);
    assert_int_equal(data_offset % 64, 0);
    assert_memory_equal(b + 32, NET_JSON, jl);
    /* first entry: conv1.weight */
    const uint8_t *e = b + 32 + jl;
    assert_int_equal(e[0] | (e[1] << 8), 12);
    assert_memory_equal(e + 2, "conv1.weight", 12);
    assert_int_equal(e[14], 1);   /* dtype */
    assert_int_equal(e[15], 4);   /* ndim */
    assert_int_equal(get64(e + 16), 4);
    assert_int_equal(get64(e + 40), 3);
    assert_int_equal(get64(e + 48), data_offset);  /* offset */
    assert_int_equal(get64(e + 56), 144);          /* nbytes */
    sample s;
    sample_fill(&s);
    assert_memory_equal(b + data_offset, s.w1, sizeof s.w1);
    /* second entry follows at the next 64-byte boundary */
    e += 64;
    assert_int_equal(e[0], 10);
    assert_int_equal(get64(e + 2 + 10 + 2 + 8), data_offset + 192);
    assert_memory_equal(b + n - 4, "MPPG", 4);
    assert_int_equal(get32(b + n - 8), (uint32_t)crc32(0, b, (uInt)(n - 8)));
    free(b);
    b = sample_bytes(0, &n);
    assert_int_equal(get32(b + 12), 0);
    free(b);
}

static void test_every_truncation(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(1, &n);
    assert_int_equal(read_rc(b, n, NULL), 0);
    for (size_t k = 0; k < n; k++) {
        gpp_error err;
        gpp_error_clear(&err);
        int rc = read_rc(b, k, &err);
        if (rc != GPP_EFORMAT || !strstr(err.message, "truncated"))
            fail_msg("length %zu of %zu: rc %d: %s", k, n, rc, err.message);
    }
    /* the precise message when the data of a tensor is cut */
    size_t cut = n - 100;
    assert_refused(b, cut, GPP_EFORMAT, "checkpoint truncated: tensor 'optim/conv1.weight' data ends at");
    free(b);
}

static void test_every_byte_flip(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(1, &n);
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < n; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            b[i] ^= masks[m];
            gpp_error err;
            gpp_error_clear(&err);
            int rc = read_rc(b, n, &err);
            b[i] ^= masks[m];
            int want_version = i >= 8 && i < 12;
            if (want_version ? rc != GPP_EVERSION
                             : (rc != GPP_ECHECKSUM && rc != GPP_EFORMAT))
                fail_msg("flip 0x%02x at %zu: rc %d: %s", masks[m], i, rc, err.message);
            assert_true(err.message[0] != '\0');
        }
    }
    free(b);
}

static void test_version(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(0, &n);
    put32(b + 8, 2);
    fix_crc(b, n);
    gpp_error err;
    assert_int_equal(read_rc(b, n, &err), GPP_EVERSION);
    assert_string_equal(err.message, "checkpoint version 2 is newer than this gppd understands (1)");
    assert_string_equal(err.code, "unsupported_version");
    /* a newer version is named even when the rest would not parse */
    assert_refused(b, 12, GPP_EVERSION, "version 2 is newer");
    put32(b + 8, 0);
    fix_crc(b, n);
    assert_refused(b, n, GPP_EVERSION, "version 0 is not valid");
    free(b);
}

static void test_magic(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(0, &n);
    b[3] = 'N';
    assert_refused(b, n, GPP_EFORMAT, "bad magic");
    assert_refused(b, 5, GPP_EFORMAT, "bad magic");
    b[3] = 'M';
    b[6] = '\n';   /* a text-mode transfer turned \x1a into something else */
    assert_refused(b, n, GPP_EFORMAT, "bad magic");
    assert_refused((const uint8_t *)"PK\x03\x04", 4, GPP_EFORMAT, "bad magic");
    free(b);
}

static void test_checksum(void **state)
{
    (void)state;
    size_t n;
    uint8_t *b = sample_bytes(0, &n);
    b[n - 20] ^= 0x10;   /* inside the last tensor's data */
    gpp_error err;
    assert_int_equal(read_rc(b, n, &err), GPP_ECHECKSUM);
    assert_non_null(strstr(err.message, "checksum mismatch"));
    assert_string_equal(err.code, "checksum_mismatch");
    b[n - 20] ^= 0x10;
    b[n - 4] = 'X';      /* end marker */
    assert_refused(b, n, GPP_EFORMAT, "end marker");
    free(b);
}

static void test_crafted_valid(void **state)
{
    (void)state;
    /* the crafter itself makes readable files, so refusals below are real */
    craft k = craft_valid();
    size_t n;
    uint8_t *b = craft_build(&k, &n);
    gpp_ckpt *c = NULL;
    gpp_error err;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal(gpp_ckpt_tensor_count(c), 2);
    assert_int_equal(gpp_ckpt_find(c, "b")->count, 5);
    gpp_ckpt_free(c);
    free(b);
    /* gaps are allowed: coarser alignment, padding before the trailer */
    k = craft_valid();
    k.e[0].offset = 128;
    k.e[1].offset = 256;
    k.data_end = 512;
    b = craft_build(&k, &n);
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal((uintptr_t)gpp_ckpt_find(c, "b")->data % 64, 0);
    float f;
    memcpy(&f, b + 256, 4);
    assert_true(gpp_ckpt_find(c, "b")->data[0] == f);
    gpp_ckpt_free(c);
    free(b);
    /* optim flag and tensors agree */
    k = craft_valid();
    k.e[1].name = "optim/a";
    k.flags = 1;
    b = craft_build(&k, &n);
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal(gpp_ckpt_has_optim(c), 1);
    gpp_ckpt_free(c);
    free(b);
}

static void test_crafted_inconsistent(void **state)
{
    (void)state;
    craft k;
    k = craft_valid(); k.e[1].offset = 64 * 2; k.e[0].offset = 64 * 2;
    k.data_offset = 128;
    craft_refused(k, "checkpoint tensor 'b': data at 128 overlaps the previous tensor, which ends at 152");
    k = craft_valid(); k.e[0].nbytes = 20;
    craft_refused(k, "checkpoint tensor 'a': nbytes 20 does not match its shape (6 elements x 4 bytes)");
    k = craft_valid(); k.e[1].offset = 192 + 4;
    craft_refused(k, "checkpoint tensor 'b': data offset 196 is not 64-byte aligned");
    k = craft_valid(); k.e[1].name = "a";
    craft_refused(k, "checkpoint has a duplicate tensor name 'a'");
    k = craft_valid(); k.e[1].dtype = 2;
    craft_refused(k, "checkpoint tensor 'b': dtype 2 is not supported (only 1 = float32)");
    k = craft_valid(); k.e[0].ndim = 9;
    for (int d = 0; d < 9; d++) k.e[0].dims[d] = 1;
    k.e[0].nbytes = 4;
    craft_refused(k, "checkpoint tensor 'a': ndim 9 exceeds 8");
    k = craft_valid(); k.e[1].offset = 4096; k.data_end = 256;
    craft_refused(k, "checkpoint tensor 'b': data [4096, 4116) runs past the end of the data region at 256");
    k = craft_valid(); k.e[0].dims[0] = (uint64_t)1 << 40; k.e[0].dims[1] = (uint64_t)1 << 40;
    craft_refused(k, "checkpoint tensor 'a': the product of its dims overflows");
    k = craft_valid(); k.e[0].dims[1] = 0;
    craft_refused(k, "checkpoint tensor 'a': dims[1] is 0");
    k = craft_valid(); k.e[0].name = "a\x01";
    craft_refused(k, "checkpoint tensor 0: name 'a\\x01' has byte 0x01");
    k = craft_valid(); k.e[0].name = ""; k.e[0].name_len = 0;
    craft_refused(k, "checkpoint tensor 0: name length 0 is outside 1..255");
    k = craft_valid(); k.data_offset = 128; k.e[0].offset = 64;
    craft_refused(k, "checkpoint tensor 'a': data offset 64 is before the data region at 128");
    /* a table whose second entry crosses into the data region: a scalar
     * "a" (21 bytes) and "b" [5] (29 bytes) in the 45 bytes from 83 to 128 */
    k = craft_valid();
    k.json = "{\"network\":{\"layers\":[]},\"p\":\"0123456789abcdefghi\"}";
    assert_int_equal(strlen(k.json), 51);
    k.e[0].ndim = 0; k.e[0].nbytes = 4;
    k.data_offset = 128; k.e[0].offset = 128; k.e[1].offset = 192;
    craft_refused(k, "checkpoint tensor table entry 1 runs into the data region at 128");
    k = craft_valid(); k.data_offset = 100;
    k.e[0].offset = 128; k.e[1].offset = 192;
    craft_refused(k, "checkpoint data offset 100 is not 64-byte aligned");
    k = craft_valid(); k.json = "{\"network\":{\"layers\":[], \"pad\": \"0123456789012345678901234567890123456789\"}}";
    k.data_offset = 64; k.e[0].offset = 128; k.e[1].offset = 192;
    craft_refused(k, "checkpoint data offset 64 is inside the JSON document, which ends at 108");
    k = craft_valid(); k.flags = 4;
    craft_refused(k, "checkpoint flags 0x4 have unknown bits set");
    k = craft_valid(); k.flags = 1;
    craft_refused(k, "flags say optimiser state is present but no \"optim/\" tensor is");
    k = craft_valid(); k.e[0].name = "optim/x";
    craft_refused(k, "has \"optim/\" tensors but the optimiser-state flag is clear");
    k = craft_valid(); k.data_offset = 64 * 1024;
    k.e[0].offset = k.data_offset; k.e[1].offset = k.data_offset + 64; k.data_end = 1024;
    craft_refused(k, "checkpoint truncated: data region starts at 65536 but file is 1032 bytes");
}

static void test_crafted_header_limits(void **state)
{
    (void)state;
    craft k = craft_valid();
    size_t n;
    uint8_t *b = craft_build(&k, &n);
    put32(b + 20, 65537);
    fix_crc(b, n);
    assert_refused(b, n, GPP_EFORMAT, "tensor count 65537 exceeds the limit of 65536");
    put32(b + 20, 1000);
    fix_crc(b, n);
    assert_refused(b, n, GPP_EFORMAT, "tensor table of 1000 entries cannot fit");
    put32(b + 20, 2);
    put32(b + 16, (16u << 20) + 1);
    fix_crc(b, n);
    assert_refused(b, n, GPP_EFORMAT, "JSON length 16777217 exceeds the 16 MiB limit");
    free(b);
}

static void test_invalid_json(void **state)
{
    (void)state;
    static const struct { const char *json; const char *msg; } cases[] = {
        {"{\"network\":{}", "is not valid JSON"},
        {"[1, 2]", "is not an object"},
        {"{\"net\":{}}", "has no \"network\" object"},
        {"{\"network\":[]}", "has no \"network\" object"},
        {"{\"network\":{}} x", "trailing data at offset 15"},
        {"{\"network\":{}}{}", "trailing data"},
        {"{\"network\":{\"a\":\"\xff\"}}", "invalid byte 0xff at offset 17"},
        {"{\"network\":{\"a\":\"\xc0\xaf\"}}", "invalid byte 0xc0"},      /* overlong */
        {"{\"network\":{\"a\":\"\xed\xa0\x80\"}}", "invalid byte 0xed"},  /* surrogate */
        {"{\"network\":{\"a\":\"\xe2\x82\"}}", "invalid byte 0xe2"},      /* cut sequence */
        {"{\"network\":{\"a\":\"x\x01y\"}}", "invalid byte 0x01 at offset 18"},
        {"{\"network\":{\"a\":NaN}}", "is not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        craft k = craft_valid();
        k.json = cases[i].json;
        craft_refused(k, cases[i].msg);
        /* the writer refuses the same documents */
        gpp_ckpt_writer *w = gpp_ckpt_writer_new(cases[i].json);
        uint8_t *b = (uint8_t *)"x";
        size_t n = 1;
        gpp_error err;
        assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), GPP_EINVAL);
        assert_null(b);
        assert_int_equal(n, 0);
        assert_non_null(strstr(err.message, cases[i].msg));
        gpp_ckpt_writer_free(w);
    }
    /* an embedded NUL is a control byte too */
    craft k = craft_valid();
    k.json = "{\"network\":{}}";
    size_t n;
    uint8_t *b = craft_build(&k, &n);
    b[32 + 5] = 0;
    fix_crc(b, n);
    assert_refused(b, n, GPP_EFORMAT, "invalid byte 0x00 at offset 5");
    free(b);
    /* multi-byte UTF-8 and whitespace around the value are fine */
    k = craft_valid();
    k.json = " {\"network\":{\"n\":\"\xe2\x9c\x93 \xf0\x9f\x98\x80\"}}\r\n\t";
    b = craft_build(&k, &n);
    assert_int_equal(read_rc(b, n, NULL), 0);
    free(b);
}

static void test_writer_refusals(void **state)
{
    (void)state;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new("{\"network\":{}}");
    const float x[4] = {1, 2, 3, 4};
    const int64_t d4[] = {4}, d0[] = {0}, dneg[] = {-2}, d9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
    const int64_t dhuge[] = {(int64_t)1 << 32, (int64_t)1 << 32};
    char long_name[300];
    memset(long_name, 'n', 256);
    long_name[256] = '\0';
    gpp_error err;
    assert_int_equal(gpp_ckpt_writer_add(w, "x", 1, d4, x, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "x", 1, d4, x, &err), GPP_EINVAL);
    assert_string_equal(err.message, "duplicate tensor name 'x'");
    assert_int_equal(gpp_ckpt_writer_add(w, "", 1, d4, x, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "must be 1..255 characters"));
    assert_int_equal(gpp_ckpt_writer_add(w, long_name, 1, d4, x, &err), GPP_EINVAL);
    long_name[255] = '\0';
    assert_int_equal(gpp_ckpt_writer_add(w, long_name, 1, d4, x, &err), 0);
    assert_int_equal(gpp_ckpt_writer_add(w, "tab\there", 1, d4, x, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "byte 0x09 at 3"));
    assert_int_equal(gpp_ckpt_writer_add(w, "caf\xc3\xa9", 1, d4, x, &err), GPP_EINVAL);
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 9, d9, x, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "ndim 9 is outside 0..8"));
    assert_int_equal(gpp_ckpt_writer_add(w, "y", -1, d4, x, &err), GPP_EINVAL);
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 1, d0, x, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "dims[0] = 0 must be >= 1"));
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 1, dneg, x, &err), GPP_EINVAL);
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 2, dhuge, x, &err), GPP_ETOOBIG);
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 1, d4, NULL, &err), GPP_EINVAL);
    assert_int_equal(gpp_ckpt_writer_add(w, "y", 1, NULL, x, &err), GPP_EINVAL);
    assert_int_equal(gpp_ckpt_writer_add(NULL, "y", 1, d4, x, &err), GPP_EINVAL);
    /* the refusals added nothing: two tensors */
    uint8_t *b;
    size_t n;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), 0);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal(gpp_ckpt_tensor_count(c), 2);
    assert_non_null(gpp_ckpt_find(c, long_name));
    gpp_ckpt_free(c);
    free(b);
    gpp_ckpt_writer_free(w);
    assert_null(gpp_ckpt_writer_new(NULL));
    gpp_ckpt_writer_free(NULL);
    gpp_ckpt_free(NULL);
}

static void test_tensor_limit(void **state)
{
    (void)state;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new("{\"network\":{}}");
    const float x = 1.0f;
    gpp_error err;
    char name[32];
    for (int i = 0; i < GPP_CKPT_MAX_TENSORS; i++) {
        snprintf(name, sizeof name, "t%d", i);
        if (gpp_ckpt_writer_add(w, name, 0, NULL, &x, &err) != 0) fail_msg("%s", err.message);
    }
    assert_int_equal(gpp_ckpt_writer_add(w, "one-more", 0, NULL, &x, &err), GPP_ETOOBIG);
    uint8_t *b;
    size_t n;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &b, &n, &err), 0);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_buffer(b, n, &c, &err), 0);
    assert_int_equal(gpp_ckpt_tensor_count(c), GPP_CKPT_MAX_TENSORS);
    assert_true(gpp_ckpt_find(c, "t65535")->data[0] == 1.0f);
    assert_ptr_equal(gpp_ckpt_find(c, "t12345"), gpp_ckpt_tensor(c, 12345));
    gpp_ckpt_free(c);
    free(b);
    gpp_ckpt_writer_free(w);
}

static void test_atomic_write(void **state)
{
    (void)state;
    char path[400], names[8][128];
    snprintf(path, sizeof path, "%s/atomic.gppm", tmpdir);
    /* start from an empty directory */
    teardown_dir(NULL);
    assert_int_equal(mkdir(tmpdir, 0700), 0);
    sample s;
    gpp_ckpt_writer *w = sample_writer(&s, 0);
    gpp_error err;
    assert_int_equal(gpp_ckpt_writer_write_file(w, path, &err), 0);
    assert_int_equal(dir_entries(tmpdir, names, 8), 1);
    assert_string_equal(names[0], "atomic.gppm");
    gpp_ckpt_writer_free(w);
    /* overwrite: replaced whole, still one file */
    w = sample_writer(&s, 1);
    assert_int_equal(gpp_ckpt_writer_write_file(w, path, &err), 0);
    assert_int_equal(dir_entries(tmpdir, names, 8), 1);
    gpp_ckpt *c = NULL;
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), 0);
    check_sample(c, 1);
    gpp_ckpt_free(c);
    /* a missing directory: an error, nothing created */
    char bad[500];
    snprintf(bad, sizeof bad, "%s/missing/x.gppm", tmpdir);
    assert_int_equal(gpp_ckpt_writer_write_file(w, bad, &err), GPP_EIO);
    assert_non_null(strstr(err.message, "No such file or directory"));
    assert_int_equal(dir_entries(tmpdir, names, 8), 1);
    /* a failing write over an existing file leaves the old file as it was */
    gpp_ckpt_writer *wbad = gpp_ckpt_writer_new("not json");
    assert_int_equal(gpp_ckpt_writer_write_file(wbad, path, &err), GPP_EINVAL);
    gpp_ckpt_writer_free(wbad);
    assert_int_equal(dir_entries(tmpdir, names, 8), 1);
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), 0);
    check_sample(c, 1);
    gpp_ckpt_free(c);
    /* a rename that fails (target is a directory) removes the temporary */
    char dpath[500];
    snprintf(dpath, sizeof dpath, "%s/adir", tmpdir);
    assert_int_equal(mkdir(dpath, 0700), 0);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", dpath);
    FILE *f = fopen(inner, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(gpp_ckpt_writer_write_file(w, dpath, &err), GPP_EIO);
    assert_non_null(strstr(err.message, "cannot rename"));
    assert_int_equal(dir_entries(tmpdir, names, 8), 2);
    unlink(inner);
    rmdir(dpath);
    gpp_ckpt_writer_free(w);
}

static void test_read_file_errors(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/nope.gppm", tmpdir);
    gpp_ckpt *c = (gpp_ckpt *)1;
    gpp_error err;
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), GPP_ENOTFOUND);
    assert_null(c);
    assert_int_equal(gpp_ckpt_read_file(tmpdir, &c, &err), GPP_EIO);
    /* a truncated file on disk */
    size_t n;
    uint8_t *b = sample_bytes(0, &n);
    snprintf(path, sizeof path, "%s/cut.gppm", tmpdir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n - 9, f), n - 9);
    fclose(f);
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), GPP_EFORMAT);
    assert_non_null(strstr(err.message, "truncated"));
    unlink(path);
    free(b);
    assert_int_equal(gpp_ckpt_read_buffer(NULL, 0, &c, &err), GPP_EFORMAT);
    assert_int_equal(gpp_ckpt_read_buffer(NULL, 10, &c, &err), GPP_EINVAL);
}

/* gpp_ckpt_read_json: the header's JSON alone, equal to the full reader's;
 * the tensors and the CRC are not looked at; a bad header is refused. */
static void write_bytes(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void test_read_json(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/j.gppm", tmpdir);
    size_t n;
    uint8_t *b = sample_bytes(1, &n);
    write_bytes(path, b, n);
    gpp_ckpt *c = NULL;
    gpp_error err;
    char *json = NULL;
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), 0);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), 0);
    assert_string_equal(json, gpp_ckpt_json(c));
    free(json);
    /* a flipped byte in the last tensor's data: the full read fails its CRC,
     * the header read does not look there */
    b[n - 12] ^= 0x40;
    write_bytes(path, b, n);
    gpp_ckpt_free(c);
    c = NULL;
    assert_int_equal(gpp_ckpt_read_file(path, &c, &err), GPP_ECHECKSUM);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), 0);
    free(json);
    b[n - 12] ^= 0x40;
    /* bad magic, a newer version, a JSON length past the end, a cut header */
    uint8_t *m = malloc(n);
    assert_non_null(m);
    memcpy(m, b, n);
    m[0] = 'X';
    write_bytes(path, m, n);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), GPP_EFORMAT);
    assert_null(json);
    memcpy(m, b, n);
    m[8] = 2;
    write_bytes(path, m, n);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), GPP_EVERSION);
    memcpy(m, b, n);
    uint32_t big = (uint32_t)n;   /* little-endian json_len: the whole file */
    for (int i = 0; i < 4; i++) m[16 + i] = (uint8_t)(big >> (8 * i));
    write_bytes(path, m, n);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), GPP_EFORMAT);
    assert_non_null(strstr(err.message, "does not fit"));
    write_bytes(path, b, 20);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), GPP_EFORMAT);
    unlink(path);
    assert_int_equal(gpp_ckpt_read_json(path, &json, &err), GPP_ENOTFOUND);
    assert_int_equal(gpp_ckpt_read_json(tmpdir, &json, &err), GPP_EIO);
    assert_null(json);
    free(m);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_buffer),
        cmocka_unit_test(test_roundtrip_file),
        cmocka_unit_test(test_zero_tensors),
        cmocka_unit_test(test_scalar),
        cmocka_unit_test(test_many_tensors),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_byte_flip),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_magic),
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_crafted_valid),
        cmocka_unit_test(test_crafted_inconsistent),
        cmocka_unit_test(test_crafted_header_limits),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_writer_refusals),
        cmocka_unit_test(test_tensor_limit),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_read_json),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
