/* daemon/api_parse.c - see api_parse.h. */
#include "api_parse.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gpp/sha256.h"
#include "util.h"

#define JOBS_LIMIT_DEFAULT 50
#define JOBS_LIMIT_MAX 500
#define LOGS_LIMIT_DEFAULT 1000
#define LOGS_LIMIT_MAX 10000
#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000
#define METRICS_LIMIT_DEFAULT 100000
#define METRICS_LIMIT_MAX 1000000
#define METRICS_MAX_POINTS_DEFAULT 1000
#define STAGE_MAX 100000
#define CURSOR_VALUE_MAX 250

unsigned api_parse_status(int rc)
{
    switch (rc) {
    case GPP_EFORMAT: return 400;
    case GPP_EINVAL: return 422;
    case GPP_ETOOBIG: return 413;
    default: return 500;
    }
}

/* ---- text helpers ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* Copy at most `max` bytes of s into out (n bytes) for a message: whole
 * UTF-8 characters only, '?' for control characters and bytes that are not
 * UTF-8, "..." when cut. */
static void excerpt(const char *s, size_t max, char *out, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), o = 0;
    if (max + 4 > n)
        max = n > 4 ? n - 4 : 0;
    size_t i = 0;
    while (i < len) {
        size_t k = utf8_seq(p + i, len - i);
        size_t w = k ? k : 1;
        if (o + (k ? k : 1) > max)
            break;
        if (k == 0 || (k == 1 && (p[i] < 0x20 || p[i] == 0x7f))) {
            out[o++] = '?';
        } else {
            memcpy(out + o, p + i, k);
            o += k;
        }
        i += w;
    }
    if (i < len && o + 3 < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    if (n)
        out[o < n ? o : n - 1] = '\0';
}

/* ---- JSON bodies --------------------------------------------------------------------- */

/* NUL bytes, \u0000 escapes (cJSON would silently truncate the string) and
 * the nesting depth, as the API's errors. */
static int scan_body(const char *t, size_t n, gpp_error *err)
{
    size_t i = 0;
    switch (gpp_json_scan(t, n, API_PARSE_JSON_DEPTH, &i)) {
    case GPP_JSON_NUL:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "the body is not valid JSON: a NUL byte at byte %zu", i);
    case GPP_JSON_NUL_ESCAPE:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "the body holds \\u0000 in a string at byte %zu", i);
    case GPP_JSON_TOO_DEEP:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "the JSON body is nested deeper than %d levels",
                             API_PARSE_JSON_DEPTH);
    case GPP_JSON_OK:
        break;
    }
    return 0;
}

int api_parse_body_object(const char *body, size_t len, cJSON **out, gpp_error *err)
{
    *out = NULL;
    if (!body)
        body = "";
    int rc = scan_body(body, len, err);
    if (rc != 0)
        return rc;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (v && end) {
        while (end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
            end++;
        if (end != body + len) {
            cJSON_Delete(v);
            v = NULL;
        }
    }
    if (!v)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "the body is not valid JSON");
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "the body must be a JSON object");
    }
    *out = v;
    return 0;
}

/* Only these keys may appear in o; GPP_EINVAL naming the first other. */
static int only_keys(const cJSON *o, const char *const *keys, gpp_error *err)
{
    for (const cJSON *it = o->child; it; it = it->next) {
        bool ok = false;
        for (size_t i = 0; keys[i] && !ok; i++)
            ok = it->string && strcmp(it->string, keys[i]) == 0;
        if (!ok) {
            char name[104];
            excerpt(it->string ? it->string : "", 100, name, sizeof name);
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", name,
                                 "unknown field '%s'", name);
        }
    }
    return 0;
}

/* A string field: *out NULL when absent and not required. */
static int str_field(const cJSON *o, const char *key, bool required, const char **out,
                     gpp_error *err)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v && !required)
        return 0;
    if (!cJSON_IsString(v) || !v->valuestring)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key, "%s must be a string",
                             key);
    *out = v->valuestring;
    return 0;
}

