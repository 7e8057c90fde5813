/* Train / validation / test splits and per-class subsets (gpp/data.h). */
#include "gpp/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

static int err_nomem(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "data", "out of memory splitting the data set");
}

/* Group idx[0..n) (all of ds when idx is NULL) by class, keeping their order:
 * class k's members are members[start[k] .. start[k+1]).  start has
 * classes + 1 entries.  Returns 0 or GPP_ENOMEM. */
int gpp__data_by_class(const gpp_dataset *ds, const uint32_t *idx, uint32_t n,
                       uint32_t **members, uint32_t **start, gpp_error *err)
{
    if (!idx) n = ds->n;
    uint32_t *m = malloc((n ? n : 1) * sizeof *m);
    uint32_t *s = calloc(ds->classes + 1, sizeof *s);
    uint32_t *fill = calloc(ds->classes, sizeof *fill);
    if (!m || !s || !fill) {
        free(m); free(s); free(fill);
        return err_nomem(err);
    }
    for (uint32_t i = 0; i < n; i++) s[ds->labels[idx ? idx[i] : i] + 1]++;
    for (uint32_t k = 0; k < ds->classes; k++) s[k + 1] += s[k];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = idx ? idx[i] : i, k = ds->labels[j];
        m[s[k] + fill[k]++] = j;
    }
    free(fill);
    *members = m;
    *start = s;
    return 0;
}

/* gpp_data_shuffle: see gpp/data.h. */
void gpp_data_shuffle(uint32_t *a, uint32_t n, gpp_rng *rng)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = gpp_rng_below(rng, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int gpp_data_limit(uint32_t **out, uint32_t *n_out, const gpp_dataset *ds,
                   uint32_t limit, gpp_error *err)
{
    uint32_t *members = NULL, *start = NULL, *res = NULL;
    uint8_t *take = NULL;
    int rc;

    *out = NULL;
    *n_out = 0;
    if (limit == 0 || limit > ds->n) limit = ds->n;
    if ((rc = gpp__data_by_class(ds, NULL, 0, &members, &start, err)) < 0) return rc;
    take = calloc(ds->n, 1);
    res = malloc(limit * sizeof *res);
    if (!take || !res) { rc = err_nomem(err); goto done; }
    /* Round r takes the r-th sample of every class that has one. */
    uint32_t taken = 0;
    for (uint32_t r = 0; taken < limit; r++)
        for (uint32_t k = 0; k < ds->classes && taken < limit; k++)
            if (start[k] + r < start[k + 1]) {
                take[members[start[k] + r]] = 1;
                taken++;
            }
    uint32_t j = 0;
    for (uint32_t i = 0; i < ds->n; i++)
        if (take[i]) res[j++] = i;
    *out = res;
    *n_out = limit;
    res = NULL;
done:
    free(members);
    free(start);
    free(take);
    free(res);
    return rc;
}

void gpp_data_split_free(gpp_data_split *s)
{
    if (!s) return;
    free(s->train);
    free(s->val);
    free(s->test);
    free(s);
}

int gpp_data_split_new(gpp_data_split **out, const gpp_dataset *train,
                       const gpp_dataset *test, const gpp_data_split_opts *opts,
                       gpp_error *err)
{
    gpp_data_split *s = NULL;
    uint32_t *lim = NULL, *members = NULL, *start = NULL;
    uint32_t n_lim = 0;
    int rc;

    *out = NULL;
    if (!(opts->val_fraction >= 0.0 && opts->val_fraction < 1.0))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data.val_fraction",
                             "data.val_fraction must be in [0, 1), not %g", opts->val_fraction);
    if (train->c != test->c || train->h != test->h || train->w != test->w ||
        train->classes != test->classes)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "dataset",
                             "training images [%u, %u, %u] with %u classes do not match "
                             "test images [%u, %u, %u] with %u classes",
                             train->c, train->h, train->w, train->classes,
                             test->c, test->h, test->w, test->classes);
    s = calloc(1, sizeof *s);
    if (!s) return err_nomem(err);
    /* the validation share comes out of one set (`from`, limited, in lim);
     * the other set stays whole */
    int vt = !!opts->val_from_test;
    const gpp_dataset *from = vt ? test : train;
    uint32_t *whole = NULL, n_whole = 0;
    if ((rc = gpp_data_limit(&whole, &n_whole, vt ? train : test,
                             vt ? opts->train_limit : opts->test_limit, err)) < 0) goto done;
    if (vt) { s->train = whole; s->n_train = n_whole; }
    else    { s->test = whole; s->n_test = n_whole; }
    s->val_in_test = vt;
    if ((rc = gpp_data_limit(&lim, &n_lim, from, vt ? opts->test_limit : opts->train_limit,
                             err)) < 0) goto done;
    if ((rc = gpp__data_by_class(from, lim, n_lim, &members, &start, err)) < 0) goto done;
    uint32_t **keep = vt ? &s->test : &s->train, *n_keep = vt ? &s->n_test : &s->n_train;
    *keep = malloc((n_lim ? n_lim : 1) * sizeof **keep);
    s->val = malloc((n_lim ? n_lim : 1) * sizeof *s->val);
    if (!*keep || !s->val) { rc = err_nomem(err); goto done; }
    gpp_rng rng;
    gpp_rng_seed(&rng, opts->seed ^ GPP_DATA_STREAM_VAL);
    for (uint32_t k = 0; k < from->classes; k++) {
        uint32_t *cls = members + start[k], nk = start[k + 1] - start[k];
        uint32_t nv = (uint32_t)floor(opts->val_fraction * nk + 0.5);
        if (nk > 0 && nv > nk - 1) nv = nk - 1;
        gpp_data_shuffle(cls, nk, &rng);
        memcpy(s->val + s->n_val, cls, nv * sizeof *cls);
        memcpy(*keep + *n_keep, cls + nv, (nk - nv) * sizeof *cls);
        s->n_val += nv;
        *n_keep += nk - nv;
    }
    qsort(*keep, *n_keep, sizeof **keep, cmp_u32);
    qsort(s->val, s->n_val, sizeof *s->val, cmp_u32);
    if (s->n_train == 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data.train_limit",
                           "the training set is empty");
        goto done;
    }
    *out = s;
    s = NULL;
