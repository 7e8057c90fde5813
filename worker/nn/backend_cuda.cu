/* worker/nn/backend_cuda.cu - the CUDA backend: the entries of the backend
 * table (internal.h) as CUDA kernels on one stream, GEMM through cuBLAS.
 *
 * Mirrors backend_cpu.c entry for entry (llm.c's train_gpt2.c vs
 * train_gpt2_fp32.cu): same arguments, same results up to float rounding
 * (the gpu test suite checks every entry against the cpu with
 * tol + rel*|ref|).  Layout NCHW, plain float pointers into device memory.
 *
 * - conv: im2col of a group of G images into col [C*K*K, G*P] (P = OH*OW),
 *   one SGEMM for the group, an epilogue kernel that writes [G, OC, P] with
 *   bias, the folded batch norm and ReLU (and the 2x2 max-pool the engine
 *   fuses into eval convs).  Backward: dout permuted to [OC, G*P], dW += one
 *   SGEMM per group, dcol = W^T dout, col2im as a gather (no atomics: the
 *   results are deterministic run to run).
 * - batch norm: one block per channel (statistics in double, like the cpu).
 * - pools: forward one thread per output; backward a gather per input
 *   element in the cpu's summation order.
 * - GEMM: cuBLAS, loaded with dlopen on the first CUDA context (libcublas.so.13
 *   from LD_LIBRARY_PATH or /usr/local/cuda/lib64), so binaries built with
 *   CUDA still start where there is no GPU and no cuBLAS.  Row-major
 *   everywhere; cuBLAS gets the transposed view (nn_gemm_cuda is the only
 *   caller).  FP32 math by default; GPP_CUDA_TF32=1 allows TF32 tensor cores
 *   (what PyTorch's cudnn convs do by default).
 * - errors: every CUDA call is checked with file:line; the first failure is
 *   kept in ctx->dev_err / ctx->dev_msg (GPP_ENOMEM for device
 *   out-of-memory) and reported by nn__ctx_check; nothing exits.
 *
 * The runtime (cudart) is linked statically; the driver (libcuda.so.1) is
 * the machine's. */
extern "C" {
#include "internal.h"
}

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- cuBLAS through dlopen (types as in cublas_api.h) ------------------- */

typedef struct cublasContext *cublas_handle;
enum { CUBLAS_OP_N_ = 0, CUBLAS_OP_T_ = 1 };
enum { CUBLAS_DEFAULT_MATH_ = 0, CUBLAS_TF32_TENSOR_OP_MATH_ = 3 };

typedef int (*cublas_create_fn)(cublas_handle *);
typedef int (*cublas_destroy_fn)(cublas_handle);
typedef int (*cublas_set_stream_fn)(cublas_handle, cudaStream_t);
typedef int (*cublas_set_math_fn)(cublas_handle, int);
typedef int (*cublas_sgemm_fn)(cublas_handle, int, int, int, int, int, const float *,
                               const float *, int, const float *, int, const float *, float *,
                               int);
typedef int (*cublas_sgemm_sb_fn)(cublas_handle, int, int, int, int, int, const float *,
                                  const float *, int, long long, const float *, int, long long,
                                  const float *, float *, int, long long, int);

static struct {
    void *lib;
    cublas_create_fn create;
    cublas_destroy_fn destroy;
    cublas_set_stream_fn set_stream;
    cublas_set_math_fn set_math;
    cublas_sgemm_fn sgemm;
    cublas_sgemm_sb_fn sgemm_sb;   /* cublasSgemmStridedBatched */
    char why[200];
} blas;

static int blas_load(void)
{
    if (blas.sgemm) return 0;
    static const char *const names[] = {
        "libcublas.so.13", "libcublas.so", "/usr/local/cuda/lib64/libcublas.so.13",
        "/usr/local/cuda/lib64/libcublas.so.12", "libcublas.so.12",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !blas.lib; i++)
        blas.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib) {
        const char *e = dlerror();
        snprintf(blas.why, sizeof blas.why, "cannot load cuBLAS (libcublas.so.13): %s",
                 e ? e : "not found");
        return -1;
    }
    blas.create = (cublas_create_fn)dlsym(blas.lib, "cublasCreate_v2");
    blas.destroy = (cublas_destroy_fn)dlsym(blas.lib, "cublasDestroy_v2");
    blas.set_stream = (cublas_set_stream_fn)dlsym(blas.lib, "cublasSetStream_v2");
    blas.set_math = (cublas_set_math_fn)dlsym(blas.lib, "cublasSetMathMode");
    blas.sgemm = (cublas_sgemm_fn)dlsym(blas.lib, "cublasSgemm_v2");
    blas.sgemm_sb = (cublas_sgemm_sb_fn)dlsym(blas.lib, "cublasSgemmStridedBatched");
    if (!blas.create || !blas.destroy || !blas.set_stream || !blas.set_math || !blas.sgemm ||
        !blas.sgemm_sb) {
        snprintf(blas.why, sizeof blas.why, "cuBLAS lacks a needed symbol");
        blas.sgemm = NULL;
        return -1;
    }
    return 0;
}

/* ---- cuDNN through dlopen (the legacy convolution API of cuDNN 9; types
 * as in cudnn_graph.h / cudnn_cnn.h, which this file does not need) -------
 * Convolutions with K > 1 may run through cuDNN when libcudnn.so.9 loads:
 * GPP_CUDA_CONV=auto (default) times cuDNN against im2col + cuBLAS on each
 * shape's first call and keeps the faster per direction, =cudnn takes cuDNN
 * wherever it has an algorithm, =im2col never loads it.  A shape cuDNN
 * offers no deterministic algorithm for within the scratch runs im2col. */

typedef struct cudnnContext *dnn_handle;
typedef void *dnn_desc;   /* tensor, filter and convolution descriptors */
enum { DNN_NCHW = 0, DNN_FLOAT = 0, DNN_CROSS_CORRELATION = 1, DNN_DETERMINISTIC = 1 };
enum { DNN_DEFAULT_MATH = 0, DNN_TENSOR_OP_MATH = 1, DNN_TENSOR_OP_CONVERSION = 2,
       DNN_FMA_MATH = 3 };
typedef struct {   /* cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: one layout */
    int algo;
    int status;
    float time;
    size_t memory;
    int determinism;
    int math;
    int reserved[3];
} dnn_perf;

typedef int (*dnn_create_fn)(dnn_handle *);
typedef int (*dnn_destroy_fn)(dnn_handle);
typedef int (*dnn_set_stream_fn)(dnn_handle, cudaStream_t);
typedef const char *(*dnn_error_string_fn)(int);
typedef int (*dnn_create_desc_fn)(dnn_desc *);
typedef int (*dnn_destroy_desc_fn)(dnn_desc);
typedef int (*dnn_set_tensor_fn)(dnn_desc, int format, int type, int n, int c, int h, int w);
typedef int (*dnn_set_filter_fn)(dnn_desc, int type, int format, int k, int c, int h, int w);
typedef int (*dnn_set_conv_fn)(dnn_desc, int pad_h, int pad_w, int u, int v, int dil_h,
                               int dil_w, int mode, int type);
typedef int (*dnn_set_math_fn)(dnn_desc, int);
/* the three _v7 heuristics: (handle, a, b, conv, c, requested, *returned, perf) */
typedef int (*dnn_get_algo_fn)(dnn_handle, dnn_desc, dnn_desc, dnn_desc, dnn_desc, int, int *,
                               dnn_perf *);
/* the three convolutions: (handle, alpha, aDesc, a, bDesc, b, conv, algo, ws, wsBytes, beta,
 * cDesc, c) */
typedef int (*dnn_conv_fn)(dnn_handle, const void *, dnn_desc, const void *, dnn_desc,
                           const void *, dnn_desc, int, void *, size_t, const void *, dnn_desc,
                           void *);

static struct {
    void *lib;
    int tried, ok;
    dnn_create_fn create;
    dnn_destroy_fn destroy;
    dnn_set_stream_fn set_stream;
    dnn_error_string_fn error_string;
    dnn_create_desc_fn create_tensor, create_filter, create_conv;
    dnn_destroy_desc_fn destroy_tensor, destroy_filter, destroy_conv;
    dnn_set_tensor_fn set_tensor;
    dnn_set_filter_fn set_filter;
    dnn_set_conv_fn set_conv;
    dnn_set_math_fn set_math;
    dnn_get_algo_fn fwd_algo, bwd_data_algo, bwd_filter_algo;
    dnn_conv_fn fwd, bwd_data, bwd_filter;
    char why[200];
} dnn;

static void *dnn_sym(const char *name, int *missing)
{
    void *f = dlsym(dnn.lib, name);
    if (!f) *missing = 1;
    return f;
}

