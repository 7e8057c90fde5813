/* The stages through gpp_stage_run on small synthetic data: grow keeps a
 * module that pays and rolls back (bit for bit, marking growth done) one
 * that does not; the prune stage with the ratio rule cuts exactly
 * floor(ratio * C) channels of every layer under each criterion (gpp: the
 * pre-decision layer by LDA instead; l1; random) and writes its widths
 * before and after; the eigen form of the push runs; the l1 / random /
 * scratch baselines land on the reference's widths; bad requests fail
 * cleanly; the distillation gradient matches finite differences;
 * prune.final_finetune_epochs lengthens only the last iteration's
 * fine-tune, and prune.distill reaches every fine-tune step; the
 * cut_compare record matches the baselines cut as their own stages. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpp/ckpt.h"
#include "stage_fixture.h"
#include "stages_internal.h"

/* a small conv net with batch norm and a global average pooling */
static const char *const GAPNET =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c1_bn\"},{\"type\":\"relu\",\"name\":\"c1_relu\"},"
    "{\"type\":\"maxpool\",\"name\":\"p1\",\"k\":2},"
    "{\"type\":\"conv\",\"name\":\"c2\",\"out\":16,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c2_bn\"},{\"type\":\"relu\",\"name\":\"c2_relu\"},"
    "{\"type\":\"global-avgpool\",\"name\":\"gap\"},{\"type\":\"fc\",\"name\":\"fc1\",\"out\":20},"
    "{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"fc\",\"name\":\"fc\",\"out\":4}]";

#define SPEC_FMT                                                                        \
    "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"model\":%s,\"seed\":2,"            \
    "\"train\":{\"epochs\":2,\"batch_size\":16,\"lr\":0.05}%s}"
/* without a train object: the test gives its own */
#define SPEC0_FMT "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"model\":%s,\"seed\":2%s}"
enum { SPEC, SPEC0 };

typedef struct env {
    char *dir;
    gpp_stage_data *d;
} env;

