/* Engine networks: building from descriptions (and the errors), the zoo's
 * parameter and MAC counts against PyTorch's, whole-network gradients
 * against finite differences (branches, concat, bn, dropout, injection),
 * SGD against hand-computed steps, schedules, determinism, the tensor view
 * and the description round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"
#include "nn_check.h"

static nn_net *build_json(nn_ctx *ctx, const char *json, const int *input, int classes,
                          uint64_t seed, gpp_error *err)
{
    cJSON *d = cJSON_Parse(json);
    assert_non_null(d);
    nn_net *net = nn_net_new(ctx, d, input, classes, seed, err);
    cJSON_Delete(d);
    return net;
}

static nn_net *build_zoo(nn_ctx *ctx, const char *name, int C, int H, int W, uint64_t seed)
{
    int in[3] = {C, H, W};
    gpp_error err = {0};
    cJSON *d = nn_zoo_model(name, in, 10, &err);
    assert_non_null(d);
    nn_net *net = nn_net_new(ctx, d, NULL, 0, seed, &err);
    if (!net) fprintf(stderr, "%s: %s\n", name, err.message);
    assert_non_null(net);
    cJSON_Delete(d);
    return net;
}

/* ---- the zoo --------------------------------------------------------------------- */

static void test_zoo_counts(void **state)
{
    (void)state;
    /* params: PyTorch's sum(p.numel()) for the same descriptions
     * (tests/bench/torch_peer.py --count on `gpp-worker zoo NAME --input ...`);
     * lenet5's 431,080 is Caffe's LeNet; MACs per image of conv and fc. */
    static const struct {
        const char *name;
        int C, H, W;
        long long params, macs;
    } want[] = {
        {"lenet5", 1, 28, 28, 431080, 2293000},
        {"lenet5", 3, 32, 32, 657080, -1},
        {"lenet300-100", 1, 28, 28, 266610, 266200},
        {"lenet300-100", 3, 32, 32, 953010, -1},
        {"vgg-small", 1, 28, 28, 140458, 21903104},
        {"vgg-small", 3, 32, 32, 141034, 29197568},
        {"vgg16-cifar", 3, 32, 32, 14724042, -1},
        {"inception-base", 1, 28, 28, 73090, -1},
        {"inception-base", 3, 32, 32, 73666, -1},
    };
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        nn_net *net = build_zoo(ctx, want[i].name, want[i].C, want[i].H, want[i].W, 1);
        printf("%-15s %dx%dx%d params %lld macs %lld\n", want[i].name, want[i].C, want[i].H,
               want[i].W, nn_net_params(net), nn_net_macs(net));
        assert_int_equal(nn_net_params(net), want[i].params);
        if (want[i].macs >= 0) assert_int_equal(nn_net_macs(net), want[i].macs);
        /* the per-node counts add up; the block holds exactly the params */
        long long s = 0;
        for (int id = 0; id < nn_net_num_nodes(net); id++) {
            nn_node_info info;
            assert_int_equal(nn_net_node(net, id, &info), 0);
            s += info.params;
        }
        size_t len;
        nn_net_param_block(net, &len);
        assert_int_equal(s, want[i].params);
        assert_int_equal((long long)len, want[i].params);
        nn_net_free(net);
    }
    /* lenet5's layers by hand: conv 5*5*1*20+20, conv 5*5*20*50+50, fc 800*500+500, fc 5010 */
    nn_net *net = build_zoo(ctx, "lenet5", 1, 28, 28, 1);
    nn_node_info info;
    nn_net_node(net, nn_net_find(net, "conv2"), &info);
    assert_int_equal(info.params, 25050);
    assert_int_equal(info.macs, 50LL * 500 * 64);
    assert_int_equal(info.C * info.H * info.W, 50 * 8 * 8);
    nn_net_node(net, nn_net_find(net, "fc1"), &info);
    assert_int_equal(info.params, 400500);
    /* the pre-decision layer is the input of the last fc */
    assert_int_equal(nn_net_predecision(net), nn_net_find(net, "relu1"));
    assert_int_equal(nn_net_logits(net), nn_net_find(net, "fc2"));
    nn_net_free(net);
    net = build_zoo(ctx, "vgg-small", 3, 32, 32, 1);
    assert_int_equal(nn_net_predecision(net), nn_net_find(net, "gap"));
    nn_net_free(net);
    /* vgg16-cifar needs 32x32: five 2x2 pools do not fit 28x28 */
    int in28[3] = {1, 28, 28};
    cJSON *d = nn_zoo_model("vgg16-cifar", in28, 10, &err);
    assert_null(nn_net_new(ctx, d, NULL, 0, 1, &err));
    assert_non_null(strstr(err.message, "pool5"));
    cJSON_Delete(d);
    assert_null(nn_zoo_model("resnet50", in28, 10, &err));
    assert_non_null(strstr(err.message, "resnet50"));
    for (const char *const *n = nn_zoo_names(); *n; n++) assert_non_null(strchr("lvi", (*n)[0]));
    nn_ctx_free(ctx);
}

/* ---- whole-network gradients ---------------------------------------------------------- */

/* Every layer type: a stem, two branches joined by a concat (the stem feeds
 * both, so its gradient is a sum), bn, both pools, dropout, flatten, fc. */
