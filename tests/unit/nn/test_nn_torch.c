/* Whole networks against PyTorch: lenet5, vgg-small and inception-base
 * (1x28x28, batch 4) with the weights of gen_fixtures.py's formula; eval
 * logits, training-mode logits, loss and every parameter gradient (in full,
 * or 32 random projections of the large ones, plus the sum of squares)
 * against the fixtures that script wrote with PyTorch in float64.
 * Tolerance: |engine - torch| <= 1e-4 + 1e-3 * |torch| for logits and loss,
 * <= 1e-5 + 2e-3 * max|g| for gradients, 2e-3 * ||g|| for projections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/ckpt.h"
#include "gpp_config.h"
#include "internal.h"
#include "nn_check.h"

#define NPROJ 32

static uint32_t fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x45d9f3bu;
    x ^= x >> 16;
    x *= 0x45d9f3bu;
    x ^= x >> 16;
    return x;
}

/* gen_fixtures.py's value() */
static void fill_tensor(const nn_tensor *t, nn_op op)
{
    uint32_t h = fnv1a32(t->name);
    const char *dot = strrchr(t->name, '.');
    int is_weight = strcmp(dot, ".weight") == 0, is_var = strcmp(dot, ".running_var") == 0;
    for (size_t i = 0; i < t->len; i++) {
        double v = (double)mix(h + (uint32_t)i * 2654435761u) / 4294967296.0;
        double out;
        if (is_var || (op == NN_OP_BN && is_weight))
            out = 0.5 + v;
        else if (op == NN_OP_BN)
            out = (2 * v - 1) * 0.2;
        else if (is_weight)
            out = (2 * v - 1) * sqrt(6.0 / ((double)t->len / t->shape[0]));
        else
            out = (2 * v - 1) * 0.1;
        t->data[i] = (float)out;
    }
}

static const gpp_tensor_view *need(const gpp_ckpt *c, const char *name)
{
    const gpp_tensor_view *v = gpp_ckpt_find(c, name);
    if (!v) fprintf(stderr, "fixture has no tensor %s\n", name);
    assert_non_null(v);
    return v;
}

static void check_close(const char *what, const float *got, const float *want, size_t n,
                        double atol, double rtol)
{
    size_t w = 0;
    double e = nn_test_err(got, want, n, atol, rtol, &w);
    if (e > 1.0) fprintf(stderr, "%s[%zu]: engine %.7g torch %.7g\n", what, w, got[w], want[w]);
    assert_true(e <= 1.0);
}

static void compare(const char *model, int threads)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/unit/nn/fixtures/%s.gppm", GPP_SOURCE_ROOT, model);
    gpp_ckpt *ck = NULL;
    gpp_error err = {0};
    int rc = gpp_ckpt_read_file(path, &ck, &err);
    if (rc) fprintf(stderr, "%s: %s\n", path, err.message);
    assert_int_equal(rc, 0);
    cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
    assert_non_null(doc);
    nn_ctx *ctx = nn_ctx_new("cpu", threads, &err);
    nn_net *net = nn_net_new(ctx, cJSON_GetObjectItem(doc, "network"), NULL, 0, 1, &err);
    if (!net) fprintf(stderr, "%s\n", err.message);
    assert_non_null(net);
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        nn_node_info info;
        nn_net_node(net, t.node, &info);
        fill_tensor(&t, info.op);
    }
    const gpp_tensor_view *x = need(ck, "input"), *yv = need(ck, "labels");
    int n = (int)x->dims[0];
    int32_t y[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) y[i] = (int32_t)yv->data[i];
    assert_int_equal(nn_net_reserve(net, n, &err), 0);
    int lg = nn_net_logits(net);
    nn_node_info li;
    nn_net_node(net, lg, &li);
    size_t nl = (size_t)n * li.C;

    /* eval mode first: training mode moves the running statistics */
    assert_int_equal(nn_net_forward(net, x->data, NULL, n, 0, NULL, &err), 0);
    const gpp_tensor_view *el = need(ck, "eval_logits");
    assert_int_equal(el->count, nl);
    check_close("eval_logits", nn_net_output(net, lg), el->data, nl, 1e-4, 1e-3);

    float loss;
    nn_net_zero_grad(net);
    assert_int_equal(nn_net_forward(net, x->data, y, n, 1, &loss, &err), 0);
    check_close("logits", nn_net_output(net, lg), need(ck, "logits")->data, nl, 1e-4, 1e-3);
    check_close("loss", &loss, need(ck, "loss")->data, 1, 1e-5, 1e-4);
    assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);

    int checked = 0;
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        if (!t.grad) continue;
        char name[160];
        double ss = 0.0, gmax = 0.0;
        for (size_t j = 0; j < t.len; j++) {
            ss += (double)t.grad[j] * t.grad[j];
            gmax = fmax(gmax, fabs((double)t.grad[j]));
        }
        snprintf(name, sizeof name, "gradsq/%s", t.name);
        float want_ss = need(ck, name)->data[0];
        if (fabs(ss - want_ss) > 1e-10 + 4e-3 * want_ss)
            fprintf(stderr, "%s: %s engine %.7g torch %.7g\n", model, name, ss, want_ss);
        assert_true(fabs(ss - want_ss) <= 1e-10 + 4e-3 * want_ss);
        snprintf(name, sizeof name, "grad/%s", t.name);
        const gpp_tensor_view *g = gpp_ckpt_find(ck, name);
        if (g) {
            assert_int_equal(g->count, t.len);
            double m = 0.0;
            for (size_t j = 0; j < t.len; j++) m = fmax(m, fabs((double)g->data[j]));
            check_close(name, t.grad, g->data, t.len, 1e-5 + 2e-3 * m, 0.0);
        } else {
            snprintf(name, sizeof name, "gradproj/%s", t.name);
            g = need(ck, name);
            assert_int_equal(g->count, NPROJ);
            double norm = sqrt(want_ss);
            for (int r = 0; r < NPROJ; r++) {
                double p = 0.0;
                for (size_t j = 0; j < t.len; j++) {
                    uint32_t s = mix((uint32_t)r * 0x9e3779b9u + (uint32_t)j * 2654435761u + 7u);
                    p += s >= 0x80000000u ? -(double)t.grad[j] : (double)t.grad[j];
                }
                if (fabs(p - g->data[r]) > 1e-6 + 2e-3 * norm)
                    fprintf(stderr, "%s: %s[%d] engine %.7g torch %.7g\n", model, name, r, p,
                            (double)g->data[r]);
                assert_true(fabs(p - g->data[r]) <= 1e-6 + 2e-3 * norm);
            }
        }
        checked++;
    }
    printf("%s (%d threads): loss %.6f, %d parameter gradients match\n", model, threads, loss,
           checked);
    assert_true(checked >= 8);
    nn_net_free(net);
    nn_ctx_free(ctx);
    cJSON_Delete(doc);
    gpp_ckpt_free(ck);
}

static void test_lenet5(void **state)
{
    (void)state;
    compare("lenet5", 1);
    compare("lenet5", 2);
}

static void test_vgg_small(void **state)
{
    (void)state;
    compare("vgg-small", 1);
    compare("vgg-small", 2);
}

static void test_inception_base(void **state)
{
    (void)state;
    compare("inception-base", 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lenet5),
        cmocka_unit_test(test_vgg_small),
        cmocka_unit_test(test_inception_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
