/* daemon/api_jobs.c - /api/v1/jobs and its sub-resources. */
#include "api_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_parse.h"
#include "artifacts.h"
#include "gpp/ckpt.h"
#include "gpp/jobspec.h"
#include "gpp/sha256.h"
#include "gppd_sched.h"
#include "link.h"
#include "log.h"

static const char *query_get(void *ctx, const char *name)
{
    return api__query(ctx, name);
}

/* Reply with a parse error: its status from the return code. */
static enum MHD_Result reply_parse(api_req *r, int rc, const gpp_error *e)
{
    return api__reply_error(r, api_parse_status(rc), e->code, e->field, "%s", e->message);
}

/* ---- JSON views ------------------------------------------------------------ */

static bool stage_done(const store_stage *g)
{
    return strcmp(g->state, "succeeded") == 0 || strcmp(g->state, "skipped") == 0;
}

/* The headline numbers of a stage summary (no per-layer list). */
static cJSON *summary_numbers(const cJSON *sum)
{
    static const char *const keys[] = {"params", "flops", "val_accuracy", "test_accuracy"};
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sum, keys[i]);
        cJSON_AddItemToObject(o, keys[i], cJSON_IsNumber(v) ? cJSON_CreateNumber(v->valuedouble)
                                                            : cJSON_CreateNull());
    }
    return o;
}

static double sum_num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The numbers of stage i's summary, with "stage" and "kind". */
static cJSON *pick_json(const store_stage *g, const cJSON *sum)
{
    cJSON *o = summary_numbers(sum);
    cJSON_AddNumberToObject(o, "stage", g->idx);
    cJSON_AddStringToObject(o, "kind", g->kind);
    return o;
}

/* {"baseline": the model pruning starts from (the last train/grow result,
 * else the first finished stage), "current": the last finished stage,
 * "accuracy_first": the prune result with the best validation accuracy,
 * "size_first": the prune result with the fewest params within
 * stop.max_accuracy_drop of the baseline (both the baseline while there is
 * no prune result; a finetune result stands in for the prune it recovered)
 * -- the rules of `gpp-worker run`, sched_pick_stages}. */
static cJSON *job_summary(const store_job *j, const store_stage *st, size_t n)
{
    cJSON *out = cJSON_CreateObject();
    cJSON **sums = calloc(n ? n : 1, sizeof *sums);
    int last = -1, base = -1, acc = -1, size = -1;
    for (size_t i = 0; sums && i < n; i++) {
        if (!stage_done(&st[i]) || !st[i].summary)
            continue;
        sums[i] = cJSON_Parse(st[i].summary);
        if (!cJSON_IsObject(sums[i])) {
            cJSON_Delete(sums[i]);
            sums[i] = NULL;
            continue;
        }
        last = (int)i;
    }
    double drop = 0.01;
    cJSON *spec = j->spec ? cJSON_Parse(j->spec) : NULL;
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(spec, "stop");
    drop = sum_num(stop, "max_accuracy_drop", drop);
    cJSON_Delete(spec);
    if (sums)   /* the baseline too: the last train/grow result, else the first result */
        sched_pick_parsed(st, (const cJSON *const *)sums, n, drop, &base, &acc, &size);
    cJSON_AddItemToObject(out, "baseline", base >= 0 ? pick_json(&st[base], sums[base])
                                                     : cJSON_CreateNull());
    cJSON_AddItemToObject(out, "current", last >= 0 ? pick_json(&st[last], sums[last])
                                                    : cJSON_CreateNull());
    cJSON_AddItemToObject(out, "accuracy_first", acc >= 0 ? pick_json(&st[acc], sums[acc])
                                                          : cJSON_CreateNull());
    cJSON_AddItemToObject(out, "size_first", size >= 0 ? pick_json(&st[size], sums[size])
                                                       : cJSON_CreateNull());
    for (size_t i = 0; sums && i < n; i++)
        cJSON_Delete(sums[i]);
    free(sums);
    return out;
}

/* The numbers of `from` named in `keys` (NULL-ended) that it holds, into
 * `to` (an object, else nothing). */
static void copy_numbers(cJSON *to, const cJSON *from, const char *const *keys)
{
    for (; cJSON_IsObject(to) && *keys; keys++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, *keys);
        if (cJSON_IsNumber(v))
            cJSON_AddNumberToObject(to, *keys, v->valuedouble);
    }
}

