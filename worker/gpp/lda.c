/* worker/gpp/lda.c - the pre-decision LDA utility of METHOD.md 4.1: dead
 * and duplicate neurons dropped, per-neuron sigma_b^2 / sigma_w^2, and the
 * search for the smallest kept count M' within the allowed accuracy drop. */
#include "gpp/gppmath.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LDA_MAX_DIM 65536   /* M and C above this are refused */

void gpp_lda_opts_default(gpp_lda_opts *o)
{
    o->var_tol = 1e-10;
    o->dup_corr = 0.999;
    o->eps = 1e-10;
}

struct rank_item { double v; int i; };

static int cmp_desc(const void *a, const void *b)
{
    const struct rank_item *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

int gpp_lda_utility(const float *F, const int *labels, int N, int M, int C,
                    const gpp_lda_opts *opts, double *utility, int *order,
                    uint8_t *status, int *n_kept, gpp_error *err)
{
    gpp_lda_opts def;
    if (!opts) {
        gpp_lda_opts_default(&def);
        opts = &def;
    }
    if (N < 1 || M < 1 || C < 1 || M > LDA_MAX_DIM || C > LDA_MAX_DIM)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                             "LDA utility: N=%d, M=%d, C=%d (need N >= 1, 1 <= M, C <= %d)",
                             N, M, C, LDA_MAX_DIM);
    if (!(opts->var_tol >= 0.0) || !(opts->eps >= 0.0) || !(opts->dup_corr > 0.0))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                             "LDA utility: var_tol %g, eps %g must be >= 0 and dup_corr %g > 0",
                             opts->var_tol, opts->eps, opts->dup_corr);
    for (int n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= C)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "labels",
                                 "LDA utility: label %d of sample %d is outside [0, %d)",
                                 labels[n], n, C);

    int rc = GPP_ENOMEM;
    const size_t B = 256;   /* rows per centred block */
    double *mu = calloc((size_t)M, sizeof(double));
    double *mc = calloc((size_t)C * M, sizeof(double));
    int *cnt = calloc((size_t)C, sizeof(int));
    double *St = calloc((size_t)M * M, sizeof(double));
    double *blk = calloc(B * (size_t)M, sizeof(double));
    double *sw = calloc((size_t)M, sizeof(double));
    double *util = calloc((size_t)M, sizeof(double));
    uint8_t *st = calloc((size_t)M, 1);
    int *kept = calloc((size_t)M, sizeof(int));
    struct rank_item *it = calloc((size_t)M, sizeof *it);
    if (!mu || !mc || !cnt || !St || !blk || !sw || !util || !st || !kept || !it) {
        gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                      "LDA utility over %d neurons: out of memory", M);
        goto done;
    }

    for (int n = 0; n < N; n++) {
        const float *f = F + (size_t)n * M;
        double *m_c = mc + (size_t)labels[n] * M;
        for (int m = 0; m < M; m++) {
            mu[m] += f[m];
            m_c[m] += f[m];
        }
        cnt[labels[n]]++;
    }
    for (int m = 0; m < M; m++) mu[m] /= N;
    for (int c = 0; c < C; c++)
        if (cnt[c])
            for (int m = 0; m < M; m++) mc[(size_t)c * M + m] /= cnt[c];

    /* total scatter St = (F - mu)^T (F - mu) / N (upper triangle), by blocks;
     * within-class variances sw on the side */
    for (size_t n0 = 0; n0 < (size_t)N; n0 += B) {
        size_t nb = (size_t)N - n0 < B ? (size_t)N - n0 : B;
        for (size_t i = 0; i < nb; i++) {
            const float *f = F + (n0 + i) * M;
            const double *m_c = mc + (size_t)labels[n0 + i] * M;
            double *b = blk + i * M;
            for (int m = 0; m < M; m++) {
                b[m] = f[m] - mu[m];
                double e = f[m] - m_c[m];
                sw[m] += e * e;
            }
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, M, (int)nb, 1.0 / N, blk, M,
                    1.0, St, M);
    }
    for (int m = 0; m < M; m++) sw[m] /= N;

    /* dead, then duplicates of an earlier kept neuron */
    int nk = 0;
    for (int j = 0; j < M; j++) {
        double vj = St[(size_t)j * M + j];
        if (!(vj > opts->var_tol)) {
            st[j] = GPP_LDA_DEAD;
            continue;
        }
        int dup = 0;
        for (int q = 0; q < nk && !dup; q++) {
            int i = kept[q];   /* i < j: upper triangle entry (i, j) */
            double vi = St[(size_t)i * M + i];
            double rho = St[(size_t)i * M + j] / sqrt(vi * vj);
            if (fabs(rho) > opts->dup_corr) dup = 1;
        }
        if (dup) {
            st[j] = GPP_LDA_DUPLICATE;
            continue;
        }
        st[j] = GPP_LDA_KEPT;
        kept[nk++] = j;
    }

    /* utility v_j = sb / (sw + eps), sb = st - sw (St = Sw + Sb) */
    for (int q = 0; q < nk; q++) {
        int j = kept[q];
        double sb = St[(size_t)j * M + j] - sw[j];
        if (sb < 0.0) sb = 0.0;
        util[j] = sb / (sw[j] + opts->eps);
        if (!isfinite(util[j])) util[j] = HUGE_VAL;
    }
    for (int q = 0; q < nk; q++) {
        it[q].v = util[kept[q]];
        it[q].i = kept[q];
    }
    qsort(it, (size_t)nk, sizeof *it, cmp_desc);
    if (order) {
        for (int q = 0; q < nk; q++) order[q] = it[q].i;
        int p = nk;
        for (int j = 0; j < M; j++)
            if (st[j] != GPP_LDA_KEPT) order[p++] = j;
    }
    if (utility) memcpy(utility, util, sizeof(double) * (size_t)M);
    if (status) memcpy(status, st, (size_t)M);
    if (n_kept) *n_kept = nk;
    rc = 0;
