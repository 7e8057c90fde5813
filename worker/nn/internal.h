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
#include "gpp_config.h"

#define NN_MAX_INPUTS 16

/* ---- backend table --------------------------------------------------------
 * One per device, chosen once per run (nn_ctx_new).  Each entry takes the
 * context first, then the kernel's arguments for the whole batch; the CPU
 * backend splits the work between the pool's threads and calls kernels.h.
 * The CUDA backend mirrors it with the same entries (`_cuda` kernels). */
typedef struct nn_backend {
    const char *name;
    int host;                  /* 1: buffers are host memory (cpu); 0: device memory */
    /* ---- memory: every block a net or context owns goes through these ----
     * alloc: `bytes` zeroed (NULL when out of memory); free accepts NULL.
     * upload: host -> backend memory; download: backend -> host, complete on
     * return (it waits for the work queued before it).  sync: wait for all
     * queued work; 0, or the first device error since the last sync (the
     * message in ctx->dev_msg; GPP_ENOMEM for device out-of-memory). */
    void *(*alloc)(nn_ctx *ctx, size_t bytes);
    void (*free)(nn_ctx *ctx, void *p);
    void (*upload)(nn_ctx *ctx, void *dst, const void *src, size_t bytes);
    void (*download)(nn_ctx *ctx, void *dst, const void *src, size_t bytes);
    int (*sync)(nn_ctx *ctx);
    /* upload_async: like upload, but src must stay unchanged until
     * upload_wait returns (pinned staging of the batch); host_alloc /
     * host_free: host memory the device copies from fast (pinned). */
    void (*upload_async)(nn_ctx *ctx, void *dst, const void *src, size_t bytes);
    void (*upload_wait)(nn_ctx *ctx);
    void *(*host_alloc)(nn_ctx *ctx, size_t bytes);
    void (*host_free)(nn_ctx *ctx, void *p);
    /* download_async: copy device src to host dst (host_alloc memory) in
     * the order of the queued work, without waiting; download_wait(slot)
     * returns once the copies queued under slot (0 or 1) are done. */
    void (*download_async)(nn_ctx *ctx, void *dst, const void *src, size_t bytes, int slot);
    void (*download_wait)(nn_ctx *ctx, int slot);
    /* Floats of scratch a conv of `d` needs (d->N = the reserved batch), and
     * of the shared buffer (Winograd filters on the cpu). */
    size_t (*conv_scratch)(const nn_conv_dims *d, int with_bias);
    size_t (*conv_shared)(const nn_conv_dims *d);
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
    /* *loss (backend memory) = the mean cross-entropy (0 without labels) */
    void (*softmax_ce_forward)(nn_ctx *ctx, float *probs, float *loss, const float *logits,
                               const int32_t *labels, int N, int K);
    void (*softmax_ce_backward)(nn_ctx *ctx, float *dlogits, const float *probs,
                                const int32_t *labels, int N, int K, float dloss);
    /* dst[i] = src[i] (copy) or dst[i] += src[i] (add) */
    void (*copy)(nn_ctx *ctx, float *dst, const float *src, size_t len);
    void (*add)(nn_ctx *ctx, float *dst, const float *src, size_t len);
    void (*zero)(nn_ctx *ctx, float *dst, size_t len);
    /* a batch norm as a per-channel affine map: from_batch: scale = gamma *
     * rstd (second = rstd), else scale = gamma / sqrt(var + eps) (second =
     * running var); shift = beta - mean * scale.  [C] each. */
    void (*bn_fold)(nn_ctx *ctx, float *scale, float *shift, const float *gamma,
                    const float *beta, const float *mean, const float *second, double eps,
                    int C, int from_batch);
    /* out [N, C, HW] = in * scale[c] + shift[c] */
    void (*channel_affine)(nn_ctx *ctx, float *out, const float *in, const float *scale,
                           const float *shift, int N, int C, int HW);
    /* torch.optim.SGD on a flat block; first: no momentum buffer yet */
    void (*sgd_step)(nn_ctx *ctx, float *param, const float *grad, float *mom,
                     size_t len, const nn_sgd *opt, int first);
} nn_backend;

