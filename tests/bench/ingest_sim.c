/* tests/bench/ingest_sim.c - simulated workers and clients for the gppd
 * server benchmark (tests/bench/server_bench.sh).  Bench only, never in CI.
 *
 * It speaks the real protocols: HTTP/1.1 to gppd's API (bearer token) and
 * the worker wire protocol (gpp/proto.h frames) to its worker link.
 *
 *   ingest_sim ingest  COMMON --workers N --points P [--batch B] [--window W] [--names K]
 *       N workers connect and say hello; N one-stage jobs are submitted over
 *       HTTP; each worker, once it holds its stage, streams P/N metric points
 *       (K names per iteration) in batches of B points with up to W batches
 *       unacknowledged.  Prints points/s stored (first batch sent .. last ack),
 *       then counts what the daemon stored (GET .../metrics, per series
 *       "scanned") and fails when that differs from what was sent.
 *   ingest_sim latency COMMON --jobs N
 *       One idle worker; N times: submit a one-stage job, time the assignment
 *       frame, answer it with a non-retryable fail so the worker is idle again.
 *       Times: from just before the POST is sent (an upper bound of queued ->
 *       assigned), from the job's created_at (ms resolution; includes the
 *       submit's commit), and from the 201 reply (negative: the assignment
 *       came first).  --trace FILE: one line per job, "JOB_ID ASSIGN_WALL_MS",
 *       for comparing with gppd's log ("job submitted" is logged once the
 *       stage is queued and committed).
 *   ingest_sim query   COMMON --job ID --requests N --query 'max_points=1000'
 *       N sequential GET /api/v1/jobs/ID/metrics?QUERY on one keep-alive
 *       connection after 3 warm-ups: latency percentiles, body size.
 *   ingest_sim mhd-hello --port PORT --size BYTES
 *       The ceiling for this machine (BENCHMARKS.md): a trivial libmicrohttpd
 *       server with gppd's threading (epoll, a pool of 2 threads) answering
 *       every request with BYTES of JSON; prints "listening PORT", runs until
 *       SIGTERM / SIGINT.
 *
 * COMMON: --http HOST:PORT --link HOST:PORT --token-file ADMIN_TOKEN_FILE
 *         --worker-token-file WORKER_TOKEN_FILE (--link/--worker-token-file only
 *         for ingest and latency).
 * Output: one JSON object on stdout; diagnostics on stderr; exit 0 or 1. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <signal.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "gpp/proto.h"

#define MAX_WORKERS 64
#define HTTP_MAX (64u * 1024 * 1024)

static const char *const metric_names[] = {"loss", "accuracy", "lr", "grad_norm",
                                           "val_loss", "val_accuracy", "params", "flops"};
#define N_METRIC_NAMES (sizeof metric_names / sizeof metric_names[0])

/* ---- small helpers ------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ingest_sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read %s: %s", path, strerror(errno));
    char buf[512];
    if (!fgets(buf, sizeof buf, f))
        die("%s is empty", path);
    fclose(f);
    buf[strcspn(buf, "\r\n ")] = '\0';
    return strdup(buf);
}

static int tcp_connect(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host)
        die("bad HOST:PORT '%s'", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("bad IPv4 address '%s'", host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect %s: %s", hostport, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("send: %s", strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentile (0..100) of n sorted values, nearest rank. */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1)
        k = 1;
    return v[k - 1];
}

/* ---- HTTP/1.1 client (one keep-alive connection) -------------------------------- */

typedef struct http_conn {
    const char *hostport;
    int fd;                  /* -1: not connected */
    char *buf;               /* bytes read past the last response */
    size_t len, cap;
} http_conn;

typedef struct http_resp {
    int status;
    char *body;              /* NUL-terminated, malloc'd */
    size_t body_len;
} http_resp;

/* Read more bytes; false on EOF / error (the caller decides). */
static bool http_fill_try(http_conn *c)
{
    if (c->len + 65536 > c->cap) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        while (c->len + 65536 > c->cap)
            c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf)
            die("out of memory");
    }
    ssize_t n;
    do
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static void http_fill(http_conn *c)
{
    if (!http_fill_try(c))
        die("HTTP connection to %s closed mid-response", c->hostport);
}