static cJSON *stage_json(const store_stage *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", g->idx);
    cJSON_AddStringToObject(o, "kind", g->kind);
    cJSON_AddNumberToObject(o, "round", g->round);
    cJSON_AddStringToObject(o, "state", g->state);
    cJSON_AddNumberToObject(o, "attempt", g->attempt);
    cJSON_AddItemToObject(o, "reason", g->reason ? cJSON_CreateString(g->reason)
                                                 : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "worker", g->worker_id ? cJSON_CreateString(g->worker_id)
                                                    : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "progress", g->progress);
    cJSON_AddItemToObject(o, "input_sha256", g->input_sha256
                                                 ? cJSON_CreateString(g->input_sha256)
                                                 : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "output_sha256", g->output_sha256
                                                  ? cJSON_CreateString(g->output_sha256)
                                                  : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "started_at", api__time(g->started_at));
    cJSON_AddItemToObject(o, "finished_at", api__time(g->finished_at));
    cJSON *sum = g->summary ? cJSON_Parse(g->summary) : NULL;
    cJSON *nums = sum ? summary_numbers(sum) : cJSON_CreateNull();
    /* a prune stage's cut_compare (prune.compare_cut): its six numbers */
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(sum, "cut_compare");
    if (cJSON_IsObject(cc)) {
        static const char *const keys[] = {"gpp_val", "gpp_test", "l1_val", "l1_test",
                                           "random_val", "random_test"};
        cJSON *c = cJSON_AddObjectToObject(nums, "cut_compare");
        for (size_t i = 0; c && i < sizeof keys / sizeof keys[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(cc, keys[i]);
            cJSON_AddItemToObject(c, keys[i], cJSON_IsNumber(v) ? cJSON_CreateNumber(v->valuedouble)
                                                                : cJSON_CreateNull());
        }
    }
    /* the final recovery: the stage it recovered, and for how long */
    static const char *const fkeys[] = {"from_stage", "finetune_epochs", NULL};
    if (strcmp(g->kind, "finetune") == 0)
        copy_numbers(nums, sum, fkeys);
    /* a prune below the stop rule's bound after its fine-tune, recovered
     * stop.recover_epochs more before the rule judged it */
    static const char *const rkeys[] = {"recover_epochs", "val_before_recover", "finetune_epochs",
                                        NULL};
    if (strcmp(g->kind, "prune") == 0 &&
        cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(sum, "recover_epochs")))
        copy_numbers(nums, sum, rkeys);
    /* a train stage that evaluated a checkpoint model instead of training */
    if (cJSON_IsObject(nums) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sum, "evaluated_only")))
        cJSON_AddTrueToObject(nums, "evaluated_only");
    cJSON_AddItemToObject(o, "summary", nums);
    cJSON_Delete(sum);
    return o;
}

/* A job as the API shows it; with stages (may be NULL) the full view. */
static cJSON *job_json(const store_job *j, const store_stage *st, size_t n, bool full)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "name", j->name ? j->name : "");
    cJSON_AddStringToObject(o, "owner", j->owner ? j->owner : "");
    cJSON_AddStringToObject(o, "state", j->state);
    cJSON_AddItemToObject(o, "reason", j->reason ? cJSON_CreateString(j->reason)
                                                 : cJSON_CreateNull());
    cJSON_AddStringToObject(o, "dataset", j->dataset ? j->dataset : "");
    cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
    cJSON_AddStringToObject(o, "device", j->device ? j->device : "");
    cJSON_AddNumberToObject(o, "priority", j->priority);
    cJSON_AddNumberToObject(o, "stages_total", j->stages_total);
    cJSON_AddNumberToObject(o, "stages_done", j->stages_done);
    double progress = j->stages_total ? (double)j->stages_done / j->stages_total
                                      : (strcmp(j->state, "succeeded") == 0 ? 1.0 : 0.0);
    int current = -1;
    if (!st && j->stages_done < j->stages_total)
        current = j->stages_done;        /* stages finish in chain order */
    for (size_t i = 0; st && i < n; i++) {
        if (!stage_done(&st[i])) {
            current = st[i].idx;
            if (j->stages_total)
                progress += fmin(fmax(st[i].progress, 0.0), 1.0) / j->stages_total;
            break;
        }
    }
    if (strcmp(j->state, "succeeded") == 0)
        progress = 1.0;
    cJSON_AddNumberToObject(o, "progress", fmin(progress, 1.0));
    bool finished = strcmp(j->state, "succeeded") == 0 || strcmp(j->state, "failed") == 0 ||
                    strcmp(j->state, "cancelled") == 0;
    cJSON_AddItemToObject(o, "current_stage", current >= 0 && !finished
                                                  ? cJSON_CreateNumber(current)
                                                  : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "created_at", api__time(j->created_at));
    cJSON_AddItemToObject(o, "started_at", api__time(j->started_at));
    cJSON_AddItemToObject(o, "finished_at", api__time(j->finished_at));
    cJSON_AddItemToObject(o, "updated_at", api__time(j->updated_at));
    if (full) {
        /* the stored spec is gppd's own canonical JSON (gpp_jobspec_to_json:
         * the same bytes cJSON would print for it), so it goes out as is */
        cJSON_AddItemToObject(o, "spec", j->spec && j->spec[0] ? cJSON_CreateRaw(j->spec)
                                                               : cJSON_CreateNull());
        cJSON *arr = cJSON_AddArrayToObject(o, "stages");
        for (size_t i = 0; st && i < n; i++)
            cJSON_AddItemToArray(arr, stage_json(&st[i]));
        cJSON_AddItemToObject(o, "summary", job_summary(j, st, n));
    }
    return o;
}

