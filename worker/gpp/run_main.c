/* `gpp-worker run JOB.json --out DIR [--resume]` (gpp/stages.h
 * gpp_run_main): a whole GPP job on this machine, the same stage functions
 * a worker runs for the daemon.  The next stage is a pure function of the
 * spec and the results of the stages done so far (read back from their
 * checkpoints), so --resume is the same loop started from the files. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpp/ckpt.h"
#include "gpp/pick.h"
#include "gpp/sha256.h"
#include "gpp/stages.h"

#define MAX_STAGES 256
#define PATH_CAP 4200

typedef struct result {
    gpp_stage_kind kind;
    int index;
    int iteration;
    char file[64];          /* stage-NN-KIND.gppm */
    cJSON *summary;         /* meta.summary, with "file" */
} result;

typedef struct runner {
    const gpp_jobspec *spec;
    const char *out;
    int tty;
    FILE *metrics;
    result res[MAX_STAGES];
    int n;
    int baselines;          /* --baselines: 1; --schedule-baselines: 2 */
    unsigned which;         /* one-shot baselines to run: bit k of order[] (--baselines=LIST) */
    /* progress line */
    const char *cur_kind;
    int cur_index;
    double last_draw;
    double frac;
    double loss, acc, ips;
    long long seen;         /* iterations shown this stage */
    char stop_reason[128];
} runner;

