/* Every entry of the CUDA backend against the cpu backend on the same
 * random inputs, forward and backward, within tol + rel*|ref|: conv (several
 * shapes: stride, padding, 1x1, 5x5, Winograd-sized 3x3, the fused epilogue
 * and 2x2 pool), fc, batch norm (train with and without the fused ReLU,
 * eval, backward), relu, max / avg pool, global average pool, concat,
 * dropout with a given mask, softmax cross-entropy, SGD (plain, momentum,
 * Nesterov, the first step), the batch-norm folding.  Parameter gradients
 * start non-zero to check that they accumulate.  Skipped (77) without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpu_check.h"

static nn_ctx *G;   /* cuda */
static nn_ctx *C;   /* cpu, one thread */
static gpp_rng R;

static float *rnd(size_t n, float a)
{
    float *x = gpu_halloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = a * (2.0f * gpp_rng_uniform(&R) - 1.0f);
    return x;
}

static void reserve_conv(const nn_conv_dims *d)
{
    assert_int_equal(nn_ctx_reserve_scratch(C, C->be->conv_scratch(d, 1)), 0);
    assert_int_equal(nn_ctx_reserve_shared(C, C->be->conv_shared(d)), 0);
    assert_int_equal(nn_ctx_reserve_scratch(G, G->be->conv_scratch(d, 1)), 0);
    assert_int_equal(nn_ctx_reserve_shared(G, G->be->conv_shared(d)), 0);   /* 0 on cuda */
}