/* 0 when cuDNN is usable (loaded once; GPP_CUDA_CUDNN=0 says no). */
static int dnn_load(void)
{
    if (dnn.tried) return dnn.ok ? 0 : -1;
    dnn.tried = 1;
    const char *env = getenv("GPP_CUDA_CONV");
    if (env && !strcmp(env, "im2col")) {
        snprintf(dnn.why, sizeof dnn.why, "GPP_CUDA_CONV=im2col");
        return -1;
    }
    static const char *const names[] = {
        "libcudnn.so.9", "/usr/local/cuda/lib/libcudnn.so.9",
        "/usr/local/cuda/lib64/libcudnn.so.9", "libcudnn.so",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !dnn.lib; i++)
        dnn.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!dnn.lib) {
        const char *e = dlerror();
        snprintf(dnn.why, sizeof dnn.why, "cannot load cuDNN (libcudnn.so.9): %s",
                 e ? e : "not found");
        return -1;
    }
    int miss = 0;
    dnn.create = (dnn_create_fn)dnn_sym("cudnnCreate", &miss);
    dnn.destroy = (dnn_destroy_fn)dnn_sym("cudnnDestroy", &miss);
    dnn.set_stream = (dnn_set_stream_fn)dnn_sym("cudnnSetStream", &miss);
    dnn.error_string = (dnn_error_string_fn)dnn_sym("cudnnGetErrorString", &miss);
    dnn.create_tensor = (dnn_create_desc_fn)dnn_sym("cudnnCreateTensorDescriptor", &miss);
    dnn.create_filter = (dnn_create_desc_fn)dnn_sym("cudnnCreateFilterDescriptor", &miss);
    dnn.create_conv = (dnn_create_desc_fn)dnn_sym("cudnnCreateConvolutionDescriptor", &miss);
    dnn.destroy_tensor = (dnn_destroy_desc_fn)dnn_sym("cudnnDestroyTensorDescriptor", &miss);
    dnn.destroy_filter = (dnn_destroy_desc_fn)dnn_sym("cudnnDestroyFilterDescriptor", &miss);
    dnn.destroy_conv = (dnn_destroy_desc_fn)dnn_sym("cudnnDestroyConvolutionDescriptor", &miss);
    dnn.set_tensor = (dnn_set_tensor_fn)dnn_sym("cudnnSetTensor4dDescriptor", &miss);
    dnn.set_filter = (dnn_set_filter_fn)dnn_sym("cudnnSetFilter4dDescriptor", &miss);
    dnn.set_conv = (dnn_set_conv_fn)dnn_sym("cudnnSetConvolution2dDescriptor", &miss);
    dnn.set_math = (dnn_set_math_fn)dnn_sym("cudnnSetConvolutionMathType", &miss);
    dnn.fwd_algo = (dnn_get_algo_fn)dnn_sym("cudnnGetConvolutionForwardAlgorithm_v7", &miss);
    dnn.bwd_data_algo =
        (dnn_get_algo_fn)dnn_sym("cudnnGetConvolutionBackwardDataAlgorithm_v7", &miss);
    dnn.bwd_filter_algo =
        (dnn_get_algo_fn)dnn_sym("cudnnGetConvolutionBackwardFilterAlgorithm_v7", &miss);
    dnn.fwd = (dnn_conv_fn)dnn_sym("cudnnConvolutionForward", &miss);
    dnn.bwd_data = (dnn_conv_fn)dnn_sym("cudnnConvolutionBackwardData", &miss);
    dnn.bwd_filter = (dnn_conv_fn)dnn_sym("cudnnConvolutionBackwardFilter", &miss);
    if (miss) {
        snprintf(dnn.why, sizeof dnn.why, "cuDNN lacks a needed symbol");
        return -1;
    }
    dnn.ok = 1;
    return 0;
}

/* ---- the device side of a context -------------------------------------------- */

#define RED_SLOTS 65536   /* channel x slice partial sums of the batch-norm reductions */

/* One convolution shape's cuDNN descriptors and chosen algorithms
 * (algo -1: cuDNN offered none that is deterministic and fits; im2col). */
typedef struct dnn_plan {
    nn_conv_dims d;
    dnn_desc x, y, w, conv;
    int fwd, bwd_data, bwd_filter;
    int use_fwd, use_bwd_data, use_bwd_filter;   /* 1 cuDNN, 0 im2col, -1 time both */
    int fwd_math, bwd_data_math, bwd_filter_math;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
} dnn_plan;

#define DNN_PLANS 64

typedef struct cuda_dev {
    cudaStream_t stream;
    cublas_handle blas;
    dnn_handle dnn;            /* NULL: convolutions through im2col + cuBLAS */
    int tf32;                  /* GPP_CUDA_TF32=1 */
    int conv_cudnn;            /* GPP_CUDA_CONV=cudnn: no timing, cuDNN where it can */
    cudaEvent_t t0, t1;        /* timing the two ways of a convolution */
    dnn_plan plans[DNN_PLANS]; /* a ring: the oldest shape makes room */
    int nplans, next_plan;
    double *red;               /* [RED_SLOTS][2] partial sums */
    float *kc;                 /* [RED_SLOTS][3] per-channel coefficients */
    cudaEvent_t up_done;       /* the last upload_async */
    int up_pending;
    cudaEvent_t down_done[2];  /* the last download_async of each slot */
    int down_pending[2];
    int sms;
} cuda_dev;

/* The context's device state; binds the calling thread to the context's
 * device first (the CUDA device is per host thread, and a net may be run
 * by a thread other than the one that opened the context). */
static __thread int bound_dev = -1;
static cuda_dev *DEV(nn_ctx *ctx)
{
    if (bound_dev != ctx->dev_index) {
        cudaSetDevice(ctx->dev_index);
        bound_dev = ctx->dev_index;
    }
    return (cuda_dev *)ctx->dev;
}

static void dev_fail(nn_ctx *ctx, cudaError_t e, const char *what, const char *file, int line)
{
    if (ctx->dev_err) return;
    ctx->dev_err = e == cudaErrorMemoryAllocation ? GPP_ENOMEM : GPP_EIO;
    snprintf(ctx->dev_msg, sizeof ctx->dev_msg, "%s: %s (%s:%d)", what, cudaGetErrorString(e),
             file, line);
}

#define CK(ctx, call)                                                                  \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) dev_fail((ctx), e_, #call, __FILE__, __LINE__);         \
    } while (0)
/* after every launch */
#define LAUNCHED(ctx) CK(ctx, cudaGetLastError())

#define TPB 256
static unsigned blocks_for(size_t n)
{
    size_t b = (n + TPB - 1) / TPB;
    if (b > 65535u * 16u) b = 65535u * 16u;   /* grid-stride loops do the rest */
    return b ? (unsigned)b : 1u;
}
#define GRID_LOOP(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
                             i += (size_t)gridDim.x * blockDim.x)

/* ---- GEMM: the one wrapper around cublasSgemm (row-major) ---------------
 * C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, strides as nn_gemm. */
static void nn_gemm_cuda(nn_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc)
{
    if (M <= 0 || N <= 0) return;
    /* row-major C = A B is column-major C^T = B^T A^T */
    int st = blas.sgemm(DEV(ctx)->blas, tb ? CUBLAS_OP_T_ : CUBLAS_OP_N_,
                        ta ? CUBLAS_OP_T_ : CUBLAS_OP_N_, N, M, K, &alpha, B, ldb, A, lda, &beta,
                        C, ldc);
    if (st != 0 && !ctx->dev_err) {
        ctx->dev_err = st == 3 ? GPP_ENOMEM : GPP_EIO;   /* CUBLAS_STATUS_ALLOC_FAILED */
        snprintf(ctx->dev_msg, sizeof ctx->dev_msg, "cublasSgemm failed with status %d (%s:%d)",
                 st, __FILE__, __LINE__);
    }
}

/* The same for `batch` products: A + i*sA, B + i*sB, C + i*sC (a stride of 0
 * shares the matrix between the products). */
static void nn_gemm_batched_cuda(nn_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                                 const float *A, int lda, long long sA, const float *B, int ldb,
                                 long long sB, float beta, float *C, int ldc, long long sC,
                                 int batch)
{
    if (M <= 0 || N <= 0 || batch <= 0) return;
    int st = blas.sgemm_sb(DEV(ctx)->blas, tb ? CUBLAS_OP_T_ : CUBLAS_OP_N_,
                           ta ? CUBLAS_OP_T_ : CUBLAS_OP_N_, N, M, K, &alpha, B, ldb, sB, A, lda,
                           sA, &beta, C, ldc, sC, batch);
    if (st != 0 && !ctx->dev_err) {
        ctx->dev_err = st == 3 ? GPP_ENOMEM : GPP_EIO;
        snprintf(ctx->dev_msg, sizeof ctx->dev_msg,
                 "cublasSgemmStridedBatched failed with status %d (%s:%d)", st, __FILE__, __LINE__);
    }
}

/* ---- conv ---------------------------------------------------------------------- */

#define CONV_SCRATCH_CAP ((size_t)64 << 20)   /* floats of im2col scratch (256 MB) */

/* Images per group: as many as fit the scratch cap (at least 1). */
static int conv_group(const nn_conv_dims *d)
{
    size_t P = (size_t)d->OH * d->OW, CKK = (size_t)d->C * d->K * d->K;
    size_t per = (2 * CKK + d->OC) * P;
    size_t g = per ? CONV_SCRATCH_CAP / per : 1;
    if (g < 1) g = 1;
    if (g > (size_t)d->N) g = (size_t)d->N;
    return (int)g;
}

static size_t cuda_conv_scratch(const nn_conv_dims *d, int with_bias)
{
    (void)with_bias;
    size_t P = (size_t)d->OH * d->OW, CKK = (size_t)d->C * d->K * d->K;
    return (2 * CKK + d->OC) * P * (size_t)conv_group(d) + 64;
}

static size_t cuda_conv_shared(const nn_conv_dims *d)
{
    (void)d;
    return 0;
}

/* col [C*K*K, G*P] of images in [G, C, H, W] */
static __global__ void im2col_k(float *col, const float *in, int G, int C, int H, int W, int K, int s,
                         int p, int OH, int OW)
{
    const size_t P = (size_t)OH * OW, GP = (size_t)G * P, KK = (size_t)K * K;
    const size_t n = (size_t)C * KK * GP;
    GRID_LOOP(i, n) {
        size_t r = i / GP, q = i - r * GP;
        size_t g = q / P, pp = q - g * P;
        int oh = (int)(pp / OW), ow = (int)(pp - (size_t)oh * OW);
        int c = (int)(r / KK), kk = (int)(r - (size_t)c * KK);
        int ih = oh * s - p + kk / K, iw = ow * s - p + kk % K;
        float v = 0.0f;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = in[((g * C + c) * H + ih) * (size_t)W + iw];
        col[i] = v;
    }
}

