/* daemon/sched.c - see gppd_sched.h. */
#include "gppd_sched.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpp/jobspec.h"
#include "gpp/pick.h"
#include "gpp/sha256.h"
#include "gppd.h"
#include "log.h"
#include "util.h"

#define SPEC_CACHE 32
#define HASHING_MAX 8
#define HASH_RETRY_MS 30000        /* a data set whose hashing failed is tried again after */

typedef struct spec_entry {
    int64_t job_seq;               /* 0: free slot */
    gpp_jobspec *spec;
    cJSON *json;
    uint64_t used;                 /* LRU clock */
} spec_entry;

typedef struct hash_state {
    char name[STORE_NAME_MAX + 1]; /* "" free */
    bool running;
    bool transient;                /* the last failure was the store's (GPP_EUNAVAIL) */
    int64_t failed_at;             /* unix ms of the last failure, 0 none */
} hash_state;

struct sched {
    gppd *d;
    uv_loop_t *loop;
    void (*wake)(void *);
    void *wake_user;
    spec_entry specs[SPEC_CACHE];
    uint64_t clock;
    hash_state hashing[HASHING_MAX];
};

sched *sched_new(gppd *d, uv_loop_t *loop, void (*wake)(void *), void *wake_user)
{
    sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->d = d;
    s->loop = loop;
    s->wake = wake;
    s->wake_user = wake_user;
    return s;
}

void sched_free(sched *s)
{
    if (!s)
        return;
    for (int i = 0; i < SPEC_CACHE; i++) {
        gpp_jobspec_free(s->specs[i].spec);
        cJSON_Delete(s->specs[i].json);
    }
    free(s);
}

int sched_stage_id_parse(const char *stage_id, char job_id[16], int *idx)
{
    const char *dot = stage_id ? strrchr(stage_id, '.') : NULL;
    if (!dot || dot == stage_id || (size_t)(dot - stage_id) >= 16)
        return -1;
    int64_t v;
    if (gpp__parse_i64(dot + 1, 0, 100000, &v) != 0)
        return -1;
    memcpy(job_id, stage_id, (size_t)(dot - stage_id));
    job_id[dot - stage_id] = '\0';
    *idx = (int)v;
    return 0;
}

/* ---- job specs (parsed once per job) ----------------------------------------- */

static spec_entry *spec_get(sched *s, int64_t job_seq)
{
    spec_entry *victim = &s->specs[0];
    for (int i = 0; i < SPEC_CACHE; i++) {
        spec_entry *e = &s->specs[i];
        if (e->job_seq == job_seq) {
            e->used = ++s->clock;
            return e;
        }
        if (e->used < victim->used)
            victim = e;
    }
    store_job j;
    gpp_error err = {0};
    if (store_job_get_seq(s->d->store, job_seq, &j, &err) != 0)
        return NULL;
    gpp_jobspec *spec = NULL;
    cJSON *json = j.spec ? cJSON_Parse(j.spec) : NULL;
    int rc = j.spec ? gpp_jobspec_parse(j.spec, strlen(j.spec), &spec, &err) : GPP_EINVAL;
    store_job_clear(&j);
    if (rc != 0 || !json) {
        char q[300];
        log_error("stored job spec does not parse", "job_seq=%lld error=%s", (long long)job_seq,
                  log_quote(err.message, q, sizeof q));
        gpp_jobspec_free(spec);
        cJSON_Delete(json);
        return NULL;
    }
    gpp_jobspec_free(victim->spec);
    cJSON_Delete(victim->json);
    victim->job_seq = job_seq;
    victim->spec = spec;
    victim->json = json;
    victim->used = ++s->clock;
    return victim;
}

/* ---- data sets: hashed lazily, once, on libuv's thread pool ------------------- */

typedef struct hash_work {
    uv_work_t req;
    sched *s;
    char name[STORE_NAME_MAX + 1];
    char *path;
    char *info;
    int rc;
    char msg[300];
} hash_work;

