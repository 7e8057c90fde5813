/* daemon/api.c - the HTTP server: MHD set-up, request life cycle, router,
 * auth, replies, and the small endpoints (health, OpenAPI, Prometheus,
 * static files).  Jobs are in api_jobs.c, tokens/data sets/workers in
 * api_admin.c. */
#include "api_internal.h"
#include "api_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "artifacts.h"
#include "gpp_config.h"
#include "log.h"
#include "tokens.h"

/* Limits, so that one client cannot starve the others (issue 6):
 * - at most API_PER_IP_LIMIT connections from one address (more are
 *   accepted and closed at once) and API_CONN_LIMIT in all (fewer when
 *   RLIMIT_NOFILE is lower; past it libmicrohttpd stops accepting and new
 *   connections wait in the listen backlog until a slot frees, which the
 *   deadline below bounds);
 * - a request (request line, headers and body) must arrive whole within
 *   API_REQUEST_DEADLINE_S of the connection's accept or of its previous
 *   reply, or the connection is closed (a 408 when part of a request came):
 *   libmicrohttpd's own timeout counts only idle time, so a client sending a
 *   byte every few seconds (slowloris) would otherwise hold its connection
 *   and a pool slot forever.  The same deadline closes idle keep-alive
 *   connections.  Replies (SSE streams, downloads) are not bound by it;
 *   a reader that stalls is closed after API_CONN_TIMEOUT_S without progress;
 * - API_CONN_MEMORY per connection holds the request line and headers
 *   (larger ones get 431 / 414) and the read/write buffers; bodies are
 *   bounded by API_BODY_MAX.
 * These are constants; daemon/config.c has no HTTP keys yet. */
/* libmicrohttpd's epoll thread pool: 2 per CPU, 4..16.  More threads than
 * cores because requests serialise on the store's mutex: while one thread
 * waits there, the others still serve their connections (on 2 cores, 4
 * threads gave about 1.3x the requests/s of 2 under wrk -c100). */
#define API_THREADS_MIN 4
#define API_THREADS_MAX 16
#define API_CONN_LIMIT 1000
#define API_CONN_TIMEOUT_S 60           /* no progress for this long: closed */
#define API_PER_IP_LIMIT 256
#define API_REQUEST_DEADLINE_S 10       /* a whole request within this */
#define API_REAP_MS 250                 /* how often the deadline is checked */
#define API_CONN_MEMORY (64 * 1024)     /* per connection: headers + buffers */
#define API_TOKEN_CACHE 64              /* verified tokens remembered (hash -> who) */
#define API_TOKEN_TTL_MS 2000           /* longest a remembered token is trusted */
#define API_STOP_WAIT_MS 10000
#define API_DISCARD_MAX (16 * 1024 * 1024) /* body bytes read and dropped before closing */

const double api__lat_bounds[API_LAT_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
};

/* One open connection, for the request deadline. */
typedef struct api_conn {
    struct api_conn *prev, *next;
    int fd;
    atomic_bool receiving;             /* waiting for (the rest of) a request */
    atomic_bool partial;               /* a request line of it has come */
    atomic_uint_fast64_t since_ns;     /* when that wait began (monotonic) */
    atomic_uint_fast32_t deadline_s;   /* this request's deadline; 0: API_REQUEST_DEADLINE_S */
    bool cut;                          /* the reaper shut it down */
    char addr[64];
} api_conn;

/* A token verified against the store, trusted for API_TOKEN_TTL_MS unless a
 * token was revoked since (gen). */
typedef struct tok_entry {
    uint8_t hash[32];
    bool used;
    uint64_t gen, expires_ns;
    int64_t id;
    char name[STORE_NAME_MAX + 1];
    char role[8];
} tok_entry;

struct api {
    gppd *d;
    struct MHD_Daemon *mhd;
    sse_hub *sse;                                    /* event streams */
    uint16_t port;
    atomic_int inflight;                             /* requests not yet completed */
    atomic_uint_fast64_t by_status[500];             /* 100..599 */
    atomic_uint_fast64_t lat[API_LAT_BUCKETS + 1];   /* last: +Inf */
    atomic_uint_fast64_t lat_sum_us, lat_count;
    pthread_mutex_t conns_mu;                        /* conns, stopping */
    pthread_cond_t reaper_cv;
    api_conn *conns;                                 /* every open connection */
    bool stopping;
    pthread_t reaper;
    bool reaper_started;
    atomic_uint_fast64_t slow_closed;                /* cut by the request deadline */
    pthread_mutex_t tok_mu;
    atomic_uint_fast64_t tok_gen;                    /* bumped after each revocation */
    tok_entry tok[API_TOKEN_CACHE];
};

/* ---- the router table ------------------------------------------------------ */

