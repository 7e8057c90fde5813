/* Unit tests for the job spec (gpp/jobspec.h) and the network description
 * validator (gpp/netdesc.h).  Most rules are rows of a table: each row is a
 * cmocka test of its own, named after the rule it checks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/jobspec.h"

#include "gpp/netdesc.h"
#include "gpp/pick.h"

/* A spec with the two required fields and one more fragment. */
#define S(x) "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\"," x "}"

/* ---- helpers ------------------------------------------------------------------- */

static int parse(const char *json, gpp_jobspec **out, gpp_error *err)
{
    gpp_error_clear(err);
    return gpp_jobspec_parse(json, strlen(json), out, err);
}

/* Parse, serialise, parse again, serialise again: both texts must match.
 * Returns the first text (caller frees). */
static char *round_trip(const char *json)
{
    gpp_error e;
    gpp_jobspec *a = NULL, *b = NULL;
    int rc = parse(json, &a, &e);
    if (rc != 0) print_error("unexpected error: %s (%s): %s\n", e.code, e.field, e.message);
    assert_int_equal(rc, 0);
    assert_non_null(a);
    char *t1 = gpp_jobspec_to_json(a);
    assert_non_null(t1);
    rc = parse(t1, &b, &e);
    if (rc != 0) print_error("re-parse error: %s (%s): %s\n", e.code, e.field, e.message);
    assert_int_equal(rc, 0);
    char *t2 = gpp_jobspec_to_json(b);
    assert_non_null(t2);
    assert_string_equal(t1, t2);
    free(t2);
    gpp_jobspec_free(a);
    gpp_jobspec_free(b);
    return t1;
}

static void expect_error(const char *json, size_t len, int want_rc, const char *code,
                         const char *field, const char *msg)
{
    gpp_error e;
    gpp_jobspec *s = (gpp_jobspec *)&e;   /* must be reset to NULL */
    gpp_error_clear(&e);
    int rc = gpp_jobspec_parse(json, len, &s, &e);
    if (rc != want_rc || (msg && !strstr(e.message, msg)) || (field && strcmp(e.field, field) != 0))
        print_error("rc %d code %s field '%s' message '%s'\n", rc, e.code, e.field, e.message);
    assert_int_equal(rc, want_rc);
    assert_null(s);
    assert_string_equal(e.code, code);
    if (field) assert_string_equal(e.field, field);
    if (msg) assert_non_null(strstr(e.message, msg));
}

/* ---- table: specs that must be refused ---------------------------------------------- */

typedef struct reject_row {
    const char *name;
    const char *json;
    const char *field;    /* expected error field */
    const char *msg;      /* expected substring of the message */
} reject_row;

