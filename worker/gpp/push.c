/* worker/gpp/push.c - the push loss on the pre-decision features
 * (METHOD.md section 3): L_sep (diagonal or eigen form), L_cov, L_align,
 * and their gradient dL/dH, computed in double.
 *
 * Every term is a function of (Sw, Sb); its partials Gw = dL/dSw and
 * Gb = dL/dSb (symmetric) are accumulated as a diagonal part (gw, gb [M])
 * and, for L_cov and the eigen form, a full part (Gw, Gb [M, M]); then
 *     dL/dh_n = (2/B) (Gw e_n + Gb d_n)
 * (see gpp/gppmath.h for why the class means' dependence on H drops out).
 * d_n only takes C distinct values, so the full Gb costs a C x M x M GEMM. */
#include "gpp/gppmath.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lapack.h"

#define PUSH_MAX_DIM 65536   /* M, B and C above this are refused */

struct gpp_push_ws {
    int B, M, C;          /* capacity: batch, features, classes */
    int with_eigen;       /* LAPACK buffers allocated */
    double *E;            /* [B, M] within-class part e_n */
    double *Dc;           /* [C, M] class means, then mu_c - mu */
    double *Tc;           /* [C, M] scratch (scaled Dc, then Dc Gb) */
    double *T;            /* [B, M] scratch (E Gw) */
    double *mu;           /* [M] batch mean */
    int *cnt;             /* [C] samples per class in the batch */
    double *Sw, *Sb;      /* [M, M] scatter matrices, full symmetric */
    double *sw, *sb, *r;  /* [M] diagonals and Fisher ratios */
    double *gw, *gb;      /* [M] diagonal parts of dL/dSw, dL/dSb */
    double *Gw, *Gb;      /* [M, M] full parts of dL/dSw, dL/dSb */
    /* the eigen form (with_eigen) */
    double *A;            /* [M, M] rows: the generalized eigenvectors used */
    double *Bm;           /* [M, M] Sw + lambda I, then its Cholesky factor */
    double *X;            /* [C, M] U^T R^-1 (Sb = U U^T, Sw + lambda I = R^T R) */
    double *G;            /* [C, C] X X^T, then its eigenvectors (rows) */
    double *g;            /* [C] eigenvalues of X X^T ascending */
    double *w;            /* [M] all generalized eigenvalues ascending (0 where trivial) */
    double *work;         /* [lwork] */
    int *iwork;           /* [liwork] */
    int lwork, liwork;    /* dsyevd workspace sizes for C, from its query */
};

void gpp_push_opts_default(gpp_push_opts *o)
{
    memset(o, 0, sizeof *o);
    o->separation = GPP_PUSH_SEP_DIAG;
    o->eps = 1e-5;
    o->eigen_lambda = 1.0;
}

void gpp_push_ws_free(gpp_push_ws *ws)
{
    if (!ws) return;
    free(ws->E); free(ws->Dc); free(ws->Tc); free(ws->T); free(ws->mu); free(ws->cnt);
    free(ws->Sw); free(ws->Sb); free(ws->sw); free(ws->sb); free(ws->r);
    free(ws->gw); free(ws->gb); free(ws->Gw); free(ws->Gb);
    free(ws->A); free(ws->Bm); free(ws->X); free(ws->G); free(ws->g);
    free(ws->w); free(ws->work); free(ws->iwork);
    free(ws);
}

static double *dalloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(double));
}

