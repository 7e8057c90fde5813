/* The run context: the backend table and the thread pool, chosen once. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* nn_ctx_new: see gpp/nn.h. */
nn_ctx *nn_ctx_new(const char *device, int threads, gpp_error *err)
{
    if (!device) device = "cpu";
    if (strcmp(device, "cpu") != 0) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "device",
                      "device \"%s\" is not available in this build (cpu only)", device);
        return NULL;
    }
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
    ctx->pool = nn_pool_new(threads);
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
    free(ctx->scratch);
    free(ctx->shared);
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

/* nn_ctx_reserve_scratch: see internal.h. */
int nn_ctx_reserve_scratch(nn_ctx *ctx, size_t floats)
{
    floats = (floats + 15) / 16 * 16;
    if (floats <= ctx->scratch_stride) return 0;
    float *s = NULL;
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
    if (posix_memalign((void **)&s, 64, sizeof(float) * floats) != 0) return GPP_ENOMEM;
    memset(s, 0, sizeof(float) * floats);
    free(ctx->shared);
    ctx->shared = s;
    ctx->shared_len = floats;
    return 0;
}
