/* The engine's layer kernels (see kernels.h for the conventions). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

/* ---- conv2d --------------------------------------------------------------- */

/* nn_conv_dims_init: see kernels.h. */
int nn_conv_dims_init(nn_conv_dims *d)
{
    if (d->K < 1 || d->stride < 1 || d->pad < 0) return -1;
    int hp = d->H + 2 * d->pad - d->K, wp = d->W + 2 * d->pad - d->K;
    if (hp < 0 || wp < 0) return -1;
    d->OH = hp / d->stride + 1;
    d->OW = wp / d->stride + 1;
    return 0;
}

/* How the fast conv cuts its work so one im2col block stays in L2 (~512 KB):
 * small outputs (P = OH*OW) put G images side by side in one GEMM (at least
 * ~256 columns); large ones take R output rows of one image at a time. */
#define CONV_L2_FLOATS (128u << 10)

static void conv_plan(const nn_conv_dims *d, int *G, int *R)
{
    const size_t P = (size_t)d->OH * d->OW, CKK = (size_t)d->C * d->K * d->K;
    int g = (int)((256 + P - 1) / P);
    if (g > 8) g = 8;
    while (g > 1 && CKK * P * g > CONV_L2_FLOATS) g--;
    if (g < 1) g = 1;
    int r = d->OH;
    if (g == 1) {
        size_t rows = CONV_L2_FLOATS / (CKK * (size_t)d->OW);
        if (rows < 1) rows = 1;
        if (rows < (size_t)r) r = (int)rows;
    }
    *G = g;
    *R = r;
}

/* nn_conv_col_size: see kernels.h. */
size_t nn_conv_col_size(const nn_conv_dims *d)
{
    const size_t P = (size_t)d->OH * d->OW, CKK = (size_t)d->C * d->K * d->K;
    int G, R;
    conv_plan(d, &G, &R);
    size_t tile = G > 1 ? P * G : (size_t)R * d->OW;
    return (CKK + (size_t)d->OC) * tile;
}

/* The output columns ow whose input column ow*s - p + kj lies in [0, W):
 * [*lo, *hi). */
static void valid_range(int kj, int W, int OW, int s, int p, int *lo, int *hi)
{
    int a = p - kj;                          /* need ow*s >= a */
    int l = a <= 0 ? 0 : (a + s - 1) / s;
    int b = W + p - kj;                      /* need ow*s < b */
    int h = b <= 0 ? 0 : (b - 1) / s + 1;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* dst[0..n) = src[0..n) in registers (short runs: a memcpy call costs more
 * than the copy). */
static inline void copy_run(float *dst, const float *src, int n)
{
#ifdef __AVX2__
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
    if (i < n) {
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - i),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(dst + i, m, _mm256_maskload_ps(src + i, m));
    }
#else
    memcpy(dst, src, sizeof(float) * (size_t)n);
#endif
}

/* im2col of output rows [oh0, oh1) of one image into rows of stride ld
 * (column (oh - oh0)*OW + ow). */
