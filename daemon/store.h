/* daemon/store.h - gppd's SQLite store (DATA_DIR/gppd.db): the only module
 * that speaks SQL besides migrations/.  WAL journal, synchronous=FULL (a
 * commit that returned is on disk: "acknowledged means durable"), foreign
 * keys on, prepared statements cached per connection, one mutex so the HTTP
 * threads and (later) the worker link share one connection safely.
 *
 * Every state change (job created, cancelled, retried, a stage moved) is
 * written in the same transaction as a row in `events`, whose ids are the
 * Server-Sent Events ids.
 *
 * Errors: functions return 0 or a negative GPP_E* code and fill *err (may be
 * NULL) with a machine code the HTTP layer maps to a status:
 *   "not_found"   GPP_ENOTFOUND   no such row
 *   "conflict"    GPP_EINVAL      the state does not allow it (409)
 *   "unavailable" GPP_EUNAVAIL    database busy/locked past the busy timeout
 *                                 (STORE_BUSY_TIMEOUT_MS), disk full, I/O error:
 *                                 the transaction was rolled back, nothing was
 *                                 written; try again later (HTTP 503 + Retry-After;
 *                                 the worker link acks nothing and closes)
 *   "internal"    GPP_EIO         anything else SQLite reports (500)
 *   "newer_schema", "bad_schema" GPP_EVERSION from store_open only.
 * Times are unix milliseconds; 0 stands for "not set" (SQL NULL).
 * Strings in returned structs are malloc'd and freed by the matching
 * *_clear / *_free function (which accept NULL / zeroed structs).
 */
#ifndef GPPD_STORE_H
#define GPPD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

typedef struct store store;

/* Locks held by other processes (an admin's sqlite3 shell, a backup): a
 * write waits up to STORE_BUSY_TIMEOUT_MS for them, then fails
 * "unavailable"; for STORE_BUSY_HOLD_MS after such a failure the database
 * counts as locked and writes wait only STORE_BUSY_QUICK_MS (the daemon
 * stays responsive: answers 503 at once instead of queueing behind waits). */
#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_BUSY_QUICK_MS 100
#define STORE_BUSY_HOLD_MS 2000
#define STORE_NAME_MAX 64          /* token names, metric names, data set names */
#define STORE_METRIC_NAMES_MAX 64  /* names per metrics query */

/* ---- open / close --------------------------------------------------------- */

/* Open (creating if needed) the database at `path` and apply the embedded
 * migrations newer than it, in order, in one transaction.  A database whose
 * highest applied migration is newer than this binary knows is refused
 * (GPP_EVERSION, code "newer_schema", message "gppd.db was written by a
 * newer gppd (migration 7 > 3); upgrade gppd").  On success *out is the new
 * store (free with store_close). */
int store_open(store **out, const char *path, gpp_error *err);

/* Close the database (finalises statements, checkpoints the WAL). NULL is fine. */
void store_close(store *s);

/* The highest migration applied to the open database. */
int store_schema_version(store *s);

/* ---- tokens --------------------------------------------------------------- */

typedef struct store_token {
    int64_t id;               /* row id (internal: idempotency keys, created_by) */
    char public_id[16];       /* "t" + 10 base32: the id in URLs */
    char name[STORE_NAME_MAX + 1]; /* the principal; jobs.owner */
    char role[8];             /* "admin", "user", "worker" */
    char prefix[16];          /* first characters of the token text */
    int64_t created_at;
    int64_t revoked_at;       /* 0 while active */
} store_token;

/* Insert a token given the SHA-256 of its text; a fresh public id is drawn.
 * created_by: token row id of the issuer, 0 for none. *out (may be NULL)
 * receives the row. "conflict" when the hash exists. */
int store_token_insert(store *s, const char *name, const char *role,
                       const uint8_t hash[32], const char *prefix, int64_t created_by,
                       store_token *out, gpp_error *err);

/* Find a token (active or revoked) by the SHA-256 of its text; the stored
 * hash is compared again in constant time.  0, or GPP_ENOTFOUND. */
int store_token_by_hash(store *s, const uint8_t hash[32], store_token *out, gpp_error *err);

/* Tokens with id > after_id, oldest first, at most `limit`; *more tells
 * whether more follow.  Free *out with free(). */
int store_token_list(store *s, int64_t after_id, int limit, store_token **out,
                     size_t *n, bool *more, gpp_error *err);