/* din [G, C, H, W] = sum of dcol [C*K*K, G*P] over the windows (a gather) */
static __global__ void col2im_k(float *din, const float *dcol, int G, int C, int H, int W, int K,
                         int s, int p, int OH, int OW)
{
    const size_t P = (size_t)OH * OW, GP = (size_t)G * P;
    const size_t n = (size_t)G * C * H * W;
    GRID_LOOP(i, n) {
        int iw = (int)(i % W);
        size_t t = i / W;
        int ih = (int)(t % H);
        t /= H;
        int c = (int)(t % C);
        size_t g = t / C;
        float sum = 0.0f;
        for (int ki = 0; ki < K; ki++) {
            int y = ih + p - ki;
            if (y < 0 || y % s) continue;
            int oh = y / s;
            if (oh >= OH) continue;
            for (int kj = 0; kj < K; kj++) {
                int x = iw + p - kj;
                if (x < 0 || x % s) continue;
                int ow = x / s;
                if (ow >= OW) continue;
                sum += dcol[((size_t)c * K * K + ki * K + kj) * GP + g * P + (size_t)oh * OW + ow];
            }
        }
        din[i] = sum;
    }
}

/* out [G, OC, P] = epilogue(tmp [OC, G*P]) (tmp == out: in place, [G, OC, P]) */
static __global__ void conv_epilogue_k(float *out, const float *tmp, int G, int OC, int P,
                                const float *bias, const float *scale, const float *shift,
                                int relu, int wide)
{
    const size_t n = (size_t)G * OC * P;
    GRID_LOOP(i, n) {
        size_t pp = i % P, t = i / P;
        int oc = (int)(t % OC);
        size_t g = t / OC;
        float v = wide ? tmp[(size_t)oc * G * P + g * P + pp] : tmp[i];
        float b = bias ? bias[oc] : 0.0f;
        if (scale || shift || relu) {
            float sc = scale ? scale[oc] : 1.0f, sh = (shift ? shift[oc] : 0.0f) + b * sc;
            v = v * sc + sh;
            if (relu) v = v > 0.0f ? v : 0.0f;
        } else {
            v += b;
        }
        out[i] = v;
    }
}

/* dst [OC, G*P] = src [G, OC, P] */
static __global__ void permute_gcp_k(float *dst, const float *src, int G, int OC, int P)
{
    const size_t n = (size_t)G * OC * P;
    GRID_LOOP(i, n) {
        size_t pp = i % P, t = i / P;
        int oc = (int)(t % OC);
        size_t g = t / OC;
        dst[(size_t)oc * G * P + g * P + pp] = src[i];
    }
}

/* dbias[oc] += sum over n, p of dout [N, OC, P]: one block per channel */
static __global__ void bias_grad_k(float *dbias, const float *dout, int N, int OC, int P)
{
    __shared__ float part[TPB];
    int oc = blockIdx.x;
    float s = 0.0f;
    for (size_t i = threadIdx.x; i < (size_t)N * P; i += blockDim.x) {
        size_t n = i / P, pp = i - n * P;
        s += dout[(n * OC + oc) * P + pp];
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) dbias[oc] += part[0];
}

/* max pool K x K / s, pad p (padding never wins), switches ih*W + iw */
static __global__ void maxpool_fwd_k(float *out, int32_t *sw, const float *in, size_t planes, int H,
                              int W, int K, int s, int p, int OH, int OW)
{
    const size_t n = planes * OH * OW;
    GRID_LOOP(i, n) {
        int ow = (int)(i % OW);
        size_t t = i / OW;
        int oh = (int)(t % OH);
        size_t pl = t / OH;
        const float *x = in + pl * H * W;
        float m = -3.402823466e38f;
        int32_t a = -1;
        for (int ki = 0; ki < K; ki++) {
            int ih = oh * s - p + ki;
            if (ih < 0 || ih >= H) continue;
            for (int kj = 0; kj < K; kj++) {
                int iw = ow * s - p + kj;
                if (iw < 0 || iw >= W) continue;
                float v = x[ih * W + iw];
                if (a < 0 || v > m) {
                    m = v;
                    a = ih * W + iw;
                }
            }
        }
        out[i] = m;
        sw[i] = a;
    }
}

/* Output rows (or columns) whose window holds input row ih: [*lo, *hi]. */
__device__ static void windows_of(int ih, int K, int s, int p, int OH, int *lo, int *hi)
{
    int a = ih + p - K + 1;   /* oh * s >= a */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    int b = (ih + p) / s;     /* oh * s <= ih + p */
    *hi = b < OH - 1 ? b : OH - 1;
}

static __global__ void maxpool_bwd_k(float *din, const float *dout, const int32_t *sw, size_t planes,
                              int H, int W, int K, int s, int p, int OH, int OW)
{
    const size_t n = planes * H * W;
    GRID_LOOP(i, n) {
        int iw = (int)(i % W);
        size_t t = i / W;
        int ih = (int)(t % H);
        size_t pl = t / H;
        int h0, h1, w0, w1;
        windows_of(ih, K, s, p, OH, &h0, &h1);
        windows_of(iw, K, s, p, OW, &w0, &w1);
        const int32_t me = ih * W + iw;
        const size_t base = pl * OH * OW;
        float g = 0.0f;
        for (int oh = h0; oh <= h1; oh++)
            for (int ow = w0; ow <= w1; ow++)
                if (sw[base + (size_t)oh * OW + ow] == me) g += dout[base + (size_t)oh * OW + ow];
        din[i] = g;
    }
}

/* PyTorch avg pool, count_include_pad=True: the window clipped to the
 * padded input counts */
__device__ static float avg_div(int oh, int ow, int H, int W, int K, int s, int p)
{
    int hs = oh * s - p, ws = ow * s - p;
    int he = hs + K, we = ws + K;
    if (he > H + p) he = H + p;
    if (we > W + p) we = W + p;
    return (float)((he - hs) * (we - ws));
}

static __global__ void avgpool_fwd_k(float *out, const float *in, size_t planes, int H, int W, int K,
                              int s, int p, int OH, int OW)
{
    const size_t n = planes * OH * OW;
    GRID_LOOP(i, n) {
        int ow = (int)(i % OW);
        size_t t = i / OW;
        int oh = (int)(t % OH);
        size_t pl = t / OH;
        const float *x = in + pl * H * W;
        int hs = oh * s - p, ws = ow * s - p;
        int h0 = hs < 0 ? 0 : hs, w0 = ws < 0 ? 0 : ws;
        int h1 = hs + K > H ? H : hs + K, w1 = ws + K > W ? W : ws + K;
        float sum = 0.0f;
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++) sum += x[ih * W + iw];
        out[i] = sum / avg_div(oh, ow, H, W, K, s, p);
    }
}

static __global__ void avgpool_bwd_k(float *din, const float *dout, size_t planes, int H, int W, int K,
                              int s, int p, int OH, int OW)
{
    const size_t n = planes * H * W;
    GRID_LOOP(i, n) {
        int iw = (int)(i % W);
        size_t t = i / W;
        int ih = (int)(t % H);
        size_t pl = t / H;
        int h0, h1, w0, w1;
        windows_of(ih, K, s, p, OH, &h0, &h1);
        windows_of(iw, K, s, p, OW, &w0, &w1);
        const size_t base = pl * OH * OW;
        float g = 0.0f;
        for (int oh = h0; oh <= h1; oh++)
            for (int ow = w0; ow <= w1; ow++)
                g += dout[base + (size_t)oh * OW + ow] / avg_div(oh, ow, H, W, K, s, p);
        din[i] = g;
    }
}

/* 2x2 / 2 max pool of conv output chunks (the eval fusion) */
static void maxpool_launch(nn_ctx *ctx, float *out, int32_t *sw, const float *in, size_t planes,
                           int H, int W, int K, int s, int p, int OH, int OW)
{
    size_t n = planes * OH * OW;
    if (!n) return;
    maxpool_fwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(out, sw, in, planes, H, W, K, s,
                                                                 p, OH, OW);
    LAUNCHED(ctx);
}

/* ---- conv through cuDNN --------------------------------------------------------- */

static void dnn_fail(nn_ctx *ctx, int st, const char *what, int line)
{
    if (ctx->dev_err) return;
    ctx->dev_err = GPP_EIO;
    snprintf(ctx->dev_msg, sizeof ctx->dev_msg, "%s failed: %s (status %d, %s:%d)", what,
             dnn.error_string ? dnn.error_string(st) : "?", st, __FILE__, line);
}

/* The first of cuDNN's ranked algorithms that worked, is deterministic (the
 * results repeat run to run, like the im2col path) and fits the scratch;
 * without TF32 only FP32 (FMA) math.  -1: none. */
static int dnn_pick(const dnn_perf *p, int n, size_t cap, int tf32, size_t *ws, int *math)
{
    for (int i = 0; i < n; i++) {
        if (p[i].status != 0 || p[i].determinism != DNN_DETERMINISTIC || p[i].memory > cap)
            continue;
        if (!tf32 && (p[i].math == DNN_TENSOR_OP_MATH || p[i].math == DNN_TENSOR_OP_CONVERSION))
            continue;
        *ws = p[i].memory;
        *math = tf32 ? p[i].math : DNN_FMA_MATH;
        return p[i].algo;
    }
    return -1;
}

static void dnn_plan_clear(dnn_plan *pl)
{
    if (pl->x) dnn.destroy_tensor(pl->x);
    if (pl->y) dnn.destroy_tensor(pl->y);
    if (pl->w) dnn.destroy_filter(pl->w);
    if (pl->conv) dnn.destroy_conv(pl->conv);
    memset(pl, 0, sizeof *pl);
}

/* The plan for convolution shape d (made on first use: descriptors and the
 * heuristics' choices), or NULL: no cuDNN, a 1x1 convolution (one batched
 * SGEMM does those), or cuDNN refused the shape. */