static void im2col_rows(float *col, size_t ld, const float *in, const nn_conv_dims *d,
                        int oh0, int oh1)
{
    const int C = d->C, H = d->H, W = d->W, K = d->K, s = d->stride, p = d->pad;
    const int OW = d->OW;
    for (int c = 0; c < C; c++) {
        const float *plane = in + (size_t)c * H * W;
        for (int ki = 0; ki < K; ki++) {
            for (int kj = 0; kj < K; kj++) {
                float *row = col + ((size_t)(c * K + ki) * K + kj) * ld;
                int lo, hi;
                valid_range(kj, W, OW, s, p, &lo, &hi);
                for (int oh = oh0; oh < oh1; oh++) {
                    float *dst = row + (size_t)(oh - oh0) * OW;
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) {
                        for (int ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
                        continue;
                    }
                    const float *src = plane + (size_t)ih * W - p + kj;
                    for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (s == 1) {
                        copy_run(dst + lo, src + lo, hi - lo);
                    } else {
                        for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * s];
                    }
                    for (int ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

/* col2im of output rows [oh0, oh1) of one image from rows of stride ld,
 * added to din. */
static void col2im_rows_add(float *din, const float *col, size_t ld, const nn_conv_dims *d,
                            int oh0, int oh1)
{
    const int C = d->C, H = d->H, W = d->W, K = d->K, s = d->stride, p = d->pad;
    const int OW = d->OW;
    for (int c = 0; c < C; c++) {
        float *plane = din + (size_t)c * H * W;
        for (int ki = 0; ki < K; ki++) {
            for (int kj = 0; kj < K; kj++) {
                const float *row = col + ((size_t)(c * K + ki) * K + kj) * ld;
                int lo, hi;
                valid_range(kj, W, OW, s, p, &lo, &hi);
                for (int oh = oh0; oh < oh1; oh++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) continue;
                    const float *src = row + (size_t)(oh - oh0) * OW;
                    float *dst = plane + (size_t)ih * W - p + kj;
                    if (s == 1) {
                        for (int ow = lo; ow < hi; ow++) dst[ow] += src[ow];
                    } else {
                        for (int ow = lo; ow < hi; ow++) dst[ow * s] += src[ow];
                    }
                }
            }
        }
    }
}

/* nn_im2col: see kernels.h. */
void nn_im2col(float *col, const float *in, const nn_conv_dims *d)
{
    im2col_rows(col, (size_t)d->OH * d->OW, in, d, 0, d->OH);
}

/* nn_col2im: see kernels.h. */
void nn_col2im(float *din, const float *col, const nn_conv_dims *d)
{
    memset(din, 0, sizeof(float) * (size_t)d->C * d->H * d->W);
    col2im_rows_add(din, col, (size_t)d->OH * d->OW, d, 0, d->OH);
}

static int conv_is_pointwise(const nn_conv_dims *d)
{
    return d->K == 1 && d->stride == 1 && d->pad == 0;
}

/* nn_conv_epilogue: see kernels.h. */
void nn_conv_epilogue(float *y, int P, int c, const float *bias, const nn_epilogue *ep)
{
    float b = bias ? bias[c] : 0.0f;
    if (!ep) {
        if (bias)
            for (int i = 0; i < P; i++) y[i] += b;
        return;
    }
    float sc = ep->scale ? ep->scale[c] : 1.0f, sh = (ep->shift ? ep->shift[c] : 0.0f) + b * sc;
    if (ep->relu) {
        for (int i = 0; i < P; i++) {
            float v = y[i] * sc + sh;
            y[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        for (int i = 0; i < P; i++) y[i] = y[i] * sc + sh;
    }
}

/* nn_conv2d_forward: see kernels.h. */
void nn_conv2d_forward(float *out, float *col, const float *in,
                       const float *weight, const float *bias,
                       const nn_epilogue *ep, const nn_conv_dims *d)
{
    const int P = d->OH * d->OW, CKK = d->C * d->K * d->K, OC = d->OC, OW = d->OW;
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)OC * P;
    int G = 1, R = d->OH;
    if (!conv_is_pointwise(d)) conv_plan(d, &G, &R);
    if (conv_is_pointwise(d) || G == 1) {
        for (int n = 0; n < d->N; n++) {
            const float *x = in + n * in_sz;
            float *y = out + n * out_sz;
            for (int oh0 = 0; oh0 < d->OH; oh0 += R) {
                int oh1 = oh0 + R < d->OH ? oh0 + R : d->OH;
                int tp = (oh1 - oh0) * OW;
                const float *B = x + (size_t)oh0 * OW;
                int ldb = P;
                if (!conv_is_pointwise(d)) {
                    im2col_rows(col, (size_t)tp, x, d, oh0, oh1);
                    B = col;
                    ldb = tp;
                }
                nn_gemm(0, 0, OC, tp, CKK, 1.0f, weight, CKK, B, ldb, 0.0f,
                        y + (size_t)oh0 * OW, P);
            }
            if (bias || ep)
                for (int oc = 0; oc < OC; oc++) nn_conv_epilogue(y + (size_t)oc * P, P, oc, bias, ep);
        }
        return;
    }
    for (int n = 0; n < d->N; n += G) {
        const int g = d->N - n < G ? d->N - n : G;
        const size_t ld = (size_t)g * P;
        float *Y = col + (size_t)CKK * ld;          /* [OC, g*P], scattered below */
        for (int j = 0; j < g; j++) im2col_rows(col + (size_t)j * P, ld, in + (n + j) * in_sz, d, 0, d->OH);
        nn_gemm(0, 0, OC, (int)ld, CKK, 1.0f, weight, CKK, col, (int)ld, 0.0f, Y, (int)ld);
        for (int j = 0; j < g; j++) {
            float *y = out + (n + j) * out_sz;
            for (int oc = 0; oc < OC; oc++) {
                float *r = y + (size_t)oc * P;
                memcpy(r, Y + (size_t)oc * ld + (size_t)j * P, sizeof(float) * (size_t)P);
                if (bias || ep) nn_conv_epilogue(r, P, oc, bias, ep);
            }
        }
    }
}

/* nn_conv2d_backward: see kernels.h. */
void nn_conv2d_backward(float *din, float *dweight, float *dbias,
                        float *col, float *dcol, const float *dout,
                        const float *in, const float *weight,
                        const nn_conv_dims *d)
{
    const int P = d->OH * d->OW, CKK = d->C * d->K * d->K, OC = d->OC, OW = d->OW;
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)OC * P;
    const int pw = conv_is_pointwise(d);
    int G = 1, R = d->OH;
    if (!pw) conv_plan(d, &G, &R);
    if (dbias)
        for (int n = 0; n < d->N; n++)
            for (int oc = 0; oc < OC; oc++) {
                const float *r = dout + n * out_sz + (size_t)oc * P;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int i = 0; i < P; i++) sum += r[i];
                dbias[oc] += sum;
            }
    if (pw || G == 1) {
        for (int n = 0; n < d->N; n++) {
            const float *x = in + n * in_sz, *dy = dout + n * out_sz;
            float *dx = din ? din + n * in_sz : NULL;
            if (pw) {
                if (dweight) nn_gemm(0, 1, OC, CKK, P, 1.0f, dy, P, x, P, 1.0f, dweight, CKK);
                if (dx) nn_gemm(1, 0, CKK, P, OC, 1.0f, weight, CKK, dy, P, 0.0f, dx, P);
                continue;
            }
            if (dx) memset(dx, 0, sizeof(float) * in_sz);
            for (int oh0 = 0; oh0 < d->OH; oh0 += R) {
                int oh1 = oh0 + R < d->OH ? oh0 + R : d->OH;
                int tp = (oh1 - oh0) * OW;
                const float *dyt = dy + (size_t)oh0 * OW;
                if (dweight) {
                    im2col_rows(col, (size_t)tp, x, d, oh0, oh1);
                    nn_gemm(0, 1, OC, CKK, tp, 1.0f, dyt, P, col, tp, 1.0f, dweight, CKK);
                }
                if (dx) {
                    nn_gemm(1, 0, CKK, tp, OC, 1.0f, weight, CKK, dyt, P, 0.0f, dcol, tp);
                    col2im_rows_add(dx, dcol, (size_t)tp, d, oh0, oh1);
                }
            }
        }
        return;
    }
    for (int n = 0; n < d->N; n += G) {
        const int g = d->N - n < G ? d->N - n : G;
        const size_t ld = (size_t)g * P;
        /* dY [OC, g*P]: the group's output gradients side by side */
        float *dY = col + (size_t)CKK * ld;
        for (int oc = 0; oc < OC; oc++)
            for (int j = 0; j < g; j++)
                memcpy(dY + (size_t)oc * ld + (size_t)j * P,
                       dout + (n + j) * out_sz + (size_t)oc * P, sizeof(float) * P);
        if (dweight) {
            for (int j = 0; j < g; j++)
                im2col_rows(col + (size_t)j * P, ld, in + (n + j) * in_sz, d, 0, d->OH);
            nn_gemm(0, 1, OC, CKK, (int)ld, 1.0f, dY, (int)ld, col, (int)ld, 1.0f, dweight, CKK);
        }
        if (din) {
            nn_gemm(1, 0, CKK, (int)ld, OC, 1.0f, weight, CKK, dY, (int)ld, 0.0f, dcol, (int)ld);
            for (int j = 0; j < g; j++) {
                float *dx = din + (n + j) * in_sz;
                memset(dx, 0, sizeof(float) * in_sz);
                col2im_rows_add(dx, dcol + (size_t)j * P, ld, d, 0, d->OH);
            }
        }
    }
}

/* nn_conv2d_forward_naive: see kernels.h. */
void nn_conv2d_forward_naive(float *out, const float *in, const float *weight,
                             const float *bias, const nn_conv_dims *d)
{
    const int C = d->C, H = d->H, W = d->W, K = d->K, s = d->stride, p = d->pad;
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    double sum = bias ? bias[oc] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++) {
                                int ih = oh * s - p + ki, iw = ow * s - p + kj;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                sum += (double)in[(((size_t)n * C + c) * H + ih) * W + iw] *
                                       weight[(((size_t)oc * C + c) * K + ki) * K + kj];
                            }
                    out[(((size_t)n * d->OC + oc) * d->OH + oh) * d->OW + ow] = (float)sum;
                }
}

/* nn_conv2d_backward_naive: see kernels.h. */
void nn_conv2d_backward_naive(float *din, float *dweight, float *dbias,
                              const float *dout, const float *in,
                              const float *weight, const nn_conv_dims *d)
{
    const int C = d->C, H = d->H, W = d->W, K = d->K, s = d->stride, p = d->pad;
    if (din) memset(din, 0, sizeof(float) * (size_t)d->N * C * H * W);
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    float g = dout[(((size_t)n * d->OC + oc) * d->OH + oh) * d->OW + ow];
                    if (dbias) dbias[oc] += g;
                    for (int c = 0; c < C; c++)
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++) {
                                int ih = oh * s - p + ki, iw = ow * s - p + kj;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                size_t xi = (((size_t)n * C + c) * H + ih) * W + iw;
                                size_t wi = (((size_t)oc * C + c) * K + ki) * K + kj;
                                if (dweight) dweight[wi] += g * in[xi];
                                if (din) din[xi] += g * weight[wi];
                            }
                }
}