static const reject_row rejects[] = {
    /* top level */
    {"top_unknown_field", S("\"colour\":\"red\""), "colour", "unknown field colour"},
    {"top_duplicate_key", S("\"seed\":1,\"seed\":2"), "seed", "duplicate field seed"},
    {"top_duplicate_dataset", "{\"dataset\":\"a\",\"dataset\":\"b\",\"model\":\"lenet5\"}", "dataset", "duplicate"},
    {"missing_dataset", "{\"model\":\"lenet5\"}", "dataset", "dataset is required"},
    {"missing_model", "{\"dataset\":\"fashion-mnist\"}", "model", "model is required"},
    {"missing_both_reports_dataset", "{}", "dataset", "required"},
    {"top_is_array", "[]", "", "must be a JSON object, got an array"},
    {"top_is_number", "5", "", "must be a JSON object, got a number"},
    {"top_is_string", "\"x\"", "", "must be a JSON object, got a string"},
    {"top_is_null", "null", "", "got null"},
    /* name */
    {"name_type", S("\"name\":5"), "name", "name must be a string, got 5"},
    {"name_empty", S("\"name\":\"\""), "name", "1..128 bytes, got 0 bytes"},
    {"name_control_char", S("\"name\":\"a\\u0001b\""), "name", "without control characters"},
    {"name_newline", S("\"name\":\"a\\nb\""), "name", "control characters"},
    {"name_del", S("\"name\":\"a\\u007fb\""), "name", "control characters"},
    {"name_bad_utf8", S("\"name\":\"a\xff" "b\""), "name", "UTF-8"},
    {"name_overlong_utf8", S("\"name\":\"\xc0\xaf\""), "name", "UTF-8"},
    {"name_surrogate_utf8", S("\"name\":\"\xed\xa0\x80\""), "name", "UTF-8"},
    /* dataset */
    {"dataset_type", "{\"dataset\":5,\"model\":\"lenet5\"}", "dataset", "must be a data set name (a string) or an object"},
    {"dataset_null", "{\"dataset\":null,\"model\":\"lenet5\"}", "dataset", "got null"},
    {"dataset_uppercase", "{\"dataset\":\"Fashion\",\"model\":\"lenet5\"}", "dataset", "[a-z0-9][a-z0-9._-]{0,63}, got \"Fashion\""},
    {"dataset_empty", "{\"dataset\":\"\",\"model\":\"lenet5\"}", "dataset", "got \"\""},
    {"dataset_leading_dash", "{\"dataset\":\"-mnist\",\"model\":\"lenet5\"}", "dataset", "got \"-mnist\""},
    {"dataset_slash", "{\"dataset\":\"a/b\",\"model\":\"lenet5\"}", "dataset", "got \"a/b\""},
    {"dataset_obj_no_path", "{\"dataset\":{\"format\":\"idx\"},\"model\":\"lenet5\"}", "dataset.path", "dataset.path is required"},
    {"dataset_obj_no_format", "{\"dataset\":{\"path\":\"/d\"},\"model\":\"lenet5\"}", "dataset.format", "dataset.format is required"},
    {"dataset_format_enum", "{\"dataset\":{\"format\":\"png\",\"path\":\"/d\"},\"model\":\"lenet5\"}", "dataset.format", "one of \"idx\", \"cifar10-bin\", got \"png\""},
    {"dataset_format_type", "{\"dataset\":{\"format\":1,\"path\":\"/d\"},\"model\":\"lenet5\"}", "dataset.format", "must be a string"},
    {"dataset_path_relative", "{\"dataset\":{\"format\":\"idx\",\"path\":\"data/x\"},\"model\":\"lenet5\"}", "dataset.path", "absolute path, got \"data/x\""},
    {"dataset_path_empty", "{\"dataset\":{\"format\":\"idx\",\"path\":\"\"},\"model\":\"lenet5\"}", "dataset.path", "absolute path"},
    {"dataset_path_type", "{\"dataset\":{\"format\":\"idx\",\"path\":[]},\"model\":\"lenet5\"}", "dataset.path", "must be a string, got an array"},
    {"dataset_path_bad_utf8", "{\"dataset\":{\"format\":\"idx\",\"path\":\"/a\xfe\"},\"model\":\"lenet5\"}", "dataset.path", "UTF-8"},
    {"dataset_obj_unknown", "{\"dataset\":{\"format\":\"idx\",\"path\":\"/d\",\"sha\":\"x\"},\"model\":\"lenet5\"}", "dataset.sha", "unknown field dataset.sha"},
    {"dataset_obj_duplicate", "{\"dataset\":{\"format\":\"idx\",\"path\":\"/d\",\"path\":\"/e\"},\"model\":\"lenet5\"}", "dataset.path", "duplicate"},
    /* model */
    {"model_type", "{\"dataset\":\"d\",\"model\":5}", "model", "got 5"},
    {"model_null", "{\"dataset\":\"d\",\"model\":null}", "model", "got null"},
    {"model_zoo_unknown", "{\"dataset\":\"d\",\"model\":\"resnet50\"}", "model", "got \"resnet50\""},
    {"model_zoo_case", "{\"dataset\":\"d\",\"model\":\"LeNet5\"}", "model", "\"lenet5\""},
    {"model_checkpoint_type", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":5}}", "model.checkpoint", "must be a string, got 5"},
    {"model_checkpoint_chars", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"a b\"}}", "model.checkpoint", "([A-Za-z0-9_-]{1,64}), got \"a b\""},
    {"model_checkpoint_empty", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"\"}}", "model.checkpoint", "got \"\""},
    {"model_checkpoint_65", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"0123456789012345678901234567890123456789012345678901234567890123x\"}}", "model.checkpoint", "[A-Za-z0-9_-]{1,64}"},
    {"model_checkpoint_extra", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"j1\",\"layers\":[]}}", "model.layers", "unknown field model.layers"},
    {"model_checkpoint_duplicate", "{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"j1\",\"checkpoint\":\"j2\"}}", "model.checkpoint", "duplicate"},
    {"model_inline_empty", "{\"dataset\":\"d\",\"model\":[]}", "model", "1..1024 layers, got 0"},
    {"model_object_no_layers", "{\"dataset\":\"d\",\"model\":{}}", "model.layers", "model.layers is required"},
    {"model_inline_bad_k", "{\"dataset\":\"d\",\"model\":[{\"type\":\"conv\",\"out\":4,\"k\":3},{\"type\":\"relu\"},"
     "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"conv\",\"out\":4,\"k\":40}]}", "model[3].k", "model[3].k must be an integer in 1..31, got 40"},
    {"model_inline_unknown_field", "{\"dataset\":\"d\",\"model\":[{\"type\":\"relu\",\"alpha\":1}]}", "model[0].alpha", "unknown field model[0].alpha"},
    /* device */
    {"device_type", S("\"device\":1"), "device", "must be a string, one of \"any\", \"cpu\", \"gpu\", got 1"},
    {"device_enum", S("\"device\":\"tpu\""), "device", "one of \"any\", \"cpu\", \"gpu\", got \"tpu\""},
    {"device_case", S("\"device\":\"GPU\""), "device", "got \"GPU\""},
    /* labels */
    {"labels_type", S("\"labels\":[]"), "labels", "labels must be an object, got an array"},
    {"labels_key_upper", S("\"labels\":{\"GPU\":\"a100\"}"), "labels.GPU", "[a-z0-9_.-]{1,32}, got \"GPU\""},
    {"labels_key_empty", S("\"labels\":{\"\":\"x\"}"), NULL, "label keys must match"},
    {"labels_key_33", S("\"labels\":{\"abcdefghijabcdefghijabcdefghijabc\":\"x\"}"), "labels.abcdefghijabcdefghijabcdefghijabc", "{1,32}"},
    {"labels_value_type", S("\"labels\":{\"gpu\":1}"), "labels.gpu", "labels.gpu must be a string, got 1"},
    {"labels_value_empty", S("\"labels\":{\"gpu\":\"\"}"), "labels.gpu", "1..64 bytes, got 0 bytes"},
    {"labels_value_65", S("\"labels\":{\"gpu\":\"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcde\"}"), "labels.gpu", "got 65 bytes"},
    {"labels_value_control", S("\"labels\":{\"gpu\":\"a\\tb\"}"), "labels.gpu", "printable"},
    {"labels_duplicate", S("\"labels\":{\"gpu\":\"a\",\"gpu\":\"b\"}"), "labels.gpu", "duplicate field labels.gpu"},
    {"labels_17", S("\"labels\":{\"a\":\"1\",\"b\":\"1\",\"c\":\"1\",\"d\":\"1\",\"e\":\"1\",\"f\":\"1\",\"g\":\"1\",\"h\":\"1\",\"i\":\"1\","
                    "\"j\":\"1\",\"k\":\"1\",\"l\":\"1\",\"m\":\"1\",\"n\":\"1\",\"o\":\"1\",\"p\":\"1\",\"q\":\"1\"}"), "labels", "at most 16 entries, got 17"},
    /* top-level integers */
    {"priority_type", S("\"priority\":\"0\""), "priority", "priority must be an integer in -1000..1000, got \"0\""},
    {"priority_low", S("\"priority\":-1001"), "priority", "got -1001"},
    {"priority_high", S("\"priority\":1001"), "priority", "got 1001"},
    {"priority_fraction", S("\"priority\":1.5"), "priority", "priority must be an integer, got 1.5"},
    {"seed_type", S("\"seed\":true"), "seed", "seed must be an integer in 0..2147483647, got true"},
    {"seed_low", S("\"seed\":-1"), "seed", "got -1"},
    {"seed_high", S("\"seed\":2147483648"), "seed", "got 2147483648"},
    {"seed_fraction", S("\"seed\":0.5"), "seed", "must be an integer, got 0.5"},
    {"max_restarts_type", S("\"max_restarts\":null"), "max_restarts", "got null"},
    {"max_restarts_low", S("\"max_restarts\":-1"), "max_restarts", "0..100, got -1"},
    {"max_restarts_high", S("\"max_restarts\":101"), "max_restarts", "0..100, got 101"},
    {"iterations_type", S("\"iterations\":\"4\""), "iterations", "must be an integer"},
    {"iterations_low", S("\"iterations\":-1"), "iterations", "0..100, got -1"},
    {"iterations_high", S("\"iterations\":101"), "iterations", "0..100, got 101"},
    {"iterations_fraction", S("\"iterations\":2.5"), "iterations", "got 2.5"},
    /* train */
    {"train_type", S("\"train\":5"), "train", "train must be an object, got a number"},
    {"train_unknown", S("\"train\":{\"foo\":1}"), "train.foo", "unknown field train.foo"},
    {"train_duplicate", S("\"train\":{\"lr\":0.1,\"lr\":0.2}"), "train.lr", "duplicate field train.lr"},
    {"train_epochs_type", S("\"train\":{\"epochs\":\"2\"}"), "train.epochs", "train.epochs must be an integer in 0..1000, got \"2\""},
    {"train_epochs_low", S("\"train\":{\"epochs\":-1}"), "train.epochs", "got -1"},
    {"train_epochs_high", S("\"train\":{\"epochs\":1001}"), "train.epochs", "0..1000, got 1001"},
    {"train_epochs_fraction", S("\"train\":{\"epochs\":1.5}"), "train.epochs", "must be an integer, got 1.5"},
    {"train_batch_size_low", S("\"train\":{\"batch_size\":0}"), "train.batch_size", "1..4096, got 0"},
    {"train_batch_size_high", S("\"train\":{\"batch_size\":4097}"), "train.batch_size", "got 4097"},
    {"train_batch_size_type", S("\"train\":{\"batch_size\":[64]}"), "train.batch_size", "got an array"},
    {"train_lr_type", S("\"train\":{\"lr\":\"0.1\"}"), "train.lr", "train.lr must be a number in (0, 10], got \"0.1\""},
    {"train_lr_low", S("\"train\":{\"lr\":0}"), "train.lr", "train.lr must be in (0, 10], got 0"},
    {"train_lr_negative", S("\"train\":{\"lr\":-0.1}"), "train.lr", "got -0.1"},
    {"train_lr_high", S("\"train\":{\"lr\":10.5}"), "train.lr", "got 10.5"},
    {"train_lr_infinite", S("\"train\":{\"lr\":1e999}"), "train.lr", "got Infinity"},
    {"train_momentum_low", S("\"train\":{\"momentum\":-0.1}"), "train.momentum", "[0, 1), got -0.1"},
    {"train_momentum_high", S("\"train\":{\"momentum\":1}"), "train.momentum", "[0, 1), got 1"},
    {"train_momentum_type", S("\"train\":{\"momentum\":false}"), "train.momentum", "must be a number"},
    {"train_nesterov_type", S("\"train\":{\"nesterov\":\"yes\"}"), "train.nesterov", "must be a boolean, got \"yes\""},
    {"train_nesterov_number", S("\"train\":{\"nesterov\":1}"), "train.nesterov", "must be a boolean, got 1"},
    {"train_weight_decay_low", S("\"train\":{\"weight_decay\":-0.001}"), "train.weight_decay", "got -0.001"},
    {"train_weight_decay_high", S("\"train\":{\"weight_decay\":1}"), "train.weight_decay", "[0, 1), got 1"},
    {"train_schedule_enum", S("\"train\":{\"schedule\":\"linear\"}"), "train.schedule", "one of \"constant\", \"step\", \"cosine\", got \"linear\""},
    {"train_schedule_type", S("\"train\":{\"schedule\":3}"), "train.schedule", "must be a string"},
    {"train_step_epochs_low", S("\"train\":{\"step_epochs\":0}"), "train.step_epochs", "1..1000, got 0"},
    {"train_step_epochs_high", S("\"train\":{\"step_epochs\":1001}"), "train.step_epochs", "got 1001"},
    {"train_gamma_low", S("\"train\":{\"gamma\":0}"), "train.gamma", "(0, 1], got 0"},
    {"train_gamma_high", S("\"train\":{\"gamma\":1.5}"), "train.gamma", "(0, 1], got 1.5"},
    /* grow */
    {"grow_type", S("\"grow\":true"), "grow", "grow must be an object, got a boolean"},
    {"grow_unknown", S("\"grow\":{\"bar\":1}"), "grow.bar", "unknown field grow.bar"},
    {"grow_enabled_type", S("\"grow\":{\"enabled\":1}"), "grow.enabled", "must be a boolean, got 1"},
    {"grow_max_modules_low", S("\"grow\":{\"max_modules\":-1}"), "grow.max_modules", "0..16, got -1"},
    {"grow_max_modules_high", S("\"grow\":{\"max_modules\":17}"), "grow.max_modules", "0..16, got 17"},
    {"grow_min_gain_low", S("\"grow\":{\"min_gain\":-0.1}"), "grow.min_gain", "[0, 1], got -0.1"},
    {"grow_min_gain_high", S("\"grow\":{\"min_gain\":1.1}"), "grow.min_gain", "got 1.1"},
    {"grow_epochs_low", S("\"grow\":{\"epochs\":-1}"), "grow.epochs", "got -1"},
    {"grow_epochs_high", S("\"grow\":{\"epochs\":1001}"), "grow.epochs", "got 1001"},
    {"grow_widths_type", S("\"grow\":{\"widths\":\"x\"}"), "grow.widths", "null or an array of 6 integers in 1..4096"},
    {"grow_widths_short", S("\"grow\":{\"widths\":[1,2,3]}"), "grow.widths", "array of 6"},
    {"grow_widths_long", S("\"grow\":{\"widths\":[1,2,3,4,5,6,7]}"), "grow.widths", "array of 6"},
    {"grow_widths_low", S("\"grow\":{\"widths\":[1,2,3,4,5,0]}"), "grow.widths[5]", "grow.widths[5] must be an integer in 1..4096, got 0"},
    {"grow_widths_high", S("\"grow\":{\"widths\":[4097,2,3,4,5,6]}"), "grow.widths[0]", "got 4097"},
    {"grow_widths_fraction", S("\"grow\":{\"widths\":[1,2,3.5,4,5,6]}"), "grow.widths[2]", "must be an integer, got 3.5"},
    {"grow_widths_elem_type", S("\"grow\":{\"widths\":[1,2,3,4,null,6]}"), "grow.widths[4]", "got null"},
    /* push */
    {"push_type", S("\"push\":[]"), "push", "push must be an object"},
    {"push_unknown", S("\"push\":{\"delta\":1}"), "push.delta", "unknown field push.delta"},
    {"push_epochs_low", S("\"push\":{\"epochs\":-1}"), "push.epochs", "got -1"},
    {"push_epochs_high", S("\"push\":{\"epochs\":1001}"), "push.epochs", "got 1001"},
    {"push_lambda_type", S("\"push\":{\"lambda\":\"x\"}"), "push.lambda", "must be a number in [0, 100]"},
    {"push_lambda_low", S("\"push\":{\"lambda\":-1}"), "push.lambda", "[0, 100], got -1"},
    {"push_lambda_high", S("\"push\":{\"lambda\":100.5}"), "push.lambda", "got 100.5"},
    {"push_lambda_decay_high", S("\"push\":{\"lambda_decay\":1.5}"), "push.lambda_decay", "[0, 1], got 1.5"},
    {"push_lambda_decay_low", S("\"push\":{\"lambda_decay\":-0.1}"), "push.lambda_decay", "got -0.1"},
    {"push_alpha_low", S("\"push\":{\"alpha\":-0.5}"), "push.alpha", "got -0.5"},
    {"push_alpha_high", S("\"push\":{\"alpha\":101}"), "push.alpha", "got 101"},
    {"push_beta_low", S("\"push\":{\"beta\":-0.5}"), "push.beta", "got -0.5"},
    {"push_beta_high", S("\"push\":{\"beta\":101}"), "push.beta", "got 101"},
    {"push_gamma_low", S("\"push\":{\"gamma\":-0.5}"), "push.gamma", "got -0.5"},
    {"push_gamma_high", S("\"push\":{\"gamma\":101}"), "push.gamma", "got 101"},
    {"push_separation_enum", S("\"push\":{\"separation\":\"full\"}"), "push.separation", "one of \"diag\", \"eigen\", got \"full\""},
    {"push_separation_type", S("\"push\":{\"separation\":1}"), "push.separation", "must be a string"},
    {"push_eigen_k_low", S("\"push\":{\"eigen_k\":0}"), "push.eigen_k", "null or an integer in 1..4096, got 0"},
    {"push_eigen_k_high", S("\"push\":{\"eigen_k\":4097}"), "push.eigen_k", "got 4097"},
    {"push_eigen_k_fraction", S("\"push\":{\"eigen_k\":1.5}"), "push.eigen_k", "got 1.5"},
    {"push_eigen_k_type", S("\"push\":{\"eigen_k\":\"3\"}"), "push.eigen_k", "got \"3\""},
    {"push_eigen_reg_low", S("\"push\":{\"eigen_reg\":0}"), "push.eigen_reg", "(0, 100], got 0"},
    {"push_eigen_reg_high", S("\"push\":{\"eigen_reg\":100.5}"), "push.eigen_reg", "got 100.5"},
    {"push_keep_fraction_low", S("\"push\":{\"keep_fraction\":0}"), "push.keep_fraction", "(0, 1], got 0"},
    {"push_keep_fraction_high", S("\"push\":{\"keep_fraction\":1.01}"), "push.keep_fraction", "got 1.01"},
    {"push_ramp_epochs_low", S("\"push\":{\"ramp_epochs\":-1}"), "push.ramp_epochs", "[0, 100], got -1"},
    {"push_ramp_epochs_high", S("\"push\":{\"ramp_epochs\":101}"), "push.ramp_epochs", "got 101"},
    {"push_ema_low", S("\"push\":{\"ema\":-0.1}"), "push.ema", "got -0.1"},
    {"push_ema_high", S("\"push\":{\"ema\":1}"), "push.ema", "[0, 1), got 1"},
    {"push_eps_low", S("\"push\":{\"eps\":0}"), "push.eps", "(0, 1], got 0"},
    {"push_eps_high", S("\"push\":{\"eps\":1.5}"), "push.eps", "got 1.5"},
    {"push_min_per_class_low", S("\"push\":{\"min_per_class\":1}"), "push.min_per_class", "2..1024, got 1"},
    {"push_min_per_class_high", S("\"push\":{\"min_per_class\":1025}"), "push.min_per_class", "got 1025"},
    {"push_lr_low", S("\"push\":{\"lr\":0}"), "push.lr", "null or in (0, 10], got 0"},
    {"push_lr_high", S("\"push\":{\"lr\":11}"), "push.lr", "got 11"},
    {"push_lr_type", S("\"push\":{\"lr\":\"x\"}"), "push.lr", "null or a number"},
    /* prune */
    {"prune_type", S("\"prune\":\"yes\""), "prune", "prune must be an object"},
    {"prune_unknown", S("\"prune\":{\"rate\":0.5}"), "prune.rate", "unknown field prune.rate"},
    {"prune_threshold_enum", S("\"prune\":{\"threshold\":\"size\"}"), "prune.threshold", "one of \"eta\", \"ratio\", got \"size\""},
    {"prune_threshold_type", S("\"prune\":{\"threshold\":0}"), "prune.threshold", "must be a string"},
    {"prune_ratio_low", S("\"prune\":{\"ratio\":0}"), "prune.ratio", "prune.ratio must be in (0, 1), got 0"},
    {"prune_ratio_one", S("\"prune\":{\"ratio\":1}"), "prune.ratio", "prune.ratio must be in (0, 1), got 1"},
    {"prune_ratio_high", S("\"prune\":{\"ratio\":1.5}"), "prune.ratio", "prune.ratio must be in (0, 1), got 1.5"},
    {"prune_ratio_type", S("\"prune\":{\"ratio\":\"x\"}"), "prune.ratio", "must be a number in (0, 1)"},
    {"prune_eta_low", S("\"prune\":{\"eta\":0}"), "prune.eta", "(0, 10], got 0"},
    {"prune_eta_high", S("\"prune\":{\"eta\":10.5}"), "prune.eta", "got 10.5"},
    {"prune_eta_step_low", S("\"prune\":{\"eta_step\":-1}"), "prune.eta_step", "[0, 10], got -1"},
    {"prune_eta_step_high", S("\"prune\":{\"eta_step\":11}"), "prune.eta_step", "got 11"},
    {"prune_max_layer_fraction_low", S("\"prune\":{\"max_layer_fraction\":0}"), "prune.max_layer_fraction", "(0, 1], got 0"},
    {"prune_max_layer_fraction_high", S("\"prune\":{\"max_layer_fraction\":1.5}"), "prune.max_layer_fraction", "got 1.5"},
    {"prune_min_channels_low", S("\"prune\":{\"min_channels\":0}"), "prune.min_channels", "1..4096, got 0"},
    {"prune_min_channels_high", S("\"prune\":{\"min_channels\":4097}"), "prune.min_channels", "got 4097"},
    {"prune_max_accuracy_drop_low", S("\"prune\":{\"max_accuracy_drop\":-0.1}"), "prune.max_accuracy_drop", "got -0.1"},
    {"prune_max_accuracy_drop_high", S("\"prune\":{\"max_accuracy_drop\":1.1}"), "prune.max_accuracy_drop", "[0, 1], got 1.1"},
    {"prune_samples_per_class_low", S("\"prune\":{\"samples_per_class\":0}"), "prune.samples_per_class", "1..10000, got 0"},
    {"prune_samples_per_class_high", S("\"prune\":{\"samples_per_class\":10001}"), "prune.samples_per_class", "got 10001"},
    {"prune_finetune_epochs_low", S("\"prune\":{\"finetune_epochs\":-1}"), "prune.finetune_epochs", "got -1"},
    {"prune_finetune_epochs_high", S("\"prune\":{\"finetune_epochs\":1001}"), "prune.finetune_epochs", "got 1001"},
    {"prune_reconstruct_type", S("\"prune\":{\"reconstruct\":\"true\"}"), "prune.reconstruct", "must be a boolean, got \"true\""},
    {"prune_compare_cut_type", S("\"prune\":{\"compare_cut\":1}"), "prune.compare_cut", "must be a boolean, got 1"},
    {"prune_reconstruct_samples_low", S("\"prune\":{\"reconstruct_samples\":15}"), "prune.reconstruct_samples", "16..65536, got 15"},
    {"prune_reconstruct_samples_high", S("\"prune\":{\"reconstruct_samples\":65537}"), "prune.reconstruct_samples", "got 65537"},
    {"prune_criterion_enum", S("\"prune\":{\"criterion\":\"l2\"}"), "prune.criterion", "one of \"gpp\", \"l1\", \"random\", got \"l2\""},
    {"prune_criterion_null", S("\"prune\":{\"criterion\":null}"), "prune.criterion", "got null"},
    {"prune_lr_low", S("\"prune\":{\"lr\":0}"), "prune.lr", "got 0"},
    {"prune_lr_high", S("\"prune\":{\"lr\":10.5}"), "prune.lr", "got 10.5"},
    {"prune_bn_recalibrate_low", S("\"prune\":{\"bn_recalibrate\":-1}"), "prune.bn_recalibrate", "0..65536, got -1"},
    {"prune_bn_recalibrate_high", S("\"prune\":{\"bn_recalibrate\":65537}"), "prune.bn_recalibrate", "got 65537"},
    {"prune_bn_recalibrate_frac", S("\"prune\":{\"bn_recalibrate\":1.5}"), "prune.bn_recalibrate", "integer"},
    {"prune_final_lr_low", S("\"prune\":{\"final_lr\":0}"), "prune.final_lr", "got 0"},
    {"prune_final_lr_high", S("\"prune\":{\"final_lr\":11}"), "prune.final_lr", "got 11"},
    {"prune_final_lr_text", S("\"prune\":{\"final_lr\":\"0.1\"}"), "prune.final_lr", "number"},
    {"prune_final_finetune_epochs_low", S("\"prune\":{\"final_finetune_epochs\":-1}"), "prune.final_finetune_epochs", "0..1000, got -1"},
    {"prune_final_finetune_epochs_high", S("\"prune\":{\"final_finetune_epochs\":1001}"), "prune.final_finetune_epochs", "got 1001"},
    {"prune_final_finetune_epochs_frac", S("\"prune\":{\"final_finetune_epochs\":2.5}"), "prune.final_finetune_epochs", "got 2.5"},
    {"prune_distill_low", S("\"prune\":{\"distill\":-0.5}"), "prune.distill", "[0, 100], got -0.5"},
    {"prune_distill_high", S("\"prune\":{\"distill\":101}"), "prune.distill", "got 101"},
    {"prune_distill_type", S("\"prune\":{\"distill\":true}"), "prune.distill", "must be a number"},
    {"prune_distill_temperature_zero", S("\"prune\":{\"distill_temperature\":0}"), "prune.distill_temperature", "(0, 100], got 0"},
    {"prune_distill_temperature_high", S("\"prune\":{\"distill_temperature\":100.5}"), "prune.distill_temperature", "got 100.5"},
    /* stop */
    {"stop_type", S("\"stop\":1"), "stop", "stop must be an object"},
    {"stop_unknown", S("\"stop\":{\"bar\":1}"), "stop.bar", "unknown field stop.bar"},
    {"stop_max_accuracy_drop_low", S("\"stop\":{\"max_accuracy_drop\":-0.01}"), "stop.max_accuracy_drop", "got -0.01"},
    {"stop_max_accuracy_drop_high", S("\"stop\":{\"max_accuracy_drop\":1.01}"), "stop.max_accuracy_drop", "got 1.01"},
    {"stop_target_params_low", S("\"stop\":{\"target_params\":0}"), "stop.target_params", "null or an integer in 1..9007199254740992, got 0"},
    {"stop_target_params_high", S("\"stop\":{\"target_params\":1e16}"), "stop.target_params", "got 10000000000000000"},
    {"stop_target_params_fraction", S("\"stop\":{\"target_params\":1000.5}"), "stop.target_params", "got 1000.5"},
    {"stop_target_params_type", S("\"stop\":{\"target_params\":\"1M\"}"), "stop.target_params", "got \"1M\""},
    {"stop_recover_epochs_low", S("\"stop\":{\"recover_epochs\":-1}"), "stop.recover_epochs", "got -1"},
    {"stop_recover_epochs_high", S("\"stop\":{\"recover_epochs\":1001}"), "stop.recover_epochs", "got 1001"},
    {"stop_recover_epochs_fraction", S("\"stop\":{\"recover_epochs\":1.5}"), "stop.recover_epochs", "got 1.5"},
    /* data */
    {"data_type", S("\"data\":null"), "data", "data must be an object, got null"},
    {"data_unknown", S("\"data\":{\"shuffle\":true}"), "data.shuffle", "unknown field data.shuffle"},
    {"data_train_limit_low", S("\"data\":{\"train_limit\":0}"), "data.train_limit", "got 0"},
    {"data_train_limit_high", S("\"data\":{\"train_limit\":1e16}"), "data.train_limit", "got 10000000000000000"},
    {"data_train_limit_fraction", S("\"data\":{\"train_limit\":10.5}"), "data.train_limit", "got 10.5"},
    {"data_train_limit_type", S("\"data\":{\"train_limit\":\"all\"}"), "data.train_limit", "got \"all\""},
    {"data_test_limit_low", S("\"data\":{\"test_limit\":-5}"), "data.test_limit", "got -5"},
    {"data_test_limit_type", S("\"data\":{\"test_limit\":{}}"), "data.test_limit", "got an object"},
    {"data_val_fraction_low", S("\"data\":{\"val_fraction\":-0.1}"), "data.val_fraction", "[0, 0.9], got -0.1"},
    {"data_val_fraction_high", S("\"data\":{\"val_fraction\":0.91}"), "data.val_fraction", "got 0.91"},
    {"data_val_from_enum", S("\"data\":{\"val_from\":\"val\"}"), "data.val_from", "one of \"auto\", \"train\", \"test\", got \"val\""},
    {"data_augment_enum", S("\"data\":{\"augment\":\"flip\"}"), "data.augment", "one of \"auto\", \"none\", \"crop-flip\", got \"flip\""},
    {"data_augment_type", S("\"data\":{\"augment\":1}"), "data.augment", "must be a string"},
    {"data_normalize_type", S("\"data\":{\"normalize\":0}"), "data.normalize", "must be a boolean, got 0"},
};