static int setup(void **state)
{
    env *e = sf_alloc(1, sizeof *e);
    e->dir = sf_tmpdir();
    e->d = sf_data(240, 60, 12, 4);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    gpp_stage_data_free(e->d);
    sf_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

static int stage(env *e, int fmt, const char *extra, gpp_stage_kind kind, int index,
                 int iteration, const char *in, const char *out, const char *ref, int budget,
                 cJSON **summary, gpp_error *err)
{
    char text[4096];
    snprintf(text, sizeof text, fmt == SPEC0 ? SPEC0_FMT : SPEC_FMT, GAPNET, extra);
    gpp_jobspec *spec = sf_spec(text);
    char ip[4200], op[4200], rp[4200];
    snprintf(ip, sizeof ip, "%s/%s", e->dir, in ? in : "");
    snprintf(op, sizeof op, "%s/%s", e->dir, out);
    snprintf(rp, sizeof rp, "%s/%s", e->dir, ref ? ref : "");
    gpp_stage_req req = {.spec = spec, .kind = kind, .index = index, .iteration = iteration,
                         .input = in ? ip : NULL, .output = op, .reference = ref ? rp : NULL,
                         .budget_epochs = budget, .data = e->d, .threads = 1};
    int rc = gpp_stage_run(&req, NULL, summary, err);
    gpp_jobspec_free(spec);
    return rc;
}


static int width(const cJSON *summary, const char *key, const char *name)
{
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(summary, key);
    for (const cJSON *l = ls ? ls->child : NULL; l; l = l->next)
        if (strcmp(cJSON_GetObjectItemCaseSensitive(l, "name")->valuestring, name) == 0)
            return (int)cJSON_GetObjectItemCaseSensitive(l, "width")->valuedouble;
    fail_msg("no layer %s in %s", name, key);
    return -1;
}

static int flag(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* The tensors of two checkpoints are the same bits, except those whose name
 * contains `skip` (NULL: none); returns how many were skipped. */
static int same_tensors_but(env *e, const char *a, const char *b, const char *skip)
{
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/%s", e->dir, a);
    snprintf(pb, sizeof pb, "%s/%s", e->dir, b);
    gpp_ckpt *x = NULL, *y = NULL;
    assert_int_equal(gpp_ckpt_read_file(pa, &x, NULL), 0);
    assert_int_equal(gpp_ckpt_read_file(pb, &y, NULL), 0);
    assert_int_equal(gpp_ckpt_tensor_count(x), gpp_ckpt_tensor_count(y));
    int skipped = 0;
    for (size_t i = 0; i < gpp_ckpt_tensor_count(x); i++) {
        const gpp_tensor_view *v = gpp_ckpt_tensor(x, i);
        const gpp_tensor_view *w = gpp_ckpt_find(y, v->name);
        assert_non_null(w);
        assert_int_equal(v->count, w->count);
        if (skip && strstr(v->name, skip)) {
            skipped++;
            continue;
        }
        assert_memory_equal(v->data, w->data, v->count * sizeof(float));
    }
    gpp_ckpt_free(x);
    gpp_ckpt_free(y);
    return skipped;
}

static void same_tensors(env *e, const char *a, const char *b)
{
    same_tensors_but(e, a, b, NULL);
}

static void test_grow_kept_and_rolled_back(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *s0 = NULL, *s1 = NULL, *s2 = NULL;
    /* an untrained start (train.epochs 0) that a module with training improves */
    assert_int_equal(stage(e, SPEC0, ",\"train\":{\"epochs\":0,\"batch_size\":16,\"lr\":0.05},"
                           "\"grow\":{\"enabled\":true,\"epochs\":2,\"min_gain\":0.05}",
                           GPP_STAGE_TRAIN, 0, 0, NULL, "g0.gppm", NULL, 0, &s0, &err), 0);
    assert_int_equal(stage(e, SPEC0, ",\"train\":{\"epochs\":0,\"batch_size\":16,\"lr\":0.05},"
                           "\"grow\":{\"enabled\":true,\"epochs\":2,\"min_gain\":0.05}",
                           GPP_STAGE_GROW, 1, 1, "g0.gppm", "g1.gppm", NULL, 0, &s1, &err), 0);
    printf("grow: val %.4f -> %.4f\n", cJSON_GetObjectItem(s0, "val_accuracy")->valuedouble,
           cJSON_GetObjectItem(s1, "grown_val_accuracy")->valuedouble);
    assert_true(flag(s1, "grow_kept"));
    assert_false(flag(s1, "grow_done"));
    assert_int_equal((int)cJSON_GetObjectItem(s1, "grow_modules")->valuedouble, 1);
    assert_true(cJSON_GetObjectItem(s1, "val_accuracy")->valuedouble >=
                cJSON_GetObjectItem(s0, "val_accuracy")->valuedouble + 0.05);
    assert_int_equal(width(s1, "layers", "grow1_b1"), 4);   /* 16 channels: 4 + 6 + 3 + 3 */
    /* a module that cannot pay (min_gain 1): rolled back, growth done */
    assert_int_equal(stage(e, SPEC, ",\"grow\":{\"enabled\":true,\"epochs\":1,\"min_gain\":1}",
                           GPP_STAGE_GROW, 2, 2, "g1.gppm", "g2.gppm", NULL, 0, &s2, &err), 0);
    assert_false(flag(s2, "grow_kept"));
    assert_true(flag(s2, "grow_done"));
    assert_true(cJSON_GetObjectItem(s2, "params")->valuedouble ==
                cJSON_GetObjectItem(s1, "params")->valuedouble);
    assert_true(cJSON_GetObjectItem(s2, "val_accuracy")->valuedouble ==
                cJSON_GetObjectItem(s1, "val_accuracy")->valuedouble);
    same_tensors(e, "g1.gppm", "g2.gppm");
    cJSON_Delete(s0);
    cJSON_Delete(s1);
    cJSON_Delete(s2);
}

static void test_prune_criteria_ratio(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *s = NULL;
    assert_int_equal(stage(e, SPEC, "", GPP_STAGE_TRAIN, 0, 0, NULL, "t.gppm", NULL, 0, NULL, &err), 0);
    static const char *const crit[3] = {"gpp", "l1", "random"};
    for (int c = 0; c < 3; c++) {
        char extra[256], out[32];
        snprintf(extra, sizeof extra,
                 ",\"prune\":{\"threshold\":\"ratio\",\"ratio\":0.25,\"criterion\":\"%s\","
                 "\"finetune_epochs\":1,\"max_accuracy_drop\":0.05}", crit[c]);
        snprintf(out, sizeof out, "p%d.gppm", c);
        assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PRUNE, 1, 0, "t.gppm", out, NULL, 0, &s, &err), 0);
        assert_int_equal(width(s, "layers_before", "c1"), 8);
        assert_int_equal(width(s, "layers_before", "c2"), 16);
        assert_int_equal(width(s, "layers_before", "fc1"), 20);
        assert_int_equal(width(s, "layers", "c1"), 6);    /* 8 - floor(0.25 * 8) */
        assert_int_equal(width(s, "layers", "c2"), 12);   /* 16 - 4 */
        if (c == 0) {   /* the pre-decision layer: M' from the LDA utility */
            int m = (int)cJSON_GetObjectItem(s, "m_prime")->valuedouble;
            assert_true(m >= 1 && m <= 20);
            assert_int_equal(width(s, "layers", "fc1"), m);
        } else {
            assert_int_equal(width(s, "layers", "fc1"), 15);   /* 20 - 5 */
        }
        assert_int_equal(width(s, "layers", "fc"), 4);   /* never the classifier */
        cJSON_Delete(s);
        s = NULL;
    }
}

