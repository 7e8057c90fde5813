/* The prune step's pieces on real zoo networks: the traced utilities with
 * the eta threshold remove exactly the channels below it; surgery after
 * pruning keeps the network valid and its counts right (conv, fc through a
 * flatten, Inception concatenation, batch norm): a channel that no consumer
 * reads can go without changing the logits; least-squares recovery brings a
 * consumer's output back towards the unpruned one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "stage_fixture.h"
#include "stages_internal.h"

static nn_net *zoo(nn_ctx *ctx, const char *name, const int in[3], int batch)
{
    cJSON *d = nn_zoo_model(name, in, 10, NULL);
    assert_non_null(d);
    nn_net *net = nn_net_new(ctx, d, NULL, 0, 7, NULL);
    cJSON_Delete(d);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, batch, NULL), 0);
    return net;
}

static float *random_images(int n, const int in[3], uint64_t seed)
{
    size_t len = (size_t)n * in[0] * in[1] * in[2];
    float *x = sf_alloc(len, sizeof(float));
    gpp_rng r;
    gpp_rng_seed(&r, seed);
    for (size_t i = 0; i < len; i++) x[i] = gpp_rng_normal(&r);
    return x;
}

static nn_tensor tensor(nn_net *net, const char *layer, const char *what)
{
    char name[NN_TENSOR_NAME_MAX];
    nn_tensor t;
    snprintf(name, sizeof name, "%s.%s", layer, what);
    assert_int_equal(nn_net_tensor_find(net, name, &t), 0);
    return t;
}

/* Params of a fresh net built from the description: what the counts must
 * be after surgery. */
static long long params_rebuilt(nn_ctx *ctx, nn_net *net)
{
    cJSON *d = nn_net_to_json(net);
    nn_net *fresh = nn_net_new(ctx, d, NULL, 0, 1, NULL);
    cJSON_Delete(d);
    assert_non_null(fresh);
    long long p = nn_net_params(fresh), m = nn_net_macs(fresh);
    assert_int_equal(m, nn_net_macs(net));
    nn_net_free(fresh);
    return p;
}

static void logits(nn_net *net, const float *x, int n, float *out)
{
    assert_int_equal(nn_net_forward(net, x, NULL, n, 0, NULL, NULL), 0);
    nn_node_info li;
    nn_net_node(net, nn_net_logits(net), &li);
    memcpy(out, nn_net_output(net, nn_net_logits(net)), sizeof(float) * (size_t)n * li.C);
}

static void assert_close(const float *a, const float *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > tol * (1.0 + fabs((double)b[i])))
            fail_msg("element %zu: %.8g vs %.8g", i, (double)a[i], (double)b[i]);
}

/* lenet5: the traced utilities of conv2 with an eta (no cap) remove
 * exactly the channels below eta * std; the surgery keeps the survivors'
 * filters bit for bit and fc1's columns block by block. */
