/* The stages of a GPP job (gpp/stages.h): the shared training loop (with the
 * push terms when pushing), evaluation, checkpoints before and after, and
 * the train, grow, push and scratch stages; prune.c adds the prune step and
 * the l1 / random baselines' surgery. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpp/ckpt.h"
#include "gpp/gppmath.h"
#include "stage_ctx.h"
#include "stages_internal.h"

#define SALT_TRAIN 0x747261696e000001ULL
#define SALT_PUSH 0x7075736800000002ULL
#define SALT_TUNE 0x74756e6500000003ULL
#define SALT_RECOVER (SALT_TUNE + 1)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int oom(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
}

/* gpp__log: see stage_ctx.h. */
void gpp__log(gpp__stage *s, const char *fmt, ...)
{
    if (!s->io || !s->io->log) return;
    char line[1024];
    int k = snprintf(line, sizeof line, "%s %02d: ", gpp_stage_kind_name(s->req->kind),
                     s->req->index);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, sizeof line - (size_t)k, fmt, ap);
    va_end(ap);
    s->io->log(s->io->user, line);
}

/* gpp__progress: see stage_ctx.h. */
void gpp__progress(gpp__stage *s, double f)
{
    if (!s->io || !s->io->progress) return;
    if (f < 0.0) f = 0.0;
    if (f > 1.0) f = 1.0;
    s->io->progress(s->io->user, s->prog0 + (s->prog1 - s->prog0) * f);
}

/* gpp__cancelled: see stage_ctx.h. */
int gpp__cancelled(gpp__stage *s)
{
    if (!s->io || !s->io->cancel || atomic_load(s->io->cancel) == 0) return 0;
    gpp_error_set(s->err, GPP_EAGAIN, "cancelled", "", "the stage was cancelled");
    return 1;
}

static void emit(gpp__stage *s, const char *phase, double epoch, int evaluation, int n,
                 const char *const *names, const double *values)
{
    if (!s->io || !s->io->metric) return;
    gpp_metric m = {.stage = gpp_stage_kind_name(s->req->kind), .stage_index = s->req->index,
                    .phase = phase, .iteration = s->iter, .epoch = epoch,
                    .evaluation = evaluation, .n = n, .names = names, .values = values};
    s->io->metric(s->io->user, &m);
}

/* gpp__fill_train: see stage_ctx.h. */
void gpp__fill_train(gpp__stage *s, const uint32_t *idx, int n)
{
    gpp_data_fill(s->x, s->y, s->data->train, idx, (uint32_t)n, &s->norm,
                  GPP_DATA_AUG_NONE, NULL);
}

/* gpp__evaluate: see stage_ctx.h. */
int gpp__evaluate(gpp__stage *s, const gpp_dataset *ds, const uint32_t *idx, uint32_t n,
                  double *acc)
{
    /* batch k's count is taken once batch k+1 is queued (nn_net_stats_queue):
     * a device is not left waiting while the host fills the next batch */
    long long ok = 0;
    int rc = 0, prev = -1, k = 0;
    float loss;
    for (uint32_t i = 0; i < n; i += (uint32_t)s->B, k++) {
        if (gpp__cancelled(s)) {
            rc = GPP_EAGAIN;
            break;
        }
        int m = n - i < (uint32_t)s->B ? (int)(n - i) : s->B;
        gpp_data_fill(s->x, s->y, ds, idx + i, (uint32_t)m, &s->norm, GPP_DATA_AUG_NONE,
                      NULL);
        if ((rc = nn_net_forward(s->net, s->x, s->y, m, 0, NULL, s->err)) != 0) break;
        nn_net_stats_queue(s->net, k & 1);
        int right = 0;
        if (prev >= 0 && (rc = nn_net_stats_take(s->net, prev, &loss, &right, s->err)) != 0)
            break;
        ok += right;
        prev = k & 1;
    }
    if (rc == 0 && prev >= 0) {
        int right = 0;
        rc = nn_net_stats_take(s->net, prev, &loss, &right, s->err);
        ok += right;
    }
    if (rc != 0) return rc;
    *acc = n ? (double)ok / (double)n : 0.0;
    return 0;
}

/* gpp__set_net: see stage_ctx.h. */
int gpp__set_net(gpp__stage *s, nn_net *net)
{
    if (net != s->net) nn_net_free(s->net);
    s->net = net;
    return nn_net_reserve(net, s->B, s->err);
}

/* ---- partial checkpoints ------------------------------------------------------- */

static cJSON *meta_new(gpp__stage *s);

/* Save the running phase's state after an epoch. */
static int save_partial(gpp__stage *s, const gpp__phase *ph, long long step, int epoch,
                        const gpp_data_iter *it, const double *ema, const uint8_t *top, int M)
{
    gpp_data_pos pos;
    uint64_t words[GPP_DATA_POS_WORDS];
    gpp_data_iter_get_pos(it, &pos);
    gpp_data_pos_pack(&pos, words);
    cJSON *meta = meta_new(s);
    cJSON *st = cJSON_CreateObject();
    float *ebits = NULL, *tf = NULL;
    int rc = 0;
    if (!meta || !st || !cJSON_AddStringToObject(st, "stage", gpp_stage_kind_name(s->req->kind)) ||
        !cJSON_AddNumberToObject(st, "stage_index", s->req->index) ||
        !cJSON_AddStringToObject(st, "phase", ph->name) ||
        !cJSON_AddNumberToObject(st, "step", (double)step) ||
        !cJSON_AddNumberToObject(st, "epoch", epoch) ||
        !cJSON_AddNumberToObject(st, "iter", (double)s->iter) ||
        !cJSON_AddBoolToObject(st, "complete", 0) ||
        !cJSON_AddItemToObject(st, "data_pos", gpp__hex_array(words, GPP_DATA_POS_WORDS)) ||
        !cJSON_AddItemToObject(st, "extra", cJSON_Duplicate(s->extra, 1))) {
        rc = oom(s->err);
        goto done;
    }
    gpp_extra_tensor ex[2];
    int n_ex = 0;
    if (ema) {
        ebits = malloc(sizeof(double) * (size_t)M);
        tf = malloc(sizeof(float) * (size_t)M);
        if (!ebits || !tf) {
            rc = oom(s->err);
            goto done;
        }
        memcpy(ebits, ema, sizeof(double) * (size_t)M);   /* raw bits, exact */
        for (int m = 0; m < M; m++) tf[m] = top[m] ? 1.0f : 0.0f;
        ex[0] = (gpp_extra_tensor){"state/push_ema", ebits, 2 * (int64_t)M};
        ex[1] = (gpp_extra_tensor){"state/push_top", tf, M};
        n_ex = 2;
    }
    rc = gpp_net_save_ex(s->net, s->req->partial, meta, st, 1, ex, n_ex, s->err);
done:
    free(ebits);
    free(tf);
    cJSON_Delete(meta);
    cJSON_Delete(st);
    return rc;
}