/* The routes themselves (method, pattern, auth, body) are in api_route.c;
 * here each one's handler. */
static const api_handler handlers[API_R_COUNT] = {
    [API_R_HEALTH] = api__health,
    [API_R_OPENAPI] = api__openapi,
    [API_R_JOBS_LIST] = api__jobs_list,
    [API_R_JOBS_SUBMIT] = api__jobs_submit,
    [API_R_JOB_GET] = api__job_get,
    [API_R_JOB_CANCEL] = api__job_cancel,
    [API_R_JOB_RETRY] = api__job_retry,
    [API_R_JOB_METRICS] = api__job_metrics,
    [API_R_JOB_LOGS] = api__job_logs,
    [API_R_JOB_ARCHITECTURE] = api__job_architecture,
    [API_R_JOB_EVENTS] = api__job_events,
    [API_R_JOB_MODEL] = api__job_model,
    [API_R_WORKERS_LIST] = api__workers_list,
    [API_R_WORKER_DRAIN] = api__worker_drain,
    [API_R_MODELS_UPLOAD] = api__models_upload,
    [API_R_MODELS_LIST] = api__models_list,
    [API_R_MODEL_GET] = api__model_get,
    [API_R_MODEL_DELETE] = api__model_delete,
    [API_R_DATASETS_LIST] = api__datasets_list,
    [API_R_DATASETS_REGISTER] = api__datasets_register,
    [API_R_DATASET_GET] = api__dataset_get,
    [API_R_TOKENS_LIST] = api__tokens_list,
    [API_R_TOKENS_ISSUE] = api__tokens_issue,
    [API_R_TOKEN_REVOKE] = api__token_revoke,
    [API_R_PROMETHEUS] = api__prometheus,
    [API_R_STATIC] = api__static,
};

/* ---- replies ----------------------------------------------------------------- */

/* Queue resp with status and count it for /metrics (status, latency up to
 * the moment the reply is ready). */
