/* gpp/stages.h - the stages of a Grow-Push-Prune job (METHOD.md) as one
 * function a worker calls, whoever drives it: `gpp-worker run` locally, or
 * the daemon link.  A stage reads one checkpoint (.gppm, gpp/ckpt.h) and
 * writes one:
 *
 *   train    build the spec's model, train train.epochs            (no input)
 *   grow     insert a basic Inception module before the global average
 *            pooling, train grow.epochs, keep it only if validation
 *            accuracy rose by grow.min_gain (else the output is the input
 *            net, marked meta.grow_done)
 *   push     fine-tune push.epochs with CE + the push terms (gpp/gppmath.h)
 *            on the pre-decision layer, class-balanced batches
 *   prune    pre-decision LDA utility, M' on validation data, deconvolution
 *            tracing, per-layer threshold, surgery, least-squares recovery,
 *            fine-tuning prune.finetune_epochs
 *   l1, random   baselines: prune the input net (the job's baseline) to the
 *            per-layer widths of `reference` by filter L1 norm (Li et al.
 *            2016) or at random, then fine-tune `budget_epochs`
 *   scratch  baseline: the architecture of `reference`, He-initialised,
 *            trained `budget_epochs`
 *   finetune the final recovery: the input (the size-first prune result
 *            when the loop ended before the last planned prune, which alone
 *            carries prune.final_finetune_epochs) fine-tuned
 *            prune.final_finetune_epochs at prune.final_lr, one lr cycle;
 *            summary keys "from_stage" (the input's stage index),
 *            "finetune_epochs", "val_before"
 *
 * Checkpoint JSON written by a stage (gpp/ckpt.h layout):
 *   "network"  the net's description after the stage
 *   "meta"     {"job", "stage", "stage_index", "iteration", "normalize":
 *              {"mean": [C], "std": [C]}, "classes", "input", "summary":
 *              SUMMARY, plus per kind: "grow_done", "grow_kept",
 *              "keep_fraction", "m_prime", "predecision_width", "eta"}
 *   "state"    {"stage", "stage_index", "phase", "step", "epoch",
 *              "complete", "sgd_steps", "net_rng": [4 hex words],
 *              "data_pos": [9 hex words]} (gpp_net_save)
 * SUMMARY = {"stage", "index", "iteration", "params", "macs", "flops"
 * (= 2 * macs), "val_accuracy", "test_accuracy" (fractions 0..1),
 * "layers": [{"name", "kind", "width"}] (every conv and fc), plus the
 * stage's own keys ("layers_before", "m_prime", "grow_kept", ...)}.
 * Tensors: every parameter and batch-norm running statistic under its
 * netdesc name, and "optim/<name>" momentum buffers in partial (mid-stage)
 * checkpoints; "state/..." tensors hold a push's EMA there.
 *
 * Determinism: a stage's result depends only on the spec, the stage kind,
 * index and iteration, the input checkpoint and the thread count; every
 * random choice is seeded from spec->seed and the stage index.  A stage
 * interrupted after an epoch and restarted from its partial checkpoint
 * gives the same bytes as one run straight through.
 */
#ifndef GPP_STAGES_H
#define GPP_STAGES_H

#include <stdatomic.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/data.h"
#include "gpp/error.h"
#include "gpp/jobspec.h"
#include "gpp/nn.h"

typedef enum gpp_stage_kind {
    GPP_STAGE_TRAIN = 0,
    GPP_STAGE_GROW,
    GPP_STAGE_PUSH,
    GPP_STAGE_PRUNE,
    GPP_STAGE_L1,
    GPP_STAGE_RANDOM,
    GPP_STAGE_SCRATCH,
    GPP_STAGE_FINETUNE,
    GPP_STAGE_KIND_COUNT
} gpp_stage_kind;

/* "train", "grow", "push", "prune", "l1", "random", "scratch", "finetune"
 * ("?" when out of range). */
const char *gpp_stage_kind_name(gpp_stage_kind kind);
/* The kind called `name`: 0, or GPP_EINVAL. */
int gpp_stage_kind_parse(const char *name, gpp_stage_kind *kind);

/* ---- data ---------------------------------------------------------------- */