/* The phase a partial checkpoint being resumed was in ("" when none). */
static const char *resume_phase(const gpp__stage *s)
{
    const char *n = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(s->resume, "state"), "phase"));
    return n ? n : "";
}

/* Resume the phase from the partial checkpoint s->resume describes. */
static int load_partial(gpp__stage *s, const gpp__phase *ph, long long *step, int *epoch,
                        gpp_data_iter *it, double *ema, uint8_t *top, int *M)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(s->resume, "state");
    if (strcmp(resume_phase(s), ph->name) != 0)
        return gpp_error_set(s->err, GPP_EFORMAT, "malformed", "partial",
                             "%s: the partial checkpoint is of another phase", s->req->partial);
    float *ebits = NULL, *tf = NULL;
    int rc = 0;
    nn_net *net = NULL;
    gpp_extra_tensor ex[2];
    int n_ex = 0;
    if (ema) {
        ebits = malloc(sizeof(double) * (size_t)*M);
        tf = malloc(sizeof(float) * (size_t)*M);
        if (!ebits || !tf) {
            rc = oom(s->err);
            goto done;
        }
        ex[0] = (gpp_extra_tensor){"state/push_ema", ebits, 2 * (int64_t)*M};
        ex[1] = (gpp_extra_tensor){"state/push_top", tf, *M};
        n_ex = 2;
    }
    if ((rc = gpp_net_load_ex(s->ctx, s->req->partial, &net, NULL, ex, n_ex, s->err)) != 0)
        goto done;
    if ((rc = gpp__set_net(s, net)) != 0) goto done;
    if (ema) {
        memcpy(ema, ebits, sizeof(double) * (size_t)*M);
        for (int m = 0; m < *M; m++) top[m] = tf[m] != 0.0f;
    }
    uint64_t words[GPP_DATA_POS_WORDS];
    gpp_data_pos pos;
    const cJSON *jstep = cJSON_GetObjectItemCaseSensitive(st, "step");
    const cJSON *jep = cJSON_GetObjectItemCaseSensitive(st, "epoch");
    const cJSON *jit = cJSON_GetObjectItemCaseSensitive(st, "iter");
    if (!cJSON_IsNumber(jstep) || !cJSON_IsNumber(jep) || !cJSON_IsNumber(jit) ||
        gpp__hex_read(cJSON_GetObjectItemCaseSensitive(st, "data_pos"), words,
                      GPP_DATA_POS_WORDS) != 0) {
        rc = gpp_error_set(s->err, GPP_EFORMAT, "malformed", "partial",
                           "%s: bad state in the partial checkpoint", s->req->partial);
        goto done;
    }
    gpp_data_pos_unpack(&pos, words);
    if ((rc = gpp_data_iter_set_pos(it, &pos, s->err)) != 0) goto done;
    *step = (long long)jstep->valuedouble;
    *epoch = (int)jep->valuedouble;
    s->iter = (long long)jit->valuedouble;
    gpp__log(s, "resumed %s at epoch %d (step %lld) from %s", ph->name, *epoch, *step,
             s->req->partial);
done:
    free(ebits);
    free(tf);
    cJSON_Delete(s->resume);
    s->resume = NULL;
    return rc;
}

/* ---- the training loop ---------------------------------------------------------- */

/* gpp__distill_grad: see stages_internal.h. */
double gpp__distill_grad(const float *Zs, const float *Zt, int m, int K, double w, double T,
                         float *dZ)
{
    double loss = 0.0;
    for (int n = 0; n < m; n++) {
        const float *zs = Zs + (size_t)n * K, *zt = Zt + (size_t)n * K;
        double ms = zs[0], mt = zt[0], ss = 0.0, st = 0.0;
        for (int k = 1; k < K; k++) {
            ms = zs[k] > ms ? zs[k] : ms;
            mt = zt[k] > mt ? zt[k] : mt;
        }
        for (int k = 0; k < K; k++) {
            ss += exp((zs[k] - ms) / T);
            st += exp((zt[k] - mt) / T);
        }
        double ls = log(ss), lt = log(st);
        for (int k = 0; k < K; k++) {
            double lps = (zs[k] - ms) / T - ls, lpt = (zt[k] - mt) / T - lt;
            double pt = exp(lpt), ps = exp(lps);
            loss += pt * (lpt - lps);
            dZ[(size_t)n * K + k] = (float)(w * T * (ps - pt) / m);
        }
    }
    return w * T * T * loss / m;
}

/* A plain training step (no push, no distillation) whose loss and batch
 * accuracy are still on their way from the device (nn_net_stats_queue). */
typedef struct pending_step {
    int on, slot, m;
    long long step, iter;   /* the step count and s->iter after it */
    float lr;
    double t0;              /* when it began */
} pending_step;

static const char *const train_names[] = {"loss", "ce", "batch_accuracy", "lr", "images_per_s",
                                          "push", "sep", "cov", "align", "top_share",
                                          "alpha", "beta", "gamma"};

/* A loss that is not finite stops the stage ("diverged"). */
static int check_loss(gpp__stage *s, const gpp__phase *ph, float ce, long long step, float lr)
{
    if (isfinite(ce)) return 0;
    return gpp_error_set(s->err, GPP_EINVAL, "diverged", "train.lr",
                         "%s: the loss is %g at step %lld (learning rate %g too high?)",
                         ph->name, ce, step, lr);
}

/* Take a pending step's numbers, emit its metrics point (images/s over the
 * time since the last point, or since it began) and check for divergence. */
static int take_step(gpp__stage *s, const gpp__phase *ph, pending_step *p, long long nb,
                     double *last)
{
    float ce = 0.0f;
    int correct = 0;
    p->on = 0;
    int rc = nn_net_stats_take(s->net, p->slot, &ce, &correct, s->err);
    if (rc != 0) return rc;
    double now = now_s(), dt = now - (*last > p->t0 ? *last : p->t0);
    *last = now;
    double vals[5] = {ce, ce, (double)correct / p->m, p->lr, dt > 0 ? p->m / dt : 0.0};
    long long iter = s->iter;
    s->iter = p->iter;
    emit(s, ph->name, (double)p->step / (double)nb, 0, 5, train_names, vals);
    s->iter = iter;
    return check_loss(s, ph, ce, p->step, p->lr);
}