/* One request; reconnects when the previous response closed the connection
 * and, once, when a kept-alive connection turns out closed by the server
 * (gppd closes idle ones) before any byte of the response came. */
static http_resp http_do(http_conn *c, const char *method, const char *path, const char *token,
                         const char *body)
{
    bool reused = c->fd >= 0;
    if (c->fd < 0) {
        c->fd = tcp_connect(c->hostport);
        c->len = 0;
    }
    char head[2048];
    size_t blen = body ? strlen(body) : 0;
    int hl;
    if (body)
        hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, c->hostport, token, blen);
    else
        hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n",
                      method, path, c->hostport, token);
    if (hl < 0 || (size_t)hl >= sizeof head)
        die("request line too long");
    bool sent = send(c->fd, head, (size_t)hl, MSG_NOSIGNAL) == hl;
    if (sent && body)
        sent = send(c->fd, body, blen, MSG_NOSIGNAL) == (ssize_t)blen;
    char *end;
    for (;;) {
        if (c->len > 0) {
            c->buf[c->len < c->cap ? c->len : c->cap - 1] = '\0';
            end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (end)
                break;
        }
        if (!sent || !http_fill_try(c)) {
            if (reused && c->len == 0) {
                close(c->fd);
                c->fd = -1;
                return http_do(c, method, path, token, body);
            }
            die("HTTP connection to %s closed before the response", c->hostport);
        }
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    http_resp r = {0};
    if (sscanf(c->buf, "HTTP/1.%*d %d", &r.status) != 1)
        die("bad HTTP status line");
    long long clen = -1;
    bool close_after = false;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            clen = atoll(line + 15);
        if (strncasecmp(line, "Connection:", 11) == 0 && strcasestr(line, "close") &&
            strcasestr(line, "close") < strstr(line, "\r\n"))
            close_after = true;
    }
    if (clen < 0 || clen > (long long)HTTP_MAX)
        die("HTTP response without a usable Content-Length (status %d)", r.status);
    while (c->len < hlen + (size_t)clen)
        http_fill(c);
    r.body = malloc((size_t)clen + 1);
    if (!r.body)
        die("out of memory");
    memcpy(r.body, c->buf + hlen, (size_t)clen);
    r.body[clen] = '\0';
    r.body_len = (size_t)clen;
    memmove(c->buf, c->buf + hlen + (size_t)clen, c->len - hlen - (size_t)clen);
    c->len -= hlen + (size_t)clen;
    if (close_after) {
        close(c->fd);
        c->fd = -1;
    }
    return r;
}

static cJSON *http_json(http_conn *c, const char *method, const char *path, const char *token,
                        const char *body, int want_status)
{
    http_resp r = http_do(c, method, path, token, body);
    if (r.status != want_status)
        die("%s %s: HTTP %d (want %d): %.300s", method, path, r.status, want_status, r.body);
    cJSON *v = cJSON_Parse(r.body);
    if (!v)
        die("%s %s: the body is not JSON", method, path);
    free(r.body);
    return v;
}

/* Parse "2026-11-27T23:42:08.543Z" to unix ms. */
static double iso_ms(const char *s)
{
    struct tm tm = {0};
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return NAN;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) * 1e3 + ms;
}

/* ---- the worker link ------------------------------------------------------------ */

typedef struct link_conn {
    int fd;
    uint8_t *buf;
    size_t len, cap, off;
} link_conn;

typedef struct frame {
    int type;
    cJSON *json;             /* parsed payload (NULL for blob) */
} frame;

static void link_send_json(link_conn *l, int type, const cJSON *obj)
{
    gpp_buf out = {0};
    if (gpp_frame_append_json(&out, type, obj) != 0)
        die("cannot encode a frame");
    write_all(l->fd, out.data, out.len);
    gpp_buf_free(&out);
}