static const char *const grad_net =
    "{\"layers\": ["
    "{\"name\":\"c1\",\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},"
    "{\"name\":\"bn1\",\"type\":\"bn\"},"
    "{\"name\":\"r1\",\"type\":\"relu\"},"
    "{\"name\":\"a\",\"type\":\"conv\",\"inputs\":[\"r1\"],\"out\":3,\"k\":1,\"bias\":false},"
    "{\"name\":\"b\",\"type\":\"conv\",\"inputs\":[\"r1\"],\"out\":2,\"k\":3,\"pad\":1},"
    "{\"name\":\"bp\",\"type\":\"maxpool\",\"inputs\":[\"r1\"],\"k\":3,\"stride\":1,\"pad\":1},"
    "{\"name\":\"cat\",\"type\":\"concat\",\"inputs\":[\"a\",\"b\",\"bp\"]},"
    "{\"name\":\"p1\",\"type\":\"maxpool\",\"k\":2},"
    "{\"name\":\"c2\",\"type\":\"conv\",\"out\":5,\"k\":2,\"stride\":2,\"pad\":1},"
    "{\"name\":\"ap\",\"type\":\"avgpool\",\"k\":3,\"stride\":1,\"pad\":1},"
    "{\"name\":\"fl\",\"type\":\"flatten\"},"
    "{\"name\":\"d\",\"type\":\"dropout\",\"p\":0.25},"
    "{\"name\":\"f1\",\"type\":\"fc\",\"out\":6},"
    "{\"name\":\"r2\",\"type\":\"relu\"},"
    "{\"name\":\"f2\",\"type\":\"fc\",\"out\":3}]}";

typedef struct net_fd {
    nn_net *net;
    const float *x;
    const int32_t *y;
    int n;
    gpp_rng rng0;              /* dropout stream at the start of each forward */
    int inject;                /* loss = sum(R * node output) instead of CE */
    int node;
    const float *R;
} net_fd;

static double net_loss(void *p)
{
    net_fd *c = p;
    float loss;
    *nn_net_rng(c->net) = c->rng0;
    assert_int_equal(nn_net_forward(c->net, c->x, c->inject ? NULL : c->y, c->n, 1, &loss, NULL), 0);
    if (!c->inject) return loss;
    nn_node_info info;
    nn_net_node(c->net, c->node, &info);
    return nn_test_dot(nn_net_output(c->net, c->node), c->R,
                       (size_t)c->n * info.C * info.H * info.W);
}

static void check_net_grads(int threads)
{
    gpp_error err = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", threads, &err);
    int in[3] = {2, 7, 6};
    nn_net *net = build_json(ctx, grad_net, in, 3, 7, &err);
    if (!net) fprintf(stderr, "%s\n", err.message);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, 4, &err), 0);
    gpp_rng r;
    gpp_rng_seed(&r, 8);
    float x[4 * 2 * 7 * 6];
    int32_t y[4] = {0, 2, 1, 2};
    nn_test_fill(&r, x, sizeof x / sizeof x[0], 1.0f);
    net_fd c = {.net = net, .x = x, .y = y, .n = 4, .rng0 = *nn_net_rng(net)};
    size_t np;
    float *p = nn_net_param_block(net, &np);
    float *g = nn_net_grad_block(net, &np);
    nn_net_zero_grad(net);
    net_loss(&c);
    assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
    float *an = nn_test_alloc(np);
    memcpy(an, g, sizeof(float) * np);
    double e = nn_test_fd("net params", p, np, an, net_loss, &c, 5e-4f, 2e-3, 3e-2, 0);
    assert_true(e <= 1.0);
    /* backward accumulates: a second backward doubles the gradient */
    net_loss(&c);
    assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
    for (size_t i = 0; i < np; i++) assert_float_equal(g[i], 2.0f * an[i], 1e-5 + 1e-5 * fabsf(an[i]));

    /* an injected gradient at the pre-decision layer (no labels): the
     * gradient of sum(R * h) */
    int pre = nn_net_predecision(net);
    assert_int_equal(pre, nn_net_find(net, "r2"));
    float R[4 * 6];
    nn_test_fill(&r, R, 24, 1.0f);
    c.inject = 1;
    c.node = pre;
    c.R = R;
    nn_net_zero_grad(net);
    net_loss(&c);
    nn_grad_inject inj = {.node = pre, .grad = R};
    assert_int_equal(nn_net_backward(net, &inj, 1, &err), 0);
    memcpy(an, g, sizeof(float) * np);
    e = nn_test_fd("net inject", p, np, an, net_loss, &c, 5e-4f, 2e-3, 3e-2, 0);
    assert_true(e <= 1.0);
    /* bad injections are refused */
    nn_grad_inject bad = {.node = nn_net_num_nodes(net) - 1, .grad = R};
    assert_int_equal(nn_net_backward(net, &bad, 1, &err), GPP_EINVAL);
    free(an);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* Fusion (conv-bn-relu in eval, bn-relu in training) changes nothing but
 * speed: the same logits, loss and gradients as the layer-by-layer run,
 * also with a gradient injected at a fused bn. */