static volatile sig_atomic_t got_signal;
static atomic_int cancel_flag;

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
    atomic_store(&cancel_flag, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_in(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void stage_file(char *buf, size_t cap, int index, gpp_stage_kind kind, const char *suffix)
{
    snprintf(buf, cap, "stage-%02d-%s%s", index, gpp_stage_kind_name(kind), suffix);
}

/* ---- output ------------------------------------------------------------------------ */

static void clear_line(runner *r)
{
    if (r->tty) fputs("\r\033[K", stdout);
}

static void draw(runner *r, int force)
{
    if (!r->tty || !r->cur_kind) return;
    double t = now_s();
    if (!force && t - r->last_draw < 0.1) return;
    r->last_draw = t;
    char bar[31];
    int fill = (int)(r->frac * 30.0 + 0.5);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '-';
    bar[30] = 0;
    printf("\r\033[K  %02d %-8s [%s] %3.0f%%", r->cur_index, r->cur_kind, bar, r->frac * 100.0);
    if (r->ips > 0) printf("  loss %.4f  acc %.3f  %.0f img/s", r->loss, r->acc, r->ips);
    fflush(stdout);
}

static void on_log(void *user, const char *line)
{
    runner *r = user;
    clear_line(r);
    printf("  %s\n", line);
    draw(r, 1);
    fflush(stdout);
}

static void on_progress(void *user, double f)
{
    runner *r = user;
    r->frac = f;
    draw(r, 0);
}

static void on_metric(void *user, const gpp_metric *m)
{
    runner *r = user;
    if (r->metrics) {
        fprintf(r->metrics,
                "{\"type\":\"%s\",\"stage\":\"%s\",\"stage_index\":%d,\"phase\":\"%s\","
                "\"iteration\":%lld,\"epoch\":%.6g",
                m->evaluation ? "evaluation" : "iteration", m->stage, m->stage_index, m->phase,
                m->iteration, m->epoch);
        for (int i = 0; i < m->n; i++) {
            double v = m->values[i];
            if (isfinite(v)) fprintf(r->metrics, ",\"%s\":%.9g", m->names[i], v);
            else fprintf(r->metrics, ",\"%s\":null", m->names[i]);
        }
        fputs("}\n", r->metrics);
    }
    if (!m->evaluation) {
        for (int i = 0; i < m->n; i++) {
            if (strcmp(m->names[i], "loss") == 0) r->loss = m->values[i];
            else if (strcmp(m->names[i], "batch_accuracy") == 0)
                r->acc = r->seen ? 0.9 * r->acc + 0.1 * m->values[i] : m->values[i];
            else if (strcmp(m->names[i], "images_per_s") == 0)
                r->ips = r->seen ? 0.9 * r->ips + 0.1 * m->values[i] : m->values[i];
        }
        r->seen++;
    }
}

/* ---- files -------------------------------------------------------------------------- */

static char *read_text(const char *path, size_t limit, size_t *len, gpp_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gpp_error_set(err, errno == ENOENT ? GPP_ENOTFOUND : GPP_EIO, "io", "", "%s: %s", path,
                      strerror(errno));
        return NULL;
    }
    char *buf = malloc(limit + 1);
    size_t n = buf ? fread(buf, 1, limit + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n > limit) {
        free(buf);
        gpp_error_set(err, n > limit ? GPP_ETOOBIG : GPP_EIO, "io", "", "%s: %s", path,
                      n > limit ? "too large" : "cannot read");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int write_text(const char *path, const char *text)
{
    char tmp[PATH_CAP + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0 && fputs("\n", f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The summary stored in a stage checkpoint's meta, with "file". */
static int read_result(const char *dir, int index, result *out, gpp_error *err)
{
    for (int k = 0; k < GPP_STAGE_KIND_COUNT; k++) {
        char name[64], path[PATH_CAP];
        stage_file(name, sizeof name, index, (gpp_stage_kind)k, ".gppm");
        path_in(path, sizeof path, dir, name);
        if (access(path, R_OK) != 0) continue;
        gpp_ckpt *ck = NULL;
        int rc = gpp_ckpt_read_file(path, &ck, err);
        if (rc != 0) return rc;
        cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
        gpp_ckpt_free(ck);
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
        cJSON *sum = cJSON_DetachItemFromObjectCaseSensitive(meta, "summary");
        cJSON_Delete(doc);
        if (!cJSON_IsObject(sum)) {
            cJSON_Delete(sum);
            return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s has no meta.summary", path);
        }
        cJSON_AddStringToObject(sum, "file", name);
        out->kind = (gpp_stage_kind)k;
        out->index = index;
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(sum, "iteration");
        out->iteration = cJSON_IsNumber(it) ? (int)it->valuedouble : 0;
        snprintf(out->file, sizeof out->file, "%s", name);
        out->summary = sum;
        return 0;
    }
    return GPP_ENOTFOUND;
}

static double num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static int flag(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* ---- the plan ------------------------------------------------------------------------ */

/* The model pruning starts from: the last train / grow result. */
static int baseline_of(const runner *r)
{
    int b = -1;
    for (int i = 0; i < r->n; i++)
        if (r->res[i].kind == GPP_STAGE_TRAIN || r->res[i].kind == GPP_STAGE_GROW) b = i;
    return b;
}

/* The result whose stage index is `index` (results sit at their stage
 * index), or -1. */
static int result_at(const runner *r, int index)
{
    return index >= 0 && index < r->n ? index : -1;
}

/* accuracy-first and size-first (gpp/pick.h, the daemon's rule too) among
 * the prune results and the final recovery; the baseline when there is
 * none. */
static void pick_models(const runner *r, int *acc_first, int *size_first)
{
    gpp_pick_item items[MAX_STAGES];
    for (int i = 0; i < r->n; i++) {
        gpp_stage_kind k = r->res[i].kind;
        items[i] = (gpp_pick_item){
            .role = k == GPP_STAGE_TRAIN || k == GPP_STAGE_GROW ? GPP_PICK_BASE
                    : k == GPP_STAGE_PRUNE                     ? GPP_PICK_PRUNE
                    : k == GPP_STAGE_FINETUNE                  ? GPP_PICK_FINETUNE
                                                               : GPP_PICK_OTHER,
            .from = k == GPP_STAGE_FINETUNE
                        ? result_at(r, (int)num(r->res[i].summary, "from_stage", -1))
                        : -1,
            .val = num(r->res[i].summary, "val_accuracy", 0),
            .params = num(r->res[i].summary, "params", INFINITY),
        };
    }
    gpp_pick_models(items, r->n, r->spec->stop.max_accuracy_drop, NULL, acc_first, size_first);
}

typedef struct next {
    gpp_stage_kind kind;
    int iteration;
    int input;              /* result whose file is the input (-1: none) */
    int reference;          /* result whose file is the reference (-1: none) */
    int budget;
    int final_widths;       /* l1 / random at the final recovery's widths */
} next;

static int count_kind(const runner *r, gpp_stage_kind k)
{
    int c = 0;
    for (int i = 0; i < r->n; i++) c += r->res[i].kind == k;
    return c;
}

/* The one-shot baselines have iteration 0; the steps of a same-schedule
 * baseline chain (--schedule-baselines) have iteration j >= 1, the j-th
 * GPP prune's widths. */
static int find_baseline(const runner *r, gpp_stage_kind k, int iteration)
{
    for (int i = 0; i < r->n; i++)
        if (r->res[i].kind == k && r->res[i].iteration == iteration) return i;
    return -1;
}

static int is_baseline(gpp_stage_kind k)
{
    return k == GPP_STAGE_L1 || k == GPP_STAGE_RANDOM || k == GPP_STAGE_SCRATCH;
}

/* The last step of a baseline kind's same-schedule chain, or -1. */
static int schedule_last(const runner *r, gpp_stage_kind k)
{
    int best = -1;
    for (int i = 0; i < r->n; i++)
        if (r->res[i].kind == k && r->res[i].iteration > 0 &&
            (best < 0 || r->res[i].iteration > r->res[best].iteration))
            best = i;
    return best;
}

/* The next stage, or 0 when the job is done. */
static int plan(runner *r, next *nx)
{
    const gpp_jobspec *sp = r->spec;
    memset(nx, 0, sizeof *nx);
    nx->input = nx->reference = -1;
    if (r->n == 0) {
        nx->kind = GPP_STAGE_TRAIN;
        return 1;
    }
    const result *last = &r->res[r->n - 1];
    int grows = count_kind(r, GPP_STAGE_GROW), prunes = count_kind(r, GPP_STAGE_PRUNE);
    int pushes = count_kind(r, GPP_STAGE_PUSH);
    /* grow while it pays */
    if (sp->grow.enabled && prunes == 0 && pushes == 0 &&
        (last->kind == GPP_STAGE_TRAIN || last->kind == GPP_STAGE_GROW) &&
        !flag(last->summary, "grow_done") && grows < sp->grow.max_modules) {
        nx->kind = GPP_STAGE_GROW;
        nx->iteration = grows + 1;
        nx->input = r->n - 1;
        return 1;
    }
    int b = baseline_of(r);
    double base_val = num(r->res[b].summary, "val_accuracy", 0);
    /* stop rules after a prune */
    int stopped = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->res[i].kind != GPP_STAGE_PRUNE) continue;
        double v = num(r->res[i].summary, "val_accuracy", 0);
        double p = num(r->res[i].summary, "params", 0);
        if (v < base_val - sp->stop.max_accuracy_drop) {
            snprintf(r->stop_reason, sizeof r->stop_reason,
                     "validation accuracy %.4f fell more than %.4f below the baseline's %.4f", v,
                     sp->stop.max_accuracy_drop, base_val);
            stopped = 1;
        } else if (sp->stop.target_params > 0 && p <= (double)sp->stop.target_params) {
            snprintf(r->stop_reason, sizeof r->stop_reason, "%.0f params reached the target %lld",
                     p, (long long)sp->stop.target_params);
            stopped = 1;
        }
    }
    if (!stopped && prunes < sp->iterations) {
        int pushed = last->kind == GPP_STAGE_PUSH;
        nx->kind = sp->push.epochs > 0 && !pushed ? GPP_STAGE_PUSH : GPP_STAGE_PRUNE;
        nx->iteration = prunes;
        /* the model the loop carries: the last GPP result (never a baseline's) */
        nx->input = r->n - 1;
        return 1;
    }
    if (!stopped && !r->stop_reason[0])
        snprintf(r->stop_reason, sizeof r->stop_reason, "%d iterations done", prunes);
    if (prunes == 0) return 0;
    int af, sf;
    pick_models(r, &af, &sf);
    /* the final recovery: only the last planned prune carries
     * prune.final_finetune_epochs; when the size-first model is another
     * prune (the loop stopped early, or the last prune fell below the
     * accuracy bound), it gets its own */
    int finetunes = count_kind(r, GPP_STAGE_FINETUNE);
    if (gpp_jobspec_has_finetune(sp) && finetunes == 0 && sf >= 0 &&
        r->res[sf].kind == GPP_STAGE_PRUNE && r->res[sf].iteration != sp->iterations - 1) {
        nx->kind = GPP_STAGE_FINETUNE;
        nx->iteration = r->res[sf].iteration;
        nx->input = sf;
        return 1;
    }
    if (!r->baselines) return 0;
    /* the budget: every epoch GPP trained after the baseline (each prune
     * records its fine-tune epochs: the last may hold the final recovery;
     * a finetune stage records its own) */
    int epochs_after = pushes * sp->push.epochs;
    for (int i = 0; i < r->n; i++)
        if (r->res[i].kind == GPP_STAGE_PRUNE)
            epochs_after += (int)num(r->res[i].summary, "finetune_epochs",
                                     sp->prune.finetune_epochs);
        else if (r->res[i].kind == GPP_STAGE_FINETUNE)
            epochs_after += (int)num(r->res[i].summary, "finetune_epochs",
                                     sp->prune.final_finetune_epochs);
    int epochs_total = sp->train.epochs + grows * sp->grow.epochs + epochs_after;
    static const gpp_stage_kind order[3] = {GPP_STAGE_L1, GPP_STAGE_RANDOM, GPP_STAGE_SCRATCH};
    for (int k = 0; k < 3; k++) {
        if (!(r->which & (1u << k)) || find_baseline(r, order[k], 0) >= 0) continue;
        nx->kind = order[k];
        nx->input = b;
        nx->reference = sf;
        nx->budget = order[k] == GPP_STAGE_SCRATCH ? epochs_total : epochs_after;
        nx->final_widths = 1;
        return 1;
    }
    if (r->baselines < 2) return 0;
    /* the same schedule with another criterion, each width trained exactly
     * the epochs GPP trained at it: step 1 trains the baseline's widths for
     * the first push's epochs (nothing to cut), step j+1 cuts the previous
     * step to the j-th prune's widths and trains that prune's fine-tune plus
     * the push GPP ran at those widths before its next prune; a final
     * recovery is one more step at the same widths */
    int recovered = r->res[sf].kind == GPP_STAGE_FINETUNE
                        ? result_at(r, (int)num(r->res[sf].summary, "from_stage", -1))
                        : -1;
    int end = recovered >= 0 ? recovered : sf;
    for (int k = 0; k < 2; k++) {
        int prev = b, step = 0;
        for (int i = b; i <= sf; i++) {
            int budget;
            if (i == b) {
                if (sp->push.epochs <= 0 || r->res[b + 1].kind != GPP_STAGE_PUSH) continue;
                budget = sp->push.epochs;
            } else if (i <= end && r->res[i].kind == GPP_STAGE_PRUNE) {
                budget = (int)num(r->res[i].summary, "finetune_epochs", sp->prune.finetune_epochs) +
                         (i + 1 < end && r->res[i + 1].kind == GPP_STAGE_PUSH ? sp->push.epochs : 0);
            } else if (i == sf && recovered >= 0) {
                budget = (int)num(r->res[i].summary, "finetune_epochs",
                                  sp->prune.final_finetune_epochs);
            } else {
                continue;
            }
            step++;
            int got = find_baseline(r, order[k], step);
            if (got >= 0) {
                prev = got;
                continue;
            }
            nx->kind = order[k];
            nx->iteration = step;
            nx->input = prev;
            nx->reference = i;
            nx->budget = budget;
            /* the step that holds the final recovery: the last iteration's
             * prune, or the finetune stage */
            nx->final_widths = r->res[i].kind == GPP_STAGE_FINETUNE ||
                               (r->res[i].kind == GPP_STAGE_PRUNE &&
                                r->res[i].iteration == sp->iterations - 1);
            return 1;
        }
    }
    return 0;
}

/* ---- summary.json ------------------------------------------------------------------ */

static int write_summary(runner *r, double elapsed)
{
    cJSON *o = cJSON_CreateObject(), *stages = cJSON_CreateArray(), *bl = cJSON_CreateObject();
    if (!o || !stages || !bl) {
        cJSON_Delete(o);
        cJSON_Delete(stages);
        cJSON_Delete(bl);
        return -1;
    }
    cJSON_AddStringToObject(o, "job", r->spec->name);
    int b = baseline_of(r), af, sf;
    pick_models(r, &af, &sf);
    if (b >= 0) {
        cJSON_AddItemToObject(o, "baseline", cJSON_Duplicate(r->res[b].summary, 1));
        cJSON_AddItemToObject(o, "accuracy_first", cJSON_Duplicate(r->res[af].summary, 1));
        cJSON_AddItemToObject(o, "size_first", cJSON_Duplicate(r->res[sf].summary, 1));
    }
    for (int i = 0; i < r->n; i++) {
        const result *x = &r->res[i];
        if (!is_baseline(x->kind)) {
            cJSON_AddItemToArray(stages, cJSON_Duplicate(x->summary, 1));
        } else if (x->iteration == 0) {
            cJSON_AddItemToObject(bl, gpp_stage_kind_name(x->kind), cJSON_Duplicate(x->summary, 1));
        } else if (schedule_last(r, x->kind) == i) {   /* the chain's last step */
            char key[32];
            snprintf(key, sizeof key, "%s_schedule", gpp_stage_kind_name(x->kind));
            cJSON_AddItemToObject(bl, key, cJSON_Duplicate(x->summary, 1));
        }
    }
    cJSON_AddItemToObject(o, "stages", stages);
    cJSON_AddItemToObject(o, "baselines", bl);
    if (r->stop_reason[0]) cJSON_AddStringToObject(o, "stopped", r->stop_reason);
    cJSON_AddNumberToObject(o, "elapsed_s", elapsed);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    char path[PATH_CAP];
    path_in(path, sizeof path, r->out, "summary.json");
    int rc = text ? write_text(path, text) : -1;
    free(text);
    return rc;
}

/* ---- the before/after table ---------------------------------------------------------- */

static void human(char *buf, size_t cap, double v)
{
    if (v >= 1e9) snprintf(buf, cap, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, cap, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, cap, "%.1fk", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

static void print_table(runner *r)
{
    int b = baseline_of(r), af, sf;
    if (b < 0) return;
    pick_models(r, &af, &sf);
    const cJSON *cols[8];
    const char *heads[8];
    int nc = 0;
    cols[nc] = r->res[b].summary;
    heads[nc++] = "baseline";
    cols[nc] = r->res[af].summary;
    heads[nc++] = "accuracy-first";
    cols[nc] = r->res[sf].summary;
    heads[nc++] = "size-first";
    for (int i = 0; i < r->n && nc < 8; i++) {
        gpp_stage_kind k = r->res[i].kind;
        if (!is_baseline(k)) continue;
        if (r->res[i].iteration == 0) {
            cols[nc] = r->res[i].summary;
            heads[nc++] = k == GPP_STAGE_L1 ? "L1 (same widths)"
                          : k == GPP_STAGE_RANDOM ? "random (same)" : "scratch (same)";
        } else if (schedule_last(r, k) == i) {
            cols[nc] = r->res[i].summary;
            heads[nc++] = k == GPP_STAGE_L1 ? "L1 (schedule)" : "random (schedule)";
        }
    }
    printf("\n%-16s", "");
    for (int c = 0; c < nc; c++) printf(" %17s", heads[c]);
    printf("\n%-16s", "stage");
    for (int c = 0; c < nc; c++) {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cols[c], "file"));
        printf(" %17s", f ? f : "-");
    }
    static const char *const rows[4] = {"params", "flops", "val_accuracy", "test_accuracy"};
    static const char *const labels[4] = {"params", "FLOPs (2xMACs)", "val accuracy", "test accuracy"};
    for (int k = 0; k < 4; k++) {
        printf("\n%-16s", labels[k]);
        for (int c = 0; c < nc; c++) {
            double v = num(cols[c], rows[k], NAN);
            char buf[32];
            if (k < 2) human(buf, sizeof buf, v);
            else snprintf(buf, sizeof buf, "%.4f", v);
            printf(" %17s", buf);
        }
    }
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(cols[0], "layers");
    for (const cJSON *l = bl ? bl->child : NULL; l; l = l->next) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l, "name"));
        printf("\n%-16.16s", name ? name : "?");
        for (int c = 0; c < nc; c++) {
            const cJSON *ls = cJSON_GetObjectItemCaseSensitive(cols[c], "layers");
            double w = NAN;
            for (const cJSON *m = ls ? ls->child : NULL; m; m = m->next) {
                const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "name"));
                if (nm && name && strcmp(nm, name) == 0) w = num(m, "width", NAN);
            }
            if (isnan(w)) printf(" %17s", "-");
            else printf(" %17.0f", w);
        }
    }
    double p0 = num(cols[0], "params", NAN), f0 = num(cols[0], "flops", NAN);
    double p1 = num(cols[2], "params", NAN), f1 = num(cols[2], "flops", NAN);
    printf("\n\nsize-first: %.1fx fewer params, %.1fx fewer FLOPs, test accuracy %+.2f points\n",
           p0 / p1, f0 / f1,
           100.0 * (num(cols[2], "test_accuracy", 0) - num(cols[0], "test_accuracy", 0)));
}

