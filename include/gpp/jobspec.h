/* gpp/jobspec.h - the job spec: what a user submits to POST /api/v1/jobs and
 * what `gpp-worker run JOB.json` reads.  Parsing validates every field,
 * fills every default, and refuses unknown fields; serialising writes every
 * field back (defaults filled, null where null, fixed key order), so
 *   to_json(parse(to_json(parse(x)))) == to_json(parse(x))   byte for byte.
 *
 * The document is a JSON object.  Only `dataset` and `model` are required.
 * Field (type, range, [default]):
 *
 *   name          string, 1..128 bytes of UTF-8, no control characters
 *                 ["<model>-<dataset>" when both are names, else "job"]
 *   dataset       required: a registered name [a-z0-9][a-z0-9._-]{0,63}, or
 *                 {"format": "idx" | "cifar10-bin", "path": absolute path, <= 4096 bytes}
 *   model         required: a zoo name ("lenet5", "lenet300-100", "vgg-small",
 *                 "vgg16-cifar", "inception-base"); or an inline network (an
 *                 array of layers, or an object with "layers": gpp/netdesc.h),
 *                 stored and written back in canonical form; or
 *                 {"checkpoint": job id or sha256, [A-Za-z0-9_-]{1,64}}
 *   device        "any" | "cpu" | "gpu" ["any"]
 *   labels        object string -> string, <= 16 entries, keys [a-z0-9_.-]{1,32},
 *                 values 1..64 bytes of printable UTF-8 [{}]; labels a worker
 *                 must have.  Written back sorted by key.
 *   priority      integer -1000..1000 [0]
 *   seed          integer 0..2147483647 [1]
 *   max_restarts  integer 0..100 [3]
 *   train         epochs int 0..1000 [2]; batch_size int 1..4096 [64];
 *                 lr (0, 10] [0.01]; momentum [0, 1) [0.9]; nesterov bool [false];
 *                 weight_decay [0, 1) [0.0005]; schedule "constant" | "step" |
 *                 "cosine" ["cosine"]; step_epochs int 1..1000 [1]; gamma (0, 1] [0.1]
 *   grow          enabled bool [false]; max_modules int 0..16 [4];
 *                 min_gain [0, 1] [0.002]; epochs int 0..1000 [1];
 *                 widths null or 6 ints 1..4096 (1x1, 3x3-reduce, 3x3,
 *                 double-3x3-reduce, double-3x3, pool-proj)
 *                 [null: the widths of the previous module]
 *   push          epochs int 0..1000 [1]; lambda [0, 100] [1]; lambda_decay [0, 1] [1];
 *                 alpha [0, 100] [0.02];
 *                 beta [0, 100] [0.01]; gamma [0, 100] [0.1];
 *                 separation "diag" | "eigen" ["diag"];
 *                 eigen_k null or int 1..4096 [null: classes - 1];
 *                 eigen_reg (0, 100] [1] (lambda = eigen_reg * tr(Sw) / M);
 *                 keep_fraction (0, 1] [0.5];
 *                 ramp_epochs [0, 100] [1]; ema [0, 1) [0.9]; eps (0, 1] [1e-6];
 *                 min_per_class int 2..1024 [2]; lr null or (0, 10] [null: train.lr]
 *   prune         threshold "eta" | "ratio" ["ratio"]; ratio (0, 1) [0.3];
 *                 eta (0, 10] [0.1]; eta_step [0, 10] [0.1];
 *                 max_layer_fraction (0, 1] [0.5]; min_channels int 1..4096 [1];
 *                 max_accuracy_drop [0, 1] [0.01]; samples_per_class int 1..10000 [10];
 *                 finetune_epochs int 0..1000 [1];
 *                 final_finetune_epochs int 0..1000 [9] (added to the fine-tune
 *                 of the last iteration's prune: the final model's recovery at
 *                 its final widths, one learning-rate cycle with the rest; the
 *                 finetune stage's epochs when the loop ends earlier);
 *                 distill [0, 100] [0] (weight of a distillation term in every
 *                 training at pruned widths: the fine-tunes fit the softened
 *                 outputs of the net before pruning, the stage's input; the
 *                 baselines' of the unpruned baseline; 0 = off);
 *                 distill_temperature (0, 100] [4];
 *                 reconstruct bool [false];
 *                 reconstruct_samples int 16..65536 [512];
 *                 criterion "gpp" | "l1" | "random" ["gpp"];
 *                 compare_cut bool [true] (criterion gpp: also cut copies of the
 *                 net to the same widths by L1 norm and at random and record
 *                 all three accuracies before any fine-tune, "cut_compare");
 *                 lr null or (0, 10] [null: train.lr];
 *                 final_lr null or (0, 10] [null: prune.lr] (the peak learning
 *                 rate of the final recovery -- the last prune's fine-tune or
 *                 the finetune stage -- and of the l1/random baselines'
 *                 fine-tune at the final widths);
 *                 bn_recalibrate int 0..65536 [1024] (after every cut --
 *                 GPP's, the baselines', the cut comparison's copies -- the
 *                 batch norms' running statistics are re-estimated on this
 *                 many training images; 0 = off; no effect without batch norm)
 *   iterations    integer 0..100 [10] (an upper bound: the stop rule usually ends
 *                 the loop sooner)
 *   stop          max_accuracy_drop [0, 1] [0.005]; target_params null or int 1..2^53 [null];
 *                 recover_epochs int 0..1000 [9] (a prune, not the last, whose
 *                 validation accuracy after its fine-tune is more than
 *                 max_accuracy_drop below the baseline's trains this many more
 *                 epochs, one learning-rate cycle, before the stop rule judges
 *                 it; 0 = judge at once)
 *   data          train_limit null or int 1..2^53 [null: all]; test_limit likewise;
 *                 val_fraction [0, 0.9] [0.1]; val_from "auto" | "train" | "test"
 *                 ["auto"]; augment "auto" | "none" | "crop-flip"
 *                 ["auto"]; normalize bool [true]
 *
 * An "int" must be a JSON number without a fractional part (1.0 is fine).
 * Errors (gpp/error.h):
 *   GPP_ETOOBIG  "too_large"         the text is over GPP_JOBSPEC_MAX_BYTES
 *   GPP_EFORMAT  "malformed"         not JSON, or nested deeper than
 *                                    GPP_JOBSPEC_MAX_DEPTH, or a string holds
 *                                    \u0000 (message gives the byte offset)
 *   GPP_EINVAL   "invalid_argument"  a field breaks a rule: `field` is its path
 *                                    ("prune.ratio", "model[3].k", "labels.gpu",
 *                                    "" for the top level), the message names
 *                                    the path, the rule and the value.  Unknown
 *                                    and duplicate keys are errors too.
 * In the struct below, a nullable field holds 0 for null.
 */