/* Revoke the token with this public id (a no-op when already revoked) and
 * return it in *out. "not_found"; "conflict" when it is the last active admin. */
int store_token_revoke(store *s, const char *public_id, store_token *out, gpp_error *err);

/* Count tokens matching role and name (NULL: any); only active ones when
 * active_only.  Returns the count, or a negative GPP_E* code. */
int64_t store_token_count(store *s, const char *role, const char *name, bool active_only,
                          gpp_error *err);

/* ---- jobs and stages ------------------------------------------------------ */

enum { STORE_JOB_QUEUED, STORE_JOB_RUNNING, STORE_JOB_SUCCEEDED, STORE_JOB_FAILED,
       STORE_JOB_CANCELLED, STORE_JOB_NSTATES };
extern const char *const store_job_states[STORE_JOB_NSTATES]; /* "queued", ... */

typedef struct store_job {
    int64_t seq;              /* creation order */
    char id[16];              /* "j" + 12 base32 */
    char state[16];
    char *name, *owner, *dataset, *model, *device;
    char *spec;               /* canonical spec JSON; NULL in lists */
    char *reason;             /* NULL when none */
    int priority;
    int stages_total, stages_done;
    int64_t created_at, started_at, finished_at, updated_at;
} store_job;

/* Free the strings of *j and zero it. */
void store_job_clear(store_job *j);
/* Clear and free an array of n jobs. */
void store_job_free(store_job *jobs, size_t n);

typedef struct store_stage {
    int64_t id;
    int64_t job_seq;
    int idx;                  /* position in the chain, 0-based */
    char kind[12];            /* train, grow, push, prune (finetune, baseline: gpp/proto.h) */
    int round;                /* grow step / GPP iteration, 1-based; 0 for train */
    char state[16];           /* queued assigned running succeeded failed cancelled lost skipped */
    int attempt;              /* assignments so far: the fencing token */
    char *reason, *worker_id, *input_sha256, *output_sha256, *summary;
    double progress;          /* 0..1 */
    int64_t not_before, created_at, started_at, finished_at, updated_at;
    int failures;             /* failed attempts so far (the max_restarts budget) */
} store_stage;

/* Clear and free an array of n stages. */
void store_stage_free(store_stage *stages, size_t n);

typedef struct store_stage_new {
    const char *kind;         /* train, grow, push, prune, finetune, baseline */
    int round;
} store_stage_new;

typedef struct store_job_new {
    const char *name, *owner, *dataset, *model, *device;
    const char *spec;             /* canonical JSON */
    int priority;
    const store_stage_new *stages;
    int n_stages;
    const char *first_reason;     /* reason of the first queued stage */
    int64_t token_id;             /* the submitting token (idempotency scope) */
    const char *idem_key;         /* Idempotency-Key, NULL for none */
    const uint8_t *spec_sha256;   /* 32 bytes, required with idem_key */
} store_job_new;

/* Create a job with its stages (all "queued"), a "job" event and a log line,
 * in one transaction.  With an idempotency key already used by this token
 * for the same spec, nothing is created and *existed is set; for another
 * spec it is "conflict".  *out receives the job (new or existing). A job
 * with no stages is created "succeeded". */
int store_job_create(store *s, const store_job_new *in, store_job *out, bool *existed,
                     gpp_error *err);

/* Fetch a job by public id (GPP_ENOTFOUND if none); spec included. */
int store_job_get(store *s, const char *id, store_job *out, gpp_error *err);

typedef struct store_job_filter {
    const char *state, *owner, *dataset, *model;   /* NULL: any */
} store_job_filter;

/* Jobs with seq < before_seq (0: from the newest), newest first, matching
 * the filter, at most `limit`; *more tells whether more follow.  spec is
 * NULL in the results. Free with store_job_free. */
int store_job_list(store *s, const store_job_filter *f, int64_t before_seq, int limit,
                   store_job **out, size_t *n, bool *more, gpp_error *err);

/* Number of jobs in each state (index by STORE_JOB_*). */
int store_job_counts(store *s, int64_t counts[STORE_JOB_NSTATES], gpp_error *err);

/* Cancel a queued or running job: the job and its unfinished stages become
 * "cancelled" (reason "cancelled by WHO"), events written.  "conflict" when
 * the job has finished (succeeded, failed or cancelled).  *out (may be NULL)
 * receives the job after the change; *running_stages (may be NULL) the
 * number of stages that were assigned/running (their workers must stop). */