static void test_threshold_exact(void **state)
{
    (void)state;
    const int in[3] = {1, 28, 28};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "lenet5", in, 8);
    float *x = random_images(8, in, 3);
    gpp_trace *t = NULL;
    assert_int_equal(gpp__trace_new(net, &t, NULL), 0);
    assert_int_equal(gpp__trace_add(t, x, 8, NULL, NULL), 0);
    int c2 = nn_net_find(net, "conv2");
    double u[50];
    assert_int_equal(gpp__trace_channel_utility(t, c2, u), 0);
    /* eta so that t falls between the 12th and 13th smallest utility */
    double mean = 0, var = 0, sorted[50];
    for (int c = 0; c < 50; c++) mean += u[c] / 50;
    for (int c = 0; c < 50; c++) var += (u[c] - mean) * (u[c] - mean) / 50;
    memcpy(sorted, u, sizeof sorted);
    for (int i = 1; i < 50; i++)
        for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
            double tmp = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = tmp;
        }
    double eta = 0.5 * (sorted[11] + sorted[12]) / sqrt(var);
    uint8_t rm[50];
    int k = 0;
    double thr = 0;
    assert_int_equal(gpp_prune_threshold(u, 50, eta, 1.0, 1, rm, &k, &thr, NULL), 0);
    assert_int_equal(k, 12);
    assert_true(thr > 0);
    int below = 0, chans[50], n = 0;
    for (int c = 0; c < 50; c++) {
        assert_int_equal(rm[c], u[c] < thr);   /* exactly the ones below */
        below += u[c] < thr;
        if (rm[c]) chans[n++] = c;
    }
    assert_int_equal(k, below);
    assert_true(k > 0 && k < 50);
    nn_tensor w2 = tensor(net, "conv2", "weight"), f1 = tensor(net, "fc1", "weight");
    float *w2o = sf_alloc(w2.len, sizeof(float)), *f1o = sf_alloc(f1.len, sizeof(float));
    memcpy(w2o, w2.data, w2.len * sizeof(float));
    memcpy(f1o, f1.data, f1.len * sizeof(float));
    long long p0 = nn_net_params(net);
    assert_int_equal(nn_net_remove_channels(net, c2, chans, n, NULL), 0);
    long long kept = 50 - k;
    assert_int_equal(nn_net_params(net), p0 - k * (20 * 25 + 1) - k * 16 * 500);
    assert_int_equal(params_rebuilt(ctx, net), nn_net_params(net));
    w2 = tensor(net, "conv2", "weight");
    f1 = tensor(net, "fc1", "weight");
    assert_int_equal(w2.shape[0], kept);
    assert_int_equal(f1.shape[1], kept * 16);
    for (int c = 0, j = 0; c < 50; c++) {
        if (rm[c]) continue;
        assert_memory_equal(w2.data + (size_t)j * 500, w2o + (size_t)c * 500, 500 * sizeof(float));
        for (int o = 0; o < 500; o++)
            assert_memory_equal(f1.data + (size_t)o * kept * 16 + (size_t)j * 16,
                                f1o + (size_t)o * 800 + (size_t)c * 16, 16 * sizeof(float));
        j++;
    }
    free(w2o);
    free(f1o);
    free(x);
    gpp__trace_free(t);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* lenet5: conv2 channels whose fc1 columns are zero carry nothing: removing
 * them (through the flatten) leaves the logits as they were. */
static void test_surgery_flatten_equivalent(void **state)
{
    (void)state;
    const int in[3] = {1, 28, 28};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "lenet5", in, 4);
    float *x = random_images(4, in, 5);
    const int chans[2] = {3, 7};
    nn_tensor f1 = tensor(net, "fc1", "weight");
    for (int o = 0; o < 500; o++)
        for (int k = 0; k < 2; k++) memset(f1.data + (size_t)o * 800 + chans[k] * 16, 0, 16 * sizeof(float));
    float before[40], after[40];
    logits(net, x, 4, before);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "conv2"), chans, 2, NULL), 0);
    assert_int_equal(nn_net_params(net), 431080 - 2 * (20 * 25 + 1) - 2 * 16 * 500);
    assert_int_equal(params_rebuilt(ctx, net), nn_net_params(net));
    logits(net, x, 4, after);
    assert_close(after, before, 40, 1e-4);
    free(x);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* inception-base: channels of the last module's concat (mapped to their
 * branches through the pooling), a 3x3-reduce inside a branch, and the
 * first module's concat (read by four branch convs of the second module):
 * zero every reader's slice, remove, and the logits do not move; batch-norm
 * entries follow their conv; the counts match a net built from the new
 * description. */
