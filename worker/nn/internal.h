/* worker/nn/internal.h - the engine's private structures: the run context,
 * the backend table, the network's nodes.  Shared by the files of worker/nn
 * (and the engine's own tests); nothing here is public API. */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/netdesc.h"
#include "gpp/nn.h"
#include "gpp/rng.h"
#include "kernels.h"
#include "pool.h"

#define NN_MAX_INPUTS 16

/* ---- backend table --------------------------------------------------------
 * One per device, chosen once per run (nn_ctx_new).  Each entry takes the
 * context first, then the kernel's arguments for the whole batch; the CPU
 * backend splits the work between the pool's threads and calls kernels.h.
 * The CUDA backend mirrors it with the same entries (`_cuda` kernels). */
typedef struct nn_backend {
    const char *name;
    void (*conv_forward)(nn_ctx *ctx, float *out, const float *in,
                         const float *weight, const float *bias,
                         const nn_epilogue *ep, const nn_conv_dims *d);
    /* scratch: nn_backend_conv_scratch floats per thread (in ctx) */
    void (*conv_backward)(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                          const float *dout, const float *in, const float *weight,
                          const nn_conv_dims *d);
    void (*fc_forward)(nn_ctx *ctx, float *out, const float *in,
                       const float *weight, const float *bias, int N, int IN, int OUT);
    void (*fc_backward)(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                        const float *dout, const float *in, const float *weight,
                        int N, int IN, int OUT);
    /* batch norm: the backend splits the channels (d->c0, d->c1 ignored) */
    void (*bn_forward_train)(nn_ctx *ctx, float *out, float *mean, float *rstd,
                             const float *in, const float *gamma, const float *beta,
                             float *running_mean, float *running_var,
                             const nn_bn_dims *d);
    void (*bn_forward_eval)(nn_ctx *ctx, float *out, const float *in,
                            const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var,
                            const nn_bn_dims *d);
    void (*bn_backward)(nn_ctx *ctx, float *din, float *dgamma, float *dbeta,
                        const float *dout, const float *relu_out, const float *in,
                        const float *mean, const float *rstd, const float *gamma,
                        const nn_bn_dims *d);
    void (*relu_forward)(nn_ctx *ctx, float *out, const float *in, size_t len);
    void (*relu_backward)(nn_ctx *ctx, float *din, const float *dout,
                          const float *out, size_t len);
    void (*maxpool_forward)(nn_ctx *ctx, float *out, int32_t *switches,
                            const float *in, const nn_pool_dims *d);
    void (*maxpool_backward)(nn_ctx *ctx, float *din, const float *dout,
                             const int32_t *switches, const nn_pool_dims *d);
    void (*avgpool_forward)(nn_ctx *ctx, float *out, const float *in,
                            const nn_pool_dims *d);
    void (*avgpool_backward)(nn_ctx *ctx, float *din, const float *dout,
                             const nn_pool_dims *d);
    void (*gap_forward)(nn_ctx *ctx, float *out, const float *in, int N, int C, int HW);
    void (*gap_backward)(nn_ctx *ctx, float *din, const float *dout, int N, int C, int HW);
    void (*dropout_forward)(nn_ctx *ctx, float *out, const float *in,
                            const float *mask, size_t len);
    void (*dropout_backward)(nn_ctx *ctx, float *din, const float *dout,
                             const float *mask, size_t len);
    void (*concat_forward_one)(nn_ctx *ctx, float *out, const float *in, int N,
                               int Ci, int off, int Ctot, int HW);
    void (*concat_backward_one)(nn_ctx *ctx, float *din, const float *dout, int N,
                                int Ci, int off, int Ctot, int HW, int accumulate);
    float (*softmax_ce_forward)(nn_ctx *ctx, float *probs, const float *logits,
                                const int32_t *labels, int N, int K);
    void (*softmax_ce_backward)(nn_ctx *ctx, float *dlogits, const float *probs,
                                const int32_t *labels, int N, int K, float dloss);
    /* dst[i] = src[i] (copy) or dst[i] += src[i] (add) */
    void (*copy)(nn_ctx *ctx, float *dst, const float *src, size_t len);
    void (*add)(nn_ctx *ctx, float *dst, const float *src, size_t len);
    void (*zero)(nn_ctx *ctx, float *dst, size_t len);
    /* torch.optim.SGD on a flat block; first: no momentum buffer yet */
    void (*sgd_step)(nn_ctx *ctx, float *param, const float *grad, float *mom,
                     size_t len, const nn_sgd *opt, int first);
} nn_backend;

