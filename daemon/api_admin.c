/* daemon/api_admin.c - /api/v1/tokens, /api/v1/datasets, /api/v1/workers. */
#include "api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets.h"
#include "log.h"
#include "tokens.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

/* Only these keys may appear in a body object; 422 naming the first other. */
static int only_keys(api_req *r, const cJSON *o, const char *const *keys,
                     enum MHD_Result *reply)
{
    for (const cJSON *it = o->child; it; it = it->next) {
        bool ok = false;
        for (size_t i = 0; keys[i] && !ok; i++)
            ok = it->string && strcmp(it->string, keys[i]) == 0;
        if (!ok) {
            *reply = api__reply_error(r, 422, "invalid_argument", it->string ? it->string : "",
                                      "unknown field '%.100s'", it->string ? it->string : "");
            return -1;
        }
    }
    return 0;
}

/* A required/optional string field: NULL when absent (or 422 if required
 * or not a string, in *reply with *bad set). */
static const char *str_field(api_req *r, const cJSON *o, const char *key, bool required,
                             bool *bad, enum MHD_Result *reply)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v && !required)
        return NULL;
    if (!cJSON_IsString(v) || !v->valuestring) {
        *bad = true;
        *reply = api__reply_error(r, 422, "invalid_argument", key, "%s must be a string", key);
        return NULL;
    }
    return v->valuestring;
}

static int list_limit(api_req *r, int64_t *limit, enum MHD_Result *reply)
{
    return api__query_int(r, "limit", 1, LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, limit, reply);
}

static void add_cursor(cJSON *o, bool more, char kind, const char *value)
{
    if (more) {
        char c[300];
        api__cursor_make(kind, value, c, sizeof c);
        cJSON_AddStringToObject(o, "next_cursor", c);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
}

/* ---- tokens ------------------------------------------------------------------ */

static cJSON *token_json(const store_token *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", t->public_id);
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "role", t->role);
    cJSON_AddStringToObject(o, "prefix", t->prefix);
    cJSON_AddItemToObject(o, "created_at", api__time(t->created_at));
    cJSON_AddItemToObject(o, "revoked_at", api__time(t->revoked_at));
    cJSON_AddBoolToObject(o, "active", t->revoked_at == 0);
    return o;
}

enum MHD_Result api__tokens_list(api_req *r)
{
    enum MHD_Result reply;
    int64_t limit, after = 0;
    if (list_limit(r, &limit, &reply) != 0)
        return reply;
    const char *cursor = api__query(r, "cursor");
    if (cursor) {
        char v[32];
        if (api__cursor_parse('t', cursor, v, sizeof v) != 0 ||
            gpp__parse_i64(v, 0, INT64_MAX, &after) != 0)
            return api__reply_error(r, 400, "malformed", "cursor",
                                    "cursor is not one this server gave out");
    }
    store_token *toks = NULL;
    size_t n = 0;
    bool more = false;
    gpp_error e = {0};
    if (store_token_list(r->d->store, after, (int)limit, &toks, &n, &more, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, token_json(&toks[i]));
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)(n ? toks[n - 1].id : 0));
    add_cursor(o, more && n > 0, 't', v);
    free(toks);
    return api__reply_json(r, 200, o, NULL);
}

enum MHD_Result api__tokens_issue(api_req *r)
{
    enum MHD_Result reply;
    cJSON *body = api__body_object(r, &reply);
    if (!body)
        return reply;
    static const char *const keys[] = {"name", "role", NULL};
    bool bad = false;
    const char *name = NULL, *role = NULL;
    if (only_keys(r, body, keys, &reply) != 0)
        goto bad;
    name = str_field(r, body, "name", true, &bad, &reply);
    if (bad)
        goto bad;
    role = str_field(r, body, "role", false, &bad, &reply);
    if (bad)
        goto bad;
    if (!role)
        role = "user";
    if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0 && strcmp(role, "worker") != 0) {
        reply = api__reply_error(r, 422, "invalid_argument", "role",
                                 "role must be \"user\", \"admin\" or \"worker\"");
        goto bad;
    }
    gpp_error e = {0};
    /* a name belongs to one role: a user named like the admin would see its jobs */
    static const char *const roles[] = {"admin", "user", "worker"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(roles[i], role) == 0)
            continue;
        int64_t c = store_token_count(r->d->store, roles[i], name, false, &e);
        if (c < 0) {
            reply = api__reply_gpp(r, &e);
            goto bad;
        }
        if (c > 0) {
            reply = api__reply_error(r, 409, "conflict", "name",
                                     "the name '%.64s' belongs to %s tokens", name, roles[i]);
            goto bad;
        }
    }
    char text[TOKEN_TEXT_LEN + 1], prefix[TOKEN_PREFIX_LEN + 1];
    uint8_t hash[32];
    if (token_generate(role, text) != 0) {
        reply = api__reply_error(r, 503, "unavailable", "", "no randomness available");
        goto bad;
    }
    memcpy(prefix, text, TOKEN_PREFIX_LEN);
    prefix[TOKEN_PREFIX_LEN] = '\0';
    token_hash(text, strlen(text), hash);
    store_token t;
    if (store_token_insert(r->d->store, name, role, hash, prefix, r->who.token_id, &t, &e) != 0) {
        memset(text, 0, sizeof text);
        if (strcmp(e.code, "invalid_argument") == 0)
            reply = api__reply_error(r, 422, "invalid_argument", e.field, "%s", e.message);
        else
            reply = api__reply_gpp(r, &e);
        goto bad;
    }
    cJSON_Delete(body);
    log_info("token issued", "id=%s name=%s role=%s by=%s", t.public_id, t.name, t.role,
             r->who.name);
    cJSON *o = token_json(&t);
    cJSON_AddStringToObject(o, "token", text);   /* shown once, never stored */
    memset(text, 0, sizeof text);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/tokens/%s", t.public_id);
    const char *h[] = {"Location", loc, NULL};
    return api__reply_json(r, 201, o, h);