done:
    free(lim);
    free(members);
    free(start);
    gpp_data_split_free(s);
    return rc;
}

int gpp_data_pick_per_class(uint32_t **out, uint32_t *n_out,
                            const gpp_dataset *ds, const uint32_t *idx,
                            uint32_t n, uint32_t k, uint64_t seed,
                            gpp_error *err)
{
    uint32_t *members = NULL, *start = NULL, *res = NULL, m = 0;
    int rc;

    *out = NULL;
    *n_out = 0;
    if (k == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "samples per class must be at least 1");
    if ((rc = gpp__data_by_class(ds, idx, n, &members, &start, err)) < 0) return rc;
    uint32_t total = start[ds->classes];
    res = malloc((total ? total : 1) * sizeof *res);
    if (!res) { rc = err_nomem(err); goto done; }
    gpp_rng rng;
    gpp_rng_seed(&rng, seed ^ GPP_DATA_STREAM_PICK);
    for (uint32_t c = 0; c < ds->classes; c++) {
        uint32_t *cls = members + start[c], nc = start[c + 1] - start[c];
        uint32_t take = nc < k ? nc : k;
        /* Partial Fisher-Yates: the first `take` slots get a uniform sample. */
        for (uint32_t i = 0; i < take; i++) {
            uint32_t j = i + gpp_rng_below(&rng, nc - i);
            uint32_t t = cls[i]; cls[i] = cls[j]; cls[j] = t;
            res[m++] = cls[i];
        }
    }
    qsort(res, m, sizeof *res, cmp_u32);
    *out = res;
    *n_out = m;
    res = NULL;
done:
    free(members);
    free(start);
    free(res);
    return rc;
}