/* The job's data, loaded once and shared read-only by the stages: the
 * training and test sets, the split (data.train_limit / test_limit /
 * val_fraction, the job's seed), the normalisation (per-channel mean/std of
 * the training split when data.normalize, else the identity) and the
 * augmentation (data.augment, "auto" by format). */
typedef struct gpp_stage_data {
    gpp_dataset *train;
    gpp_dataset *test;
    gpp_data_split *split;
    gpp_data_norm norm;
    gpp_data_augment augment;
    gpp_data_format format;
    char dir[4096 + 1];        /* the folder the files came from */
} gpp_stage_data;

/* Find and load the spec's data set: {"format", "path"} as given; a name N
 * from the first folder that exists of datasets_dir/N (when datasets_dir
 * is not NULL), $GPP_DATASETS_DIR/N and /usr/share/datasets/N (the Debian
 * dataset-* packages), format cifar10-bin when it holds data_batch_1.bin,
 * else idx.  Returns 0 and *out (free with gpp_stage_data_free), or
 * GPP_ENOTFOUND / a loader's code with *err (field "dataset"). */
int gpp_stage_data_open(const gpp_jobspec *spec, const char *datasets_dir,
                        gpp_stage_data **out, gpp_error *err);
/* Free (NULL is fine). */
void gpp_stage_data_free(gpp_stage_data *d);

/* ---- what a stage reports ---------------------------------------------- */

/* One metric record: an iteration (a training step) or an evaluation.  The
 * names and values are valid during the callback only. */
typedef struct gpp_metric {
    const char *stage;          /* the stage kind's name */
    int stage_index;
    const char *phase;          /* "train", "grow", "push", "finetune", "eval" */
    long long iteration;        /* training steps done in this stage (1-based for
                                   steps; an evaluation gives the steps before it) */
    double epoch;               /* epochs done in the phase (fractional) */
    int evaluation;             /* 0: an iteration record; 1: an evaluation */
    int n;                      /* name/value pairs */
    const char *const *names;   /* "loss", "ce", "sep", "cov", "align", "batch_accuracy",
                                   "lr", "images_per_s"; evaluations: "val_accuracy",
                                   "test_accuracy", "params", "macs", "flops" */
    const double *values;
} gpp_metric;

/* Callbacks of a running stage; each may be NULL.  They run on the stage's
 * thread, between batches. */
typedef struct gpp_stage_io {
    void *user;                                   /* passed back to every callback */
    void (*metric)(void *user, const gpp_metric *m);
    void (*log)(void *user, const char *line);    /* one line, no newline */
    void (*progress)(void *user, double fraction); /* 0..1 over the whole stage */
    const atomic_int *cancel;                     /* polled between batches: non-zero
                                                     stops the stage (GPP_EAGAIN,
                                                     code "cancelled") */
} gpp_stage_io;

/* ---- running a stage ------------------------------------------------------ */

typedef struct gpp_stage_req {
    const gpp_jobspec *spec;     /* the job (defaults filled) */
    gpp_stage_kind kind;
    int index;                   /* position in the job's chain: seeds, metrics */
    int iteration;               /* push/prune round 0, 1, ... (the eta schedule);
                                    grow: the module's number (1, 2, ...);
                                    l1 / random: the step of GPP's schedule they
                                    follow (0: one-shot to the final widths);
                                    finetune: the recovered prune's round */
    const char *input;           /* input checkpoint; NULL for train */
    const char *output;          /* the checkpoint to write (atomically) */
    const char *reference;       /* l1 / random / scratch: the checkpoint whose
                                    architecture (per-layer widths) to match */
    int budget_epochs;           /* l1 / random / scratch: training epochs */
    int final_widths;            /* l1 / random: trains at GPP's final widths
                                    (fine-tune peak lr prune.final_lr) */
    const char *partial;         /* NULL, or a path for the mid-stage checkpoint:
                                    written after every epoch, read (when it
                                    exists and belongs to this stage) to resume,
                                    removed when the stage ends */
    const gpp_stage_data *data;  /* loaded data, or NULL: loaded here */
    const char *datasets_dir;    /* where data set names are looked up (or NULL) */
    nn_ctx *ctx;                 /* engine context, or NULL: made with `threads` */
    int threads;                 /* threads when ctx is NULL (>= 1; 0 means 1) */
} gpp_stage_req;