/* Load the job named by the path and check the caller may see it (404
 * otherwise, so ids of others' jobs do not leak). Returns 0 or -1 with a
 * reply queued in *reply. */
static int load_visible_job(api_req *r, store_job *j, enum MHD_Result *reply)
{
    gpp_error e = {0};
    const char *id = r->params[0];
    int rc = store_job_get(r->d->store, id, j, &e);
    if (rc == GPP_ENOTFOUND || (rc == 0 && !api__can_see(r, j->owner))) {
        if (rc == 0)
            store_job_clear(j);
        *reply = api__reply_error(r, 404, "not_found", "", "no job '%.64s'", id);
        return -1;
    }
    if (rc != 0) {
        *reply = api__reply_gpp(r, &e);
        return -1;
    }
    return 0;
}

/* Reply with the full view of job j (cleared here). */
static enum MHD_Result reply_job(api_req *r, unsigned status, store_job *j,
                                 const char *const *headers)
{
    store_stage *st = NULL;
    size_t n = 0;
    gpp_error e = {0};
    if (store_stage_list(r->d->store, j->seq, &st, &n, &e) != 0) {
        store_job_clear(j);
        return api__reply_gpp(r, &e);
    }
    cJSON *o = job_json(j, st, n, true);
    store_stage_free(st, n);
    store_job_clear(j);
    return api__reply_json(r, status, o, headers);
}

/* ---- GET /api/v1/jobs ------------------------------------------------------------ */