static void test_push_eigen(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *s = NULL;
    const char *extra = ",\"push\":{\"epochs\":1,\"separation\":\"eigen\",\"lambda\":1,"
                        "\"alpha\":0.1,\"gamma\":0.1,\"min_per_class\":3}";
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_TRAIN, 0, 0, NULL, "e0.gppm", NULL, 0, NULL, &err), 0);
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PUSH, 1, 0, "e0.gppm", "e1.gppm", NULL, 0, &s, &err), 0);
    double v = cJSON_GetObjectItem(s, "val_accuracy")->valuedouble;
    assert_true(isfinite(v) && v > 0.25);   /* still a classifier */
    cJSON_Delete(s);
}

static void test_baselines_to_reference(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *ref = NULL, *s = NULL;
    const char *extra = ",\"prune\":{\"threshold\":\"ratio\",\"ratio\":0.5,\"finetune_epochs\":0}";
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_TRAIN, 0, 0, NULL, "b0.gppm", NULL, 0, NULL, &err), 0);
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PRUNE, 1, 0, "b0.gppm", "b1.gppm", NULL, 0, &ref, &err), 0);
    static const gpp_stage_kind kinds[3] = {GPP_STAGE_L1, GPP_STAGE_RANDOM, GPP_STAGE_SCRATCH};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(stage(e, SPEC, extra, kinds[k], 2 + k, 0, "b0.gppm", "bx.gppm", "b1.gppm", 1,
                               &s, &err), 0);
        assert_true(cJSON_Compare(cJSON_GetObjectItem(s, "layers"), cJSON_GetObjectItem(ref, "layers"), 1));
        assert_true(cJSON_GetObjectItem(s, "params")->valuedouble ==
                    cJSON_GetObjectItem(ref, "params")->valuedouble);
        cJSON_Delete(s);
        s = NULL;
    }
    /* a baseline without its reference, a push without input: refused */
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_L1, 5, 0, "b0.gppm", "bx.gppm", NULL, 1, NULL, &err),
                     GPP_EINVAL);
    assert_string_equal(err.field, "reference");
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PUSH, 5, 0, NULL, "bx.gppm", NULL, 0, NULL, &err),
                     GPP_EINVAL);
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PUSH, 5, 0, "missing.gppm", "bx.gppm", NULL, 0,
                           NULL, &err), GPP_ENOTFOUND);
    cJSON_Delete(ref);
}

/* The distillation term's gradient against central differences of its
 * value; zero (value and gradient) when the student's logits are the
 * teacher's shifted by a constant per sample. */
static void test_distill_grad_fd(void **state)
{
    (void)state;
    enum { M = 3, K = 5 };
    float zs[M * K], zt[M * K], dz[M * K], dummy[M * K];
    for (int i = 0; i < M * K; i++) {
        zs[i] = (float)sin(1.3 * i + 0.2) * 2.0f;
        zt[i] = (float)cos(0.7 * i - 0.4) * 3.0f;
    }
    const double w = 0.7, T = 2.5;
    double v = gpp__distill_grad(zs, zt, M, K, w, T, dz);
    assert_true(v > 0.0);
    for (int i = 0; i < M * K; i++) {
        const float h = 1.0f / 64.0f;   /* exact in float */
        float keep = zs[i];
        zs[i] = keep + h;
        double up = gpp__distill_grad(zs, zt, M, K, w, T, dummy);
        zs[i] = keep - h;
        double dn = gpp__distill_grad(zs, zt, M, K, w, T, dummy);
        zs[i] = keep;
        double fd = (up - dn) / (2.0 * h);
        if (fabs(fd - dz[i]) > 1e-4 + 1e-3 * fabs(fd))
            fail_msg("dZ[%d] = %g, finite differences %g", i, dz[i], fd);
    }
    for (int n = 0; n < M; n++)
        for (int k = 0; k < K; k++) zs[n * K + k] = zt[n * K + k] + (float)n;
    v = gpp__distill_grad(zs, zt, M, K, w, T, dz);
    assert_true(fabs(v) < 1e-6);
    for (int i = 0; i < M * K; i++) assert_true(fabsf(dz[i]) < 1e-6f);
}

/* Counts the fine-tune steps and the distillation values a stage reports. */
typedef struct tune_count {
    long long steps, distill, bad;
} tune_count;

static void count_metric(void *user, const gpp_metric *m)
{
    tune_count *c = user;
    if (m->evaluation || strcmp(m->phase, "finetune") != 0) return;
    c->steps++;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->names[i], "distill") == 0) {
            c->distill++;
            c->bad += !(isfinite(m->values[i]) && m->values[i] >= 0.0);
        }
}