int store_job_cancel(store *s, int64_t job_seq, const char *who, store_job *out,
                     int *running_stages, gpp_error *err);

/* Retry a failed or cancelled job from its last good stage: stages that did
 * not succeed are queued again (attempts kept), the job is "queued".
 * "conflict" in any other state. */
int store_job_retry(store *s, int64_t job_seq, const char *who, store_job *out,
                    gpp_error *err);

/* The stages of a job in chain order. Free with store_stage_free. */
int store_stage_list(store *s, int64_t job_seq, store_stage **out, size_t *n,
                     gpp_error *err);

/* A stage state change, as the scheduler and worker link make them. */
typedef struct store_stage_change {
    const char *state;         /* the new state (required) */
    int expect_attempt;        /* fencing: refuse ("conflict") unless equal; -1 = any */
    const char *reason;        /* new reason; NULL clears it */
    const char *worker_id;     /* with "assigned": the worker; else NULL keeps */
    const char *summary;       /* JSON, NULL keeps */
    const char *output_sha256; /* NULL keeps */
    double progress;           /* < 0 keeps */
    int64_t not_before;        /* with "queued": earliest retry time, 0 none */
    const char *input_sha256;  /* with "assigned": the input checkpoint; NULL keeps */
    int add_failure;           /* 1: count a failed attempt (failures + 1) */
    int64_t output_size;       /* > 0 with output_sha256: record the artifact (checkpoint
                                  of this job and stage) in the same transaction */
    int skip_through;          /* with "succeeded": queued stages idx+1 .. skip_through
                                  become "skipped" (0: none) */
    const char *skip_reason;   /* their reason ("grow stopped paying", "stopped: ..."),
                                  also a job log line (source "daemon") in the same
                                  transaction, before the job's end */
    const char *job_reason;    /* with "succeeded": the job's reason when it ends now */
} store_stage_change;

/* Move stage `idx` of a job to c->state, with the job following: the first
 * stage "assigned" (attempt + 1) or "running" makes the job running; a stage
 * "succeeded"/"skipped" counts as done (and so do the stages c->skip_through
 * skips) and the job succeeds after the last; the next queued stage's reason
 * becomes waiting_for_worker;
 * "failed" fails the job with the stage's reason.  Refused ("conflict") when
 * the job has finished, the stage has finished, or the attempt does not
 * match.  Events written in the same transaction.  *attempt_out (may be
 * NULL) receives the stage's attempt after the change. */
int store_stage_update(store *s, int64_t job_seq, int idx, const store_stage_change *c,
                       int *attempt_out, gpp_error *err);

/* ---- metrics --------------------------------------------------------------- */

typedef struct store_metric_point {
    int stage_idx;
    int attempt;
    int64_t iteration;
    const char *name;          /* [A-Za-z0-9_./-]{1,64} */
    double value;              /* NaN / infinities are stored as null */
    int64_t time;              /* unix ms */
} store_metric_point;

/* Insert n points of one job in one transaction; a point whose (stage,
 * attempt, iteration, name) exists is ignored (resent batches store nothing
 * twice).  *inserted (may be NULL) counts the new ones. "invalid_argument"
 * for a bad name; "not_found" for an unknown job. */
int store_metrics_insert(store *s, int64_t job_seq, const store_metric_point *p, size_t n,
                         size_t *inserted, gpp_error *err);

/* Rollups (migration 0003): per series (job, name, stage), summaries of the
 * points whose iteration falls in a bucket of STORE_ROLLUP_BASE *
 * STORE_ROLLUP_FANOUT^level iterations, levels 0..STORE_ROLLUP_LEVELS-1,
 * kept exact at ingest (the newest attempt's point of each iteration
 * counts).  A downsampled query of more than STORE_ROLLUP_RAW_MAX points
 * reads them instead of the points. */
#define STORE_ROLLUP_BASE 16
#define STORE_ROLLUP_FANOUT 4
#define STORE_ROLLUP_LEVELS 7
#define STORE_ROLLUP_RAW_MAX 8192