/* Run one stage.  On success writes req->output and returns 0 with
 * *summary (may be NULL) a new SUMMARY object (see the top of this file;
 * caller frees with cJSON_Delete).  Errors: GPP_EINVAL (bad request, a spec
 * the stage cannot run), GPP_ENOTFOUND / GPP_EFORMAT / GPP_EIO (files),
 * GPP_ENOMEM, GPP_EAGAIN with err->code "cancelled" when io->cancel was
 * set; no output is written then. */
int gpp_stage_run(const gpp_stage_req *req, const gpp_stage_io *io, cJSON **summary,
                  gpp_error *err);

/* ---- network state <-> .gppm ---------------------------------------------- */

/* Write `net` to `path` (atomic, gpp_ckpt_writer_write_file): the JSON
 * document {"format": "gppm", "network": nn_net_to_json(net), "meta":
 * copy of meta (or {}), "state": copy of state (or {}) plus "sgd_steps"
 * and "net_rng"}, every tensor of nn_net_tensor, and with `with_optim` the
 * momentum buffers as "optim/<name>".  Returns 0 or a negative GPP_E*
 * with *err. */
int gpp_net_save(nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                 int with_optim, gpp_error *err);

/* An extra flat tensor: saved from `data` by gpp_net_save_ex, loaded into
 * `data` by gpp_net_load_ex. */
typedef struct gpp_extra_tensor {
    const char *name;
    float *data;          /* count floats, the caller's */
    int64_t count;
} gpp_extra_tensor;

/* gpp_net_save plus n_extra flat tensors (e.g. "state/push_ema"). */
int gpp_net_save_ex(nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                    int with_optim, const gpp_extra_tensor *extra, int n_extra,
                    gpp_error *err);

/* Read a checkpoint written by gpp_net_save into a new net on ctx: built
 * from its "network", every tensor copied in (a missing or mis-sized one
 * is GPP_EFORMAT), momentum and "sgd_steps" restored when present (else
 * zero), the dropout RNG from "net_rng".  *doc (may be NULL) receives the
 * parsed JSON document (caller frees with cJSON_Delete).  Returns 0 with
 * *net (free with nn_net_free), or a negative GPP_E* with *err. */
int gpp_net_load(nn_ctx *ctx, const char *path, nn_net **net, cJSON **doc, gpp_error *err);

/* gpp_net_load that also copies extra flat tensors out: for each of the
 * n_extra entries, `count` floats of the tensor called `name` into
 * `data`.  A missing or mis-sized extra tensor is GPP_EFORMAT. */
int gpp_net_load_ex(nn_ctx *ctx, const char *path, nn_net **net, cJSON **doc,
                    const gpp_extra_tensor *extra, int n_extra, gpp_error *err);

/* A copy of `net` on ctx (the context net was built on, or another): same
 * description, parameters, running statistics, momentum, SGD step count
 * and RNG, reserved for the same batch.  NULL with *err on failure.  Free
 * with nn_net_free. */
nn_net *gpp_net_clone(nn_ctx *ctx, nn_net *net, gpp_error *err);

/* The per-layer widths of every conv and fc as a JSON array of
 * {"name", "kind", "width"}; NULL when out of memory. */
cJSON *gpp_net_layers_json(const nn_net *net);

/* ---- the local runner ------------------------------------------------------ */

/* `gpp-worker run JOB.json --out DIR [--resume] [--baselines] [--threads N]
 * [--datasets DIR]`: the whole job with no daemon (ARCHITECTURE.md): train
 * -> grow while it pays -> iterations x (push, prune) with the stop rules
 * (-> with --baselines, the l1, random and scratch baselines at the
 * size-first model's widths), writing DIR/job.json (the spec, defaults
 * filled), DIR/metrics.jsonl (one object per iteration and per
 * evaluation), DIR/stage-NN-KIND.gppm after each stage and DIR/summary.json
 * ("baseline", "accuracy_first", "size_first", "stages", "baselines").
 * --resume carries on after the last completed stage (and from a stage's
 * partial checkpoint).  argv[0] is "run".  Returns the exit status: 0 done,
 * 1 failed, 2 usage, 130 interrupted (resumable). */
int gpp_run_main(int argc, char **argv);

#endif
