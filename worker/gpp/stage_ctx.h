/* worker/gpp/stage_ctx.h - the state of one running stage, shared by
 * stage.c (the loop, train / grow / push / scratch) and prune.c (prune and
 * the l1 / random baselines).  Private to worker/gpp. */
#ifndef GPP_STAGE_CTX_H
#define GPP_STAGE_CTX_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/stages.h"

typedef struct gpp__stage {
    const gpp_stage_req *req;
    const gpp_stage_io *io;
    const gpp_jobspec *spec;
    const gpp_stage_data *data;
    gpp_stage_data *own_data;
    nn_ctx *ctx;
    nn_ctx *own_ctx;
    nn_net *net;
    gpp_error *err;
    cJSON *in_doc;            /* the input checkpoint's document (or NULL) */
    const gpp_dataset *val_ds; /* the data set the validation indexes (val) are into */
    gpp_data_norm norm;       /* the pixels' normalisation: the data set's, or for a job
                                 started from a checkpoint the checkpoint's own */
    cJSON *extra;             /* the stage's own summary keys (object) */
    cJSON *resume;            /* the partial checkpoint's document when resuming */
    int classes;
    int input[3];             /* C, H, W */
    int B;                    /* reserved batch */
    float *x;                 /* [B, C, H, W] */
    int32_t *y;               /* [B] */
    const uint32_t *val;      /* validation indices into data->train */
    uint32_t n_val;
    long long iter;           /* training steps done in this stage */
    double prog0, prog1;      /* progress range of the running phase */
    uint64_t seed;            /* the stage's seed */
} gpp__stage;

/* A training phase: epochs over the training split. */
typedef struct gpp__phase {
    const char *name;         /* "train", "grow", "push", "finetune" */
    int epochs;
    double lr;
    int push;                 /* add the push terms (push.* of the spec) */
    double keep_fraction;     /* push: M'/M of the top set */
    uint64_t salt;            /* seed stream of the phase's iterator */
    nn_net *teacher;          /* distillation (prune.distill > 0): the unpruned
                                 net whose softened outputs the net also fits,
                                 reserved for the stage's batch; NULL: none */
} gpp__phase;

/* Log a formatted line through io->log. */
void gpp__log(gpp__stage *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Report progress within the running phase's range (f in 0..1). */
void gpp__progress(gpp__stage *s, double f);
/* 1 when the stage was asked to stop (and *err says so). */
int gpp__cancelled(gpp__stage *s);

/* Run a phase (resuming it when s->resume holds its state).  0 or a
 * negative GPP_E*. */
int gpp__phase_run(gpp__stage *s, const gpp__phase *ph);

/* Accuracy of the net over idx[0..n) of ds (evaluation mode, no
 * augmentation).  0 or a negative GPP_E*. */
int gpp__evaluate(gpp__stage *s, const gpp_dataset *ds, const uint32_t *idx, uint32_t n,
                  double *acc);

/* Fill s->x / s->y with images idx[0..n) of the training set (normalised,
 * no augmentation). */
void gpp__fill_train(gpp__stage *s, const uint32_t *idx, int n);

/* Set s->extra[key] (a stage summary key) to v, replacing an earlier value;
 * GPP_ENOMEM when v is NULL (a failed cJSON_Create*). */
int gpp__extra_set(gpp__stage *s, const char *key, cJSON *v);

/* Replace s->net (freeing the old one) and reserve it for s->B. */
int gpp__set_net(gpp__stage *s, nn_net *net);

/* prune.c: the prune stage (before its fine-tuning, which the caller runs)
 * and the l1 / random surgery to the reference's widths. */
int gpp__prune_apply(gpp__stage *s);
int gpp__baseline_cut(gpp__stage *s, int l1);

#endif
