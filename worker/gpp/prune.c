/* The prune step (METHOD.md 4): pre-decision LDA utility and M' on
 * validation data, deconvolution tracing, per-layer thresholds, surgery,
 * least-squares recovery (the stage's fine-tuning runs after, in stage.c);
 * and the surgery of the l1 / random baselines to a reference's widths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/gppmath.h"
#include "stage_ctx.h"
#include "stages_internal.h"

#define RECOVER_MAX_INPUTS 4096   /* consumer layers with more inputs are not re-fitted */
#define RNG_STREAM_RANDOM 0x72616e646f6d2d70ULL
#define RNG_STREAM_BN 0x626e2d7265737461ULL       /* "bn-resta" */

static int oom(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
}

/* Features of the pre-decision node P [n, M] for images idx[0..n) of the
 * training set (evaluation mode), with their labels. */
static int features(gpp__stage *s, int P, int M, const gpp_dataset *ds, const uint32_t *idx,
                    uint32_t n, float *F, int *lab)
{
    for (uint32_t i = 0; i < n; i += (uint32_t)s->B) {
        if (gpp__cancelled(s)) return GPP_EAGAIN;
        int m = n - i < (uint32_t)s->B ? (int)(n - i) : s->B;
        gpp_data_fill(s->x, s->y, ds, idx + i, (uint32_t)m, &s->norm, GPP_DATA_AUG_NONE,
                      NULL);
        int rc = nn_net_forward(s->net, s->x, NULL, m, 0, NULL, s->err);
        if (rc != 0) return rc;
        memcpy(F + (size_t)i * M, nn_net_output(s->net, P), sizeof(float) * (size_t)m * M);
        for (int k = 0; k < m; k++) lab[i + (uint32_t)k] = s->y[k];
    }
    return 0;
}

/* The existing classifier restricted to the kept pre-decision neurons. */
typedef struct probe_ctx {
    const float *H;     /* [n, M] validation features */
    const int *y;
    int n, M, K;
    const float *W;     /* [K, M] */
    const float *b;     /* [K] or NULL */
    float *hm;          /* [M] scratch */
} probe_ctx;

static int probe(void *ctx, const uint8_t *kept, int M, double *acc)
{
    probe_ctx *p = ctx;
    long long ok = 0;
    for (int i = 0; i < p->n; i++) {
        const float *h = p->H + (size_t)i * M;
        for (int m = 0; m < M; m++) p->hm[m] = kept[m] ? h[m] : 0.0f;
        int best = 0;
        float bv = -INFINITY;
        for (int k = 0; k < p->K; k++) {
            const float *w = p->W + (size_t)k * M;
            float z = p->b ? p->b[k] : 0.0f;
            for (int m = 0; m < M; m++) z += w[m] * p->hm[m];
            if (z > bv) {
                bv = z;
                best = k;
            }
        }
        ok += best == p->y[i];
    }
    *acc = p->n ? (double)ok / p->n : 0.0;
    return 0;
}

/* Per-maker removal masks and the decisions' log. */
typedef struct cuts {
    int n;              /* nodes */
    uint8_t **rm;       /* [n] per maker: [C] 1 = remove (NULL: nothing) */
} cuts;

static void cuts_free(cuts *c)
{
    if (!c->rm) return;
    for (int i = 0; i < c->n; i++) free(c->rm[i]);
    free(c->rm);
    c->rm = NULL;
}

static uint8_t *cut_of(cuts *c, const nn_net *net, int id)
{
    if (!c->rm[id]) {
        nn_node_info in;
        nn_net_node(net, id, &in);
        c->rm[id] = calloc((size_t)in.C, 1);
    }
    return c->rm[id];
}

/* Apply every cut with nn_net_remove_channels, recording widths. */
static int apply_cuts(gpp__stage *s, cuts *c)
{
    int rc = 0;
    for (int id = 1; id < c->n && rc == 0; id++) {
        if (!c->rm[id]) continue;
        nn_node_info in;
        nn_net_node(s->net, id, &in);
        int *ch = malloc(sizeof(int) * (size_t)in.C), k = 0;
        if (!ch) return oom(s->err);
        for (int j = 0; j < in.C; j++)
            if (c->rm[id][j]) ch[k++] = j;
        if (k > 0) rc = nn_net_remove_channels(s->net, id, ch, k, s->err);
        free(ch);
    }
    return rc;
}