/* ---- fully connected ------------------------------------------------------- */

/* nn_fc_forward: see kernels.h. */
void nn_fc_forward(float *out, const float *in, const float *weight,
                   const float *bias, int N, int IN, int OUT)
{
    nn_gemm(0, 1, N, OUT, IN, 1.0f, in, IN, weight, IN, 0.0f, out, OUT);
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) out[(size_t)n * OUT + o] += bias[o];
}

/* nn_fc_backward: see kernels.h. */
void nn_fc_backward(float *din, float *dweight, float *dbias,
                    const float *dout, const float *in, const float *weight,
                    int N, int IN, int OUT)
{
    if (din) nn_gemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 0.0f, din, IN);
    if (dweight) nn_gemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, in, IN, 1.0f, dweight, IN);
    if (dbias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) dbias[o] += dout[(size_t)n * OUT + o];
}

/* nn_fc_forward_naive: see kernels.h. */
void nn_fc_forward_naive(float *out, const float *in, const float *weight,
                         const float *bias, int N, int IN, int OUT)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IN; i++)
                s += (double)in[(size_t)n * IN + i] * weight[(size_t)o * IN + i];
            out[(size_t)n * OUT + o] = (float)s;
        }
}

/* ---- batch norm ------------------------------------------------------------ */

/* nn_batchnorm_forward_train: see kernels.h. */
void nn_batchnorm_forward_train(float *out, float *mean, float *rstd,
                                const float *in, const float *gamma,
                                const float *beta, float *running_mean,
                                float *running_var, const nn_bn_dims *d)
{
    const int N = d->N, C = d->C, HW = d->HW;
    const double M = (double)N * HW;
    for (int c = d->c0; c < d->c1; c++) {
        double s = 0.0, ss = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = in + ((size_t)n * C + c) * HW;
            float s1 = 0.0f, s2 = 0.0f;   /* per-plane partials, vectorised */
#pragma omp simd reduction(+ : s1, s2)
            for (int i = 0; i < HW; i++) {
                s1 += x[i];
                s2 += x[i] * x[i];
            }
            s += s1;
            ss += s2;
        }
        double mu = s / M;
        double var = ss / M - mu * mu;
        if (var < 0.0) var = 0.0;
        float r = (float)(1.0 / sqrt(var + d->eps));
        mean[c] = (float)mu;
        rstd[c] = r;
        float scale = gamma[c] * r, shift = beta[c] - (float)mu * scale;
        for (int n = 0; n < N; n++) {
            const float *x = in + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            if (d->relu) {
                for (int i = 0; i < HW; i++) {
                    float v = x[i] * scale + shift;
                    y[i] = v > 0.0f ? v : 0.0f;
                }
            } else {
                for (int i = 0; i < HW; i++) y[i] = x[i] * scale + shift;
            }
        }
        if (running_mean && running_var) {
            double unbiased = M > 1.0 ? var * M / (M - 1.0) : var;
            running_mean[c] = (1.0f - d->momentum) * running_mean[c] + d->momentum * (float)mu;
            running_var[c] = (1.0f - d->momentum) * running_var[c] + d->momentum * (float)unbiased;
        }
    }
}

