/* gpp/data.h - the data loaders of gpp-worker's engine: IDX (MNIST,
 * Fashion-MNIST) and CIFAR-10 binary files, the train / validation / test
 * split, per-channel normalisation, crop-and-flip augmentation, and a batch
 * iterator (shuffled, sequential or class-balanced) whose position can be
 * saved in a checkpoint and restored.
 *
 * Shapes follow the engine: images are [N, C, H, W], row-major.
 *
 *   gpp_dataset      N uint8 images [N, C, H, W] as the files hold them, N uint8
 *                    labels, the class count and a name.  Loaded once at stage
 *                    start; read-only afterwards.
 *   gpp_data_split   index arrays: the (limited) training set minus the
 *                    validation split, the validation split, the (limited)
 *                    test set.  No pixel data is copied.
 *   gpp_data_norm    per-channel mean / std of x/255 over the training split;
 *                    goes into the checkpoint and the ONNX export.
 *   gpp_data_iter    fills caller-owned float [B, C, H, W] and int [B] buffers
 *                    batch by batch; allocates nothing per batch.  Its
 *                    position (gpp_data_pos) can be saved and restored.
 *
 * Errors come back through gpp_error with field "dataset" (loaders) or the job
 * spec's "data.*" field names; codes GPP_ENOTFOUND (missing file), GPP_EFORMAT
 * (bad magic, truncated, trailing bytes, mislabelled, wrong size), GPP_EIO
 * (read error), GPP_EINVAL (bad argument), GPP_ENOMEM, GPP_ETOOBIG (header
 * declares more than the hard limits below).
 *
 * Randomness: every random choice draws from a gpp_rng seeded with
 * `seed ^ stream` (one stream each for the validation split, the subset
 * picker, the epoch order and the augmentation), so the same seed gives the
 * same split, order and augmentation on every machine.
 *
 * Threads: nothing here is shared or global.  Loaders run once at stage start;
 * an iterator is used by one thread; several iterators may read one data set.
 */
#ifndef GPP_DATA_H
#define GPP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"
#include "gpp/rng.h"

#define GPP_DATA_MAX_C 4                 /* channels a data set may have */
#define GPP_DATA_MAX_CLASSES 1000        /* classes a data set may have */
#define GPP_DATA_MAX_N (1u << 26)        /* images in one file */
#define GPP_DATA_MAX_SIDE 4096u          /* image height / width */
#define GPP_DATA_MAX_BYTES (1ull << 32)  /* pixel bytes of one data set */
#define GPP_DATA_IDX_CLASSES 10          /* MNIST / Fashion-MNIST */
#define GPP_DATA_CIFAR10_RECORD 3073     /* 1 label byte + 3 x 32 x 32 pixels */
#define GPP_DATA_CIFAR10_RECORDS 10000   /* records in each standard file */
#define GPP_DATA_CROP_PAD 4              /* zero padding of the random crop */

/* Seed streams: gpp_rng_seed(&r, seed ^ GPP_DATA_STREAM_x). */
#define GPP_DATA_STREAM_VAL   0x76616c2d73706c74ULL  /* validation split */
#define GPP_DATA_STREAM_PICK  0x7069636b2d6b7063ULL  /* per-class subset */
#define GPP_DATA_STREAM_ORDER 0x6f726465722d6570ULL  /* epoch order */
#define GPP_DATA_STREAM_AUG   0x6175676d656e7421ULL  /* augmentation */

typedef enum gpp_data_format {
    GPP_DATA_IDX = 1,        /* "idx": MNIST-style IDX files, plain or .gz */
    GPP_DATA_CIFAR10 = 2,    /* "cifar10-bin": CIFAR-10 binary batches */
} gpp_data_format;