/* Next frame (blocking). */
static frame link_next(link_conn *l)
{
    for (;;) {
        size_t avail = l->len - l->off;
        if (avail >= GPP_FRAME_HEADER) {
            const uint8_t *p = l->buf + l->off;
            uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            if (n > GPP_FRAME_MAX)
                die("frame of %u bytes from the daemon", n);
            if (avail >= GPP_FRAME_HEADER + (size_t)n) {
                frame f = {.type = p[4]};
                if (f.type != GPP_MSG_BLOB)
                    f.json = cJSON_ParseWithLength((const char *)p + GPP_FRAME_HEADER, n);
                l->off += GPP_FRAME_HEADER + n;
                return f;
            }
        }
        if (l->off > 0) {
            memmove(l->buf, l->buf + l->off, l->len - l->off);
            l->len -= l->off;
            l->off = 0;
        }
        if (l->len + 65536 > l->cap) {
            l->cap = l->cap ? l->cap * 2 : 262144;
            l->buf = realloc(l->buf, l->cap);
            if (!l->buf)
                die("out of memory");
        }
        ssize_t r;
        do
            r = recv(l->fd, l->buf + l->len, l->cap - l->len, 0);
        while (r < 0 && errno == EINTR);
        if (r <= 0)
            die("worker link closed by the daemon (%s)", r < 0 ? strerror(errno) : "EOF");
        l->len += (size_t)r;
    }
}

static void link_hello(link_conn *l, const char *hostport, const char *token, int i)
{
    l->fd = tcp_connect(hostport);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddNumberToObject(h, "proto", GPP_PROTO_VERSION);
    cJSON_AddStringToObject(h, "token", token);
    char name[64];
    snprintf(name, sizeof name, "bench-sim:%d:%d", (int)getpid(), i);
    cJSON_AddStringToObject(h, "name", name);
    cJSON *devs = cJSON_AddArrayToObject(h, "devices");
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "kind", "cpu");
    cJSON_AddNumberToObject(d, "index", 0);
    cJSON_AddStringToObject(d, "name", "sim");
    cJSON_AddNumberToObject(d, "memory_mb", 1024);
    cJSON_AddItemToArray(devs, d);
    cJSON_AddNumberToObject(h, "threads", 1);
    cJSON_AddObjectToObject(h, "labels");
    link_send_json(l, GPP_MSG_HELLO, h);
    cJSON_Delete(h);
    frame f = link_next(l);
    if (f.type != GPP_MSG_WELCOME)
        die("expected welcome, got frame type %d", f.type);
    cJSON_Delete(f.json);
}

/* Wait for an assign frame (answering pings); fills stage_id / job_id / attempt. */
static void link_wait_assign(link_conn *l, char stage_id[80], char job_id[80], int *attempt)
{
    for (;;) {
        frame f = link_next(l);
        if (f.type == GPP_MSG_ASSIGN) {
            const cJSON *s = cJSON_GetObjectItem(f.json, "stage_id");
            const cJSON *j = cJSON_GetObjectItem(f.json, "job_id");
            const cJSON *a = cJSON_GetObjectItem(f.json, "attempt");
            if (!cJSON_IsString(s) || !cJSON_IsString(j) || !cJSON_IsNumber(a))
                die("malformed assign");
            snprintf(stage_id, 80, "%s", s->valuestring);
            snprintf(job_id, 80, "%s", j->valuestring);
            *attempt = a->valueint;
            cJSON_Delete(f.json);
            return;
        }
        if (f.type == GPP_MSG_PING) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddNumberToObject(p, "time_ms", floor(wall_ms()));
            link_send_json(l, GPP_MSG_PONG, p);
            cJSON_Delete(p);
        } else if (f.type == GPP_MSG_BYE || f.type == GPP_MSG_CANCEL) {
            die("the daemon sent frame type %d while waiting for an assignment", f.type);
        }
        cJSON_Delete(f.json);
    }
}

static void link_bye(link_conn *l)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "reason", "bench done");
    link_send_json(l, GPP_MSG_BYE, b);
    cJSON_Delete(b);
    close(l->fd);
    free(l->buf);
    memset(l, 0, sizeof *l);
}

/* ---- options ------------------------------------------------------------------------ */

typedef struct opts {
    const char *mode, *http, *link, *token_file, *worker_token_file, *job, *query, *trace;
    int workers, batch, window, names, jobs, requests, port, size;
    long long points;
} opts;

