/* daemon/api_admin.c - /api/v1/tokens, /api/v1/datasets, /api/v1/workers,
 * /api/v1/models. */
#include "api_internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>

#include "api_parse.h"
#include "artifacts.h"
#include "gpp/ckpt.h"
#include "gpp/export.h"
#include "datasets.h"
#include "log.h"
#include "tokens.h"

static const char *query_get(void *ctx, const char *name)
{
    return api__query(ctx, name);
}

/* Reply with a parse error: its status from the return code. */
static enum MHD_Result reply_parse(api_req *r, int rc, const gpp_error *e)
{
    return api__reply_error(r, api_parse_status(rc), e->code, e->field, "%s", e->message);
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

/* A cursor after the row numbered `id` (the last one of the page). */
static void add_id_cursor(cJSON *o, bool more, char kind, int64_t id)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)id);
    add_cursor(o, more, kind, v);
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
    api_page pg;
    gpp_error e = {0};
    int prc = api_parse_page(API_PAGE_TOKENS, query_get, r, &pg, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    store_token *toks = NULL;
    size_t n = 0;
    bool more = false;
    if (store_token_list(r->d->store, pg.after_num, (int)pg.limit, &toks, &n, &more, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, token_json(&toks[i]));
    add_id_cursor(o, more && n > 0, 't', n ? toks[n - 1].id : 0);
    free(toks);
    return api__reply_json(r, 200, o, NULL);
}

enum MHD_Result api__tokens_issue(api_req *r)
{
    api_token_req in;
    gpp_error e = {0};
    int prc = api_parse_token_issue(r->body, r->body_len, &in, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    const char *name = in.name, *role = in.role;
    /* a name belongs to one role: a user named like the admin would see its jobs */
    static const char *const roles[] = {"admin", "user", "worker"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(roles[i], role) == 0)
            continue;
        int64_t c = store_token_count(r->d->store, roles[i], name, false, &e);
        if (c < 0)
            return api__reply_gpp(r, &e);
        if (c > 0)
            return api__reply_error(r, 409, "conflict", "name",
                                    "the name '%.64s' belongs to %s tokens", name, roles[i]);
    }
    char text[TOKEN_TEXT_LEN + 1], prefix[TOKEN_PREFIX_LEN + 1];
    uint8_t hash[32];
    if (token_generate(role, text) != 0)
        return api__reply_error(r, 503, "unavailable", "", "no randomness available");
    memcpy(prefix, text, TOKEN_PREFIX_LEN);
    prefix[TOKEN_PREFIX_LEN] = '\0';
    token_hash(text, strlen(text), hash);
    store_token t;
    if (store_token_insert(r->d->store, name, role, hash, prefix, r->who.token_id, &t, &e) != 0) {
        memset(text, 0, sizeof text);
        if (strcmp(e.code, "invalid_argument") == 0)
            return api__reply_error(r, 422, "invalid_argument", e.field, "%s", e.message);
        return api__reply_gpp(r, &e);
    }
    log_info("token issued", "id=%s name=%s role=%s by=%s", t.public_id, t.name, t.role,
             r->who.name);
    cJSON *o = token_json(&t);
    cJSON_AddStringToObject(o, "token", text);   /* shown once, never stored */
    memset(text, 0, sizeof text);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/tokens/%s", t.public_id);
    const char *h[] = {"Location", loc, NULL};
    return api__reply_json(r, 201, o, h);
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
    api_page pg;
    gpp_error e = {0};
    int prc = api_parse_page(API_PAGE_DATASETS, query_get, r, &pg, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    store_dataset *ds = NULL;
    size_t n = 0;
    bool more = false;
    if (store_dataset_list(r->d->store, pg.after, (int)pg.limit, &ds, &n, &more, &e) != 0)
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

enum MHD_Result api__datasets_register(api_req *r)
{
    enum MHD_Result reply;
    api_dataset_req in;
    gpp_error e = {0};
    int prc = api_parse_dataset_register(r->body, r->body_len, &in, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    const char *name = in.name, *format = in.format, *path = in.path;
    char *info = NULL;
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
    api_dataset_req_clear(&in);
    return reply;
}

/* ---- workers ---------------------------------------------------------------------- */

enum MHD_Result api__workers_list(api_req *r)
{
    api_page pg;
    gpp_error e = {0};
    int prc = api_parse_page(API_PAGE_WORKERS, query_get, r, &pg, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    store_worker *w = NULL;
    size_t n = 0;
    bool more = false;
    if (store_worker_list(r->d->store, pg.after, (int)pg.limit, &w, &n, &more, &e) != 0)
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

/* ---- POST /api/v1/models -------------------------------------------------------------- */

/* Would `bytes` more of uploaded models take the caller over the per-user
 * quota (upload-quota-mb)?  true with the 413 (or a store error) queued in
 * *reply; false when it fits or there is no quota. */
static bool upload_over_quota(api_req *r, int64_t bytes, enum MHD_Result *reply)
{
    const int64_t quota = r->d->cfg.upload_quota_mb << 20;
    if (quota <= 0)
        return false;
    gpp_error e = {0};
    int64_t used = store_model_usage(r->d->store, r->who.name, &e);
    if (used < 0) {
        *reply = api__reply_gpp(r, &e);
        return true;
    }
    if (used + bytes <= quota)
        return false;
    *reply = api__reply_error(r, 413, "too_large", "",
                              "over your upload quota: your uploaded models take %.1f MiB of "
                              "%lld MiB and this one is %.1f MiB; delete some first (DELETE "
                              "/api/v1/models/{sha256})", used / 1048576.0,
                              (long long)r->d->cfg.upload_quota_mb, bytes / 1048576.0);
    return true;
}

/* An upload's "store the file, then record it" and a delete's "forget it,
 * then unlink the file" run one at a time, so a delete cannot unlink a file
 * an upload of the same bytes has just recorded again. */
static pthread_mutex_t models_mu = PTHREAD_MUTEX_INITIALIZER;

static enum MHD_Result models_upload_locked(api_req *r);

/* A trained network brought to gppd: the body (application/octet-stream,
 * streamed to an artifact by api.c) must be a .gppm checkpoint that gppd can
 * run -- the checks of the ONNX export.  201 with its sha256 (the job spec's
 * model.checkpoint) and what it holds; 200 when those bytes were there
 * already; 422 naming what is wrong, 413 over the sender's quota, and
 * nothing kept. */
enum MHD_Result api__models_upload(api_req *r)
{
    pthread_mutex_lock(&models_mu);
    enum MHD_Result ret = models_upload_locked(r);
    pthread_mutex_unlock(&models_mu);
    return ret;
}

static enum MHD_Result models_upload_locked(api_req *r)
{
    gpp_error e = {0};
    char hex[GPP_SHA256_HEX_LEN + 1], path[PATH_MAX];
    int64_t size = 0;
    artifacts_writer *w = r->up;
    r->up = NULL;
    if (artifacts_writer_commit(w, NULL, hex, &size, &e) != 0)
        return api__reply_error(r, 503, "unavailable", "", "cannot store the upload: %s",
                                e.message);
    int known = store_artifact_exists(r->d->store, hex, &e);
    if (known < 0)
        return api__reply_gpp(r, &e);
    if (artifacts_path(r->d->artifacts, hex, path, sizeof path) != 0)
        return api__reply_error(r, 500, "internal", "", "bad artifact name");
    gpp_ckpt *ck = NULL;
    gpp_model_info info;
    if (gpp_ckpt_read_file(path, &ck, &e) != 0 || gpp_ckpt_check(ck, &info, &e) != 0) {
        gpp_ckpt_free(ck);
        if (!known)
            (void)artifacts_remove(r->d->artifacts, hex);
        log_info("model upload refused", "user=%s size=%lld error=%s", r->who.name,
                 (long long)size, e.message);
        return api__reply_error(r, strcmp(e.code, "out_of_memory") == 0 ? 500 : 422,
                                "invalid_argument", e.field[0] ? e.field : "",
                                "not a checkpoint gppd can run: %s", e.message);
    }
    gpp_ckpt_free(ck);
    /* the quota counts what the sender keeps: bytes they hold already are free */
    store_model had;
    int rc = store_model_get(r->d->store, hex, r->who.name, &had, &e);
    enum MHD_Result over;
    if (rc == GPP_ENOTFOUND && upload_over_quota(r, size, &over)) {
        if (!known)
            (void)artifacts_remove(r->d->artifacts, hex);
        return over;
    }
    if (rc != 0 && rc != GPP_ENOTFOUND)
        return api__reply_gpp(r, &e);
    store_model m = {.size = size, .params = info.params, .C = info.C, .H = info.H,
                     .W = info.W, .classes = info.classes};
    snprintf(m.sha256, sizeof m.sha256, "%s", hex);
    snprintf(m.owner, sizeof m.owner, "%s", r->who.name);
    bool mine = false;
    if (store_model_add(r->d->store, &m, &mine, &e) != 0) {
        if (!known)
            (void)artifacts_remove(r->d->artifacts, hex);
        return api__reply_gpp(r, &e);
    }
    if (!known || mine)
        log_info("model uploaded", "user=%s sha256=%s size=%lld params=%lld new_file=%d",
                 r->who.name, hex, (long long)size, info.params, !known);
    cJSON *o = cJSON_CreateObject();
    cJSON *in = cJSON_AddArrayToObject(o, "input");
    cJSON_AddStringToObject(o, "sha256", hex);
    cJSON_AddNumberToObject(o, "size", (double)size);
    cJSON_AddNumberToObject(o, "params", (double)info.params);
    cJSON_AddItemToArray(in, cJSON_CreateNumber(info.C));
    cJSON_AddItemToArray(in, cJSON_CreateNumber(info.H));
    cJSON_AddItemToArray(in, cJSON_CreateNumber(info.W));
    cJSON_AddNumberToObject(o, "classes", info.classes);
    cJSON_AddBoolToObject(o, "created", !known);
    cJSON *spec = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(spec, "checkpoint", hex);
    return api__reply_json(r, known ? 200 : 201, o, NULL);
}

/* ---- GET /api/v1/models, GET and DELETE /api/v1/models/{sha256} ------------------ */

static cJSON *model_json(const store_model *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sha256", m->sha256);
    cJSON_AddStringToObject(o, "owner", m->owner);
    cJSON_AddNumberToObject(o, "size", (double)m->size);
    cJSON_AddNumberToObject(o, "params", (double)m->params);
    cJSON *in = cJSON_AddArrayToObject(o, "input");
    cJSON_AddItemToArray(in, cJSON_CreateNumber(m->C));
    cJSON_AddItemToArray(in, cJSON_CreateNumber(m->H));
    cJSON_AddItemToArray(in, cJSON_CreateNumber(m->W));
    cJSON_AddNumberToObject(o, "classes", m->classes);
    cJSON_AddItemToObject(o, "created_at", api__time(m->created_at));
    cJSON_AddNumberToObject(o, "jobs", (double)m->jobs);
    cJSON *spec = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(spec, "checkpoint", m->sha256);
    return o;
}

/* The {sha256} of the path in lower case; false (404) unless 64 hex digits. */
static bool model_sha(const api_req *r, char out[GPP_SHA256_HEX_LEN + 1])
{
    const char *p = r->params[0];
    if (strlen(p) != GPP_SHA256_HEX_LEN)
        return false;
    for (int i = 0; i <= GPP_SHA256_HEX_LEN; i++)
        out[i] = (char)tolower((unsigned char)p[i]);
    uint8_t d[GPP_SHA256_LEN];
    return gpp_sha256_from_hex(out, d) == 0;
}

/* A user sees the uploads they made; an admin sees everyone's. */
static const char *model_owner(const api_req *r)
{
    return strcmp(r->who.role, "admin") == 0 ? NULL : r->who.name;
}

enum MHD_Result api__models_list(api_req *r)
{
    api_page pg;
    gpp_error e = {0};
    int prc = api_parse_page(API_PAGE_MODELS, query_get, r, &pg, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    store_model *ms = NULL;
    size_t n = 0;
    bool more = false;
    if (store_model_list(r->d->store, model_owner(r), pg.after_num, (int)pg.limit, &ms, &n,
                         &more, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "models");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, model_json(&ms[i]));
    add_id_cursor(o, more && n > 0, 'm', n ? ms[n - 1].id : 0);
    free(ms);
    return api__reply_json(r, 200, o, NULL);
}

enum MHD_Result api__model_get(api_req *r)
{
    char sha[GPP_SHA256_HEX_LEN + 1];
    store_model m;
    gpp_error e = {0};
    if (!model_sha(r, sha))
        return api__reply_error(r, 404, "not_found", "", "no uploaded model '%.64s'",
                                r->params[0]);
    if (store_model_get(r->d->store, sha, model_owner(r), &m, &e) != 0)
        return api__reply_gpp(r, &e);
    return api__reply_json(r, 200, model_json(&m), NULL);
}

/* The caller's upload goes (an admin's DELETE removes every user's); the
 * file goes with the last upload once no job names it.  409 while a queued
 * or running job uses it. */
enum MHD_Result api__model_delete(api_req *r)
{
    char sha[GPP_SHA256_HEX_LEN + 1];
    gpp_error e = {0};
    bool drop = false;
    if (!model_sha(r, sha))
        return api__reply_error(r, 404, "not_found", "", "no uploaded model '%.64s'",
                                r->params[0]);
    pthread_mutex_lock(&models_mu);
    int rc = store_model_delete(r->d->store, sha, model_owner(r), &drop, &e);
    bool removed = rc == 0 && drop && artifacts_remove(r->d->artifacts, sha) == 0;
    pthread_mutex_unlock(&models_mu);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    log_info("model deleted", "user=%s sha256=%s file_removed=%d", r->who.name, sha, removed);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sha256", sha);
    cJSON_AddBoolToObject(o, "deleted", true);
    cJSON_AddBoolToObject(o, "file_removed", removed);
    return api__reply_json(r, 200, o, NULL);
}
