/* gpp/nn.h - the engine of gpp-worker: build a network from its description
 * (gpp/netdesc.h), train it (forward, backward, SGD), evaluate it, read any
 * layer's features, count its parameters and MACs, and cut channels out of
 * it.  CPU on OpenBLAS, or CUDA (cuBLAS) in a build with nvcc; the backend is
 * chosen once per run (nn_ctx).
 *
 * Data layout: float32, NCHW, one sample after the other.  Node 0 of a
 * network is the data ("input"); nodes 1.. are the layers of the description
 * in order, plus a softmax-cross-entropy at the end when the description has
 * none.  A typical training step:
 *
 *   nn_net_zero_grad(net);
 *   nn_net_forward(net, x, labels, n, 1, &loss, err);
 *   nn_net_backward(net, NULL, 0, err);
 *   nn_net_sgd_step(net, &opt);          // opt.lr = nn_lr_at(&sched, epoch)
 *
 * Devices (nn_ctx "cuda"): parameters, gradients, momentum, running
 * statistics, activations and scratch live in device memory (cudaMalloc);
 * the calls above queue device work and return (a forward asked for *loss
 * waits for it).  Host code sees the net only through this API, which hands
 * out host views: nn_net_output / nn_net_output_grad / nn_net_switches copy
 * the node's buffer to a host mirror on each call; nn_net_tensor*,
 * nn_net_*_block return host mirrors of the parameter blocks, brought up to
 * date on the call (see nn_net_sync_to_host), and whatever host code writes
 * there is uploaded before the next device work (nn_net_sync_to_device).
 * A pointer from those accessors taken before a training step (forward,
 * backward, SGD, zero_grad) shows the values of before the step; ask again.
 * On the cpu the views are the buffers themselves and the syncs are no-ops.
 *
 * Nothing is allocated in those four calls: nn_net_reserve(net, B) sizes
 * every buffer for batches of up to B samples once.  Results are identical
 * for the same seed, data and thread count.  A network is used by one thread
 * at a time; its context's pool does the parallel work.
 *
 * Speed: 3x3 stride-1 convs run as Winograd F(4x4, 3x3) (results equal the
 * direct conv to ~1e-5 relative), others as im2col + GEMM.  A bn whose only
 * consumer is a relu writes the relu's output itself (the bn's own output is
 * then not kept), and in evaluation a conv whose only consumer is a bn folds
 * that bn (and its relu, and a 2x2 stride-2 max-pool after the relu) into
 * one pass (the outputs in between are not kept; the pool's switches are).
 * nn_net_output computes such an output when it is asked for it (so the net
 * is not const there); nothing else changes.
 */
#ifndef GPP_NN_H
#define GPP_NN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/error.h"
#include "gpp/rng.h"

typedef enum nn_op {
    NN_OP_INPUT = 0,       /* the data */
    NN_OP_CONV,
    NN_OP_BN,
    NN_OP_RELU,
    NN_OP_MAXPOOL,
    NN_OP_AVGPOOL,
    NN_OP_GAP,             /* "global-avgpool" */
    NN_OP_FC,
    NN_OP_CONCAT,
    NN_OP_FLATTEN,
    NN_OP_DROPOUT,
    NN_OP_SOFTMAX_CE,      /* "softmax-cross-entropy" */
    NN_OP_COUNT
} nn_op;

/* The netdesc type name of an op ("conv", "global-avgpool", ...; "input"). */
const char *nn_op_name(nn_op op);

/* ---- run context: backend and threads ------------------------------------- */

/* OpenBLAS's kernels (worker/nn/blas_core.c).  Debian 12's OpenBLAS falls
 * back to its generic SSE3 kernels ("Prescott") on CPUs newer than it knows;
 * gpp-worker then restarts itself once with OPENBLAS_CORETYPE named. */
enum { NN_CPU_AVX = 1u, NN_CPU_AVX2 = 2u /* with FMA */, NN_CPU_AVX512 = 4u /* F VL BW DQ CD */ };
/* This CPU's NN_CPU_* bits (0 off x86). */
unsigned nn_cpu_features(void);
/* The OPENBLAS_CORETYPE to restart with, or NULL to keep what loaded: NULL
 * when env_coretype is set and not empty (the user's choice, kept whatever
 * it is), when corename (openblas_get_corename()) is not "Prescott", or when
 * the CPU has no AVX; else "SkylakeX" (AVX-512), "Haswell" (AVX2 + FMA) or
 * "SandyBridge" (AVX). */