static void test_fusion_equivalence(void **state)
{
    (void)state;
    gpp_error err = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", 2, &err);
    int in[3] = {2, 7, 6};
    nn_net *a = build_json(ctx, grad_net, in, 3, 7, &err);
    nn_net *b = build_json(ctx, grad_net, in, 3, 7, &err);
    assert_non_null(a);
    assert_non_null(b);
    b->fuse = 0;
    assert_int_equal(a->nodes[nn_net_find(a, "bn1")].relu_after, nn_net_find(a, "r1"));
    assert_int_equal(a->nodes[nn_net_find(a, "c1")].bn_after, nn_net_find(a, "bn1"));
    assert_int_equal(nn_net_reserve(a, 4, &err), 0);
    assert_int_equal(nn_net_reserve(b, 4, &err), 0);
    gpp_rng r;
    gpp_rng_seed(&r, 9);
    float x[4 * 2 * 7 * 6], inj[4 * 4 * 7 * 6];
    int32_t y[4] = {2, 0, 1, 1};
    nn_test_fill(&r, x, sizeof x / sizeof x[0], 1.0f);
    nn_test_fill(&r, inj, sizeof inj / sizeof inj[0], 0.1f);
    int lg = nn_net_logits(a), bn1 = nn_net_find(a, "bn1");
    for (int pass = 0; pass < 2; pass++) {
        nn_grad_inject gi = {.node = bn1, .grad = inj};
        gpp_rng r0 = *nn_net_rng(a);   /* the same dropout masks in both */
        for (int k = 0; k < 2; k++) {
            nn_net *net = k ? b : a;
            float loss;
            nn_net_zero_grad(net);
            *nn_net_rng(net) = r0;
            assert_int_equal(nn_net_forward(net, x, y, 4, 1, &loss, &err), 0);
            assert_int_equal(nn_net_backward(net, &gi, pass, &err), 0);
        }
        size_t np;
        const float *ga = nn_net_grad_block(a, &np), *gb = nn_net_grad_block(b, &np);
        assert_true(nn_test_err(ga, gb, np, 1e-6, 1e-4, NULL) <= 1.0);
        assert_true(nn_test_err(nn_net_output(a, lg), nn_net_output(b, lg), 12, 1e-6, 1e-5,
                                NULL) <= 1.0);
        /* the bn's own output, fused away in training, comes on request */
        assert_true(a->nodes[bn1].stale);
        assert_true(nn_test_err(nn_net_output(a, bn1), nn_net_output(b, bn1), 4 * 4 * 42, 1e-6,
                                1e-5, NULL) <= 1.0);
        assert_true(nn_test_err(nn_net_output_grad(a, bn1), nn_net_output_grad(b, bn1),
                                4 * 4 * 42, 1e-6, 1e-5, NULL) <= 1.0);
    }
    /* eval: conv-bn-relu folded */
    assert_int_equal(nn_net_forward(a, x, NULL, 4, 0, NULL, &err), 0);
    assert_int_equal(nn_net_forward(b, x, NULL, 4, 0, NULL, &err), 0);
    assert_true(nn_test_err(nn_net_output(a, lg), nn_net_output(b, lg), 12, 1e-5, 1e-4, NULL) <= 1.0);
    int c1 = nn_net_find(a, "c1");
    assert_true(a->nodes[c1].stale && a->nodes[bn1].stale);
    assert_true(nn_test_err(nn_net_output(a, c1), nn_net_output(b, c1), 4 * 4 * 42, 1e-5, 1e-4,
                            NULL) <= 1.0);
    assert_true(nn_test_err(nn_net_output(a, bn1), nn_net_output(b, bn1), 4 * 4 * 42, 1e-5,
                            1e-4, NULL) <= 1.0);
    assert_true(nn_test_err(nn_net_output(a, nn_net_find(a, "r1")),
                            nn_net_output(b, nn_net_find(b, "r1")), 4 * 4 * 42, 1e-5, 1e-4,
                            NULL) <= 1.0);
    /* no backward through an eval forward */
    assert_int_equal(nn_net_backward(a, NULL, 0, &err), GPP_EINVAL);
    nn_net_free(a);
    nn_net_free(b);
    nn_ctx_free(ctx);
}

/* vgg-small's conv-bn-relu-maxpool chains run as one Winograd pass in
 * eval: the same logits, pooled outputs, switches, and (on request) the
 * relu's and conv's outputs as the unfused net. */
static void test_fusion_pool(void **state)
{
    (void)state;
    gpp_error err = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", 2, &err);
    nn_net *a = build_zoo(ctx, "vgg-small", 3, 16, 20, 5);
    nn_net *b = build_zoo(ctx, "vgg-small", 3, 16, 20, 5);
    b->fuse = 0;
    int p1 = nn_net_find(a, "pool1"), r2 = nn_net_find(a, "conv2_relu"), c2 = nn_net_find(a, "conv2");
    assert_int_equal(a->nodes[c2].pool_after, p1);
    assert_int_equal(nn_net_reserve(a, 5, &err), 0);
    assert_int_equal(nn_net_reserve(b, 5, &err), 0);
    gpp_rng r;
    gpp_rng_seed(&r, 10);
    float x[5 * 3 * 16 * 20];
    int32_t y[5] = {1, 2, 3, 4, 5};
    nn_test_fill(&r, x, sizeof x / sizeof x[0], 1.0f);
    /* a training step first, so the bn running statistics are not trivial */
    for (int k = 0; k < 2; k++) {
        nn_net *net = k ? b : a;
        nn_sgd o = {.lr = 0.1f, .momentum = 0.9f};
        nn_net_zero_grad(net);
        assert_int_equal(nn_net_forward(net, x, y, 5, 1, NULL, &err), 0);
        assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
        nn_net_sgd_step(net, &o);
        assert_int_equal(nn_net_forward(net, x, NULL, 5, 0, NULL, &err), 0);
    }
    assert_true(a->nodes[r2].stale && !a->nodes[p1].stale);
    nn_node_info pi, ri;
    nn_net_node(a, p1, &pi);
    nn_net_node(a, r2, &ri);
    size_t np = (size_t)5 * pi.C * pi.H * pi.W, nr = (size_t)5 * ri.C * ri.H * ri.W;
    assert_true(nn_test_err(nn_net_output(a, p1), nn_net_output(b, p1), np, 1e-5, 1e-4, NULL) <= 1.0);
    assert_memory_equal(nn_net_switches(a, p1), nn_net_switches(b, p1), sizeof(int32_t) * np);
    int lg = nn_net_logits(a);
    assert_true(nn_test_err(nn_net_output(a, lg), nn_net_output(b, lg), 50, 1e-5, 1e-4, NULL) <= 1.0);
    assert_true(nn_test_err(nn_net_output(a, r2), nn_net_output(b, r2), nr, 1e-5, 1e-4, NULL) <= 1.0);
    assert_true(nn_test_err(nn_net_output(a, c2), nn_net_output(b, c2), nr, 1e-5, 1e-4, NULL) <= 1.0);
    nn_net_free(a);
    nn_net_free(b);
    nn_ctx_free(ctx);
}