static void test_reject_row(void **state)
{
    const reject_row *r = *state;
    expect_error(r->json, strlen(r->json), GPP_EINVAL, "invalid_argument", r->field, r->msg);
}

/* ---- table: boundary values that must be accepted ----------------------------------- */

typedef struct accept_row {
    const char *name;
    const char *json;
    const char *out;      /* expected substring of the serialised spec */
} accept_row;

static const accept_row accepts[] = {
    {"priority_min", S("\"priority\":-1000"), "\"priority\":-1000,"},
    {"priority_max", S("\"priority\":1000"), "\"priority\":1000,"},
    {"seed_min", S("\"seed\":0"), "\"seed\":0,"},
    {"seed_max", S("\"seed\":2147483647"), "\"seed\":2147483647,"},
    {"int_as_float", S("\"seed\":5.0"), "\"seed\":5,"},
    {"int_with_exponent", S("\"train\":{\"epochs\":1e2}"), "\"epochs\":100,"},
    {"negative_zero_int", S("\"priority\":-0"), "\"priority\":0,"},
    {"epochs_zero", S("\"train\":{\"epochs\":0}"), "\"train\":{\"epochs\":0,"},
    {"epochs_max", S("\"train\":{\"epochs\":1000}"), "\"train\":{\"epochs\":1000,"},
    {"lr_max", S("\"train\":{\"lr\":10}"), "\"lr\":10,"},
    {"momentum_zero", S("\"train\":{\"momentum\":0}"), "\"momentum\":0,"},
    {"train_gamma_one", S("\"train\":{\"gamma\":1}"), "\"step_epochs\":1,\"gamma\":1}"},
    {"schedule_step", S("\"train\":{\"schedule\":\"step\"}"), "\"schedule\":\"step\""},
    {"nesterov_true", S("\"train\":{\"nesterov\":true}"), "\"nesterov\":true"},
    {"device_gpu", S("\"device\":\"gpu\""), "\"device\":\"gpu\""},
    {"device_cpu", S("\"device\":\"cpu\""), "\"device\":\"cpu\""},
    {"grow_widths", S("\"grow\":{\"enabled\":true,\"widths\":[64,96,128,16,32,32]}"), "\"widths\":[64,96,128,16,32,32]"},
    {"grow_widths_null", S("\"grow\":{\"widths\":null}"), "\"widths\":null"},
    {"grow_widths_bounds", S("\"grow\":{\"widths\":[1,4096,1,4096,1,4096]}"), "\"widths\":[1,4096,1,4096,1,4096]"},
    {"push_eigen_k_min", S("\"push\":{\"eigen_k\":1}"), "\"eigen_k\":1,"},
    {"push_eigen_k_max", S("\"push\":{\"eigen_k\":4096}"), "\"eigen_k\":4096,"},
    {"push_eigen_k_null", S("\"push\":{\"eigen_k\":null}"), "\"eigen_k\":null,"},
    {"push_lr", S("\"push\":{\"lr\":0.05}"), "\"min_per_class\":2,\"lr\":0.05}"},
    {"push_lambda_bounds", S("\"push\":{\"lambda\":0,\"alpha\":100}"), "\"lambda\":0,\"lambda_decay\":1,\"alpha\":100,"},
    {"push_lambda_decay_bounds", S("\"push\":{\"lambda_decay\":0}"), "\"lambda_decay\":0,"},
    {"push_lambda_decay_one", S("\"push\":{\"lambda_decay\":1}"), "\"lambda_decay\":1,"},
    {"push_eps_tiny", S("\"push\":{\"eps\":1e-300}"), "\"eps\":1e-300,"},
    {"prune_ratio_near_one", S("\"prune\":{\"ratio\":0.999}"), "\"ratio\":0.999,"},
    {"prune_threshold_eta", S("\"prune\":{\"threshold\":\"eta\"}"), "\"threshold\":\"eta\""},
    {"prune_criterion_l1", S("\"prune\":{\"criterion\":\"l1\"}"), "\"criterion\":\"l1\""},
    {"prune_reconstruct_true", S("\"prune\":{\"reconstruct\":true}"), "\"reconstruct\":true"},
    {"prune_final_finetune_epochs_bounds", S("\"prune\":{\"final_finetune_epochs\":1000}"), "\"final_finetune_epochs\":1000,"},
    {"prune_final_finetune_epochs_zero", S("\"prune\":{\"final_finetune_epochs\":0}"), "\"final_finetune_epochs\":0,"},
    {"prune_distill_bounds", S("\"prune\":{\"distill\":100,\"distill_temperature\":100}"), "\"distill\":100,\"distill_temperature\":100,"},
    {"prune_distill_off", S("\"prune\":{\"distill\":0,\"distill_temperature\":0.5}"), "\"distill\":0,\"distill_temperature\":0.5,"},
    {"stop_target_params_max", S("\"stop\":{\"target_params\":9007199254740992}"), "\"target_params\":9007199254740992,"},
    {"stop_target_params", S("\"stop\":{\"target_params\":25000}"), "\"target_params\":25000,"},
    {"stop_recover_epochs", S("\"stop\":{\"recover_epochs\":0}"), "\"recover_epochs\":0}"},
    {"stop_recover_epochs_max", S("\"stop\":{\"recover_epochs\":1000}"), "\"recover_epochs\":1000}"},
    {"data_limits", S("\"data\":{\"train_limit\":1,\"test_limit\":500}"), "\"train_limit\":1,\"test_limit\":500,"},
    {"data_val_fraction_bounds", S("\"data\":{\"val_fraction\":0.9}"), "\"val_fraction\":0.9,"},
    {"data_augment_crop_flip", S("\"data\":{\"augment\":\"crop-flip\",\"normalize\":false}"), "\"augment\":\"crop-flip\",\"normalize\":false}"},
    {"iterations_zero", S("\"iterations\":0"), "\"iterations\":0,"},
    {"name_utf8", S("\"name\":\"caf\xc3\xa9 \xe2\x98\x95 run\""), "\"name\":\"caf\xc3\xa9 \xe2\x98\x95 run\""},
    {"name_128", S("\"name\":\"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij"
                   "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefgh\""),
     "ghijabcdefgh\",\"dataset\""},
    {"name_escapes", S("\"name\":\"a \\\"quoted\\\" \\\\ name\""), "\"name\":\"a \\\"quoted\\\" \\\\ name\""},
    {"labels_sorted", S("\"labels\":{\"zone\":\"eu\",\"gpu\":\"a100\",\"arch\":\"x86_64\"}"),
     "\"labels\":{\"arch\":\"x86_64\",\"gpu\":\"a100\",\"zone\":\"eu\"}"},
    {"labels_16", S("\"labels\":{\"a\":\"1\",\"b\":\"1\",\"c\":\"1\",\"d\":\"1\",\"e\":\"1\",\"f\":\"1\",\"g\":\"1\",\"h\":\"1\",\"i\":\"1\","
                    "\"j\":\"1\",\"k\":\"1\",\"l\":\"1\",\"m\":\"1\",\"n\":\"1\",\"o\":\"1\",\"p\":\"Z z\"}"), "\"p\":\"Z z\"}"},
    {"dataset_path_tab", "{\"dataset\":{\"format\":\"cifar10-bin\",\"path\":\"/data/a\\tb\"},\"model\":\"vgg-small\"}",
     "\"dataset\":{\"format\":\"cifar10-bin\",\"path\":\"/data/a\\tb\"}"},
    {"checkpoint_sha256", "{\"dataset\":\"cifar10\",\"model\":{\"checkpoint\":\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}}",
     "\"model\":{\"checkpoint\":\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}"},
    {"whitespace_around", " \n\t" S("\"seed\":7") " \r\n", "\"seed\":7,"},
    {"bom_free_nested_brackets_in_strings", S("\"name\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\""), "\"name\":\"[[[["},
    {"escaped_quote_then_brackets", S("\"name\":\"a\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\""), "\"name\":\"a\\\"[[["},
};

