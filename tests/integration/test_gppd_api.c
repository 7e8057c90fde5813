/* tests/integration/test_gppd_api.c - gppd run in-process (gppd_open +
 * gppd_start on 127.0.0.1 port 0), data put in through the store API, read
 * back over real HTTP: metrics (JSON, CSV, downsampling), architecture and
 * summaries from stage results, logs; two daemons in one process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gpp/sha256.h"
#include "gppd.h"
#include "store.h"
#include "tokens.h"

typedef struct fixture {
    char dir[64];
    gppd *d;
    char admin[TOKEN_TEXT_LEN + 1];
} fixture;

typedef struct http_resp {
    int status;
    char *head;      /* status line + headers */
    char *body;
    size_t body_len;
} http_resp;

static void resp_free(http_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* One HTTP/1.1 request with Connection: close; the whole reply is read. */
static http_resp http(const fixture *f, const char *method, const char *path,
                      const char *extra_headers, const char *token)
{
    http_resp r = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(gppd_http_port(f->d))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[2048];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "%s%s%s%s\r\n", method, path, token ? "Authorization: Bearer " : "",
                     token ? token : "", token ? "\r\n" : "", extra_headers ? extra_headers : "");
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    *sep = '\0';
    r.head = strdup(buf);
    r.body_len = len - (size_t)(sep + 4 - buf);
    r.body = malloc(r.body_len + 1);
    memcpy(r.body, sep + 4, r.body_len);
    r.body[r.body_len] = '\0';
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &r.status), 1);
    free(buf);
    return r;
}

static cJSON *get_json(const fixture *f, const char *path, const char *token, int want)
{
    http_resp r = http(f, "GET", path, NULL, token);
    if (r.status != want)
        fail_msg("GET %s: %d, want %d: %s", path, r.status, want, r.body);
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    cJSON *v = cJSON_Parse(r.body);
    assert_non_null(v);
    resp_free(&r);
    return v;
}

static void fixture_start(fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/gppd-api-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    gppd_config cfg;
    config_defaults(&cfg);
    snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
    snprintf(cfg.worker_listen, sizeof cfg.worker_listen, "127.0.0.1:0");
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s/data", f->dir);
    cfg.web_root[0] = '\0';
    gpp_error e = {0};
    if (gppd_open(&f->d, &cfg, &e) != 0 || gppd_start(f->d, &e) != 0)
        fail_msg("gppd: %s", e.message);
    assert_true(gppd_http_port(f->d) > 0);
    assert_int_equal(token_read_file(f->d->admin_token_path, f->admin), 0);
}

static void fixture_stop(fixture *f)
{
    gppd_close(f->d);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
}