/* gpp__phase_run: see stage_ctx.h. */
int gpp__phase_run(gpp__stage *s, const gpp__phase *ph)
{
    const gpp_jobspec *sp = s->spec;
    const gpp_stage_data *d = s->data;
    if (ph->epochs <= 0) return 0;
    const int push = ph->push;
    int Bi = sp->train.batch_size;
    if (push && Bi < s->classes * sp->push.min_per_class) Bi = s->classes * sp->push.min_per_class;
    if (Bi > s->B) Bi = s->B;
    gpp_data_iter_opts io = {.batch_size = (uint32_t)Bi,
                             .order = push ? GPP_DATA_BALANCED : GPP_DATA_SHUFFLE,
                             .min_per_class = push ? (uint32_t)sp->push.min_per_class : 1,
                             .drop_last = 0, .augment = d->augment, .norm = &s->norm,
                             .seed = s->seed ^ ph->salt};
    gpp_data_iter *it = NULL;
    gpp_push_ws *ws = NULL;
    float *dH = NULL, *dZ = NULL;
    double *ema = NULL;
    uint8_t *top = NULL;
    const double kd_w = ph->teacher && !push ? sp->prune.distill : 0.0;
    const double kd_t = sp->prune.distill_temperature;
    int Ls = -1, Lt = -1, K = 0;
    /* plain steps read their loss and batch accuracy one step late, so a
     * device is never left waiting for the host between steps */
    const int defer = !push && kd_w <= 0;
    pending_step pend = {0};
    double last_take = 0.0;
    int rc = gpp_data_iter_new(&it, d->train, d->split->train, d->split->n_train, &io, s->err);
    if (rc != 0) return rc;
    if (kd_w > 0) {
        nn_node_info li, ti;
        Ls = nn_net_logits(s->net);
        Lt = nn_net_logits(ph->teacher);
        if (Ls < 1 || Lt < 1 || nn_net_node(s->net, Ls, &li) != 0 ||
            nn_net_node(ph->teacher, Lt, &ti) != 0 || li.C * li.H * li.W != ti.C * ti.H * ti.W) {
            rc = gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "prune.distill",
                               "distillation needs the teacher's logits to match the net's");
            goto done;
        }
        K = li.C * li.H * li.W;
        if (!(dZ = malloc(sizeof(float) * (size_t)Bi * K))) {
            rc = oom(s->err);
            goto done;
        }
        gpp__log(s, "%s: distilling from the unpruned net (weight %g, temperature %g)",
                 ph->name, kd_w, kd_t);
    }
    const long long nb = gpp_data_iter_batches(it), total = nb * ph->epochs;
    nn_lr_schedule sched = {.kind = sp->train.schedule == GPP_SCHEDULE_STEP     ? NN_LR_STEP
                                    : sp->train.schedule == GPP_SCHEDULE_COSINE ? NN_LR_COSINE
                                                                                : NN_LR_CONSTANT,
                            .base = (float)ph->lr,
                            .step_size = (int)(sp->train.step_epochs * nb),
                            .gamma = (float)sp->train.gamma,
                            .total = (int)total,
                            .min_lr = 0.0f};
    nn_sgd opt = {.lr = (float)ph->lr, .momentum = (float)sp->train.momentum,
                  .dampening = 0.0f, .weight_decay = (float)sp->train.weight_decay,
                  .nesterov = sp->train.nesterov};
    int P = -1, M = 0, k_top = 0, have_ema = 0;
    /* push i (0-based: the iteration) weighs its terms lambda * lambda_decay^i */
    const double lam =
        sp->push.lambda * pow(sp->push.lambda_decay, s->req->iteration > 0 ? s->req->iteration : 0);
    if (push) {
        P = nn_net_predecision(s->net);
        nn_node_info pi;
        if (P < 1 || nn_net_node(s->net, P, &pi) != 0) {
            rc = gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "model",
                               "push: the network has no pre-decision layer");
            goto done;
        }
        M = pi.C * pi.H * pi.W;
        k_top = (int)lround(ph->keep_fraction * M);
        if (k_top < 1) k_top = 1;
        if (k_top > M) k_top = M;
        if ((rc = gpp_push_ws_new(Bi, M, s->classes, sp->push.separation == GPP_SEPARATION_EIGEN,
                                  &ws, s->err)) != 0)
            goto done;
        dH = malloc(sizeof(float) * (size_t)Bi * M);
        ema = calloc((size_t)M, sizeof(double));
        top = calloc((size_t)M, 1);
        if (!dH || !ema || !top) {
            rc = oom(s->err);
            goto done;
        }
    }
    long long step = 0;
    int epoch = 0;
    if (s->resume) {
        if ((rc = load_partial(s, ph, &step, &epoch, it, ema, top, &M)) != 0) goto done;
        have_ema = push && step > 0;
    } else {
        nn_net_set_sgd_steps(s->net, 0);
    }
    if (push)
        gpp__log(s, "push: M = %d pre-decision neurons, top set M' = %d, alpha %g beta %g "
                 "gamma %g (x lambda %g, ramped over %g epochs), %s separation",
                 M, k_top, sp->push.alpha, sp->push.beta, sp->push.gamma, lam,
                 sp->push.ramp_epochs, sp->push.separation == GPP_SEPARATION_EIGEN ? "eigen" : "diag");
    static const char *const knames[] = {"loss", "ce", "batch_accuracy", "lr", "images_per_s",
                                         "distill"};
    while (step < total) {
        if (gpp__cancelled(s)) {
            rc = GPP_EAGAIN;
            goto done;
        }
        if (push && have_ema && step % nb == 0 && step > 0 &&
            (rc = gpp_push_top_set(ema, M, k_top, top, s->err)) != 0)
            goto done;
        double t0 = now_s();
        uint32_t m = gpp_data_iter_next(it, s->x, s->y);
        if (m == 0) m = gpp_data_iter_next(it, s->x, s->y);
        if (m == 0) {
            rc = gpp_error_set(s->err, GPP_EINVAL, "internal", "", "the data iterator is empty");
            goto done;
        }
        float lr = nn_lr_at(&sched, (int)step), ce = 0.0f;
        opt.lr = lr;
        nn_net_zero_grad(s->net);
        if ((rc = nn_net_forward(s->net, s->x, s->y, (int)m, 1, defer ? NULL : &ce, s->err)) != 0)
            goto done;
        if (defer) nn_net_stats_queue(s->net, (int)(step & 1));
        gpp_push_result pr;
        memset(&pr, 0, sizeof pr);
        double a = 0, b = 0, g = 0, kd = 0;
        if (push) {
            const float *H = nn_net_output(s->net, P);
            gpp_push_opts po;
            gpp_push_opts_default(&po);
            po.separation = sp->push.separation == GPP_SEPARATION_EIGEN ? GPP_PUSH_SEP_EIGEN
                                                                         : GPP_PUSH_SEP_DIAG;
            po.eps = sp->push.eps;
            po.eigen_lambda = sp->push.eigen_reg;
            po.eigen_k = sp->push.eigen_k;
            if (!have_ema) {
                if ((rc = gpp_push_loss(ws, H, s->y, (int)m, &po, NULL, NULL, s->err)) != 0)
                    goto done;
                gpp_push_ema_update(ema, gpp_push_ws_ratios(ws), M, sp->push.ema, 1);
                if ((rc = gpp_push_top_set(ema, M, k_top, top, s->err)) != 0) goto done;
                have_ema = 1;
            }
            double prog = (double)step / (double)nb;
            double ramp = sp->push.ramp_epochs > 0 ? prog / sp->push.ramp_epochs : 1.0;
            if (ramp > 1.0) ramp = 1.0;
            a = po.alpha = lam * sp->push.alpha * ramp;
            b = po.beta = lam * sp->push.beta * ramp;
            g = po.gamma = lam * sp->push.gamma * ramp;
            po.top = top;
            memset(dH, 0, sizeof(float) * (size_t)m * M);
            if ((rc = gpp_push_loss(ws, H, s->y, (int)m, &po, &pr, dH, s->err)) != 0) goto done;
            nn_grad_inject inj = {.node = P, .grad = dH};
            if ((rc = nn_net_backward(s->net, &inj, 1, s->err)) != 0) goto done;
            gpp_push_ema_update(ema, gpp_push_ws_ratios(ws), M, sp->push.ema, 0);
        } else if (kd_w > 0) {
            if ((rc = nn_net_forward(ph->teacher, s->x, NULL, (int)m, 0, NULL, s->err)) != 0)
                goto done;
            const float *zs = nn_net_output(s->net, Ls), *zt = nn_net_output(ph->teacher, Lt);
            if (!zs || !zt) {
                rc = gpp_error_set(s->err, GPP_EINVAL, "internal", "", "no logits to distill");
                goto done;
            }
            kd = gpp__distill_grad(zs, zt, (int)m, K, kd_w, kd_t, dZ);
            nn_grad_inject inj = {.node = Ls, .grad = dZ};
            if ((rc = nn_net_backward(s->net, &inj, 1, s->err)) != 0) goto done;
        } else if ((rc = nn_net_backward(s->net, NULL, 0, s->err)) != 0) {
            goto done;
        }
        nn_net_sgd_step(s->net, &opt);
        if (defer) {
            /* step k's numbers are taken once step k+1 is queued (and at
             * the end of an epoch, before its checkpoint) */
            const int slot = (int)(step & 1);
            step++;
            s->iter++;
            if (pend.on && (rc = take_step(s, ph, &pend, nb, &last_take)) != 0) goto done;
            pend = (pending_step){.on = 1, .slot = slot, .m = (int)m, .step = step,
                                  .iter = s->iter, .lr = lr, .t0 = t0};
            if (step % nb == 0 && (rc = take_step(s, ph, &pend, nb, &last_take)) != 0) goto done;
        } else {
            int correct = nn_net_correct(s->net, s->y, (int)m);
            step++;
            s->iter++;
            double dt = now_s() - t0;
            double vals[13] = {ce + pr.loss + kd, ce, (double)correct / m, lr,
                               dt > 0 ? m / dt : 0.0, pr.loss, pr.sep, pr.cov, pr.align,
                               pr.top_share, a, b, g};
            if (kd_w > 0) vals[5] = kd;
            emit(s, ph->name, (double)step / (double)nb, 0, push ? 13 : kd_w > 0 ? 6 : 5,
                 kd_w > 0 ? knames : train_names, vals);
            if ((rc = check_loss(s, ph, ce, step, lr)) != 0) goto done;
        }
        gpp__progress(s, (double)step / (double)total);
        if (step % nb == 0) {
            gpp_data_iter_next(it, NULL, NULL);   /* roll over to the next epoch */
            epoch++;
            if (s->req->partial && step < total &&
                (rc = save_partial(s, ph, step, epoch, it, push ? ema : NULL, top, M)) != 0)
                goto done;
        }
    }