static void test_surgery_inception_concat_bn(void **state)
{
    (void)state;
    const int in[3] = {1, 16, 16};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "inception-base", in, 3);
    float *x = random_images(3, in, 9);
    /* give batch norm non-trivial running statistics */
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        gpp_rng r;
        gpp_rng_seed(&r, (uint64_t)i + 100);
        if (strstr(t.name, "running_var") || (strstr(t.name, "_bn.") && strstr(t.name, "weight")))
            for (size_t j = 0; j < t.len; j++) t.data[j] = 0.5f + gpp_rng_uniform(&r);
        else if (strstr(t.name, "running_mean") || (strstr(t.name, "_bn.") && strstr(t.name, "bias")))
            for (size_t j = 0; j < t.len; j++) t.data[j] = gpp_rng_uniform(&r) - 0.5f;
    }
    int gap = nn_net_find(net, "gap");
    /* 1. the last concat (48 | 64 | 24 | 24) through the pooling: 0, 40 are
     * inc2_b1's, 100 is inc2_b2b's 52, 150 is inc2_b4's 14 */
    const int cat[4] = {0, 40, 100, 150};
    int mk, mc;
    assert_int_equal(gpp__channel_maker(net, gap, 100, &mk, &mc), 0);
    assert_int_equal(mk, nn_net_find(net, "inc2_b2b"));
    assert_int_equal(mc, 52);
    assert_int_equal(gpp__channel_maker(net, gap, 150, &mk, &mc), 0);
    assert_int_equal(mk, nn_net_find(net, "inc2_b4"));
    assert_int_equal(mc, 14);
    nn_tensor fc = tensor(net, "fc", "weight");
    for (int o = 0; o < 10; o++)
        for (int k = 0; k < 4; k++) fc.data[o * 160 + cat[k]] = 0.0f;
    /* 2. inc2_b2a's channel 5, read by inc2_b2b (3x3) */
    nn_tensor b2b = tensor(net, "inc2_b2b", "weight");
    for (int o = 0; o < 64; o++) memset(b2b.data + ((size_t)o * 48 + 5) * 9, 0, 9 * sizeof(float));
    /* 3. inc1's concat channel 7 (inc1_b1's 7), read after pool1 by
     * inc2_b1, inc2_b2a, inc2_b3a (1x1) and, through the 3x3 pool, inc2_b4 */
    static const char *const readers[4] = {"inc2_b1", "inc2_b2a", "inc2_b3a", "inc2_b4"};
    for (int r = 0; r < 4; r++) {
        nn_tensor w = tensor(net, readers[r], "weight");
        for (int o = 0; o < w.shape[0]; o++) w.data[(size_t)o * 112 + 7] = 0.0f;
    }
    nn_tensor g0 = tensor(net, "inc2_b2b_bn", "weight");
    float gamma53 = g0.data[53];
    float before[30], after[30];
    logits(net, x, 3, before);
    long long p0 = nn_net_params(net), m0 = nn_net_macs(net);
    assert_int_equal(nn_net_remove_channels(net, gap, cat, 4, NULL), 0);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "inc2_b2a"), (const int[]){5}, 1, NULL), 0);
    assert_int_equal(nn_net_remove_channels(net, nn_net_find(net, "inc1_concat"), (const int[]){7}, 1, NULL), 0);
    logits(net, x, 3, after);
    assert_close(after, before, 30, 1e-4);
    /* widths and counts */
    nn_node_info ci;
    nn_net_node(net, nn_net_find(net, "inc2_concat"), &ci);
    assert_int_equal(ci.C, 156);
    nn_net_node(net, nn_net_find(net, "inc1_concat"), &ci);
    assert_int_equal(ci.C, 111);
    nn_net_node(net, nn_net_find(net, "inc2_b2b"), &ci);
    assert_int_equal(ci.C, 63);
    assert_true(nn_net_params(net) < p0 && nn_net_macs(net) < m0);
    assert_int_equal(params_rebuilt(ctx, net), nn_net_params(net));
    /* bn entries follow their conv: inc2_b2b's channel 53 is now 52 */
    nn_tensor g1 = tensor(net, "inc2_b2b_bn", "weight");
    assert_int_equal(g1.len, 63);
    assert_true(g1.data[52] == gamma53);
    assert_int_equal(tensor(net, "inc2_b2b_bn", "running_var").len, 63);
    assert_int_equal(tensor(net, "fc", "weight").shape[1], 156);
    free(x);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

