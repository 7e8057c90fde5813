/* libFuzzer target for the checkpoint reader (gpp/ckpt.h).
 *
 * Each input is read twice: as it is, and with its trailer repaired (the
 * CRC-32 of the bytes before it recomputed and the end marker written), so
 * that mutations get past the checksum and reach the JSON and table checks.
 * Whenever a read succeeds, every tensor is walked (every float touched, the
 * view checked against its shape and alignment, gpp_ckpt_find agreeing),
 * the checkpoint is written back with the writer, read again and compared
 * (JSON, names, shapes, bits, optimiser flag), and written once more, which
 * must give the same bytes.  Any disagreement aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "gpp/ckpt.h"

#include "fuzz_check.h"

static volatile uint32_t sink;

static void walk(const gpp_ckpt *c)
{
    size_t n = gpp_ckpt_tensor_count(c);
    CHECK(gpp_ckpt_tensor(c, n) == NULL);
    int optim = 0;
    for (size_t i = 0; i < n; i++) {
        const gpp_tensor_view *v = gpp_ckpt_tensor(c, i);
        CHECK(v != NULL && v->name != NULL);
        size_t nl = strlen(v->name);
        CHECK(nl >= 1 && nl <= GPP_CKPT_NAME_MAX);
        CHECK(v->ndim >= 0 && v->ndim <= GPP_CKPT_MAX_NDIM);
        size_t count = 1;
        for (int d = 0; d < v->ndim; d++) {
            CHECK(v->dims[d] >= 1);
            count *= (size_t)v->dims[d];
        }
        CHECK(count == v->count);
        CHECK((uintptr_t)v->data % GPP_CKPT_ALIGN == 0);
        uint32_t acc = 0;
        for (size_t k = 0; k < v->count; k++) {
            uint32_t u;
            memcpy(&u, &v->data[k], 4);
            acc ^= u + (uint32_t)k;
        }
        sink ^= acc;
        CHECK(gpp_ckpt_find(c, v->name) == v);
        if (strncmp(v->name, GPP_CKPT_OPTIM_PREFIX, strlen(GPP_CKPT_OPTIM_PREFIX)) == 0) optim = 1;
    }
    CHECK(gpp_ckpt_has_optim(c) == optim);
}

static uint8_t *rewrite(const gpp_ckpt *c, size_t *len)
{
    gpp_error err;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(gpp_ckpt_json(c));
    CHECK(w != NULL);
    for (size_t i = 0; i < gpp_ckpt_tensor_count(c); i++) {
        const gpp_tensor_view *v = gpp_ckpt_tensor(c, i);
        int rc = gpp_ckpt_writer_add(w, v->name, v->ndim, v->dims, v->data, &err);
        if (rc) fprintf(stderr, "fuzz_ckpt: writer refused '%s': %s\n", v->name, err.message);
        CHECK(rc == 0);
    }
    uint8_t *buf = NULL;
    int rc = gpp_ckpt_writer_write_buffer(w, &buf, len, &err);
    if (rc) fprintf(stderr, "fuzz_ckpt: writer failed: %s\n", err.message);
    CHECK(rc == 0 && buf != NULL);
    gpp_ckpt_writer_free(w);
    return buf;
}

static void same(const gpp_ckpt *a, const gpp_ckpt *b)
{
    CHECK(strcmp(gpp_ckpt_json(a), gpp_ckpt_json(b)) == 0);
    CHECK(gpp_ckpt_tensor_count(a) == gpp_ckpt_tensor_count(b));
    CHECK(gpp_ckpt_has_optim(a) == gpp_ckpt_has_optim(b));
    for (size_t i = 0; i < gpp_ckpt_tensor_count(a); i++) {
        const gpp_tensor_view *x = gpp_ckpt_tensor(a, i), *y = gpp_ckpt_tensor(b, i);
        CHECK(strcmp(x->name, y->name) == 0);
        CHECK(x->ndim == y->ndim && x->count == y->count);
        CHECK(memcmp(x->dims, y->dims, sizeof x->dims) == 0);
        CHECK(memcmp(x->data, y->data, x->count * sizeof(float)) == 0);
    }
}

static void one(const uint8_t *data, size_t size)
{
    gpp_ckpt *c = NULL;
    gpp_error err;
    gpp_error_clear(&err);
    int rc = gpp_ckpt_read_buffer(data, size, &c, &err);
    if (rc != 0) {
        CHECK(c == NULL);
        CHECK(rc == GPP_EFORMAT || rc == GPP_EVERSION || rc == GPP_ECHECKSUM);
        CHECK(err.message[0] != '\0');
        return;
    }
    CHECK(c != NULL);
    walk(c);
    size_t len1, len2;
    uint8_t *b1 = rewrite(c, &len1);
    gpp_ckpt *c2 = NULL;
    rc = gpp_ckpt_read_buffer(b1, len1, &c2, &err);
    if (rc) fprintf(stderr, "fuzz_ckpt: re-read failed: %s\n", err.message);
    CHECK(rc == 0);
    walk(c2);
    same(c, c2);
    uint8_t *b2 = rewrite(c2, &len2);
    CHECK(len1 == len2 && memcmp(b1, b2, len1) == 0);
    /* the writer's layout is the tightest the rules allow */
    CHECK(len1 <= size);
    free(b2);
    free(b1);
    gpp_ckpt_free(c2);
    gpp_ckpt_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    if (size >= GPP_CKPT_HEADER_SIZE + GPP_CKPT_TRAILER_SIZE && size <= (1u << 24)) {
        uint8_t *fixed = malloc(size);
        if (!fixed) return 0;
        memcpy(fixed, data, size);
        uint32_t crc = (uint32_t)crc32(0, fixed, (uInt)(size - GPP_CKPT_TRAILER_SIZE));
        uint8_t *t = fixed + size - GPP_CKPT_TRAILER_SIZE;
        for (int i = 0; i < 4; i++) t[i] = (uint8_t)(crc >> (8 * i));
        memcpy(t + 4, GPP_CKPT_END_MARKER, 4);
        one(fixed, size);
        free(fixed);
    }
    return 0;
}