static hash_state *hash_slot(sched *s, const char *name, bool create)
{
    hash_state *free_slot = NULL;
    for (int i = 0; i < HASHING_MAX; i++) {
        if (strcmp(s->hashing[i].name, name) == 0)
            return &s->hashing[i];
        if (!free_slot && !s->hashing[i].name[0])
            free_slot = &s->hashing[i];
    }
    if (create && free_slot) {
        memset(free_slot, 0, sizeof *free_slot);
        snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
    }
    return create ? free_slot : NULL;
}

/* On the thread pool: stat and hash every file the data set's info lists. */
static void hash_run(uv_work_t *req)
{
    hash_work *w = req->data;
    cJSON *info = cJSON_Parse(w->info);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(info, "files");
    store_dataset_file f[GPP_PROTO_MAX_FILES];
    size_t n = 0;
    gpp_sha256_ctx set;
    gpp_sha256_init(&set);
    w->rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, files)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "name"));
        if (!name || strlen(name) > GPP_PROTO_NAME_MAX || strchr(name, '/') ||
            n == GPP_PROTO_MAX_FILES) {
            w->rc = GPP_EINVAL;
            snprintf(w->msg, sizeof w->msg, "data set %s lists an odd file", w->name);
            break;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", w->path, name);
        struct stat st;
        uint8_t dig[GPP_SHA256_LEN];
        gpp_error err = {0};
        if (stat(path, &st) != 0 || gpp_sha256_file(path, dig, &err) != 0) {
            w->rc = GPP_EIO;
            snprintf(w->msg, sizeof w->msg, "cannot hash %.150s: %.120s", path,
                     err.message[0] ? err.message : strerror(errno));
            break;
        }
        memset(&f[n], 0, sizeof f[n]);
        snprintf(f[n].name, sizeof f[n].name, "%s", name);
        f[n].size = (int64_t)st.st_size;
        f[n].mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        gpp_sha256_hex(dig, f[n].sha256);
        gpp_sha256_update(&set, f[n].name, strlen(f[n].name));
        gpp_sha256_update(&set, " ", 1);
        gpp_sha256_update(&set, f[n].sha256, 64);
        gpp_sha256_update(&set, "\n", 1);
        n++;
    }
    cJSON_Delete(info);
    if (w->rc == 0 && n == 0) {
        w->rc = GPP_EINVAL;
        snprintf(w->msg, sizeof w->msg, "data set %s lists no files", w->name);
    }
    if (w->rc == 0) {
        uint8_t dig[GPP_SHA256_LEN];
        char hex[65];
        gpp_sha256_final(&set, dig);
        gpp_sha256_hex(dig, hex);
        gpp_error err = {0};
        w->rc = store_dataset_files_put(w->s->d->store, w->name, f, n, hex, &err);
        if (w->rc != 0)
            snprintf(w->msg, sizeof w->msg, "%.250s", err.message);
    }
}

static void hash_done(uv_work_t *req, int status)
{
    hash_work *w = req->data;
    sched *s = w->s;
    hash_state *h = hash_slot(s, w->name, false);
    char q[400];
    if (status != 0 || w->rc != 0) {
        log_warn("data set not hashed", "dataset=%s error=%s", w->name,
                 log_quote(status ? uv_strerror(status) : w->msg, q, sizeof q));
        if (h) {
            h->running = false;
            h->transient = w->rc == GPP_EUNAVAIL;
            h->failed_at = gpp__now_ms();
        }
    } else {
        log_info("data set hashed", "dataset=%s", w->name);
        if (h)
            memset(h, 0, sizeof *h);
    }
    free(w->path);
    free(w->info);
    free(w);
    if (s->wake)
        s->wake(s->wake_user);
}

