/* worker/gpp/lsq.c - least-squares recovery of a consumer layer after
 * pruning (METHOD.md 4.5): ridge-regularised normal equations accumulated
 * in double from row blocks, solved by Cholesky (LAPACK dpotrf/dpotrs). */
#include "gpp/gppmath.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lapack.h"

#define LSQ_MAX_DIM 46340    /* K, O: K*K stays within int for LAPACK */
#define LSQ_BLOCK 256        /* rows converted to double at a time */

struct gpp_lsq {
    int K, O;       /* inputs, outputs */
    size_t n;       /* rows added */
    double *A;      /* [K, K] X^T X (upper triangle accumulated, mirrored on solve) */
    double *XtY;    /* [K, O] X^T Y */
    double yy;      /* sum Y^2 */
    double *xb;     /* [LSQ_BLOCK, K] block of X in double */
    double *yb;     /* [LSQ_BLOCK, O] block of Y in double */
    double *L;      /* [K, K] factor */
    double *Wd;     /* [O, K] solution, column-major [K, O] */
    double *Wr;     /* [K, O] scratch: W in double */
    double *AW;     /* [K, O] scratch: A W */
};

void gpp_lsq_free(gpp_lsq *q)
{
    if (!q) return;
    free(q->A); free(q->XtY); free(q->xb); free(q->yb); free(q->L); free(q->Wd);
    free(q->Wr); free(q->AW);
    free(q);
}

int gpp_lsq_new(int K, int O, gpp_lsq **out, gpp_error *err)
{
    *out = NULL;
    if (K < 1 || O < 1 || K > LSQ_MAX_DIM || O > LSQ_MAX_DIM)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.reconstruct",
                             "least squares: K=%d, O=%d must be in [1, %d]", K, O,
                             LSQ_MAX_DIM);
    gpp_lsq *q = calloc(1, sizeof *q);
    if (!q) goto nomem;
    q->K = K; q->O = O;
    q->A = calloc((size_t)K * K, sizeof(double));
    q->L = calloc((size_t)K * K, sizeof(double));
    q->XtY = calloc((size_t)K * O, sizeof(double));
    q->Wd = calloc((size_t)K * O, sizeof(double));
    q->Wr = calloc((size_t)K * O, sizeof(double));
    q->AW = calloc((size_t)K * O, sizeof(double));
    q->xb = calloc((size_t)LSQ_BLOCK * K, sizeof(double));
    q->yb = calloc((size_t)LSQ_BLOCK * O, sizeof(double));
    if (!q->A || !q->L || !q->XtY || !q->Wd || !q->Wr || !q->AW || !q->xb || !q->yb)
        goto nomem;
    *out = q;
    return 0;
nomem:
    gpp_lsq_free(q);
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune.reconstruct",
                         "least squares with K=%d, O=%d: out of memory", K, O);
}

void gpp_lsq_reset(gpp_lsq *q)
{
    memset(q->A, 0, sizeof(double) * (size_t)q->K * q->K);
    memset(q->XtY, 0, sizeof(double) * (size_t)q->K * q->O);
    q->yy = 0.0;
    q->n = 0;
}

size_t gpp_lsq_rows(const gpp_lsq *q) { return q->n; }

void gpp_lsq_add(gpp_lsq *q, const float *X, const float *Y, size_t n)
{
    int K = q->K, O = q->O;
    for (size_t r0 = 0; r0 < n; r0 += LSQ_BLOCK) {
        size_t nb = n - r0 < LSQ_BLOCK ? n - r0 : LSQ_BLOCK;
        for (size_t i = 0; i < nb * (size_t)K; i++) q->xb[i] = X[r0 * K + i];
        for (size_t i = 0; i < nb * (size_t)O; i++) {
            double y = Y[r0 * O + i];
            q->yb[i] = y;
            q->yy += y * y;
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, K, (int)nb, 1.0, q->xb, K, 1.0,
                    q->A, K);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, O, (int)nb, 1.0, q->xb, K,
                    q->yb, O, 1.0, q->XtY, O);
    }
    q->n += n;
}

