/* worker/nn/kernels.h - the engine's layer kernels (CPU, single thread).
 *
 * llm.c style: plain float pointers, NCHW, shapes in comments, and one
 * signature shape per layer:
 *   x_forward(out, cache..., in, params..., dims)
 *   x_backward(din, dparams..., dout, cache..., params..., dims)
 * Parameter gradients accumulate (+=); activation gradients overwrite.
 * A NULL din skips the input gradient (the data needs none); a NULL dbias
 * skips the bias.  Every fast path has its naive loop beside it (the test
 * reference and the fallback).  Threads: the backend (backend_cpu.c) splits
 * the work and calls these on slices; nothing here allocates.
 *
 * Not public API: worker code and tests include it; the GPP algorithms use it
 * for the deconvnet trace (conv's input gradient is the transposed conv). */
#ifndef NN_KERNELS_H
#define NN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- GEMM: the one wrapper around cblas_sgemm (row-major) ----------------
 * C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, op = transpose when
 * ta / tb is non-zero; lda, ldb, ldc are row strides of A, B, C as stored. */
void nn_gemm(int ta, int tb, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc);
/* The same product as three plain loops (double accumulator). */
void nn_gemm_naive(int ta, int tb, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc);

/* An epilogue fused into a forward pass, per output channel c after the
 * bias: y = y * scale[c] + shift[c] (scale or shift may be NULL: 1, 0),
 * then max(y, 0) when relu.  The engine folds an eval-mode batch norm and
 * its ReLU into the conv before them this way. */
typedef struct nn_epilogue {
    const float *scale, *shift;
    int relu;
    /* Winograd only (nn_wino_pool_ok): a 2x2 stride-2 max-pool of the
     * result, written to pool_out [N, OC, OH/2, OW/2] with its switches
     * (oh*OW + ow) instead of the full output */
    float *pool_out;
    int32_t *pool_switches;
} nn_epilogue;

/* y [P] of output channel c: y += bias[c] (bias may be NULL), then ep (may be
 * NULL). */
void nn_conv_epilogue(float *y, int P, int c, const float *bias, const nn_epilogue *ep);

/* ---- conv2d ---------------------------------------------------------------
 * in [N, C, H, W], weight [OC, C, K, K], bias [OC] or NULL,
 * out [N, OC, OH, OW] with OH = (H + 2*pad - K) / stride + 1 (floor). */
typedef struct nn_conv_dims {
    int N, C, H, W;      /* input */
    int OC, K, stride, pad;
    int OH, OW;          /* output (nn_conv_dims_init fills them) */
} nn_conv_dims;

/* Fill d->OH, d->OW from the others; returns 0, or -1 when the window does
 * not fit the (padded) input. */
int nn_conv_dims_init(nn_conv_dims *d);

/* Floats of scratch the fast conv needs in each of its `col` and `dcol`
 * arguments: (C*K*K + OC) * OH*OW * G, where G images share one GEMM when
 * the output is small (independent of N). */
size_t nn_conv_col_size(const nn_conv_dims *d);

/* im2col of one image: in [C, H, W] -> col [C*K*K, OH*OW] (zero padding). */
void nn_im2col(float *col, const float *in, const nn_conv_dims *d);
/* col2im of one image: din [C, H, W] = sum of col [C*K*K, OH*OW] (overwrites);
 * with nn_gemm this is the transposed convolution. */
void nn_col2im(float *din, const float *col, const nn_conv_dims *d);

/* Fast path: im2col + one GEMM per group of images; col is scratch of
 * nn_conv_col_size floats (unused for 1x1 stride-1 unpadded convs). */
void nn_conv2d_forward(float *out, float *col, const float *in,
                       const float *weight, const float *bias,
                       const nn_epilogue *ep, const nn_conv_dims *d);
/* din [N,C,H,W] (or NULL), dweight [OC,C,K,K] += (or NULL), dbias [OC] +=
 * (or NULL); col, dcol: scratch of nn_conv_col_size floats each. */