extern const nn_backend nn_backend_cpu;

/* Floats of per-thread scratch the CPU conv needs for `d` (forward and
 * backward, weight-gradient partials included), and of the shared buffer. */
size_t nn_backend_conv_scratch(const nn_conv_dims *d, int with_bias);
size_t nn_backend_conv_shared(const nn_conv_dims *d);

/* ---- run context ------------------------------------------------------------ */
struct nn_ctx {
    const nn_backend *be;
    nn_pool *pool;
    int T;                     /* threads */
    char device[16];
    float *scratch;            /* T * scratch_stride floats */
    size_t scratch_stride;     /* floats per thread (64-byte multiple) */
    float *shared;             /* one buffer all threads read (Winograd filters) */
    size_t shared_len;
};

/* Make sure every thread has `floats` of scratch (reallocates; not in a
 * training step).  0 or GPP_ENOMEM. */
int nn_ctx_reserve_scratch(nn_ctx *ctx, size_t floats);
/* Make sure the shared buffer holds `floats`.  0 or GPP_ENOMEM. */
int nn_ctx_reserve_shared(nn_ctx *ctx, size_t floats);
/* Thread t's scratch. */
static inline float *nn_ctx_scratch(nn_ctx *ctx, int t)
{
    return ctx->scratch + (size_t)t * ctx->scratch_stride;
}

/* ---- network ------------------------------------------------------------------ */
typedef struct nn_node {
    char name[GPP_NET_NAME_MAX + 1];
    nn_op op;
    int n_in;
    int in[NN_MAX_INPUTS];     /* node ids; 0 is the data */
    int C, H, W;               /* output shape of one sample */
    /* layer fields (canonical netdesc) */
    int nout, k, stride, pad, bias;   /* "out" is nout */
    double eps, momentum, p;   /* bn, dropout */
    /* parameters: offsets (floats) into the param/grad/momentum blocks */
    size_t w_off, w_len, b_off, b_len;
    size_t s_off;              /* bn: running mean at state+s_off, var after it */
    long long params, macs;
    int requires_grad;         /* has parameters at or before it */
    /* fusion (net->fuse): a bn whose only consumer is a relu writes the
     * relu's output itself (relu_after = the relu; the relu has fused_into =
     * the bn); in eval mode a conv whose only consumer is a bn folds that bn
     * (and its relu) into its epilogue (bn_after = the bn) */
    int relu_after, fused_into, bn_after;
    int pool_after, pooled_by; /* eval: conv-bn-relu-maxpool(2x2/2) in one Winograd pass */
    int stale;                 /* output not computed by the last forward */
    int n_cons;                /* consumers */
    /* buffers (nn_net_reserve) */
    float *out;                /* [batch, C, H, W]; NULL for flatten (aliases) */
    float *dout;               /* gradient of out */
    float *cache;              /* bn: mean, rstd [2C]; dropout: mask; sce: probs */
    int32_t *sw;               /* maxpool switches */
    int written;               /* backward: dout holds a gradient */
    double t_fwd, t_bwd;       /* profile, seconds */
} nn_node;

struct nn_net {
    nn_ctx *ctx;
    int n_nodes;
    nn_node *nodes;            /* [0] is the data */
    int classes;
    uint64_t seed;
    float *params, *grads, *mom, *state;
    size_t n_params, n_state;
    long long sgd_steps;       /* SGD steps taken (0: no momentum buffer yet) */
    gpp_rng rng;               /* dropout masks */
    int batch;                 /* reserved batch (0: none) */
    void *arena;               /* all activation buffers */
    size_t arena_bytes;
    float *gtmp;               /* backward: a second consumer's input gradient */
    /* a bn fused with its relu has no buffers of its own: its output and
     * gradient, computed only when asked for, live in these (one bn at a
     * time: the owner) */
    float *fused_out, *fused_dout;
    int fused_out_owner, fused_dout_owner;
    int32_t *labels;           /* [batch] of the last forward */
    const float *x;            /* the last forward's data */
    int cur_n, cur_train, have_labels;
    float loss;
    int profile;
    int fuse;                  /* conv-bn-relu fusion on (the default) */
};

/* The output of node id as the last forward left it (flatten resolves to
 * its input). */
const float *nn__node_out(const nn_net *net, int id);

/* Recompute shapes, parameter counts and layout from the node fields;
 * returns 0 or GPP_EINVAL (*err names the layer).  Used by the builder and
 * by surgery. */
int nn__net_infer(nn_net *net, gpp_error *err);

#endif
