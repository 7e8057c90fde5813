/* daemon/gppd_sched.h - the scheduler (daemon/sched.c; not "sched.h", which
 * would shadow the system <sched.h>) (prefix sched_): which queued stage goes
 * to which idle worker, and what a stage's end does to its job.  It runs on
 * the worker link's loop thread (daemon/link.c calls it); every decision is
 * written through the store, one short transaction each.
 *
 * Order: job priority (highest first), then job age (FIFO), then chain
 * order.  A stage is runnable when it is queued, its predecessor succeeded
 * (or was skipped) and its retry back-off has passed.  Matching: the job's
 * device ("cpu", "gpu", "any") against the worker's devices, and every
 * label of the job must equal the worker's.  Among the idle workers that
 * match, the one idle the longest gets the stage (so consecutive stages
 * spread over workers; the input checkpoint travels by sha256).
 *
 * Every queued stage carries a reason (GET /api/v1/jobs/{id}):
 *   waiting_for_previous_stage   its predecessor has not finished
 *   waiting_for_worker           runnable; no matching idle worker
 *   waiting_for_gpu              runnable, device "gpu", no GPU worker connected
 *   retry_backoff                failed with a retryable error; waits until not_before
 *   worker_lost                  its worker went silent; it runs again on the next worker
 *
 * Stage ends:
 *   result   the stage succeeds (summary, output checkpoint) and, by the job's
 *            rules, later stages may be skipped: the remaining grow steps once
 *            a grow step reports "grow_done" (it did not pay), and every
 *            remaining stage once a prune result meets a stop rule
 *            (stop.max_accuracy_drop below the baseline's validation
 *            accuracy, or stop.target_params reached).  The stage
 *            summaries carry no "stop" flag (gpp/stages.h), so the daemon
 *            applies the spec's stop rules itself, exactly as `gpp-worker
 *            run` does.  The chain's last stage, `finetune` (the final
 *            recovery, when prune.final_finetune_epochs > 0), is never
 *            skipped by a stop rule: it recovers the size-first prune
 *            result, its input (not the previous stage's output).  It is
 *            skipped when the size-first result is the last prune, which
 *            already had the final recovery.
 *   fail     oom, invalid_data, invalid_spec, or retryable=false: the job
 *            fails at once with the reason.  Otherwise the stage is queued
 *            again after a back-off (2 s, doubling, at most 60 s) until
 *            max_restarts failures are used up.  A stage given back by a
 *            stopping worker ("cancelled" while its job is not) is queued
 *            again at once and costs nothing.
 *   lost     its worker was silent for the grace window: queued again with
 *            reason worker_lost; counts as a failure (a stage that kills
 *            its workers does not loop for ever).
 */
#ifndef GPPD_GPPD_SCHED_H
#define GPPD_GPPD_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "gpp/error.h"
#include "gpp/proto.h"
#include "store.h"

struct gppd;
typedef struct sched sched;

#define SCHED_BACKOFF_BASE_MS 2000
#define SCHED_BACKOFF_MAX_MS 60000
#define SCHED_PASS_LIMIT 64            /* runnable stages looked at per pass */

/* A connected worker (not draining) offered to a pass: idle ones can take
 * a stage, busy ones only tell the waiting stages why they wait. */
typedef struct sched_worker {
    const char *id;
    bool busy;                         /* running a stage: offered for the reasons only */
    bool cpu, gpu;                     /* the devices it has */
    size_t n_labels;
    const char *const *label_keys;     /* n_labels each */
    const char *const *label_values;
    void *user;                        /* the caller's worker */
    bool taken;                        /* set by sched_pass when it got a stage */
} sched_worker;