int gpp_push_ws_new(int B, int M, int C, int with_eigen, gpp_push_ws **out, gpp_error *err)
{
    *out = NULL;
    if (B < 1 || M < 1 || C < 1 || B > PUSH_MAX_DIM || M > PUSH_MAX_DIM || C > PUSH_MAX_DIM)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push",
                             "push workspace: B=%d, M=%d, C=%d must be in [1, %d]",
                             B, M, C, PUSH_MAX_DIM);
    gpp_push_ws *ws = calloc(1, sizeof *ws);
    if (!ws) goto nomem;
    ws->B = B; ws->M = M; ws->C = C; ws->with_eigen = with_eigen != 0;
    size_t bm = (size_t)B * M, cm = (size_t)C * M, mm = (size_t)M * M;
    ws->E = dalloc(bm); ws->T = dalloc(bm);
    ws->Dc = dalloc(cm); ws->Tc = dalloc(cm);
    ws->mu = dalloc(M); ws->cnt = calloc((size_t)C, sizeof(int));
    ws->Sw = dalloc(mm); ws->Sb = dalloc(mm); ws->Gw = dalloc(mm); ws->Gb = dalloc(mm);
    ws->sw = dalloc(M); ws->sb = dalloc(M); ws->r = dalloc(M);
    ws->gw = dalloc(M); ws->gb = dalloc(M); ws->w = dalloc(M);
    if (!ws->E || !ws->T || !ws->Dc || !ws->Tc || !ws->mu || !ws->cnt || !ws->Sw ||
        !ws->Sb || !ws->Gw || !ws->Gb || !ws->sw || !ws->sb || !ws->r || !ws->gw ||
        !ws->gb || !ws->w)
        goto nomem;
    if (ws->with_eigen) {
        ws->A = dalloc(mm); ws->Bm = dalloc(mm); ws->X = dalloc(cm);
        ws->G = dalloc((size_t)C * C); ws->g = dalloc(C);
        if (!ws->A || !ws->Bm || !ws->X || !ws->G || !ws->g) goto nomem;
        /* workspace query for the C x C problem */
        int n = C, lw = -1, liw = -1, info = 0, iq = 0;
        double wq = 0.0;
        dsyevd_("V", "U", &n, ws->G, &n, ws->g, &wq, &lw, &iq, &liw, &info, 1, 1);
        if (info != 0) {
            gpp_push_ws_free(ws);
            return gpp_error_set(err, GPP_EINVAL, "internal", "push.separation",
                                 "dsyevd workspace query failed (info %d)", info);
        }
        ws->lwork = (int)wq + 1;
        ws->liwork = iq + 1;
        ws->work = dalloc((size_t)ws->lwork);
        ws->iwork = calloc((size_t)ws->liwork, sizeof(int));
        if (!ws->work || !ws->iwork) goto nomem;
    }
    *out = ws;
    return 0;
nomem:
    gpp_push_ws_free(ws);
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "push",
                         "push workspace for B=%d, M=%d, C=%d: out of memory", B, M, C);
}

const double *gpp_push_ws_ratios(const gpp_push_ws *ws) { return ws->r; }

void gpp_push_ws_scatter(const gpp_push_ws *ws, const double **Sw, const double **Sb)
{
    if (Sw) *Sw = ws->Sw;
    if (Sb) *Sb = ws->Sb;
}

const double *gpp_push_ws_eigenvalues(const gpp_push_ws *ws) { return ws->w; }

/* Copy the upper triangle of a row-major symmetric [M, M] into the lower. */
static void mirror_upper(double *S, int M)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < i; j++) S[(size_t)i * M + j] = S[(size_t)j * M + i];
}

