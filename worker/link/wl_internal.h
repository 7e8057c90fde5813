/* worker/link/wl_internal.h - what the worker link's files share (prefix wl_). */
#ifndef GPP_WL_INTERNAL_H
#define GPP_WL_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "gpp/proto.h"
#include "gpp/stages.h"

#define WL_BATCH_POINTS GPP_PROTO_MAX_POINTS   /* a metrics frame */
#define WL_FLUSH_MS 250                        /* metrics flushed at least this often */
#define WL_BEAT_MS 250                         /* the heartbeat timer's tick */
#define WL_PROGRESS_MS 500                     /* pings carrying new progress, at most this often */
#define WL_BACKOFF_MIN_MS 500
#define WL_BACKOFF_MAX_MS 10000
#define WL_OUT_HIGH (4u << 20)                 /* queued output before an upload pauses */
#define WL_PENDING_MAX (1u << 20)              /* metric points kept while disconnected */
#define WL_DRAIN_GIVE_UP_MS 60000              /* a draining worker that cannot reach gppd exits */

/* ---- log lines on stderr ------------------------------------------------- */
void wl_log(const char *level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the blob cache: DIR/blobs/<sha256>, DIR/tmp/, DIR/work/, DIR/datasets/ */

/* Create the cache folders.  0 or GPP_EIO (message in err). */
int wl_cache_open(const char *dir, gpp_error *err);
/* DIR/blobs/<hex> into buf. */
void wl_cache_blob_path(const char *dir, const char *hex, char *buf, size_t n);
/* 1 when the blob is in the cache (and has `size` bytes when size >= 0). */
int wl_cache_has(const char *dir, const char *hex, int64_t size);
/* Up to max cached blob names (64 hex each) into names; returns the count. */
size_t wl_cache_list(const char *dir, char (*names)[65], size_t max);
/* DIR/work/<stage_id>.<what>.gppm into buf: the stage's mid-stage
 * checkpoints.  what = "partial": the one the stage thread writes after
 * every epoch and resumes from; "cand": a snapshot of it (a hard link)
 * waiting until the metric points computed before it are acknowledged;
 * "resume": the newest snapshot whose points are all acknowledged -- the
 * only one a later attempt may resume from (client.c, ckpt_*). */
void wl_cache_work_path(const char *dir, const char *stage_id, const char *what, char *buf,
                        size_t n);
/* Hash a file: 0 with hex and *size, or < 0. */
int wl_file_sha256(const char *path, char hex[65], int64_t *size);
/* Make DIR/datasets/<set>/<name>/ hold links named after the files to their
 * blobs; *out_dir receives DIR/datasets/<set> (the datasets_dir for
 * gpp_stage_data_open).  0 or GPP_EIO. */
int wl_cache_dataset(const char *dir, const char *name, size_t n, const gpp_proto_file *files,
                     char *out_dir, size_t out_n, gpp_error *err);

/* ---- a stage run ----------------------------------------------------------- */

typedef struct wl_point {
    int64_t iteration;
    char name[GPP_PROTO_ID_MAX + 1];
    double value;
    int64_t time_ms;
} wl_point;

/* Shared between the loop and the stage thread (guarded by mu). */
typedef struct wl_outbox {
    pthread_mutex_t mu;
    wl_point *points;             /* metric points not yet in a batch */
    size_t n_points, cap_points;
    size_t dropped;               /* points dropped over WL_PENDING_MAX */
    uint64_t emitted;             /* points the stage produced (dropped ones too) */
    char **lines;                 /* log lines not yet sent */
    size_t n_lines, cap_lines;
    double progress;              /* 0..1 */
    bool done;                    /* the thread finished */
} wl_outbox;

/* What the stage thread needs and what it leaves behind. */
typedef struct wl_job {
    /* in */
    char cache[PATH_MAX];
    char stage_id[GPP_PROTO_ID_MAX + 1];
    int attempt;
    int index;
    gpp_proto_stage_kind kind;
    char *spec_text;              /* the job spec, JSON */
    char input_sha[65];           /* "" none */
    char ds_name[GPP_PROTO_NAME_MAX + 1];
    size_t n_files;
    gpp_proto_file files[GPP_PROTO_MAX_FILES];
    char file_names[GPP_PROTO_MAX_FILES][GPP_PROTO_NAME_MAX + 1];
    char file_shas[GPP_PROTO_MAX_FILES][65];
    nn_ctx *ctx;
    int threads;
    atomic_int cancel;
    wl_outbox *box;
    uv_async_t *wake;             /* the loop's async, sent on output and at the end */
    /* out (read by the loop once box->done) */
    int rc;
    gpp_error err;
    gpp_proto_fail_class cls;
    cJSON *summary;
    char out_sha[65];
    int64_t out_size;
} wl_job;

/* The data cache of one worker (the data set of the last stage, reused when
 * the next stage reads the same data with the same split). */
void wl_data_cache_free(void);

/* The stage thread's body (uv_thread_create). */
void wl_stage_thread(void *arg);

/* The stage kind and round of chain position `index` of a job (the chain
 * rule of gppd: train (for a checkpoint model: its evaluation), grow x max_modules
 * when grow is enabled, then iterations x (push, prune), then finetune
 * when iterations > 0 and prune.final_finetune_epochs > 0).  0, or -1 past
 * the end. */
int wl_chain_stage(const gpp_jobspec *spec, int index, gpp_stage_kind *kind, int *round);

#endif