enum MHD_Result api__jobs_list(api_req *r)
{
    api_jobs_query jq;
    gpp_error e = {0};
    int prc = api_parse_jobs_query(query_get, r, &jq, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    store_job_filter f = {
        .state = jq.state,
        .owner = jq.owner,
        .dataset = jq.dataset,
        .model = jq.model,
    };
    bool empty = false;
    if (strcmp(r->who.role, "admin") != 0) {
        if (f.owner && strcmp(f.owner, r->who.name) != 0)
            empty = true;           /* a user sees only their own jobs */
        f.owner = r->who.name;
    }
    int64_t before = jq.page.after_num, limit = jq.page.limit;
    store_job *jobs = NULL;
    size_t n = 0;
    bool more = false;
    if (!empty &&
        store_job_list(r->d->store, &f, before, (int)limit, &jobs, &n, &more, &e) != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "jobs");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, job_json(&jobs[i], NULL, 0, false));
    if (more && n > 0) {
        char v[32], c[64];
        snprintf(v, sizeof v, "%lld", (long long)jobs[n - 1].seq);
        api__cursor_make('j', v, c, sizeof c);
        cJSON_AddStringToObject(o, "next_cursor", c);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
    store_job_free(jobs, n);
    return api__reply_json(r, 200, o, NULL);
}

/* ---- POST /api/v1/jobs --------------------------------------------------------- */

static bool is_hex64(const char *s)
{
    uint8_t d[GPP_SHA256_LEN];
    return gpp_sha256_from_hex(s, d) == 0;
}

/* Does the network of checkpoint artifact `hex` take the samples and
 * classes of registered data set `ds_name`?  0 (also when either side does
 * not say), or GPP_EINVAL with *e naming both. */
static int model_fits_dataset(api_req *r, const char *hex, const char *ds_name, gpp_error *e)
{
    char path[PATH_MAX], *text = NULL;
    cJSON *doc = NULL, *info = NULL;
    store_dataset ds;
    int rc = 0;
    if (store_dataset_get(r->d->store, ds_name, &ds, NULL) == 0) {
        info = cJSON_Parse(ds.info ? ds.info : "");
        store_dataset_clear(&ds);
    }
    if (!info || artifacts_path(r->d->artifacts, hex, path, sizeof path) != 0 ||
        gpp_ckpt_read_json(path, &text, NULL) != 0 || !(doc = cJSON_Parse(text)))
        goto done;     /* nothing to compare: the worker checks what it loads */
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(doc, "network");
    const cJSON *nin = cJSON_GetObjectItemCaseSensitive(net, "input");
    const cJSON *ncl = cJSON_GetObjectItemCaseSensitive(net, "classes");
    const cJSON *train = cJSON_GetObjectItemCaseSensitive(info, "train");
    const cJSON *din = cJSON_GetObjectItemCaseSensitive(train, "shape");
    const cJSON *dcl = cJSON_GetObjectItemCaseSensitive(info, "classes");
    if (cJSON_IsArray(nin) && cJSON_IsArray(din) && cJSON_GetArraySize(nin) == 3 &&
        cJSON_GetArraySize(din) == 3) {
        int a[3], b[3], same = 1;
        for (int k = 0; k < 3; k++) {
            a[k] = cJSON_GetArrayItem(nin, k)->valueint;
            b[k] = cJSON_GetArrayItem(din, k)->valueint;
            same &= a[k] == b[k];
        }
        if (!same) {
            rc = gpp_error_set(e, GPP_EINVAL, "invalid_argument", "model.checkpoint",
                               "the model takes inputs [%d, %d, %d] but data set '%s' has "
                               "samples [%d, %d, %d]", a[0], a[1], a[2], ds_name, b[0], b[1],
                               b[2]);
            goto done;
        }
    }
    if (cJSON_IsNumber(ncl) && cJSON_IsNumber(dcl) && ncl->valueint != dcl->valueint)
        rc = gpp_error_set(e, GPP_EINVAL, "invalid_argument", "model.checkpoint",
                           "the model has %d classes but data set '%s' has %d", ncl->valueint,
                           ds_name, dcl->valueint);
done:
    cJSON_Delete(doc);
    cJSON_Delete(info);
    free(text);
    return rc;
}

/* Checks that need the store: the data set is registered, a checkpoint
 * model exists, is visible and fits the data set. 0, or -1 with a reply
 * queued. */
static int check_references(api_req *r, const gpp_jobspec *spec, enum MHD_Result *reply)
{
    gpp_error e = {0};
    if (spec->dataset_kind == GPP_DATASET_NAME) {
        store_dataset ds;
        int rc = store_dataset_get(r->d->store, spec->dataset_name, &ds, &e);
        if (rc == 0) {
            store_dataset_clear(&ds);
        } else if (rc == GPP_ENOTFOUND) {
            *reply = api__reply_error(r, 422, "invalid_argument", "dataset",
                                      "data set '%s' is not registered (GET /api/v1/datasets"
                                      " lists them; POST registers one)", spec->dataset_name);
            return -1;
        } else {
            *reply = api__reply_gpp(r, &e);
            return -1;
        }
    }
    if (spec->model_kind == GPP_MODEL_CHECKPOINT) {
        const char *ref = spec->model_checkpoint;
        if (is_hex64(ref)) {
            int ex = store_artifact_exists(r->d->store, ref, &e);
            if (ex < 0) {
                *reply = api__reply_gpp(r, &e);
                return -1;
            }
            if (ex == 0) {
                *reply = api__reply_error(r, 422, "invalid_argument", "model.checkpoint",
                                          "no checkpoint with sha256 %s (POST /api/v1/models"
                                          " uploads one)", ref);
                return -1;
            }
            if (spec->dataset_kind == GPP_DATASET_NAME &&
                model_fits_dataset(r, ref, spec->dataset_name, &e) != 0) {
                *reply = api__reply_gpp(r, &e);
                return -1;
            }
        } else {
            store_job j;
            int rc = store_job_get(r->d->store, ref, &j, &e);
            bool ok = rc == 0 && api__can_see(r, j.owner);
            bool done = ok && j.stages_done > 0;
            if (rc == 0)
                store_job_clear(&j);
            if (rc != 0 && rc != GPP_ENOTFOUND) {
                *reply = api__reply_gpp(r, &e);
                return -1;
            }
            if (!ok || !done) {
                *reply = api__reply_error(r, 422, "invalid_argument", "model.checkpoint",
                                          ok ? "job %s has no finished stage to start from"
                                             : "no job '%s'", ref);
                return -1;
            }
        }
    }
    return 0;
}

enum MHD_Result api__jobs_submit(api_req *r)
{
    enum MHD_Result reply;
    const char *key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
    api_job_submit sub;
    gpp_error e = {0};
    int rc = api_parse_job_submit(r->body, r->body_len, key, &sub, &e);
    if (rc != 0)
        return reply_parse(r, rc, &e);
    const gpp_jobspec *spec = sub.spec;
    if (check_references(r, spec, &reply) != 0) {
        api_job_submit_clear(&sub);
        return reply;
    }
    int n_stages = sub.n_stages;
    if (n_stages != gpp_jobspec_stage_count(spec))
        log_warn("stage chain disagrees with gpp_jobspec_stage_count", "chain=%d count=%d",
                 n_stages, gpp_jobspec_stage_count(spec));
    store_job_new in = {
        .name = spec->name,
        .owner = r->who.name,
        .dataset = sub.dataset,
        .model = sub.model,
        .device = sub.device,
        .spec = sub.canon,
        .priority = spec->priority,
        .stages = sub.chain,
        .n_stages = n_stages,
        .first_reason = sub.first_reason,
        .token_id = r->who.token_id,
        .idem_key = sub.idem_key,
        .spec_sha256 = sub.spec_sha256,
    };
    store_job j;
    bool existed = false;
    rc = store_job_create(r->d->store, &in, &j, &existed, &e);
    api_job_submit_clear(&sub);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    if (!existed) {
        char q[200];
        log_info("job submitted", "job=%s owner=%s stages=%d name=%s", j.id, r->who.name,
                 n_stages, log_quote(j.name, q, sizeof q));
        link_kick(r->d->link);
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/jobs/%s", j.id);
    const char *h[] = {"Location", loc, NULL};
    return reply_job(r, existed ? 200 : 201, &j, h);
}

/* ---- GET /api/v1/jobs/{id}, cancel, retry -------------------------------------- */

enum MHD_Result api__job_get(api_req *r)
{
    enum MHD_Result reply;
    store_job j;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    return reply_job(r, 200, &j, NULL);
}

enum MHD_Result api__job_cancel(api_req *r)
{
    enum MHD_Result reply;
    store_job j, after;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    gpp_error e = {0};
    int running = 0;
    int rc = store_job_cancel(r->d->store, j.seq, r->who.name, &after, &running, &e);
    store_job_clear(&j);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    log_info("job cancelled", "job=%s by=%s running_stages=%d", after.id, r->who.name, running);
    if (running > 0)
        link_cancel_job(r->d->link, after.seq);   /* their workers are told to stop */
    return reply_job(r, 202, &after, NULL);
}

enum MHD_Result api__job_retry(api_req *r)
{
    enum MHD_Result reply;
    store_job j, after;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    gpp_error e = {0};
    int rc = store_job_retry(r->d->store, j.seq, r->who.name, &after, &e);
    store_job_clear(&j);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    log_info("job retried", "job=%s by=%s", after.id, r->who.name);
    link_kick(r->d->link);
    return reply_job(r, 202, &after, NULL);
}

/* ---- GET /api/v1/jobs/{id}/metrics --------------------------------------------- */

/* `sep` (may be 0: none) then v in decimal: the metric columns are long
 * runs of integers, and printf was a large part of a reply's time. */
static void put_int(gpp__buf *b, char sep, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    if (sep)
        *--p = sep;
    gpp__buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

static void csv_num(gpp__buf *b, double v)
{
    if (isnan(v))
        return;                          /* an empty cell */
    gpp__buf_json_num(b, v);
}

enum MHD_Result api__job_metrics(api_req *r)
{
    enum MHD_Result reply;
    api_metrics_query mq;
    gpp_error e = {0};
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_ACCEPT);
    int prc = api_parse_metrics_query(query_get, r, accept, &mq, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    bool csv = mq.csv;
    const char *names[STORE_METRIC_NAMES_MAX];
    for (size_t i = 0; i < mq.n_names; i++)
        names[i] = mq.names[i];
    store_job j;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    store_metrics_query q = {
        .job_seq = j.seq,
        .stage_idx = (int)mq.stage,
        .names = mq.n_names ? names : NULL,
        .n_names = mq.n_names,
        .has_since = mq.has_since,
        .since = mq.since,
        /* a downsampled series covers the whole series unless ?limit says
         * otherwise (the store reads its rollups, not every point) */
        .limit = mq.max_points > 0 && mq.every <= 1 && !query_get(r, "limit")
                     ? SIZE_MAX : (size_t)mq.limit,
        .max_points = (size_t)mq.max_points,
        .every = (size_t)mq.every,
    };
    char job_id[16];
    snprintf(job_id, sizeof job_id, "%s", j.id);
    store_job_clear(&j);
    store_metrics_result res;
    if (store_metrics_query_run(r->d->store, &q, &res, &e) != 0)
        return api__reply_gpp(r, &e);
    gpp__buf b = {0};
    if (csv) {
        gpp__buf_puts(&b, "name,stage,attempt,iteration,value,time\n");
        for (size_t s = 0; s < res.n_series; s++) {
            const store_series *sr = &res.series[s];
            size_t name_len = strlen(sr->name);
            for (size_t i = 0; i < sr->n; i++) {
                gpp__buf_add(&b, sr->name, name_len);
                put_int(&b, ',', sr->stage[i]);
                put_int(&b, ',', sr->attempt[i]);
                put_int(&b, ',', (long long)sr->iteration[i]);
                gpp__buf_add(&b, ",", 1);
                csv_num(&b, sr->value[i]);
                put_int(&b, ',', (long long)sr->time[i]);
                gpp__buf_add(&b, "\n", 1);
            }
        }
    } else {
        gpp__buf_puts(&b, "{\"job\":");
        gpp__buf_json_str(&b, job_id);
        gpp__buf_puts(&b, ",\"names\":[");
        for (size_t i = 0; i < res.n_names; i++) {
            if (i)
                gpp__buf_puts(&b, ",");
            gpp__buf_json_str(&b, res.names[i]);
        }
        gpp__buf_puts(&b, "],\"series\":{");
        for (size_t s = 0; s < res.n_series; s++) {
            const store_series *sr = &res.series[s];
            if (s)
                gpp__buf_puts(&b, ",");
            gpp__buf_json_str(&b, sr->name);
            gpp__buf_puts(&b, ":{\"stage\":[");
            for (size_t i = 0; i < sr->n; i++)
                put_int(&b, i ? ',' : 0, sr->stage[i]);
            gpp__buf_puts(&b, "],\"attempt\":[");
            for (size_t i = 0; i < sr->n; i++)
                put_int(&b, i ? ',' : 0, sr->attempt[i]);
            gpp__buf_puts(&b, "],\"iteration\":[");
            for (size_t i = 0; i < sr->n; i++)
                put_int(&b, i ? ',' : 0, (long long)sr->iteration[i]);
            gpp__buf_puts(&b, "],\"value\":[");
            for (size_t i = 0; i < sr->n; i++) {
                if (i)
                    gpp__buf_puts(&b, ",");
                gpp__buf_json_num(&b, sr->value[i]);
            }
            gpp__buf_puts(&b, "],\"time\":[");
            for (size_t i = 0; i < sr->n; i++)
                put_int(&b, i ? ',' : 0, (long long)sr->time[i]);
            gpp__buf_printf(&b, "],\"points\":%zu,\"scanned\":%zu,\"truncated\":%s}", sr->n,
                            sr->scanned, sr->truncated ? "true" : "false");
        }
        gpp__buf_printf(&b, "},\"max_points\":%lld}", (long long)mq.max_points);
    }
    store_metrics_result_clear(&res);
    size_t len = 0;
    char *text = gpp__buf_take(&b, &len);
    if (!text)
        return api__reply_error(r, 500, "internal", "", "out of memory");
    return api__reply(r, 200, csv ? "text/csv; charset=utf-8" : "application/json", text, len,
                      NULL);
}

/* ---- GET /api/v1/jobs/{id}/logs ------------------------------------------------ */

enum MHD_Result api__job_logs(api_req *r)
{
    enum MHD_Result reply;
    api_page pg;
    gpp_error e = {0};
    int prc = api_parse_page(API_PAGE_LOGS, query_get, r, &pg, &e);
    if (prc != 0)
        return reply_parse(r, prc, &e);
    int64_t after = pg.after_num, limit = pg.limit;
    store_job j;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    store_log *logs = NULL;
    size_t n = 0;
    bool more = false;
    int rc = store_logs_list(r->d->store, j.seq, after, (int)limit, &logs, &n, &more, &e);
    store_job_clear(&j);
    if (rc != 0)
        return api__reply_gpp(r, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "logs");
    for (size_t i = 0; i < n; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "id", (double)logs[i].id);
        cJSON_AddItemToObject(l, "time", api__time(logs[i].time));
        cJSON_AddStringToObject(l, "level", logs[i].level);
        cJSON_AddStringToObject(l, "source", logs[i].source ? logs[i].source : "");
        cJSON_AddItemToObject(l, "stage", logs[i].stage_idx >= 0
                                              ? cJSON_CreateNumber(logs[i].stage_idx)
                                              : cJSON_CreateNull());
        cJSON_AddStringToObject(l, "message", logs[i].message ? logs[i].message : "");
        cJSON_AddItemToArray(arr, l);
    }
    /* the cursor is always given, so a client can poll for new lines */
    char v[32], c[64];
    snprintf(v, sizeof v, "%lld", (long long)(n ? logs[n - 1].id : after));
    api__cursor_make('l', v, c, sizeof c);
    cJSON_AddStringToObject(o, "next_cursor", c);
    cJSON_AddBoolToObject(o, "more", more);
    store_log_free(logs, n);
    return api__reply_json(r, 200, o, NULL);
}

/* ---- GET /api/v1/jobs/{id}/architecture ---------------------------------------- */

static cJSON *arch_entry(const store_stage *g, const cJSON *sum)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "stage", g->idx);
    cJSON_AddStringToObject(o, "kind", g->kind);
    cJSON_AddNumberToObject(o, "round", g->round);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(sum, "params");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(sum, "flops");
    cJSON_AddItemToObject(o, "params", cJSON_IsNumber(p) ? cJSON_CreateNumber(p->valuedouble)
                                                         : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "flops", cJSON_IsNumber(f) ? cJSON_CreateNumber(f->valuedouble)
                                                        : cJSON_CreateNull());
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sum, "layers");
    cJSON_AddItemToObject(o, "layers", cJSON_IsArray(layers) ? cJSON_Duplicate(layers, true)
                                                             : cJSON_CreateArray());
    return o;
}

