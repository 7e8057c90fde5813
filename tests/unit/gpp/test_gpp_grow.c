/* Grow: a basic Inception module goes in just before the global average
 * pooling, every old tensor is kept bit for bit, the module has the widths
 * asked for (the previous module's, or widths summing to the pooled width,
 * or the configured ones) and its parameters add up; the classifier is kept
 * when the pooled width does not change and re-initialised when it does;
 * a net without the pooling has nowhere to grow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stage_fixture.h"
#include "stages_internal.h"

static nn_net *zoo(nn_ctx *ctx, const char *name, const int in[3])
{
    cJSON *d = nn_zoo_model(name, in, 10, NULL);
    assert_non_null(d);
    nn_net *net = nn_net_new(ctx, d, NULL, 0, 7, NULL);
    cJSON_Delete(d);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, 2, NULL), 0);
    return net;
}

/* Every tensor of `old` is in `g` with the same bits (but skip_node's). */
static void assert_old_kept(nn_net *old, nn_net *g, const char *skip)
{
    for (int i = 0; i < nn_net_num_tensors(old); i++) {
        nn_tensor a, b;
        nn_net_tensor(old, i, &a);
        if (skip && strncmp(a.name, skip, strlen(skip)) == 0 && a.name[strlen(skip)] == '.')
            continue;
        assert_int_equal(nn_net_tensor_find(g, a.name, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len * sizeof(float));
    }
}

static int width(nn_net *net, const char *name)
{
    nn_node_info in;
    int id = nn_net_find(net, name);
    assert_true(id > 0);
    nn_net_node(net, id, &in);
    return in.C;
}

/* conv (no bias) + bn params of a k x k conv from c to o channels */
static long long cbr(long long c, long long o, long long k)
{
    return c * o * k * k + 2 * o;
}

static void test_grow_inception(void **state)
{
    (void)state;
    const int in[3] = {1, 16, 16};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "inception-base", in);
    int w[6];
    assert_int_equal(gpp__grow_site(net), nn_net_find(net, "gap"));
    assert_int_equal(gpp__grow_widths(net, NULL, w, NULL), 0);
    const int want[6] = {48, 48, 64, 12, 24, 24};   /* inc2's */
    assert_memory_equal(w, want, sizeof want);
    nn_net *g = NULL;
    int fc_kept = -1;
    assert_int_equal(gpp__grow_insert(ctx, net, "grow1", w, 99, &g, &fc_kept, NULL), 0);
    assert_int_equal(fc_kept, 1);
    assert_old_kept(net, g, NULL);   /* the classifier too */
    assert_int_equal(width(g, "grow1_concat"), 160);
    assert_int_equal(width(g, "grow1_b2b"), 64);
    assert_int_equal(width(g, "grow1_b3c"), 24);
    assert_true(nn_net_find(g, "grow1_b3c_bn") > 0);   /* the zoo's conv-bn-relu style */
    /* the pooling reads the module, which reads the old input */
    nn_node_info gi, b1;
    nn_net_node(g, nn_net_find(g, "gap"), &gi);
    assert_int_equal(gi.inputs[0], nn_net_find(g, "grow1_concat"));
    nn_net_node(g, nn_net_find(g, "grow1_b1"), &b1);
    assert_int_equal(b1.inputs[0], nn_net_find(g, "inc2_concat"));
    long long add = cbr(160, 48, 1) + cbr(160, 48, 1) + cbr(48, 64, 3) + cbr(160, 12, 1) +
                    cbr(12, 24, 3) + cbr(24, 24, 3) + cbr(160, 24, 1);
    assert_int_equal(nn_net_params(g), nn_net_params(net) + add);
    /* the new module is He-initialised, not zero */
    nn_tensor t;
    assert_int_equal(nn_net_tensor_find(g, "grow1_b2b.weight", &t), 0);
    double ss = 0;
    for (size_t i = 0; i < t.len; i++) ss += (double)t.data[i] * t.data[i];
    assert_true(ss / (double)t.len > 0.5 * 2.0 / (48 * 9) && ss / (double)t.len < 2.0 * 2.0 / (48 * 9));
    /* it runs */
    float x[2 * 256];
    for (int i = 0; i < 512; i++) x[i] = (float)(i % 17) / 17.0f;
    assert_int_equal(nn_net_forward(g, x, NULL, 2, 0, NULL, NULL), 0);
    /* and grows again on top, with a fresh name */
    nn_net *g2 = NULL;
    assert_int_equal(gpp__grow_widths(g, NULL, w, NULL), 0);
    assert_memory_equal(w, want, sizeof want);   /* now the grown module's */
    assert_int_equal(gpp__grow_insert(ctx, g, "grow2", w, 100, &g2, &fc_kept, NULL), 0);
    assert_old_kept(g, g2, NULL);
    nn_net_node(g2, nn_net_find(g2, "grow2_b1"), &b1);
    assert_int_equal(b1.inputs[0], nn_net_find(g2, "grow1_concat"));
    nn_net_free(g2);
    nn_net_free(g);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static void test_grow_widths_derived_and_given(void **state)
{
    (void)state;
    const int in[3] = {1, 12, 12};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "vgg-small", in);
    int w[6];
    assert_int_equal(gpp__grow_widths(net, NULL, w, NULL), 0);
    assert_int_equal(w[0] + w[2] + w[4] + w[5], 128);   /* conv5's width: the fc stays */
    for (int k = 0; k < 6; k++) assert_true(w[k] >= 1);
    nn_net *g = NULL;
    int fc_kept = -1;
    assert_int_equal(gpp__grow_insert(ctx, net, "grow1", w, 5, &g, &fc_kept, NULL), 0);
    assert_int_equal(fc_kept, 1);
    assert_old_kept(net, g, NULL);
    nn_net_free(g);
    /* configured widths of another total: the classifier is re-initialised */
    const int given[6] = {8, 8, 8, 4, 4, 4};
    assert_int_equal(gpp__grow_widths(net, given, w, NULL), 0);
    assert_memory_equal(w, given, sizeof given);
    assert_int_equal(gpp__grow_insert(ctx, net, "grow1", w, 5, &g, &fc_kept, NULL), 0);
    assert_int_equal(fc_kept, 0);
    assert_old_kept(net, g, "fc");
    nn_tensor t;
    assert_int_equal(nn_net_tensor_find(g, "fc.weight", &t), 0);
    assert_int_equal(t.shape[1], 24);
    nn_net_free(g);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static void test_no_site(void **state)
{
    (void)state;
    const int in[3] = {1, 28, 28};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "lenet5", in);
    int w[6];
    nn_net *g = NULL;
    int fc_kept = 0;
    gpp_error err = {0};
    assert_int_equal(gpp__grow_site(net), -1);
    assert_int_equal(gpp__grow_widths(net, NULL, w, &err), GPP_EINVAL);
    const int some[6] = {4, 4, 4, 4, 4, 4};
    assert_int_equal(gpp__grow_insert(ctx, net, "grow1", some, 1, &g, &fc_kept, &err), GPP_EINVAL);
    assert_null(g);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_inception),
        cmocka_unit_test(test_grow_widths_derived_and_given),
        cmocka_unit_test(test_no_site),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
