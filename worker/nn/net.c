/* The network: built from its description, shapes inferred, one parameter
 * block (and gradient and momentum blocks of the same layout), buffers
 * reserved once per batch size, forward, backward, SGD. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

#define RNG_STREAM_INIT 0x494e4954ULL      /* "INIT" */
#define RNG_STREAM_DROPOUT 0x44524f50ULL   /* "DROP" */
#define MAX_SAMPLE_FLOATS ((long long)1 << 28)
#define MAX_PARAMS ((long long)1 << 31)

static const char *const op_names[NN_OP_COUNT] = {
    "input", "conv", "bn", "relu", "maxpool", "avgpool", "global-avgpool", "fc",
    "concat", "flatten", "dropout", "softmax-cross-entropy",
};

/* nn_op_name: see gpp/nn.h. */
const char *nn_op_name(nn_op op)
{
    return op >= 0 && op < NN_OP_COUNT ? op_names[op] : "?";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Allocate `bytes` zeroed and touched, on huge pages where the kernel
 * gives them (fresh small pages cost ~16 us each on first touch here). */
static void *alloc_touched(size_t bytes)
{
    if (bytes == 0) bytes = 64;
    size_t align = bytes >= ((size_t)2 << 20) ? ((size_t)2 << 20) : 64;
    bytes = (bytes + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (align > 64) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    memset(p, 0, bytes);
    return p;
}

/* ---- device coherence ---------------------------------------------------------- */

/* Which copy of the parameter blocks is current (device contexts). */
struct nn_coherence {
    int dev_newer;             /* device work changed the blocks since the last download */
    int host_dirty;            /* host code may have written the mirrors: upload first */
};

static void blocks_download(const nn_net *net)
{
    nn_ctx *ctx = net->ctx;
    ctx->be->download(ctx, net->hparams, net->params, sizeof(float) * net->n_params);
    ctx->be->download(ctx, net->hgrads, net->grads, sizeof(float) * net->n_params);
    ctx->be->download(ctx, net->hmom, net->mom, sizeof(float) * net->n_params);
    if (net->n_state)
        ctx->be->download(ctx, net->hstate, net->state, sizeof(float) * net->n_state);
}

static void blocks_upload(const nn_net *net)
{
    nn_ctx *ctx = net->ctx;
    ctx->be->upload(ctx, net->params, net->hparams, sizeof(float) * net->n_params);
    ctx->be->upload(ctx, net->grads, net->hgrads, sizeof(float) * net->n_params);
    ctx->be->upload(ctx, net->mom, net->hmom, sizeof(float) * net->n_params);
    if (net->n_state)
        ctx->be->upload(ctx, net->state, net->hstate, sizeof(float) * net->n_state);
}

/* nn__params_host: see internal.h. */
void nn__params_host(const nn_net *net)
{
    if (net->ctx->be->host) return;
    if (net->coh->dev_newer) blocks_download(net);
    net->coh->dev_newer = 0;
    net->coh->host_dirty = 1;
}

/* nn__params_dev: see internal.h. */
void nn__params_dev(nn_net *net, int modifies)
{
    if (net->ctx->be->host) return;
    if (net->coh->host_dirty) blocks_upload(net);
    if (modifies) {
        net->coh->host_dirty = 0;
        net->coh->dev_newer = 1;
    }
}

/* nn_net_sync_to_host: see gpp/nn.h. */
int nn_net_sync_to_host(nn_net *net, gpp_error *err)
{
    nn__params_host(net);
    return nn__ctx_check(net->ctx, err);
}

/* nn_net_sync_to_device: see gpp/nn.h. */
int nn_net_sync_to_device(nn_net *net, gpp_error *err)
{
    if (!net->ctx->be->host) {
        if (net->coh->dev_newer) blocks_download(net);   /* nothing host-side to lose */
        blocks_upload(net);
        net->coh->dev_newer = 0;
        net->coh->host_dirty = 0;
    }
    return nn__ctx_check(net->ctx, err);
}

/* nn__host_view: see internal.h. */
void *nn__host_view(const nn_net *net, const void *p, size_t bytes)
{
    if (!p || net->ctx->be->host) return (void *)(uintptr_t)p;
    size_t off = (size_t)((const char *)p - (const char *)net->arena);
    char *h = (char *)net->harena + off;
    net->ctx->be->download(net->ctx, h, p, bytes);
    return h;
}

/* ---- building ------------------------------------------------------------------ */

static int layer_fail(gpp_error *err, int i, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int layer_fail(gpp_error *err, int i, const char *name, const char *fmt, ...)
{
    char field[64], msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(field, sizeof field, "model.layers[%d]", i);
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", field, "layer %d (\"%s\"): %s",
                         i, name, msg);
}

static int json_int(const cJSON *o, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : def;
}

static double json_num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* nn__node_out: see internal.h. */
const float *nn__node_out(const nn_net *net, int id)
{
    while (id > 0 && net->nodes[id].op == NN_OP_FLATTEN) id = net->nodes[id].in[0];
    return id == 0 ? net->x : net->nodes[id].out;
}

/* nn__net_infer: see internal.h. */
int nn__net_infer(nn_net *net, gpp_error *err)
{
    size_t off = 0, soff = 0;
    for (int i = 1; i < net->n_nodes; i++) net->nodes[i].n_cons = 0;
    for (int i = 1; i < net->n_nodes; i++) {
        nn_node *nd = &net->nodes[i];
        const nn_node *in = &net->nodes[nd->in[0]];
        int li = i - 1;
        for (int s = 0; s < nd->n_in; s++) net->nodes[nd->in[s]].n_cons++;
        nd->w_len = nd->b_len = 0;
        nd->params = nd->macs = 0;
        nd->C = in->C;
        nd->H = in->H;
        nd->W = in->W;
        switch (nd->op) {
        case NN_OP_CONV: {
            nn_conv_dims d = {.N = 1, .C = in->C, .H = in->H, .W = in->W, .OC = nd->nout,
                              .K = nd->k, .stride = nd->stride, .pad = nd->pad};
            if (nn_conv_dims_init(&d) != 0)
                return layer_fail(err, li, nd->name,
                                  "a %dx%d window (pad %d) does not fit its %dx%d input",
                                  nd->k, nd->k, nd->pad, in->H, in->W);
            nd->C = nd->nout;
            nd->H = d.OH;
            nd->W = d.OW;
            nd->w_len = (size_t)nd->nout * in->C * nd->k * nd->k;
            nd->b_len = nd->bias ? (size_t)nd->nout : 0;
            nd->macs = (long long)nd->w_len * d.OH * d.OW;
            break;
        }
        case NN_OP_FC:
            nd->C = nd->nout;
            nd->H = nd->W = 1;
            nd->w_len = (size_t)nd->nout * in->C * in->H * in->W;
            nd->b_len = nd->bias ? (size_t)nd->nout : 0;
            nd->macs = (long long)nd->w_len;
            break;
        case NN_OP_BN:
            nd->w_len = nd->b_len = (size_t)in->C;
            break;
        case NN_OP_MAXPOOL:
        case NN_OP_AVGPOOL: {
            nn_pool_dims d = {.N = 1, .C = in->C, .H = in->H, .W = in->W, .K = nd->k,
                              .stride = nd->stride, .pad = nd->pad};
            if (nn_pool_dims_init(&d) != 0)
                return layer_fail(err, li, nd->name,
                                  "a %dx%d window (pad %d) does not fit its %dx%d input "
                                  "(pad must be at most k/2)",
                                  nd->k, nd->k, nd->pad, in->H, in->W);
            nd->H = d.OH;
            nd->W = d.OW;
            break;
        }
        case NN_OP_GAP:
            nd->H = nd->W = 1;
            break;
        case NN_OP_FLATTEN:
            nd->C = in->C * in->H * in->W;
            nd->H = nd->W = 1;
            break;
        case NN_OP_CONCAT: {
            int c = 0;
            for (int s = 0; s < nd->n_in; s++) {
                const nn_node *x = &net->nodes[nd->in[s]];
                if (x->H != in->H || x->W != in->W)
                    return layer_fail(err, li, nd->name,
                                      "concat inputs differ in size: \"%s\" is %dx%d, "
                                      "\"%s\" is %dx%d",
                                      in->name, in->H, in->W, x->name, x->H, x->W);
                c += x->C;
            }
            nd->C = c;
            break;
        }
        case NN_OP_SOFTMAX_CE:
            if (in->H != 1 || in->W != 1)
                return layer_fail(err, li, nd->name,
                                  "softmax-cross-entropy needs a vector of logits, got "
                                  "%dx%dx%d (add a flatten or fc)", in->C, in->H, in->W);
            break;
        default:
            break;
        }
        if ((long long)nd->C * nd->H * nd->W > MAX_SAMPLE_FLOATS)
            return layer_fail(err, li, nd->name, "output of %dx%dx%d is too large",
                              nd->C, nd->H, nd->W);
        nd->params = (long long)(nd->w_len + nd->b_len);
        nd->w_off = off;
        off += nd->w_len;
        nd->b_off = off;
        off += nd->b_len;
        if ((long long)off > MAX_PARAMS)
            return layer_fail(err, li, nd->name, "more than %lld parameters", MAX_PARAMS);
        nd->s_off = soff;
        if (nd->op == NN_OP_BN) soff += 2 * (size_t)nd->C;
        nd->requires_grad = nd->params > 0;
        for (int s = 0; s < nd->n_in; s++)
            if (net->nodes[nd->in[s]].requires_grad) nd->requires_grad = 1;
    }
    net->n_params = off;
    net->n_state = soff;
    for (int i = 1; i < net->n_nodes; i++) {
        nn_node *nd = &net->nodes[i];
        nd->relu_after = nd->fused_into = nd->bn_after = 0;
        nd->pool_after = nd->pooled_by = 0;
    }
    for (int i = 1; i < net->n_nodes; i++) {
        nn_node *nd = &net->nodes[i];
        const nn_node *in = &net->nodes[nd->in[0]];
        if (nd->op == NN_OP_RELU && in->op == NN_OP_BN && in->n_cons == 1) {
            net->nodes[nd->in[0]].relu_after = i;
            nd->fused_into = nd->in[0];
        }
        if (nd->op == NN_OP_BN && in->op == NN_OP_CONV && in->n_cons == 1)
            net->nodes[nd->in[0]].bn_after = i;
    }
    for (int i = 1; i < net->n_nodes; i++) {   /* conv-bn-relu-maxpool 2x2/2 */
        nn_node *p = &net->nodes[i];
        if (p->op != NN_OP_MAXPOOL || p->k != 2 || p->stride != 2 || p->pad != 0) continue;
        nn_node *r = &net->nodes[p->in[0]];
        if (r->op != NN_OP_RELU || !r->fused_into || r->n_cons != 1) continue;
        nn_node *b = &net->nodes[r->fused_into];
        nn_node *c = &net->nodes[b->in[0]];
        if (c->op != NN_OP_CONV || c->bn_after != r->fused_into) continue;
        const nn_node *x = &net->nodes[c->in[0]];
        nn_conv_dims d = {.N = 1, .C = x->C, .H = x->H, .W = x->W, .OC = c->nout, .K = c->k,
                          .stride = c->stride, .pad = c->pad};
        if (nn_conv_dims_init(&d) != 0 || !nn_wino_pool_ok(&d)) continue;
        c->pool_after = i;
        p->pooled_by = b->in[0];
    }
    const nn_node *last = &net->nodes[net->n_nodes - 1];
    net->classes = last->C;
    return 0;
}

static int op_from_name(const char *s)
{
    for (int i = 1; i < NN_OP_COUNT; i++)
        if (strcmp(s, op_names[i]) == 0) return i;
    return -1;
}

/* Fill net->nodes from a canonical description (adds the softmax when the
 * last layer is not one). */
static int net_parse(nn_net *net, const cJSON *canon, gpp_error *err)
{
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(canon, "layers");
    int n = cJSON_GetArraySize(layers);
    net->nodes = calloc((size_t)n + 2, sizeof(nn_node));
    if (!net->nodes) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    snprintf(net->nodes[0].name, sizeof net->nodes[0].name, "input");
    net->nodes[0].op = NN_OP_INPUT;
    net->n_nodes = 1;
    int i = 0;
    for (const cJSON *l = layers->child; l; l = l->next, i++) {
        nn_node *nd = &net->nodes[net->n_nodes];
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(l, "type");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(l, "name");
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(l, "inputs");
        int op = cJSON_IsString(type) ? op_from_name(type->valuestring) : -1;
        if (op < 0 || !cJSON_IsString(name) || !cJSON_IsArray(ins))
            return layer_fail(err, i, "?", "not in canonical form");
        nd->op = (nn_op)op;
        snprintf(nd->name, sizeof nd->name, "%s", name->valuestring);
        if (op == NN_OP_SOFTMAX_CE && l->next)
            return layer_fail(err, i, nd->name, "softmax-cross-entropy must be the last layer");
        for (const cJSON *s = ins->child; s; s = s->next) {
            if (nd->n_in == NN_MAX_INPUTS || !cJSON_IsString(s))
                return layer_fail(err, i, nd->name, "bad inputs");
            int id = -1;
            for (int j = 0; j < net->n_nodes; j++)
                if (strcmp(net->nodes[j].name, s->valuestring) == 0) id = j;
            if (id < 0)
                return layer_fail(err, i, nd->name, "input \"%s\" is not an earlier layer",
                                  s->valuestring);
            if (net->nodes[id].op == NN_OP_SOFTMAX_CE)
                return layer_fail(err, i, nd->name, "the loss cannot feed a layer");
            nd->in[nd->n_in++] = id;
        }
        if (nd->n_in < 1) return layer_fail(err, i, nd->name, "no input");
        nd->nout = json_int(l, "out", 0);
        nd->k = json_int(l, "k", 1);
        nd->stride = json_int(l, "stride", nd->k);
        nd->pad = json_int(l, "pad", 0);
        nd->bias = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(l, "bias")) ? 0 : 1;
        nd->eps = json_num(l, "eps", 1e-5);
        nd->momentum = json_num(l, "momentum", 0.1);
        nd->p = json_num(l, "p", 0.5);
        if (op == NN_OP_CONV && !cJSON_GetObjectItemCaseSensitive(l, "stride")) nd->stride = 1;
        if ((op == NN_OP_CONV || op == NN_OP_FC) && nd->nout < 1)
            return layer_fail(err, i, nd->name, "\"out\" must be at least 1");
        net->n_nodes++;
    }
    if (net->nodes[net->n_nodes - 1].op != NN_OP_SOFTMAX_CE) {
        nn_node *nd = &net->nodes[net->n_nodes];
        char nm[GPP_NET_NAME_MAX + 1] = "loss";
        for (int j = 1; j < net->n_nodes; j++)
            if (strcmp(net->nodes[j].name, nm) == 0)
                snprintf(nm, sizeof nm, "softmax-cross-entropy%d", net->n_nodes - 1);
        memcpy(nd->name, nm, sizeof nm);
        nd->op = NN_OP_SOFTMAX_CE;
        nd->in[0] = net->n_nodes - 1;
        nd->n_in = 1;
        net->n_nodes++;
    }
    return 0;
}

/* He-normal weights, zero biases, bn gamma 1 / beta 0 / running var 1. */
static void net_init_params(nn_net *net)
{
    gpp_rng r;
    gpp_rng_seed(&r, net->seed ^ RNG_STREAM_INIT);
    for (int i = 1; i < net->n_nodes; i++) {
        nn_node *nd = &net->nodes[i];
        float *w = net->hparams + nd->w_off, *b = net->hparams + nd->b_off;
        if (nd->op == NN_OP_CONV || nd->op == NN_OP_FC) {
            double fan_in = (double)nd->w_len / nd->nout;
            float sd = (float)sqrt(2.0 / fan_in);
            for (size_t j = 0; j < nd->w_len; j++) w[j] = sd * gpp_rng_normal(&r);
            for (size_t j = 0; j < nd->b_len; j++) b[j] = 0.0f;
        } else if (nd->op == NN_OP_BN) {
            float *st = net->hstate + nd->s_off;
            for (int c = 0; c < nd->C; c++) {
                w[c] = 1.0f;
                b[c] = 0.0f;
                st[c] = 0.0f;
                st[nd->C + c] = 1.0f;
            }
        }
    }
    if (!net->ctx->be->host) blocks_upload(net);
}

/* Allocate the param, grad, momentum and state blocks for the current
 * layout (zeroed). */
static int net_alloc_blocks(nn_net *net, float **p, float **g, float **m, float **s)
{
    *p = alloc_touched(sizeof(float) * net->n_params);
    *g = alloc_touched(sizeof(float) * net->n_params);
    *m = alloc_touched(sizeof(float) * net->n_params);
    *s = alloc_touched(sizeof(float) * (net->n_state ? net->n_state : 1));
    if (*p && *g && *m && *s) return 0;
    free(*p);
    free(*g);
    free(*m);
    free(*s);
    *p = *g = *m = *s = NULL;
    return GPP_ENOMEM;
}

/* The backend copies of the four blocks (device contexts). */
static int dev_alloc_blocks(nn_net *net, float **p, float **g, float **m, float **s)
{
    nn_ctx *ctx = net->ctx;
    *p = ctx->be->alloc(ctx, sizeof(float) * net->n_params);
    *g = ctx->be->alloc(ctx, sizeof(float) * net->n_params);
    *m = ctx->be->alloc(ctx, sizeof(float) * net->n_params);
    *s = ctx->be->alloc(ctx, sizeof(float) * (net->n_state ? net->n_state : 1));
    if (*p && *g && *m && *s) return 0;
    ctx->be->free(ctx, *p);
    ctx->be->free(ctx, *g);
    ctx->be->free(ctx, *m);
    ctx->be->free(ctx, *s);
    *p = *g = *m = *s = NULL;
    return GPP_ENOMEM;
}

static void dev_free_blocks(nn_net *net)
{
    nn_ctx *ctx = net->ctx;
    ctx->be->free(ctx, net->params);
    ctx->be->free(ctx, net->grads);
    ctx->be->free(ctx, net->mom);
    ctx->be->free(ctx, net->state);
}

/* nn__net_set_blocks: see internal.h. */
int nn__net_set_blocks(nn_net *net, float *hp, float *hm, float *hg, float *hs)
{
    if (net->ctx->be->host) {
        free(net->params);
        free(net->mom);
        free(net->grads);
        free(net->state);
        net->params = net->hparams = hp;
        net->mom = net->hmom = hm;
        net->grads = net->hgrads = hg;
        net->state = net->hstate = hs;
        return 0;
    }
    float *p, *g, *m, *st;
    if (dev_alloc_blocks(net, &p, &g, &m, &st) != 0) {
        free(hp);
        free(hm);
        free(hg);
        free(hs);
        return GPP_ENOMEM;
    }
    dev_free_blocks(net);
    free(net->hparams);
    free(net->hmom);
    free(net->hgrads);
    free(net->hstate);
    net->params = p;
    net->grads = g;
    net->mom = m;
    net->state = st;
    net->hparams = hp;
    net->hmom = hm;
    net->hgrads = hg;
    net->hstate = hs;
    blocks_upload(net);
    net->coh->dev_newer = net->coh->host_dirty = 0;
    return 0;
}

/* nn_net_new: see gpp/nn.h. */
nn_net *nn_net_new(nn_ctx *ctx, const cJSON *desc, const int input[3], int classes,
                   uint64_t seed, gpp_error *err)
{
    cJSON *canon = gpp_netdesc_canonical(desc, "model", err);
    if (!canon) return NULL;
    nn_net *net = calloc(1, sizeof *net);
    if (!net) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto fail;
    }
    net->ctx = ctx;
    net->seed = seed;
    net->fuse = 1;
    if (!(net->coh = calloc(1, sizeof *net->coh))) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto fail;
    }
    int shape[3] = {0, 0, 0};
    const cJSON *ji = cJSON_GetObjectItemCaseSensitive(canon, "input");
    if (input) {
        memcpy(shape, input, sizeof shape);
    } else if (cJSON_IsArray(ji)) {
        for (int k = 0; k < 3; k++) shape[k] = (int)cJSON_GetArrayItem(ji, k)->valuedouble;
    }
    if (shape[0] < 1 || shape[1] < 1 || shape[2] < 1 || shape[0] > 65536 ||
        shape[1] > 65536 || shape[2] > 65536 ||
        (long long)shape[0] * shape[1] * shape[2] > MAX_SAMPLE_FLOATS) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model.input",
                      "the input shape [C, H, W] is missing or out of range (got [%d, %d, %d])",
                      shape[0], shape[1], shape[2]);
        goto fail;
    }
    if (classes <= 0) classes = json_int(canon, "classes", 0);
    if (net_parse(net, canon, err) != 0) goto fail;
    net->nodes[0].C = shape[0];
    net->nodes[0].H = shape[1];
    net->nodes[0].W = shape[2];
    if (nn__net_infer(net, err) != 0) goto fail;
    if (classes > 0 && net->classes != classes) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model.classes",
                      "the network produces %d logits but there are %d classes",
                      net->classes, classes);
        goto fail;
    }
    if (net->classes < 2) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model.classes",
                      "the network produces %d logits; at least 2 are needed", net->classes);
        goto fail;
    }
    if (net_alloc_blocks(net, &net->hparams, &net->hgrads, &net->hmom, &net->hstate) != 0) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory for %zu parameters",
                      net->n_params);
        goto fail;
    }
    if (ctx->be->host) {
        net->params = net->hparams;
        net->grads = net->hgrads;
        net->mom = net->hmom;
        net->state = net->hstate;
    } else if (dev_alloc_blocks(net, &net->params, &net->grads, &net->mom, &net->state) != 0) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "",
                      "out of device memory for %zu parameters (%s)", net->n_params,
                      ctx->device);
        goto fail;
    }
    net_init_params(net);
    gpp_rng_seed(&net->rng, seed ^ RNG_STREAM_DROPOUT);
    cJSON_Delete(canon);
    return net;
