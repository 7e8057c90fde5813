/* Deconvolution tracing (METHOD.md 4.2): the kept pre-decision responses
 * projected back to every layer with a Zeiler-Fergus deconvnet, using only
 * the engine's public accessors (node info, tensors, outputs, max-pool
 * switches) and plain loops.  See stages_internal.h for the rules. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages_internal.h"

struct gpp_trace {
    nn_net *net;
    int P;                 /* pre-decision node */
    int n_nodes;
    int batch;
    float **sig;           /* [n_nodes] signal [batch, C*H*W] (nodes 1..P) */
    double **sum;          /* [n_nodes] sum over images [C*H*W] */
    size_t *len;           /* [n_nodes] C*H*W */
    unsigned char *has;    /* [n_nodes] signal present this batch */
    double *eps;           /* [n_nodes] bn eps */
    long long images;
};

/* gpp__trace_free: see stages_internal.h. */
void gpp__trace_free(gpp_trace *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_nodes; i++) {
        if (t->sig) free(t->sig[i]);
        if (t->sum) free(t->sum[i]);
    }
    free(t->sig);
    free(t->sum);
    free(t->len);
    free(t->has);
    free(t->eps);
    free(t);
}

/* gpp__trace_new: see stages_internal.h. */
int gpp__trace_new(nn_net *net, gpp_trace **out, gpp_error *err)
{
    *out = NULL;
    int P = nn_net_predecision(net);
    if (P < 1)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                             "the network has no pre-decision layer (no fc after a hidden "
                             "layer) to trace from");
    if (nn_net_batch(net) < 1)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "batch",
                             "trace: the network is not reserved");
    gpp_trace *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->net = net;
    t->P = P;
    t->n_nodes = nn_net_num_nodes(net);
    t->batch = nn_net_batch(net);
    t->sig = calloc((size_t)t->n_nodes, sizeof *t->sig);
    t->sum = calloc((size_t)t->n_nodes, sizeof *t->sum);
    t->len = calloc((size_t)t->n_nodes, sizeof *t->len);
    t->has = calloc((size_t)t->n_nodes, 1);
    t->eps = calloc((size_t)t->n_nodes, sizeof *t->eps);
    if (!t->sig || !t->sum || !t->len || !t->has || !t->eps) goto oom;
    for (int id = 1; id <= P; id++) {
        nn_node_info in;
        nn_net_node(net, id, &in);
        t->len[id] = (size_t)in.C * in.H * in.W;
        t->sig[id] = malloc(sizeof(float) * t->len[id] * (size_t)t->batch);
        t->sum[id] = calloc(t->len[id], sizeof(double));
        if (!t->sig[id] || !t->sum[id]) goto oom;
    }
    /* batch-norm eps from the description (layer i is node i + 1) */
    cJSON *desc = nn_net_to_json(net);
    if (!desc) goto oom;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(desc, "layers");
    int id = 1;
    for (const cJSON *l = layers ? layers->child : NULL; l && id < t->n_nodes; l = l->next, id++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(l, "eps");
        t->eps[id] = cJSON_IsNumber(e) ? e->valuedouble : 1e-5;
    }
    cJSON_Delete(desc);
    *out = t;
    return 0;
oom:
    gpp__trace_free(t);
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "trace: out of memory");
}

/* The tensor "<node name>.<suffix>" (NULL when absent). */
static const float *tensor_of(const nn_net *net, const char *node, const char *suffix)
{
    char name[NN_TENSOR_NAME_MAX];
    nn_tensor t;
    snprintf(name, sizeof name, "%s.%s", node, suffix);
    return nn_net_tensor_find(net, name, &t) == 0 ? t.data : NULL;
}

/* din += transposed convolution of dout, one image: dout [OC, OH, OW],
 * w [OC, C, K, K], din [C, H, W]. */
