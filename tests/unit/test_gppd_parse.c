/* tests/unit/test_gppd_parse.c - gppd's request parsing (daemon/api_parse.h),
 * request path, routing and headers (daemon/api_route.h) and config file
 * text (config_parse_text): each bad input gives the right error code, HTTP
 * status and field; good input the right struct. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_parse.h"
#include "api_route.h"
#include "config.h"
#include "tokens.h"
#include "gpp/sha256.h"

/* ---- helpers ----------------------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

/* A query string as decoded key/value pairs, first match wins. */
typedef struct kv {
    const char *const *pairs;   /* k0, v0, k1, v1, ..., NULL */
} kv;

static const char *kv_get(void *ctx, const char *name)
{
    const kv *q = ctx;
    for (size_t i = 0; q->pairs[i]; i += 2)
        if (strcmp(q->pairs[i], name) == 0)
            return q->pairs[i + 1];
    return NULL;
}

#define QUERY(...) (&(kv){(const char *const[]){__VA_ARGS__, NULL}})
#define NOQUERY (&(kv){(const char *const[]){NULL}})

/* Assert rc is an error with HTTP status, code and field. */
static void expect_err(int rc, const gpp_error *e, unsigned status, const char *code,
                       const char *field)
{
    assert_true(rc < 0);
    assert_int_equal(api_parse_status(rc), status);
    assert_string_equal(e->code, code);
    assert_string_equal(e->field, field);
    assert_true(strlen(e->message) > 0);
}

static int body_obj(const char *text, gpp_error *e)
{
    cJSON *o = NULL;
    memset(e, 0, sizeof *e);
    int rc = api_parse_body_object(text, strlen(text), &o, e);
    if (rc == 0)
        assert_true(cJSON_IsObject(o));
    else
        assert_null(o);
    cJSON_Delete(o);
    return rc;
}

static char *repeat(const char *open, int n, const char *mid, const char *close)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = xmalloc((size_t)n * (lo + lc) + lm + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++, o += lo)
        memcpy(s + o, open, lo);
    memcpy(s + o, mid, lm);
    o += lm;
    for (int i = 0; i < n; i++, o += lc)
        memcpy(s + o, close, lc);
    s[o] = '\0';
    return s;
}

/* ---- bodies ------------------------------------------------------------------- */

static void test_body_object(void **state)
{
    (void)state;
    gpp_error e;
    assert_int_equal(body_obj("{}", &e), 0);
    assert_int_equal(body_obj(" \r\n\t{\"a\":[1,{\"b\":null}]}\n ", &e), 0);
    expect_err(body_obj("", &e), &e, 400, "malformed", "");
    expect_err(body_obj("{", &e), &e, 400, "malformed", "");
    expect_err(body_obj("{} x", &e), &e, 400, "malformed", "");
    expect_err(body_obj("{}{}", &e), &e, 400, "malformed", "");
    expect_err(body_obj("[]", &e), &e, 400, "malformed", "");
    assert_non_null(strstr(e.message, "JSON object"));
    expect_err(body_obj("\"x\"", &e), &e, 400, "malformed", "");
    expect_err(body_obj("{\"a\":\"x\\u0000y\"}", &e), &e, 400, "malformed", "");
    assert_non_null(strstr(e.message, "\\u0000"));
    /* a raw NUL byte inside the length */
    cJSON *o = NULL;
    memset(&e, 0, sizeof e);
    int rc = api_parse_body_object("{\"a\":\"x\0y\"}", 11, &o, &e);
    expect_err(rc, &e, 400, "malformed", "");
    assert_non_null(strstr(e.message, "NUL"));
    /* depth: 32 levels are fine, 33 are not; brackets inside strings do not count */
    char *ok = repeat("[", 31, "", "]");
    char *t32 = xmalloc(strlen(ok) + 16);
    sprintf(t32, "{\"a\":%s}", ok);
    assert_int_equal(body_obj(t32, &e), 0);
    char *bad = repeat("[", 32, "", "]");
    char *t33 = xmalloc(strlen(bad) + 16);
    sprintf(t33, "{\"a\":%s}", bad);
    expect_err(body_obj(t33, &e), &e, 400, "malformed", "");
    assert_non_null(strstr(e.message, "nested deeper than 32"));
    char *str = repeat("[", 100, "", "");
    char *ts = xmalloc(strlen(str) + 16);
    sprintf(ts, "{\"a\":\"%s\"}", str);
    assert_int_equal(body_obj(ts, &e), 0);
    free(ok), free(t32), free(bad), free(t33), free(str), free(ts);
}

static int token(const char *text, api_token_req *t, gpp_error *e)
{
    memset(e, 0, sizeof *e);
    return api_parse_token_issue(text, strlen(text), t, e);
}

