/* The job's data for the stages: find the data set, load it, split it,
 * normalise it (gpp/stages.h gpp_stage_data_open). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpp/stages.h"

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* gpp_stage_data_free: see gpp/stages.h. */
void gpp_stage_data_free(gpp_stage_data *d)
{
    if (!d) return;
    gpp_dataset_free(d->train);
    gpp_dataset_free(d->test);
    gpp_data_split_free(d->split);
    free(d);
}

/* gpp_stage_data_open: see gpp/stages.h. */
int gpp_stage_data_open(const gpp_jobspec *spec, const char *datasets_dir,
                        gpp_stage_data **out, gpp_error *err)
{
    *out = NULL;
    gpp_stage_data *d = calloc(1, sizeof *d);
    if (!d) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    int rc = 0;
    if (spec->dataset_kind == GPP_DATASET_FILES) {
        snprintf(d->dir, sizeof d->dir, "%s", spec->dataset_path);
        d->format = spec->dataset_format == GPP_DATASET_CIFAR10_BIN ? GPP_DATA_CIFAR10 : GPP_DATA_IDX;
    } else {
        const char *roots[3] = {datasets_dir, getenv("GPP_DATASETS_DIR"), "/usr/share/datasets"};
        char tried[3 * (sizeof d->dir + 2)] = "";
        for (int i = 0; i < 3 && !d->dir[0]; i++) {
            if (!roots[i] || !roots[i][0]) continue;
            char p[sizeof d->dir];
            if (snprintf(p, sizeof p, "%s/%s", roots[i], spec->dataset_name) >= (int)sizeof p)
                continue;
            if (is_dir(p)) memcpy(d->dir, p, sizeof p);
            else {
                size_t l = strlen(tried);
                snprintf(tried + l, sizeof tried - l, "%s%s", l ? ", " : "", p);
            }
        }
        if (!d->dir[0]) {
            rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "dataset",
                               "data set \"%s\" not found (looked in %s); install the "
                               "dataset-%s package or give {\"format\", \"path\"}",
                               spec->dataset_name, tried, spec->dataset_name);
            goto fail;
        }
        char probe[sizeof d->dir + 32];
        snprintf(probe, sizeof probe, "%s/data_batch_1.bin", d->dir);
        d->format = is_file(probe) ? GPP_DATA_CIFAR10 : GPP_DATA_IDX;
    }
    if ((rc = gpp_data_load(d->format, d->dir, &d->train, &d->test, err)) != 0) goto fail;
    gpp_data_split_opts so = {
        .train_limit = spec->data.train_limit > 0 && spec->data.train_limit < UINT32_MAX
                           ? (uint32_t)spec->data.train_limit : 0,
        .test_limit = spec->data.test_limit > 0 && spec->data.test_limit < UINT32_MAX
                          ? (uint32_t)spec->data.test_limit : 0,
        .val_fraction = spec->data.val_fraction,
        .seed = (uint64_t)spec->seed,
        .val_from_test = gpp_jobspec_val_from_test(spec),
    };
    if ((rc = gpp_data_split_new(&d->split, d->train, d->test, &so, err)) != 0) goto fail;
    if (spec->data.normalize) {
        rc = gpp_data_norm_compute(&d->norm, d->train, d->split->train, d->split->n_train, err);
        if (rc != 0) goto fail;
    } else {
        gpp_data_norm_identity(&d->norm, d->train->c);
    }
    const char *aug = spec->data.augment == GPP_AUGMENT_NONE        ? "none"
                      : spec->data.augment == GPP_AUGMENT_CROP_FLIP ? "crop-flip"
                                                                    : "auto";
    if ((rc = gpp_data_augment_parse(aug, d->format, &d->augment, err)) != 0) goto fail;
    *out = d;
    return 0;
fail:
    gpp_stage_data_free(d);
    return rc;
}