/* forward (with bias, then with an epilogue) and backward of one shape */
static void conv_case(int N, int Cc, int H, int W, int OC, int K, int s, int p)
{
    nn_conv_dims d = {.N = N, .C = Cc, .H = H, .W = W, .OC = OC, .K = K, .stride = s, .pad = p};
    assert_int_equal(nn_conv_dims_init(&d), 0);
    reserve_conv(&d);
    size_t ni = (size_t)N * Cc * H * W, nw = (size_t)OC * Cc * K * K;
    size_t no = (size_t)N * OC * d.OH * d.OW;
    float *x = rnd(ni, 1.0f), *w = rnd(nw, 0.3f), *b = rnd(OC, 0.5f), *dy = rnd(no, 1.0f);
    float *sc = rnd(OC, 1.5f), *sh = rnd(OC, 0.5f);
    float *y = gpu_halloc(sizeof(float) * no), *dx = gpu_halloc(sizeof(float) * ni);
    float *dw = rnd(nw, 0.1f), *db = rnd(OC, 0.1f);
    float *gx = gpu_dup(G, x, ni), *gw = gpu_dup(G, w, nw), *gb = gpu_dup(G, b, OC);
    float *gy = gpu_dup(G, NULL, no), *gdy = gpu_dup(G, dy, no), *gdx = gpu_dup(G, NULL, ni);
    float *gdw = gpu_dup(G, dw, nw), *gdb = gpu_dup(G, db, OC);
    float *gsc = gpu_dup(G, sc, OC), *gsh = gpu_dup(G, sh, OC);
    char what[96];
    const double tol = 2e-4 * sqrt((double)Cc * K * K), rel = 1e-3;

    C->be->conv_forward(C, y, x, w, b, NULL, &d);
    G->be->conv_forward(G, gy, gx, gw, gb, NULL, &d);
    snprintf(what, sizeof what, "conv %dx%d s%d p%d C%d OC%d fwd", K, K, s, p, Cc, OC);
    assert_int_equal(gpu_cmp(G, what, y, gy, no, tol, rel), 0);

    nn_epilogue ep = {.scale = sc, .shift = sh, .relu = 1};
    nn_epilogue gep = {.scale = gsc, .shift = gsh, .relu = 1};
    C->be->conv_forward(C, y, x, w, b, &ep, &d);
    G->be->conv_forward(G, gy, gx, gw, gb, &gep, &d);
    snprintf(what, sizeof what, "conv %dx%d s%d p%d epilogue", K, K, s, p);
    assert_int_equal(gpu_cmp(G, what, y, gy, no, 2 * tol, rel), 0);

    C->be->conv_backward(C, dx, dw, db, dy, x, w, &d);
    G->be->conv_backward(G, gdx, gdw, gdb, gdy, gx, gw, &d);
    double tb = 2e-4 * sqrt((double)N * d.OH * d.OW);
    snprintf(what, sizeof what, "conv %dx%d s%d p%d din", K, K, s, p);
    assert_int_equal(gpu_cmp(G, what, dx, gdx, ni, 2e-4 * sqrt((double)OC * K * K), rel), 0);
    snprintf(what, sizeof what, "conv %dx%d s%d p%d dweight", K, K, s, p);
    assert_int_equal(gpu_cmp(G, what, dw, gdw, nw, tb, rel), 0);
    snprintf(what, sizeof what, "conv %dx%d s%d p%d dbias", K, K, s, p);
    assert_int_equal(gpu_cmp(G, what, db, gdb, OC, tb, rel), 0);
    assert_int_equal(nn_ctx_synchronize(G, NULL), 0);

    void *gs[] = {gx, gw, gb, gy, gdy, gdx, gdw, gdb, gsc, gsh};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    float *hs[] = {x, w, b, dy, sc, sh, y, dx, dw, db};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void test_conv_3x3_pad1(void **st) { (void)st; conv_case(3, 5, 9, 7, 6, 3, 1, 1); }
static void test_conv_3x3_stride2(void **st) { (void)st; conv_case(2, 4, 11, 10, 7, 3, 2, 1); }
static void test_conv_1x1(void **st) { (void)st; conv_case(4, 16, 6, 6, 8, 1, 1, 0); }
static void test_conv_1x1_stride2(void **st) { (void)st; conv_case(2, 8, 7, 7, 5, 1, 2, 0); }
static void test_conv_5x5(void **st) { (void)st; conv_case(5, 1, 28, 28, 6, 5, 1, 0); }
static void test_conv_7x7_s2_p3(void **st) { (void)st; conv_case(2, 3, 17, 15, 8, 7, 2, 3); }
static void test_conv_wino(void **st) { (void)st; conv_case(3, 16, 12, 12, 16, 3, 1, 1); }
static void test_conv_big_batch(void **st) { (void)st; conv_case(64, 8, 8, 8, 16, 3, 1, 1); }

/* the eval fusion: conv + folded bn + relu + 2x2/2 max pool in one call */
static void test_conv_pool_epilogue(void **st)
{
    (void)st;
    nn_conv_dims d = {.N = 3, .C = 16, .H = 12, .W = 12, .OC = 16, .K = 3, .stride = 1,
                      .pad = 1};
    assert_int_equal(nn_conv_dims_init(&d), 0);
    assert_true(nn_wino_pool_ok(&d));
    reserve_conv(&d);
    size_t ni = (size_t)d.N * d.C * d.H * d.W, nw = (size_t)d.OC * d.C * 9;
    size_t no = (size_t)d.N * d.OC * d.OH * d.OW, np = no / 4;
    float *x = rnd(ni, 1.0f), *w = rnd(nw, 0.3f), *b = rnd(d.OC, 0.5f);
    float *sc = rnd(d.OC, 1.5f), *sh = rnd(d.OC, 0.5f);
    float *y = gpu_halloc(sizeof(float) * no), *po = gpu_halloc(sizeof(float) * np);
    int32_t *sw = gpu_halloc(sizeof(int32_t) * np);
    float *gx = gpu_dup(G, x, ni), *gw = gpu_dup(G, w, nw), *gb = gpu_dup(G, b, d.OC);
    float *gsc = gpu_dup(G, sc, d.OC), *gsh = gpu_dup(G, sh, d.OC);
    float *gy = gpu_dup(G, NULL, no), *gpo = gpu_dup(G, NULL, np);
    int32_t *gsw = gpu_dup_i32(G, NULL, np);
    nn_epilogue ep = {.scale = sc, .shift = sh, .relu = 1, .pool_out = po, .pool_switches = sw};
    nn_epilogue gep = {.scale = gsc, .shift = gsh, .relu = 1, .pool_out = gpo,
                       .pool_switches = gsw};
    C->be->conv_forward(C, y, x, w, b, &ep, &d);
    G->be->conv_forward(G, gy, gx, gw, gb, &gep, &d);
    assert_int_equal(gpu_cmp(G, "conv+pool pooled", po, gpo, np, 2e-3, 1e-3), 0);
    /* switches can differ only where two window values tie within rounding */
    int32_t *hsw = gpu_halloc(sizeof(int32_t) * np);
    G->be->download(G, hsw, gsw, sizeof(int32_t) * np);
    size_t diff = 0;
    for (size_t i = 0; i < np; i++) diff += hsw[i] != sw[i] && po[i] != 0.0f;
    assert_true(diff <= np / 100);
    free(hsw);
    void *gs[] = {gx, gw, gb, gsc, gsh, gy, gpo, gsw};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(x); free(w); free(b); free(sc); free(sh); free(y); free(po); free(sw);
}

static void test_fc(void **st)
{
    (void)st;
    const int N = 7, IN = 33, OUT = 10;
    float *x = rnd((size_t)N * IN, 1.0f), *w = rnd((size_t)OUT * IN, 0.3f), *b = rnd(OUT, 0.5f);
    float *dy = rnd((size_t)N * OUT, 1.0f), *dw = rnd((size_t)OUT * IN, 0.1f), *db = rnd(OUT, 0.1f);
    float *y = gpu_halloc(sizeof(float) * N * OUT), *dx = gpu_halloc(sizeof(float) * N * IN);
    float *gx = gpu_dup(G, x, (size_t)N * IN), *gw = gpu_dup(G, w, (size_t)OUT * IN);
    float *gb = gpu_dup(G, b, OUT), *gdy = gpu_dup(G, dy, (size_t)N * OUT);
    float *gdw = gpu_dup(G, dw, (size_t)OUT * IN), *gdb = gpu_dup(G, db, OUT);
    float *gy = gpu_dup(G, NULL, (size_t)N * OUT), *gdx = gpu_dup(G, NULL, (size_t)N * IN);
    C->be->fc_forward(C, y, x, w, b, N, IN, OUT);
    G->be->fc_forward(G, gy, gx, gw, gb, N, IN, OUT);
    assert_int_equal(gpu_cmp(G, "fc fwd", y, gy, (size_t)N * OUT, 1e-4, 1e-3), 0);
    C->be->fc_backward(C, dx, dw, db, dy, x, w, N, IN, OUT);
    G->be->fc_backward(G, gdx, gdw, gdb, gdy, gx, gw, N, IN, OUT);
    assert_int_equal(gpu_cmp(G, "fc din", dx, gdx, (size_t)N * IN, 1e-4, 1e-3), 0);
    assert_int_equal(gpu_cmp(G, "fc dweight", dw, gdw, (size_t)OUT * IN, 1e-4, 1e-3), 0);
    assert_int_equal(gpu_cmp(G, "fc dbias", db, gdb, OUT, 1e-4, 1e-3), 0);
    void *gs[] = {gx, gw, gb, gdy, gdw, gdb, gy, gdx};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(x); free(w); free(b); free(dy); free(dw); free(db); free(y); free(dx);
}

/* small: one block per channel; large (N*HW >= 8192): sliced reductions */
static void bn_case(int relu, int N, int Cc, int HW)
{
    const size_t n = (size_t)N * Cc * HW;
    nn_bn_dims d = {.N = N, .C = Cc, .HW = HW, .c0 = 0, .c1 = Cc, .eps = 1e-5f,
                    .momentum = 0.1f, .relu = relu};
    float *x = rnd(n, 2.0f), *g = rnd(Cc, 1.0f), *b = rnd(Cc, 0.5f), *dy = rnd(n, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] += 0.7f;   /* a non-zero mean */
    float *rm = rnd(Cc, 0.2f), *rv = gpu_halloc(sizeof(float) * Cc);
    for (int c = 0; c < Cc; c++) rv[c] = 1.0f + 0.1f * (float)c;
    float *y = gpu_halloc(sizeof(float) * n), *dx = gpu_halloc(sizeof(float) * n);
    float *mean = gpu_halloc(sizeof(float) * Cc), *rstd = gpu_halloc(sizeof(float) * Cc);
    float *dg = rnd(Cc, 0.1f), *dbt = rnd(Cc, 0.1f);
    float *gx = gpu_dup(G, x, n), *gg = gpu_dup(G, g, Cc), *gb = gpu_dup(G, b, Cc);
    float *grm = gpu_dup(G, rm, Cc), *grv = gpu_dup(G, rv, Cc), *gdy = gpu_dup(G, dy, n);
    float *gy = gpu_dup(G, NULL, n), *gdx = gpu_dup(G, NULL, n);
    float *gmean = gpu_dup(G, NULL, Cc), *grstd = gpu_dup(G, NULL, Cc);
    float *gdg = gpu_dup(G, dg, Cc), *gdbt = gpu_dup(G, dbt, Cc);

    C->be->bn_forward_train(C, y, mean, rstd, x, g, b, rm, rv, &d);
    G->be->bn_forward_train(G, gy, gmean, grstd, gx, gg, gb, grm, grv, &d);
    const double ts = 1e-4 * sqrt((double)N * HW);   /* sums over N*HW values */
    assert_int_equal(gpu_cmp(G, "bn train out", y, gy, n, 1e-4, 1e-4), 0);
    assert_int_equal(gpu_cmp(G, "bn mean", mean, gmean, Cc, 1e-5, 1e-5), 0);
    assert_int_equal(gpu_cmp(G, "bn rstd", rstd, grstd, Cc, 1e-5, 1e-5), 0);
    assert_int_equal(gpu_cmp(G, "bn running mean", rm, grm, Cc, 1e-5, 1e-5), 0);
    assert_int_equal(gpu_cmp(G, "bn running var", rv, grv, Cc, 1e-5, 1e-5), 0);

    C->be->bn_backward(C, dx, dg, dbt, dy, relu ? y : NULL, x, mean, rstd, g, &d);
    G->be->bn_backward(G, gdx, gdg, gdbt, gdy, relu ? gy : NULL, gx, gmean, grstd, gg, &d);
    assert_int_equal(gpu_cmp(G, "bn din", dx, gdx, n, 1e-4, 1e-3), 0);
    assert_int_equal(gpu_cmp(G, "bn dgamma", dg, gdg, Cc, ts, 1e-4), 0);
    assert_int_equal(gpu_cmp(G, "bn dbeta", dbt, gdbt, Cc, ts, 1e-4), 0);

    C->be->bn_forward_eval(C, y, x, g, b, rm, rv, &d);
    G->be->bn_forward_eval(G, gy, gx, gg, gb, grm, grv, &d);
    assert_int_equal(gpu_cmp(G, "bn eval", y, gy, n, 1e-4, 1e-4), 0);

    /* folding into scale/shift and applying it (materialised outputs) */
    float *sc = gpu_halloc(sizeof(float) * Cc), *sh = gpu_halloc(sizeof(float) * Cc);
    float *gsc = gpu_dup(G, NULL, Cc), *gsh = gpu_dup(G, NULL, Cc);
    for (int fb = 0; fb < 2; fb++) {
        C->be->bn_fold(C, sc, sh, g, b, fb ? mean : rm, fb ? rstd : rv, 1e-5, Cc, fb);
        G->be->bn_fold(G, gsc, gsh, gg, gb, fb ? gmean : grm, fb ? grstd : grv, 1e-5, Cc, fb);
        assert_int_equal(gpu_cmp(G, "bn_fold scale", sc, gsc, Cc, 1e-5, 1e-5), 0);
        assert_int_equal(gpu_cmp(G, "bn_fold shift", sh, gsh, Cc, 1e-5, 1e-5), 0);
        C->be->channel_affine(C, y, x, sc, sh, N, Cc, HW);
        G->be->channel_affine(G, gy, gx, gsc, gsh, N, Cc, HW);
        assert_int_equal(gpu_cmp(G, "channel_affine", y, gy, n, 1e-4, 1e-4), 0);
    }
    void *gs[] = {gx, gg, gb, grm, grv, gdy, gy, gdx, gmean, grstd, gdg, gdbt, gsc, gsh};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    float *hs[] = {x, g, b, dy, rm, rv, y, dx, mean, rstd, dg, dbt, sc, sh};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void test_bn(void **st) { (void)st; bn_case(0, 6, 5, 37); }
static void test_bn_relu(void **st) { (void)st; bn_case(1, 6, 5, 37); }
static void test_bn_sliced(void **st) { (void)st; bn_case(0, 16, 3, 1024); }
static void test_bn_sliced_relu(void **st) { (void)st; bn_case(1, 9, 4, 4096); }

static void test_elementwise(void **st)
{
    (void)st;
    const size_t n = 10007;
    float *x = rnd(n, 1.0f), *dy = rnd(n, 1.0f), *mask = gpu_halloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) mask[i] = gpp_rng_uniform(&R) >= 0.3f ? 1.0f / 0.7f : 0.0f;
    float *y = gpu_halloc(sizeof(float) * n), *dx = gpu_halloc(sizeof(float) * n);
    float *gx = gpu_dup(G, x, n), *gdy = gpu_dup(G, dy, n), *gm = gpu_dup(G, mask, n);
    float *gy = gpu_dup(G, NULL, n), *gdx = gpu_dup(G, NULL, n);
    C->be->relu_forward(C, y, x, n);
    G->be->relu_forward(G, gy, gx, n);
    assert_int_equal(gpu_cmp(G, "relu fwd", y, gy, n, 0, 0), 0);
    C->be->relu_backward(C, dx, dy, y, n);
    G->be->relu_backward(G, gdx, gdy, gy, n);
    assert_int_equal(gpu_cmp(G, "relu bwd", dx, gdx, n, 0, 0), 0);
    C->be->dropout_forward(C, y, x, mask, n);
    G->be->dropout_forward(G, gy, gx, gm, n);
    assert_int_equal(gpu_cmp(G, "dropout fwd", y, gy, n, 0, 0), 0);
    C->be->dropout_backward(C, dx, dy, mask, n);
    G->be->dropout_backward(G, gdx, gdy, gm, n);
    assert_int_equal(gpu_cmp(G, "dropout bwd", dx, gdx, n, 0, 0), 0);
    C->be->add(C, dx, x, n);
    G->be->add(G, gdx, gx, n);
    assert_int_equal(gpu_cmp(G, "add", dx, gdx, n, 0, 0), 0);
    C->be->copy(C, dx, dy, n);
    G->be->copy(G, gdx, gdy, n);
    assert_int_equal(gpu_cmp(G, "copy", dx, gdx, n, 0, 0), 0);
    C->be->zero(C, dx, n);
    G->be->zero(G, gdx, n);
    assert_int_equal(gpu_cmp(G, "zero", dx, gdx, n, 0, 0), 0);
    void *gs[] = {gx, gdy, gm, gy, gdx};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(x); free(dy); free(mask); free(y); free(dx);
}

static void pool_case(int maxp, int N, int Cc, int H, int W, int K, int s, int p)
{
    nn_pool_dims d = {.N = N, .C = Cc, .H = H, .W = W, .K = K, .stride = s, .pad = p};
    assert_int_equal(nn_pool_dims_init(&d), 0);
    size_t ni = (size_t)N * Cc * H * W, no = (size_t)N * Cc * d.OH * d.OW;
    float *x = rnd(ni, 1.0f), *dy = rnd(no, 1.0f);
    float *y = gpu_halloc(sizeof(float) * no), *dx = gpu_halloc(sizeof(float) * ni);
    int32_t *sw = gpu_halloc(sizeof(int32_t) * no);
    float *gx = gpu_dup(G, x, ni), *gdy = gpu_dup(G, dy, no);
    float *gy = gpu_dup(G, NULL, no), *gdx = gpu_dup(G, NULL, ni);
    int32_t *gsw = gpu_dup_i32(G, NULL, no);
    char what[64];
    if (maxp) {
        C->be->maxpool_forward(C, y, sw, x, &d);
        G->be->maxpool_forward(G, gy, gsw, gx, &d);
        snprintf(what, sizeof what, "maxpool k%d s%d p%d", K, s, p);
        assert_int_equal(gpu_cmp(G, what, y, gy, no, 0, 0), 0);
        assert_int_equal(gpu_cmp_i32(G, "maxpool switches", sw, gsw, no), 0);
        C->be->maxpool_backward(C, dx, dy, sw, &d);
        G->be->maxpool_backward(G, gdx, gdy, gsw, &d);
        assert_int_equal(gpu_cmp(G, "maxpool bwd", dx, gdx, ni, 1e-6, 1e-6), 0);
    } else {
        C->be->avgpool_forward(C, y, x, &d);
        G->be->avgpool_forward(G, gy, gx, &d);
        snprintf(what, sizeof what, "avgpool k%d s%d p%d", K, s, p);
        assert_int_equal(gpu_cmp(G, what, y, gy, no, 1e-6, 1e-5), 0);
        C->be->avgpool_backward(C, dx, dy, &d);
        G->be->avgpool_backward(G, gdx, gdy, &d);
        assert_int_equal(gpu_cmp(G, "avgpool bwd", dx, gdx, ni, 1e-6, 1e-5), 0);
    }
    void *gs[] = {gx, gdy, gy, gdx, gsw};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(x); free(dy); free(y); free(dx); free(sw);
}

static void test_maxpool(void **st)
{
    (void)st;
    pool_case(1, 3, 4, 10, 8, 2, 2, 0);
    pool_case(1, 2, 3, 11, 11, 3, 2, 1);
    pool_case(1, 2, 3, 9, 9, 3, 1, 1);
}

static void test_avgpool(void **st)
{
    (void)st;
    pool_case(0, 3, 4, 10, 8, 2, 2, 0);
    pool_case(0, 2, 3, 11, 11, 3, 2, 1);
    pool_case(0, 2, 3, 9, 9, 3, 1, 1);
}

static void test_gap_concat(void **st)
{
    (void)st;
    const int N = 4, Cc = 6, HW = 49, C2 = 3;
    size_t ni = (size_t)N * Cc * HW, no = (size_t)N * Cc;
    float *x = rnd(ni, 1.0f), *dy = rnd(no, 1.0f);
    float *y = gpu_halloc(sizeof(float) * no), *dx = gpu_halloc(sizeof(float) * ni);
    float *gx = gpu_dup(G, x, ni), *gdy = gpu_dup(G, dy, no);
    float *gy = gpu_dup(G, NULL, no), *gdx = gpu_dup(G, NULL, ni);
    C->be->gap_forward(C, y, x, N, Cc, HW);
    G->be->gap_forward(G, gy, gx, N, Cc, HW);
    assert_int_equal(gpu_cmp(G, "gap fwd", y, gy, no, 1e-6, 1e-5), 0);
    C->be->gap_backward(C, dx, dy, N, Cc, HW);
    G->be->gap_backward(G, gdx, gdy, N, Cc, HW);
    assert_int_equal(gpu_cmp(G, "gap bwd", dx, gdx, ni, 1e-7, 1e-6), 0);

    /* concat of x [N, Cc, HW] and x2 [N, C2, HW] into [N, Cc + C2, HW] */
    size_t n2 = (size_t)N * C2 * HW, nt = ni + n2;
    float *x2 = rnd(n2, 1.0f), *cat = gpu_halloc(sizeof(float) * nt), *dcat = rnd(nt, 1.0f);
    float *d2 = rnd(n2, 1.0f);
    float *gx2 = gpu_dup(G, x2, n2), *gcat = gpu_dup(G, NULL, nt), *gdcat = gpu_dup(G, dcat, nt);
    float *gd2 = gpu_dup(G, d2, n2);
    C->be->concat_forward_one(C, cat, x, N, Cc, 0, Cc + C2, HW);
    C->be->concat_forward_one(C, cat, x2, N, C2, Cc, Cc + C2, HW);
    G->be->concat_forward_one(G, gcat, gx, N, Cc, 0, Cc + C2, HW);
    G->be->concat_forward_one(G, gcat, gx2, N, C2, Cc, Cc + C2, HW);
    assert_int_equal(gpu_cmp(G, "concat fwd", cat, gcat, nt, 0, 0), 0);
    C->be->concat_backward_one(C, dx, dcat, N, Cc, 0, Cc + C2, HW, 0);
    C->be->concat_backward_one(C, d2, dcat, N, C2, Cc, Cc + C2, HW, 1);
    G->be->concat_backward_one(G, gdx, gdcat, N, Cc, 0, Cc + C2, HW, 0);
    G->be->concat_backward_one(G, gd2, gdcat, N, C2, Cc, Cc + C2, HW, 1);
    assert_int_equal(gpu_cmp(G, "concat bwd", dx, gdx, ni, 0, 0), 0);
    assert_int_equal(gpu_cmp(G, "concat bwd accumulate", d2, gd2, n2, 1e-7, 1e-7), 0);
    void *gs[] = {gx, gdy, gy, gdx, gx2, gcat, gdcat, gd2};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(x); free(dy); free(y); free(dx); free(x2); free(cat); free(dcat); free(d2);
}

static void test_softmax_ce(void **st)
{
    (void)st;
    const int N = 37, K = 10;
    size_t n = (size_t)N * K;
    float *z = rnd(n, 4.0f), *pr = gpu_halloc(sizeof(float) * n), *dz = gpu_halloc(sizeof(float) * n);
    int32_t lab[37];
    for (int i = 0; i < N; i++) lab[i] = (int32_t)gpp_rng_below(&R, K);
    float *gz = gpu_dup(G, z, n), *gpr = gpu_dup(G, NULL, n), *gdz = gpu_dup(G, NULL, n);
    float *gl = gpu_dup(G, NULL, 1);
    int32_t *glab = gpu_dup_i32(G, lab, N);
    float loss = -1.0f;
    C->be->softmax_ce_forward(C, pr, &loss, z, lab, N, K);
    G->be->softmax_ce_forward(G, gpr, gl, gz, glab, N, K);
    assert_true(loss > 0.0f);
    assert_int_equal(gpu_cmp(G, "softmax probs", pr, gpr, n, 1e-6, 1e-4), 0);
    assert_int_equal(gpu_cmp(G, "softmax loss", &loss, gl, 1, 1e-5, 1e-4), 0);
    C->be->softmax_ce_backward(C, dz, pr, lab, N, K, 1.0f);
    G->be->softmax_ce_backward(G, gdz, gpr, glab, N, K, 1.0f);
    assert_int_equal(gpu_cmp(G, "softmax bwd", dz, gdz, n, 1e-6, 1e-4), 0);
    G->be->softmax_ce_forward(G, gpr, gl, gz, NULL, N, K);   /* no labels: loss 0 */
    float zero = 0.0f;
    assert_int_equal(gpu_cmp(G, "softmax loss without labels", &zero, gl, 1, 0, 0), 0);
    void *gs[] = {gz, gpr, gdz, gl, glab};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) G->be->free(G, gs[i]);
    free(z); free(pr); free(dz);
}