/* Class means, batch mean, E, D, Sw, Sb, the diagonals and the ratios. */
static void push_stats(gpp_push_ws *ws, const float *H, const int *labels, int B, double eps,
                       int *present)
{
    int M = ws->M, C = ws->C;
    memset(ws->Dc, 0, sizeof(double) * (size_t)C * M);
    memset(ws->mu, 0, sizeof(double) * (size_t)M);
    memset(ws->cnt, 0, sizeof(int) * (size_t)C);
    for (int n = 0; n < B; n++) {
        const float *h = H + (size_t)n * M;
        double *mc = ws->Dc + (size_t)labels[n] * M;
        for (int m = 0; m < M; m++) {
            mc[m] += h[m];
            ws->mu[m] += h[m];
        }
        ws->cnt[labels[n]]++;
    }
    for (int m = 0; m < M; m++) ws->mu[m] /= B;
    *present = 0;
    for (int c = 0; c < C; c++) {
        double *mc = ws->Dc + (size_t)c * M;
        if (ws->cnt[c] == 0) continue;
        (*present)++;
        for (int m = 0; m < M; m++) mc[m] /= ws->cnt[c];
    }
    for (int n = 0; n < B; n++) {
        const float *h = H + (size_t)n * M;
        const double *mc = ws->Dc + (size_t)labels[n] * M;
        double *e = ws->E + (size_t)n * M;
        for (int m = 0; m < M; m++) e[m] = h[m] - mc[m];
    }
    /* Dc = mu_c - mu; Tc = sqrt(n_c / B) Dc so that Sb = Tc^T Tc */
    for (int c = 0; c < C; c++) {
        double *dc = ws->Dc + (size_t)c * M, *tc = ws->Tc + (size_t)c * M;
        double s = sqrt((double)ws->cnt[c] / B);
        for (int m = 0; m < M; m++) {
            dc[m] = ws->cnt[c] ? dc[m] - ws->mu[m] : 0.0;
            tc[m] = s * dc[m];
        }
    }
    /* Row-major C = A^T A: cblas upper triangle of the [M, M] result. */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, M, B, 1.0 / B, ws->E, M, 0.0,
                ws->Sw, M);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, M, C, 1.0, ws->Tc, M, 0.0, ws->Sb, M);
    mirror_upper(ws->Sw, M);
    mirror_upper(ws->Sb, M);
    for (int m = 0; m < M; m++) {
        ws->sw[m] = ws->Sw[(size_t)m * M + m];
        ws->sb[m] = ws->Sb[(size_t)m * M + m];
        ws->r[m] = ws->sb[m] / (ws->sw[m] + eps);
    }
}

/* Chain dL/dr [M] (scaled by wgt) into the diagonal partials gw, gb. */
static void chain_ratio(gpp_push_ws *ws, double wgt, double eps,
                        double (*dr)(const gpp_push_ws *, int, const void *), const void *ctx)
{
    for (int m = 0; m < ws->M; m++) {
        double g = wgt * dr(ws, m, ctx);
        double den = ws->sw[m] + eps;
        ws->gb[m] += g / den;
        ws->gw[m] -= g * ws->sb[m] / (den * den);
    }
}

struct sep_ctx { double eps; };
struct align_ctx { const uint8_t *top; double L, R; };

/* d(-(1/M) sum log(r + eps)) / dr_m */
static double dr_sep(const gpp_push_ws *ws, int m, const void *ctx)
{
    const struct sep_ctx *s = ctx;
    return -1.0 / (ws->M * (ws->r[m] + s->eps));
}

/* d(sum_{not S} r / sum r) / dr_m */
static double dr_align(const gpp_push_ws *ws, int m, const void *ctx)
{
    const struct align_ctx *a = ctx;
    return ((a->top[m] ? 0.0 : 1.0) - a->L) / a->R;
}

#define EIGEN_FLOOR 1e-6   /* lambda >= reg * 1e-6 when every feature is constant */

/* The eigen form: value, and its full partials into Gw, Gb (weight wgt).
 *
 * Sb = U U^T has rank <= C' - 1 (U's columns: sqrt(n_c / B) (mu_c - mu),
 * the rows of Tc), so only C' - 1 generalized eigenvalues of
 * Sb e = v (Sw + lambda I) e are non-trivial, and they are found in a C x C
 * problem: with Sw + lambda I = R^T R (Cholesky) and X = U^T R^-1, the
 * non-zero v are the eigenvalues of X X^T, and for X X^T y = v y (|y| = 1)
 * e = R^-1 X^T y / sqrt(v) is the eigenvector with e^T (Sw + lambda I) e = 1.
 * That costs one Cholesky (M^3 / 3) instead of a full M x M generalized
 * eigendecomposition (dsygvd: about 10x that). */