static void test_net_gradients_1(void **state)
{
    (void)state;
    check_net_grads(1);
}

static void test_net_gradients_2(void **state)
{
    (void)state;
    check_net_grads(2);
}

/* ---- SGD and schedules ------------------------------------------------------------------ */

static void test_sgd_hand(void **state)
{
    (void)state;
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", 2, &err);
    int in[3] = {2, 1, 1};
    nn_net *net = build_json(ctx, "[{\"type\":\"fc\",\"out\":2}]", in, 2, 1, &err);
    assert_non_null(net);
    size_t n;
    float *p = nn_net_param_block(net, &n), *g = nn_net_grad_block(net, &n);
    assert_int_equal(n, 6);
    static const float p0[6] = {1, -2, 0.5f, 3, 0.25f, -1};
    static const float g1[6] = {0.1f, 0.2f, -0.3f, 0.4f, 0, 1};
    static const float g2[6] = {-0.5f, 0.1f, 0.1f, 0, 2, -1};
    for (int variant = 0; variant < 3; variant++) {
        memcpy(p, p0, sizeof p0);
        nn_net_set_sgd_steps(net, 0);
        nn_sgd o = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f};
        if (variant == 1) o.nesterov = 1;
        if (variant == 2) { o.momentum = 0.0f; o.weight_decay = 0.0f; }
        for (int i = 0; i < 6; i++) {
            /* torch.optim.SGD by hand, two steps */
            double w = p0[i], d1 = g1[i] + o.weight_decay * w, buf = d1;
            double step1 = o.nesterov ? d1 + o.momentum * buf : (o.momentum ? buf : d1);
            double w1 = w - o.lr * step1;
            double d2 = g2[i] + o.weight_decay * w1;
            buf = o.momentum * buf + d2;
            double step2 = o.nesterov ? d2 + o.momentum * buf : (o.momentum ? buf : d2);
            double w2 = w1 - o.lr * step2;
            (void)w2;
        }
        memcpy(g, g1, sizeof g1);
        nn_net_sgd_step(net, &o);
        float after1[6];
        memcpy(after1, p, sizeof after1);
        memcpy(g, g2, sizeof g2);
        nn_net_sgd_step(net, &o);
        assert_int_equal(nn_net_sgd_steps(net), 2);
        for (int i = 0; i < 6; i++) {
            double w = p0[i], d1 = g1[i] + o.weight_decay * w, buf = d1;
            double s1 = o.momentum == 0.0f ? d1 : (o.nesterov ? d1 + o.momentum * buf : buf);
            double w1 = w - o.lr * s1;
            double d2 = g2[i] + o.weight_decay * w1;
            buf = o.momentum * buf + d2;
            double s2 = o.momentum == 0.0f ? d2 : (o.nesterov ? d2 + o.momentum * buf : buf);
            double w2 = w1 - o.lr * s2;
            assert_float_equal(after1[i], w1, 1e-6);
            assert_float_equal(p[i], w2, 1e-6);
        }
    }
    /* a concrete value: w=1, g=0.1, wd=0.01, lr=0.1, momentum (first step) */
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static void test_lr_schedules(void **state)
{
    (void)state;
    nn_lr_schedule c = {.kind = NN_LR_CONSTANT, .base = 0.1f};
    assert_float_equal(nn_lr_at(&c, 0), 0.1, 1e-7);
    assert_float_equal(nn_lr_at(&c, 1000), 0.1, 1e-7);
    nn_lr_schedule s = {.kind = NN_LR_STEP, .base = 0.1f, .step_size = 3, .gamma = 0.5f};
    assert_float_equal(nn_lr_at(&s, 2), 0.1, 1e-7);
    assert_float_equal(nn_lr_at(&s, 3), 0.05, 1e-7);
    assert_float_equal(nn_lr_at(&s, 7), 0.025, 1e-7);
    nn_lr_schedule k = {.kind = NN_LR_COSINE, .base = 0.1f, .total = 10, .min_lr = 0.001f};
    assert_float_equal(nn_lr_at(&k, 0), 0.1, 1e-7);
    assert_float_equal(nn_lr_at(&k, 5), 0.0505, 1e-6);
    assert_float_equal(nn_lr_at(&k, 10), 0.001, 1e-7);
    assert_float_equal(nn_lr_at(&k, 20), 0.001, 1e-7);
}