static store_job new_job(fixture *f, const char *owner, int iterations)
{
    store_stage_new chain[32];
    int n = 0;
    chain[n++] = (store_stage_new){"train", 0};
    for (int i = 1; i <= iterations; i++) {
        chain[n++] = (store_stage_new){"push", i};
        chain[n++] = (store_stage_new){"prune", i};
    }
    store_job_new in = {.name = "t", .owner = owner, .dataset = "tiny", .model = "lenet5",
                        .device = "any", .spec = "{\"model\":\"lenet5\"}", .stages = chain,
                        .n_stages = n};
    store_job j;
    bool existed;
    gpp_error e = {0};
    assert_int_equal(store_job_create(f->d->store, &in, &j, &existed, &e), 0);
    return j;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fixture_start(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_stop(*state);
    free(*state);
    return 0;
}

static void test_metrics_over_http(void **state)
{
    fixture *f = *state;
    store_job j = new_job(f, "admin", 1);
    enum { N = 5000 };
    store_metric_point *p = calloc(2 * N, sizeof *p);
    double lo = 1e9, hi = -1e9;
    for (int i = 0; i < N; i++) {
        double v = sin(i * 0.01) + (i == 1234 ? 9.0 : 0) - (i == 4321 ? 7.0 : 0);
        lo = fmin(lo, v);
        hi = fmax(hi, v);
        p[i] = (store_metric_point){i < 3000 ? 0 : 1, 1, i, "loss", v, 1700000000000 + i};
        p[N + i] = (store_metric_point){i < 3000 ? 0 : 1, 1, i, "acc", i / (double)N, i};
    }
    size_t ins;
    gpp_error e = {0};
    assert_int_equal(store_metrics_insert(f->d->store, j.seq, p, 2 * N, &ins, &e), 0);
    assert_int_equal(ins, 2 * N);
    char path[256];
    /* everything */
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?name=loss&max_points=0", j.id);
    cJSON *v = get_json(f, path, f->admin, 200);
    const cJSON *names = cJSON_GetObjectItem(v, "names");
    assert_int_equal(cJSON_GetArraySize(names), 2);
    assert_string_equal(cJSON_GetArrayItem(names, 0)->valuestring, "acc");
    const cJSON *loss = cJSON_GetObjectItem(cJSON_GetObjectItem(v, "series"), "loss");
    assert_non_null(loss);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(v, "series"), "acc"));
    const cJSON *vals = cJSON_GetObjectItem(loss, "value");
    const cJSON *its = cJSON_GetObjectItem(loss, "iteration");
    assert_int_equal(cJSON_GetArraySize(vals), N);
    assert_int_equal(cJSON_GetArraySize(its), N);
    for (int i = 0; i < N; i += 499)
        assert_true(cJSON_GetArrayItem(vals, i)->valuedouble == p[i].value);   /* exact */
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(loss, "time")), N);
    cJSON_Delete(v);
    /* the default (JSON) downsamples to about 1000, keeping the extremes */
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?name=loss", j.id);
    v = get_json(f, path, f->admin, 200);
    loss = cJSON_GetObjectItem(cJSON_GetObjectItem(v, "series"), "loss");
    vals = cJSON_GetObjectItem(loss, "value");
    int m = cJSON_GetArraySize(vals);
    assert_true(m <= 1000 && m > 500);
    double got_lo = 1e9, got_hi = -1e9;
    for (int i = 0; i < m; i++) {
        got_lo = fmin(got_lo, cJSON_GetArrayItem(vals, i)->valuedouble);
        got_hi = fmax(got_hi, cJSON_GetArrayItem(vals, i)->valuedouble);
    }
    assert_true(got_lo == lo);
    assert_true(got_hi == hi);
    cJSON_Delete(v);
    /* max_points=50 on one stage, since */
    snprintf(path, sizeof path,
             "/api/v1/jobs/%s/metrics?name=loss,acc&stage=1&since=3999&max_points=50", j.id);
    v = get_json(f, path, f->admin, 200);
    const cJSON *series = cJSON_GetObjectItem(v, "series");
    assert_int_equal(cJSON_GetArraySize(series), 2);
    its = cJSON_GetObjectItem(cJSON_GetObjectItem(series, "acc"), "iteration");
    assert_true(cJSON_GetArraySize(its) <= 50);
    assert_true(cJSON_GetArrayItem(its, 0)->valuedouble >= 4000);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(series, "acc"), "scanned")->valueint,
                     1000);
    cJSON_Delete(v);
    /* CSV by parameter and by Accept */
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?format=csv&name=acc", j.id);
    http_resp r = http(f, "GET", path, NULL, f->admin);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: text/csv"));
    assert_true(strncmp(r.body, "name,stage,attempt,iteration,value,time\n", 40) == 0);
    int lines = 0;
    for (char *c = r.body; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, N + 1);
    assert_non_null(strstr(r.body, "\nacc,1,1,4999,0.9998,4999\n"));
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?name=loss&stage=0", j.id);
    r = http(f, "GET", path, "Accept: text/csv\r\n", f->admin);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "text/csv"));
    resp_free(&r);
    /* bad parameters: 400 with the field */
    const char *bad[] = {"stage=-1", "max_points=x", "format=xml", "limit=0", "since=1.5",
                         "name="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "/api/v1/jobs/%s/metrics?%s", j.id, bad[i]);
        v = get_json(f, path, f->admin, 400);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(v, "error"), "code")
                                ->valuestring, "malformed");
        cJSON_Delete(v);
    }
    free(p);
    store_job_clear(&j);
}

