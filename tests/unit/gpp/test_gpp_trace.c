/* Deconvolution tracing against tiny networks worked out by hand: fc (W^T),
 * ReLU (the backward signal rectified, not masked by the forward), max-pool
 * switches, transposed convolution, batch norm (gamma / sqrt(var + eps)),
 * global average pooling (spread evenly), concatenation (split by channel,
 * branches summed where they meet), the mean over images and the keep mask
 * of the pre-decision neurons. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stage_fixture.h"
#include "stages_internal.h"

static void set(nn_net *net, const char *name, const float *v, size_t n)
{
    nn_tensor t;
    assert_int_equal(nn_net_tensor_find(net, name, &t), 0);
    assert_int_equal(t.len, n);
    memcpy(t.data, v, n * sizeof(float));
}

static void assert_near(double a, double b)
{
    if (fabs(a - b) > 1e-5 * (1.0 + fabs(b))) fail_msg("%.9g != %.9g", a, b);
}

/* c0 (1x1, w 1) -> conv (2 x 2x2) -> relu -> maxpool 2 -> flatten -> fc1 (2)
 * -> relu -> fc2, on the 3x3 image
 *     1 2 0
 *     0 1 3
 *     2 0 1
 * conv filters [[1,0],[0,1]] and [[0,1],[-1,0]] give
 *     ch0 [[2,5],[0,2]], ch1 [[2,-1],[-1,3]] -> relu -> ch1 [[2,0],[0,3]];
 * the pool keeps 5 (at (0,1)) and 3 (at (1,1)); fc1 [[1,2],[1,-1]] gives
 * h = [11, 2] (both positive).  Tracing h back:
 *     fc1 out [11, 2]; fc1^T -> pooled [1*11 + 1*2, 2*11 - 1*2] = [13, 20];
 *     unpooled: ch0 13 at (0,1), ch1 20 at (1,1); relu keeps them;
 *     transposed conv into c0's 3x3: ch0's 13 lands at (0,1) and (1,2)
 *     (filter taps (0,0), (1,1)), ch1's 20 at (1,2) (+1) and (2,1) (-1):
 *         0  13   0
 *         0   0  33
 *         0 -20   0
 * so the utilities are conv [13, 20], fc1 [11, 2], c0 [33]. */
static const char *const NET_A =
    "[{\"type\":\"conv\",\"name\":\"c0\",\"out\":1,\"k\":1,\"bias\":false},"
    "{\"type\":\"conv\",\"name\":\"conv\",\"out\":2,\"k\":2,\"bias\":false},"
    "{\"type\":\"relu\",\"name\":\"r0\"},{\"type\":\"maxpool\",\"name\":\"pool\",\"k\":2},"
    "{\"type\":\"flatten\",\"name\":\"flat\"},"
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":2,\"bias\":false},"
    "{\"type\":\"relu\",\"name\":\"r1\"},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":2}]";

static nn_net *net_a(nn_ctx *ctx)
{
    const int in[3] = {1, 3, 3};
    nn_net *net = sf_net(ctx, NET_A, in, 2, 1);
    set(net, "c0.weight", (const float[]){1}, 1);
    set(net, "conv.weight", (const float[]){1, 0, 0, 1, 0, 1, -1, 0}, 8);
    set(net, "fc1.weight", (const float[]){1, 2, 1, -1}, 4);
    assert_int_equal(nn_net_reserve(net, 2, NULL), 0);
    return net;
}

static const float IMG[9] = {1, 2, 0, 0, 1, 3, 2, 0, 1};

