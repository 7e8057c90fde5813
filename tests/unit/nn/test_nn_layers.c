/* Engine kernels: every fast path against its naive loop on odd shapes,
 * every layer's backward against central finite differences, and the
 * threaded CPU backend against the single-threaded kernels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "nn_check.h"

/* ---- GEMM -------------------------------------------------------------------- */

static void test_gemm_vs_naive(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 3, 129}, {50, 64, 500}};
    gpp_rng r;
    gpp_rng_seed(&r, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bi = 0; bi < 2; bi++) {
                    int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
                    int lda = ac + 3, ldb = bc + 1, ldc = N + 2;
                    float *A = nn_test_alloc((size_t)ar * lda), *B = nn_test_alloc((size_t)br * ldb);
                    float *C1 = nn_test_alloc((size_t)M * ldc), *C2 = nn_test_alloc((size_t)M * ldc);
                    nn_test_fill(&r, A, (size_t)ar * lda, 1.0f);
                    nn_test_fill(&r, B, (size_t)br * ldb, 1.0f);
                    nn_test_fill(&r, C1, (size_t)M * ldc, 1.0f);
                    memcpy(C2, C1, sizeof(float) * (size_t)M * ldc);
                    float beta = bi ? 1.3f : 0.0f;
                    nn_gemm(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, beta, C1, ldc);
                    nn_gemm_naive(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, beta, C2, ldc);
                    double e = nn_test_err(C1, C2, (size_t)M * ldc, 1e-5, 1e-5, NULL);
                    if (e > 1.0)
                        fprintf(stderr, "gemm %c%c %dx%dx%d beta %g: err %g\n", ta ? 'T' : 'N',
                                tb ? 'T' : 'N', M, N, K, beta, e);
                    assert_true(e <= 1.0);
                    free(A);
                    free(B);
                    free(C1);
                    free(C2);
                }
}

/* ---- conv -------------------------------------------------------------------- */

typedef struct conv_cfg {
    int N, C, H, W, OC, K, stride, pad;
} conv_cfg;

static const conv_cfg conv_cfgs[] = {
    {2, 3, 7, 6, 4, 3, 1, 1},   /* padded, non-square */
    {2, 3, 7, 6, 4, 3, 2, 1},   /* stride 2 */
    {1, 2, 5, 9, 3, 1, 1, 0},   /* pointwise (no im2col) */
    {2, 2, 8, 5, 3, 1, 2, 0},   /* 1x1 stride 2 */
    {1, 1, 4, 4, 2, 5, 1, 2},   /* window larger than the input */
    {3, 4, 9, 7, 5, 3, 2, 0},
    {2, 5, 6, 6, 7, 2, 2, 1},   /* even window */
    {2, 1, 12, 12, 3, 5, 1, 0}, /* LeNet-like */
    {7, 3, 5, 5, 4, 3, 1, 1},   /* small outputs: 7 images in one GEMM */
    {11, 2, 6, 6, 3, 3, 1, 0},  /* groups of 8 and 3 */
};

static nn_conv_dims dims_of(const conv_cfg *c)
{
    nn_conv_dims d = {.N = c->N, .C = c->C, .H = c->H, .W = c->W, .OC = c->OC, .K = c->K,
                      .stride = c->stride, .pad = c->pad};
    assert_int_equal(nn_conv_dims_init(&d), 0);
    return d;
}

static void test_conv_dims(void **state)
{
    (void)state;
    nn_conv_dims d = {.N = 1, .C = 1, .H = 28, .W = 28, .OC = 20, .K = 5, .stride = 1, .pad = 0};
    assert_int_equal(nn_conv_dims_init(&d), 0);
    assert_int_equal(d.OH, 24);
    assert_int_equal(d.OW, 24);
    d = (nn_conv_dims){.N = 1, .C = 1, .H = 7, .W = 6, .OC = 1, .K = 3, .stride = 2, .pad = 1};
    assert_int_equal(nn_conv_dims_init(&d), 0);
    assert_int_equal(d.OH, 4);
    assert_int_equal(d.OW, 3);
    d = (nn_conv_dims){.N = 1, .C = 1, .H = 2, .W = 2, .OC = 1, .K = 5, .stride = 1, .pad = 1};
    assert_int_equal(nn_conv_dims_init(&d), -1);
}

static void test_conv_fast_vs_naive(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 2);
    for (size_t ci = 0; ci < sizeof conv_cfgs / sizeof conv_cfgs[0]; ci++)
        for (int bias = 0; bias < 2; bias++) {
            nn_conv_dims d = dims_of(&conv_cfgs[ci]);
            size_t nin = (size_t)d.N * d.C * d.H * d.W, nout = (size_t)d.N * d.OC * d.OH * d.OW;
            size_t nw = (size_t)d.OC * d.C * d.K * d.K, ncol = nn_conv_col_size(&d);
            float *x = nn_test_alloc(nin), *w = nn_test_alloc(nw), *b = nn_test_alloc(d.OC);
            float *y1 = nn_test_alloc(nout), *y2 = nn_test_alloc(nout), *dy = nn_test_alloc(nout);
            float *col = nn_test_alloc(ncol), *dcol = nn_test_alloc(ncol);
            float *dx1 = nn_test_alloc(nin), *dx2 = nn_test_alloc(nin);
            float *dw1 = nn_test_alloc(nw), *dw2 = nn_test_alloc(nw);
            float *db1 = nn_test_alloc(d.OC), *db2 = nn_test_alloc(d.OC);
            nn_test_fill(&r, x, nin, 1.0f);
            nn_test_fill(&r, w, nw, 1.0f);
            nn_test_fill(&r, b, d.OC, 1.0f);
            nn_test_fill(&r, dy, nout, 1.0f);
            nn_test_fill(&r, dw1, nw, 1.0f);   /* gradients accumulate onto this */
            memcpy(dw2, dw1, sizeof(float) * nw);
            nn_test_fill(&r, db1, d.OC, 1.0f);
            memcpy(db2, db1, sizeof(float) * d.OC);
            nn_test_fill(&r, dx1, nin, 5.0f);  /* input gradients overwrite this */
            nn_conv2d_forward(y1, col, x, w, bias ? b : NULL, NULL, &d);
            nn_conv2d_forward_naive(y2, x, w, bias ? b : NULL, &d);
            assert_true(nn_test_err(y1, y2, nout, 1e-5, 1e-5, NULL) <= 1.0);
            nn_conv2d_backward(dx1, dw1, bias ? db1 : NULL, col, dcol, dy, x, w, &d);
            nn_conv2d_backward_naive(dx2, dw2, bias ? db2 : NULL, dy, x, w, &d);
            assert_true(nn_test_err(dx1, dx2, nin, 1e-5, 1e-5, NULL) <= 1.0);
            assert_true(nn_test_err(dw1, dw2, nw, 1e-5, 1e-5, NULL) <= 1.0);
            assert_true(nn_test_err(db1, db2, d.OC, 1e-5, 1e-5, NULL) <= 1.0);
            free(x); free(w); free(b); free(y1); free(y2); free(dy); free(col); free(dcol);
            free(dx1); free(dx2); free(dw1); free(dw2); free(db1); free(db2);
        }
}

