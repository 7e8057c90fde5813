/* daemon/link.c - see link.h. */
#include "link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "gpp/proto.h"
#include "gpp/sha256.h"
#include "gppd.h"
#include "log.h"
#include "gppd_sched.h"
#include "tokens.h"
#include "util.h"

#define LINK_READ_BUF (64 * 1024)       /* bytes read per wake-up and connection */
#define LINK_OUT_HIGH (4u << 20)        /* queued output before blob streaming pauses */
#define LINK_TICK_MS 1000               /* housekeeping: leases, reasons, back-offs */
#define LINK_SEEN_WRITE_MS 2000         /* workers.last_seen written at most this often */
#define LINK_PROGRESS_WRITE_MS 500      /* stage progress written at most this often */
#define LINK_FETCH_MAX 64               /* fetches queued per connection */

typedef struct lconn lconn;

/* A worker, from its hello until it is gone (it outlives a dropped
 * connection while it holds a stage: the grace window). */
typedef struct lworker {
    char id[GPP_PROTO_ID_MAX + 1];
    char name[GPP_PROTO_NAME_MAX + 1];
    lconn *conn;                        /* NULL while disconnected */
    bool cpu, gpu;
    int threads;
    size_t n_labels;
    char label_k[GPP_PROTO_MAX_LABELS][GPP_PROTO_ID_MAX + 1];
    char label_v[GPP_PROTO_MAX_LABELS][GPP_PROTO_NAME_MAX + 1];
    const char *label_kp[GPP_PROTO_MAX_LABELS], *label_vp[GPP_PROTO_MAX_LABELS];
    bool draining;
    uint64_t last_seen;                 /* uv_now ms: the lease */
    uint64_t seen_written;              /* last workers.last_seen write */
    uint64_t idle_since;
    /* the stage it holds */
    bool busy;
    int64_t job_seq;
    char job_id[16];
    int idx, attempt;
    int64_t stage_row;
    char stage_id[GPP_PROTO_ID_MAX + 1];
    bool running;                       /* the stage was marked running */
    bool cancel_sent;
    bool lost_pending;                  /* its lease ran out while the store was down */
    double progress;
    uint64_t progress_written;
    struct lworker *next;
} lworker;

typedef struct fetch_item {
    uint8_t sha[GPP_SHA256_LEN];
    char *path;
    int fd;
    uint64_t off, total;
} fetch_item;

struct lconn {
    uv_tcp_t tcp;                       /* first: tcp.data = this */
    link_server *l;
    gpp_decoder dec;
    uint8_t rbuf[LINK_READ_BUF];
    bool hello_done;
    bool closing;
    bool bye;                           /* the worker said bye */
    lworker *w;
    char peer[64];
    /* a blob the worker uploads */
    artifacts_writer *up;
    uint8_t up_sha[GPP_SHA256_LEN];
    uint64_t up_off, up_total;
    bool up_skip;                       /* the artifact exists: read and drop */
    /* blobs the worker fetches */
    fetch_item fetch[LINK_FETCH_MAX];
    size_t n_fetch;
    size_t out_bytes;                   /* queued in uv_write, not yet written */
    struct lconn *next;
};

typedef struct wreq {
    uv_write_t req;
    lconn *c;
    size_t len;
    uint8_t data[];
} wreq;

enum { CMD_KICK = 1, CMD_CANCEL, CMD_DRAIN, CMD_STOP };

typedef struct link_cmd {
    int type;
    int64_t job_seq;
    char worker[GPP_PROTO_ID_MAX + 1];
} link_cmd;

struct link_server {
    gppd *d;
    uv_loop_t loop;
    uv_thread_t thread;
    bool thread_started;
    uv_tcp_t server;
    uv_async_t async;
    uv_timer_t tick;
    uv_timer_t soon;                    /* a scheduler pass on the next turn */
    uint16_t port;
    char connect_addr[CONFIG_ADDR_MAX + 8];
    pthread_mutex_t mu;                 /* guards cmds */
    link_cmd *cmds;
    size_t n_cmds, cap_cmds;
    bool stopping;
    lworker *workers;
    lconn *conns;
    sched *sched;
    int grace_s;
    int heartbeat_ms;                   /* LINK_HEARTBEAT_MS, or a third of a shorter grace */
};

static void conn_close(lconn *c, const char *why);
static void fetch_pump(lconn *c);
static void sched_soon(link_server *l);

/* ---- workers ------------------------------------------------------------------ */

static lworker *worker_find(link_server *l, const char *id)
{
    for (lworker *w = l->workers; w; w = w->next)
        if (strcmp(w->id, id) == 0)
            return w;
    return NULL;
}

static lworker *worker_new(link_server *l, const char *id)
{
    lworker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->last_seen = w->idle_since = uv_now(&l->loop);
    w->next = l->workers;
    l->workers = w;
    return w;
}

static void worker_remove(link_server *l, lworker *w)
{
    for (lworker **p = &l->workers; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    if (w->conn)
        w->conn->w = NULL;
    free(w);
}

static void worker_db(link_server *l, lworker *w, const char *state)
{
    gpp_error e = {0};
    if (store_worker_set(l->d->store, w->id, state, w->busy ? w->stage_row : 0,
                         gpp__now_ms(), &e) != 0) {
        char q[300];
        log_warn("worker state not recorded", "worker=%s error=%s", w->id,
                 log_quote(e.message, q, sizeof q));
    }
}

static const char *worker_state(const lworker *w)
{
    return w->draining ? "draining" : w->busy ? "busy" : "idle";
}

/* The store could not write (disk full, database locked, I/O error): the
 * change was rolled back and may be tried again later. */
static bool storage_down(int rc, const gpp_error *e)
{
    return rc == GPP_EUNAVAIL || (rc != 0 && strcmp(e->code, "unavailable") == 0);
}

/* The worker no longer holds a stage. */
static void worker_free_stage(link_server *l, lworker *w)
{
    w->busy = false;
    w->running = false;
    w->cancel_sent = false;
    w->stage_id[0] = '\0';
    w->idle_since = uv_now(&l->loop);
    worker_db(l, w, w->conn ? worker_state(w) : "gone");
    sched_soon(l);
}

/* ---- output ------------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    wreq *r = (wreq *)req;
    lconn *c = r->c;
    c->out_bytes -= r->len;
    free(r);
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_close(c, uv_strerror(status));
        return;
    }
    if (!c->closing)
        fetch_pump(c);
}

/* Queue len bytes (copied) for the connection. */
static int conn_write(lconn *c, const void *data, size_t len)
{
    if (c->closing)
        return GPP_EIO;
    wreq *r = malloc(sizeof *r + len);
    if (!r)
        return GPP_ENOMEM;
    r->c = c;
    r->len = len;
    memcpy(r->data, data, len);
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len);
    int rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(r);
        return GPP_EIO;
    }
    c->out_bytes += len;
    return 0;
}