/* The recovery set: samples_per_class of each class from the training
 * split, filled in order. */
typedef struct fill_ctx {
    gpp__stage *s;
    const uint32_t *idx;
    int n;
} fill_ctx;

static int fill_recover(void *user, float *x, int first, int n)
{
    fill_ctx *f = user;
    if (first >= f->n) return 0;
    if (first + n > f->n) n = f->n - first;
    gpp_data_fill(x, NULL, f->s->data->train, f->idx + first, (uint32_t)n, &f->s->norm,
                  GPP_DATA_AUG_NONE, NULL);
    return n;
}

/* After a cut the batch norms' running statistics describe the layers' old
 * inputs, not the new ones (a vgg cut to 70 % of its channels evaluates near
 * chance with them).  Re-estimate them on prune.bn_recalibrate training
 * images (class-balanced, shuffled, no augmentation) as the mean of the
 * batch statistics -- the cut is judged, and the fine-tune starts, with
 * statistics that fit the cut net.  Returns 0 at once when it is off or the
 * net has no batch norm; *images (may be NULL) gets the images used. */
static int bn_recalibrate(gpp__stage *s, nn_net *net, int *images)
{
    const int want = s->spec->prune.bn_recalibrate;
    uint32_t *idx = NULL, n = 0;
    int rc = 0;
    if (images) *images = 0;
    if (want <= 0 || nn_net_bn_restat(net, 0) == 0) return 0;
    const gpp_data_split *sl = s->data->split;
    uint32_t per = (uint32_t)((want + s->classes - 1) / s->classes);
    if ((rc = gpp_data_pick_per_class(&idx, &n, s->data->train, sl->train, sl->n_train, per,
                                      s->seed ^ RNG_STREAM_BN, s->err)) != 0)
        return rc;
    gpp_rng rr;
    gpp_rng_seed(&rr, s->seed ^ RNG_STREAM_BN);
    gpp_data_shuffle(idx, n, &rr);   /* the pick is in dataset order: mix the classes */
    if (n > (uint32_t)want) n = (uint32_t)want;
    if (nn_net_batch(net) < s->B && (rc = nn_net_reserve(net, s->B, s->err)) != 0) goto done;
    nn_net_bn_restat(net, 1);
    int used = 0;
    for (uint32_t i = 0; i < n && rc == 0; i += (uint32_t)s->B) {
        int m = n - i < (uint32_t)s->B ? (int)(n - i) : s->B;
        if (m < 2 && i > 0) break;   /* a batch of one has no variance */
        gpp__fill_train(s, idx + i, m);
        rc = nn_net_forward(net, s->x, NULL, m, 1, NULL, s->err);
        used += m;
    }
    nn_net_bn_restat(net, 0);
    if (images) *images = used;
done:
    free(idx);
    return rc;
}

/* bn_recalibrate on the stage's net, logged and in the summary
 * ("bn_recalibrated": images used, 0 when off or without batch norm). */
static int recalibrate_logged(gpp__stage *s)
{
    int images = 0;
    int rc = bn_recalibrate(s, s->net, &images);
    if (rc != 0) return rc;
    if (images > 0) gpp__log(s, "batch norm: running statistics re-estimated on %d images", images);
    return gpp__extra_set(s, "bn_recalibrated", cJSON_CreateNumber(images));
}

/* Surgery, then (prune.reconstruct) least-squares recovery against the
 * unpruned net, then the batch norms' statistics re-estimated. */