static void parse_opts(opts *o, int argc, char **argv)
{
    *o = (opts){.workers = 8, .batch = 4096, .window = 4, .names = 4, .jobs = 50,
                .requests = 50, .points = 1000000, .query = "max_points=1000"};
    if (argc < 2)
        die("usage: ingest_sim ingest|latency|query --http HOST:PORT ... (see the source)");
    o->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("%s needs a value", k);
        i++;
        if (!strcmp(k, "--http")) o->http = v;
        else if (!strcmp(k, "--link")) o->link = v;
        else if (!strcmp(k, "--token-file")) o->token_file = v;
        else if (!strcmp(k, "--worker-token-file")) o->worker_token_file = v;
        else if (!strcmp(k, "--job")) o->job = v;
        else if (!strcmp(k, "--query")) o->query = v;
        else if (!strcmp(k, "--trace")) o->trace = v;
        else if (!strcmp(k, "--workers")) o->workers = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--window")) o->window = atoi(v);
        else if (!strcmp(k, "--names")) o->names = atoi(v);
        else if (!strcmp(k, "--jobs")) o->jobs = atoi(v);
        else if (!strcmp(k, "--requests")) o->requests = atoi(v);
        else if (!strcmp(k, "--points")) o->points = atoll(v);
        else if (!strcmp(k, "--port")) o->port = atoi(v);
        else if (!strcmp(k, "--size")) o->size = atoi(v);
        else die("unknown option %s", k);
    }
    if (!strcmp(o->mode, "mhd-hello"))
        return;
    if (!o->http || !o->token_file)
        die("--http and --token-file are required");
    if (strcmp(o->mode, "query") != 0 && (!o->link || !o->worker_token_file))
        die("--link and --worker-token-file are required for %s", o->mode);
    if (o->workers < 1 || o->workers > MAX_WORKERS || o->batch < 1 ||
        o->batch > (int)GPP_PROTO_MAX_POINTS || o->window < 1 || o->names < 1 ||
        o->names > (int)N_METRIC_NAMES || o->jobs < 1 || o->requests < 1 || o->points < 1)
        die("an option is out of range");
}

/* A one-stage job (train only) on a data set the daemon does not read. */
static const char job_spec[] =
    "{\"name\":\"bench\",\"dataset\":{\"format\":\"idx\",\"path\":\"/nonexistent-bench\"},"
    "\"model\":\"lenet5\",\"iterations\":0}";

/* ---- ingest ------------------------------------------------------------------------- */

typedef struct sim_worker {
    const opts *o;
    int index;
    link_conn l;
    char stage_id[80], job_id[80];
    int attempt;
    long long points;        /* to send */
    long long sent;
    int batches;
    pthread_barrier_t *start;
    double t_first, t_last;  /* first batch sent, last ack received */
} sim_worker;

/* Append one metrics frame of up to `batch` points starting at point p0. */
static size_t metrics_frame(gpp_buf *out, sim_worker *w, long long p0, int seq)
{
    const opts *o = w->o;
    long long n = w->points - p0 < o->batch ? w->points - p0 : o->batch;
    gpp_buf body = {0};
    char tmp[256];
    int k = snprintf(tmp, sizeof tmp, "{\"stage_id\":\"%s\",\"attempt\":%d,\"seq\":%d,\"points\":[",
                     w->stage_id, w->attempt, seq);
    gpp_buf_append(&body, tmp, (size_t)k);
    long long ms = (long long)wall_ms();
    for (long long p = p0; p < p0 + n; p++) {
        long long iteration = p / o->names + 1;
        const char *name = metric_names[p % o->names];
        double value = 1.0 / (double)iteration + 0.01 * sin((double)p * 0.37);
        k = snprintf(tmp, sizeof tmp, "%s[%lld,\"%s\",%.6g,%lld]", p == p0 ? "" : ",",
                     iteration, name, value, ms);
        if (gpp_buf_append(&body, tmp, (size_t)k) != 0)
            die("out of memory");
    }
    gpp_buf_append(&body, "]}", 2);
    if (gpp_frame_append(out, GPP_MSG_METRICS, body.data, body.len) != 0)
        die("cannot encode a metrics frame (%zu bytes)", body.len);
    gpp_buf_free(&body);
    return (size_t)n;
}

