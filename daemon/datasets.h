/* daemon/datasets.h - look at a data set folder on the daemon host: check
 * the standard files are there and read their shapes (prefix dataset_). */
#ifndef GPPD_DATASETS_H
#define GPPD_DATASETS_H

#include "gpp/error.h"

/* Where Debian's dataset-fashion-mnist package puts its files
 * (`dpkg -L dataset-fashion-mnist`). */
#define DATASET_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Inspect the folder `path` holding a data set of `format` ("idx": the four
 * train-/t10k- images/labels files, gzipped or not; "cifar10-bin":
 * data_batch_1..5.bin and test_batch.bin).  On success *info_json is a new
 * JSON object text (caller frees):
 *   {"files":[{"name","size"}...],"train":{"count","shape":[C,H,W]},
 *    "test":{...},"classes":N}
 * Errors: GPP_EINVAL ("invalid_argument", field "path" or "format") for a
 * missing/odd file, unknown format or a relative path. */
int dataset_inspect(const char *format, const char *path, char **info_json, gpp_error *err);

#endif