static int cut_and_recover(gpp__stage *s, cuts *c, int reconstruct)
{
    const gpp_jobspec *sp = s->spec;
    nn_net *orig = NULL;
    uint32_t *ridx = NULL;
    int rc = 0;
    if (reconstruct && !(orig = gpp_net_clone(s->ctx, s->net, s->err))) return GPP_ENOMEM;
    if ((rc = apply_cuts(s, c)) != 0) goto done;
    if (reconstruct) {
        uint32_t nr = 0, per = (uint32_t)((sp->prune.reconstruct_samples + s->classes - 1) /
                                          s->classes);
        const gpp_data_split *sl = s->data->split;
        if ((rc = gpp_data_pick_per_class(&ridx, &nr, s->data->train, sl->train, sl->n_train, per,
                                          s->seed ^ 0x7265636f766572ULL, s->err)) != 0)
            goto done;
        fill_ctx fc = {.s = s, .idx = ridx, .n = (int)nr};
        gpp__recover_report rep;
        const uint8_t **keep = calloc((size_t)c->n, sizeof *keep);
        uint8_t **own = calloc((size_t)c->n, sizeof *own);
        if (!keep || !own) {
            free(keep);
            free(own);
            rc = oom(s->err);
            goto done;
        }
        for (int id = 1; id < c->n; id++) {
            if (!c->rm[id]) continue;
            nn_node_info in;
            nn_net_node(orig, id, &in);
            own[id] = malloc((size_t)in.C);
            if (!own[id]) {
                rc = oom(s->err);
                break;
            }
            for (int j = 0; j < in.C; j++) own[id][j] = !c->rm[id][j];
            keep[id] = own[id];
        }
        if (rc == 0)
            rc = gpp__recover(orig, s->net, keep, (int)nr, RECOVER_MAX_INPUTS, fill_recover, &fc,
                              &rep, s->err);
        for (int id = 0; id < c->n; id++) free(own[id]);
        free(own);
        free(keep);
        if (rc != 0) goto done;
        gpp__log(s, "recovery: %d layers re-fitted on %u samples (%d not better on held-out "
                 "samples, %d too wide), held-out residual %.4g -> %.4g", rep.layers, nr,
                 rep.rejected, rep.skipped, rep.res_before, rep.res_after);
    }
    rc = recalibrate_logged(s);
done:
    free(ridx);
    nn_net_free(orig);
    return rc;
}

/* Widths of every conv/fc as {name: width}. */
static cJSON *widths_json(const nn_net *net)
{
    return gpp_net_layers_json(net);
}

/* Decide one maker's cut from utilities u [C] by the spec's rule. */
static int rule_cut(gpp__stage *s, int id, const double *u, int C, double eta, cuts *c,
                    double *threshold, int *n_removed)
{
    const gpp_jobspec_prune *pr = &s->spec->prune;
    uint8_t *rm = cut_of(c, s->net, id);
    if (!rm) return oom(s->err);
    int k = 0, rc;
    *threshold = 0.0;
    if (pr->threshold == GPP_THRESHOLD_RATIO)
        rc = gpp_prune_ratio(u, C, pr->ratio, pr->min_channels, rm, &k, s->err);
    else
        rc = gpp_prune_threshold(u, C, eta, pr->max_layer_fraction, pr->min_channels, rm, &k,
                                 threshold, s->err);
    *n_removed = k;
    return rc;
}

/* The baselines' choice: for every layer with count[id] > 0, the count[id]
 * filters of smallest L1 norm (l1) or count[id] drawn from rr, into c. */