static void test_accept_row(void **state)
{
    const accept_row *r = *state;
    char *out = round_trip(r->json);
    if (!strstr(out, r->out)) print_error("output: %s\nwanted: %s\n", out, r->out);
    assert_non_null(strstr(out, r->out));
    free(out);
}

/* ---- table: network descriptions ------------------------------------------------------ */

typedef struct net_row {
    const char *name;
    const char *json;     /* the network */
    const char *field;    /* NULL: must validate */
    const char *msg;
} net_row;

static const net_row nets[] = {
    /* valid, one per layer type */
    {"conv_min", "[{\"type\":\"conv\",\"out\":8,\"k\":3}]", NULL, NULL},
    {"conv_full", "[{\"type\":\"conv\",\"out\":65536,\"k\":31,\"stride\":16,\"pad\":15,\"bias\":false}]", NULL, NULL},
    {"fc_min", "[{\"type\":\"flatten\"},{\"type\":\"fc\",\"out\":1048576}]", NULL, NULL},
    {"pools", "[{\"type\":\"maxpool\",\"k\":2},{\"type\":\"avgpool\",\"k\":3,\"stride\":31,\"pad\":1}]", NULL, NULL},
    {"bn_bounds", "[{\"type\":\"bn\",\"eps\":0.5,\"momentum\":1}]", NULL, NULL},
    {"dropout_zero", "[{\"type\":\"dropout\",\"p\":0}]", NULL, NULL},
    {"no_field_types", "[{\"type\":\"relu\"},{\"type\":\"global-avgpool\"},{\"type\":\"flatten\"},{\"type\":\"softmax-cross-entropy\"}]", NULL, NULL},
    {"object_form", "{\"input\":[1,28,28],\"classes\":10,\"layers\":[{\"type\":\"flatten\"},{\"type\":\"fc\",\"out\":10}]}", NULL, NULL},
    {"concat_16", "[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
                  "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"input\"]}]", NULL, NULL},
    {"name_charset", "[{\"type\":\"relu\",\"name\":\"Block_1.relu-a\"}]", NULL, NULL},
    /* conv */
    {"conv_out_missing", "[{\"type\":\"conv\",\"k\":3}]", "model[0].out", "model[0].out is required for conv layers"},
    {"conv_k_missing", "[{\"type\":\"conv\",\"out\":3}]", "model[0].k", "model[0].k is required"},
    {"conv_out_low", "[{\"type\":\"conv\",\"out\":0,\"k\":3}]", "model[0].out", "1..65536, got 0"},
    {"conv_out_high", "[{\"type\":\"conv\",\"out\":65537,\"k\":3}]", "model[0].out", "got 65537"},
    {"conv_out_type", "[{\"type\":\"conv\",\"out\":\"8\",\"k\":3}]", "model[0].out", "must be an integer in 1..65536, got \"8\""},
    {"conv_out_fraction", "[{\"type\":\"conv\",\"out\":8.5,\"k\":3}]", "model[0].out", "must be an integer, got 8.5"},
    {"conv_k_low", "[{\"type\":\"conv\",\"out\":8,\"k\":0}]", "model[0].k", "1..31, got 0"},
    {"conv_k_high", "[{\"type\":\"conv\",\"out\":8,\"k\":32}]", "model[0].k", "got 32"},
    {"conv_stride_low", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"stride\":0}]", "model[0].stride", "1..16, got 0"},
    {"conv_stride_high", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"stride\":17}]", "model[0].stride", "got 17"},
    {"conv_pad_low", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"pad\":-1}]", "model[0].pad", "0..15, got -1"},
    {"conv_pad_high", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"pad\":16}]", "model[0].pad", "got 16"},
    {"conv_bias_type", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"bias\":1}]", "model[0].bias", "must be a boolean, got 1"},
    {"conv_takes_no_p", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"p\":0.5}]", "model[0].p", "conv layers take no \"p\""},
    /* fc */
    {"fc_out_low", "[{\"type\":\"fc\",\"out\":0}]", "model[0].out", "1..1048576, got 0"},
    {"fc_out_high", "[{\"type\":\"fc\",\"out\":1048577}]", "model[0].out", "got 1048577"},
    {"fc_takes_no_k", "[{\"type\":\"fc\",\"out\":10,\"k\":3}]", "model[0].k", "fc layers take no \"k\""},
    /* pools */
    {"maxpool_k_missing", "[{\"type\":\"maxpool\"}]", "model[0].k", "required"},
    {"maxpool_k_high", "[{\"type\":\"maxpool\",\"k\":32}]", "model[0].k", "1..31, got 32"},
    {"avgpool_stride_high", "[{\"type\":\"avgpool\",\"k\":2,\"stride\":32}]", "model[0].stride", "1..31, got 32"},
    {"avgpool_pad_high", "[{\"type\":\"avgpool\",\"k\":2,\"pad\":16}]", "model[0].pad", "0..15, got 16"},
    {"maxpool_takes_no_bias", "[{\"type\":\"maxpool\",\"k\":2,\"bias\":true}]", "model[0].bias", "take no \"bias\""},
    /* bn, dropout */
    {"bn_eps_low", "[{\"type\":\"bn\",\"eps\":0}]", "model[0].eps", "(0, 1), got 0"},
    {"bn_eps_high", "[{\"type\":\"bn\",\"eps\":1}]", "model[0].eps", "(0, 1), got 1"},
    {"bn_momentum_low", "[{\"type\":\"bn\",\"momentum\":0}]", "model[0].momentum", "(0, 1], got 0"},
    {"bn_momentum_high", "[{\"type\":\"bn\",\"momentum\":1.5}]", "model[0].momentum", "got 1.5"},
    {"bn_eps_type", "[{\"type\":\"bn\",\"eps\":\"small\"}]", "model[0].eps", "must be a number"},
    {"dropout_p_low", "[{\"type\":\"dropout\",\"p\":-0.1}]", "model[0].p", "[0, 1), got -0.1"},
    {"dropout_p_high", "[{\"type\":\"dropout\",\"p\":1}]", "model[0].p", "[0, 1), got 1"},
    {"relu_takes_no_out", "[{\"type\":\"relu\",\"out\":3}]", "model[0].out", "relu layers take no \"out\""},
    /* types and shape of a layer */
    {"type_unknown", "[{\"type\":\"lstm\"}]", "model[0].type", "got \"lstm\""},
    {"type_missing", "[{\"name\":\"a\"}]", "model[0].type", "model[0].type is required"},
    {"type_not_string", "[{\"type\":3}]", "model[0].type", "must be a string, got a number"},
    {"layer_not_object", "[{\"type\":\"relu\"},\"relu\"]", "model[1]", "model[1] must be an object"},
    {"layer_unknown_field", "[{\"type\":\"relu\",\"colour\":\"red\"}]", "model[0].colour", "unknown field model[0].colour"},
    {"layer_duplicate_field", "[{\"type\":\"conv\",\"out\":8,\"k\":3,\"k\":5}]", "model[0].k", "duplicate field model[0].k"},
    {"network_not_array", "5", "model", "array of layers or an object"},
    {"layers_empty", "[]", "model", "1..1024 layers, got 0"},
    {"layers_not_array", "{\"layers\":{}}", "model.layers", "must be an array of layers, got an object"},
    /* names */
    {"name_bad_chars", "[{\"type\":\"relu\",\"name\":\"a b\"}]", "model[0].name", "[A-Za-z0-9_.-]{1,64}, got \"a b\""},
    {"name_empty", "[{\"type\":\"relu\",\"name\":\"\"}]", "model[0].name", "got \"\""},
    {"name_65", "[{\"type\":\"relu\",\"name\":\"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcde\"}]", "model[0].name", "{1,64}"},
    {"name_type", "[{\"type\":\"relu\",\"name\":7}]", "model[0].name", "must be a string, got a number"},
    {"name_reserved_input", "[{\"type\":\"relu\",\"name\":\"input\"}]", "model[0].name", "reserved"},
    {"name_duplicate", "[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"relu\",\"name\":\"a\"}]", "model[1].name", "\"a\" is already used by layer 0"},
    {"name_collides_with_default", "[{\"type\":\"relu\"},{\"type\":\"relu\",\"name\":\"relu0\"}]", "model[1].name", "\"relu0\" is already used"},
    {"default_collides_with_name", "[{\"type\":\"relu\",\"name\":\"relu1\"},{\"type\":\"relu\"}]", "model[1].name", "\"relu1\" is already used"},
    /* inputs */
    {"forward_reference", "[{\"type\":\"relu\",\"inputs\":[\"later\"]},{\"type\":\"relu\",\"name\":\"later\"}]", "model[0].inputs[0]", "must name an earlier layer or \"input\", got \"later\""},
    {"self_reference", "[{\"type\":\"relu\",\"name\":\"a\",\"inputs\":[\"a\"]}]", "model[0].inputs[0]", "got \"a\""},
    {"unknown_input", "[{\"type\":\"relu\"},{\"type\":\"relu\",\"inputs\":[\"nope\"]}]", "model[1].inputs[0]", "got \"nope\""},
    {"inputs_not_array", "[{\"type\":\"relu\",\"inputs\":\"input\"}]", "model[0].inputs", "must be an array of layer names, got a string"},
    {"inputs_elem_type", "[{\"type\":\"relu\",\"inputs\":[3]}]", "model[0].inputs[0]", "must be a layer name (a string)"},
    {"inputs_empty", "[{\"type\":\"relu\",\"inputs\":[]}]", "model[0].inputs", "exactly 1 input"},
    {"relu_two_inputs", "[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"relu\",\"inputs\":[\"a\",\"input\"]}]", "model[1].inputs", "relu takes exactly 1 input (only concat takes more), got 2"},
    {"concat_one_input", "[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\"]}]", "model[1].inputs", "concat takes 2..16 inputs, got 1"},
    {"concat_17_inputs", "[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
                         "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}]", "model[1].inputs", "got 17"},
    {"concat_no_inputs", "[{\"type\":\"relu\"},{\"type\":\"concat\"}]", "model[1].inputs", "required for concat"},
    /* object form */
    {"object_unknown_key", "{\"layers\":[{\"type\":\"relu\"}],\"optimizer\":\"sgd\"}", "model.optimizer", "unknown field model.optimizer"},
    {"object_duplicate_key", "{\"layers\":[{\"type\":\"relu\"}],\"classes\":10,\"classes\":5}", "model.classes", "duplicate"},
    {"object_error_path", "{\"layers\":[{\"type\":\"relu\"},{\"type\":\"conv\",\"out\":4,\"k\":0}]}", "model.layers[1].k", "model.layers[1].k must be"},
    {"input_short", "{\"input\":[28,28],\"layers\":[{\"type\":\"relu\"}]}", "model.input", "[C, H, W]"},
    {"input_type", "{\"input\":\"1x28x28\",\"layers\":[{\"type\":\"relu\"}]}", "model.input", "got a string"},
    {"input_low", "{\"input\":[0,28,28],\"layers\":[{\"type\":\"relu\"}]}", "model.input[0]", "1..65536, got 0"},
    {"input_high", "{\"input\":[1,65537,28],\"layers\":[{\"type\":\"relu\"}]}", "model.input[1]", "got 65537"},
    {"input_fraction", "{\"input\":[1,28,27.5],\"layers\":[{\"type\":\"relu\"}]}", "model.input[2]", "got 27.5"},
    {"classes_low", "{\"classes\":1,\"layers\":[{\"type\":\"relu\"}]}", "model.classes", "2..100000, got 1"},
    {"classes_high", "{\"classes\":100001,\"layers\":[{\"type\":\"relu\"}]}", "model.classes", "got 100001"},
};