/* nn_batchnorm_forward_eval: see kernels.h. */
void nn_batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                               const float *beta, const float *running_mean,
                               const float *running_var, const nn_bn_dims *d)
{
    const int N = d->N, C = d->C, HW = d->HW;
    for (int c = d->c0; c < d->c1; c++) {
        float r = (float)(1.0 / sqrt((double)running_var[c] + d->eps));
        float scale = gamma[c] * r, shift = beta[c] - running_mean[c] * scale;
        for (int n = 0; n < N; n++) {
            const float *x = in + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            if (d->relu) {
                for (int i = 0; i < HW; i++) {
                    float v = x[i] * scale + shift;
                    y[i] = v > 0.0f ? v : 0.0f;
                }
            } else {
                for (int i = 0; i < HW; i++) y[i] = x[i] * scale + shift;
            }
        }
    }
}

/* nn_batchnorm_backward: see kernels.h. */
void nn_batchnorm_backward(float *din, float *dgamma, float *dbeta,
                           const float *dout, const float *relu_out, const float *in,
                           const float *mean, const float *rstd,
                           const float *gamma, const nn_bn_dims *d)
{
    const int N = d->N, C = d->C, HW = d->HW;
    const float M = (float)N * HW;
    for (int c = d->c0; c < d->c1; c++) {
        const float mu = mean[c], r = rstd[c];
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            const float *x = in + o, *dy = dout + o;
            float a = 0.0f, b = 0.0f;
            if (relu_out) {
                const float *m = relu_out + o;
#pragma omp simd reduction(+ : a, b)
                for (int i = 0; i < HW; i++) {
                    float g = m[i] > 0.0f ? dy[i] : 0.0f;
                    a += g;
                    b += g * (x[i] - mu);
                }
            } else {
#pragma omp simd reduction(+ : a, b)
                for (int i = 0; i < HW; i++) {
                    a += dy[i];
                    b += dy[i] * (x[i] - mu);
                }
            }
            sdy += a;
            sdyx += b;
        }
        float sum_dy = (float)sdy, sum_dy_xhat = (float)sdyx * r;
        if (dgamma) dgamma[c] += sum_dy_xhat;
        if (dbeta) dbeta[c] += sum_dy;
        if (!din) continue;
        /* din = g*r/M * (M*dy - sum_dy - xhat*sum_dy_xhat) = k1*dy + k2*x + k3 */
        float g = gamma[c] * r;
        float k1 = g;
        float k2 = -g * r * sum_dy_xhat / M;
        float k3 = -g * sum_dy / M - k2 * mu;
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            const float *x = in + o, *dy = dout + o;
            float *dx = din + o;
            if (relu_out) {
                const float *m = relu_out + o;
                for (int i = 0; i < HW; i++) dx[i] = k1 * (m[i] > 0.0f ? dy[i] : 0.0f) + k2 * x[i] + k3;
            } else {
                for (int i = 0; i < HW; i++) dx[i] = k1 * dy[i] + k2 * x[i] + k3;
            }
        }
    }
}

