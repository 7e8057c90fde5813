/* The pre-decision LDA utility (gpp_lda_*): synthetic features with known
 * informative, noise, dead and duplicate neurons, and the M' search with a
 * synthetic accuracy probe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "gpp_check.h"

enum { LC = 4, LPER = 25, LN = LC * LPER, LM = 10 };

/* Neuron roles: signal strength s (class mean = s * code[c]) plus unit noise. */
static const double strength[LM] = {3.0, 1.0, 2.0, 0.0, -1, -1, -1, 0.0, -1, 1.5};
/* -1: special: 4 dead constant 0.5, 5 = 2*n0 + 1, 6 dead 0, 8 = -n2 */

static void make_features(float *F, int *y)
{
    gpp_rng r;
    gpp_rng_seed(&r, 11);
    static const double code[LC] = {-1.5, -0.5, 0.5, 1.5};
    for (int n = 0; n < LN; n++) {
        int c = n % LC;
        y[n] = c;
        float *f = F + (size_t)n * LM;
        for (int m = 0; m < LM; m++)
            if (strength[m] >= 0) f[m] = (float)(strength[m] * code[c] + gpp_rng_normal(&r));
        f[4] = 0.5f;
        f[5] = 2.0f * f[0] + 1.0f;
        f[6] = 0.0f;
        f[8] = -f[2];
    }
}

static void test_utility(void **state)
{
    (void)state;
    float F[LN * LM];
    int y[LN];
    make_features(F, y);
    double u[LM];
    int order[LM], nk = -1;
    uint8_t st[LM];
    gpp_lda_opts o;
    gpp_lda_opts_default(&o);
    assert_int_equal(gpp_lda_utility(F, y, LN, LM, LC, &o, u, order, st, &nk, NULL), 0);
    assert_int_equal(nk, 6);
    assert_int_equal(st[4], GPP_LDA_DEAD);
    assert_int_equal(st[6], GPP_LDA_DEAD);
    assert_int_equal(st[5], GPP_LDA_DUPLICATE);
    assert_int_equal(st[8], GPP_LDA_DUPLICATE);   /* negative correlation counts too */
    for (int m = 0; m < LM; m++) {
        if (st[m] != GPP_LDA_KEPT) {
            assert_true(u[m] == 0.0);
            continue;
        }
        /* naive sigma_b^2 / sigma_w^2 */
        double mc[LC] = {0}, mu = 0.0, sw = 0.0, sb = 0.0;
        int cnt[LC] = {0};
        for (int n = 0; n < LN; n++) {
            mc[y[n]] += F[n * LM + m];
            mu += F[n * LM + m];
            cnt[y[n]]++;
        }
        mu /= LN;
        for (int c = 0; c < LC; c++) mc[c] /= cnt[c];
        for (int n = 0; n < LN; n++) {
            double e = F[n * LM + m] - mc[y[n]], d = mc[y[n]] - mu;
            sw += e * e;
            sb += d * d;
        }
        double want = (sb / LN) / (sw / LN + o.eps);
        assert_true(fabs(u[m] - want) <= 1e-9 * want + 1e-12);
    }
    /* informative by strength, then the two noise neurons, then dead and
     * duplicates by index */
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 9);
    assert_int_equal(order[3], 1);
    assert_true((order[4] == 3 && order[5] == 7) || (order[4] == 7 && order[5] == 3));
    assert_true(u[order[3]] > 10.0 * u[order[4]]);   /* signal well above noise */
    assert_int_equal(order[6], 4);
    assert_int_equal(order[7], 5);
    assert_int_equal(order[8], 6);
    assert_int_equal(order[9], 8);
    /* NULL outputs and NULL options are fine */
    assert_int_equal(gpp_lda_utility(F, y, LN, LM, LC, NULL, NULL, NULL, NULL, NULL, NULL), 0);
}

