/* worker/link/client.c - gpp-worker --connect: the loop, the connection and
 * the life of one stage (see worker_link.h).
 *
 * A stage goes through phases:
 *   FETCH    fetch the input checkpoint and data set files it lacks
 *   RUN      the stage thread computes; metrics, log lines, progress flow out
 *   ACKWAIT  the thread ended: every metrics batch of the stage must be acked
 *            (so a result never overtakes its metrics)
 *   UPLOAD   the output checkpoint goes up as blob frames, then result (or fail)
 *   CONFIRM  result/fail sent; a ping follows, and its pong (the daemon answers
 *            in order) confirms the daemon processed it
 * A reconnect re-attaches: hello.running names the stage, a ping follows
 * the welcome, and if a cancel for the stage comes before its pong the
 * daemon did not take it back (given to another worker, or its result was
 * processed already): the stage is dropped quietly.  Otherwise the phase
 * carries on: unacked metrics are sent again, missing blobs fetched again,
 * an interrupted upload (and its result) sent again.
 *
 * Mid-stage checkpoints (ckpt_*): the stage thread writes
 * work/<stage>.partial.gppm after every epoch, but a later attempt (this
 * process after a re-assignment, or a new worker process on the same cache
 * after a kill) resumes only from work/<stage>.resume.gppm, a snapshot
 * whose metric points were all acknowledged by gppd.  A new partial is
 * snapshotted (hard link) as work/<stage>.cand.gppm together with the count
 * of points the stage had produced by then, and becomes the resume
 * checkpoint once that many points are acknowledged.  So a worker lost
 * mid-stage leaves no hole in the stage's metrics: the next attempt starts
 * at or before the first point gppd never got. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gpp/sha256.h"
#include "gpp_config.h"
#include "wl_internal.h"
#include "worker_link.h"

typedef enum { C_DOWN, C_CONNECTING, C_HELLO, C_ATTACH, C_READY } conn_state;
typedef enum { P_NONE, P_FETCH, P_RUN, P_ACKWAIT, P_UPLOAD, P_CONFIRM } stage_phase;

typedef struct batch {
    int64_t seq;
    char stage_id[GPP_PROTO_ID_MAX + 1];
    int attempt;
    uint64_t end;                      /* the stage's points batched up to this one */
    gpp_buf frame;
    struct batch *next;
} batch;

typedef struct conn {
    uv_tcp_t tcp;                      /* first: tcp.data = this */
    struct wl *w;
    bool closing;
} conn;

typedef struct wreq {
    uv_write_t req;
    struct wl *w;
    conn *c;
    size_t len;
    uint8_t data[];
} wreq;

typedef struct wl {
    /* options */
    char host[256];
    int port;
    char token[GPP_PROTO_TOKEN_MAX + 1];
    char device[32];
    int threads;
    char cache[PATH_MAX];
    char name[GPP_PROTO_NAME_MAX + 1];
    size_t n_labels;
    char label_k[GPP_PROTO_MAX_LABELS][GPP_PROTO_ID_MAX + 1];
    char label_v[GPP_PROTO_MAX_LABELS][GPP_PROTO_NAME_MAX + 1];
    /* the loop */
    uv_loop_t loop;
    uv_timer_t beat, flush, retry;
    uv_async_t async;
    uv_signal_t sigterm, sigint;
    conn *c;                           /* the connection, NULL when down */
    uv_connect_t creq;
    conn_state cs;
    gpp_decoder dec;
    uint8_t rbuf[64 * 1024];
    char worker_id[GPP_PROTO_ID_MAX + 1];
    int heartbeat_ms, grace_s;
    uint64_t backoff_ms;
    uint64_t down_since;
    uint64_t pings_sent, pongs_got;    /* this connection */
    uint64_t attach_ping, confirm_ping;
    uint64_t last_ping, last_rx;
    double ping_progress;
    size_t out_bytes;
    bool draining, stopping, exiting, fatal;
    int exit_code;
    nn_ctx *ctx;
    /* the stage */
    stage_phase phase;
    wl_job *job;
    wl_outbox box;
    uv_thread_t thread;
    bool thread_running;
    bool drop_quietly;                 /* cancelled at re-attach: no fail is sent */
    bool cancel_asked;                 /* cancel from the daemon (or SIGINT) */
    int64_t seq;
    batch *unacked, *unacked_tail;
    /* the resumable mid-stage checkpoint (ckpt_*) */
    uint64_t batched;                  /* points of the stage put into batches */
    uint64_t acked_points;             /* of those, acknowledged (always a prefix) */
    bool lost_points;                  /* a batch could not be made: resume no further */
    bool cand;                         /* work/<stage>.cand.gppm waits for acks */
    uint64_t cand_need;                /* points to be acknowledged before it counts */
    struct stat part_seen;             /* the partial last snapshotted (or resumed) */
    bool part_known;
    char need[GPP_PROTO_MAX_FILES + 1][65];
    size_t n_need;
    /* the blob coming down */
    char dl_hex[65];
    int dl_fd;
    char dl_tmp[PATH_MAX + 80];
    uint64_t dl_off, dl_total;
    gpp_sha256_ctx dl_ctx;
    /* the blob going up */
    int up_fd;
    uint64_t up_off, up_total;
    uint8_t up_sha[GPP_SHA256_LEN];
    bool final_sent;
} wl;

static void conn_lost(wl *w, const char *why);
static void try_connect(wl *w);
static void stage_step(wl *w);
static void upload_pump(wl *w);
static void finish(wl *w, int code);

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- output --------------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    wreq *r = (wreq *)req;
    wl *w = r->w;
    conn *c = r->c;
    bool current = w->c == c;
    if (current)
        w->out_bytes -= r->len;
    free(r);
    if (!current)
        return;
    if (status < 0) {
        conn_lost(w, uv_strerror(status));
        return;
    }
    if (w->phase == P_UPLOAD)
        upload_pump(w);
}

static int send_bytes(wl *w, const void *data, size_t len)
{
    if (!w->c || w->c->closing)
        return GPP_EIO;
    wreq *r = malloc(sizeof *r + len);
    if (!r)
        return GPP_ENOMEM;
    r->w = w;
    r->c = w->c;
    r->len = len;
    memcpy(r->data, data, len);
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len);
    if (uv_write(&r->req, (uv_stream_t *)&w->c->tcp, &b, 1, on_written) != 0) {
        free(r);
        return GPP_EIO;
    }
    w->out_bytes += len;
    return 0;
}

static int send_msg(wl *w, const gpp_msg *m)
{
    gpp_buf out = {0};
    gpp_error e = {0};
    int rc = gpp_msg_encode(&out, m, &e);
    if (rc == 0)
        rc = send_bytes(w, out.data, out.len);
    else
        wl_log("error", "cannot encode a message", "type=%s error=\"%s\" field=%s",
               gpp_msg_type_name(m->type), e.message, e.field);
    gpp_buf_free(&out);
    return rc;
}