done:
    gpp_data_iter_free(it);
    gpp_push_ws_free(ws);
    free(dH);
    free(dZ);
    free(ema);
    free(top);
    return rc;
}

/* ---- checkpoints and summaries ------------------------------------------------- */

/* A job that starts from a trained checkpoint feeds it pixels as it was
 * trained: normalised by its meta.normalize ({"mean": [...], "std": [...]},
 * one per channel), or x/255 in [0, 1] when it has none (a network trained
 * elsewhere); data.normalize does not apply.  Every stage of such a job
 * writes the same meta.normalize on, so all of them agree. */
static int checkpoint_norm(gpp__stage *s)
{
    gpp_data_norm_identity(&s->norm, (uint32_t)s->input[0]);
    const cJSON *nz = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(s->in_doc, "meta"), "normalize");
    if (!nz || cJSON_IsNull(nz)) return 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(nz, "mean");
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(nz, "std");
    int c = s->input[0];
    if (!cJSON_IsArray(m) || !cJSON_IsArray(sd) || cJSON_GetArraySize(m) != c ||
        cJSON_GetArraySize(sd) != c || c > GPP_DATA_MAX_C)
        return gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "meta.normalize",
                             "the input checkpoint's meta.normalize must hold \"mean\" and "
                             "\"std\" with %d numbers (one per channel)", c);
    for (int k = 0; k < c; k++) {
        const cJSON *a = cJSON_GetArrayItem(m, k), *b = cJSON_GetArrayItem(sd, k);
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !isfinite(a->valuedouble) ||
            !(b->valuedouble > 0) || !isfinite(b->valuedouble))
            return gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "meta.normalize",
                                 "the input checkpoint's meta.normalize channel %d: the mean "
                                 "must be finite and the std above 0", k);
        s->norm.mean[k] = (float)a->valuedouble;
        s->norm.std[k] = (float)b->valuedouble;
    }
    return 0;
}

static cJSON *norm_json(const gpp_data_norm *nm)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_CreateArray(), *sd = cJSON_CreateArray();
    if (!o || !m || !sd) goto fail;
    for (uint32_t c = 0; c < nm->c; c++) {
        if (!cJSON_AddItemToArray(m, cJSON_CreateNumber(nm->mean[c])) ||
            !cJSON_AddItemToArray(sd, cJSON_CreateNumber(nm->std[c])))
            goto fail;
    }
    cJSON_AddItemToObject(o, "mean", m);
    cJSON_AddItemToObject(o, "std", sd);
    return o;
fail:
    cJSON_Delete(o);
    cJSON_Delete(m);
    cJSON_Delete(sd);
    return NULL;
}

/* The checkpoint's meta for the stage (summary added by the caller). */
static cJSON *meta_new(gpp__stage *s)
{
    cJSON *meta = cJSON_CreateObject();
    if (!meta || !cJSON_AddStringToObject(meta, "job", s->spec->name) ||
        !cJSON_AddStringToObject(meta, "stage", gpp_stage_kind_name(s->req->kind)) ||
        !cJSON_AddNumberToObject(meta, "stage_index", s->req->index) ||
        !cJSON_AddNumberToObject(meta, "iteration", s->req->iteration) ||
        !cJSON_AddItemToObject(meta, "normalize", norm_json(&s->norm)) ||
        !cJSON_AddItemToObject(meta, "input", cJSON_CreateIntArray(s->input, 3)) ||
        !cJSON_AddNumberToObject(meta, "classes", s->classes)) {
        cJSON_Delete(meta);
        return NULL;
    }
    return meta;
}