#ifndef GPP_JOBSPEC_H
#define GPP_JOBSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/error.h"

#define GPP_JOBSPEC_MAX_BYTES (1024 * 1024)  /* the whole document */
#define GPP_JOBSPEC_MAX_DEPTH 32             /* [ and { nesting */

/* What gpp_json_scan found wrong with a JSON text before parsing. */
typedef enum gpp_json_flaw {
    GPP_JSON_OK = 0,
    GPP_JSON_NUL,         /* a NUL byte */
    GPP_JSON_NUL_ESCAPE,  /* \u0000 in a string (cJSON would cut the string there) */
    GPP_JSON_TOO_DEEP,    /* [ and { nested deeper than max_depth */
} gpp_json_flaw;

/* Scan n bytes of JSON text for the flaws cJSON would not report (NUL bytes,
 * \u0000 escapes) and for nesting deeper than max_depth (brackets outside
 * strings), without parsing it.  On a flaw *at is the byte it was found at. */
gpp_json_flaw gpp_json_scan(const char *t, size_t n, int max_depth, size_t *at);
#define GPP_JOBSPEC_NAME_MAX 128
#define GPP_JOBSPEC_DATASET_NAME_MAX 64
#define GPP_JOBSPEC_PATH_MAX 4096
#define GPP_JOBSPEC_REF_MAX 64               /* checkpoint job id / sha256 */
#define GPP_JOBSPEC_MAX_LABELS 16
#define GPP_JOBSPEC_LABEL_KEY_MAX 32
#define GPP_JOBSPEC_LABEL_VALUE_MAX 64
#define GPP_JOBSPEC_GROW_WIDTHS 6

typedef enum { GPP_DEVICE_ANY, GPP_DEVICE_CPU, GPP_DEVICE_GPU } gpp_device;
typedef enum { GPP_DATASET_NAME, GPP_DATASET_FILES } gpp_dataset_kind;
typedef enum { GPP_DATASET_IDX, GPP_DATASET_CIFAR10_BIN } gpp_dataset_format;
typedef enum { GPP_MODEL_ZOO, GPP_MODEL_INLINE, GPP_MODEL_CHECKPOINT } gpp_model_kind;
typedef enum { GPP_SCHEDULE_CONSTANT, GPP_SCHEDULE_STEP, GPP_SCHEDULE_COSINE } gpp_schedule;
typedef enum { GPP_SEPARATION_DIAG, GPP_SEPARATION_EIGEN } gpp_separation;
typedef enum { GPP_THRESHOLD_ETA, GPP_THRESHOLD_RATIO } gpp_threshold;
typedef enum { GPP_CRITERION_GPP, GPP_CRITERION_L1, GPP_CRITERION_RANDOM } gpp_criterion;
typedef enum { GPP_AUGMENT_AUTO, GPP_AUGMENT_NONE, GPP_AUGMENT_CROP_FLIP } gpp_augment;
/* Where the validation images come from: "auto" is "test" when the model is
 * a checkpoint (a network trained elsewhere may have seen every training
 * image), else "train". */