fail:
    cJSON_Delete(canon);
    nn_net_free(net);
    return NULL;
}

/* nn_net_free: see gpp/nn.h. */
void nn_net_free(nn_net *net)
{
    if (!net) return;
    for (int k = 0; k < 2; k++) {
        if (net->stat_n[k]) net->ctx->be->download_wait(net->ctx, k);
        net->ctx->be->host_free(net->ctx, net->spin[k]);
        free(net->slab[k]);
    }
    if (!net->ctx->be->host) {
        net->ctx->be->free(net->ctx, net->arena);
        dev_free_blocks(net);
        free(net->harena);
        net->ctx->be->host_free(net->ctx, net->xpin);
    } else {
        free(net->arena);
    }
    free(net->hparams);
    free(net->hgrads);
    free(net->hmom);
    free(net->hstate);
    free(net->coh);
    free(net->nodes);
    free(net);
}

/* ---- buffers ---------------------------------------------------------------------- */

static size_t align64(size_t bytes)
{
    return (bytes + 63) / 64 * 64;
}

/* nn_net_reserve: see gpp/nn.h. */
int nn_net_reserve(nn_net *net, int batch, gpp_error *err)
{
    if (batch < 1 || batch > (1 << 20))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "batch",
                             "batch must be in 1..1048576, got %d", batch);
    size_t total = 0, gtmp = 0, scratch = 0, shared = 0, fused = 0;
    /* pass 0 sizes, pass 1 assigns */
    for (int pass = 0; pass < 2; pass++) {
        char *base = pass ? net->arena : NULL;
        size_t o = 0;
        for (int i = 1; i < net->n_nodes; i++) {
            nn_node *nd = &net->nodes[i];
            size_t act = (size_t)batch * nd->C * nd->H * nd->W * sizeof(float);
            const int shared_bn = net->fuse && nd->op == NN_OP_BN && nd->relu_after;
            size_t sz_out = nd->op == NN_OP_FLATTEN || shared_bn ? 0 : act;
            size_t sz_dout = nd->requires_grad && nd->op != NN_OP_SOFTMAX_CE && !shared_bn ? act : 0;
            if (!pass && shared_bn && act > fused) fused = act;
            size_t sz_cache = 0, sz_sw = 0;
            if (nd->op == NN_OP_BN) sz_cache = 2 * sizeof(float) * nd->C;
            if (nd->op == NN_OP_DROPOUT) sz_cache = act;
            if (nd->op == NN_OP_MAXPOOL) sz_sw = act / sizeof(float) * sizeof(int32_t);
            if (pass) {
                nd->out = sz_out ? (float *)(base + o) : NULL;
                nd->dout = sz_dout ? (float *)(base + o + align64(sz_out)) : NULL;
                nd->cache = sz_cache ? (float *)(base + o + align64(sz_out) + align64(sz_dout)) : NULL;
                nd->sw = sz_sw ? (int32_t *)(base + o + align64(sz_out) + align64(sz_dout) +
                                             align64(sz_cache)) : NULL;
            }
            o += align64(sz_out) + align64(sz_dout) + align64(sz_cache) + align64(sz_sw);
            if (!pass && act > gtmp) gtmp = act;   /* second consumers, fused bn injections */
            if (!pass && nd->op == NN_OP_BN && 2 * sizeof(float) * nd->C > gtmp)
                gtmp = 2 * sizeof(float) * nd->C;  /* materialise: scale, shift */
            if (!pass && nd->op == NN_OP_CONV) {
                const nn_node *in = &net->nodes[nd->in[0]];
                nn_conv_dims d = {.N = batch, .C = in->C, .H = in->H, .W = in->W,
                                  .OC = nd->nout, .K = nd->k, .stride = nd->stride,
                                  .pad = nd->pad};
                nn_conv_dims_init(&d);
                size_t s = net->ctx->be->conv_scratch(&d, nd->bias);
                if (s > scratch) scratch = s;
                s = net->ctx->be->conv_shared(&d);
                if (s > shared) shared = s;
            }
        }
        const int dev = !net->ctx->be->host;
        const size_t xbytes = dev ? sizeof(float) * (size_t)batch * net->nodes[0].C *
                                        net->nodes[0].H * net->nodes[0].W : 0;
        if (pass) {
            net->xdev = dev ? (float *)(base + o) : NULL;
            net->loss_slot = (float *)(base + o + align64(xbytes));
        }
        o += align64(xbytes) + 64;
        if (pass) {
            net->gtmp = gtmp ? (float *)(base + o) : NULL;
            net->labels = (int32_t *)(base + o + align64(gtmp));
            net->fused_out = fused ? (float *)(base + o + align64(gtmp) +
                                               align64(sizeof(int32_t) * (size_t)batch)) : NULL;
            net->fused_dout = fused ? net->fused_out + align64(fused) / sizeof(float) : NULL;
            net->fused_out_owner = net->fused_dout_owner = 0;
            for (int i = 1; i < net->n_nodes; i++) {
                nn_node *nd = &net->nodes[i];
                if (!(net->fuse && nd->op == NN_OP_BN && nd->relu_after)) continue;
                nd->out = net->fused_out;
                nd->dout = nd->requires_grad ? net->fused_dout : NULL;
            }
        }
        o += align64(gtmp) + align64(sizeof(int32_t) * (size_t)batch) + 2 * align64(fused);
        if (!pass) {
            total = o;
            int rc = nn_ctx_reserve_scratch(net->ctx, scratch);
            if (rc == 0) rc = nn_ctx_reserve_shared(net->ctx, shared);
            if (rc != 0)
                return gpp_error_set(err, rc, "out_of_memory", "", "out of memory for scratch");
            if (!net->ctx->be->host) {
                nn_ctx *ctx = net->ctx;
                void *a = ctx->be->alloc(ctx, total);
                void *h = a ? malloc(total) : NULL;
                float *xp = h ? ctx->be->host_alloc(ctx, align64(xbytes) +
                                                             sizeof(int32_t) * (size_t)batch)
                              : NULL;
                if (!xp) {
                    ctx->be->free(ctx, a);
                    free(h);
                    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "",
                                         "out of %s memory reserving %zu bytes for batch %d",
                                         a ? "host" : "device", total, batch);
                }
                ctx->be->free(ctx, net->arena);
                free(net->harena);
                ctx->be->host_free(ctx, net->xpin);
                net->arena = a;
                net->harena = h;
                net->xpin = xp;
                net->arena_bytes = total;
                continue;
            }
            void *a = alloc_touched(total);
            if (!a)
                return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "",
                                     "out of memory reserving %zu bytes for batch %d", total,
                                     batch);
            free(net->arena);
            net->arena = a;
            net->arena_bytes = total;
        }
    }
    /* nn_net_stats_queue's two host buffers: the loss, then the logits */
    const size_t sfloats = 1 + (size_t)batch * (size_t)net->classes;
    for (int k = 0; k < 2 && sfloats > net->spin_floats; k++) {
        net->ctx->be->download_wait(net->ctx, k);
        net->ctx->be->host_free(net->ctx, net->spin[k]);
        free(net->slab[k]);
        net->stat_n[k] = 0;
        net->spin[k] = net->ctx->be->host_alloc(net->ctx, sizeof(float) * sfloats);
        net->slab[k] = malloc(sizeof(int32_t) * (size_t)batch);
        if (!net->spin[k] || !net->slab[k]) {
            net->spin_floats = 0;
            return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "",
                                 "out of host memory for the batch statistics");
        }
    }
    if (sfloats > net->spin_floats) net->spin_floats = sfloats;
    net->batch = batch;
    net->cur_n = 0;
    return 0;
}