static int stage_io(env *e, const char *extra, gpp_stage_kind kind, int index, int iteration,
                    const char *in, const char *out, const char *ref, int budget, cJSON **summary,
                    tune_count *c, gpp_error *err)
{
    char text[4096];
    snprintf(text, sizeof text, SPEC_FMT, GAPNET, extra);
    gpp_jobspec *spec = sf_spec(text);
    char ip[4200], op[4200], rp[4200];
    snprintf(ip, sizeof ip, "%s/%s", e->dir, in);
    snprintf(op, sizeof op, "%s/%s", e->dir, out);
    snprintf(rp, sizeof rp, "%s/%s", e->dir, ref ? ref : "");
    gpp_stage_req req = {.spec = spec, .kind = kind, .index = index, .iteration = iteration,
                         .input = ip, .output = op, .reference = ref ? rp : NULL,
                         .budget_epochs = budget, .data = e->d, .threads = 1};
    gpp_stage_io io = {.user = c, .metric = count_metric};
    memset(c, 0, sizeof *c);
    int rc = gpp_stage_run(&req, &io, summary, err);
    gpp_jobspec_free(spec);
    return rc;
}

/* prune.final_finetune_epochs lengthens only the last iteration's
 * fine-tune (and the summary says how long it was); prune.distill adds a
 * finite, non-negative distillation term to every fine-tune step, the
 * baselines' included, and none without it. */
static void test_final_finetune_and_distill(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *s = NULL;
    tune_count c;
    const char *plain = ",\"iterations\":2,\"prune\":{\"ratio\":0.25,\"finetune_epochs\":1,"
                        "\"final_finetune_epochs\":2,\"max_accuracy_drop\":0.05}";
    const char *kd = ",\"iterations\":2,\"prune\":{\"ratio\":0.25,\"finetune_epochs\":1,"
                     "\"final_finetune_epochs\":2,\"max_accuracy_drop\":0.05,\"distill\":1,"
                     "\"distill_temperature\":3}";
    assert_int_equal(stage(e, SPEC, plain, GPP_STAGE_TRAIN, 0, 0, NULL, "f0.gppm", NULL, 0, NULL, &err), 0);
    /* iteration 0 of 2: finetune_epochs only */
    assert_int_equal(stage_io(e, plain, GPP_STAGE_PRUNE, 1, 0, "f0.gppm", "f1.gppm", NULL, 0, &s, &c, &err), 0);
    assert_int_equal((int)cJSON_GetObjectItem(s, "finetune_epochs")->valuedouble, 1);
    long long one_epoch = c.steps;
    assert_true(one_epoch > 0);
    assert_int_equal(c.distill, 0);
    cJSON_Delete(s);
    /* the last iteration: 1 + 2 epochs, one learning-rate cycle */
    assert_int_equal(stage_io(e, plain, GPP_STAGE_PRUNE, 2, 1, "f1.gppm", "f2.gppm", NULL, 0, &s, &c, &err), 0);
    assert_int_equal((int)cJSON_GetObjectItem(s, "finetune_epochs")->valuedouble, 3);
    assert_true(c.steps == 3 * one_epoch);
    cJSON_Delete(s);
    /* distillation from the unpruned input */
    assert_int_equal(stage_io(e, kd, GPP_STAGE_PRUNE, 1, 0, "f0.gppm", "k1.gppm", NULL, 0, &s, &c, &err), 0);
    assert_true(c.steps == one_epoch);
    assert_true(c.distill == c.steps);
    assert_int_equal(c.bad, 0);
    double v = cJSON_GetObjectItem(s, "val_accuracy")->valuedouble;
    assert_true(isfinite(v) && v > 0.25);
    cJSON_Delete(s);
    /* ... and for the l1 baseline, from the unpruned baseline */
    assert_int_equal(stage_io(e, kd, GPP_STAGE_L1, 3, 0, "f0.gppm", "k2.gppm", "k1.gppm", 1, NULL, &c, &err), 0);
    assert_true(c.steps == one_epoch && c.distill == c.steps);
    assert_int_equal(c.bad, 0);
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number %s", key);
    return v->valuedouble;
}

/* prune.compare_cut: GPP's cut, as recorded, is the prune stage's net before
 * any training (fine-tune 0: the stage's own val/test); the L1 entry is the
 * L1 baseline cut to the prune's widths, and the first random draw the
 * random baseline's, each run as its own stage with no training.  With
 * compare_cut false nothing is recorded, and the result is the same net. */
