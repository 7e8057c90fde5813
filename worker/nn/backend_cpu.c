/* The CPU backend: the kernels of layers.c run on slices by the context's
 * thread pool.  Images (or rows, planes, channels, elements) are split into
 * as many parts as there are threads, so a result depends only on the
 * thread count; weight-gradient partials of the parts are summed in part
 * order.  Scratch (im2col, Winograd tiles) is per thread (tid), partial
 * sums per part: region i of the context's scratch holds thread i's buffers
 * first and part i's partial sums after them.  OpenBLAS runs
 * single-threaded inside each part. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ALIGN_FLOATS 16   /* 64 bytes: split boundaries, scratch offsets */

static size_t round_up(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* Split [0, n) into T parts whose boundaries are multiples of 16. */
static void split_aligned(size_t n, int t, int T, size_t *lo, size_t *hi)
{
    size_t blocks = (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS;
    long bl, bh;
    nn_split((long)blocks, t, T, &bl, &bh);
    *lo = (size_t)bl * ALIGN_FLOATS;
    *hi = (size_t)bh * ALIGN_FLOATS;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

/* ---- conv -------------------------------------------------------------------- */

/* nn_backend_conv_scratch: see internal.h. */
size_t nn_backend_conv_scratch(const nn_conv_dims *d, int with_bias)
{
    if (nn_wino_eligible(d))   /* the pass's buffers, then the thread's dU */
        return round_up(nn_wino_scratch_size(d)) + round_up(nn_wino_u_size(d));
    size_t col = round_up(nn_conv_col_size(d));
    size_t wlen = round_up((size_t)d->OC * d->C * d->K * d->K);
    return 2 * col + wlen + round_up(with_bias ? (size_t)d->OC : 0);
}

/* nn_backend_conv_shared: see internal.h. */
size_t nn_backend_conv_shared(const nn_conv_dims *d)
{
    return nn_wino_eligible(d) ? nn_wino_u_size(d) : 0;
}

/* ---- Winograd: filters transformed once per call into ctx->shared, images
 * split between parts, filter gradients summed in part order ---------------- */

enum { WG_FILTER, WG_FILTER_T, WG_FORWARD, WG_BACKWARD, WG_REDUCE, WG_GRAD };

typedef struct wino_task {
    int kind;
    nn_ctx *ctx;
    const nn_epilogue *ep;
    float *out, *din, *dweight, *dbias;
    const float *in, *dout, *weight, *bias;
    const nn_conv_dims *d;
} wino_task;

static float *wino_du(nn_ctx *ctx, const nn_conv_dims *d, int t)
{
    return nn_ctx_scratch(ctx, t) + round_up(nn_wino_scratch_size(d));
}

static void wino_task_fn(void *arg, int t, int T, int tid)
{
    wino_task *a = arg;
    const nn_conv_dims *d = a->d;
    const size_t in_sz = (size_t)d->C * d->H * d->W;
    const size_t out_sz = (size_t)d->OC * d->OH * d->OW;
    long lo, hi;
    switch (a->kind) {
    case WG_FILTER:
    case WG_FILTER_T:
        nn_split(d->OC, t, T, &lo, &hi);
        if (hi <= lo) return;
        if (a->kind == WG_FILTER)
            nn_wino_filter(a->ctx->shared, a->weight, d, (int)lo, (int)hi);
        else
            nn_wino_filter_t(a->ctx->shared, a->weight, d, (int)lo, (int)hi);
        return;
    case WG_FORWARD:
    case WG_BACKWARD: {
        float *du = a->kind == WG_BACKWARD && a->dweight ? wino_du(a->ctx, d, t) : NULL;
        if (du) memset(du, 0, sizeof(float) * nn_wino_u_size(d));
        nn_split(d->N, t, T, &lo, &hi);
        if (hi <= lo) return;
        nn_conv_dims s = *d;
        s.N = (int)(hi - lo);
        if (a->kind == WG_FORWARD) {
            nn_epilogue ep;
            const nn_epilogue *e = a->ep;
            if (e && e->pool_out) {   /* this part's images of the pooled output */
                const size_t po = (size_t)d->OC * (d->OH / 2) * (d->OW / 2);
                ep = *e;
                ep.pool_out += lo * po;
                ep.pool_switches += lo * po;
                e = &ep;
            }
            nn_conv2d_forward_wino(a->out + lo * out_sz, nn_ctx_scratch(a->ctx, tid),
                                   a->in + lo * in_sz, a->ctx->shared, a->bias, e, &s);
        }
        else
            nn_conv2d_backward_wino(a->din ? a->din + lo * in_sz : NULL, du,
                                    nn_ctx_scratch(a->ctx, tid), a->dout + lo * out_sz,
                                    a->in + lo * in_sz, a->ctx->shared, &s);
        return;
    }
    case WG_REDUCE: {
        size_t l2, h2;
        split_aligned(nn_wino_u_size(d), t, T, &l2, &h2);
        float *dst = wino_du(a->ctx, d, 0);
        for (int u = 1; u < T; u++) {
            const float *p = wino_du(a->ctx, d, u);
            for (size_t i = l2; i < h2; i++) dst[i] += p[i];
        }
        return;
    }
    case WG_GRAD:
        nn_split(d->OC, t, T, &lo, &hi);
        if (hi <= lo) return;
        if (a->dweight) nn_wino_filter_grad(a->dweight, wino_du(a->ctx, d, 0), d, (int)lo, (int)hi);
        if (a->dbias) {
            const size_t P = (size_t)d->OH * d->OW;
            for (long oc = lo; oc < hi; oc++) {
                float sum = 0.0f;
                for (int n = 0; n < d->N; n++) {
                    const float *r = a->dout + n * out_sz + (size_t)oc * P;
                    float s1 = 0.0f;
#pragma omp simd reduction(+ : s1)
                    for (size_t i = 0; i < P; i++) s1 += r[i];
                    sum += s1;
                }
                a->dbias[oc] += sum;
            }
        }
        return;
    default:
        return;
    }
}

static void wino_forward(nn_ctx *ctx, float *out, const float *in, const float *weight,
                         const float *bias, const nn_epilogue *ep, const nn_conv_dims *d)
{
    wino_task a = {.kind = WG_FILTER, .ctx = ctx, .ep = ep, .out = out, .in = in,
                   .weight = weight, .bias = bias, .d = d};
    nn_pool_run(ctx->pool, wino_task_fn, &a);
    a.kind = WG_FORWARD;
    nn_pool_run(ctx->pool, wino_task_fn, &a);
}

static void wino_backward(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                          const float *dout, const float *in, const float *weight,
                          const nn_conv_dims *d)
{
    wino_task a = {.kind = WG_FILTER_T, .ctx = ctx, .din = din, .dweight = dweight,
                   .dbias = dbias, .dout = dout, .in = in, .weight = weight, .d = d};
    if (din) nn_pool_run(ctx->pool, wino_task_fn, &a);
    a.kind = WG_BACKWARD;
    nn_pool_run(ctx->pool, wino_task_fn, &a);
    if (ctx->T > 1 && dweight) {
        a.kind = WG_REDUCE;
        nn_pool_run(ctx->pool, wino_task_fn, &a);
    }
    if (dweight || dbias) {
        a.kind = WG_GRAD;
        nn_pool_run(ctx->pool, wino_task_fn, &a);
    }
}

typedef struct conv_task {
    nn_ctx *ctx;
    const nn_epilogue *ep;
    float *out, *din, *dweight, *dbias;
    const float *in, *dout, *weight, *bias;
    const nn_conv_dims *d;
    int by_oc;                 /* forward: split output channels, not images */
} conv_task;

static void conv_forward_task(void *arg, int t, int T, int tid)
{
    conv_task *a = arg;
    const nn_conv_dims *d = a->d;
    float *col = nn_ctx_scratch(a->ctx, tid);
    const size_t in_sz = (size_t)d->C * d->H * d->W;
    const size_t out_sz = (size_t)d->OC * d->OH * d->OW;
    if (!a->by_oc) {
        long lo, hi;
        nn_split(d->N, t, T, &lo, &hi);
        if (hi <= lo) return;
        nn_conv_dims s = *d;
        s.N = (int)(hi - lo);
        nn_conv2d_forward(a->out + lo * out_sz, col, a->in + lo * in_sz, a->weight,
                          a->bias, a->ep, &s);
        return;
    }
    /* few images: each thread computes a block of output channels */
    long lo, hi;
    nn_split(d->OC, t, T, &lo, &hi);
    if (hi <= lo) return;
    const int P = d->OH * d->OW, CKK = d->C * d->K * d->K;
    for (int n = 0; n < d->N; n++) {
        const float *x = a->in + n * in_sz;
        const float *B = x;
        if (!(d->K == 1 && d->stride == 1 && d->pad == 0)) {
            nn_im2col(col, x, d);
            B = col;
        }
        float *y = a->out + n * out_sz + (size_t)lo * P;
        nn_gemm(0, 0, (int)(hi - lo), P, CKK, 1.0f, a->weight + (size_t)lo * CKK, CKK,
                B, P, 0.0f, y, P);
        if (a->bias || a->ep)
            for (long oc = lo; oc < hi; oc++)
                nn_conv_epilogue(y + (size_t)(oc - lo) * P, P, (int)oc, a->bias, a->ep);
    }
}

static void cpu_conv_forward(nn_ctx *ctx, float *out, const float *in,
                             const float *weight, const float *bias,
                             const nn_epilogue *ep, const nn_conv_dims *d)
{
    if (nn_wino_eligible(d) && ctx->shared_len >= nn_wino_u_size(d)) {
        wino_forward(ctx, out, in, weight, bias, ep, d);
        return;
    }
    conv_task a = {.ctx = ctx, .ep = ep, .out = out, .in = in, .weight = weight,
                   .bias = bias, .d = d, .by_oc = d->N < ctx->T};
    nn_pool_run(ctx->pool, conv_forward_task, &a);
}

static void conv_backward_task(void *arg, int t, int T, int tid)
{
    conv_task *a = arg;
    const nn_conv_dims *d = a->d;
    long lo, hi;
    nn_split(d->N, t, T, &lo, &hi);
    float *s = nn_ctx_scratch(a->ctx, tid);       /* the thread's im2col buffers */
    size_t col_sz = round_up(nn_conv_col_size(d));
    size_t wlen = (size_t)d->OC * d->C * d->K * d->K;
    float *col = s, *dcol = s + col_sz;
    float *dw = a->dweight, *db = a->dbias;
    s = nn_ctx_scratch(a->ctx, t);                /* the part's partial sums */
    if (t > 0) {              /* partials, summed in part order afterwards */
        dw = dw ? s + 2 * col_sz : NULL;
        db = db ? s + 2 * col_sz + round_up(wlen) : NULL;
        if (dw) memset(dw, 0, sizeof(float) * wlen);
        if (db) memset(db, 0, sizeof(float) * (size_t)d->OC);
    }
    if (hi <= lo) return;
    const size_t in_sz = (size_t)d->C * d->H * d->W;
    const size_t out_sz = (size_t)d->OC * d->OH * d->OW;
    nn_conv_dims sd = *d;
    sd.N = (int)(hi - lo);
    nn_conv2d_backward(a->din ? a->din + lo * in_sz : NULL, dw, db, col, dcol,
                       a->dout + lo * out_sz, a->in + lo * in_sz, a->weight, &sd);
}

static void conv_reduce_task(void *arg, int t, int T, int tid)
{
    conv_task *a = arg;
    const nn_conv_dims *d = a->d;
    size_t col_sz = round_up(nn_conv_col_size(d));
    size_t wlen = (size_t)d->OC * d->C * d->K * d->K;
    size_t lo, hi;
    if (a->dweight) {
        split_aligned(wlen, t, T, &lo, &hi);
        for (int u = 1; u < T; u++) {
            const float *p = nn_ctx_scratch(a->ctx, u) + 2 * col_sz;
            for (size_t i = lo; i < hi; i++) a->dweight[i] += p[i];
        }
    }
    if (a->dbias && t == 0) {
        for (int u = 1; u < T; u++) {
            const float *p = nn_ctx_scratch(a->ctx, u) + 2 * col_sz + round_up(wlen);
            for (int i = 0; i < d->OC; i++) a->dbias[i] += p[i];
        }
    }
}

static void cpu_conv_backward(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                              const float *dout, const float *in, const float *weight,
                              const nn_conv_dims *d)
{
    if (nn_wino_eligible(d) && ctx->shared_len >= nn_wino_u_size(d)) {
        wino_backward(ctx, din, dweight, dbias, dout, in, weight, d);
        return;
    }
    conv_task a = {.ctx = ctx, .din = din, .dweight = dweight, .dbias = dbias,
                   .dout = dout, .in = in, .weight = weight, .d = d};
    nn_pool_run(ctx->pool, conv_backward_task, &a);
    if (ctx->T > 1 && (dweight || dbias)) nn_pool_run(ctx->pool, conv_reduce_task, &a);
}

/* ---- fully connected ----------------------------------------------------------- */

typedef struct fc_task {
    float *out, *din, *dweight, *dbias;
    const float *in, *dout, *weight, *bias;
    int N, IN, OUT;
} fc_task;

static void fc_forward_task(void *arg, int t, int T, int tid)
{
    fc_task *a = arg;
    long lo, hi;
    if (a->N >= 4 * T) {      /* rows */
        nn_split(a->N, t, T, &lo, &hi);
        if (hi > lo)
            nn_fc_forward(a->out + lo * a->OUT, a->in + lo * a->IN, a->weight, a->bias,
                          (int)(hi - lo), a->IN, a->OUT);
        return;
    }
    nn_split(a->OUT, t, T, &lo, &hi);   /* output columns */
    if (hi <= lo) return;
    nn_gemm(0, 1, a->N, (int)(hi - lo), a->IN, 1.0f, a->in, a->IN,
            a->weight + (size_t)lo * a->IN, a->IN, 0.0f, a->out + lo, a->OUT);
    if (a->bias)
        for (int n = 0; n < a->N; n++)
            for (long o = lo; o < hi; o++) a->out[(size_t)n * a->OUT + o] += a->bias[o];
}

static void cpu_fc_forward(nn_ctx *ctx, float *out, const float *in,
                           const float *weight, const float *bias, int N, int IN, int OUT)
{
    fc_task a = {.out = out, .in = in, .weight = weight, .bias = bias,
                 .N = N, .IN = IN, .OUT = OUT};
    nn_pool_run(ctx->pool, fc_forward_task, &a);
}

static void fc_backward_task(void *arg, int t, int T, int tid)
{
    fc_task *a = arg;
    long lo, hi;
    if (a->din) {
        nn_split(a->N, t, T, &lo, &hi);
        if (hi > lo)
            nn_gemm(0, 0, (int)(hi - lo), a->IN, a->OUT, 1.0f, a->dout + lo * a->OUT,
                    a->OUT, a->weight, a->IN, 0.0f, a->din + lo * a->IN, a->IN);
    }
    nn_split(a->OUT, t, T, &lo, &hi);
    if (hi <= lo) return;
    if (a->dweight)
        nn_gemm(1, 0, (int)(hi - lo), a->IN, a->N, 1.0f, a->dout + lo, a->OUT, a->in,
                a->IN, 1.0f, a->dweight + (size_t)lo * a->IN, a->IN);
    if (a->dbias)
        for (int n = 0; n < a->N; n++)
            for (long o = lo; o < hi; o++) a->dbias[o] += a->dout[(size_t)n * a->OUT + o];
}

static void cpu_fc_backward(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                            const float *dout, const float *in, const float *weight,
                            int N, int IN, int OUT)
{
    fc_task a = {.din = din, .dweight = dweight, .dbias = dbias, .dout = dout,
                 .in = in, .weight = weight, .N = N, .IN = IN, .OUT = OUT};
    nn_pool_run(ctx->pool, fc_backward_task, &a);
}

/* ---- batch norm ------------------------------------------------------------------ */

typedef struct bn_task {
    int kind;                  /* 0 train, 1 eval, 2 backward */
    float *out, *mean, *rstd, *rm, *rv, *dgamma, *dbeta;
    const float *in, *gamma, *beta, *crm, *crv, *dout, *cmean, *crstd, *relu_out;
    const nn_bn_dims *d;
} bn_task;

static void bn_task_fn(void *arg, int t, int T, int tid)
{
    bn_task *a = arg;
    nn_bn_dims s = *a->d;
    long lo, hi;
    nn_split(s.C, t, T, &lo, &hi);
    if (hi <= lo) return;
    s.c0 = (int)lo;
    s.c1 = (int)hi;
    if (a->kind == 0)
        nn_batchnorm_forward_train(a->out, a->mean, a->rstd, a->in, a->gamma, a->beta,
                                   a->rm, a->rv, &s);
    else if (a->kind == 1)
        nn_batchnorm_forward_eval(a->out, a->in, a->gamma, a->beta, a->crm, a->crv, &s);
    else
        nn_batchnorm_backward(a->out, a->dgamma, a->dbeta, a->dout, a->relu_out, a->in,
                              a->cmean, a->crstd, a->gamma, &s);
}

static void cpu_bn_forward_train(nn_ctx *ctx, float *out, float *mean, float *rstd,
                                 const float *in, const float *gamma, const float *beta,
                                 float *running_mean, float *running_var,
                                 const nn_bn_dims *d)
{
    bn_task a = {.kind = 0, .out = out, .mean = mean, .rstd = rstd, .rm = running_mean,
                 .rv = running_var, .in = in, .gamma = gamma, .beta = beta, .d = d};
    nn_pool_run(ctx->pool, bn_task_fn, &a);
}

static void cpu_bn_forward_eval(nn_ctx *ctx, float *out, const float *in,
                                const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var,
                                const nn_bn_dims *d)
{
    bn_task a = {.kind = 1, .out = out, .in = in, .gamma = gamma, .beta = beta,
                 .crm = running_mean, .crv = running_var, .d = d};
    nn_pool_run(ctx->pool, bn_task_fn, &a);
}

static void cpu_bn_backward(nn_ctx *ctx, float *din, float *dgamma, float *dbeta,
                            const float *dout, const float *relu_out, const float *in,
                            const float *mean, const float *rstd, const float *gamma,
                            const nn_bn_dims *d)
{
    bn_task a = {.kind = 2, .out = din, .dgamma = dgamma, .dbeta = dbeta, .dout = dout,
                 .relu_out = relu_out, .in = in, .cmean = mean, .crstd = rstd,
                 .gamma = gamma, .d = d};
    nn_pool_run(ctx->pool, bn_task_fn, &a);
}

/* ---- element-wise ------------------------------------------------------------------ */

enum { EW_RELU_F, EW_RELU_B, EW_DROP_F, EW_DROP_B, EW_COPY, EW_ADD, EW_ZERO };

typedef struct ew_task {
    int kind;
    float *dst;
    const float *a, *b;
    size_t len;
} ew_task;

static void ew_task_fn(void *arg, int t, int T, int tid)
{
    ew_task *a = arg;
    size_t lo, hi;
    split_aligned(a->len, t, T, &lo, &hi);
    if (hi <= lo) return;
    size_t n = hi - lo;
    float *d = a->dst + lo;
    switch (a->kind) {
    case EW_RELU_F: nn_relu_forward(d, a->a + lo, n); break;
    case EW_RELU_B: nn_relu_backward(d, a->a + lo, a->b + lo, n); break;
    case EW_DROP_F: nn_dropout_forward(d, a->a + lo, a->b + lo, n); break;
    case EW_DROP_B: nn_dropout_backward(d, a->a + lo, a->b + lo, n); break;
    case EW_COPY: memcpy(d, a->a + lo, sizeof(float) * n); break;
    case EW_ADD:
        for (size_t i = 0; i < n; i++) d[i] += a->a[lo + i];
        break;
    case EW_ZERO: memset(d, 0, sizeof(float) * n); break;
    default: break;
    }
}

static void ew_run(nn_ctx *ctx, int kind, float *dst, const float *x, const float *y,
                   size_t len)
{
    ew_task a = {.kind = kind, .dst = dst, .a = x, .b = y, .len = len};
    if (len < 4096) {          /* not worth waking the pool */
        ew_task_fn(&a, 0, 1, 0);
        return;
    }
    nn_pool_run(ctx->pool, ew_task_fn, &a);
}

static void cpu_relu_forward(nn_ctx *ctx, float *out, const float *in, size_t len)
{
    ew_run(ctx, EW_RELU_F, out, in, NULL, len);
}

static void cpu_relu_backward(nn_ctx *ctx, float *din, const float *dout,
                              const float *out, size_t len)
{
    ew_run(ctx, EW_RELU_B, din, dout, out, len);
}

static void cpu_dropout_forward(nn_ctx *ctx, float *out, const float *in,
                                const float *mask, size_t len)
{
    ew_run(ctx, EW_DROP_F, out, in, mask, len);
}

static void cpu_dropout_backward(nn_ctx *ctx, float *din, const float *dout,
                                 const float *mask, size_t len)
{
    ew_run(ctx, EW_DROP_B, din, dout, mask, len);
}

static void cpu_copy(nn_ctx *ctx, float *dst, const float *src, size_t len)
{
    ew_run(ctx, EW_COPY, dst, src, NULL, len);
}

static void cpu_add(nn_ctx *ctx, float *dst, const float *src, size_t len)
{
    ew_run(ctx, EW_ADD, dst, src, NULL, len);
}

static void cpu_zero(nn_ctx *ctx, float *dst, size_t len)
{
    ew_run(ctx, EW_ZERO, dst, NULL, NULL, len);
}

/* ---- pooling (split by planes: a pool over N*C planes of one channel) ---------- */

enum { PL_MAX_F, PL_MAX_B, PL_AVG_F, PL_AVG_B, PL_GAP_F, PL_GAP_B };

typedef struct pool_task {
    int kind;
    float *dst;
    const float *src;
    int32_t *sw;
    const int32_t *csw;
    const nn_pool_dims *d;
    int planes, HW;            /* global average pool */
} pool_task;

static void pool_task_fn(void *arg, int t, int T, int tid)
{
    pool_task *a = arg;
    if (a->kind == PL_GAP_F || a->kind == PL_GAP_B) {
        long lo, hi;
        nn_split(a->planes, t, T, &lo, &hi);
        if (hi <= lo) return;
        if (a->kind == PL_GAP_F)
            nn_gap_forward(a->dst + lo, a->src + lo * a->HW, (int)(hi - lo), 1, a->HW);
        else
            nn_gap_backward(a->dst + lo * a->HW, a->src + lo, (int)(hi - lo), 1, a->HW);
        return;
    }
    nn_pool_dims s = *a->d;
    long lo, hi;
    nn_split((long)s.N * s.C, t, T, &lo, &hi);
    if (hi <= lo) return;
    s.N = (int)(hi - lo);
    s.C = 1;
    size_t isz = (size_t)s.H * s.W, osz = (size_t)s.OH * s.OW;
    switch (a->kind) {
    case PL_MAX_F: nn_maxpool_forward(a->dst + lo * osz, a->sw + lo * osz, a->src + lo * isz, &s); break;
    case PL_MAX_B: nn_maxpool_backward(a->dst + lo * isz, a->src + lo * osz, a->csw + lo * osz, &s); break;
    case PL_AVG_F: nn_avgpool_forward(a->dst + lo * osz, a->src + lo * isz, &s); break;
    case PL_AVG_B: nn_avgpool_backward(a->dst + lo * isz, a->src + lo * osz, &s); break;
    default: break;
    }
}

static void cpu_maxpool_forward(nn_ctx *ctx, float *out, int32_t *switches,
                                const float *in, const nn_pool_dims *d)
{
    pool_task a = {.kind = PL_MAX_F, .dst = out, .src = in, .sw = switches, .d = d};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

static void cpu_maxpool_backward(nn_ctx *ctx, float *din, const float *dout,
                                 const int32_t *switches, const nn_pool_dims *d)
{
    pool_task a = {.kind = PL_MAX_B, .dst = din, .src = dout, .csw = switches, .d = d};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

static void cpu_avgpool_forward(nn_ctx *ctx, float *out, const float *in,
                                const nn_pool_dims *d)
{
    pool_task a = {.kind = PL_AVG_F, .dst = out, .src = in, .d = d};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

static void cpu_avgpool_backward(nn_ctx *ctx, float *din, const float *dout,
                                 const nn_pool_dims *d)
{
    pool_task a = {.kind = PL_AVG_B, .dst = din, .src = dout, .d = d};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

static void cpu_gap_forward(nn_ctx *ctx, float *out, const float *in, int N, int C, int HW)
{
    pool_task a = {.kind = PL_GAP_F, .dst = out, .src = in, .planes = N * C, .HW = HW};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

static void cpu_gap_backward(nn_ctx *ctx, float *din, const float *dout, int N, int C, int HW)
{
    pool_task a = {.kind = PL_GAP_B, .dst = din, .src = dout, .planes = N * C, .HW = HW};
    nn_pool_run(ctx->pool, pool_task_fn, &a);
}

/* ---- concat (split by images) ------------------------------------------------------ */

typedef struct concat_task {
    float *dst;
    const float *src;
    int N, Ci, off, Ctot, HW, accumulate, backward;
} concat_task;

static void concat_task_fn(void *arg, int t, int T, int tid)
{
    concat_task *a = arg;
    long lo, hi;
    nn_split(a->N, t, T, &lo, &hi);
    if (hi <= lo) return;
    size_t blk = (size_t)a->Ci * a->HW, tot = (size_t)a->Ctot * a->HW;
    if (!a->backward)
        nn_concat_forward_one(a->dst + lo * tot, a->src + lo * blk, (int)(hi - lo), a->Ci,
                              a->off, a->Ctot, a->HW);
    else
        nn_concat_backward_one(a->dst + lo * blk, a->src + lo * tot, (int)(hi - lo), a->Ci,
                               a->off, a->Ctot, a->HW, a->accumulate);
}

static void cpu_concat_forward_one(nn_ctx *ctx, float *out, const float *in, int N,
                                   int Ci, int off, int Ctot, int HW)
{
    concat_task a = {.dst = out, .src = in, .N = N, .Ci = Ci, .off = off, .Ctot = Ctot,
                     .HW = HW};
    nn_pool_run(ctx->pool, concat_task_fn, &a);
}

static void cpu_concat_backward_one(nn_ctx *ctx, float *din, const float *dout, int N,
                                    int Ci, int off, int Ctot, int HW, int accumulate)
{
    concat_task a = {.dst = din, .src = dout, .N = N, .Ci = Ci, .off = off, .Ctot = Ctot,
                     .HW = HW, .accumulate = accumulate, .backward = 1};
    nn_pool_run(ctx->pool, concat_task_fn, &a);
}

/* ---- softmax cross-entropy (small: one thread) ---------------------------------- */

static void cpu_softmax_ce_forward(nn_ctx *ctx, float *probs, float *loss,
                                   const float *logits, const int32_t *labels, int N, int K)
{
    (void)ctx;
    float l = nn_softmax_ce_forward(probs, logits, labels, N, K);
    *loss = labels ? l : 0.0f;
}

static void cpu_softmax_ce_backward(nn_ctx *ctx, float *dlogits, const float *probs,
                                    const int32_t *labels, int N, int K, float dloss)
{
    (void)ctx;
    nn_softmax_ce_backward(dlogits, probs, labels, N, K, dloss);
}

/* ---- SGD ---------------------------------------------------------------------------- */

typedef struct sgd_task {
    float *p, *m;
    const float *g;
    size_t len;
    const nn_sgd *o;
    int first;
} sgd_task;

static void sgd_task_fn(void *arg, int t, int T, int tid)
{
    sgd_task *a = arg;
    size_t lo, hi;
    split_aligned(a->len, t, T, &lo, &hi);
    const float lr = a->o->lr, wd = a->o->weight_decay, mu = a->o->momentum;
    const float damp = a->first ? 1.0f : 1.0f - a->o->dampening;
    const float keep = a->first ? 0.0f : mu;   /* buf = g on the first step */
    float *restrict p = a->p;
    float *restrict m = a->m;
    const float *restrict g = a->g;
    if (mu == 0.0f) {
        for (size_t i = lo; i < hi; i++) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (a->o->nesterov) {
        for (size_t i = lo; i < hi; i++) {
            float d = g[i] + wd * p[i];
            float b = keep * m[i] + damp * d;
            m[i] = b;
            p[i] -= lr * (d + mu * b);
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            float b = keep * m[i] + damp * (g[i] + wd * p[i]);
            m[i] = b;
            p[i] -= lr * b;
        }
    }
}

static void cpu_sgd_step(nn_ctx *ctx, float *param, const float *grad, float *mom,
                         size_t len, const nn_sgd *opt, int first)
{
    sgd_task a = {.p = param, .m = mom, .g = grad, .len = len, .o = opt, .first = first};
    nn_pool_run(ctx->pool, sgd_task_fn, &a);
}

/* ---- batch-norm folding (materialising fused outputs, eval folding) ------- */

static void cpu_bn_fold(nn_ctx *ctx, float *scale, float *shift, const float *gamma,
                        const float *beta, const float *mean, const float *second, double eps,
                        int C, int from_batch)
{
    (void)ctx;
    for (int c = 0; c < C; c++) {
        float sc = from_batch ? gamma[c] * second[c]
                              : gamma[c] * (float)(1.0 / sqrt((double)second[c] + eps));
        scale[c] = sc;
        shift[c] = beta[c] - mean[c] * sc;
    }
}

static void cpu_channel_affine(nn_ctx *ctx, float *out, const float *in, const float *scale,
                               const float *shift, int N, int C, int HW)
{
    (void)ctx;
    for (int c = 0; c < C; c++) {
        const float sc = scale[c], sh = shift[c];
        for (int i = 0; i < N; i++) {
            const float *x = in + ((size_t)i * C + c) * HW;
            float *y = out + ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) y[j] = x[j] * sc + sh;
        }
    }
}

/* ---- memory: plain host memory (64-byte aligned, zeroed) ------------------- */

static void *cpu_alloc(nn_ctx *ctx, size_t bytes)
{
    (void)ctx;
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

static void cpu_free(nn_ctx *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void cpu_memcpy(nn_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    if (dst != src && bytes) memcpy(dst, src, bytes);
}

static int cpu_sync(nn_ctx *ctx)
{
    (void)ctx;
    return 0;
}

static void cpu_upload_wait(nn_ctx *ctx)
{
    (void)ctx;
}

static void cpu_download_async(nn_ctx *ctx, void *dst, const void *src, size_t bytes, int slot)
{
    (void)slot;
    cpu_memcpy(ctx, dst, src, bytes);
}

static void cpu_download_wait(nn_ctx *ctx, int slot)
{
    (void)ctx;
    (void)slot;
}

static size_t cpu_conv_scratch(const nn_conv_dims *d, int with_bias)
{
    nn_conv_dims one = *d;
    one.N = 1;
    return nn_backend_conv_scratch(&one, with_bias);
}

static size_t cpu_conv_shared(const nn_conv_dims *d)
{
    nn_conv_dims one = *d;
    one.N = 1;
    return nn_backend_conv_shared(&one);
}

const nn_backend nn_backend_cpu = {
    .name = "cpu",
    .host = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .sync = cpu_sync,
    .upload_async = cpu_memcpy,
    .upload_wait = cpu_upload_wait,
    .host_alloc = cpu_alloc,
    .host_free = cpu_free,
    .download_async = cpu_download_async,
    .download_wait = cpu_download_wait,
    .conv_scratch = cpu_conv_scratch,
    .conv_shared = cpu_conv_shared,
    .bn_fold = cpu_bn_fold,
    .channel_affine = cpu_channel_affine,
    .conv_forward = cpu_conv_forward,
    .conv_backward = cpu_conv_backward,
    .fc_forward = cpu_fc_forward,
    .fc_backward = cpu_fc_backward,
    .bn_forward_train = cpu_bn_forward_train,
    .bn_forward_eval = cpu_bn_forward_eval,
    .bn_backward = cpu_bn_backward,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .maxpool_forward = cpu_maxpool_forward,
    .maxpool_backward = cpu_maxpool_backward,
    .avgpool_forward = cpu_avgpool_forward,
    .avgpool_backward = cpu_avgpool_backward,
    .gap_forward = cpu_gap_forward,
    .gap_backward = cpu_gap_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .concat_forward_one = cpu_concat_forward_one,
    .concat_backward_one = cpu_concat_backward_one,
    .softmax_ce_forward = cpu_softmax_ce_forward,
    .softmax_ce_backward = cpu_softmax_ce_backward,
    .copy = cpu_copy,
    .add = cpu_add,
    .zero = cpu_zero,
    .sgd_step = cpu_sgd_step,
};
