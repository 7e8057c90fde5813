/* Whole networks on the CUDA backend against the cpu:
 * - one training step and an eval forward of inception-base and of a small
 *   net with every other op (dropout, avgpool, concat, flatten, fc): loss,
 *   logits, gradients, parameters after SGD, a fused bn's materialised
 *   output, max-pool switches;
 * - host access: a weight written through nn_net_tensor reaches the device,
 *   channel surgery on a device net, a checkpoint saved from the device and
 *   loaded on the cpu gives the same logits;
 * - lenet5 trained on a Fashion-MNIST subset gives the same loss curve on
 *   both backends (within 5e-3 + 2e-2 |loss| per step) and the same test
 *   accuracy within 2 points; the curves are printed;
 * - out of device memory is GPP_ENOMEM ("out_of_memory"), not a crash, and
 *   the context still works after it.
 * Skipped (77) without a GPU.  Data: $GPP_FMNIST_DIR or
 * /usr/share/datasets/fashion-mnist (t10k files). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpp/data.h"
#include "gpu_check.h"

static nn_ctx *G, *C;

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

static size_t cmp_host(const char *what, const float *ref, const float *x, size_t n, double tol,
                       double rel)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref[i]);
        if (!(d <= tol + rel * fabs((double)ref[i]))) {
            if (bad < 5)
                fprintf(stderr, "%s[%zu]: cuda %.8g cpu %.8g\n", what, i, (double)x[i],
                        (double)ref[i]);
            bad++;
        }
    }
    return bad;
}

static void batch_of(float *x, int32_t *y, size_t per, int n, uint64_t seed)
{
    gpp_rng r;
    gpp_rng_seed(&r, seed);
    for (size_t i = 0; i < per * n; i++) x[i] = gpp_rng_normal(&r);
    for (int i = 0; i < n; i++) y[i] = (int32_t)gpp_rng_below(&r, 10);
}

/* one training step and an eval forward on both backends, compared */
static void step_case(const char *zoo, const char *json, int c, int h, int w, int n)
{
    nn_net *a = build(C, zoo, json, c, h, w, n), *b = build(G, zoo, json, c, h, w, n);
    size_t per = (size_t)c * h * w;
    float *x = gpu_halloc(sizeof(float) * per * n);
    int32_t *y = gpu_halloc(sizeof(int32_t) * n);
    batch_of(x, y, per, n, 3);
    gpp_error e = {0};
    nn_sgd opt = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f};
    float la = 0, lb = 0;
    for (int s = 0; s < 2; s++) {
        nn_net_zero_grad(a);
        nn_net_zero_grad(b);
        assert_int_equal(nn_net_forward(a, x, y, n, 1, &la, &e), 0);
        assert_int_equal(nn_net_forward(b, x, y, n, 1, &lb, &e), 0);
        printf("# %s step %d: loss cpu %.6f cuda %.6f\n", zoo ? zoo : "allops", s, la, lb);
        assert_true(fabs(la - lb) <= 1e-4 + 1e-3 * fabs(la));
        int lg = nn_net_logits(a);
        size_t nl = (size_t)n * 10;
        assert_int_equal(cmp_host("logits", nn_net_output(a, lg), nn_net_output(b, lg), nl, 1e-3,
                                  1e-3), 0);
        /* an argmax may flip where two logits tie within rounding */
        assert_true(abs(nn_net_correct(a, y, n) - nn_net_correct(b, y, n)) <= 1);
        assert_int_equal(nn_net_backward(a, NULL, 0, &e), 0);
        assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
        size_t np = 0;
        const float *ga = nn_net_grad_block(a, &np), *gb = nn_net_grad_block(b, NULL);
        assert_int_equal(cmp_host("grads", ga, gb, np, 2e-3, 2e-2), 0);
        nn_net_sgd_step(a, &opt);
        nn_net_sgd_step(b, &opt);
        assert_int_equal(cmp_host("params", nn_net_param_block(a, NULL),
                                  nn_net_param_block(b, NULL), np, 1e-4, 1e-3), 0);
    }
    /* every node's output after a training forward (materialises fused bns) */
    assert_int_equal(nn_net_forward(a, x, y, n, 1, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b, x, y, n, 1, NULL, &e), 0);
    for (int id = 1; id < nn_net_num_nodes(a); id++) {
        nn_node_info info;
        nn_net_node(a, id, &info);
        size_t len = (size_t)n * info.C * info.H * info.W;
        const float *oa = nn_net_output(a, id), *ob = nn_net_output(b, id);
        assert_int_equal(cmp_host(info.name, oa, ob, len, 2e-3, 2e-2), 0);
        if (info.op == NN_OP_MAXPOOL) {
            const int32_t *sa = nn_net_switches(a, id), *sb = nn_net_switches(b, id);
            size_t diff = 0;
            for (size_t i = 0; i < len; i++) diff += sa[i] != sb[i];
            assert_true(diff <= len / 200);   /* ties within rounding only */
        }
    }
    /* eval: the folded conv-bn-relu(-pool) path */
    assert_int_equal(nn_net_forward(a, x, NULL, n, 0, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b, x, NULL, n, 0, NULL, &e), 0);
    for (int id = 1; id < nn_net_num_nodes(a); id++) {
        nn_node_info info;
        nn_net_node(a, id, &info);
        size_t len = (size_t)n * info.C * info.H * info.W;
        assert_int_equal(cmp_host(info.name, nn_net_output(a, id), nn_net_output(b, id), len,
                                  2e-3, 2e-2), 0);
    }
    assert_int_equal(nn_ctx_synchronize(G, &e), 0);
    nn_net_free(a);
    nn_net_free(b);
    free(x);
    free(y);
}

