/* The push loss (gpp_push_*): scatter matrices against naive loops, every
 * term's analytic gradient against central finite differences (forward in
 * double, exact perturbation steps), both separation forms, and a small
 * optimisation showing that pushing decorrelates the features and
 * concentrates the Fisher ratios on the top set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "gpp_check.h"

enum { TB = 12, TM = 6, TC = 3 };
static const int t_counts[TC] = {3, 4, 5};

static void fixture(uint64_t seed, float *H, int *y)
{
    gpp_rng r;
    gpp_rng_seed(&r, seed);
    gt_batch(&r, TB, TM, TC, t_counts, 1.0, H, y);
}

/* ---- statistics ------------------------------------------------------------ */

static void test_scatter_vs_naive(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    fixture(1, H, y);
    gpp_push_ws *ws = NULL;
    assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
    gpp_push_opts o;
    gpp_push_opts_default(&o);
    gpp_push_result res;
    assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &res, NULL, NULL), 0);
    assert_int_equal(res.classes_present, TC);
    const double *Sw, *Sb;
    gpp_push_ws_scatter(ws, &Sw, &Sb);
    const double *r = gpp_push_ws_ratios(ws);

    double mc[TC][TM] = {{0}}, mu[TM] = {0};
    int cnt[TC] = {0};
    for (int n = 0; n < TB; n++) {
        cnt[y[n]]++;
        for (int m = 0; m < TM; m++) {
            mc[y[n]][m] += H[n * TM + m];
            mu[m] += H[n * TM + m];
        }
    }
    for (int m = 0; m < TM; m++) {
        mu[m] /= TB;
        for (int c = 0; c < TC; c++) mc[c][m] /= cnt[c];
    }
    double maxS = 0.0;
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < TM; j++) {
            double sw = 0.0, sb = 0.0;
            for (int n = 0; n < TB; n++) {
                sw += (H[n * TM + i] - mc[y[n]][i]) * (H[n * TM + j] - mc[y[n]][j]);
                sb += (mc[y[n]][i] - mu[i]) * (mc[y[n]][j] - mu[j]);
            }
            sw /= TB;
            sb /= TB;
            assert_true(fabs(Sw[i * TM + j] - sw) < 1e-12 * (1.0 + fabs(sw)));
            assert_true(fabs(Sb[i * TM + j] - sb) < 1e-12 * (1.0 + fabs(sb)));
            if (i != j) maxS = fmax(maxS, fabs(sw));
            if (i == j) assert_true(fabs(r[i] - sb / (sw + o.eps)) < 1e-12 * (1.0 + r[i]));
        }
    assert_true(maxS > 0.05);   /* the fixture really has off-diagonals */
    gpp_push_ws_free(ws);
}

/* ---- gradients against finite differences ---------------------------------- */

static double loss_at(gpp_push_ws *ws, const float *H, const int *y, const gpp_push_opts *o)
{
    gpp_push_result res;
    gpp_error err;
    int rc = gpp_push_loss(ws, H, y, TB, o, &res, NULL, &err);
    if (rc) fail_msg("gpp_push_loss: %s", err.message);
    return res.loss;
}

/* Analytic dL/dH (opts `ga`) against central differences of the loss with
 * opts `gf` (they differ only where the denominator is frozen).  Returns
 * the largest |fd - an| / max|an|. */
static double fd_check(const char *name, gpp_push_ws *ws, float *H, const int *y,
                       const gpp_push_opts *ga, const gpp_push_opts *gf)
{
    float an[TB * TM] = {0};
    gpp_error err;
    if (gpp_push_loss(ws, H, y, TB, ga, NULL, an, &err)) fail_msg("%s", err.message);
    double gmax = 0.0;
    for (int i = 0; i < TB * TM; i++) gmax = fmax(gmax, fabs(an[i]));
    assert_true(gmax > 1e-6);   /* the term really has a gradient here */
    double worst = 0.0;
    for (int i = 0; i < TB * TM; i++) {
        float h0 = H[i];
        H[i] = h0 + 1e-3f;
        double hp = H[i], lp = loss_at(ws, H, y, gf);
        H[i] = h0 - 1e-3f;
        double hm = H[i], lm = loss_at(ws, H, y, gf);
        H[i] = h0;
        double fd = (lp - lm) / (hp - hm);
        worst = fmax(worst, fabs(fd - an[i]) / gmax);
    }
    print_message("  %-22s max|grad| %.3e  worst rel err %.2e\n", name, gmax, worst);
    return worst;
}

