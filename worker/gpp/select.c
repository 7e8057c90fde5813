/* worker/gpp/select.c - which channels of a layer to remove: the eta * std
 * threshold and the ratio rule of METHOD.md 4.3, and the L1-norm and
 * random baselines of issue 4. */
#include "gpp/gppmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SELECT_MAX_CHANNELS (1 << 24)

struct rank_item { double v; int i; };

/* ascending value, ascending index */
static int cmp_asc(const void *a, const void *b)
{
    const struct rank_item *x = a, *y = b;
    if (x->v < y->v) return -1;
    if (x->v > y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Mark the `want` channels of lowest u (ties by index) among those with
 * cand[i] (NULL = all). */
static int remove_lowest(const double *u, int n, const uint8_t *cand, int want,
                         uint8_t *remove, gpp_error *err)
{
    memset(remove, 0, (size_t)n);
    if (want <= 0) return 0;
    struct rank_item *it = malloc(sizeof *it * (size_t)n);
    if (!it) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                                  "channel selection over %d channels: out of memory", n);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!cand || cand[i]) {
            it[k].v = u[i];
            it[k].i = i;
            k++;
        }
    qsort(it, (size_t)k, sizeof *it, cmp_asc);
    for (int j = 0; j < want && j < k; j++) remove[it[j].i] = 1;
    free(it);
    return 0;
}

static int check_u(const double *u, int n, gpp_error *err)
{
    if (n < 1 || n > SELECT_MAX_CHANNELS)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                             "channel selection: %d channels (need 1..%d)", n,
                             SELECT_MAX_CHANNELS);
    for (int i = 0; i < n; i++)
        if (!(u[i] >= 0.0) || !isfinite(u[i]))
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                                 "channel selection: utility %g of channel %d must be "
                                 "finite and >= 0", u[i], i);
    return 0;
}

int gpp_prune_threshold(const double *u, int n, double eta, double max_fraction,
                        int min_channels, uint8_t *remove, int *n_remove,
                        double *threshold, gpp_error *err)
{
    int rc = check_u(u, n, err);
    if (rc) return rc;
    if (!(eta >= 0.0) || !isfinite(eta) || !(max_fraction >= 0.0 && max_fraction <= 1.0) ||
        min_channels < 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.eta",
                             "threshold: eta %g >= 0, max_layer_fraction %g in [0, 1], "
                             "min_channels %d >= 0 required", eta, max_fraction,
                             min_channels);
    /* population std of the non-zero utilities, two passes in double */
    int nz = 0;
    double mean = 0.0;
    for (int i = 0; i < n; i++)
        if (u[i] > 0.0) {
            mean += u[i];
            nz++;
        }
    double sd = 0.0;
    if (nz >= 2) {
        mean /= nz;
        double ss = 0.0;
        for (int i = 0; i < n; i++)
            if (u[i] > 0.0) ss += (u[i] - mean) * (u[i] - mean);
        sd = sqrt(ss / nz);
    }
    double t = eta * sd;
    uint8_t *cand = malloc((size_t)n);
    if (!cand) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                                    "threshold over %d channels: out of memory", n);
    int nc = 0;
    for (int i = 0; i < n; i++) {
        cand[i] = u[i] == 0.0 || u[i] < t;
        nc += cand[i];
    }
    /* floor(max_fraction * n), robust to 0.5 * 4 = 1.9999... */
    int cap = (int)floor(max_fraction * n + 1e-9);
    if (cap > n - min_channels) cap = n - min_channels;
    if (cap < 0) cap = 0;
    int want = nc < cap ? nc : cap;
    rc = remove_lowest(u, n, cand, want, remove, err);
    free(cand);
    if (rc) return rc;
    if (n_remove) *n_remove = want;
    if (threshold) *threshold = t;
    return 0;
}

int gpp_prune_ratio(const double *u, int n, double ratio, int min_channels,
                    uint8_t *remove, int *n_remove, gpp_error *err)
{
    int rc = check_u(u, n, err);
    if (rc) return rc;
    if (!(ratio >= 0.0 && ratio <= 1.0) || min_channels < 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune.ratio",
                             "ratio rule: ratio %g in [0, 1] and min_channels %d >= 0 "
                             "required", ratio, min_channels);
    int want = (int)floor(ratio * n + 1e-9);
    if (want > n - min_channels) want = n - min_channels;
    if (want < 0) want = 0;
    rc = remove_lowest(u, n, NULL, want, remove, err);
    if (rc) return rc;
    if (n_remove) *n_remove = want;
    return 0;
}

void gpp_prune_l1_norms(const float *w, int OC, size_t per, double *norms)
{
    for (int o = 0; o < OC; o++) {
        const float *f = w + (size_t)o * per;
        double s = 0.0;
        for (size_t i = 0; i < per; i++) s += fabs((double)f[i]);
        norms[o] = s;
    }
}

int gpp_prune_l1_select(const float *w, int OC, size_t per, int count, uint8_t *remove,
                        gpp_error *err)
{
    if (OC < 1 || OC > SELECT_MAX_CHANNELS || count < 0 || count > OC)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                             "L1 selection: %d of %d filters", count, OC);
    double *norms = malloc(sizeof(double) * (size_t)OC);
    if (!norms) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                                     "L1 selection over %d filters: out of memory", OC);
    gpp_prune_l1_norms(w, OC, per, norms);
    int rc = remove_lowest(norms, OC, NULL, count, remove, err);
    free(norms);
    return rc;
}

int gpp_prune_random_select(gpp_rng *rng, int OC, int count, uint8_t *remove,
                            gpp_error *err)
{
    if (OC < 1 || OC > SELECT_MAX_CHANNELS || count < 0 || count > OC)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "prune",
                             "random selection: %d of %d channels", count, OC);
    int *idx = malloc(sizeof(int) * (size_t)OC);
    if (!idx) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "prune",
                                   "random selection over %d channels: out of memory", OC);
    for (int i = 0; i < OC; i++) idx[i] = i;
    memset(remove, 0, (size_t)OC);
    /* partial Fisher-Yates: the first `count` slots are a uniform sample */
    for (int j = 0; j < count; j++) {
        int k = j + (int)gpp_rng_below(rng, (uint32_t)(OC - j));
        int t = idx[j];
        idx[j] = idx[k];
        idx[k] = t;
        remove[idx[j]] = 1;
    }
    free(idx);
    return 0;
}