/* nn_net_batch: see gpp/nn.h. */
int nn_net_batch(const nn_net *net)
{
    return net->batch;
}

/* ---- forward ------------------------------------------------------------------------ */

static void conv_dims_of(const nn_net *net, const nn_node *nd, int n, nn_conv_dims *d)
{
    const nn_node *in = &net->nodes[nd->in[0]];
    *d = (nn_conv_dims){.N = n, .C = in->C, .H = in->H, .W = in->W, .OC = nd->nout,
                        .K = nd->k, .stride = nd->stride, .pad = nd->pad};
    nn_conv_dims_init(d);
}

static void pool_dims_of(const nn_net *net, const nn_node *nd, int n, nn_pool_dims *d)
{
    const nn_node *in = &net->nodes[nd->in[0]];
    *d = (nn_pool_dims){.N = n, .C = in->C, .H = in->H, .W = in->W, .K = nd->k,
                        .stride = nd->stride, .pad = nd->pad};
    nn_pool_dims_init(d);
}

static size_t sample_len(const nn_node *nd)
{
    return (size_t)nd->C * nd->H * nd->W;
}

/* Eval mode: conv `nd` with its bn (and the bn's relu) folded into one
 * epilogue; the result goes to the last node of the chain. */
static void conv_bn_eval(nn_net *net, nn_node *nd, int n)
{
    nn_ctx *ctx = net->ctx;
    nn_node *bn = &net->nodes[nd->bn_after];
    nn_node *dst = bn->relu_after ? &net->nodes[bn->relu_after] : bn;
    const float *g = net->params + bn->w_off, *b = net->params + bn->b_off;
    const float *rm = net->state + bn->s_off, *rv = rm + bn->C;
    float *scale = bn->cache, *shift = bn->cache + bn->C;   /* bn's cache is free in eval */
    ctx->be->bn_fold(ctx, scale, shift, g, b, rm, rv, bn->eps, bn->C, 0);
    nn_epilogue ep = {.scale = scale, .shift = shift, .relu = bn->relu_after != 0};
    nn_node *pool = nd->pool_after ? &net->nodes[nd->pool_after] : NULL;
    if (pool) {
        ep.pool_out = pool->out;
        ep.pool_switches = pool->sw;
    }
    nn_conv_dims d;
    conv_dims_of(net, nd, n, &d);
    ctx->be->conv_forward(ctx, dst->out, nn__node_out(net, nd->in[0]), net->params + nd->w_off,
                          nd->b_len ? net->params + nd->b_off : NULL, &ep, &d);
    nd->stale = 1;
    bn->stale = dst != bn;
    dst->stale = pool != NULL;
    if (pool) pool->stale = 0;
}