/* ---- relu ------------------------------------------------------------------ */

/* nn_relu_forward: see kernels.h. */
void nn_relu_forward(float *out, const float *in, size_t len)
{
    for (size_t i = 0; i < len; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

/* nn_relu_backward: see kernels.h. */
void nn_relu_backward(float *din, const float *dout, const float *out, size_t len)
{
    for (size_t i = 0; i < len; i++) din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

/* ---- pooling --------------------------------------------------------------- */

/* nn_pool_dims_init: see kernels.h. */
int nn_pool_dims_init(nn_pool_dims *d)
{
    if (d->K < 1 || d->stride < 1 || d->pad < 0 || d->pad > d->K / 2) return -1;
    int hp = d->H + 2 * d->pad - d->K, wp = d->W + 2 * d->pad - d->K;
    if (hp < 0 || wp < 0) return -1;
    d->OH = hp / d->stride + 1;
    d->OW = wp / d->stride + 1;
    return 0;
}

/* nn_maxpool_forward: see kernels.h. */
void nn_maxpool_forward(float *out, int32_t *switches, const float *in,
                        const nn_pool_dims *d)
{
    const int H = d->H, W = d->W, K = d->K, s = d->stride, p = d->pad;
    const int OH = d->OH, OW = d->OW;
    const size_t planes = (size_t)d->N * d->C;
    if (K == 2 && s == 2 && p == 0) {
        for (size_t pl = 0; pl < planes; pl++) {
            const float *x = in + pl * H * W;
            float *y = out + pl * OH * OW;
            int32_t *sw = switches + pl * OH * OW;
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = x + (size_t)(2 * oh) * W, *r1 = r0 + W;
                int ow = 0;
#ifdef __AVX2__
                /* 8 outputs at a time: even and odd columns of both rows,
                 * compared in the scalar order (first maximum wins) */
                const __m256i perm = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
                for (; ow + 8 <= OW; ow += 8) {
                    int j = 2 * ow;
                    __m256 a0 = _mm256_loadu_ps(r0 + j), a1 = _mm256_loadu_ps(r0 + j + 8);
                    __m256 b0 = _mm256_loadu_ps(r1 + j), b1 = _mm256_loadu_ps(r1 + j + 8);
                    __m256 e0 = _mm256_permutevar8x32_ps(
                        _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)), perm);
                    __m256 o0 = _mm256_permutevar8x32_ps(
                        _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)), perm);
                    __m256 e1 = _mm256_permutevar8x32_ps(
                        _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)), perm);
                    __m256 o1 = _mm256_permutevar8x32_ps(
                        _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)), perm);
                    __m256i base = _mm256_add_epi32(_mm256_set1_epi32(2 * oh * W + j),
                                                    _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
                    __m256 m = e0;
                    __m256i a = base;
                    __m256 c = _mm256_cmp_ps(o0, m, _CMP_GT_OQ);
                    m = _mm256_blendv_ps(m, o0, c);
                    a = _mm256_blendv_epi8(a, _mm256_add_epi32(base, _mm256_set1_epi32(1)), _mm256_castps_si256(c));
                    c = _mm256_cmp_ps(e1, m, _CMP_GT_OQ);
                    m = _mm256_blendv_ps(m, e1, c);
                    a = _mm256_blendv_epi8(a, _mm256_add_epi32(base, _mm256_set1_epi32(W)), _mm256_castps_si256(c));
                    c = _mm256_cmp_ps(o1, m, _CMP_GT_OQ);
                    m = _mm256_blendv_ps(m, o1, c);
                    a = _mm256_blendv_epi8(a, _mm256_add_epi32(base, _mm256_set1_epi32(W + 1)), _mm256_castps_si256(c));
                    _mm256_storeu_ps(y + oh * OW + ow, m);
                    _mm256_storeu_si256((__m256i *)(sw + oh * OW + ow), a);
                }