static enum MHD_Result queue_reply(api_req *r, unsigned status, struct MHD_Response *resp)
{
    r->status = status;
    api *a = r->api;
    if (status >= 100 && status < 600) {
        atomic_fetch_add(&a->by_status[status - 100], 1);
        uint64_t us = (gpp__mono_ns() - r->t0) / 1000;
        double sec = (double)us / 1e6;
        int b = 0;
        while (b < API_LAT_BUCKETS && sec > api__lat_bounds[b])
            b++;
        atomic_fetch_add(&a->lat[b], 1);
        atomic_fetch_add(&a->lat_sum_us, us);
        atomic_fetch_add(&a->lat_count, 1);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result api__reply_response(api_req *r, unsigned status, struct MHD_Response *resp)
{
    return queue_reply(r, status, resp);
}

sse_hub *api__sse(api_req *r)
{
    return r->api->sse;
}

enum MHD_Result api__reply(api_req *r, unsigned status, const char *ctype, char *body,
                           size_t len, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (void *)"",
                                        body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    return queue_reply(r, status, resp);
}

/* A whole number as JSON, without printf (the common case in replies). */
static void json_int(gpp__buf *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    gpp__buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

/* Print a cJSON tree compactly, as cJSON_PrintUnformatted does (same
 * escapes; numbers: whole ones as integers, others the shortest of %.15g ..
 * %.17g that reads back) but with no printf for whole numbers and no
 * sscanf: building replies was a large part of a request's time. */
static void json_write(gpp__buf *b, const cJSON *v)
{
    switch (v->type & 0xFF) {
    case cJSON_False:
        gpp__buf_add(b, "false", 5);
        break;
    case cJSON_True:
        gpp__buf_add(b, "true", 4);
        break;
    case cJSON_Number: {
        double d = v->valuedouble;
        if (d == (double)(int64_t)d && d > -9007199254740992.0 && d < 9007199254740992.0)
            json_int(b, (int64_t)d);
        else
            gpp__buf_json_num(b, d);
        break;
    }
    case cJSON_String:
        gpp__buf_json_str(b, v->valuestring ? v->valuestring : "");
        break;
    case cJSON_Raw:
        gpp__buf_puts(b, v->valuestring ? v->valuestring : "null");
        break;
    case cJSON_Array:
    case cJSON_Object: {
        bool obj = (v->type & 0xFF) == cJSON_Object;
        gpp__buf_add(b, obj ? "{" : "[", 1);
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child)
                gpp__buf_add(b, ",", 1);
            if (obj) {
                gpp__buf_json_str(b, c->string ? c->string : "");
                gpp__buf_add(b, ":", 1);
            }
            json_write(b, c);
        }
        gpp__buf_add(b, obj ? "}" : "]", 1);
        break;
    }
    default:                           /* cJSON_NULL, cJSON_Invalid */
        gpp__buf_add(b, "null", 4);
        break;
    }
}

enum MHD_Result api__reply_json(api_req *r, unsigned status, cJSON *v,
                                const char *const *headers)
{
    char *text = NULL;
    size_t len = 0;
    if (v) {
        gpp__buf b = {0};
        json_write(&b, v);
        text = gpp__buf_take(&b, &len);
    }
    cJSON_Delete(v);
    if (!text)
        return api__reply_error(r, 500, "internal", "", "out of memory");
    return api__reply(r, status, "application/json", text, len, headers);
}

static enum MHD_Result reply_error_v(api_req *r, unsigned status, const char *code,
                                     const char *field, const char *msg,
                                     const char *const *headers)
{
    gpp__buf b = {0};
    gpp__buf_puts(&b, "{\"error\":{\"code\":");
    gpp__buf_json_str(&b, code);
    gpp__buf_puts(&b, ",\"message\":");
    gpp__buf_json_str(&b, msg);
    gpp__buf_puts(&b, ",\"field\":");
    gpp__buf_json_str(&b, field && *field ? field : NULL);
    gpp__buf_puts(&b, "}}");
    size_t len = 0;
    char *text = gpp__buf_take(&b, &len);
    if (!text)
        return MHD_NO;
    return api__reply(r, status, "application/json", text, len, headers);
}

enum MHD_Result api__reply_error(api_req *r, unsigned status, const char *code,
                                 const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char *const retry[] = {"Retry-After", "1", NULL};
    static const char *const bearer[] = {"WWW-Authenticate", "Bearer", NULL};
    const char *const *h = status == 503 ? retry : status == 401 ? bearer : NULL;
    return reply_error_v(r, status, code, field, msg, h);
}

static unsigned status_for(const char *code)
{
    static const struct {
        const char *code;
        unsigned status;
    } map[] = {
        {"not_found", 404}, {"conflict", 409}, {"invalid_argument", 422},
        {"checksum_mismatch", 422}, {"malformed", 400}, {"too_large", 413},
        {"unavailable", 503}, {"unauthenticated", 401}, {"forbidden", 403},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(code, map[i].code) == 0)
            return map[i].status;
    return 500;
}

enum MHD_Result api__reply_gpp(api_req *r, const gpp_error *e)
{
    const char *code = e->code[0] ? e->code : "internal";
    unsigned status = status_for(code);
    if (status >= 500) {
        char q[600];
        log_warn("request failed", "method=%s path=%s code=%s error=%s", r->method, r->path,
                 code, log_quote(e->message, q, sizeof q));
    }
    return api__reply_error(r, status, status == 500 ? "internal" : code, e->field, "%s",
                            e->message[0] ? e->message : "internal error");
}

/* Hold an error until the request body has been read (so the client sees
 * the reply instead of a reset). */
static void set_pending(api_req *r, unsigned status, const char *code, const char *field,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_pending(api_req *r, unsigned status, const char *code, const char *field,
                        const char *fmt, ...)
{
    r->pending = true;
    r->pending_status = status;
    snprintf(r->pending_err.code, sizeof r->pending_err.code, "%s", code);
    snprintf(r->pending_err.field, sizeof r->pending_err.field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->pending_err.message, sizeof r->pending_err.message, fmt, ap);
    va_end(ap);
}

static enum MHD_Result reply_pending(api_req *r)
{
    if (r->pending_status == 405) {
        const char *h[] = {"Allow", r->pending_err.field, NULL};
        return reply_error_v(r, 405, "method_not_allowed", "", r->pending_err.message, h);
    }
    return api__reply_error(r, r->pending_status, r->pending_err.code, r->pending_err.field,
                            "%s", r->pending_err.message);
}

/* ---- request helpers ----------------------------------------------------------- */

const char *api__query(api_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

void api__cursor_make(char kind, const char *value, char *out, size_t n)
{
    api_parse_cursor_make(kind, value, out, n);
}

cJSON *api__time(int64_t ms)
{
    if (!ms)
        return cJSON_CreateNull();
    char t[32];
    gpp__fmt_time(ms, t);
    return cJSON_CreateString(t);
}

bool api__can_see(const api_req *r, const char *owner)
{
    return strcmp(r->who.role, "admin") == 0 || (owner && strcmp(owner, r->who.name) == 0);
}

/* ---- auth ---------------------------------------------------------------------- */

/* The token cache: direct-mapped on the first hash byte (the hashes are
 * uniform).  A hit fills *t with id, name and role (active, not a worker). */
static bool tok_cache_get(api *a, const uint8_t hash[32], store_token *t)
{
    tok_entry *e = &a->tok[hash[0] % API_TOKEN_CACHE];
    uint64_t now = gpp__mono_ns();
    bool hit = false;
    pthread_mutex_lock(&a->tok_mu);
    if (e->used && e->gen == atomic_load(&a->tok_gen) && now < e->expires_ns) {
        uint8_t diff = 0;
        for (int i = 0; i < 32; i++)
            diff |= (uint8_t)(e->hash[i] ^ hash[i]);
        if (diff == 0) {
            memset(t, 0, sizeof *t);
            t->id = e->id;
            snprintf(t->name, sizeof t->name, "%s", e->name);
            snprintf(t->role, sizeof t->role, "%s", e->role);
            hit = true;
        }
    }
    pthread_mutex_unlock(&a->tok_mu);
    return hit;
}

/* Remember a token the store found active; gen is tok_gen as read before
 * that lookup, so a revocation committed meanwhile makes the entry stale. */
static void tok_cache_put(api *a, const uint8_t hash[32], const store_token *t, uint64_t gen)
{
    tok_entry *e = &a->tok[hash[0] % API_TOKEN_CACHE];
    pthread_mutex_lock(&a->tok_mu);
    memcpy(e->hash, hash, 32);
    e->used = true;
    e->gen = gen;
    e->expires_ns = gpp__mono_ns() + (uint64_t)API_TOKEN_TTL_MS * 1000000u;
    e->id = t->id;
    snprintf(e->name, sizeof e->name, "%s", t->name);
    snprintf(e->role, sizeof e->role, "%s", t->role);
    pthread_mutex_unlock(&a->tok_mu);
}

/* 0 when the caller may use the route, else a pending 401/403 is set. */
static int authenticate(api_req *r)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    const char *tok = NULL;
    size_t len = 0;
    gpp_error e = {0};
    if (api_route_bearer(h, &tok, &len, &e) != 0) {
        set_pending(r, 401, e.code, e.field, "%s", e.message);
        return -1;
    }
    uint8_t hash[32];
    token_hash(tok, len, hash);
    store_token t;
    int rc = 0;
    uint64_t gen = atomic_load(&r->api->tok_gen);     /* read before the store */
    if (!tok_cache_get(r->api, hash, &t)) {
        rc = store_token_by_hash(r->d->store, hash, &t, &e);
        if (rc == 0 && !t.revoked_at && strcmp(t.role, "worker") != 0)
            tok_cache_put(r->api, hash, &t, gen);
    }
    if (rc == GPP_ENOTFOUND) {
        set_pending(r, 401, "unauthenticated", "", "unknown token");
        return -1;
    }
    if (rc != 0) {
        set_pending(r, status_for(e.code), e.code, "", "%s", e.message);
        return -1;
    }
    if (t.revoked_at) {
        set_pending(r, 401, "unauthenticated", "", "the token was revoked");
        return -1;
    }
    if (strcmp(t.role, "worker") == 0) {
        set_pending(r, 403, "forbidden", "", "worker tokens are for the worker link, not the"
                                             " HTTP API");
        return -1;
    }
    r->who.token_id = t.id;
    snprintf(r->who.name, sizeof r->who.name, "%s", t.name);
    snprintf(r->who.role, sizeof r->who.role, "%s", t.role);
    if (r->route->auth == API_AUTH_ADMIN && strcmp(t.role, "admin") != 0) {
        set_pending(r, 403, "forbidden", "", "this needs an admin token");
        return -1;
    }
    return 0;
}

/* ---- request life cycle ------------------------------------------------------- */

/* The tracking record of a connection (NULL when it could not be made). */
static api_conn *conn_state(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    api *a = cls;
    api_conn *c = conn_state(conn);
    if (c)
        atomic_store(&c->partial, true);
    api_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->api = a;
    r->d = a->d;
    r->conn = conn;
    r->t0 = gpp__mono_ns();
    r->path = api_route_decode_path(uri ? uri : "");
    atomic_fetch_add(&a->inflight, 1);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    api *a = cls;
    api_req *r = *con_cls;
    if (!r)
        return;
    if (r->status && (log_enabled(LOG_DEBUG) || r->status >= 500)) {
        char q[600];
        uint64_t us = (gpp__mono_ns() - r->t0) / 1000;
        log_write(r->status >= 500 ? LOG_WARN : LOG_DEBUG, "request",
                  "method=%s path=%s status=%u us=%llu user=%s", r->method ? r->method : "-",
                  log_quote(r->path ? r->path : "-", q, sizeof q), r->status,
                  (unsigned long long)us, r->who.name[0] ? r->who.name : "-");
    }
    (void)toe;
    api_conn *c = conn_state(conn);
    if (c) {                           /* the next request's deadline starts now */
        atomic_store(&c->partial, false);
        atomic_store(&c->since_ns, gpp__mono_ns());
        atomic_store(&c->deadline_s, 0);
        atomic_store(&c->receiving, true);
    }
    artifacts_writer_abort(r->up);      /* an upload that never reached its handler */
    free(r->path);
    free(r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&a->inflight, 1);
}

/* First call: route, authenticate, check the body's type and size.
 * Returns true when a reply was queued already (in *ret). */
static bool request_begin(api_req *r, const char *method, enum MHD_Result *ret)
{
    r->method = method;
    if (!r->path) {
        set_pending(r, 400, "malformed", "", "the URL path is malformed (bad %%-escape or an"
                                             " encoded NUL)");
        return false;
    }
    api_route_hit hit;
    gpp_error e = {0};
    if (api_route_find(method, r->path, &hit, &e) != 0) {
        set_pending(r, hit.status, e.code, e.field, "%s", e.message);
        return false;
    }
    r->route = hit.route;
    memcpy(r->params, hit.params, sizeof r->params);
    if (r->route->id == API_R_STATIC)
        return false;
    if (r->route->auth != API_AUTH_NONE && authenticate(r) != 0)
        return false;
    if (!r->route->upload && !r->route->json_body)
        return false;
    /* the body's type and declared size, before a byte of it is read */
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (r->route->upload ? !api_route_is_octets(ct) : !api_route_is_json(ct)) {
        set_pending(r, 415, "unsupported_media_type", "Content-Type",
                    r->route->upload ? "the body must be application/octet-stream (the .gppm"
                                       " file's bytes)"
                                     : "the body must be application/json");
        return false;
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    /* an upload is also held to the whole per-user quota here (the handler
     * checks the rest: bytes the sender holds already do not count again,
     * and it knows them only once it has read them) */
    int64_t n, max = r->route->upload ? API_UPLOAD_MAX : API_BODY_MAX;
    const int64_t quota = r->route->upload ? r->d->cfg.upload_quota_mb << 20 : 0;
    if (quota > 0 && quota < max)
        max = quota;
    if (api_route_body_too_big(cl, max, &n)) {
        if (max == quota)
            *ret = api__reply_error(r, 413, "too_large", "",
                                    "over your upload quota: this upload is %.1f MiB and the "
                                    "quota is %lld MiB", n / 1048576.0,
                                    (long long)r->d->cfg.upload_quota_mb);
        else
            *ret = api__reply_error(r, 413, "too_large", "", "the body is %lld bytes; the limit"
                                    " is %lld", (long long)n, (long long)max);
        return true;
    }
    /* a large file over a slow link takes longer than a JSON body */
    api_conn *c = r->route->upload ? conn_state(r->conn) : NULL;
    if (c)
        atomic_store(&c->deadline_s, API_UPLOAD_DEADLINE_S);
    return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    api_req *r = *con_cls;
    (void)url;
    (void)version;
    if (!r)
        return MHD_NO;      /* on_uri could not allocate: drop the connection */
    r->conn = conn;
    if (!r->started) {
        r->started = true;
        enum MHD_Result ret = MHD_NO;
        if (request_begin(r, method, &ret))
            return ret;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* libmicrohttpd cannot answer in the middle of a body: once a reply is
         * decided (an error, or the body passed the limit) the rest is read and
         * dropped, up to API_DISCARD_MAX, past which the connection is closed. */
        if (!r->pending && r->route->json_body && r->body_len + n > API_BODY_MAX)
            set_pending(r, 413, "too_large", "", "the body is over %d bytes", API_BODY_MAX);
        if (!r->pending && r->route->upload) {
            gpp_error e = {0};
            if ((int64_t)n > API_UPLOAD_MAX - r->up_len) {
                set_pending(r, 413, "too_large", "", "the body is over %lld bytes",
                            (long long)API_UPLOAD_MAX);
            } else if ((!r->up && artifacts_writer_begin(r->d->artifacts, &r->up, &e) != 0) ||
                       artifacts_writer_append(r->up, upload_data, n, &e) != 0) {
                set_pending(r, strcmp(e.code, "out_of_memory") == 0 ? 500 : 503,
                            "unavailable", "", "cannot store the upload: %s", e.message);
            } else {
                r->up_len += (int64_t)n;
                return MHD_YES;
            }
            artifacts_writer_abort(r->up);      /* the reply is decided: drop the file */
            r->up = NULL;
        }
        if (r->pending || !r->route->json_body) {
            r->discarded += n;
            return r->discarded > API_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            char *nb = realloc(r->body, cap);
            if (!nb)
                return api__reply_error(r, 503, "unavailable", "", "out of memory");
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    api_conn *c = conn_state(conn);
    if (c)
        atomic_store(&c->receiving, false);   /* the request is whole */
    if (r->status)
        return MHD_YES;     /* replied already (413 mid-body) */
    if (r->pending)
        return reply_pending(r);
    if (r->route->json_body && r->body_len == 0)
        return api__reply_error(r, 400, "malformed", "", "the body is empty; a JSON object is"
                                " expected");
    if (r->route->upload && !r->up)
        return api__reply_error(r, 400, "malformed", "", "the body is empty; a .gppm checkpoint"
                                " is expected");
    enum MHD_Result ret = handlers[r->route->id](r);
    if (r->route->id == API_R_TOKEN_REVOKE)
        atomic_fetch_add(&r->api->tok_gen, 1);   /* before the reply leaves */
    return ret;
}

/* ---- connections and the request deadline ---------------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    api *a = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        api_conn *c = calloc(1, sizeof *c);
        if (!c)
            return;            /* untracked: only the idle timeout applies to it */
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        c->fd = fi ? fi->connect_fd : -1;
        if (ai && ai->client_addr) {
            const struct sockaddr *sa = ai->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                          c->addr, sizeof c->addr);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                          c->addr, sizeof c->addr);
        }
        atomic_store(&c->since_ns, gpp__mono_ns());
        atomic_store(&c->receiving, true);
        pthread_mutex_lock(&a->conns_mu);
        c->next = a->conns;
        if (a->conns)
            a->conns->prev = c;
        a->conns = c;
        pthread_mutex_unlock(&a->conns_mu);
        *socket_context = c;
        return;
    }
    api_conn *c = *socket_context;
    if (!c)
        return;
    /* libmicrohttpd closes the socket after this returns: the reaper, which
     * holds conns_mu while it shuts sockets down, never sees a reused fd */
    pthread_mutex_lock(&a->conns_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&a->conns_mu);
    free(c);
    *socket_context = NULL;
}

/* Shut down the connections whose request is late; libmicrohttpd then sees
 * the end of the stream and closes them in its own thread. */
static void *reaper_main(void *arg)
{
    api *a = arg;
    static const char timeout_reply[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                                        "Content-Length: 0\r\n\r\n";
    const uint64_t deadline = (uint64_t)API_REQUEST_DEADLINE_S * 1000000000u;
    pthread_mutex_lock(&a->conns_mu);
    while (!a->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += API_REAP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&a->reaper_cv, &a->conns_mu, &ts);
        if (a->stopping)
            break;
        uint64_t now = gpp__mono_ns();
        unsigned cut = 0;
        char last[64] = "";
        uint64_t last_age = 0;
        bool last_partial = false;
        for (api_conn *c = a->conns; c; c = c->next) {
            /* receiving first: on_completed stores since_ns before receiving,
             * so a receiving seen true comes with its own since_ns (or a newer
             * one, possibly newer than now: a request thread is quicker) */
            if (c->cut || c->fd < 0 || !atomic_load(&c->receiving))
                continue;
            uint64_t since = atomic_load(&c->since_ns);
            uint64_t own = atomic_load(&c->deadline_s);
            if (since >= now || now - since < (own ? own * 1000000000u : deadline))
                continue;
            if (atomic_load(&c->partial))
                (void)!send(c->fd, timeout_reply, sizeof timeout_reply - 1,
                            MSG_NOSIGNAL | MSG_DONTWAIT);
            shutdown(c->fd, SHUT_RDWR);
            c->cut = true;
            cut++;
            snprintf(last, sizeof last, "%s", c->addr);
            last_age = (now - since) / 1000000u;
            last_partial = atomic_load(&c->partial);
        }
        if (cut) {
            atomic_fetch_add(&a->slow_closed, cut);
            pthread_mutex_unlock(&a->conns_mu);     /* no connection waits on the log */
            log_info("closed slow or idle connections",
                     "count=%u deadline_s=%d last=%s last_waited_ms=%llu last_partial=%d", cut,
                     API_REQUEST_DEADLINE_S, last[0] ? last : "-", (unsigned long long)last_age,
                     last_partial);
            pthread_mutex_lock(&a->conns_mu);
        }
    }
    pthread_mutex_unlock(&a->conns_mu);
    return NULL;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    (void)cls;
    log_debug("libmicrohttpd", "detail=%s", log_quote(msg, q, sizeof q));
}
#pragma GCC diagnostic pop

/* ---- start / stop ---------------------------------------------------------------- */

static void api_free(api *a)
{
    pthread_mutex_destroy(&a->conns_mu);
    pthread_mutex_destroy(&a->tok_mu);
    pthread_cond_destroy(&a->reaper_cv);
    free(a);
}

int api_start(api **out, gppd *d, gpp_error *err)
{
    *out = NULL;
    char host[CONFIG_ADDR_MAX];
    int port;
    if (config_split_addr(d->cfg.listen, host, &port) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "listen",
                             "--listen '%s' is not ADDR:PORT", d->cfg.listen);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    int grc = getaddrinfo(host, portstr, &hints, &ai);
    if (grc != 0 || !ai)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "listen",
                             "--listen: cannot resolve '%s': %s", host, gai_strerror(grc));
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    bool v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);

    api *a = calloc(1, sizeof *a);
    if (!a)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    a->d = d;
    pthread_mutex_init(&a->conns_mu, NULL);
    pthread_mutex_init(&a->tok_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    a->sse = api__sse_hub_new(d);
    if (!a->sse) {
        api_free(a);
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "cannot start the event pump");
    }
    unsigned conn_limit = API_CONN_LIMIT;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < conn_limit + 64)
        conn_limit = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = ncpu > 0 ? 2u * (unsigned)ncpu : API_THREADS_MIN;
    threads = threads < API_THREADS_MIN ? API_THREADS_MIN
            : threads > API_THREADS_MAX ? API_THREADS_MAX : threads;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0);
    errno = 0;
    a->mhd = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, a,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, conn_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)API_PER_IP_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, a,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
        MHD_OPTION_END);
    if (!a->mhd) {
        int e = errno;
        api__sse_hub_close(a->sse);
        api__sse_hub_free(a->sse);
        api_free(a);
        return gpp_error_set(err, GPP_EIO, "io_error", "listen",
                             "cannot listen on %s: %s", d->cfg.listen,
                             e ? strerror(e) : "address in use or not available");
    }
    if (pthread_create(&a->reaper, NULL, reaper_main, a) == 0)
        a->reaper_started = true;
    else
        log_warn("no request deadline thread; only the idle timeout applies", "timeout_s=%d",
                 API_CONN_TIMEOUT_S);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : (uint16_t)port;
    *out = a;
    return 0;
}

