/* gpp/gppmath.h - the numerical core of Grow-Push-Prune that does not need
 * the network engine (see ../shared/design/METHOD.md, sections 3 and 4):
 *
 *   gpp_push_*   the push loss on the pre-decision features: L_sep (diagonal
 *                or `eigen` form), L_cov, L_align, their analytic gradient
 *                dL/dH, and the EMA / top-set helpers for L_align;
 *   gpp_lda_*    the pre-decision LDA utility used to prune (dead and
 *                duplicate neurons dropped, per-neuron sigma_b^2/sigma_w^2),
 *                and the search for the smallest kept count M';
 *   gpp_lsq_*    least-squares recovery of a consumer layer after pruning;
 *   gpp_prune_*  the per-layer threshold (eta * std) and ratio rules, and the
 *                L1-norm and random baseline selections.
 *
 * Everything works on plain row-major arrays (float in, float out, like the
 * engine) and computes statistics in double (OpenBLAS dsyrk/dgemm, LAPACK
 * dpotrf/dsyevd).  Functions that can fail return 0 or a negative GPP_E*
 * code and fill `err` (may be NULL).  No global state: every function is
 * safe to call from several threads on different objects.
 *
 * Notation (METHOD.md): a batch of B samples with features h_n (rows of H
 * [B, M]) and labels y_n in [0, C); mu_c class means over the batch, mu the
 * batch mean, e_n = h_n - mu_{y_n}, d_n = mu_{y_n} - mu, Sw = E^T E / B,
 * Sb = D^T D / B, sigma_w^2(m) = Sw[m,m], sigma_b^2(m) = Sb[m,m] and the
 * Fisher ratio r_m = sigma_b^2(m) / (sigma_w^2(m) + eps).
 *
 * Gradient note: for ANY loss L(Sw, Sb) with symmetric partials
 * Gw = dL/dSw, Gb = dL/dSb, the gradient with respect to the features is
 *     dL/dh_n = (2/B) (Gw e_n + Gb d_n),
 * although mu_c and mu depend on H too: those extra terms vanish because
 * sum_{n in c} e_n = 0 for every class and d_n is constant within a class
 * with sum_n d_n = 0.  For L_cov (Gw = 2 O_w / K, O = S - diag S) this is
 * METHOD.md's (4/B)(O_w e_n + O_b d_n) / K, checked against finite
 * differences and PyTorch in tests/unit/gpp.
 */
#ifndef GPP_GPPMATH_H
#define GPP_GPPMATH_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"
#include "gpp/rng.h"

/* ==== push loss ============================================================ */

typedef enum gpp_push_sep {
    GPP_PUSH_SEP_DIAG = 0,   /* L_sep = -(1/M) sum_m log(r_m + eps) */
    GPP_PUSH_SEP_EIGEN = 1,  /* L_sep = -mean of the smallest k non-trivial
                                eigenvalues of Sb e = v (Sw + lambda I) e */
} gpp_push_sep;

typedef struct gpp_push_opts {
    gpp_push_sep separation; /* form of L_sep (default DIAG) */
    double alpha;            /* weight of L_sep (already ramped and scaled by push.lambda).
                                Diagonal form: -log r_m is a barrier that keeps every
                                neuron discriminative, so L_align can concentrate r on
                                M' of M neurons only when alpha/gamma <= M/(4 (M - M'))
                                (see tests/unit/gpp/test_gpp_push.c run_push) */
    double beta;             /* weight of L_cov */
    double gamma;            /* weight of L_align */
    double eps;              /* eps in r = sb/(sw + eps) and in log(r + eps); default 1e-5 */
    double eigen_lambda;     /* the eigen form's lambda is eigen_lambda * (tr(Sw) / M + 1e-6):
                                relative to the features' scale; > 0, default 1 */
    int eigen_k;             /* eigenvalues averaged by the eigen form; 0 = all C'-1
                                non-trivial ones (C' = classes present in the batch);
                                capped at C'-1 */
    double cov_denom;        /* > 0: use this as L_cov's denominator; <= 0: the batch's
                                ||diag(Sw + Sb)||^2 (default 0) */
    int cov_exact;           /* 0 (default, METHOD.md): the denominator is a constant in
                                the gradient; 1: differentiate it too (only when
                                cov_denom <= 0) */
    const uint8_t *top;      /* [M] 1 = neuron in the top set S of L_align, or NULL
                                (then L_align = 0 and has no gradient) */
} gpp_push_opts;