/* A token name: 1..64 of [A-Za-z0-9_.-] (store.c checks the same). */
static bool token_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > STORE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int api_parse_token_issue(const char *body, size_t len, api_token_req *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *o = NULL;
    int rc = api_parse_body_object(body, len, &o, err);
    if (rc != 0)
        return rc;
    static const char *const keys[] = {"name", "role", NULL};
    const char *name = NULL, *role = NULL;
    rc = only_keys(o, keys, err);
    if (rc == 0)
        rc = str_field(o, "name", true, &name, err);
    if (rc == 0)
        rc = str_field(o, "role", false, &role, err);
    if (rc != 0)
        goto out;
    if (!role)
        role = "user";
    if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0 && strcmp(role, "worker") != 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "role",
                           "role must be \"user\", \"admin\" or \"worker\"");
        goto out;
    }
    if (!token_name_ok(name)) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "name",
                           "a token name is 1..64 characters of [A-Za-z0-9_.-]");
        goto out;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->role, sizeof out->role, "%s", role);
out:
    cJSON_Delete(o);
    return rc;
}

static bool dataset_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > STORE_NAME_MAX ||
        !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

int api_parse_dataset_register(const char *body, size_t len, api_dataset_req *out,
                               gpp_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *o = NULL;
    int rc = api_parse_body_object(body, len, &o, err);
    if (rc != 0)
        return rc;
    static const char *const keys[] = {"name", "format", "path", NULL};
    const char *name = NULL, *format = NULL, *path = NULL;
    rc = only_keys(o, keys, err);
    if (rc == 0)
        rc = str_field(o, "name", true, &name, err);
    if (rc == 0)
        rc = str_field(o, "format", true, &format, err);
    if (rc == 0)
        rc = str_field(o, "path", true, &path, err);
    if (rc != 0)
        goto out;
    if (!dataset_name_ok(name)) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "name",
                           "a data set name is [a-z0-9][a-z0-9._-]{0,63}");
        goto out;
    }
    /* the first checks of dataset_inspect, which repeats them */
    if (path[0] != '/') {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path",
                           "path must be an absolute folder on the daemon host");
        goto out;
    }
    if (strlen(path) >= PATH_MAX - 64) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "path", "path too long");
        goto out;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    out->format = strdup(format);
    out->path = strdup(path);
    if (!out->format || !out->path) {
        api_dataset_req_clear(out);
        rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    }
out:
    cJSON_Delete(o);
    return rc;
}

void api_dataset_req_clear(api_dataset_req *d)
{
    if (!d)
        return;
    free(d->format);
    free(d->path);
    memset(d, 0, sizeof *d);
}

/* The stage chain: train (for a trained checkpoint: its evaluation, the
 * baseline), the grow steps, then iterations x (push, prune), then the final
 * recovery (finetune, skipped unless the loop ends before its last prune).
 * Returns the count. */
static int build_chain(const gpp_jobspec *spec, store_stage_new *out, int cap)
{
    int n = 0;
    if (n < cap)
        out[n++] = (store_stage_new){"train", 0};
    if (spec->grow.enabled)
        for (int i = 1; i <= spec->grow.max_modules && n < cap; i++)
            out[n++] = (store_stage_new){"grow", i};
    for (int i = 1; i <= spec->iterations && n + 1 < cap; i++) {
        out[n++] = (store_stage_new){"push", i};
        out[n++] = (store_stage_new){"prune", i};
    }
    if (gpp_jobspec_has_finetune(spec) && n < cap)
        out[n++] = (store_stage_new){"finetune", 0};
    return n;
}

static bool idem_key_ok(const char *key)
{
    size_t kl = strlen(key);
    bool ok = kl > 0 && kl <= API_PARSE_IDEM_KEY_MAX;
    for (size_t i = 0; ok && i < kl; i++)
        ok = key[i] > 0x20 && key[i] < 0x7f;
    return ok;
}

