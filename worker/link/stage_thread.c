/* worker/link/stage_thread.c - one stage run on its own thread (see
 * wl_internal.h): spec, data (cached between stages), gpp_stage_run with
 * callbacks that fill the outbox, the output moved into the blob cache. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gpp/jobspec.h"
#include "wl_internal.h"

/* The last data set loaded, kept for the next stage (only the stage thread
 * touches it; one stage runs at a time). */
static struct {
    char key[8192];
    gpp_stage_data *data;
} data_cache;

/* wl_data_cache_free: see wl_internal.h. */
void wl_data_cache_free(void)
{
    gpp_stage_data_free(data_cache.data);
    data_cache.data = NULL;
    data_cache.key[0] = '\0';
}

/* wl_chain_stage: see wl_internal.h. */
int wl_chain_stage(const gpp_jobspec *spec, int index, gpp_stage_kind *kind, int *round)
{
    int n = 0;
    if (index == n) {     /* from a checkpoint model too: its evaluation */
        *kind = GPP_STAGE_TRAIN;
        *round = 0;
        return 0;
    }
    n++;
    if (spec->grow.enabled) {
        for (int i = 1; i <= spec->grow.max_modules; i++, n++) {
            if (index == n) {
                *kind = GPP_STAGE_GROW;
                *round = i;
                return 0;
            }
        }
    }
    for (int i = 1; i <= spec->iterations; i++, n += 2) {
        if (index == n || index == n + 1) {
            *kind = index == n ? GPP_STAGE_PUSH : GPP_STAGE_PRUNE;
            *round = i;
            return 0;
        }
    }
    if (index == n && gpp_jobspec_has_finetune(spec)) {
        *kind = GPP_STAGE_FINETUNE;
        *round = 0;
        return 0;
    }
    return -1;
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void on_metric(void *user, const gpp_metric *m)
{
    wl_job *j = user;
    wl_outbox *b = j->box;
    int64_t t = now_ms();
    bool wake = false;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < m->n; i++) {
        b->emitted++;
        if (b->n_points >= WL_PENDING_MAX) {
            b->dropped++;
            continue;
        }
        if (b->n_points == b->cap_points) {
            size_t cap = b->cap_points ? b->cap_points * 2 : 1024;
            wl_point *np = realloc(b->points, cap * sizeof *np);
            if (!np) {
                b->dropped++;
                continue;
            }
            b->points = np;
            b->cap_points = cap;
        }
        wl_point *p = &b->points[b->n_points++];
        p->iteration = m->iteration < 0 ? 0 : m->iteration;
        snprintf(p->name, sizeof p->name, "%s", m->names[i]);
        p->value = m->values[i];
        p->time_ms = t;
    }
    wake = b->n_points >= WL_BATCH_POINTS;
    pthread_mutex_unlock(&b->mu);
    if (wake)
        uv_async_send(j->wake);
}

static void on_log(void *user, const char *line)
{
    wl_job *j = user;
    wl_outbox *b = j->box;
    char *copy = strdup(line);
    if (!copy)
        return;
    pthread_mutex_lock(&b->mu);
    if (b->n_lines == b->cap_lines) {
        size_t cap = b->cap_lines ? b->cap_lines * 2 : 16;
        char **nl = realloc(b->lines, cap * sizeof *nl);
        if (!nl) {
            pthread_mutex_unlock(&b->mu);
            free(copy);
            return;
        }
        b->lines = nl;
        b->cap_lines = cap;
    }
    b->lines[b->n_lines++] = copy;
    pthread_mutex_unlock(&b->mu);
    uv_async_send(j->wake);
}

static void on_progress(void *user, double f)
{
    wl_job *j = user;
    pthread_mutex_lock(&j->box->mu);
    j->box->progress = f;
    pthread_mutex_unlock(&j->box->mu);
}

/* The failure class of an error (gpp/proto.h fail.class). */
static gpp_proto_fail_class classify(int rc, const gpp_error *e, bool data_phase)
{
    if (rc == GPP_EAGAIN && strcmp(e->code, "cancelled") == 0)
        return GPP_PROTO_FAIL_CANCELLED;
    if (rc == GPP_ENOMEM)
        return GPP_PROTO_FAIL_OOM;
    if (data_phase || strcmp(e->field, "dataset") == 0)
        return GPP_PROTO_FAIL_INVALID_DATA;
    if (rc == GPP_EINVAL)
        return GPP_PROTO_FAIL_INVALID_SPEC;
    if (rc == GPP_EIO || rc == GPP_EFORMAT || rc == GPP_ENOTFOUND || rc == GPP_ECHECKSUM)
        return GPP_PROTO_FAIL_RETRYABLE;
    return GPP_PROTO_FAIL_INTERNAL;
}