static bool have_stage(const wl *w)
{
    return w->phase != P_NONE && w->job;
}

static void send_ping(wl *w)
{
    gpp_msg m = {.type = GPP_MSG_PING, .ping = {.time_ms = now_ms()}};
    if (have_stage(w)) {
        m.ping.stage_id = w->job->stage_id;
        m.ping.attempt = w->job->attempt;
        pthread_mutex_lock(&w->box.mu);
        double p = w->box.progress;
        pthread_mutex_unlock(&w->box.mu);
        if (w->phase >= P_ACKWAIT)
            p = 1.0;
        m.ping.has_progress = 1;
        m.ping.progress = p < 0 ? 0 : p > 1 ? 1 : p;
        w->ping_progress = m.ping.progress;
    }
    int rc;
    if (w->draining || w->stopping) {
        /* the same ping plus "draining": true (an extension field: a peer
         * that does not know it ignores it), so gppd assigns nothing new */
        gpp_buf chk = {0};
        rc = gpp_msg_encode(&chk, &m, NULL);
        gpp_buf_free(&chk);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "time_ms", (double)m.ping.time_ms);
        if (m.ping.stage_id) {
            cJSON_AddStringToObject(o, "stage_id", m.ping.stage_id);
            cJSON_AddNumberToObject(o, "attempt", m.ping.attempt);
            cJSON_AddNumberToObject(o, "progress", m.ping.progress);
        }
        cJSON_AddTrueToObject(o, "draining");
        gpp_buf out = {0};
        if (rc == 0)
            rc = gpp_frame_append_json(&out, GPP_MSG_PING, o);
        if (rc == 0)
            rc = send_bytes(w, out.data, out.len);
        gpp_buf_free(&out);
        cJSON_Delete(o);
    } else {
        rc = send_msg(w, &m);
    }
    if (rc == 0) {
        w->pings_sent++;
        w->last_ping = uv_now(&w->loop);
    }
}

/* ---- mid-stage checkpoints (see the top of this file) ------------------------------- */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The candidate becomes the resume checkpoint once the points produced
 * before it are all acknowledged (never when points were lost). */
static void ckpt_promote(wl *w)
{
    if (!w->job || !w->cand || w->lost_points || w->acked_points < w->cand_need)
        return;
    pthread_mutex_lock(&w->box.mu);
    bool dropped = w->box.dropped > 0;
    pthread_mutex_unlock(&w->box.mu);
    if (dropped)
        return;
    char cand[PATH_MAX + 200], res[PATH_MAX + 200];
    wl_cache_work_path(w->cache, w->job->stage_id, "cand", cand, sizeof cand);
    wl_cache_work_path(w->cache, w->job->stage_id, "resume", res, sizeof res);
    w->cand = false;
    if (rename(cand, res) != 0)
        wl_log("warn", "cannot keep the mid-stage checkpoint", "stage=%s error=\"%s\"",
               w->job->stage_id, strerror(errno));
}

/* Snapshot a partial checkpoint the stage thread wrote since the last look.
 * One candidate at a time: a newer partial is looked at once the candidate
 * was promoted.  The count of points produced is read after the snapshot
 * was taken, so it covers every point computed before the checkpoint. */
static void ckpt_watch(wl *w)
{
    if (!w->job || w->cand || w->lost_points || w->phase < P_RUN || w->phase > P_ACKWAIT)
        return;
    char part[PATH_MAX + 200], cand[PATH_MAX + 200];
    wl_cache_work_path(w->cache, w->job->stage_id, "partial", part, sizeof part);
    wl_cache_work_path(w->cache, w->job->stage_id, "cand", cand, sizeof cand);
    struct stat st;
    if (stat(part, &st) != 0 || (w->part_known && same_file(&st, &w->part_seen)))
        return;
    unlink(cand);
    if (link(part, cand) != 0) {
        if (errno != ENOENT) {         /* ENOENT: replaced or removed meanwhile */
            wl_log("warn", "cannot keep the mid-stage checkpoint", "stage=%s error=\"%s\"",
                   w->job->stage_id, strerror(errno));
            w->part_seen = st;         /* not again for this one */
            w->part_known = true;
        }
        return;
    }
    if (stat(cand, &st) != 0) {
        unlink(cand);
        return;
    }
    pthread_mutex_lock(&w->box.mu);
    w->cand_need = w->box.emitted;
    pthread_mutex_unlock(&w->box.mu);
    w->part_seen = st;
    w->part_known = true;
    w->cand = true;
    ckpt_promote(w);
}

/* Before the stage thread starts: the stage resumes from the resume
 * checkpoint (hard-linked as its partial) or from its input; a partial or
 * candidate left by an earlier run is not trusted. */
static void ckpt_prepare(wl *w)
{
    char part[PATH_MAX + 200], cand[PATH_MAX + 200], res[PATH_MAX + 200];
    wl_cache_work_path(w->cache, w->job->stage_id, "partial", part, sizeof part);
    wl_cache_work_path(w->cache, w->job->stage_id, "cand", cand, sizeof cand);
    wl_cache_work_path(w->cache, w->job->stage_id, "resume", res, sizeof res);
    unlink(cand);
    unlink(part);
    w->cand = false;
    w->part_known = false;
    w->lost_points = false;
    w->batched = w->acked_points = w->cand_need = 0;
    if (access(res, F_OK) == 0) {
        if (link(res, part) != 0)
            wl_log("warn", "cannot resume from the mid-stage checkpoint", "stage=%s error=\"%s\"",
                   w->job->stage_id, strerror(errno));
        else if (stat(part, &w->part_seen) == 0)
            w->part_known = true;
    }
}

/* The stage was delivered: its mid-stage checkpoints are of no more use. */
static void ckpt_forget(wl *w)
{
    static const char *const what[] = {"partial", "cand", "resume"};
    for (size_t i = 0; i < sizeof what / sizeof what[0]; i++) {
        char p[PATH_MAX + 200];
        wl_cache_work_path(w->cache, w->job->stage_id, what[i], p, sizeof p);
        unlink(p);
    }
    w->cand = false;
}

/* An ack for the stage: every batch up to seq is stored. */
static void ckpt_acked(wl *w, const gpp_msg_ack *a)
{
    if (!w->job || strcmp(a->stage_id, w->job->stage_id) != 0 || a->attempt != w->job->attempt)
        return;
    for (const batch *b = w->unacked; b; b = b->next)
        if (strcmp(b->stage_id, a->stage_id) == 0 && b->attempt == a->attempt &&
            b->seq <= a->seq && b->end > w->acked_points)
            w->acked_points = b->end;
}

/* ---- metrics and log lines --------------------------------------------------------- */

/* Move pending points into batches (<= WL_BATCH_POINTS each) and send them
 * when the connection is ready; log lines go out as they are. */