typedef struct store_metrics_query {
    int64_t job_seq;
    int stage_idx;             /* -1: every stage */
    const char *const *names;  /* NULL / n_names 0: every name of the job */
    size_t n_names;
    bool has_since;
    int64_t since;             /* only iterations > since */
    size_t limit;              /* points read per series before downsampling (> 0;
                                  SIZE_MAX: every point) */
    size_t max_points;         /* 0: no downsampling; else at most this many per series */
    size_t every;              /* 0/1: all; k: every k-th point (before max_points) */
} store_metrics_query;

typedef struct store_series {
    char name[STORE_NAME_MAX + 1];
    size_t n;                  /* points returned */
    size_t scanned;            /* points read (before downsampling) */
    bool truncated;            /* `limit` stopped the read */
    int level;                 /* -1: downsampled from the points; else from the
                                  rollups of this level (see store_metrics_query_run) */
    int *stage, *attempt;
    int64_t *iteration, *time;
    double *value;             /* NaN for null */
} store_series;

typedef struct store_metrics_result {
    char **names;              /* every metric name the job has, sorted */
    size_t n_names;
    store_series *series;      /* one per requested name that has points */
    size_t n_series;
} store_metrics_result;

/* Read series ordered by (stage, iteration).  When attempts of a stage
 * overlap on an iteration, the highest attempt's point wins.  With
 * max_points, each series is cut into max_points/2 buckets of consecutive
 * points and each bucket keeps its minimum and its maximum (in order), so
 * spikes survive downsampling; a bucket with only null values keeps its
 * first point.  Free with store_metrics_result_clear.
 *
 * Two ways, told apart by store_series.level:
 * - level -1 (the points): the first `limit` points (after `since`), every
 *   `every`-th, then store_downsample_minmax: buckets of ceil(n / B)
 *   points, B = max_points/2.  Used without max_points (CSV: every point),
 *   with every > 1, for series of at most max(max_points,
 *   STORE_ROLLUP_RAW_MAX) points, and when `limit` would cut the series.
 * - level L >= 0 (rollups; the whole series, `truncated` false, `scanned`
 *   = the points covered): the points are grouped into units, each unit one
 *   rollup bucket: a point's unit is its bucket at the largest level l <= L
 *   whose bucket starts at an iteration > `since` (no such l: the point
 *   alone).  L starts at the coarsest level whose series span at least B
 *   of its buckets (counted from the first and last iteration of each stage
 *   after `since`; else 0) and steps down while there are fewer than B
 *   units.  The
 *   m units, in order, form min(m, B) buckets: bucket k holds units
 *   [floor(k*m/B), floor((k+1)*m/B)). */
int store_metrics_query_run(store *s, const store_metrics_query *q, store_metrics_result *out,
                            gpp_error *err);

/* Free what *r holds and zero it. */
void store_metrics_result_clear(store_metrics_result *r);

/* Downsample n points in place to at most max_points (>= 2) keeping the
 * minimum and maximum value of each of max_points/2 consecutive buckets, in
 * their original order; NaN values are kept only when a bucket has nothing
 * else.  Returns the new count.  Exposed for tests. */
size_t store_downsample_minmax(store_series *sr, size_t max_points);

/* ---- events and logs ------------------------------------------------------ */

typedef struct store_event {
    int64_t id;                /* increasing, never reused */
    int64_t job_seq;           /* 0: daemon-wide */
    int64_t time;
    char type[16];             /* "job", "stage", ... */
    char *data;                /* JSON object */
} store_event;

/* Events with id > after_id (for one job, or all when job_seq is 0), oldest
 * first, at most limit. Free with store_event_free. */
int store_events_list(store *s, int64_t job_seq, int64_t after_id, int limit,
                      store_event **out, size_t *n, gpp_error *err);
void store_event_free(store_event *ev, size_t n);

/* The id of the newest event, 0 when none. */
int64_t store_event_last_id(store *s);
/* The id of a job's newest event, 0 when none. */
int64_t store_event_last_id_job(store *s, int64_t job_seq);

typedef struct store_log {
    int64_t id;
    int stage_idx;             /* -1: none */
    int64_t time;
    char level[8];
    char *source, *message;
} store_log;

/* Append a log line to a job (level debug|info|warn|error; stage_idx -1 for
 * none; source "daemon" or "worker:ID"). */
int store_log_append(store *s, int64_t job_seq, int stage_idx, const char *level,
                     const char *source, const char *message, gpp_error *err);