static void conv_transpose(float *din, const float *dout, const float *w, int C, int H, int W,
                           int OC, int K, int stride, int pad, int OH, int OW)
{
    for (int oc = 0; oc < OC; oc++) {
        const float *g = dout + (size_t)oc * OH * OW;
        for (int c = 0; c < C; c++) {
            float *d = din + (size_t)c * H * W;
            const float *wk = w + ((size_t)oc * C + c) * K * K;
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    float v = wk[kh * K + kw];
                    if (v == 0.0f) continue;
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * stride - pad + kh;
                        if (ih < 0 || ih >= H) continue;
                        for (int ow = 0; ow < OW; ow++) {
                            int iw = ow * stride - pad + kw;
                            if (iw >= 0 && iw < W) d[ih * W + iw] += v * g[oh * OW + ow];
                        }
                    }
                }
        }
    }
}

/* Project node id's signal onto its inputs' signals (added). */
static int step_back(gpp_trace *t, int id, int n, gpp_error *err)
{
    nn_net *net = t->net;
    nn_node_info in;
    nn_net_node(net, id, &in);
    const float *g = t->sig[id];
    const size_t olen = t->len[id];
    for (int k = 0; k < in.n_inputs; k++) {
        int src = in.inputs[k];
        if (src == 0) continue;   /* the data: nothing to keep */
        if (!t->has[src]) {
            memset(t->sig[src], 0, sizeof(float) * t->len[src] * (size_t)n);
            t->has[src] = 1;
        }
    }
    int src = in.inputs[0];
    if (src == 0 && in.op != NN_OP_CONCAT) return 0;
    nn_node_info x;
    nn_net_node(net, src, &x);
    float *d = src ? t->sig[src] : NULL;
    const size_t ilen = (size_t)x.C * x.H * x.W;
    switch (in.op) {
    case NN_OP_FC: {
        const float *w = tensor_of(net, in.name, "weight");
        if (!w) break;
        for (int i = 0; i < n; i++) {
            float *di = d + (size_t)i * ilen;
            const float *gi = g + (size_t)i * olen;
            for (size_t o = 0; o < olen; o++) {
                float s = gi[o];
                if (s == 0.0f) continue;
                const float *wo = w + o * ilen;
                for (size_t j = 0; j < ilen; j++) di[j] += s * wo[j];
            }
        }
        return 0;
    }
    case NN_OP_CONV: {
        const float *w = tensor_of(net, in.name, "weight");
        if (!w) break;
        for (int i = 0; i < n; i++)
            conv_transpose(d + (size_t)i * ilen, g + (size_t)i * olen, w, x.C, x.H, x.W, in.C,
                           in.k, in.stride, in.pad, in.H, in.W);
        return 0;
    }
    case NN_OP_RELU:
        for (size_t j = 0; j < olen * (size_t)n; j++) d[j] += g[j] > 0.0f ? g[j] : 0.0f;
        return 0;
    case NN_OP_FLATTEN:
    case NN_OP_DROPOUT:
        for (size_t j = 0; j < olen * (size_t)n; j++) d[j] += g[j];
        return 0;
    case NN_OP_BN: {
        const float *gamma = tensor_of(net, in.name, "weight");
        const float *var = tensor_of(net, in.name, "running_var");
        if (!gamma || !var) break;
        size_t hw = (size_t)in.H * in.W;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < in.C; c++) {
                float s = (float)(gamma[c] / sqrt((double)var[c] + t->eps[id]));
                const float *gc = g + (size_t)i * olen + c * hw;
                float *dc = d + (size_t)i * ilen + c * hw;
                for (size_t j = 0; j < hw; j++) dc[j] += s * gc[j];
            }
        return 0;
    }
    case NN_OP_MAXPOOL: {
        const int32_t *sw = nn_net_switches(net, id);
        if (!sw) break;
        size_t ohw = (size_t)in.H * in.W, ihw = (size_t)x.H * x.W;
        for (size_t pl = 0; pl < (size_t)n * in.C; pl++)
            for (size_t o = 0; o < ohw; o++) d[pl * ihw + (size_t)sw[pl * ohw + o]] += g[pl * ohw + o];
        return 0;
    }
    case NN_OP_AVGPOOL: {
        size_t ohw = (size_t)in.H * in.W, ihw = (size_t)x.H * x.W;
        for (size_t pl = 0; pl < (size_t)n * in.C; pl++)
            for (int oh = 0; oh < in.H; oh++)
                for (int ow = 0; ow < in.W; ow++) {
                    int hs = oh * in.stride - in.pad, ws = ow * in.stride - in.pad;
                    int he = hs + in.k, we = ws + in.k;
                    if (he > x.H + in.pad) he = x.H + in.pad;
                    if (we > x.W + in.pad) we = x.W + in.pad;
                    float v = g[pl * ohw + (size_t)oh * in.W + ow] / (float)((he - hs) * (we - ws));
                    for (int ih = hs < 0 ? 0 : hs; ih < (he > x.H ? x.H : he); ih++)
                        for (int iw = ws < 0 ? 0 : ws; iw < (we > x.W ? x.W : we); iw++)
                            d[pl * ihw + (size_t)ih * x.W + iw] += v;
                }
        return 0;
    }
    case NN_OP_GAP: {
        size_t ihw = (size_t)x.H * x.W;
        for (size_t pl = 0; pl < (size_t)n * in.C; pl++) {
            float v = g[pl] / (float)ihw;
            for (size_t j = 0; j < ihw; j++) d[pl * ihw + j] += v;
        }
        return 0;
    }
    case NN_OP_CONCAT: {
        size_t hw = (size_t)in.H * in.W;
        int off = 0;
        for (int k = 0; k < in.n_inputs; k++) {
            nn_node_info b;
            nn_net_node(net, in.inputs[k], &b);
            if (in.inputs[k] != 0) {
                float *db = t->sig[in.inputs[k]];
                size_t blen = (size_t)b.C * hw;
                for (int i = 0; i < n; i++) {
                    const float *gi = g + (size_t)i * olen + (size_t)off * hw;
                    float *di = db + (size_t)i * blen;
                    for (size_t j = 0; j < blen; j++) di[j] += gi[j];
                }
            }
            off += b.C;
        }
        return 0;
    }
    default:
        break;
    }
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                         "trace: cannot trace back through \"%s\" (%s)", in.name,
                         nn_op_name(in.op));
}