const char *nn_blas_core_pick(const char *corename, const char *env_coretype,
                              unsigned features);
/* Call first in main, before any thread starts: when nn_blas_core_pick says
 * so, set OPENBLAS_CORETYPE and execv /proc/self/exe with argv (same pid,
 * same descriptors); returns only when nothing is to be done or the exec
 * failed (then a line on stderr, and the generic kernels). */
void nn_blas_core_fix(char **argv);
/* The kernels OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...). */
const char *nn_blas_core(void);

typedef struct nn_ctx nn_ctx;

/* A context for `device` with `threads` >= 1 threads (the caller's thread
 * is one of them).  device: "cpu" (NULL means "cpu"), or "cuda" / "cuda:N"
 * in a build with CUDA (GPP_HAVE_CUDA): the CUDA backend on device N (its
 * host side is one thread).  Sets OpenBLAS to one thread: the engine
 * parallelises itself.  NULL with *err filled on failure: an unknown device,
 * "cuda" in a cpu-only build (GPP_EINVAL), no working GPU ("no CUDA device:
 * <CUDA's reason>", GPP_ENOTFOUND), no memory.  Free with nn_ctx_free after
 * every net using it. */
nn_ctx *nn_ctx_new(const char *device, int threads, gpp_error *err);
/* Stop the threads and free (NULL is fine). */
void nn_ctx_free(nn_ctx *ctx);
/* The number of threads. */
int nn_ctx_threads(const nn_ctx *ctx);
/* The backend's name ("cpu" or "cuda"). */
const char *nn_ctx_device(const nn_ctx *ctx);
/* The device's name ("cpu", or the GPU's, e.g. "NVIDIA H100 80GB HBM3")
 * into name[cap] and its memory in MiB (host RAM for the cpu) into *mem_mb
 * (either may be NULL).  0, or GPP_ENOTFOUND. */
int nn_ctx_device_info(const nn_ctx *ctx, char *name, size_t cap, long long *mem_mb);
/* Wait until the work queued on the device is done (a no-op on the cpu);
 * 0, or the device error that happened since the last check (out of
 * device memory: GPP_ENOMEM, code "out_of_memory"; else GPP_EIO, code
 * "device_error"), with *err. */
int nn_ctx_synchronize(nn_ctx *ctx, gpp_error *err);

/* ---- building ----------------------------------------------------------------- */

typedef struct nn_net nn_net;

/* Build a network from a description (array or object, see gpp/netdesc.h;
 * validated and defaulted with gpp_netdesc_canonical).  `input` [C, H, W]
 * and `classes` override the description's "input"/"classes" (pass NULL / 0
 * to take them from it; one of the two must give them).  Shapes are
 * inferred and checked (a window larger than its input, a concat of
 * different sizes, a logit count that is not `classes` are errors naming
 * the layer).  Weights: He-normal from `seed` (biases 0, bn gamma 1, beta 0).
 * NULL with *err filled on failure.  Free with nn_net_free. */
nn_net *nn_net_new(nn_ctx *ctx, const cJSON *desc, const int input[3], int classes,
                   uint64_t seed, gpp_error *err);
/* Free (NULL is fine). */
void nn_net_free(nn_net *net);

/* Allocate the activation, gradient and scratch buffers for batches of up
 * to `batch` samples (touching every page once).  Call again to change it.
 * 0, GPP_EINVAL or GPP_ENOMEM. */
int nn_net_reserve(nn_net *net, int batch, gpp_error *err);
/* The reserved batch size (0 before nn_net_reserve). */
int nn_net_batch(const nn_net *net);

/* The network's current description, canonical, with "input" and "classes"
 * (after surgery: the new widths).  Caller frees with cJSON_Delete; NULL when
 * out of memory. */
cJSON *nn_net_to_json(const nn_net *net);