#endif
                for (; ow < OW; ow++) {
                    int j = 2 * ow, b = 2 * oh * W + j;
                    float m = r0[j];
                    int32_t a = b;
                    if (r0[j + 1] > m) { m = r0[j + 1]; a = b + 1; }
                    if (r1[j] > m) { m = r1[j]; a = b + W; }
                    if (r1[j + 1] > m) { m = r1[j + 1]; a = b + W + 1; }
                    y[oh * OW + ow] = m;
                    sw[oh * OW + ow] = a;
                }
            }
        }
        return;
    }
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * H * W;
        float *y = out + pl * OH * OW;
        int32_t *sw = switches + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float m = -FLT_MAX;
                int32_t a = -1;
                for (int ki = 0; ki < K; ki++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) continue;
                    for (int kj = 0; kj < K; kj++) {
                        int iw = ow * s - p + kj;
                        if (iw < 0 || iw >= W) continue;
                        float v = x[ih * W + iw];
                        if (a < 0 || v > m) { m = v; a = ih * W + iw; }
                    }
                }
                y[oh * OW + ow] = m;
                sw[oh * OW + ow] = a;
            }
    }
}

/* nn_maxpool_backward: see kernels.h. */
void nn_maxpool_backward(float *din, const float *dout, const int32_t *switches,
                         const nn_pool_dims *d)
{
    const size_t planes = (size_t)d->N * d->C, isz = (size_t)d->H * d->W;
    const size_t osz = (size_t)d->OH * d->OW;
    memset(din, 0, sizeof(float) * planes * isz);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = din + pl * isz;
        const float *dy = dout + pl * osz;
        const int32_t *sw = switches + pl * osz;
        for (size_t i = 0; i < osz; i++) dx[sw[i]] += dy[i];
    }
}