/* Fill *o with the defaults above (alpha = beta = gamma = 0: the caller sets
 * the ramped weights). */
void gpp_push_opts_default(gpp_push_opts *o);

typedef struct gpp_push_result {
    double loss;         /* alpha*sep + beta*cov + gamma*align */
    double sep;          /* L_sep of the chosen form (unweighted) */
    double cov;          /* L_cov (unweighted); 0 when the denominator is 0 */
    double align;        /* L_align = sum_{m not in S} r_m / sum r; 0 without a top set
                            or when sum r == 0 */
    double cov_offdiag;  /* ||offdiag Sw||_F^2 + ||offdiag Sb||_F^2 (L_cov's numerator) */
    double cov_denom;    /* the denominator used (given or the batch's) */
    double top_share;    /* 1 - align with a top set: the share of sum r held by S; else 0 */
    double ratio_sum;    /* sum_m r_m */
    int eigen_k;         /* eigenvalues used by the eigen form (0 in the diag form) */
    int classes_present; /* classes with at least one sample in the batch */
} gpp_push_result;

typedef struct gpp_push_ws gpp_push_ws;

/* A workspace for batches of up to B samples of M features in C classes
 * (B, M, C >= 1); `with_eigen` != 0 also sizes the LAPACK buffers of the
 * eigen form (2 more M x M matrices).  Everything gpp_push_loss needs is
 * allocated here, once.  *out is NULL on failure.  Free with
 * gpp_push_ws_free. */
int gpp_push_ws_new(int B, int M, int C, int with_eigen, gpp_push_ws **out, gpp_error *err);

/* Free a workspace (NULL is fine). */
void gpp_push_ws_free(gpp_push_ws *ws);

/* The push loss of one batch: H [B, M] features (row-major), labels [B] in
 * [0, C); B <= the workspace's B.  Fills *res (may be NULL) and, when dH
 * [B, M] is not NULL, ADDS alpha*dL_sep/dH + beta*dL_cov/dH +
 * gamma*dL_align/dH to it (so the caller can pass the pre-decision layer's
 * backward signal).  Every term's value is computed whatever its weight
 * (for logging); a term with weight 0 adds no gradient.  The eigen form
 * needs a workspace made with with_eigen and fails (GPP_EINVAL) when
 * Sw + lambda I is not positive definite.  Allocates nothing.  Classes
 * with no sample in the batch are skipped; METHOD.md wants at least 2 per
 * class.  After the call, gpp_push_ws_ratios / _scatter give r, Sw, Sb of
 * this batch.  Returns 0, GPP_EINVAL (bad size, label, option). */
int gpp_push_loss(gpp_push_ws *ws, const float *H, const int *labels, int B,
                  const gpp_push_opts *opts, gpp_push_result *res, float *dH,
                  gpp_error *err);

/* The Fisher ratios r [M] of the last gpp_push_loss batch (owned by ws,
 * valid until the next call). */
const double *gpp_push_ws_ratios(const gpp_push_ws *ws);

/* Sw and Sb [M, M] (full symmetric, row-major) of the last batch (owned by
 * ws).  Either pointer may be NULL. */
void gpp_push_ws_scatter(const gpp_push_ws *ws, const double **Sw, const double **Sb);

/* The eigenvalues [M] (ascending) of the last eigen-form batch (owned by
 * ws; all zero before the first eigen call or without with_eigen). */
const double *gpp_push_ws_eigenvalues(const gpp_push_ws *ws);

/* Exponential moving average of the Fisher ratios, for L_align's top set:
 * ema[m] = decay*ema[m] + (1 - decay)*r[m], or ema[m] = r[m] when `first`
 * (the first batch of a push).  decay in [0, 1]. */
void gpp_push_ema_update(double *ema, const double *r, int M, double decay, int first);

/* The top set S: top[m] = 1 for the k neurons of largest score (ties: the
 * lower index wins), 0 for the others; k is clamped to [0, M].  Call once
 * per epoch with the EMA.  Returns 0 or GPP_ENOMEM (a sort buffer of M
 * entries is allocated per call). */
int gpp_push_top_set(const double *score, int M, int k, uint8_t *top, gpp_error *err);

/* ==== pre-decision LDA utility (prune, METHOD.md 4.1) ======================= */