/* ---- running ------------------------------------------------------------------ */

/* Forward `n` (1..batch) samples x [n, C, H, W] (kept by pointer until the
 * next forward: backward reads it).  train: batch-norm uses batch statistics
 * and updates its running statistics, dropout draws a mask; otherwise
 * running statistics and no dropout.  labels [n] in [0, classes), or NULL
 * (no loss; logits and probabilities are still computed).  *loss (may be
 * NULL) gets the mean cross-entropy.  0, or GPP_EINVAL (no reserve, n too
 * large, label out of range). */
int nn_net_forward(nn_net *net, const float *x, const int32_t *labels, int n,
                   int train, float *loss, gpp_error *err);

/* Re-estimating batch-norm statistics (after surgery the running statistics
 * no longer fit the layers' inputs).  nn_net_bn_restat(net, 1): from now on
 * each training forward sets every batch norm's running mean and variance to
 * the mean of the batch statistics of the training forwards since the call
 * (the first one replaces them: torch's momentum=None), and dropout passes
 * its input through (no mask drawn, the net's RNG untouched); forward
 * without labels and do not step.  nn_net_bn_restat(net, 0): back to each
 * layer's momentum.  Returns the number of batch-norm layers. */
int nn_net_bn_restat(nn_net *net, int on);

/* An extra gradient added to a node's output gradient during backward (the
 * push step's discriminant term on the pre-decision features). */
typedef struct nn_grad_inject {
    int node;              /* node id */
    const float *grad;     /* [n, C, H, W] of that node's output */
} nn_grad_inject;

/* Backward through the last forward (which must have been a training
 * forward: GPP_EINVAL otherwise): the cross-entropy's gradient when it had
 * labels, plus the injected gradients.  Parameter gradients accumulate into
 * the gradient block; node output gradients are overwritten.  0 or
 * GPP_EINVAL. */
int nn_net_backward(nn_net *net, const nn_grad_inject *inject, int n_inject,
                    gpp_error *err);

/* Zero the gradient block. */
void nn_net_zero_grad(nn_net *net);

/* torch.optim.SGD: g = grad + weight_decay * p; with momentum
 * buf = momentum * buf + (1 - dampening) * g (buf = g on the first step),
 * g = nesterov ? g + momentum * buf : buf; p -= lr * g.  Over every
 * parameter (weights, biases, bn gamma/beta). */
typedef struct nn_sgd {
    float lr;
    float momentum;        /* 0 = plain SGD */
    float dampening;
    float weight_decay;
    int nesterov;
} nn_sgd;
void nn_net_sgd_step(nn_net *net, const nn_sgd *opt);
/* SGD steps taken so far (0 means the momentum buffer starts fresh); set
 * when restoring a checkpoint. */
long long nn_net_sgd_steps(const nn_net *net);
void nn_net_set_sgd_steps(nn_net *net, long long steps);

/* Learning-rate schedules, in the caller's unit t (epochs or steps). */
typedef enum nn_lr_kind {
    NN_LR_CONSTANT = 0,    /* base */
    NN_LR_STEP,            /* base * gamma^(t / step_size) */
    NN_LR_COSINE,          /* min + (base - min)(1 + cos(pi t / total)) / 2, t <= total */
} nn_lr_kind;
typedef struct nn_lr_schedule {
    nn_lr_kind kind;
    float base;
    int step_size;         /* step */
    float gamma;           /* step */
    int total;             /* cosine: T_max */
    float min_lr;          /* cosine: eta_min */
} nn_lr_schedule;
float nn_lr_at(const nn_lr_schedule *s, int t);

/* Number of samples among the last forward's n whose logit argmax equals
 * the label. */
int nn_net_correct(const nn_net *net, const int32_t *labels, int n);

/* The same two numbers without waiting for the device: after a training
 * forward with labels, nn_net_stats_queue(net, slot) queues copies of the
 * step's loss and logits into slot 0 or 1 (two steps may be in flight) and
 * keeps its labels; nn_net_stats_take(net, slot, ...) later waits for that
 * copy and gives the step's loss and how many of its samples the logits got
 * right; 0, or a device error (GPP_EINVAL: nothing queued in the slot, or a
 * forward without labels).  A training loop that takes step k's numbers
 * after queueing step k+1 keeps the device busy (nn_net_forward with a loss
 * pointer and nn_net_correct each wait for it). */