typedef enum gpp_data_augment {
    GPP_DATA_AUG_NONE = 0,       /* "none" */
    GPP_DATA_AUG_CROP_FLIP = 1,  /* "crop-flip": random crop H x W of the image
                                    zero-padded by GPP_DATA_CROP_PAD, then a
                                    horizontal flip with p = 0.5 */
} gpp_data_augment;

typedef enum gpp_data_order {
    GPP_DATA_SEQUENTIAL = 0, /* the indices as given, every epoch (evaluation) */
    GPP_DATA_SHUFFLE = 1,    /* a fresh seeded permutation every epoch */
    GPP_DATA_BALANCED = 2,   /* every batch holds >= min_per_class of each class */
} gpp_data_order;

/* ---- data sets ------------------------------------------------------------ */

typedef struct gpp_dataset {
    char name[64];            /* e.g. "fashion-mnist" (the folder's name) */
    gpp_data_format format;   /* what it was loaded from (0 for gpp_dataset_new) */
    uint32_t n;               /* images */
    uint32_t c, h, w;         /* channels, height, width */
    uint32_t classes;         /* every label is < classes */
    uint8_t *images;          /* [n, c, h, w] raw pixels 0..255 */
    uint8_t *labels;          /* [n] */
} gpp_dataset;

/* Allocate a data set of n images [c, h, w] with zeroed pixels and labels
 * (tests, synthetic data).  1 <= c <= GPP_DATA_MAX_C, 1 <= classes <=
 * GPP_DATA_MAX_CLASSES, n*c*h*w <= GPP_DATA_MAX_BYTES; name may be NULL.
 * Returns 0 and *out (free with gpp_dataset_free) or a negative GPP_E*. */
int gpp_dataset_new(gpp_dataset **out, uint32_t n, uint32_t c, uint32_t h,
                    uint32_t w, uint32_t classes, const char *name,
                    gpp_error *err);

/* Free a data set and its arrays; NULL is fine. */
void gpp_dataset_free(gpp_dataset *ds);

/* Read one IDX pair: an images file (magic 0x00000803: N, rows, cols) and a
 * labels file (magic 0x00000801: N), each plain or gzip (detected from the
 * content).  Each file must hold exactly the bytes its header declares, the
 * counts must match and every label must be < GPP_DATA_IDX_CLASSES.  The
 * result has c = 1, classes = 10, format GPP_DATA_IDX.  Errors name the file:
 * "PATH is truncated: expected 47040016 bytes, found 47040000", "mislabelled:
 * label 12 at index 345 in PATH (labels must be < 10)".  Returns 0 and *out
 * (free with gpp_dataset_free) or a negative GPP_E*. */
int gpp_dataset_read_idx(gpp_dataset **out, const char *images_path,
                         const char *labels_path, const char *name,
                         gpp_error *err);

/* Read CIFAR-10 binary files, concatenated in the order given: records of
 * 1 label byte + 3072 pixel bytes ([3, 32, 32]).  Each file's size must be a
 * positive multiple of 3073; when records_per_file > 0 each file must hold
 * exactly that many records (the standard files hold 10000).  Every label must
 * be < 10.  Returns 0 and *out (free with gpp_dataset_free) or a negative
 * GPP_E*. */
int gpp_dataset_read_cifar10(gpp_dataset **out, const char *const *paths,
                             size_t npaths, uint32_t records_per_file,
                             const char *name, gpp_error *err);

/* Load an IDX folder: train-images-idx3-ubyte, train-labels-idx1-ubyte,
 * t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each under its plain name or
 * with ".gz" (the plain name is tried first).  A missing file gives
 * GPP_ENOTFOUND naming both paths tried.  Both data sets are named after the
 * folder.  Returns 0 with *train and *test set (free both with
 * gpp_dataset_free) or a negative GPP_E* with both NULL. */
int gpp_data_load_idx(const char *dir, gpp_dataset **train, gpp_dataset **test,
                      gpp_error *err);