static void flush_outbox(wl *w)
{
    if (!w->job)
        return;
    wl_job *j = w->job;
    ckpt_watch(w);                     /* before the points it covers go out */
    for (;;) {
        gpp_proto_point pts[WL_BATCH_POINTS];
        wl_point *copy = NULL;
        size_t n = 0;
        pthread_mutex_lock(&w->box.mu);
        n = w->box.n_points < WL_BATCH_POINTS ? w->box.n_points : WL_BATCH_POINTS;
        if (n) {
            copy = malloc(n * sizeof *copy);
            if (copy) {
                memcpy(copy, w->box.points, n * sizeof *copy);
                memmove(w->box.points, w->box.points + n,
                        (w->box.n_points - n) * sizeof *w->box.points);
                w->box.n_points -= n;
            }
        }
        pthread_mutex_unlock(&w->box.mu);
        if (!n || !copy)
            break;
        for (size_t i = 0; i < n; i++)
            pts[i] = (gpp_proto_point){.iteration = copy[i].iteration, .name = copy[i].name,
                                       .value = copy[i].value, .time_ms = copy[i].time_ms};
        batch *b = calloc(1, sizeof *b);
        gpp_msg m = {.type = GPP_MSG_METRICS,
                     .metrics = {.stage_id = j->stage_id, .attempt = j->attempt,
                                 .seq = ++w->seq, .n_points = n, .points = pts}};
        gpp_error e = {0};
        if (b && gpp_msg_encode(&b->frame, &m, &e) == 0) {
            b->seq = m.metrics.seq;
            snprintf(b->stage_id, sizeof b->stage_id, "%s", j->stage_id);
            b->attempt = j->attempt;
            w->batched += n;
            b->end = w->batched;
            if (w->unacked_tail)
                w->unacked_tail->next = b;
            else
                w->unacked = b;
            w->unacked_tail = b;
            if (w->cs == C_READY)
                send_bytes(w, b->frame.data, b->frame.len);
        } else {
            wl_log("warn", "metrics batch dropped", "error=\"%s\"", e.message);
            w->lost_points = true;     /* no checkpoint past this hole becomes resumable */
            if (b)
                gpp_buf_free(&b->frame);
            free(b);
        }
        free(copy);
    }
    for (;;) {
        char *line = NULL;
        pthread_mutex_lock(&w->box.mu);
        if (w->box.n_lines) {
            line = w->box.lines[0];
            memmove(w->box.lines, w->box.lines + 1, (w->box.n_lines - 1) * sizeof(char *));
            w->box.n_lines--;
        }
        pthread_mutex_unlock(&w->box.mu);
        if (!line)
            break;
        wl_log("info", "stage", "stage=%s line=\"%.1500s\"", j->stage_id, line);
        if (strlen(line) > GPP_PROTO_TEXT_MAX)
            line[GPP_PROTO_TEXT_MAX] = '\0';
        if (w->cs == C_READY) {
            gpp_msg m = {.type = GPP_MSG_LOG,
                         .log = {.stage_id = j->stage_id, .attempt = j->attempt,
                                 .level = GPP_PROTO_LOG_INFO, .line = line,
                                 .time_ms = now_ms()}};
            send_msg(w, &m);
        }
        free(line);
    }
}

static bool stage_acked(const wl *w)
{
    for (const batch *b = w->unacked; b; b = b->next)
        if (w->job && strcmp(b->stage_id, w->job->stage_id) == 0 && b->attempt == w->job->attempt)
            return false;
    return true;
}

static void drop_batches(wl *w, const char *stage_id, int attempt, int64_t upto)
{
    batch **p = &w->unacked;
    w->unacked_tail = NULL;
    while (*p) {
        batch *b = *p;
        if (strcmp(b->stage_id, stage_id) == 0 && b->attempt == attempt && b->seq <= upto) {
            *p = b->next;
            gpp_buf_free(&b->frame);
            free(b);
        } else {
            w->unacked_tail = b;
            p = &b->next;
        }
    }
}

/* ---- the stage ------------------------------------------------------------------------ */

static void clear_stage(wl *w)
{
    if (w->job) {
        drop_batches(w, w->job->stage_id, w->job->attempt, INT64_MAX);
        free(w->job->spec_text);
        cJSON_Delete(w->job->summary);
        free(w->job);
        w->job = NULL;
    }
    pthread_mutex_lock(&w->box.mu);
    w->box.n_points = 0;
    for (size_t i = 0; i < w->box.n_lines; i++)
        free(w->box.lines[i]);
    w->box.n_lines = 0;
    w->box.progress = 0;
    w->box.done = false;
    pthread_mutex_unlock(&w->box.mu);
    if (w->dl_fd >= 0) {
        close(w->dl_fd);
        unlink(w->dl_tmp);
        w->dl_fd = -1;
    }
    if (w->up_fd >= 0) {
        close(w->up_fd);
        w->up_fd = -1;
    }
    w->dl_hex[0] = '\0';
    w->n_need = 0;
    w->phase = P_NONE;
    w->drop_quietly = false;
    w->cancel_asked = false;
    w->final_sent = false;
    w->seq = 0;
    if (w->draining || w->stopping)
        finish(w, 0);
}

static void start_thread(wl *w)
{
    ckpt_prepare(w);
    w->phase = P_RUN;
    pthread_mutex_lock(&w->box.mu);
    w->box.done = false;
    w->box.progress = 0;
    w->box.emitted = 0;
    w->box.dropped = 0;
    pthread_mutex_unlock(&w->box.mu);
    if (uv_thread_create(&w->thread, wl_stage_thread, w->job) != 0) {
        w->job->rc = gpp_error_set(&w->job->err, GPP_EIO, "internal", "",
                                   "cannot start the stage thread");
        w->job->cls = GPP_PROTO_FAIL_RETRYABLE;
        w->phase = P_ACKWAIT;
        stage_step(w);
        return;
    }
    w->thread_running = true;
    wl_log("info", "stage started", "stage=%s attempt=%d", w->job->stage_id, w->job->attempt);
    if (w->cs == C_READY)
        send_ping(w);                  /* the daemon marks it running */
}

static void send_fetches(wl *w)
{
    for (size_t i = 0; i < w->n_need && w->cs == C_READY; i++) {
        gpp_msg m = {.type = GPP_MSG_FETCH, .fetch = {.sha256 = w->need[i]}};
        send_msg(w, &m);
    }
}