/* A summary of the net as it stands: counts, accuracies, widths, plus
 * s->extra's keys. */
static cJSON *summary_new(gpp__stage *s, double val, double test)
{
    long long macs = nn_net_macs(s->net);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "stage", gpp_stage_kind_name(s->req->kind)) ||
        !cJSON_AddNumberToObject(o, "index", s->req->index) ||
        !cJSON_AddNumberToObject(o, "iteration", s->req->iteration) ||
        !cJSON_AddNumberToObject(o, "params", (double)nn_net_params(s->net)) ||
        !cJSON_AddNumberToObject(o, "macs", (double)macs) ||
        !cJSON_AddNumberToObject(o, "flops", 2.0 * (double)macs) ||
        !cJSON_AddNumberToObject(o, "val_accuracy", val) ||
        !cJSON_AddNumberToObject(o, "test_accuracy", test) ||
        !cJSON_AddItemToObject(o, "layers", gpp_net_layers_json(s->net))) {
        cJSON_Delete(o);
        return NULL;
    }
    for (const cJSON *e = s->extra ? s->extra->child : NULL; e; e = e->next)
        if (!cJSON_AddItemToObject(o, e->string, cJSON_Duplicate(e, 1))) {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}

/* The baseline's validation accuracy as the input checkpoint's meta
 * carries it (every stage writes it after the train or grow stage that set
 * it), or -1. */
static double baseline_val(const gpp__stage *s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(s->in_doc, "meta"), "baseline_val_accuracy");
    return cJSON_IsNumber(v) ? v->valuedouble : -1.0;
}

/* Evaluate (val, test) unless given (>= 0), report, and write the output. */
static int finish(gpp__stage *s, double val, double test, cJSON **summary)
{
    int rc = 0;
    s->prog0 = 0.97;
    s->prog1 = 1.0;
    if (val < 0 && (rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, &val)) != 0)
        return rc;
    gpp__progress(s, 0.5);
    if (test < 0 &&
        (rc = gpp__evaluate(s, s->data->test, s->data->split->test, s->data->split->n_test,
                            &test)) != 0)
        return rc;
    static const char *const en[] = {"val_accuracy", "test_accuracy", "params", "macs", "flops"};
    double ev[5] = {val, test, (double)nn_net_params(s->net), (double)nn_net_macs(s->net),
                    2.0 * (double)nn_net_macs(s->net)};
    emit(s, "eval", 0.0, 1, 5, en, ev);
    cJSON *sum = summary_new(s, val, test);
    cJSON *meta = meta_new(s);
    cJSON *st = cJSON_CreateObject();
    /* the baseline's validation accuracy travels with every checkpoint
     * after it: a prune's recovery aims at the stop rule's bound */
    const int is_base = s->req->kind == GPP_STAGE_TRAIN || s->req->kind == GPP_STAGE_GROW;
    const double base_val = is_base ? val : baseline_val(s);
    if (!sum || !meta || !st || !cJSON_AddItemToObject(meta, "summary", cJSON_Duplicate(sum, 1)) ||
        (base_val >= 0 && !cJSON_AddNumberToObject(meta, "baseline_val_accuracy", base_val)) ||
        !cJSON_AddStringToObject(st, "stage", gpp_stage_kind_name(s->req->kind)) ||
        !cJSON_AddNumberToObject(st, "stage_index", s->req->index) ||
        !cJSON_AddBoolToObject(st, "complete", 1)) {
        rc = oom(s->err);
        goto done;
    }
    for (const cJSON *e = s->extra ? s->extra->child : NULL; e; e = e->next)
        if (!cJSON_GetObjectItemCaseSensitive(meta, e->string))
            cJSON_AddItemToObject(meta, e->string, cJSON_Duplicate(e, 1));
    if ((rc = gpp_net_save(s->net, s->req->output, meta, st, 0, s->err)) != 0) goto done;
    if (s->req->partial) unlink(s->req->partial);
    gpp__log(s, "params %lld, MACs %lld, val %.4f, test %.4f -> %s", nn_net_params(s->net),
             nn_net_macs(s->net), val, test, s->req->output);
    gpp__progress(s, 1.0);
    if (summary) {
        *summary = sum;
        sum = NULL;
    }
done:
    cJSON_Delete(sum);
    cJSON_Delete(meta);
    cJSON_Delete(st);
    return rc;
}

/* A number from the input checkpoint's meta.summary, or -1. */
static double input_summary_num(gpp__stage *s, const char *key)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(s->in_doc, "meta");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(meta, "summary"), key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1.0;
}

/* gpp__extra_set: see stage_ctx.h. */
int gpp__extra_set(gpp__stage *s, const char *key, cJSON *v)
{
    if (!v) return oom(s->err);
    if (cJSON_GetObjectItemCaseSensitive(s->extra, key))
        cJSON_ReplaceItemInObjectCaseSensitive(s->extra, key, v);
    else
        cJSON_AddItemToObject(s->extra, key, v);
    return 0;
}

static int extra_num(gpp__stage *s, const char *key, double v)
{
    return gpp__extra_set(s, key, cJSON_CreateNumber(v));
}

static int extra_bool(gpp__stage *s, const char *key, int v)
{
    return gpp__extra_set(s, key, cJSON_CreateBool(v));
}

static double extra_get(gpp__stage *s, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->extra, key);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* ---- the stages ----------------------------------------------------------------- */

/* A net built from the spec's model (train) with fresh weights. */
static int build_model(gpp__stage *s, const cJSON *desc_override)
{
    const gpp_jobspec *sp = s->spec;
    cJSON *desc = NULL;
    const cJSON *use = desc_override;
    if (!use) {
        if (sp->model_kind == GPP_MODEL_ZOO) {
            desc = nn_zoo_model(sp->model_zoo, s->input, s->classes, s->err);
            if (!desc) return GPP_EINVAL;
            use = desc;
        } else if (sp->model_kind == GPP_MODEL_INLINE) {
            use = sp->model_net;
        } else {
            return gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "model",
                                 "a train stage from model {\"checkpoint\": ...} needs the "
                                 "checkpoint as the stage's input");
        }
    }
    nn_net *net = nn_net_new(s->ctx, use, s->input, s->classes, s->seed, s->err);
    cJSON_Delete(desc);
    if (!net) return GPP_EINVAL;
    return gpp__set_net(s, net);
}

static double phase_lr(double given, const gpp_jobspec *sp)
{
    return given > 0 ? given : sp->train.lr;
}

/* The final recovery's peak learning rate: prune.final_lr, else prune.lr,
 * else train.lr. */