/* ---- training: determinism, progress ------------------------------------------------------ */

static const char *const small_net =
    "[{\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1,\"bias\":false},{\"type\":\"bn\"},"
    "{\"type\":\"relu\"},{\"type\":\"maxpool\",\"k\":2},{\"type\":\"conv\",\"out\":8,\"k\":3},"
    "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.3},"
    "{\"type\":\"fc\",\"out\":16},{\"type\":\"relu\"},{\"type\":\"fc\",\"out\":4}]";

/* Train `steps` steps of batch 16 on a fixed synthetic problem (class k:
 * a bright k-th quadrant); returns the params (caller frees) and the last
 * loss. */
static float *train_small(int threads, uint64_t seed, int steps, float *last_loss,
                          float *first_loss)
{
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", threads, &err);
    int in[3] = {1, 10, 10};
    nn_net *net = build_json(ctx, small_net, in, 4, seed, &err);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, 16, &err), 0);
    float x[16 * 100];
    int32_t y[16];
    gpp_rng r;
    gpp_rng_seed(&r, 99);
    nn_sgd o = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f};
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 16; i++) {
            y[i] = (int32_t)gpp_rng_below(&r, 4);
            for (int j = 0; j < 100; j++) {
                int q = (j / 10 >= 5) * 2 + (j % 10 >= 5);
                x[i * 100 + j] = 0.3f * gpp_rng_normal(&r) + (q == y[i] ? 1.0f : 0.0f);
            }
        }
        float loss;
        nn_net_zero_grad(net);
        assert_int_equal(nn_net_forward(net, x, y, 16, 1, &loss, &err), 0);
        assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
        nn_net_sgd_step(net, &o);
        if (s == 0 && first_loss) *first_loss = loss;
        if (last_loss) *last_loss = loss;
    }
    size_t n;
    float *p = nn_net_param_block(net, &n);
    float *copy = nn_test_alloc(n + 1);
    memcpy(copy, p, sizeof(float) * n);
    copy[n] = NAN;
    nn_net_free(net);
    nn_ctx_free(ctx);
    return copy;
}

static void test_determinism(void **state)
{
    (void)state;
    size_t n = 0;
    {
        gpp_error err;
        nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
        int in[3] = {1, 10, 10};
        nn_net *net = build_json(ctx, small_net, in, 4, 1, &err);
        nn_net_param_block(net, &n);
        nn_net_free(net);
        nn_ctx_free(ctx);
    }
    for (int T = 1; T <= 2; T++) {
        float *a = train_small(T, 5, 6, NULL, NULL);
        float *b = train_small(T, 5, 6, NULL, NULL);
        float *c = train_small(T, 6, 6, NULL, NULL);
        assert_memory_equal(a, b, sizeof(float) * n);
        assert_memory_not_equal(a, c, sizeof(float) * n);
        free(a);
        free(b);
        free(c);
    }
}

/* Resume: k steps, save, load, m more steps == k + m straight (bitwise for
 * the same thread count): weights, momentum, bn statistics, SGD step count
 * and the dropout stream all travel in the checkpoint. */
static void resume_case(int threads)
{
    gpp_error err = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", threads, &err);
    int in[3] = {1, 10, 10};
    nn_net *a = build_json(ctx, small_net, in, 4, 21, &err);
    nn_net *b = build_json(ctx, small_net, in, 4, 21, &err);
    assert_int_equal(nn_net_reserve(a, 8, &err), 0);
    assert_int_equal(nn_net_reserve(b, 8, &err), 0);
    char dir[] = "/tmp/nn_resume_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/k.gppm", dir);
    nn_sgd o = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f, .nesterov = 1};
    float x[8 * 100];
    int32_t y[8];
    const int k = 3, m = 4;
    for (int s = 0; s < k + m; s++) {
        gpp_rng r;
        gpp_rng_seed(&r, 1000 + (uint64_t)s);   /* the batch of step s */
        nn_test_fill(&r, x, 800, 1.0f);
        for (int i = 0; i < 8; i++) y[i] = (int32_t)gpp_rng_below(&r, 4);
        if (s == k) {
            cJSON *st = cJSON_CreateObject();
            cJSON_AddNumberToObject(st, "step", k);
            assert_int_equal(nn_net_save(b, path, NULL, st, &err), 0);
            cJSON_Delete(st);
            nn_net_free(b);
            cJSON *doc = NULL;
            b = nn_net_load(ctx, path, &doc, &err);
            if (!b) fprintf(stderr, "%s\n", err.message);
            assert_non_null(b);
            const cJSON *stp = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "state"), "step");
            assert_int_equal(stp->valueint, k);
            cJSON_Delete(doc);
            assert_int_equal(nn_net_sgd_steps(b), k);
            assert_int_equal(nn_net_reserve(b, 8, &err), 0);
        }
        for (int j = 0; j < 2; j++) {
            nn_net *net = j ? b : a;
            nn_net_zero_grad(net);
            assert_int_equal(nn_net_forward(net, x, y, 8, 1, NULL, &err), 0);
            assert_int_equal(nn_net_backward(net, NULL, 0, &err), 0);
            nn_net_sgd_step(net, &o);
        }
    }
    for (int i = 0; i < nn_net_num_tensors(a); i++) {
        nn_tensor ta, tb;
        nn_net_tensor(a, i, &ta);
        assert_int_equal(nn_net_tensor_find(b, ta.name, &tb), 0);
        assert_memory_equal(ta.data, tb.data, sizeof(float) * ta.len);
        if (ta.momentum) assert_memory_equal(ta.momentum, tb.momentum, sizeof(float) * ta.len);
    }
    /* a damaged file is refused with a message */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 200, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    nn_net *c = nn_net_load(ctx, path, NULL, &err);
    assert_null(c);
    assert_true(strlen(err.message) > 0);
    remove(path);
    rmdir(dir);
    nn_net_free(a);
    nn_net_free(b);
    nn_ctx_free(ctx);
}