static void test_cut_compare(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *p = NULL, *b = NULL, *q = NULL;
    const char *extra = ",\"prune\":{\"threshold\":\"ratio\",\"ratio\":0.4,"
                        "\"finetune_epochs\":0,\"final_finetune_epochs\":0,"
                        "\"max_accuracy_drop\":0.05}";
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_TRAIN, 0, 0, NULL, "k0.gppm", NULL, 0, NULL, &err), 0);
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_PRUNE, 1, 0, "k0.gppm", "k1.gppm", NULL, 0, &p, &err), 0);
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(p, "cut_compare");
    assert_non_null(cc);
    assert_true(num(cc, "gpp_val") == num(p, "val_accuracy"));
    assert_true(num(cc, "gpp_test") == num(p, "test_accuracy"));
    /* the same stage index gives the baselines the prune's random stream */
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_L1, 1, 0, "k0.gppm", "k2.gppm", "k1.gppm", 0, &b, &err), 0);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(b, "layers"), cJSON_GetObjectItem(p, "layers"), 1));
    assert_true(num(cc, "l1_val") == num(b, "val_accuracy"));
    assert_true(num(cc, "l1_test") == num(b, "test_accuracy"));
    cJSON_Delete(b);
    assert_int_equal(stage(e, SPEC, extra, GPP_STAGE_RANDOM, 1, 0, "k0.gppm", "k2.gppm", "k1.gppm", 0, &b, &err), 0);
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(cc, "random_val_draws");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(cc, "random_test_draws");
    assert_int_equal(cJSON_GetArraySize(dv), 3);
    assert_int_equal(cJSON_GetArraySize(dt), 3);
    assert_true(cJSON_GetArrayItem(dv, 0)->valuedouble == num(b, "val_accuracy"));
    assert_true(cJSON_GetArrayItem(dt, 0)->valuedouble == num(b, "test_accuracy"));
    double m = 0;
    for (int k = 0; k < 3; k++) m += cJSON_GetArrayItem(dt, k)->valuedouble / 3;
    assert_true(fabs(m - num(cc, "random_test")) < 1e-12);
    cJSON_Delete(b);
    /* off: not recorded, the same cut */
    char off[512];
    snprintf(off, sizeof off, "%.*s,\"compare_cut\":false}", (int)strlen(extra) - 1, extra);
    assert_int_equal(stage(e, SPEC, off, GPP_STAGE_PRUNE, 1, 0, "k0.gppm", "k3.gppm", NULL, 0, &q, &err), 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(q, "cut_compare"));
    assert_true(num(q, "val_accuracy") == num(p, "val_accuracy"));
    same_tensors(e, "k1.gppm", "k3.gppm");
    cJSON_Delete(q);
    cJSON_Delete(p);
}

/* c2_bn's running mean in checkpoint `name`, and the mean of c2's output
 * over the training split under that checkpoint's weights. */
static void c2_means(env *e, const char *name, double have[16], double want[16])
{
    gpp_error err = {0};
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", e->dir, name);
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    nn_net *net = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &net, NULL, &err), 0);
    nn_tensor rm;
    assert_int_equal(nn_net_tensor_find(net, "c2_bn.running_mean", &rm), 0);
    const int C = (int)rm.len, id = nn_net_find(net, "c2");
    assert_true(C <= 16 && id > 0);
    for (int c = 0; c < C; c++) have[c] = rm.data[c];
    nn_node_info in;
    nn_net_node(net, id, &in);
    const gpp_data_split *sl = e->d->split;
    float *x = malloc(sizeof(float) * 16 * 144);
    assert_int_equal(nn_net_reserve(net, 16, &err), 0);
    for (int c = 0; c < C; c++) want[c] = 0;
    for (uint32_t i = 0; i < sl->n_train; i += 16) {
        int m = sl->n_train - i < 16 ? (int)(sl->n_train - i) : 16;
        gpp_data_fill(x, NULL, e->d->train, sl->train + i, (uint32_t)m, &e->d->norm,
                      GPP_DATA_AUG_NONE, NULL);
        /* a training forward: the conv's own output (evaluation folds the bn in) */
        assert_int_equal(nn_net_forward(net, x, NULL, m, 1, NULL, &err), 0);
        const float *o = nn_net_output(net, id);
        const int HW = in.H * in.W;
        for (int k = 0; k < m; k++)
            for (int c = 0; c < C; c++)
                for (int p = 0; p < HW; p++)
                    want[c] += o[((size_t)k * C + c) * HW + p] / ((double)sl->n_train * HW);
    }
    free(x);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* prune.bn_recalibrate: after the cut every batch norm's running
 * statistics are re-estimated on training images -- with more asked for
 * than the training split has, all of it, so c2_bn's running mean is the
 * mean of c2's output over the split, which the statistics the cut left are
 * not.  The weights are the same bits with it or without it (0: off), and
 * the summary says how many images it used. */