static void test_conv_relu_pool_fc(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = net_a(ctx);
    gpp_trace *t = NULL;
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, IMG, 1, NULL, NULL), 0);
    assert_int_equal(gpp__trace_images(t), 1);
    /* the forward the trace ran: h = [11, 2] */
    const float *h = nn_net_output(net, nn_net_predecision(net));
    assert_near(h[0], 11);
    assert_near(h[1], 2);
    double u[2];
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "fc1"), u), 0);
    assert_near(u[0], 11);
    assert_near(u[1], 2);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "conv"), u), 0);
    assert_near(u[0], 13);
    assert_near(u[1], 20);
    const double *conv = gpp__trace_sum(t, nn_net_find(net, "conv"));
    const double want_conv[8] = {0, 13, 0, 0, 0, 0, 0, 20};
    for (int i = 0; i < 8; i++) assert_near(conv[i], want_conv[i]);
    const double *c0 = gpp__trace_sum(t, nn_net_find(net, "c0"));
    const double want_c0[9] = {0, 13, 0, 0, 0, 33, 0, -20, 0};
    for (int i = 0; i < 9; i++) assert_near(c0[i], want_c0[i]);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "c0"), u), 0);
    assert_near(u[0], 33);
    /* nothing after the pre-decision layer is traced */
    assert_null(gpp__trace_sum(t, nn_net_find(net, "fc2")));
    gpp__trace_free(t);

    /* two images, x and 2x: every signal doubles for the second, the mean
     * reconstruction is 1.5x the first's */
    float two[18];
    for (int i = 0; i < 9; i++) {
        two[i] = IMG[i];
        two[9 + i] = 2 * IMG[i];
    }
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, two, 2, NULL, NULL), 0);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "conv"), u), 0);
    assert_near(u[0], 19.5);
    assert_near(u[1], 30);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "c0"), u), 0);
    assert_near(u[0], 49.5);
    gpp__trace_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* Keep only neuron 1: the signal [0, 2] gives pooled [1*0 + 1*2, 2*0 - 1*2]
 * = [2, -2]; unpooled ch0 2 at (0,1) and ch1 -2 at (1,1), where the forward
 * relu was active (3 > 0).  A masked backward would pass the -2; the
 * deconvnet rectifies it to 0. */
static void test_keep_mask_and_rectify(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = net_a(ctx);
    gpp_trace *t = NULL;
    const uint8_t keep[2] = {0, 1};
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, IMG, 1, keep, NULL), 0);
    const double *r0 = gpp__trace_sum(t, nn_net_find(net, "r0"));
    const double want_r0[8] = {0, 2, 0, 0, 0, 0, 0, -2};   /* before rectification */
    for (int i = 0; i < 8; i++) assert_near(r0[i], want_r0[i]);
    const double *conv = gpp__trace_sum(t, nn_net_find(net, "conv"));
    const double want_conv[8] = {0, 2, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) assert_near(conv[i], want_conv[i]);
    double u[2];
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "fc1"), u), 0);
    assert_near(u[0], 0);
    assert_near(u[1], 2);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "conv"), u), 0);
    assert_near(u[0], 2);
    assert_near(u[1], 0);
    gpp__trace_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* c1 (1x1, w 1) -> c2 (1x1, w 2) -> bn (gamma 3, beta 0.5, mean 1, var 4)
 * -> relu -> global-avgpool -> fc1 (1, w 1) -> relu -> fc2 on the 2x2
 * image [1 2; 3 4].  Forward: c2 = [2 4 6 8], bn = 3 (v - 1)/sqrt(4 + eps)
 * + 0.5 (all positive), h = their mean.  Back: fc1^T gives h; the pooling
 * spreads h/4 over the 4 positions; relu keeps it; bn multiplies by
 * s = 3/sqrt(4 + eps) (the shift is ignored): c2's signal is h s/4 per
 * position; its transposed 1x1 conv doubles it for c1: h s/2. */