static void hash_start(sched *s, const store_dataset *ds)
{
    hash_state *h = hash_slot(s, ds->name, true);
    if (!h || h->running)
        return;
    if (h->failed_at && gpp__now_ms() - h->failed_at < HASH_RETRY_MS)
        return;
    hash_work *w = calloc(1, sizeof *w);
    if (!w)
        return;
    w->s = s;
    snprintf(w->name, sizeof w->name, "%s", ds->name);
    w->path = strdup(ds->path ? ds->path : "");
    w->info = strdup(ds->info ? ds->info : "{}");
    w->req.data = w;
    if (!w->path || !w->info || uv_queue_work(s->loop, &w->req, hash_run, hash_done) != 0) {
        free(w->path);
        free(w->info);
        free(w);
        return;
    }
    h->running = true;
    h->failed_at = 0;
    log_info("hashing data set", "dataset=%s", ds->name);
}

/* Fill the data set part of an assignment.  1 ready, 0 not yet (hashing
 * started), < 0 a permanent problem (message in err). */
static int dataset_prepare(sched *s, const gpp_jobspec *spec, sched_assignment *a,
                           gpp_error *err)
{
    if (spec->dataset_kind == GPP_DATASET_FILES) {
        /* files on the machine that runs the stage: the worker reads spec.dataset */
        const char *p = spec->dataset_path;
        const char *base = strrchr(p, '/');
        base = base && base[1] ? base + 1 : p;
        snprintf(a->ds_name, sizeof a->ds_name, "%.128s", base[0] ? base : "files");
        snprintf(a->ds_format, sizeof a->ds_format, "%s",
                 spec->dataset_format == GPP_DATASET_CIFAR10_BIN ? "cifar10-bin" : "idx");
        a->n_files = 0;
        return 1;
    }
    store_dataset ds;
    int rc = store_dataset_get(s->d->store, spec->dataset_name, &ds, err);
    if (rc != 0)
        return rc;
    snprintf(a->ds_name, sizeof a->ds_name, "%s", ds.name);
    snprintf(a->ds_format, sizeof a->ds_format, "%s", ds.format);
    store_dataset_file *f = NULL;
    size_t n = 0;
    rc = store_dataset_files_get(s->d->store, ds.name, &f, &n, err);
    if (rc != 0) {
        store_dataset_clear(&ds);
        return rc;
    }
    bool fresh = n > 0 && n <= GPP_PROTO_MAX_FILES && !hash_slot(s, ds.name, false);
    for (size_t i = 0; fresh && i < n; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", ds.path, f[i].name);
        int64_t mt = 0;
        if (stat(path, &st) == 0)
            mt = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        if (mt == 0 || (int64_t)st.st_size != f[i].size || mt != f[i].mtime)
            fresh = false;
    }
    if (!fresh) {
        hash_state *h = hash_slot(s, ds.name, false);
        if (h && !h->running && h->failed_at && !h->transient)
            rc = gpp_error_set(err, GPP_EIO, "invalid_data", "dataset",
                               "the files of data set %s cannot be read", ds.name);
        else
            rc = 0;
        hash_start(s, &ds);
        store_dataset_clear(&ds);
        free(f);
        return rc;
    }
    a->n_files = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(a->file_names[i], sizeof a->file_names[i], "%s", f[i].name);
        snprintf(a->file_shas[i], sizeof a->file_shas[i], "%s", f[i].sha256);
        a->files[i].name = a->file_names[i];
        a->files[i].sha256 = a->file_shas[i];
        a->files[i].size = f[i].size;
    }
    store_dataset_clear(&ds);
    free(f);
    return 1;
}

static double num(const cJSON *o, const char *key, double def);

/* The final recovery's input: the size-first prune result's output. */
static int final_input(sched *s, const store_runnable *r, const gpp_jobspec *spec,
                       char hex[65], gpp_error *err)
{
    store_stage *st = NULL;
    size_t n = 0;
    int rc = store_stage_list(s->d->store, r->job_seq, &st, &n, err);
    if (rc != 0)
        return rc;
    int size = -1;
    sched_pick_stages(st, n, spec->stop.max_accuracy_drop, -1, NULL, NULL, NULL, &size);
    hex[0] = '\0';
    if (size >= 0 && size < r->idx && strcmp(st[size].kind, "prune") == 0 &&
        st[size].output_sha256)
        snprintf(hex, 65, "%s", st[size].output_sha256);
    else
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_spec", "",
                           "stage %d (finetune) has no prune result to recover", r->idx);
    store_stage_free(st, n);
    return rc;
}