static void test_grad_sep_diag(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    for (uint64_t s = 1; s <= 3; s++) {
        fixture(s, H, y);
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.alpha = 1.0;
        assert_true(fd_check("sep (diag)", ws, H, y, &o, &o) < 1e-4);
        gpp_push_ws_free(ws);
    }
}

static void test_grad_cov_frozen(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    for (uint64_t s = 1; s <= 3; s++) {
        fixture(s, H, y);
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.beta = 1.0;
        gpp_push_result r0;
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &r0, NULL, NULL), 0);
        assert_true(r0.cov > 0.0 && r0.cov_denom > 0.0);
        /* METHOD.md: the denominator is a constant within a step, so the
         * gradient is that of numerator / K0 with K0 frozen at this batch */
        gpp_push_opts frozen = o;
        frozen.cov_denom = r0.cov_denom;
        assert_true(fd_check("cov (frozen denom)", ws, H, y, &o, &frozen) < 1e-4);
        /* and giving K0 explicitly yields the same gradient */
        float g1[TB * TM] = {0}, g2[TB * TM] = {0};
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, g1, NULL), 0);
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &frozen, NULL, g2, NULL), 0);
        for (int i = 0; i < TB * TM; i++) assert_true(fabs(g1[i] - g2[i]) <= 1e-6 * (1 + fabs(g1[i])));
        gpp_push_ws_free(ws);
    }
}

static void test_grad_cov_exact(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    for (uint64_t s = 1; s <= 3; s++) {
        fixture(s, H, y);
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.beta = 1.0;
        o.cov_exact = 1;
        assert_true(fd_check("cov (exact)", ws, H, y, &o, &o) < 1e-4);
        /* the frozen gradient is not the exact one: the option matters */
        gpp_push_opts fr = o;
        fr.cov_exact = 0;
        float g1[TB * TM] = {0}, g2[TB * TM] = {0};
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, g1, NULL), 0);
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &fr, NULL, g2, NULL), 0);
        double d = 0.0;
        for (int i = 0; i < TB * TM; i++) d = fmax(d, fabs(g1[i] - g2[i]));
        assert_true(d > 1e-4);
        gpp_push_ws_free(ws);
    }
}

static void test_grad_align(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    for (uint64_t s = 1; s <= 3; s++) {
        fixture(s, H, y);
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
        uint8_t top[TM] = {1, 0, 0, 1, 0, 0};
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.gamma = 1.0;
        o.top = top;
        gpp_push_result r0;
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &r0, NULL, NULL), 0);
        const double *r = gpp_push_ws_ratios(ws);
        double R = 0.0;
        for (int m = 0; m < TM; m++) R += r[m];
        assert_true(fabs(r0.align - (R - r[0] - r[3]) / R) < 1e-12);
        assert_true(fabs(r0.top_share + r0.align - 1.0) < 1e-12);
        assert_true(fd_check("align", ws, H, y, &o, &o) < 1e-4);
        gpp_push_ws_free(ws);
    }
}

static void test_grad_sep_eigen(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    for (uint64_t s = 1; s <= 3; s++) {
        fixture(s, H, y);
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, 1, &ws, NULL), 0);
        for (int k = 0; k <= 1; k++) {
            gpp_push_opts o;
            gpp_push_opts_default(&o);
            o.separation = GPP_PUSH_SEP_EIGEN;
            o.alpha = 1.0;
            o.eigen_k = k;
            gpp_push_result r0;
            assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &r0, NULL, NULL), 0);
            assert_int_equal(r0.eigen_k, k ? 1 : TC - 1);
            const double *w = gpp_push_ws_eigenvalues(ws);
            /* trivial eigenvalues ~0, the C-1 non-trivial ones positive */
            for (int i = 0; i < TM - (TC - 1); i++) assert_true(fabs(w[i]) < 1e-9);
            assert_true(w[TM - TC + 1] > 1e-3);
            double want = k ? -w[TM - TC + 1] : -(w[TM - 2] + w[TM - 1]) / 2;
            assert_true(fabs(r0.sep - want) < 1e-12 * (1 + fabs(want)));
            assert_true(fd_check(k ? "sep (eigen, k=1)" : "sep (eigen, k=C-1)", ws, H, y,
                                 &o, &o) < 1e-4);
        }
        gpp_push_ws_free(ws);
    }
}