static void test_inception_step(void **st)
{
    (void)st;
    step_case("inception-base", NULL, 3, 32, 32, 8);
}

static void test_vgg_small_step(void **st)
{
    (void)st;
    step_case("vgg-small", NULL, 1, 28, 28, 16);
}

static const char *const ALLOPS =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1},"
    "{\"type\":\"relu\",\"name\":\"r1\"},"
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

static void test_allops_step(void **st)
{
    (void)st;
    step_case(NULL, ALLOPS, 2, 13, 11, 9);
}

/* host writes reach the device; surgery; checkpoints across backends */
static void test_host_access(void **st)
{
    (void)st;
    gpp_error e = {0};
    const int n = 4;
    nn_net *b = build(G, "vgg-small", NULL, 1, 28, 28, n);
    float *x = gpu_halloc(sizeof(float) * 784 * n);
    int32_t *y = gpu_halloc(sizeof(int32_t) * n);
    batch_of(x, y, 784, n, 9);
    nn_sgd opt = {.lr = 0.05f, .momentum = 0.9f};
    for (int s = 0; s < 2; s++) {   /* device-side changes first */
        nn_net_zero_grad(b);
        assert_int_equal(nn_net_forward(b, x, y, n, 1, NULL, &e), 0);
        assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
        nn_net_sgd_step(b, &opt);
    }
    int lg = nn_net_logits(b);
    nn_tensor t;
    assert_int_equal(nn_net_tensor_find(b, "fc.bias", &t), 0);
    assert_int_equal(nn_net_forward(b, x, NULL, n, 0, NULL, &e), 0);
    float before = nn_net_output(b, lg)[3];
    t.data[3] += 1.0f;   /* host write: the next forward sees it */
    assert_int_equal(nn_net_forward(b, x, NULL, n, 0, NULL, &e), 0);
    assert_float_equal(nn_net_output(b, lg)[3], before + 1.0f, 1e-4);

    /* checkpoint from the device, loaded on the cpu: the same logits */
    char path[] = "/tmp/gpp-cuda-ckptXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(nn_net_save(b, path, NULL, NULL, &e), 0);
    nn_net *a = nn_net_load(C, path, NULL, &e);
    assert_non_null(a);
    assert_int_equal(nn_net_reserve(a, n, &e), 0);
    assert_int_equal(nn_net_forward(a, x, NULL, n, 0, NULL, &e), 0);
    float *la = gpu_halloc(sizeof(float) * 10 * n);
    memcpy(la, nn_net_output(a, lg), sizeof(float) * 10 * n);
    assert_int_equal(cmp_host("ckpt logits", la, nn_net_output(b, lg), (size_t)10 * n, 1e-3,
                              1e-3), 0);
    /* and back: a cpu checkpoint loaded on the device */
    assert_int_equal(nn_net_save(a, path, NULL, NULL, &e), 0);
    nn_net *b2 = nn_net_load(G, path, NULL, &e);
    assert_non_null(b2);
    assert_int_equal(nn_net_reserve(b2, n, &e), 0);
    assert_int_equal(nn_net_forward(b2, x, NULL, n, 0, NULL, &e), 0);
    assert_int_equal(cmp_host("ckpt logits back", la, nn_net_output(b2, lg), (size_t)10 * n,
                              1e-3, 1e-3), 0);
    unlink(path);

    /* surgery on the device net and the cpu copy: the same result */
    int conv = -1;
    for (int id = 1; id < nn_net_num_nodes(b) && conv < 0; id++) {
        nn_node_info info;
        nn_net_node(b, id, &info);
        if (info.op == NN_OP_CONV) conv = id;
    }
    const int cut[3] = {0, 2, 5};
    assert_int_equal(nn_net_remove_channels(b, conv, cut, 3, &e), 0);
    assert_int_equal(nn_net_remove_channels(a, conv, cut, 3, &e), 0);
    assert_int_equal(nn_net_params(a), nn_net_params(b));
    assert_int_equal(nn_net_forward(a, x, y, n, 1, NULL, &e), 0);
    assert_int_equal(nn_net_forward(b, x, y, n, 1, NULL, &e), 0);
    assert_int_equal(cmp_host("logits after surgery", nn_net_output(a, lg),
                              nn_net_output(b, lg), (size_t)10 * n, 1e-3, 1e-3), 0);
    assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
    nn_net_sgd_step(b, &opt);
    assert_int_equal(nn_ctx_synchronize(G, &e), 0);
    nn_net_free(a);
    nn_net_free(b);
    nn_net_free(b2);
    free(x);
    free(y);
    free(la);
}