static int sep_eigen(gpp_push_ws *ws, const gpp_push_opts *o, int present, double wgt,
                     double *value, int *k_used, gpp_error *err)
{
    const int M = ws->M, C = ws->C;
    memcpy(ws->Bm, ws->Sw, sizeof(double) * (size_t)M * M);
    /* lambda = reg * tr(Sw) / M: scaling the features scales Sb, Sw and
     * lambda alike, so the eigenvalues cannot grow by scaling.  With a fixed
     * lambda they can, without bound, when the batch is smaller than M (Sw
     * then has a null space where only lambda holds v down): a lenet5 push
     * (M = 500, batch 64) diverged within 20 steps. */
    double tr = 0.0;
    for (int m = 0; m < M; m++) tr += ws->Sw[(size_t)m * M + m];
    const double c = o->eigen_lambda / M, lam = c * tr + EIGEN_FLOOR * o->eigen_lambda;
    for (int m = 0; m < M; m++) ws->Bm[(size_t)m * M + m] += lam;
    int n = M, info = 0;
    /* symmetric, so the row-major buffer is its own column-major view: the
     * column-major lower factor L (Bm = L L^T) reads row-major as R = L^T */
    dpotrf_("L", &n, ws->Bm, &n, &info, 1);
    if (info != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.eigen_reg",
                             "eigen separation: Sw + lambda I is not positive definite (leading "
                             "minor %d; features not finite?); raise push.eigen_reg", info);
    memcpy(ws->X, ws->Tc, sizeof(double) * (size_t)C * M);
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, C, M, 1.0,
                ws->Bm, M, ws->X, M);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, C, M, 1.0, ws->X, M, 0.0, ws->G, C);
    mirror_upper(ws->G, C);
    int nc = C;
    dsyevd_("V", "U", &nc, ws->G, &nc, ws->g, ws->work, &ws->lwork, ws->iwork, &ws->liwork,
            &info, 1, 1);
    if (info != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.eigen_reg",
                             "eigen separation: dsyevd failed (info %d; features not finite?)",
                             info);
    /* all M generalized eigenvalues, ascending: the C' - 1 non-trivial ones
     * are the largest of X X^T's, the rest are 0 */
    for (int t = 0; t < M; t++) ws->w[M - 1 - t] = t < C ? ws->g[C - 1 - t] : 0.0;
    int nt = present - 1 < M ? present - 1 : M;   /* non-trivial: rank(Sb) <= C' - 1 */
    int k = o->eigen_k > 0 && o->eigen_k < nt ? o->eigen_k : nt;
    *k_used = k > 0 ? k : 0;
    *value = 0.0;
    if (k <= 0) return 0;
    int first = M - nt;   /* ascending: the non-trivial ones are the last nt */
    for (int i = first; i < first + k; i++) *value -= ws->w[i] / k;
    if (wgt == 0.0) return 0;
    /* dv/dSb = e e^T, dv/dSw = -v (e e^T + c |e|^2 I) with
     * e^T (Sw + lambda I) e = 1 and dlambda/dSw = c I. */
    for (int i = first; i < first + k; i++) {
        const double v = ws->w[i];
        if (!(v > 0.0)) continue;   /* every class mean the same: no direction */
        /* eigenvector of X X^T: column of the column-major result = row here */
        const double *y = ws->G + (size_t)(i - (M - C)) * C;
        double *e = ws->A + (size_t)i * M;
        cblas_dgemv(CblasRowMajor, CblasTrans, C, M, 1.0 / sqrt(v), ws->X, M, y, 1, 0.0, e, 1);
        cblas_dtrsv(CblasRowMajor, CblasUpper, CblasNoTrans, CblasNonUnit, M, ws->Bm, M, e, 1);
        cblas_dsyr(CblasRowMajor, CblasUpper, M, -wgt / k, e, 1, ws->Gb, M);
        cblas_dsyr(CblasRowMajor, CblasUpper, M, wgt * v / k, e, 1, ws->Gw, M);
        const double d = wgt * v / k * c * cblas_ddot(M, e, 1, e, 1);
        for (int m = 0; m < M; m++) ws->Gw[(size_t)m * M + m] += d;
    }
    return 0;
}

