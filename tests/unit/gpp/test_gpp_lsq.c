/* Least-squares recovery (gpp_lsq_*): exact recovery of consistent
 * systems, optimality (normal equations) and residuals against a naive
 * loop, never worse than the old weights, rank-deficient inputs, and
 * streaming in blocks equal to one shot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "gpp_check.h"

static void fill(gpp_rng *r, float *x, size_t n, double s)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(s * gpp_rng_normal(r));
}

/* Y = X W (+ noise), in double, rounded to float. */
static void make_y(const float *X, const float *W, size_t N, int K, int O, gpp_rng *r,
                   double noise, float *Y)
{
    for (size_t n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double v = 0.0;
            for (int k = 0; k < K; k++) v += (double)X[n * K + k] * W[(size_t)k * O + o];
            Y[n * O + o] = (float)(v + noise * gpp_rng_normal(r));
        }
}

static double naive_residual(const float *X, const float *Y, const float *W, size_t N, int K,
                             int O)
{
    double s = 0.0;
    for (size_t n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double v = -(double)Y[n * O + o];
            for (int k = 0; k < K; k++) v += (double)X[n * K + k] * W[(size_t)k * O + o];
            s += v * v;
        }
    return s;
}

static double sumsq(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

static void test_exact_recovery(void **state)
{
    (void)state;
    enum { N = 300, K = 7, O = 3 };   /* N > one block of 256 rows */
    gpp_rng r;
    gpp_rng_seed(&r, 5);
    float *X = gt_alloc(N * K, sizeof(float)), *Y = gt_alloc(N * O, sizeof(float));
    float Wt[K * O], W[K * O];
    fill(&r, X, N * K, 1.0);
    fill(&r, Wt, K * O, 1.0);
    make_y(X, Wt, N, K, O, &r, 0.0, Y);
    double yy = sumsq(Y, N * O);
    for (int t = 0; t < 2; t++) {
        double rho = t ? 1e-9 : 0.0, before, after;
        assert_int_equal(gpp_lsq_fit(X, Y, N, K, O, rho, NULL, W, &before, &after, NULL), 0);
        assert_true(fabs(before - yy) <= 1e-9 * yy);
        for (int i = 0; i < K * O; i++) assert_true(fabs(W[i] - Wt[i]) < 1e-4);
        assert_true(after <= 1e-9 * yy);
        assert_true(naive_residual(X, Y, W, N, K, O) <= 1e-9 * yy);
    }
    free(X);
    free(Y);
}

static void test_not_worse_than_old(void **state)
{
    (void)state;
    enum { N = 120, K = 9, O = 4 };
    gpp_rng r;
    gpp_rng_seed(&r, 6);
    float *X = gt_alloc(N * K, sizeof(float)), *Y = gt_alloc(N * O, sizeof(float));
    float Wt[K * O], Wold[K * O], W[K * O];
    fill(&r, X, N * K, 1.0);
    fill(&r, Wt, K * O, 1.0);
    make_y(X, Wt, N, K, O, &r, 0.3, Y);
    for (int i = 0; i < K * O; i++) Wold[i] = Wt[i] + (float)(0.2 * gpp_rng_normal(&r));
    double before, after;
    assert_int_equal(gpp_lsq_fit(X, Y, N, K, O, 1e-6, Wold, W, &before, &after, NULL), 0);
    /* the accumulated-sums residual agrees with the naive one */
    double nb = naive_residual(X, Y, Wold, N, K, O), na = naive_residual(X, Y, W, N, K, O);
    assert_true(fabs(before - nb) <= 1e-8 * nb);
    assert_true(fabs(after - na) <= 1e-8 * na);
    assert_true(after < before);
    assert_true(after <= naive_residual(X, Y, Wt, N, K, O));   /* beats the true weights */
    /* optimality: X^T (X W - Y) ~ 0 relative to X^T Y */
    double g = 0.0, ref = 0.0;
    for (int k = 0; k < K; k++)
        for (int o = 0; o < O; o++) {
            double s = 0.0, t = 0.0;
            for (int n = 0; n < N; n++) {
                double p = -(double)Y[n * O + o];
                for (int j = 0; j < K; j++) p += (double)X[n * K + j] * W[j * O + o];
                s += X[n * K + k] * p;
                t += (double)X[n * K + k] * Y[n * O + o];
            }
            g = fmax(g, fabs(s));
            ref = fmax(ref, fabs(t));
        }
    assert_true(g <= 1e-5 * ref);
    free(X);
    free(Y);
}

static void test_rank_deficient(void **state)
{
    (void)state;
    enum { N = 80, K = 6, O = 2 };
    gpp_rng r;
    gpp_rng_seed(&r, 7);
    float *X = gt_alloc(N * K, sizeof(float)), *Y = gt_alloc(N * O, sizeof(float));
    float Wt[K * O], W[K * O];
    fill(&r, X, N * K, 1.0);
    for (int n = 0; n < N; n++) {
        X[n * K + 3] = X[n * K + 1];   /* a duplicated column */
        X[n * K + 5] = 0.0f;           /* a dead column */
    }
    fill(&r, Wt, K * O, 1.0);
    make_y(X, Wt, N, K, O, &r, 0.0, Y);
    double yy = sumsq(Y, N * O);
    for (int t = 0; t < 2; t++) {
        double rho = t ? 1e-6 : 0.0, after;
        gpp_lsq *q = NULL;
        assert_int_equal(gpp_lsq_new(K, O, &q, NULL), 0);
        gpp_lsq_add(q, X, Y, N);
        double used = -1.0;
        assert_int_equal(gpp_lsq_solve(q, rho, W, &used, NULL), 0);
        assert_true(used > 0.0);   /* a ridge was needed (rho = 0) or asked for */
        after = gpp_lsq_residual(q, W);
        print_message("  rank deficient, rho %g: ridge used %.3g, residual %.3g of %.3g\n",
                      rho, used, after, yy);
        assert_true(after <= 1e-6 * yy);
        for (int i = 0; i < K * O; i++) assert_true(isfinite(W[i]) && fabs(W[i]) < 10.0);
        for (int o = 0; o < O; o++) {
            /* the ridge splits the duplicated pair evenly and leaves the dead
             * column at zero */
            double pair = (double)Wt[1 * O + o] + Wt[3 * O + o];
            assert_true(fabs(W[1 * O + o] + W[3 * O + o] - pair) < 1e-3);
            assert_true(fabs(W[1 * O + o] - W[3 * O + o]) < 1e-3);
            assert_true(fabs(W[5 * O + o]) < 1e-6);
        }
        gpp_lsq_free(q);
    }
    free(X);
    free(Y);
}

static void test_streaming(void **state)
{
    (void)state;
    enum { N = 600, K = 5, O = 3 };
    gpp_rng r;
    gpp_rng_seed(&r, 8);
    float *X = gt_alloc(N * K, sizeof(float)), *Y = gt_alloc(N * O, sizeof(float));
    float Wt[K * O], W1[K * O], W2[K * O];
    fill(&r, X, N * K, 1.0);
    fill(&r, Wt, K * O, 1.0);
    make_y(X, Wt, N, K, O, &r, 0.5, Y);
    assert_int_equal(gpp_lsq_fit(X, Y, N, K, O, 1e-6, NULL, W1, NULL, NULL, NULL), 0);
    gpp_lsq *q = NULL;
    assert_int_equal(gpp_lsq_new(K, O, &q, NULL), 0);
    /* garbage first, then reset */
    gpp_lsq_add(q, Y, X, 10);
    gpp_lsq_reset(q);
    assert_int_equal((int)gpp_lsq_rows(q), 0);
    assert_int_equal(gpp_lsq_solve(q, 1e-6, W2, NULL, NULL), 0);   /* empty: W = 0 */
    for (int i = 0; i < K * O; i++) assert_true(W2[i] == 0.0f);
    static const size_t cuts[] = {0, 1, 38, 300, 599, N};
    for (size_t c = 0; c + 1 < sizeof cuts / sizeof cuts[0]; c++)
        gpp_lsq_add(q, X + cuts[c] * K, Y + cuts[c] * O, cuts[c + 1] - cuts[c]);
    assert_int_equal((int)gpp_lsq_rows(q), N);
    assert_int_equal(gpp_lsq_solve(q, 1e-6, W2, NULL, NULL), 0);
    for (int i = 0; i < K * O; i++) assert_true(fabs(W1[i] - W2[i]) < 1e-5);
    gpp_error err;
    assert_int_equal(gpp_lsq_solve(q, -1.0, W2, NULL, &err), GPP_EINVAL);
    gpp_lsq_free(q);
    gpp_lsq_free(NULL);
    assert_int_equal(gpp_lsq_new(0, O, &q, &err), GPP_EINVAL);
    assert_null(q);
    free(X);
    free(Y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_recovery),
        cmocka_unit_test(test_not_worse_than_old),
        cmocka_unit_test(test_rank_deficient),
        cmocka_unit_test(test_streaming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