/* Window of output (oh, ow) clipped to the input, and PyTorch's
 * count_include_pad divisor (clipped to the padded input only). */
static float avg_window(const nn_pool_dims *d, int oh, int ow, int *h0, int *h1,
                        int *w0, int *w1)
{
    int hs = oh * d->stride - d->pad, ws = ow * d->stride - d->pad;
    int he = hs + d->K, we = ws + d->K;
    if (he > d->H + d->pad) he = d->H + d->pad;
    if (we > d->W + d->pad) we = d->W + d->pad;
    float div = (float)((he - hs) * (we - ws));
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = he > d->H ? d->H : he;
    *w1 = we > d->W ? d->W : we;
    return div;
}

/* nn_avgpool_forward: see kernels.h. */
void nn_avgpool_forward(float *out, const float *in, const nn_pool_dims *d)
{
    const size_t planes = (size_t)d->N * d->C, isz = (size_t)d->H * d->W;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * isz;
        float *y = out + pl * d->OH * d->OW;
        for (int oh = 0; oh < d->OH; oh++)
            for (int ow = 0; ow < d->OW; ow++) {
                int h0, h1, w0, w1;
                float div = avg_window(d, oh, ow, &h0, &h1, &w0, &w1);
                float sum = 0.0f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) sum += x[ih * d->W + iw];
                y[oh * d->OW + ow] = sum / div;
            }
    }
}