int gpp_push_loss(gpp_push_ws *ws, const float *H, const int *labels, int B,
                  const gpp_push_opts *o, gpp_push_result *res, float *dH,
                  gpp_error *err)
{
    int M = ws->M, C = ws->C;
    if (B < 1 || B > ws->B)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push",
                             "push loss: batch of %d samples, workspace holds 1..%d", B,
                             ws->B);
    if (!(o->eps > 0.0) || !isfinite(o->eps))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.eps",
                             "push loss: eps must be > 0, got %g", o->eps);
    if (o->separation != GPP_PUSH_SEP_DIAG && o->separation != GPP_PUSH_SEP_EIGEN)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.separation",
                             "push loss: unknown separation form %d", (int)o->separation);
    if (o->separation == GPP_PUSH_SEP_EIGEN && !ws->with_eigen)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.separation",
                             "push loss: the eigen form needs a workspace made with_eigen");
    if (o->separation == GPP_PUSH_SEP_EIGEN && (!(o->eigen_lambda > 0.0) ||
                                                !isfinite(o->eigen_lambda)))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push.eigen_lambda",
                             "push loss: eigen_lambda must be > 0, got %g", o->eigen_lambda);
    for (int n = 0; n < B; n++)
        if (labels[n] < 0 || labels[n] >= C)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "labels",
                                 "push loss: label %d of sample %d is outside [0, %d)",
                                 labels[n], n, C);

    const double eps = o->eps;
    int present = 0;
    push_stats(ws, H, labels, B, eps, &present);

    size_t mm = (size_t)M * M;
    int full = 0;   /* Gw / Gb full parts in use */
    memset(ws->gw, 0, sizeof(double) * (size_t)M);
    memset(ws->gb, 0, sizeof(double) * (size_t)M);
    gpp_push_result r = {0};
    r.classes_present = present;

    /* ---- L_sep */
    if (o->separation == GPP_PUSH_SEP_DIAG) {
        double s = 0.0;
        for (int m = 0; m < M; m++) s += log(ws->r[m] + eps);
        r.sep = -s / M;
        if (o->alpha != 0.0) {
            struct sep_ctx sc = {eps};
            chain_ratio(ws, o->alpha, eps, dr_sep, &sc);
        }
    } else {
        if (o->alpha != 0.0) {
            memset(ws->Gw, 0, sizeof(double) * mm);
            memset(ws->Gb, 0, sizeof(double) * mm);
            full = 1;
        }
        int rc = sep_eigen(ws, o, present, o->alpha, &r.sep, &r.eigen_k, err);
        if (rc) return rc;
    }

    /* ---- L_cov = (||offdiag Sw||^2 + ||offdiag Sb||^2) / ||diag(Sw + Sb)||^2 */
    double num = 0.0, k0 = 0.0;
    for (int i = 0; i < M; i++) {
        const double *wi = ws->Sw + (size_t)i * M, *bi = ws->Sb + (size_t)i * M;
        for (int j = 0; j < M; j++)
            if (j != i) num += wi[j] * wi[j] + bi[j] * bi[j];
        double t = ws->sw[i] + ws->sb[i];
        k0 += t * t;
    }
    double K = o->cov_denom > 0.0 ? o->cov_denom : k0;
    r.cov_offdiag = num;
    r.cov_denom = K;
    r.cov = K > 0.0 ? num / K : 0.0;
    if (o->beta != 0.0 && K > 0.0) {
        if (!full) {
            memset(ws->Gw, 0, sizeof(double) * mm);
            memset(ws->Gb, 0, sizeof(double) * mm);
            full = 1;
        }
        /* only the upper triangles of Gw / Gb are read (dsymm below) */
        double c = 2.0 * o->beta / K;
        for (int i = 0; i < M; i++)
            for (int j = i + 1; j < M; j++) {
                ws->Gw[(size_t)i * M + j] += c * ws->Sw[(size_t)i * M + j];
                ws->Gb[(size_t)i * M + j] += c * ws->Sb[(size_t)i * M + j];
            }
        if (o->cov_exact && o->cov_denom <= 0.0) {
            /* d(num/K)/dS_mm = -(num/K^2) * 2 (sw_m + sb_m), for Sw and Sb alike */
            double ce = -o->beta * num / (K * K);
            for (int m = 0; m < M; m++) {
                double g = ce * 2.0 * (ws->sw[m] + ws->sb[m]);
                ws->gw[m] += g;
                ws->gb[m] += g;
            }
        }
    }

    /* ---- L_align = sum_{m not in S} p_m, p_m = r_m / sum r */
    double R = 0.0;
    for (int m = 0; m < M; m++) R += ws->r[m];
    r.ratio_sum = R;
    if (o->top && R > 0.0) {
        double out = 0.0;
        for (int m = 0; m < M; m++)
            if (!o->top[m]) out += ws->r[m];
        r.align = out / R;
        r.top_share = 1.0 - r.align;
        if (o->gamma != 0.0) {
            struct align_ctx ac = {o->top, r.align, R};
            chain_ratio(ws, o->gamma, eps, dr_align, &ac);
        }
    }

    r.loss = o->alpha * r.sep + o->beta * r.cov + o->gamma * r.align;
    if (res) *res = r;
    if (!dH) return 0;

    /* ---- dL/dh_n = (2/B) (Gw e_n + Gb d_n) */
    const double s = 2.0 / B;
    if (full) {
        /* T = E Gw, Tc = Dc Gb (symmetric, upper triangles) */
        cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, B, M, 1.0, ws->Gw, M, ws->E, M,
                    0.0, ws->T, M);
        cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, C, M, 1.0, ws->Gb, M, ws->Dc, M,
                    0.0, ws->Tc, M);
    }
    for (int n = 0; n < B; n++) {
        const double *e = ws->E + (size_t)n * M;
        const double *d = ws->Dc + (size_t)labels[n] * M;
        const double *te = ws->T + (size_t)n * M;
        const double *td = ws->Tc + (size_t)labels[n] * M;
        float *g = dH + (size_t)n * M;
        for (int m = 0; m < M; m++) {
            double v = ws->gw[m] * e[m] + ws->gb[m] * d[m];
            if (full) v += te[m] + td[m];
            g[m] += (float)(s * v);
        }
    }
    return 0;
}

void gpp_push_ema_update(double *ema, const double *r, int M, double decay, int first)
{
    for (int m = 0; m < M; m++)
        ema[m] = first ? r[m] : decay * ema[m] + (1.0 - decay) * r[m];
}

struct rank_item { double v; int i; };

/* descending value, ascending index */
static int cmp_desc(const void *a, const void *b)
{
    const struct rank_item *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

int gpp_push_top_set(const double *score, int M, int k, uint8_t *top, gpp_error *err)
{
    if (M < 1) return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "push",
                                    "top set: M=%d must be >= 1", M);
    struct rank_item *it = malloc(sizeof *it * (size_t)M);
    if (!it) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "push",
                                  "top set of %d: out of memory", M);
    for (int m = 0; m < M; m++) {
        it[m].v = isnan(score[m]) ? -INFINITY : score[m];
        it[m].i = m;
    }
    qsort(it, (size_t)M, sizeof *it, cmp_desc);
    if (k < 0) k = 0;
    if (k > M) k = M;
    memset(top, 0, (size_t)M);
    for (int j = 0; j < k; j++) top[it[j].i] = 1;
    free(it);
    return 0;
}