static void test_resume(void **state)
{
    (void)state;
    resume_case(1);
    resume_case(2);
}

static void test_training_learns(void **state)
{
    (void)state;
    float first, last;
    float *p = train_small(2, 3, 60, &last, &first);
    printf("loss %.4f -> %.4f\n", first, last);
    assert_true(first > 1.0f);
    assert_true(last < 0.3f * first);
    free(p);
}

/* ---- building errors, tensors, description ------------------------------------------------ */

static void test_build_errors(void **state)
{
    (void)state;
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    int in[3] = {1, 8, 8};
    memset(&err, 0, sizeof err);
    assert_null(build_json(ctx, "[{\"type\":\"conv\",\"out\":4,\"k\":9},{\"type\":\"fc\",\"out\":2}]",
                           in, 2, 1, &err));
    assert_string_equal(err.field, "model.layers[0]");
    assert_non_null(strstr(err.message, "does not fit"));
    assert_null(build_json(ctx,
                           "[{\"name\":\"a\",\"type\":\"conv\",\"out\":2,\"k\":3},"
                           "{\"name\":\"b\",\"type\":\"conv\",\"inputs\":[\"input\"],\"out\":2,\"k\":1},"
                           "{\"type\":\"concat\",\"inputs\":[\"a\",\"b\"]},{\"type\":\"fc\",\"out\":2}]",
                           in, 2, 1, &err));
    assert_non_null(strstr(err.message, "concat inputs differ"));
    assert_null(build_json(ctx, "[{\"type\":\"fc\",\"out\":3}]", in, 10, 1, &err));
    assert_non_null(strstr(err.message, "3 logits but there are 10 classes"));
    assert_null(build_json(ctx, "[{\"type\":\"conv\",\"out\":3,\"k\":1}]", in, 0, 1, &err));
    assert_non_null(strstr(err.message, "vector of logits"));
    assert_null(build_json(ctx, "[{\"type\":\"fc\",\"out\":3}]", NULL, 3, 1, &err));
    assert_non_null(strstr(err.message, "input shape"));
    assert_null(build_json(ctx, "[{\"type\":\"warp\"}]", in, 3, 1, &err));
    assert_non_null(strstr(err.field, "model[0].type"));
    assert_null(build_json(ctx, "[{\"type\":\"maxpool\",\"k\":2,\"pad\":2},{\"type\":\"fc\",\"out\":2}]",
                           in, 2, 1, &err));
    assert_non_null(strstr(err.message, "pad must be at most"));
    /* the description's own input and classes are used when not overridden */
    nn_net *net = build_json(ctx, "{\"input\":[3,4,4],\"classes\":5,\"layers\":[{\"type\":\"fc\",\"out\":5}]}",
                             NULL, 0, 1, &err);
    assert_non_null(net);
    assert_int_equal(nn_net_params(net), 3 * 16 * 5 + 5);
    /* forward before reserve, too many samples, a bad label */
    float x[2 * 48] = {0};
    int32_t y[2] = {1, 5};
    assert_int_equal(nn_net_forward(net, x, NULL, 1, 0, NULL, &err), GPP_EINVAL);
    assert_int_equal(nn_net_backward(net, NULL, 0, &err), GPP_EINVAL);
    assert_int_equal(nn_net_reserve(net, 1, &err), 0);
    assert_int_equal(nn_net_batch(net), 1);
    assert_int_equal(nn_net_forward(net, x, NULL, 2, 0, NULL, &err), GPP_EINVAL);
    assert_int_equal(nn_net_reserve(net, 2, &err), 0);
    assert_int_equal(nn_net_forward(net, x, y, 2, 0, NULL, &err), GPP_EINVAL);
    assert_string_equal(err.field, "labels");
    y[1] = 4;
    float loss;
    assert_int_equal(nn_net_forward(net, x, y, 2, 0, &loss, &err), 0);
    assert_float_equal(loss, log(5.0), 1e-6);   /* zero input, zero bias: uniform */
    nn_net_free(net);
    nn_net_free(NULL);
    nn_ctx_free(ctx);
}