static void *ingest_thread(void *arg)
{
    sim_worker *w = arg;
    pthread_barrier_wait(w->start);
    int next_seq = 1, acked = 0, inflight = 0;
    long long p = 0;
    w->t_first = now_s();
    while (p < w->points || inflight > 0) {
        while (p < w->points && inflight < w->o->window) {
            gpp_buf out = {0};
            p += (long long)metrics_frame(&out, w, p, next_seq++);
            write_all(w->l.fd, out.data, out.len);
            gpp_buf_free(&out);
            inflight++;
            w->batches++;
        }
        frame f = link_next(&w->l);
        if (f.type == GPP_MSG_ACK) {
            const cJSON *s = cJSON_GetObjectItem(f.json, "seq");
            int seq = cJSON_IsNumber(s) ? s->valueint : -1;
            if (seq <= acked || seq >= next_seq)
                die("worker %d: ack of seq %d (acked %d, sent %d)", w->index, seq, acked,
                    next_seq - 1);
            inflight -= seq - acked;
            acked = seq;
        } else if (f.type == GPP_MSG_PING) {
            cJSON *q = cJSON_CreateObject();
            cJSON_AddNumberToObject(q, "time_ms", floor(wall_ms()));
            link_send_json(&w->l, GPP_MSG_PONG, q);
            cJSON_Delete(q);
        } else if (f.type == GPP_MSG_BYE || f.type == GPP_MSG_CANCEL) {
            die("worker %d: the daemon sent frame type %d mid-stream", w->index, f.type);
        }
        cJSON_Delete(f.json);
    }
    w->sent = p;
    w->t_last = now_s();
    return NULL;
}

/* Points the daemon stored for a job: the sum of every series' "scanned". */
static long long stored_points(http_conn *h, const char *token, const char *job_id)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?max_points=2&limit=1000000", job_id);
    cJSON *m = http_json(h, "GET", path, token, NULL, 200);
    long long total = 0;
    const cJSON *series = cJSON_GetObjectItem(m, "series"), *s;
    cJSON_ArrayForEach(s, series) {
        const cJSON *sc = cJSON_GetObjectItem(s, "scanned");
        const cJSON *tr = cJSON_GetObjectItem(s, "truncated");
        if (cJSON_IsTrue(tr))
            die("series %s of job %s was truncated at 1000000", s->string, job_id);
        total += cJSON_IsNumber(sc) ? (long long)sc->valuedouble : 0;
    }
    cJSON_Delete(m);
    return total;
}

static int run_ingest(const opts *o)
{
    char *token = read_token(o->token_file), *wtoken = read_token(o->worker_token_file);
    http_conn h = {.hostport = o->http, .fd = -1};
    sim_worker *ws = calloc((size_t)o->workers, sizeof *ws);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)o->workers + 1);
    for (int i = 0; i < o->workers; i++) {
        ws[i] = (sim_worker){.o = o, .index = i, .start = &start,
                             .points = o->points / o->workers +
                                       (i < o->points % o->workers ? 1 : 0)};
        link_hello(&ws[i].l, o->link, wtoken, i);
    }
    /* one job per worker; the scheduler gives each idle worker one stage */
    char (*jobs)[80] = calloc((size_t)o->workers, sizeof *jobs);
    for (int i = 0; i < o->workers; i++) {
        cJSON *j = http_json(&h, "POST", "/api/v1/jobs", token, job_spec, 201);
        snprintf(jobs[i], 80, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
        cJSON_Delete(j);
    }
    for (int i = 0; i < o->workers; i++)
        link_wait_assign(&ws[i].l, ws[i].stage_id, ws[i].job_id, &ws[i].attempt);
    pthread_t *th = calloc((size_t)o->workers, sizeof *th);
    for (int i = 0; i < o->workers; i++)
        pthread_create(&th[i], NULL, ingest_thread, &ws[i]);
    pthread_barrier_wait(&start);
    double t0 = now_s();
    long long sent = 0;
    int batches = 0;
    double t_end = t0;
    for (int i = 0; i < o->workers; i++) {
        pthread_join(th[i], NULL);
        sent += ws[i].sent;
        batches += ws[i].batches;
        if (ws[i].t_last > t_end)
            t_end = ws[i].t_last;
    }
    double secs = t_end - t0;
    long long stored = 0;
    for (int i = 0; i < o->workers; i++)
        stored += stored_points(&h, token, ws[i].job_id);
    printf("{\"mode\":\"ingest\",\"workers\":%d,\"batch\":%d,\"window\":%d,\"names\":%d,"
           "\"batches\":%d,\"points_sent\":%lld,\"points_stored\":%lld,\"seconds\":%.3f,"
           "\"points_per_s\":%.0f,\"jobs\":[",
           o->workers, o->batch, o->window, o->names, batches, sent, stored, secs,
           (double)sent / secs);
    for (int i = 0; i < o->workers; i++)
        printf("%s\"%s\"", i ? "," : "", ws[i].job_id);
    printf("]}\n");
    for (int i = 0; i < o->workers; i++)
        link_bye(&ws[i].l);
    if (h.fd >= 0)
        close(h.fd);
    free(h.buf);
    free(th);
    free(jobs);
    free(ws);
    free(token);
    free(wtoken);
    pthread_barrier_destroy(&start);
    if (stored != sent) {
        fprintf(stderr, "ingest_sim: sent %lld points, the daemon stored %lld\n", sent, stored);
        return 1;
    }
    return 0;
}