/* Load a CIFAR-10 binary folder: data_batch_1.bin .. data_batch_5.bin
 * (50000 training images) and test_batch.bin (10000), each with exactly
 * GPP_DATA_CIFAR10_RECORDS records.  Same contract as gpp_data_load_idx. */
int gpp_data_load_cifar10(const char *dir, gpp_dataset **train,
                          gpp_dataset **test, gpp_error *err);

/* gpp_data_load_idx or gpp_data_load_cifar10 by format. */
int gpp_data_load(gpp_data_format format, const char *dir, gpp_dataset **train,
                  gpp_dataset **test, gpp_error *err);

/* Parse the job spec's dataset format: "idx" or "cifar10-bin".  Returns 0 or
 * GPP_EINVAL (field "dataset.format"). */
int gpp_data_format_parse(const char *s, gpp_data_format *out, gpp_error *err);

/* Parse `data.augment`: "none", "crop-flip", or "auto" (crop-flip for
 * cifar10-bin, none for idx).  Returns 0 or GPP_EINVAL (field
 * "data.augment"). */
int gpp_data_augment_parse(const char *s, gpp_data_format format,
                           gpp_data_augment *out, gpp_error *err);

/* Count labels per class over idx[0..n) (all images when idx is NULL, n is then
 * ignored) into counts[ds->classes], which the caller provides. */
void gpp_dataset_class_counts(const gpp_dataset *ds, const uint32_t *idx,
                              uint32_t n, uint32_t *counts);

/* ---- splits and subsets --------------------------------------------------- */

/* "The first N of each class in turn": round-robin over classes 0, 1, ...,
 * classes-1, taking each class's samples in file order (class 0's first,
 * class 1's first, ..., class 0's second, ...) until `limit` are taken; a
 * class that runs out is skipped.  limit 0 (the spec's null) or >= ds->n takes
 * all.  *out holds the chosen indices in ascending (file) order; free it with
 * free().  Returns 0 or a negative GPP_E*. */
int gpp_data_limit(uint32_t **out, uint32_t *n_out, const gpp_dataset *ds,
                   uint32_t limit, gpp_error *err);

typedef struct gpp_data_split_opts {
    uint32_t train_limit;     /* data.train_limit; 0 = all (null) */
    uint32_t test_limit;      /* data.test_limit; 0 = all (null) */
    double val_fraction;      /* data.val_fraction, in [0, 1) */
    uint64_t seed;            /* job seed */
    int val_from_test;        /* data.val_from "test": the validation share comes
                                 out of the (limited) test set, not the training set */
} gpp_data_split_opts;

typedef struct gpp_data_split {
    uint32_t *train;          /* [n_train] indices into the training data set */
    uint32_t n_train;
    uint32_t *val;            /* [n_val] indices into the training data set, or
                                 into the test data set when val_in_test */
    uint32_t n_val;
    int val_in_test;
    uint32_t *test;           /* [n_test] indices into the test data set */
    uint32_t n_test;
} gpp_data_split;

/* Make the split: the training set limited by train_limit (gpp_data_limit),
 * then per class a validation share of round(val_fraction * n_class) samples
 * chosen at random with seed ^ GPP_DATA_STREAM_VAL (stratified; a class keeps
 * at least one training sample), the rest for training; the test set limited
 * by test_limit.  With opts->val_from_test the share is taken the same way
 * out of the limited test set instead (val_in_test set; the training set is
 * all training images): for a network trained elsewhere, which may have seen
 * every training image.  train and val are disjoint (val and test with
 * val_from_test); every index list is ascending.
 * The same inputs give the same split.  Errors: val_fraction outside [0, 1) or
 * an empty training set (GPP_EINVAL), train/test with different shapes or
 * classes (GPP_EINVAL).  Returns 0 and *out (free with gpp_data_split_free). */
int gpp_data_split_new(gpp_data_split **out, const gpp_dataset *train,
                       const gpp_dataset *test, const gpp_data_split_opts *opts,
                       gpp_error *err);