static void test_net_row(void **state)
{
    const net_row *r = *state;
    cJSON *j = cJSON_Parse(r->json);
    assert_non_null(j);
    gpp_error e;
    gpp_error_clear(&e);
    int rc = gpp_netdesc_validate(j, "model", &e);
    if ((r->field == NULL) != (rc == 0) || (r->field && (strcmp(e.field, r->field) != 0 || !strstr(e.message, r->msg))))
        print_error("rc %d field '%s' message '%s'\n", rc, e.field, e.message);
    if (!r->field) {
        assert_int_equal(rc, 0);
        /* the canonical form validates too and is a fixed point */
        cJSON *c1 = gpp_netdesc_canonical(j, "model", &e);
        assert_non_null(c1);
        cJSON *c2 = gpp_netdesc_canonical(c1, "model", &e);
        assert_non_null(c2);
        assert_true(cJSON_Compare(c1, c2, 1));
        cJSON_Delete(c1);
        cJSON_Delete(c2);
    } else {
        assert_int_equal(rc, GPP_EINVAL);
        assert_string_equal(e.code, "invalid_argument");
        assert_string_equal(e.field, r->field);
        assert_non_null(strstr(e.message, r->msg));
        assert_null(gpp_netdesc_canonical(j, "model", NULL));
    }
    cJSON_Delete(j);
}

/* ---- single tests: defaults and shapes --------------------------------------------- */

static void test_defaults_filled(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse("{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\"}", &s, &e), 0);
    assert_non_null(s);
    assert_string_equal(s->name, "lenet5-fashion-mnist");
    assert_int_equal(s->dataset_kind, GPP_DATASET_NAME);
    assert_string_equal(s->dataset_name, "fashion-mnist");
    assert_int_equal(s->model_kind, GPP_MODEL_ZOO);
    assert_string_equal(s->model_zoo, "lenet5");
    assert_null(s->model_net);
    assert_int_equal(s->device, GPP_DEVICE_ANY);
    assert_int_equal(s->n_labels, 0);
    assert_int_equal(s->priority, 0);
    assert_int_equal(s->seed, 1);
    assert_int_equal(s->max_restarts, 3);
    assert_int_equal(s->iterations, 10);
    /* train */
    assert_int_equal(s->train.epochs, 2);
    assert_int_equal(s->train.batch_size, 64);
    assert_true(s->train.lr == 0.01);
    assert_true(s->train.momentum == 0.9);
    assert_false(s->train.nesterov);
    assert_true(s->train.weight_decay == 0.0005);
    assert_int_equal(s->train.schedule, GPP_SCHEDULE_COSINE);
    assert_int_equal(s->train.step_epochs, 1);
    assert_true(s->train.gamma == 0.1);
    /* grow */
    assert_false(s->grow.enabled);
    assert_int_equal(s->grow.max_modules, 4);
    assert_true(s->grow.min_gain == 0.002);
    assert_int_equal(s->grow.epochs, 1);
    for (int i = 0; i < GPP_JOBSPEC_GROW_WIDTHS; i++) assert_int_equal(s->grow.widths[i], 0);
    /* push */
    assert_int_equal(s->push.epochs, 1);
    assert_true(s->push.lambda == 1.0);
    assert_true(s->push.lambda_decay == 1.0);
    assert_true(s->push.alpha == 0.02);
    assert_true(s->push.beta == 0.01);
    assert_true(s->push.gamma == 0.1);
    assert_int_equal(s->push.separation, GPP_SEPARATION_DIAG);
    assert_int_equal(s->push.eigen_k, 0);
    assert_true(s->push.eigen_reg == 1.0);
    assert_true(s->push.keep_fraction == 0.5);
    assert_true(s->push.ramp_epochs == 1.0);
    assert_true(s->push.ema == 0.9);
    assert_true(s->push.eps == 1e-6);
    assert_int_equal(s->push.min_per_class, 2);
    assert_true(s->push.lr == 0.0);
    /* prune */
    assert_int_equal(s->prune.threshold, GPP_THRESHOLD_RATIO);
    assert_true(s->prune.ratio == 0.3);
    assert_true(s->prune.eta == 0.1);
    assert_true(s->prune.eta_step == 0.1);
    assert_true(s->prune.max_layer_fraction == 0.5);
    assert_int_equal(s->prune.min_channels, 1);
    assert_true(s->prune.max_accuracy_drop == 0.01);
    assert_int_equal(s->prune.samples_per_class, 10);
    assert_int_equal(s->prune.finetune_epochs, 1);
    assert_int_equal(s->prune.final_finetune_epochs, 9);
    assert_true(s->prune.distill == 0.0);
    assert_true(s->prune.distill_temperature == 4.0);
    assert_false(s->prune.reconstruct);
    assert_int_equal(s->prune.reconstruct_samples, 512);
    assert_true(s->prune.compare_cut);
    assert_int_equal(s->prune.criterion, GPP_CRITERION_GPP);
    assert_true(s->prune.lr == 0.0);
    assert_true(s->prune.final_lr == 0.0);
    assert_int_equal(s->prune.bn_recalibrate, 1024);
    /* stop, data */
    assert_true(s->stop.max_accuracy_drop == 0.005);
    assert_int_equal(s->stop.recover_epochs, 9);
    assert_true(s->stop.target_params == 0);
    assert_true(s->data.train_limit == 0);
    assert_true(s->data.test_limit == 0);
    assert_true(s->data.val_fraction == 0.1);
    assert_int_equal(s->data.val_from, GPP_VAL_FROM_AUTO);
    assert_int_equal(s->data.augment, GPP_AUGMENT_AUTO);
    assert_true(s->data.normalize);
    assert_int_equal(gpp_jobspec_stage_count(s), 1 + 0 + 20 + 1);   /* + finetune */
    gpp_jobspec_free(s);
}