/* A job's log lines with id > after_id, oldest first, at most limit. */
int store_logs_list(store *s, int64_t job_seq, int64_t after_id, int limit, store_log **out,
                    size_t *n, bool *more, gpp_error *err);
void store_log_free(store_log *logs, size_t n);

/* ---- data sets, workers, artifacts --------------------------------------- */

typedef struct store_dataset {
    char name[STORE_NAME_MAX + 1];
    char format[16];           /* "idx", "cifar10-bin" */
    char *path, *info, *sha256, *created_by;   /* info: JSON; sha256 NULL until known */
    int64_t created_at;
} store_dataset;

/* Register a data set ("conflict" when the name exists). */
int store_dataset_insert(store *s, const char *name, const char *format, const char *path,
                         const char *info, const char *created_by, gpp_error *err);
/* One data set by name, or GPP_ENOTFOUND. Clear with store_dataset_clear. */
int store_dataset_get(store *s, const char *name, store_dataset *out, gpp_error *err);
/* Data sets with name > after (NULL: from the start), by name, at most limit. */
int store_dataset_list(store *s, const char *after, int limit, store_dataset **out,
                       size_t *n, bool *more, gpp_error *err);
void store_dataset_clear(store_dataset *d);
void store_dataset_free(store_dataset *d, size_t n);

typedef struct store_worker {
    char *id, *name, *host, *devices, *labels, *state;   /* devices, labels: JSON */
    int threads;
    int64_t stage_id;          /* 0: none */
    int64_t connected_at, last_seen;
    char *stage_job;           /* the current stage's job id, NULL when none */
    int stage_idx, stage_round, stage_attempt;
    char stage_kind[12];
    double stage_progress;
} store_worker;

/* Workers with id > after (NULL: from the start), by id, at most limit. */
int store_worker_list(store *s, const char *after, int limit, store_worker **out, size_t *n,
                      bool *more, gpp_error *err);
void store_worker_free(store_worker *w, size_t n);
/* Workers not lost or gone. */
int64_t store_worker_count_active(store *s, gpp_error *err);

/* 1 when the artifact is recorded, 0 when not, < 0 on error. */
int store_artifact_exists(store *s, const char *sha256_hex, gpp_error *err);
/* The recorded size of an artifact: 0 with *size, GPP_ENOTFOUND, or an error. */
int store_artifact_size(store *s, const char *sha256_hex, int64_t *size, gpp_error *err);

/* ---- uploaded models (migration 0004) ------------------------------------ */

typedef struct store_model {
    int64_t id;
    char sha256[65];
    char owner[STORE_NAME_MAX + 1];
    int64_t size, params, created_at;
    int C, H, W, classes;
    int64_t jobs;              /* jobs naming this checkpoint (any owner, any state) */
} store_model;

/* Record that `owner` uploaded checkpoint sha256 (the artifact row is made
 * when missing).  *created: the owner had no row for it before. */
int store_model_add(store *s, const store_model *m, bool *created, gpp_error *err);
/* One upload of sha256: owner's, or (owner NULL) the first anyone made.
 * GPP_ENOTFOUND "not_found" when there is none. */
int store_model_get(store *s, const char *sha256, const char *owner, store_model *out,
                    gpp_error *err);
/* Uploads with id > after_id, by id, at most limit; owner NULL: everyone's. */
int store_model_list(store *s, const char *owner, int64_t after_id, int limit,
                     store_model **out, size_t *n, bool *more, gpp_error *err);
/* Bytes of the uploads `owner` keeps (0 or more), or an error (< 0). */
int64_t store_model_usage(store *s, const char *owner, gpp_error *err);
/* Remove owner's upload of sha256 (owner NULL: every owner's).  Refused
 * with "conflict" while a queued or running job names the checkpoint.
 * *drop_file: no upload row and no job names it any more, and the artifact
 * row is gone with it: the caller removes the file. */
int store_model_delete(store *s, const char *sha256, const char *owner, bool *drop_file,
                       gpp_error *err);

/* ---- the scheduler and the worker link (migration 0002) ------------------ */

/* A queued stage whose predecessor is done (or the first), of a job that is
 * queued or running: what the scheduler may hand out. */
typedef struct store_runnable {
    int64_t job_seq;
    char job_id[16];
    int priority;
    char device[8];            /* "any", "cpu", "gpu" */
    int64_t stage_id;          /* stages.id */
    int idx, round, attempt, failures;
    char kind[12];
    char reason[40];           /* current reason ("" when NULL) */
    int64_t not_before;        /* retry back-off until (unix ms), 0 none */
} store_runnable;