void nn_conv2d_backward(float *din, float *dweight, float *dbias,
                        float *col, float *dcol, const float *dout,
                        const float *in, const float *weight,
                        const nn_conv_dims *d);
/* Direct loops, the reference. */
void nn_conv2d_forward_naive(float *out, const float *in, const float *weight,
                             const float *bias, const nn_conv_dims *d);
void nn_conv2d_backward_naive(float *din, float *dweight, float *dbias,
                              const float *dout, const float *in,
                              const float *weight, const nn_conv_dims *d);

/* ---- Winograd F(4x4, 3x3): 3x3 stride-1 convs (winograd.c) ----------------
 * Transformed filters U [36, OC, C] (forward) and Ut [36, C, OC] (flipped,
 * for the input gradient); the filter gradient accumulates in the same
 * domain, dU [36, OC, C], and nn_wino_filter_grad maps it back.  Results
 * equal the direct conv up to float rounding (about 1e-5 relative). */
/* 1 when the Winograd forward can also max-pool 2x2 / stride 2 (ep->pool_out). */
int nn_wino_pool_ok(const nn_conv_dims *d);
/* 1 when d is a conv the Winograd path serves (3x3, stride 1, pad <= 2,
 * C and OC >= 8, OC*C <= 16384, output at least 4x4). */
int nn_wino_eligible(const nn_conv_dims *d);
/* Floats of U, Ut or dU: 36*OC*C. */
size_t nn_wino_u_size(const nn_conv_dims *d);
/* Floats of scratch one thread's forward or backward pass needs. */
size_t nn_wino_scratch_size(const nn_conv_dims *d);
/* U for output channels [oc0, oc1) (the backend splits them). */
void nn_wino_filter(float *U, const float *weight, const nn_conv_dims *d, int oc0, int oc1);
/* Ut for output channels [oc0, oc1) of the forward conv. */
void nn_wino_filter_t(float *Ut, const float *weight, const nn_conv_dims *d, int oc0, int oc1);
/* dweight [OC, C, 3, 3] += G^T dU G for output channels [oc0, oc1). */
void nn_wino_filter_grad(float *dweight, const float *dU, const nn_conv_dims *d, int oc0,
                         int oc1);
/* out [N, OC, OH, OW] = conv(in, U) + bias (or NULL), then ep (or NULL). */
void nn_conv2d_forward_wino(float *out, float *scratch, const float *in, const float *U,
                            const float *bias, const nn_epilogue *ep,
                            const nn_conv_dims *d);
/* din [N, C, H, W] = the input gradient (or NULL: skipped), using Ut;
 * dU += the filter gradient in the transformed domain (or NULL: skipped). */
void nn_conv2d_backward_wino(float *din, float *dU, float *scratch, const float *dout,
                             const float *in, const float *Ut, const nn_conv_dims *d);

/* ---- fully connected ------------------------------------------------------
 * in [N, IN], weight [OUT, IN] (PyTorch layout), bias [OUT] or NULL,
 * out [N, OUT]. */
void nn_fc_forward(float *out, const float *in, const float *weight,
                   const float *bias, int N, int IN, int OUT);
void nn_fc_backward(float *din, float *dweight, float *dbias,
                    const float *dout, const float *in, const float *weight,
                    int N, int IN, int OUT);
void nn_fc_forward_naive(float *out, const float *in, const float *weight,
                         const float *bias, int N, int IN, int OUT);

/* ---- batch norm -----------------------------------------------------------
 * in, out [N, C, HW]; gamma, beta [C]; cache mean, rstd [C];
 * running_mean, running_var [C].  Channels c0 <= c < c1 are processed (the
 * backend splits channels between threads; pass 0, C for all). */
typedef struct nn_bn_dims {
    int N, C, HW;
    int c0, c1;          /* channel range to process */
    float eps, momentum; /* PyTorch meaning: running = (1-m)*running + m*batch */
    int relu;            /* forward: out = max(bn, 0) (a fused ReLU) */
} nn_bn_dims;