/* wl_stage_thread: see wl_internal.h. */
void wl_stage_thread(void *arg)
{
    wl_job *j = arg;
    gpp_jobspec *spec = NULL;
    gpp_error *err = &j->err;
    bool data_phase = false;
    int rc = gpp_jobspec_parse(j->spec_text, strlen(j->spec_text), &spec, err);
    if (rc != 0)
        goto done;
    gpp_stage_kind kind;
    int round = 0;
    if (wl_chain_stage(spec, j->index, &kind, &round) != 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "index",
                           "stage %d is not in this job's chain", j->index);
        goto done;
    }
    static const gpp_stage_kind want[] = {GPP_STAGE_TRAIN, GPP_STAGE_GROW, GPP_STAGE_PUSH,
                                          GPP_STAGE_PRUNE, GPP_STAGE_FINETUNE};
    if ((int)j->kind > 4 || want[j->kind] != kind) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "kind",
                           "stage %d of this job is a %s stage, not %s", j->index,
                           gpp_stage_kind_name(kind), gpp_proto_stage_kind_name((int)j->kind));
        goto done;
    }
    /* the data: the cached blobs as a folder of the standard file names */
    char dsdir[PATH_MAX] = "";
    if (j->n_files > 0) {
        data_phase = true;
        rc = wl_cache_dataset(j->cache, j->ds_name, j->n_files, j->files, dsdir, sizeof dsdir,
                              err);
        if (rc != 0)
            goto done;
        if (spec->dataset_kind == GPP_DATASET_NAME &&
            strcmp(spec->dataset_name, j->ds_name) != 0) {
            rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "dataset",
                               "the assignment's data set %s is not the spec's %s", j->ds_name,
                               spec->dataset_name);
            goto done;
        }
    }
    cJSON *doc = cJSON_Parse(j->spec_text);
    char *data_json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "data"));
    char *ds_json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "dataset"));
    char key[sizeof data_cache.key];
    /* where validation comes from as resolved: data.val_from "auto" depends
     * on the model */
    snprintf(key, sizeof key, "%s|%s|%s|%d|%d", dsdir, ds_json ? ds_json : "",
             data_json ? data_json : "", spec->seed, gpp_jobspec_val_from_test(spec));
    free(data_json);
    free(ds_json);
    cJSON_Delete(doc);
    if (!data_cache.data || strcmp(key, data_cache.key) != 0) {
        wl_data_cache_free();
        data_phase = true;
        rc = gpp_stage_data_open(spec, dsdir[0] ? dsdir : NULL, &data_cache.data, err);
        if (rc != 0)
            goto done;
        snprintf(data_cache.key, sizeof data_cache.key, "%s", key);
    }
    data_phase = false;
    char in_path[PATH_MAX + 80], out_path[PATH_MAX + 200], part[PATH_MAX + 200];
    if (j->input_sha[0])
        wl_cache_blob_path(j->cache, j->input_sha, in_path, sizeof in_path);
    snprintf(out_path, sizeof out_path, "%s/work/%s.%d.gppm", j->cache, j->stage_id, j->attempt);
    /* the resumable copy was put in place by the loop (client.c ckpt_prepare) */
    wl_cache_work_path(j->cache, j->stage_id, "partial", part, sizeof part);
    gpp_stage_req req = {
        .spec = spec, .kind = kind, .index = j->index,
        .iteration = kind == GPP_STAGE_GROW ? round : round > 0 ? round - 1 : 0,
        .input = j->input_sha[0] ? in_path : NULL, .output = out_path, .partial = part,
        .data = data_cache.data, .ctx = j->ctx, .threads = j->threads,
    };
    gpp_stage_io io = {.user = j, .metric = on_metric, .log = on_log,
                       .progress = on_progress, .cancel = &j->cancel};
    rc = gpp_stage_run(&req, &io, &j->summary, err);
    if (rc != 0)
        goto done;
    if (!j->summary)
        j->summary = cJSON_CreateObject();
    if (wl_file_sha256(out_path, j->out_sha, &j->out_size) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot read the stage's output %s",
                           out_path);
        goto done;
    }
    char blob[PATH_MAX + 80];
    wl_cache_blob_path(j->cache, j->out_sha, blob, sizeof blob);
    if (rename(out_path, blob) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "", "cannot move %s into the cache: %s",
                           out_path, strerror(errno));
        unlink(out_path);
        goto done;
    }
done:
    j->rc = rc;
    if (rc != 0) {
        j->cls = classify(rc, err, data_phase);
        cJSON_Delete(j->summary);
        j->summary = NULL;
        if (j->cls == GPP_PROTO_FAIL_INVALID_DATA || j->cls == GPP_PROTO_FAIL_INVALID_SPEC)
            wl_data_cache_free();
    }
    gpp_jobspec_free(spec);
    pthread_mutex_lock(&j->box->mu);
    j->box->done = true;
    pthread_mutex_unlock(&j->box->mu);
    uv_async_send(j->wake);
}
