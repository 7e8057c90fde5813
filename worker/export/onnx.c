/* .gppm -> ONNX (see gpp/export.h).  The graph is built as protobuf-c
 * messages (onnx.pb-c.h, generated from onnx.proto) in an arena and packed
 * by protobuf-c; the parameters are referenced in place in the checkpoint,
 * not copied. */
#include "gpp/export.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "export_internal.h"
#include "gpp/netdesc.h"
#include "gpp_config.h"
#include "onnx.pb-c.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ONNX raw_data is little-endian and the checkpoint is handed out in place"
#endif

/* ---- arena: every protobuf message, string and array of one export ------- */

#define ARENA_BLOCK ((size_t)64 << 10)
#define ARENA_ALIGN ((size_t)16)

typedef struct ablock {
    struct ablock *next;
    size_t cap, used;
} ablock;

#define ABLOCK_HDR ((sizeof(ablock) + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1))

typedef struct arena {
    ablock *head;
} arena;

/* n zeroed bytes, 16-aligned, or NULL when out of memory. */
static void *arena_alloc(arena *a, size_t n)
{
    if (n > SIZE_MAX / 2) return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (n == 0) n = ARENA_ALIGN;
    ablock *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(ABLOCK_HDR + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = (unsigned char *)b + ABLOCK_HDR + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(arena *a)
{
    while (a->head) {
        ablock *b = a->head;
        a->head = b->next;
        free(b);
    }
}

/* ---- the exporter ------------------------------------------------------ */

/* A value of the graph: a tensor [N, C] (rank 2) or [N, C, H, W] (rank 4;
 * rank 2 has H = W = 1). */
typedef struct val {
    const char *name;      /* ONNX value name, in the arena */
    int rank;              /* 2 or 4 */
    int C, H, W;
} val;

#define NODE_MAX_ATTRS 8
#define LAYER_MAX_NODES 20  /* concat: 16 Unsqueeze + Concat; fc: Flatten + Gemm */

typedef struct ex {
    arena a;
    const gpp_ckpt *ck;
    gpp_error *err;
    Onnx__GraphProto *g;
    size_t cap_node, cap_init;
    const char *axes23;    /* name of the int64 [2, 3] constant, once made */
    long long params;
} ex;

static int oom(ex *e)
{
    return gpp_error_set(e->err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
}

static char *astr(ex *e, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(&e->a, n);
    if (p) memcpy(p, s, n);
    return p;
}

static char *afmt(ex *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *afmt(ex *e, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return NULL;  /* names are <= 64 + suffix */
    return astr(e, buf);
}

/* Append a node op(ins[0..nin)) -> out, named `name`.  NULL when out of
 * memory (the caller reports it). */
static Onnx__NodeProto *node_add(ex *e, const char *op, const char *name, const char *out,
                                 int nin, const char *const *ins)
{
    Onnx__GraphProto *g = e->g;
    if (g->n_node == e->cap_node) return NULL;   /* capacity is counted up front */
    Onnx__NodeProto *n = arena_alloc(&e->a, sizeof *n);
    char **in = arena_alloc(&e->a, sizeof *in * (size_t)(nin > 0 ? nin : 1));
    char **outs = arena_alloc(&e->a, sizeof *outs);
    Onnx__AttributeProto **attrs = arena_alloc(&e->a, sizeof *attrs * NODE_MAX_ATTRS);
    if (!n || !in || !outs || !attrs) return NULL;
    *n = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    for (int i = 0; i < nin; i++)
        if (!(in[i] = astr(e, ins[i]))) return NULL;
    if (!(outs[0] = astr(e, out)) || !(n->name = astr(e, name)) || !(n->op_type = astr(e, op)))
        return NULL;
    n->n_input = (size_t)nin;
    n->input = in;
    n->n_output = 1;
    n->output = outs;
    n->attribute = attrs;
    g->node[g->n_node++] = n;
    return n;
}

static Onnx__AttributeProto *attr_add(ex *e, Onnx__NodeProto *n, const char *name,
                                      Onnx__AttributeProto__AttributeType type)
{
    if (!n || n->n_attribute == NODE_MAX_ATTRS) return NULL;
    Onnx__AttributeProto *a = arena_alloc(&e->a, sizeof *a);
    if (!a) return NULL;
    *a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
    if (!(a->name = astr(e, name))) return NULL;
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static int attr_int(ex *e, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr_add(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return -1;
    a->has_i = 1;
    a->i = v;
    return 0;
}

static int attr_float(ex *e, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr_add(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return -1;
    a->has_f = 1;
    a->f = v;
    return 0;
}

static int attr_ints(ex *e, Onnx__NodeProto *n, const char *name, size_t k, const int64_t *v)
{
    Onnx__AttributeProto *a = attr_add(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *p = arena_alloc(&e->a, sizeof *p * k);
    if (!a || !p) return -1;
    memcpy(p, v, sizeof *p * k);
    a->n_ints = k;
    a->ints = p;
    return 0;
}

/* A square window: kernel_shape [k, k], strides [s, s], pads [p, p, p, p]. */
static int attr_window(ex *e, Onnx__NodeProto *n, int k, int s, int p)
{
    const int64_t ks[2] = {k, k}, ss[2] = {s, s}, ps[4] = {p, p, p, p};
    if (attr_ints(e, n, "kernel_shape", 2, ks) || attr_ints(e, n, "strides", 2, ss) ||
        attr_ints(e, n, "pads", 4, ps))
        return -1;
    return 0;
}

/* Append an initializer.  `data` (count floats, little-endian) is referenced
 * in place when `copy` is 0 (it must outlive the packing), else copied. */
static int init_f32(ex *e, const char *name, int ndim, const int64_t *dims, const float *data,
                    size_t count, int copy)
{
    Onnx__GraphProto *g = e->g;
    if (g->n_initializer == e->cap_init) return -1;
    Onnx__TensorProto *t = arena_alloc(&e->a, sizeof *t);
    int64_t *d = arena_alloc(&e->a, sizeof *d * (size_t)(ndim > 0 ? ndim : 1));
    if (!t || !d) return -1;
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    if (!(t->name = astr(e, name))) return -1;
    memcpy(d, dims, sizeof *d * (size_t)ndim);
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->has_raw_data = 1;
    t->raw_data.len = count * sizeof(float);
    if (copy) {
        uint8_t *p = arena_alloc(&e->a, count * sizeof(float));
        if (!p) return -1;
        memcpy(p, data, count * sizeof(float));
        t->raw_data.data = p;
    } else {
        /* protobuf-c only reads it while packing; the cast drops const */
        t->raw_data.data = (uint8_t *)(uintptr_t)data;
    }
    g->initializer[g->n_initializer++] = t;
    return 0;
}

static int init_i64(ex *e, const char *name, size_t count, const int64_t *data)
{
    Onnx__GraphProto *g = e->g;
    if (g->n_initializer == e->cap_init) return -1;
    Onnx__TensorProto *t = arena_alloc(&e->a, sizeof *t);
    int64_t *d = arena_alloc(&e->a, sizeof *d);
    int64_t *v = arena_alloc(&e->a, sizeof *v * count);
    if (!t || !d || !v) return -1;
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    if (!(t->name = astr(e, name))) return -1;
    d[0] = (int64_t)count;
    memcpy(v, data, sizeof *v * count);
    t->n_dims = 1;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->n_int64_data = count;
    t->int64_data = v;
    g->initializer[g->n_initializer++] = t;
    return 0;
}

/* A float tensor value [N?, dims...]: dims[i] < 0 is the dynamic batch. */
static Onnx__ValueInfoProto *value_info(ex *e, const char *name, int nd, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = arena_alloc(&e->a, sizeof *v);
    Onnx__TypeProto *tp = arena_alloc(&e->a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = arena_alloc(&e->a, sizeof *tt);
    Onnx__TensorShapeProto *sh = arena_alloc(&e->a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dv = arena_alloc(&e->a, sizeof *dv * (size_t)nd);
    if (!v || !tp || !tt || !sh || !dv) return NULL;
    *v = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    *tp = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    *sh = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    for (int i = 0; i < nd; i++) {
        Onnx__TensorShapeProto__Dimension *d = arena_alloc(&e->a, sizeof *d);
        if (!d) return NULL;
        *d = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            if (!(d->dim_param = astr(e, GPP_ONNX_BATCH_PARAM))) return NULL;
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        dv[i] = d;
    }
    sh->n_dim = (size_t)nd;
    sh->dim = dv;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    if (!(v->name = astr(e, name))) return NULL;
    v->type = tp;
    return v;
}

/* ---- layers ---------------------------------------------------------------- */

/* Where we are, for messages: layer index, name, type. */
typedef struct lctx {
    int i;
    const char *name, *type;
    char field[64];        /* "network.layers[i]" */
} lctx;

static int layer_err(ex *e, const lctx *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int layer_err(ex *e, const lctx *l, int rc, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gpp_error_set(e->err, rc, rc == GPP_ENOMEM ? "out_of_memory" : "invalid_argument",
                         l->field, "layer %d (\"%s\", %s): %s", l->i, l->name, l->type, msg);
}

static void dims_text(char *buf, size_t n, int ndim, const int64_t *dims)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* The tensor "<layer>.<suffix>" with exactly `dims`, added as an
 * initializer; its name in *name.  GPP_ENOTFOUND / GPP_EINVAL naming it. */
static int need_tensor(ex *e, const lctx *l, const char *suffix, int ndim, const int64_t *dims,
                       int counts, const char **name)
{
    char tname[GPP_NET_NAME_MAX + 32], want[160], got[160], field[GPP_NET_NAME_MAX + 48];
    snprintf(tname, sizeof tname, "%s.%s", l->name, suffix);
    snprintf(field, sizeof field, "tensors.%s", tname);
    dims_text(want, sizeof want, ndim, dims);
    const gpp_tensor_view *t = gpp_ckpt_find(e->ck, tname);
    if (!t)
        return gpp_error_set(e->err, GPP_ENOTFOUND, "not_found", field,
                             "layer %d (\"%s\", %s) needs tensor \"%s\" %s, which the "
                             "checkpoint does not hold", l->i, l->name, l->type, tname, want);
    int same = t->ndim == ndim;
    for (int k = 0; same && k < ndim; k++) same = t->dims[k] == dims[k];
    if (!same) {
        dims_text(got, sizeof got, t->ndim, t->dims);
        return gpp_error_set(e->err, GPP_EINVAL, "invalid_argument", field,
                             "tensor \"%s\" has shape %s but layer %d (\"%s\", %s) needs %s",
                             tname, got, l->i, l->name, l->type, want);
    }
    if (init_f32(e, tname, ndim, dims, t->data, t->count, 0) != 0) return oom(e);
    if (counts) e->params += (long long)t->count;
    *name = e->g->initializer[e->g->n_initializer - 1]->name;
    return 0;
}

/* The value name a layer's output gets: its own name, unless that is
 * taken by a tensor or by the graph output. */
static const char *out_name(ex *e, const char *layer)
{
    if (strcmp(layer, GPP_ONNX_OUTPUT_NAME) == 0 || gpp_ckpt_find(e->ck, layer))
        return afmt(e, "%s:out", layer);
    return astr(e, layer);
}

/* x as a 4-D value: itself, or Unsqueeze(x, axes [2, 3]) for [N, C]. */
static int to4d(ex *e, const lctx *l, const val *x, val *out, int k)
{
    if (x->rank == 4) {
        *out = *x;
        return 0;
    }
    if (!e->axes23) {
        static const int64_t axes[2] = {2, 3};
        if (init_i64(e, "gppd:axes23", 2, axes) != 0) return oom(e);
        e->axes23 = e->g->initializer[e->g->n_initializer - 1]->name;
    }
    const char *name = afmt(e, "%s:4d%d", l->name, k);
    if (!name || !node_add(e, "Unsqueeze", name, name, 2, (const char *const[]){x->name, e->axes23}))
        return oom(e);
    *out = (val){.name = name, .rank = 4, .C = x->C, .H = 1, .W = 1};
    return 0;
}

static int json_int(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

/* Output side of a window: (n + 2p - k) / s + 1, or GPP_EINVAL. */
static int window_out(ex *e, const lctx *l, int n, int k, int s, int p, const char *what,
                      int *out)
{
    if (n + 2 * p < k)
        return layer_err(e, l, GPP_EINVAL, "its %dx%d window is larger than its %s input "
                         "(%d with padding %d)", k, k, what, n, p);
    *out = (n + 2 * p - k) / s + 1;
    return 0;
}

static int layer_conv(ex *e, const lctx *l, const cJSON *js, const val *x, val *y)
{
    val x4;
    int rc, oc = json_int(js, "out"), k = json_int(js, "k"), s = json_int(js, "stride"),
        p = json_int(js, "pad"), bias = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(js, "bias"));
    const char *w = NULL, *b = NULL;
    int oh = 0, ow = 0;
    if ((rc = window_out(e, l, x->H, k, s, p, "height", &oh)) != 0 ||
        (rc = window_out(e, l, x->W, k, s, p, "width", &ow)) != 0)
        return rc;
    const int64_t wd[4] = {oc, x->C, k, k}, bd[1] = {oc};
    if ((rc = need_tensor(e, l, "weight", 4, wd, 1, &w)) != 0) return rc;
    if (bias && (rc = need_tensor(e, l, "bias", 1, bd, 1, &b)) != 0) return rc;
    if ((rc = to4d(e, l, x, &x4, 0)) != 0) return rc;
    const char *out = out_name(e, l->name);
    Onnx__NodeProto *n = out ? node_add(e, "Conv", l->name, out, bias ? 3 : 2,
                                        (const char *const[]){x4.name, w, b}) : NULL;
    const int64_t one[2] = {1, 1};
    if (!n || attr_window(e, n, k, s, p) || attr_ints(e, n, "dilations", 2, one) ||
        attr_int(e, n, "group", 1))
        return oom(e);
    *y = (val){.name = out, .rank = 4, .C = oc, .H = oh, .W = ow};
    return 0;
}

static int layer_bn(ex *e, const lctx *l, const cJSON *js, const val *x, val *y)
{
    int rc;
    const char *t[4] = {0};
    static const char *const sfx[4] = {"weight", "bias", "running_mean", "running_var"};
    const int64_t d[1] = {x->C};
    for (int k = 0; k < 4; k++)
        if ((rc = need_tensor(e, l, sfx[k], 1, d, k < 2, &t[k])) != 0) return rc;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(js, "eps");
    const char *out = out_name(e, l->name);
    Onnx__NodeProto *n = out ? node_add(e, "BatchNormalization", l->name, out, 5,
                                        (const char *const[]){x->name, t[0], t[1], t[2], t[3]})
                             : NULL;
    if (!n || attr_float(e, n, "epsilon", cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-5f))
        return oom(e);
    *y = *x;
    y->name = out;
    return 0;
}

static int layer_pool(ex *e, const lctx *l, const cJSON *js, int avg, const val *x, val *y)
{
    val x4;
    int rc, k = json_int(js, "k"), s = json_int(js, "stride"), p = json_int(js, "pad"), oh = 0, ow = 0;
    if (p > k / 2)
        return layer_err(e, l, GPP_EINVAL, "pad %d is more than half the window %d", p, k);
    if ((rc = window_out(e, l, x->H, k, s, p, "height", &oh)) != 0 ||
        (rc = window_out(e, l, x->W, k, s, p, "width", &ow)) != 0)
        return rc;
    if ((rc = to4d(e, l, x, &x4, 0)) != 0) return rc;
    const char *out = out_name(e, l->name);
    Onnx__NodeProto *n = out ? node_add(e, avg ? "AveragePool" : "MaxPool", l->name, out, 1,
                                        (const char *const[]){x4.name}) : NULL;
    if (!n || attr_window(e, n, k, s, p) || attr_int(e, n, "ceil_mode", 0) ||
        (avg && attr_int(e, n, "count_include_pad", 1)))
        return oom(e);
    *y = (val){.name = out, .rank = 4, .C = x->C, .H = oh, .W = ow};
    return 0;
}

/* [N, C, H, W] -> [N, C*H*W] as value `name`. */
static int flatten(ex *e, const lctx *l, const char *node, const char *name, const val *x,
                   val *y)
{
    if ((long long)x->C * x->H * x->W > INT_MAX)
        return layer_err(e, l, GPP_EINVAL, "%dx%dx%d values per sample are too many",
                         x->C, x->H, x->W);
    if (!name || !node_add(e, "Flatten", node, name, 1, (const char *const[]){x->name}) ||
        attr_int(e, e->g->node[e->g->n_node - 1], "axis", 1))
        return oom(e);
    *y = (val){.name = name, .rank = 2, .C = x->C * x->H * x->W, .H = 1, .W = 1};
    return 0;
}

static int layer_fc(ex *e, const lctx *l, const cJSON *js, const val *x, val *y)
{
    int rc, out_n = json_int(js, "out"),
        bias = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(js, "bias"));
    long long in_n = (long long)x->C * x->H * x->W;
    if (in_n > INT_MAX)
        return layer_err(e, l, GPP_EINVAL, "%lld inputs are too many", in_n);
    const char *w = NULL, *b = NULL;
    const int64_t wd[2] = {out_n, in_n}, bd[1] = {out_n};
    if ((rc = need_tensor(e, l, "weight", 2, wd, 1, &w)) != 0) return rc;
    if (bias && (rc = need_tensor(e, l, "bias", 1, bd, 1, &b)) != 0) return rc;
    val x2 = *x;
    if (x->rank == 4) {
        char node[GPP_NET_NAME_MAX + 16];
        snprintf(node, sizeof node, "%s:flatten", l->name);
        if ((rc = flatten(e, l, node, afmt(e, "%s:flat", l->name), x, &x2)) != 0) return rc;
    }
    const char *out = out_name(e, l->name);
    Onnx__NodeProto *n = out ? node_add(e, "Gemm", l->name, out, bias ? 3 : 2,
                                        (const char *const[]){x2.name, w, b}) : NULL;
    if (!n || attr_int(e, n, "transB", 1)) return oom(e);
    *y = (val){.name = out, .rank = 2, .C = out_n, .H = 1, .W = 1};
    return 0;
}

static int layer_concat(ex *e, const lctx *l, int nin, const val *const *xs, val *y)
{
    const char *names[16];
    int rank = 2, C = 0, rc;
    for (int k = 0; k < nin; k++) {
        if (xs[k]->H != xs[0]->H || xs[k]->W != xs[0]->W)
            return layer_err(e, l, GPP_EINVAL, "input %d is %dx%d but input 0 is %dx%d "
                             "(a concat joins inputs of the same height and width)",
                             k, xs[k]->H, xs[k]->W, xs[0]->H, xs[0]->W);
        if (xs[k]->rank == 4) rank = 4;
        if ((long long)C + xs[k]->C > INT_MAX)
            return layer_err(e, l, GPP_EINVAL, "too many channels");
        C += xs[k]->C;
    }
    for (int k = 0; k < nin; k++) {
        val v = *xs[k];
        if (rank == 4 && (rc = to4d(e, l, xs[k], &v, k)) != 0) return rc;
        names[k] = v.name;
    }
    const char *out = out_name(e, l->name);
    Onnx__NodeProto *n = out ? node_add(e, "Concat", l->name, out, nin, names) : NULL;
    if (!n || attr_int(e, n, "axis", 1)) return oom(e);
    *y = (val){.name = out, .rank = rank, .C = C, .H = xs[0]->H, .W = xs[0]->W};
    return 0;
}

/* ---- normalisation (meta.normalize) ------------------------------------ */

/* Read meta.normalize.{mean,std} into m[C], s[C]; *present 0 when absent. */
static int read_normalize(ex *e, const cJSON *doc, int C, float *m, float *s, int *present)
{
    *present = 0;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
    const cJSON *nz = cJSON_IsObject(meta) ? cJSON_GetObjectItemCaseSensitive(meta, "normalize")
                                           : NULL;
    if (!nz || cJSON_IsNull(nz)) return 0;
    if (!cJSON_IsObject(nz))
        return gpp_error_set(e->err, GPP_EINVAL, "invalid_argument", "meta.normalize",
                             "meta.normalize must be an object {\"mean\": [...], \"std\": [...]}");
    static const char *const keys[2] = {"mean", "std"};
    float *dst[2] = {m, s};
    for (int k = 0; k < 2; k++) {
        char field[32];
        snprintf(field, sizeof field, "meta.normalize.%s", keys[k]);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(nz, keys[k]);
        int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
        if (n != C && n != 1)
            return gpp_error_set(e->err, GPP_EINVAL, "invalid_argument", field,
                                 "%s must be an array of %d number%s (one per input channel) "
                                 "or of one, got %s%d", field, C, C == 1 ? "" : "s",
                                 n < 0 ? "no array, " : "", n < 0 ? 0 : n);
        int i = 0;
        for (const cJSON *c = a->child; c; c = c->next, i++) {
            double v = cJSON_IsNumber(c) ? c->valuedouble : NAN;
            if (!isfinite(v) || (k == 1 && !(v > 0)) || fabs(v) > 1e30)
                return gpp_error_set(e->err, GPP_EINVAL, "invalid_argument", field,
                                     "%s[%d] must be a finite number%s", field, i,
                                     k == 1 ? " above 0" : "");
            dst[k][i] = (float)v;
        }
        for (int c = n; c < C; c++) dst[k][c] = dst[k][0];
    }
    *present = 1;
    return 0;
}

/* ---- the graph ------------------------------------------------------------ */

typedef struct lay {
    const cJSON *js;
    const char *name, *type;
} lay;

static int find_layer(const lay *ls, int n, const char *name)
{
    if (strcmp(name, "input") == 0) return -1;
    for (int j = 0; j < n; j++)
        if (strcmp(ls[j].name, name) == 0) return j;
    return -2;
}

static int graph_build(ex *e, const cJSON *doc, gpp__onnx_stats *st)
{
    int rc = 0, n = 0;
    cJSON *net = NULL;
    lay *ls = NULL;
    val *vals = NULL;
    float *nm = NULL;
    const cJSON *jnet = cJSON_GetObjectItemCaseSensitive(doc, "network");

    if (!cJSON_IsObject(jnet)) {
        rc = gpp_error_set(e->err, GPP_EFORMAT, "malformed", "network",
                           "the checkpoint has no \"network\" object");
        goto done;
    }
    if (!(net = gpp_netdesc_canonical(jnet, "network", e->err))) {
        rc = e->err && strcmp(e->err->code, "out_of_memory") == 0 ? GPP_ENOMEM : GPP_EINVAL;
        goto done;
    }
    const cJSON *jin = cJSON_GetObjectItemCaseSensitive(net, "input");
    if (!cJSON_IsArray(jin)) {
        rc = gpp_error_set(e->err, GPP_EINVAL, "invalid_argument", "network.input",
                           "the network has no \"input\" [C, H, W]: the ONNX input shape "
                           "cannot be known");
        goto done;
    }
    int C = (int)cJSON_GetArrayItem(jin, 0)->valuedouble, H = (int)cJSON_GetArrayItem(jin, 1)->valuedouble,
        W = (int)cJSON_GetArrayItem(jin, 2)->valuedouble;
    int classes = json_int(net, "classes");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(net, "layers");
    n = cJSON_GetArraySize(layers);

    /* capacity: every layer adds at most LAYER_MAX_NODES nodes and 4
     * initializers, plus normalisation (2 + 2), logits (1) and axes (1) */
    e->cap_node = (size_t)n * LAYER_MAX_NODES + 4;
    e->cap_init = (size_t)n * 4 + 4;
    ls = calloc((size_t)n, sizeof *ls);
    vals = calloc((size_t)n + 1, sizeof *vals);
    nm = calloc(2 * (size_t)C, sizeof *nm);
    e->g->node = arena_alloc(&e->a, sizeof *e->g->node * e->cap_node);
    e->g->initializer = arena_alloc(&e->a, sizeof *e->g->initializer * e->cap_init);
    if (!ls || !vals || !nm || !e->g->node || !e->g->initializer) { rc = oom(e); goto done; }
    int i = 0;
    for (const cJSON *l = layers->child; l; l = l->next, i++) {
        ls[i].js = l;
        ls[i].name = cJSON_GetObjectItemCaseSensitive(l, "name")->valuestring;
        ls[i].type = cJSON_GetObjectItemCaseSensitive(l, "type")->valuestring;
    }

    /* the input, normalised when the checkpoint says how */
    int normalized = 0;
    if ((rc = read_normalize(e, doc, C, nm, nm + C, &normalized)) != 0) goto done;
    vals[0] = (val){.name = GPP_ONNX_INPUT_NAME, .rank = 4, .C = C, .H = H, .W = W};
    if (normalized) {
        const int64_t d[4] = {1, C, 1, 1};
        if (init_f32(e, "normalize:mean", 4, d, nm, (size_t)C, 1) ||
            init_f32(e, "normalize:std", 4, d, nm + C, (size_t)C, 1) ||
            !node_add(e, "Sub", "normalize:sub", "input:centred", 2,
                      (const char *const[]){GPP_ONNX_INPUT_NAME, "normalize:mean"}) ||
            !node_add(e, "Div", "normalize:div", "input:normalized", 2,
                      (const char *const[]){"input:centred", "normalize:std"})) {
            rc = oom(e);
            goto done;
        }
        vals[0].name = "input:normalized";
    }

    /* the layers */
    int logits = n - 1;    /* index into vals - 1 (-1: the input) */
    for (i = 0; i < n; i++) {
        lctx l = {.i = i, .name = ls[i].name, .type = ls[i].type};
        snprintf(l.field, sizeof l.field, "network.layers[%d]", i);
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(ls[i].js, "inputs");
        const val *xs[16];
        int nin = 0;
        for (const cJSON *s = ins->child; s && nin < 16; s = s->next) {
            int j = find_layer(ls, i, s->valuestring);
            if (j == -2) {   /* canonical form guarantees it; belt and braces */
                rc = layer_err(e, &l, GPP_EINVAL, "input \"%s\" is not an earlier layer",
                               s->valuestring);
                goto done;
            }
            if (j >= 0 && strcmp(ls[j].type, "softmax-cross-entropy") == 0) {
                rc = layer_err(e, &l, GPP_EINVAL, "the loss cannot feed a layer");
                goto done;
            }
            xs[nin++] = &vals[j + 1];
        }
        const val *x = xs[0];
        val *y = &vals[i + 1];
        const char *t = ls[i].type;
        if (strcmp(t, "conv") == 0) {
            rc = layer_conv(e, &l, ls[i].js, x, y);
        } else if (strcmp(t, "bn") == 0) {
            rc = layer_bn(e, &l, ls[i].js, x, y);
        } else if (strcmp(t, "relu") == 0) {
            const char *out = out_name(e, l.name);
            if (!out || !node_add(e, "Relu", l.name, out, 1, (const char *const[]){x->name}))
                rc = oom(e);
            *y = *x;
            y->name = out;
        } else if (strcmp(t, "maxpool") == 0 || strcmp(t, "avgpool") == 0) {
            rc = layer_pool(e, &l, ls[i].js, t[0] == 'a', x, y);
        } else if (strcmp(t, "global-avgpool") == 0) {
            if (x->rank == 2) {
                *y = *x;     /* [N, C] is [N, C, 1, 1]: the mean of one value */
            } else {
                const char *out = out_name(e, l.name);
                if (!out || !node_add(e, "GlobalAveragePool", l.name, out, 1,
                                      (const char *const[]){x->name}))
                    rc = oom(e);
                *y = (val){.name = out, .rank = 4, .C = x->C, .H = 1, .W = 1};
            }
        } else if (strcmp(t, "fc") == 0) {
            rc = layer_fc(e, &l, ls[i].js, x, y);
        } else if (strcmp(t, "concat") == 0) {
            rc = layer_concat(e, &l, nin, xs, y);
        } else if (strcmp(t, "flatten") == 0) {
            if (x->rank == 2) *y = *x;
            else rc = flatten(e, &l, l.name, out_name(e, l.name), x, y);
        } else if (strcmp(t, "dropout") == 0) {
            *y = *x;         /* identity at inference */
        } else if (strcmp(t, "softmax-cross-entropy") == 0) {
            if (i != n - 1) {
                rc = layer_err(e, &l, GPP_EINVAL, "softmax-cross-entropy must be the last layer");
                goto done;
            }
            *y = *x;
            logits = find_layer(ls, i, ins->child->valuestring);
        } else {
            rc = layer_err(e, &l, GPP_EINVAL, "layer type \"%s\" cannot be exported to ONNX", t);
        }
        if (rc != 0) goto done;
    }

    /* the logits: [N, classes] named "logits" */
    val *lv = &vals[logits + 1];
    lctx ll = {.i = logits, .name = logits >= 0 ? ls[logits].name : "input",
               .type = logits >= 0 ? ls[logits].type : "input"};
    if (logits >= 0) snprintf(ll.field, sizeof ll.field, "network.layers[%d]", logits);
    else snprintf(ll.field, sizeof ll.field, "network");
    if (lv->H != 1 || lv->W != 1) {
        rc = layer_err(e, &ll, GPP_EINVAL, "the logits must be one value per class, but this "
                       "layer gives %dx%dx%d (add a flatten or an fc)", lv->C, lv->H, lv->W);
        goto done;
    }
    if (classes > 0 && lv->C != classes) {
        rc = layer_err(e, &ll, GPP_EINVAL, "gives %d logits but the network has %d classes",
                       lv->C, classes);
        goto done;
    }
    const char *produced = NULL;   /* lv's name if a node outputs it */
    for (size_t k = 0; k < e->g->n_node; k++)
        if (strcmp(e->g->node[k]->output[0], lv->name) == 0) produced = lv->name;
    if (lv->rank == 4) {
        val flat;
        if ((rc = flatten(e, &ll, "logits:flatten", GPP_ONNX_OUTPUT_NAME, lv, &flat)) != 0)
            goto done;
    } else if (produced && strcmp(produced, "input:normalized") != 0) {
        /* rename the value everywhere */
        char *nn = astr(e, GPP_ONNX_OUTPUT_NAME);
        if (!nn) { rc = oom(e); goto done; }
        for (size_t k = 0; k < e->g->n_node; k++) {
            Onnx__NodeProto *nd = e->g->node[k];
            for (size_t q = 0; q < nd->n_input; q++)
                if (strcmp(nd->input[q], produced) == 0) nd->input[q] = nn;
            if (strcmp(nd->output[0], produced) == 0) nd->output[0] = nn;
        }
    } else if (!node_add(e, "Identity", "logits:identity", GPP_ONNX_OUTPUT_NAME, 1,
                         (const char *const[]){lv->name})) {
        rc = oom(e);
        goto done;
    }

    /* graph input and output */
    const int64_t din[4] = {-1, C, H, W}, dout[2] = {-1, lv->C};
    Onnx__ValueInfoProto *vi = value_info(e, GPP_ONNX_INPUT_NAME, 4, din);
    Onnx__ValueInfoProto *vo = value_info(e, GPP_ONNX_OUTPUT_NAME, 2, dout);
    Onnx__ValueInfoProto **pi = arena_alloc(&e->a, sizeof *pi), **po = arena_alloc(&e->a, sizeof *po);
    if (!vi || !vo || !pi || !po) { rc = oom(e); goto done; }
    pi[0] = vi;
    po[0] = vo;
    e->g->n_input = 1;
    e->g->input = pi;
    e->g->n_output = 1;
    e->g->output = po;
    if (st) {
        *st = (gpp__onnx_stats){.nodes = e->g->n_node, .initializers = e->g->n_initializer,
                                .params = e->params, .C = C, .H = H, .W = W, .classes = lv->C,
                                .normalized = normalized};
    }
done:
    free(nm);
    free(vals);
    free(ls);
    cJSON_Delete(net);
    return rc;
}

/* gpp__onnx_build: see export_internal.h. */
int gpp__onnx_build(const gpp_ckpt *ck, uint8_t **buf, size_t *len, gpp__onnx_stats *st,
                    gpp_error *err)
{
    ex e = {.ck = ck, .err = err};
    cJSON *doc = NULL;
    int rc = 0;
    if (buf) *buf = NULL;
    if (len) *len = 0;
    if (!ck || !buf || !len)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "",
                             "gpp_onnx_export: NULL checkpoint or output");
    if (!(doc = cJSON_Parse(gpp_ckpt_json(ck)))) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "the checkpoint's JSON document "
                           "does not parse");
        goto done;
    }

    Onnx__ModelProto *m = arena_alloc(&e.a, sizeof *m);
    Onnx__GraphProto *g = arena_alloc(&e.a, sizeof *g);
    Onnx__OperatorSetIdProto *ops = arena_alloc(&e.a, sizeof *ops);
    Onnx__OperatorSetIdProto **opsv = arena_alloc(&e.a, sizeof *opsv);
    if (!m || !g || !ops || !opsv) { rc = oom(&e); goto done; }
    *m = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
    *g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    *ops = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
    e.g = g;
    if ((rc = graph_build(&e, doc, st)) != 0) goto done;

    ops->domain = astr(&e, "");
    ops->has_version = 1;
    ops->version = GPP_ONNX_OPSET;
    opsv[0] = ops;
    m->has_ir_version = 1;
    m->ir_version = GPP_ONNX_IR_VERSION;
    m->n_opset_import = 1;
    m->opset_import = opsv;
    m->producer_name = astr(&e, GPP_ONNX_PRODUCER);
    m->producer_version = astr(&e, GPP_VERSION);
    m->doc_string = astr(&e, "A network exported by gppd from a .gppm checkpoint. input: float32 "
                             "[N, C, H, W], pixel values in [0, 1] (normalisation, if any, is "
                             "part of the graph); logits: float32 [N, classes], before softmax.");
    g->name = astr(&e, "gppd");
    m->graph = g;
    if (!ops->domain || !m->producer_name || !m->producer_version || !m->doc_string || !g->name) {
        rc = oom(&e);
        goto done;
    }

    size_t size = onnx__model_proto__get_packed_size(m);
    if (size > GPP_ONNX_MAX_BYTES) {
        rc = gpp_error_set(err, GPP_ETOOBIG, "too_large", "", "the ONNX model would be %zu "
                           "bytes, over the 2 GiB protobuf limit", size);
        goto done;
    }
    *buf = malloc(size ? size : 1);
    if (!*buf) { rc = oom(&e); goto done; }
    *len = onnx__model_proto__pack(m, *buf);
    if (*len != size) {   /* protobuf-c packs exactly get_packed_size bytes */
        free(*buf);
        *buf = NULL;
        *len = 0;
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "protobuf-c packed %zu bytes, "
                           "expected %zu", *len, size);
    }
done:
    cJSON_Delete(doc);
    arena_free(&e.a);
    return rc;
}

/* gpp__onnx_write_file: see export_internal.h. */
int gpp__onnx_write_file(const char *path, const uint8_t *buf, size_t len, gpp_error *err)
{
    char tmp[PATH_MAX + 32], dir[PATH_MAX];
    int fd = -1, rc = 0;
    if (!path || !*path)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "no output path");
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "output path too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return gpp_error_set(err, GPP_EIO, "io_error", "", "cannot create %s: %s", tmp,
                             strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot write %s: %s", tmp,
                               w < 0 ? strerror(errno) : "short write");
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot fsync %s: %s", tmp,
                           strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot close %s: %s", tmp,
                           strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
        goto fail;
    }
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "wrote %s but cannot fsync its "
                           "directory %s: %s", path, dir, strerror(errno));
    }
    if (dfd >= 0) close(dfd);
    return rc;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return rc;
}

/* gpp_onnx_export_buffer: see gpp/export.h. */
int gpp_onnx_export_buffer(const gpp_ckpt *ck, uint8_t **buf, size_t *len, gpp_error *err)
{
    return gpp__onnx_build(ck, buf, len, NULL, err);
}

/* gpp_ckpt_check: see gpp/export.h (the export, with its bytes dropped). */
int gpp_ckpt_check(const gpp_ckpt *ck, gpp_model_info *info, gpp_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    gpp__onnx_stats st = {0};
    int rc = gpp__onnx_build(ck, &buf, &len, &st, err);
    free(buf);
    if (rc == 0 && info)
        *info = (gpp_model_info){.params = st.params, .C = st.C, .H = st.H, .W = st.W,
                                 .classes = st.classes, .nodes = st.nodes};
    return rc;
}

/* gpp_onnx_export: see gpp/export.h. */
int gpp_onnx_export(const gpp_ckpt *ck, const char *out_path, gpp_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = gpp__onnx_build(ck, &buf, &len, NULL, err);
    if (rc == 0) rc = gpp__onnx_write_file(out_path, buf, len, err);
    free(buf);
    return rc;
}