static int conn_send(lconn *c, const gpp_msg *m)
{
    gpp_buf out = {0};
    gpp_error e = {0};
    int rc = gpp_msg_encode(&out, m, &e);
    if (rc == 0)
        rc = conn_write(c, out.data, out.len);
    else
        log_error("cannot encode a message", "type=%s error=%s",
                  gpp_msg_type_name(m->type), e.message);
    gpp_buf_free(&out);
    return rc;
}

static void on_conn_closed(uv_handle_t *h)
{
    lconn *c = h->data;
    link_server *l = c->l;
    for (lconn **p = &l->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    gpp_decoder_free(&c->dec);
    artifacts_writer_abort(c->up);
    for (size_t i = 0; i < c->n_fetch; i++) {
        if (c->fetch[i].fd >= 0)
            close(c->fetch[i].fd);
        free(c->fetch[i].path);
    }
    free(c);
}

/* The worker's connection is gone: it keeps its stage for the grace window
 * unless it said bye (then the stage goes back to the queue at once). */
static void worker_disconnected(link_server *l, lworker *w, bool graceful)
{
    w->conn = NULL;
    if (l->stopping)
        return;                        /* keep the stage: it re-attaches after the restart */
    if (!w->busy) {
        worker_db(l, w, "gone");
        log_info("worker left", "worker=%s", w->id);
        worker_remove(l, w);
        return;
    }
    gpp_error e = {0};
    if (graceful && storage_down(sched_stage_requeue(l->sched, w->job_seq, w->idx, w->attempt,
                                                     "worker left", &e), &e)) {
        char q[600];
        log_warn("stage not requeued (storage unavailable); it is lost after the grace window",
                 "worker=%s stage=%s error=%s", w->id, w->stage_id,
                 log_quote(e.message, q, sizeof q));
        graceful = false;
    }
    if (graceful) {
        log_info("worker left holding a stage; it goes back to the queue", "worker=%s stage=%s",
                 w->id, w->stage_id);
        w->busy = false;
        worker_db(l, w, "gone");
        worker_remove(l, w);
        sched_soon(l);
        return;
    }
    log_warn("worker disconnected; it keeps its stage for the grace window",
             "worker=%s stage=%s grace_s=%d", w->id, w->stage_id, l->grace_s);
}

static void conn_close(lconn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    lworker *w = c->w;
    if (why)
        log_debug("worker connection closed", "peer=%s worker=%s why=%s", c->peer,
                  w ? w->id : "-", why);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->w = NULL;
    if (w && w->conn == c)
        worker_disconnected(c->l, w, c->bye);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* A peer broke the protocol: log it, say bye (best effort), close this
 * connection only. */
static void conn_violation(lconn *c, const char *what, const char *detail)
{
    char q[600];
    log_warn("worker connection refused", "peer=%s worker=%s what=%s detail=%s", c->peer,
             c->w ? c->w->id : "-", what, log_quote(detail ? detail : "", q, sizeof q));
    gpp_msg m = {.type = GPP_MSG_BYE, .bye = {.reason = what}};
    gpp_buf out = {0};
    if (!c->closing && gpp_msg_encode(&out, &m, NULL) == 0) {
        uv_buf_t b = uv_buf_init((char *)out.data, (unsigned)out.len);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    gpp_buf_free(&out);
    conn_close(c, what);
}

/* A message whose effect could not be stored: acknowledge nothing and close
 * the connection.  The worker keeps its stage for the grace window,
 * reconnects with back-off, re-attaches and sends what was not confirmed
 * (metric batches not acked, a result not confirmed by a pong) again. */
static void conn_store_down(lconn *c, const char *what, const gpp_error *e)
{
    char q[600];
    log_warn("storage unavailable; closing the worker connection", "worker=%s what=%s error=%s",
             c->w ? c->w->id : "-", what, log_quote(e->message, q, sizeof q));
    conn_close(c, "storage unavailable");
}

/* ---- fetch: blobs to the worker -------------------------------------------------- */

static void fetch_pop(lconn *c)
{
    if (c->fetch[0].fd >= 0)
        close(c->fetch[0].fd);
    free(c->fetch[0].path);
    memmove(&c->fetch[0], &c->fetch[1], (c->n_fetch - 1) * sizeof c->fetch[0]);
    c->n_fetch--;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

/* Send blob frames while little output is queued (one chunk read per
 * frame: the loop never reads a whole file at once). */
static void fetch_pump(lconn *c)
{
    while (!c->closing && c->n_fetch > 0 && c->out_bytes < LINK_OUT_HIGH) {
        fetch_item *f = &c->fetch[0];
        if (f->fd < 0) {
            struct stat st;
            f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
            if (f->fd < 0 || fstat(f->fd, &st) != 0) {
                char q[4200];
                log_warn("cannot read a blob a worker asked for", "path=%s error=%s",
                         log_quote(f->path, q, sizeof q), strerror(errno));
                conn_close(c, "blob unreadable");
                return;
            }
            f->total = (uint64_t)st.st_size;
            f->off = 0;
        }
        uint64_t left = f->total - f->off;
        size_t n = left > GPP_BLOB_CHUNK ? GPP_BLOB_CHUNK : (size_t)left;
        size_t len = GPP_FRAME_HEADER + GPP_BLOB_HEADER + n;
        wreq *r = malloc(sizeof *r + len);
        if (!r) {
            conn_close(c, "out of memory");
            return;
        }
        uint8_t *p = r->data;
        uint32_t L = (uint32_t)(GPP_BLOB_HEADER + n);
        p[0] = (uint8_t)(L >> 24);
        p[1] = (uint8_t)(L >> 16);
        p[2] = (uint8_t)(L >> 8);
        p[3] = (uint8_t)L;
        p[4] = GPP_MSG_BLOB;
        memcpy(p + 5, f->sha, GPP_SHA256_LEN);
        put_be64(p + 5 + 32, f->off);
        put_be64(p + 5 + 40, f->total);
        size_t got = 0;
        while (got < n) {
            ssize_t k = pread(f->fd, p + 5 + 48 + got, n - got, (off_t)(f->off + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                free(r);
                conn_close(c, "blob read failed");
                return;
            }
            got += (size_t)k;
        }
        r->c = c;
        r->len = len;
        uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len);
        if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
            free(r);
            conn_close(c, "write failed");
            return;
        }
        c->out_bytes += len;
        f->off += n;
        if (f->off >= f->total)
            fetch_pop(c);
    }
}

static void on_fetch(lconn *c, const gpp_msg_fetch *m)
{
    link_server *l = c->l;
    char path[PATH_MAX];
    char *p = NULL;
    if (artifacts_exists(l->d->artifacts, m->sha256) == 1 &&
        artifacts_path(l->d->artifacts, m->sha256, path, sizeof path) == 0) {
        p = strdup(path);
    } else {
        int64_t size = 0;
        if (store_dataset_file_by_sha(l->d->store, m->sha256, &p, &size, NULL) != 0)
            p = NULL;
    }
    if (!p) {
        conn_violation(c, "unknown_blob", m->sha256);
        return;
    }
    if (c->n_fetch == LINK_FETCH_MAX) {
        free(p);
        conn_violation(c, "too_many_fetches", m->sha256);
        return;
    }
    fetch_item *f = &c->fetch[c->n_fetch++];
    memset(f, 0, sizeof *f);
    gpp_sha256_from_hex(m->sha256, f->sha);
    f->path = p;
    f->fd = -1;
    fetch_pump(c);
}

/* ---- blob: an upload from the worker --------------------------------------------- */

static void on_blob(lconn *c, const gpp_msg_blob *b)
{
    link_server *l = c->l;
    gpp_error e = {0};
    bool same = (c->up || c->up_skip) && memcmp(c->up_sha, b->sha256, GPP_SHA256_LEN) == 0 &&
                c->up_total == b->total;
    if (!same) {
        if (b->offset != 0) {
            conn_violation(c, "malformed", "a blob must start at offset 0");
            return;
        }
        if (b->total > LINK_UPLOAD_MAX) {
            conn_violation(c, "too_large", "blob over the upload limit");
            return;
        }
        artifacts_writer_abort(c->up);
        c->up = NULL;
        memcpy(c->up_sha, b->sha256, GPP_SHA256_LEN);
        c->up_total = b->total;
        c->up_off = 0;
        char hex[65];
        gpp_sha256_hex(b->sha256, hex);
        c->up_skip = artifacts_exists(l->d->artifacts, hex) == 1;
        if (!c->up_skip && artifacts_writer_begin(l->d->artifacts, &c->up, &e) != 0) {
            log_error("cannot store an upload", "error=%s", e.message);
            conn_close(c, "upload failed");
            return;
        }
    }
    if (b->offset != c->up_off) {
        conn_violation(c, "malformed", "blob chunks out of order");
        return;
    }
    if (c->up && artifacts_writer_append(c->up, b->data, b->len, &e) != 0) {
        log_error("cannot store an upload", "error=%s", e.message);
        conn_close(c, "upload failed");
        return;
    }
    c->up_off += b->len;
    if (c->up_off < c->up_total)
        return;
    char hex[65];
    gpp_sha256_hex(c->up_sha, hex);
    if (c->up_skip) {
        c->up_skip = false;
        /* the artifact existed: its file was checked when it was written */
        return;
    }
    artifacts_writer *w = c->up;
    c->up = NULL;
    if (artifacts_writer_commit(w, hex, NULL, NULL, &e) != 0) {
        if (e.code[0] && strcmp(e.code, "checksum_mismatch") == 0)
            conn_violation(c, "checksum_mismatch", e.message);
        else
            conn_close(c, e.message);
        return;
    }
    log_debug("blob received", "worker=%s sha256=%s bytes=%llu", c->w ? c->w->id : "-", hex,
              (unsigned long long)c->up_total);
    c->up_total = 0;
    memset(c->up_sha, 0, sizeof c->up_sha);
}

/* ---- the stage a connection holds ---------------------------------------------- */

static bool holds(const lconn *c, const char *stage_id, int attempt)
{
    const lworker *w = c->w;
    return w && w->busy && stage_id && strcmp(w->stage_id, stage_id) == 0 &&
           w->attempt == attempt;
}

static void mark_running(link_server *l, lworker *w)
{
    if (w->running || w->cancel_sent)
        return;
    w->running = true;
    store_stage_change ch = {.state = "running", .expect_attempt = w->attempt,
                             .reason = NULL, .progress = -1};
    gpp_error e = {0};
    if (store_stage_update(l->d->store, w->job_seq, w->idx, &ch, NULL, &e) != 0)
        log_debug("stage not marked running", "stage=%s error=%s", w->stage_id, e.message);
}

static void on_metrics(lconn *c, const gpp_msg_metrics *m)
{
    link_server *l = c->l;
    if (!holds(c, m->stage_id, m->attempt)) {
        conn_violation(c, "not_held", "metrics for a stage this connection does not hold");
        return;
    }
    lworker *w = c->w;
    mark_running(l, w);
    store_metric_point *p = malloc(m->n_points * sizeof *p);
    if (!p) {
        conn_close(c, "out of memory");
        return;
    }
    for (size_t i = 0; i < m->n_points; i++) {
        p[i] = (store_metric_point){.stage_idx = w->idx, .attempt = w->attempt,
                                    .iteration = m->points[i].iteration,
                                    .name = m->points[i].name, .value = m->points[i].value,
                                    .time = m->points[i].time_ms};
    }
    /* the event: the newest point of each name (a few events per second per job) */
    gpp__buf ev = {0};
    gpp__buf_puts(&ev, "{\"job\":");
    gpp__buf_json_str(&ev, w->job_id);
    gpp__buf_printf(&ev, ",\"stage\":%d,\"attempt\":%d,\"points\":[", w->idx, w->attempt);
    int shown = 0;
    for (size_t i = m->n_points; i-- > 0 && shown < 64;) {
        bool later = false;
        for (size_t k = i + 1; k < m->n_points && !later; k++)
            later = strcmp(m->points[k].name, m->points[i].name) == 0;
        if (later)
            continue;
        gpp__buf_puts(&ev, shown ? ",{\"name\":" : "{\"name\":");
        gpp__buf_json_str(&ev, m->points[i].name);
        gpp__buf_printf(&ev, ",\"iteration\":%lld,\"value\":",
                        (long long)m->points[i].iteration);
        gpp__buf_json_num(&ev, m->points[i].value);
        gpp__buf_puts(&ev, "}");
        shown++;
    }
    gpp__buf_puts(&ev, "]}");
    char *evdata = gpp__buf_take(&ev, NULL);
    gpp_error e = {0};
    int rc = store_metrics_ingest(l->d->store, w->job_seq, p, m->n_points, evdata, NULL, &e);
    free(evdata);
    free(p);
    if (rc != 0) {
        if (strcmp(e.code, "invalid_argument") == 0) {
            conn_violation(c, "malformed", e.message);
        } else {
            /* not durable: no ack, and nothing after it may be taken (a result
             * must not overtake its metrics): close; the worker reconnects,
             * re-attaches and sends the batch again */
            conn_store_down(c, "metrics not stored", &e);
        }
        return;
    }
    gpp_msg ack = {.type = GPP_MSG_ACK,
                   .ack = {.stage_id = m->stage_id, .attempt = m->attempt, .seq = m->seq}};
    conn_send(c, &ack);
}

static void on_log(lconn *c, const gpp_msg_log *m)
{
    link_server *l = c->l;
    lworker *w = c->w;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const char *level = (int)m->level >= 0 && m->level <= 3 ? levels[m->level] : "info";
    char source[GPP_PROTO_ID_MAX + 16];
    snprintf(source, sizeof source, "worker:%s", w->id);
    if (m->stage_id) {
        if (!holds(c, m->stage_id, m->attempt))
            return;                    /* a line about a stage it no longer holds */
        gpp_error e = {0};
        store_log_event(l->d->store, w->job_seq, w->job_id, w->idx, level, source, m->line, &e);
        return;
    }
    char q[4200];
    log_info("worker log", "worker=%s level=%s line=%s", w->id, level,
             log_quote(m->line, q, sizeof q));
}

static void on_result(lconn *c, const gpp_msg_result *m)
{
    link_server *l = c->l;
    if (!holds(c, m->stage_id, m->attempt)) {
        conn_violation(c, "not_held", "a result for a stage this connection does not hold");
        return;
    }
    char path[PATH_MAX];
    struct stat st;
    if (artifacts_path(l->d->artifacts, m->output.sha256, path, sizeof path) != 0 ||
        stat(path, &st) != 0 || (int64_t)st.st_size != m->output.size) {
        conn_violation(c, "not_uploaded", "a result whose output was not uploaded");
        return;
    }
    lworker *w = c->w;
    gpp_error e = {0};
    int rc = sched_stage_succeeded(l->sched, w->job_seq, w->idx, w->attempt, m->output.sha256,
                                   m->output.size, m->summary, &e);
    if (storage_down(rc, &e)) {
        /* not recorded: the worker still holds the stage and sends the
         * result again after it re-attaches (no pong confirmed it) */
        conn_store_down(c, "result not stored", &e);
        return;
    }
    if (rc != 0)
        log_info("result not taken", "worker=%s stage=%s attempt=%d why=%s", w->id,
                 w->stage_id, w->attempt, e.message);
    else
        log_info("stage succeeded", "worker=%s stage=%s attempt=%d", w->id, w->stage_id,
                 w->attempt);
    worker_free_stage(l, w);
}

static void on_fail(lconn *c, const gpp_msg_fail *m)
{
    link_server *l = c->l;
    if (!holds(c, m->stage_id, m->attempt)) {
        conn_violation(c, "not_held", "a failure for a stage this connection does not hold");
        return;
    }
    lworker *w = c->w;
    gpp_error e = {0};
    char q[4200];
    log_info("stage failed", "worker=%s stage=%s attempt=%d class=%s reason=%s", w->id,
             w->stage_id, w->attempt, gpp_proto_fail_class_name((int)m->cls),
             log_quote(m->reason, q, sizeof q));
    int rc = sched_stage_failed(l->sched, w->job_seq, w->idx, w->attempt, m->cls,
                                m->retryable != 0, m->reason, &e);
    if (storage_down(rc, &e)) {
        conn_store_down(c, "failure not stored", &e);
        return;
    }
    if (rc != 0)
        log_debug("failure not recorded", "stage=%s why=%s", w->stage_id, e.message);
    worker_free_stage(l, w);
}

static void on_ping(lconn *c, const gpp_msg_ping *m, bool draining)
{
    link_server *l = c->l;
    lworker *w = c->w;
    if (draining && !w->draining) {
        /* the worker drains on its own (SIGTERM, SIGINT): assign it nothing */
        w->draining = true;
        worker_db(l, w, "draining");
        log_info("worker is draining", "worker=%s", w->id);
    }
    gpp_msg pong = {.type = GPP_MSG_PONG, .pong = {.time_ms = gpp__now_ms()}};
    conn_send(c, &pong);
    uint64_t now = uv_now(&l->loop);
    if (now - w->seen_written >= LINK_SEEN_WRITE_MS) {
        w->seen_written = now;
        store_worker_set(l->d->store, w->id, NULL, -1, gpp__now_ms(), NULL);
    }
    if (!m->stage_id && w->busy && w->cancel_sent) {
        /* told to cancel, it runs nothing any more (it dropped the stage) */
        worker_free_stage(l, w);
        return;
    }
    if (m->stage_id && holds(c, m->stage_id, m->attempt)) {
        mark_running(l, w);
        if (m->has_progress && now - w->progress_written >= LINK_PROGRESS_WRITE_MS &&
            (m->progress != w->progress)) {
            w->progress = m->progress;
            w->progress_written = now;
            store_stage_progress(l->d->store, w->job_seq, w->idx, w->attempt, m->progress, NULL);
        }
    }
}

/* ---- hello ----------------------------------------------------------------------- */

static cJSON *devices_json(const gpp_msg_hello *h)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < h->n_devices; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "kind", gpp_proto_device_kind_name((int)h->devices[i].kind));
        cJSON_AddNumberToObject(o, "index", h->devices[i].index);
        cJSON_AddStringToObject(o, "name", h->devices[i].name);
        cJSON_AddNumberToObject(o, "memory_mb", (double)h->devices[i].memory_mb);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void on_hello(lconn *c, const gpp_msg_hello *h)
{
    link_server *l = c->l;
    /* the token: an active worker token, looked up by its hash */
    uint8_t hash[32];
    size_t tlen = strlen(h->token);
    token_hash(h->token, tlen, hash);
    store_token t;
    gpp_error e = {0};
    int rc = token_check(h->token, tlen) ? store_token_by_hash(l->d->store, hash, &t, &e)
                                         : GPP_ENOTFOUND;
    if (rc != 0 || t.revoked_at || strcmp(t.role, "worker") != 0) {
        conn_violation(c, "unauthenticated", rc == 0 ? "not an active worker token"
                                                     : "unknown token");
        return;
    }
    /* the worker: a known one coming back, or a new id */
    lworker *w = h->worker_id ? worker_find(l, h->worker_id) : NULL;
    if (w && w->conn && w->conn != c) {
        lconn *old = w->conn;
        old->w = NULL;                 /* superseded: its close changes nothing */
        w->conn = NULL;
        conn_close(old, "superseded by a new connection");
    }
    if (!w) {
        char id[GPP_PROTO_ID_MAX + 1];
        if (h->worker_id) {
            snprintf(id, sizeof id, "%s", h->worker_id);
        } else if (gpp__random_id("w", 10, id, sizeof id) != 0) {
            conn_close(c, "no randomness");
            return;
        }
        w = worker_new(l, id);
        if (!w) {
            conn_close(c, "out of memory");
            return;
        }
    }
    w->conn = c;
    c->w = w;
    c->hello_done = true;
    c->dec.max_payload = GPP_FRAME_MAX;
    w->last_seen = uv_now(&l->loop);
    snprintf(w->name, sizeof w->name, "%s", h->name);
    w->threads = h->threads;
    w->cpu = w->gpu = false;
    for (size_t i = 0; i < h->n_devices; i++) {
        if (h->devices[i].kind == GPP_PROTO_DEV_CUDA)
            w->gpu = true;
        else
            w->cpu = true;
    }
    w->n_labels = h->n_labels;
    for (size_t i = 0; i < h->n_labels; i++) {
        snprintf(w->label_k[i], sizeof w->label_k[i], "%s", h->labels[i].key);
        snprintf(w->label_v[i], sizeof w->label_v[i], "%s", h->labels[i].value);
        w->label_kp[i] = w->label_k[i];
        w->label_vp[i] = w->label_v[i];
    }
    /* the stage it says it still runs */
    const char *cancel_id = NULL;
    int cancel_attempt = 0;
    if (h->running_stage_id) {
        if (w->busy && strcmp(w->stage_id, h->running_stage_id) == 0 &&
            w->attempt == h->running_attempt && !w->cancel_sent) {
            log_info("worker re-attached", "worker=%s stage=%s attempt=%d", w->id, w->stage_id,
                     w->attempt);
            w->lost_pending = false;
        } else {
            cancel_id = h->running_stage_id;
            cancel_attempt = h->running_attempt;
        }
    }
    if (w->busy && (!h->running_stage_id || cancel_id)) {
        /* it came back without the stage it held (a restarted process) */
        if (!w->cancel_sent) {
            gpp_error le = {0};
            int lrc = sched_stage_lost(l->sched, w->job_seq, w->idx, w->attempt,
                                       "the worker came back without its stage", &le);
            if (storage_down(lrc, &le)) {
                conn_store_down(c, "lost stage not requeued", &le);
                return;
            }
        }
        w->busy = false;
        w->running = false;
        w->cancel_sent = false;
        sched_soon(l);
    }
    cJSON *dev = devices_json(h);
    cJSON *lab = cJSON_CreateObject();
    for (size_t i = 0; i < h->n_labels; i++)
        cJSON_AddStringToObject(lab, h->labels[i].key, h->labels[i].value);
    char *devs = cJSON_PrintUnformatted(dev);
    char *labs = cJSON_PrintUnformatted(lab);
    cJSON_Delete(dev);
    cJSON_Delete(lab);
    if (store_worker_upsert(l->d->store, w->id, w->name, c->peer, devs, w->threads, labs,
                            worker_state(w), w->busy ? w->stage_row : 0, &e) != 0)
        log_warn("worker not recorded", "worker=%s error=%s", w->id, e.message);
    free(devs);
    free(labs);
    w->seen_written = uv_now(&l->loop);
    if (!w->busy)
        w->idle_since = uv_now(&l->loop);
    gpp_msg wel = {.type = GPP_MSG_WELCOME,
                   .welcome = {.proto = GPP_PROTO_VERSION, .worker_id = w->id,
                               .heartbeat_ms = l->heartbeat_ms, .grace_s = l->grace_s,
                               .max_frame = GPP_FRAME_MAX}};
    conn_send(c, &wel);
    if (cancel_id) {
        gpp_msg cm = {.type = GPP_MSG_CANCEL,
                      .cancel = {.stage_id = cancel_id, .attempt = cancel_attempt}};
        conn_send(c, &cm);
    }
    if (w->draining) {
        gpp_msg dm = {.type = GPP_MSG_DRAIN};
        conn_send(c, &dm);
    }
    char q[300];
    log_info("worker connected", "worker=%s name=%s peer=%s threads=%d devices=%s labels=%zu"
             " cached=%zu", w->id, log_quote(w->name, q, sizeof q), c->peer, w->threads,
             w->gpu ? "gpu" : "cpu", w->n_labels, h->n_cached);
    sched_soon(l);
}

/* ---- frames ---------------------------------------------------------------------- */

static void on_frame(lconn *c, const gpp_frame *f)
{
    gpp_msg m;
    gpp_error e = {0};
    int rc = gpp_msg_parse(f, &m, &e);
    if (rc != 0) {
        char what[300];
        snprintf(what, sizeof what, "%.200s%s%.64s", e.message, e.field[0] ? " field=" : "",
                 e.field);
        conn_violation(c, e.code[0] ? e.code : "malformed", what);
        return;
    }
    if (!c->hello_done) {
        if (m.type == GPP_MSG_HELLO)
            on_hello(c, &m.hello);
        else
            conn_violation(c, "malformed", "the first frame must be hello");
        gpp_msg_free(&m);
        return;
    }
    if (c->w)
        c->w->last_seen = uv_now(&c->l->loop);
    switch (m.type) {
    case GPP_MSG_FETCH: on_fetch(c, &m.fetch); break;
    case GPP_MSG_BLOB: on_blob(c, &m.blob); break;
    case GPP_MSG_METRICS: on_metrics(c, &m.metrics); break;
    case GPP_MSG_LOG: on_log(c, &m.log); break;
    case GPP_MSG_RESULT: on_result(c, &m.result); break;
    case GPP_MSG_FAIL: on_fail(c, &m.fail); break;
    case GPP_MSG_PING: {
        /* extension field "draining": true (worker_link.h) */
        bool draining = f->len > 10 && memmem(f->payload, f->len, "\"draining\"", 10);
        if (draining) {
            cJSON *o = cJSON_ParseWithLength((const char *)f->payload, f->len);
            draining = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "draining"));
            cJSON_Delete(o);
        }
        on_ping(c, &m.ping, draining);
        break;
    }
    case GPP_MSG_PONG: break;
    case GPP_MSG_BYE:
        c->bye = true;
        conn_close(c, "bye");
        break;
    default:
        conn_violation(c, "unexpected_type", gpp_msg_type_name(m.type));
        break;
    }
    gpp_msg_free(&m);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    lconn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    lconn *c = s->data;
    (void)buf;
    if (n < 0) {
        conn_close(c, n == UV_EOF ? "end of stream" : uv_strerror((int)n));
        return;
    }
    if (n == 0 || c->closing)
        return;
    gpp_error e = {0};
    if (gpp_decoder_feed(&c->dec, c->rbuf, (size_t)n, &e) != 0) {
        conn_violation(c, e.code[0] ? e.code : "malformed", e.message);
        return;
    }
    gpp_frame f;
    int rc;
    while (!c->closing && (rc = gpp_decoder_next(&c->dec, &f, &e)) == 1)
        on_frame(c, &f);
    if (!c->closing && rc < 0)
        conn_violation(c, e.code[0] ? e.code : "malformed", e.message);
}