static void test_grad_combined(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    fixture(7, H, y);
    uint8_t top[TM] = {0, 1, 1, 0, 0, 0};
    for (int form = 0; form < 2; form++) {
        gpp_push_ws *ws = NULL;
        assert_int_equal(gpp_push_ws_new(TB, TM, TC, form, &ws, NULL), 0);
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.separation = form ? GPP_PUSH_SEP_EIGEN : GPP_PUSH_SEP_DIAG;
        o.alpha = 0.3;
        o.beta = 0.7;
        o.gamma = 1.1;
        o.top = top;
        gpp_push_result r0;
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &r0, NULL, NULL), 0);
        assert_true(fabs(r0.loss - (0.3 * r0.sep + 0.7 * r0.cov + 1.1 * r0.align)) < 1e-12);
        gpp_push_opts fr = o;
        fr.cov_denom = r0.cov_denom;
        assert_true(fd_check(form ? "combined (eigen)" : "combined (diag)", ws, H, y, &o,
                             &fr) < 1e-4);
        /* the gradient is added, not written */
        float g1[TB * TM] = {0}, g2[TB * TM];
        for (int i = 0; i < TB * TM; i++) g2[i] = 1.0f;
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, g1, NULL), 0);
        assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, g2, NULL), 0);
        for (int i = 0; i < TB * TM; i++) assert_true(fabs(g2[i] - 1.0f - g1[i]) < 1e-6);
        gpp_push_ws_free(ws);
    }
}

/* A smaller batch than the workspace, and a class with no sample. */
static void test_partial_batch(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    fixture(3, H, y);
    gpp_push_ws *ws = NULL;
    assert_int_equal(gpp_push_ws_new(TB + 8, TM, TC + 2, 1, &ws, NULL), 0);
    gpp_push_opts o;
    gpp_push_opts_default(&o);
    o.separation = GPP_PUSH_SEP_EIGEN;
    o.alpha = 1.0;
    o.beta = 1.0;
    gpp_push_result r;
    assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, &r, NULL, NULL), 0);
    assert_int_equal(r.classes_present, TC);
    assert_int_equal(r.eigen_k, TC - 1);
    gpp_push_opts fr = o;
    fr.cov_denom = r.cov_denom;
    assert_true(fd_check("absent classes", ws, H, y, &o, &fr) < 1e-4);
    gpp_push_ws_free(ws);
}

static void test_bad_input(void **state)
{
    (void)state;
    float H[TB * TM];
    int y[TB];
    fixture(2, H, y);
    gpp_push_ws *ws = NULL;
    gpp_error err;
    assert_int_equal(gpp_push_ws_new(0, TM, TC, 0, &ws, &err), GPP_EINVAL);
    assert_null(ws);
    assert_int_equal(gpp_push_ws_new(TB, TM, TC, 0, &ws, NULL), 0);
    gpp_push_opts o;
    gpp_push_opts_default(&o);
    assert_int_equal(gpp_push_loss(ws, H, y, TB + 1, &o, NULL, NULL, &err), GPP_EINVAL);
    y[5] = TC;
    assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, NULL, &err), GPP_EINVAL);
    assert_string_equal(err.field, "labels");
    y[5] = 0;
    o.separation = GPP_PUSH_SEP_EIGEN;   /* workspace without the LAPACK buffers */
    assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, NULL, &err), GPP_EINVAL);
    o.separation = GPP_PUSH_SEP_DIAG;
    o.eps = 0.0;
    assert_int_equal(gpp_push_loss(ws, H, y, TB, &o, NULL, NULL, &err), GPP_EINVAL);
    gpp_push_ws_free(ws);
    gpp_push_ws_free(NULL);
}