/* The input checkpoint of stage r: the latest earlier output, or for a first
 * stage the checkpoint the model names.  1 ready ("" for none), < 0 a
 * permanent problem. */
static int input_prepare(sched *s, const store_runnable *r, const gpp_jobspec *spec,
                         sched_assignment *a, gpp_error *err)
{
    a->input_sha[0] = '\0';
    a->input_size = 0;
    int rc = strcmp(r->kind, "finetune") == 0
                 ? final_input(s, r, spec, a->input_sha, err)
                 : store_stage_input(s->d->store, r->job_seq, r->idx, a->input_sha, err);
    if (rc != 0)
        return rc;
    if (!a->input_sha[0]) {
        if (spec->model_kind == GPP_MODEL_CHECKPOINT) {
            const char *ref = spec->model_checkpoint;
            uint8_t dig[GPP_SHA256_LEN];
            if (gpp_sha256_from_hex(ref, dig) == 0) {
                snprintf(a->input_sha, sizeof a->input_sha, "%s", ref);
            } else {
                rc = store_job_last_output(s->d->store, ref, a->input_sha, err);
                if (rc != 0)
                    return gpp_error_set(err, rc == GPP_ENOTFOUND ? GPP_EINVAL : rc,
                                         "invalid_spec", "model.checkpoint",
                                         "job %s has no finished stage to start from", ref);
            }
        } else if (strcmp(r->kind, "train") == 0) {
            return 1;
        } else {
            return gpp_error_set(err, GPP_EINVAL, "invalid_spec", "",
                                 "stage %d (%s) has no input checkpoint", r->idx, r->kind);
        }
    }
    char path[4200];
    struct stat st;
    if (artifacts_path(s->d->artifacts, a->input_sha, path, sizeof path) != 0 ||
        stat(path, &st) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_spec", "model.checkpoint",
                             "the input checkpoint %.64s is missing", a->input_sha);
    a->input_size = (int64_t)st.st_size;
    return 1;
}