/* ---- metrics.jsonl on resume ----------------------------------------------------------- */

/* Keep the lines of stages before `index`, and of stage `index` the
 * iterations up to `iter` (a partial checkpoint's). */
static int trim_metrics(const char *path, int index, long long iter)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char tmp[PATH_CAP + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "wb");
    if (!o) {
        fclose(f);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        cJSON *j = cJSON_Parse(line);
        int si = (int)num(j, "stage_index", -1);
        long long it = (long long)num(j, "iteration", -1);
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
        int keep = si >= 0 && (si < index || (si == index && iter >= 0 && it <= iter && type &&
                                              strcmp(type, "iteration") == 0));
        cJSON_Delete(j);
        if (keep) fwrite(line, 1, (size_t)len, o);
    }
    free(line);
    fclose(f);
    if (fclose(o) != 0 || rename(tmp, path) != 0) return -1;
    return 0;
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpp-worker run JOB.json --out DIR [--resume] [--baselines[=LIST]]\n"
            "                      [--schedule-baselines] [--checkpoint FILE.gppm]\n"
            "                      [--threads N] [--device cpu|cuda[:N]] [--datasets DIR]\n"
            "\n"
            "Run a whole Grow-Push-Prune job here, no daemon: train, grow while it pays,\n"
            "then iterations x (push, prune + fine-tune) with the stop rules, and the\n"
            "final recovery (finetune) of the size-first model when the loop stopped\n"
            "before its last prune.  Writes\n"
            "DIR/metrics.jsonl, DIR/stage-NN-KIND.gppm after each stage and\n"
            "DIR/summary.json.  --resume carries on after the last completed stage;\n"
            "--baselines adds L1-norm and random pruning to the size-first model's\n"
            "widths and that architecture trained from scratch (same epoch budget);\n"
            "--baselines=LIST runs only those of l1,random,scratch (comma-separated);\n"
            "--schedule-baselines also L1 and random pruning on GPP's schedule: the\n"
            "same widths after every iteration, each trained GPP's epochs at it.\n"
            "--checkpoint FILE.gppm is the trained network of a job whose model is\n"
            "{\"checkpoint\": SHA256}: SHA256 must be the file's (sha256sum FILE).\n");
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gpp-worker run: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