/* gpp__trace_add: see stages_internal.h. */
int gpp__trace_add(gpp_trace *t, const float *x, int n, const uint8_t *keep, gpp_error *err)
{
    int rc = nn_net_forward(t->net, x, NULL, n, 0, NULL, err);
    if (rc != 0) return rc;
    memset(t->has, 0, (size_t)t->n_nodes);
    const float *h = nn_net_output(t->net, t->P);
    size_t M = t->len[t->P];
    float *s = t->sig[t->P];
    for (int i = 0; i < n; i++)
        for (size_t m = 0; m < M; m++)
            s[(size_t)i * M + m] = !keep || keep[m] ? h[(size_t)i * M + m] : 0.0f;
    t->has[t->P] = 1;
    for (int id = t->P; id >= 1; id--) {
        if (!t->has[id]) continue;
        const float *g = t->sig[id];
        double *acc = t->sum[id];
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < t->len[id]; j++) acc[j] += g[(size_t)i * t->len[id] + j];
        if ((rc = step_back(t, id, n, err)) != 0) return rc;
    }
    t->images += n;
    return 0;
}

/* gpp__trace_images: see stages_internal.h. */
long long gpp__trace_images(const gpp_trace *t)
{
    return t->images;
}

/* gpp__trace_sum: see stages_internal.h. */
const double *gpp__trace_sum(const gpp_trace *t, int id)
{
    return id >= 1 && id <= t->P ? t->sum[id] : NULL;
}

/* gpp__trace_channel_utility: see stages_internal.h. */
int gpp__trace_channel_utility(const gpp_trace *t, int id, double *u)
{
    if (id < 1 || id > t->P) return GPP_EINVAL;
    nn_node_info in;
    nn_net_node(t->net, id, &in);
    size_t hw = (size_t)in.H * in.W;
    double inv = t->images > 0 ? 1.0 / (double)t->images : 0.0;
    for (int c = 0; c < in.C; c++) {
        double m = 0.0;
        for (size_t j = 0; j < hw; j++) {
            double v = fabs(t->sum[id][(size_t)c * hw + j] * inv);
            if (v > m) m = v;
        }
        u[c] = m;
    }
    return 0;
}