int api_parse_job_submit(const char *body, size_t len, const char *idem_key,
                         api_job_submit *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    if (idem_key && !idem_key_ok(idem_key))
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "Idempotency-Key",
                             "Idempotency-Key must be 1..%d visible ASCII characters",
                             API_PARSE_IDEM_KEY_MAX);
    gpp_error e = {0};
    int rc = gpp_jobspec_parse(body ? body : "", len, &out->spec, &e);
    if (rc != 0) {
        out->spec = NULL;
        const char *msg = e.message[0] ? e.message : "invalid job spec";
        if (rc == GPP_EINVAL)
            return gpp_error_set(err, rc, e.code[0] ? e.code : "invalid_argument", e.field,
                                 "%s", msg);
        if (rc == GPP_ETOOBIG || rc == GPP_EFORMAT)
            return gpp_error_set(err, rc, rc == GPP_ETOOBIG ? "too_large" : "malformed",
                                 e.field, "%s", msg);
        return gpp_error_set(err, GPP_ENOMEM, "internal", e.field, "%s", msg);
    }
    const gpp_jobspec *spec = out->spec;
    out->canon = gpp_jobspec_to_json(spec);
    if (!out->canon) {
        api_job_submit_clear(out);
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    }
    gpp_sha256(out->canon, strlen(out->canon), out->spec_sha256);
    out->idem_key = idem_key;
    out->n_stages = build_chain(spec, out->chain, API_PARSE_CHAIN_MAX);
    if (spec->model_kind == GPP_MODEL_ZOO)
        snprintf(out->model, sizeof out->model, "%s", spec->model_zoo);
    else if (spec->model_kind == GPP_MODEL_INLINE)
        snprintf(out->model, sizeof out->model, "inline");
    else
        snprintf(out->model, sizeof out->model, "checkpoint:%s", spec->model_checkpoint);
    out->device = spec->device == GPP_DEVICE_CPU ? "cpu"
                : spec->device == GPP_DEVICE_GPU ? "gpu" : "any";
    out->dataset = spec->dataset_kind == GPP_DATASET_NAME ? spec->dataset_name
                                                          : spec->dataset_path;
    out->first_reason = spec->device == GPP_DEVICE_GPU ? "waiting_for_gpu"
                                                       : "waiting_for_worker";
    return 0;
}

void api_job_submit_clear(api_job_submit *s)
{
    if (!s)
        return;
    gpp_jobspec_free(s->spec);
    free(s->canon);
    memset(s, 0, sizeof *s);
}

/* ---- query strings ----------------------------------------------------------------- */

int api_parse_int_param(const char *value, const char *name, int64_t lo, int64_t hi,
                        int64_t def, int64_t *out, gpp_error *err)
{
    if (!value) {
        *out = def;
        return 0;
    }
    if (gpp__parse_i64(value, lo, hi, out) != 0)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", name,
                             "%s must be a whole number in %lld..%lld", name, (long long)lo,
                             (long long)hi);
    return 0;
}

void api_parse_cursor_make(char kind, const char *value, char *out, size_t n)
{
    char raw[256];
    int len = snprintf(raw, sizeof raw, "%c:%s", kind, value);
    if (len < 0 || (size_t)len >= sizeof raw || strlen(value) > CURSOR_VALUE_MAX ||
        n < ((size_t)len + 2) / 3 * 4 + 1) {
        if (n)
            out[0] = '\0';
        return;
    }
    gpp__base64url((const uint8_t *)raw, (size_t)len, out);
}