static void test_bn_recalibrate(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *p = NULL, *q = NULL;
    const char *on = ",\"prune\":{\"ratio\":0.4,\"finetune_epochs\":0,\"final_finetune_epochs\":0,"
                     "\"max_accuracy_drop\":0.05,\"compare_cut\":false}";
    const char *off = ",\"prune\":{\"ratio\":0.4,\"finetune_epochs\":0,\"final_finetune_epochs\":0,"
                      "\"max_accuracy_drop\":0.05,\"compare_cut\":false,\"bn_recalibrate\":0}";
    assert_int_equal(stage(e, SPEC, on, GPP_STAGE_TRAIN, 0, 0, NULL, "b0.gppm", NULL, 0, NULL, &err), 0);
    assert_int_equal(stage(e, SPEC, on, GPP_STAGE_PRUNE, 1, 0, "b0.gppm", "b1.gppm", NULL, 0, &p, &err), 0);
    assert_int_equal(stage(e, SPEC, off, GPP_STAGE_PRUNE, 1, 0, "b0.gppm", "b2.gppm", NULL, 0, &q, &err), 0);
    assert_int_equal((int)num(p, "bn_recalibrated"), (int)e->d->split->n_train);
    assert_int_equal((int)num(q, "bn_recalibrated"), 0);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(p, "layers"), cJSON_GetObjectItem(q, "layers"), 1));
    double h1[16], w1[16], h2[16], w2[16];
    c2_means(e, "b1.gppm", h1, w1);
    c2_means(e, "b2.gppm", h2, w2);
    int C = width(p, "layers", "c2");
    double off_err = 0;
    for (int c = 0; c < C; c++) {
        assert_float_equal(w1[c], w2[c], 1e-9);      /* the same weights */
        assert_float_equal(h1[c], w1[c], 1e-4 * (1 + fabs(w1[c])));
        off_err += fabs(h2[c] - w2[c]);
    }
    printf("c2_bn running mean vs the data's: recalibrated exact, left by the cut off by %.4g in all\n",
           off_err);
    assert_true(off_err > 1e-2);
    /* every tensor but the statistics is the same bits */
    assert_int_equal(same_tensors_but(e, "b1.gppm", "b2.gppm", ".running_"), 4);
    cJSON_Delete(p);
    cJSON_Delete(q);
}

/* The meta of checkpoint `name`, parsed (the caller deletes it). */
static cJSON *meta_of(env *e, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", e->dir, name);
    gpp_ckpt *ck = NULL;
    assert_int_equal(gpp_ckpt_read_file(path, &ck, NULL), 0);
    cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
    gpp_ckpt_free(ck);
    assert_non_null(doc);
    cJSON *meta = cJSON_DetachItemFromObjectCaseSensitive(doc, "meta");
    cJSON_Delete(doc);
    assert_non_null(meta);
    return meta;
}

/* `in` again as `out`, its meta saying the baseline validated at `v`. */
static void with_baseline_val(env *e, const char *in, const char *out, double v)
{
    gpp_error err = {0};
    char ip[4200], op[4200];
    snprintf(ip, sizeof ip, "%s/%s", e->dir, in);
    snprintf(op, sizeof op, "%s/%s", e->dir, out);
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    nn_net *net = NULL;
    cJSON *doc = NULL;
    assert_int_equal(gpp_net_load(ctx, ip, &net, &doc, &err), 0);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "baseline_val_accuracy");
    cJSON_AddNumberToObject(meta, "baseline_val_accuracy", v);
    assert_int_equal(gpp_net_save(net, op, meta, NULL, 0, &err), 0);
    cJSON_Delete(doc);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

static int has(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key) != NULL;
}

/* Counts a stage's fine-tune and recover steps; cancels the stage once
 * `cancel_at` recover steps ran (0: never). */
typedef struct recover_io {
    long long tune, recover, cancel_at;
    atomic_int flag;
} recover_io;

static void recover_metric(void *user, const gpp_metric *m)
{
    recover_io *c = user;
    if (m->evaluation) return;
    if (strcmp(m->phase, "finetune") == 0) c->tune++;
    if (strcmp(m->phase, "recover") == 0 && ++c->recover == c->cancel_at) atomic_store(&c->flag, 1);
}

static int prune_recover(env *e, const char *extra, int iteration, const char *in,
                         const char *out, const char *partial, cJSON **summary, recover_io *c,
                         gpp_error *err)
{
    char text[4096], ip[4200], op[4200], pp[4200];
    snprintf(text, sizeof text, SPEC_FMT, GAPNET, extra);
    gpp_jobspec *spec = sf_spec(text);
    snprintf(ip, sizeof ip, "%s/%s", e->dir, in);
    snprintf(op, sizeof op, "%s/%s", e->dir, out);
    snprintf(pp, sizeof pp, "%s/%s", e->dir, partial ? partial : "");
    gpp_stage_req req = {.spec = spec, .kind = GPP_STAGE_PRUNE, .index = 1,
                         .iteration = iteration, .input = ip, .output = op,
                         .partial = partial ? pp : NULL, .data = e->d, .threads = 1};
    gpp_stage_io io = {.user = c, .metric = recover_metric, .cancel = &c->flag};
    c->tune = c->recover = 0;
    atomic_store(&c->flag, 0);
    int rc = gpp_stage_run(&req, &io, summary, err);
    gpp_jobspec_free(spec);
    return rc;
}

/* stop.recover_epochs: the baseline's validation accuracy travels in every
 * checkpoint's meta after the train stage; a prune (not the last) whose
 * validation accuracy after its fine-tune is below the stop rule's bound
 * (that minus stop.max_accuracy_drop) trains stop.recover_epochs more
 * (phase "recover") and reports what that gives; the summary says so
 * (recover_epochs, val_before_recover) and counts them in finetune_epochs
 * (the baselines' budget).  Not with 0, not within the bound, not for the
 * last iteration's prune, not without a fine-tune.  Cancelled inside the
 * recover phase and resumed, it writes the same bytes. */