/* The stage's final message (result or fail), then a confirming ping. */
static void send_final(wl *w)
{
    wl_job *j = w->job;
    if (j->rc == 0) {
        gpp_msg m = {.type = GPP_MSG_RESULT,
                     .result = {.stage_id = j->stage_id, .attempt = j->attempt,
                                .output = {.sha256 = j->out_sha, .size = j->out_size},
                                .summary = j->summary}};
        send_msg(w, &m);
    } else {
        char reason[GPP_PROTO_TEXT_MAX + 1];
        snprintf(reason, sizeof reason, "%s%s%s%s", j->err.message,
                 j->err.field[0] ? " (field " : "", j->err.field, j->err.field[0] ? ")" : "");
        if (j->cls == GPP_PROTO_FAIL_CANCELLED && w->stopping && !w->cancel_asked)
            snprintf(reason, sizeof reason, "the worker is stopping");
        gpp_msg m = {.type = GPP_MSG_FAIL,
                     .fail = {.stage_id = j->stage_id, .attempt = j->attempt, .cls = j->cls,
                              .retryable = j->cls == GPP_PROTO_FAIL_RETRYABLE ||
                                           j->cls == GPP_PROTO_FAIL_INTERNAL,
                              .reason = reason}};
        send_msg(w, &m);
    }
    w->final_sent = true;
    w->phase = P_CONFIRM;
    send_ping(w);
    w->confirm_ping = w->pings_sent;
}

static void upload_pump(wl *w)
{
    while (w->phase == P_UPLOAD && w->cs == C_READY && w->out_bytes < WL_OUT_HIGH) {
        if (w->up_fd < 0) {
            char p[PATH_MAX + 80];
            wl_cache_blob_path(w->cache, w->job->out_sha, p, sizeof p);
            w->up_fd = open(p, O_RDONLY | O_CLOEXEC);
            if (w->up_fd < 0) {
                w->job->rc = gpp_error_set(&w->job->err, GPP_EIO, "io_error", "",
                                           "the output checkpoint vanished from the cache");
                w->job->cls = GPP_PROTO_FAIL_RETRYABLE;
                send_final(w);
                return;
            }
            w->up_off = 0;
            w->up_total = (uint64_t)w->job->out_size;
            gpp_sha256_from_hex(w->job->out_sha, w->up_sha);
        }
        uint64_t left = w->up_total - w->up_off;
        size_t n = left > GPP_BLOB_CHUNK ? GPP_BLOB_CHUNK : (size_t)left;
        uint8_t *chunk = malloc(n ? n : 1);
        gpp_buf out = {0};
        ssize_t got = n ? pread(w->up_fd, chunk, n, (off_t)w->up_off) : 0;
        if (!chunk || got != (ssize_t)n ||
            gpp_frame_append_blob(&out, w->up_sha, w->up_off, w->up_total, chunk, n) != 0 ||
            send_bytes(w, out.data, out.len) != 0) {
            free(chunk);
            gpp_buf_free(&out);
            conn_lost(w, "upload failed");
            return;
        }
        free(chunk);
        gpp_buf_free(&out);
        w->up_off += n;
        if (w->up_off >= w->up_total) {
            close(w->up_fd);
            w->up_fd = -1;
            send_final(w);
            return;
        }
    }
}

/* Move the stage forward as far as it can go now. */
static void stage_step(wl *w)
{
    if (!have_stage(w))
        return;
    if (w->phase == P_RUN) {
        pthread_mutex_lock(&w->box.mu);
        bool done = w->box.done;
        pthread_mutex_unlock(&w->box.mu);
        if (!done)
            return;
        if (w->thread_running) {
            uv_thread_join(&w->thread);
            w->thread_running = false;
        }
        flush_outbox(w);
        wl_job *j = w->job;
        if (j->rc == 0)
            wl_log("info", "stage done", "stage=%s attempt=%d output=%s bytes=%lld",
                   j->stage_id, j->attempt, j->out_sha, (long long)j->out_size);
        else
            wl_log("info", "stage failed", "stage=%s attempt=%d class=%s error=\"%s\"",
                   j->stage_id, j->attempt, gpp_proto_fail_class_name((int)j->cls),
                   j->err.message);
        if (w->drop_quietly) {
            clear_stage(w);
            return;
        }
        w->phase = P_ACKWAIT;
    }
    if (w->phase == P_ACKWAIT && w->cs == C_READY && stage_acked(w)) {
        if (w->job->rc == 0) {
            w->phase = P_UPLOAD;
            w->up_fd = -1;
            upload_pump(w);
        } else {
            send_final(w);
        }
    }
    if (w->phase == P_CONFIRM && w->cs == C_READY && w->pongs_got >= w->confirm_ping) {
        wl_log("info", "stage delivered", "stage=%s attempt=%d", w->job->stage_id,
               w->job->attempt);
        if (w->job->rc == 0)
            ckpt_forget(w);
        clear_stage(w);
    }
}

/* The daemon told us to stop the stage. */
static void stage_cancel(wl *w, bool quietly)
{
    w->cancel_asked = true;
    if (quietly)
        w->drop_quietly = true;
    switch (w->phase) {
    case P_FETCH:
        if (quietly) {
            clear_stage(w);
        } else {
            w->job->rc = gpp_error_set(&w->job->err, GPP_EAGAIN, "cancelled", "",
                                       "the stage was cancelled");
            w->job->cls = GPP_PROTO_FAIL_CANCELLED;
            w->phase = P_ACKWAIT;
            stage_step(w);
        }
        break;
    case P_RUN:
        atomic_store(&w->job->cancel, 1);
        break;
    default:
        if (quietly)
            clear_stage(w);
        break;               /* finished already: the daemon refuses the result */
    }
}

