/* daemon/api_events.c - GET /api/v1/jobs/{id}/events (Server-Sent Events),
 * GET /api/v1/jobs/{id}/model (checkpoint download, .gppm or ONNX) and
 * POST /api/v1/workers/{id}/drain.
 *
 * Event streams.  Each event of the job's `events` rows goes out as
 *     id: <events.id>
 *     event: job | stage | progress | metrics | log
 *     data: <the row's JSON>
 * from the Last-Event-ID header (or ?last_event_id=) on, oldest first, so a
 * client that reconnects with the last id it saw misses nothing and gets
 * nothing twice.  Metric events are coalesced by the worker link (the newest
 * point of each name per batch, a few per second per job).  A comment line
 * is sent every 15 s while nothing happens; the stream ends once the job has
 * finished and everything is sent.  A stream with nothing to send does not
 * hold a thread: it is suspended and the hub's pump thread resumes it. */
#include "api_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api_parse.h"
#include "gpp/ckpt.h"
#include "gpp/export.h"
#include "link.h"
#include "log.h"

#define SSE_BATCH 64                   /* events read per refill */

typedef struct sse_stream {
    sse_hub *hub;
    struct MHD_Connection *conn;
    int64_t job_seq;
    int64_t last_id;                   /* the newest event sent */
    bool final_seen;                   /* the job has finished (as far as sent) */
    bool ended;
    char *buf;                         /* bytes to send: buf[off..len) */
    size_t len, off, cap;
    uint64_t last_write;               /* monotonic ms */
    struct sse_stream *next;           /* in hub->waiting while suspended */
} sse_stream;

struct sse_hub {
    gppd *d;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool quit;
    atomic_bool closing;
    sse_stream *waiting;               /* suspended streams */
    int n_streams;
    int64_t seen_global;
    bool new_waiters;
};

static uint64_t mono_ms(void)
{
    return gpp__mono_ns() / 1000000u;
}

/* ---- the pump ------------------------------------------------------------------- */

static void resume_all(sse_hub *h)
{
    while (h->waiting) {
        sse_stream *s = h->waiting;
        h->waiting = s->next;
        s->next = NULL;
        MHD_resume_connection(s->conn);
    }
}

static void *pump(void *arg)
{
    sse_hub *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += API_SSE_PUMP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->quit)
            break;
        if (atomic_load(&h->closing)) {
            resume_all(h);
            continue;
        }
        if (!h->waiting)
            continue;
        int64_t global = store_event_last_id(h->d->store);
        bool check = global != h->seen_global || h->new_waiters;
        h->seen_global = global;
        h->new_waiters = false;
        uint64_t now = mono_ms();
        for (sse_stream **p = &h->waiting; *p;) {
            sse_stream *s = *p;
            bool wake = now - s->last_write >= API_SSE_HEARTBEAT_MS;
            if (!wake && check)
                wake = store_event_last_id_job(h->d->store, s->job_seq) > s->last_id;
            if (wake) {
                *p = s->next;
                s->next = NULL;
                MHD_resume_connection(s->conn);
            } else {
                p = &s->next;
            }
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

sse_hub *api__sse_hub_new(gppd *d)
{
    sse_hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->d = d;
    atomic_init(&h->closing, false);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pthread_create(&h->thread, NULL, pump, h) != 0) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void api__sse_hub_close(sse_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    atomic_store(&h->closing, true);
    resume_all(h);
    pthread_mutex_unlock(&h->mu);
}

void api__sse_hub_free(sse_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->quit = true;
    resume_all(h);
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int api__sse_count(sse_hub *h)
{
    pthread_mutex_lock(&h->mu);
    int n = h->n_streams;
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* ---- one stream ------------------------------------------------------------------- */

static void sse_add(sse_stream *s, const char *text, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, n);
    s->len += n;
}

static bool final_state(const char *data)
{
    cJSON *o = cJSON_Parse(data);
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "state"));
    bool fin = st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                      strcmp(st, "cancelled") == 0);
    cJSON_Delete(o);
    return fin;
}

