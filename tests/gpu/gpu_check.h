/* Helpers of the gpu suite: open a CUDA context or skip (exit 77, meson's
 * SKIP, with the reason printed), move test tensors between the host and the
 * device, compare a device result with a cpu reference within
 * tol + rel*|ref|.  Header-only (static functions). */
#ifndef GPU_CHECK_H
#define GPU_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GPU_SKIP 77

/* ---- a fake device: the cpu kernels on separate host memory, reached
 * only through alloc / upload / download like device memory (host = 0).
 * It runs the engine's device code paths (and these tests' logic) on a
 * machine without a GPU. */
static nn_backend gpu_fake;
static long long gpu_fake_live;   /* blocks allocated and not freed */

static void *gpu_fake_alloc(nn_ctx *ctx, size_t bytes)
{
    (void)ctx;
    if (bytes > ((size_t)16 << 30)) return NULL;   /* a 16 GiB device */
    void *p = calloc(1, bytes ? bytes : 64);
    if (p) gpu_fake_live++;
    return p;
}

static void gpu_fake_free(nn_ctx *ctx, void *p)
{
    (void)ctx;
    if (p) gpu_fake_live--;
    free(p);
}

static void gpu_fake_copy(nn_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    if (bytes) memcpy(dst, src, bytes);
}

static void gpu_fake_wait(nn_ctx *ctx)
{
    (void)ctx;
}

static void gpu_fake_download_async(nn_ctx *ctx, void *dst, const void *src, size_t bytes,
                                    int slot)
{
    (void)slot;
    gpu_fake_copy(ctx, dst, src, bytes);
}

static void gpu_fake_download_wait(nn_ctx *ctx, int slot)
{
    (void)ctx;
    (void)slot;
}

static int gpu_fake_sync(nn_ctx *ctx)
{
    return ctx->dev_err;
}

/* A one-thread context on the fake device (free with nn_ctx_free). */
static inline nn_ctx *gpu_fake_ctx(void)
{
    gpp_error e = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &e);
    if (!ctx) abort();
    gpu_fake = nn_backend_cpu;
    gpu_fake.name = "fakedev";
    gpu_fake.host = 0;
    gpu_fake.alloc = gpu_fake_alloc;
    gpu_fake.free = gpu_fake_free;
    gpu_fake.upload = gpu_fake_copy;
    gpu_fake.download = gpu_fake_copy;
    gpu_fake.upload_async = gpu_fake_copy;
    gpu_fake.upload_wait = gpu_fake_wait;
    gpu_fake.download_async = gpu_fake_download_async;
    gpu_fake.download_wait = gpu_fake_download_wait;
    gpu_fake.host_alloc = gpu_fake_alloc;
    gpu_fake.host_free = gpu_fake_free;
    gpu_fake.sync = gpu_fake_sync;
    ctx->be = &gpu_fake;
    return ctx;
}

/* A CUDA context for the device in $GPP_TEST_CUDA ("cuda" when unset), or
 * exit(77) with the reason: no GPU, or a build without CUDA.
 * GPP_TEST_CUDA=fake: the fake device instead (a dry run of the tests). */
static inline nn_ctx *gpu_ctx_or_skip(const char *test)
{
    const char *dev = getenv("GPP_TEST_CUDA");
    if (dev && strcmp(dev, "fake") == 0) {
        printf("# %s on the fake device (cpu kernels)\n", test);
        return gpu_fake_ctx();
    }
    if (!dev || !*dev) dev = "cuda";
    gpp_error e = {0};
    nn_ctx *g = nn_ctx_new(dev, 1, &e);
    if (!g) {
        printf("SKIP %s: %s\n", test, e.message);
        fflush(stdout);
        exit(GPU_SKIP);
    }
    char name[128] = "";
    long long mb = 0;
    nn_ctx_device_info(g, name, sizeof name, &mb);
    printf("# %s on %s (%s, %lld MiB)\n", test, dev, name, mb);
    return g;
}

static inline void *gpu_halloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) abort();
    return p;
}

/* A device copy of host h[n] floats (or zeroed when h is NULL). */
static inline float *gpu_dup(nn_ctx *g, const float *h, size_t n)
{
    float *d = g->be->alloc(g, sizeof(float) * (n ? n : 1));
    if (!d) abort();
    if (h && n) g->be->upload(g, d, h, sizeof(float) * n);
    return d;
}

static inline int32_t *gpu_dup_i32(nn_ctx *g, const int32_t *h, size_t n)
{
    int32_t *d = g->be->alloc(g, sizeof(int32_t) * (n ? n : 1));
    if (!d) abort();
    if (h && n) g->be->upload(g, d, h, sizeof(int32_t) * n);
    return d;
}

/* Number of elements of device d[n] outside tol + rel*|ref[i]| (prints the
 * first few); 0 when they all agree.  NaN anywhere counts. */
static inline size_t gpu_cmp(nn_ctx *g, const char *what, const float *ref, const float *d,
                             size_t n, double tol, double rel)
{
    float *h = gpu_halloc(sizeof(float) * (n ? n : 1));
    g->be->download(g, h, d, sizeof(float) * n);
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)h[i] - (double)ref[i]);
        double lim = tol + rel * fabs((double)ref[i]);
        if (!(diff <= lim)) {
            if (bad < 5)
                fprintf(stderr, "%s[%zu]: cuda %.8g cpu %.8g (|diff| %.3g > %.3g)\n", what, i,
                        (double)h[i], (double)ref[i], diff, lim);
            bad++;
        }
        if (diff > worst) worst = diff;
    }
    if (bad) fprintf(stderr, "%s: %zu of %zu differ (max |diff| %.3g)\n", what, bad, n, worst);
    free(h);
    return bad;
}

static inline size_t gpu_cmp_i32(nn_ctx *g, const char *what, const int32_t *ref,
                                 const int32_t *d, size_t n)
{
    int32_t *h = gpu_halloc(sizeof(int32_t) * (n ? n : 1));
    g->be->download(g, h, d, sizeof(int32_t) * n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i] != ref[i]) {
            if (bad < 5) fprintf(stderr, "%s[%zu]: cuda %d cpu %d\n", what, i, h[i], ref[i]);
            bad++;
        }
    free(h);
    return bad;
}

#endif