static int select_counts(nn_net *net, const int *count, int l1, gpp_rng *rr, cuts *c,
                         gpp_error *err)
{
    for (int id = 1; id < c->n; id++) {
        if (count[id] <= 0) continue;
        nn_node_info in;
        nn_net_node(net, id, &in);
        uint8_t *rm = cut_of(c, net, id);
        if (!rm) return oom(err);
        int rc;
        if (l1) {
            nn_tensor wt;
            char name[NN_TENSOR_NAME_MAX];
            snprintf(name, sizeof name, "%s.weight", in.name);
            if ((rc = nn_net_tensor_find(net, name, &wt)) != 0) return rc;
            rc = gpp_prune_l1_select(wt.data, in.C, wt.len / (size_t)in.C, count[id], rm, err);
        } else {
            rc = gpp_prune_random_select(rr, in.C, count[id], rm, err);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

#define CUT_RANDOM_DRAWS 3

/* Validation and test accuracy of s->net cut by c, on a copy; s->net is
 * left as it was. */
static int accuracy_cut(gpp__stage *s, cuts *c, double *val, double *test)
{
    nn_net *orig = s->net;
    nn_net *copy = gpp_net_clone(s->ctx, orig, s->err);
    if (!copy) return GPP_ENOMEM;
    s->net = copy;
    int rc = apply_cuts(s, c);
    if (rc == 0) rc = nn_net_reserve(copy, s->B, s->err);
    if (rc == 0) rc = bn_recalibrate(s, copy, NULL);
    if (rc == 0) rc = gpp__evaluate(s, s->val_ds, s->val, s->n_val, val);
    if (rc == 0)
        rc = gpp__evaluate(s, s->data->test, s->data->split->test, s->data->split->n_test, test);
    s->net = orig;
    nn_net_free(copy);
    return rc;
}

/* What GPP's channel choice is worth before any training: the net cut by
 * GPP's choice, and cut to the same widths by the L1 norm and at random
 * (CUT_RANDOM_DRAWS draws, the first the random baseline's own), each
 * evaluated as cut (no recovery, no fine-tune).  Recorded as the summary's
 * "cut_compare". */
static int compare_cuts(gpp__stage *s, cuts *gpp_cut)
{
    nn_net *net = s->net;
    const int n = gpp_cut->n;
    int *count = calloc((size_t)n, sizeof(int));
    cuts c = {.n = n, .rm = NULL};
    gpp_rng rr;
    gpp_rng_seed(&rr, s->seed ^ RNG_STREAM_RANDOM);
    double v[2 + CUT_RANDOM_DRAWS], t[2 + CUT_RANDOM_DRAWS];
    int rc = 0;
    if (!count) return oom(s->err);
    for (int id = 1; id < n; id++) {
        if (!gpp_cut->rm[id]) continue;
        nn_node_info in;
        nn_net_node(net, id, &in);
        for (int j = 0; j < in.C; j++) count[id] += gpp_cut->rm[id][j] != 0;
    }
    if ((rc = accuracy_cut(s, gpp_cut, &v[0], &t[0])) != 0) goto done;
    for (int k = 1; k < 2 + CUT_RANDOM_DRAWS; k++) {
        c.rm = calloc((size_t)n, sizeof(uint8_t *));
        if (!c.rm) {
            rc = oom(s->err);
            goto done;
        }
        if ((rc = select_counts(net, count, k == 1, &rr, &c, s->err)) != 0 ||
            (rc = accuracy_cut(s, &c, &v[k], &t[k])) != 0)
            goto done;
        cuts_free(&c);
    }
    double rv = 0, rt = 0;
    for (int k = 2; k < 2 + CUT_RANDOM_DRAWS; k++) {
        rv += v[k] / CUT_RANDOM_DRAWS;
        rt += t[k] / CUT_RANDOM_DRAWS;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "gpp_val", v[0]) ||
        !cJSON_AddNumberToObject(o, "gpp_test", t[0]) ||
        !cJSON_AddNumberToObject(o, "l1_val", v[1]) ||
        !cJSON_AddNumberToObject(o, "l1_test", t[1]) ||
        !cJSON_AddNumberToObject(o, "random_val", rv) ||
        !cJSON_AddNumberToObject(o, "random_test", rt) ||
        !cJSON_AddItemToObject(o, "random_val_draws",
                               cJSON_CreateDoubleArray(v + 2, CUT_RANDOM_DRAWS)) ||
        !cJSON_AddItemToObject(o, "random_test_draws",
                               cJSON_CreateDoubleArray(t + 2, CUT_RANDOM_DRAWS))) {
        cJSON_Delete(o);
        rc = oom(s->err);
        goto done;
    }
    if ((rc = gpp__extra_set(s, "cut_compare", o)) != 0) goto done;
    gpp__log(s, "right after the cut, val/test: GPP %.4f/%.4f, L1 %.4f/%.4f, random "
             "%.4f/%.4f (mean of %d draws)", v[0], t[0], v[1], t[1], rv, rt, CUT_RANDOM_DRAWS);
done:
    cuts_free(&c);
    free(count);
    return rc;
}

/* gpp__prune_apply: see stage_ctx.h. */
int gpp__prune_apply(gpp__stage *s)
{
    const gpp_jobspec *sp = s->spec;
    const gpp_jobspec_prune *pr = &sp->prune;
    nn_net *net = s->net;
    const int n = nn_net_num_nodes(net);
    const int P = nn_net_predecision(net);
    const double eta = pr->eta + s->req->iteration * pr->eta_step;
    nn_node_info pi;
    if (P < 1 || nn_net_node(net, P, &pi) != 0)
        return gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "model",
                             "prune: the network has no pre-decision layer");
    const int M = pi.C * pi.H * pi.W, HW = pi.H * pi.W;
    cuts c = {.n = n, .rm = calloc((size_t)n, sizeof(uint8_t *))};
    float *F = NULL, *Hv = NULL, *hm = NULL;
    int *lab = NULL, *yv = NULL, *order = NULL;
    double *util = NULL, *u = NULL;
    uint8_t *status = NULL, *keep = NULL, *pmaker = NULL;
    uint32_t *sub = NULL, ns = 0;
    gpp_trace *tr = NULL;
    int rc = 0;
    double *rnd = NULL;
    if (!c.rm) return oom(s->err);
    if ((rc = gpp__extra_set(s, "layers_before", widths_json(net))) != 0) goto done;
    pmaker = calloc((size_t)n, 1);
    u = malloc(sizeof(double) * 65536);
    if (!pmaker || !u) {
        rc = oom(s->err);
        goto done;
    }
    /* the makers feeding the pre-decision layer */
    for (int ch = 0; ch < pi.C; ch++) {
        int mk, mc;
        if (gpp__channel_maker(net, P, ch, &mk, &mc) == 0 && gpp__prunable(net, mk)) pmaker[mk] = 1;
    }
    if (pr->criterion == GPP_CRITERION_GPP) {
        /* 1. LDA utility of the pre-decision neurons */
        const gpp_data_split *sl = s->data->split;
        if ((rc = gpp_data_pick_per_class(&sub, &ns, s->data->train, sl->train, sl->n_train,
                                          (uint32_t)pr->samples_per_class,
                                          s->seed ^ 0x6c6461ULL, s->err)) != 0)
            goto done;
        F = malloc(sizeof(float) * (size_t)ns * M);
        lab = malloc(sizeof(int) * ns);
        util = malloc(sizeof(double) * (size_t)M);
        order = malloc(sizeof(int) * (size_t)M);
        status = malloc((size_t)M);
        keep = calloc((size_t)M, 1);
        Hv = malloc(sizeof(float) * (size_t)s->n_val * M);
        yv = malloc(sizeof(int) * (size_t)(s->n_val ? s->n_val : 1));
        hm = malloc(sizeof(float) * (size_t)M);
        if (!F || !lab || !util || !order || !status || !keep || !Hv || !yv || !hm) {
            rc = oom(s->err);
            goto done;
        }
        if ((rc = features(s, P, M, s->data->train, sub, ns, F, lab)) != 0) goto done;
        gpp_lda_opts lo;
        gpp_lda_opts_default(&lo);
        int n_kept = 0;
        if ((rc = gpp_lda_utility(F, lab, (int)ns, M, s->classes, &lo, util, order, status,
                                  &n_kept, s->err)) != 0)
            goto done;
        gpp__progress(s, 0.2);
        /* 2. M' on validation data: the classifier restricted to the top M' */
        if ((rc = features(s, P, M, s->val_ds, s->val, s->n_val, Hv, yv)) != 0) goto done;
        int cls = -1;
        for (int id = n - 1; id >= 1 && cls < 0; id--) {
            nn_node_info in;
            nn_net_node(net, id, &in);
            if (in.op == NN_OP_FC && in.inputs[0] == P) cls = id;
        }
        nn_node_info ci;
        nn_net_node(net, cls, &ci);
        char name[NN_TENSOR_NAME_MAX];
        nn_tensor wt, bt;
        snprintf(name, sizeof name, "%s.weight", ci.name);
        nn_net_tensor_find(net, name, &wt);
        snprintf(name, sizeof name, "%s.bias", ci.name);
        int have_b = nn_net_tensor_find(net, name, &bt) == 0;
        probe_ctx pc = {.H = Hv, .y = yv, .n = (int)s->n_val, .M = M, .K = ci.C, .W = wt.data,
                        .b = have_b ? bt.data : NULL, .hm = hm};
        memset(keep, 1, (size_t)M);
        double acc_all = 0, acc_at = 0;
        probe(&pc, keep, M, &acc_all);
        int count = M, probes = 0;
        if ((rc = gpp_lda_choose_count(order, M, n_kept, acc_all, pr->max_accuracy_drop,
                                       GPP_LDA_SEARCH_BINARY, probe, &pc, &count, &acc_at,
                                       &probes, s->err)) != 0)
            goto done;
        memset(keep, 0, (size_t)M);
        for (int k = 0; k < count; k++) keep[order[k]] = 1;
        /* every maker of the pre-decision layer keeps min_channels */
        for (int id = 1; id < n; id++) {
            if (!pmaker[id]) continue;
            for (int pass = 0; pass < 2; pass++) {
                int have = 0;
                for (int k = 0; k < M; k++) {
                    int mk, mc;
                    if (gpp__channel_maker(net, P, order[k] / HW, &mk, &mc) != 0 || mk != id)
                        continue;
                    if (pass == 0) have += keep[order[k]];
                    else if (have < pr->min_channels && !keep[order[k]]) {
                        keep[order[k]] = 1;
                        have++;
                    }
                }
                if (pass == 0 && have >= pr->min_channels) break;
            }
        }
        int kept_now = 0;
        for (int m = 0; m < M; m++) kept_now += keep[m];
        gpp__log(s, "pre-decision LDA: %d of %d neurons ranked (%d dead or duplicate); "
                 "M' = %d on validation (probe accuracy %.4f vs %.4f with all, %d probes)%s",
                 n_kept, M, M - n_kept, count, acc_at, acc_all, probes,
                 kept_now != count ? " (raised to keep every branch)" : "");
        if ((rc = gpp__extra_set(s, "m_prime", cJSON_CreateNumber(kept_now))) != 0 ||
            (rc = gpp__extra_set(s, "predecision_width", cJSON_CreateNumber(M))) != 0 ||
            (rc = gpp__extra_set(s, "keep_fraction", cJSON_CreateNumber((double)kept_now / M))) != 0 ||
            (rc = gpp__extra_set(s, "lda_ranked", cJSON_CreateNumber(n_kept))) != 0 ||
            (rc = gpp__extra_set(s, "probe_accuracy", cJSON_CreateNumber(acc_at))) != 0)
            goto done;
        /* the pre-decision channels that go (a channel stays when any of its
         * neurons stays) */
        for (int ch = 0; ch < pi.C; ch++) {
            int any = 0, mk, mc;
            for (int j = 0; j < HW; j++) any |= keep[ch * HW + j];
            if (any || gpp__channel_maker(net, P, ch, &mk, &mc) != 0 || !gpp__prunable(net, mk))
                continue;
            uint8_t *rm = cut_of(&c, net, mk);
            if (!rm) {
                rc = oom(s->err);
                goto done;
            }
            rm[mc] = 1;
        }
        /* 3. deconvolution tracing of the kept responses */
        if ((rc = gpp__trace_new(net, &tr, s->err)) != 0) goto done;
        for (uint32_t i = 0; i < ns; i += (uint32_t)s->B) {
            if (gpp__cancelled(s)) {
                rc = GPP_EAGAIN;
                goto done;
            }
            int m = ns - i < (uint32_t)s->B ? (int)(ns - i) : s->B;
            gpp__fill_train(s, sub + i, m);
            if ((rc = gpp__trace_add(tr, s->x, m, keep, s->err)) != 0) goto done;
        }
        gpp__progress(s, 0.5);
    } else {
        rnd = NULL;
    }
    /* 4. per-layer thresholds */
    gpp_rng rr;
    gpp_rng_seed(&rr, s->seed ^ RNG_STREAM_RANDOM);
    cJSON *thr = cJSON_CreateArray();
    if ((rc = gpp__extra_set(s, "thresholds", thr)) != 0) goto done;
    for (int id = 1; id < n; id++) {
        if (!gpp__prunable(net, id)) continue;
        if (pr->criterion == GPP_CRITERION_GPP && pmaker[id]) continue;
        nn_node_info in;
        nn_net_node(net, id, &in);
        if (in.C > 65536) continue;
        if (pr->criterion == GPP_CRITERION_GPP) {
            if (gpp__trace_channel_utility(tr, id, u) != 0) continue;
        } else if (pr->criterion == GPP_CRITERION_L1) {
            nn_tensor wt;
            char name[NN_TENSOR_NAME_MAX];
            snprintf(name, sizeof name, "%s.weight", in.name);
            if (nn_net_tensor_find(net, name, &wt) != 0) continue;
            gpp_prune_l1_norms(wt.data, in.C, wt.len / (size_t)in.C, u);
        } else {
            for (int j = 0; j < in.C; j++) u[j] = gpp_rng_uniform(&rr);
        }
        double t = 0;
        int k = 0;
        if ((rc = rule_cut(s, id, u, in.C, eta, &c, &t, &k)) != 0) goto done;
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(thr, o) || !cJSON_AddStringToObject(o, "name", in.name) ||
            !cJSON_AddNumberToObject(o, "threshold", t) || !cJSON_AddNumberToObject(o, "removed", k)) {
            rc = oom(s->err);
            goto done;
        }
        double umin = INFINITY, umax = 0, umean = 0;
        for (int j = 0; j < in.C; j++) {
            umin = u[j] < umin ? u[j] : umin;
            umax = u[j] > umax ? u[j] : umax;
            umean += u[j] / in.C;
        }
        gpp__log(s, "%s: %d of %d channels below %s %.4g (utilities %.3g .. %.3g, mean %.3g)",
                 in.name, k, in.C,
                 pr->threshold == GPP_THRESHOLD_RATIO ? "the ratio cut" : "eta*std =", t, umin,
                 umax, umean);
    }
    if ((rc = gpp__extra_set(s, "eta", cJSON_CreateNumber(eta))) != 0) goto done;
    gpp__progress(s, 0.6);
    if (pr->criterion == GPP_CRITERION_GPP && pr->compare_cut && (rc = compare_cuts(s, &c)) != 0)
        goto done;
    /* 5. surgery and recovery */
    rc = cut_and_recover(s, &c, pr->reconstruct);
    if (rc == 0) gpp__progress(s, 1.0);
done:
    gpp__trace_free(tr);
    cuts_free(&c);
    free(F);
    free(Hv);
    free(hm);
    free(lab);
    free(yv);
    free(order);
    free(util);
    free(u);
    free(status);
    free(keep);
    free(pmaker);
    free(sub);
    free(rnd);
    return rc;
}

