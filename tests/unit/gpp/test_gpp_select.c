/* Channel selection (gpp_prune_*): the eta * std threshold removes exactly
 * the channels below it, the caps apply lowest first, ties are broken by
 * index; the ratio rule; the L1-norm and random baselines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "gpp_check.h"

static int count_ones(const uint8_t *m, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += m[i] != 0;
    return k;
}

/* Worked example: u = 0..9.  The non-zero ones 1..9 have mean 5 and
 * population variance 60/9, std 2.582. */
static void test_threshold_worked(void **state)
{
    (void)state;
    double u[10];
    for (int i = 0; i < 10; i++) u[i] = i;
    uint8_t rm[10];
    int k = -1;
    double t = -1.0;
    /* eta 1: t = 2.582, below it 1 and 2, plus the zero channel 0 */
    assert_int_equal(gpp_prune_threshold(u, 10, 1.0, 0.5, 1, rm, &k, &t, NULL), 0);
    assert_true(fabs(t - sqrt(60.0 / 9.0)) < 1e-12);
    assert_int_equal(k, 3);
    assert_memory_equal(rm, ((uint8_t[]){1, 1, 1, 0, 0, 0, 0, 0, 0, 0}), 10);
    /* eta 2: t = 5.164, six candidates 0..5, capped at half the layer: 0..4 */
    assert_int_equal(gpp_prune_threshold(u, 10, 2.0, 0.5, 1, rm, &k, &t, NULL), 0);
    assert_int_equal(k, 5);
    assert_memory_equal(rm, ((uint8_t[]){1, 1, 1, 1, 1, 0, 0, 0, 0, 0}), 10);
    /* min_channels 8 leaves room for 2 */
    assert_int_equal(gpp_prune_threshold(u, 10, 2.0, 0.5, 8, rm, &k, NULL, NULL), 0);
    assert_int_equal(k, 2);
    assert_memory_equal(rm, ((uint8_t[]){1, 1, 0, 0, 0, 0, 0, 0, 0, 0}), 10);
    /* eta 0: only the zero-utility channel */
    assert_int_equal(gpp_prune_threshold(u, 10, 0.0, 0.5, 1, rm, &k, &t, NULL), 0);
    assert_true(t == 0.0);
    assert_int_equal(k, 1);
    assert_int_equal(rm[0], 1);
    /* max_fraction 0: nothing */
    assert_int_equal(gpp_prune_threshold(u, 10, 2.0, 0.0, 1, rm, &k, NULL, NULL), 0);
    assert_int_equal(k, 0);
    assert_int_equal(count_ones(rm, 10), 0);
}

static void test_threshold_ties_and_edges(void **state)
{
    (void)state;
    /* four tied lowest channels, cap floor(0.34 * 6) = 2: the first two go */
    double u[6] = {1, 1, 5, 1, 1, 5};
    uint8_t rm[6];
    int k;
    assert_int_equal(gpp_prune_threshold(u, 6, 1.0, 0.34, 1, rm, &k, NULL, NULL), 0);
    assert_int_equal(k, 2);
    assert_memory_equal(rm, ((uint8_t[]){1, 1, 0, 0, 0, 0}), 6);
    /* all zero: std undefined, t = 0, every channel a candidate, cap 2 of 4 */
    double z[4] = {0, 0, 0, 0};
    double t = -1;
    assert_int_equal(gpp_prune_threshold(z, 4, 0.5, 0.5, 1, rm, &k, &t, NULL), 0);
    assert_true(t == 0.0);
    assert_int_equal(k, 2);
    assert_memory_equal(rm, ((uint8_t[]){1, 1, 0, 0}), 4);
    /* a single non-zero channel: std 0, only the zeros go, never the last one */
    double one[3] = {0, 7, 0};
    assert_int_equal(gpp_prune_threshold(one, 3, 5.0, 1.0, 1, rm, &k, &t, NULL), 0);
    assert_int_equal(k, 2);
    assert_memory_equal(rm, ((uint8_t[]){1, 0, 1}), 3);
    /* min_channels larger than the layer: nothing */
    assert_int_equal(gpp_prune_threshold(one, 3, 5.0, 1.0, 5, rm, &k, &t, NULL), 0);
    assert_int_equal(k, 0);
    /* bad arguments */
    gpp_error err;
    double bad[2] = {1.0, -1.0};
    assert_int_equal(gpp_prune_threshold(bad, 2, 1.0, 0.5, 1, rm, &k, &t, &err), GPP_EINVAL);
    bad[1] = NAN;
    assert_int_equal(gpp_prune_threshold(bad, 2, 1.0, 0.5, 1, rm, &k, &t, &err), GPP_EINVAL);
    assert_int_equal(gpp_prune_threshold(u, 6, -1.0, 0.5, 1, rm, &k, &t, &err), GPP_EINVAL);
    assert_int_equal(gpp_prune_threshold(u, 6, 1.0, 1.5, 1, rm, &k, &t, &err), GPP_EINVAL);
    assert_int_equal(gpp_prune_threshold(u, 0, 1.0, 0.5, 1, rm, &k, &t, &err), GPP_EINVAL);
}