/* Free a split and its index arrays; NULL is fine. */
void gpp_data_split_free(gpp_data_split *s);

/* Pick k samples of each class from idx[0..n) (all images when idx is NULL),
 * at random with seed ^ GPP_DATA_STREAM_PICK; a class with fewer than k
 * samples gives all it has.  *out holds the picked indices in ascending order;
 * free it with free().  Returns 0 or a negative GPP_E* (k == 0: GPP_EINVAL). */
int gpp_data_pick_per_class(uint32_t **out, uint32_t *n_out,
                            const gpp_dataset *ds, const uint32_t *idx,
                            uint32_t n, uint32_t k, uint64_t seed,
                            gpp_error *err);

/* Fisher-Yates shuffle of a[0..n) drawing from rng (i = n-1 down to 1,
 * j = below(i+1)). */
void gpp_data_shuffle(uint32_t *a, uint32_t n, gpp_rng *rng);

/* ---- normalisation and augmentation --------------------------------------- */

typedef struct gpp_data_norm {
    uint32_t c;                      /* channels in use */
    float mean[GPP_DATA_MAX_C];      /* mean of x/255 per channel */
    float std[GPP_DATA_MAX_C];       /* population std of x/255 per channel;
                                        1 where a channel is constant */
} gpp_data_norm;

/* Per-channel mean and std of x/255 over the images idx[0..n) (all when idx
 * is NULL), computed exactly from integer sums.  Returns 0 or GPP_EINVAL
 * (no images). */
int gpp_data_norm_compute(gpp_data_norm *out, const gpp_dataset *ds,
                          const uint32_t *idx, uint32_t n, gpp_error *err);

/* The identity normalisation (mean 0, std 1): batches hold x/255 in [0, 1]. */
void gpp_data_norm_identity(gpp_data_norm *out, uint32_t c);

/* Crop-and-flip of one uint8 image in [c, h, w] into out [c, h, w] (not
 * overlapping in): out(y, x) = padded(y + dy, x' + dx) with x' = w-1-x when
 * flip, else x, where padded is `in` surrounded by `pad` zero pixels.
 * dy, dx <= 2*pad. */
void gpp_data_crop_flip(uint8_t *out, const uint8_t *in, uint32_t c,
                        uint32_t h, uint32_t w, uint32_t pad, uint32_t dy,
                        uint32_t dx, int flip);

/* Fill a batch with the images idx[0..n): x [n, C, H, W] gets
 * (v/255 - mean[c]) / std[c] (v/255 when norm is NULL) and y [n] the labels;
 * either may be NULL to skip it.  With GPP_DATA_AUG_CROP_FLIP each image is
 * first cropped and flipped as gpp_data_crop_flip with pad GPP_DATA_CROP_PAD
 * and, drawn from rng per image in this order, dy = below(2*pad+1),
 * dx = below(2*pad+1), flip = below(2); padding pixels are raw 0 (so they
 * become -mean/std).  rng may be NULL with GPP_DATA_AUG_NONE. */
void gpp_data_fill(float *x, int *y, const gpp_dataset *ds, const uint32_t *idx,
                   uint32_t n, const gpp_data_norm *norm, gpp_data_augment aug,
                   gpp_rng *rng);

/* ---- batch iterator ------------------------------------------------------- */

typedef struct gpp_data_iter_opts {
    uint32_t batch_size;          /* B >= 1 */
    gpp_data_order order;         /* sequential, shuffle or balanced */
    uint32_t min_per_class;       /* balanced: per class per batch (>= 1);
                                     needs B >= classes * min_per_class */
    int drop_last;                /* sequential / shuffle: skip a final
                                     partial batch (balanced batches are
                                     always full) */
    gpp_data_augment augment;     /* applied to every batch */
    const gpp_data_norm *norm;    /* copied; NULL = identity */
    uint64_t seed;                /* job seed */
} gpp_data_iter_opts;