static dnn_plan *dnn_plan_for(nn_ctx *ctx, const nn_conv_dims *d)
{
    cuda_dev *dv = DEV(ctx);
    if (!dv->dnn || d->K == 1) return NULL;
    for (int i = 0; i < dv->nplans; i++)
        if (!memcmp(&dv->plans[i].d, d, sizeof *d)) return &dv->plans[i];
    dnn_plan *pl;
    if (dv->nplans < DNN_PLANS) {
        pl = &dv->plans[dv->nplans++];
    } else {
        pl = &dv->plans[dv->next_plan];
        dv->next_plan = (dv->next_plan + 1) % DNN_PLANS;
        dnn_plan_clear(pl);
    }
    pl->d = *d;
    pl->fwd = pl->bwd_data = pl->bwd_filter = -1;   /* im2col until cuDNN offers one */
    if (dnn.create_tensor(&pl->x) || dnn.create_tensor(&pl->y) ||
        dnn.create_filter(&pl->w) || dnn.create_conv(&pl->conv) ||
        (dnn.set_tensor(pl->x, DNN_NCHW, DNN_FLOAT, d->N, d->C, d->H, d->W)) ||
        (dnn.set_tensor(pl->y, DNN_NCHW, DNN_FLOAT, d->N, d->OC, d->OH, d->OW)) ||
        (dnn.set_filter(pl->w, DNN_FLOAT, DNN_NCHW, d->OC, d->C, d->K, d->K)) ||
        (dnn.set_conv(pl->conv, d->pad, d->pad, d->stride, d->stride, 1, 1,
                           DNN_CROSS_CORRELATION, DNN_FLOAT)) ||
        (dnn.set_math(pl->conv, dv->tf32 ? DNN_DEFAULT_MATH : DNN_FMA_MATH)))
        return pl;   /* algorithms stay -1: this shape takes the im2col path */
    const size_t cap = ctx->scratch_stride * sizeof(float);
    dnn_perf perf[16];
    int n = 0;
    if (!dnn.fwd_algo(dv->dnn, pl->x, pl->w, pl->conv, pl->y, 16, &n, perf))
        pl->fwd = dnn_pick(perf, n, cap, dv->tf32, &pl->fwd_ws, &pl->fwd_math);
    n = 0;
    if (!dnn.bwd_data_algo(dv->dnn, pl->w, pl->y, pl->conv, pl->x, 16, &n, perf))
        pl->bwd_data = dnn_pick(perf, n, cap, dv->tf32, &pl->bwd_data_ws, &pl->bwd_data_math);
    n = 0;
    if (!dnn.bwd_filter_algo(dv->dnn, pl->x, pl->y, pl->conv, pl->w, 16, &n, perf))
        pl->bwd_filter =
            dnn_pick(perf, n, cap, dv->tf32, &pl->bwd_filter_ws, &pl->bwd_filter_math);
    const int undecided = dv->conv_cudnn ? 1 : -1;
    pl->use_fwd = pl->fwd >= 0 ? undecided : 0;
    pl->use_bwd_data = pl->bwd_data >= 0 ? undecided : 0;
    pl->use_bwd_filter = pl->bwd_filter >= 0 ? undecided : 0;
    return pl;
}

/* nn__cuda_conv_impl: see internal.h. */
extern "C" const char *nn__cuda_conv_impl(nn_ctx *ctx)
{
    static char text[260];
    cuda_dev *dv = DEV(ctx);
    if (!dv->dnn) {
        snprintf(text, sizeof text, "im2col+cublas (%s)", dnn.why[0] ? dnn.why : "no cuDNN");
        return text;
    }
    int n = 0, f = 0, bd = 0, bf = 0;
    for (int i = 0; i < dv->nplans; i++, n++) {
        f += dv->plans[i].use_fwd > 0;
        bd += dv->plans[i].use_bwd_data > 0;
        bf += dv->plans[i].use_bwd_filter > 0;
    }
    snprintf(text, sizeof text,
             "%s: cudnn for forward %d, backward-data %d, backward-filter %d of %d shapes "
             "(1x1 by batched SGEMM)",
             dv->conv_cudnn ? "cudnn" : "auto", f, bd, bf, n);
    return text;
}

/* The epilogue over the whole batch [N, OC, P] in place, then the fused
 * 2x2 max pool (the eval fusion). */
static void conv_finish(nn_ctx *ctx, float *out, const float *bias, const nn_epilogue *ep,
                        const nn_conv_dims *d)
{
    const int P = d->OH * d->OW;
    if (bias || ep) {
        size_t n = (size_t)d->N * d->OC * P;
        conv_epilogue_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(
            out, out, d->N, d->OC, P, bias, ep ? ep->scale : NULL, ep ? ep->shift : NULL,
            ep ? ep->relu : 0, 0);
        LAUNCHED(ctx);
    }
    if (ep && ep->pool_out)
        maxpool_launch(ctx, ep->pool_out, ep->pool_switches, out, (size_t)d->N * d->OC, d->OH,
                       d->OW, 2, 2, 0, d->OH / 2, d->OW / 2);
}

static void conv_fwd_dnn(nn_ctx *ctx, const dnn_plan *pl, float *out, const float *in,
                         const float *weight, const float *bias, const nn_epilogue *ep,
                         const nn_conv_dims *d)
{
    const float one = 1.0f, zero = 0.0f;
    int s = dnn.set_math(pl->conv, pl->fwd_math);
    if (!s)
        s = dnn.fwd(DEV(ctx)->dnn, &one, pl->x, in, pl->w, weight, pl->conv, pl->fwd,
                    ctx->scratch, pl->fwd_ws, &zero, pl->y, out);
    if (s) dnn_fail(ctx, s, "cudnnConvolutionForward", __LINE__);
    conv_finish(ctx, out, bias, ep, d);
}

static void conv_fwd_im2col(nn_ctx *ctx, float *out, const float *in, const float *weight,
                            const float *bias, const nn_epilogue *ep, const nn_conv_dims *d)
{
    cudaStream_t st = DEV(ctx)->stream;
    const int P = d->OH * d->OW, CKK = d->C * d->K * d->K;
    const int G = conv_group(d);
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * P;
    float *col = ctx->scratch, *tmp = col + (size_t)CKK * G * P;
    if (d->K == 1 && d->stride == 1 && d->pad == 0 && !(ep && ep->pool_out)) {
        /* 1x1: out[n] [OC, P] = W [OC, C] in[n] [C, P], every image at once */
        nn_gemm_batched_cuda(ctx, 0, 0, d->OC, P, d->C, 1.0f, weight, d->C, 0, in, P,
                             (long long)in_sz, 0.0f, out, P, (long long)out_sz, d->N);
        conv_finish(ctx, out, bias, ep, d);
        return;
    }
    for (int g0 = 0; g0 < d->N; g0 += G) {
        int Gc = d->N - g0 < G ? d->N - g0 : G;
        size_t ncol = (size_t)CKK * Gc * P;
        im2col_k<<<blocks_for(ncol), TPB, 0, st>>>(col, in + g0 * in_sz, Gc, d->C, d->H, d->W,
                                                   d->K, d->stride, d->pad, d->OH, d->OW);
        LAUNCHED(ctx);
        float *y = out + g0 * out_sz;
        float *t = Gc == 1 ? y : tmp;   /* one image: [OC, P] is already its layout */
        nn_gemm_cuda(ctx, 0, 0, d->OC, Gc * P, CKK, 1.0f, weight, CKK, col, Gc * P, 0.0f, t,
                     Gc * P);
        size_t n = (size_t)Gc * out_sz;
        if (Gc > 1 || bias || ep) {
            conv_epilogue_k<<<blocks_for(n), TPB, 0, st>>>(
                y, t, Gc, d->OC, P, bias, ep ? ep->scale : NULL, ep ? ep->shift : NULL,
                ep ? ep->relu : 0, Gc > 1);
            LAUNCHED(ctx);
        }
        if (ep && ep->pool_out) {
            const size_t po = (size_t)d->OC * (d->OH / 2) * (d->OW / 2);
            maxpool_launch(ctx, ep->pool_out + g0 * po, ep->pool_switches + g0 * po, y,
                           (size_t)Gc * d->OC, d->OH, d->OW, 2, 2, 0, d->OH / 2, d->OW / 2);
        }
    }
}

/* dweight += (beta 1) and/or din = through cuDNN (either may be NULL) */
static void conv_bwd_dnn(nn_ctx *ctx, const dnn_plan *pl, float *din, float *dweight,
                         const float *dout, const float *in, const float *weight)
{
    const float one = 1.0f, zero = 0.0f;
    int s = 0;
    if (dweight) {
        if (!(s = dnn.set_math(pl->conv, pl->bwd_filter_math)))
            s = dnn.bwd_filter(DEV(ctx)->dnn, &one, pl->x, in, pl->y, dout, pl->conv,
                               pl->bwd_filter, ctx->scratch, pl->bwd_filter_ws, &one, pl->w,
                               dweight);
        if (s) dnn_fail(ctx, s, "cudnnConvolutionBackwardFilter", __LINE__);
    }
    if (din) {
        if (!(s = dnn.set_math(pl->conv, pl->bwd_data_math)))
            s = dnn.bwd_data(DEV(ctx)->dnn, &one, pl->w, weight, pl->y, dout, pl->conv,
                             pl->bwd_data, ctx->scratch, pl->bwd_data_ws, &zero, pl->x, din);
        if (s) dnn_fail(ctx, s, "cudnnConvolutionBackwardData", __LINE__);
    }
}

