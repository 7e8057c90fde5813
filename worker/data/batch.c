/* Normalisation, augmentation and the batch iterator (gpp/data.h). */
#include "gpp/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

/* ---- normalisation ------------------------------------------------------------ */

int gpp_data_norm_compute(gpp_data_norm *out, const gpp_dataset *ds,
                          const uint32_t *idx, uint32_t n, gpp_error *err)
{
    uint64_t s1[GPP_DATA_MAX_C] = {0}, s2[GPP_DATA_MAX_C] = {0};
    const size_t hw = (size_t)ds->h * ds->w, chw = ds->c * hw;

    if (!idx) n = ds->n;
    if (n == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "normalisation statistics need at least one image");
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *img = ds->images + (size_t)(idx ? idx[i] : i) * chw;
        for (uint32_t c = 0; c < ds->c; c++) {
            /* Per image and channel the sums fit 32 + 16 bits comfortably. */
            uint64_t a = 0, b = 0;
            for (size_t p = 0; p < hw; p++) {
                uint32_t v = img[c * hw + p];
                a += v;
                b += v * v;
            }
            s1[c] += a;
            s2[c] += b;
        }
    }
    memset(out, 0, sizeof *out);
    out->c = ds->c;
    double cnt = (double)n * (double)hw;
    for (uint32_t c = 0; c < ds->c; c++) {
        double mean = (double)s1[c] / cnt;                    /* in 0..255 */
        double var = (double)s2[c] / cnt - mean * mean;
        if (var < 0) var = 0;
        double sd = sqrt(var) / 255.0;
        out->mean[c] = (float)(mean / 255.0);
        out->std[c] = sd < 1e-6 ? 1.0f : (float)sd;
    }
    return 0;
}

void gpp_data_norm_identity(gpp_data_norm *out, uint32_t c)
{
    memset(out, 0, sizeof *out);
    out->c = c;
    for (uint32_t i = 0; i < GPP_DATA_MAX_C; i++) out->std[i] = 1.0f;
}

/* ---- augmentation and filling --------------------------------------------------- */

void gpp_data_crop_flip(uint8_t *out, const uint8_t *in, uint32_t c,
                        uint32_t h, uint32_t w, uint32_t pad, uint32_t dy,
                        uint32_t dx, int flip)
{
    const size_t hw = (size_t)h * w;
    for (uint32_t ch = 0; ch < c; ch++)
        for (uint32_t y = 0; y < h; y++) {
            int64_t sy = (int64_t)y + dy - pad;
            for (uint32_t x = 0; x < w; x++) {
                int64_t sx = (int64_t)(flip ? w - 1 - x : x) + dx - pad;
                uint8_t v = 0;
                if (sy >= 0 && sy < h && sx >= 0 && sx < w)
                    v = in[ch * hw + (size_t)sy * w + (size_t)sx];
                out[ch * hw + (size_t)y * w + x] = v;
            }
        }
}

void gpp_data_fill(float *x, int *y, const gpp_dataset *ds, const uint32_t *idx,
                   uint32_t n, const gpp_data_norm *norm, gpp_data_augment aug,
                   gpp_rng *rng)
{
    float lut[GPP_DATA_MAX_C][256];
    const uint32_t C = ds->c, H = ds->h, W = ds->w, pad = GPP_DATA_CROP_PAD;
    const size_t hw = (size_t)H * W, chw = C * hw;
    const int crop = aug == GPP_DATA_AUG_CROP_FLIP && rng;

    if (x)
        for (uint32_t c = 0; c < C; c++) {
            float mean = norm ? norm->mean[c] : 0.0f, sd = norm ? norm->std[c] : 1.0f;
            for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean) / sd;
        }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *img = ds->images + (size_t)idx[i] * chw;
        if (y) y[i] = ds->labels[idx[i]];
        uint32_t dy = 0, dx = 0, flip = 0;
        if (crop) {
            dy = gpp_rng_below(rng, 2 * pad + 1);
            dx = gpp_rng_below(rng, 2 * pad + 1);
            flip = gpp_rng_below(rng, 2);
        }
        if (!x) continue;
        float *o = x + (size_t)i * chw;
        if (!crop) {
            for (uint32_t c = 0; c < C; c++)
                for (size_t p = 0; p < hw; p++) o[c * hw + p] = lut[c][img[c * hw + p]];
            continue;
        }
        for (uint32_t c = 0; c < C; c++)
            for (uint32_t yy = 0; yy < H; yy++) {
                int64_t sy = (int64_t)yy + dy - pad;
                const uint8_t *row = img + c * hw + (size_t)(sy >= 0 ? sy : 0) * W;
                int inrow = sy >= 0 && sy < H;
                float *orow = o + c * hw + (size_t)yy * W;
                for (uint32_t xx = 0; xx < W; xx++) {
                    int64_t sx = (int64_t)(flip ? W - 1 - xx : xx) + dx - pad;
                    uint8_t v = inrow && sx >= 0 && sx < W ? row[sx] : 0;
                    orow[xx] = lut[c][v];
                }
            }
    }
}

