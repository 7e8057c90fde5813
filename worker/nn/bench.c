/* `gpp-worker bench`: training and inference throughput of a zoo network on
 * random data, with per-layer times (see nn_bench_run in gpp/nn.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "internal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int train_step(nn_net *net, const float *x, const int32_t *y, int n,
                      const nn_sgd *opt, gpp_error *err)
{
    nn_net_zero_grad(net);
    int rc = nn_net_forward(net, x, y, n, 1, NULL, err);
    if (rc == 0) rc = nn_net_backward(net, NULL, 0, err);
    if (rc == 0) nn_net_sgd_step(net, opt);
    return rc;
}

/* nn_bench_run: see gpp/nn.h. */
cJSON *nn_bench_run(const nn_bench_opts *o, gpp_error *err)
{
    nn_ctx *ctx = NULL;
    nn_net *net = NULL;
    cJSON *desc = NULL, *out = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    if (o->batch < 1 || o->steps < 1 || o->warmup < 0) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "bench",
                      "batch and steps must be positive, warmup non-negative");
        return NULL;
    }
    ctx = nn_ctx_new(o->device, o->threads, err);
    if (!ctx) goto done;
    desc = nn_zoo_model(o->model, o->input, o->classes, err);
    if (!desc) goto done;
    net = nn_net_new(ctx, desc, NULL, 0, o->seed, err);
    if (!net || nn_net_reserve(net, o->batch, err) != 0) goto done;
    size_t per = (size_t)o->input[0] * o->input[1] * o->input[2];
    x = malloc(sizeof(float) * per * o->batch);
    y = malloc(sizeof(int32_t) * o->batch);
    if (!x || !y) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    gpp_rng r;
    gpp_rng_seed(&r, o->seed ^ 0x42454e43ULL);
    for (size_t i = 0; i < per * o->batch; i++) x[i] = gpp_rng_normal(&r);
    for (int i = 0; i < o->batch; i++) y[i] = (int32_t)gpp_rng_below(&r, (uint32_t)o->classes);
    nn_sgd opt = {.lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f};

    /* On a device the timed loops run unprofiled (per-node timing waits for
     * the device after every node) and end with a synchronisation; the
     * per-layer times come from a separate profiled pass. */
    const int dev = strcmp(nn_ctx_device(ctx), "cpu") != 0;
    for (int s = 0; s < o->warmup; s++)
        if (train_step(net, x, y, o->batch, &opt, err) != 0) goto done;
    if (nn_ctx_synchronize(ctx, err) != 0) goto done;
    nn_net_set_profile(net, !dev);
    double t0 = now_s();
    for (int s = 0; s < o->steps; s++)
        if (train_step(net, x, y, o->batch, &opt, err) != 0) goto done;
    if (nn_ctx_synchronize(ctx, err) != 0) goto done;
    double t_train = now_s() - t0;
    /* the same steps as a training stage runs them: the loss and the batch
     * accuracy read every step, waiting for them (the stage loop before
     * nn_net_stats_queue) or one step late through it (the stage loop now) */
    double t_sync = 0.0, t_async = 0.0;
    {
        float loss = 0.0f;
        int correct = 0;
        t0 = now_s();
        for (int s = 0; s < o->steps; s++) {
            nn_net_zero_grad(net);
            if (nn_net_forward(net, x, y, o->batch, 1, &loss, err) != 0 ||
                nn_net_backward(net, NULL, 0, err) != 0)
                goto done;
            nn_net_sgd_step(net, &opt);
            correct += nn_net_correct(net, y, o->batch);
        }
        if (nn_ctx_synchronize(ctx, err) != 0) goto done;
        t_sync = now_s() - t0;
        t0 = now_s();
        for (int s = 0; s < o->steps; s++) {
            nn_net_zero_grad(net);
            if (nn_net_forward(net, x, y, o->batch, 1, NULL, err) != 0) goto done;
            nn_net_stats_queue(net, s & 1);
            if (nn_net_backward(net, NULL, 0, err) != 0) goto done;
            nn_net_sgd_step(net, &opt);
            if (s > 0 && nn_net_stats_take(net, (s - 1) & 1, &loss, &correct, err) != 0)
                goto done;
        }
        if (nn_net_stats_take(net, (o->steps - 1) & 1, &loss, &correct, err) != 0) goto done;
        if (nn_ctx_synchronize(ctx, err) != 0) goto done;
        t_async = now_s() - t0;
    }
    if (dev) {
        nn_net_set_profile(net, 1);
        for (int s = 0; s < o->steps; s++)
            if (train_step(net, x, y, o->batch, &opt, err) != 0) goto done;
    }
    nn_net_set_profile(net, 0);
    int n_nodes = nn_net_num_nodes(net);
    double *tf = calloc((size_t)n_nodes, sizeof(double)), *tb = calloc((size_t)n_nodes, sizeof(double));
    double *ti = calloc((size_t)n_nodes, sizeof(double));
    if (!tf || !tb || !ti) {
        free(tf);
        free(tb);
        free(ti);
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    /* per-layer times of the timed training steps */
    for (int i = 0; i < n_nodes; i++) nn_net_node_time(net, i, &tf[i], &tb[i]);

    int iw = o->warmup < 2 ? o->warmup : 2;
    for (int s = 0; s < iw; s++)
        if (nn_net_forward(net, x, NULL, o->batch, 0, NULL, err) != 0) goto done_t;
    if (nn_ctx_synchronize(ctx, err) != 0) goto done_t;
    nn_net_set_profile(net, !dev);
    t0 = now_s();
    for (int s = 0; s < o->steps; s++)
        if (nn_net_forward(net, x, NULL, o->batch, 0, NULL, err) != 0) goto done_t;
    if (nn_ctx_synchronize(ctx, err) != 0) goto done_t;
    double t_inf = now_s() - t0;
    if (dev) {
        nn_net_set_profile(net, 1);
        for (int s = 0; s < o->steps; s++)
            if (nn_net_forward(net, x, NULL, o->batch, 0, NULL, err) != 0) goto done_t;
    }
    nn_net_set_profile(net, 0);
    for (int i = 0; i < n_nodes; i++) nn_net_node_time(net, i, &ti[i], NULL);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char dev_name[128] = "";
    nn_ctx_device_info(ctx, dev_name, sizeof dev_name, NULL);
    const char *conv_impl = "cpu";
#if GPP_HAVE_CUDA
    if (!ctx->be->host) conv_impl = nn__cuda_conv_impl(ctx);
#endif
    out = cJSON_CreateObject();
    cJSON *layers = NULL;
    if (!out) goto oom;
    int ok = cJSON_AddStringToObject(out, "model", o->model) &&
             cJSON_AddStringToObject(out, "device", nn_ctx_device(ctx)) &&
             cJSON_AddStringToObject(out, "device_name", dev_name) &&
             cJSON_AddStringToObject(out, "conv", conv_impl) &&
             cJSON_AddNumberToObject(out, "batch", o->batch) &&
             cJSON_AddNumberToObject(out, "threads", o->threads) &&
             cJSON_AddItemToObject(out, "input", cJSON_CreateIntArray(o->input, 3)) &&
             cJSON_AddNumberToObject(out, "steps", o->steps) &&
             cJSON_AddNumberToObject(out, "train_images_per_s",
                                     (double)o->batch * o->steps / t_train) &&
             cJSON_AddNumberToObject(out, "train_sync_metrics_images_per_s",
                                     (double)o->batch * o->steps / t_sync) &&
             cJSON_AddNumberToObject(out, "train_async_metrics_images_per_s",
                                     (double)o->batch * o->steps / t_async) &&
             cJSON_AddNumberToObject(out, "infer_images_per_s",
                                     (double)o->batch * o->steps / t_inf) &&
             cJSON_AddNumberToObject(out, "peak_rss_kb", (double)ru.ru_maxrss) &&
             cJSON_AddNumberToObject(out, "params", (double)nn_net_params(net)) &&
             cJSON_AddNumberToObject(out, "macs", (double)nn_net_macs(net)) &&
             (layers = cJSON_AddArrayToObject(out, "layers"));
    for (int i = 1; ok && i < n_nodes; i++) {
        nn_node_info info;
        nn_net_node(net, i, &info);
        cJSON *l = cJSON_CreateObject();
        ok = l && cJSON_AddItemToArray(layers, l) &&
             cJSON_AddStringToObject(l, "name", info.name) &&
             cJSON_AddStringToObject(l, "type", nn_op_name(info.op)) &&
             cJSON_AddNumberToObject(l, "params", (double)info.params) &&
             cJSON_AddNumberToObject(l, "macs", (double)info.macs) &&
             cJSON_AddNumberToObject(l, "fwd_ms", 1e3 * tf[i] / o->steps) &&
             cJSON_AddNumberToObject(l, "bwd_ms", 1e3 * tb[i] / o->steps) &&
             cJSON_AddNumberToObject(l, "infer_ms", 1e3 * ti[i] / o->steps);
    }
    if (!ok) goto oom;
    goto done_t;
oom:
    cJSON_Delete(out);
    out = NULL;
    gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
done_t:
    free(tf);
    free(tb);
    free(ti);
done:
    free(x);
    free(y);
    nn_net_free(net);
    cJSON_Delete(desc);
    nn_ctx_free(ctx);
    return out;
}
