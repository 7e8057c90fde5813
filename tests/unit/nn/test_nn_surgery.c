/* Channel surgery: removing channels whose outgoing weights are zero leaves
 * the network's outputs unchanged (conv->conv, conv->flatten->fc,
 * conv->bn->relu->conv, inside an Inception concat), the counts drop by
 * what was cut, the state is re-packed, and bad requests change nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "nn_check.h"

#define B 3

static nn_ctx *ctx;

static int setup(void **state)
{
    (void)state;
    ctx = nn_ctx_new("cpu", 2, NULL);
    return ctx ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    nn_ctx_free(ctx);
    return 0;
}

static nn_net *build(const char *json, int C, int H, int W, int classes)
{
    cJSON *d = cJSON_Parse(json);
    assert_non_null(d);
    int in[3] = {C, H, W};
    gpp_error err = {0};
    nn_net *net = nn_net_new(ctx, d, in, classes, 11, &err);
    if (!net) fprintf(stderr, "%s\n", err.message);
    assert_non_null(net);
    cJSON_Delete(d);
    assert_int_equal(nn_net_reserve(net, B, &err), 0);
    return net;
}

/* Random (non-trivial) bn statistics so eval-mode bn is not the identity. */
static void randomise_state(nn_net *net, gpp_rng *r)
{
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        if (strstr(t.name, "running_var"))
            for (size_t j = 0; j < t.len; j++) t.data[j] = 0.5f + gpp_rng_uniform(r);
        else if (strstr(t.name, "running_mean") || strstr(t.name, ".bias"))
            nn_test_fill(r, t.data, t.len, 0.5f);
        else if (strstr(t.name, "bn") && strstr(t.name, ".weight"))
            for (size_t j = 0; j < t.len; j++) t.data[j] = 0.5f + gpp_rng_uniform(r);
    }
}

/* Eval-mode logits for x [B, ...]. */
static void logits(nn_net *net, const float *x, float *out)
{
    gpp_error err;
    assert_int_equal(nn_net_forward(net, x, NULL, B, 0, NULL, &err), 0);
    nn_node_info info;
    nn_net_node(net, nn_net_logits(net), &info);
    memcpy(out, nn_net_output(net, nn_net_logits(net)), sizeof(float) * B * info.C);
}

/* Zero input channel `c` of conv or fc `name` (a fc's input channel is a
 * block of `blk` columns). */
static void zero_in(nn_net *net, const char *name, int c, int blk)
{
    char tn[NN_TENSOR_NAME_MAX];
    nn_tensor t;
    snprintf(tn, sizeof tn, "%s.weight", name);
    assert_int_equal(nn_net_tensor_find(net, tn, &t), 0);
    int per_out = (int)(t.len / t.shape[0]);
    if (t.ndim == 4) blk = t.shape[2] * t.shape[3];
    for (int o = 0; o < t.shape[0]; o++)
        for (int j = 0; j < blk; j++) t.data[(size_t)o * per_out + (size_t)c * blk + j] = 0.0f;
}

static long long params_of(nn_net *net, const char *name)
{
    nn_node_info info;
    nn_net_node(net, nn_net_find(net, name), &info);
    return info.params;
}

static void check_unchanged(nn_net *net, const float *x, const float *before, int classes)
{
    float *after = nn_test_alloc((size_t)B * classes);
    logits(net, x, after);
    size_t w = 0;
    double e = nn_test_err(after, before, (size_t)B * classes, 1e-5, 1e-4, &w);
    if (e > 1.0) fprintf(stderr, "logit %zu: %g vs %g\n", w, after[w], before[w]);
    assert_true(e <= 1.0);
    free(after);
}