/* the same through im2col + cuBLAS */
static void conv_bwd_im2col(nn_ctx *ctx, float *din, float *dweight, const float *dout,
                            const float *in, const float *weight, const nn_conv_dims *d)
{
    cudaStream_t st = DEV(ctx)->stream;
    const int P = d->OH * d->OW, CKK = d->C * d->K * d->K;
    const int G = conv_group(d);
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * P;
    float *col = ctx->scratch, *dcol = col + (size_t)CKK * G * P;
    float *doutT = dcol + (size_t)CKK * G * P;
    if (din && d->K == 1 && d->stride == 1 && d->pad == 0) {
        /* 1x1: din[n] [C, P] = W^T [C, OC] dout[n] [OC, P], every image at once */
        nn_gemm_batched_cuda(ctx, 1, 0, d->C, P, d->OC, 1.0f, weight, d->C, 0, dout, P,
                             (long long)out_sz, 0.0f, din, P, (long long)in_sz, d->N);
        din = NULL;
    }
    if (!din && !dweight) return;
    for (int g0 = 0; g0 < d->N; g0 += G) {
        int Gc = d->N - g0 < G ? d->N - g0 : G;
        const float *dy = dout + g0 * out_sz;
        const float *dyT = dy;
        if (Gc > 1) {
            size_t n = (size_t)Gc * out_sz;
            permute_gcp_k<<<blocks_for(n), TPB, 0, st>>>(doutT, dy, Gc, d->OC, P);
            LAUNCHED(ctx);
            dyT = doutT;
        }
        size_t ncol = (size_t)CKK * Gc * P;
        if (dweight) {
            im2col_k<<<blocks_for(ncol), TPB, 0, st>>>(col, in + g0 * in_sz, Gc, d->C, d->H,
                                                       d->W, d->K, d->stride, d->pad, d->OH,
                                                       d->OW);
            LAUNCHED(ctx);
            /* dW [OC, CKK] += dyT [OC, GP] col^T */
            nn_gemm_cuda(ctx, 0, 1, d->OC, CKK, Gc * P, 1.0f, dyT, Gc * P, col, Gc * P, 1.0f,
                         dweight, CKK);
        }
        if (din) {
            /* dcol [CKK, GP] = W^T [CKK, OC] dyT */
            nn_gemm_cuda(ctx, 1, 0, CKK, Gc * P, d->OC, 1.0f, weight, CKK, dyT, Gc * P, 0.0f,
                         dcol, Gc * P);
            size_t n = (size_t)Gc * in_sz;
            col2im_k<<<blocks_for(n), TPB, 0, st>>>(din + g0 * in_sz, dcol, Gc, d->C, d->H,
                                                    d->W, d->K, d->stride, d->pad, d->OH,
                                                    d->OW);
            LAUNCHED(ctx);
        }
    }
}

/* Milliseconds of the fastest of 3 runs of f on the stream, after one
 * unmeasured run (the choice between cuDNN and im2col for a shape). */
template <typename F> static float best_ms(nn_ctx *ctx, F f)
{
    cuda_dev *dv = DEV(ctx);
    float best = 3.0e38f;
    f();
    for (int r = 0; r < 3 && !ctx->dev_err; r++) {
        float ms = best;
        CK(ctx, cudaEventRecord(dv->t0, dv->stream));
        f();
        CK(ctx, cudaEventRecord(dv->t1, dv->stream));
        CK(ctx, cudaEventSynchronize(dv->t1));
        CK(ctx, cudaEventElapsedTime(&ms, dv->t0, dv->t1));
        if (ms < best) best = ms;
    }
    return best;
}

/* GPP_CUDA_CONV=auto (the default): the first call of each shape times both
 * ways of each direction and keeps the faster; =cudnn: cuDNN wherever it
 * has an algorithm. */
static void cuda_conv_forward(nn_ctx *ctx, float *out, const float *in, const float *weight,
                              const float *bias, const nn_epilogue *ep, const nn_conv_dims *d)
{
    dnn_plan *pl = dnn_plan_for(ctx, d);
    if (pl && pl->use_fwd < 0) {
        float a = best_ms(ctx, [&] { conv_fwd_dnn(ctx, pl, out, in, weight, bias, ep, d); });
        float b = best_ms(ctx, [&] { conv_fwd_im2col(ctx, out, in, weight, bias, ep, d); });
        pl->use_fwd = a < b;
    }
    if (pl && pl->use_fwd > 0)
        conv_fwd_dnn(ctx, pl, out, in, weight, bias, ep, d);
    else
        conv_fwd_im2col(ctx, out, in, weight, bias, ep, d);
}

static void conv_bwd_tune(nn_ctx *ctx, dnn_plan *pl, float *din, int want_dw,
                          const float *dout, const float *in, const float *weight,
                          const nn_conv_dims *d)
{
    if (want_dw && pl->use_bwd_filter < 0) {
        /* timed into a throwaway gradient: dW accumulates */
        float *tmp = NULL;
        size_t bytes = sizeof(float) * d->OC * d->C * d->K * d->K;
        if (cudaMalloc((void **)&tmp, bytes) != cudaSuccess) {
            (void)cudaGetLastError();
            pl->use_bwd_filter = 0;
        } else {
            CK(ctx, cudaMemsetAsync(tmp, 0, bytes, DEV(ctx)->stream));
            float a = best_ms(ctx, [&] { conv_bwd_dnn(ctx, pl, NULL, tmp, dout, in, weight); });
            float b = best_ms(ctx, [&] { conv_bwd_im2col(ctx, NULL, tmp, dout, in, weight, d); });
            pl->use_bwd_filter = a < b;
            CK(ctx, cudaStreamSynchronize(DEV(ctx)->stream));
            cudaFree(tmp);
        }
    }
    if (din && pl->use_bwd_data < 0) {
        float a = best_ms(ctx, [&] { conv_bwd_dnn(ctx, pl, din, NULL, dout, in, weight); });
        float b = best_ms(ctx, [&] { conv_bwd_im2col(ctx, din, NULL, dout, in, weight, d); });
        pl->use_bwd_data = a < b;
    }
}

static void cuda_conv_backward(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                               const float *dout, const float *in, const float *weight,
                               const nn_conv_dims *d)
{
    if (dbias) {
        bias_grad_k<<<d->OC, TPB, 0, DEV(ctx)->stream>>>(dbias, dout, d->N, d->OC,
                                                          d->OH * d->OW);
        LAUNCHED(ctx);
    }
    dnn_plan *pl = dnn_plan_for(ctx, d);
    if (pl) {
        if ((dweight && pl->use_bwd_filter < 0) || (din && pl->use_bwd_data < 0))
            conv_bwd_tune(ctx, pl, din, dweight != NULL, dout, in, weight, d);
        float *dn = pl->use_bwd_data > 0 ? din : NULL;
        float *dw = pl->use_bwd_filter > 0 ? dweight : NULL;
        if (dn || dw) conv_bwd_dnn(ctx, pl, dn, dw, dout, in, weight);
        if (dn) din = NULL;
        if (dw) dweight = NULL;
    }
    if (din || dweight) conv_bwd_im2col(ctx, din, dweight, dout, in, weight, d);
}

/* ---- fully connected ------------------------------------------------------------ */

/* out [N, OUT] += bias (per column) */
static __global__ void add_bias_rows_k(float *out, const float *bias, int N, int OUT)
{
    const size_t n = (size_t)N * OUT;
    GRID_LOOP(i, n) out[i] += bias[i % OUT];
}

/* dbias [OUT] += column sums of dout [N, OUT] */
static __global__ void colsum_k(float *dbias, const float *dout, int N, int OUT)
{
    GRID_LOOP(o, (size_t)OUT) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * OUT + o];
        dbias[o] += s;
    }
}

static void cuda_fc_forward(nn_ctx *ctx, float *out, const float *in, const float *weight,
                            const float *bias, int N, int IN, int OUT)
{
    nn_gemm_cuda(ctx, 0, 1, N, OUT, IN, 1.0f, in, IN, weight, IN, 0.0f, out, OUT);
    if (bias) {
        add_bias_rows_k<<<blocks_for((size_t)N * OUT), TPB, 0, DEV(ctx)->stream>>>(out, bias, N,
                                                                                   OUT);
        LAUNCHED(ctx);
    }
}

static void cuda_fc_backward(nn_ctx *ctx, float *din, float *dweight, float *dbias,
                             const float *dout, const float *in, const float *weight, int N,
                             int IN, int OUT)
{
    if (din) nn_gemm_cuda(ctx, 0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 0.0f, din, IN);
    if (dweight)
        nn_gemm_cuda(ctx, 1, 0, OUT, IN, N, 1.0f, dout, OUT, in, IN, 1.0f, dweight, IN);
    if (dbias) {
        colsum_k<<<blocks_for((size_t)OUT), TPB, 0, DEV(ctx)->stream>>>(dbias, dout, N, OUT);
        LAUNCHED(ctx);
    }
}

/* ---- batch norm: one block per channel ------------------------------------------ */

#define BN_TPB 512

__device__ static void block_sum2(double *a, double *b)
{
    __shared__ double sa[BN_TPB], sb[BN_TPB];
    sa[threadIdx.x] = *a;
    sb[threadIdx.x] = *b;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            sa[threadIdx.x] += sa[threadIdx.x + w];
            sb[threadIdx.x] += sb[threadIdx.x + w];
        }
        __syncthreads();
    }
    *a = sa[0];
    *b = sb[0];
    __syncthreads();
}

static __global__ void bn_train_k(float *out, float *mean, float *rstd, const float *in,
                           const float *gamma, const float *beta, float *rm, float *rv, int N,
                           int C, int HW, float eps, float momentum, int relu)
{
    const int c = blockIdx.x;
    const size_t M = (size_t)N * HW;
    double s = 0.0, ss = 0.0;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        size_t n = i / HW, j = i - n * HW;
        float x = in[(n * C + c) * HW + j];
        s += x;
        ss += x * x;
    }
    block_sum2(&s, &ss);
    double mu = s / (double)M;
    double var = ss / (double)M - mu * mu;
    if (var < 0.0) var = 0.0;
    float r = (float)(1.0 / sqrt(var + eps));
    float scale = gamma[c] * r, shift = beta[c] - (float)mu * scale;
    if (threadIdx.x == 0) {
        mean[c] = (float)mu;
        rstd[c] = r;
        if (rm && rv) {
            double Md = (double)M;
            double unbiased = Md > 1.0 ? var * Md / (Md - 1.0) : var;
            rm[c] = (1.0f - momentum) * rm[c] + momentum * (float)mu;
            rv[c] = (1.0f - momentum) * rv[c] + momentum * (float)unbiased;
        }
    }
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        size_t n = i / HW, j = i - n * HW;
        size_t o = (n * C + c) * HW + j;
        float v = in[o] * scale + shift;
        out[o] = relu && v < 0.0f ? 0.0f : v;
    }
}