static void test_recover_to_bound(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    cJSON *s = NULL;
    recover_io c = {0};
    char x[512];
#define RECOVER_SPEC(drop, n, ft)                                                          \
    (snprintf(x, sizeof x,                                                                 \
              ",\"iterations\":3,\"prune\":{\"ratio\":0.4,\"finetune_epochs\":%d,"          \
              "\"final_finetune_epochs\":2,\"compare_cut\":false,\"lr\":0.02},"             \
              "\"stop\":{\"max_accuracy_drop\":%g,\"recover_epochs\":%d}",                  \
              ft, drop, n),                                                                \
     x)
    assert_int_equal(stage(e, SPEC, RECOVER_SPEC(0.0, 2, 1), GPP_STAGE_TRAIN, 0, 0, NULL, "r0.gppm",
                           NULL, 0, &s, &err), 0);
    const double base = num(s, "val_accuracy");
    cJSON_Delete(s);
    cJSON *meta = meta_of(e, "r0.gppm");
    assert_true(num(meta, "baseline_val_accuracy") == base);
    cJSON_Delete(meta);
    /* a bound out of reach: one fine-tune epoch, then two more */
    with_baseline_val(e, "r0.gppm", "rh.gppm", 2.0);
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 2, 1), 0, "rh.gppm", "r1.gppm", NULL, &s,
                                   &c, &err), 0);
    const long long one = c.tune;
    assert_true(one > 0 && c.recover == 2 * one);
    assert_int_equal((int)num(s, "recover_epochs"), 2);
    assert_int_equal((int)num(s, "finetune_epochs"), 3);
    const double v0 = num(s, "val_before_recover"), v2 = num(s, "val_accuracy");
    cJSON *straight = s;
    meta = meta_of(e, "r1.gppm");
    assert_true(num(meta, "baseline_val_accuracy") == 2.0);   /* passed on */
    cJSON_Delete(meta);
    printf("validation: %.4f after the fine-tune, %.4f after two more epochs\n", v0, v2);
    /* recover_epochs 0: the fine-tune alone, the same epoch */
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 0, 1), 0, "rh.gppm", "r2.gppm", NULL, &s,
                                   &c, &err), 0);
    assert_true(c.tune == one && c.recover == 0);
    assert_false(has(s, "recover_epochs"));
    assert_int_equal((int)num(s, "finetune_epochs"), 1);
    assert_true(num(s, "val_accuracy") == v0);
    cJSON_Delete(s);
    /* within the bound: nothing more (the bound just at what the fine-tune
     * reaches; a hair above it recovers) */
    with_baseline_val(e, "r0.gppm", "rb.gppm", v0 + 0.25);
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.25, 3, 1), 0, "rb.gppm", "r3.gppm", NULL, &s,
                                   &c, &err), 0);
    assert_true(c.tune == one && c.recover == 0);
    assert_false(has(s, "recover_epochs"));
    cJSON_Delete(s);
    with_baseline_val(e, "r0.gppm", "rc.gppm", v0 + 0.2501);
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.25, 1, 1), 0, "rc.gppm", "r4.gppm", NULL, &s,
                                   &c, &err), 0);
    assert_true(c.tune == one && c.recover == one);
    cJSON_Delete(s);
    /* the last iteration's prune holds the final recovery: not recovered */
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 3, 1), 2, "rh.gppm", "r5.gppm", NULL, &s,
                                   &c, &err), 0);
    assert_true(c.tune == 3 * one && c.recover == 0);
    assert_false(has(s, "recover_epochs"));
    cJSON_Delete(s);
    /* no fine-tune asked for: none given */
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 3, 0), 0, "rh.gppm", "r6.gppm", NULL, &s,
                                   &c, &err), 0);
    assert_true(c.tune == 0 && c.recover == 0);
    assert_false(has(s, "recover_epochs"));
    cJSON_Delete(s);
    /* cancelled in the second recover epoch, resumed from the partial
     * checkpoint: the same bytes as the straight run */
    c.cancel_at = one + 1;
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 2, 1), 0, "rh.gppm", "r7.gppm", "r7.part",
                                   NULL, &c, &err), GPP_EAGAIN);
    char pp[4200];
    snprintf(pp, sizeof pp, "%s/r7.part", e->dir);
    assert_int_equal(access(pp, R_OK), 0);
    c.cancel_at = 0;
    assert_int_equal(prune_recover(e, RECOVER_SPEC(0.0, 2, 1), 0, "rh.gppm", "r7.gppm", "r7.part",
                                   &s, &c, &err), 0);
    assert_true(c.tune == 0 && c.recover == one);   /* only the second recover epoch ran */
    assert_true(cJSON_Compare(s, straight, 1));
    cJSON_Delete(s);
    cJSON_Delete(straight);
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/r1.gppm", e->dir);
    snprintf(b, sizeof b, "%s/r7.gppm", e->dir);
    size_t la, lb;
    unsigned char *ba = sf_read(a, &la), *bb = sf_read(b, &lb);
    assert_true(ba && bb && la == lb);
    assert_memory_equal(ba, bb, la);
    free(ba);
    free(bb);