static void node_forward(nn_net *net, nn_node *nd, int n, int train)
{
    nn_ctx *ctx = net->ctx;
    const nn_backend *be = ctx->be;
    const nn_node *in = &net->nodes[nd->in[0]];
    const float *x = nn__node_out(net, nd->in[0]);
    float *w = net->params + nd->w_off, *b = nd->b_len ? net->params + nd->b_off : NULL;
    const int fuse = net->fuse;
    switch (nd->op) {
    case NN_OP_CONV: {
        nd->stale = 0;
        if (fuse && !train && nd->bn_after) {
            conv_bn_eval(net, nd, n);
            break;
        }
        nn_conv_dims d;
        conv_dims_of(net, nd, n, &d);
        be->conv_forward(ctx, nd->out, x, w, b, NULL, &d);
        break;
    }
    case NN_OP_FC:
        nd->stale = 0;
        be->fc_forward(ctx, nd->out, x, w, b, n, (int)sample_len(in), nd->nout);
        break;
    case NN_OP_BN: {
        if (fuse && !train && in->op == NN_OP_CONV && in->bn_after) break;   /* folded */
        nd->stale = 0;
        nn_bn_dims d = {.N = n, .C = nd->C, .HW = nd->H * nd->W, .c0 = 0, .c1 = nd->C,
                        .eps = (float)nd->eps,
                        .momentum = net->restat ? (float)(1.0 / (double)(net->restat_n + 1))
                                                : (float)nd->momentum,
                        .relu = fuse && nd->relu_after};
        float *dst = d.relu ? net->nodes[nd->relu_after].out : nd->out;
        float *st = net->state + nd->s_off;
        if (train)
            be->bn_forward_train(ctx, dst, nd->cache, nd->cache + nd->C, x, w, b, st,
                                 st + nd->C, &d);
        else
            be->bn_forward_eval(ctx, dst, x, w, b, st, st + nd->C, &d);
        nd->stale = d.relu;
        if (d.relu) net->nodes[nd->relu_after].stale = 0;
        break;
    }
    case NN_OP_RELU:
        if (fuse && nd->fused_into) break;   /* its bn (or conv) wrote the output */
        nd->stale = 0;
        be->relu_forward(ctx, nd->out, x, (size_t)n * sample_len(nd));
        break;
    case NN_OP_MAXPOOL:
    case NN_OP_AVGPOOL: {
        if (fuse && !train && nd->pooled_by) break;   /* done by the conv's Winograd pass */
        nd->stale = 0;
        nn_pool_dims d;
        pool_dims_of(net, nd, n, &d);
        if (nd->op == NN_OP_MAXPOOL)
            be->maxpool_forward(ctx, nd->out, nd->sw, x, &d);
        else
            be->avgpool_forward(ctx, nd->out, x, &d);
        break;
    }
    case NN_OP_GAP:
        be->gap_forward(ctx, nd->out, x, n, in->C, in->H * in->W);
        break;
    case NN_OP_CONCAT: {
        int off = 0;
        for (int s = 0; s < nd->n_in; s++) {
            const nn_node *xi = &net->nodes[nd->in[s]];
            be->concat_forward_one(ctx, nd->out, nn__node_out(net, nd->in[s]), n, xi->C, off,
                                   nd->C, nd->H * nd->W);
            off += xi->C;
        }
        break;
    }
    case NN_OP_FLATTEN:
        break;
    case NN_OP_DROPOUT: {
        size_t len = (size_t)n * sample_len(nd);
        if (!train || nd->p <= 0.0f || net->restat) {
            be->copy(ctx, nd->out, x, len);
            break;
        }
        const float p = (float)nd->p, keep = (float)(1.0 / (1.0 - nd->p));
        /* the mask comes from the net's RNG on the host (the same on every
         * backend); a device gets it through the arena's host mirror */
        float *hmask = be->host ? nd->cache
                                : (float *)net->harena + (nd->cache - (float *)net->arena);
        for (size_t j = 0; j < len; j++)
            hmask[j] = gpp_rng_uniform(&net->rng) >= p ? keep : 0.0f;
        if (!be->host) be->upload(ctx, nd->cache, hmask, sizeof(float) * len);
        be->dropout_forward(ctx, nd->out, x, nd->cache, len);
        break;
    }
    case NN_OP_SOFTMAX_CE:
        be->softmax_ce_forward(ctx, nd->out, net->loss_slot, x,
                               net->have_labels ? net->labels : NULL, n, nd->C);
        break;
    default:
        break;
    }
}