static __global__ void bn_eval_k(float *out, const float *in, const float *gamma, const float *beta,
                          const float *rm, const float *rv, int N, int C, int HW, float eps,
                          int relu)
{
    const size_t n = (size_t)N * C * HW;
    GRID_LOOP(i, n) {
        int c = (int)((i / HW) % C);
        float r = (float)(1.0 / sqrt((double)rv[c] + eps));
        float scale = gamma[c] * r, shift = beta[c] - rm[c] * scale;
        float v = in[i] * scale + shift;
        out[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

static __global__ void bn_bwd_k(float *din, float *dgamma, float *dbeta, const float *dout,
                         const float *relu_out, const float *in, const float *mean,
                         const float *rstd, const float *gamma, int N, int C, int HW)
{
    const int c = blockIdx.x;
    const size_t M = (size_t)N * HW;
    const float mu = mean[c], r = rstd[c];
    double a = 0.0, b = 0.0;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        size_t n = i / HW, j = i - n * HW;
        size_t o = (n * C + c) * HW + j;
        float g = relu_out && !(relu_out[o] > 0.0f) ? 0.0f : dout[o];
        a += g;
        b += g * (in[o] - mu);
    }
    block_sum2(&a, &b);
    float sum_dy = (float)a, sum_dy_xhat = (float)b * r;
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[c] += sum_dy_xhat;
        if (dbeta) dbeta[c] += sum_dy;
    }
    if (!din) return;
    const float Mf = (float)M;
    float gg = gamma[c] * r;
    float k1 = gg, k2 = -gg * r * sum_dy_xhat / Mf, k3 = -gg * sum_dy / Mf - k2 * mu;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        size_t n = i / HW, j = i - n * HW;
        size_t o = (n * C + c) * HW + j;
        float g = relu_out && !(relu_out[o] > 0.0f) ? 0.0f : dout[o];
        din[o] = k1 * g + k2 * in[o] + k3;
    }
}

/* Large channels: each channel's N*HW values split into S slices, one block
 * per (channel, slice) writes partial sums (red), a per-channel pass folds
 * them in slice order (deterministic), an element-wise pass applies the
 * result.  Small ones: one block per channel (the kernels above). */
static int bn_slices(const nn_bn_dims *d)
{
    size_t M = (size_t)d->N * d->HW;
    size_t S = M / (8 * BN_TPB);
    if (S > 64) S = 64;
    if (S < 2 || (size_t)d->C * S > RED_SLOTS) return 1;
    return (int)S;
}

/* red[(c*S + s)*2 + {0,1}] = sums over slice s of channel c of
 * mode 0: x, x*x;  mode 1: g, g*(x - mean) with g the (masked) gradient */
static __global__ void bn_partial_k(double *red, const float *in, const float *dout,
                             const float *relu_out, const float *mean, int N, int C, int HW,
                             int S, int mode)
{
    const int c = blockIdx.x / S, sl = blockIdx.x % S;
    const size_t M = (size_t)N * HW, chunk = (M + S - 1) / S;
    const size_t lo = sl * chunk, hi = lo + chunk < M ? lo + chunk : M;
    const float mu = mode ? mean[c] : 0.0f;
    double a = 0.0, b = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        size_t n = i / HW, j = i - n * HW;
        size_t o = (n * C + c) * HW + j;
        float x = in[o];
        if (mode == 0) {
            a += x;
            b += x * x;
        } else {
            float g = relu_out && !(relu_out[o] > 0.0f) ? 0.0f : dout[o];
            a += g;
            b += g * (x - mu);
        }
    }
    block_sum2(&a, &b);
    if (threadIdx.x == 0) {
        red[((size_t)c * S + sl) * 2] = a;
        red[((size_t)c * S + sl) * 2 + 1] = b;
    }
}

/* forward: mean, rstd, running statistics, kc = scale, shift */
static __global__ void bn_stats_k(float *kc, float *mean, float *rstd, const double *red,
                           const float *gamma, const float *beta, float *rm, float *rv,
                           size_t M, int C, int S, float eps, float momentum)
{
    GRID_LOOP(c, (size_t)C) {
        double s = 0.0, ss = 0.0;
        for (int k = 0; k < S; k++) {
            s += red[(c * S + k) * 2];
            ss += red[(c * S + k) * 2 + 1];
        }
        double mu = s / (double)M;
        double var = ss / (double)M - mu * mu;
        if (var < 0.0) var = 0.0;
        float r = (float)(1.0 / sqrt(var + eps));
        mean[c] = (float)mu;
        rstd[c] = r;
        float scale = gamma[c] * r;
        kc[c * 3] = scale;
        kc[c * 3 + 1] = beta[c] - (float)mu * scale;
        if (rm && rv) {
            double Md = (double)M;
            double unbiased = Md > 1.0 ? var * Md / (Md - 1.0) : var;
            rm[c] = (1.0f - momentum) * rm[c] + momentum * (float)mu;
            rv[c] = (1.0f - momentum) * rv[c] + momentum * (float)unbiased;
        }
    }
}