/* "l1,random,scratch" (any non-empty subset, no repeats) -> bits of the
 * one-shot baselines' order. */
static int parse_which(const char *list, unsigned *which)
{
    static const char *const names[3] = {"l1", "random", "scratch"};
    unsigned w = 0;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        int k = 0;
        while (k < 3 && !(strlen(names[k]) == n && strncmp(p, names[k], n) == 0)) k++;
        if (k == 3 || (w & (1u << k))) return -1;
        w |= 1u << k;
        p += n;
        if (*p == ',' && *++p == '\0') return -1;
    }
    if (!w) return -1;
    *which = w;
    return 0;
}

/* The trained network of a job whose model is {"checkpoint": SHA256}: given
 * with --checkpoint, and SHA256 must be the file's own (so a resumed run,
 * whose job.json must match, cannot switch files). */
static int check_model_file(const gpp_jobspec *spec, const char *ckpt, gpp_error *err)
{
    if (spec->model_kind != GPP_MODEL_CHECKPOINT) {
        if (!ckpt) return 0;
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                             "--checkpoint needs a job whose model is {\"checkpoint\": "
                             "\"<the file's sha256>\"}; this job's is %s",
                             spec->model_kind == GPP_MODEL_ZOO ? spec->model_zoo
                                                               : "an inline network");
    }
    if (!ckpt)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                             "model {\"checkpoint\": \"%s\"} names a trained network: give "
                             "its file with --checkpoint FILE.gppm",
                             spec->model_checkpoint);
    uint8_t d[GPP_SHA256_LEN];
    char hex[GPP_SHA256_HEX_LEN + 1];
    if (gpp_sha256_file(ckpt, d, err) != 0) return -1;
    gpp_sha256_hex(d, hex);
    if (strcasecmp(hex, spec->model_checkpoint) != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                             "%s has sha256 %s, but the job names {\"checkpoint\": \"%s\"}",
                             ckpt, hex, spec->model_checkpoint);
    return 0;
}