/* Random layers against a direct reading of the rule. */
static void test_threshold_random(void **state)
{
    (void)state;
    gpp_rng r;
    gpp_rng_seed(&r, 3);
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + (int)gpp_rng_below(&r, 40);
        double u[40];
        for (int i = 0; i < n; i++)
            u[i] = gpp_rng_uniform(&r) < 0.2 ? 0.0 : (double)gpp_rng_below(&r, 8) * 0.5;
        double eta = 2.0 * gpp_rng_uniform(&r), frac = gpp_rng_uniform(&r);
        int minc = (int)gpp_rng_below(&r, 4);
        uint8_t rm[40];
        int k;
        double t;
        assert_int_equal(gpp_prune_threshold(u, n, eta, frac, minc, rm, &k, &t, NULL), 0);
        /* reference: std of the non-zero ones, candidates, cap */
        double s = 0, ss = 0;
        int nz = 0;
        for (int i = 0; i < n; i++)
            if (u[i] > 0) { s += u[i]; nz++; }
        for (int i = 0; i < n; i++)
            if (u[i] > 0) ss += (u[i] - s / nz) * (u[i] - s / nz);
        double tref = nz >= 2 ? eta * sqrt(ss / nz) : 0.0;
        assert_true(fabs(t - tref) <= 1e-12 * (1 + tref));
        int cand = 0;
        for (int i = 0; i < n; i++) cand += u[i] == 0.0 || u[i] < t;
        int cap = (int)floor(frac * n + 1e-9);
        if (cap > n - minc) cap = n - minc;
        if (cap < 0) cap = 0;
        int want = cand < cap ? cand : cap;
        assert_int_equal(k, want);
        assert_int_equal(count_ones(rm, n), want);
        /* every removed channel is a candidate, and no kept channel has a
         * lower utility (or the same utility and a lower index) */
        for (int i = 0; i < n; i++) {
            if (!rm[i]) continue;
            assert_true(u[i] == 0.0 || u[i] < t);
            for (int j = 0; j < n; j++)
                if (!rm[j]) assert_true(u[j] > u[i] || (u[j] == u[i] && j > i));
        }
    }
}

static void test_ratio(void **state)
{
    (void)state;
    double u[10] = {5, 3, 9, 0, 3, 8, 1, 7, 2, 6};
    uint8_t rm[10];
    int k;
    /* floor(0.35 * 10) = 3 lowest: 0 (ch 3), 1 (ch 6), 2 (ch 8) */
    assert_int_equal(gpp_prune_ratio(u, 10, 0.35, 1, rm, &k, NULL), 0);
    assert_int_equal(k, 3);
    assert_memory_equal(rm, ((uint8_t[]){0, 0, 0, 1, 0, 0, 1, 0, 1, 0}), 10);
    /* the tie at 3 goes by index: ch 1 before ch 4 */
    assert_int_equal(gpp_prune_ratio(u, 10, 0.4, 1, rm, &k, NULL), 0);
    assert_int_equal(k, 4);
    assert_int_equal(rm[1], 1);
    assert_int_equal(rm[4], 0);
    /* min_channels caps it */
    assert_int_equal(gpp_prune_ratio(u, 10, 1.0, 2, rm, &k, NULL), 0);
    assert_int_equal(k, 8);
    assert_int_equal(rm[2] + rm[5], 0);   /* the two best stay */
    assert_int_equal(gpp_prune_ratio(u, 10, 1.5, 2, rm, &k, NULL), GPP_EINVAL);
}