/* nn_avgpool_backward: see kernels.h. */
void nn_avgpool_backward(float *din, const float *dout, const nn_pool_dims *d)
{
    const size_t planes = (size_t)d->N * d->C, isz = (size_t)d->H * d->W;
    memset(din, 0, sizeof(float) * planes * isz);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = din + pl * isz;
        const float *dy = dout + pl * d->OH * d->OW;
        for (int oh = 0; oh < d->OH; oh++)
            for (int ow = 0; ow < d->OW; ow++) {
                int h0, h1, w0, w1;
                float g = dy[oh * d->OW + ow] / avg_window(d, oh, ow, &h0, &h1, &w0, &w1);
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) dx[ih * d->W + iw] += g;
            }
    }
}

/* nn_gap_forward: see kernels.h. */
void nn_gap_forward(float *out, const float *in, int N, int C, int HW)
{
    const float inv = 1.0f / (float)HW;
    for (size_t pl = 0; pl < (size_t)N * C; pl++) {
        const float *x = in + pl * HW;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < HW; i++) s += x[i];
        out[pl] = s * inv;
    }
}

/* nn_gap_backward: see kernels.h. */
void nn_gap_backward(float *din, const float *dout, int N, int C, int HW)
{
    const float inv = 1.0f / (float)HW;
    for (size_t pl = 0; pl < (size_t)N * C; pl++) {
        float g = dout[pl] * inv;
        float *dx = din + pl * HW;
        for (int i = 0; i < HW; i++) dx[i] = g;
    }
}

/* ---- concat ---------------------------------------------------------------- */

/* nn_concat_forward_one: see kernels.h. */
void nn_concat_forward_one(float *out, const float *in, int N, int Ci, int off,
                           int Ctot, int HW)
{
    const size_t blk = (size_t)Ci * HW;
    for (int n = 0; n < N; n++)
        memcpy(out + ((size_t)n * Ctot + off) * HW, in + n * blk, sizeof(float) * blk);
}

/* nn_concat_backward_one: see kernels.h. */
void nn_concat_backward_one(float *din, const float *dout, int N, int Ci,
                            int off, int Ctot, int HW, int accumulate)
{
    const size_t blk = (size_t)Ci * HW;
    for (int n = 0; n < N; n++) {
        const float *src = dout + ((size_t)n * Ctot + off) * HW;
        float *dst = din + n * blk;
        if (accumulate) {
            for (size_t i = 0; i < blk; i++) dst[i] += src[i];
        } else {
            memcpy(dst, src, sizeof(float) * blk);
        }
    }
}

/* ---- dropout --------------------------------------------------------------- */

/* nn_dropout_forward: see kernels.h. */
void nn_dropout_forward(float *out, const float *in, const float *mask, size_t len)
{
    for (size_t i = 0; i < len; i++) out[i] = in[i] * mask[i];
}

/* nn_dropout_backward: see kernels.h. */
void nn_dropout_backward(float *din, const float *dout, const float *mask, size_t len)
{
    for (size_t i = 0; i < len; i++) din[i] = dout[i] * mask[i];
}

/* ---- softmax cross-entropy ------------------------------------------------- */

/* nn_softmax_ce_forward: see kernels.h. */
float nn_softmax_ce_forward(float *probs, const float *logits,
                            const int32_t *labels, int N, int K)
{
    double loss = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * K;
        float *pr = probs + (size_t)n * K;
        float m = z[0];
        for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            float e = expf(z[k] - m);
            pr[k] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) pr[k] *= inv;
        if (labels) loss += log(sum) + m - z[labels[n]];
    }
    return (float)(loss / N);
}

/* nn_softmax_ce_backward: see kernels.h. */
void nn_softmax_ce_backward(float *dlogits, const float *probs,
                            const int32_t *labels, int N, int K, float dloss)
{
    const float s = dloss / (float)N;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            float ind = k == labels[n] ? 1.0f : 0.0f;
            dlogits[(size_t)n * K + k] = s * (probs[(size_t)n * K + k] - ind);
        }
    }
}