/* ---- iterator ------------------------------------------------------------------- */

struct gpp_data_iter {
    const gpp_dataset *ds;
    uint32_t *base;            /* [n] the indices given */
    uint32_t n;
    uint32_t bs;               /* batch size B */
    gpp_data_order order;
    uint32_t min_per_class;
    gpp_data_augment aug;
    gpp_data_norm norm;
    uint32_t nb;               /* batches per epoch */
    uint32_t *ord;             /* [n_ord] this epoch's order */
    uint32_t n_ord;
    gpp_data_pos pos;
    gpp_rng next_order;        /* order RNG after building this epoch */
    /* balanced only */
    uint32_t *members;         /* [n] base grouped by class (base order) */
    uint32_t *start;           /* [classes + 1] */
    uint32_t *work;            /* [n] members, shuffled per class */
    uint32_t *pool;            /* [n] fill samples */
};

/* Balanced epoch: per batch min_per_class of each class from per-class
 * shuffled cycles, the rest from a shuffled pool of the unreserved samples. */
static void build_balanced(gpp_data_iter *it, gpp_rng *r)
{
    const uint32_t K = it->ds->classes, m = it->min_per_class, B = it->bs;
    uint32_t *cur = it->pool + it->n;   /* per-class cursors follow the pool */
    uint32_t np = 0, pc = 0;

    memcpy(it->work, it->members, it->n * sizeof *it->work);
    for (uint32_t k = 0; k < K; k++) {
        uint32_t nk = it->start[k + 1] - it->start[k], reserve = it->nb * m;
        gpp_data_shuffle(it->work + it->start[k], nk, r);
        cur[k] = 0;
        if (nk > reserve) {
            memcpy(it->pool + np, it->work + it->start[k] + reserve,
                   (nk - reserve) * sizeof *it->pool);
            np += nk - reserve;
        }
    }
    gpp_data_shuffle(it->pool, np, r);
    for (uint32_t b = 0; b < it->nb; b++) {
        uint32_t *dst = it->ord + (size_t)b * B, j = 0;
        for (uint32_t k = 0; k < K; k++) {
            uint32_t nk = it->start[k + 1] - it->start[k], *cls = it->work + it->start[k];
            if (m == 0 || nk == 0) continue;
            if (cur[k] + m > nk) {        /* small class: a fresh cycle */
                gpp_data_shuffle(cls, nk, r);
                cur[k] = 0;
            }
            for (uint32_t i = 0; i < m; i++) dst[j++] = cls[cur[k]++];
        }
        while (j < B) {
            if (pc == np) {               /* pool spent: reuse everything */
                memcpy(it->pool, it->base, it->n * sizeof *it->pool);
                np = it->n;
                gpp_data_shuffle(it->pool, np, r);
                pc = 0;
            }
            dst[j++] = it->pool[pc++];
        }
    }
}

/* Build the order of the epoch that starts with it->pos.order_rng. */
static void build_epoch(gpp_data_iter *it)
{
    gpp_rng r = it->pos.order_rng;
    switch (it->order) {
    case GPP_DATA_SEQUENTIAL:
        memcpy(it->ord, it->base, it->n * sizeof *it->ord);
        break;
    case GPP_DATA_SHUFFLE:
        memcpy(it->ord, it->base, it->n * sizeof *it->ord);
        gpp_data_shuffle(it->ord, it->n, &r);
        break;
    case GPP_DATA_BALANCED:
        build_balanced(it, &r);
        break;
    }
    it->next_order = r;
}

void gpp_data_iter_free(gpp_data_iter *it)
{
    if (!it) return;
    free(it->base);
    free(it->ord);
    free(it->members);
    free(it->start);
    free(it->work);
    free(it->pool);
    free(it);
}