/* nn_net_forward: see gpp/nn.h. */
int nn_net_forward(nn_net *net, const float *x, const int32_t *labels, int n,
                   int train, float *loss, gpp_error *err)
{
    if (net->batch == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "batch",
                             "nn_net_reserve was not called");
    if (n < 1 || n > net->batch)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "batch",
                             "batch of %d samples, reserved for 1..%d", n, net->batch);
    if (labels) {
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= net->classes)
                return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "labels",
                                     "label %d of sample %d is outside 0..%d", labels[i], i,
                                     net->classes - 1);
    }
    nn_ctx *ctx = net->ctx;
    if (ctx->be->host) {
        if (labels) memcpy(net->labels, labels, sizeof(int32_t) * (size_t)n);
    } else {   /* the batch and labels go to the device once, through pinned memory */
        size_t bytes = sizeof(float) * (size_t)n * sample_len(&net->nodes[0]);
        size_t loff = align64(sizeof(float) * (size_t)net->batch * sample_len(&net->nodes[0]));
        ctx->be->upload_wait(ctx);   /* the last step's copies are done with xpin */
        memcpy(net->xpin, x, bytes);
        ctx->be->upload_async(ctx, net->xdev, net->xpin, bytes);
        if (labels) {
            memcpy((char *)net->xpin + loff, labels, sizeof(int32_t) * (size_t)n);
            ctx->be->upload_async(ctx, net->labels, (char *)net->xpin + loff,
                                  sizeof(int32_t) * (size_t)n);
        }
    }
    nn__params_dev(net, train);   /* a training forward updates running statistics */
    net->have_labels = labels != NULL;
    net->fused_out_owner = net->fused_dout_owner = 0;
    net->xhost = x;
    net->yhost = labels;
    net->x = ctx->be->host ? x : net->xdev;
    net->cur_n = n;
    net->cur_train = train;
    for (int i = 1; i < net->n_nodes; i++) {
        nn_node *nd = &net->nodes[i];
        if (net->profile) ctx->be->sync(ctx);
        double t0 = net->profile ? now_s() : 0.0;
        node_forward(net, nd, n, train);
        if (net->profile) {
            ctx->be->sync(ctx);
            nd->t_fwd += now_s() - t0;
        }
    }
    if (train && net->restat) net->restat_n++;
    net->loss = 0.0f;
    if (labels && loss) ctx->be->download(ctx, &net->loss, net->loss_slot, sizeof(float));
    if (loss) *loss = net->loss;
    if (!ctx->be->host && (loss || ctx->dev_err)) return nn__ctx_check(ctx, err);
    return 0;
}

/* nn_net_bn_restat: see gpp/nn.h. */
int nn_net_bn_restat(nn_net *net, int on)
{
    net->restat = on != 0;
    net->restat_n = 0;
    int n = 0;
    for (int i = 1; i < net->n_nodes; i++) n += net->nodes[i].op == NN_OP_BN;
    return n;
}

/* ---- backward ------------------------------------------------------------------------ */

/* Where node `id`'s input gradient goes: its dout when nobody wrote it yet
 * this backward, else the shared temporary (then added by grad_done). */
static float *grad_target(nn_net *net, int id)
{
    return net->nodes[id].written ? net->gtmp : net->nodes[id].dout;
}

