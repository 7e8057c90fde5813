/* Unit tests of the ONNX export (gpp/export.h): the produced bytes parse back
 * with protobuf-c (onnx__model_proto__unpack, generated from onnx.proto) and
 * hold the contract (names, dims, opset, operators, attributes, parameters
 * in place); bad checkpoints are refused with messages that name the fault;
 * the subcommand's argument handling.  Running the models is check_onnx.py's
 * job (ONNX Runtime against PyTorch). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpp/ckpt.h"
#include "gpp/export.h"
#include "onnx.pb-c.h"

/* ---- building checkpoints -------------------------------------------------- */

typedef struct tspec {
    const char *name;
    int ndim;
    int64_t dims[4];
} tspec;

static size_t tcount(const tspec *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->dims[i];
    return n;
}

/* A checkpoint with JSON `json` and tensors ts[0..n) (values i * 0.001 + k),
 * leaving out the one called `skip` (may be NULL); the file's bytes in
 * *bytes and *blen when bytes is not NULL. */
static gpp_ckpt *ckpt_make_bytes(const char *json, const tspec *ts, int n, const char *skip,
                                 uint8_t **bytes, size_t *blen)
{
    gpp_error err = {0};
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(json);
    assert_non_null(w);
    float **data = calloc((size_t)n, sizeof *data);
    assert_non_null(data);
    for (int k = 0; k < n; k++) {
        if (skip && strcmp(ts[k].name, skip) == 0) continue;
        size_t c = tcount(&ts[k]);
        data[k] = malloc(c * sizeof(float));
        assert_non_null(data[k]);
        for (size_t i = 0; i < c; i++) data[k][i] = (float)k + 0.001f * (float)(i % 997);
        assert_int_equal(gpp_ckpt_writer_add(w, ts[k].name, ts[k].ndim, ts[k].dims, data[k], &err), 0);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(gpp_ckpt_writer_write_buffer(w, &buf, &len, &err), 0);
    gpp_ckpt *ck = NULL;
    int rc = gpp_ckpt_read_buffer(buf, len, &ck, &err);
    if (rc != 0) fail_msg("read: %s", err.message);
    gpp_ckpt_writer_free(w);
    for (int k = 0; k < n; k++) free(data[k]);
    free(data);
    if (bytes) {
        *bytes = buf;
        *blen = len;
    } else {
        free(buf);
    }
    return ck;
}

static gpp_ckpt *ckpt_make(const char *json, const tspec *ts, int n, const char *skip)
{
    return ckpt_make_bytes(json, ts, n, skip, NULL, NULL);
}

/* A small LeNet: [1, 8, 8] -> conv 4 k3 -> maxpool 2 -> flatten -> fc 5 -> relu
 * -> fc 3 -> loss; %s is the "meta" object. */
#define TINY_NET                                                                          \
    "\"network\":{\"input\":[1,8,8],\"classes\":3,\"layers\":["                           \
    "{\"type\":\"conv\",\"name\":\"conv1\",\"out\":4,\"k\":3},"                           \
    "{\"type\":\"maxpool\",\"name\":\"pool1\",\"k\":2},"                                  \
    "{\"type\":\"flatten\",\"name\":\"flat\"},"                                          \
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":5},"                                      \
    "{\"type\":\"relu\",\"name\":\"relu1\"},"                                             \
    "{\"type\":\"fc\",\"name\":\"fc2\",\"out\":3},"                                      \
    "{\"type\":\"softmax-cross-entropy\",\"name\":\"loss\"}]}"

static const char tiny_norm_json[] =
    "{\"format\":\"gppm\"," TINY_NET ",\"meta\":{\"normalize\":{\"mean\":[0.25],\"std\":[0.5]}},"
    "\"state\":{}}";
static const char tiny_raw_json[] = "{\"format\":\"gppm\"," TINY_NET ",\"meta\":{},\"state\":{}}";

static const tspec tiny_tensors[] = {
    {"conv1.weight", 4, {4, 1, 3, 3}}, {"conv1.bias", 1, {4}},
    {"fc1.weight", 2, {5, 36}},        {"fc1.bias", 1, {5}},
    {"fc2.weight", 2, {3, 5}},         {"fc2.bias", 1, {3}},
    {"optim/fc2.weight", 2, {3, 5}},
};
#define N_TINY ((int)(sizeof tiny_tensors / sizeof tiny_tensors[0]))

/* ---- reading the ONNX back ----------------------------------------------- */

static Onnx__ModelProto *export_ok(const gpp_ckpt *ck, uint8_t **bytes, size_t *blen)
{
    gpp_error err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = gpp_onnx_export_buffer(ck, &buf, &len, &err);
    if (rc != 0) fail_msg("export: %s (%s)", err.message, err.field);
    assert_non_null(buf);
    assert_true(len > 0);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    assert_non_null(m);
    if (bytes) {
        *bytes = buf;
        *blen = len;
    } else {
        free(buf);
    }
    return m;
}

/* The node called `name`; the test fails when there is none. */
static const Onnx__NodeProto *node_named(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_node; i++)
        if (strcmp(g->node[i]->name, name) == 0) return g->node[i];
    fail_msg("no node called %s", name);
    abort();
}

