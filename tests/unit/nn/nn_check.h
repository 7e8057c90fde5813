/* Helpers shared by the engine's unit tests: random tensors, finite
 * differences, tolerant comparisons.  Header-only (static functions). */
#ifndef NN_CHECK_H
#define NN_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpp/rng.h"

static inline float *nn_test_alloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}

/* Uniform in [-a, a]. */
static inline void nn_test_fill(gpp_rng *r, float *x, size_t n, float a)
{
    for (size_t i = 0; i < n; i++) x[i] = a * (2.0f * gpp_rng_uniform(r) - 1.0f);
}

/* Uniform in [-a, a] but at least `gap` away from zero (ReLU kinks). */
static inline void nn_test_fill_away(gpp_rng *r, float *x, size_t n, float a, float gap)
{
    for (size_t i = 0; i < n; i++) {
        float v = gap + (a - gap) * gpp_rng_uniform(r);
        x[i] = gpp_rng_uniform(r) < 0.5f ? -v : v;
    }
}

/* sum_i a[i] * b[i] in double. */
static inline double nn_test_dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Largest |a - b| / (atol + rtol * max(|a|, |b|)); <= 1 means close. */
static inline double nn_test_err(const float *a, const float *b, size_t n, double atol,
                                 double rtol, size_t *worst)
{
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        double m = fmax(fabs((double)a[i]), fabs((double)b[i]));
        double r = d / (atol + rtol * m);
        if (r > e) {
            e = r;
            if (worst) *worst = i;
        }
    }
    return e;
}

/* The scalar a finite-difference check differentiates: runs the code under
 * test and returns sum(out * R) in double. */
typedef double (*nn_test_loss_fn)(void *ctx);

/* Central differences of loss() with respect to x[0..n) (every element, or
 * `max_checks` spread over them) against the analytic gradient `an`;
 * returns the worst error ratio (<= 1 passes) and prints the worst one. */
static inline double nn_test_fd(const char *what, float *x, size_t n, const float *an,
                                nn_test_loss_fn loss, void *ctx, float eps, double atol,
                                double rtol, size_t max_checks)
{
    double worst = 0.0;
    size_t wi = 0;
    double wn = 0.0;
    size_t step = max_checks && n > max_checks ? n / max_checks : 1;
    for (size_t i = 0; i < n; i += step) {
        float save = x[i];
        x[i] = save + eps;
        double lp = loss(ctx);
        x[i] = save - eps;
        double lm = loss(ctx);
        x[i] = save;
        double num = (lp - lm) / (2.0 * (double)eps);
        double d = fabs(num - an[i]);
        double r = d / (atol + rtol * fmax(fabs(num), fabs((double)an[i])));
        if (r > worst) {
            worst = r;
            wi = i;
            wn = num;
        }
    }
    if (worst > 1.0)
        fprintf(stderr, "%s: element %zu numeric %.6g analytic %.6g (ratio %.3g)\n", what, wi,
                wn, (double)an[wi], worst);
    return worst;
}

#endif