static void test_utility_bad_input(void **state)
{
    (void)state;
    float F[LN * LM];
    int y[LN];
    make_features(F, y);
    gpp_error err;
    y[3] = LC;
    assert_int_equal(gpp_lda_utility(F, y, LN, LM, LC, NULL, NULL, NULL, NULL, NULL, &err),
                     GPP_EINVAL);
    assert_string_equal(err.field, "labels");
    y[3] = 0;
    assert_int_equal(gpp_lda_utility(F, y, 0, LM, LC, NULL, NULL, NULL, NULL, NULL, &err),
                     GPP_EINVAL);
}

/* A probe whose accuracy is a base plus each kept neuron's gain; it also
 * checks that the mask is the top m of the order it was given. */
struct probe_ctx {
    const int *order;
    double gain[LM];
    int calls;
    int fail_at;   /* return an error on this call (1-based), 0 = never */
};

static int probe(void *vctx, const uint8_t *kept, int M, double *acc)
{
    struct probe_ctx *p = vctx;
    p->calls++;
    if (p->fail_at && p->calls == p->fail_at) return GPP_EIO;
    int m = 0;
    while (m < M && kept[p->order[m]]) m++;
    for (int q = m; q < M; q++)
        if (kept[p->order[q]]) fail_msg("probe mask is not a prefix of the order");
    double a = 0.3;
    for (int j = 0; j < M; j++)
        if (kept[j]) a += p->gain[j];
    *acc = a;
    return 0;
}

static void test_choose_count(void **state)
{
    (void)state;
    float F[LN * LM];
    int y[LN];
    make_features(F, y);
    int order[LM], nk;
    assert_int_equal(gpp_lda_utility(F, y, LN, LM, LC, NULL, NULL, order, NULL, &nk, NULL), 0);
    struct probe_ctx p = {.order = order};
    p.gain[0] = 0.3; p.gain[2] = 0.2; p.gain[9] = 0.1; p.gain[1] = 0.05; p.gain[3] = 0.001;
    double acc_all = 0.3 + 0.3 + 0.2 + 0.1 + 0.05 + 0.001;   /* every neuron */
    for (int s = 0; s < 2; s++) {
        gpp_lda_search search = s ? GPP_LDA_SEARCH_LINEAR : GPP_LDA_SEARCH_BINARY;
        int count = 0, np = 0;
        double at = 0.0;
        p.calls = 0;
        /* within 0.02: the top 4 (0, 2, 9, 1) reach 0.95 >= 0.931, the top 3 0.9 do not */
        assert_int_equal(gpp_lda_choose_count(order, LM, nk, acc_all, 0.02, search, probe, &p,
                                              &count, &at, &np, NULL), 0);
        assert_int_equal(count, 4);
        assert_true(fabs(at - 0.95) < 1e-12);
        assert_int_equal(np, p.calls);
        if (s) assert_int_equal(np, 4);
        else assert_true(np <= 4);   /* 1 + ceil(log2 6) */
        /* a drop of 0.2 allows the top 2 (0.8 >= 0.751) */
        assert_int_equal(gpp_lda_choose_count(order, LM, nk, acc_all, 0.2, search, probe, &p,
                                              &count, &at, NULL, NULL), 0);
        assert_int_equal(count, 2);
        /* unreachable: keep all M */
        assert_int_equal(gpp_lda_choose_count(order, LM, nk, acc_all + 1.0, 0.0, search, probe,
                                              &p, &count, &at, NULL, NULL), 0);
        assert_int_equal(count, LM);
        assert_true(at == acc_all + 1.0);
        /* the probe's error comes back */
        p.calls = 0;
        p.fail_at = 2;
        assert_int_equal(gpp_lda_choose_count(order, LM, nk, acc_all, 0.02, search, probe, &p,
                                              &count, &at, &np, NULL), GPP_EIO);
        assert_int_equal(np, 2);
        p.fail_at = 0;
    }
    int count;
    assert_int_equal(gpp_lda_choose_count(order, LM, LM + 1, 1.0, 0.0, GPP_LDA_SEARCH_BINARY,
                                          probe, &p, &count, NULL, NULL, NULL), GPP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utility),
        cmocka_unit_test(test_utility_bad_input),
        cmocka_unit_test(test_choose_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