extern const nn_backend nn_backend_cpu;
#if GPP_HAVE_CUDA
extern const nn_backend nn_backend_cuda;
/* Open CUDA device `index` for ctx (ctx->dev, stream, cuBLAS); 0, or a
 * GPP_E* code with *err ("no CUDA device: ..."). backend_cuda.cu. */
int nn__cuda_open(nn_ctx *ctx, int index, gpp_error *err);
/* Release what nn__cuda_open made (NULL dev is fine). */
void nn__cuda_close(nn_ctx *ctx);
/* Name and total memory (MiB) of device `index`; 0 or GPP_ENOTFOUND. */
int nn__cuda_device_info(int index, char *name, size_t cap, long long *mem_mb);
/* How the context's convolutions run: "cudnn", or "im2col+cublas (why)". */
const char *nn__cuda_conv_impl(nn_ctx *ctx);
#endif

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
    void *dev;                 /* CUDA: stream, cuBLAS handle (backend_cuda.cu) */
    int dev_index;             /* CUDA device number */
    int dev_err;               /* first device error (GPP_E*), sticky until read */
    char dev_msg[256];
};

/* 0, or the device error recorded since the last check (queued work is
 * waited for first), put into *err and cleared. */
int nn__ctx_check(nn_ctx *ctx, gpp_error *err);
/* The first device error noticed so far, as nn__ctx_check reports it, without
 * waiting for the device (0 when none). */
int nn__ctx_error(nn_ctx *ctx, gpp_error *err);

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
    float *params, *grads, *mom, *state;   /* backend memory */
    size_t n_params, n_state;
    /* host views: the same pointers on the cpu; on a device, host mirrors
     * kept coherent by nn__params_host / nn__params_dev (the flags live
     * behind a pointer so const accessors can update them) */
    float *hparams, *hgrads, *hmom, *hstate;
    struct nn_coherence *coh;
    void *harena;              /* device: host mirror of the arena (node reads) */
    float *xdev;               /* device: the batch [batch, C, H, W] */
    float *xpin;               /* device: pinned staging of the batch, then the labels */
    const float *xhost;        /* the caller's batch of the last forward */
    const int32_t *yhost;      /* ... and its labels (NULL: none) */
    float *loss_slot;          /* backend memory: the last forward's loss */
    float *spin[2];            /* nn_net_stats_queue: loss + logits [batch, classes] */
    int32_t *slab[2];          /* the labels of the step queued in each */
    int stat_n[2];             /* samples queued in each (0: none) */
    size_t spin_floats;        /* floats each spin holds */
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
    int restat;                /* nn_net_bn_restat on: training forwards re-estimate */
    long long restat_n;        /* forwards since nn_net_bn_restat(net, 1) */
};

/* The output of node id as the last forward left it (flatten resolves to
 * its input). */
const float *nn__node_out(const nn_net *net, int id);

/* Coherence of the parameter blocks with their host mirrors (device ctx
 * only; no-ops on the cpu).  nn__params_host: before host code reads or
 * writes the mirrors (downloads what the device changed; from then on the
 * host copy is authoritative).  nn__params_dev(net, modifies): before device
 * work (uploads a host-authoritative copy; modifies: the work changes the
 * blocks, so the device copy becomes authoritative). */
void nn__params_host(const nn_net *net);
void nn__params_dev(nn_net *net, int modifies);
/* A host view of backend memory `p` (bytes) inside the arena: p itself on
 * the cpu, else the arena's host mirror after a download.  NULL p: NULL. */
void *nn__host_view(const nn_net *net, const void *p, size_t bytes);
/* Replace the four blocks by host blocks hp, hm, hg, hs (allocated with
 * malloc/calloc, ownership passes; n_params / n_state already set): on a
 * device they become the mirrors and device copies are made.  0 or
 * GPP_ENOMEM (then nothing changed and the host blocks are freed). */
int nn__net_set_blocks(nn_net *net, float *hp, float *hm, float *hg, float *hs);

/* Recompute shapes, parameter counts and layout from the node fields;
 * returns 0 or GPP_EINVAL (*err names the layer).  Used by the builder and
 * by surgery. */
int nn__net_infer(nn_net *net, gpp_error *err);

#endif