static void test_token_issue(void **state)
{
    (void)state;
    api_token_req t;
    gpp_error e;
    assert_int_equal(token("{\"name\":\"alice\"}", &t, &e), 0);
    assert_string_equal(t.name, "alice");
    assert_string_equal(t.role, "user");
    assert_int_equal(token("{\"role\":\"admin\",\"name\":\"Ops.team_1-x\"}", &t, &e), 0);
    assert_string_equal(t.role, "admin");
    assert_string_equal(t.name, "Ops.team_1-x");
    assert_int_equal(token("{\"name\":\"w\",\"role\":\"worker\"}", &t, &e), 0);
    assert_string_equal(t.role, "worker");

    expect_err(token("[]", &t, &e), &e, 400, "malformed", "");
    expect_err(token("{\"nam\":\"x\"}", &t, &e), &e, 422, "invalid_argument", "nam");
    assert_non_null(strstr(e.message, "unknown field 'nam'"));
    expect_err(token("{}", &t, &e), &e, 422, "invalid_argument", "name");
    expect_err(token("{\"name\":5}", &t, &e), &e, 422, "invalid_argument", "name");
    assert_string_equal(e.message, "name must be a string");
    expect_err(token("{\"name\":\"a\",\"role\":null}", &t, &e), &e, 422, "invalid_argument",
               "role");
    expect_err(token("{\"name\":\"a\",\"role\":\"root\"}", &t, &e), &e, 422,
               "invalid_argument", "role");
    expect_err(token("{\"name\":\"\"}", &t, &e), &e, 422, "invalid_argument", "name");
    expect_err(token("{\"name\":\"a b\"}", &t, &e), &e, 422, "invalid_argument", "name");
    char long_name[128];
    snprintf(long_name, sizeof long_name, "{\"name\":\"%065d\"}", 0);
    expect_err(token(long_name, &t, &e), &e, 422, "invalid_argument", "name");
    snprintf(long_name, sizeof long_name, "{\"name\":\"%064d\"}", 0);
    assert_int_equal(token(long_name, &t, &e), 0);
    assert_int_equal(strlen(t.name), 64);
    /* an unknown key that is not UTF-8 is named with '?' in its place */
    expect_err(token("{\"a\xff\x01\":1}", &t, &e), &e, 422, "invalid_argument", "a??");
    expect_err(token("{\"\xc3\xa9t\xc3\xa9\":1}", &t, &e), &e, 422, "invalid_argument",
               "\xc3\xa9t\xc3\xa9");
    /* a very long unknown key is cut at a character boundary, with "..." */
    char big[400];
    strcpy(big, "{\"");
    for (int i = 0; i < 150; i++)
        strcat(big, "\xc3\xa9");
    strcat(big, "\":1}");
    memset(&e, 0, sizeof e);
    assert_int_equal(api_parse_token_issue(big, strlen(big), &t, &e), GPP_EINVAL);
    size_t fl = strlen(e.field);
    assert_true(fl <= 103);
    assert_string_equal(e.field + fl - 3, "...");
    assert_int_equal((fl - 3) % 2, 0);     /* whole two-byte characters */
}

static int dataset(const char *text, api_dataset_req *d, gpp_error *e)
{
    memset(e, 0, sizeof *e);
    return api_parse_dataset_register(text, strlen(text), d, e);
}

static void test_dataset_register(void **state)
{
    (void)state;
    api_dataset_req d;
    gpp_error e;
    assert_int_equal(dataset("{\"name\":\"mnist\",\"format\":\"idx\",\"path\":\"/data/mnist\"}",
                             &d, &e), 0);
    assert_string_equal(d.name, "mnist");
    assert_string_equal(d.format, "idx");
    assert_string_equal(d.path, "/data/mnist");
    api_dataset_req_clear(&d);
    assert_null(d.path);
    api_dataset_req_clear(&d);
    api_dataset_req_clear(NULL);

    expect_err(dataset("{\"name\":\"m\",\"format\":\"idx\",\"path\":\"/d\",\"x\":1}", &d, &e),
               &e, 422, "invalid_argument", "x");
    expect_err(dataset("{\"name\":\"m\",\"path\":\"/d\"}", &d, &e), &e, 422,
               "invalid_argument", "format");
    expect_err(dataset("{\"name\":\"m\",\"format\":3,\"path\":\"/d\"}", &d, &e), &e, 422,
               "invalid_argument", "format");
    expect_err(dataset("{\"name\":\"m\",\"format\":\"idx\"}", &d, &e), &e, 422,
               "invalid_argument", "path");
    expect_err(dataset("{\"format\":\"idx\",\"path\":\"/d\"}", &d, &e), &e, 422,
               "invalid_argument", "name");
    expect_err(dataset("{\"name\":\"MNIST\",\"format\":\"idx\",\"path\":\"/d\"}", &d, &e), &e,
               422, "invalid_argument", "name");
    expect_err(dataset("{\"name\":\".m\",\"format\":\"idx\",\"path\":\"/d\"}", &d, &e), &e,
               422, "invalid_argument", "name");
    expect_err(dataset("{\"name\":\"m\",\"format\":\"idx\",\"path\":\"d/x\"}", &d, &e), &e,
               422, "invalid_argument", "path");
    assert_non_null(strstr(e.message, "absolute"));
    char *path = repeat("/x", 2100, "", "");
    char *body = xmalloc(strlen(path) + 64);
    sprintf(body, "{\"name\":\"m\",\"format\":\"idx\",\"path\":\"%s\"}", path);
    expect_err(dataset(body, &d, &e), &e, 422, "invalid_argument", "path");
    assert_string_equal(e.message, "path too long");
    assert_null(d.path);
    free(path);
    free(body);
    expect_err(dataset("{\"name\":\"m\",\"format\":\"idx\",\"path\":\"/d\\u0000/etc\"}", &d,
                       &e), &e, 400, "malformed", "");
}

static int submit(const char *text, const char *key, api_job_submit *s, gpp_error *e)
{
    memset(e, 0, sizeof *e);
    return api_parse_job_submit(text, strlen(text), key, s, e);
}