static size_t count_op(const Onnx__GraphProto *g, const char *op)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n_node; i++) n += strcmp(g->node[i]->op_type, op) == 0;
    return n;
}

static const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (strcmp(n->attribute[i]->name, name) == 0) return n->attribute[i];
    return NULL;
}

/* The attribute called `name`; the test fails when there is none. */
static const Onnx__AttributeProto *attr_named(const Onnx__NodeProto *n, const char *name)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    if (a) return a;
    fail_msg("node %s has no attribute %s", n->name, name);
    abort();
}

static const Onnx__TensorProto *init_named(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (strcmp(g->initializer[i]->name, name) == 0) return g->initializer[i];
    return NULL;
}

/* The initializer called `name`; the test fails when there is none. */
static const Onnx__TensorProto *init_must(const Onnx__GraphProto *g, const char *name)
{
    const Onnx__TensorProto *t = init_named(g, name);
    if (t) return t;
    fail_msg("no initializer called %s", name);
    abort();
}

static void assert_ints(const Onnx__AttributeProto *a, size_t n, const int64_t *want)
{
    assert_non_null(a);
    assert_int_equal(a->type, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    assert_int_equal(a->n_ints, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(a->ints[i], want[i]);
}

static void assert_int_attr(const Onnx__NodeProto *n, const char *name, int64_t want)
{
    const Onnx__AttributeProto *a = attr_named(n, name);
    assert_int_equal(a->type, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    assert_int_equal(a->i, want);
}

/* Every node input is the graph input, an initializer or an earlier output;
 * the graph output is produced. */
static void assert_topological(const Onnx__GraphProto *g)
{
    for (size_t i = 0; i < g->n_node; i++) {
        for (size_t k = 0; k < g->node[i]->n_input; k++) {
            const char *in = g->node[i]->input[k];
            int ok = strcmp(in, "input") == 0 || init_named(g, in) != NULL;
            for (size_t j = 0; !ok && j < i; j++) ok = strcmp(g->node[j]->output[0], in) == 0;
            if (!ok) fail_msg("node %s: input %s comes from nowhere", g->node[i]->name, in);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(g->node[j]->output[0], g->node[i]->output[0]) == 0)
                fail_msg("value %s is produced twice", g->node[i]->output[0]);
    }
    int produced = 0;
    for (size_t i = 0; i < g->n_node; i++) produced |= strcmp(g->node[i]->output[0], "logits") == 0;
    assert_true(produced);
}

static void assert_dim_param(const Onnx__TensorShapeProto__Dimension *d, const char *p)
{
    assert_int_equal(d->value_case, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
    assert_string_equal(d->dim_param, p);
}

static void assert_dim_value(const Onnx__TensorShapeProto__Dimension *d, int64_t v)
{
    assert_int_equal(d->value_case, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE);
    assert_int_equal(d->dim_value, v);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_model_contract(void **state)
{
    (void)state;
    gpp_ckpt *ck = ckpt_make(tiny_norm_json, tiny_tensors, N_TINY, NULL);
    Onnx__ModelProto *m = export_ok(ck, NULL, NULL);
    assert_true(m->has_ir_version);
    assert_int_equal(m->ir_version, 7);
    assert_int_equal(m->n_opset_import, 1);
    assert_true(m->opset_import[0]->domain == NULL || m->opset_import[0]->domain[0] == '\0');
    assert_int_equal(m->opset_import[0]->version, 13);
    assert_string_equal(m->producer_name, "gppd");
    assert_non_null(m->producer_version);
    const Onnx__GraphProto *g = m->graph;
    assert_non_null(g);

    /* input "input" float32 [N, 1, 8, 8], output "logits" float32 [N, 3] */
    assert_int_equal(g->n_input, 1);
    assert_string_equal(g->input[0]->name, "input");
    const Onnx__TypeProto *t = g->input[0]->type;
    assert_int_equal(t->value_case, ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE);
    assert_int_equal(t->tensor_type->elem_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    const Onnx__TensorShapeProto *s = t->tensor_type->shape;
    assert_int_equal(s->n_dim, 4);
    assert_dim_param(s->dim[0], "N");
    assert_dim_value(s->dim[1], 1);
    assert_dim_value(s->dim[2], 8);
    assert_dim_value(s->dim[3], 8);
    assert_int_equal(g->n_output, 1);
    assert_string_equal(g->output[0]->name, "logits");
    s = g->output[0]->type->tensor_type->shape;
    assert_int_equal(s->n_dim, 2);
    assert_dim_param(s->dim[0], "N");
    assert_dim_value(s->dim[1], 3);

    /* Sub, Div, Conv, MaxPool, Flatten, Gemm, Relu, Gemm */
    static const char *const ops[] = {"Sub", "Div", "Conv", "MaxPool", "Flatten", "Gemm",
                                      "Relu", "Gemm"};
    assert_int_equal(g->n_node, sizeof ops / sizeof ops[0]);
    for (size_t i = 0; i < g->n_node; i++) assert_string_equal(g->node[i]->op_type, ops[i]);
    assert_string_equal(g->node[0]->input[0], "input");
    assert_string_equal(g->node[g->n_node - 1]->output[0], "logits");
    assert_topological(g);

    const Onnx__NodeProto *conv = node_named(g, "conv1");
    assert_non_null(conv);
    assert_int_equal(conv->n_input, 3);
    assert_string_equal(conv->input[1], "conv1.weight");
    assert_string_equal(conv->input[2], "conv1.bias");
    assert_ints(attr_named(conv, "kernel_shape"), 2, (const int64_t[]){3, 3});
    assert_ints(attr_named(conv, "strides"), 2, (const int64_t[]){1, 1});
    assert_ints(attr_named(conv, "pads"), 4, (const int64_t[]){0, 0, 0, 0});
    assert_int_attr(conv, "group", 1);
    const Onnx__NodeProto *pool = node_named(g, "pool1");
    assert_ints(attr_named(pool, "kernel_shape"), 2, (const int64_t[]){2, 2});
    assert_ints(attr_named(pool, "strides"), 2, (const int64_t[]){2, 2});
    assert_int_attr(pool, "ceil_mode", 0);
    assert_int_attr(node_named(g, "flat"), "axis", 1);
    const Onnx__NodeProto *fc1 = node_named(g, "fc1");
    assert_int_attr(fc1, "transB", 1);
    assert_int_equal(fc1->n_input, 3);
    assert_string_equal(fc1->input[0], "flat");

    /* parameters: the checkpoint's bytes under the checkpoint's names */
    for (int k = 0; k < N_TINY; k++) {
        const gpp_tensor_view *v = gpp_ckpt_find(ck, tiny_tensors[k].name);
        const Onnx__TensorProto *in = init_named(g, tiny_tensors[k].name);
        if (strncmp(tiny_tensors[k].name, "optim/", 6) == 0) {
            assert_null(in);
            continue;
        }
        assert_non_null(in);
        assert_int_equal(in->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        assert_int_equal(in->n_dims, (size_t)v->ndim);
        for (int d = 0; d < v->ndim; d++) assert_int_equal(in->dims[d], v->dims[d]);
        assert_true(in->has_raw_data);
        assert_int_equal(in->raw_data.len, v->count * sizeof(float));
        assert_memory_equal(in->raw_data.data, v->data, v->count * sizeof(float));
    }
    /* the normalisation constants, [1, C, 1, 1] */
    const Onnx__TensorProto *mean = init_must(g, "normalize:mean"),
                            *std = init_must(g, "normalize:std");
    assert_int_equal(mean->n_dims, 4);
    assert_int_equal(mean->dims[1], 1);
    float mv, sv;
    memcpy(&mv, mean->raw_data.data, sizeof mv);
    memcpy(&sv, std->raw_data.data, sizeof sv);
    assert_float_equal(mv, 0.25f, 0.0f);
    assert_float_equal(sv, 0.5f, 0.0f);
    assert_string_equal(g->node[0]->input[1], "normalize:mean");
    assert_string_equal(g->node[1]->input[1], "normalize:std");
    assert_string_equal(node_named(g, "conv1")->input[0], g->node[1]->output[0]);

    onnx__model_proto__free_unpacked(m, NULL);
    gpp_ckpt_free(ck);
}

static void test_no_normalize(void **state)
{
    (void)state;
    gpp_ckpt *ck = ckpt_make(tiny_raw_json, tiny_tensors, N_TINY, NULL);
    Onnx__ModelProto *m = export_ok(ck, NULL, NULL);
    const Onnx__GraphProto *g = m->graph;
    assert_string_equal(g->node[0]->op_type, "Conv");
    assert_string_equal(g->node[0]->input[0], "input");
    assert_int_equal(count_op(g, "Sub") + count_op(g, "Div") + count_op(g, "Mul") +
                     count_op(g, "Add"), 0);
    assert_null(init_named(g, "normalize:mean"));
    assert_int_equal(g->n_initializer, 6);
    onnx__model_proto__free_unpacked(m, NULL);
    gpp_ckpt_free(ck);
}

/* Every layer type: bn on 4-D and after an fc, avgpool with padding, a
 * global-avgpool into an fc, a 3-way concat, dropout, an fc without bias,
 * per-channel normalisation of 3 channels, conv after a flatten. */
static const char all_json[] =
    "{\"format\":\"gppm\",\"network\":{\"input\":[3,9,9],\"classes\":4,\"layers\":["
    "{\"type\":\"conv\",\"name\":\"c1\",\"out\":6,\"k\":3,\"stride\":2,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"b1\",\"eps\":0.001},"
    "{\"type\":\"relu\",\"name\":\"r1\"},"
    "{\"type\":\"avgpool\",\"name\":\"ap\",\"k\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"k\":3,\"stride\":1,\"pad\":1,\"inputs\":[\"r1\"]},"
    "{\"type\":\"conv\",\"name\":\"c2\",\"out\":2,\"k\":1,\"inputs\":[\"r1\"]},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"ap\",\"mp\",\"c2\"]},"
    "{\"type\":\"dropout\",\"name\":\"d1\",\"p\":0.2},"
    "{\"type\":\"global-avgpool\",\"name\":\"gap\"},"
    "{\"type\":\"fc\",\"name\":\"f1\",\"out\":7,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"b2\"},"
    "{\"type\":\"dropout\",\"name\":\"d2\"},"
    "{\"type\":\"conv\",\"name\":\"c3\",\"out\":4,\"k\":1},"
    "{\"type\":\"flatten\",\"name\":\"fl\"}]},"
    "\"meta\":{\"normalize\":{\"mean\":[0.1,0.2,0.3],\"std\":[0.4,0.5,0.6]}},\"state\":{}}";

static const tspec all_tensors[] = {
    {"c1.weight", 4, {6, 3, 3, 3}},
    {"b1.weight", 1, {6}}, {"b1.bias", 1, {6}}, {"b1.running_mean", 1, {6}},
    {"b1.running_var", 1, {6}},
    {"c2.weight", 4, {2, 6, 1, 1}}, {"c2.bias", 1, {2}},
    {"f1.weight", 2, {7, 14}},
    {"b2.weight", 1, {7}}, {"b2.bias", 1, {7}}, {"b2.running_mean", 1, {7}},
    {"b2.running_var", 1, {7}},
    {"c3.weight", 4, {4, 7, 1, 1}}, {"c3.bias", 1, {4}},
};
#define N_ALL ((int)(sizeof all_tensors / sizeof all_tensors[0]))

static void test_every_layer(void **state)
{
    (void)state;
    gpp_ckpt *ck = ckpt_make(all_json, all_tensors, N_ALL, NULL);
    Onnx__ModelProto *m = export_ok(ck, NULL, NULL);
    const Onnx__GraphProto *g = m->graph;
    assert_topological(g);
    assert_int_equal(count_op(g, "Dropout"), 0);
    assert_int_equal(count_op(g, "BatchNormalization"), 2);
    assert_int_equal(count_op(g, "Concat"), 1);
    assert_int_equal(count_op(g, "GlobalAveragePool"), 1);
    assert_int_equal(count_op(g, "Unsqueeze"), 1);   /* c3 after the fc */

    const Onnx__NodeProto *b1 = node_named(g, "b1");
    assert_int_equal(b1->n_input, 5);
    assert_string_equal(b1->input[3], "b1.running_mean");
    assert_string_equal(b1->input[4], "b1.running_var");
    const Onnx__AttributeProto *eps = attr_named(b1, "epsilon");
    assert_non_null(eps);
    assert_float_equal(eps->f, 0.001f, 1e-9f);
    assert_float_equal(attr_named(node_named(g, "b2"), "epsilon")->f, 1e-5f, 1e-12f);
    assert_string_equal(node_named(g, "b2")->input[0], "f1");

    const Onnx__NodeProto *ap = node_named(g, "ap");
    assert_string_equal(ap->op_type, "AveragePool");
    assert_int_attr(ap, "count_include_pad", 1);
    assert_ints(attr_named(ap, "pads"), 4, (const int64_t[]){1, 1, 1, 1});
    assert_string_equal(node_named(g, "mp")->op_type, "MaxPool");
    assert_null(attr_find(node_named(g, "mp"), "count_include_pad"));
    const Onnx__NodeProto *c1 = node_named(g, "c1");
    assert_int_equal(c1->n_input, 2);                 /* bias false */
    assert_ints(attr_named(c1, "strides"), 2, (const int64_t[]){2, 2});

    const Onnx__NodeProto *cat = node_named(g, "cat");
    assert_int_equal(cat->n_input, 3);
    assert_string_equal(cat->input[0], "ap");
    assert_string_equal(cat->input[1], "mp");
    assert_string_equal(cat->input[2], "c2");
    assert_int_attr(cat, "axis", 1);
    /* dropout passes "cat" on: the pooling reads it */
    assert_string_equal(node_named(g, "gap")->input[0], "cat");
    /* global-avgpool -> Flatten -> Gemm without bias */
    const Onnx__NodeProto *f1 = node_named(g, "f1");
    assert_string_equal(f1->op_type, "Gemm");
    assert_int_equal(f1->n_input, 2);
    const Onnx__NodeProto *ff = node_named(g, "f1:flatten");
    assert_non_null(ff);
    assert_string_equal(ff->input[0], "gap");
    assert_string_equal(f1->input[0], ff->output[0]);
    /* the final conv's 4-D output is flattened into the logits */
    assert_string_equal(node_named(g, "fl")->op_type, "Flatten");
    assert_string_equal(node_named(g, "fl")->output[0], "logits");
    const Onnx__TensorShapeProto *s = g->output[0]->type->tensor_type->shape;
    assert_dim_value(s->dim[1], 4);
    s = g->input[0]->type->tensor_type->shape;
    assert_dim_value(s->dim[1], 3);
    assert_dim_value(s->dim[2], 9);

    const Onnx__TensorProto *mean = init_must(g, "normalize:mean");
    assert_int_equal(mean->n_dims, 4);
    assert_int_equal(mean->dims[0], 1);
    assert_int_equal(mean->dims[1], 3);
    assert_int_equal(mean->dims[2], 1);
    float mv[3];
    assert_int_equal(mean->raw_data.len, sizeof mv);
    memcpy(mv, mean->raw_data.data, sizeof mv);
    assert_float_equal(mv[2], 0.3f, 0.0f);
    onnx__model_proto__free_unpacked(m, NULL);
    gpp_ckpt_free(ck);
}

/* The expected failure of exporting `json` with ts (minus `skip`). */
static void expect_refusal(const char *json, const tspec *ts, int n, const char *skip, int want_rc,
                           const char *field, const char *msg1, const char *msg2)
{
    gpp_ckpt *ck = ckpt_make(json, ts, n, skip);
    gpp_error err = {0};
    uint8_t *buf = (uint8_t *)&err;   /* must come back NULL */
    size_t len = 99;
    int rc = gpp_onnx_export_buffer(ck, &buf, &len, &err);
    assert_int_equal(rc, want_rc);
    assert_null(buf);
    assert_int_equal(len, 0);
    if (field) assert_string_equal(err.field, field);
    if (msg1 && !strstr(err.message, msg1)) fail_msg("message \"%s\" lacks \"%s\"", err.message, msg1);
    if (msg2 && !strstr(err.message, msg2)) fail_msg("message \"%s\" lacks \"%s\"", err.message, msg2);
    /* the file variant writes nothing */
    char path[] = "/tmp/gpp-export-test-XXXXXX";
    char *dir = mkdtemp(path);
    assert_non_null(dir);
    char out[128];
    snprintf(out, sizeof out, "%s/m.onnx", dir);
    assert_int_equal(gpp_onnx_export(ck, out, &err), want_rc);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0);
    assert_int_equal(rmdir(dir), 0);     /* empty: no temporary file left either */
    gpp_ckpt_free(ck);
}

static void test_missing_tensor(void **state)
{
    (void)state;
    expect_refusal(tiny_raw_json, tiny_tensors, N_TINY, "fc1.bias", GPP_ENOTFOUND,
                   "tensors.fc1.bias", "\"fc1.bias\" [5]", "does not hold");
    expect_refusal(all_json, all_tensors, N_ALL, "b2.running_var", GPP_ENOTFOUND,
                   "tensors.b2.running_var", "layer 10 (\"b2\", bn)", "b2.running_var");
}

static void test_unknown_layer(void **state)
{
    (void)state;
    static const char json[] =
        "{\"format\":\"gppm\",\"network\":{\"input\":[1,8,8],\"layers\":["
        "{\"type\":\"conv\",\"name\":\"conv1\",\"out\":4,\"k\":3},"
        "{\"type\":\"lstm\",\"name\":\"rnn\"}]},\"meta\":{},\"state\":{}}";
    expect_refusal(json, tiny_tensors, 2, NULL, GPP_EINVAL, "network.layers[1].type", "lstm",
                   "must be one of");
}

static void test_shape_mismatch(void **state)
{
    (void)state;
    tspec bad[N_TINY];
    memcpy(bad, tiny_tensors, sizeof bad);
    bad[0].dims[2] = bad[0].dims[3] = 5;   /* conv1 is k 3 */
    expect_refusal(tiny_raw_json, bad, N_TINY, NULL, GPP_EINVAL, "tensors.conv1.weight",
                   "has shape [4, 1, 5, 5]", "needs [4, 1, 3, 3]");
    memcpy(bad, tiny_tensors, sizeof bad);
    bad[2].dims[1] = 35;                   /* fc1 sees 4 x 3 x 3 = 36 inputs */
    expect_refusal(tiny_raw_json, bad, N_TINY, NULL, GPP_EINVAL, "tensors.fc1.weight",
                   "has shape [5, 35]", "needs [5, 36]");
}

static void test_bad_network(void **state)
{
    (void)state;
    /* no input shape */
    expect_refusal("{\"network\":{\"layers\":[{\"type\":\"fc\",\"name\":\"fc1\",\"out\":3}]}}",
                   tiny_tensors, 0, NULL, GPP_EINVAL, "network.input", "no \"input\"", NULL);
    /* classes disagree with the logits */
    expect_refusal("{\"network\":{\"input\":[1,2,2],\"classes\":4,\"layers\":"
                   "[{\"type\":\"fc\",\"name\":\"fc1\",\"out\":3}]}}",
                   (const tspec[]){{"fc1.weight", 2, {3, 4}}, {"fc1.bias", 1, {3}}}, 2, NULL,
                   GPP_EINVAL, "network.layers[0]", "3 logits", "4 classes");
    /* logits that are not one value per class */
    expect_refusal("{\"network\":{\"input\":[1,4,4],\"layers\":"
                   "[{\"type\":\"relu\",\"name\":\"r\"}]}}", tiny_tensors, 0, NULL, GPP_EINVAL,
                   "network.layers[0]", "1x4x4", "one value per class");
    /* a window larger than its input */
    expect_refusal("{\"network\":{\"input\":[1,2,2],\"layers\":[{\"type\":\"maxpool\","
                   "\"name\":\"p\",\"k\":3},{\"type\":\"fc\",\"name\":\"f\",\"out\":2}]}}",
                   tiny_tensors, 0, NULL, GPP_EINVAL, "network.layers[0]", "layer 0 (\"p\", maxpool)",
                   "larger than");
    /* a pool padded by more than half its window */
    expect_refusal("{\"network\":{\"input\":[1,4,4],\"layers\":[{\"type\":\"avgpool\","
                   "\"name\":\"p\",\"k\":2,\"pad\":2},{\"type\":\"fc\",\"name\":\"f\",\"out\":2}]}}",
                   tiny_tensors, 0, NULL, GPP_EINVAL, "network.layers[0]", "pad 2", NULL);
    /* no network at all is not a .gppm document */
    gpp_ckpt *ck = ckpt_make(tiny_raw_json, tiny_tensors, N_TINY, NULL);
    gpp_error err = {0};
    assert_int_equal(gpp_onnx_export_buffer(NULL, NULL, NULL, &err), GPP_EINVAL);
    gpp_ckpt_free(ck);
}

static void test_bad_normalize(void **state)
{
    (void)state;
    static const char three[] =
        "{\"format\":\"gppm\"," TINY_NET ",\"meta\":{\"normalize\":{\"mean\":[0.2],"
        "\"std\":[0.1,0.2,0.3]}}}";
    expect_refusal(three, tiny_tensors, N_TINY, NULL, GPP_EINVAL, "meta.normalize.std",
                   "1 number", "got 3");
    static const char zero[] =
        "{\"format\":\"gppm\"," TINY_NET ",\"meta\":{\"normalize\":{\"mean\":[0.2],"
        "\"std\":[0]}}}";
    expect_refusal(zero, tiny_tensors, N_TINY, NULL, GPP_EINVAL, "meta.normalize.std",
                   "above 0", NULL);
    static const char nomean[] =
        "{\"format\":\"gppm\"," TINY_NET ",\"meta\":{\"normalize\":{\"std\":[0.3]}}}";
    expect_refusal(nomean, tiny_tensors, N_TINY, NULL, GPP_EINVAL, "meta.normalize.mean",
                   NULL, NULL);
}

/* Names: a layer called "logits" that is not the output, and a dropout as
 * the last layer before the loss. */
static void test_names(void **state)
{
    (void)state;
    static const char json[] =
        "{\"network\":{\"input\":[1,2,2],\"classes\":2,\"layers\":["
        "{\"type\":\"fc\",\"name\":\"logits\",\"out\":3},"
        "{\"type\":\"fc\",\"name\":\"head\",\"out\":2},"
        "{\"type\":\"dropout\",\"name\":\"d\"},"
        "{\"type\":\"softmax-cross-entropy\",\"name\":\"loss\"}]}}";
    static const tspec ts[] = {{"logits.weight", 2, {3, 4}}, {"logits.bias", 1, {3}},
                               {"head.weight", 2, {2, 3}}, {"head.bias", 1, {2}}};
    gpp_ckpt *ck = ckpt_make(json, ts, 4, NULL);
    Onnx__ModelProto *m = export_ok(ck, NULL, NULL);
    const Onnx__GraphProto *g = m->graph;
    assert_topological(g);
    assert_string_equal(node_named(g, "logits")->output[0], "logits:out");
    assert_string_equal(node_named(g, "head")->input[0], "logits:out");
    assert_string_equal(node_named(g, "head")->output[0], "logits");
    /* [1, 2, 2] input: Flatten, Gemm, Gemm; the dropout adds nothing */
    assert_int_equal(g->n_node, 3);
    assert_string_equal(g->node[0]->op_type, "Flatten");
    assert_string_equal(node_named(g, "logits")->input[0], g->node[0]->output[0]);
    onnx__model_proto__free_unpacked(m, NULL);
    gpp_ckpt_free(ck);
}

static int run_main(int argc, const char *const *args)
{
    char *argv[8];
    for (int i = 0; i < argc; i++) argv[i] = strdup(args[i]);
    fflush(stdout);
    int rc = gpp_export_main(argc, argv);
    for (int i = 0; i < argc; i++) free(argv[i]);
    return rc;
}

static void test_file_and_main(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/gpp-export-test-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char gppm[128], onnx[128], onnx2[128];
    snprintf(gppm, sizeof gppm, "%s/tiny.gppm", dir);
    snprintf(onnx, sizeof onnx, "%s/tiny.onnx", dir);
    snprintf(onnx2, sizeof onnx2, "%s/tiny2.onnx", dir);
    uint8_t *ckbytes = NULL;
    size_t cklen = 0;
    gpp_ckpt *ck = ckpt_make_bytes(tiny_norm_json, tiny_tensors, N_TINY, NULL, &ckbytes, &cklen);
    FILE *f = fopen(gppm, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(ckbytes, 1, cklen, f), cklen);
    assert_int_equal(fclose(f), 0);

    /* the file variant writes exactly the buffer variant's bytes */
    gpp_error err = {0};
    assert_int_equal(gpp_onnx_export(ck, onnx, &err), 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    Onnx__ModelProto *m = export_ok(ck, &buf, &len);
    onnx__model_proto__free_unpacked(m, NULL);
    f = fopen(onnx, "rb");
    assert_non_null(f);
    uint8_t *file = malloc(len + 1);
    assert_non_null(file);
    assert_int_equal(fread(file, 1, len + 1, f), len);
    fclose(f);
    assert_memory_equal(file, buf, len);
    free(file);

    /* the subcommand */
    assert_int_equal(run_main(4, (const char *const[]){"export", gppm, "--onnx", onnx2}), 0);
    f = fopen(onnx2, "rb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(unlink(onnx2), 0);
    char opt[160];
    snprintf(opt, sizeof opt, "--onnx=%s", onnx2);
    assert_int_equal(run_main(3, (const char *const[]){"export", opt, gppm}), 0);
    assert_int_equal(unlink(onnx2), 0);
    assert_int_equal(run_main(2, (const char *const[]){"export", "--help"}), 0);
    assert_int_equal(run_main(2, (const char *const[]){"export", gppm}), 2);
    assert_int_equal(run_main(3, (const char *const[]){"export", gppm, "--onnx"}), 2);
    assert_int_equal(run_main(3, (const char *const[]){"export", "--onnx", onnx2}), 2);
    assert_int_equal(run_main(5, (const char *const[]){"export", gppm, gppm, "--onnx", onnx2}), 2);
    assert_int_equal(run_main(5, (const char *const[]){"export", gppm, "--bogus", "--onnx", onnx2}), 2);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.gppm", dir);
    assert_int_equal(run_main(4, (const char *const[]){"export", missing, "--onnx", onnx2}), 1);
    char baddir[160];
    snprintf(baddir, sizeof baddir, "%s/no/such/dir/x.onnx", dir);
    assert_int_equal(run_main(4, (const char *const[]){"export", gppm, "--onnx", baddir}), 1);
    struct stat st;
    assert_int_not_equal(stat(onnx2, &st), 0);

    free(buf);
    free(ckbytes);
    gpp_ckpt_free(ck);
    assert_int_equal(unlink(onnx), 0);
    assert_int_equal(unlink(gppm), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_contract),
        cmocka_unit_test(test_no_normalize),
        cmocka_unit_test(test_every_layer),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_unknown_layer),
        cmocka_unit_test(test_shape_mismatch),
        cmocka_unit_test(test_bad_network),
        cmocka_unit_test(test_bad_normalize),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_file_and_main),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