enum {
    GPP_LDA_KEPT = 0,        /* ranked by its utility */
    GPP_LDA_DEAD = 1,        /* total variance <= var_tol */
    GPP_LDA_DUPLICATE = 2,   /* |correlation| > dup_corr with an earlier kept neuron */
};

typedef struct gpp_lda_opts {
    double var_tol;   /* a neuron whose total variance is <= this is dead; default 1e-10 */
    double dup_corr;  /* |Pearson correlation| above this with an earlier (lower
                         index) kept neuron makes a duplicate; default 0.999 */
    double eps;       /* utility v_j = sb(j) / (sw(j) + eps); default 1e-10 */
} gpp_lda_opts;

/* Fill *o with the defaults above. */
void gpp_lda_opts_default(gpp_lda_opts *o);

/* The per-neuron discriminant utility of features F [N, M] (row-major)
 * with labels [N] in [0, C): dead and duplicate neurons are dropped (in
 * index order, a neuron is compared with the kept ones before it), Sw and
 * Sb are taken over all N samples, and each kept neuron's utility is
 * v_j = sigma_b^2(j) / (sigma_w^2(j) + eps) (the diagonal form: after a
 * push the scatter matrices are near-diagonal).  Outputs (any may be NULL):
 * utility [M] (0 for dead / duplicate), order [M] (neuron indices by
 * descending utility, ties by index, then the dead and duplicate ones by
 * index), status [M] (GPP_LDA_*), *n_kept (neurons neither dead nor
 * duplicate: order[0 .. n_kept) are they).  Allocates O(M^2 + M) doubles
 * per call (the correlation matrix).  Returns 0, GPP_EINVAL, GPP_ENOMEM. */
int gpp_lda_utility(const float *F, const int *labels, int N, int M, int C,
                    const gpp_lda_opts *opts, double *utility, int *order,
                    uint8_t *status, int *n_kept, gpp_error *err);

/* The caller's accuracy probe: the validation accuracy (in any unit, as
 * long as acc_all uses the same) with only the neurons where kept[m] == 1.
 * Return 0, or a negative code to abort the search (returned as is). */
typedef int (*gpp_lda_probe_fn)(void *ctx, const uint8_t *kept, int M, double *acc);

typedef enum gpp_lda_search {
    GPP_LDA_SEARCH_BINARY = 0,  /* O(log M) probes; assumes accuracy grows with M' */
    GPP_LDA_SEARCH_LINEAR = 1,  /* probes M' = 1, 2, ... until one is good: exact */
} gpp_lda_search;

/* The smallest M' in [1, n_kept] such that probe(top M' of `order`) >=
 * acc_all - max_drop, where order [M] and n_kept come from
 * gpp_lda_utility.  When no such M' exists (or n_kept == 0), *count = M
 * (keep every neuron).  Outputs: *count, *acc_at (the probe's accuracy at
 * *count; acc_all when *count == M; may be NULL), *probes (probe calls;
 * may be NULL).  Allocates the M-byte mask per call.  Returns 0,
 * GPP_EINVAL, GPP_ENOMEM, or the probe's negative code. */
int gpp_lda_choose_count(const int *order, int M, int n_kept, double acc_all,
                         double max_drop, gpp_lda_search search,
                         gpp_lda_probe_fn probe, void *ctx, int *count,
                         double *acc_at, int *probes, gpp_error *err);

/* ==== least-squares recovery (METHOD.md 4.5) =============================== */

/* A streaming least-squares fit of W [K, O] minimising
 *     ||X W - Y||^2 + rho_abs ||W||^2,   rho_abs = rho * mean(diag(X^T X)),
 * from row blocks of X [n, K] (the consumer layer's inputs after pruning,
 * e.g. im2col rows; append a column of ones to fit a bias) and Y [n, O] (the
 * unpruned layer's outputs).  Only X^T X [K, K], X^T Y [K, O] and sum Y^2 are
 * kept (in double), so N is unbounded; K x K doubles must fit in memory. */
typedef struct gpp_lsq gpp_lsq;

/* A fit of K inputs and O outputs (K, O >= 1). *out is NULL on failure.
 * Free with gpp_lsq_free. */
int gpp_lsq_new(int K, int O, gpp_lsq **out, gpp_error *err);

/* Free (NULL is fine). */
void gpp_lsq_free(gpp_lsq *q);