typedef enum { GPP_VAL_FROM_AUTO, GPP_VAL_FROM_TRAIN, GPP_VAL_FROM_TEST } gpp_val_from;

typedef struct gpp_jobspec_train {
    int epochs;              /* 0..1000 [2] */
    int batch_size;          /* 1..4096 [64] */
    double lr;               /* (0, 10] [0.01] */
    double momentum;         /* [0, 1) [0.9] */
    bool nesterov;           /* [false] */
    double weight_decay;     /* [0, 1) [0.0005] */
    gpp_schedule schedule;   /* [cosine] */
    int step_epochs;         /* 1..1000 [1]: step schedule period */
    double gamma;            /* (0, 1] [0.1]: step schedule factor */
} gpp_jobspec_train;

typedef struct gpp_jobspec_grow {
    bool enabled;            /* [false] */
    int max_modules;         /* 0..16 [4] */
    double min_gain;         /* [0, 1] [0.002]: validation accuracy a module must add */
    int epochs;              /* 0..1000 [1] */
    int widths[GPP_JOBSPEC_GROW_WIDTHS]; /* 1..4096 each; all 0 = null [previous module's] */
} gpp_jobspec_grow;

typedef struct gpp_jobspec_push {
    int epochs;              /* 0..1000 [1] */
    double lambda;           /* [0, 100] [1]: scales alpha, beta, gamma */
    double lambda_decay;     /* [0, 1] [1]: push i (0-based) uses lambda * lambda_decay^i */
    double alpha;            /* [0, 100] [0.02]: separation term */
    double beta;             /* [0, 100] [0.01]: covariance term */
    double gamma;            /* [0, 100] [0.1]: alignment term */
    gpp_separation separation; /* [diag] */
    int eigen_k;             /* 1..4096, 0 = null [classes - 1] */
    double eigen_reg;        /* (0, 100] [1]: lambda = eigen_reg * tr(Sw) / M */
    double keep_fraction;    /* (0, 1] [0.5] */
    double ramp_epochs;      /* [0, 100] [1] */
    double ema;              /* [0, 1) [0.9] */
    double eps;              /* (0, 1] [1e-6] */
    int min_per_class;       /* 2..1024 [2] */
    double lr;               /* (0, 10], 0 = null [train.lr] */
} gpp_jobspec_push;

typedef struct gpp_jobspec_prune {
    gpp_threshold threshold; /* [ratio] */
    double ratio;            /* (0, 1) [0.3] */
    double eta;              /* (0, 10] [0.1] */
    double eta_step;         /* [0, 10] [0.1] */
    double max_layer_fraction; /* (0, 1] [0.5] */
    int min_channels;        /* 1..4096 [1] */
    double max_accuracy_drop; /* [0, 1] [0.01] */
    int samples_per_class;   /* 1..10000 [10] */
    int finetune_epochs;     /* 0..1000 [1] */
    int final_finetune_epochs; /* 0..1000 [9]: added to the last iteration's fine-tune */
    double distill;          /* [0, 100] [0]: distillation weight of the fine-tunes */
    double distill_temperature; /* (0, 100] [4] */
    bool reconstruct;        /* [false] */
    int reconstruct_samples; /* 16..65536 [512] */
    gpp_criterion criterion; /* [gpp] */
    bool compare_cut;        /* [true]: record L1/random cuts to the same widths */
    double lr;               /* (0, 10], 0 = null [train.lr] */
    double final_lr;         /* (0, 10], 0 = null [prune.lr]: the final recovery's */
    int bn_recalibrate;      /* 0..65536 [1024]: images that re-estimate batch-norm statistics after a cut */
} gpp_jobspec_prune;

typedef struct gpp_jobspec_stop {
    double max_accuracy_drop; /* [0, 1] [0.005] */
    int64_t target_params;    /* 1..2^53, 0 = null [null] */
    int recover_epochs;       /* 0..1000 [9]: a prune below the accuracy bound
                                 trains this many more epochs (one lr cycle)
                                 before the stop rule judges it */
} gpp_jobspec_stop;