bad:
    cJSON_Delete(body);
    return reply;
}

enum MHD_Result api__token_revoke(api_req *r)
{
    store_token t;
    gpp_error e = {0};
    if (store_token_revoke(r->d->store, r->params[0], &t, &e) != 0)
        return api__reply_gpp(r, &e);
    log_info("token revoked", "id=%s name=%s by=%s", t.public_id, t.name, r->who.name);
    return api__reply_json(r, 200, token_json(&t), NULL);
}

/* ---- data sets ------------------------------------------------------------------ */

static cJSON *dataset_json(const store_dataset *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", d->name);
    cJSON_AddStringToObject(o, "format", d->format);
    cJSON_AddStringToObject(o, "path", d->path ? d->path : "");
    cJSON_AddItemToObject(o, "sha256", d->sha256 ? cJSON_CreateString(d->sha256)
                                                 : cJSON_CreateNull());
    cJSON *info = d->info ? cJSON_Parse(d->info) : NULL;
    static const char *const keys[] = {"classes", "train", "test", "files"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(info, keys[i]);
        cJSON_AddItemToObject(o, keys[i], v ? v : cJSON_CreateNull());
    }
    cJSON_Delete(info);
    cJSON_AddItemToObject(o, "created_at", api__time(d->created_at));
    cJSON_AddStringToObject(o, "created_by", d->created_by ? d->created_by : "");
    return o;
}

enum MHD_Result api__datasets_list(api_req *r)
{
    enum MHD_Result reply;
    int64_t limit;
    if (list_limit(r, &limit, &reply) != 0)
        return reply;
    char after[STORE_NAME_MAX + 1] = "";
    const char *cursor = api__query(r, "cursor");
    if (cursor && api__cursor_parse('d', cursor, after, sizeof after) != 0)
        return api__reply_error(r, 400, "malformed", "cursor",
                                "cursor is not one this server gave out");
    store_dataset *ds = NULL;
    size_t n = 0;
    bool more = false;
    gpp_error e = {0};
    if (store_dataset_list(r->d->store, after, (int)limit, &ds, &n, &more, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "datasets");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, dataset_json(&ds[i]));
    add_cursor(o, more && n > 0, 'd', n ? ds[n - 1].name : "");
    store_dataset_free(ds, n);
    return api__reply_json(r, 200, o, NULL);
}

