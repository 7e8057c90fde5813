/* ckpt_sample - a fixture program for tests/unit/test_ckpt_python.py.
 *
 *   ckpt_sample OUT.gppm     write a checkpoint with a known network JSON and
 *                            tensors of assorted shapes and values (scalars,
 *                            up to 8 dims, -0, denormals, inf, NaN, optimiser
 *                            state), then print what it wrote as JSON
 *   ckpt_sample --read FILE  read FILE with the C reader and print it the same
 *                            way; on a refusal print the error to stderr and
 *                            exit 1
 *
 * The JSON printed on stdout is
 *   {"json": "<the document, verbatim>", "has_optim": bool,
 *    "tensors": [{"name": .., "dims": [..], "bits": [u32, ..]}, ..]}
 * where "bits" are the IEEE-754 bit patterns of the float32 values, so the
 * comparison is exact for NaN and -0 too. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gpp/ckpt.h"

static const char SAMPLE_JSON[] =
    "{\"format\":\"gppm\","
    "\"network\":{\"input\":[1,5,5],\"classes\":10,\"layers\":["
    "{\"type\":\"conv\",\"name\":\"conv1\",\"out\":4,\"k\":3,\"stride\":1,\"pad\":0,\"bias\":true,\"inputs\":[\"input\"]},"
    "{\"type\":\"bn\",\"name\":\"bn1\",\"eps\":1e-05,\"momentum\":0.1,\"inputs\":[\"conv1\"]},"
    "{\"type\":\"relu\",\"name\":\"relu1\",\"inputs\":[\"bn1\"]},"
    "{\"type\":\"flatten\",\"name\":\"flatten1\",\"inputs\":[\"relu1\"]},"
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":10,\"bias\":true,\"inputs\":[\"flatten1\"]},"
    "{\"type\":\"softmax-cross-entropy\",\"name\":\"loss\",\"inputs\":[\"fc1\"]}]},"
    "\"meta\":{\"stage\":\"train\",\"job\":\"sample\",\"val_accuracy\":0.8125,"
    "\"note\":\"na\xc3\xafve caf\xc3\xa9 \xe2\x9c\x93\"},"
    "\"state\":{\"step\":120,\"epoch\":2,\"data_position\":7680,\"rng\":[1,2,3,4]}}";

enum { MAX_T = 16 };

typedef struct tensor {
    const char *name;
    int ndim;
    int64_t dims[8];
    float *data;
    size_t count;
} tensor;

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void add(tensor *t, size_t *n, const char *name, int ndim, const int64_t *dims)
{
    tensor *x = &t[(*n)++];
    x->name = name;
    x->ndim = ndim;
    x->count = 1;
    for (int d = 0; d < ndim; d++) {
        x->dims[d] = dims[d];
        x->count *= (size_t)dims[d];
    }
    x->data = calloc(x->count, sizeof(float));
    if (!x->data) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < x->count; i++) {
        /* deterministic, different per tensor, mixed signs and magnitudes */
        double v = sin((double)(*n * 131 + i) * 0.7) * pow(10.0, (double)((i + *n) % 7) - 3.0);
        x->data[i] = (float)v;
    }
}