void nn_net_stats_queue(nn_net *net, int slot);
int nn_net_stats_take(nn_net *net, int slot, float *loss, int *correct, gpp_error *err);

/* ---- looking inside ---------------------------------------------------------- */

typedef struct nn_node_info {
    const char *name;      /* owned by the net */
    nn_op op;
    int C, H, W;           /* output shape of one sample */
    int n_inputs;
    const int *inputs;     /* node ids (0 = data); owned by the net */
    int out, k, stride, pad, bias;   /* fields of conv / fc / pools */
    long long params;      /* weights + biases (bn: gamma + beta) */
    long long macs;        /* multiply-adds per sample (conv, fc; else 0) */
} nn_node_info;

/* Number of nodes, the data node included. */
int nn_net_num_nodes(const nn_net *net);
/* Describe node id; 0 or GPP_EINVAL when id is out of range. */
int nn_net_node(const nn_net *net, int id, nn_node_info *info);
/* The id of the node called `name` ("input" is 0), or -1. */
int nn_net_find(const nn_net *net, const char *name);
/* The pre-decision node: the input of the last fc (its features are the
 * M-vector METHOD.md's push and prune work on), or -1 when there is no fc. */
int nn_net_predecision(const nn_net *net);
/* The logits node (the input of the softmax-cross-entropy). */
int nn_net_logits(const nn_net *net);
/* Node id's output [n, C, H, W] after the last forward (the softmax node's
 * is the probabilities; an output the forward fused away is computed now),
 * or NULL when id is out of range or nothing is reserved.  Valid until the
 * next forward. */
const float *nn_net_output(nn_net *net, int id);
/* The gradient of node id's output after the last backward, or NULL (the
 * data node, or no gradient reached it). */
const float *nn_net_output_grad(nn_net *net, int id);
/* Max-pool node id's switches [n, C, OH, OW] (ih*W + iw in its input
 * plane) after the last forward, or NULL. */
const int32_t *nn_net_switches(const nn_net *net, int id);
/* Totals over the nodes. */
long long nn_net_params(const nn_net *net);
long long nn_net_macs(const nn_net *net);

/* Named tensors, the checkpoint's view (gpp/ckpt.h names: "conv1.weight",
 * "conv1.bias", "bn1.weight" (gamma), "bn1.bias" (beta),
 * "bn1.running_mean", "bn1.running_var"). */
#define NN_TENSOR_NAME_MAX 96   /* a layer name (<= 64) + ".running_mean" */
typedef struct nn_tensor {
    char name[NN_TENSOR_NAME_MAX];
    int node;
    int ndim;
    int shape[4];          /* conv weight [OC, C, K, K], fc weight [OUT, IN], else [len] */
    size_t len;
    float *data;
    float *grad;           /* NULL for running statistics */
    float *momentum;       /* NULL for running statistics */
} nn_tensor;
int nn_net_num_tensors(const nn_net *net);
/* Tensor i (0 <= i < count): 0, or GPP_EINVAL when out of range. */
int nn_net_tensor(const nn_net *net, int i, nn_tensor *t);
/* The tensor called `name`: 0, or GPP_ENOTFOUND. */
int nn_net_tensor_find(const nn_net *net, const char *name, nn_tensor *t);

/* The flat blocks (same layout, len floats each) and the dropout RNG. */
float *nn_net_param_block(nn_net *net, size_t *len);
float *nn_net_grad_block(nn_net *net, size_t *len);
float *nn_net_momentum_block(nn_net *net, size_t *len);
gpp_rng *nn_net_rng(nn_net *net);

/* Explicit coherence of the parameter blocks (device contexts; no-ops on
 * the cpu).  nn_net_sync_to_host: bring the host mirrors up to date with
 * the device (the accessors above do it themselves) and treat the host copy
 * as the current one.  nn_net_sync_to_device: upload the host mirrors now
 * (otherwise done before the next device work after a host access).
 * 0, or the device error with *err. */