static void test_conv_conv(void **state)
{
    (void)state;
    nn_net *net = build("[{\"name\":\"a\",\"type\":\"conv\",\"out\":5,\"k\":3,\"pad\":1},"
                        "{\"type\":\"relu\"},"
                        "{\"name\":\"b\",\"type\":\"conv\",\"out\":4,\"k\":3},"
                        "{\"type\":\"global-avgpool\"},{\"name\":\"f\",\"type\":\"fc\",\"out\":3}]",
                        2, 6, 7, 3);
    gpp_rng r;
    gpp_rng_seed(&r, 1);
    randomise_state(net, &r);
    float x[B * 2 * 6 * 7], before[B * 3];
    nn_test_fill(&r, x, sizeof x / sizeof x[0], 1.0f);
    zero_in(net, "b", 1, 0);
    zero_in(net, "b", 4, 0);
    logits(net, x, before);
    long long p0 = nn_net_params(net), m0 = nn_net_macs(net);
    /* keep a momentum value of a surviving weight: a[3][1][2][0] */
    nn_tensor t;
    nn_net_tensor_find(net, "a.weight", &t);
    t.momentum[(3 * 2 + 1) * 9 + 6] = 42.0f;
    float w_keep = t.data[(3 * 2 + 1) * 9 + 6];
    int ch[2] = {4, 1};
    gpp_error err;
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), ch, 2, &err), 0);
    check_unchanged(net, x, before, 3);
    /* a: 2 filters of 2*9 + bias; b: 2 input slices of 4 filters */
    assert_int_equal(nn_net_params(net), p0 - 2 * (2 * 9 + 1) - 4 * 2 * 9);
    assert_true(nn_net_macs(net) < m0);
    assert_int_equal(params_of(net, "a"), 3 * (2 * 9 + 1));
    nn_net_tensor_find(net, "a.weight", &t);
    assert_int_equal(t.shape[0], 3);
    /* old filter 3 is new filter 2 */
    assert_float_equal(t.data[(2 * 2 + 1) * 9 + 6], w_keep, 0);
    assert_float_equal(t.momentum[(2 * 2 + 1) * 9 + 6], 42.0, 0);
    nn_net_tensor_find(net, "b.weight", &t);
    assert_int_equal(t.shape[1], 3);
    /* the description follows */
    cJSON *j = nn_net_to_json(net);
    const cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 0);
    assert_int_equal(cJSON_GetObjectItem(l0, "out")->valueint, 3);
    cJSON_Delete(j);
    /* and it still trains */
    int32_t y[B] = {0, 1, 2};
    assert_int_equal(nn_net_forward(net, x, y, B, 1, NULL, &err), 0);
    assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
    nn_net_free(net);
}

static void test_conv_flatten_fc(void **state)
{
    (void)state;
    nn_net *net = build("[{\"name\":\"a\",\"type\":\"conv\",\"out\":4,\"k\":3},"
                        "{\"type\":\"maxpool\",\"k\":2},{\"name\":\"fl\",\"type\":\"flatten\"},"
                        "{\"name\":\"f1\",\"type\":\"fc\",\"out\":6},{\"type\":\"relu\"},"
                        "{\"name\":\"f2\",\"type\":\"fc\",\"out\":3}]",
                        1, 8, 8, 3);
    gpp_rng r;
    gpp_rng_seed(&r, 2);
    randomise_state(net, &r);
    float x[B * 64], before[B * 3];
    nn_test_fill(&r, x, B * 64, 1.0f);
    /* a's output is 4x6x6 -> pool 4x3x3: channel 2 is columns 18..26 of f1 */
    zero_in(net, "f1", 2, 9);
    logits(net, x, before);
    long long p0 = nn_net_params(net);
    int ch = 2;
    gpp_error err;
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), &ch, 1, &err), 0);
    check_unchanged(net, x, before, 3);
    assert_int_equal(nn_net_params(net), p0 - (9 + 1) - 6 * 9);
    nn_tensor t;
    nn_net_tensor_find(net, "f1.weight", &t);
    assert_int_equal(t.shape[1], 27);
    /* fc hidden units: removing unit 5 of f1 (zero its column in f2) */
    zero_in(net, "f2", 5, 1);
    logits(net, x, before);
    ch = 5;
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "f1"), &ch, 1, &err), 0);
    check_unchanged(net, x, before, 3);
    assert_int_equal(params_of(net, "f1"), 5 * 27 + 5);
    /* the pre-decision relu can be cut through too */
    zero_in(net, "f2", 0, 1);
    logits(net, x, before);
    ch = 0;
    assert_int_equal(nn_net_remove_channels(net, nn_net_predecision(net), &ch, 1, &err), 0);
    check_unchanged(net, x, before, 3);
    assert_int_equal(params_of(net, "f2"), 3 * 4 + 3);
    nn_net_free(net);
}

static void test_conv_bn_relu_conv(void **state)
{
    (void)state;
    nn_net *net = build("[{\"name\":\"a\",\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1,\"bias\":false},"
                        "{\"name\":\"bn\",\"type\":\"bn\"},{\"name\":\"r\",\"type\":\"relu\"},"
                        "{\"name\":\"b\",\"type\":\"conv\",\"out\":3,\"k\":1},"
                        "{\"type\":\"global-avgpool\"},{\"type\":\"fc\",\"out\":2}]",
                        3, 5, 5, 2);
    gpp_rng r;
    gpp_rng_seed(&r, 3);
    randomise_state(net, &r);
    float x[B * 75], before[B * 2];
    nn_test_fill(&r, x, B * 75, 1.0f);
    zero_in(net, "b", 0, 0);
    zero_in(net, "b", 3, 0);
    zero_in(net, "b", 5, 0);
    logits(net, x, before);
    nn_tensor t;
    nn_net_tensor_find(net, "bn.running_mean", &t);
    float rm4 = t.data[4];
    long long p0 = nn_net_params(net);
    int ch[3] = {5, 0, 3};
    gpp_error err;
    /* through the bn: its producer loses the filters, the bn its entries */
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "bn"), ch, 3, &err), 0);
    check_unchanged(net, x, before, 2);
    assert_int_equal(nn_net_params(net), p0 - 3 * 27 - 3 * 2 - 3 * 3);
    assert_int_equal(params_of(net, "bn"), 6);
    nn_net_tensor_find(net, "bn.running_mean", &t);
    assert_int_equal(t.len, 3);
    assert_float_equal(t.data[2], rm4, 0);   /* kept: 1, 2, 4 */
    nn_net_free(net);
}