static void on_connection(uv_stream_t *server, int status)
{
    link_server *l = server->data;
    if (status < 0 || l->stopping)
        return;
    lconn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->l = l;
    c->tcp.data = c;
    gpp_decoder_init(&c->dec, LINK_HELLO_MAX);
    uv_tcp_init(&l->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        c->next = l->conns;
        l->conns = c;
        return;
    }
    c->next = l->conns;
    l->conns = c;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int len = sizeof sa;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0) {
        char host[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&sa;
            uv_ip4_name(a, host, sizeof host);
            port = ntohs(a->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
            uv_ip6_name(a, host, sizeof host);
            port = ntohs(a->sin6_port);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the scheduler on the loop ------------------------------------------------------ */

static int send_assign(void *user, sched_worker *sw, const sched_assignment *a)
{
    link_server *l = user;
    lworker *w = sw->user;
    w->busy = true;
    w->running = false;
    w->cancel_sent = false;
    w->job_seq = a->job_seq;
    snprintf(w->job_id, sizeof w->job_id, "%s", a->job_id);
    w->idx = a->idx;
    w->attempt = a->attempt;
    w->stage_row = a->stage_row;
    w->progress = 0;
    w->progress_written = 0;
    snprintf(w->stage_id, sizeof w->stage_id, "%s.%d", a->job_id, a->idx);
    w->last_seen = uv_now(&l->loop);   /* the lease starts with the assignment */
    gpp_proto_stage_kind kind = GPP_PROTO_STAGE_TRAIN;
    static const char *const kinds[] = {"train", "grow", "push", "prune", "finetune", "baseline"};
    for (int i = 0; i < 6; i++)
        if (strcmp(a->kind, kinds[i]) == 0)
            kind = (gpp_proto_stage_kind)i;
    gpp_msg m = {.type = GPP_MSG_ASSIGN};
    m.assign.job_id = a->job_id;
    m.assign.stage_id = w->stage_id;
    m.assign.attempt = a->attempt;
    m.assign.kind = kind;
    m.assign.index = a->idx;
    m.assign.spec = a->spec;
    m.assign.input.sha256 = a->input_sha[0] ? a->input_sha : NULL;
    m.assign.input.size = a->input_size;
    m.assign.dataset_name = a->ds_name;
    m.assign.dataset_format = a->ds_format;
    m.assign.n_files = a->n_files;
    for (size_t i = 0; i < a->n_files; i++)
        m.assign.files[i] = a->files[i];
    int rc = w->conn ? conn_send(w->conn, &m) : GPP_EIO;
    /* bookkeeping (an fsync'ed commit) after the frame is on its way */
    worker_db(l, w, worker_state(w));
    log_info("stage assigned", "worker=%s stage=%s kind=%s attempt=%d", w->id, w->stage_id,
             a->kind, a->attempt);
    return rc;
}

/* Idle workers first, longest idle first; then the busy ones. */
static int idle_cmp(const void *a, const void *b)
{
    const sched_worker *p = a, *q = b;
    if (p->busy != q->busy)
        return p->busy ? 1 : -1;
    const lworker *x = p->user, *y = q->user;
    return x->idle_since < y->idle_since ? -1 : x->idle_since > y->idle_since;
}

static void run_pass(link_server *l)
{
    if (l->stopping)
        return;
    size_t n = 0;
    for (lworker *w = l->workers; w; w = w->next)
        n += w->conn && w->conn->hello_done && !w->draining;
    sched_worker *ws = calloc(n ? n : 1, sizeof *ws);
    if (!ws)
        return;
    /* busy workers only tell the waiting stages why they wait */
    size_t k = 0;
    for (lworker *w = l->workers; w && k < n; w = w->next) {
        if (!(w->conn && w->conn->hello_done && !w->draining))
            continue;
        ws[k++] = (sched_worker){.id = w->id, .busy = w->busy, .cpu = w->cpu, .gpu = w->gpu,
                                 .n_labels = w->n_labels, .label_keys = w->label_kp,
                                 .label_values = w->label_vp, .user = w};
    }
    qsort(ws, k, sizeof *ws, idle_cmp);
    int rc = sched_pass(l->sched, ws, k, send_assign, l);
    if (rc < 0)
        log_warn("scheduler pass failed", "rc=%d", rc);
    free(ws);
}

static void on_soon(uv_timer_t *t)
{
    run_pass(t->data);
}

static void sched_soon(link_server *l)
{
    if (!l->stopping && !uv_is_active((uv_handle_t *)&l->soon))
        uv_timer_start(&l->soon, on_soon, 0, 0);
}

static void sched_wake(void *user)
{
    sched_soon(user);
}

/* ---- housekeeping: leases ------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    link_server *l = t->data;
    uint64_t now = uv_now(&l->loop);
    uint64_t grace = (uint64_t)l->grace_s * 1000;
    lworker *next;
    for (lworker *w = l->workers; w; w = next) {
        next = w->next;
        if (now - w->last_seen <= grace)
            continue;
        if (w->conn) {
            lconn *c = w->conn;
            log_warn("worker lost: no heartbeat within the grace window", "worker=%s grace_s=%d",
                     w->id, l->grace_s);
            c->w = NULL;
            w->conn = NULL;
            conn_violation(c, "lost", "no heartbeat within the grace window");
        }
        if (w->busy) {
            gpp_error e = {0};
            if (!w->lost_pending)
                log_warn("stage lost with its worker; it goes back to the queue",
                         "worker=%s stage=%s attempt=%d", w->id, w->stage_id, w->attempt);
            int rc = sched_stage_lost(l->sched, w->job_seq, w->idx, w->attempt,
                                      "no heartbeat within the grace window", &e);
            if (storage_down(rc, &e)) {
                /* keep the worker (and so the stage's fencing) until the store
                 * takes the change: tried again on every tick */
                if (!w->lost_pending) {
                    char q[600];
                    log_warn("lost stage not requeued yet (storage unavailable); retrying",
                             "stage=%s error=%s", w->stage_id, log_quote(e.message, q, sizeof q));
                }
                w->lost_pending = true;
                continue;
            }
            if (rc != 0)
                log_debug("lost stage not requeued", "stage=%s why=%s", w->stage_id, e.message);
            w->busy = false;
        }
        store_worker_set(l->d->store, w->id, "lost", 0, 0, NULL);
        worker_remove(l, w);
    }
    run_pass(l);
}