static double final_lr(const gpp_jobspec *sp)
{
    return sp->prune.final_lr > 0 ? sp->prune.final_lr : phase_lr(sp->prune.lr, sp);
}

/* The stop rule compares each prune's validation accuracy with the
 * baseline's `val` less stop.max_accuracy_drop.  When one accuracy on this
 * many validation images has a binomial standard error above that bound,
 * the rule judges noise as much as the nets: say so, and what helps.  (Both
 * accuracies are on the same images, so their difference is steadier than
 * one accuracy; an error below the bound is left unsaid: the default job's
 * 6,000 images give 0.0039 against 0.005.) */
static void noisy_bound_hint(gpp__stage *s, double val)
{
    const gpp_jobspec *sp = s->spec;
    if (s->n_val == 0 || sp->iterations == 0 || val <= 0 || val >= 1) return;
    const double se = sqrt(val * (1.0 - val) / (double)s->n_val);
    if (se <= sp->stop.max_accuracy_drop) return;
    gpp__log(s, "note: %u validation images: an accuracy near %.4f has a standard error of "
             "about %.4f, against a stop.max_accuracy_drop of %.4f; the stop rule may end the "
             "loop on noise (a larger data.val_fraction or stop.max_accuracy_drop steadies it)",
             s->n_val, val, se, sp->stop.max_accuracy_drop);
}

static int stage_train(gpp__stage *s, cJSON **summary)
{
    int rc;
    /* a job from a trained checkpoint: the train stage evaluates it on this
     * job's data, unchanged -- it is the baseline the job compresses */
    int given = s->spec->model_kind == GPP_MODEL_CHECKPOINT;
    if (!s->resume && !s->net && (rc = build_model(s, NULL)) != 0) return rc;
    if (given) {
        gpp__log(s, "train: the model of the checkpoint, evaluated on this job's data (no "
                    "training: it is the baseline)");
        if ((rc = extra_bool(s, "evaluated_only", 1)) != 0) return rc;
    }
    gpp__phase ph = {.name = "train", .epochs = given ? 0 : s->spec->train.epochs,
                     .lr = s->spec->train.lr, .salt = SALT_TRAIN};
    double val = -1.0;
    if ((rc = gpp__phase_run(s, &ph)) != 0 ||
        (rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, &val)) != 0)
        return rc;
    noisy_bound_hint(s, val);
    return finish(s, val, -1, summary);
}

static int stage_push(gpp__stage *s, cJSON **summary)
{
    const gpp_jobspec *sp = s->spec;
    double kf = sp->push.keep_fraction;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(s->in_doc, "meta");
    const cJSON *jk = cJSON_GetObjectItemCaseSensitive(meta, "keep_fraction");
    if (cJSON_IsNumber(jk) && jk->valuedouble > 0 && jk->valuedouble <= 1) kf = jk->valuedouble;
    int rc = extra_num(s, "keep_fraction_pushed", kf);
    if (rc != 0) return rc;
    gpp__phase ph = {.name = "push", .epochs = sp->push.epochs, .lr = phase_lr(sp->push.lr, sp),
                     .push = 1, .keep_fraction = kf, .salt = SALT_PUSH};
    if ((rc = gpp__phase_run(s, &ph)) != 0) return rc;
    return finish(s, -1, -1, summary);
}

static int stage_grow(gpp__stage *s, cJSON **summary)
{
    const gpp_jobspec *sp = s->spec;
    int rc = 0;
    if (!s->resume) {
        if (gpp__grow_site(s->net) < 0) {
            gpp__log(s, "the network has no global average pooling before its classifier: "
                     "nothing to grow");
            if ((rc = extra_bool(s, "grow_kept", 0)) != 0 || (rc = extra_bool(s, "grow_done", 1)) != 0)
                return rc;
            return finish(s, input_summary_num(s, "val_accuracy"),
                          input_summary_num(s, "test_accuracy"), summary);
        }
        double before = input_summary_num(s, "val_accuracy");
        if (before < 0 && (rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, &before)) != 0)
            return rc;
        int w[6], given = 0;
        for (int k = 0; k < 6; k++) given |= sp->grow.widths[k] != 0;
        if ((rc = gpp__grow_widths(s->net, given ? sp->grow.widths : NULL, w, s->err)) != 0)
            return rc;
        char prefix[32];
        int no = s->req->iteration > 0 ? s->req->iteration : 1;
        snprintf(prefix, sizeof prefix, "grow%d", no);
        char probe[48];
        snprintf(probe, sizeof probe, "%s_concat", prefix);
        while (nn_net_find(s->net, probe) >= 0) {
            snprintf(prefix, sizeof prefix, "grow%d", ++no);
            snprintf(probe, sizeof probe, "%s_concat", prefix);
        }
        nn_net *g = NULL;
        int fc_kept = 0;
        if ((rc = gpp__grow_insert(s->ctx, s->net, prefix, w, s->seed, &g, &fc_kept, s->err)) != 0)
            return rc;
        gpp__log(s, "inserted %s (widths %d %d/%d %d/%d %d = %d channels) before the pooling; "
                 "classifier %s", prefix, w[0], w[1], w[2], w[3], w[4], w[5],
                 w[0] + w[2] + w[4] + w[5], fc_kept ? "kept" : "re-initialised (width changed)");
        if ((rc = gpp__set_net(s, g)) != 0) return rc;
        if ((rc = extra_num(s, "val_before", before)) != 0) return rc;
    }
    gpp__phase ph = {.name = "grow", .epochs = sp->grow.epochs, .lr = sp->train.lr,
                     .salt = SALT_TRAIN};
    if ((rc = gpp__phase_run(s, &ph)) != 0) return rc;
    double before = extra_get(s, "val_before", 0.0), after = 0.0;
    if ((rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, &after)) != 0) return rc;
    int kept = after >= before + sp->grow.min_gain;
    int modules = (int)input_summary_num(s, "grow_modules");
    if (modules < 0) modules = 0;
    if ((rc = extra_num(s, "grown_val_accuracy", after)) != 0 ||
        (rc = extra_bool(s, "grow_kept", kept)) != 0)
        return rc;
    gpp__log(s, "validation accuracy %.4f -> %.4f with the module (needs +%.4f): %s", before,
             after, sp->grow.min_gain, kept ? "kept" : "rolled back");
    if (!kept) {
        nn_net *orig = NULL;
        cJSON_Delete(s->in_doc);
        s->in_doc = NULL;
        if ((rc = gpp_net_load(s->ctx, s->req->input, &orig, &s->in_doc, s->err)) != 0) return rc;
        if ((rc = gpp__set_net(s, orig)) != 0) return rc;
        if ((rc = extra_bool(s, "grow_done", 1)) != 0 ||
            (rc = extra_num(s, "grow_modules", modules)) != 0)
            return rc;
        return finish(s, input_summary_num(s, "val_accuracy"),
                      input_summary_num(s, "test_accuracy"), summary);
    }
    if ((rc = extra_num(s, "grow_modules", modules + 1)) != 0 ||
        (rc = extra_bool(s, "grow_done", modules + 1 >= sp->grow.max_modules)) != 0)
        return rc;
    return finish(s, after, -1, summary);
}