static void test_defaults_serialised(void **state)
{
    (void)state;
    char *out = round_trip("{\"model\":\"lenet5\",\"dataset\":\"fashion-mnist\"}");
    assert_string_equal(out,
        "{\"name\":\"lenet5-fashion-mnist\",\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\","
        "\"device\":\"any\",\"labels\":{},\"priority\":0,\"seed\":1,\"max_restarts\":3,"
        "\"train\":{\"epochs\":2,\"batch_size\":64,\"lr\":0.01,\"momentum\":0.9,\"nesterov\":false,"
        "\"weight_decay\":0.0005,\"schedule\":\"cosine\",\"step_epochs\":1,\"gamma\":0.1},"
        "\"grow\":{\"enabled\":false,\"max_modules\":4,\"min_gain\":0.002,\"epochs\":1,\"widths\":null},"
        "\"push\":{\"epochs\":1,\"lambda\":1,\"lambda_decay\":1,\"alpha\":0.02,\"beta\":0.01,\"gamma\":0.1,"
        "\"separation\":\"diag\",\"eigen_k\":null,\"eigen_reg\":1,\"keep_fraction\":0.5,"
        "\"ramp_epochs\":1,\"ema\":0.9,\"eps\":1e-06,\"min_per_class\":2,\"lr\":null},"
        "\"prune\":{\"threshold\":\"ratio\",\"ratio\":0.3,\"eta\":0.1,\"eta_step\":0.1,"
        "\"max_layer_fraction\":0.5,\"min_channels\":1,\"max_accuracy_drop\":0.01,"
        "\"samples_per_class\":10,\"finetune_epochs\":1,\"final_finetune_epochs\":9,"
        "\"distill\":0,\"distill_temperature\":4,\"reconstruct\":false,"
        "\"reconstruct_samples\":512,\"criterion\":\"gpp\",\"compare_cut\":true,\"lr\":null,\"final_lr\":null,"
        "\"bn_recalibrate\":1024},"
        "\"iterations\":10,"
        "\"stop\":{\"max_accuracy_drop\":0.005,\"target_params\":null,\"recover_epochs\":9},"
        "\"data\":{\"train_limit\":null,\"test_limit\":null,\"val_fraction\":0.1,"
        "\"val_from\":\"auto\",\"augment\":\"auto\",\"normalize\":true}}");
    free(out);
}

static void test_prune_ratio_error_shape(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    int rc = parse(S("\"prune\":{\"ratio\":1.5}"), &s, &e);
    assert_int_equal(rc, GPP_EINVAL);
    assert_null(s);
    assert_string_equal(e.code, "invalid_argument");
    assert_string_equal(e.field, "prune.ratio");
    assert_string_equal(e.message, "prune.ratio must be in (0, 1), got 1.5");
}

static void test_default_name_rules(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse("{\"dataset\":{\"format\":\"idx\",\"path\":\"/d\"},\"model\":\"lenet5\"}", &s, &e), 0);
    assert_string_equal(s->name, "job");
    assert_int_equal(s->dataset_kind, GPP_DATASET_FILES);
    assert_int_equal(s->dataset_format, GPP_DATASET_IDX);
    assert_string_equal(s->dataset_path, "/d");
    gpp_jobspec_free(s);
    assert_int_equal(parse("{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"job-1\"}}", &s, &e), 0);
    assert_string_equal(s->name, "job");
    assert_int_equal(s->model_kind, GPP_MODEL_CHECKPOINT);
    assert_string_equal(s->model_checkpoint, "job-1");
    gpp_jobspec_free(s);
    assert_int_equal(parse("{\"dataset\":\"d\",\"model\":\"vgg16-cifar\",\"name\":\"mine\"}", &s, &e), 0);
    assert_string_equal(s->name, "mine");
    gpp_jobspec_free(s);
    assert_int_equal(parse("{\"dataset\":\"d\",\"model\":[{\"type\":\"relu\"}]}", &s, &e), 0);
    assert_string_equal(s->name, "job");
    gpp_jobspec_free(s);
}

/* gpp_pick_models: baseline, accuracy-first, size-first; a finetune result
 * takes the place of the prune it recovered. */
static void test_pick_models(void **state)
{
    (void)state;
    const gpp_pick_role O = GPP_PICK_OTHER, B = GPP_PICK_BASE, P = GPP_PICK_PRUNE,
                        F = GPP_PICK_FINETUNE;
    int b, a, z;
    /* no result yet */
    gpp_pick_models(NULL, 0, 0.01, &b, &a, &z);
    assert_true(b == -1 && a == -1 && z == -1);
    /* train, push, prune, push, prune, push, prune: the third prune fell too far */
    gpp_pick_item it[9] = {
        {B, -1, 0.90, 1000}, {O, -1, 0.95, 1000}, {P, -1, 0.905, 700}, {O, -1, 0.99, 700},
        {P, -1, 0.895, 400}, {O, -1, 0.99, 400}, {P, -1, 0.85, 200},
    };
    gpp_pick_models(it, 3, 0.01, &b, &a, &z);
    assert_true(b == 0 && a == 2 && z == 2);
    gpp_pick_models(it, 7, 0.01, &b, &a, &z);
    assert_true(b == 0 && a == 2 && z == 4);   /* 0.895 >= 0.90 - 0.01; 0.85 is not */
    gpp_pick_models(it, 7, 0.001, &b, &a, &z);
    assert_true(a == 2 && z == 2);
    gpp_pick_models(it, 7, 0.0, &b, &a, &z);
    assert_true(a == 2 && z == 2);
    /* none within the drop: size-first is accuracy-first */
    it[2].val = 0.5;
    gpp_pick_models(it, 7, 0.0, &b, &a, &z);
    assert_true(a == 4 && z == 4);
    it[2].val = 0.905;
    /* the final recovery of prune 4 stands in for it, for both picks */
    it[7] = (gpp_pick_item){F, 4, 0.93, 400};
    gpp_pick_models(it, 8, 0.01, &b, &a, &z);
    assert_true(b == 0 && a == 7 && z == 7);
    /* a recovery that fell below the bound: the next smallest within it */
    it[7].val = 0.70;
    gpp_pick_models(it, 8, 0.01, &b, &a, &z);
    assert_true(a == 2 && z == 2);
    /* a later base (grow) moves the bound; NULL outs are fine */
    it[8] = (gpp_pick_item){B, -1, 0.99, 1000};
    gpp_pick_models(it, 9, 0.01, &b, NULL, &z);
    assert_true(b == 8 && z == 2);   /* nothing within 0.98: accuracy-first */
    gpp_pick_models(it, 9, 0.01, NULL, NULL, NULL);
}

static void test_stage_count(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse(S("\"grow\":{\"enabled\":true,\"max_modules\":3},\"iterations\":2"), &s, &e), 0);
    assert_int_equal(gpp_jobspec_stage_count(s), 1 + 3 + 4 + 1);
    gpp_jobspec_free(s);
    assert_int_equal(parse(S("\"grow\":{\"enabled\":false,\"max_modules\":3},\"iterations\":2"), &s, &e), 0);
    assert_int_equal(gpp_jobspec_stage_count(s), 1 + 4 + 1);
    gpp_jobspec_free(s);
    /* from a checkpoint: its train stage only evaluates it */
    assert_int_equal(parse("{\"dataset\":\"d\",\"model\":{\"checkpoint\":\"j\"},\"iterations\":1}", &s, &e), 0);
    assert_int_equal(gpp_jobspec_stage_count(s), 1 + 2 + 1);
    gpp_jobspec_free(s);
    /* no final recovery: none asked for, or no loop to recover from */
    assert_int_equal(parse(S("\"iterations\":2,\"prune\":{\"final_finetune_epochs\":0}"), &s, &e), 0);
    assert_int_equal(gpp_jobspec_stage_count(s), 1 + 4);
    gpp_jobspec_free(s);
    assert_int_equal(parse(S("\"iterations\":0"), &s, &e), 0);
    assert_int_equal(gpp_jobspec_stage_count(s), 1);
    gpp_jobspec_free(s);
    assert_int_equal(gpp_jobspec_stage_count(NULL), 0);
}

static void test_labels_parsed_sorted(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse(S("\"labels\":{\"zone\":\"eu-1\",\"gpu\":\"h100\"}"), &s, &e), 0);
    assert_int_equal(s->n_labels, 2);
    assert_string_equal(s->labels[0].key, "gpu");
    assert_string_equal(s->labels[0].value, "h100");
    assert_string_equal(s->labels[1].key, "zone");
    assert_string_equal(s->labels[1].value, "eu-1");
    gpp_jobspec_free(s);
}

/* ---- limits of the text ---------------------------------------------------------------- */

static void test_nesting_bomb(void **state)
{
    (void)state;
    size_t n = 100000;
    char *t = malloc(n);
    assert_non_null(t);
    memset(t, '[', n);
    expect_error(t, n, GPP_EFORMAT, "malformed", "", "nested deeper than 32 at byte 32");
    free(t);
}