static void on_assign(wl *w, const gpp_msg_assign *a)
{
    const char *refuse = NULL;
    if (have_stage(w) && w->phase == P_CONFIRM) {
        if (w->job->rc == 0)
            ckpt_forget(w);
        clear_stage(w);                /* a new assignment: the last result was taken */
    }
    if (have_stage(w))
        refuse = "the worker is busy with another stage";
    else if (w->draining || w->stopping)
        refuse = "the worker is draining";
    if (refuse) {
        gpp_msg m = {.type = GPP_MSG_FAIL,
                     .fail = {.stage_id = a->stage_id, .attempt = a->attempt,
                              .cls = GPP_PROTO_FAIL_CANCELLED, .retryable = 1, .reason = refuse}};
        send_msg(w, &m);
        return;
    }
    wl_job *j = calloc(1, sizeof *j);
    char *spec = a->spec ? cJSON_PrintUnformatted(a->spec) : NULL;
    if (!j || !spec) {
        free(j);
        free(spec);
        gpp_msg m = {.type = GPP_MSG_FAIL,
                     .fail = {.stage_id = a->stage_id, .attempt = a->attempt,
                              .cls = GPP_PROTO_FAIL_OOM, .retryable = 1,
                              .reason = "out of memory"}};
        send_msg(w, &m);
        return;
    }
    snprintf(j->cache, sizeof j->cache, "%s", w->cache);
    snprintf(j->stage_id, sizeof j->stage_id, "%s", a->stage_id);
    j->attempt = a->attempt;
    j->index = a->index;
    j->kind = a->kind;
    j->spec_text = spec;
    snprintf(j->input_sha, sizeof j->input_sha, "%s", a->input.sha256 ? a->input.sha256 : "");
    snprintf(j->ds_name, sizeof j->ds_name, "%s", a->dataset_name);
    j->n_files = a->n_files;
    for (size_t i = 0; i < a->n_files; i++) {
        snprintf(j->file_names[i], sizeof j->file_names[i], "%s", a->files[i].name);
        snprintf(j->file_shas[i], sizeof j->file_shas[i], "%s", a->files[i].sha256);
        j->files[i] = (gpp_proto_file){.name = j->file_names[i], .sha256 = j->file_shas[i],
                                       .size = a->files[i].size};
    }
    j->ctx = w->ctx;
    j->threads = w->threads;
    atomic_init(&j->cancel, 0);
    j->box = &w->box;
    j->wake = &w->async;
    w->job = j;
    w->seq = 0;
    w->n_need = 0;
    if (j->input_sha[0] && !wl_cache_has(w->cache, j->input_sha, a->input.size))
        snprintf(w->need[w->n_need++], 65, "%s", j->input_sha);
    for (size_t i = 0; i < j->n_files; i++) {
        bool dup = false;
        for (size_t k = 0; k < w->n_need; k++)
            dup |= strcmp(w->need[k], j->file_shas[i]) == 0;
        if (!dup && !wl_cache_has(w->cache, j->file_shas[i], j->files[i].size))
            snprintf(w->need[w->n_need++], 65, "%s", j->file_shas[i]);
    }
    wl_log("info", "assigned", "stage=%s attempt=%d kind=%s fetch=%zu", j->stage_id, j->attempt,
           gpp_proto_stage_kind_name((int)j->kind), w->n_need);
    if (w->n_need > 0) {
        w->phase = P_FETCH;
        send_fetches(w);
    } else {
        start_thread(w);
    }
}