typedef struct gpp_jobspec_data {
    int64_t train_limit;     /* 1..2^53, 0 = null [null: all] */
    int64_t test_limit;      /* 1..2^53, 0 = null [null: all] */
    double val_fraction;     /* [0, 0.9] [0.1] */
    gpp_val_from val_from;   /* [auto] */
    gpp_augment augment;     /* [auto] */
    bool normalize;          /* [true] */
} gpp_jobspec_data;

typedef struct gpp_jobspec_label {
    char key[GPP_JOBSPEC_LABEL_KEY_MAX + 1];
    char value[GPP_JOBSPEC_LABEL_VALUE_MAX + 1];
} gpp_jobspec_label;

typedef struct gpp_jobspec {
    char name[GPP_JOBSPEC_NAME_MAX + 1];
    gpp_dataset_kind dataset_kind;
    char dataset_name[GPP_JOBSPEC_DATASET_NAME_MAX + 1];   /* GPP_DATASET_NAME */
    gpp_dataset_format dataset_format;                      /* GPP_DATASET_FILES */
    char dataset_path[GPP_JOBSPEC_PATH_MAX + 1];           /* GPP_DATASET_FILES */
    gpp_model_kind model_kind;
    char model_zoo[32];                                     /* GPP_MODEL_ZOO */
    cJSON *model_net;      /* GPP_MODEL_INLINE: canonical netdesc, owned */
    char model_checkpoint[GPP_JOBSPEC_REF_MAX + 1];        /* GPP_MODEL_CHECKPOINT */
    gpp_device device;     /* [any] */
    gpp_jobspec_label labels[GPP_JOBSPEC_MAX_LABELS];      /* sorted by key */
    int n_labels;          /* [0] */
    int priority;          /* -1000..1000 [0] */
    int seed;              /* 0..2147483647 [1] */
    int max_restarts;      /* 0..100 [3] */
    int iterations;        /* 0..100 [10]: push + prune rounds, at most */
    gpp_jobspec_train train;
    gpp_jobspec_grow grow;
    gpp_jobspec_push push;
    gpp_jobspec_prune prune;
    gpp_jobspec_stop stop;
    gpp_jobspec_data data;
} gpp_jobspec;

/* Parse and validate `len` bytes of JSON text (need not be NUL-terminated).
 * On success returns 0 and *out holds a new spec (free with gpp_jobspec_free);
 * on failure returns GPP_ETOOBIG, GPP_EFORMAT, GPP_EINVAL or GPP_ENOMEM,
 * fills *err (may be NULL) and sets *out to NULL. */
int gpp_jobspec_parse(const char *json, size_t len, gpp_jobspec **out, gpp_error *err);

/* Validate an already parsed JSON object (the same rules as gpp_jobspec_parse
 * minus the text limits).  Returns 0 with a new spec in *out, or GPP_EINVAL /
 * GPP_ENOMEM with *err filled and *out NULL.  `obj` is not modified. */
int gpp_jobspec_from_cjson(const cJSON *obj, gpp_jobspec **out, gpp_error *err);

/* A new cJSON object with every field (defaults filled, null where null) in
 * the fixed order of the header comment.  NULL on out of memory.  The caller
 * frees it with cJSON_Delete. */
cJSON *gpp_jobspec_to_cjson(const gpp_jobspec *spec);

/* Compact JSON text of gpp_jobspec_to_cjson, integers without decimals, other
 * numbers in the shortest form that reads back exactly.  malloc'd, the caller
 * frees; NULL on out of memory. */
char *gpp_jobspec_to_json(const gpp_jobspec *spec);

/* Free a spec and what it owns; NULL is fine. */
void gpp_jobspec_free(gpp_jobspec *spec);

/* Stages in the job's chain: 1 train (for a checkpoint model: its evaluation)
 * + grow.max_modules when grow.enabled + 2 * iterations (push, prune)
 * + 1 finetune (the final recovery) when iterations > 0 and
 * prune.final_finetune_epochs > 0. */
int gpp_jobspec_stage_count(const gpp_jobspec *spec);

/* Whether the job's chain ends with the final recovery (a finetune stage):
 * iterations > 0 and prune.final_finetune_epochs > 0. */
int gpp_jobspec_has_finetune(const gpp_jobspec *spec);

/* Whether the validation images come out of the test set: data.val_from
 * "test", or "auto" for a checkpoint model. */
int gpp_jobspec_val_from_test(const gpp_jobspec *spec);

#endif