static void test_nesting_33_in_spec(void **state)
{
    (void)state;
    /* { + 31 [ = depth 32: structurally allowed (then refused as a field rule) */
    char ok[512], bad[512];
    snprintf(ok, sizeof ok, "{\"dataset\":\"d\",\"model\":\"lenet5\",\"x\":%.*s1%.*s}",
             31, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 31, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    expect_error(ok, strlen(ok), GPP_EINVAL, "invalid_argument", "x", "unknown field x");
    snprintf(bad, sizeof bad, "{\"dataset\":\"d\",\"model\":\"lenet5\",\"x\":%.*s1%.*s}",
             32, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 32, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    char want[64];
    size_t at = strlen("{\"dataset\":\"d\",\"model\":\"lenet5\",\"x\":") + 31;
    snprintf(want, sizeof want, "nested deeper than 32 at byte %zu", at);
    expect_error(bad, strlen(bad), GPP_EFORMAT, "malformed", "", want);
}

static void test_too_large(void **state)
{
    (void)state;
    const char *spec = "{\"dataset\":\"d\",\"model\":\"lenet5\"}";
    size_t n = GPP_JOBSPEC_MAX_BYTES;
    char *t = malloc(n + 1);
    assert_non_null(t);
    memset(t, ' ', n + 1);
    memcpy(t, spec, strlen(spec));
    /* exactly the limit: fine */
    gpp_jobspec *s = NULL;
    gpp_error e;
    assert_int_equal(gpp_jobspec_parse(t, n, &s, &e), 0);
    assert_non_null(s);
    gpp_jobspec_free(s);
    /* one byte more: too large, before any parsing */
    expect_error(t, n + 1, GPP_ETOOBIG, "too_large", "", "1048577 bytes, over the limit of 1048576");
    free(t);
}

static void test_invalid_json_offset(void **state)
{
    (void)state;
    const char *t = "{\"dataset\":\"d\",,\"model\":\"lenet5\"}";
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse(t, &s, &e), GPP_EFORMAT);
    assert_null(s);
    assert_string_equal(e.code, "malformed");
    assert_string_equal(e.field, "");
    /* the second comma is byte 15; cJSON points at it or just past it */
    const char *at = strstr(e.message, "at byte ");
    assert_non_null(at);
    long off = strtol(at + 8, NULL, 10);
    assert_in_range(off, 15, 16);
}

static void test_invalid_json_variants(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{", "{\"dataset\":}", "{\"dataset\":\"d\"", "{'dataset':'d'}", "{\"a\":tru}",
        "{\"a\":\"\\ud800\"}", "{\"a\":01x}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(bad[i], strlen(bad[i]), GPP_EFORMAT, "malformed", "", "at byte ");
    expect_error("", 0, GPP_EFORMAT, "malformed", "", "empty document");
    expect_error(" \n ", 3, GPP_EFORMAT, "malformed", "", "empty document");
    expect_error(NULL, 0, GPP_EFORMAT, "malformed", "", "empty document");
}

static void test_trailing_text(void **state)
{
    (void)state;
    const char *t = "{\"dataset\":\"d\",\"model\":\"lenet5\"} {}";
    expect_error(t, strlen(t), GPP_EFORMAT, "malformed", "", "after the value at byte 33");
}

static void test_nul_bytes(void **state)
{
    (void)state;
    const char t[] = "{\"dataset\":\"d\",\"model\":\"lenet5\"}\0garbage";
    expect_error(t, sizeof t - 1, GPP_EFORMAT, "malformed", "", "NUL byte at byte 32");
    const char *u = "{\"dataset\":\"d\\u0000x\",\"model\":\"lenet5\"}";
    expect_error(u, strlen(u), GPP_EFORMAT, "malformed", "", "\\u0000");
    /* a length shorter than the text: only `len` bytes are read */
    const char *v = "{\"dataset\":\"d\",\"model\":\"lenet5\"}trailing";
    gpp_jobspec *s = NULL;
    gpp_error e;
    assert_int_equal(gpp_jobspec_parse(v, 32, &s, &e), 0);
    gpp_jobspec_free(s);
}

static void test_null_arguments(void **state)
{
    (void)state;
    gpp_error e;
    assert_int_equal(gpp_jobspec_parse("{}", 2, NULL, &e), GPP_EINVAL);
    assert_int_equal(gpp_jobspec_parse(NULL, 5, NULL, NULL), GPP_EINVAL);
    gpp_jobspec *s = NULL;
    assert_int_equal(gpp_jobspec_from_cjson(NULL, &s, &e), GPP_EINVAL);
    assert_null(s);
    gpp_jobspec_free(NULL);
    assert_null(gpp_jobspec_to_cjson(NULL));
    assert_null(gpp_jobspec_to_json(NULL));
}

/* ---- from_cjson / to_cjson ---------------------------------------------------------------- */

static void test_from_cjson_nan(void **state)
{
    (void)state;
    cJSON *o = cJSON_Parse("{\"dataset\":\"d\",\"model\":\"lenet5\",\"train\":{}}");
    assert_non_null(o);
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(o, "train"), "lr", cJSON_CreateNumber(NAN));
    gpp_jobspec *s = NULL;
    gpp_error e;
    assert_int_equal(gpp_jobspec_from_cjson(o, &s, &e), GPP_EINVAL);
    assert_null(s);
    assert_string_equal(e.field, "train.lr");
    assert_non_null(strstr(e.message, "got NaN"));
    cJSON_Delete(o);
    o = cJSON_Parse("{\"dataset\":\"d\",\"model\":\"lenet5\"}");
    cJSON_AddItemToObject(o, "seed", cJSON_CreateNumber(INFINITY));
    assert_int_equal(gpp_jobspec_from_cjson(o, &s, &e), GPP_EINVAL);
    assert_string_equal(e.field, "seed");
    cJSON_Delete(o);
}

static void test_from_cjson_duplicate(void **state)
{
    (void)state;
    cJSON *o = cJSON_Parse("{\"dataset\":\"d\",\"model\":\"lenet5\"}");
    assert_non_null(o);
    cJSON_AddItemToObject(o, "iterations", cJSON_CreateNumber(1));
    cJSON_AddItemToObject(o, "iterations", cJSON_CreateNumber(2));
    gpp_jobspec *s = NULL;
    gpp_error e;
    assert_int_equal(gpp_jobspec_from_cjson(o, &s, &e), GPP_EINVAL);
    assert_string_equal(e.field, "iterations");
    assert_non_null(strstr(e.message, "duplicate"));
    cJSON_Delete(o);
}

static void test_keys_case_sensitive(void **state)
{
    (void)state;
    expect_error("{\"Dataset\":\"d\",\"model\":\"lenet5\"}", 32, GPP_EINVAL, "invalid_argument",
                 "Dataset", "unknown field Dataset");
}

static void test_to_cjson_shape(void **state)
{
    (void)state;
    gpp_error e;
    gpp_jobspec *s = NULL;
    assert_int_equal(parse(S("\"stop\":{\"target_params\":123456789012}"), &s, &e), 0);
    cJSON *o = gpp_jobspec_to_cjson(s);
    assert_non_null(o);
    static const char *const order[] = {"name", "dataset", "model", "device", "labels", "priority",
                                        "seed", "max_restarts", "train", "grow", "push", "prune",
                                        "iterations", "stop", "data"};
    size_t i = 0;
    for (const cJSON *c = o->child; c; c = c->next, i++) {
        assert_true(i < sizeof order / sizeof order[0]);
        assert_string_equal(c->string, order[i]);
    }
    assert_int_equal(i, sizeof order / sizeof order[0]);
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "stop"), "target_params");
    assert_true(cJSON_IsNumber(tp));
    assert_true(tp->valuedouble == 123456789012.0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "push"), "lr")));
    /* to_cjson feeds from_cjson */
    gpp_jobspec *s2 = NULL;
    assert_int_equal(gpp_jobspec_from_cjson(o, &s2, &e), 0);
    assert_true(s2->stop.target_params == 123456789012LL);
    char *a = gpp_jobspec_to_json(s), *b = gpp_jobspec_to_json(s2);
    assert_string_equal(a, b);
    free(a);
    free(b);
    gpp_jobspec_free(s2);
    cJSON_Delete(o);
    gpp_jobspec_free(s);
}

/* ---- round trips ---------------------------------------------------------------------------- */

static void test_round_trip_full(void **state)
{
    (void)state;
    const char *full =
        "{\"name\":\"full spec\",\"dataset\":\"cifar10\",\"model\":\"vgg16-cifar\",\"device\":\"gpu\","
        "\"labels\":{\"gpu\":\"a100\",\"site\":\"lab 2\"},\"priority\":-5,\"seed\":42,\"max_restarts\":0,"
        "\"train\":{\"epochs\":30,\"batch_size\":128,\"lr\":0.1,\"momentum\":0.95,\"nesterov\":true,"
        "\"weight_decay\":1e-4,\"schedule\":\"step\",\"step_epochs\":10,\"gamma\":0.5},"
        "\"grow\":{\"enabled\":true,\"max_modules\":2,\"min_gain\":0.01,\"epochs\":3,\"widths\":[64,96,128,16,32,32]},"
        "\"push\":{\"epochs\":2,\"lambda\":1,\"alpha\":0.2,\"beta\":0.02,\"gamma\":0.3,\"separation\":\"eigen\","
        "\"eigen_k\":9,\"eigen_reg\":0.01,\"keep_fraction\":0.25,\"ramp_epochs\":0.5,\"ema\":0.5,\"eps\":1e-8,"
        "\"min_per_class\":4,\"lr\":0.003},"
        "\"prune\":{\"threshold\":\"ratio\",\"ratio\":0.5,\"eta\":0.2,\"eta_step\":0.05,\"max_layer_fraction\":0.75,"
        "\"min_channels\":4,\"max_accuracy_drop\":0.02,\"samples_per_class\":20,\"finetune_epochs\":2,"
        "\"final_finetune_epochs\":7,\"distill\":0.25,\"distill_temperature\":2.5,"
        "\"reconstruct\":true,\"reconstruct_samples\":1024,\"criterion\":\"random\",\"compare_cut\":false,\"lr\":0.001,\"final_lr\":0.0005,"
        "\"bn_recalibrate\":0},"
        "\"iterations\":6,\"stop\":{\"max_accuracy_drop\":0.05,\"target_params\":1000000,\"recover_epochs\":5},"
        "\"data\":{\"train_limit\":5000,\"test_limit\":1000,\"val_fraction\":0,\"val_from\":\"test\",\"augment\":\"crop-flip\",\"normalize\":false}}";
    char *out = round_trip(full);
    /* every non-default value survives */
    static const char *const want[] = {
        "\"name\":\"full spec\"", "\"device\":\"gpu\"", "\"labels\":{\"gpu\":\"a100\",\"site\":\"lab 2\"}",
        "\"priority\":-5", "\"seed\":42", "\"max_restarts\":0", "\"weight_decay\":0.0001",
        "\"schedule\":\"step\",\"step_epochs\":10,\"gamma\":0.5", "\"separation\":\"eigen\",\"eigen_k\":9",
        "\"eps\":1e-08", "\"lr\":0.003}", "\"criterion\":\"random\",\"compare_cut\":false,\"lr\":0.001,\"final_lr\":0.0005,\"bn_recalibrate\":0}", "\"iterations\":6",
        "\"target_params\":1000000,\"recover_epochs\":5}", "\"train_limit\":5000,\"test_limit\":1000,\"val_fraction\":0,\"val_from\":\"test\",",
        "\"final_finetune_epochs\":7,\"distill\":0.25,\"distill_temperature\":2.5,",
        "\"reconstruct\":true,",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(out, want[i])) print_error("missing %s in %s\n", want[i], out);
        assert_non_null(strstr(out, want[i]));
    }
    free(out);
}

static void test_round_trip_inline_inception(void **state)
{
    (void)state;
    const char *spec =
        "{\"dataset\":\"cifar10\",\"model\":{\"input\":[3,32,32],\"classes\":10,\"layers\":["
        "{\"type\":\"conv\",\"out\":32,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\",\"name\":\"stem\"},"
        "{\"type\":\"conv\",\"name\":\"b1\",\"out\":16,\"k\":1,\"inputs\":[\"stem\"]},"
        "{\"type\":\"conv\",\"name\":\"b2r\",\"out\":16,\"k\":1,\"inputs\":[\"stem\"]},"
        "{\"type\":\"conv\",\"name\":\"b2\",\"out\":24,\"k\":3,\"pad\":1},"
        "{\"type\":\"conv\",\"name\":\"b3r\",\"out\":8,\"k\":1,\"inputs\":[\"stem\"]},"
        "{\"type\":\"conv\",\"name\":\"b3a\",\"out\":12,\"k\":3,\"pad\":1},"
        "{\"type\":\"conv\",\"name\":\"b3\",\"out\":12,\"k\":3,\"pad\":1},"
        "{\"type\":\"maxpool\",\"name\":\"b4p\",\"k\":3,\"stride\":1,\"pad\":1,\"inputs\":[\"stem\"]},"
        "{\"type\":\"conv\",\"name\":\"b4\",\"out\":8,\"k\":1},"
        "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"b1\",\"b2\",\"b3\",\"b4\"]},"
        "{\"type\":\"global-avgpool\"},{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"fc\",\"out\":10},"
        "{\"type\":\"softmax-cross-entropy\"}]}}";
    char *out = round_trip(spec);
    static const char *const want[] = {
        "\"model\":{\"input\":[3,32,32],\"classes\":10,\"layers\":[",
        "{\"name\":\"conv0\",\"type\":\"conv\",\"inputs\":[\"input\"],\"out\":32,\"k\":3,\"stride\":1,\"pad\":1,\"bias\":true}",
        "{\"name\":\"bn1\",\"type\":\"bn\",\"inputs\":[\"conv0\"],\"eps\":1e-05,\"momentum\":0.1}",
        "{\"name\":\"b2\",\"type\":\"conv\",\"inputs\":[\"b2r\"]",
        "{\"name\":\"b4p\",\"type\":\"maxpool\",\"inputs\":[\"stem\"],\"k\":3,\"stride\":1,\"pad\":1}",
        "{\"name\":\"cat\",\"type\":\"concat\",\"inputs\":[\"b1\",\"b2\",\"b3\",\"b4\"]}",
        "{\"name\":\"global-avgpool12\",\"type\":\"global-avgpool\",\"inputs\":[\"cat\"]}",
        "{\"name\":\"dropout13\",\"type\":\"dropout\",\"inputs\":[\"global-avgpool12\"],\"p\":0.2}",
        "{\"name\":\"softmax-cross-entropy15\",\"type\":\"softmax-cross-entropy\",\"inputs\":[\"fc14\"]}]}",
        "\"name\":\"job\"",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(out, want[i])) print_error("missing %s in %s\n", want[i], out);
        assert_non_null(strstr(out, want[i]));
    }
    free(out);
}

static void test_round_trip_inline_array_form(void **state)
{
    (void)state;
    /* the array form is stored as the object form */
    char *out = round_trip("{\"dataset\":\"mnist\",\"model\":[{\"type\":\"flatten\"},{\"type\":\"fc\",\"out\":10,\"bias\":false}]}");
    assert_non_null(strstr(out, "\"model\":{\"layers\":[{\"name\":\"flatten0\",\"type\":\"flatten\",\"inputs\":[\"input\"]},"
                                 "{\"name\":\"fc1\",\"type\":\"fc\",\"inputs\":[\"flatten0\"],\"out\":10,\"bias\":false}]}"));
    free(out);
}

