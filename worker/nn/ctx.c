/* The run context: the backend table and the thread pool, chosen once. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* "cuda" or "cuda:N" -> N (0 for "cuda"); -1 when device is not one. */
static int cuda_index(const char *device)
{
    if (strncmp(device, "cuda", 4) != 0) return -1;
    if (device[4] == '\0') return 0;
    if (device[4] != ':' || device[5] < '0' || device[5] > '9') return -1;
    char *end;
    long v = strtol(device + 5, &end, 10);
    return *end || v < 0 || v > 255 ? -1 : (int)v;
}

/* nn_ctx_new: see gpp/nn.h. */
nn_ctx *nn_ctx_new(const char *device, int threads, gpp_error *err)
{
    if (!device) device = "cpu";
    int cuda = cuda_index(device);
    if (strcmp(device, "cpu") != 0 && cuda < 0) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "device",
                      "device \"%s\" is not one of cpu, cuda, cuda:N", device);
        return NULL;
    }
#if !GPP_HAVE_CUDA
    if (cuda >= 0) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "device",
                      "device \"%s\" is not available in this build (cpu only: "
                      "built without CUDA)", device);
        return NULL;
    }
#endif
    if (threads < 1 || threads > 256) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "threads",
                      "threads must be in 1..256, got %d", threads);
        return NULL;
    }
    nn_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) goto oom;
    ctx->be = &nn_backend_cpu;
    ctx->T = threads;
    snprintf(ctx->device, sizeof ctx->device, "%s", device);
#if GPP_HAVE_CUDA
    if (cuda >= 0) {
        ctx->T = 1;   /* the host side of a CUDA context is one thread */
        if (nn__cuda_open(ctx, cuda, err) != 0) {
            nn_ctx_free(ctx);
            return NULL;
        }
        ctx->be = &nn_backend_cuda;
    }
#endif
    ctx->pool = nn_pool_new(ctx->T);
    if (!ctx->pool) goto oom;
    /* The engine splits the work itself; OpenBLAS threads would fight it. */
    openblas_set_num_threads(1);
    return ctx;
oom:
    nn_ctx_free(ctx);
    gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory starting %d threads",
                  threads);
    return NULL;
}

/* nn_ctx_free: see gpp/nn.h. */
void nn_ctx_free(nn_ctx *ctx)
{
    if (!ctx) return;
    nn_pool_free(ctx->pool);
    if (ctx->be->host) {
        free(ctx->scratch);
        free(ctx->shared);
    } else {
        ctx->be->free(ctx, ctx->scratch);
        ctx->be->free(ctx, ctx->shared);
    }
#if GPP_HAVE_CUDA
    nn__cuda_close(ctx);
#endif
    free(ctx);
}

/* nn_ctx_threads: see gpp/nn.h. */
int nn_ctx_threads(const nn_ctx *ctx)
{
    return ctx->T;
}

/* nn_ctx_device: see gpp/nn.h. */
const char *nn_ctx_device(const nn_ctx *ctx)
{
    return ctx->be->name;
}

/* nn_ctx_device_info: see gpp/nn.h. */
int nn_ctx_device_info(const nn_ctx *ctx, char *name, size_t cap, long long *mem_mb)
{
#if GPP_HAVE_CUDA
    if (!ctx->be->host) return nn__cuda_device_info(ctx->dev_index, name, cap, mem_mb);
#endif
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (name && cap) snprintf(name, cap, "cpu");
    if (mem_mb)
        *mem_mb = pages > 0 && psize > 0 ? (long long)((double)pages * psize / 1048576.0) : 0;
    return 0;
}

/* nn_ctx_synchronize: see gpp/nn.h. */
int nn_ctx_synchronize(nn_ctx *ctx, gpp_error *err)
{
    return nn__ctx_check(ctx, err);
}

/* nn__ctx_check: see internal.h. */
int nn__ctx_check(nn_ctx *ctx, gpp_error *err)
{
    if (ctx->be->host) return 0;
    ctx->be->sync(ctx);
    return nn__ctx_error(ctx, err);
}

/* nn__ctx_error: see internal.h. */
int nn__ctx_error(nn_ctx *ctx, gpp_error *err)
{
    int rc = ctx->dev_err;
    if (rc == 0) return 0;
    gpp_error_set(err, rc, rc == GPP_ENOMEM ? "out_of_memory" : "device_error", "device",
                  "%s: %s", ctx->device, ctx->dev_msg);
    ctx->dev_err = 0;
    ctx->dev_msg[0] = '\0';
    return rc;
}

/* nn_ctx_reserve_scratch: see internal.h. */
int nn_ctx_reserve_scratch(nn_ctx *ctx, size_t floats)
{
    floats = (floats + 15) / 16 * 16;
    if (floats <= ctx->scratch_stride) return 0;
    float *s = NULL;
    if (!ctx->be->host) {
        if (!(s = ctx->be->alloc(ctx, sizeof(float) * floats))) return GPP_ENOMEM;
        ctx->be->free(ctx, ctx->scratch);
        ctx->scratch = s;
        ctx->scratch_stride = floats;
        return 0;
    }
    if (posix_memalign((void **)&s, 64, sizeof(float) * floats * ctx->T) != 0)
        return GPP_ENOMEM;
    memset(s, 0, sizeof(float) * floats * ctx->T);
    free(ctx->scratch);
    ctx->scratch = s;
    ctx->scratch_stride = floats;
    return 0;
}

/* nn_ctx_reserve_shared: see internal.h. */
int nn_ctx_reserve_shared(nn_ctx *ctx, size_t floats)
{
    if (floats <= ctx->shared_len) return 0;
    float *s = NULL;
    if (!ctx->be->host) {
        if (!(s = ctx->be->alloc(ctx, sizeof(float) * floats))) return GPP_ENOMEM;
        ctx->be->free(ctx, ctx->shared);
        ctx->shared = s;
        ctx->shared_len = floats;
        return 0;
    }
    if (posix_memalign((void **)&s, 64, sizeof(float) * floats) != 0) return GPP_ENOMEM;
    memset(s, 0, sizeof(float) * floats);
    free(ctx->shared);
    ctx->shared = s;
    ctx->shared_len = floats;
    return 0;
}