/* The distillation teacher (prune.distill > 0): the stage's input
 * checkpoint, the net before pruning; NULL when distillation is off. */
static int load_teacher(gpp__stage *s, nn_net **teacher)
{
    *teacher = NULL;
    if (s->spec->prune.distill <= 0 || !s->req->input) return 0;
    int rc = gpp_net_load(s->ctx, s->req->input, teacher, NULL, s->err);
    if (rc == 0 && (rc = nn_net_reserve(*teacher, s->B, s->err)) != 0) {
        nn_net_free(*teacher);
        *teacher = NULL;
    }
    return rc;
}

/* A prune (not the last) whose validation accuracy after its fine-tune is
 * below the stop rule's bound would end the loop; its short fine-tune,
 * not necessarily its widths, may be what left it there.  It trains
 * stop.recover_epochs more (one learning-rate cycle, phase "recover") and
 * the stop rule judges what that gives.  A prune that does not fine-tune
 * (prune.finetune_epochs 0) is not recovered either.  `resumed`: the stage
 * restarts inside the recover phase.  *val: the last validation accuracy,
 * when evaluated here (else left alone). */
static int recover_to_bound(gpp__stage *s, gpp__phase *ph, int epochs, int resumed, double *val)
{
    const gpp_jobspec *sp = s->spec;
    const double base = baseline_val(s), bound = base - sp->stop.max_accuracy_drop;
    const int n = sp->stop.recover_epochs;
    if (base < 0 || n <= 0 || epochs <= 0) return 0;
    int rc;
    if (!resumed) {
        if ((rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, val)) != 0 || *val >= bound)
            return rc;
        gpp__log(s, "validation accuracy %.4f is below the bound %.4f (the baseline's %.4f - "
                 "%.4f): %d more epoch%s before the stop rule judges it", *val, bound, base,
                 sp->stop.max_accuracy_drop, n, n == 1 ? "" : "s");
        if ((rc = extra_num(s, "val_before_recover", *val)) != 0 ||
            (rc = extra_num(s, "recover_epochs", n)) != 0 ||
            (rc = extra_num(s, "finetune_epochs", epochs + n)) != 0)
            return rc;
    }
    s->prog0 = s->prog1 = 0.97;   /* progress holds (never goes back) while it recovers */
    gpp__phase rp = {.name = "recover", .epochs = n, .lr = ph->lr, .salt = SALT_RECOVER,
                     .teacher = ph->teacher};
    if ((rc = gpp__phase_run(s, &rp)) != 0 ||
        (rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, val)) != 0)
        return rc;
    gpp__log(s, "%s: %d more epoch%s took validation accuracy %.4f -> %.4f (the bound: %.4f)",
             *val >= bound ? "back within the bound" : "still below the bound", n, n == 1 ? "" : "s",
             extra_get(s, "val_before_recover", -1), *val, bound);
    return 0;
}

static int stage_prune(gpp__stage *s, cJSON **summary)
{
    const gpp_jobspec *sp = s->spec;
    nn_net *teacher = NULL;
    int rc;
    s->prog0 = 0.0;   /* the analysis and surgery take the first 15 % */
    s->prog1 = 0.15;
    if (!s->resume && (rc = gpp__prune_apply(s)) != 0) return rc;
    s->prog0 = 0.15;
    s->prog1 = 0.97;
    /* the last iteration's fine-tune is also the final model's recovery at
     * its final widths: prune.final_finetune_epochs more, one lr cycle */
    int epochs = sp->prune.finetune_epochs;
    int last = s->req->iteration == sp->iterations - 1;
    if (last) epochs += sp->prune.final_finetune_epochs;
    const int in_recover = strcmp(resume_phase(s), "recover") == 0;
    if (!in_recover && (rc = extra_num(s, "finetune_epochs", epochs)) != 0) return rc;
    if ((rc = load_teacher(s, &teacher)) != 0) return rc;
    gpp__phase ph = {.name = "finetune", .epochs = epochs,
                     .lr = last ? final_lr(sp) : phase_lr(sp->prune.lr, sp),
                     .salt = SALT_TUNE, .teacher = teacher};
    double val = -1.0;
    rc = in_recover ? 0 : gpp__phase_run(s, &ph);
    if (rc == 0 && !last) rc = recover_to_bound(s, &ph, epochs, in_recover, &val);
    nn_net_free(teacher);
    if (rc != 0) return rc;
    return finish(s, val, -1, summary);
}

/* The final recovery when the loop ended early: the size-first prune
 * result, which had prune.finetune_epochs only, fine-tuned
 * prune.final_finetune_epochs more at prune.final_lr (one lr cycle), as
 * the last planned prune would have been.  No distillation: the teacher
 * would be the net itself. */
static int stage_finetune(gpp__stage *s, cJSON **summary)
{
    const gpp_jobspec *sp = s->spec;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(s->in_doc, "meta");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(meta, "stage_index");
    int rc;
    if ((rc = extra_num(s, "from_stage", cJSON_IsNumber(from) ? from->valuedouble : -1)) != 0 ||
        (rc = extra_num(s, "finetune_epochs", sp->prune.final_finetune_epochs)) != 0 ||
        (rc = extra_num(s, "val_before", input_summary_num(s, "val_accuracy"))) != 0)
        return rc;
    gpp__log(s, "final recovery of stage %d: %d epochs at peak lr %g",
             cJSON_IsNumber(from) ? (int)from->valuedouble : -1, sp->prune.final_finetune_epochs,
             final_lr(sp));
    gpp__phase ph = {.name = "finetune", .epochs = sp->prune.final_finetune_epochs,
                     .lr = final_lr(sp), .salt = SALT_TUNE};
    if ((rc = gpp__phase_run(s, &ph)) != 0) return rc;
    return finish(s, -1, -1, summary);
}