/* Up to `limit` runnable stages, highest job priority first, then oldest job
 * (FIFO), then chain order.  Free *out with free(). */
int store_runnable_list(store *s, int limit, store_runnable **out, size_t *n, gpp_error *err);

/* Set the reason of a queued stage (no-op when it is not queued or the
 * reason is the same). */
int store_stage_set_reason(store *s, int64_t job_seq, int idx, const char *reason,
                           gpp_error *err);

/* The input checkpoint of stage idx: the output of the latest succeeded stage
 * before it.  0 with hex filled, "" when there is none (a first stage). */
int store_stage_input(store *s, int64_t job_seq, int idx, char hex[65], gpp_error *err);

/* The output of a job's latest succeeded stage, by job id (a checkpoint
 * model's reference).  0, or GPP_ENOTFOUND. */
int store_job_last_output(store *s, const char *job_id, char hex[65], gpp_error *err);

/* A job by seq (spec included). */
int store_job_get_seq(store *s, int64_t seq, store_job *out, gpp_error *err);

/* Record a running stage's progress (0..1) and a "progress" event; ignored
 * unless the stage is assigned/running with this attempt. */
int store_stage_progress(store *s, int64_t job_seq, int idx, int attempt, double progress,
                         gpp_error *err);

/* A stage some worker holds (assigned or running) in an unfinished job. */
typedef struct store_active {
    int64_t job_seq;
    char job_id[16];
    int64_t stage_id;
    int idx, attempt;
    char state[16];
    char worker_id[65];        /* "" when none */
} store_active;

/* Every assigned/running stage of unfinished jobs (start-up reconciliation).
 * Free *out with free(). */
int store_stages_active(store *s, store_active **out, size_t *n, gpp_error *err);

/* Insert or replace a worker's row at hello (connected_at = last_seen = now).
 * devices: JSON list, labels: JSON object; stage_id 0 for none. */
int store_worker_upsert(store *s, const char *id, const char *name, const char *host,
                        const char *devices, int threads, const char *labels,
                        const char *state, int64_t stage_id, gpp_error *err);
/* Change a worker's state (NULL keeps), stage (-1 keeps, 0 none) and
 * last_seen (0 keeps). */
int store_worker_set(store *s, const char *id, const char *state, int64_t stage_id,
                     int64_t last_seen, gpp_error *err);
/* A worker's state ("" when unknown: GPP_ENOTFOUND). */
int store_worker_state(store *s, const char *id, char state[16], gpp_error *err);
/* At start: workers left idle/busy/draining by the previous run become
 * "gone", unless they hold an assigned/running stage (they may re-attach). */
int store_workers_reset(store *s, gpp_error *err);

/* One file of a registered data set, with its hash. */
typedef struct store_dataset_file {
    char name[129];
    int64_t size, mtime;
    char sha256[65];
} store_dataset_file;

/* The hashed files of a data set (none before the first hashing).  Free
 * *out with free(). */
int store_dataset_files_get(store *s, const char *dataset, store_dataset_file **out,
                            size_t *n, gpp_error *err);
/* Replace the hashed files of a data set and set datasets.sha256 (of the
 * file set) in one transaction. */
int store_dataset_files_put(store *s, const char *dataset, const store_dataset_file *f,
                            size_t n, const char *set_sha256, gpp_error *err);
/* The path of a data set file with this sha256 (caller frees *path) and its
 * recorded size.  0, or GPP_ENOTFOUND. */
int store_dataset_file_by_sha(store *s, const char *sha256_hex, char **path, int64_t *size,
                              gpp_error *err);

/* store_metrics_insert plus, in the same transaction, an event of type
 * "metrics" with `event_data` (JSON; NULL: no event). */
int store_metrics_ingest(store *s, int64_t job_seq, const store_metric_point *p, size_t n,
                         const char *event_data, size_t *inserted, gpp_error *err);

/* store_log_append plus a "log" event ({"job","id","stage","time","level",
 * "source","message"}) in the same transaction. */
int store_log_event(store *s, int64_t job_seq, const char *job_id, int stage_idx,
                    const char *level, const char *source, const char *message,
                    gpp_error *err);

#endif