static __global__ void bn_apply_k(float *out, const float *in, const float *kc, int C, int HW,
                           size_t n, int relu)
{
    GRID_LOOP(i, n) {
        int c = (int)((i / HW) % C);
        float v = in[i] * kc[c * 3] + kc[c * 3 + 1];
        out[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

/* backward: dgamma, dbeta, kc = k1, k2, k3 of din = k1 g + k2 x + k3 */
static __global__ void bn_bstats_k(float *kc, float *dgamma, float *dbeta, const double *red,
                            const float *mean, const float *rstd, const float *gamma, size_t M,
                            int C, int S)
{
    GRID_LOOP(c, (size_t)C) {
        double a = 0.0, b = 0.0;
        for (int k = 0; k < S; k++) {
            a += red[(c * S + k) * 2];
            b += red[(c * S + k) * 2 + 1];
        }
        const float r = rstd[c], mu = mean[c];
        float sum_dy = (float)a, sum_dy_xhat = (float)b * r;
        if (dgamma) dgamma[c] += sum_dy_xhat;
        if (dbeta) dbeta[c] += sum_dy;
        const float Mf = (float)M;
        float gg = gamma[c] * r;
        float k2 = -gg * r * sum_dy_xhat / Mf;
        kc[c * 3] = gg;
        kc[c * 3 + 1] = k2;
        kc[c * 3 + 2] = -gg * sum_dy / Mf - k2 * mu;
    }
}

static __global__ void bn_bapply_k(float *din, const float *dout, const float *relu_out,
                            const float *in, const float *kc, int C, int HW, size_t n)
{
    GRID_LOOP(i, n) {
        int c = (int)((i / HW) % C);
        float g = relu_out && !(relu_out[i] > 0.0f) ? 0.0f : dout[i];
        din[i] = kc[c * 3] * g + kc[c * 3 + 1] * in[i] + kc[c * 3 + 2];
    }
}

static void cuda_bn_forward_train(nn_ctx *ctx, float *out, float *mean, float *rstd,
                                  const float *in, const float *gamma, const float *beta,
                                  float *running_mean, float *running_var, const nn_bn_dims *d)
{
    cuda_dev *dv = DEV(ctx);
    const int S = bn_slices(d);
    if (S == 1) {
        bn_train_k<<<d->C, BN_TPB, 0, dv->stream>>>(out, mean, rstd, in, gamma, beta,
                                                    running_mean, running_var, d->N, d->C,
                                                    d->HW, d->eps, d->momentum, d->relu);
        LAUNCHED(ctx);
        return;
    }
    const size_t M = (size_t)d->N * d->HW, n = M * d->C;
    bn_partial_k<<<d->C * S, BN_TPB, 0, dv->stream>>>(dv->red, in, NULL, NULL, NULL, d->N, d->C,
                                                      d->HW, S, 0);
    LAUNCHED(ctx);
    bn_stats_k<<<blocks_for((size_t)d->C), TPB, 0, dv->stream>>>(
        dv->kc, mean, rstd, dv->red, gamma, beta, running_mean, running_var, M, d->C, S, d->eps,
        d->momentum);
    LAUNCHED(ctx);
    bn_apply_k<<<blocks_for(n), TPB, 0, dv->stream>>>(out, in, dv->kc, d->C, d->HW, n, d->relu);
    LAUNCHED(ctx);
}

static void cuda_bn_forward_eval(nn_ctx *ctx, float *out, const float *in, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, const nn_bn_dims *d)
{
    size_t n = (size_t)d->N * d->C * d->HW;
    bn_eval_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(out, in, gamma, beta, running_mean,
                                                           running_var, d->N, d->C, d->HW,
                                                           d->eps, d->relu);
    LAUNCHED(ctx);
}

static void cuda_bn_backward(nn_ctx *ctx, float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *relu_out, const float *in,
                             const float *mean, const float *rstd, const float *gamma,
                             const nn_bn_dims *d)
{
    cuda_dev *dv = DEV(ctx);
    const int S = bn_slices(d);
    if (S == 1) {
        bn_bwd_k<<<d->C, BN_TPB, 0, dv->stream>>>(din, dgamma, dbeta, dout, relu_out, in, mean,
                                                  rstd, gamma, d->N, d->C, d->HW);
        LAUNCHED(ctx);
        return;
    }
    const size_t M = (size_t)d->N * d->HW, n = M * d->C;
    bn_partial_k<<<d->C * S, BN_TPB, 0, dv->stream>>>(dv->red, in, dout, relu_out, mean, d->N,
                                                      d->C, d->HW, S, 1);
    LAUNCHED(ctx);
    bn_bstats_k<<<blocks_for((size_t)d->C), TPB, 0, dv->stream>>>(dv->kc, dgamma, dbeta, dv->red,
                                                                  mean, rstd, gamma, M, d->C, S);
    LAUNCHED(ctx);
    if (!din) return;
    bn_bapply_k<<<blocks_for(n), TPB, 0, dv->stream>>>(din, dout, relu_out, in, dv->kc, d->C,
                                                       d->HW, n);
    LAUNCHED(ctx);
}

static __global__ void bn_fold_k(float *scale, float *shift, const float *gamma, const float *beta,
                          const float *mean, const float *second, double eps, int C,
                          int from_batch)
{
    GRID_LOOP(c, (size_t)C) {
        float sc = from_batch ? gamma[c] * second[c]
                              : gamma[c] * (float)(1.0 / sqrt((double)second[c] + eps));
        scale[c] = sc;
        shift[c] = beta[c] - mean[c] * sc;
    }
}

static void cuda_bn_fold(nn_ctx *ctx, float *scale, float *shift, const float *gamma,
                         const float *beta, const float *mean, const float *second, double eps,
                         int C, int from_batch)
{
    bn_fold_k<<<blocks_for((size_t)C), TPB, 0, DEV(ctx)->stream>>>(scale, shift, gamma, beta,
                                                                   mean, second, eps, C,
                                                                   from_batch);
    LAUNCHED(ctx);
}

static __global__ void channel_affine_k(float *out, const float *in, const float *scale,
                                 const float *shift, int C, int HW, size_t n)
{
    GRID_LOOP(i, n) {
        int c = (int)((i / HW) % C);
        out[i] = in[i] * scale[c] + shift[c];
    }
}

static void cuda_channel_affine(nn_ctx *ctx, float *out, const float *in, const float *scale,
                                const float *shift, int N, int C, int HW)
{
    size_t n = (size_t)N * C * HW;
    channel_affine_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(out, in, scale, shift, C, HW,
                                                                  n);
    LAUNCHED(ctx);
}

/* ---- element-wise ------------------------------------------------------------------ */

static __global__ void relu_fwd_k(float *out, const float *in, size_t n)
{
    GRID_LOOP(i, n) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}
static __global__ void relu_bwd_k(float *din, const float *dout, const float *out, size_t n)
{
    GRID_LOOP(i, n) din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}
static __global__ void mul_k(float *dst, const float *a, const float *b, size_t n)
{
    GRID_LOOP(i, n) dst[i] = a[i] * b[i];
}
static __global__ void add_k(float *dst, const float *src, size_t n)
{
    GRID_LOOP(i, n) dst[i] += src[i];
}

static void cuda_relu_forward(nn_ctx *ctx, float *out, const float *in, size_t len)
{
    if (!len) return;
    relu_fwd_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(out, in, len);
    LAUNCHED(ctx);
}
static void cuda_relu_backward(nn_ctx *ctx, float *din, const float *dout, const float *out,
                               size_t len)
{
    if (!len) return;
    relu_bwd_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(din, dout, out, len);
    LAUNCHED(ctx);
}
static void cuda_dropout_forward(nn_ctx *ctx, float *out, const float *in, const float *mask,
                                 size_t len)
{
    if (!len) return;
    mul_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(out, in, mask, len);
    LAUNCHED(ctx);
}
static void cuda_dropout_backward(nn_ctx *ctx, float *din, const float *dout, const float *mask,
                                  size_t len)
{
    if (!len) return;
    mul_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(din, dout, mask, len);
    LAUNCHED(ctx);
}
static void cuda_copy(nn_ctx *ctx, float *dst, const float *src, size_t len)
{
    if (!len || dst == src) return;
    CK(ctx, cudaMemcpyAsync(dst, src, sizeof(float) * len, cudaMemcpyDeviceToDevice,
                            DEV(ctx)->stream));
}
static void cuda_add(nn_ctx *ctx, float *dst, const float *src, size_t len)
{
    if (!len) return;
    add_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(dst, src, len);
    LAUNCHED(ctx);
}
static void cuda_zero(nn_ctx *ctx, float *dst, size_t len)
{
    if (!len) return;
    CK(ctx, cudaMemsetAsync(dst, 0, sizeof(float) * len, DEV(ctx)->stream));
}

/* ---- pooling ---------------------------------------------------------------------- */

static void cuda_maxpool_forward(nn_ctx *ctx, float *out, int32_t *switches, const float *in,
                                 const nn_pool_dims *d)
{
    maxpool_launch(ctx, out, switches, in, (size_t)d->N * d->C, d->H, d->W, d->K, d->stride,
                   d->pad, d->OH, d->OW);
}

static void cuda_maxpool_backward(nn_ctx *ctx, float *din, const float *dout,
                                  const int32_t *switches, const nn_pool_dims *d)
{
    size_t planes = (size_t)d->N * d->C, n = planes * d->H * d->W;
    if (!n) return;
    maxpool_bwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(
        din, dout, switches, planes, d->H, d->W, d->K, d->stride, d->pad, d->OH, d->OW);
    LAUNCHED(ctx);
}

static void cuda_avgpool_forward(nn_ctx *ctx, float *out, const float *in, const nn_pool_dims *d)
{
    size_t planes = (size_t)d->N * d->C, n = planes * d->OH * d->OW;
    if (!n) return;
    avgpool_fwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(out, in, planes, d->H, d->W, d->K,
                                                               d->stride, d->pad, d->OH, d->OW);
    LAUNCHED(ctx);
}

static void cuda_avgpool_backward(nn_ctx *ctx, float *din, const float *dout,
                                  const nn_pool_dims *d)
{
    size_t planes = (size_t)d->N * d->C, n = planes * d->H * d->W;
    if (!n) return;
    avgpool_bwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(din, dout, planes, d->H, d->W,
                                                               d->K, d->stride, d->pad, d->OH,
                                                               d->OW);
    LAUNCHED(ctx);
}

/* one warp per plane */
static __global__ void gap_fwd_k(float *out, const float *in, size_t planes, int HW)
{
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    size_t nw = (size_t)gridDim.x * blockDim.x / 32;
    const float inv = 1.0f / (float)HW;
    for (size_t pl = warp; pl < planes; pl += nw) {
        const float *x = in + pl * HW;
        float s = 0.0f;
        for (int i = lane; i < HW; i += 32) s += x[i];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) out[pl] = s * inv;
    }
}

static __global__ void gap_bwd_k(float *din, const float *dout, size_t n, int HW)
{
    const float inv = 1.0f / (float)HW;
    GRID_LOOP(i, n) din[i] = dout[i / HW] * inv;
}

static void cuda_gap_forward(nn_ctx *ctx, float *out, const float *in, int N, int C, int HW)
{
    size_t planes = (size_t)N * C;
    if (!planes) return;
    gap_fwd_k<<<blocks_for(planes * 32), TPB, 0, DEV(ctx)->stream>>>(out, in, planes, HW);
    LAUNCHED(ctx);
}

static void cuda_gap_backward(nn_ctx *ctx, float *din, const float *dout, int N, int C, int HW)
{
    size_t n = (size_t)N * C * HW;
    if (!n) return;
    gap_bwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(din, dout, n, HW);
    LAUNCHED(ctx);
}

/* ---- concat --------------------------------------------------------------------------- */

static __global__ void concat_fwd_k(float *out, const float *in, int N, int Ci, int off, int Ctot,
                             int HW)
{
    const size_t blk = (size_t)Ci * HW, n = (size_t)N * blk;
    GRID_LOOP(i, n) {
        size_t b = i / blk, r = i - b * blk;
        out[b * Ctot * HW + (size_t)off * HW + r] = in[i];
    }
}

static __global__ void concat_bwd_k(float *din, const float *dout, int N, int Ci, int off, int Ctot,
                             int HW, int accumulate)
{
    const size_t blk = (size_t)Ci * HW, n = (size_t)N * blk;
    GRID_LOOP(i, n) {
        size_t b = i / blk, r = i - b * blk;
        float g = dout[b * Ctot * HW + (size_t)off * HW + r];
        din[i] = accumulate ? din[i] + g : g;
    }
}

static void cuda_concat_forward_one(nn_ctx *ctx, float *out, const float *in, int N, int Ci,
                                    int off, int Ctot, int HW)
{
    size_t n = (size_t)N * Ci * HW;
    if (!n) return;
    concat_fwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(out, in, N, Ci, off, Ctot, HW);
    LAUNCHED(ctx);
}

static void cuda_concat_backward_one(nn_ctx *ctx, float *din, const float *dout, int N, int Ci,
                                     int off, int Ctot, int HW, int accumulate)
{
    size_t n = (size_t)N * Ci * HW;
    if (!n) return;
    concat_bwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(din, dout, N, Ci, off, Ctot, HW,
                                                              accumulate);
    LAUNCHED(ctx);
}

/* ---- softmax cross-entropy: one block, a thread per row -------------------------------- */

static __global__ void softmax_ce_fwd_k(float *probs, float *loss, const float *logits,
                                 const int32_t *labels, int N, int K)
{
    __shared__ double part[TPB];
    double l = 0.0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
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
        if (labels) l += log(sum) + m - z[labels[n]];
    }
    part[threadIdx.x] = l;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *loss = labels ? (float)(part[0] / N) : 0.0f;
}

static __global__ void softmax_ce_bwd_k(float *dlogits, const float *probs, const int32_t *labels,
                                 int N, int K, float dloss)
{
    const float s = dloss / (float)N;
    const size_t n = (size_t)N * K;
    GRID_LOOP(i, n) {
        int k = (int)(i % K);
        float ind = k == labels[i / K] ? 1.0f : 0.0f;
        dlogits[i] = s * (probs[i] - ind);
    }
}

static void cuda_softmax_ce_forward(nn_ctx *ctx, float *probs, float *loss, const float *logits,
                                    const int32_t *labels, int N, int K)
{
    softmax_ce_fwd_k<<<1, TPB, 0, DEV(ctx)->stream>>>(probs, loss, logits, labels, N, K);
    LAUNCHED(ctx);
}

static void cuda_softmax_ce_backward(nn_ctx *ctx, float *dlogits, const float *probs,
                                     const int32_t *labels, int N, int K, float dloss)
{
    size_t n = (size_t)N * K;
    if (!n) return;
    softmax_ce_bwd_k<<<blocks_for(n), TPB, 0, DEV(ctx)->stream>>>(dlogits, probs, labels, N, K,
                                                                  dloss);
    LAUNCHED(ctx);
}

/* ---- SGD: torch.optim.SGD, one flat loop ----------------------------------------------- */

static __global__ void sgd_k(float *p, const float *g, float *m, size_t n, float lr, float wd, float mu,
                      float damp, float keep, int nesterov)
{
    GRID_LOOP(i, n) {
        if (mu == 0.0f) {
            p[i] -= lr * (g[i] + wd * p[i]);
        } else if (nesterov) {
            float d = g[i] + wd * p[i];
            float b = keep * m[i] + damp * d;
            m[i] = b;
            p[i] -= lr * (d + mu * b);
        } else {
            float b = keep * m[i] + damp * (g[i] + wd * p[i]);
            m[i] = b;
            p[i] -= lr * b;
        }
    }
}

static void cuda_sgd_step(nn_ctx *ctx, float *param, const float *grad, float *mom, size_t len,
                          const nn_sgd *o, int first)
{
    if (!len) return;
    const float damp = first ? 1.0f : 1.0f - o->dampening;
    const float keep = first ? 0.0f : o->momentum;
    sgd_k<<<blocks_for(len), TPB, 0, DEV(ctx)->stream>>>(param, grad, mom, len, o->lr,
                                                         o->weight_decay, o->momentum, damp,
                                                         keep, o->nesterov);
    LAUNCHED(ctx);
}

/* ---- memory -------------------------------------------------------------------------- */

static void *cuda_alloc(nn_ctx *ctx, size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 256;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();   /* out of memory is not sticky: the caller reports it */
        return NULL;
    }
    e = cudaMemsetAsync(p, 0, bytes, DEV(ctx)->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(nn_ctx *ctx, void *p)
{
    if (!p) return;
    /* the memory may still be in use by queued work */
    CK(ctx, cudaStreamSynchronize(DEV(ctx)->stream));
    CK(ctx, cudaFree(p));
}

static void cuda_upload(nn_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    CK(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, DEV(ctx)->stream));
    CK(ctx, cudaStreamSynchronize(DEV(ctx)->stream));   /* src may change right after */
}

static void cuda_download(nn_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    CK(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, DEV(ctx)->stream));
    CK(ctx, cudaStreamSynchronize(DEV(ctx)->stream));
}