int api_parse_cursor(char kind, const char *cursor, char *value, size_t n)
{
    uint8_t raw[256];
    size_t clen = strlen(cursor);
    if (clen == 0 || clen > API_PARSE_CURSOR_MAX)
        return -1;
    long len = gpp__base64url_decode(cursor, clen, raw, sizeof raw - 1);
    if (len < 3 || raw[0] != (uint8_t)kind || raw[1] != ':')
        return -1;
    if ((size_t)len - 2 >= n || memchr(raw + 2, '\0', (size_t)len - 2))
        return -1;
    memcpy(value, raw + 2, (size_t)len - 2);
    value[len - 2] = '\0';
    return 0;
}

static const struct page_rule {
    char kind;
    int64_t limit_max, limit_def;
    bool numeric;
    int64_t num_min;      /* numeric cursors */
    size_t text_cap;      /* text cursors: value buffer size (value < it) */
} page_rules[] = {
    [API_PAGE_JOBS] = {'j', JOBS_LIMIT_MAX, JOBS_LIMIT_DEFAULT, true, 1, 64},
    [API_PAGE_LOGS] = {'l', LOGS_LIMIT_MAX, LOGS_LIMIT_DEFAULT, true, 0, 32},
    [API_PAGE_TOKENS] = {'t', LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, true, 0, 32},
    [API_PAGE_DATASETS] = {'d', LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, false, 0, STORE_NAME_MAX + 1},
    [API_PAGE_WORKERS] = {'w', LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, false, 0, 256},
    [API_PAGE_MODELS] = {'m', LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, true, 0, 32},
};

static int page_limit(const struct page_rule *pr, api_query_fn get, void *ctx, api_page *out,
                      gpp_error *err)
{
    return api_parse_int_param(get(ctx, "limit"), "limit", 1, pr->limit_max, pr->limit_def,
                               &out->limit, err);
}

static int page_cursor(const struct page_rule *pr, api_query_fn get, void *ctx, api_page *out,
                       gpp_error *err)
{
    const char *cursor = get(ctx, "cursor");
    if (!cursor)
        return 0;
    char v[256];
    bool ok = api_parse_cursor(pr->kind, cursor, v, pr->text_cap) == 0;
    if (ok && pr->numeric)
        ok = gpp__parse_i64(v, pr->num_min, INT64_MAX, &out->after_num) == 0;
    if (!ok) {
        out->after_num = 0;
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "cursor",
                             "cursor is not one this server gave out");
    }
    if (!pr->numeric)
        snprintf(out->after, sizeof out->after, "%s", v);
    out->has_cursor = true;
    return 0;
}

int api_parse_page(api_page_kind kind, api_query_fn get, void *ctx, api_page *out,
                   gpp_error *err)
{
    memset(out, 0, sizeof *out);
    if ((unsigned)kind >= sizeof page_rules / sizeof page_rules[0])
        return gpp_error_set(err, GPP_EIO, "internal", "", "unknown list kind %d", (int)kind);
    const struct page_rule *pr = &page_rules[kind];
    int rc = page_limit(pr, get, ctx, out, err);
    if (rc == 0)
        rc = page_cursor(pr, get, ctx, out, err);
    return rc;
}

static const char *const job_states[] = {"queued", "running", "succeeded", "failed",
                                         "cancelled"};
_Static_assert(sizeof job_states / sizeof job_states[0] == STORE_JOB_NSTATES,
               "the job states of store.h");

int api_parse_jobs_query(api_query_fn get, void *ctx, api_jobs_query *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    const struct page_rule *pr = &page_rules[API_PAGE_JOBS];
    int rc = page_limit(pr, get, ctx, &out->page, err);
    if (rc != 0)
        return rc;
    out->state = get(ctx, "state");
    out->owner = get(ctx, "owner");
    out->dataset = get(ctx, "dataset");
    out->model = get(ctx, "model");
    if (out->state) {
        bool ok = false;
        for (size_t i = 0; i < STORE_JOB_NSTATES; i++)
            ok |= strcmp(out->state, job_states[i]) == 0;
        if (!ok)
            return gpp_error_set(err, GPP_EFORMAT, "malformed", "state", "state must be one of"
                                 " queued, running, succeeded, failed, cancelled");
    }
    const char *strs[] = {out->owner, out->dataset, out->model};
    for (size_t i = 0; i < 3; i++)
        if (strs[i] && strlen(strs[i]) > API_PARSE_FILTER_MAX)
            return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "a filter value is too long");
    return page_cursor(pr, get, ctx, &out->page, err);
}