static void on_blob(wl *w, const gpp_msg_blob *b)
{
    char hex[65];
    gpp_sha256_hex(b->sha256, hex);
    bool needed = false;
    for (size_t i = 0; i < w->n_need && !needed; i++)
        needed = strcmp(w->need[i], hex) == 0;
    if (!needed || w->phase != P_FETCH)
        return;                        /* not (or no longer) wanted */
    if (w->dl_fd < 0 || strcmp(w->dl_hex, hex) != 0) {
        if (w->dl_fd >= 0) {
            close(w->dl_fd);
            unlink(w->dl_tmp);
            w->dl_fd = -1;
        }
        if (b->offset != 0)
            return;
        snprintf(w->dl_hex, sizeof w->dl_hex, "%s", hex);
        snprintf(w->dl_tmp, sizeof w->dl_tmp, "%s/tmp/%s.part", w->cache, hex);
        w->dl_fd = open(w->dl_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (w->dl_fd < 0) {
            w->job->rc = gpp_error_set(&w->job->err, GPP_EIO, "io_error", "cache-dir",
                                       "cannot write %s: %s", w->dl_tmp, strerror(errno));
            w->job->cls = GPP_PROTO_FAIL_RETRYABLE;
            w->phase = P_ACKWAIT;
            stage_step(w);
            return;
        }
        w->dl_off = 0;
        w->dl_total = b->total;
        gpp_sha256_init(&w->dl_ctx);
    }
    if (b->offset != w->dl_off || b->total != w->dl_total)
        return;
    size_t left = b->len;
    const uint8_t *p = b->data;
    while (left > 0) {
        ssize_t k = write(w->dl_fd, p, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        p += k;
        left -= (size_t)k;
    }
    gpp_sha256_update(&w->dl_ctx, b->data, b->len);
    w->dl_off += b->len;
    if (w->dl_off < w->dl_total)
        return;
    uint8_t dig[GPP_SHA256_LEN];
    gpp_sha256_final(&w->dl_ctx, dig);
    bool ok = left == 0 && memcmp(dig, b->sha256, GPP_SHA256_LEN) == 0 && fsync(w->dl_fd) == 0;
    close(w->dl_fd);
    w->dl_fd = -1;
    char final[PATH_MAX + 80];
    wl_cache_blob_path(w->cache, hex, final, sizeof final);
    if (!ok || rename(w->dl_tmp, final) != 0) {
        unlink(w->dl_tmp);
        w->job->rc = gpp_error_set(&w->job->err, GPP_ECHECKSUM, "checksum_mismatch", "",
                                   "blob %s from gppd failed its sha256 check", hex);
        w->job->cls = GPP_PROTO_FAIL_RETRYABLE;
        w->phase = P_ACKWAIT;
        stage_step(w);
        return;
    }
    for (size_t i = 0; i < w->n_need; i++) {
        if (strcmp(w->need[i], hex) == 0) {
            memmove(w->need[i], w->need[i + 1], (w->n_need - i - 1) * sizeof w->need[0]);
            w->n_need--;
            break;
        }
    }
    if (w->n_need == 0)
        start_thread(w);
}

/* ---- the connection ----------------------------------------------------------------- */

static void on_ready(wl *w)
{
    w->cs = C_READY;
    for (batch *b = w->unacked; b; b = b->next)
        send_bytes(w, b->frame.data, b->frame.len);
    if (!have_stage(w)) {
        if (w->draining || w->stopping)
            finish(w, 0);
        return;
    }
    switch (w->phase) {
    case P_FETCH:
        if (w->dl_fd >= 0) {
            close(w->dl_fd);
            unlink(w->dl_tmp);
            w->dl_fd = -1;
        }
        send_fetches(w);
        break;
    case P_UPLOAD:
        if (w->up_fd >= 0) {
            close(w->up_fd);
            w->up_fd = -1;
        }
        upload_pump(w);
        break;
    case P_CONFIRM:
        /* not confirmed before the loss, and the daemon took the stage back:
         * it never processed the final message */
        w->phase = w->job->rc == 0 ? P_UPLOAD : P_ACKWAIT;
        w->up_fd = -1;
        if (w->phase == P_UPLOAD)
            upload_pump(w);
        else
            stage_step(w);
        break;
    default:
        stage_step(w);
        break;
    }
}

static void on_frame(wl *w, const gpp_frame *f)
{
    gpp_msg m;
    gpp_error e = {0};
    if (gpp_msg_parse(f, &m, &e) != 0) {
        wl_log("warn", "bad frame from gppd", "error=\"%s\" field=%s", e.message, e.field);
        conn_lost(w, "bad frame");
        return;
    }
    w->last_rx = uv_now(&w->loop);
    switch (m.type) {
    case GPP_MSG_WELCOME:
        if (w->cs != C_HELLO)
            break;
        snprintf(w->worker_id, sizeof w->worker_id, "%s", m.welcome.worker_id);
        w->heartbeat_ms = m.welcome.heartbeat_ms;
        w->grace_s = m.welcome.grace_s;
        w->dec.max_payload = m.welcome.max_frame > GPP_FRAME_MAX ? GPP_FRAME_MAX
                                                                 : (size_t)m.welcome.max_frame;
        w->backoff_ms = WL_BACKOFF_MIN_MS;
        w->cs = C_ATTACH;
        wl_log("info", "connected", "worker=%s daemon=%s:%d heartbeat_ms=%d grace_s=%d",
               w->worker_id, w->host, w->port, w->heartbeat_ms, w->grace_s);
        send_ping(w);
        w->attach_ping = w->pings_sent;
        break;
    case GPP_MSG_PONG:
        w->pongs_got++;
        if (w->cs == C_ATTACH && w->pongs_got >= w->attach_ping)
            on_ready(w);
        else if (w->cs == C_READY)
            stage_step(w);
        break;
    case GPP_MSG_PING: {
        gpp_msg p = {.type = GPP_MSG_PONG, .pong = {.time_ms = now_ms()}};
        send_msg(w, &p);
        break;
    }
    case GPP_MSG_ASSIGN:
        if (w->cs == C_READY || w->cs == C_ATTACH)
            on_assign(w, &m.assign);
        break;
    case GPP_MSG_FETCH:
        break;
    case GPP_MSG_BLOB:
        on_blob(w, &m.blob);
        break;
    case GPP_MSG_ACK:
        ckpt_acked(w, &m.ack);
        drop_batches(w, m.ack.stage_id, m.ack.attempt, m.ack.seq);
        ckpt_promote(w);
        ckpt_watch(w);
        stage_step(w);
        break;
    case GPP_MSG_CANCEL:
        if (have_stage(w) && strcmp(m.cancel.stage_id, w->job->stage_id) == 0 &&
            m.cancel.attempt == w->job->attempt) {
            bool quietly = w->cs == C_ATTACH;
            wl_log("info", quietly ? "stage taken back by gppd" : "stage cancelled",
                   "stage=%s attempt=%d", w->job->stage_id, w->job->attempt);
            stage_cancel(w, quietly);
        }
        break;
    case GPP_MSG_DRAIN:
        wl_log("info", "draining", "%s", "");
        w->draining = true;
        if (!have_stage(w))
            finish(w, 0);
        break;
    case GPP_MSG_BYE:
        wl_log("warn", "gppd said bye", "reason=\"%s\"", m.bye.reason);
        if (strcmp(m.bye.reason, "unauthenticated") == 0) {
            wl_log("error", "gppd refused the worker token", "%s", "");
            w->fatal = true;
        }
        break;
    default:
        break;
    }
    gpp_msg_free(&m);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->w->rbuf, sizeof c->w->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn *c = s->data;
    wl *w = c->w;
    (void)buf;
    if (c != w->c)
        return;
    if (n < 0) {
        conn_lost(w, n == UV_EOF ? "closed by gppd" : uv_strerror((int)n));
        return;
    }
    gpp_error e = {0};
    if (n == 0)
        return;
    if (gpp_decoder_feed(&w->dec, w->rbuf, (size_t)n, &e) != 0) {
        conn_lost(w, e.message);
        return;
    }
    gpp_frame f;
    int rc;
    while (w->c == c && (rc = gpp_decoder_next(&w->dec, &f, &e)) == 1)
        on_frame(w, &f);
    if (w->c == c && rc < 0)
        conn_lost(w, e.message);
}

static void on_conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void send_hello(wl *w)
{
    gpp_msg m = {.type = GPP_MSG_HELLO};
    gpp_msg_hello *h = &m.hello;
    h->proto = GPP_PROTO_VERSION;
    h->token = w->token;
    h->worker_id = w->worker_id[0] ? w->worker_id : NULL;
    h->name = w->name;
    bool cuda = strncmp(w->device, "cuda", 4) == 0;
    h->n_devices = 1;
    h->devices[0].kind = cuda ? GPP_PROTO_DEV_CUDA : GPP_PROTO_DEV_CPU;
    h->devices[0].index = cuda && w->device[4] == ':' ? atoi(w->device + 5) : 0;
    /* the GPU's own name and memory (the cpu: "cpu" and the host RAM) */
    static char dev_name[128];
    long long mem_mb = 0;
    if (!w->ctx || nn_ctx_device_info(w->ctx, dev_name, sizeof dev_name, &mem_mb) != 0)
        snprintf(dev_name, sizeof dev_name, "%s", w->device);
    h->devices[0].name = dev_name;
    h->devices[0].memory_mb = (int64_t)mem_mb;
    h->threads = w->threads;
    h->n_labels = w->n_labels;
    for (size_t i = 0; i < w->n_labels; i++)
        h->labels[i] = (gpp_proto_label){.key = w->label_k[i], .value = w->label_v[i]};
    if (have_stage(w)) {
        h->running_stage_id = w->job->stage_id;
        h->running_attempt = w->job->attempt;
    }
    static char names[GPP_PROTO_MAX_CACHED][65];
    static const char *ptrs[GPP_PROTO_MAX_CACHED];
    size_t n = wl_cache_list(w->cache, names, GPP_PROTO_MAX_CACHED);
    for (size_t i = 0; i < n; i++)
        ptrs[i] = names[i];
    h->n_cached = n;
    h->cached = n ? ptrs : NULL;
    send_msg(w, &m);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->handle->data;
    wl *w = c->w;
    if (c != w->c)
        return;
    if (status < 0) {
        conn_lost(w, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    w->cs = C_HELLO;
    w->pings_sent = w->pongs_got = 0;
    w->out_bytes = 0;
    w->last_rx = uv_now(&w->loop);
    gpp_decoder_free(&w->dec);
    gpp_decoder_init(&w->dec, 64 * 1024);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    send_hello(w);
}

static void on_retry(uv_timer_t *t)
{
    try_connect(t->data);
}

static void schedule_reconnect(wl *w)
{
    if (w->exiting)
        return;
    uint64_t base = w->backoff_ms ? w->backoff_ms : WL_BACKOFF_MIN_MS;
    double jitter = 0.75 + 0.5 * ((double)rand() / (double)RAND_MAX);
    uint64_t wait = (uint64_t)((double)base * jitter);
    w->backoff_ms = base * 2 > WL_BACKOFF_MAX_MS ? WL_BACKOFF_MAX_MS : base * 2;
    uv_timer_start(&w->retry, on_retry, wait, 0);
}

static void conn_lost(wl *w, const char *why)
{
    conn *c = w->c;
    if (!c)
        return;
    bool was_up = w->cs >= C_ATTACH;
    w->c = NULL;
    w->cs = C_DOWN;
    w->out_bytes = 0;
    if (!w->down_since)
        w->down_since = uv_now(&w->loop);
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    if (w->dl_fd >= 0) {
        close(w->dl_fd);
        unlink(w->dl_tmp);
        w->dl_fd = -1;
    }
    if (w->up_fd >= 0) {
        close(w->up_fd);
        w->up_fd = -1;
    }
    if (was_up || w->fatal)
        wl_log(w->fatal ? "error" : "warn", "connection lost", "why=\"%s\"", why);
    if (w->fatal) {
        finish(w, 1);
        return;
    }
    if (w->stopping && !(have_stage(w) && w->phase == P_RUN)) {
        finish(w, 0);
        return;
    }
    schedule_reconnect(w);
}

static void try_connect(wl *w)
{
    if (w->exiting || w->c)
        return;
    if (w->draining && w->down_since &&
        uv_now(&w->loop) - w->down_since > WL_DRAIN_GIVE_UP_MS) {
        wl_log("warn", "draining and gppd is unreachable; giving up", "%s", "");
        finish(w, 0);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        schedule_reconnect(w);
        return;
    }
    c->w = w;
    c->tcp.data = c;
    uv_tcp_init(&w->loop, &c->tcp);
    w->c = c;
    w->cs = C_CONNECTING;
    struct sockaddr_storage sa;
    int rc = strchr(w->host, ':') ? uv_ip6_addr(w->host, w->port, (struct sockaddr_in6 *)&sa)
                                   : uv_ip4_addr(w->host, w->port, (struct sockaddr_in *)&sa);
    if (rc == 0)
        rc = uv_tcp_connect(&w->creq, &c->tcp, (struct sockaddr *)&sa, on_connect);
    if (rc != 0)
        conn_lost(w, uv_strerror(rc));
}

/* ---- timers, signals, the end ---------------------------------------------------------- */

static void on_beat(uv_timer_t *t)
{
    wl *w = t->data;
    uint64_t now = uv_now(&w->loop);
    if (w->cs == C_READY || w->cs == C_ATTACH) {
        uint64_t hb = (uint64_t)(w->heartbeat_ms > 0 ? w->heartbeat_ms : 5000);
        uint64_t silent = hb * 3 > 15000 ? hb * 3 : 15000;
        if (now - w->last_rx > silent) {
            conn_lost(w, "gppd stopped answering");
            return;
        }
        double p = w->ping_progress;
        if (have_stage(w) && w->phase == P_RUN) {
            pthread_mutex_lock(&w->box.mu);
            p = w->box.progress;
            pthread_mutex_unlock(&w->box.mu);
        }
        if (now - w->last_ping >= hb ||
            (p != w->ping_progress && now - w->last_ping >= WL_PROGRESS_MS))
            send_ping(w);
    } else if (w->cs == C_HELLO && now - w->last_rx > 30000) {
        conn_lost(w, "no welcome from gppd");
    }
}

static void on_flush(uv_timer_t *t)
{
    wl *w = t->data;
    flush_outbox(w);
}

static void on_async(uv_async_t *a)
{
    wl *w = a->data;
    flush_outbox(w);
    stage_step(w);
}

static void on_sigterm(uv_signal_t *s, int sig)
{
    wl *w = s->data;
    (void)sig;
    if (w->draining)
        return;
    wl_log("info", "SIGTERM: draining (finish the stage, take nothing new)", "%s", "");
    w->draining = true;
    if (!have_stage(w))
        finish(w, 0);
    else if (w->cs == C_READY)
        send_ping(w);                  /* says "draining" */
}

static void on_sigint(uv_signal_t *s, int sig)
{
    wl *w = s->data;
    (void)sig;
    if (w->stopping) {
        finish(w, 130);
        return;
    }
    wl_log("info", "SIGINT: stopping (the stage goes back to gppd)", "%s", "");
    w->stopping = true;
    if (have_stage(w) && w->cs == C_READY)
        send_ping(w);                  /* says "draining": nothing new comes */
    if (!have_stage(w) || !w->c) {
        if (!(have_stage(w) && w->phase == P_RUN))
            finish(w, 0);
        else
            atomic_store(&w->job->cancel, 1);
        return;
    }
    if (w->phase == P_RUN)
        atomic_store(&w->job->cancel, 1);
    else if (w->phase == P_FETCH)
        stage_cancel(w, false);
}

static void close_cb_noop(uv_handle_t *h)
{
    (void)h;
}

static void finish(wl *w, int code)
{
    if (w->exiting)
        return;
    w->exiting = true;
    w->exit_code = code;
    if (have_stage(w) && w->thread_running) {
        atomic_store(&w->job->cancel, 1);
        uv_thread_join(&w->thread);
        w->thread_running = false;
    }
    if (w->c && w->cs >= C_HELLO) {
        gpp_msg m = {.type = GPP_MSG_BYE, .bye = {.reason = w->draining ? "drained" : "stopping"}};
        gpp_buf out = {0};
        if (gpp_msg_encode(&out, &m, NULL) == 0) {
            uv_buf_t b = uv_buf_init((char *)out.data, (unsigned)out.len);
            uv_try_write((uv_stream_t *)&w->c->tcp, &b, 1);
        }
        gpp_buf_free(&out);
    }
    if (w->c) {
        conn *c = w->c;
        w->c = NULL;
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    }
    uv_close((uv_handle_t *)&w->beat, close_cb_noop);
    uv_close((uv_handle_t *)&w->flush, close_cb_noop);
    uv_close((uv_handle_t *)&w->retry, close_cb_noop);
    uv_close((uv_handle_t *)&w->async, close_cb_noop);
    uv_close((uv_handle_t *)&w->sigterm, close_cb_noop);
    uv_close((uv_handle_t *)&w->sigint, close_cb_noop);
    wl_log("info", "exiting", "status=%d", code);
}

/* ---- options ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpp-worker --connect HOST:PORT --token-file F [--device cpu|cuda[:N]]\n"
            "                  [--threads N] [--cache-dir DIR] [--labels k=v,...] [--name NAME]\n"
            "\n"
            "Daemon mode: take stages from gppd (HOST:PORT is its --worker-listen), run them,\n"
            "report metrics and results.  --token-file holds the worker token\n"
            "(DATA_DIR/worker.token on the gppd host).  --cache-dir keeps fetched data sets\n"
            "and checkpoints by sha256 (default ./gpp-worker-cache).  SIGTERM finishes the\n"
            "current stage and exits; SIGINT gives the stage back at once.\n");
}

static int parse_labels(wl *w, const char *s)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf)
        return -1;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq || eq == t || w->n_labels == GPP_PROTO_MAX_LABELS)
            return -1;
        *eq = '\0';
        if (strlen(t) > GPP_PROTO_ID_MAX || strlen(eq + 1) > GPP_PROTO_NAME_MAX)
            return -1;
        for (size_t i = 0; i < w->n_labels; i++)
            if (strcmp(w->label_k[i], t) == 0)
                return -1;
        snprintf(w->label_k[w->n_labels], sizeof w->label_k[0], "%s", t);
        snprintf(w->label_v[w->n_labels], sizeof w->label_v[0], "%s", eq + 1);
        w->n_labels++;
    }
    return 0;
}

static int read_token(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char buf[1024];
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    char *s = buf;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t len = strcspn(s, " \t\r\n");
    if (len == 0 || len >= n)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int parse_args(wl *w, int argc, char **argv)
{
    const char *token_file = NULL, *connect = NULL;
    snprintf(w->device, sizeof w->device, "cpu");
    snprintf(w->cache, sizeof w->cache, "./gpp-worker-cache");
    w->threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "gpp-worker: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--connect") == 0) {
            connect = v;
        } else if (strcmp(a, "--token-file") == 0) {
            token_file = v;
        } else if (strcmp(a, "--device") == 0) {
            bool ok = strcmp(v, "cpu") == 0 || strcmp(v, "cuda") == 0;
            if (strncmp(v, "cuda:", 5) == 0) {
                char *end;
                long d = strtol(v + 5, &end, 10);
                ok = end != v + 5 && !*end && d >= 0 && d < 1024;
            }
            if (!ok) {
                fprintf(stderr, "gpp-worker: --device must be cpu, cuda or cuda:N\n");
                return 2;
            }
            snprintf(w->device, sizeof w->device, "%s", v);
        } else if (strcmp(a, "--threads") == 0) {
            char *end;
            long t = strtol(v, &end, 10);
            if (end == v || *end || t < 1 || t > 1024) {
                fprintf(stderr, "gpp-worker: --threads must be 1..1024\n");
                return 2;
            }
            w->threads = (int)t;
        } else if (strcmp(a, "--cache-dir") == 0) {
            snprintf(w->cache, sizeof w->cache, "%s", v);
        } else if (strcmp(a, "--labels") == 0) {
            if (parse_labels(w, v) != 0) {
                fprintf(stderr, "gpp-worker: --labels must be k=v,... (at most %d, unique keys)\n",
                        GPP_PROTO_MAX_LABELS);
                return 2;
            }
        } else if (strcmp(a, "--name") == 0) {
            if (strlen(v) < 1 || strlen(v) > GPP_PROTO_NAME_MAX) {
                fprintf(stderr, "gpp-worker: --name must be 1..%d bytes\n", GPP_PROTO_NAME_MAX);
                return 2;
            }
            snprintf(w->name, sizeof w->name, "%s", v);
        } else {
            fprintf(stderr, "gpp-worker: unknown option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!connect || !token_file) {
        fprintf(stderr, "gpp-worker: --connect HOST:PORT and --token-file F are required\n");
        usage(stderr);
        return 2;
    }
    const char *colon = strrchr(connect, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !end || *end || port < 1 || port > 65535 || colon == connect) {
        fprintf(stderr, "gpp-worker: --connect needs HOST:PORT, got \"%s\"\n", connect);
        return 2;
    }
    const char *h = connect;
    size_t hl = (size_t)(colon - connect);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= sizeof w->host) {
        fprintf(stderr, "gpp-worker: --connect host too long\n");
        return 2;
    }
    memcpy(w->host, h, hl);
    w->host[hl] = '\0';
    if (strcmp(w->host, "localhost") == 0)
        snprintf(w->host, sizeof w->host, "127.0.0.1");
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (uv_ip4_addr(w->host, 1, &a4) != 0 && uv_ip6_addr(w->host, 1, &a6) != 0) {
        fprintf(stderr, "gpp-worker: --connect needs a numeric IP address (or localhost), got"
                " \"%s\"\n", w->host);
        return 2;
    }
    w->port = (int)port;
    if (read_token(token_file, w->token, sizeof w->token) != 0) {
        fprintf(stderr, "gpp-worker: cannot read a token from %s: %s\n", token_file,
                errno ? strerror(errno) : "empty");
        return 2;
    }
    if (w->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        w->threads = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
    }
    if (!w->name[0]) {
        char host[64] = "host";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "%.100s:%d", host, (int)getpid());
    }
    return 0;
}

/* gpp_worker_connect_main: see worker_link.h. */
int gpp_worker_connect_main(int argc, char **argv)
{
    wl *w = calloc(1, sizeof *w);
    if (!w) {
        fprintf(stderr, "gpp-worker: out of memory\n");
        return 1;
    }
    int rc = parse_args(w, argc, argv);
    if (rc != 0) {
        free(w);
        return rc == 1 ? 0 : rc;
    }
    gpp_error err = {0};
    if (wl_cache_open(w->cache, &err) != 0) {
        fprintf(stderr, "gpp-worker: %s\n", err.message);
        free(w);
        return 1;
    }
    w->ctx = nn_ctx_new(w->device, w->threads, &err);
    if (!w->ctx) {
        fprintf(stderr, "gpp-worker: --device %s: %s\n", w->device, err.message);
        free(w);
        return 1;
    }
    srand((unsigned)(now_ms() ^ (getpid() << 16)));
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&w->box.mu, NULL);
    w->dl_fd = w->up_fd = -1;
    w->backoff_ms = WL_BACKOFF_MIN_MS;
    uv_loop_init(&w->loop);
    uv_timer_init(&w->loop, &w->beat);
    uv_timer_init(&w->loop, &w->flush);
    uv_timer_init(&w->loop, &w->retry);
    uv_async_init(&w->loop, &w->async, on_async);
    uv_signal_init(&w->loop, &w->sigterm);
    uv_signal_init(&w->loop, &w->sigint);
    w->beat.data = w->flush.data = w->retry.data = w->async.data = w;
    w->sigterm.data = w->sigint.data = w;
    uv_timer_start(&w->beat, on_beat, WL_BEAT_MS, WL_BEAT_MS);
    uv_timer_start(&w->flush, on_flush, WL_FLUSH_MS, WL_FLUSH_MS);
    uv_signal_start(&w->sigterm, on_sigterm, SIGTERM);
    uv_signal_start(&w->sigint, on_sigint, SIGINT);
    wl_log("info", "starting", "version=%s connect=%s:%d device=%s threads=%d cache=%s", GPP_VERSION,
           w->host, w->port, w->device, w->threads, w->cache);
    try_connect(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->thread_running) {
        atomic_store(&w->job->cancel, 1);
        uv_thread_join(&w->thread);
    }
    if (w->job) {
        free(w->job->spec_text);
        cJSON_Delete(w->job->summary);
        free(w->job);
    }
    while (w->unacked) {
        batch *b = w->unacked;
        w->unacked = b->next;
        gpp_buf_free(&b->frame);
        free(b);
    }
    for (size_t i = 0; i < w->box.n_lines; i++)
        free(w->box.lines[i]);
    free(w->box.lines);
    free(w->box.points);
    pthread_mutex_destroy(&w->box.mu);
    gpp_decoder_free(&w->dec);
    uv_loop_close(&w->loop);
    wl_data_cache_free();
    nn_ctx_free(w->ctx);
    rc = w->exit_code;
    free(w);
    return rc;
}