static void test_sgd(void **st)
{
    (void)st;
    const size_t n = 5003;
    const nn_sgd opts[] = {
        {.lr = 0.1f},
        {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f},
        {.lr = 0.05f, .momentum = 0.9f, .dampening = 0.1f, .weight_decay = 1e-3f, .nesterov = 1},
    };
    for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
        float *p = rnd(n, 1.0f), *g = rnd(n, 1.0f), *m = rnd(n, 1.0f);
        float *gp = gpu_dup(G, p, n), *gg = gpu_dup(G, g, n), *gm = gpu_dup(G, m, n);
        for (int step = 0; step < 3; step++) {
            C->be->sgd_step(C, p, g, m, n, &opts[o], step == 0);
            G->be->sgd_step(G, gp, gg, gm, n, &opts[o], step == 0);
        }
        assert_int_equal(gpu_cmp(G, "sgd params", p, gp, n, 1e-5, 1e-5), 0);
        if (opts[o].momentum != 0.0f)
            assert_int_equal(gpu_cmp(G, "sgd momentum", m, gm, n, 1e-5, 1e-5), 0);
        G->be->free(G, gp); G->be->free(G, gg); G->be->free(G, gm);
        free(p); free(g); free(m);
    }
    assert_int_equal(nn_ctx_synchronize(G, NULL), 0);
}

int main(void)
{
    G = gpu_ctx_or_skip("cuda_layers");
    gpp_error e = {0};
    C = nn_ctx_new("cpu", 1, &e);
    if (!C) return 1;
    gpp_rng_seed(&R, 20261127);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_3x3_pad1),   cmocka_unit_test(test_conv_3x3_stride2),
        cmocka_unit_test(test_conv_1x1),        cmocka_unit_test(test_conv_1x1_stride2),
        cmocka_unit_test(test_conv_5x5),        cmocka_unit_test(test_conv_7x7_s2_p3),
        cmocka_unit_test(test_conv_wino),       cmocka_unit_test(test_conv_big_batch),
        cmocka_unit_test(test_conv_pool_epilogue), cmocka_unit_test(test_fc),
        cmocka_unit_test(test_bn),              cmocka_unit_test(test_bn_relu),
        cmocka_unit_test(test_bn_sliced),       cmocka_unit_test(test_bn_sliced_relu),
        cmocka_unit_test(test_elementwise),     cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_avgpool),         cmocka_unit_test(test_gap_concat),
        cmocka_unit_test(test_softmax_ce),      cmocka_unit_test(test_sgd),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nn_ctx_free(G);
    nn_ctx_free(C);
    return rc;
}