static void test_job_submit(void **state)
{
    (void)state;
    api_job_submit s;
    gpp_error e;
    const char *minimal = "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\"}";
    assert_int_equal(submit(minimal, NULL, &s, &e), 0);
    assert_non_null(s.spec);
    assert_non_null(s.canon);
    assert_int_equal(s.n_stages, gpp_jobspec_stage_count(s.spec));
    assert_int_equal(s.n_stages, 1 + 2 * 10 + 1);  /* train + 10 x (push, prune) + finetune */
    assert_string_equal(s.chain[0].kind, "train");
    assert_string_equal(s.chain[1].kind, "push");
    assert_int_equal(s.chain[1].round, 1);
    assert_string_equal(s.chain[20].kind, "prune");
    assert_int_equal(s.chain[20].round, 10);
    assert_string_equal(s.chain[21].kind, "finetune");
    assert_int_equal(s.chain[21].round, 0);
    assert_string_equal(s.model, "lenet5");
    assert_string_equal(s.device, "any");
    assert_string_equal(s.dataset, "fashion-mnist");
    assert_string_equal(s.first_reason, "waiting_for_worker");
    assert_null(s.idem_key);
    uint8_t d[32];
    gpp_sha256(s.canon, strlen(s.canon), d);
    assert_memory_equal(d, s.spec_sha256, 32);
    api_job_submit_clear(&s);
    assert_null(s.spec);
    api_job_submit_clear(&s);
    api_job_submit_clear(NULL);

    assert_int_equal(submit("{\"dataset\":\"cifar10\",\"model\":{\"checkpoint\":\"j0123456789ab\"},"
                            "\"device\":\"gpu\",\"iterations\":2,"
                            "\"grow\":{\"enabled\":true,\"max_modules\":3}}",
                            "key-1", &s, &e), 0);
    assert_string_equal(s.model, "checkpoint:j0123456789ab");
    assert_string_equal(s.device, "gpu");
    assert_string_equal(s.first_reason, "waiting_for_gpu");
    assert_string_equal(s.idem_key, "key-1");
    /* train (the checkpoint's evaluation), grow x 3, (push, prune) x 2, finetune */
    assert_int_equal(s.n_stages, 1 + 3 + 2 * 2 + 1);
    assert_string_equal(s.chain[0].kind, "train");
    assert_string_equal(s.chain[1].kind, "grow");
    assert_string_equal(s.chain[8].kind, "finetune");
    assert_int_equal(s.n_stages, gpp_jobspec_stage_count(s.spec));
    api_job_submit_clear(&s);

    expect_err(submit(minimal, "has space", &s, &e), &e, 400, "malformed", "Idempotency-Key");
    assert_null(s.spec);
    expect_err(submit(minimal, "", &s, &e), &e, 400, "malformed", "Idempotency-Key");
    char key[300];
    memset(key, 'k', 256);
    key[256] = '\0';
    expect_err(submit(minimal, key, &s, &e), &e, 400, "malformed", "Idempotency-Key");
    key[255] = '\0';
    assert_int_equal(submit(minimal, key, &s, &e), 0);
    api_job_submit_clear(&s);

    expect_err(submit("{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"prune\":{\"ratio\":1.5}}",
                      NULL, &s, &e), &e, 422, "invalid_argument", "prune.ratio");
    assert_null(s.spec);
    expect_err(submit("{\"dataset\":\"x\"", NULL, &s, &e), &e, 400, "malformed", "");
    expect_err(submit("{\"model\":\"lenet5\"}", NULL, &s, &e), &e, 422, "invalid_argument",
               "dataset");
    expect_err(submit("{\"dataset\":\"x\",\"model\":\"lenet5\",\"bogus\":1}", NULL, &s, &e), &e,
               422, "invalid_argument", "bogus");
}

/* ---- query strings ---------------------------------------------------------------- */

static void test_int_param(void **state)
{
    (void)state;
    int64_t v = 0;
    gpp_error e = {0};
    assert_int_equal(api_parse_int_param(NULL, "limit", 1, 10, 7, &v, &e), 0);
    assert_int_equal(v, 7);
    assert_int_equal(api_parse_int_param("10", "limit", 1, 10, 7, &v, &e), 0);
    assert_int_equal(v, 10);
    assert_int_equal(api_parse_int_param("+3", "limit", 1, 10, 7, &v, &e), 0);
    assert_int_equal(v, 3);
    static const char *const bad[] = {"11", "0", "", "1e3", "abc", " 5", "5 ", "-", "0x5",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        expect_err(api_parse_int_param(bad[i], "limit", 1, 10, 7, &v, &e), &e, 400,
                   "malformed", "limit");
        assert_string_equal(e.message, "limit must be a whole number in 1..10");
    }
}

static void test_cursor(void **state)
{
    (void)state;
    char c[400], v[256];
    api_parse_cursor_make('j', "123", c, sizeof c);
    assert_string_equal(c, "ajoxMjM");
    assert_int_equal(api_parse_cursor('j', c, v, sizeof v), 0);
    assert_string_equal(v, "123");
    assert_int_equal(api_parse_cursor('l', c, v, sizeof v), -1);     /* another kind */
    assert_int_equal(api_parse_cursor('j', "ajoxMjN", v, sizeof v), -1);   /* trailing bits */
    assert_int_equal(api_parse_cursor('j', "ajoxMjM=", v, sizeof v), -1);  /* padding */
    assert_int_equal(api_parse_cursor('j', "", v, sizeof v), -1);
    assert_int_equal(api_parse_cursor('j', "ajo", v, sizeof v), -1);       /* "j:" alone */
    assert_int_equal(api_parse_cursor('j', c, v, 3), -1);                  /* value too long */
    assert_int_equal(api_parse_cursor('j', c, v, 4), 0);
    api_parse_cursor_make('d', "a\x01z", c, sizeof c);
    assert_int_equal(api_parse_cursor('d', c, v, sizeof v), 0);
    assert_string_equal(v, "a\x01z");
    /* "d:a\0b" base64url: a NUL in the value is refused */
    assert_int_equal(api_parse_cursor('d', "ZDphAGI", v, sizeof v), -1);
    char big[400];
    memset(big, 'A', 301);
    big[301] = '\0';
    assert_int_equal(api_parse_cursor('d', big, v, sizeof v), -1);
    /* a value over 250 bytes is not made into a cursor; a short buffer gets "" */
    char longv[260];
    memset(longv, 'x', 251);
    longv[251] = '\0';
    api_parse_cursor_make('w', longv, c, sizeof c);
    assert_string_equal(c, "");
    api_parse_cursor_make('w', "abc", c, 4);
    assert_string_equal(c, "");
}