static void test_inception_concat(void **state)
{
    (void)state;
    int in[3] = {1, 12, 12};
    gpp_error err;
    cJSON *d = nn_zoo_model("inception-base", in, 10, &err);
    nn_net *net = nn_net_new(ctx, d, NULL, 0, 5, &err);
    cJSON_Delete(d);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, B, &err), 0);
    gpp_rng r;
    gpp_rng_seed(&r, 4);
    randomise_state(net, &r);
    float x[B * 144], before[B * 10];
    nn_test_fill(&r, x, B * 144, 1.0f);
    /* channel 5 of inc1_b2b (concat offset 32 + 5) feeds pool1 and the four
     * branches of inc2 through their first convs / the pool branch's conv */
    static const char *const cons[] = {"inc2_b1", "inc2_b2a", "inc2_b3a", "inc2_b4"};
    for (int i = 0; i < 4; i++) zero_in(net, cons[i], 37, 0);
    logits(net, x, before);
    long long p0 = nn_net_params(net);
    int ch = 5;
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "inc1_b2b_relu"), &ch, 1, &err), 0);
    check_unchanged(net, x, before, 10);
    /* inc1_b2b: one filter (32*9, no bias) and its bn (2); four consumers: 48+48+12+24 */
    assert_int_equal(nn_net_params(net), p0 - 32 * 9 - 2 - (48 + 48 + 12 + 24));
    nn_node_info info;
    nn_net_node(net, nn_net_find(net, "inc1_concat"), &info);
    assert_int_equal(info.C, 111);
    /* through the concat: channel 110 of inc1_concat is the pool branch's last */
    zero_in(net, "inc2_b1", 110, 0);
    zero_in(net, "inc2_b2a", 110, 0);
    zero_in(net, "inc2_b3a", 110, 0);
    zero_in(net, "inc2_b4", 110, 0);
    logits(net, x, before);
    ch = 110;
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "inc1_concat"), &ch, 1, &err), 0);
    check_unchanged(net, x, before, 10);
    assert_int_equal(params_of(net, "inc1_b4"), 15 * 32);
    nn_net_free(net);
}

static void test_errors_leave_net_alone(void **state)
{
    (void)state;
    nn_net *net = build("[{\"name\":\"a\",\"type\":\"conv\",\"out\":2,\"k\":3},"
                        "{\"name\":\"fl\",\"type\":\"flatten\"},{\"name\":\"f\",\"type\":\"fc\",\"out\":3}]",
                        1, 5, 5, 3);
    cJSON *j0 = nn_net_to_json(net);
    char *s0 = cJSON_PrintUnformatted(j0);
    long long p0 = nn_net_params(net);
    gpp_error err;
    int all[2] = {0, 1}, bad[2] = {0, 0}, out[1] = {2}, one[1] = {0};
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), all, 2, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "every channel"));
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), bad, 2, &err), GPP_EINVAL);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), out, 1, &err), GPP_EINVAL);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "f"), one, 1, &err), GPP_EINVAL);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "fl"), one, 1, &err), GPP_EINVAL);
    assert_non_null(strstr(err.message, "flattens"));
    assert_int_equal(nn_net_remove_channels(net, 0, one, 1, &err), GPP_EINVAL);
    assert_int_equal(nn_net_remove_channels(net, nn_net_num_nodes(net) - 1, one, 1, &err), GPP_EINVAL);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "a"), one, 0, &err), GPP_EINVAL);
    cJSON *j1 = nn_net_to_json(net);
    char *s1 = cJSON_PrintUnformatted(j1);
    assert_string_equal(s0, s1);
    assert_int_equal(nn_net_params(net), p0);
    free(s0);
    free(s1);
    cJSON_Delete(j0);
    cJSON_Delete(j1);
    nn_net_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_conv),
        cmocka_unit_test(test_conv_flatten_fc),
        cmocka_unit_test(test_conv_bn_relu_conv),
        cmocka_unit_test(test_inception_concat),
        cmocka_unit_test(test_errors_leave_net_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