int gpp_data_iter_new(gpp_data_iter **out, const gpp_dataset *ds,
                      const uint32_t *idx, uint32_t n,
                      const gpp_data_iter_opts *opts, gpp_error *err)
{
    gpp_data_iter *it = NULL;
    uint32_t *counts = NULL;
    const uint32_t B = opts->batch_size;
    int rc = 0;

    *out = NULL;
    if (B == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "train.batch_size",
                             "batch_size must be at least 1");
    if (n == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "no samples to iterate over");
    if (opts->norm && opts->norm->c != ds->c)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "normalisation has %u channels but the images %u",
                             opts->norm->c, ds->c);
    if (opts->order != GPP_DATA_SEQUENTIAL && opts->order != GPP_DATA_SHUFFLE &&
        opts->order != GPP_DATA_BALANCED)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "unknown batch order %d", (int)opts->order);
    if (opts->order != GPP_DATA_BALANCED && opts->drop_last && n < B)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "train.batch_size",
                             "batch_size %u is larger than the %u samples and the last "
                             "partial batch is dropped", B, n);
    if (opts->order == GPP_DATA_BALANCED) {
        uint64_t need = (uint64_t)ds->classes * opts->min_per_class;
        if (opts->min_per_class == 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                                 "a class-balanced sampler needs min_per_class >= 1");
        if (B < need)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "train.batch_size",
                                 "batch_size %u is smaller than %u classes x %u per class "
                                 "= %llu, which a class-balanced batch needs", B,
                                 ds->classes, opts->min_per_class, (unsigned long long)need);
    }

    it = calloc(1, sizeof *it);
    if (!it) goto nomem;
    it->ds = ds;
    it->n = n;
    it->bs = B;
    it->order = opts->order;
    it->min_per_class = opts->min_per_class;
    it->aug = opts->augment;
    if (opts->norm) it->norm = *opts->norm;
    else gpp_data_norm_identity(&it->norm, ds->c);
    it->base = malloc(n * sizeof *it->base);
    if (!it->base) goto nomem;
    memcpy(it->base, idx, n * sizeof *idx);

    if (it->order == GPP_DATA_BALANCED) {
        counts = calloc(ds->classes, sizeof *counts);
        if (!counts) goto nomem;
        gpp_dataset_class_counts(ds, it->base, n, counts);
        for (uint32_t k = 0; k < ds->classes; k++)
            if (counts[k] < it->min_per_class) {
                rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                                   "class %u has %u samples, fewer than the %u per batch "
                                   "a class-balanced batch needs", k, counts[k],
                                   it->min_per_class);
                goto done;
            }
        it->nb = n / B > 0 ? n / B : 1;
        if ((uint64_t)it->nb * B > UINT32_MAX) goto nomem;
        it->n_ord = it->nb * B;
        if ((rc = gpp__data_by_class(ds, it->base, n, &it->members, &it->start, err)) < 0)
            goto done;
        it->work = malloc(n * sizeof *it->work);
        it->pool = malloc(((size_t)n + ds->classes) * sizeof *it->pool);
        if (!it->work || !it->pool) goto nomem;
    } else {
        it->nb = opts->drop_last ? n / B : n / B + (n % B != 0);
        it->n_ord = n;
    }
    it->ord = malloc(it->n_ord * sizeof *it->ord);
    if (!it->ord) goto nomem;
    gpp_rng_seed(&it->pos.order_rng, opts->seed ^ GPP_DATA_STREAM_ORDER);
    gpp_rng_seed(&it->pos.aug_rng, opts->seed ^ GPP_DATA_STREAM_AUG);
    build_epoch(it);
    *out = it;
    it = NULL;
    goto done;
nomem:
    rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "data",
                       "out of memory making a batch iterator");
done:
    free(counts);
    gpp_data_iter_free(it);
    return rc;
}

uint32_t gpp_data_iter_batches(const gpp_data_iter *it)
{
    return it->nb;
}

uint32_t gpp_data_iter_next(gpp_data_iter *it, float *x, int *y)
{
    if (it->pos.batch >= it->nb) {
        it->pos.epoch++;
        it->pos.batch = 0;
        it->pos.order_rng = it->next_order;
        build_epoch(it);
        return 0;
    }
    size_t off = (size_t)it->pos.batch * it->bs;
    uint32_t m = it->n_ord - off < it->bs ? (uint32_t)(it->n_ord - off) : it->bs;
    gpp_data_fill(x, y, it->ds, it->ord + off, m, &it->norm, it->aug, &it->pos.aug_rng);
    it->pos.batch++;
    return m;
}

const uint32_t *gpp_data_iter_order(const gpp_data_iter *it, uint32_t *n)
{
    *n = it->n_ord;
    return it->ord;
}

void gpp_data_iter_get_pos(const gpp_data_iter *it, gpp_data_pos *pos)
{
    *pos = it->pos;
}

static int rng_zero(const gpp_rng *r)
{
    return (r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0;
}

int gpp_data_iter_set_pos(gpp_data_iter *it, const gpp_data_pos *pos,
                          gpp_error *err)
{
    if (pos->batch > it->nb)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "data position: batch %u is past the %u batches of an epoch",
                             pos->batch, it->nb);
    if (rng_zero(&pos->order_rng) || rng_zero(&pos->aug_rng))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data",
                             "data position: an RNG state is all zero");
    it->pos = *pos;
    build_epoch(it);
    return 0;
}

void gpp_data_pos_pack(const gpp_data_pos *pos, uint64_t out[GPP_DATA_POS_WORDS])
{
    out[0] = (uint64_t)pos->epoch << 32 | pos->batch;
    for (int i = 0; i < 4; i++) {
        out[1 + i] = pos->order_rng.s[i];
        out[5 + i] = pos->aug_rng.s[i];
    }
}

void gpp_data_pos_unpack(gpp_data_pos *pos, const uint64_t in[GPP_DATA_POS_WORDS])
{
    pos->epoch = (uint32_t)(in[0] >> 32);
    pos->batch = (uint32_t)in[0];
    for (int i = 0; i < 4; i++) {
        pos->order_rng.s[i] = in[1 + i];
        pos->aug_rng.s[i] = in[5 + i];
    }
}