static void grad_done(nn_net *net, int id, float *target)
{
    nn_node *nd = &net->nodes[id];
    if (target == net->gtmp)
        net->ctx->be->add(net->ctx, nd->dout, net->gtmp, (size_t)net->cur_n * sample_len(nd));
    nd->written = 1;
}

static void node_backward(nn_net *net, nn_node *nd)
{
    nn_ctx *ctx = net->ctx;
    const nn_backend *be = ctx->be;
    const int n = net->cur_n;
    const int i0 = nd->in[0];
    const nn_node *in = &net->nodes[i0];
    const int need = in->requires_grad;
    const float *x = nn__node_out(net, i0);
    const float *w = net->params + nd->w_off;
    float *dw = net->grads + nd->w_off, *db = nd->b_len ? net->grads + nd->b_off : NULL;
    float *t = need ? grad_target(net, i0) : NULL;
    switch (nd->op) {
    case NN_OP_CONV: {
        nn_conv_dims d;
        conv_dims_of(net, nd, n, &d);
        be->conv_backward(ctx, t, dw, db, nd->dout, x, w, &d);
        break;
    }
    case NN_OP_FC:
        be->fc_backward(ctx, t, dw, db, nd->dout, x, w, n, (int)sample_len(in), nd->nout);
        break;
    case NN_OP_BN: {
        nn_bn_dims d = {.N = n, .C = nd->C, .HW = nd->H * nd->W, .c0 = 0, .c1 = nd->C,
                        .eps = (float)nd->eps, .momentum = (float)nd->momentum};
        const float *dy = nd->dout, *mask = NULL;
        if (net->fuse && nd->relu_after) {   /* the relu's gradient, masked on the fly */
            nn_node *r = &net->nodes[nd->relu_after];
            size_t len = (size_t)n * sample_len(nd);
            if (!nd->written) {
                dy = r->dout;
                mask = r->out;
            } else {                         /* an injection at the bn itself */
                if (r->written) {
                    be->relu_backward(ctx, net->gtmp, r->dout, r->out, len);
                    be->add(ctx, nd->dout, net->gtmp, len);
                }
                net->fused_dout_owner = (int)(nd - net->nodes);
            }
        }
        be->bn_backward(ctx, t, dw, db, dy, mask, x, nd->cache, nd->cache + nd->C, w, &d);
        break;
    }
    case NN_OP_RELU:
        if (t) be->relu_backward(ctx, t, nd->dout, nd->out, (size_t)n * sample_len(nd));
        break;
    case NN_OP_MAXPOOL:
    case NN_OP_AVGPOOL: {
        if (!t) break;
        nn_pool_dims d;
        pool_dims_of(net, nd, n, &d);
        if (nd->op == NN_OP_MAXPOOL)
            be->maxpool_backward(ctx, t, nd->dout, nd->sw, &d);
        else
            be->avgpool_backward(ctx, t, nd->dout, &d);
        break;
    }
    case NN_OP_GAP:
        if (t) be->gap_backward(ctx, t, nd->dout, n, in->C, in->H * in->W);
        break;
    case NN_OP_FLATTEN:
        if (t) be->copy(ctx, t, nd->dout, (size_t)n * sample_len(nd));
        break;
    case NN_OP_DROPOUT:
        if (!t) break;
        if (!net->cur_train || nd->p <= 0.0f)
            be->copy(ctx, t, nd->dout, (size_t)n * sample_len(nd));
        else
            be->dropout_backward(ctx, t, nd->dout, nd->cache, (size_t)n * sample_len(nd));
        break;
    case NN_OP_SOFTMAX_CE:
        if (t) be->softmax_ce_backward(ctx, t, nd->out, net->labels, n, nd->C, 1.0f);
        break;
    case NN_OP_CONCAT: {
        int off = 0;
        for (int s = 0; s < nd->n_in; s++) {
            nn_node *xi = &net->nodes[nd->in[s]];
            if (xi->requires_grad) {
                be->concat_backward_one(ctx, xi->dout, nd->dout, n, xi->C, off, nd->C,
                                        nd->H * nd->W, xi->written);
                xi->written = 1;
            }
            off += xi->C;
        }
        return;
    }
    default:
        break;
    }
    if (t) grad_done(net, i0, t);
}

/* nn_net_backward: see gpp/nn.h. */
int nn_net_backward(nn_net *net, const nn_grad_inject *inject, int n_inject,
                    gpp_error *err)
{
    if (net->cur_n == 0 || !net->cur_train)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "",
                             "backward needs a training forward first");
    for (int k = 0; k < n_inject; k++)
        if (inject[k].node < 1 || inject[k].node >= net->n_nodes - 1 || !inject[k].grad)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "",
                                 "cannot inject a gradient at node %d", inject[k].node);
    nn_ctx *ctx = net->ctx;
    const nn_backend *be = ctx->be;
    nn__params_dev(net, 1);
    for (int i = 0; i < net->n_nodes; i++) net->nodes[i].written = 0;
    net->nodes[net->n_nodes - 1].written = net->have_labels;
    net->fused_dout_owner = 0;
    for (int i = net->n_nodes - 1; i >= 1; i--) {
        nn_node *nd = &net->nodes[i];
        if (!nd->requires_grad) continue;
        for (int k = 0; k < n_inject; k++) {
            if (inject[k].node != i) continue;
            size_t len = (size_t)net->cur_n * sample_len(nd);
            const float *g = inject[k].grad;   /* host memory */
            if (!be->host) {                  /* to the device first */
                be->upload(ctx, nd->written ? net->gtmp : nd->dout, g, sizeof(float) * len);
                g = nd->written ? net->gtmp : nd->dout;
            }
            if (nd->written)
                be->add(ctx, nd->dout, g, len);
            else
                be->copy(ctx, nd->dout, g, len);
            nd->written = 1;
        }
        if (net->fuse && nd->op == NN_OP_RELU && nd->fused_into) continue;   /* in its bn */
        int go = nd->written;
        if (net->fuse && nd->op == NN_OP_BN && nd->relu_after)
            go = go || net->nodes[nd->relu_after].written;
        if (!go) continue;
        if (net->profile) be->sync(ctx);
        double t0 = net->profile ? now_s() : 0.0;
        node_backward(net, nd);
        if (net->profile) {
            be->sync(ctx);
            nd->t_bwd += now_s() - t0;
        }
    }
    return ctx->dev_err ? nn__ctx_check(ctx, err) : 0;
}

/* nn_net_zero_grad: see gpp/nn.h. */
void nn_net_zero_grad(nn_net *net)
{
    nn__params_dev(net, 1);
    net->ctx->be->zero(net->ctx, net->grads, net->n_params);
}

/* ---- optimiser ------------------------------------------------------------------------ */

/* nn_net_sgd_step: see gpp/nn.h. */
void nn_net_sgd_step(nn_net *net, const nn_sgd *opt)
{
    nn__params_dev(net, 1);
    net->ctx->be->sgd_step(net->ctx, net->params, net->grads, net->mom, net->n_params, opt,
                           net->sgd_steps == 0);
    net->sgd_steps++;
}

/* nn_net_sgd_steps: see gpp/nn.h. */
long long nn_net_sgd_steps(const nn_net *net)
{
    return net->sgd_steps;
}

/* nn_net_set_sgd_steps: see gpp/nn.h. */
void nn_net_set_sgd_steps(nn_net *net, long long steps)
{
    net->sgd_steps = steps < 0 ? 0 : steps;
}

/* nn_lr_at: see gpp/nn.h. */
float nn_lr_at(const nn_lr_schedule *s, int t)
{
    if (t < 0) t = 0;
    switch (s->kind) {
    case NN_LR_STEP:
        if (s->step_size <= 0) return s->base;
        return s->base * powf(s->gamma, (float)(t / s->step_size));
    case NN_LR_COSINE: {
        if (s->total <= 0) return s->base;
        int tt = t > s->total ? s->total : t;
        double c = 0.5 * (1.0 + cos(M_PI * (double)tt / (double)s->total));
        return (float)(s->min_lr + (s->base - s->min_lr) * c);
    }
    default:
        return s->base;
    }
}