/* Forget every row added. */
void gpp_lsq_reset(gpp_lsq *q);

/* Add n rows: X [n, K], Y [n, O] (row-major).  Allocates nothing. */
void gpp_lsq_add(gpp_lsq *q, const float *X, const float *Y, size_t n);

/* The rows added so far. */
size_t gpp_lsq_rows(const gpp_lsq *q);

/* ||X W - Y||^2 over the rows added, for W [K, O] (from the accumulated
 * sums, in double, one K x K x O product; clamped at 0).  Uses q's
 * scratch buffers: not concurrently on the same q.  Allocates nothing. */
double gpp_lsq_residual(gpp_lsq *q, const float *W);

/* Solve for W [K, O] (written) by Cholesky in double with the relative
 * ridge rho >= 0 (1e-6 is a good default; 0 = plain normal equations).
 * When the regularised X^T X is not numerically positive definite the
 * ridge is raised (x100 per retry, starting at 1e-12 * mean diagonal) until
 * it is.  *rho_used (may be NULL) receives the absolute ridge applied.
 * With no rows added W = 0.  Allocates nothing.  Returns 0, GPP_EINVAL
 * (rho < 0 or not finite, or a non-finite accumulated sum). */
int gpp_lsq_solve(gpp_lsq *q, double rho, float *W, double *rho_used, gpp_error *err);

/* One-shot fit: W [K, O] from X [N, K], Y [N, O] with relative ridge rho;
 * *res_before = ||X W_old - Y||^2 when W_old [K, O] is given (else
 * ||Y||^2), *res_after = ||X W - Y||^2 (either may be NULL).  Returns 0 or
 * a negative GPP_E* code. */
int gpp_lsq_fit(const float *X, const float *Y, size_t N, int K, int O, double rho,
                const float *W_old, float *W, double *res_before, double *res_after,
                gpp_error *err);

/* ==== per-layer channel selection (METHOD.md 4.3, baselines) ================ */

/* The eta-threshold rule for one layer (or one Inception branch) of n
 * channels with utilities u [n] (finite, >= 0): t = eta * std(u_i > 0)
 * (population standard deviation of the non-zero utilities; 0 when fewer
 * than two), candidates are the channels with u < t plus every channel
 * with u == 0; at most floor(max_fraction * n) of them and never so many
 * that fewer than min_channels stay are removed, the lowest utilities
 * first (ties: lower index first).  Writes remove [n] (1 = remove),
 * *n_remove and *threshold (either may be NULL).  Allocates a sort buffer
 * per call.  Returns 0, GPP_EINVAL (n < 1, bad u, eta < 0, max_fraction
 * outside [0, 1], min_channels < 0), GPP_ENOMEM. */
int gpp_prune_threshold(const double *u, int n, double eta, double max_fraction,
                        int min_channels, uint8_t *remove, int *n_remove,
                        double *threshold, gpp_error *err);

/* The `ratio` rule: remove the floor(ratio * n) channels of lowest utility
 * (ties: lower index first), keeping at least min_channels.  ratio in
 * [0, 1].  Same outputs and codes as gpp_prune_threshold. */
int gpp_prune_ratio(const double *u, int n, double ratio, int min_channels,
                    uint8_t *remove, int *n_remove, gpp_error *err);

/* Li et al. (2016) filter L1 norms: norms[o] = sum |w[o, :]| of a weight
 * w [OC, per] (conv [OC, IC, KH, KW] has per = IC*KH*KW; fc [O, I] has
 * per = I), in double. */
void gpp_prune_l1_norms(const float *w, int OC, size_t per, double *norms);

/* The L1-norm baseline: remove [OC] = 1 for the `count` filters of the
 * smallest L1 norm (ties: lower index first), 0 elsewhere; count in
 * [0, OC].  Returns 0, GPP_EINVAL, GPP_ENOMEM. */
int gpp_prune_l1_select(const float *w, int OC, size_t per, int count, uint8_t *remove,
                        gpp_error *err);

/* The random baseline: remove [OC] = 1 for `count` channels drawn uniformly
 * without replacement from rng (seeded from the job's seed: same seed, same
 * channels).  Returns 0, GPP_EINVAL, GPP_ENOMEM. */
int gpp_prune_random_select(gpp_rng *rng, int OC, int count, uint8_t *remove,
                            gpp_error *err);

#endif