/* What an assign message carries (gpp/proto.h), valid during the callback. */
typedef struct sched_assignment {
    int64_t job_seq;
    char job_id[16];
    int64_t stage_row;                 /* stages.id */
    int idx;
    int attempt;                       /* after the assignment: the fencing token */
    char kind[12];
    const cJSON *spec;                 /* the job spec (canonical, defaults filled) */
    char input_sha[65];                /* "" when the stage has no input */
    int64_t input_size;
    char ds_name[GPP_PROTO_NAME_MAX + 1];
    char ds_format[16];
    size_t n_files;
    gpp_proto_file files[GPP_PROTO_MAX_FILES];     /* name/sha256 point into the struct */
    char file_names[GPP_PROTO_MAX_FILES][GPP_PROTO_NAME_MAX + 1];
    char file_shas[GPP_PROTO_MAX_FILES][65];
} sched_assignment;

/* Called for each assignment the pass makes (the stage is "assigned" in
 * the store already).  Return 0 when the assign was sent. */
typedef int (*sched_assign_fn)(void *user, sched_worker *w, const sched_assignment *a);

/* A scheduler for daemon d on `loop` (data set hashing runs on libuv's
 * thread pool; `wake` is called on the loop thread when it finishes, so the
 * caller runs another pass).  NULL when out of memory. */
sched *sched_new(struct gppd *d, uv_loop_t *loop, void (*wake)(void *), void *wake_user);

/* Free (NULL is fine).  Call after the loop has finished its work. */
void sched_free(sched *s);

/* One pass over the runnable stages: assign what the idle workers among
 * `workers` (idle ones sorted longest idle first) can take, and update the
 * reasons of the rest from every connected worker:
 *   waiting_for_gpu     device gpu and no GPU worker, or every GPU worker that
 *                       matches is busy
 *   worker_lost         its worker went silent (until it runs again)
 *   waiting_for_worker  no worker connected, or every matching one is busy
 *   waiting_for_cpu     device cpu and no connected worker has a CPU device
 *   waiting_for_labels  workers with the device are connected, none has the
 *                       job's labels
 *   retry_backoff       a retry's back-off has not passed yet
 * Returns the number of assignments, or a negative GPP_E* code. */
int sched_pass(sched *s, sched_worker *workers, size_t n_workers, sched_assign_fn fn,
               void *user);

/* The baseline, accuracy-first and size-first stages (gpp/pick.h, the
 * rule of `gpp-worker run`) among st's succeeded stages (the first one is
 * the baseline when no train or grow stage succeeded); when `over` is not
 * NULL it is stage over_idx's summary, counted as succeeded.  -1 for none.
 * Any out pointer may be NULL. */
void sched_pick_stages(const store_stage *st, size_t n, double max_drop, int over_idx,
                       const cJSON *over, int *base, int *acc_first, int *size_first);
/* The same with the summaries already parsed: sums[i] is stage i's (NULL:
 * not a result, e.g. not succeeded). */
void sched_pick_parsed(const store_stage *st, const cJSON *const *sums, size_t n,
                       double max_drop, int *base, int *acc_first, int *size_first);

/* The stage's worker sent its result (output uploaded and verified): the
 * stage succeeds, with skips per the job's rules (see above). */
int sched_stage_succeeded(sched *s, int64_t job_seq, int idx, int attempt,
                          const char *output_sha, int64_t output_size, const cJSON *summary,
                          gpp_error *err);

/* The stage's worker reported a failure (gpp/proto.h fail). */
int sched_stage_failed(sched *s, int64_t job_seq, int idx, int attempt,
                       gpp_proto_fail_class cls, bool retryable, const char *reason,
                       gpp_error *err);

/* The stage's worker was lost (silent past the grace window, or it came
 * back without the stage): queued again with reason worker_lost. */
int sched_stage_lost(sched *s, int64_t job_seq, int idx, int attempt, const char *why,
                     gpp_error *err);

/* The stage's worker stopped cleanly without finishing it: queued again at
 * once, no failure counted. */
int sched_stage_requeue(sched *s, int64_t job_seq, int idx, int attempt, const char *why,
                        gpp_error *err);

/* Parse "JOBID.IDX" (a wire stage_id).  0, or -1. */
int sched_stage_id_parse(const char *stage_id, char job_id[16], int *idx);

#endif