static void test_l1(void **state)
{
    (void)state;
    enum { OC = 6, PER = 4 };
    gpp_rng r;
    gpp_rng_seed(&r, 9);
    float w[OC * PER];
    for (int i = 0; i < OC * PER; i++) w[i] = 2.0f * gpp_rng_uniform(&r) - 1.0f;
    /* filter 4 a sign-flipped copy of filter 1: same norm, index breaks the tie */
    for (int i = 0; i < PER; i++) w[4 * PER + i] = -w[1 * PER + i];
    double norms[OC];
    gpp_prune_l1_norms(w, OC, PER, norms);
    for (int o = 0; o < OC; o++) {
        double s = 0;
        for (int i = 0; i < PER; i++) s += fabs(w[o * PER + i]);
        assert_true(fabs(norms[o] - s) < 1e-12);
    }
    for (int count = 0; count <= OC; count++) {
        uint8_t rm[OC];
        assert_int_equal(gpp_prune_l1_select(w, OC, PER, count, rm, NULL), 0);
        assert_int_equal(count_ones(rm, OC), count);
        for (int i = 0; i < OC; i++)
            for (int j = 0; j < OC; j++)
                if (rm[i] && !rm[j])
                    assert_true(norms[j] > norms[i] || (norms[j] == norms[i] && j > i));
    }
    uint8_t rm[OC];
    assert_int_equal(gpp_prune_l1_select(w, OC, PER, OC + 1, rm, NULL), GPP_EINVAL);
}

static void test_random(void **state)
{
    (void)state;
    enum { OC = 50, CNT = 10 };
    uint8_t a[OC], b[OC], c[OC];
    gpp_rng r1, r2, r3;
    gpp_rng_seed(&r1, 1234);
    gpp_rng_seed(&r2, 1234);
    gpp_rng_seed(&r3, 1235);
    assert_int_equal(gpp_prune_random_select(&r1, OC, CNT, a, NULL), 0);
    assert_int_equal(gpp_prune_random_select(&r2, OC, CNT, b, NULL), 0);
    assert_int_equal(gpp_prune_random_select(&r3, OC, CNT, c, NULL), 0);
    assert_int_equal(count_ones(a, OC), CNT);
    assert_int_equal(count_ones(c, OC), CNT);
    assert_memory_equal(a, b, OC);            /* same seed, same channels */
    assert_memory_not_equal(a, c, OC);        /* another seed, other channels */
    /* roughly uniform: 3000 single draws over 10 channels */
    int hist[10] = {0};
    gpp_rng r;
    gpp_rng_seed(&r, 77);
    for (int t = 0; t < 3000; t++) {
        uint8_t m[10];
        assert_int_equal(gpp_prune_random_select(&r, 10, 1, m, NULL), 0);
        for (int i = 0; i < 10; i++) hist[i] += m[i];
    }
    for (int i = 0; i < 10; i++) assert_true(hist[i] > 220 && hist[i] < 380);
    assert_int_equal(gpp_prune_random_select(&r, 10, 10, a, NULL), 0);
    assert_int_equal(count_ones(a, 10), 10);
    assert_int_equal(gpp_prune_random_select(&r, 10, 11, a, NULL), GPP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_worked),
        cmocka_unit_test(test_threshold_ties_and_edges),
        cmocka_unit_test(test_threshold_random),
        cmocka_unit_test(test_ratio),
        cmocka_unit_test(test_l1),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
