/* The device code paths of the engine (worker/nn/net.c: parameter mirrors
 * and their coherence, host views of node buffers, the pinned batch, the
 * loss slot, injected gradients, dropout masks, surgery and checkpoints of
 * a device net, the GPP stages on a device context) without a GPU: a "fake
 * device" backend whose memory is separate host memory (host = 0: every
 * buffer goes through alloc / upload / download like on CUDA) and whose
 * kernels are the cpu backend's.  Results must then be bit-identical to the
 * cpu context's: any missed upload or download shows.  Runs everywhere
 * (suite unit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpp/ckpt.h"
#include "gpu_check.h"
#include "stage_fixture.h"

static nn_ctx *C, *F;

static nn_net *build(nn_ctx *ctx, const char *zoo, const char *json, int c, int h, int w,
                     int batch)
{
    gpp_error e = {0};
    int in[3] = {c, h, w};
    cJSON *d = zoo ? nn_zoo_model(zoo, in, 10, &e) : cJSON_Parse(json);
    assert_non_null(d);
    nn_net *n = nn_net_new(ctx, d, in, 10, 7, &e);
    if (!n) fail_msg("%s", e.message);
    cJSON_Delete(d);
    assert_int_equal(nn_net_reserve(n, batch, &e), 0);
    return n;
}

static const char *const ALLOPS =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1},"
    "{\"type\":\"bn\",\"name\":\"c1_bn\"},{\"type\":\"relu\",\"name\":\"r1\"},"
    "{\"type\":\"avgpool\",\"name\":\"a1\",\"k\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv\",\"name\":\"b1\",\"out\":4,\"k\":1,\"inputs\":[\"a1\"]},"
    "{\"type\":\"conv\",\"name\":\"b2\",\"out\":6,\"k\":3,\"pad\":1,\"inputs\":[\"a1\"]},"
    "{\"type\":\"bn\",\"name\":\"b2_bn\"},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"b1\",\"b2_bn\"]},"
    "{\"type\":\"maxpool\",\"name\":\"m1\",\"k\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"flatten\",\"name\":\"fl\"},"
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":32},"
    "{\"type\":\"relu\",\"name\":\"r2\"},"
    "{\"type\":\"dropout\",\"name\":\"dr\",\"p\":0.3},"
    "{\"type\":\"fc\",\"name\":\"fc\",\"out\":10}]";

static void same(const char *what, const void *a, const void *b, size_t bytes)
{
    if (memcmp(a, b, bytes) != 0) {
        const unsigned char *x = a, *y = b;
        size_t i = 0;
        while (x[i] == y[i]) i++;
        fail_msg("%s differs (first at float %zu of %zu: %g vs %g)", what, i / 4, bytes / 4,
                 (double)((const float *)a)[i / 4], (double)((const float *)b)[i / 4]);
    }
}

static void run_case(const char *zoo, const char *json, int c, int h, int w, int n)
{
    nn_net *a = build(C, zoo, json, c, h, w, n), *b = build(F, zoo, json, c, h, w, n);
    size_t per = (size_t)c * h * w;
    float *x = gpu_halloc(sizeof(float) * per * n), *inj = gpu_halloc(sizeof(float) * 4096);
    int32_t *y = gpu_halloc(sizeof(int32_t) * n);
    gpp_rng r;
    gpp_rng_seed(&r, 5);
    for (size_t i = 0; i < per * n; i++) x[i] = gpp_rng_normal(&r);
    for (int i = 0; i < n; i++) y[i] = (int32_t)gpp_rng_below(&r, 10);
    for (int i = 0; i < 4096; i++) inj[i] = 0.01f * gpp_rng_normal(&r);
    gpp_error e = {0};
    nn_sgd opt = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};
    int P = nn_net_predecision(a);
    nn_node_info pi;
    nn_net_node(a, P, &pi);
    assert_true((size_t)n * pi.C * pi.H * pi.W <= 4096);
    for (int s = 0; s < 3; s++) {
        float la = 0, lb = 0;
        nn_net_zero_grad(a);
        nn_net_zero_grad(b);
        assert_int_equal(nn_net_forward(a, x, y, n, 1, &la, &e), 0);
        assert_int_equal(nn_net_forward(b, x, y, n, 1, &lb, &e), 0);
        assert_memory_equal(&la, &lb, sizeof la);
        assert_true(la > 0.0f);
        assert_int_equal(nn_net_correct(a, y, n), nn_net_correct(b, y, n));
        same("pre-decision", nn_net_output(a, P), nn_net_output(b, P),
             sizeof(float) * n * pi.C * pi.H * pi.W);
        nn_grad_inject ij = {.node = P, .grad = inj};
        assert_int_equal(nn_net_backward(a, &ij, s & 1, &e), 0);
        assert_int_equal(nn_net_backward(b, &ij, s & 1, &e), 0);
        size_t np = 0;
        nn_net_param_block(a, &np);
        same("grads", nn_net_grad_block(a, NULL), nn_net_grad_block(b, NULL), sizeof(float) * np);
        nn_net_sgd_step(a, &opt);
        nn_net_sgd_step(b, &opt);
        same("params", nn_net_param_block(a, NULL), nn_net_param_block(b, NULL),
             sizeof(float) * np);
        same("momentum", nn_net_momentum_block(a, NULL), nn_net_momentum_block(b, NULL),
             sizeof(float) * np);
    }
    for (int train = 1; train >= 0; train--) {
        assert_int_equal(nn_net_forward(a, x, y, n, train, NULL, &e), 0);
        assert_int_equal(nn_net_forward(b, x, y, n, train, NULL, &e), 0);
        for (int id = 0; id < nn_net_num_nodes(a); id++) {
            nn_node_info info;
            nn_net_node(a, id, &info);
            size_t len = (size_t)n * info.C * info.H * info.W;
            same(info.name, nn_net_output(a, id), nn_net_output(b, id), sizeof(float) * len);
            const int32_t *sa = nn_net_switches(a, id), *sb = nn_net_switches(b, id);
            if (sa) same("switches", sa, sb, sizeof(int32_t) * len);
        }
    }
    /* gradients of outputs, a fused bn's included */
    nn_net_zero_grad(a);
    nn_net_zero_grad(b);
    assert_int_equal(nn_net_forward(a, x, y, n, 1, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b, x, y, n, 1, NULL, &e), 0);
    assert_int_equal(nn_net_backward(a, NULL, 0, &e), 0);
    assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
    for (int id = 1; id < nn_net_num_nodes(a); id++) {
        nn_node_info info;
        nn_net_node(a, id, &info);
        const float *ga = nn_net_output_grad(a, id), *gb = nn_net_output_grad(b, id);
        assert_true((ga == NULL) == (gb == NULL));
        if (ga) same(info.name, ga, gb, sizeof(float) * n * info.C * info.H * info.W);
    }
    /* a host write through a tensor reaches the device */
    nn_tensor ta, tb;
    assert_int_equal(nn_net_tensor(a, 0, &ta), 0);
    assert_int_equal(nn_net_tensor(b, 0, &tb), 0);
    ta.data[1] += 0.5f;
    tb.data[1] += 0.5f;
    assert_int_equal(nn_net_forward(a, x, y, n, 0, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b, x, y, n, 0, NULL, &e), 0);
    int lg = nn_net_logits(a);
    same("logits after a host write", nn_net_output(a, lg), nn_net_output(b, lg),
         sizeof(float) * n * 10);
    /* explicit syncs are harmless */
    assert_int_equal(nn_net_sync_to_device(b, &e), 0);
    assert_int_equal(nn_net_sync_to_host(b, &e), 0);
    /* surgery, then training at the new widths */
    int conv = nn_net_find(a, zoo ? "conv1" : "c1");
    if (conv < 0)
        for (int id = 1; id < nn_net_num_nodes(a) && conv < 0; id++) {
            nn_node_info info;
            nn_net_node(a, id, &info);
            if (info.op == NN_OP_CONV) conv = id;
        }
    const int cut[2] = {1, 3};
    assert_int_equal(nn_net_remove_channels(a, conv, cut, 2, &e), 0);
    assert_int_equal(nn_net_remove_channels(b, conv, cut, 2, &e), 0);
    float la = 0, lb = 0;
    nn_net_zero_grad(a);
    nn_net_zero_grad(b);
    assert_int_equal(nn_net_forward(a, x, y, n, 1, &la, &e), 0);
    assert_int_equal(nn_net_forward(b, x, y, n, 1, &lb, &e), 0);
    assert_memory_equal(&la, &lb, sizeof la);
    assert_int_equal(nn_net_backward(a, NULL, 0, &e), 0);
    assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
    size_t np = 0;
    nn_net_param_block(a, &np);
    same("params after surgery, before sgd", nn_net_param_block(a, NULL), nn_net_param_block(b, NULL),
         sizeof(float) * np);
    same("momentum after surgery", nn_net_momentum_block(a, NULL), nn_net_momentum_block(b, NULL),
         sizeof(float) * np);
    same("grads after surgery", nn_net_grad_block(a, NULL), nn_net_grad_block(b, NULL),
         sizeof(float) * np);
    nn_net_sgd_step(a, &opt);
    nn_net_sgd_step(b, &opt);
    same("params after surgery", nn_net_param_block(a, NULL), nn_net_param_block(b, NULL),
         sizeof(float) * np);
    /* checkpoints: device -> file -> device, and the same as the cpu's */
    char path[] = "/tmp/gpp-fakedev-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(nn_net_save(b, path, NULL, NULL, &e), 0);
    nn_net *b2 = nn_net_load(F, path, NULL, &e);
    assert_non_null(b2);
    assert_int_equal(nn_net_reserve(b2, n, &e), 0);
    assert_int_equal(nn_net_forward(a, x, NULL, n, 0, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b2, x, NULL, n, 0, NULL, &e), 0);
    same("logits after a checkpoint", nn_net_output(a, lg), nn_net_output(b2, lg),
         sizeof(float) * n * 10);
    unlink(path);
    nn_net_free(a);
    nn_net_free(b);
    nn_net_free(b2);
    free(x);
    free(y);
    free(inj);
}