/* ---- commands from other threads ---------------------------------------------------- */

static void post(link_server *l, const link_cmd *cmd)
{
    pthread_mutex_lock(&l->mu);
    bool ok = true;
    if (cmd->type == CMD_KICK) {
        for (size_t i = 0; i < l->n_cmds && ok; i++)
            ok = l->cmds[i].type != CMD_KICK;
    }
    if (ok && l->n_cmds == l->cap_cmds) {
        size_t cap = l->cap_cmds ? l->cap_cmds * 2 : 16;
        link_cmd *nc = realloc(l->cmds, cap * sizeof *nc);
        if (nc) {
            l->cmds = nc;
            l->cap_cmds = cap;
        } else {
            ok = false;
        }
    }
    if (ok)
        l->cmds[l->n_cmds++] = *cmd;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
}

static void do_stop(link_server *l)
{
    l->stopping = true;
    for (lconn *c = l->conns; c; c = c->next) {
        if (c->closing)
            continue;
        gpp_msg m = {.type = GPP_MSG_BYE, .bye = {.reason = "daemon stopping"}};
        gpp_buf out = {0};
        if (gpp_msg_encode(&out, &m, NULL) == 0) {
            uv_buf_t b = uv_buf_init((char *)out.data, (unsigned)out.len);
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        gpp_buf_free(&out);
        conn_close(c, "daemon stopping");
    }
    uv_close((uv_handle_t *)&l->server, NULL);
    uv_close((uv_handle_t *)&l->tick, NULL);
    uv_close((uv_handle_t *)&l->soon, NULL);
    uv_close((uv_handle_t *)&l->async, NULL);
}

static void on_async(uv_async_t *a)
{
    link_server *l = a->data;
    for (;;) {
        link_cmd cmd;
        pthread_mutex_lock(&l->mu);
        bool have = l->n_cmds > 0;
        if (have) {
            cmd = l->cmds[0];
            memmove(&l->cmds[0], &l->cmds[1], (l->n_cmds - 1) * sizeof cmd);
            l->n_cmds--;
        }
        pthread_mutex_unlock(&l->mu);
        if (!have || l->stopping)
            return;
        switch (cmd.type) {
        case CMD_KICK:
            sched_soon(l);
            break;
        case CMD_CANCEL: {
            lworker *next;
            for (lworker *w = l->workers; w; w = next) {
                next = w->next;
                if (!w->busy || w->job_seq != cmd.job_seq)
                    continue;
                if (w->conn) {
                    gpp_msg m = {.type = GPP_MSG_CANCEL,
                                 .cancel = {.stage_id = w->stage_id, .attempt = w->attempt}};
                    conn_send(w->conn, &m);
                    w->cancel_sent = true;
                    log_info("told the worker to cancel", "worker=%s stage=%s", w->id,
                             w->stage_id);
                } else {
                    w->busy = false;   /* if it comes back with the stage it is told to cancel */
                    store_worker_set(l->d->store, w->id, "lost", 0, 0, NULL);
                    worker_remove(l, w);
                }
            }
            break;
        }
        case CMD_DRAIN: {
            lworker *w = worker_find(l, cmd.worker);
            if (w && w->conn) {
                w->draining = true;
                gpp_msg m = {.type = GPP_MSG_DRAIN};
                conn_send(w->conn, &m);
                worker_db(l, w, "draining");
                log_info("worker told to drain", "worker=%s", w->id);
            }
            break;
        }
        case CMD_STOP:
            do_stop(l);
            return;
        }
    }
}

static void loop_main(void *arg)
{
    link_server *l = arg;
    uv_run(&l->loop, UV_RUN_DEFAULT);
}

/* ---- start / stop ---------------------------------------------------------------- */

/* Stages left assigned/running by the previous run: their workers get a
 * fresh lease to re-attach; a stage with no worker goes back to the queue. */
static void reconcile(link_server *l)
{
    gpp_error e = {0};
    store_workers_reset(l->d->store, &e);
    store_active *act = NULL;
    size_t n = 0;
    if (store_stages_active(l->d->store, &act, &n, &e) != 0) {
        log_warn("cannot reconcile running stages", "error=%s", e.message);
        return;
    }
    size_t kept = 0, requeued = 0;
    for (size_t i = 0; i < n; i++) {
        store_active *a = &act[i];
        lworker *w = a->worker_id[0] ? worker_find(l, a->worker_id) : NULL;
        if (a->worker_id[0] && !w)
            w = worker_new(l, a->worker_id);
        if (!w || w->busy) {
            sched_stage_requeue(l->sched, a->job_seq, a->idx, a->attempt, "reconciled", &e);
            requeued++;
            continue;
        }
        w->busy = true;
        w->job_seq = a->job_seq;
        snprintf(w->job_id, sizeof w->job_id, "%s", a->job_id);
        w->idx = a->idx;
        w->attempt = a->attempt;
        w->stage_row = a->stage_id;
        w->running = strcmp(a->state, "running") == 0;
        snprintf(w->stage_id, sizeof w->stage_id, "%s.%d", a->job_id, a->idx);
        kept++;
    }
    free(act);
    if (n)
        log_info("reconciled stages left running", "kept_for_reattach=%zu requeued=%zu"
                 " grace_s=%d", kept, requeued, l->grace_s);
}

int link_start(link_server **out, gppd *d, gpp_error *err)
{
    *out = NULL;
    char host[CONFIG_ADDR_MAX];
    int port;
    if (config_split_addr(d->cfg.worker_listen, host, &port) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "worker-listen",
                             "--worker-listen '%s' is not ADDR:PORT", d->cfg.worker_listen);
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    bool v6 = strchr(host, ':') != NULL;
    if ((v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa)
            : uv_ip4_addr(host, port, (struct sockaddr_in *)&sa)) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "worker-listen",
                             "--worker-listen: '%s' is not a numeric IP address", host);
    link_server *l = calloc(1, sizeof *l);
    if (!l)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    l->d = d;
    l->grace_s = d->cfg.worker_grace > 0 ? d->cfg.worker_grace : 60;
    l->heartbeat_ms = LINK_HEARTBEAT_MS;
    if (l->grace_s < 15)
        l->heartbeat_ms = l->grace_s * 1000 / 3;   /* three pings fit in the grace window */
    pthread_mutex_init(&l->mu, NULL);
    int rc = uv_loop_init(&l->loop);
    if (rc != 0) {
        pthread_mutex_destroy(&l->mu);
        free(l);
        return gpp_error_set(err, GPP_EIO, "internal", "", "uv_loop_init: %s", uv_strerror(rc));
    }
    l->sched = sched_new(d, &l->loop, sched_wake, l);
    uv_tcp_init(&l->loop, &l->server);
    l->server.data = l;
    uv_async_init(&l->loop, &l->async, on_async);
    l->async.data = l;
    uv_timer_init(&l->loop, &l->tick);
    l->tick.data = l;
    uv_timer_init(&l->loop, &l->soon);
    l->soon.data = l;
    rc = l->sched ? uv_tcp_bind(&l->server, (struct sockaddr *)&sa, 0) : UV_ENOMEM;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->server, 128, on_connection);
    if (rc != 0) {
        gpp_error_set(err, GPP_EIO, "io_error", "worker-listen", "cannot listen on %s: %s",
                      d->cfg.worker_listen, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->server, NULL);
        uv_close((uv_handle_t *)&l->async, NULL);
        uv_close((uv_handle_t *)&l->tick, NULL);
        uv_close((uv_handle_t *)&l->soon, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        sched_free(l->sched);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return GPP_EIO;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    l->port = (uint16_t)port;
    if (uv_tcp_getsockname(&l->server, (struct sockaddr *)&bound, &blen) == 0)
        l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    const char *chost = host;
    if (strcmp(host, "0.0.0.0") == 0)
        chost = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        chost = "::1";
    snprintf(l->connect_addr, sizeof l->connect_addr, "%s%s%s:%u", v6 ? "[" : "", chost,
             v6 ? "]" : "", (unsigned)l->port);
    reconcile(l);
    uv_timer_start(&l->tick, on_tick, LINK_TICK_MS, LINK_TICK_MS);
    uv_timer_start(&l->soon, on_soon, 0, 0);
    if (uv_thread_create(&l->thread, loop_main, l) != 0) {
        l->stopping = true;
        do_stop(l);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        sched_free(l->sched);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return gpp_error_set(err, GPP_EIO, "internal", "", "cannot start the link thread");
    }
    l->thread_started = true;
    log_info("worker link listening", "worker=%s%s%s:%u grace_s=%d", v6 ? "[" : "", host,
             v6 ? "]" : "", (unsigned)l->port, l->grace_s);
    *out = l;
    return 0;
}

uint16_t link_port(const link_server *l)
{
    return l ? l->port : 0;
}

void link_connect_addr(const link_server *l, char *buf, size_t n)
{
    snprintf(buf, n, "%s", l ? l->connect_addr : "");
}

void link_stop(link_server *l)
{
    if (!l)
        return;
    link_cmd cmd = {.type = CMD_STOP};
    post(l, &cmd);
    if (l->thread_started)
        uv_thread_join(&l->thread);
    uv_loop_close(&l->loop);
    while (l->workers) {
        lworker *w = l->workers;
        l->workers = w->next;
        free(w);
    }
    sched_free(l->sched);
    free(l->cmds);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void link_kick(link_server *l)
{
    if (!l)
        return;
    link_cmd cmd = {.type = CMD_KICK};
    post(l, &cmd);
}

void link_cancel_job(link_server *l, int64_t job_seq)
{
    if (!l)
        return;
    link_cmd cmd = {.type = CMD_CANCEL, .job_seq = job_seq};
    post(l, &cmd);
}

void link_drain_worker(link_server *l, const char *worker_id)
{
    if (!l || !worker_id)
        return;
    link_cmd cmd = {.type = CMD_DRAIN};
    snprintf(cmd.worker, sizeof cmd.worker, "%s", worker_id);
    post(l, &cmd);
}