/* lenet5 on 2560 Fashion-MNIST images, 40 steps of 64, both backends */
static void test_lenet5_loss_curve(void **st)
{
    (void)st;
    const char *dir = getenv("GPP_FMNIST_DIR");
    if (!dir || !*dir) dir = "/usr/share/datasets/fashion-mnist";
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", dir);
    gpp_dataset *ds = NULL;
    gpp_error e = {0};
    if (gpp_dataset_read_idx(&ds, ip, lp, "fashion-mnist", &e) != 0)
        fail_msg("Fashion-MNIST (set GPP_FMNIST_DIR): %s", e.message);
    const int B = 64, steps = 40, n_test = 1000;
    assert_true(ds->n >= (uint32_t)(B * steps + n_test));
    float *x = gpu_halloc(sizeof(float) * 784 * ds->n);
    int32_t *y = gpu_halloc(sizeof(int32_t) * ds->n);
    for (size_t i = 0; i < (size_t)784 * ds->n; i++) x[i] = ds->images[i] / 255.0f - 0.5f;
    for (uint32_t i = 0; i < ds->n; i++) y[i] = ds->labels[i];
    nn_net *net[2] = {build(C, "lenet5", NULL, 1, 28, 28, B), build(G, "lenet5", NULL, 1, 28, 28, B)};
    float curve[2][40];
    nn_sgd opt = {.lr = 0.02f, .momentum = 0.9f, .weight_decay = 5e-4f};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < steps; s++) {
            nn_net_zero_grad(net[k]);
            assert_int_equal(nn_net_forward(net[k], x + (size_t)784 * B * s, y + (size_t)B * s, B,
                                            1, &curve[k][s], &e), 0);
            assert_int_equal(nn_net_backward(net[k], NULL, 0, &e), 0);
            nn_net_sgd_step(net[k], &opt);
        }
    int correct[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        for (int i = B * steps; i + B <= B * steps + n_test; i += B) {
            assert_int_equal(nn_net_forward(net[k], x + (size_t)784 * i, NULL, B, 0, NULL, &e), 0);
            correct[k] += nn_net_correct(net[k], y + i, B);
        }
    printf("# lenet5 fashion-mnist loss curve (step cpu cuda)\n");
    size_t bad = 0;
    for (int s = 0; s < steps; s++) {
        printf("lenet5_loss %d %.6f %.6f\n", s, curve[0][s], curve[1][s]);
        bad += !(fabs(curve[0][s] - curve[1][s]) <= 5e-3 + 2e-2 * fabs(curve[0][s]));
    }
    int tested = (n_test / B) * B;
    printf("lenet5_test_accuracy cpu %.4f cuda %.4f (%d images)\n",
           (double)correct[0] / tested, (double)correct[1] / tested, tested);
    assert_int_equal(bad, 0);
    assert_true(curve[0][steps - 1] < curve[0][0]);   /* it learned */
    assert_true(abs(correct[0] - correct[1]) <= tested / 50);
    nn_net_free(net[0]);
    nn_net_free(net[1]);
    gpp_dataset_free(ds);
    free(x);
    free(y);
}