/* gpp_run_main: see gpp/stages.h. */
int gpp_run_main(int argc, char **argv)
{
    const char *job = NULL, *out = NULL, *datasets = NULL, *device = "cpu", *ckpt = NULL;
    int resume = 0, baselines = 0, threads = 0;
    unsigned which = 7;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(a, "--datasets") == 0 && i + 1 < argc) datasets = argv[++i];
        else if (strcmp(a, "--device") == 0 && i + 1 < argc) device = argv[++i];
        else if (strcmp(a, "--checkpoint") == 0 && i + 1 < argc) ckpt = argv[++i];
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 256) {
                fprintf(stderr, "gpp-worker run: --threads needs 1..256\n");
                return 2;
            }
            threads = (int)v;
        } else if (strcmp(a, "--resume") == 0) resume = 1;
        else if (strcmp(a, "--baselines") == 0) baselines = baselines > 1 ? baselines : 1;
        else if (strncmp(a, "--baselines=", 12) == 0) {
            if (parse_which(a + 12, &which) != 0) {
                fprintf(stderr, "gpp-worker run: --baselines=LIST takes l1, random, scratch "
                        "separated by commas, got \"%s\"\n", a + 12);
                return 2;
            }
            baselines = baselines > 1 ? baselines : 1;
        }
        else if (strcmp(a, "--schedule-baselines") == 0) baselines = 2;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] != '-' && !job) job = a;
        else {
            fprintf(stderr, "gpp-worker run: unknown or incomplete option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!job || !out) {
        usage(stderr);
        return 2;
    }
    atomic_store(&cancel_flag, 0);
    got_signal = 0;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > 8 ? 8 : (int)n;
    }
    gpp_error err = {0};
    gpp_jobspec *spec = NULL;
    gpp_stage_data *data = NULL;
    nn_ctx *ctx = NULL;
    runner r = {.out = out, .tty = isatty(STDOUT_FILENO), .baselines = baselines, .which = which};
    int status = 1;
    char path[PATH_CAP];
    size_t len = 0;
    char *text = read_text(job, GPP_JOBSPEC_MAX_BYTES, &len, &err);
    if (!text) {
        fail("%s", err.message);
        goto done;
    }
    if (gpp_jobspec_parse(text, len, &spec, &err) != 0) {
        fail("%s: %s%s%s", job, err.message, err.field[0] ? " (field " : "",
             err.field[0] ? err.field : "");
        if (err.field[0]) fputs(")\n", stderr);
        goto done;
    }
    r.spec = spec;
    if (check_model_file(spec, ckpt, &err) != 0) {
        fail("%s", err.message);
        goto done;
    }
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fail("cannot create %s: %s", out, strerror(errno));
        goto done;
    }
    char *canon = gpp_jobspec_to_json(spec);
    if (!canon) {
        fail("out of memory");
        goto done;
    }
    path_in(path, sizeof path, out, "job.json");
    size_t olen = 0;
    char *old = access(path, R_OK) == 0 ? read_text(path, GPP_JOBSPEC_MAX_BYTES, &olen, NULL) : NULL;
    /* the stages already done */
    for (int i = 0; i < MAX_STAGES; i++) {
        if (read_result(out, i, &r.res[r.n], &err) != 0) break;
        r.n++;
    }
    if (r.n > 0 && !resume) {
        free(canon);
        free(old);
        fail("%s already holds stage checkpoints: add --resume to carry on, or choose another "
             "--out", out);
        goto done;
    }
    if (resume && old && (olen < 1 || strncmp(old, canon, strlen(canon)) != 0)) {
        free(canon);
        free(old);
        fail("%s/job.json differs from %s: a resumed run must be the same job", out, job);
        goto done;
    }
    free(old);
    int wrc = write_text(path, canon);
    free(canon);
    if (wrc != 0) {
        fail("cannot write %s: %s", path, strerror(errno));
        goto done;
    }
    if (gpp_stage_data_open(spec, datasets, &data, &err) != 0) {
        fail("%s", err.message);
        goto done;
    }
    if (!(ctx = nn_ctx_new(device, threads, &err))) {
        fail("--device %s: %s", device, err.message);
        goto done;
    }
    /* metrics.jsonl: keep what the done stages (and a partial one) wrote */
    path_in(path, sizeof path, out, "metrics.jsonl");
    {
        next nx;
        long long iter = -1;
        if (plan(&r, &nx)) {
            char name[64], pp[PATH_CAP];
            stage_file(name, sizeof name, r.n, nx.kind, ".partial.gppm");
            path_in(pp, sizeof pp, out, name);
            gpp_ckpt *ck = NULL;
            if (resume && gpp_ckpt_read_file(pp, &ck, NULL) == 0) {
                cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
                iter = (long long)num(cJSON_GetObjectItemCaseSensitive(doc, "state"), "iter", -1);
                cJSON_Delete(doc);
                gpp_ckpt_free(ck);
            }
        }
        if (resume) trim_metrics(path, r.n, iter);
        r.metrics = fopen(path, resume ? "ab" : "wb");
        if (!r.metrics) {
            fail("cannot open %s: %s", path, strerror(errno));
            goto done;
        }
    }
    r.stop_reason[0] = 0;
    printf("%s: %s on %s (%u train / %u val / %u test), %d threads -> %s\n", spec->name,
           spec->model_kind == GPP_MODEL_ZOO ? spec->model_zoo : ckpt ? ckpt : "inline network",
           data->dir, data->split->n_train, data->split->n_val, data->split->n_test, threads, out);
    if (r.n > 0) printf("resuming after stage %02d (%s)\n", r.n - 1, gpp_stage_kind_name(r.res[r.n - 1].kind));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double t0 = now_s();
    next nx;
    while (plan(&r, &nx)) {
        if (r.n >= MAX_STAGES) {
            fail("more than %d stages", MAX_STAGES);
            goto done;
        }
        char name[64], pname[64], in_path[PATH_CAP], ref_path[PATH_CAP], out_path[PATH_CAP],
            part[PATH_CAP];
        stage_file(name, sizeof name, r.n, nx.kind, ".gppm");
        stage_file(pname, sizeof pname, r.n, nx.kind, ".partial.gppm");
        path_in(out_path, sizeof out_path, out, name);
        path_in(part, sizeof part, out, pname);
        if (nx.input >= 0) path_in(in_path, sizeof in_path, out, r.res[nx.input].file);
        /* a job from a trained network: the train stage evaluates the file */
        if (nx.kind == GPP_STAGE_TRAIN && ckpt) snprintf(in_path, sizeof in_path, "%s", ckpt);
        if (nx.reference >= 0) path_in(ref_path, sizeof ref_path, out, r.res[nx.reference].file);
        gpp_stage_req req = {.spec = spec, .kind = nx.kind, .index = r.n,
                             .iteration = nx.iteration,
                             .input = nx.input >= 0 || (nx.kind == GPP_STAGE_TRAIN && ckpt)
                                          ? in_path : NULL,
                             .output = out_path,
                             .reference = nx.reference >= 0 ? ref_path : NULL,
                             .budget_epochs = nx.budget, .final_widths = nx.final_widths,
                             .partial = part, .data = data,
                             .ctx = ctx, .threads = threads};
        gpp_stage_io io = {.user = &r, .metric = on_metric, .log = on_log,
                           .progress = on_progress, .cancel = &cancel_flag};
        r.cur_kind = gpp_stage_kind_name(nx.kind);
        r.cur_index = r.n;
        r.frac = 0;
        r.ips = r.loss = r.acc = 0;
        r.seen = 0;
        if (!r.tty) printf("stage %02d %s\n", r.n, r.cur_kind);
        draw(&r, 1);
        double ts = now_s();
        cJSON *sum = NULL;
        int rc = gpp_stage_run(&req, &io, &sum, &err);
        fflush(r.metrics);
        clear_line(&r);
        r.cur_kind = NULL;
        if (rc != 0) {
            if (got_signal) {
                fprintf(stderr, "gpp-worker run: interrupted in stage %02d; carry on with "
                        "--resume\n", r.n);
                status = 130;
            } else {
                fail("stage %02d (%s) failed: %s", r.n, gpp_stage_kind_name(nx.kind), err.message);
            }
            goto done;
        }
        cJSON_AddStringToObject(sum, "file", name);
        r.res[r.n] = (result){.kind = nx.kind, .index = r.n, .iteration = nx.iteration,
                              .summary = sum};
        snprintf(r.res[r.n].file, sizeof r.res[r.n].file, "%s", name);
        r.n++;
        printf("  %02d %-8s params %-9.0f FLOPs %-10.0f val %.4f test %.4f  (%.1f s)\n", r.n - 1,
               gpp_stage_kind_name(nx.kind), num(sum, "params", 0), num(sum, "flops", 0),
               num(sum, "val_accuracy", 0), num(sum, "test_accuracy", 0), now_s() - ts);
        fflush(stdout);
        if (write_summary(&r, now_s() - t0) != 0) {
            fail("cannot write %s/summary.json", out);
            goto done;
        }
    }
    if (write_summary(&r, now_s() - t0) != 0) {
        fail("cannot write %s/summary.json", out);
        goto done;
    }
    if (r.stop_reason[0]) printf("stopped: %s\n", r.stop_reason);
    print_table(&r);
    printf("done in %.1f s: %s/summary.json\n", now_s() - t0, out);
    status = 0;
done:
    if (r.metrics) fclose(r.metrics);
    for (int i = 0; i < r.n; i++) cJSON_Delete(r.res[i].summary);
    nn_ctx_free(ctx);
    gpp_stage_data_free(data);
    gpp_jobspec_free(spec);
    free(text);
    return status;
}