/* How many of the n rows of logits z [n, C] have their argmax at the label. */
static int count_right(const float *z, int n, int C, const int32_t *labels)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const float *r = z + (size_t)i * C;
        int best = 0;
        for (int k = 1; k < C; k++)
            if (r[k] > r[best]) best = k;
        ok += best == labels[i];
    }
    return ok;
}

/* nn_net_correct: see gpp/nn.h. */
int nn_net_correct(const nn_net *net, const int32_t *labels, int n)
{
    const nn_node *sm = &net->nodes[net->n_nodes - 1];
    if (n > net->cur_n) n = net->cur_n;
    const float *z = nn__host_view(net, nn__node_out(net, sm->in[0]),
                                   sizeof(float) * (size_t)n * sm->C);
    return z ? count_right(z, n, sm->C, labels) : 0;
}

/* nn_net_stats_queue: see gpp/nn.h. */
void nn_net_stats_queue(nn_net *net, int slot)
{
    slot &= 1;
    nn_ctx *ctx = net->ctx;
    const nn_node *sm = &net->nodes[net->n_nodes - 1];
    const int n = net->cur_n;
    ctx->be->download_wait(ctx, slot);   /* its last copies are read */
    ctx->be->download_async(ctx, net->spin[slot], net->loss_slot, sizeof(float), slot);
    ctx->be->download_async(ctx, net->spin[slot] + 1, nn__node_out(net, sm->in[0]),
                            sizeof(float) * (size_t)n * sm->C, slot);
    if (net->yhost) memcpy(net->slab[slot], net->yhost, sizeof(int32_t) * (size_t)n);
    net->stat_n[slot] = net->yhost ? n : 0;
}

/* nn_net_stats_take: see gpp/nn.h. */
int nn_net_stats_take(nn_net *net, int slot, float *loss, int *correct, gpp_error *err)
{
    slot &= 1;
    nn_ctx *ctx = net->ctx;
    const int n = net->stat_n[slot], C = net->nodes[net->n_nodes - 1].C;
    if (n == 0)
        return gpp_error_set(err, GPP_EINVAL, "internal", "", "no batch statistics queued");
    ctx->be->download_wait(ctx, slot);
    net->stat_n[slot] = 0;
    int rc = nn__ctx_error(ctx, err);
    if (rc != 0) return rc;
    *loss = net->spin[slot][0];
    *correct = count_right(net->spin[slot] + 1, n, C, net->slab[slot]);
    return 0;
}

/* ---- looking inside --------------------------------------------------------------------- */

/* nn_net_num_nodes: see gpp/nn.h. */
int nn_net_num_nodes(const nn_net *net)
{
    return net->n_nodes;
}

/* nn_net_node: see gpp/nn.h. */
int nn_net_node(const nn_net *net, int id, nn_node_info *info)
{
    if (id < 0 || id >= net->n_nodes) return GPP_EINVAL;
    const nn_node *nd = &net->nodes[id];
    *info = (nn_node_info){.name = nd->name, .op = nd->op, .C = nd->C, .H = nd->H,
                           .W = nd->W, .n_inputs = nd->n_in, .inputs = nd->in,
                           .out = nd->nout, .k = nd->k, .stride = nd->stride, .pad = nd->pad,
                           .bias = nd->bias, .params = nd->params, .macs = nd->macs};
    return 0;
}

/* nn_net_find: see gpp/nn.h. */
int nn_net_find(const nn_net *net, const char *name)
{
    for (int i = 0; i < net->n_nodes; i++)
        if (strcmp(net->nodes[i].name, name) == 0) return i;
    return -1;
}

/* nn_net_predecision: see gpp/nn.h. */
int nn_net_predecision(const nn_net *net)
{
    for (int i = net->n_nodes - 1; i >= 1; i--)
        if (net->nodes[i].op == NN_OP_FC) return net->nodes[i].in[0];
    return -1;
}

/* nn_net_logits: see gpp/nn.h. */
int nn_net_logits(const nn_net *net)
{
    return net->nodes[net->n_nodes - 1].in[0];
}

static int shared_bn(const nn_net *net, int id)
{
    const nn_node *nd = &net->nodes[id];
    return net->fuse && nd->op == NN_OP_BN && nd->relu_after;
}

/* Compute a node output the last forward fused away (a conv folded with its
 * bn in eval, a bn that wrote its relu's output): from its input, which is
 * always kept or materialised first, with the same arithmetic as the
 * unfused kernels. */
static void materialise(nn_net *net, int id)
{
    nn_node *nd = &net->nodes[id];
    const int n = net->cur_n;
    if (nd->op == NN_OP_CONV && nd->stale) {
        nn_conv_dims d;
        conv_dims_of(net, nd, n, &d);
        net->ctx->be->conv_forward(net->ctx, nd->out, nn__node_out(net, nd->in[0]),
                                   net->params + nd->w_off,
                                   nd->b_len ? net->params + nd->b_off : NULL, NULL, &d);
        nd->stale = 0;
    } else if (nd->op == NN_OP_BN && (nd->stale || (shared_bn(net, id) && net->fused_out_owner != id))) {
        materialise(net, nd->in[0]);
        const nn_backend *be = net->ctx->be;
        const float *x = nn__node_out(net, nd->in[0]);
        const float *g = net->params + nd->w_off, *b = net->params + nd->b_off;
        const float *rm = net->state + nd->s_off, *rv = rm + nd->C;
        float *scale = net->gtmp, *shift = net->gtmp + nd->C;   /* free outside backward */
        if (net->cur_train)   /* cache: batch mean, rstd */
            be->bn_fold(net->ctx, scale, shift, g, b, nd->cache, nd->cache + nd->C, nd->eps,
                        nd->C, 1);
        else
            be->bn_fold(net->ctx, scale, shift, g, b, rm, rv, nd->eps, nd->C, 0);
        be->channel_affine(net->ctx, nd->out, x, scale, shift, n, nd->C, nd->H * nd->W);
        nd->stale = 0;
        if (shared_bn(net, id)) net->fused_out_owner = id;
    } else if (nd->op == NN_OP_RELU && nd->stale) {
        materialise(net, nd->in[0]);
        net->ctx->be->relu_forward(net->ctx, nd->out, nn__node_out(net, nd->in[0]),
                                   (size_t)n * sample_len(nd));
        nd->stale = 0;
    }
}

/* nn_net_output: see gpp/nn.h. */
const float *nn_net_output(nn_net *net, int id)
{
    if (id < 0 || id >= net->n_nodes || net->batch == 0) return NULL;
    int r = id;
    while (r > 0 && net->nodes[r].op == NN_OP_FLATTEN) r = net->nodes[r].in[0];
    if (net->cur_n > 0) {
        nn__params_dev(net, 0);
        materialise(net, r);
    }
    if (r == 0 && !net->ctx->be->host) return net->xhost;
    return nn__host_view(net, nn__node_out(net, id),
                         sizeof(float) * (size_t)net->cur_n * sample_len(&net->nodes[id]));
}

/* nn_net_output_grad: see gpp/nn.h. */
const float *nn_net_output_grad(nn_net *net, int id)
{
    if (id < 1 || id >= net->n_nodes) return NULL;
    nn_node *nd = &net->nodes[id];
    if (shared_bn(net, id) && nd->dout && net->fused_dout_owner != id) {
        const nn_node *r = &net->nodes[nd->relu_after];
        if (!r->written) return NULL;
        net->ctx->be->relu_backward(net->ctx, nd->dout, r->dout, r->out,   /* masked */
                                    (size_t)net->cur_n * sample_len(nd));
        net->fused_dout_owner = id;
        return nn__host_view(net, nd->dout, sizeof(float) * (size_t)net->cur_n * sample_len(nd));
    }
    return nd->written ? nn__host_view(net, nd->dout,
                                       sizeof(float) * (size_t)net->cur_n * sample_len(nd))
                       : NULL;
}