/* ---- EMA and top set -------------------------------------------------------- */

static void test_ema_top(void **state)
{
    (void)state;
    double ema[5] = {0}, r1[5] = {1, 2, 3, 4, 5}, r2[5] = {5, 4, 3, 2, 1};
    gpp_push_ema_update(ema, r1, 5, 0.9, 1);
    for (int m = 0; m < 5; m++) assert_true(ema[m] == r1[m]);
    gpp_push_ema_update(ema, r2, 5, 0.9, 0);
    for (int m = 0; m < 5; m++) assert_true(fabs(ema[m] - (0.9 * r1[m] + 0.1 * r2[m])) < 1e-15);
    uint8_t top[5];
    assert_int_equal(gpp_push_top_set(ema, 5, 2, top, NULL), 0);
    assert_memory_equal(top, ((uint8_t[]){0, 0, 0, 1, 1}), 5);
    double tie[5] = {1, 3, 3, 0, 3};   /* ties: lower index first */
    assert_int_equal(gpp_push_top_set(tie, 5, 2, top, NULL), 0);
    assert_memory_equal(top, ((uint8_t[]){0, 1, 1, 0, 0}), 5);
    assert_int_equal(gpp_push_top_set(tie, 5, 9, top, NULL), 0);
    assert_memory_equal(top, ((uint8_t[]){1, 1, 1, 1, 1}), 5);
    assert_int_equal(gpp_push_top_set(tie, 5, -1, top, NULL), 0);
    assert_memory_equal(top, ((uint8_t[]){0, 0, 0, 0, 0}), 5);
}

/* ---- pushing works ---------------------------------------------------------- */

/* Share of sum r held by the k largest ratios (and their sum in *sum). */
static double top_k_share(const double *r, int M, int k, double *sum)
{
    double tot = 0.0, top = 0.0;
    uint8_t sel[64];
    gpp_push_top_set(r, M, k, sel, NULL);
    for (int m = 0; m < M; m++) {
        tot += r[m];
        if (sel[m]) top += r[m];
    }
    *sum = top;
    return top / tot;
}

/* H = X W with X fixed (3 classes, the class signal in 2 of 8 input
 * dimensions, noise everywhere) and W [8, 6] a dense random mixing: every
 * neuron starts correlated with the others and about equally
 * discriminative.  Plain gradient descent on W with the push loss alone
 * (beta = gamma = 1, top set of M' = 2 from an EMA of r refreshed every 25
 * steps) must make the scatter near-diagonal (L_cov at least halved) and
 * put the discriminative power in the top M' neurons.
 *
 * alpha: the eigen form works with alpha = 1.  The diagonal form does not:
 * -log(r_m) is a barrier that keeps every neuron discriminative, and at a
 * neuron outside S the pulls balance where alpha/(M r_m) = gamma (1-L)/R,
 * so a top share s needs s (1 - s) = (alpha/gamma) (M - M')/M, which has a
 * solution only when alpha/gamma <= M / (4 (M - M')) (0.375 here; measured:
 * alpha = 1 or 0.5 leaves the share at 0.38 / 0.44, alpha = 0.3 reaches
 * 0.83, 0.1 reaches 0.96).  Hence alpha = 0.1 for the diagonal form. */