int nn_net_sync_to_host(nn_net *net, gpp_error *err);
int nn_net_sync_to_device(nn_net *net, gpp_error *err);

/* Per-node timing: when on, forward and backward add their wall time per
 * node; read with nn_net_node_time (seconds), clear with on = 1 again. */
void nn_net_set_profile(nn_net *net, int on);
int nn_net_node_time(const nn_net *net, int id, double *fwd_s, double *bwd_s);

/* ---- checkpoints (gpp/ckpt.h) ----------------------------------------------- */

/* Write the full state to `path` (atomically): "network" (nn_net_to_json),
 * every tensor of nn_net_tensor, the momentum buffers as "optim/<name>"
 * (once an SGD step was taken), "meta" (a copy of `meta`, or {}) and
 * "state" (a copy of `state`, or {}, plus "engine": {"sgd_steps",
 * "dropout_rng"}).  The caller adds its own position (epoch, step, data
 * order, its RNGs) to `state`.  0, or a GPP_E* code with *err. */
int nn_net_save(const nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                gpp_error *err);
/* Build the network of checkpoint `path` and restore everything
 * nn_net_save wrote: training resumes exactly where it stopped.  Without
 * optimiser tensors (or without "state"."engine") the momentum starts
 * fresh.  *doc_out (may be NULL) gets the whole JSON document (the caller's
 * "meta" and "state"; free with cJSON_Delete).  Not reserved yet.  NULL with
 * *err on failure (unreadable file, missing or mis-sized tensor). */
nn_net *nn_net_load(nn_ctx *ctx, const char *path, cJSON **doc_out, gpp_error *err);

/* ---- surgery ------------------------------------------------------------------ */

/* Remove output channels `channels[0..n)` (distinct, in range) of node
 * `node` and update every consumer: a conv or fc loses those filters and
 * biases; a bn, relu, pool, dropout or global-avgpool passes the removal to
 * its producer (so a bn's channels are its conv's); a concat's channel maps
 * to its branch.  Consumers: bn entries, conv input depth, fc columns
 * (through a flatten: the whole H*W block per channel), concat offsets.
 * Parameters, momentum and running statistics are re-packed, gradients
 * zeroed, counts recomputed; buffers are re-reserved at the same batch.
 * Removing every channel of a layer, or the logits, is GPP_EINVAL; on error
 * the net is unchanged. */
int nn_net_remove_channels(nn_net *net, int node, const int *channels, int n,
                           gpp_error *err);

/* ---- model zoo ------------------------------------------------------------------ */

/* The zoo names, NULL-terminated: lenet5, lenet300-100, vgg-small,
 * vgg16-cifar, inception-base. */
const char *const *nn_zoo_names(void);
/* The description of zoo model `name` for `input` [C, H, W] and `classes`
 * (an object with "input", "classes", "layers"), or NULL with *err
 * (unknown name).  Caller frees with cJSON_Delete. */
cJSON *nn_zoo_model(const char *name, const int input[3], int classes,
                    gpp_error *err);

/* ---- benchmark ------------------------------------------------------------------ */

typedef struct nn_bench_opts {
    const char *model;     /* zoo name */
    const char *device;    /* "cpu", "cuda", "cuda:N" */
    int batch, steps, warmup, threads;
    int input[3];
    int classes;
    uint64_t seed;
} nn_bench_opts;
/* Time `steps` training steps (forward + backward + SGD momentum 0.9) and
 * as many inference batches on random data after `warmup` steps; returns
 * {"model", "device", "device_name", "batch", "threads", "input", "steps",
 *  "train_images_per_s", "infer_images_per_s", "peak_rss_kb", "params",
 *  "macs", "layers": [{"name", "type", "params", "macs", "fwd_ms",
 *  "bwd_ms", "infer_ms"}]} (per-layer milliseconds per training step and per
 *  inference batch; a layer fused into the one before it shows 0), or NULL
 *  with *err.  On a device the timed loops run unprofiled and end with
 *  nn_ctx_synchronize; the per-layer times come from a profiled pass after
 *  them (which waits for the device around every node). */
cJSON *nn_bench_run(const nn_bench_opts *o, gpp_error *err);

#endif