/* nn_net_switches: see gpp/nn.h. */
const int32_t *nn_net_switches(const nn_net *net, int id)
{
    if (id < 1 || id >= net->n_nodes) return NULL;
    const nn_node *nd = &net->nodes[id];
    return nn__host_view(net, nd->sw, sizeof(int32_t) * (size_t)net->cur_n * sample_len(nd));
}

/* nn_net_params: see gpp/nn.h. */
long long nn_net_params(const nn_net *net)
{
    long long s = 0;
    for (int i = 1; i < net->n_nodes; i++) s += net->nodes[i].params;
    return s;
}

/* nn_net_macs: see gpp/nn.h. */
long long nn_net_macs(const nn_net *net)
{
    long long s = 0;
    for (int i = 1; i < net->n_nodes; i++) s += net->nodes[i].macs;
    return s;
}

/* Tensor slots of a node: weight, bias, running_mean, running_var. */
static int node_tensor(const nn_net *net, int id, int slot, nn_tensor *t)
{
    const nn_node *nd = &net->nodes[id];
    static const char *const sfx[4] = {"weight", "bias", "running_mean", "running_var"};
    memset(t, 0, sizeof *t);
    t->node = id;
    if (slot == 0 && nd->w_len) {
        t->data = net->hparams + nd->w_off;
        t->grad = net->hgrads + nd->w_off;
        t->momentum = net->hmom + nd->w_off;
        t->len = nd->w_len;
        if (nd->op == NN_OP_CONV) {
            const nn_node *in = &net->nodes[nd->in[0]];
            t->ndim = 4;
            t->shape[0] = nd->nout;
            t->shape[1] = in->C;
            t->shape[2] = t->shape[3] = nd->k;
        } else if (nd->op == NN_OP_FC) {
            t->ndim = 2;
            t->shape[0] = nd->nout;
            t->shape[1] = (int)(nd->w_len / nd->nout);
        } else {
            t->ndim = 1;
            t->shape[0] = (int)nd->w_len;
        }
    } else if (slot == 1 && nd->b_len) {
        t->data = net->hparams + nd->b_off;
        t->grad = net->hgrads + nd->b_off;
        t->momentum = net->hmom + nd->b_off;
        t->len = nd->b_len;
        t->ndim = 1;
        t->shape[0] = (int)nd->b_len;
    } else if (slot >= 2 && nd->op == NN_OP_BN) {
        t->data = net->hstate + nd->s_off + (slot == 3 ? nd->C : 0);
        t->len = (size_t)nd->C;
        t->ndim = 1;
        t->shape[0] = nd->C;
    } else {
        return 0;
    }
    snprintf(t->name, sizeof t->name, "%s.%s", nd->name, sfx[slot]);
    return 1;
}

/* nn_net_num_tensors: see gpp/nn.h. */
int nn_net_num_tensors(const nn_net *net)
{
    int n = 0;
    nn_tensor t;
    for (int i = 1; i < net->n_nodes; i++)
        for (int s = 0; s < 4; s++) n += node_tensor(net, i, s, &t);
    return n;
}

/* nn_net_tensor: see gpp/nn.h. */
int nn_net_tensor(const nn_net *net, int idx, nn_tensor *t)
{
    nn__params_host(net);
    int n = 0;
    for (int i = 1; i < net->n_nodes; i++)
        for (int s = 0; s < 4; s++)
            if (node_tensor(net, i, s, t) && n++ == idx) return 0;
    return GPP_EINVAL;
}

/* nn_net_tensor_find: see gpp/nn.h. */
int nn_net_tensor_find(const nn_net *net, const char *name, nn_tensor *t)
{
    nn__params_host(net);
    for (int i = 1; i < net->n_nodes; i++)
        for (int s = 0; s < 4; s++)
            if (node_tensor(net, i, s, t) && strcmp(t->name, name) == 0) return 0;
    return GPP_ENOTFOUND;
}

/* nn_net_param_block: see gpp/nn.h. */
float *nn_net_param_block(nn_net *net, size_t *len)
{
    nn__params_host(net);
    if (len) *len = net->n_params;
    return net->hparams;
}

/* nn_net_grad_block: see gpp/nn.h. */
float *nn_net_grad_block(nn_net *net, size_t *len)
{
    nn__params_host(net);
    if (len) *len = net->n_params;
    return net->hgrads;
}

/* nn_net_momentum_block: see gpp/nn.h. */
float *nn_net_momentum_block(nn_net *net, size_t *len)
{
    nn__params_host(net);
    if (len) *len = net->n_params;
    return net->hmom;
}

/* nn_net_rng: see gpp/nn.h. */
gpp_rng *nn_net_rng(nn_net *net)
{
    return &net->rng;
}

/* nn_net_set_profile: see gpp/nn.h. */
void nn_net_set_profile(nn_net *net, int on)
{
    net->profile = on;
    if (on)
        for (int i = 0; i < net->n_nodes; i++) net->nodes[i].t_fwd = net->nodes[i].t_bwd = 0.0;
}

/* nn_net_node_time: see gpp/nn.h. */
int nn_net_node_time(const nn_net *net, int id, double *fwd_s, double *bwd_s)
{
    if (id < 0 || id >= net->n_nodes) return GPP_EINVAL;
    if (fwd_s) *fwd_s = net->nodes[id].t_fwd;
    if (bwd_s) *bwd_s = net->nodes[id].t_bwd;
    return 0;
}

/* ---- description ------------------------------------------------------------------------- */

/* nn_net_to_json: see gpp/nn.h. */
cJSON *nn_net_to_json(const nn_net *net)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const nn_node *d = &net->nodes[0];
    int shape[3] = {d->C, d->H, d->W};
    cJSON *layers;
    if (!cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(shape, 3)) ||
        !cJSON_AddNumberToObject(o, "classes", net->classes) ||
        !(layers = cJSON_AddArrayToObject(o, "layers")))
        goto oom;
    for (int i = 1; i < net->n_nodes; i++) {
        const nn_node *nd = &net->nodes[i];
        cJSON *l = cJSON_CreateObject(), *ins;
        if (!l || !cJSON_AddItemToArray(layers, l)) {
            cJSON_Delete(l);
            goto oom;
        }
        if (!cJSON_AddStringToObject(l, "name", nd->name) ||
            !cJSON_AddStringToObject(l, "type", op_names[nd->op]) ||
            !(ins = cJSON_AddArrayToObject(l, "inputs")))
            goto oom;
        for (int s = 0; s < nd->n_in; s++) {
            cJSON *sv = cJSON_CreateString(net->nodes[nd->in[s]].name);
            if (!sv || !cJSON_AddItemToArray(ins, sv)) {
                cJSON_Delete(sv);
                goto oom;
            }
        }
        int ok = 1;
        switch (nd->op) {
        case NN_OP_CONV:
            ok = cJSON_AddNumberToObject(l, "out", nd->nout) && cJSON_AddNumberToObject(l, "k", nd->k) &&
                 cJSON_AddNumberToObject(l, "stride", nd->stride) &&
                 cJSON_AddNumberToObject(l, "pad", nd->pad) && cJSON_AddBoolToObject(l, "bias", nd->bias);
            break;
        case NN_OP_FC:
            ok = cJSON_AddNumberToObject(l, "out", nd->nout) && cJSON_AddBoolToObject(l, "bias", nd->bias);
            break;
        case NN_OP_MAXPOOL:
        case NN_OP_AVGPOOL:
            ok = cJSON_AddNumberToObject(l, "k", nd->k) &&
                 cJSON_AddNumberToObject(l, "stride", nd->stride) &&
                 cJSON_AddNumberToObject(l, "pad", nd->pad);
            break;
        case NN_OP_BN:
            ok = cJSON_AddNumberToObject(l, "eps", nd->eps) &&
                 cJSON_AddNumberToObject(l, "momentum", nd->momentum);
            break;
        case NN_OP_DROPOUT:
            ok = cJSON_AddNumberToObject(l, "p", nd->p) != NULL;
            break;
        default:
            break;
        }
        if (!ok) goto oom;
    }
    return o;
oom:
    cJSON_Delete(o);
    return NULL;
}