static void test_round_trip_dataset_object_and_checkpoint(void **state)
{
    (void)state;
    char *out = round_trip("{\"dataset\":{\"path\":\"/srv/data/cifar-10-batches-bin\",\"format\":\"cifar10-bin\"},"
                           "\"model\":{\"checkpoint\":\"j_01HZX\"},\"name\":\"resume\"}");
    assert_non_null(strstr(out, "\"name\":\"resume\",\"dataset\":{\"format\":\"cifar10-bin\",\"path\":\"/srv/data/cifar-10-batches-bin\"},"
                                 "\"model\":{\"checkpoint\":\"j_01HZX\"},"));
    free(out);
}

static void test_round_trip_awkward_numbers(void **state)
{
    (void)state;
    char *out = round_trip(S("\"train\":{\"lr\":0.30000000000000004,\"momentum\":0.1e-0},"
                             "\"push\":{\"eps\":4.9e-324,\"lambda\":99.99999999999999}"));
    assert_non_null(strstr(out, "\"lr\":0.30000000000000004,"));
    assert_non_null(strstr(out, "\"momentum\":0.1,"));
    assert_non_null(strstr(out, "\"eps\":4.94065645841247e-324,"));
    assert_non_null(strstr(out, "\"lambda\":99.99999999999999,"));
    free(out);
}

static void test_round_trip_unicode_escapes(void **state)
{
    (void)state;
    /* \u escapes come back as UTF-8 text */
    char *out = round_trip(S("\"name\":\"\\u00e9t\\u00e9 \\ud83d\\ude00\",\"labels\":{\"who\":\"J\\u00fcrgen\"}"));
    assert_non_null(strstr(out, "\"name\":\"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\""));
    assert_non_null(strstr(out, "\"who\":\"J\xc3\xbcrgen\""));
    free(out);
}

/* ---- long strings --------------------------------------------------------------------------- */

static void test_long_strings(void **state)
{
    (void)state;
    static char t[8192], v[5000];
    /* name of 129 bytes */
    memset(v, 'n', 129);
    v[129] = '\0';
    snprintf(t, 8192, S("\"name\":\"%s\""), v);
    expect_error(t, strlen(t), GPP_EINVAL, "invalid_argument", "name", "1..128 bytes, got 129 bytes");
    /* dataset name of 65 bytes, and of 64 */
    memset(v, 'd', 65);
    v[65] = '\0';
    snprintf(t, 8192, "{\"dataset\":\"%s\",\"model\":\"lenet5\"}", v);
    expect_error(t, strlen(t), GPP_EINVAL, "invalid_argument", "dataset", "[a-z0-9][a-z0-9._-]{0,63}");
    v[64] = '\0';
    snprintf(t, 8192, "{\"dataset\":\"%s\",\"model\":\"lenet5\"}", v);
    char *out = round_trip(t);
    free(out);
    /* a path of 4097 bytes, and of 4096 */
    memset(v, 'p', 4097);
    v[0] = '/';
    v[4097] = '\0';
    snprintf(t, 8192, "{\"dataset\":{\"format\":\"idx\",\"path\":\"%s\"},\"model\":\"lenet5\"}", v);
    expect_error(t, strlen(t), GPP_EINVAL, "invalid_argument", "dataset.path", "at most 4096 bytes, got 4097 bytes");
    v[4096] = '\0';
    snprintf(t, 8192, "{\"dataset\":{\"format\":\"idx\",\"path\":\"%s\"},\"model\":\"lenet5\"}", v);
    out = round_trip(t);
    free(out);
}

/* ---- netdesc: canonical form and limits --------------------------------------------------- */

static char *canonical_text(const char *json, const char *path)
{
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    gpp_error e;
    cJSON *c = gpp_netdesc_canonical(j, path, &e);
    if (!c) print_error("%s: %s\n", e.field, e.message);
    assert_non_null(c);
    char *t = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    cJSON_Delete(j);
    return t;
}

static void test_net_canonical_defaults(void **state)
{
    (void)state;
    char *t = canonical_text(
        "[{\"type\":\"conv\",\"out\":8,\"k\":5},{\"type\":\"bn\"},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"avgpool\",\"k\":3,\"stride\":2},{\"type\":\"dropout\"},"
        "{\"type\":\"flatten\"},{\"type\":\"fc\",\"out\":10},{\"type\":\"softmax-cross-entropy\"}]", "model");
    assert_string_equal(t,
        "{\"layers\":["
        "{\"name\":\"conv0\",\"type\":\"conv\",\"inputs\":[\"input\"],\"out\":8,\"k\":5,\"stride\":1,\"pad\":0,\"bias\":true},"
        "{\"name\":\"bn1\",\"type\":\"bn\",\"inputs\":[\"conv0\"],\"eps\":1e-05,\"momentum\":0.1},"
        "{\"name\":\"relu2\",\"type\":\"relu\",\"inputs\":[\"bn1\"]},"
        "{\"name\":\"maxpool3\",\"type\":\"maxpool\",\"inputs\":[\"relu2\"],\"k\":2,\"stride\":2,\"pad\":0},"
        "{\"name\":\"avgpool4\",\"type\":\"avgpool\",\"inputs\":[\"maxpool3\"],\"k\":3,\"stride\":2,\"pad\":0},"
        "{\"name\":\"dropout5\",\"type\":\"dropout\",\"inputs\":[\"avgpool4\"],\"p\":0.5},"
        "{\"name\":\"flatten6\",\"type\":\"flatten\",\"inputs\":[\"dropout5\"]},"
        "{\"name\":\"fc7\",\"type\":\"fc\",\"inputs\":[\"flatten6\"],\"out\":10,\"bias\":true},"
        "{\"name\":\"softmax-cross-entropy8\",\"type\":\"softmax-cross-entropy\",\"inputs\":[\"fc7\"]}]}");
    cJSON_free(t);
}

static void test_net_canonical_keeps_input_classes(void **state)
{
    (void)state;
    char *t = canonical_text("{\"layers\":[{\"name\":\"f\",\"type\":\"flatten\"}],\"classes\":3,\"input\":[1,2,3]}", "");
    assert_string_equal(t, "{\"input\":[1,2,3],\"classes\":3,\"layers\":["
                           "{\"name\":\"f\",\"type\":\"flatten\",\"inputs\":[\"input\"]}]}");
    cJSON_free(t);
}

static void test_net_empty_path(void **state)
{
    (void)state;
    cJSON *j = cJSON_Parse("{\"layers\":[{\"type\":\"conv\",\"out\":1}]}");
    gpp_error e;
    assert_int_equal(gpp_netdesc_validate(j, "", &e), GPP_EINVAL);
    assert_string_equal(e.field, "layers[0].k");
    cJSON_Delete(j);
    j = cJSON_Parse("[{\"type\":\"conv\",\"out\":1}]");
    assert_int_equal(gpp_netdesc_validate(j, NULL, &e), GPP_EINVAL);
    assert_string_equal(e.field, "[0].k");
    cJSON_Delete(j);
    assert_int_equal(gpp_netdesc_validate(NULL, "model", &e), GPP_EINVAL);
}

static cJSON *relu_chain(int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "type", "relu");
        cJSON_AddItemToArray(a, l);
    }
    return a;
}

static void test_net_max_layers(void **state)
{
    (void)state;
    gpp_error e;
    cJSON *a = relu_chain(GPP_NET_MAX_LAYERS);
    assert_int_equal(gpp_netdesc_validate(a, "model", &e), 0);
    cJSON_Delete(a);
    a = relu_chain(GPP_NET_MAX_LAYERS + 1);
    assert_int_equal(gpp_netdesc_validate(a, "model", &e), GPP_EINVAL);
    assert_string_equal(e.field, "model");
    assert_non_null(strstr(e.message, "1..1024 layers, got more than 1024"));
    cJSON_Delete(a);
}

static void test_net_in_spec_too_many_layers(void **state)
{
    (void)state;
    /* the same limit through the job spec text */
    size_t n = GPP_NET_MAX_LAYERS + 1, cap = 64 + n * 20;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t o = (size_t)snprintf(t, cap, "{\"dataset\":\"d\",\"model\":[");
    for (size_t i = 0; i < n; i++) o += (size_t)snprintf(t + o, cap - o, "%s{\"type\":\"relu\"}", i ? "," : "");
    snprintf(t + o, cap - o, "]}");
    expect_error(t, strlen(t), GPP_EINVAL, "invalid_argument", "model", "got more than 1024");
    free(t);
}

/* ---- main: the tables become one test per row ------------------------------------------------ */

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_defaults_filled),
        cmocka_unit_test(test_defaults_serialised),
        cmocka_unit_test(test_prune_ratio_error_shape),
        cmocka_unit_test(test_default_name_rules),
        cmocka_unit_test(test_stage_count),
        cmocka_unit_test(test_pick_models),
        cmocka_unit_test(test_labels_parsed_sorted),
        cmocka_unit_test(test_nesting_bomb),
        cmocka_unit_test(test_nesting_33_in_spec),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_invalid_json_offset),
        cmocka_unit_test(test_invalid_json_variants),
        cmocka_unit_test(test_trailing_text),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_from_cjson_nan),
        cmocka_unit_test(test_from_cjson_duplicate),
        cmocka_unit_test(test_keys_case_sensitive),
        cmocka_unit_test(test_to_cjson_shape),
        cmocka_unit_test(test_round_trip_full),
        cmocka_unit_test(test_round_trip_inline_inception),
        cmocka_unit_test(test_round_trip_inline_array_form),
        cmocka_unit_test(test_round_trip_dataset_object_and_checkpoint),
        cmocka_unit_test(test_round_trip_awkward_numbers),
        cmocka_unit_test(test_round_trip_unicode_escapes),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_net_canonical_defaults),
        cmocka_unit_test(test_net_canonical_keeps_input_classes),
        cmocka_unit_test(test_net_empty_path),
        cmocka_unit_test(test_net_max_layers),
        cmocka_unit_test(test_net_in_spec_too_many_layers),
    };
    size_t nf = sizeof fixed / sizeof fixed[0];
    size_t nr = sizeof rejects / sizeof rejects[0];
    size_t na = sizeof accepts / sizeof accepts[0];
    size_t nn = sizeof nets / sizeof nets[0];
    size_t total = nf + nr + na + nn;
    struct CMUnitTest *tests = calloc(total, sizeof *tests);
    char (*names)[96] = calloc(total, sizeof *names);
    if (!tests || !names) return 1;
    size_t k = 0;
    for (size_t i = 0; i < nf; i++) tests[k++] = fixed[i];
    for (size_t i = 0; i < nr; i++, k++) {
        snprintf(names[k], sizeof names[k], "reject_%s", rejects[i].name);
        tests[k] = (struct CMUnitTest){names[k], test_reject_row, NULL, NULL, (void *)(uintptr_t)&rejects[i]};
    }
    for (size_t i = 0; i < na; i++, k++) {
        snprintf(names[k], sizeof names[k], "accept_%s", accepts[i].name);
        tests[k] = (struct CMUnitTest){names[k], test_accept_row, NULL, NULL, (void *)(uintptr_t)&accepts[i]};
    }
    for (size_t i = 0; i < nn; i++, k++) {
        snprintf(names[k], sizeof names[k], "netdesc_%s", nets[i].name);
        tests[k] = (struct CMUnitTest){names[k], test_net_row, NULL, NULL, (void *)(uintptr_t)&nets[i]};
    }
    int failed = _cmocka_run_group_tests("jobspec", tests, total, NULL, NULL);
    free(names);
    free(tests);
    return failed;
}