enum MHD_Result api__job_architecture(api_req *r)
{
    enum MHD_Result reply;
    store_job j;
    if (load_visible_job(r, &j, &reply) != 0)
        return reply;
    store_stage *st = NULL;
    size_t n = 0;
    gpp_error e = {0};
    int rc = store_stage_list(r->d->store, j.seq, &st, &n, &e);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "job", j.id);
    store_job_clear(&j);
    if (rc != 0) {
        cJSON_Delete(o);
        return api__reply_gpp(r, &e);
    }
    cJSON *baseline = NULL;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        if (!st[i].summary)
            continue;
        cJSON *sum = cJSON_Parse(st[i].summary);
        if (cJSON_IsObject(sum)) {
            const cJSON *base = cJSON_GetObjectItemCaseSensitive(sum, "baseline");
            if (!baseline && cJSON_IsObject(base))
                baseline = arch_entry(&st[i], base);
            cJSON_AddItemToArray(arr, arch_entry(&st[i], sum));
        }
        cJSON_Delete(sum);
    }
    /* without an explicit baseline, the first stage's output is it */
    if (!baseline && cJSON_GetArraySize(arr) > 0)
        baseline = cJSON_Duplicate(cJSON_GetArrayItem(arr, 0), true);
    cJSON_AddItemToObject(o, "baseline", baseline ? baseline : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "stages", arr);
    store_stage_free(st, n);
    return api__reply_json(r, 200, o, NULL);
}