/* The iterator's position: enough to resume a run so that it sees the same
 * batches (order and augmentation) as an uninterrupted one. */
typedef struct gpp_data_pos {
    uint32_t epoch;       /* epochs finished before the current one */
    uint32_t batch;       /* next batch of the current epoch */
    gpp_rng order_rng;    /* order RNG at the start of the current epoch */
    gpp_rng aug_rng;      /* augmentation RNG now */
} gpp_data_pos;

#define GPP_DATA_POS_WORDS 9   /* uint64 words of a packed gpp_data_pos */

typedef struct gpp_data_iter gpp_data_iter;

/* Make an iterator over the images idx[0..n) of ds (idx is copied; ds must
 * outlive the iterator).  It starts at epoch 0, batch 0, with the order RNG
 * seeded from seed ^ GPP_DATA_STREAM_ORDER and the augmentation RNG from
 * seed ^ GPP_DATA_STREAM_AUG.
 *   sequential: batches are idx in the given order;
 *   shuffle:    each epoch a Fisher-Yates permutation of idx drawn from the
 *               order RNG;
 *   balanced:   each epoch has max(1, n / B) batches of B; every batch holds
 *               min_per_class distinct samples of each class (each class's
 *               samples in a shuffled cycle) and the rest is filled from a
 *               shuffled pool of the samples not yet used this epoch, so
 *               over an epoch every sample is used about once.
 * Errors (GPP_EINVAL): B == 0, n == 0, drop_last with n < B, norm->c != ds->c;
 * balanced with B < classes * min_per_class ("batch_size 16 is smaller than 10
 * classes x 2 per class") or a class with fewer than min_per_class samples in
 * idx.  Returns 0 and *out (free with gpp_data_iter_free). */
int gpp_data_iter_new(gpp_data_iter **out, const gpp_dataset *ds,
                      const uint32_t *idx, uint32_t n,
                      const gpp_data_iter_opts *opts, gpp_error *err);

/* Free an iterator; NULL is fine. */
void gpp_data_iter_free(gpp_data_iter *it);

/* Batches per epoch. */
uint32_t gpp_data_iter_batches(const gpp_data_iter *it);

/* Fill the next batch of the current epoch into x [B, C, H, W] and y [B]
 * (as gpp_data_fill; either may be NULL) and return how many samples it holds
 * (B, or fewer for a final partial batch).  At the end of an epoch it fills
 * nothing, returns 0 and moves to the next epoch (epoch + 1, batch 0, a new
 * order).  Typical loop: while ((m = gpp_data_iter_next(it, x, y)) > 0) ... */
uint32_t gpp_data_iter_next(gpp_data_iter *it, float *x, int *y);

/* The current epoch's order: *n indices; batch b is order[b*B .. b*B+B).
 * Valid until the next epoch starts or the position is set. */
const uint32_t *gpp_data_iter_order(const gpp_data_iter *it, uint32_t *n);

/* Read the position (for a checkpoint). */
void gpp_data_iter_get_pos(const gpp_data_iter *it, gpp_data_pos *pos);

/* Restore a position read from an iterator made with the same data set,
 * indices and options: rebuilds that epoch's order and continues at pos->batch.
 * Returns 0, or GPP_EINVAL for a batch past the epoch's end or an all-zero
 * RNG state (the iterator is then unchanged). */
int gpp_data_iter_set_pos(gpp_data_iter *it, const gpp_data_pos *pos,
                          gpp_error *err);

/* Pack a position into GPP_DATA_POS_WORDS words (epoch << 32 | batch, then the
 * two RNG states), e.g. to store it as a checkpoint tensor, and back. */
void gpp_data_pos_pack(const gpp_data_pos *pos, uint64_t out[GPP_DATA_POS_WORDS]);
void gpp_data_pos_unpack(gpp_data_pos *pos, const uint64_t in[GPP_DATA_POS_WORDS]);

#endif