typedef struct conv_fd {
    nn_conv_dims d;
    float *x, *w, *b, *y, *R, *col;
} conv_fd;

static double conv_loss(void *p)
{
    conv_fd *c = p;
    nn_conv2d_forward(c->y, c->col, c->x, c->w, c->b, NULL, &c->d);
    return nn_test_dot(c->y, c->R, (size_t)c->d.N * c->d.OC * c->d.OH * c->d.OW);
}

static void test_conv_finite_differences(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 3);
    for (size_t ci = 0; ci < sizeof conv_cfgs / sizeof conv_cfgs[0]; ci++) {
        conv_fd c = {.d = dims_of(&conv_cfgs[ci])};
        nn_conv_dims *d = &c.d;
        size_t nin = (size_t)d->N * d->C * d->H * d->W, nout = (size_t)d->N * d->OC * d->OH * d->OW;
        size_t nw = (size_t)d->OC * d->C * d->K * d->K;
        c.x = nn_test_alloc(nin);
        c.w = nn_test_alloc(nw);
        c.b = nn_test_alloc(d->OC);
        c.y = nn_test_alloc(nout);
        c.R = nn_test_alloc(nout);
        c.col = nn_test_alloc(nn_conv_col_size(d));
        float *dcol = nn_test_alloc(nn_conv_col_size(d));
        float *dx = nn_test_alloc(nin), *dw = nn_test_alloc(nw), *db = nn_test_alloc(d->OC);
        nn_test_fill(&r, c.x, nin, 1.0f);
        nn_test_fill(&r, c.w, nw, 1.0f);
        nn_test_fill(&r, c.b, d->OC, 1.0f);
        nn_test_fill(&r, c.R, nout, 1.0f);
        nn_conv2d_backward(dx, dw, db, c.col, dcol, c.R, c.x, c.w, d);
        assert_true(nn_test_fd("conv dx", c.x, nin, dx, conv_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
        assert_true(nn_test_fd("conv dw", c.w, nw, dw, conv_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
        assert_true(nn_test_fd("conv db", c.b, d->OC, db, conv_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
        free(c.x); free(c.w); free(c.b); free(c.y); free(c.R); free(c.col); free(dcol);
        free(dx); free(dw); free(db);
    }
}

/* ---- Winograd ------------------------------------------------------------------------ */

static const conv_cfg wino_cfgs[] = {
    {2, 8, 7, 9, 8, 3, 1, 1},    /* partial tiles on both edges */
    {3, 9, 12, 10, 11, 3, 1, 0}, /* no padding, odd channel counts */
    {1, 16, 6, 6, 8, 3, 1, 2},   /* pad 2 (the input gradient's pad 0) */
    {1, 8, 5, 40, 9, 3, 1, 1},   /* 10 tiles per row: 8 + 2 */
    {2, 32, 14, 14, 64, 3, 1, 1},
    {5, 16, 7, 7, 24, 3, 1, 1},  /* 7x7: five images side by side in a super-row */
    {1, 64, 44, 50, 16, 3, 1, 1},/* an image larger than a chunk: row chunks */
};

static void test_winograd_vs_naive(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 21);
    for (size_t ci = 0; ci < sizeof wino_cfgs / sizeof wino_cfgs[0]; ci++) {
        nn_conv_dims d = dims_of(&wino_cfgs[ci]);
        assert_true(nn_wino_eligible(&d));
        size_t nin = (size_t)d.N * d.C * d.H * d.W, nout = (size_t)d.N * d.OC * d.OH * d.OW;
        size_t nw = (size_t)d.OC * d.C * 9, nu = nn_wino_u_size(&d);
        float *x = nn_test_alloc(nin), *w = nn_test_alloc(nw), *b = nn_test_alloc(d.OC);
        float *y1 = nn_test_alloc(nout), *y2 = nn_test_alloc(nout), *dy = nn_test_alloc(nout);
        float *dx1 = nn_test_alloc(nin), *dx2 = nn_test_alloc(nin);
        float *dw1 = nn_test_alloc(nw), *dw2 = nn_test_alloc(nw), *db = nn_test_alloc(d.OC);
        float *U = nn_test_alloc(nu), *Ut = nn_test_alloc(nu), *dU = nn_test_alloc(nu);
        float *sc = nn_test_alloc(nn_wino_scratch_size(&d));
        nn_test_fill(&r, x, nin, 1.0f);
        nn_test_fill(&r, w, nw, 1.0f);
        nn_test_fill(&r, b, d.OC, 1.0f);
        nn_test_fill(&r, dy, nout, 1.0f);
        nn_test_fill(&r, dw1, nw, 1.0f);
        memcpy(dw2, dw1, sizeof(float) * nw);
        nn_wino_filter(U, w, &d, 0, d.OC / 2);        /* in two ranges, like the threads */
        nn_wino_filter(U, w, &d, d.OC / 2, d.OC);
        nn_conv2d_forward_wino(y1, sc, x, U, b, NULL, &d);
        nn_conv2d_forward_naive(y2, x, w, b, &d);
        double scale = sqrt(9.0 * d.C);
        assert_true(nn_test_err(y1, y2, nout, 2e-5 * scale, 1e-4, NULL) <= 1.0);
        nn_wino_filter_t(Ut, w, &d, 0, d.OC);
        nn_conv2d_backward_wino(dx1, dU, sc, dy, x, Ut, &d);
        nn_wino_filter_grad(dw1, dU, &d, 0, 3);
        nn_wino_filter_grad(dw1, dU, &d, 3, d.OC);
        nn_conv2d_backward_naive(dx2, dw2, NULL, dy, x, w, &d);
        size_t wi = 0;
        double e = nn_test_err(dx1, dx2, nin, 2e-5 * sqrt(9.0 * d.OC), 1e-4, &wi);
        if (e > 1.0) fprintf(stderr, "wino dx cfg %zu [%zu]: %g vs %g\n", ci, wi, dx1[wi], dx2[wi]);
        assert_true(e <= 1.0);
        double ws = sqrt((double)d.N * d.OH * d.OW);
        e = nn_test_err(dw1, dw2, nw, 2e-5 * ws, 1e-4, &wi);
        if (e > 1.0) fprintf(stderr, "wino dw cfg %zu [%zu]: %g vs %g\n", ci, wi, dw1[wi], dw2[wi]);
        assert_true(e <= 1.0);
        free(x); free(w); free(b); free(y1); free(y2); free(dy); free(dx1); free(dx2);
        free(dw1); free(dw2); free(db); free(U); free(Ut); free(dU); free(sc);
    }
    /* not served: stride 2, 5x5, too few channels */
    nn_conv_dims d = dims_of(&conv_cfgs[1]);
    assert_false(nn_wino_eligible(&d));
    d = dims_of(&conv_cfgs[7]);
    assert_false(nn_wino_eligible(&d));
}

/* ---- fusions ------------------------------------------------------------------------ */

/* conv + epilogue (im2col and Winograd) = naive conv, then scale/shift/relu. */
static void test_conv_epilogue(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 31);
    const conv_cfg cfgs[2] = {conv_cfgs[0], wino_cfgs[0]};
    for (int k = 0; k < 2; k++) {
        nn_conv_dims d = dims_of(&cfgs[k]);
        size_t nin = (size_t)d.N * d.C * d.H * d.W, nout = (size_t)d.N * d.OC * d.OH * d.OW;
        size_t nw = (size_t)d.OC * d.C * d.K * d.K, P = (size_t)d.OH * d.OW;
        float *x = nn_test_alloc(nin), *w = nn_test_alloc(nw), *b = nn_test_alloc(d.OC);
        float *sc = nn_test_alloc(d.OC), *sh = nn_test_alloc(d.OC);
        float *y1 = nn_test_alloc(nout), *y2 = nn_test_alloc(nout);
        size_t ns = nn_conv_col_size(&d) + nn_wino_scratch_size(&d);
        float *scr = nn_test_alloc(ns), *U = nn_test_alloc(nn_wino_u_size(&d));
        nn_test_fill(&r, x, nin, 1.0f);
        nn_test_fill(&r, w, nw, 1.0f);
        nn_test_fill(&r, b, d.OC, 1.0f);
        nn_test_fill(&r, sc, d.OC, 2.0f);
        nn_test_fill(&r, sh, d.OC, 1.0f);
        nn_epilogue ep = {.scale = sc, .shift = sh, .relu = 1};
        if (k == 0) {
            nn_conv2d_forward(y1, scr, x, w, b, &ep, &d);
        } else {
            nn_wino_filter(U, w, &d, 0, d.OC);
            nn_conv2d_forward_wino(y1, scr, x, U, b, &ep, &d);
        }
        nn_conv2d_forward_naive(y2, x, w, b, &d);
        int zeros = 0;
        for (size_t i = 0; i < nout; i++) {
            int c = (int)(i / P) % d.OC;
            float v = y2[i] * sc[c] + sh[c];
            y2[i] = v > 0.0f ? v : 0.0f;
            zeros += y2[i] == 0.0f;
        }
        assert_true(zeros > 0 && zeros < (int)nout);
        assert_true(nn_test_err(y1, y2, nout, 2e-4, 1e-4, NULL) <= 1.0);
        free(x); free(w); free(b); free(sc); free(sh); free(y1); free(y2); free(scr); free(U);
    }
}

/* bn with its relu fused = bn then relu, forward and backward. */
static void test_bn_relu_fused(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 32);
    nn_bn_dims d = {.N = 3, .C = 4, .HW = 6, .c0 = 0, .c1 = 4, .eps = 1e-5f, .momentum = 0.1f};
    size_t n = 72;
    float *x = nn_test_alloc(n), *g = nn_test_alloc(4), *be = nn_test_alloc(4);
    float *y = nn_test_alloc(n), *yr = nn_test_alloc(n), *yf = nn_test_alloc(n);
    float *m = nn_test_alloc(8), *dy = nn_test_alloc(n), *dmid = nn_test_alloc(n);
    float *dx1 = nn_test_alloc(n), *dx2 = nn_test_alloc(n);
    float *dg1 = nn_test_alloc(4), *dg2 = nn_test_alloc(4), *db1 = nn_test_alloc(4), *db2 = nn_test_alloc(4);
    nn_test_fill(&r, x, n, 1.0f);
    nn_test_fill(&r, g, 4, 1.0f);
    nn_test_fill(&r, be, 4, 1.0f);
    nn_test_fill(&r, dy, n, 1.0f);
    nn_batchnorm_forward_train(y, m, m + 4, x, g, be, NULL, NULL, &d);
    nn_relu_forward(yr, y, n);
    nn_relu_backward(dmid, dy, yr, n);
    nn_batchnorm_backward(dx1, dg1, db1, dmid, NULL, x, m, m + 4, g, &d);
    d.relu = 1;
    nn_batchnorm_forward_train(yf, m, m + 4, x, g, be, NULL, NULL, &d);
    assert_memory_equal(yf, yr, sizeof(float) * n);
    nn_batchnorm_backward(dx2, dg2, db2, dy, yf, x, m, m + 4, g, &d);
    assert_true(nn_test_err(dx1, dx2, n, 1e-6, 1e-5, NULL) <= 1.0);
    assert_true(nn_test_err(dg1, dg2, 4, 1e-6, 1e-5, NULL) <= 1.0);
    assert_true(nn_test_err(db1, db2, 4, 1e-6, 1e-5, NULL) <= 1.0);
    float rm[4] = {0.1f, -0.2f, 0.3f, 0.0f}, rv[4] = {1.0f, 0.5f, 2.0f, 1.5f};
    nn_batchnorm_forward_eval(yf, x, g, be, rm, rv, &d);
    d.relu = 0;
    nn_batchnorm_forward_eval(y, x, g, be, rm, rv, &d);
    nn_relu_forward(yr, y, n);
    assert_memory_equal(yf, yr, sizeof(float) * n);
    free(x); free(g); free(be); free(y); free(yr); free(yf); free(m); free(dy); free(dmid);
    free(dx1); free(dx2); free(dg1); free(dg2); free(db1); free(db2);
}

/* ---- fully connected -------------------------------------------------------------- */

typedef struct fc_fd {
    int N, IN, OUT;
    float *x, *w, *b, *y, *R;
} fc_fd;

static double fc_loss(void *p)
{
    fc_fd *c = p;
    nn_fc_forward(c->y, c->x, c->w, c->b, c->N, c->IN, c->OUT);
    return nn_test_dot(c->y, c->R, (size_t)c->N * c->OUT);
}

static void test_fc(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 4);
    fc_fd c = {.N = 3, .IN = 7, .OUT = 5};
    size_t nx = 21, nw = 35, ny = 15;
    c.x = nn_test_alloc(nx);
    c.w = nn_test_alloc(nw);
    c.b = nn_test_alloc(5);
    c.y = nn_test_alloc(ny);
    c.R = nn_test_alloc(ny);
    float *y2 = nn_test_alloc(ny), *dx = nn_test_alloc(nx), *dw = nn_test_alloc(nw),
          *db = nn_test_alloc(5);
    nn_test_fill(&r, c.x, nx, 1.0f);
    nn_test_fill(&r, c.w, nw, 1.0f);
    nn_test_fill(&r, c.b, 5, 1.0f);
    nn_test_fill(&r, c.R, ny, 1.0f);
    nn_fc_forward(c.y, c.x, c.w, c.b, 3, 7, 5);
    nn_fc_forward_naive(y2, c.x, c.w, c.b, 3, 7, 5);
    assert_true(nn_test_err(c.y, y2, ny, 1e-6, 1e-5, NULL) <= 1.0);
    nn_fc_backward(dx, dw, db, c.R, c.x, c.w, 3, 7, 5);
    assert_true(nn_test_fd("fc dx", c.x, nx, dx, fc_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
    assert_true(nn_test_fd("fc dw", c.w, nw, dw, fc_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
    assert_true(nn_test_fd("fc db", c.b, 5, db, fc_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.R); free(y2); free(dx); free(dw); free(db);
}

/* ---- batch norm ---------------------------------------------------------------------- */

typedef struct bn_fd {
    nn_bn_dims d;
    float *x, *g, *b, *y, *R, *mean, *rstd, *rm, *rv;
} bn_fd;

static double bn_loss(void *p)
{
    bn_fd *c = p;
    nn_batchnorm_forward_train(c->y, c->mean, c->rstd, c->x, c->g, c->b, NULL, NULL, &c->d);
    return nn_test_dot(c->y, c->R, (size_t)c->d.N * c->d.C * c->d.HW);
}

static void test_batchnorm(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 5);
    bn_fd c = {.d = {.N = 3, .C = 4, .HW = 5, .c0 = 0, .c1 = 4, .eps = 1e-5f, .momentum = 0.1f}};
    size_t n = 60;
    c.x = nn_test_alloc(n);
    c.y = nn_test_alloc(n);
    c.R = nn_test_alloc(n);
    c.g = nn_test_alloc(4);
    c.b = nn_test_alloc(4);
    c.mean = nn_test_alloc(4);
    c.rstd = nn_test_alloc(4);
    c.rm = nn_test_alloc(4);
    c.rv = nn_test_alloc(4);
    float *dx = nn_test_alloc(n), *dg = nn_test_alloc(4), *db = nn_test_alloc(4);
    nn_test_fill(&r, c.x, n, 2.0f);
    for (size_t i = 0; i < n; i++) c.x[i] += 0.5f;   /* a non-zero mean */
    nn_test_fill(&r, c.g, 4, 1.0f);
    nn_test_fill(&r, c.b, 4, 1.0f);
    nn_test_fill(&r, c.R, n, 1.0f);
    for (int i = 0; i < 4; i++) c.rv[i] = 1.0f;
    /* running statistics: (1-m)*old + m*batch, unbiased variance */
    nn_batchnorm_forward_train(c.y, c.mean, c.rstd, c.x, c.g, c.b, c.rm, c.rv, &c.d);
    for (int ch = 0; ch < 4; ch++) {
        double s = 0, ss = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) s += c.x[(i * 4 + ch) * 5 + j];
        double mu = s / 15;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) {
                double v = c.x[(i * 4 + ch) * 5 + j] - mu;
                ss += v * v;
            }
        assert_float_equal(c.mean[ch], mu, 1e-5);
        assert_float_equal(c.rstd[ch], 1.0 / sqrt(ss / 15 + 1e-5), 1e-4);
        assert_float_equal(c.rm[ch], 0.1 * mu, 1e-5);
        assert_float_equal(c.rv[ch], 0.9 + 0.1 * ss / 14, 1e-5);
        /* the normalised output has the mean beta */
        double ys = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) ys += c.y[(i * 4 + ch) * 5 + j];
        assert_float_equal(ys / 15, c.b[ch], 1e-5);
    }
    /* eval uses the running statistics */
    nn_batchnorm_forward_eval(c.y, c.x, c.g, c.b, c.rm, c.rv, &c.d);
    for (size_t i = 0; i < n; i++) {
        int ch = (int)(i / 5) % 4;
        double ref = (c.x[i] - c.rm[ch]) / sqrt(c.rv[ch] + 1e-5) * c.g[ch] + c.b[ch];
        assert_float_equal(c.y[i], ref, 1e-5);
    }
    bn_loss(&c);
    nn_batchnorm_backward(dx, dg, db, c.R, NULL, c.x, c.mean, c.rstd, c.g, &c.d);
    assert_true(nn_test_fd("bn dx", c.x, n, dx, bn_loss, &c, 1e-2f, 2e-3, 2e-3, 0) <= 1.0);
    assert_true(nn_test_fd("bn dgamma", c.g, 4, dg, bn_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
    assert_true(nn_test_fd("bn dbeta", c.b, 4, db, bn_loss, &c, 1e-2f, 1e-3, 1e-3, 0) <= 1.0);
    free(c.x); free(c.y); free(c.R); free(c.g); free(c.b); free(c.mean); free(c.rstd);
    free(c.rm); free(c.rv); free(dx); free(dg); free(db);
}

/* ---- relu, pools, dropout, concat, softmax ----------------------------------------------- */

typedef struct ew_fd {
    int kind;                  /* 0 relu, 1 maxpool, 2 avgpool, 3 gap, 4 softmax */
    nn_pool_dims pd;
    size_t nin, nout;
    float *x, *y, *R;
    int32_t *sw, *labels;
} ew_fd;

static double ew_loss(void *p)
{
    ew_fd *c = p;
    switch (c->kind) {
    case 0: nn_relu_forward(c->y, c->x, c->nin); break;
    case 1: nn_maxpool_forward(c->y, c->sw, c->x, &c->pd); break;
    case 2: nn_avgpool_forward(c->y, c->x, &c->pd); break;
    case 3: nn_gap_forward(c->y, c->x, c->pd.N, c->pd.C, c->pd.H * c->pd.W); break;
    case 4: return nn_softmax_ce_forward(c->y, c->x, c->labels, c->pd.N, c->pd.C);
    default: break;
    }
    return nn_test_dot(c->y, c->R, c->nout);
}

static void test_relu(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 6);
    ew_fd c = {.kind = 0, .nin = 50, .nout = 50};
    c.x = nn_test_alloc(50);
    c.y = nn_test_alloc(50);
    c.R = nn_test_alloc(50);
    float *dx = nn_test_alloc(50);
    nn_test_fill_away(&r, c.x, 50, 1.0f, 0.05f);
    nn_test_fill(&r, c.R, 50, 1.0f);
    nn_relu_forward(c.y, c.x, 50);
    for (int i = 0; i < 50; i++) assert_true(c.y[i] == (c.x[i] > 0 ? c.x[i] : 0.0f));
    nn_relu_backward(dx, c.R, c.y, 50);
    assert_true(nn_test_fd("relu", c.x, 50, dx, ew_loss, &c, 1e-2f, 1e-4, 1e-4, 0) <= 1.0);
    free(c.x); free(c.y); free(c.R); free(dx);
}

static void pool_case(int kind, int N, int C, int H, int W, int K, int s, int p, uint64_t seed)
{
    gpp_rng r;
    gpp_rng_seed(&r, seed);
    ew_fd c = {.kind = kind, .pd = {.N = N, .C = C, .H = H, .W = W, .K = K, .stride = s, .pad = p}};
    assert_int_equal(nn_pool_dims_init(&c.pd), 0);
    c.nin = (size_t)N * C * H * W;
    c.nout = kind == 3 ? (size_t)N * C : (size_t)N * C * c.pd.OH * c.pd.OW;
    c.x = nn_test_alloc(c.nin);
    c.y = nn_test_alloc(c.nout);
    c.R = nn_test_alloc(c.nout);
    c.sw = calloc(c.nout, sizeof(int32_t));
    float *dx = nn_test_alloc(c.nin);
    /* distinct values 0.05 apart (max-pool: no ties within a perturbation) */
    for (size_t i = 0; i < c.nin; i++) c.x[i] = 0.05f * ((float)i - (float)(c.nin / 2));
    for (size_t i = c.nin - 1; i > 0; i--) {
        size_t j = gpp_rng_below(&r, (uint32_t)(i + 1));
        float t = c.x[i];
        c.x[i] = c.x[j];
        c.x[j] = t;
    }
    nn_test_fill(&r, c.R, c.nout, 1.0f);
    ew_loss(&c);
    if (kind == 1) nn_maxpool_backward(dx, c.R, c.sw, &c.pd);
    if (kind == 2) nn_avgpool_backward(dx, c.R, &c.pd);
    if (kind == 3) nn_gap_backward(dx, c.R, N, C, H * W);
    assert_true(nn_test_fd("pool", c.x, c.nin, dx, ew_loss, &c, 1e-2f, 1e-4, 1e-3, 0) <= 1.0);
    if (kind == 1) {   /* the switches point at the maxima */
        ew_loss(&c);
        for (size_t o = 0; o < c.nout; o++) {
            size_t plane = o / ((size_t)c.pd.OH * c.pd.OW);
            assert_true(c.sw[o] >= 0 && c.sw[o] < H * W);
            assert_true(c.y[o] == c.x[plane * H * W + (size_t)c.sw[o]]);
        }
    }
    free(c.x); free(c.y); free(c.R); free(c.sw); free(dx);
}

static void test_pools(void **state)
{
    (void)state;
    pool_case(1, 2, 3, 6, 6, 2, 2, 0, 7);    /* the 2x2 fast path */
    pool_case(1, 2, 3, 7, 5, 2, 2, 0, 8);    /* odd sizes */
    pool_case(1, 2, 2, 28, 37, 2, 2, 0, 17); /* 8-wide vector path plus a tail */
    pool_case(1, 1, 2, 5, 6, 3, 1, 1, 9);    /* Inception's 3x3 stride 1 pad 1 */
    pool_case(1, 2, 2, 7, 7, 3, 2, 1, 10);
    pool_case(2, 2, 3, 6, 6, 2, 2, 0, 11);
    pool_case(2, 1, 2, 5, 6, 3, 1, 1, 12);
    pool_case(2, 2, 2, 7, 7, 3, 2, 1, 13);
    pool_case(3, 2, 3, 4, 5, 1, 1, 0, 14);
}

/* The vector 2x2 path = the generic loop, ties included (first maximum). */
static void test_maxpool_fast_path(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 18);
    nn_pool_dims d = {.N = 2, .C = 3, .H = 10, .W = 38, .K = 2, .stride = 2, .pad = 0};
    assert_int_equal(nn_pool_dims_init(&d), 0);
    size_t nin = 2 * 3 * 10 * 38, nout = 2 * 3 * 5 * 19;
    float *x = nn_test_alloc(nin), *y1 = nn_test_alloc(nout), *y2 = nn_test_alloc(nout);
    int32_t *s1 = calloc(nout, sizeof(int32_t)), *s2 = calloc(nout, sizeof(int32_t));
    for (size_t i = 0; i < nin; i++) x[i] = (float)gpp_rng_below(&r, 3);   /* many ties */
    nn_maxpool_forward(y1, s1, x, &d);
    /* reference: the generic loop, reached with a 2x2 window that is not the
     * fast path's (stride 2 written as a 3x3 window would change the result),
     * so compute it here */
    for (int pl = 0; pl < 6; pl++)
        for (int oh = 0; oh < 5; oh++)
            for (int ow = 0; ow < 19; ow++) {
                const float *p = x + (size_t)pl * 380;
                int b = 2 * oh * 38 + 2 * ow, idx[4] = {b, b + 1, b + 38, b + 39}, a = b;
                for (int k = 1; k < 4; k++)
                    if (p[idx[k]] > p[a]) a = idx[k];
                y2[(pl * 5 + oh) * 19 + ow] = p[a];
                s2[(pl * 5 + oh) * 19 + ow] = a;
            }
    assert_memory_equal(y1, y2, sizeof(float) * nout);
    assert_memory_equal(s1, s2, sizeof(int32_t) * nout);
    free(x); free(y1); free(y2); free(s1); free(s2);
}

static void test_avgpool_count_include_pad(void **state)
{
    (void)state;
    /* 3x3 input 1..9, k3 s1 p1: the corner sees 1,2,4,5 over 9 (PyTorch) */
    float x[9], y[9];
    for (int i = 0; i < 9; i++) x[i] = (float)(i + 1);
    nn_pool_dims d = {.N = 1, .C = 1, .H = 3, .W = 3, .K = 3, .stride = 1, .pad = 1};
    assert_int_equal(nn_pool_dims_init(&d), 0);
    nn_avgpool_forward(y, x, &d);
    assert_float_equal(y[0], 12.0 / 9.0, 1e-6);
    assert_float_equal(y[4], 45.0 / 9.0, 1e-6);
    /* max-pool with padding ignores the padding even for negative inputs */
    for (int i = 0; i < 9; i++) x[i] = -(float)(i + 1);
    int32_t sw[9];
    nn_maxpool_forward(y, sw, x, &d);
    assert_float_equal(y[0], -1.0, 0);
    assert_int_equal(sw[8], 4);
    /* pad > k/2 is refused like PyTorch does */
    nn_pool_dims bad = {.N = 1, .C = 1, .H = 3, .W = 3, .K = 2, .stride = 1, .pad = 2};
    assert_int_equal(nn_pool_dims_init(&bad), -1);
}

static void test_softmax_ce(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 15);
    int32_t labels[3] = {2, 0, 4};
    ew_fd c = {.kind = 4, .pd = {.N = 3, .C = 5}, .nin = 15, .nout = 15, .labels = labels};
    c.x = nn_test_alloc(15);
    c.y = nn_test_alloc(15);
    float *dx = nn_test_alloc(15);
    nn_test_fill(&r, c.x, 15, 3.0f);
    float loss = (float)ew_loss(&c);
    double ref = 0;
    for (int n = 0; n < 3; n++) {
        double s = 0;
        for (int k = 0; k < 5; k++) s += exp(c.x[n * 5 + k]);
        ref += log(s) - c.x[n * 5 + labels[n]];
        double ps = 0;
        for (int k = 0; k < 5; k++) ps += c.y[n * 5 + k];
        assert_float_equal(ps, 1.0, 1e-6);
    }
    assert_float_equal(loss, ref / 3, 1e-5);
    nn_softmax_ce_backward(dx, c.y, labels, 3, 5, 1.0f);
    assert_true(nn_test_fd("softmax", c.x, 15, dx, ew_loss, &c, 1e-2f, 1e-4, 2e-3, 0) <= 1.0);
    /* large logits do not overflow */
    float big[2] = {1000.0f, 0.0f}, pb[2];
    int32_t l1 = 1;
    float lb = nn_softmax_ce_forward(pb, big, &l1, 1, 2);
    assert_float_equal(lb, 1000.0, 1e-3);
    free(c.x); free(c.y); free(dx);
}

static void test_concat_dropout(void **state)
{
    (void)state;
    /* two inputs [2, 1, 3] and [2, 2, 3] -> [2, 3, 3] */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[12], y[18], da[6], db[12];
    for (int i = 0; i < 12; i++) b[i] = 10.0f + (float)i;
    nn_concat_forward_one(y, a, 2, 1, 0, 3, 3);
    nn_concat_forward_one(y, b, 2, 2, 1, 3, 3);
    static const float want[18] = {1, 2, 3, 10, 11, 12, 13, 14, 15,
                                   4, 5, 6, 16, 17, 18, 19, 20, 21};
    assert_memory_equal(y, want, sizeof want);
    nn_concat_backward_one(db, y, 2, 2, 1, 3, 3, 0);
    assert_memory_equal(db, b, sizeof b);
    for (int i = 0; i < 6; i++) da[i] = 1.0f;
    nn_concat_backward_one(da, y, 2, 1, 0, 3, 3, 1);   /* accumulate */
    for (int i = 0; i < 6; i++) assert_float_equal(da[i], a[i] + 1.0f, 0);
    /* dropout: out = in * mask, backward the same mask */
    float x[4] = {1, 2, 3, 4}, m[4] = {2, 0, 2, 0}, o[4], g[4];
    nn_dropout_forward(o, x, m, 4);
    nn_dropout_backward(g, x, m, 4);
    static const float wo[4] = {2, 0, 6, 0};
    assert_memory_equal(o, wo, sizeof wo);
    assert_memory_equal(g, wo, sizeof wo);
}

/* ---- the threaded backend against the kernels ---------------------------------------- */

static void test_backend_threads(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 16);
    for (int T = 1; T <= 3; T++) {
        gpp_error err;
        nn_ctx *ctx = nn_ctx_new("cpu", T, &err);
        assert_non_null(ctx);
        for (size_t ci = 0; ci < sizeof conv_cfgs / sizeof conv_cfgs[0] + sizeof wino_cfgs / sizeof wino_cfgs[0]; ci++) {
            const conv_cfg *cc = ci < sizeof conv_cfgs / sizeof conv_cfgs[0]
                ? &conv_cfgs[ci] : &wino_cfgs[ci - sizeof conv_cfgs / sizeof conv_cfgs[0]];
            nn_conv_dims d = dims_of(cc);
            assert_int_equal(nn_ctx_reserve_scratch(ctx, nn_backend_conv_scratch(&d, 1)), 0);
            assert_int_equal(nn_ctx_reserve_shared(ctx, nn_backend_conv_shared(&d)), 0);
            double tol = nn_wino_eligible(&d) ? 2e-5 * sqrt(9.0 * (d.C + d.OC + d.N * d.OH * d.OW)) : 1e-5;
            size_t nin = (size_t)d.N * d.C * d.H * d.W, nout = (size_t)d.N * d.OC * d.OH * d.OW;
            size_t nw = (size_t)d.OC * d.C * d.K * d.K;
            float *x = nn_test_alloc(nin), *w = nn_test_alloc(nw), *b = nn_test_alloc(d.OC);
            float *y1 = nn_test_alloc(nout), *y2 = nn_test_alloc(nout), *dy = nn_test_alloc(nout);
            float *dx1 = nn_test_alloc(nin), *dx2 = nn_test_alloc(nin);
            float *dw1 = nn_test_alloc(nw), *dw2 = nn_test_alloc(nw);
            float *db1 = nn_test_alloc(d.OC), *db2 = nn_test_alloc(d.OC);
            nn_test_fill(&r, x, nin, 1.0f);
            nn_test_fill(&r, w, nw, 1.0f);
            nn_test_fill(&r, b, d.OC, 1.0f);
            nn_test_fill(&r, dy, nout, 1.0f);
            ctx->be->conv_forward(ctx, y1, x, w, b, NULL, &d);
            nn_conv2d_forward_naive(y2, x, w, b, &d);
            assert_true(nn_test_err(y1, y2, nout, tol, 1e-4, NULL) <= 1.0);
            ctx->be->conv_backward(ctx, dx1, dw1, db1, dy, x, w, &d);
            nn_conv2d_backward_naive(dx2, dw2, db2, dy, x, w, &d);
            assert_true(nn_test_err(dx1, dx2, nin, tol, 1e-4, NULL) <= 1.0);
            assert_true(nn_test_err(dw1, dw2, nw, tol, 1e-4, NULL) <= 1.0);
            assert_true(nn_test_err(db1, db2, d.OC, tol, 1e-4, NULL) <= 1.0);
            free(x); free(w); free(b); free(y1); free(y2); free(dy); free(dx1); free(dx2);
            free(dw1); free(dw2); free(db1); free(db2);
        }
        /* fc: rows split (N large) and columns split (N small) */
        for (int N = 1; N <= 40; N += 39) {
            int IN = 13, OUT = 9;
            float *x = nn_test_alloc((size_t)N * IN), *w = nn_test_alloc((size_t)OUT * IN);
            float *b = nn_test_alloc(OUT), *y1 = nn_test_alloc((size_t)N * OUT);
            float *y2 = nn_test_alloc((size_t)N * OUT), *dx1 = nn_test_alloc((size_t)N * IN);
            float *dx2 = nn_test_alloc((size_t)N * IN), *dw1 = nn_test_alloc((size_t)OUT * IN);
            float *dw2 = nn_test_alloc((size_t)OUT * IN), *db1 = nn_test_alloc(OUT);
            float *db2 = nn_test_alloc(OUT);
            nn_test_fill(&r, x, (size_t)N * IN, 1.0f);
            nn_test_fill(&r, w, (size_t)OUT * IN, 1.0f);
            nn_test_fill(&r, b, OUT, 1.0f);
            ctx->be->fc_forward(ctx, y1, x, w, b, N, IN, OUT);
            nn_fc_forward_naive(y2, x, w, b, N, IN, OUT);
            assert_true(nn_test_err(y1, y2, (size_t)N * OUT, 1e-5, 1e-5, NULL) <= 1.0);
            ctx->be->fc_backward(ctx, dx1, dw1, db1, y2, x, w, N, IN, OUT);
            nn_fc_backward(dx2, dw2, db2, y2, x, w, N, IN, OUT);
            assert_true(nn_test_err(dx1, dx2, (size_t)N * IN, 1e-5, 1e-5, NULL) <= 1.0);
            assert_true(nn_test_err(dw1, dw2, (size_t)OUT * IN, 1e-5, 1e-5, NULL) <= 1.0);
            assert_true(nn_test_err(db1, db2, OUT, 1e-5, 1e-5, NULL) <= 1.0);
            free(x); free(w); free(b); free(y1); free(y2); free(dx1); free(dx2); free(dw1);
            free(dw2); free(db1); free(db2);
        }
        /* bn and max-pool, bitwise equal to the kernels (same per-channel order) */
        {
            nn_bn_dims d = {.N = 4, .C = 5, .HW = 9, .c0 = 0, .c1 = 5, .eps = 1e-5f, .momentum = 0.1f};
            size_t n = 180;
            float *x = nn_test_alloc(n), *g = nn_test_alloc(5), *be = nn_test_alloc(5);
            float *y1 = nn_test_alloc(n), *y2 = nn_test_alloc(n), *m1 = nn_test_alloc(10);
            float *m2 = nn_test_alloc(10), *rs1 = nn_test_alloc(10), *rs2 = nn_test_alloc(10);
            float *dx1 = nn_test_alloc(n), *dx2 = nn_test_alloc(n), *dg1 = nn_test_alloc(5);
            float *dg2 = nn_test_alloc(5), *db1 = nn_test_alloc(5), *db2 = nn_test_alloc(5);
            nn_test_fill(&r, x, n, 1.0f);
            nn_test_fill(&r, g, 5, 1.0f);
            nn_test_fill(&r, be, 5, 1.0f);
            ctx->be->bn_forward_train(ctx, y1, m1, m1 + 5, x, g, be, rs1, rs1 + 5, &d);
            nn_batchnorm_forward_train(y2, m2, m2 + 5, x, g, be, rs2, rs2 + 5, &d);
            assert_memory_equal(y1, y2, sizeof(float) * n);
            assert_memory_equal(rs1, rs2, sizeof(float) * 10);
            ctx->be->bn_backward(ctx, dx1, dg1, db1, y1, NULL, x, m1, m1 + 5, g, &d);
            nn_batchnorm_backward(dx2, dg2, db2, y1, NULL, x, m2, m2 + 5, g, &d);
            assert_memory_equal(dx1, dx2, sizeof(float) * n);
            assert_memory_equal(dg1, dg2, sizeof(float) * 5);
            nn_pool_dims pd = {.N = 4, .C = 5, .H = 3, .W = 3, .K = 2, .stride = 1, .pad = 0};
            assert_int_equal(nn_pool_dims_init(&pd), 0);
            int32_t sw1[80], sw2[80];
            ctx->be->maxpool_forward(ctx, y1, sw1, x, &pd);
            nn_maxpool_forward(y2, sw2, x, &pd);
            assert_memory_equal(y1, y2, sizeof(float) * 80);
            assert_memory_equal(sw1, sw2, sizeof sw1);
            ctx->be->maxpool_backward(ctx, dx1, y1, sw1, &pd);
            nn_maxpool_backward(dx2, y2, sw2, &pd);
            assert_memory_equal(dx1, dx2, sizeof(float) * n);
            ctx->be->avgpool_forward(ctx, y1, x, &pd);
            nn_avgpool_forward(y2, x, &pd);
            assert_memory_equal(y1, y2, sizeof(float) * 80);
            ctx->be->gap_forward(ctx, y1, x, 4, 5, 9);
            nn_gap_forward(y2, x, 4, 5, 9);
            assert_memory_equal(y1, y2, sizeof(float) * 20);
            free(x); free(g); free(be); free(y1); free(y2); free(m1); free(m2); free(rs1);
            free(rs2); free(dx1); free(dx2); free(dg1); free(dg2); free(db1); free(db2);
        }
        /* element-wise ops over lengths that do not divide evenly */
        {
            size_t n = 10007;
            float *a = nn_test_alloc(n), *b = nn_test_alloc(n), *c1 = nn_test_alloc(n);
            float *c2 = nn_test_alloc(n);
            nn_test_fill(&r, a, n, 1.0f);
            nn_test_fill(&r, b, n, 1.0f);
            ctx->be->relu_forward(ctx, c1, a, n);
            nn_relu_forward(c2, a, n);
            assert_memory_equal(c1, c2, sizeof(float) * n);
            ctx->be->relu_backward(ctx, c1, b, a, n);
            nn_relu_backward(c2, b, a, n);
            assert_memory_equal(c1, c2, sizeof(float) * n);
            memcpy(c1, a, sizeof(float) * n);
            ctx->be->add(ctx, c1, b, n);
            for (size_t i = 0; i < n; i++) assert_true(c1[i] == a[i] + b[i]);
            ctx->be->zero(ctx, c1, n);
            for (size_t i = 0; i < n; i++) assert_true(c1[i] == 0.0f);
            free(a); free(b); free(c1); free(c2);
        }
        nn_ctx_free(ctx);
    }
}