enum MHD_Result api__dataset_get(api_req *r)
{
    store_dataset d;
    gpp_error e = {0};
    if (store_dataset_get(r->d->store, r->params[0], &d, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = dataset_json(&d);
    store_dataset_clear(&d);
    return api__reply_json(r, 200, o, NULL);
}

static bool dataset_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

enum MHD_Result api__datasets_register(api_req *r)
{
    enum MHD_Result reply;
    cJSON *body = api__body_object(r, &reply);
    if (!body)
        return reply;
    static const char *const keys[] = {"name", "format", "path", NULL};
    bool bad = false;
    char *info = NULL;
    const char *name = NULL, *format = NULL, *path = NULL;
    if (only_keys(r, body, keys, &reply) != 0)
        goto out;
    name = str_field(r, body, "name", true, &bad, &reply);
    if (!bad)
        format = str_field(r, body, "format", true, &bad, &reply);
    if (!bad)
        path = str_field(r, body, "path", true, &bad, &reply);
    if (bad)
        goto out;
    if (!dataset_name_ok(name)) {
        reply = api__reply_error(r, 422, "invalid_argument", "name",
                                 "a data set name is [a-z0-9][a-z0-9._-]{0,63}");
        goto out;
    }
    gpp_error e = {0};
    if (dataset_inspect(format, path, &info, &e) != 0) {
        reply = api__reply_error(r, e.code[0] && strcmp(e.code, "internal") == 0 ? 500 : 422,
                                 e.code[0] ? e.code : "invalid_argument", e.field, "%s",
                                 e.message);
        goto out;
    }
    if (store_dataset_insert(r->d->store, name, format, path, info, r->who.name, &e) != 0) {
        reply = api__reply_gpp(r, &e);
        goto out;
    }
    store_dataset d;
    if (store_dataset_get(r->d->store, name, &d, &e) != 0) {
        reply = api__reply_gpp(r, &e);
        goto out;
    }
    log_info("data set registered", "name=%s format=%s by=%s", name, format, r->who.name);
    char loc[128];
    snprintf(loc, sizeof loc, "/api/v1/datasets/%s", name);
    const char *h[] = {"Location", loc, NULL};
    cJSON *o = dataset_json(&d);
    store_dataset_clear(&d);
    reply = api__reply_json(r, 201, o, h);
out:
    free(info);
    cJSON_Delete(body);
    return reply;
}

/* ---- workers ---------------------------------------------------------------------- */

enum MHD_Result api__workers_list(api_req *r)
{
    enum MHD_Result reply;
    int64_t limit;
    if (list_limit(r, &limit, &reply) != 0)
        return reply;
    char after[256] = "";
    const char *cursor = api__query(r, "cursor");
    if (cursor && api__cursor_parse('w', cursor, after, sizeof after) != 0)
        return api__reply_error(r, 400, "malformed", "cursor",
                                "cursor is not one this server gave out");
    store_worker *w = NULL;
    size_t n = 0;
    bool more = false;
    gpp_error e = {0};
    if (store_worker_list(r->d->store, after, (int)limit, &w, &n, &more, &e) != 0)
        return api__reply_gpp(r, &e);
    int64_t now = gpp__now_ms();
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "workers");
    for (size_t i = 0; i < n; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "id", w[i].id ? w[i].id : "");
        cJSON_AddStringToObject(x, "name", w[i].name ? w[i].name : "");
        cJSON_AddItemToObject(x, "host", w[i].host ? cJSON_CreateString(w[i].host)
                                                   : cJSON_CreateNull());
        cJSON *dev = w[i].devices ? cJSON_Parse(w[i].devices) : NULL;
        cJSON_AddItemToObject(x, "devices", dev ? dev : cJSON_CreateArray());
        cJSON_AddNumberToObject(x, "threads", w[i].threads);
        cJSON *lab = w[i].labels ? cJSON_Parse(w[i].labels) : NULL;
        cJSON_AddItemToObject(x, "labels", lab ? lab : cJSON_CreateObject());
        cJSON_AddStringToObject(x, "state", w[i].state ? w[i].state : "");
        /* "device": the first device, as "cpu" or "cuda:N" */
        const cJSON *d0 = cJSON_GetArrayItem(dev, 0);
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d0, "kind"));
        const cJSON *di = cJSON_GetObjectItemCaseSensitive(d0, "index");
        char dname[32] = "";
        if (kind && strcmp(kind, "cuda") == 0)
            snprintf(dname, sizeof dname, "cuda:%d", cJSON_IsNumber(di) ? di->valueint : 0);
        else if (kind)
            snprintf(dname, sizeof dname, "%.16s", kind);
        cJSON_AddItemToObject(x, "device", dname[0] ? cJSON_CreateString(dname)
                                                    : cJSON_CreateNull());
        if (w[i].stage_job) {
            cJSON *sg = cJSON_CreateObject();
            cJSON_AddStringToObject(sg, "job", w[i].stage_job);
            cJSON_AddNumberToObject(sg, "stage", w[i].stage_idx);
            cJSON_AddStringToObject(sg, "kind", w[i].stage_kind);
            cJSON_AddNumberToObject(sg, "round", w[i].stage_round);
            cJSON_AddNumberToObject(sg, "attempt", w[i].stage_attempt);
            cJSON_AddNumberToObject(sg, "progress", w[i].stage_progress);
            cJSON_AddItemToObject(x, "stage", sg);
        } else {
            cJSON_AddNullToObject(x, "stage");
        }
        cJSON_AddItemToObject(x, "connected_at", api__time(w[i].connected_at));
        cJSON_AddItemToObject(x, "last_seen", api__time(w[i].last_seen));
        cJSON_AddNumberToObject(x, "heartbeat_age_s", (double)(now - w[i].last_seen) / 1000.0);
        cJSON_AddItemToArray(arr, x);
    }
    add_cursor(o, more && n > 0, 'w', n && w[n - 1].id ? w[n - 1].id : "");
    store_worker_free(w, n);
    return api__reply_json(r, 200, o, NULL);
}