static void run_push(gpp_push_sep form, double alpha)
{
    enum { PC = 3, PN = 10, PB = PC * PN, PK = 8, PM = 6, PMK = 2, STEPS = 400 };
    gpp_rng rng;
    gpp_rng_seed(&rng, 42);
    float X[PB * PK], W[PK * PM], H[PB * PM], dH[PB * PM];
    int y[PB];
    for (int n = 0; n < PB; n++) {
        y[n] = n % PC;
        for (int k = 0; k < PK; k++) X[n * PK + k] = 0.6f * gpp_rng_normal(&rng);
        X[n * PK + 0] += (float)cos(2.0944 * y[n]);
        X[n * PK + 1] += (float)sin(2.0944 * y[n]);
    }
    for (int i = 0; i < PK * PM; i++) W[i] = 0.5f * gpp_rng_normal(&rng);
    gpp_push_ws *ws = NULL;
    assert_int_equal(gpp_push_ws_new(PB, PM, PC, form == GPP_PUSH_SEP_EIGEN, &ws, NULL), 0);
    double ema[PM];
    uint8_t top[PM];
    gpp_push_opts o;
    gpp_push_opts_default(&o);
    o.separation = form;
    o.alpha = alpha;
    o.beta = o.gamma = 1.0;
    o.top = top;
    double cov0 = 0.0, share0 = 0.0, cov1 = 0.0, share1 = 0.0, rtop0 = 0.0, rtop1 = 0.0;
    for (int step = 0; step <= STEPS; step++) {
        for (int n = 0; n < PB; n++)
            for (int m = 0; m < PM; m++) {
                double v = 0.0;
                for (int k = 0; k < PK; k++) v += (double)X[n * PK + k] * W[k * PM + m];
                H[n * PM + m] = (float)v;
            }
        memset(dH, 0, sizeof dH);
        gpp_push_result res;
        gpp_error err;
        if (step == 0) {   /* statistics first, to seed the EMA and the top set */
            o.top = NULL;
            assert_int_equal(gpp_push_loss(ws, H, y, PB, &o, &res, NULL, &err), 0);
            o.top = top;
            gpp_push_ema_update(ema, gpp_push_ws_ratios(ws), PM, 0.9, 1);
            gpp_push_top_set(ema, PM, PMK, top, NULL);
        }
        if (gpp_push_loss(ws, H, y, PB, &o, &res, step < STEPS ? dH : NULL, &err))
            fail_msg("%s", err.message);
        const double *r = gpp_push_ws_ratios(ws);
        if (step == 0) {
            cov0 = res.cov;
            share0 = top_k_share(r, PM, PMK, &rtop0);
        }
        if (step == STEPS) {
            cov1 = res.cov;
            share1 = top_k_share(r, PM, PMK, &rtop1);
            break;
        }
        gpp_push_ema_update(ema, r, PM, 0.9, 0);
        if (step % 25 == 24) gpp_push_top_set(ema, PM, PMK, top, NULL);
        /* dW = X^T dH */
        for (int k = 0; k < PK; k++)
            for (int m = 0; m < PM; m++) {
                double g = 0.0;
                for (int n = 0; n < PB; n++) g += (double)X[n * PK + k] * dH[n * PM + m];
                W[k * PM + m] -= (float)(0.05 * g);
            }
    }
    print_message("  push (%s, alpha %g): L_cov %.4f -> %.4f, top-%d share of sum r %.3f -> %.3f, their sum %.3f -> %.3f\n",
                  form == GPP_PUSH_SEP_EIGEN ? "eigen" : "diag", alpha, cov0, cov1, PMK, share0,
                  share1, rtop0, rtop1);
    assert_true(cov1 <= 0.5 * cov0);            /* off-diagonal scatter at least halved */
    assert_true(share1 >= share0 + 0.15);       /* discriminative power concentrated */
    assert_true(share1 >= 0.8);
    assert_true(rtop1 >= rtop0);                /* without losing separation */
    gpp_push_ws_free(ws);
}

static void test_push_works_diag(void **state)
{
    (void)state;
    run_push(GPP_PUSH_SEP_DIAG, 0.1);
}

static void test_push_works_eigen(void **state)
{
    (void)state;
    run_push(GPP_PUSH_SEP_EIGEN, 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scatter_vs_naive),
        cmocka_unit_test(test_grad_sep_diag),
        cmocka_unit_test(test_grad_cov_frozen),
        cmocka_unit_test(test_grad_cov_exact),
        cmocka_unit_test(test_grad_align),
        cmocka_unit_test(test_grad_sep_eigen),
        cmocka_unit_test(test_grad_combined),
        cmocka_unit_test(test_partial_batch),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_ema_top),
        cmocka_unit_test(test_push_works_diag),
        cmocka_unit_test(test_push_works_eigen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