done:
    free(mu); free(mc); free(cnt); free(St); free(blk); free(sw); free(util); free(st);
    free(kept); free(it);
    return rc;
}

/* Probe the top `m` of order; *good = acc >= target. */
static int probe_top(const int *order, int M, int m, uint8_t *mask, gpp_lda_probe_fn probe,
                     void *ctx, double target, double *acc, int *good, int *probes)
{
    memset(mask, 0, (size_t)M);
    for (int q = 0; q < m; q++) mask[order[q]] = 1;
    int rc = probe(ctx, mask, M, acc);
    (*probes)++;
    if (rc) return rc;
    *good = *acc >= target;
    return 0;
}

int gpp_lda_choose_count(const int *order, int M, int n_kept, double acc_all,
                         double max_drop, gpp_lda_search search,
                         gpp_lda_probe_fn probe, void *ctx, int *count,
                         double *acc_at, int *probes, gpp_error *err)
{
    if (M < 1 || n_kept < 0 || n_kept > M || !probe || !(max_drop >= 0.0) ||
        (search != GPP_LDA_SEARCH_BINARY && search != GPP_LDA_SEARCH_LINEAR))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.max_accuracy_drop",
                             "choose M': M=%d, n_kept=%d, max_drop=%g, search %d "
                             "(need 0 <= n_kept <= M, max_drop >= 0, a probe)",
                             M, n_kept, max_drop, (int)search);
    uint8_t *mask = malloc((size_t)M);
    if (!mask) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                                    "choose M' over %d neurons: out of memory", M);
    double target = acc_all - max_drop, acc = 0.0;
    int np = 0, good = 0, rc = 0;
    int best = M;
    double best_acc = acc_all;
    if (search == GPP_LDA_SEARCH_LINEAR) {
        for (int m = 1; m <= n_kept; m++) {
            rc = probe_top(order, M, m, mask, probe, ctx, target, &acc, &good, &np);
            if (rc) goto done;
            if (good) {
                best = m;
                best_acc = acc;
                break;
            }
        }
    } else if (n_kept > 0) {
        rc = probe_top(order, M, n_kept, mask, probe, ctx, target, &acc, &good, &np);
        if (rc) goto done;
        if (good) {
            int lo = 1, hi = n_kept;   /* hi is known good */
            double hi_acc = acc;
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                rc = probe_top(order, M, mid, mask, probe, ctx, target, &acc, &good, &np);
                if (rc) goto done;
                if (good) {
                    hi = mid;
                    hi_acc = acc;
                } else {
                    lo = mid + 1;
                }
            }
            best = hi;
            best_acc = hi_acc;
        }
    }
    *count = best;
    if (acc_at) *acc_at = best_acc;
done:
    if (probes) *probes = np;
    free(mask);
    return rc;
}