static void cuda_upload_async(nn_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    cuda_dev *dv = DEV(ctx);
    CK(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dv->stream));
    CK(ctx, cudaEventRecord(dv->up_done, dv->stream));
    dv->up_pending = 1;
}

static void cuda_upload_wait(nn_ctx *ctx)
{
    cuda_dev *dv = DEV(ctx);
    if (!dv->up_pending) return;
    CK(ctx, cudaEventSynchronize(dv->up_done));
    dv->up_pending = 0;
}

static void cuda_download_async(nn_ctx *ctx, void *dst, const void *src, size_t bytes, int slot)
{
    cuda_dev *dv = DEV(ctx);
    if (bytes) CK(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dv->stream));
    CK(ctx, cudaEventRecord(dv->down_done[slot & 1], dv->stream));
    dv->down_pending[slot & 1] = 1;
}

static void cuda_download_wait(nn_ctx *ctx, int slot)
{
    cuda_dev *dv = DEV(ctx);
    if (!dv->down_pending[slot & 1]) return;
    CK(ctx, cudaEventSynchronize(dv->down_done[slot & 1]));
    dv->down_pending[slot & 1] = 0;
}

static void *cuda_host_alloc(nn_ctx *ctx, size_t bytes)
{
    (void)ctx;
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(nn_ctx *ctx, void *p)
{
    if (!p) return;
    cuda_upload_wait(ctx);
    CK(ctx, cudaFreeHost(p));
}

static int cuda_sync(nn_ctx *ctx)
{
    CK(ctx, cudaStreamSynchronize(DEV(ctx)->stream));
    return ctx->dev_err;
}

/* ---- opening a device ---------------------------------------------------------------- */

/* nn__cuda_open: see internal.h. */
extern "C" int nn__cuda_open(nn_ctx *ctx, int index, gpp_error *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "no device found";
        (void)cudaGetLastError();
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device", "no CUDA device: %s",
                             why);
    }
    if (index >= n)
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device",
                             "no CUDA device: cuda:%d asked for, %d present", index, n);
    if ((e = cudaSetDevice(index)) != cudaSuccess) {
        (void)cudaGetLastError();
        bound_dev = -1;
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device",
                             "no CUDA device: cuda:%d: %s", index, cudaGetErrorString(e));
    }
    if (blas_load() != 0)
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device", "cuda:%d: %s", index,
                             blas.why);
    cuda_dev *dv = (cuda_dev *)calloc(1, sizeof *dv);
    if (!dv) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    ctx->dev = dv;
    ctx->dev_index = index;
    bound_dev = index;
    if ((e = cudaStreamCreateWithFlags(&dv->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&dv->up_done, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&dv->down_done[0], cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&dv->down_done[1], cudaEventDisableTiming)) != cudaSuccess) {
        (void)cudaGetLastError();
        nn__cuda_close(ctx);
        return gpp_error_set(err, e == cudaErrorMemoryAllocation ? GPP_ENOMEM : GPP_ENOTFOUND,
                             "no_device", "device", "no CUDA device: cuda:%d: %s", index,
                             cudaGetErrorString(e));
    }
    if ((e = cudaMalloc((void **)&dv->red, sizeof(double) * 2 * RED_SLOTS)) != cudaSuccess ||
        (e = cudaMalloc((void **)&dv->kc, sizeof(float) * 3 * RED_SLOTS)) != cudaSuccess) {
        (void)cudaGetLastError();
        nn__cuda_close(ctx);
        return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "device",
                             "cuda:%d: out of device memory: %s", index, cudaGetErrorString(e));
    }
    int st = blas.create(&dv->blas);
    if (st != 0) {
        dv->blas = NULL;
        nn__cuda_close(ctx);
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device",
                             "no CUDA device: cuda:%d: cublasCreate failed (status %d)", index,
                             st);
    }
    blas.set_stream(dv->blas, dv->stream);
    const char *tf32 = getenv("GPP_CUDA_TF32");
    blas.set_math(dv->blas, tf32 && tf32[0] == '1' ? CUBLAS_TF32_TENSOR_OP_MATH_
                                                   : CUBLAS_DEFAULT_MATH_);
    cudaDeviceGetAttribute(&dv->sms, cudaDevAttrMultiProcessorCount, index);
    dv->tf32 = tf32 && tf32[0] == '1';
    const char *conv = getenv("GPP_CUDA_CONV");
    dv->conv_cudnn = conv && !strcmp(conv, "cudnn");
    if ((e = cudaEventCreate(&dv->t0)) != cudaSuccess ||
        (e = cudaEventCreate(&dv->t1)) != cudaSuccess) {
        (void)cudaGetLastError();
        nn__cuda_close(ctx);
        return gpp_error_set(err, GPP_ENOTFOUND, "no_device", "device",
                             "no CUDA device: cuda:%d: %s", index, cudaGetErrorString(e));
    }
    if (dnn_load() == 0) {
        st = dnn.create(&dv->dnn);
        if (st != 0 || (st = dnn.set_stream(dv->dnn, dv->stream)) != 0) {
            snprintf(dnn.why, sizeof dnn.why, "cudnnCreate/SetStream failed (status %d)", st);
            if (dv->dnn) dnn.destroy(dv->dnn);
            dv->dnn = NULL;
        }
    }
    return 0;
}

/* nn__cuda_close: see internal.h. */
extern "C" void nn__cuda_close(nn_ctx *ctx)
{
    cuda_dev *dv = DEV(ctx);
    if (!dv) return;
    if (dv->stream) cudaStreamSynchronize(dv->stream);
    for (int i = 0; i < dv->nplans; i++) dnn_plan_clear(&dv->plans[i]);
    if (dv->dnn) dnn.destroy(dv->dnn);
    if (dv->blas) blas.destroy(dv->blas);
    if (dv->red) cudaFree(dv->red);
    if (dv->kc) cudaFree(dv->kc);
    if (dv->up_done) cudaEventDestroy(dv->up_done);
    for (int i = 0; i < 2; i++)
        if (dv->down_done[i]) cudaEventDestroy(dv->down_done[i]);
    if (dv->t0) cudaEventDestroy(dv->t0);
    if (dv->t1) cudaEventDestroy(dv->t1);
    if (dv->stream) cudaStreamDestroy(dv->stream);
    (void)cudaGetLastError();
    free(dv);
    ctx->dev = NULL;
}

/* nn__cuda_device_info: see internal.h. */
extern "C" int nn__cuda_device_info(int index, char *name, size_t cap, long long *mem_mb)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, index) != cudaSuccess) {
        (void)cudaGetLastError();
        return GPP_ENOTFOUND;
    }
    if (name && cap) snprintf(name, cap, "%s", p.name);
    if (mem_mb) *mem_mb = (long long)(p.totalGlobalMem >> 20);
    return 0;
}

extern "C" const nn_backend nn_backend_cuda = {
    .name = "cuda",
    .host = 0,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .sync = cuda_sync,
    .upload_async = cuda_upload_async,
    .upload_wait = cuda_upload_wait,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .download_async = cuda_download_async,
    .download_wait = cuda_download_wait,
    .conv_scratch = cuda_conv_scratch,
    .conv_shared = cuda_conv_shared,
    .conv_forward = cuda_conv_forward,
    .conv_backward = cuda_conv_backward,
    .fc_forward = cuda_fc_forward,
    .fc_backward = cuda_fc_backward,
    .bn_forward_train = cuda_bn_forward_train,
    .bn_forward_eval = cuda_bn_forward_eval,
    .bn_backward = cuda_bn_backward,
    .relu_forward = cuda_relu_forward,
    .relu_backward = cuda_relu_backward,
    .maxpool_forward = cuda_maxpool_forward,
    .maxpool_backward = cuda_maxpool_backward,
    .avgpool_forward = cuda_avgpool_forward,
    .avgpool_backward = cuda_avgpool_backward,
    .gap_forward = cuda_gap_forward,
    .gap_backward = cuda_gap_backward,
    .dropout_forward = cuda_dropout_forward,
    .dropout_backward = cuda_dropout_backward,
    .concat_forward_one = cuda_concat_forward_one,
    .concat_backward_one = cuda_concat_backward_one,
    .softmax_ce_forward = cuda_softmax_ce_forward,
    .softmax_ce_backward = cuda_softmax_ce_backward,
    .copy = cuda_copy,
    .add = cuda_add,
    .zero = cuda_zero,
    .bn_fold = cuda_bn_fold,
    .channel_affine = cuda_channel_affine,
    .sgd_step = cuda_sgd_step,
};
