/* Helpers shared by the gppmath unit tests: seeded data, allocation that
 * aborts, and a class-structured feature batch.  Header-only. */
#ifndef GPP_CHECK_H
#define GPP_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpp/rng.h"

static inline void *gt_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) abort();
    return p;
}

/* A batch of B features [B, M] in C classes: labels cycle through the
 * classes with per-class counts `counts` (shuffled order), features are a
 * per-class offset (scale `sep`) plus correlated noise: z A with z normal
 * and A [M, M] a random mixing, so Sw and Sb both have off-diagonals. */
static inline void gt_batch(gpp_rng *r, int B, int M, int C, const int *counts, double sep,
                            float *H, int *y)
{
    int n = 0;
    for (int c = 0; c < C; c++)
        for (int k = 0; k < counts[c]; k++) y[n++] = c;
    if (n != B) abort();
    for (int i = B - 1; i > 0; i--) {   /* shuffle the labels */
        int j = (int)gpp_rng_below(r, (uint32_t)(i + 1));
        int t = y[i];
        y[i] = y[j];
        y[j] = t;
    }
    double *off = gt_alloc((size_t)C * M, sizeof(double));
    double *A = gt_alloc((size_t)M * M, sizeof(double));
    double *z = gt_alloc((size_t)M, sizeof(double));
    for (int i = 0; i < C * M; i++) off[i] = sep * gpp_rng_normal(r);
    for (int i = 0; i < M * M; i++) A[i] = (i % (M + 1) == 0 ? 1.0 : 0.0) + 0.5 * gpp_rng_normal(r);
    for (int b = 0; b < B; b++) {
        for (int m = 0; m < M; m++) z[m] = gpp_rng_normal(r);
        for (int m = 0; m < M; m++) {
            double v = off[(size_t)y[b] * M + m];
            for (int k = 0; k < M; k++) v += z[k] * A[(size_t)k * M + m];
            H[(size_t)b * M + m] = (float)v;
        }
    }
    free(off);
    free(A);
    free(z);
}

#endif