static void test_tensors_and_json(void **state)
{
    (void)state;
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    nn_net *net = build_zoo(ctx, "vgg-small", 1, 28, 28, 3);
    nn_tensor t;
    assert_int_equal(nn_net_tensor_find(net, "conv1.weight", &t), 0);
    assert_int_equal(t.ndim, 4);
    assert_int_equal(t.shape[0], 32);
    assert_int_equal(t.shape[1], 1);
    assert_int_equal(t.shape[2], 3);
    assert_int_equal(nn_net_tensor_find(net, "conv1.bias", &t), GPP_ENOTFOUND);
    assert_int_equal(nn_net_tensor_find(net, "conv1_bn.running_var", &t), 0);
    assert_int_equal(t.len, 32);
    assert_null(t.grad);
    for (size_t i = 0; i < t.len; i++) assert_float_equal(t.data[i], 1.0, 0);
    assert_int_equal(nn_net_tensor_find(net, "fc.weight", &t), 0);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 10);
    assert_int_equal(t.shape[1], 128);
    /* He init: the std of conv3's weights is near sqrt(2 / (32*9)) */
    assert_int_equal(nn_net_tensor_find(net, "conv3.weight", &t), 0);
    double ss = 0;
    for (size_t i = 0; i < t.len; i++) ss += (double)t.data[i] * t.data[i];
    assert_float_equal(sqrt(ss / t.len), sqrt(2.0 / 288), 0.01);
    /* tensors: every trainable element once, in block order */
    size_t total = 0, np;
    float *blk = nn_net_param_block(net, &np);
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        assert_int_equal(nn_net_tensor(net, i, &t), 0);
        if (t.grad) {
            assert_ptr_equal(t.data, blk + total);
            total += t.len;
        }
    }
    assert_int_equal(total, np);
    assert_int_equal(nn_net_tensor(net, nn_net_num_tensors(net), &t), GPP_EINVAL);
    /* the description round-trips */
    cJSON *j1 = nn_net_to_json(net);
    char *s1 = cJSON_PrintUnformatted(j1);
    nn_net *net2 = nn_net_new(ctx, j1, NULL, 0, 3, &err);
    assert_non_null(net2);
    cJSON *j2 = nn_net_to_json(net2);
    char *s2 = cJSON_PrintUnformatted(j2);
    assert_string_equal(s1, s2);
    assert_int_equal(nn_net_params(net2), nn_net_params(net));
    size_t np2;
    assert_memory_equal(nn_net_param_block(net2, &np2), blk, sizeof(float) * np);
    free(s1);
    free(s2);
    cJSON_Delete(j1);
    cJSON_Delete(j2);
    nn_net_free(net2);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* nn_net_bn_restat: while on, each training forward leaves every batch
 * norm's running mean / variance at the mean of the batch means / unbiased
 * batch variances since it was turned on (batches of different sizes
 * included), dropout passes its input through and draws nothing; off, the
 * layer's momentum (0.1) is back. */