#undef RECOVER_SPEC
}

/* Keeps whether a log line contained `want`. */
typedef struct log_seen {
    const char *want;
    int seen;
    char line[512];
} log_seen;

static void seen_log(void *user, const char *line)
{
    log_seen *l = user;
    if (strstr(line, l->want)) {
        l->seen++;
        snprintf(l->line, sizeof l->line, "%s", line);
    }
}

/* The train stage says when the validation set is too small for the stop
 * rule's bound (one accuracy's standard error above it), with the numbers;
 * not when the bound is wide enough (also just above the error: 1.2 times
 * it, measured on the first run, whose accuracy every run repeats), nor for
 * a job with no prunes. */
static void test_noisy_bound_hint(void **state)
{
    env *e = *state;
    char extra[4][96] = {",\"stop\":{\"max_accuracy_drop\":0.01}",
                         ",\"stop\":{\"max_accuracy_drop\":0.9}",
                         ",\"iterations\":0", ""};
    double se0 = 0, v0 = -1;
    for (int k = 0; k < 4; k++) {
        char text[4096], op[4200];
        if (k == 3)   /* a bound a little above the first run's error */
            snprintf(extra[3], sizeof extra[3], ",\"stop\":{\"max_accuracy_drop\":%.6f}",
                     1.2 * se0);
        snprintf(text, sizeof text, SPEC_FMT, GAPNET, extra[k]);
        gpp_jobspec *spec = sf_spec(text);
        snprintf(op, sizeof op, "%s/h%d.gppm", e->dir, k);
        gpp_stage_req req = {.spec = spec, .kind = GPP_STAGE_TRAIN, .output = op, .data = e->d,
                             .threads = 1};
        log_seen l = {.want = "standard error"};
        gpp_stage_io io = {.user = &l, .log = seen_log};
        gpp_error err = {0};
        cJSON *s = NULL;
        assert_int_equal(gpp_stage_run(&req, &io, &s, &err), 0);
        if (k == 0) {
            const double v = num(s, "val_accuracy"), n = e->d->split->n_val;
            char want[160];
            se0 = sqrt(v * (1 - v) / n);
            v0 = v;
            snprintf(want, sizeof want, "%u validation images: an accuracy near %.4f has a "
                     "standard error of about %.4f", e->d->split->n_val, v, se0);
            assert_int_equal(l.seen, 1);
            assert_non_null(strstr(l.line, want));
            assert_true(se0 > 0.01 && 1.2 * se0 < 0.9);
        } else {
            if (k == 3) assert_true(num(s, "val_accuracy") == v0);   /* the same error */
            assert_int_equal(l.seen, 0);
        }
        cJSON_Delete(s);
        gpp_jobspec_free(spec);
    }
}

/* A learning rate that blows the loss up stops the train stage with
 * "diverged" naming train.lr (the loss is read one step late, and still
 * caught), and writes no checkpoint. */
static void test_diverged(void **state)
{
    env *e = *state;
    gpp_error err = {0};
    char text[2048], out[4200];
    snprintf(text, sizeof text, SPEC0_FMT,
             "[{\"type\":\"flatten\",\"name\":\"fl\"},{\"type\":\"fc\",\"name\":\"fc1\","
             "\"out\":32},{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"fc\",\"name\":\"fc\","
             "\"out\":4}]",
             ",\"train\":{\"epochs\":30,\"batch_size\":16,\"lr\":10,\"momentum\":0.99,\"weight_decay\":0,\"schedule\":\"constant\"}");
    gpp_jobspec *spec = sf_spec(text);
    snprintf(out, sizeof out, "%s/dv.gppm", e->dir);
    gpp_stage_req req = {.spec = spec, .kind = GPP_STAGE_TRAIN, .output = out, .data = e->d,
                         .threads = 1};
    int rc = gpp_stage_run(&req, NULL, NULL, &err);
    gpp_jobspec_free(spec);
    assert_int_not_equal(rc, 0);
    assert_string_equal(err.code, "diverged");
    assert_string_equal(err.field, "train.lr");
    assert_non_null(strstr(err.message, "the loss is"));
    assert_int_not_equal(access(out, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_grow_kept_and_rolled_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_criteria_ratio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_eigen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_baselines_to_reference, setup, teardown),
        cmocka_unit_test(test_distill_grad_fd),
        cmocka_unit_test_setup_teardown(test_final_finetune_and_distill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_compare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bn_recalibrate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diverged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_to_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noisy_bound_hint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