typedef struct fill_src {
    const float *x;
    int n, per;
} fill_src;

static int fill(void *user, float *x, int first, int n)
{
    fill_src *f = user;
    if (first + n > f->n) n = f->n - first;
    memcpy(x, f->x + (size_t)first * f->per, sizeof(float) * (size_t)n * f->per);
    return n;
}

/* Recovery: prune conv1 and conv2 of lenet5 and re-fit conv2, fc1 (and the
 * classifier, whose input did not change: not touched); the residual falls
 * and fc1's output on the batch moves towards the unpruned one. */
static void test_recovery(void **state)
{
    (void)state;
    const int in[3] = {1, 28, 28};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = zoo(ctx, "lenet5", in, 16);
    float *x = random_images(64, in, 13);
    nn_net *orig = gpp_net_clone(ctx, net, NULL);
    assert_non_null(orig);
    int c1 = nn_net_find(net, "conv1"), c2 = nn_net_find(net, "conv2"), f1 = nn_net_find(net, "fc1");
    const int cut1[4] = {1, 4, 9, 15}, cut2[10] = {0, 3, 6, 9, 12, 20, 25, 30, 41, 49};
    assert_int_equal(nn_net_remove_channels(net, c1, cut1, 4, NULL), 0);
    assert_int_equal(nn_net_remove_channels(net, c2, cut2, 10, NULL), 0);
    nn_net *surgery_only = gpp_net_clone(ctx, net, NULL);
    int n = nn_net_num_nodes(net);
    const uint8_t **keep = sf_alloc((size_t)n, sizeof *keep);
    uint8_t k1[20], k2[50];
    memset(k1, 1, sizeof k1);
    memset(k2, 1, sizeof k2);
    for (int i = 0; i < 4; i++) k1[cut1[i]] = 0;
    for (int i = 0; i < 10; i++) k2[cut2[i]] = 0;
    keep[c1] = k1;
    keep[c2] = k2;
    fill_src fs = {.x = x, .n = 64, .per = 28 * 28};
    gpp__recover_report rep;
    assert_int_equal(gpp__recover(orig, net, keep, 64, 4096, fill, &fs, &rep, NULL), 0);
    assert_int_equal(rep.layers, 2);   /* conv2 (16*25 + 1 inputs), fc1 (40*16 + 1) */
    assert_int_equal(rep.skipped, 0);
    assert_true(rep.res_after < rep.res_before);
    /* fc1's output error against the unpruned net, on the same images */
    double e_sur = 0, e_rec = 0;
    for (int b = 0; b < 64; b += 16) {
        const float *xb = x + (size_t)b * 784;
        assert_int_equal(nn_net_forward(orig, xb, NULL, 16, 0, NULL, NULL), 0);
        assert_int_equal(nn_net_forward(net, xb, NULL, 16, 0, NULL, NULL), 0);
        assert_int_equal(nn_net_forward(surgery_only, xb, NULL, 16, 0, NULL, NULL), 0);
        const float *yo = nn_net_output(orig, f1), *yr = nn_net_output(net, f1),
                    *ys = nn_net_output(surgery_only, f1);
        for (int i = 0; i < 16 * 500; i++) {
            e_rec += (double)(yr[i] - yo[i]) * (yr[i] - yo[i]);
            e_sur += (double)(ys[i] - yo[i]) * (ys[i] - yo[i]);
        }
    }
    assert_true(e_rec < 0.5 * e_sur);
    free(keep);
    free(x);
    nn_net_free(orig);
    nn_net_free(surgery_only);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_exact),
        cmocka_unit_test(test_surgery_flatten_equivalent),
        cmocka_unit_test(test_surgery_inception_concat_bn),
        cmocka_unit_test(test_recovery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