uint16_t api_port(const api *a)
{
    return a->port;
}

void api_stop(api *a)
{
    if (!a)
        return;
    MHD_socket lsock = MHD_quiesce_daemon(a->mhd);
    api__sse_hub_close(a->sse);        /* event streams end; none stays suspended */
    for (int waited = 0; atomic_load(&a->inflight) > 0 && waited < API_STOP_WAIT_MS;
         waited += 10) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (a->reaper_started) {
        pthread_mutex_lock(&a->conns_mu);
        a->stopping = true;
        pthread_cond_signal(&a->reaper_cv);
        pthread_mutex_unlock(&a->conns_mu);
        pthread_join(a->reaper, NULL);
    }
    MHD_stop_daemon(a->mhd);           /* closes the rest: on_connection frees their records */
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    api__sse_hub_free(a->sse);
    api_free(a);
}

void api__counters(const api *a, uint64_t by_status[500], uint64_t buckets[API_LAT_BUCKETS],
                   double *sum_s, uint64_t *count)
{
    for (int i = 0; i < 500; i++)
        by_status[i] = atomic_load(&a->by_status[i]);
    uint64_t cum = 0;
    for (int i = 0; i < API_LAT_BUCKETS; i++) {
        cum += atomic_load(&a->lat[i]);
        buckets[i] = cum;
    }
    *sum_s = (double)atomic_load(&a->lat_sum_us) / 1e6;
    *count = atomic_load(&a->lat_count);
}