static void test_bn_restat(void **state)
{
    (void)state;
    gpp_error err = {0};
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    const int in[3] = {2, 2, 2};
    nn_net *net = build_json(ctx,
        "[{\"name\":\"c\",\"type\":\"conv\",\"out\":3,\"k\":1},"
        "{\"name\":\"b\",\"type\":\"bn\"},"
        "{\"name\":\"d\",\"type\":\"dropout\",\"p\":0.5},"
        "{\"name\":\"fc\",\"type\":\"fc\",\"out\":2}]", in, 2, 5, &err);
    assert_non_null(net);
    assert_int_equal(nn_net_reserve(net, 4, &err), 0);
    const int ci = nn_net_find(net, "c"), bi = nn_net_find(net, "b"), di = nn_net_find(net, "d");
    gpp_rng r = {0};
    gpp_rng_seed(&r, 11);
    float x[4 * 8];
    /* running statistics that are not the data's */
    for (int i = 0; i < 32; i++) x[i] = 3.0f * gpp_rng_normal(&r) - 2.0f;
    assert_int_equal(nn_net_forward(net, x, NULL, 4, 1, NULL, &err), 0);
    nn_tensor rm, rv;
    assert_int_equal(nn_net_tensor_find(net, "b.running_mean", &rm), 0);
    assert_int_equal(nn_net_tensor_find(net, "b.running_var", &rv), 0);
    assert_int_equal(nn_net_bn_restat(net, 1), 1);
    const gpp_rng before = *nn_net_rng(net);
    const int sizes[3] = {4, 3, 2};
    double want_m[3] = {0}, want_v[3] = {0};
    for (int b = 0; b < 3; b++) {
        const int n = sizes[b];
        for (int i = 0; i < n * 8; i++) x[i] = (float)(b + 1) * gpp_rng_normal(&r) + (float)b;
        assert_int_equal(nn_net_forward(net, x, NULL, n, 1, NULL, &err), 0);
        const float *co = nn_net_output(net, ci), *bo = nn_net_output(net, bi);
        const float *dout = nn_net_output(net, di);
        for (int i = 0; i < n * 12; i++) assert_true(dout[i] == bo[i]);   /* no mask */
        for (int c = 0; c < 3; c++) {
            double s = 0, ss = 0;
            for (int k = 0; k < n; k++)
                for (int p = 0; p < 4; p++) s += co[(k * 3 + c) * 4 + p];
            double mu = s / (n * 4);
            for (int k = 0; k < n; k++)
                for (int p = 0; p < 4; p++) {
                    double e = co[(k * 3 + c) * 4 + p] - mu;
                    ss += e * e;
                }
            want_m[c] += mu / 3;
            want_v[c] += ss / (n * 4 - 1) / 3;
        }
    }
    const gpp_rng after = *nn_net_rng(net);
    assert_memory_equal(&before, &after, sizeof before);
    for (int c = 0; c < 3; c++) {
        assert_float_equal(rm.data[c], want_m[c], 1e-5 * (1 + fabs(want_m[c])));
        assert_float_equal(rv.data[c], want_v[c], 1e-5 * (1 + want_v[c]));
    }
    /* off: momentum 0.1 again, and dropout masks again */
    assert_int_equal(nn_net_bn_restat(net, 0), 1);
    for (int i = 0; i < 32; i++) x[i] = gpp_rng_normal(&r) + 5.0f;
    assert_int_equal(nn_net_forward(net, x, NULL, 4, 1, NULL, &err), 0);
    const float *co = nn_net_output(net, ci);
    for (int c = 0; c < 3; c++) {
        double s = 0;
        for (int k = 0; k < 4; k++)
            for (int p = 0; p < 4; p++) s += co[(k * 3 + c) * 4 + p];
        assert_float_equal(rm.data[c], 0.9 * want_m[c] + 0.1 * s / 16, 1e-5 * (1 + fabs(want_m[c])));
    }
    const gpp_rng drawn = *nn_net_rng(net);
    assert_memory_not_equal(&after, &drawn, sizeof after);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static void test_eval_and_features(void **state)
{
    (void)state;
    gpp_error err;
    nn_ctx *ctx = nn_ctx_new("cpu", 2, &err);
    nn_net *net = build_zoo(ctx, "inception-base", 1, 28, 28, 4);
    assert_int_equal(nn_net_reserve(net, 3, &err), 0);
    float x[3 * 784];
    int32_t y[3] = {1, 2, 3};
    gpp_rng r;
    gpp_rng_seed(&r, 4);
    nn_test_fill(&r, x, 3 * 784, 1.0f);
    /* eval is independent of the batch: sample 1 alone gives the same logits */
    assert_int_equal(nn_net_forward(net, x, y, 3, 0, NULL, &err), 0);
    int lg = nn_net_logits(net);
    float l3[30], l1[10];
    memcpy(l3, nn_net_output(net, lg), sizeof l3);
    assert_int_equal(nn_net_forward(net, x + 784, NULL, 1, 0, NULL, &err), 0);
    memcpy(l1, nn_net_output(net, lg), sizeof l1);
    assert_true(nn_test_err(l1, l3 + 10, 10, 1e-5, 1e-4, NULL) <= 1.0);
    /* the pre-decision features are the global average of inc2's concat */
    int pre = nn_net_predecision(net);
    nn_node_info info;
    nn_net_node(net, pre, &info);
    assert_int_equal(info.op, NN_OP_GAP);
    assert_int_equal(info.C, 160);
    const float *h = nn_net_output(net, pre);
    const float *cat = nn_net_output(net, nn_net_find(net, "inc2_concat"));
    double s = 0;
    for (int i = 0; i < 49; i++) s += cat[7 * 49 + i];
    assert_float_equal(h[7], s / 49, 1e-5);
    /* switches of the stem pool point into 28x28 planes */
    const int32_t *sw = nn_net_switches(net, nn_net_find(net, "stem_pool"));
    assert_non_null(sw);
    assert_true(sw[0] >= 0 && sw[0] < 784);
    int correct = nn_net_correct(net, y + 1, 1);
    assert_true(correct == 0 || correct == 1);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* OpenBLAS's kernel choice: the user's OPENBLAS_CORETYPE is kept whatever it
 * is; only the generic fallback on an AVX machine is replaced, by the widest
 * kernels the CPU runs. */
static void test_blas_core_pick(void **state)
{
    (void)state;
    unsigned all = NN_CPU_AVX | NN_CPU_AVX2 | NN_CPU_AVX512;
    assert_string_equal(nn_blas_core_pick("Prescott", NULL, all), "SkylakeX");
    assert_string_equal(nn_blas_core_pick("Prescott", "", all), "SkylakeX");
    assert_string_equal(nn_blas_core_pick("PRESCOTT", NULL, all), "SkylakeX");
    assert_string_equal(nn_blas_core_pick("Prescott", NULL, NN_CPU_AVX | NN_CPU_AVX2), "Haswell");
    assert_string_equal(nn_blas_core_pick("Prescott", NULL, NN_CPU_AVX), "SandyBridge");
    assert_null(nn_blas_core_pick("Prescott", NULL, 0));              /* an SSE3 CPU */
    assert_null(nn_blas_core_pick("Prescott", "Prescott", all));      /* asked for */
    assert_null(nn_blas_core_pick("Prescott", "Haswell", all));       /* the user's */
    assert_null(nn_blas_core_pick("SkylakeX", NULL, all));            /* known CPU */
    assert_null(nn_blas_core_pick("Zen", NULL, NN_CPU_AVX | NN_CPU_AVX2));
    assert_null(nn_blas_core_pick(NULL, NULL, all));
    /* the bits this CPU reports nest: AVX-512 implies AVX2, AVX2 implies AVX */
    unsigned f = nn_cpu_features();
    if (f & NN_CPU_AVX512) assert_true(f & NN_CPU_AVX2);
    if (f & NN_CPU_AVX2) assert_true(f & NN_CPU_AVX);
    assert_non_null(nn_blas_core());
    assert_true(strlen(nn_blas_core()) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zoo_counts),
        cmocka_unit_test(test_net_gradients_1),
        cmocka_unit_test(test_net_gradients_2),
        cmocka_unit_test(test_fusion_equivalence),
        cmocka_unit_test(test_fusion_pool),
        cmocka_unit_test(test_sgd_hand),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_training_learns),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_tensors_and_json),
        cmocka_unit_test(test_eval_and_features),
        cmocka_unit_test(test_bn_restat),
        cmocka_unit_test(test_blas_core_pick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