/* nn_net_stats_queue / nn_net_stats_take: a step's loss and batch accuracy
 * taken one step late (two in flight) equal what nn_net_forward's loss and
 * nn_net_correct give at the step itself -- on the cpu and on the device
 * path -- and the training is the same as without them. */
static void test_stats_queue(void **st)
{
    (void)st;
    const int n = 24, steps = 5;
    nn_net *ref = build(C, "lenet5", NULL, 1, 28, 28, n);
    nn_net *nets[2] = {build(C, "lenet5", NULL, 1, 28, 28, n),
                       build(F, "lenet5", NULL, 1, 28, 28, n)};
    size_t per = 28 * 28;
    float *x = gpu_halloc(sizeof(float) * per * n * steps);
    int32_t *y = gpu_halloc(sizeof(int32_t) * n * steps);
    gpp_rng r;
    gpp_rng_seed(&r, 11);
    for (size_t i = 0; i < per * n * steps; i++) x[i] = gpp_rng_normal(&r);
    for (int i = 0; i < n * steps; i++) y[i] = (int32_t)gpp_rng_below(&r, 10);
    nn_sgd opt = {.lr = 0.002f, .momentum = 0.9f};
    gpp_error e = {0};
    float want_loss[8];
    int want_ok[8];
    for (int s = 0; s < steps; s++) {
        const float *xs = x + per * n * s;
        const int32_t *ys = y + n * s;
        nn_net_zero_grad(ref);
        assert_int_equal(nn_net_forward(ref, xs, ys, n - s, 1, &want_loss[s], &e), 0);
        want_ok[s] = nn_net_correct(ref, ys, n - s);
        assert_int_equal(nn_net_backward(ref, NULL, 0, &e), 0);
        nn_net_sgd_step(ref, &opt);
        for (int k = 0; k < 2; k++) {
            nn_net *t = nets[k];
            nn_net_zero_grad(t);
            assert_int_equal(nn_net_forward(t, xs, ys, n - s, 1, NULL, &e), 0);
            nn_net_stats_queue(t, s & 1);
            assert_int_equal(nn_net_backward(t, NULL, 0, &e), 0);
            nn_net_sgd_step(t, &opt);
            if (s > 0) {
                float l = -1.0f;
                int ok = -1;
                assert_int_equal(nn_net_stats_take(t, (s - 1) & 1, &l, &ok, &e), 0);
                assert_memory_equal(&l, &want_loss[s - 1], sizeof l);
                assert_int_equal(ok, want_ok[s - 1]);
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        float l = -1.0f;
        int ok = -1;
        assert_int_equal(nn_net_stats_take(nets[k], (steps - 1) & 1, &l, &ok, &e), 0);
        assert_memory_equal(&l, &want_loss[steps - 1], sizeof l);
        assert_int_equal(ok, want_ok[steps - 1]);
        /* nothing queued any more */
        assert_int_equal(nn_net_stats_take(nets[k], (steps - 1) & 1, &l, &ok, &e), GPP_EINVAL);
        size_t np = 0;
        nn_net_param_block(ref, &np);
        same("params", nn_net_param_block(ref, NULL), nn_net_param_block(nets[k], NULL),
             sizeof(float) * np);
        nn_net_free(nets[k]);
    }
    nn_net_free(ref);
    free(x);
    free(y);
}

static void test_allops(void **st)
{
    (void)st;
    run_case(NULL, ALLOPS, 2, 13, 11, 5);
}

static void test_vgg_small(void **st)
{
    (void)st;
    run_case("vgg-small", NULL, 1, 28, 28, 3);
}

static void test_inception(void **st)
{
    (void)st;
    run_case("inception-base", NULL, 3, 16, 16, 2);
}

static const char *const GAPNET =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c1_bn\"},{\"type\":\"relu\",\"name\":\"c1_relu\"},"
    "{\"type\":\"maxpool\",\"name\":\"p1\",\"k\":2},"
    "{\"type\":\"conv\",\"name\":\"c2\",\"out\":16,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c2_bn\"},{\"type\":\"relu\",\"name\":\"c2_relu\"},"
    "{\"type\":\"global-avgpool\",\"name\":\"gap\"},{\"type\":\"fc\",\"name\":\"fc1\",\"out\":20},"
    "{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"fc\",\"name\":\"fc\",\"out\":4}]";

/* the GPP stages on a device context: the same checkpoints as on the cpu */
static void test_gpp_stages(void **st)
{
    (void)st;
    gpp_stage_data *d = sf_data(160, 40, 12, 4);
    char *dir = sf_tmpdir();
    char text[4096];
    snprintf(text, sizeof text,
             "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"model\":%s,\"seed\":2,"
             "\"train\":{\"epochs\":1,\"batch_size\":16,\"lr\":0.05},"
             "\"push\":{\"epochs\":1,\"min_per_class\":3},"
             "\"prune\":{\"threshold\":\"eta\",\"eta\":0.1,\"finetune_epochs\":1,"
             "\"samples_per_class\":5,\"max_accuracy_drop\":0.5}}",
             GAPNET);
    gpp_jobspec *spec = sf_spec(text);
    static const gpp_stage_kind kinds[3] = {GPP_STAGE_TRAIN, GPP_STAGE_PUSH, GPP_STAGE_PRUNE};
    static const char *const names[2][3] = {{"t0", "u0", "p0"}, {"t1", "u1", "p1"}};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < 3; s++) {
            char ip[600], op[600];
            snprintf(ip, sizeof ip, "%s/%s.gppm", dir, s ? names[k][s - 1] : "");
            snprintf(op, sizeof op, "%s/%s.gppm", dir, names[k][s]);
            gpp_stage_req req = {.spec = spec, .kind = kinds[s], .index = s, .input = s ? ip : NULL,
                                 .output = op, .data = d, .ctx = k ? F : C, .threads = 1};
            gpp_error e = {0};
            if (gpp_stage_run(&req, NULL, NULL, &e) != 0)
                fail_msg("%s stage %d: %s", k ? "fakedev" : "cpu", s, e.message);
        }
    for (int s = 0; s < 3; s++) {
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/%s.gppm", dir, names[0][s]);
        snprintf(pb, sizeof pb, "%s/%s.gppm", dir, names[1][s]);
        gpp_ckpt *x = NULL, *y = NULL;
        assert_int_equal(gpp_ckpt_read_file(pa, &x, NULL), 0);
        assert_int_equal(gpp_ckpt_read_file(pb, &y, NULL), 0);
        assert_int_equal(gpp_ckpt_tensor_count(x), gpp_ckpt_tensor_count(y));
        for (size_t i = 0; i < gpp_ckpt_tensor_count(x); i++) {
            const gpp_tensor_view *v = gpp_ckpt_tensor(x, i);
            const gpp_tensor_view *w = gpp_ckpt_find(y, v->name);
            assert_non_null(w);
            assert_int_equal(v->count, w->count);
            if (memcmp(v->data, w->data, v->count * sizeof(float)) != 0)
                fail_msg("stage %d: tensor %s differs", s, v->name);
        }
        gpp_ckpt_free(x);
        gpp_ckpt_free(y);
    }
    gpp_jobspec_free(spec);
    sf_rmtree(dir);
    free(dir);
    gpp_stage_data_free(d);
}

int main(void)
{
    gpp_error e = {0};
    C = nn_ctx_new("cpu", 1, &e);
    F = gpu_fake_ctx();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_queue),
        cmocka_unit_test(test_allops),
        cmocka_unit_test(test_vgg_small),
        cmocka_unit_test(test_inception),
        cmocka_unit_test(test_gpp_stages),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nn_ctx_free(F);
    nn_ctx_free(C);
    if (rc == 0 && gpu_fake_live != 0) {
        fprintf(stderr, "fakedev: %lld device blocks leaked\n", gpu_fake_live);
        rc = 1;
    }
    return rc;
}