/* ---- latency: queued stage -> idle worker ------------------------------------------- */

static int run_latency(const opts *o)
{
    char *token = read_token(o->token_file), *wtoken = read_token(o->worker_token_file);
    http_conn h = {.hostport = o->http, .fd = -1};
    link_conn l = {0};
    link_hello(&l, o->link, wtoken, 0);
    double *from_post = calloc((size_t)o->jobs, sizeof(double));
    double *from_created = calloc((size_t)o->jobs, sizeof(double));
    double *from_reply = calloc((size_t)o->jobs, sizeof(double));
    int warm = 3;
    FILE *trace = o->trace ? fopen(o->trace, "w") : NULL;
    if (o->trace && !trace)
        die("cannot write %s", o->trace);
    for (int i = -warm; i < o->jobs; i++) {
        double t0 = wall_ms();
        http_resp r = http_do(&h, "POST", "/api/v1/jobs", token, job_spec);
        double t1 = wall_ms();
        if (r.status != 201)
            die("submit: HTTP %d: %.300s", r.status, r.body);
        cJSON *j = cJSON_Parse(r.body);
        free(r.body);
        const cJSON *id = cJSON_GetObjectItem(j, "id");
        const cJSON *ca = cJSON_GetObjectItem(j, "created_at");
        double created = iso_ms(cJSON_IsString(ca) ? ca->valuestring : NULL);
        char stage_id[80], job_id[80];
        int attempt;
        link_wait_assign(&l, stage_id, job_id, &attempt);
        double t2 = wall_ms();
        if (!cJSON_IsString(id) || strcmp(id->valuestring, job_id) != 0)
            die("assigned %s, submitted %s", job_id, cJSON_IsString(id) ? id->valuestring : "?");
        cJSON_Delete(j);
        if (trace && i >= 0)
            fprintf(trace, "%s %.3f\n", job_id, t2);
        if (i >= 0) {
            from_post[i] = t2 - t0;
            from_created[i] = t2 - created;
            from_reply[i] = t2 - t1;
        }
        /* a non-retryable failure: the job fails at once, the worker is idle again */
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "stage_id", stage_id);
        cJSON_AddNumberToObject(f, "attempt", attempt);
        cJSON_AddStringToObject(f, "class", "invalid_spec");
        cJSON_AddBoolToObject(f, "retryable", false);
        cJSON_AddStringToObject(f, "reason", "bench: done");
        link_send_json(&l, GPP_MSG_FAIL, f);
        cJSON_Delete(f);
        /* a ping round trip: the fail has been processed when the pong comes */
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "time_ms", floor(wall_ms()));
        link_send_json(&l, GPP_MSG_PING, p);
        cJSON_Delete(p);
        for (;;) {
            frame fr = link_next(&l);
            int t = fr.type;
            cJSON_Delete(fr.json);
            if (t == GPP_MSG_PONG)
                break;
            if (t == GPP_MSG_ASSIGN || t == GPP_MSG_BYE)
                die("unexpected frame %d after fail", t);
        }
    }
    qsort(from_post, (size_t)o->jobs, sizeof(double), cmp_double);
    qsort(from_created, (size_t)o->jobs, sizeof(double), cmp_double);
    qsort(from_reply, (size_t)o->jobs, sizeof(double), cmp_double);
    size_t n = (size_t)o->jobs;
    printf("{\"mode\":\"latency\",\"jobs\":%d,"
           "\"from_post_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"max\":%.3f},"
           "\"from_created_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"max\":%.3f},"
           "\"from_reply_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"max\":%.3f}}\n",
           o->jobs, pct(from_post, n, 50), pct(from_post, n, 95), from_post[n - 1],
           pct(from_created, n, 50), pct(from_created, n, 95), from_created[n - 1],
           pct(from_reply, n, 50), pct(from_reply, n, 95), from_reply[n - 1]);
    link_bye(&l);
    if (trace)
        fclose(trace);
    if (h.fd >= 0)
        close(h.fd);
    free(h.buf);
    free(from_post);
    free(from_created);
    free(from_reply);
    free(token);
    free(wtoken);
    return 0;
}