/* device out of memory: an error, not a crash; the context survives */
/* nn_net_stats_queue / take on the device: the loss and batch accuracy of
 * step k, taken after step k+1 is queued (the copies run on the stream
 * while the host goes on), match the cpu's at that step. */
static void test_stats_queue(void **st)
{
    (void)st;
    const int n = 64, steps = 6;
    nn_net *a = build(C, "lenet5", NULL, 1, 28, 28, n), *b = build(G, "lenet5", NULL, 1, 28, 28, n);
    size_t per = 28 * 28;
    float *x = gpu_halloc(sizeof(float) * per * n * steps);
    int32_t *y = gpu_halloc(sizeof(int32_t) * n * steps);
    for (int s = 0; s < steps; s++) batch_of(x + per * n * s, y + n * s, per, n, 40 + s);
    gpp_error e = {0};
    nn_sgd opt = {.lr = 0.002f, .momentum = 0.9f};
    float want[8];
    int ok_cpu[8];
    for (int s = 0; s < steps; s++) {
        nn_net_zero_grad(a);
        nn_net_zero_grad(b);
        assert_int_equal(nn_net_forward(a, x + per * n * s, y + n * s, n, 1, &want[s], &e), 0);
        ok_cpu[s] = nn_net_correct(a, y + n * s, n);
        assert_int_equal(nn_net_forward(b, x + per * n * s, y + n * s, n, 1, NULL, &e), 0);
        nn_net_stats_queue(b, s & 1);
        assert_int_equal(nn_net_backward(a, NULL, 0, &e), 0);
        assert_int_equal(nn_net_backward(b, NULL, 0, &e), 0);
        nn_net_sgd_step(a, &opt);
        nn_net_sgd_step(b, &opt);
        /* step s-1's numbers once step s is queued; the last one at the end */
        for (int k = s - 1; k <= s; k++) {
            if (k < 0 || (k == s && s < steps - 1)) continue;
            float l = -1.0f;
            int ok = -1;
            assert_int_equal(nn_net_stats_take(b, k & 1, &l, &ok, &e), 0);
            printf("stats_queue step %d: loss cpu %.6f cuda %.6f, right cpu %d cuda %d\n", k,
                   want[k], l, ok_cpu[k], ok);
            assert_true(fabs(l - want[k]) <= 1e-4 + 1e-3 * fabs(want[k]));
            assert_true(abs(ok - ok_cpu[k]) <= 1);
        }
    }
    nn_net_free(a);
    nn_net_free(b);
    free(x);
    free(y);
}

static void test_oom(void **st)
{
    (void)st;
    gpp_error e = {0};
    int in[3] = {3, 32, 32};
    cJSON *d = nn_zoo_model("vgg16-cifar", in, 10, &e);
    nn_net *n = nn_net_new(G, d, in, 10, 1, &e);
    cJSON_Delete(d);
    assert_non_null(n);
    int rc = nn_net_reserve(n, 1 << 20, &e);   /* terabytes of activations */
    printf("# oom: rc %d code %s: %s\n", rc, e.code, e.message);
    assert_int_equal(rc, GPP_ENOMEM);
    assert_string_equal(e.code, "out_of_memory");
    assert_non_null(strstr(e.message, "device"));
    assert_int_equal(nn_net_reserve(n, 4, &e), 0);   /* still usable */
    float *x = gpu_halloc(sizeof(float) * 3 * 32 * 32 * 4);
    int32_t y[4] = {1, 2, 3, 4};
    float loss = 0;
    assert_int_equal(nn_net_forward(n, x, y, 4, 1, &loss, &e), 0);
    assert_true(isfinite(loss));
    assert_int_equal(nn_ctx_synchronize(G, &e), 0);
    nn_net_free(n);
    free(x);
}

int main(void)
{
    G = gpu_ctx_or_skip("cuda_net");
    gpp_error e = {0};
    C = nn_ctx_new("cpu", 2, &e);
    if (!C) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allops_step),   cmocka_unit_test(test_inception_step),
        cmocka_unit_test(test_vgg_small_step), cmocka_unit_test(test_host_access),
        cmocka_unit_test(test_lenet5_loss_curve), cmocka_unit_test(test_stats_queue),
        cmocka_unit_test(test_oom),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nn_ctx_free(G);
    nn_ctx_free(C);
    return rc;
}