/* gpp__baseline_cut: see stage_ctx.h. */
int gpp__baseline_cut(gpp__stage *s, int l1)
{
    nn_net *ref = NULL;
    nn_net *net = s->net;
    int rc = gpp_net_load(s->ctx, s->req->reference, &ref, NULL, s->err);
    if (rc != 0) return rc;
    const int n = nn_net_num_nodes(net);
    cuts c = {.n = n, .rm = calloc((size_t)n, sizeof(uint8_t *))};
    int *count = calloc((size_t)n, sizeof(int));
    gpp_rng rr;
    gpp_rng_seed(&rr, s->seed ^ RNG_STREAM_RANDOM);
    if (!c.rm || !count) {
        rc = oom(s->err);
        goto done;
    }
    if ((rc = gpp__extra_set(s, "layers_before", widths_json(net))) != 0) goto done;
    for (int id = 1; id < n; id++) {
        if (!gpp__prunable(net, id)) continue;
        nn_node_info in, ri;
        nn_net_node(net, id, &in);
        int rid = nn_net_find(ref, in.name);
        if (rid < 1 || nn_net_node(ref, rid, &ri) != 0 || ri.op != in.op) {
            rc = gpp_error_set(s->err, GPP_EINVAL, "invalid_argument", "reference",
                               "the reference has no layer \"%s\" like the baseline's", in.name);
            goto done;
        }
        count[id] = ri.C < in.C ? in.C - ri.C : 0;
    }
    if ((rc = select_counts(net, count, l1, &rr, &c, s->err)) != 0 ||
        (rc = apply_cuts(s, &c)) != 0 || (rc = recalibrate_logged(s)) != 0)
        goto done;
    gpp__log(s, "%s pruning to the reference's widths: %lld params (reference %lld)",
             l1 ? "L1-norm" : "random", nn_net_params(net), nn_net_params(ref));
done:
    free(count);
    cuts_free(&c);
    nn_net_free(ref);
    return rc;
}