static void test_page(void **state)
{
    (void)state;
    api_page pg;
    gpp_error e = {0};
    char c[64];
    assert_int_equal(api_parse_page(API_PAGE_JOBS, kv_get, NOQUERY, &pg, &e), 0);
    assert_int_equal(pg.limit, 50);
    assert_false(pg.has_cursor);
    assert_int_equal(api_parse_page(API_PAGE_LOGS, kv_get, NOQUERY, &pg, &e), 0);
    assert_int_equal(pg.limit, 1000);
    assert_int_equal(api_parse_page(API_PAGE_TOKENS, kv_get, QUERY("limit", "1000"), &pg, &e), 0);
    assert_int_equal(pg.limit, 1000);
    expect_err(api_parse_page(API_PAGE_JOBS, kv_get, QUERY("limit", "501"), &pg, &e), &e, 400,
               "malformed", "limit");
    expect_err(api_parse_page(API_PAGE_DATASETS, kv_get, QUERY("limit", "0"), &pg, &e), &e, 400,
               "malformed", "limit");
    api_parse_cursor_make('j', "0", c, sizeof c);
    expect_err(api_parse_page(API_PAGE_JOBS, kv_get, QUERY("cursor", c), &pg, &e), &e, 400,
               "malformed", "cursor");      /* job seqs start at 1 */
    api_parse_cursor_make('l', "0", c, sizeof c);
    assert_int_equal(api_parse_page(API_PAGE_LOGS, kv_get, QUERY("cursor", c), &pg, &e), 0);
    assert_true(pg.has_cursor);
    assert_int_equal(pg.after_num, 0);
    api_parse_cursor_make('t', "42", c, sizeof c);
    assert_int_equal(api_parse_page(API_PAGE_TOKENS, kv_get, QUERY("cursor", c), &pg, &e), 0);
    assert_int_equal(pg.after_num, 42);
    api_parse_cursor_make('t', "x", c, sizeof c);
    expect_err(api_parse_page(API_PAGE_TOKENS, kv_get, QUERY("cursor", c), &pg, &e), &e, 400,
               "malformed", "cursor");
    assert_int_equal(pg.after_num, 0);
    api_parse_cursor_make('d', "mnist", c, sizeof c);
    assert_int_equal(api_parse_page(API_PAGE_DATASETS, kv_get, QUERY("cursor", c), &pg, &e), 0);
    assert_string_equal(pg.after, "mnist");
    expect_err(api_parse_page(API_PAGE_WORKERS, kv_get, QUERY("cursor", c), &pg, &e), &e, 400,
               "malformed", "cursor");      /* a data set cursor on workers */
    /* a data set cursor holds at most 64 bytes, a worker one 255 */
    char v[256], cl[400];
    memset(v, 'a', 65);
    v[65] = '\0';
    api_parse_cursor_make('d', v, cl, sizeof cl);
    expect_err(api_parse_page(API_PAGE_DATASETS, kv_get, QUERY("cursor", cl), &pg, &e), &e, 400,
               "malformed", "cursor");
    api_parse_cursor_make('w', v, cl, sizeof cl);
    assert_int_equal(api_parse_page(API_PAGE_WORKERS, kv_get, QUERY("cursor", cl), &pg, &e), 0);
    assert_string_equal(pg.after, v);
    expect_err(api_parse_page((api_page_kind)99, kv_get, NOQUERY, &pg, &e), &e, 500, "internal",
               "");
}

static void test_jobs_query(void **state)
{
    (void)state;
    api_jobs_query q;
    gpp_error e = {0};
    assert_int_equal(api_parse_jobs_query(kv_get, QUERY("state", "running", "owner", "alice",
                                                        "dataset", "mnist", "model", "lenet5"),
                                          &q, &e), 0);
    assert_string_equal(q.state, "running");
    assert_string_equal(q.owner, "alice");
    assert_string_equal(q.dataset, "mnist");
    assert_string_equal(q.model, "lenet5");
    assert_int_equal(q.page.limit, 50);
    assert_int_equal(api_parse_jobs_query(kv_get, NOQUERY, &q, &e), 0);
    assert_null(q.state);
    assert_null(q.owner);
    expect_err(api_parse_jobs_query(kv_get, QUERY("state", "done"), &q, &e), &e, 400,
               "malformed", "state");
    /* limit is checked first, the cursor last */
    expect_err(api_parse_jobs_query(kv_get, QUERY("state", "done", "limit", "0"), &q, &e), &e, 400,
               "malformed", "limit");
    expect_err(api_parse_jobs_query(kv_get, QUERY("state", "done", "cursor", "zz"), &q, &e), &e,
               400, "malformed", "state");
    expect_err(api_parse_jobs_query(kv_get, QUERY("cursor", "zz"), &q, &e), &e, 400, "malformed",
               "cursor");
    char *longv = repeat("o", 4097, "", "");
    expect_err(api_parse_jobs_query(kv_get, QUERY("owner", longv), &q, &e), &e, 400, "malformed",
               "");
    longv[4096] = '\0';
    assert_int_equal(api_parse_jobs_query(kv_get, QUERY("model", longv), &q, &e), 0);
    free(longv);
}