static void test_bn_gap_transposed(void **state)
{
    (void)state;
    const char *desc =
        "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":1,\"k\":1,\"bias\":false},"
        "{\"type\":\"conv\",\"name\":\"c2\",\"out\":1,\"k\":1,\"bias\":false},"
        "{\"type\":\"bn\",\"name\":\"bn\"},{\"type\":\"relu\",\"name\":\"r\"},"
        "{\"type\":\"global-avgpool\",\"name\":\"gap\"},"
        "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":1,\"bias\":false},"
        "{\"type\":\"relu\",\"name\":\"r1\"},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":2}]";
    const int in[3] = {1, 2, 2};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = sf_net(ctx, desc, in, 2, 1);
    set(net, "c1.weight", (const float[]){1}, 1);
    set(net, "c2.weight", (const float[]){2}, 1);
    set(net, "bn.weight", (const float[]){3}, 1);
    set(net, "bn.bias", (const float[]){0.5f}, 1);
    set(net, "bn.running_mean", (const float[]){1}, 1);
    set(net, "bn.running_var", (const float[]){4}, 1);
    set(net, "fc1.weight", (const float[]){1}, 1);
    assert_int_equal(nn_net_reserve(net, 1, NULL), 0);
    const double eps = 1e-5, s = 3.0 / sqrt(4.0 + eps);
    double hv = 0;
    for (int i = 1; i <= 4; i++) hv += (s * (2.0 * i - 1.0) + 0.5) / 4.0;
    gpp_trace *t = NULL;
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, (const float[]){1, 2, 3, 4}, 1, NULL, NULL), 0);
    assert_near(nn_net_output(net, nn_net_predecision(net))[0], hv);
    const double *c2 = gpp__trace_sum(t, nn_net_find(net, "c2"));
    const double *c1 = gpp__trace_sum(t, nn_net_find(net, "c1"));
    for (int i = 0; i < 4; i++) {
        assert_near(c2[i], hv * s / 4.0);
        assert_near(c1[i], hv * s / 2.0);
    }
    double u[1];
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "c1"), u), 0);
    assert_near(u[0], hv * s / 2.0);
    gpp__trace_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* c0 (1x1, w 1) -> {ca (1x1, w 2), cb (1x1, w 3)} -> concat -> gap -> fc1
 * ([1, 2]) -> relu -> fc2 on a 2x2 image of ones: concat = [2s, 3s], pooled
 * [2, 3], h = 2 + 6 = 8.  Back: fc1^T [8, 16]; the pooling spreads /4: the
 * concat's channels carry 2 and 4 per position; split: ca 2, cb 4; each
 * branch is traced to c0 separately and summed there: 2*2 + 3*4 = 16. */
static void test_concat_branches_summed(void **state)
{
    (void)state;
    const char *desc =
        "[{\"type\":\"conv\",\"name\":\"c0\",\"out\":1,\"k\":1,\"bias\":false},"
        "{\"type\":\"conv\",\"name\":\"ca\",\"inputs\":[\"c0\"],\"out\":1,\"k\":1,\"bias\":false},"
        "{\"type\":\"conv\",\"name\":\"cb\",\"inputs\":[\"c0\"],\"out\":1,\"k\":1,\"bias\":false},"
        "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"ca\",\"cb\"]},"
        "{\"type\":\"global-avgpool\",\"name\":\"gap\"},"
        "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":1,\"bias\":false},"
        "{\"type\":\"relu\",\"name\":\"r1\"},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":2}]";
    const int in[3] = {1, 2, 2};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = sf_net(ctx, desc, in, 2, 1);
    set(net, "c0.weight", (const float[]){1}, 1);
    set(net, "ca.weight", (const float[]){2}, 1);
    set(net, "cb.weight", (const float[]){3}, 1);
    set(net, "fc1.weight", (const float[]){1, 2}, 2);
    assert_int_equal(nn_net_reserve(net, 1, NULL), 0);
    gpp_trace *t = NULL;
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, (const float[]){1, 1, 1, 1}, 1, NULL, NULL), 0);
    assert_near(nn_net_output(net, nn_net_predecision(net))[0], 8);
    const double *cat = gpp__trace_sum(t, nn_net_find(net, "cat"));
    for (int i = 0; i < 4; i++) {
        assert_near(cat[i], 2);
        assert_near(cat[4 + i], 4);
    }
    double u[1];
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "ca"), u), 0);
    assert_near(u[0], 2);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "cb"), u), 0);
    assert_near(u[0], 4);
    assert_int_equal(gpp__trace_channel_utility(t, nn_net_find(net, "c0"), u), 0);
    assert_near(u[0], 16);
    /* the channel map the prune step uses: the concat's channel 1 is cb's 0 */
    int mk = -1, mc = -1;
    assert_int_equal(gpp__channel_maker(net, nn_net_find(net, "gap"), 1, &mk, &mc), 0);
    assert_int_equal(mk, nn_net_find(net, "cb"));
    assert_int_equal(mc, 0);
    assert_true(gpp__prunable(net, nn_net_find(net, "fc1")));
    assert_false(gpp__prunable(net, nn_net_find(net, "fc2")));   /* the classifier */
    gpp__trace_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_relu_pool_fc),
        cmocka_unit_test(test_keep_mask_and_rectify),
        cmocka_unit_test(test_bn_gap_transposed),
        cmocka_unit_test(test_concat_branches_summed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