/* ---- small endpoints --------------------------------------------------------------- */

enum MHD_Result api__health(api_req *r)
{
    gpp_error e = {0};
    int64_t counts[STORE_JOB_NSTATES];
    int64_t workers = store_worker_count_active(r->d->store, &e);
    if (workers < 0 || store_job_counts(r->d->store, counts, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", GPP_VERSION);
    cJSON_AddNumberToObject(o, "workers", (double)workers);
    cJSON_AddNumberToObject(o, "queued", (double)counts[STORE_JOB_QUEUED]);
    cJSON_AddNumberToObject(o, "running", (double)counts[STORE_JOB_RUNNING]);
    cJSON_AddNumberToObject(o, "schema", store_schema_version(r->d->store));
    return api__reply_json(r, 200, o, NULL);
}

enum MHD_Result api__openapi(api_req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        gppd_openapi_json_len, (void *)(uintptr_t)gppd_openapi_json, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return queue_reply(r, 200, resp);
}

enum MHD_Result api__prometheus(api_req *r)
{
    gpp_error e = {0};
    int64_t counts[STORE_JOB_NSTATES];
    int64_t workers = store_worker_count_active(r->d->store, &e);
    if (workers < 0 || store_job_counts(r->d->store, counts, &e) != 0)
        return api__reply_gpp(r, &e);
    uint64_t by_status[500];
    uint64_t buckets[API_LAT_BUCKETS], count;
    double sum;
    gpp__buf b = {0};
    gpp__buf_puts(&b, "# HELP gppd_jobs Jobs by state.\n# TYPE gppd_jobs gauge\n");
    for (int i = 0; i < STORE_JOB_NSTATES; i++)
        gpp__buf_printf(&b, "gppd_jobs{state=\"%s\"} %lld\n", store_job_states[i],
                        (long long)counts[i]);
    gpp__buf_printf(&b, "# HELP gppd_workers Connected workers.\n# TYPE gppd_workers gauge\n"
                        "gppd_workers %lld\n", (long long)workers);
    gpp__buf_printf(&b, "# HELP gppd_event_streams Open event streams (SSE).\n"
                        "# TYPE gppd_event_streams gauge\ngppd_event_streams %d\n",
                    api__sse_count(r->api->sse));
    api__counters(r->api, by_status, buckets, &sum, &count);
    gpp__buf_puts(&b, "# HELP gppd_http_requests_total HTTP requests answered, by status code.\n"
                      "# TYPE gppd_http_requests_total counter\n");
    for (int i = 0; i < 500; i++)
        if (by_status[i])
            gpp__buf_printf(&b, "gppd_http_requests_total{code=\"%d\"} %llu\n", i + 100,
                            (unsigned long long)by_status[i]);
    gpp__buf_puts(&b, "# HELP gppd_http_request_duration_seconds Time from request line to"
                      " reply.\n# TYPE gppd_http_request_duration_seconds histogram\n");
    for (int i = 0; i < API_LAT_BUCKETS; i++)
        gpp__buf_printf(&b, "gppd_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        api__lat_bounds[i], (unsigned long long)buckets[i]);
    gpp__buf_printf(&b, "gppd_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "gppd_http_request_duration_seconds_sum %.6f\n"
                        "gppd_http_request_duration_seconds_count %llu\n",
                    (unsigned long long)count, sum, (unsigned long long)count);
    gpp__buf_printf(&b, "# HELP gppd_http_slow_connections_closed_total Connections closed because"
                        " a request did not arrive whole within %d s.\n"
                        "# TYPE gppd_http_slow_connections_closed_total counter\n"
                        "gppd_http_slow_connections_closed_total %llu\n",
                    API_REQUEST_DEADLINE_S, (unsigned long long)atomic_load(&r->api->slow_closed));
    gpp__buf_printf(&b, "# HELP gppd_build_info gppd version.\n# TYPE gppd_build_info gauge\n"
                        "gppd_build_info{version=\"%s\"} 1\n", GPP_VERSION);
    size_t len = 0;
    char *text = gpp__buf_take(&b, &len);
    if (!text)
        return api__reply_error(r, 500, "internal", "", "out of memory");
    return api__reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"}, {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"}, {".json", "application/json"},
        {".map", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
        {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".gif", "image/gif"},
        {".ico", "image/x-icon"}, {".webp", "image/webp"}, {".woff2", "font/woff2"},
        {".woff", "font/woff"}, {".txt", "text/plain; charset=utf-8"},
        {".wasm", "application/wasm"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* Resolve rel under the web root; 0 with the real path in out when it is a
 * regular file (or a folder, *is_dir) strictly inside the root. */
static int static_resolve(const char *root, const char *rel, char *out, bool *is_dir)
{
    char joined[PATH_MAX];
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", root, rel) >= sizeof joined)
        return -1;
    if (!realpath(joined, out))
        return -1;
    size_t rl = strlen(root);
    if (strncmp(out, root, rl) != 0 || (out[rl] != '/' && out[rl] != '\0'))
        return -1;              /* a symlink pointing out of the root */
    struct stat st;
    if (stat(out, &st) != 0)
        return -1;
    *is_dir = S_ISDIR(st.st_mode);
    if (!*is_dir && !S_ISREG(st.st_mode))
        return -1;
    return 0;
}

enum MHD_Result api__static(api_req *r)
{
    const char *root = r->d->web_root;
    if (!root[0])
        return api__reply_error(r, 404, "not_found", "", "no dashboard is served (no --web-root)");
    char rel[PATH_MAX];
    if (api_route_static_rel(r->path, rel, sizeof rel) != 0)    /* no "..", ".", "" */
        return api__reply_error(r, 404, "not_found", "", "no such file");
    char real[PATH_MAX];
    bool is_dir = false;
    if (static_resolve(root, rel, real, &is_dir) != 0)
        return api__reply_error(r, 404, "not_found", "", "no such file");
    if (is_dir) {
        char sub[PATH_MAX];
        if ((size_t)snprintf(sub, sizeof sub, "%s/index.html", rel) >= sizeof sub ||
            static_resolve(root, sub, real, &is_dir) != 0 || is_dir)
            return api__reply_error(r, 404, "not_found", "", "no such file");
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return api__reply_error(r, 404, "not_found", "", "no such file");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type(real));
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue_reply(r, 200, resp);
}