static int stage_baseline(gpp__stage *s, cJSON **summary)
{
    const gpp_jobspec *sp = s->spec;
    const gpp_stage_req *r = s->req;
    int rc = 0;
    if (!r->reference)
        return gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "reference",
                             "the %s stage needs a reference checkpoint",
                             gpp_stage_kind_name(r->kind));
    if (!s->resume) {
        if (r->kind == GPP_STAGE_SCRATCH) {
            gpp_ckpt *ck = NULL;
            if ((rc = gpp_ckpt_read_file(r->reference, &ck, s->err)) != 0) return rc;
            cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
            gpp_ckpt_free(ck);
            if (!doc) return oom(s->err);
            rc = build_model(s, cJSON_GetObjectItemCaseSensitive(doc, "network"));
            cJSON_Delete(doc);
            if (rc != 0) return rc;
            gpp__log(s, "the reference architecture (%lld params) from scratch, %d epochs",
                     nn_net_params(s->net), r->budget_epochs);
        } else if ((rc = gpp__baseline_cut(s, r->kind == GPP_STAGE_L1)) != 0) {
            return rc;
        }
    }
    /* distillation (when on) from the unpruned baseline, the input */
    nn_net *teacher = NULL;
    if ((rc = extra_num(s, "budget_epochs", r->budget_epochs)) != 0 ||
        (rc = load_teacher(s, &teacher)) != 0)
        return rc;
    gpp__phase ph = {.name = r->kind == GPP_STAGE_SCRATCH ? "train" : "finetune",
                     .epochs = r->budget_epochs,
                     .lr = r->kind == GPP_STAGE_SCRATCH ? sp->train.lr
                           : r->final_widths                ? final_lr(sp)
                                                            : phase_lr(sp->prune.lr, sp),
                     .salt = r->kind == GPP_STAGE_SCRATCH ? SALT_TRAIN : SALT_TUNE,
                     .teacher = teacher};
    rc = gpp__phase_run(s, &ph);
    nn_net_free(teacher);
    if (rc != 0) return rc;
    return finish(s, -1, -1, summary);
}

/* ---- entry -------------------------------------------------------------------------- */

/* The partial checkpoint of this very stage, or NULL. */
static cJSON *partial_doc(const gpp_stage_req *r)
{
    if (!r->partial || access(r->partial, R_OK) != 0) return NULL;
    gpp_ckpt *ck = NULL;
    if (gpp_ckpt_read_file(r->partial, &ck, NULL) != 0) return NULL;
    cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
    gpp_ckpt_free(ck);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "state");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(st, "stage");
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(st, "stage_index");
    if (!cJSON_IsString(k) || strcmp(k->valuestring, gpp_stage_kind_name(r->kind)) != 0 ||
        !cJSON_IsNumber(i) || (int)i->valuedouble != r->index ||
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "complete"))) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* gpp_stage_run: see gpp/stages.h. */
int gpp_stage_run(const gpp_stage_req *req, const gpp_stage_io *io, cJSON **summary,
                  gpp_error *err)
{
    if (summary) *summary = NULL;
    if (!req || !req->spec || !req->output || (int)req->kind < 0 || req->kind >= GPP_STAGE_KIND_COUNT)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "bad stage request");
    if (req->kind != GPP_STAGE_TRAIN && req->kind != GPP_STAGE_SCRATCH && !req->input)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "input",
                             "the %s stage needs an input checkpoint", gpp_stage_kind_name(req->kind));
    gpp__stage s = {.req = req, .io = io, .spec = req->spec, .data = req->data, .ctx = req->ctx,
                    .err = err};
    int rc = 0;
    const gpp_jobspec *sp = req->spec;
    s.seed = ((uint64_t)sp->seed + 1) * 0x9e3779b97f4a7c15ULL ^
             ((uint64_t)req->index + 1) * 0xd1b54a32d192ed03ULL;
    s.extra = cJSON_CreateObject();
    if (!s.extra) return oom(err);
    if (!s.data) {
        if ((rc = gpp_stage_data_open(sp, req->datasets_dir, &s.own_data, err)) != 0) goto done;
        s.data = s.own_data;
    }
    if (!s.ctx) {
        s.own_ctx = nn_ctx_new("cpu", req->threads > 0 ? req->threads : 1, err);
        if (!s.own_ctx) {
            rc = GPP_ENOMEM;
            goto done;
        }
        s.ctx = s.own_ctx;
    }
    const gpp_dataset *tr = s.data->train;
    s.input[0] = (int)tr->c;
    s.input[1] = (int)tr->h;
    s.input[2] = (int)tr->w;
    s.classes = (int)tr->classes;
    s.B = sp->train.batch_size;
    if (s.B < s.classes * sp->push.min_per_class) s.B = s.classes * sp->push.min_per_class;
    if (s.data->split->n_val > 0) {
        s.val = s.data->split->val;
        s.n_val = s.data->split->n_val;
        s.val_ds = s.data->split->val_in_test ? s.data->test : s.data->train;
    } else {
        s.val = s.data->split->train;   /* data.val_fraction 0: validate on the training split */
        s.n_val = s.data->split->n_train;
        s.val_ds = s.data->train;
    }
    s.x = malloc(sizeof(float) * (size_t)s.B * tr->c * tr->h * tr->w);
    s.y = malloc(sizeof(int32_t) * (size_t)s.B);
    if (!s.x || !s.y) {
        rc = oom(err);
        goto done;
    }
    s.prog0 = 0.0;
    s.prog1 = 0.97;
    s.resume = partial_doc(req);
    if (s.resume) {
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(s.resume, "state"), "extra");
        if (cJSON_IsObject(ex)) {
            cJSON_Delete(s.extra);
            s.extra = cJSON_Duplicate(ex, 1);
            if (!s.extra) {
                rc = oom(err);
                goto done;
            }
        }
    }
    if (req->input) {
        nn_net *net = NULL;
        if ((rc = gpp_net_load(s.ctx, req->input, &net, &s.in_doc, err)) != 0) goto done;
        nn_node_info d;
        nn_net_node(net, 0, &d);
        if (d.C != s.input[0] || d.H != s.input[1] || d.W != s.input[2]) {
            nn_net_free(net);
            rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "input",
                               "%s takes %dx%dx%d inputs but the data are %dx%dx%d", req->input,
                               d.C, d.H, d.W, s.input[0], s.input[1], s.input[2]);
            goto done;
        }
        if ((rc = gpp__set_net(&s, net)) != 0) goto done;
    }
    s.norm = s.data->norm;
    if (sp->model_kind == GPP_MODEL_CHECKPOINT && (rc = checkpoint_norm(&s)) != 0) goto done;
    switch (req->kind) {
    case GPP_STAGE_TRAIN:
        rc = stage_train(&s, summary);
        break;
    case GPP_STAGE_GROW:
        rc = stage_grow(&s, summary);
        break;
    case GPP_STAGE_PUSH:
        rc = stage_push(&s, summary);
        break;
    case GPP_STAGE_PRUNE:
        rc = stage_prune(&s, summary);
        break;
    case GPP_STAGE_FINETUNE:
        rc = stage_finetune(&s, summary);
        break;
    default:
        rc = stage_baseline(&s, summary);
        break;
    }
done:
    nn_net_free(s.net);
    nn_ctx_free(s.own_ctx);
    gpp_stage_data_free(s.own_data);
    cJSON_Delete(s.in_doc);
    cJSON_Delete(s.extra);
    cJSON_Delete(s.resume);
    free(s.x);
    free(s.y);
    return rc;
}