static bool worker_matches(const gpp_jobspec *spec, const sched_worker *w)
{
    if (spec->device == GPP_DEVICE_CPU && !w->cpu)
        return false;
    if (spec->device == GPP_DEVICE_GPU && !w->gpu)
        return false;
    for (int i = 0; i < spec->n_labels; i++) {
        bool ok = false;
        for (size_t k = 0; k < w->n_labels && !ok; k++)
            ok = strcmp(w->label_keys[k], spec->labels[i].key) == 0 &&
                 strcmp(w->label_values[k], spec->labels[i].value) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* Fail a stage that can never run (its job fails with the reason). */
static void fail_stage(sched *s, const store_runnable *r, const gpp_error *e)
{
    char reason[600];
    snprintf(reason, sizeof reason, "%s: %s", e->code[0] ? e->code : "internal", e->message);
    store_stage_change c = {.state = "failed", .expect_attempt = r->attempt, .reason = reason,
                            .progress = -1};
    gpp_error e2 = {0};
    char q[700];
    log_warn("stage cannot run", "job=%s stage=%d error=%s", r->job_id, r->idx,
             log_quote(reason, q, sizeof q));
    store_stage_update(s->d->store, r->job_seq, r->idx, &c, NULL, &e2);
}

static bool device_matches(const gpp_jobspec *spec, const sched_worker *w)
{
    return !(spec->device == GPP_DEVICE_CPU && !w->cpu) &&
           !(spec->device == GPP_DEVICE_GPU && !w->gpu);
}

/* Why a stage nobody took waits (see gppd_sched.h). */
static const char *wait_reason(const gpp_jobspec *spec, const store_runnable *r,
                               const sched_worker *w, size_t n)
{
    bool gpu = false, device = false, match = false;
    for (size_t k = 0; k < n; k++) {
        gpu |= w[k].gpu;
        device |= device_matches(spec, &w[k]);
        match |= worker_matches(spec, &w[k]);
    }
    if (spec->device == GPP_DEVICE_GPU && !gpu)
        return "waiting_for_gpu";
    if (strcmp(r->reason, "worker_lost") == 0)
        return "worker_lost";
    if (match || n == 0)
        return spec->device == GPP_DEVICE_GPU ? "waiting_for_gpu" : "waiting_for_worker";
    if (!device)
        return "waiting_for_cpu";
    return "waiting_for_labels";
}

int sched_pass(sched *s, sched_worker *workers, size_t n_workers, sched_assign_fn fn,
               void *user)
{
    store_runnable *rs = NULL;
    size_t n = 0;
    gpp_error err = {0};
    int rc = store_runnable_list(s->d->store, SCHED_PASS_LIMIT, &rs, &n, &err);
    if (rc != 0)
        return rc;
    int64_t now = gpp__now_ms();
    int assigned = 0;
    size_t free_workers = 0;
    for (size_t k = 0; k < n_workers; k++)
        free_workers += !workers[k].busy;
    sched_assignment *a = malloc(sizeof *a);
    if (!a) {
        free(rs);
        return GPP_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const store_runnable *r = &rs[i];
        spec_entry *e = spec_get(s, r->job_seq);
        if (!e)
            continue;
        const gpp_jobspec *spec = e->spec;
        const char *want;
        if (r->not_before > now) {
            want = "retry_backoff";
        } else {
            sched_worker *chosen = NULL;
            for (size_t k = 0; free_workers > 0 && k < n_workers && !chosen; k++)
                if (!workers[k].busy && !workers[k].taken && worker_matches(spec, &workers[k]))
                    chosen = &workers[k];
            if (chosen) {
                memset(a, 0, sizeof *a);
                gpp_error pe = {0};
                int ready = input_prepare(s, r, spec, a, &pe);
                if (ready == 1)
                    ready = dataset_prepare(s, spec, a, &pe);
                if (ready == GPP_EUNAVAIL)
                    continue; /* the store is unavailable: try again on the next pass */
                if (ready < 0) {
                    fail_stage(s, r, &pe);
                    continue;
                }
                if (ready == 1) {
                    store_stage_change c = {.state = "assigned", .expect_attempt = r->attempt,
                                            .reason = NULL, .worker_id = chosen->id,
                                            .progress = -1,
                                            .input_sha256 = a->input_sha[0] ? a->input_sha
                                                                            : NULL};
                    int attempt = 0;
                    gpp_error ue = {0};
                    if (store_stage_update(s->d->store, r->job_seq, r->idx, &c, &attempt,
                                           &ue) != 0) {
                        char q[300];
                        log_warn("assignment not recorded", "job=%s stage=%d error=%s",
                                 r->job_id, r->idx, log_quote(ue.message, q, sizeof q));
                        continue;
                    }
                    a->job_seq = r->job_seq;
                    snprintf(a->job_id, sizeof a->job_id, "%s", r->job_id);
                    a->stage_row = r->stage_id;
                    a->idx = r->idx;
                    a->attempt = attempt;
                    snprintf(a->kind, sizeof a->kind, "%s", r->kind);
                    a->spec = e->json;
                    chosen->taken = true;
                    free_workers--;
                    /* the frame first, the job log line after: that line is one
                     * more fsync'ed commit the worker need not wait for */
                    fn(user, chosen, a);
                    char msg[200];
                    snprintf(msg, sizeof msg, "stage %d (%s) assigned to worker %s, attempt %d",
                             r->idx, r->kind, chosen->id, attempt);
                    store_log_event(s->d->store, r->job_seq, r->job_id, r->idx, "info",
                                    "daemon", msg, NULL);
                    assigned++;
                    continue;
                }
            }
            want = wait_reason(spec, r, workers, n_workers);
        }
        if (strcmp(want, r->reason) != 0)
            store_stage_set_reason(s->d->store, r->job_seq, r->idx, want, NULL);
    }
    free(a);
    free(rs);
    return assigned;
}

/* ---- stage ends ---------------------------------------------------------------- */

static double num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

void sched_pick_parsed(const store_stage *st, const cJSON *const *sums, size_t n,
                       double max_drop,
                       int *base, int *acc_first, int *size_first)
{
    gpp_pick_item *items = calloc(n ? n : 1, sizeof *items);
    int b = -1, a = -1, z = -1, first = -1, bases = 0;
    for (size_t i = 0; items && i < n; i++) {
        const cJSON *sum = sums[i];
        if (!cJSON_IsObject(sum))
            continue;
        const char *k = st[i].kind;
        bool is_base = strcmp(k, "train") == 0 || strcmp(k, "grow") == 0;
        items[i] = (gpp_pick_item){
            .role = is_base                        ? GPP_PICK_BASE
                    : strcmp(k, "prune") == 0      ? GPP_PICK_PRUNE
                    : strcmp(k, "finetune") == 0   ? GPP_PICK_FINETUNE
                                                   : GPP_PICK_OTHER,
            .from = (int)num(sum, "from_stage", -1),
            .val = num(sum, "val_accuracy", 0),
            .params = num(sum, "params", INFINITY),
        };
        if (items[i].from >= (int)n)
            items[i].from = -1;
        bases += is_base;
        if (first < 0)
            first = (int)i;
    }
    if (items && bases == 0 && first >= 0)
        items[first].role = GPP_PICK_BASE;   /* a job that starts from a trained checkpoint */
    if (items)
        gpp_pick_models(items, (int)n, max_drop, &b, &a, &z);
    free(items);
    if (base)
        *base = b;
    if (acc_first)
        *acc_first = a;
    if (size_first)
        *size_first = z;
}

void sched_pick_stages(const store_stage *st, size_t n, double max_drop, int over_idx,
                       const cJSON *over, int *base, int *acc_first, int *size_first)
{
    cJSON **own = calloc(n ? n : 1, sizeof *own);
    const cJSON **sums = calloc(n ? n : 1, sizeof *sums);
    bool ok = own && sums;
    for (size_t i = 0; ok && i < n; i++)
        if ((int)i != over_idx && strcmp(st[i].state, "succeeded") == 0 && st[i].summary)
            sums[i] = own[i] = cJSON_Parse(st[i].summary);
    if (ok && over_idx >= 0 && (size_t)over_idx < n)
        sums[over_idx] = over;
    /* out of memory: no stages, so no pick (-1) */
    sched_pick_parsed(st, sums, ok ? n : 0, max_drop, base, acc_first, size_first);
    for (size_t i = 0; own && i < n; i++)
        cJSON_Delete(own[i]);
    free(own);
    free(sums);
}

/* The stop rule a prune result meets ("" none): its validation accuracy
 * fell more than stop.max_accuracy_drop below base_val, or its params
 * reached stop.target_params. */
static void stop_rule(const gpp_jobspec *spec, double base_val, const cJSON *summary,
                      char *out, size_t cap)
{
    double v = num(summary, "val_accuracy", NAN);
    double p = num(summary, "params", NAN);
    out[0] = '\0';
    if (!isnan(base_val) && !isnan(v) && v < base_val - spec->stop.max_accuracy_drop)
        snprintf(out, cap,
                 "stopped early: validation accuracy %.4f fell more than %.4f below the"
                 " baseline's %.4f", v, spec->stop.max_accuracy_drop, base_val);
    else if (spec->stop.target_params > 0 && !isnan(p) && p <= (double)spec->stop.target_params)
        snprintf(out, cap, "stopped early: %.0f params reached the target %lld", p,
                 (long long)spec->stop.target_params);
}

int sched_stage_succeeded(sched *s, int64_t job_seq, int idx, int attempt,
                          const char *output_sha, int64_t output_size, const cJSON *summary,
                          gpp_error *err)
{
    spec_entry *e = spec_get(s, job_seq);
    store_stage *st = NULL;
    size_t n = 0;
    int rc = store_stage_list(s->d->store, job_seq, &st, &n, err);
    if (rc != 0)
        return rc;
    if (idx < 0 || (size_t)idx >= n) {
        store_stage_free(st, n);
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no stage %d", idx);
    }
    char *text = cJSON_PrintUnformatted(summary);
    int skip_through = 0;
    char skip_reason[300] = "", job_reason[300] = "";
    const char *kind = st[idx].kind;
    if (e && strcmp(kind, "grow") == 0 &&
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(summary, "grow_done"))) {
        for (size_t i = (size_t)idx + 1; i < n; i++)
            if (strcmp(st[i].kind, "grow") == 0)
                skip_through = (int)i;
        snprintf(skip_reason, sizeof skip_reason, "grow stopped paying");
    }
    /* the baseline's validation accuracy (the last train / grow result) */
    double base_val = NAN;
    for (int i = 0; i < idx; i++) {
        if ((strcmp(st[i].kind, "train") == 0 || strcmp(st[i].kind, "grow") == 0) &&
            strcmp(st[i].state, "succeeded") == 0 && st[i].summary) {
            cJSON *bs = cJSON_Parse(st[i].summary);
            base_val = num(bs, "val_accuracy", NAN);
            cJSON_Delete(bs);
        }
    }
    bool has_final = strcmp(st[n - 1].kind, "finetune") == 0;
    if (e && strcmp(kind, "prune") == 0 && (size_t)idx + 1 < n) {
        const gpp_jobspec *spec = e->spec;
        stop_rule(spec, base_val, summary, job_reason, sizeof job_reason);
        if (job_reason[0]) {
            /* every remaining stage but the final recovery */
            skip_through = has_final ? (int)n - 2 : (int)n - 1;
            snprintf(skip_reason, sizeof skip_reason, "%s", job_reason);
        }
        if (has_final && (size_t)idx + 2 == n) {
            /* the last prune had the final recovery: the finetune stage is
             * needed only when the size-first result is another prune */
            int size = -1;
            sched_pick_stages(st, n, spec->stop.max_accuracy_drop, idx, summary, NULL, NULL,
                              &size);
            if (size == idx) {
                skip_through = (int)n - 1;
                snprintf(skip_reason, sizeof skip_reason,
                         "the size-first model (stage %d) already had its final recovery", idx);
            }
        }
    }
    if (e && strcmp(kind, "finetune") == 0) {
        /* the job ends here: say why the loop stopped, as the prune did */
        for (int i = 0; i < idx && !job_reason[0]; i++) {
            if (strcmp(st[i].kind, "prune") != 0 || strcmp(st[i].state, "succeeded") != 0 ||
                !st[i].summary)
                continue;
            cJSON *ps = cJSON_Parse(st[i].summary);
            stop_rule(e->spec, base_val, ps, job_reason, sizeof job_reason);
            cJSON_Delete(ps);
        }
    }
    if (skip_through <= idx)
        skip_reason[0] = '\0';    /* nothing left to skip */
    store_stage_change c = {
        .state = "succeeded", .expect_attempt = attempt, .reason = NULL, .summary = text,
        .output_sha256 = output_sha, .output_size = output_size, .progress = 1.0,
        .skip_through = skip_through, .skip_reason = skip_reason[0] ? skip_reason : NULL,
        .job_reason = job_reason[0] ? job_reason : NULL,
    };
    rc = text ? store_stage_update(s->d->store, job_seq, idx, &c, NULL, err)
              : gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    if (rc == 0 && skip_reason[0]) {   /* the job's log has it too (store_stage_update) */
        char q[400];
        log_info("stages skipped", "job_seq=%lld after=%d through=%d reason=%s",
                 (long long)job_seq, idx, skip_through, log_quote(skip_reason, q, sizeof q));
    }
    free(text);
    store_stage_free(st, n);
    return rc;
}

static int requeue(sched *s, int64_t job_seq, int idx, int attempt, const char *reason,
                   bool failure, int64_t not_before, gpp_error *err)
{
    store_stage_change c = {.state = "queued", .expect_attempt = attempt, .reason = reason,
                            .progress = 0.0, .not_before = not_before,
                            .add_failure = failure ? 1 : 0};
    return store_stage_update(s->d->store, job_seq, idx, &c, NULL, err);
}

static int fail_now(sched *s, int64_t job_seq, int idx, int attempt, const char *reason,
                    gpp_error *err)
{
    store_stage_change c = {.state = "failed", .expect_attempt = attempt, .reason = reason,
                            .progress = -1, .add_failure = 1};
    return store_stage_update(s->d->store, job_seq, idx, &c, NULL, err);
}

/* The failures a stage has used so far, and the job's budget. */
static int budget(sched *s, int64_t job_seq, int idx, int *failures, int *max_restarts,
                  gpp_error *err)
{
    store_stage *st = NULL;
    size_t n = 0;
    int rc = store_stage_list(s->d->store, job_seq, &st, &n, err);
    if (rc != 0)
        return rc;
    *failures = idx >= 0 && (size_t)idx < n ? st[idx].failures : 0;
    store_stage_free(st, n);
    spec_entry *e = spec_get(s, job_seq);
    *max_restarts = e ? e->spec->max_restarts : 3;
    return 0;
}

int sched_stage_failed(sched *s, int64_t job_seq, int idx, int attempt,
                       gpp_proto_fail_class cls, bool retryable, const char *reason,
                       gpp_error *err)
{
    const char *cname = gpp_proto_fail_class_name((int)cls);
    char why[4400];
    snprintf(why, sizeof why, "%s: %s", cname ? cname : "internal", reason ? reason : "");
    if (cls == GPP_PROTO_FAIL_CANCELLED)   /* given back by a stopping worker */
        return requeue(s, job_seq, idx, attempt, "waiting_for_worker", false, 0, err);
    if (cls == GPP_PROTO_FAIL_OOM || cls == GPP_PROTO_FAIL_INVALID_DATA ||
        cls == GPP_PROTO_FAIL_INVALID_SPEC || !retryable)
        return fail_now(s, job_seq, idx, attempt, why, err);
    int failures = 0, max_restarts = 0;
    int rc = budget(s, job_seq, idx, &failures, &max_restarts, err);
    if (rc != 0)
        return rc;
    if (failures + 1 > max_restarts) {
        char gave[4500];
        snprintf(gave, sizeof gave, "%s (gave up after %d failed attempts; max_restarts %d)",
                 why, failures + 1, max_restarts);
        return fail_now(s, job_seq, idx, attempt, gave, err);
    }
    int64_t delay = SCHED_BACKOFF_BASE_MS;
    for (int i = 0; i < failures && delay < SCHED_BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > SCHED_BACKOFF_MAX_MS)
        delay = SCHED_BACKOFF_MAX_MS;
    return requeue(s, job_seq, idx, attempt, "retry_backoff", true, gpp__now_ms() + delay, err);
}

int sched_stage_lost(sched *s, int64_t job_seq, int idx, int attempt, const char *why,
                     gpp_error *err)
{
    int failures = 0, max_restarts = 0;
    int rc = budget(s, job_seq, idx, &failures, &max_restarts, err);
    if (rc != 0)
        return rc;
    if (failures + 1 > max_restarts) {
        char gave[400];
        snprintf(gave, sizeof gave, "worker lost: %s (gave up after %d failed attempts;"
                 " max_restarts %d)", why ? why : "", failures + 1, max_restarts);
        return fail_now(s, job_seq, idx, attempt, gave, err);
    }
    return requeue(s, job_seq, idx, attempt, "worker_lost", true, 0, err);
}

int sched_stage_requeue(sched *s, int64_t job_seq, int idx, int attempt, const char *why,
                        gpp_error *err)
{
    (void)why;
    return requeue(s, job_seq, idx, attempt, "waiting_for_worker", false, 0, err);
}