static void test_architecture_and_summary(void **state)
{
    fixture *f = *state;
    store_job j = new_job(f, "admin", 1);
    char path[256];
    snprintf(path, sizeof path, "/api/v1/jobs/%s/architecture", j.id);
    cJSON *v = get_json(f, path, f->admin, 200);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v, "baseline")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(v, "stages")), 0);
    cJSON_Delete(v);
    gpp_error e = {0};
    int attempt;
    store_stage_change c = {.state = "assigned", .expect_attempt = -1, .worker_id = "w1",
                            .progress = -1};
    assert_int_equal(store_stage_update(f->d->store, j.seq, 0, &c, &attempt, &e), 0);
    c = (store_stage_change){.state = "running", .expect_attempt = attempt, .progress = 0.5};
    assert_int_equal(store_stage_update(f->d->store, j.seq, 0, &c, NULL, &e), 0);
    snprintf(path, sizeof path, "/api/v1/jobs/%s", j.id);
    v = get_json(f, path, f->admin, 200);
    assert_string_equal(cJSON_GetObjectItem(v, "state")->valuestring, "running");
    double prog = cJSON_GetObjectItem(v, "progress")->valuedouble;
    assert_true(fabs(prog - 0.5 / 3) < 1e-9);
    assert_int_equal(cJSON_GetObjectItem(v, "current_stage")->valueint, 0);
    cJSON_Delete(v);
    /* retry of a running job: 409 with the error shape */
    snprintf(path, sizeof path, "/api/v1/jobs/%s/retry", j.id);
    http_resp r = http(f, "POST", path, NULL, f->admin);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "\"code\":\"conflict\""));
    resp_free(&r);
    const char *s0 = "{\"params\":61706,\"flops\":420000,\"val_accuracy\":0.9,\"test_accuracy\":0.89,"
                     "\"layers\":[{\"name\":\"conv1\",\"kind\":\"conv\",\"width\":6}]}";
    c = (store_stage_change){.state = "succeeded", .expect_attempt = attempt, .summary = s0,
                             .progress = -1};
    assert_int_equal(store_stage_update(f->d->store, j.seq, 0, &c, NULL, &e), 0);
    c = (store_stage_change){.state = "assigned", .expect_attempt = -1, .progress = -1};
    assert_int_equal(store_stage_update(f->d->store, j.seq, 1, &c, &attempt, &e), 0);
    c = (store_stage_change){.state = "succeeded", .expect_attempt = attempt,
                             .summary = "{\"params\":30000,\"flops\":200000,\"val_accuracy\":0.88,"
                                        "\"layers\":[{\"name\":\"conv1\",\"kind\":\"conv\",\"width\":3}]}",
                             .progress = -1};
    assert_int_equal(store_stage_update(f->d->store, j.seq, 1, &c, NULL, &e), 0);
    snprintf(path, sizeof path, "/api/v1/jobs/%s/architecture", j.id);
    v = get_json(f, path, f->admin, 200);
    const cJSON *stages = cJSON_GetObjectItem(v, "stages");
    assert_int_equal(cJSON_GetArraySize(stages), 2);
    const cJSON *base = cJSON_GetObjectItem(v, "baseline");
    assert_int_equal(cJSON_GetObjectItem(base, "params")->valueint, 61706);
    const cJSON *l1 = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(stages, 1),
                                                             "layers"), 0);
    assert_int_equal(cJSON_GetObjectItem(l1, "width")->valueint, 3);
    cJSON_Delete(v);
    snprintf(path, sizeof path, "/api/v1/jobs/%s", j.id);
    v = get_json(f, path, f->admin, 200);
    const cJSON *sum = cJSON_GetObjectItem(v, "summary");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "baseline"), "params")->valueint,
                     61706);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "current"), "params")->valueint,
                     30000);
    assert_int_equal(cJSON_GetObjectItem(v, "stages_done")->valueint, 2);
    cJSON_Delete(v);
    /* the logs hold the submission line */
    snprintf(path, sizeof path, "/api/v1/jobs/%s/logs", j.id);
    v = get_json(f, path, f->admin, 200);
    const cJSON *logs = cJSON_GetObjectItem(v, "logs");
    assert_true(cJSON_GetArraySize(logs) >= 1);
    assert_non_null(strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(logs, 0), "message")
                               ->valuestring, "submitted by admin"));
    cJSON_Delete(v);
    store_job_clear(&j);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_two_daemons_one_process(void **state)
{
    fixture *a = *state, b;
    fixture_start(&b);
    assert_int_not_equal(gppd_http_port(a->d), gppd_http_port(b.d));
    assert_string_not_equal(a->admin, b.admin);
    cJSON *v = get_json(&b, "/api/v1/health", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(v, "status")->valuestring, "ok");
    cJSON_Delete(v);
    /* a's token means nothing to b */
    v = get_json(&b, "/api/v1/jobs", a->admin, 401);
    cJSON_Delete(v);
    v = get_json(a, "/api/v1/jobs", a->admin, 200);
    cJSON_Delete(v);
    /* a rough timing of GET /api/v1/jobs/{id} over fresh connections */
    store_job j = new_job(&b, "admin", 4);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%s", j.id);
    double t0 = now_s();
    for (int i = 0; i < 200; i++) {
        http_resp r = http(&b, "GET", path, NULL, b.admin);
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    printf("# GET /api/v1/jobs/{id}: %.3f ms per request (new connection each)\n",
           (now_s() - t0) / 200 * 1e3);
    store_job_clear(&j);
    fixture_stop(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_over_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_architecture_and_summary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_daemons_one_process, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