double gpp_lsq_residual(gpp_lsq *q, const float *W)
{
    /* ||XW - Y||^2 = sum(W .* (A W)) - 2 sum(W .* X^T Y) + sum Y^2 */
    int K = q->K, O = q->O;
    size_t ko = (size_t)K * O;
    for (size_t i = 0; i < ko; i++) q->Wr[i] = W[i];
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, K, O, 1.0, q->A, K, q->Wr, O, 0.0,
                q->AW, O);
    double quad = 0.0, lin = 0.0;
    for (size_t i = 0; i < ko; i++) {
        quad += q->Wr[i] * q->AW[i];
        lin += q->Wr[i] * q->XtY[i];
    }
    double total = quad - 2.0 * lin + q->yy;
    return total > 0.0 ? total : 0.0;
}

int gpp_lsq_solve(gpp_lsq *q, double rho, float *W, double *rho_used, gpp_error *err)
{
    int K = q->K, O = q->O;
    if (!(rho >= 0.0) || !isfinite(rho))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.reconstruct",
                             "least squares: ridge %g must be finite and >= 0", rho);
    if (q->n == 0) {
        memset(W, 0, sizeof(float) * (size_t)K * O);
        if (rho_used) *rho_used = 0.0;
        return 0;
    }
    double tr = 0.0;
    for (int i = 0; i < K; i++) tr += q->A[(size_t)i * K + i];
    double mean_diag = tr / K;
    if (!isfinite(mean_diag) || !isfinite(q->yy))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.reconstruct",
                             "least squares: the inputs or outputs hold inf or NaN");
    double floor_ridge = 1e-12 * (mean_diag > 0.0 ? mean_diag : 1.0);
    double ridge = rho * mean_diag;
    int info = 0;
    for (int attempt = 0; attempt < 12; attempt++) {
        /* the upper triangle of the row-major A is the lower of the
         * column-major view: factor 'L' */
        memcpy(q->L, q->A, sizeof(double) * (size_t)K * K);
        for (int i = 0; i < K; i++) q->L[(size_t)i * K + i] += ridge;
        dpotrf_("L", &K, q->L, &K, &info, 1);
        if (info == 0) break;
        ridge = ridge < floor_ridge ? floor_ridge : ridge * 100.0;
    }
    if (info != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.reconstruct",
                             "least squares: X^T X + ridge is not positive definite even "
                             "with ridge %g (info %d)", ridge, info);
    for (int i = 0; i < K; i++)
        for (int o = 0; o < O; o++) q->Wd[(size_t)o * K + i] = q->XtY[(size_t)i * O + o];
    dpotrs_("L", &K, &O, q->L, &K, q->Wd, &K, &info, 1);
    if (info != 0)
        return gpp_error_set(err, GPP_EINVAL, "internal", "prune.reconstruct",
                             "least squares: dpotrs failed (info %d)", info);
    for (int i = 0; i < K; i++)
        for (int o = 0; o < O; o++) W[(size_t)i * O + o] = (float)q->Wd[(size_t)o * K + i];
    if (rho_used) *rho_used = ridge;
    return 0;
}

int gpp_lsq_fit(const float *X, const float *Y, size_t N, int K, int O, double rho,
                const float *W_old, float *W, double *res_before, double *res_after,
                gpp_error *err)
{
    gpp_lsq *q = NULL;
    int rc = gpp_lsq_new(K, O, &q, err);
    if (rc) return rc;
    gpp_lsq_add(q, X, Y, N);
    if (res_before) *res_before = W_old ? gpp_lsq_residual(q, W_old) : q->yy;
    rc = gpp_lsq_solve(q, rho, W, NULL, err);
    if (rc == 0 && res_after) *res_after = gpp_lsq_residual(q, W);
    gpp_lsq_free(q);
    return rc;
}