static void test_metrics_query(void **state)
{
    (void)state;
    api_metrics_query q;
    gpp_error e = {0};
    assert_int_equal(api_parse_metrics_query(kv_get, NOQUERY, NULL, &q, &e), 0);
    assert_false(q.csv);
    assert_int_equal(q.stage, -1);
    assert_false(q.has_since);
    assert_int_equal(q.limit, 100000);
    assert_int_equal(q.max_points, 1000);
    assert_int_equal(q.every, 1);
    assert_int_equal(q.n_names, 0);
    assert_int_equal(api_parse_metrics_query(kv_get, QUERY("format", "CSV"), NULL, &q, &e), 0);
    assert_true(q.csv);
    assert_int_equal(q.max_points, 0);
    assert_int_equal(api_parse_metrics_query(kv_get, NOQUERY, "text/csv", &q, &e), 0);
    assert_true(q.csv);
    assert_int_equal(api_parse_metrics_query(kv_get, NOQUERY, "text/csv, application/json", &q,
                                             &e), 0);
    assert_false(q.csv);
    assert_int_equal(api_parse_metrics_query(kv_get, QUERY("format", "json"), "text/csv", &q,
                                             &e), 0);
    assert_false(q.csv);
    expect_err(api_parse_metrics_query(kv_get, QUERY("format", "xml"), NULL, &q, &e), &e, 400,
               "malformed", "format");
    assert_int_equal(api_parse_metrics_query(kv_get, QUERY("name", ",loss,,val/accuracy,",
                                                           "stage", "3", "since", "-5",
                                                           "every", "10"), NULL, &q, &e), 0);
    assert_int_equal(q.n_names, 2);
    assert_string_equal(q.names[0], "loss");
    assert_string_equal(q.names[1], "val/accuracy");
    assert_int_equal(q.stage, 3);
    assert_true(q.has_since);
    assert_int_equal(q.since, -5);
    assert_int_equal(q.every, 10);
    expect_err(api_parse_metrics_query(kv_get, QUERY("name", ",,"), NULL, &q, &e), &e, 400,
               "malformed", "name");
    assert_string_equal(e.message, "name is empty");
    char *n65 = repeat("n", 65, "", "");
    expect_err(api_parse_metrics_query(kv_get, QUERY("name", n65), NULL, &q, &e), &e, 400,
               "malformed", "name");
    free(n65);
    char many[1024] = "";
    for (int i = 0; i < 65; i++)
        sprintf(many + strlen(many), "%sm%d", i ? "," : "", i);
    expect_err(api_parse_metrics_query(kv_get, QUERY("name", many), NULL, &q, &e), &e, 400,
               "malformed", "name");
    assert_int_equal(q.n_names, 0);
    *strrchr(many, ',') = '\0';           /* 64 names are fine */
    assert_int_equal(api_parse_metrics_query(kv_get, QUERY("name", many), NULL, &q, &e), 0);
    assert_int_equal(q.n_names, 64);
    char *huge = repeat("a,", 2100, "", "");
    expect_err(api_parse_metrics_query(kv_get, QUERY("name", huge), NULL, &q, &e), &e, 400,
               "malformed", "name");
    assert_string_equal(e.message, "too many names");
    free(huge);
    static const char *const bad[][2] = {
        {"stage", "100001"}, {"stage", "-1"}, {"since", "-9223372036854775808"},
        {"limit", "0"}, {"limit", "1000001"}, {"max_points", "-1"}, {"every", "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(api_parse_metrics_query(kv_get, QUERY(bad[i][0], bad[i][1]), NULL, &q, &e),
                   &e, 400, "malformed", bad[i][0]);
}

static void test_model_and_events(void **state)
{
    (void)state;
    api_model_query m;
    gpp_error e = {0};
    assert_int_equal(api_parse_model_query(kv_get, NOQUERY, &m, &e), 0);
    assert_false(m.onnx);
    assert_int_equal(m.stage, -1);
    assert_int_equal(api_parse_model_query(kv_get, QUERY("format", "onnx", "stage", "0"), &m, &e),
                     0);
    assert_true(m.onnx);
    assert_int_equal(m.stage, 0);
    assert_int_equal(api_parse_model_query(kv_get, QUERY("format", "gppm"), &m, &e), 0);
    assert_false(m.onnx);
    expect_err(api_parse_model_query(kv_get, QUERY("format", "ONNX"), &m, &e), &e, 400,
               "malformed", "format");
    expect_err(api_parse_model_query(kv_get, QUERY("stage", "x"), &m, &e), &e, 400, "malformed",
               "stage");

    int64_t after = -1;
    assert_int_equal(api_parse_event_start(NULL, NULL, &after, &e), 0);
    assert_int_equal(after, 0);
    assert_int_equal(api_parse_event_start("17", NULL, &after, &e), 0);
    assert_int_equal(after, 17);
    assert_int_equal(api_parse_event_start("", NULL, &after, &e), 0);
    assert_int_equal(after, 0);
    assert_int_equal(api_parse_event_start("17", "40", &after, &e), 0);
    assert_int_equal(after, 40);
    expect_err(api_parse_event_start("-1", NULL, &after, &e), &e, 400, "malformed",
               "Last-Event-ID");
    expect_err(api_parse_event_start("abc", "4", &after, &e), &e, 400, "malformed",
               "Last-Event-ID");
    expect_err(api_parse_event_start(NULL, "", &after, &e), &e, 400, "malformed",
               "last_event_id");
    expect_err(api_parse_event_start("3", "4x", &after, &e), &e, 400, "malformed",
               "last_event_id");
    assert_int_equal(after, 0);
}

/* ---- config file text ------------------------------------------------------------- */

static int conf(gppd_config *c, const char *text, gpp_error *e)
{
    config_defaults(c);
    memset(e, 0, sizeof *e);
    return config_parse_text(c, text, strlen(text), "x.conf", e);
}

static void test_config_text(void **state)
{
    (void)state;
    gppd_config c;
    gpp_error e;
    assert_int_equal(conf(&c, "", &e), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(conf(&c, "# all keys\r\n\r\nlisten=0.0.0.0:0\r\n"
                              "  worker_listen = [::1]:7071  \n"
                              "data-dir = \"/var/lib/gppd\"\n"
                              "web_root = '/srv/web' # the dashboard\n"
                              "local-workers = 2\t# two\n"
                              "worker-grace = 30\n"
                              "upload_quota_mb = 0", &e), 0);
    assert_string_equal(c.listen, "0.0.0.0:0");
    assert_string_equal(c.worker_listen, "[::1]:7071");
    assert_string_equal(c.data_dir, "/var/lib/gppd");
    assert_string_equal(c.web_root, "/srv/web");
    assert_int_equal(c.local_workers, 2);
    assert_int_equal(c.worker_grace, 30);
    assert_int_equal(c.upload_quota_mb, 0);
    assert_int_equal(conf(&c, "", &e), 0);
    assert_int_equal(c.upload_quota_mb, 4096);
    assert_int_equal(conf(&c, "upload-quota-mb = -1\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "upload-quota-mb");
    assert_int_equal(conf(&c, "upload-quota-mb = 1.5\n", &e), GPP_EINVAL);

    assert_int_equal(conf(&c, "listen = 127.0.0.1:1\nbogus = 1\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "bogus");
    assert_string_equal(e.message, "x.conf:2: unknown key 'bogus'");
    assert_string_equal(c.listen, "127.0.0.1:1");        /* the lines before stay applied */
    assert_int_equal(conf(&c, "listen 1.2.3.4:5\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "config");
    assert_non_null(strstr(e.message, "x.conf:1: expected `key = value`"));
    assert_int_equal(conf(&c, " = 0\n", &e), GPP_EINVAL);      /* found by fuzz_config */
    assert_string_equal(e.field, "config");
    assert_non_null(strstr(e.message, "x.conf:1: expected `key = value`"));
    assert_int_equal(conf(&c, "\n\nconfig = /etc/x\n", &e), GPP_EINVAL);
    assert_non_null(strstr(e.message, "x.conf:3:"));
    assert_int_equal(conf(&c, "listen = ::1:80\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "listen");
    /* found by fuzz_config: a valid ADDR:PORT longer than the buffer was cut */
    char longaddr[400];
    snprintf(longaddr, sizeof longaddr, "listen = %0250d:%010d\n", 1, 80);
    assert_int_equal(conf(&c, longaddr, &e), GPP_EINVAL);
    assert_string_equal(e.field, "listen");
    assert_string_equal(c.listen, "127.0.0.1:8080");
    snprintf(longaddr, sizeof longaddr, "listen = %0250d:%03d\n", 1, 80);
    assert_int_equal(conf(&c, longaddr, &e), 0);      /* 254 bytes fit */
    assert_int_equal(strlen(c.listen), 254);
    assert_int_equal(conf(&c, "worker-grace = 0\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "worker-grace");
    assert_int_equal(conf(&c, "local-workers = 257\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "local-workers");
    assert_int_equal(conf(&c, "data-dir = \"\"\n", &e), GPP_EINVAL);
    assert_string_equal(e.field, "data-dir");
    /* a NUL byte is refused, not silently cut */
    config_defaults(&c);
    memset(&e, 0, sizeof e);
    assert_int_equal(config_parse_text(&c, "# x\nlisten = 1.2.3.4:5\0junk\n", 27, "x.conf", &e),
                     GPP_EINVAL);
    assert_string_equal(e.message, "x.conf:2: a NUL byte");
    assert_string_equal(c.listen, "127.0.0.1:8080");
    /* lines: 4096 bytes are fine (\r not counted past it), 4097 are not */
    char *line = repeat("", 0, "web-root = /", "");
    size_t pre = strlen(line);
    char *text = xmalloc(CONFIG_LINE_MAX + 16);
    memcpy(text, line, pre);
    memset(text + pre, 'x', CONFIG_LINE_MAX - pre);
    strcpy(text + CONFIG_LINE_MAX, "\n");
    assert_int_equal(conf(&c, text, &e), 0);
    assert_int_equal(strlen(c.web_root), CONFIG_LINE_MAX - pre + 1);
    memset(text + pre, 'x', CONFIG_LINE_MAX + 1 - pre);
    strcpy(text + CONFIG_LINE_MAX + 1, "\n");
    assert_int_equal(conf(&c, text, &e), GPP_EINVAL);
    assert_string_equal(e.message, "x.conf:1: line longer than 4096 bytes");
    free(line);
    free(text);
    /* a file over CONFIG_FILE_MAX is refused whole */
    char *big = xmalloc(CONFIG_FILE_MAX + 1);
    memset(big, '\n', CONFIG_FILE_MAX + 1);
    config_defaults(&c);
    assert_int_equal(config_parse_text(&c, big, CONFIG_FILE_MAX + 1, "x.conf", &e), GPP_EINVAL);
    assert_non_null(strstr(e.message, "x.conf: larger than"));
    assert_int_equal(config_parse_text(&c, big, CONFIG_FILE_MAX, "x.conf", &e), 0);
    free(big);
}

/* ---- request path, routing, headers (api_route.h) ------------------------------ */

static void test_decode_path(void **state)
{
    (void)state;
    static const struct {
        const char *uri, *want;       /* want NULL: refused */
    } cases[] = {
        {"/api/v1/health", "/api/v1/health"},
        {"/api/v1/jobs?limit=5#x", "/api/v1/jobs"},
        {"/a%20b%2Fc%2e%2E", "/a b/c.."},
        {"/%41%62%7a", "/Abz"},
        {"/%C3%A9", "/\xc3\xa9"},
        {"/", "/"},
        {"/x%", NULL},
        {"/x%4", NULL},
        {"/x%4?", NULL},               /* the escape is cut by the query */
        {"/x%zz", NULL},
        {"/x%g0", NULL},
        {"/a%00b", NULL},              /* an encoded NUL */
        {"api/v1", NULL},
        {"", NULL},
        {"?a=b", NULL},
        {"*", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = api_route_decode_path(cases[i].uri);
        if (cases[i].want) {
            assert_non_null(p);
            assert_string_equal(p, cases[i].want);
        } else {
            assert_null(p);
        }
        free(p);
    }
}

static void test_route_match(void **state)
{
    (void)state;
    char params[API_MAX_PARAMS][API_PARAM_MAX];
    assert_int_equal(api_route_match("/api/v1/jobs", "/api/v1/jobs", params), 0);
    assert_int_equal(api_route_match("/api/v1/jobs", "/api/v1/jobs/", params), -1);
    assert_int_equal(api_route_match("/api/v1/jobs", "/api/v1/job", params), -1);
    assert_int_equal(api_route_match("/api/v1/jobs/{id}/cancel", "/api/v1/jobs/j_7/cancel",
                                     params), 1);
    assert_string_equal(params[0], "j_7");
    assert_int_equal(api_route_match("/api/v1/jobs/{id}", "/api/v1/jobs/j_7/cancel", NULL), -1);
    assert_int_equal(api_route_match("/api/v1/jobs/{id}/logs", "/api/v1/jobs//logs", NULL), -1);
    assert_int_equal(api_route_match("/api/v1/jobs/{id}", "/api/v1/jobs/", NULL), -1);
    assert_int_equal(api_route_match("/a/{x}/b/{y}", "/a/1/b/22", params), 2);
    assert_string_equal(params[0], "1");
    assert_string_equal(params[1], "22");
    assert_int_equal(api_route_match("/{a}/{b}/{c}", "/1/2/3", NULL), -1);   /* > 2 params */
    /* a parameter is 1..127 bytes */
    char path[300];
    snprintf(path, sizeof path, "/api/v1/jobs/%0127d", 7);
    assert_int_equal(api_route_match("/api/v1/jobs/{id}", path, params), 1);
    assert_int_equal(strlen(params[0]), 127);
    snprintf(path, sizeof path, "/api/v1/jobs/%0128d", 7);
    assert_int_equal(api_route_match("/api/v1/jobs/{id}", path, params), -1);
    /* the table: every route matches its own pattern, with its parameters */
    assert_int_equal(api_route_table_size(), api_route_count());
    assert_null(api_route_at(api_route_table_size()));
    for (size_t i = 0; i < api_route_table_size(); i++) {
        const api_route *rt = api_route_at(i);
        const char *m, *pat;
        assert_int_equal(api_route_get(i, &m, &pat), 0);
        assert_string_equal(m, rt->method);
        assert_string_equal(pat, rt->pattern);
        int braces = 0;
        for (const char *c = pat; *c; c++)
            braces += *c == '{';
        assert_int_equal(api_route_match(pat, pat, NULL), braces);
        assert_true(rt->id != API_R_STATIC && rt->id < API_R_COUNT);
        assert_true(!rt->json_body || strcmp(rt->method, "POST") == 0);
    }
}

static void test_route_find(void **state)
{
    (void)state;
    api_route_hit h;
    gpp_error e = {0};
    assert_int_equal(api_route_find("GET", "/api/v1/health", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_HEALTH);
    assert_int_equal(h.route->auth, API_AUTH_NONE);
    assert_int_equal(api_route_find("HEAD", "/api/v1/jobs", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_JOBS_LIST);
    assert_int_equal(api_route_find("POST", "/api/v1/jobs", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_JOBS_SUBMIT);
    assert_true(h.route->json_body);
    assert_int_equal(api_route_find("POST", "/api/v1/workers/w-3/drain", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_WORKER_DRAIN);
    assert_int_equal(h.route->auth, API_AUTH_ADMIN);
    assert_string_equal(h.params[0], "w-3");
    assert_int_equal(api_route_find("DELETE", "/api/v1/tokens/12", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_TOKEN_REVOKE);
    assert_string_equal(h.params[0], "12");
    assert_int_equal(api_route_find("GET", "/api/v1/datasets/mnist", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_DATASET_GET);
    assert_string_equal(h.params[0], "mnist");
    /* 405 with the Allow list */
    assert_int_equal(api_route_find("PUT", "/api/v1/jobs", &h, &e), GPP_ENOTFOUND);
    assert_null(h.route);
    assert_int_equal(h.status, 405);
    assert_string_equal(e.code, "method_not_allowed");
    assert_string_equal(e.field, "GET, POST");
    assert_string_equal(e.message, "PUT is not allowed on /api/v1/jobs (allowed: GET, POST)");
    assert_int_equal(api_route_find("GET", "/api/v1/jobs/j_1/cancel", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 405);
    assert_string_equal(e.field, "POST");
    /* 404 under /api only */
    assert_int_equal(api_route_find("GET", "/api/v1/nope", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 404);
    assert_string_equal(e.code, "not_found");
    assert_string_equal(e.field, "");
    assert_string_equal(e.message, "no such endpoint: /api/v1/nope");
    assert_int_equal(api_route_find("GET", "/api", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 404);
    assert_int_equal(api_route_find("GET", "/api/v1/jobs//logs", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 404);
    /* the rest is the dashboard: GET / HEAD only */
    assert_int_equal(api_route_find("GET", "/apix", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_STATIC);
    assert_int_equal(api_route_find("HEAD", "/index.html", &h, &e), 0);
    assert_int_equal(h.route->id, API_R_STATIC);
    assert_int_equal(api_route_find("POST", "/index.html", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 405);
    assert_string_equal(e.field, "GET, HEAD");
    /* bytes that are not UTF-8 never reach the JSON message (found writing
     * fuzz_route: they went into the reply raw) */
    assert_int_equal(api_route_find("G\xff", "/api/\xc3\x28\xe2\x82\xac", &h, &e), GPP_ENOTFOUND);
    assert_int_equal(h.status, 404);
    assert_string_equal(e.message, "no such endpoint: /api/?(\xe2\x82\xac");
    assert_int_equal(api_route_find("G\xff", "/x", &h, &e), GPP_ENOTFOUND);
    assert_string_equal(e.message, "G? is not allowed on /x (allowed: GET, HEAD)");
    /* a long path is cut at a character boundary */
    char path[700] = "/api/";
    for (int i = 0; i < 200; i++)
        strcat(path, "\xe2\x82\xac");
    assert_int_equal(api_route_find("GET", path, &h, &e), GPP_ENOTFOUND);
    size_t ml = strlen(e.message);
    assert_true(ml < 260);
    assert_string_equal(e.message + ml - 6, "\xe2\x82\xac...");
}

static void test_static_rel(void **state)
{
    (void)state;
    char rel[4096];
    assert_int_equal(api_route_static_rel("/", rel, sizeof rel), 0);
    assert_string_equal(rel, "index.html");
    assert_int_equal(api_route_static_rel("/js/app.js", rel, sizeof rel), 0);
    assert_string_equal(rel, "js/app.js");
    assert_int_equal(api_route_static_rel("/docs/", rel, sizeof rel), 0);
    assert_string_equal(rel, "docs/index.html");
    assert_int_equal(api_route_static_rel("/a..b/.c", rel, sizeof rel), 0);
    assert_string_equal(rel, "a..b/.c");
    static const char *const bad[] = {
        "/..", "/../etc/passwd", "/js/../../x", "/.", "/./index.html", "//etc/passwd",
        "/a//b", "/a\\..\\b", "/js/..", "nope",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(api_route_static_rel(bad[i], rel, sizeof rel), -1);
    /* too long for the buffer (room for "index.html" is kept) */
    char small[20];
    assert_int_equal(api_route_static_rel("/abc", small, sizeof small), 0);
    assert_int_equal(api_route_static_rel("/abcd", small, sizeof small), -1);
}

static void test_bearer_and_headers(void **state)
{
    (void)state;
    char tok[TOKEN_TEXT_LEN + 1];
    assert_int_equal(token_generate("user", tok), 0);
    assert_string_equal(token_check(tok, strlen(tok)), "user");
    char h[200];
    const char *t = NULL;
    size_t len = 0;
    gpp_error e = {0};
    snprintf(h, sizeof h, "Bearer %s", tok);
    assert_int_equal(api_route_bearer(h, &t, &len, &e), 0);
    assert_ptr_equal(t, h + 7);
    assert_int_equal(len, TOKEN_TEXT_LEN);
    snprintf(h, sizeof h, "bEaReR    %s   ", tok);
    assert_int_equal(api_route_bearer(h, &t, &len, &e), 0);
    assert_ptr_equal(t, h + 10);
    assert_int_equal(len, TOKEN_TEXT_LEN);
    assert_int_equal(api_route_bearer(NULL, &t, &len, &e), GPP_EFORMAT);
    assert_string_equal(e.code, "unauthenticated");
    assert_string_equal(e.message, "missing Authorization: Bearer TOKEN");
    static const char *const shape[] = {"Basic dXNlcjpwYXNz", "Bearer", "Bearer\tx", "",
                                        "Token gpp_usr_x"};
    for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++) {
        assert_int_equal(api_route_bearer(shape[i], &t, &len, &e), GPP_EFORMAT);
        assert_string_equal(e.message, "the Authorization header must be `Bearer TOKEN`");
    }
    snprintf(h, sizeof h, "Bearer %s%s", tok, "x");                  /* too long */
    assert_int_equal(api_route_bearer(h, &t, &len, &e), GPP_EFORMAT);
    assert_string_equal(e.message, "malformed token");
    snprintf(h, sizeof h, "Bearer %.50s", tok);                       /* too short */
    assert_int_equal(api_route_bearer(h, &t, &len, &e), GPP_EFORMAT);
    snprintf(h, sizeof h, "Bearer gpp_xyz_%s", tok + 8);              /* unknown role */
    assert_int_equal(api_route_bearer(h, &t, &len, &e), GPP_EFORMAT);
    snprintf(h, sizeof h, "Bearer %.20s!%s", tok, tok + 21);          /* not base64url */
    assert_int_equal(api_route_bearer(h, &t, &len, &e), GPP_EFORMAT);
    assert_int_equal(api_route_bearer("Bearer  ", &t, &len, &e), GPP_EFORMAT);
    assert_string_equal(e.message, "malformed token");
    /* Content-Type */
    assert_true(api_route_is_json("application/json"));
    assert_true(api_route_is_json("  Application/JSON ; charset=utf-8"));
    assert_true(api_route_is_json("application/json;"));
    assert_false(api_route_is_json(NULL));
    assert_false(api_route_is_json(""));
    assert_false(api_route_is_json("application/jsonx"));
    assert_false(api_route_is_json("application/json, text/plain"));
    assert_false(api_route_is_json("text/plain"));
    assert_false(api_route_is_json("\tapplication/json"));
    /* Content-Length */
    int64_t n = 0;
    assert_false(api_route_body_too_big(NULL, API_BODY_MAX, &n));
    assert_false(api_route_body_too_big("1048576", API_BODY_MAX, &n));
    assert_true(api_route_body_too_big("1048577", API_BODY_MAX, &n));
    assert_int_equal(n, 1048577);
    assert_true(api_route_body_too_big("+2000000", API_BODY_MAX, &n));
    assert_int_equal(n, 2000000);
    assert_false(api_route_body_too_big("-5", API_BODY_MAX, &n));
    assert_false(api_route_body_too_big("12x", 0, &n));
    assert_false(api_route_body_too_big(" 9999999", 0, &n));
    assert_false(api_route_body_too_big("99999999999999999999", 0, &n));   /* overflow */
    assert_true(api_route_body_too_big("9223372036854775807", 0, &n));
    assert_int_equal(n, INT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_object),
        cmocka_unit_test(test_token_issue),
        cmocka_unit_test(test_dataset_register),
        cmocka_unit_test(test_job_submit),
        cmocka_unit_test(test_int_param),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_page),
        cmocka_unit_test(test_jobs_query),
        cmocka_unit_test(test_metrics_query),
        cmocka_unit_test(test_model_and_events),
        cmocka_unit_test(test_config_text),
        cmocka_unit_test(test_decode_path),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_route_find),
        cmocka_unit_test(test_static_rel),
        cmocka_unit_test(test_bearer_and_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