static size_t build(tensor *t)
{
    size_t n = 0;
    add(t, &n, "conv1.weight", 4, (const int64_t[]){4, 1, 3, 3});
    add(t, &n, "conv1.bias", 1, (const int64_t[]){4});
    add(t, &n, "bn1.weight", 1, (const int64_t[]){4});
    add(t, &n, "bn1.bias", 1, (const int64_t[]){4});
    add(t, &n, "bn1.running_mean", 1, (const int64_t[]){4});
    add(t, &n, "bn1.running_var", 1, (const int64_t[]){4});
    for (int i = 0; i < 4; i++) t[n - 1].data[i] = 0.5f + (float)i;   /* variances > 0 */
    add(t, &n, "fc1.weight", 2, (const int64_t[]){10, 36});
    add(t, &n, "fc1.bias", 1, (const int64_t[]){10});
    /* special values in fc1.bias */
    static const uint32_t special[10] = {
        0x00000000u,  /* +0 */
        0x80000000u,  /* -0 */
        0x00000001u,  /* smallest denormal */
        0x807fffffu,  /* largest negative denormal */
        0x7f7fffffu,  /* FLT_MAX */
        0x00800000u,  /* FLT_MIN */
        0x7f800000u,  /* +inf */
        0xff800000u,  /* -inf */
        0x7fc00000u,  /* quiet NaN */
        0x7fa5a5a5u,  /* NaN with a payload */
    };
    for (int i = 0; i < 10; i++) t[n - 1].data[i] = bits_float(special[i]);
    add(t, &n, "temperature", 0, NULL);
    t[n - 1].data[0] = 1.5f;
    add(t, &n, "aux.w6", 6, (const int64_t[]){1, 2, 1, 3, 1, 2});
    add(t, &n, "aux.w8", 8, (const int64_t[]){1, 1, 2, 1, 1, 1, 3, 1});
    add(t, &n, "optim/conv1.weight", 4, (const int64_t[]){4, 1, 3, 3});
    add(t, &n, "optim/fc1.weight", 2, (const int64_t[]){10, 36});
    add(t, &n, "optim/fc1.bias", 1, (const int64_t[]){10});
    return n;
}

static cJSON *tensor_json(const char *name, int ndim, const int64_t *dims, const float *data,
                          size_t count)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    cJSON *d = cJSON_AddArrayToObject(o, "dims");
    for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(d, cJSON_CreateNumber((double)dims[i]));
    cJSON *b = cJSON_AddArrayToObject(o, "bits");
    for (size_t i = 0; i < count; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((double)float_bits(data[i])));
    return o;
}

static int print_doc(cJSON *doc)
{
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) { fprintf(stderr, "out of memory\n"); return 1; }
    puts(s);
    free(s);
    return 0;
}

static int do_write(const char *path)
{
    tensor t[MAX_T];
    size_t n = build(t);
    gpp_error err;
    int rc = 1;
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(SAMPLE_JSON);
    if (!w) { fprintf(stderr, "out of memory\n"); goto out; }
    for (size_t i = 0; i < n; i++)
        if (gpp_ckpt_writer_add(w, t[i].name, t[i].ndim, t[i].dims, t[i].data, &err) != 0) {
            fprintf(stderr, "ckpt_sample: %s\n", err.message);
            goto out;
        }
    if (gpp_ckpt_writer_write_file(w, path, &err) != 0) {
        fprintf(stderr, "ckpt_sample: %s\n", err.message);
        goto out;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "json", SAMPLE_JSON);
    cJSON_AddBoolToObject(doc, "has_optim", 1);
    cJSON *arr = cJSON_AddArrayToObject(doc, "tensors");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, tensor_json(t[i].name, t[i].ndim, t[i].dims, t[i].data,
                                              t[i].count));
    rc = print_doc(doc);
out:
    gpp_ckpt_writer_free(w);
    for (size_t i = 0; i < n; i++) free(t[i].data);
    return rc;
}

static int do_read(const char *path)
{
    gpp_ckpt *c = NULL;
    gpp_error err;
    int rc = gpp_ckpt_read_file(path, &c, &err);
    if (rc) {
        fprintf(stderr, "ckpt_sample: %s (%s): %s\n", gpp_strerror(rc), err.code, err.message);
        return 1;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "json", gpp_ckpt_json(c));
    cJSON_AddBoolToObject(doc, "has_optim", gpp_ckpt_has_optim(c));
    cJSON *arr = cJSON_AddArrayToObject(doc, "tensors");
    for (size_t i = 0; i < gpp_ckpt_tensor_count(c); i++) {
        const gpp_tensor_view *v = gpp_ckpt_tensor(c, i);
        cJSON_AddItemToArray(arr, tensor_json(v->name, v->ndim, v->dims, v->data, v->count));
    }
    gpp_ckpt_free(c);
    return print_doc(doc);
}

int main(int argc, char **argv)
{
    if (argc == 2 && argv[1][0] != '-') return do_write(argv[1]);
    if (argc == 3 && strcmp(argv[1], "--read") == 0) return do_read(argv[2]);
    fprintf(stderr, "usage: %s OUT.gppm | --read FILE\n", argv[0]);
    return 2;
}