/* Append the next events of the job; returns how many. */
static size_t sse_fill(sse_stream *s)
{
    store_event *ev = NULL;
    size_t n = 0;
    if (store_events_list(s->hub->d->store, s->job_seq, s->last_id, SSE_BATCH, &ev, &n, NULL) !=
        0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char head[96];
        int hl = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)ev[i].id,
                          ev[i].type);
        sse_add(s, head, (size_t)hl);
        const char *d = ev[i].data ? ev[i].data : "{}";
        /* JSON from the store has no raw newline; be safe anyway */
        for (const char *p = d; *p;) {
            size_t k = strcspn(p, "\r\n");
            sse_add(s, p, k);
            p += k;
            if (*p) {
                sse_add(s, "\ndata: ", 7);
                p += (*p == '\r' && p[1] == '\n') ? 2 : 1;
            }
        }
        sse_add(s, "\n\n", 2);
        s->last_id = ev[i].id;
        if (strcmp(ev[i].type, "job") == 0)
            s->final_seen = final_state(d);
    }
    store_event_free(ev, n);
    return n;
}

static ssize_t sse_copy(sse_stream *s, char *out, size_t max)
{
    size_t n = s->len - s->off;
    if (n > max)
        n = max;
    memcpy(out, s->buf + s->off, n);
    s->off += n;
    if (s->off == s->len)
        s->off = s->len = 0;
    s->last_write = mono_ms();
    return (ssize_t)n;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    sse_stream *s = cls;
    sse_hub *h = s->hub;
    (void)pos;
    if (s->off < s->len)
        return sse_copy(s, out, max);
    if (s->ended || atomic_load(&h->closing))
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (sse_fill(s) > 0 && s->len > 0)
        return sse_copy(s, out, max);
    if (s->final_seen) {
        s->ended = true;
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (mono_ms() - s->last_write >= API_SSE_HEARTBEAT_MS) {
        sse_add(s, ": heartbeat\n\n", 13);
        return sse_copy(s, out, max);
    }
    pthread_mutex_lock(&h->mu);
    if (atomic_load(&h->closing)) {
        pthread_mutex_unlock(&h->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->next = h->waiting;
    h->waiting = s;
    h->new_waiters = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void sse_free(void *cls)
{
    sse_stream *s = cls;
    sse_hub *h = s->hub;
    pthread_mutex_lock(&h->mu);
    for (sse_stream **p = &h->waiting; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    h->n_streams--;
    pthread_mutex_unlock(&h->mu);
    free(s->buf);
    free(s);
}

static const char *query_get(void *ctx, const char *name)
{
    return api__query(ctx, name);
}

/* Reply with a parse error: its status from the return code. */
static enum MHD_Result reply_parse(api_req *r, int rc, const gpp_error *e)
{
    return api__reply_error(r, api_parse_status(rc), e->code, e->field, "%s", e->message);
}

/* Load the job of the path and check the caller may see it (404 otherwise). */
static int visible_job(api_req *r, store_job *j, enum MHD_Result *reply)
{
    gpp_error e = {0};
    int rc = store_job_get(r->d->store, r->params[0], j, &e);
    if (rc == GPP_ENOTFOUND || (rc == 0 && !api__can_see(r, j->owner))) {
        if (rc == 0)
            store_job_clear(j);
        *reply = api__reply_error(r, 404, "not_found", "", "no job '%.64s'", r->params[0]);
        return -1;
    }
    if (rc != 0) {
        *reply = api__reply_gpp(r, &e);
        return -1;
    }
    return 0;
}

enum MHD_Result api__job_events(api_req *r)
{
    enum MHD_Result reply;
    const char *lei = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    int64_t after = 0;
    gpp_error pe = {0};
    int prc = api_parse_event_start(lei, api__query(r, "last_event_id"), &after, &pe);
    if (prc != 0)
        return reply_parse(r, prc, &pe);
    store_job j;
    if (visible_job(r, &j, &reply) != 0)
        return reply;
    sse_hub *h = api__sse(r);
    sse_stream *s = calloc(1, sizeof *s);
    if (!s) {
        store_job_clear(&j);
        return api__reply_error(r, 503, "unavailable", "", "out of memory");
    }
    s->hub = h;
    s->conn = r->conn;
    s->job_seq = j.seq;
    s->last_id = after;
    s->final_seen = strcmp(j.state, "succeeded") == 0 || strcmp(j.state, "failed") == 0 ||
                    strcmp(j.state, "cancelled") == 0;
    s->last_write = mono_ms();
    store_job_clear(&j);
    static const char intro[] = ": gppd event stream\nretry: 2000\n\n";
    sse_add(s, intro, sizeof intro - 1);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_free);
    if (!resp) {
        free(s->buf);
        free(s);
        return MHD_NO;
    }
    pthread_mutex_lock(&h->mu);
    h->n_streams++;                    /* sse_free counts it down */
    pthread_mutex_unlock(&h->mu);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return api__reply_response(r, 200, resp);
}

/* ---- GET /api/v1/jobs/{id}/model ---------------------------------------------------- */

enum MHD_Result api__job_model(api_req *r)
{
    enum MHD_Result reply;
    api_model_query mq;
    gpp_error pe = {0};
    int prc = api_parse_model_query(query_get, r, &mq, &pe);
    if (prc != 0)
        return reply_parse(r, prc, &pe);
    bool onnx = mq.onnx;
    int64_t stage = mq.stage;
    store_job j;
    if (visible_job(r, &j, &reply) != 0)
        return reply;
    store_stage *st = NULL;
    size_t n = 0;
    gpp_error e = {0};
    int rc = store_stage_list(r->d->store, j.seq, &st, &n, &e);
    char job_id[16];
    snprintf(job_id, sizeof job_id, "%s", j.id);
    store_job_clear(&j);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    const store_stage *pick = NULL;
    for (size_t i = 0; i < n; i++) {
        bool good = strcmp(st[i].state, "succeeded") == 0 && st[i].output_sha256;
        if (stage >= 0 ? st[i].idx == stage : good)
            pick = &st[i];
        if (stage >= 0 && pick)
            break;
    }
    if (!pick || strcmp(pick->state, "succeeded") != 0 || !pick->output_sha256) {
        reply = stage >= 0 && pick
                    ? api__reply_error(r, 404, "not_found", "stage",
                                       "stage %lld is %s: it has no checkpoint",
                                       (long long)stage, pick->state)
                : stage >= 0 ? api__reply_error(r, 404, "not_found", "stage",
                                                "job %s has no stage %lld", job_id,
                                                (long long)stage)
                             : api__reply_error(r, 404, "not_found", "",
                                                "job %s has no finished stage yet", job_id);
        store_stage_free(st, n);
        return reply;
    }
    char path[PATH_MAX], fname[128], sha[65];
    snprintf(sha, sizeof sha, "%s", pick->output_sha256);
    snprintf(fname, sizeof fname, "attachment; filename=\"%s-stage-%02d-%s.%s\"", job_id,
             pick->idx, pick->kind, onnx ? "onnx" : "gppm");
    store_stage_free(st, n);
    if (artifacts_path(r->d->artifacts, sha, path, sizeof path) != 0)
        return api__reply_error(r, 500, "internal", "", "bad artifact name");
    struct MHD_Response *resp = NULL;
    if (onnx) {
        gpp_ckpt *ck = NULL;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (gpp_ckpt_read_file(path, &ck, &e) != 0 ||
            gpp_onnx_export_buffer(ck, &buf, &len, &e) != 0) {
            gpp_ckpt_free(ck);
            char q[600];
            log_warn("ONNX export failed", "job=%s sha256=%s error=%s", job_id, sha,
                     log_quote(e.message, q, sizeof q));
            return api__reply_error(r, 422, "invalid_argument", e.field,
                                    "this checkpoint cannot be exported to ONNX: %s", e.message);
        }
        gpp_ckpt_free(ck);
        resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(buf);
            return MHD_NO;
        }
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            if (fd >= 0)
                close(fd);
            return api__reply_error(r, 404, "not_found", "", "the checkpoint file is missing");
        }
        resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
        if (!resp) {
            close(fd);
            return MHD_NO;
        }
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(resp, "Content-Disposition", fname);
    MHD_add_response_header(resp, "X-Checkpoint-Sha256", sha);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return api__reply_response(r, 200, resp);
}

/* ---- POST /api/v1/workers/{id}/drain -------------------------------------------------- */

enum MHD_Result api__worker_drain(api_req *r)
{
    const char *id = r->params[0];
    char state[16];
    gpp_error e = {0};
    int rc = store_worker_state(r->d->store, id, state, &e);
    if (rc == GPP_ENOTFOUND)
        return api__reply_error(r, 404, "not_found", "", "no worker '%.64s'", id);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    if (strcmp(state, "lost") == 0 || strcmp(state, "gone") == 0)
        return api__reply_error(r, 409, "conflict", "", "worker %s is %s: it is not connected",
                                id, state);
    if (strcmp(state, "draining") != 0) {
        link_drain_worker(r->d->link, id);
        store_worker_set(r->d->store, id, "draining", -1, 0, NULL);
        log_info("worker drain requested", "worker=%s by=%s", id, r->who.name);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "state", "draining");
    return api__reply_json(r, 202, o, NULL);
}