static void test_ctx_errors(void **state)
{
    (void)state;
    gpp_error err = {0};
    assert_null(nn_ctx_new("tpu", 1, &err));
    assert_string_equal(err.field, "device");
    assert_null(nn_ctx_new("cpu", 0, &err));
    assert_string_equal(err.field, "threads");
    nn_ctx *ctx = nn_ctx_new(NULL, 2, &err);
    assert_non_null(ctx);
    assert_string_equal(nn_ctx_device(ctx), "cpu");
    assert_int_equal(nn_ctx_threads(ctx), 2);
    nn_ctx_free(ctx);
    nn_ctx_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_vs_naive),
        cmocka_unit_test(test_conv_dims),
        cmocka_unit_test(test_conv_fast_vs_naive),
        cmocka_unit_test(test_conv_finite_differences),
        cmocka_unit_test(test_winograd_vs_naive),
        cmocka_unit_test(test_conv_epilogue),
        cmocka_unit_test(test_bn_relu_fused),
        cmocka_unit_test(test_fc),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_pools),
        cmocka_unit_test(test_maxpool_fast_path),
        cmocka_unit_test(test_avgpool_count_include_pad),
        cmocka_unit_test(test_softmax_ce),
        cmocka_unit_test(test_concat_dropout),
        cmocka_unit_test(test_backend_threads),
        cmocka_unit_test(test_ctx_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
