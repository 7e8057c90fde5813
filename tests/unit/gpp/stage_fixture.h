/* Helpers shared by the stage tests: a small synthetic data set with
 * class-dependent images (learnable in a few steps), wrapped as the stages'
 * gpp_stage_data, a job spec from JSON text, and networks from JSON text.
 * Header-only. */
#ifndef GPP_STAGE_FIXTURE_H
#define GPP_STAGE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpp/stages.h"

static inline void *sf_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) abort();
    return p;
}

/* n images [1, side, side] in `classes` classes: class k lights a
 * class-specific blob over noise. */
static inline gpp_dataset *sf_dataset(uint32_t n, uint32_t side, uint32_t classes, uint64_t seed)
{
    gpp_dataset *ds = NULL;
    if (gpp_dataset_new(&ds, n, 1, side, side, classes, "synthetic", NULL) != 0) abort();
    gpp_rng r;
    gpp_rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = i % classes;
        ds->labels[i] = (uint8_t)k;
        uint8_t *im = ds->images + (size_t)i * side * side;
        uint32_t cy = 2 + (k * 5) % (side - 4), cx = 2 + (k * 3) % (side - 4);
        for (uint32_t y = 0; y < side; y++)
            for (uint32_t x = 0; x < side; x++) {
                int v = (int)gpp_rng_below(&r, 60);
                int dy = (int)y - (int)cy, dx = (int)x - (int)cx;
                if (dy * dy + dx * dx <= 4) v += 150 + (int)gpp_rng_below(&r, 40);
                im[y * side + x] = (uint8_t)(v > 255 ? 255 : v);
            }
    }
    return ds;
}

/* Stage data over synthetic train / test sets (val_fraction 0.2). */
static inline gpp_stage_data *sf_data(uint32_t n_train, uint32_t n_test, uint32_t side,
                                      uint32_t classes)
{
    gpp_stage_data *d = sf_alloc(1, sizeof *d);
    d->train = sf_dataset(n_train, side, classes, 11);
    d->test = sf_dataset(n_test, side, classes, 12);
    gpp_data_split_opts so = {.val_fraction = 0.2, .seed = 5};
    if (gpp_data_split_new(&d->split, d->train, d->test, &so, NULL) != 0) abort();
    if (gpp_data_norm_compute(&d->norm, d->train, d->split->train, d->split->n_train, NULL) != 0)
        abort();
    d->augment = GPP_DATA_AUG_NONE;
    d->format = GPP_DATA_IDX;
    snprintf(d->dir, sizeof d->dir, "synthetic");
    return d;
}

static inline gpp_jobspec *sf_spec(const char *json)
{
    gpp_jobspec *s = NULL;
    gpp_error e = {0};
    if (gpp_jobspec_parse(json, strlen(json), &s, &e) != 0) {
        fprintf(stderr, "spec: %s (%s)\n", e.message, e.field);
        abort();
    }
    return s;
}

static inline nn_net *sf_net(nn_ctx *ctx, const char *json, const int input[3], int classes,
                             uint64_t seed)
{
    gpp_error e = {0};
    cJSON *d = cJSON_Parse(json);
    nn_net *n = d ? nn_net_new(ctx, d, input, classes, seed, &e) : NULL;
    cJSON_Delete(d);
    if (!n) {
        fprintf(stderr, "net: %s\n", e.message);
        abort();
    }
    return n;
}

/* A fresh temporary folder (mkdtemp) under $TMPDIR or /tmp. */
static inline char *sf_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p = sf_alloc(4096, 1);
    snprintf(p, 4096, "%s/gpp-stage-test-XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(p)) abort();
    return p;
}

static inline void sf_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* The whole file, malloc'd; *len its size. */
static inline unsigned char *sf_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = sf_alloc((size_t)n + 1, 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    *len = (size_t)n;
    return b;
}

#endif