/* ---- query latency ------------------------------------------------------------------ */

static int run_query(const opts *o)
{
    if (!o->job)
        die("query needs --job ID");
    char *token = read_token(o->token_file);
    http_conn h = {.hostport = o->http, .fd = -1};
    char path[1024];
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?%s", o->job, o->query);
    double *ms = calloc((size_t)o->requests, sizeof(double));
    size_t bytes = 0;
    long long scanned = 0, points = 0, truncated = 0;
    for (int i = -3; i < o->requests; i++) {
        double t0 = now_s();
        http_resp r = http_do(&h, "GET", path, token, NULL);
        double t1 = now_s();
        if (r.status != 200)
            die("GET %s: HTTP %d: %.300s", path, r.status, r.body);
        if (i >= 0)
            ms[i] = (t1 - t0) * 1e3;
        if (i == o->requests - 1) {
            bytes = r.body_len;
            cJSON *m = cJSON_Parse(r.body);
            const cJSON *s;
            cJSON_ArrayForEach(s, cJSON_GetObjectItem(m, "series")) {
                scanned += (long long)cJSON_GetObjectItem(s, "scanned")->valuedouble;
                points += (long long)cJSON_GetObjectItem(s, "points")->valuedouble;
                truncated += cJSON_IsTrue(cJSON_GetObjectItem(s, "truncated"));
            }
            cJSON_Delete(m);
        }
        free(r.body);
    }
    qsort(ms, (size_t)o->requests, sizeof(double), cmp_double);
    size_t n = (size_t)o->requests;
    printf("{\"mode\":\"query\",\"query\":\"%s\",\"requests\":%d,\"scanned\":%lld,"
           "\"points\":%lld,\"truncated_series\":%lld,\"bytes\":%zu,\"p50_ms\":%.3f,"
           "\"p95_ms\":%.3f,\"max_ms\":%.3f}\n",
           o->query, o->requests, scanned, points, truncated, bytes, pct(ms, n, 50),
           pct(ms, n, 95), ms[n - 1]);
    if (h.fd >= 0)
        close(h.fd);
    free(h.buf);
    free(ms);
    free(token);
    return 0;
}

/* ---- the libmicrohttpd ceiling -------------------------------------------------------- */

static char *hello_body;
static size_t hello_len;

static enum MHD_Result hello_request(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (!*con_cls) {              /* first call: headers only */
        *con_cls = conn;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(hello_len, hello_body,
                                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static int run_hello(const opts *o)
{
    size_t n = o->size > 2 ? (size_t)o->size : 2;
    hello_body = malloc(n);
    if (!hello_body)
        die("out of memory");
    memset(hello_body, ' ', n);
    hello_body[0] = '{';
    hello_body[n - 1] = '}';
    hello_len = n;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);     /* MHD's threads inherit the mask */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC, (uint16_t)o->port, NULL, NULL,
        hello_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_CONNECTION_LIMIT, 1000u,
        MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (!d)
        die("cannot start libmicrohttpd on port %d", o->port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("listening %u\n", info ? info->port : 0);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    free(hello_body);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    parse_opts(&o, argc, argv);
    if (!strcmp(o.mode, "ingest"))
        return run_ingest(&o);
    if (!strcmp(o.mode, "latency"))
        return run_latency(&o);
    if (!strcmp(o.mode, "query"))
        return run_query(&o);
    if (!strcmp(o.mode, "mhd-hello"))
        return run_hello(&o);
    die("unknown mode '%s' (ingest, latency, query)", o.mode);
}