int api_parse_metrics_query(api_query_fn get, void *ctx, const char *accept,
                            api_metrics_query *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    const char *fmt = get(ctx, "format");
    if (fmt && strcasecmp(fmt, "csv") != 0 && strcasecmp(fmt, "json") != 0)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "format",
                             "format must be json or csv");
    if (fmt)
        out->csv = strcasecmp(fmt, "csv") == 0;
    else
        out->csv = accept && strstr(accept, "text/csv") && !strstr(accept, "application/json");
    int64_t since;
    int rc = api_parse_int_param(get(ctx, "stage"), "stage", 0, STAGE_MAX, -1, &out->stage, err);
    if (rc == 0)
        rc = api_parse_int_param(get(ctx, "since"), "since", INT64_MIN + 1, INT64_MAX, INT64_MIN,
                                 &since, err);
    if (rc == 0)
        rc = api_parse_int_param(get(ctx, "limit"), "limit", 1, METRICS_LIMIT_MAX,
                                 METRICS_LIMIT_DEFAULT, &out->limit, err);
    if (rc == 0)
        rc = api_parse_int_param(get(ctx, "max_points"), "max_points", 0, METRICS_LIMIT_MAX,
                                 out->csv ? 0 : METRICS_MAX_POINTS_DEFAULT, &out->max_points,
                                 err);
    if (rc == 0)
        rc = api_parse_int_param(get(ctx, "every"), "every", 1, METRICS_LIMIT_MAX, 1,
                                 &out->every, err);
    if (rc != 0)
        return rc;
    out->has_since = since != INT64_MIN;
    out->since = out->has_since ? since : 0;
    /* name=a,b,c (or repeated commas); each a metric name */
    const char *q = get(ctx, "name");
    if (!q)
        return 0;
    if (strlen(q) >= sizeof out->names)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "name", "too many names");
    for (const char *p = q; *p;) {
        size_t k = strcspn(p, ",");
        if (k > 0) {
            if (out->n_names == STORE_METRIC_NAMES_MAX || k > STORE_NAME_MAX) {
                out->n_names = 0;
                return gpp_error_set(err, GPP_EFORMAT, "malformed", "name",
                                     "at most %d names of up to %d characters",
                                     STORE_METRIC_NAMES_MAX, STORE_NAME_MAX);
            }
            memcpy(out->names[out->n_names], p, k);
            out->names[out->n_names][k] = '\0';
            out->n_names++;
        }
        p += k;
        if (*p == ',')
            p++;
    }
    if (out->n_names == 0)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "name", "name is empty");
    return 0;
}

int api_parse_model_query(api_query_fn get, void *ctx, api_model_query *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    const char *fmt = get(ctx, "format");
    if (fmt && strcmp(fmt, "onnx") == 0)
        out->onnx = true;
    else if (fmt && strcmp(fmt, "gppm") != 0)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "format",
                             "format must be gppm or onnx");
    return api_parse_int_param(get(ctx, "stage"), "stage", 0, STAGE_MAX, -1, &out->stage, err);
}

int api_parse_event_start(const char *header, const char *query, int64_t *after,
                          gpp_error *err)
{
    *after = 0;
    if (header && *header && gpp__parse_i64(header, 0, INT64_MAX, after) != 0) {
        *after = 0;
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "Last-Event-ID",
                             "Last-Event-ID must be an event id this server sent");
    }
    if (query && gpp__parse_i64(query, 0, INT64_MAX, after) != 0) {
        *after = 0;
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "last_event_id",
                             "last_event_id must be a whole number");
    }
    return 0;
}