/* Training: batch statistics (biased variance to normalise, unbiased to the
 * running variance, like PyTorch), updates running stats, fills the cache. */
void nn_batchnorm_forward_train(float *out, float *mean, float *rstd,
                                const float *in, const float *gamma,
                                const float *beta, float *running_mean,
                                float *running_var, const nn_bn_dims *d);
/* Evaluation: running statistics. */
void nn_batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                               const float *beta, const float *running_mean,
                               const float *running_var, const nn_bn_dims *d);
/* Backward of the training forward (batch statistics).  With a fused ReLU,
 * relu_out is the forward's output and dout the ReLU's output gradient
 * (used where relu_out > 0); else relu_out is NULL. */
void nn_batchnorm_backward(float *din, float *dgamma, float *dbeta,
                           const float *dout, const float *relu_out, const float *in,
                           const float *mean, const float *rstd,
                           const float *gamma, const nn_bn_dims *d);

/* ---- relu: out = max(in, 0); len = N*C*H*W ---------------------------------- */
void nn_relu_forward(float *out, const float *in, size_t len);
/* din = dout where out > 0, else 0 (out is the forward's output). */
void nn_relu_backward(float *din, const float *dout, const float *out, size_t len);

/* ---- pooling ----------------------------------------------------------------
 * in [N, C, H, W] -> out [N, C, OH, OW]; OH = (H + 2*pad - K)/stride + 1. */
typedef struct nn_pool_dims {
    int N, C, H, W, K, stride, pad, OH, OW;
} nn_pool_dims;
/* Fill OH, OW; -1 when the window does not fit or pad > K/2. */
int nn_pool_dims_init(nn_pool_dims *d);

/* Max pool; padding counts as -inf.  switches [N, C, OH, OW]: the index
 * ih*W + iw of each output's argmax in its input plane (first on ties). */
void nn_maxpool_forward(float *out, int32_t *switches, const float *in,
                        const nn_pool_dims *d);
/* din [N, C, H, W] (overwrites) = dout routed through the switches. */
void nn_maxpool_backward(float *din, const float *dout, const int32_t *switches,
                         const nn_pool_dims *d);
/* Average pool, PyTorch count_include_pad=True (padding counts as zeros). */
void nn_avgpool_forward(float *out, const float *in, const nn_pool_dims *d);
void nn_avgpool_backward(float *din, const float *dout, const nn_pool_dims *d);

/* Global average pool: in [N, C, HW] -> out [N, C]. */
void nn_gap_forward(float *out, const float *in, int N, int C, int HW);
void nn_gap_backward(float *din, const float *dout, int N, int C, int HW);

/* ---- concat along channels --------------------------------------------------
 * Input i is [N, Ci, HW]; out [N, sum Ci, HW]; slice i starts at channel off. */
void nn_concat_forward_one(float *out, const float *in, int N, int Ci, int off,
                           int Ctot, int HW);
/* din_i [N, Ci, HW] = (accumulate ? din_i : 0) + slice of dout. */
void nn_concat_backward_one(float *din, const float *dout, int N, int Ci,
                            int off, int Ctot, int HW, int accumulate);

/* ---- dropout (inverted): out = in * mask, mask = 0 or 1/(1-p) ---------------- */
/* mask [len] is filled by the caller (the net draws it from its RNG). */
void nn_dropout_forward(float *out, const float *in, const float *mask, size_t len);
void nn_dropout_backward(float *din, const float *dout, const float *mask, size_t len);

/* ---- softmax cross-entropy (mean over the batch) -----------------------------
 * logits [N, K], labels [N] in [0, K); probs [N, K] cache.  Returns the loss. */
float nn_softmax_ce_forward(float *probs, const float *logits,
                            const int32_t *labels, int N, int K);
/* dlogits [N, K] = dloss * (probs - onehot) / N. */
void nn_softmax_ce_backward(float *dlogits, const float *probs,
                            const int32_t *labels, int N, int K, float dloss);

#endif
