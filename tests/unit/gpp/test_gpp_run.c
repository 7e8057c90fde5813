/* End to end (suite integration): `gpp-worker run` (gpp_run_main) on a small
 * Fashion-MNIST subset (2000 training / 1000 test images, 1 epoch, 2
 * iterations, --schedule-baselines) finishes, shrinks the network, and writes
 * summary.json with the keys ARCHITECTURE.md names, metrics.jsonl with one
 * object per iteration and per evaluation, and a checkpoint per stage;
 * --resume after stage 2 gives the same checkpoints byte for byte; a
 * second run into a used folder without --resume is refused; the last
 * prune holds the final recovery and the baselines' budgets count it; the
 * same-schedule L1 / random chains end at size-first's widths; each prune
 * records cut_compare; --baselines=LIST runs only the baselines named.
 * The data set comes from /usr/share/datasets/fashion-mnist (package
 * dataset-fashion-mnist) or $GPP_DATASETS_DIR. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "gpp/ckpt.h"
#include "gpp/sha256.h"
#include "stage_fixture.h"

static const char *const JOB =
    "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1},"
    "\"iterations\":2,\"data\":{\"train_limit\":2000,\"test_limit\":1000}}\n";

static int run(char *job, char *out, int resume)
{
    char *argv[8] = {"run", job, "--out", out, "--threads", "2", "--schedule-baselines", NULL};
    int argc = 7;
    if (resume) argv[argc++] = "--resume";
    return gpp_run_main(argc, argv);
}

static cJSON *read_json(const char *path)
{
    size_t len;
    unsigned char *t = sf_read(path, &len);
    assert_non_null(t);
    cJSON *j = cJSON_Parse((const char *)t);
    free(t);
    assert_non_null(j);
    return j;
}

/* Every record of OUT/metrics.jsonl, parsed (each line must parse), as a
 * cJSON array; the caller deletes it. */
static cJSON *read_metrics(const char *out)
{
    char p[4300], line[4096];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    cJSON *all = cJSON_CreateArray();
    assert_non_null(all);
    while (fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        cJSON_AddItemToArray(all, j);
    }
    fclose(f);
    return all;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("\"%s\" is not a number", key);
    return v->valuedouble;
}

/* A model object of summary.json: the keys and their ranges. */
static void check_model(const cJSON *m)
{
    assert_true(cJSON_IsObject(m));
    double p = num(m, "params"), f = num(m, "flops"), macs = num(m, "macs");
    assert_true(p > 0 && f > 0);
    assert_true(f == 2 * macs);
    for (int k = 0; k < 2; k++) {
        double a = num(m, k ? "test_accuracy" : "val_accuracy");
        assert_true(a >= 0.0 && a <= 1.0);
    }
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(m, "layers");
    assert_true(cJSON_IsArray(layers) && cJSON_GetArraySize(layers) == 4);   /* lenet5 */
    for (const cJSON *l = layers->child; l; l = l->next) {
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(l, "name")));
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l, "kind"));
        assert_true(kind && (strcmp(kind, "conv") == 0 || strcmp(kind, "fc") == 0));
        assert_true(num(l, "width") >= 1);
    }
}

static void same_widths(const cJSON *a, const cJSON *b)
{
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(a, "layers");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(b, "layers");
    assert_true(cJSON_Compare(la, lb, 1));
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    unsigned char *b = sf_read(from, &len);
    assert_non_null(b);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
    free(b);
}

static const char *const FILES[8] = {
    "stage-00-train.gppm", "stage-01-push.gppm", "stage-02-prune.gppm", "stage-03-push.gppm",
    "stage-04-prune.gppm", "stage-05-l1.gppm", "stage-06-random.gppm", "stage-07-scratch.gppm",
};

/* Stage k's checkpoint: FILES, then the schedule chains (`steps` L1
 * steps, then `steps` random steps). */
static void file_name(char *buf, size_t cap, int k, int steps)
{
    if (k < 8) snprintf(buf, cap, "%s", FILES[k]);
    else snprintf(buf, cap, "stage-%02d-%s.gppm", k, k < 8 + steps ? "l1" : "random");
}

static void test_end_to_end(void **state)
{
    (void)state;
    char *dir = sf_tmpdir();
    char job[4200], a[4200], b[4200], p[4300], q[4300];
    snprintf(job, sizeof job, "%s/job.json", dir);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    FILE *f = fopen(job, "w");
    assert_non_null(f);
    fputs(JOB, f);
    fclose(f);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(run(job, a, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("end-to-end job: %.1f s\n", secs);

    /* summary.json */
    snprintf(p, sizeof p, "%s/summary.json", a);
    cJSON *sum = read_json(p);
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(sum, "baseline");
    const cJSON *af = cJSON_GetObjectItemCaseSensitive(sum, "accuracy_first");
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(sum, "size_first");
    check_model(base);
    check_model(af);
    check_model(sf);
    assert_true(num(sf, "params") < num(base, "params"));   /* it shrinks */
    assert_true(num(af, "params") < num(base, "params"));
    assert_true(num(sf, "val_accuracy") >= num(base, "val_accuracy") - 0.01 - 1e-9 ||
                num(sf, "params") == num(af, "params"));
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(sum, "stages");
    assert_int_equal(cJSON_GetArraySize(stages), 5);
    static const char *const kinds[5] = {"train", "push", "prune", "push", "prune"};
    int i = 0;
    for (const cJSON *s = stages->child; s; s = s->next, i++) {
        check_model(s);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "stage")), kinds[i]);
        assert_int_equal((int)num(s, "index"), i);
    }
    const cJSON *pr = cJSON_GetArrayItem(stages, 2);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(pr, "layers_before")));
    assert_true(num(pr, "m_prime") >= 1 && num(pr, "m_prime") <= 500);
    /* prune.compare_cut (on by default): each prune records the accuracy of
     * its own cut and of L1 / random cuts to the same widths */
    for (int k = 2; k <= 4; k += 2) {
        const cJSON *cc = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(stages, k), "cut_compare");
        static const char *const ck[6] = {"gpp_val", "gpp_test", "l1_val", "l1_test", "random_val",
                                          "random_test"};
        for (int j = 0; j < 6; j++) assert_true(num(cc, ck[j]) >= 0 && num(cc, ck[j]) <= 1);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cc, "random_test_draws")), 3);
    }
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(sum, "baselines");
    static const char *const bk[3] = {"l1", "random", "scratch"};
    for (int k = 0; k < 3; k++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(bl, bk[k]);
        check_model(m);
        same_widths(m, sf);   /* the baselines run at GPP's widths */
        assert_true(num(m, "params") == num(sf, "params"));
    }
    /* the final recovery: the last prune fine-tunes finetune_epochs (1) +
     * final_finetune_epochs (9), the first only 1; the one-shot baselines'
     * budget is every epoch GPP trained after the baseline (push 1 + 1 and
     * the fine-tunes 1 + 10), scratch's adds the baseline's training (1) */
    const cJSON *p1 = cJSON_GetArrayItem(stages, 2), *p2 = cJSON_GetArrayItem(stages, 4);
    assert_int_equal((int)num(p1, "finetune_epochs"), 1);
    assert_int_equal((int)num(p2, "finetune_epochs"), 10);
    assert_int_equal((int)num(cJSON_GetObjectItemCaseSensitive(bl, "l1"), "budget_epochs"), 13);
    assert_int_equal((int)num(cJSON_GetObjectItemCaseSensitive(bl, "random"), "budget_epochs"), 13);
    assert_int_equal((int)num(cJSON_GetObjectItemCaseSensitive(bl, "scratch"), "budget_epochs"), 14);
    /* --schedule-baselines: L1 and random on GPP's schedule end at
     * size-first's widths after one step at the baseline's widths (the first
     * push's epoch) and one per GPP prune up to size-first, the last step
     * trained as long as GPP's last fine-tune */
    int sf_iter = (int)num(sf, "iteration") + 2;
    static const char *const sk[2] = {"l1_schedule", "random_schedule"};
    for (int k = 0; k < 2; k++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(bl, sk[k]);
        check_model(m);
        same_widths(m, sf);
        assert_true(num(m, "params") == num(sf, "params"));
        assert_int_equal((int)num(m, "iteration"), sf_iter);
        assert_int_equal((int)num(m, "budget_epochs"), (int)num(sf, "finetune_epochs"));
    }

    /* metrics.jsonl */
    cJSON *recs = read_metrics(a);
    const cJSON *j;
    int iters = 0, evals = 0, push_iters = 0;
    int last_stage = -1;
    long long last_iter = 0;
    cJSON_ArrayForEach(j, recs) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
        assert_non_null(type);
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "stage")));
        num(j, "stage_index");
        num(j, "iteration");
        if (strcmp(type, "iteration") == 0) {
            /* each stage's steps once, in order, none left out (plain steps
             * are written one step late: nn_net_stats_queue) */
            int st = (int)num(j, "stage_index");
            long long it = (long long)num(j, "iteration");
            if (st != last_stage) {
                assert_true(st > last_stage);
                last_stage = st;
                last_iter = it - 1;
            }
            assert_int_equal(it, last_iter + 1);
            last_iter = it;
            iters++;
            num(j, "loss");
            num(j, "ce");
            num(j, "lr");
            num(j, "images_per_s");
            double acc = num(j, "batch_accuracy");
            assert_true(acc >= 0 && acc <= 1);
            if (cJSON_GetObjectItemCaseSensitive(j, "sep")) {
                push_iters++;
                num(j, "cov");
                num(j, "align");
            }
        } else {
            assert_string_equal(type, "evaluation");
            evals++;
            num(j, "val_accuracy");
            num(j, "test_accuracy");
            num(j, "params");
            assert_true(num(j, "flops") == 2 * num(j, "macs"));
        }
    }
    cJSON_Delete(recs);
    assert_int_equal(evals, 8 + 2 * sf_iter);
    assert_true(iters > 8 * 20 && push_iters > 0);
    char name[64];
    for (int k = 0; k < 8 + 2 * sf_iter; k++) {
        file_name(name, sizeof name, k, sf_iter);
        snprintf(p, sizeof p, "%s/%s", a, name);
        assert_int_equal(access(p, R_OK), 0);
    }

    /* a used folder needs --resume */
    assert_int_equal(run(job, a, 0), 1);

    /* resume after stage 2: the same checkpoints, byte for byte */
    assert_int_equal(mkdir(b, 0777), 0);
    snprintf(p, sizeof p, "%s/job.json", a);
    snprintf(q, sizeof q, "%s/job.json", b);
    copy_file(p, q);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", a, FILES[k]);
        snprintf(q, sizeof q, "%s/%s", b, FILES[k]);
        copy_file(p, q);
    }
    assert_int_equal(run(job, b, 1), 0);
    for (int k = 3; k < 8 + 2 * sf_iter; k++) {
        size_t la, lb;
        file_name(name, sizeof name, k, sf_iter);
        snprintf(p, sizeof p, "%s/%s", a, name);
        snprintf(q, sizeof q, "%s/%s", b, name);
        unsigned char *x = sf_read(p, &la), *y = sf_read(q, &lb);
        assert_non_null(y);
        if (la != lb || memcmp(x, y, la) != 0) fail_msg("%s differs after --resume", name);
        free(x);
        free(y);
    }
    snprintf(q, sizeof q, "%s/summary.json", b);
    cJSON *sum2 = read_json(q);
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(sum, "stages"),
                              cJSON_GetObjectItemCaseSensitive(sum2, "stages"), 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(sum, "size_first"),
                              cJSON_GetObjectItemCaseSensitive(sum2, "size_first"), 1));
    cJSON_Delete(sum2);
    cJSON_Delete(sum);
    sf_rmtree(dir);
    free(dir);
}

/* A fresh folder holding job.json with `text`; job and a (its "a"
 * subfolder, not made) named into job[4200] and a[4200]. */
static char *job_dir(const char *text, char *job, char *a)
{
    char *dir = sf_tmpdir();
    snprintf(job, 4200, "%s/job.json", dir);
    snprintf(a, 4200, "%s/a", dir);
    FILE *f = fopen(job, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return dir;
}

/* --baselines=LIST: only the named one-shot baselines run; a bad list is
 * a usage error (2) before anything runs. */
static void test_baselines_list(void **state)
{
    (void)state;
    char job[4200], a[4200], p[4300];
    char *dir = job_dir(
        "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1},"
        "\"iterations\":1,\"prune\":{\"finetune_epochs\":1,\"final_finetune_epochs\":0},"
        "\"push\":{\"epochs\":0},\"data\":{\"train_limit\":600,\"test_limit\":200}}\n",
        job, a);
    static char bad[4][24] = {"--baselines=", "--baselines=l1,l1", "--baselines=scratch,",
                              "--baselines=L1"};
    for (int k = 0; k < 4; k++) {
        char *argv[7] = {"run", job, "--out", a, "--threads", "1", bad[k]};
        assert_int_equal(gpp_run_main(7, argv), 2);
        assert_int_not_equal(access(a, F_OK), 0);   /* nothing written */
    }
    char *argv[7] = {"run", job, "--out", a, "--threads", "1", "--baselines=scratch,l1"};
    assert_int_equal(gpp_run_main(7, argv), 0);
    snprintf(p, sizeof p, "%s/summary.json", a);
    cJSON *sum = read_json(p);
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(sum, "baselines");
    assert_int_equal(cJSON_GetArraySize(bl), 2);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(bl, "l1"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(bl, "scratch"));
    assert_null(cJSON_GetObjectItemCaseSensitive(bl, "random"));
    same_widths(cJSON_GetObjectItemCaseSensitive(bl, "scratch"),
                cJSON_GetObjectItemCaseSensitive(sum, "size_first"));
    cJSON_Delete(sum);
    sf_rmtree(dir);
    free(dir);
}

/* prune.final_lr: the last prune's fine-tune (the final recovery) and the
 * one-shot L1 baseline's fine-tune peak at it; the earlier prune at
 * prune.lr, the training and the scratch baseline at train.lr (the lr of
 * every SGD step in metrics.jsonl, per stage). */
static void test_final_lr(void **state)
{
    (void)state;
    char job[4200], a[4200];
    char *dir = job_dir(
        "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1,\"lr\":0.05},"
        "\"iterations\":2,\"prune\":{\"finetune_epochs\":1,\"final_finetune_epochs\":1,"
        "\"lr\":0.02,\"final_lr\":0.004,\"compare_cut\":false},\"push\":{\"epochs\":0},"
        "\"stop\":{\"max_accuracy_drop\":1},\"data\":{\"train_limit\":600,\"test_limit\":200}}\n",
        job, a);
    char *argv[7] = {"run", job, "--out", a, "--threads", "1", "--baselines=l1,scratch"};
    assert_int_equal(gpp_run_main(7, argv), 0);
    /* the peak lr per stage (the prunes by stage index: 1 and 2) */
    double peak_train = 0, peak_prune[2] = {0, 0}, peak_l1 = 0, peak_scratch = 0;
    cJSON *recs = read_metrics(a);
    const cJSON *j;
    cJSON_ArrayForEach(j, recs) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
        const char *stage = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "stage"));
        assert_non_null(type);
        assert_non_null(stage);
        if (strcmp(type, "iteration") == 0) {
            double lr = num(j, "lr");
            int idx = (int)num(j, "stage_index");
            if (strcmp(stage, "prune") == 0) assert_true(idx == 1 || idx == 2);
            double *peak = strcmp(stage, "train") == 0   ? &peak_train
                           : strcmp(stage, "prune") == 0 ? &peak_prune[idx == 2]
                           : strcmp(stage, "l1") == 0    ? &peak_l1
                           : strcmp(stage, "scratch") == 0 ? &peak_scratch
                                                           : NULL;
            if (!peak) {
                fail_msg("a stage \"%s\" in metrics.jsonl", stage);
                continue;
            }
            if (lr > *peak) *peak = lr;
        }
    }
    cJSON_Delete(recs);
    assert_true(peak_train > 0.04 && peak_train <= 0.05 + 1e-9);
    assert_true(peak_prune[0] > 0.015 && peak_prune[0] <= 0.02 + 1e-9);
    assert_true(peak_prune[1] > 0.003 && peak_prune[1] <= 0.004 + 1e-9);
    assert_true(peak_l1 > 0.003 && peak_l1 <= 0.004 + 1e-9);
    assert_true(peak_scratch > 0.04 && peak_scratch <= 0.05 + 1e-9);
    sf_rmtree(dir);
    free(dir);
}

/* push.separation "eigen" on lenet5 (M = 500 pre-decision neurons, batches
 * of 64: Sw is singular) with the default push.eigen_reg: every push step's
 * cross-entropy and separation stay finite and bounded, the pushed net
 * still classifies (validation within 5 points of the trained one's) and the
 * job finishes.  With the old absolute lambda (0.001) the separation term
 * reached -2e4 within 5 steps, the cross-entropy 300, and the fine-tune
 * after the prune failed on a NaN loss. */
static void test_eigen_push_stable(void **state)
{
    (void)state;
    char job[4200], a[4200];
    char *dir = job_dir(
        "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1},"
        "\"iterations\":1,\"push\":{\"separation\":\"eigen\"},"
        "\"prune\":{\"final_finetune_epochs\":0,\"compare_cut\":false},"
        "\"data\":{\"train_limit\":4000,\"test_limit\":1000}}\n",
        job, a);
    char *argv[6] = {"run", job, "--out", a, "--threads", "2"};
    assert_int_equal(gpp_run_main(6, argv), 0);
    int steps = 0;
    double worst_ce = 0, worst_sep = 0, val_train = -1, val_push = -1;
    cJSON *recs = read_metrics(a);
    const cJSON *j;
    cJSON_ArrayForEach(j, recs) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
        const char *stage = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "stage"));
        assert_non_null(type);
        assert_non_null(stage);
        if (strcmp(stage, "push") == 0 && strcmp(type, "iteration") == 0) {
            double ce = num(j, "ce"), sep = num(j, "sep");
            assert_true(isfinite(ce) && isfinite(sep));
            worst_ce = ce > worst_ce ? ce : worst_ce;
            worst_sep = sep < worst_sep ? sep : worst_sep;
            steps++;
        } else if (strcmp(type, "iteration") != 0) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "val_accuracy");
            if (cJSON_IsNumber(v) && strcmp(stage, "train") == 0) val_train = v->valuedouble;
            if (cJSON_IsNumber(v) && strcmp(stage, "push") == 0) val_push = v->valuedouble;
        }
    }
    cJSON_Delete(recs);
    printf("eigen push: %d steps, worst ce %.3f, lowest sep %.3f; val %.4f -> %.4f\n", steps,
           worst_ce, worst_sep, val_train, val_push);
    assert_true(steps >= 50);
    assert_true(worst_ce < 3.0);
    assert_true(worst_sep > -1000.0 && worst_sep < 0.0);
    assert_true(val_train > 0.5 && val_push > val_train - 0.05);
    sf_rmtree(dir);
    free(dir);
}

/* The final recovery when a stop rule ends the loop early: with
 * stop.target_params met by the first of three prunes, a finetune stage
 * fine-tunes that prune prune.final_finetune_epochs at prune.final_lr and
 * becomes the size-first and accuracy-first model (the prune it recovered
 * is no longer a candidate); the L1 baseline trains at its widths for
 * every epoch GPP trained after the baseline, the recovery's included;
 * the same-schedule chains end with a step at the recovery's widths that
 * trains its epochs; --resume of the finished folder runs nothing more. */
/* The tensors of two checkpoint files are the same bits. */
static void same_tensor_bits(const char *a, const char *b)
{
    gpp_ckpt *x = NULL, *y = NULL;
    assert_int_equal(gpp_ckpt_read_file(a, &x, NULL), 0);
    assert_int_equal(gpp_ckpt_read_file(b, &y, NULL), 0);
    assert_int_equal(gpp_ckpt_tensor_count(x), gpp_ckpt_tensor_count(y));
    for (size_t i = 0; i < gpp_ckpt_tensor_count(x); i++) {
        const gpp_tensor_view *v = gpp_ckpt_tensor(x, i), *w = gpp_ckpt_find(y, v->name);
        assert_non_null(w);
        assert_int_equal(v->count, w->count);
        assert_memory_equal(v->data, w->data, v->count * sizeof(float));
    }
    gpp_ckpt_free(x);
    gpp_ckpt_free(y);
}

/* A job whose model is {"checkpoint": SHA256} runs here from the file
 * --checkpoint names: its first stage evaluates the network unchanged (the
 * job's baseline), then the loop prunes it.  Refused before anything runs:
 * no --checkpoint, a file whose sha256 is not the job's, --checkpoint for a
 * zoo job. */
static void test_checkpoint_model(void **state)
{
    (void)state;
    char job[4200], a[4200], p[4300], model[4300], job2[4300], b[4300];
    char *dir = job_dir(
        "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1},"
        "\"iterations\":0,\"data\":{\"train_limit\":600,\"test_limit\":300}}\n",
        job, a);
    char *argv[6] = {"run", job, "--out", a, "--threads", "1"};
    assert_int_equal(gpp_run_main(6, argv), 0);
    snprintf(model, sizeof model, "%s/stage-00-train.gppm", a);
    uint8_t d[GPP_SHA256_LEN];
    char hex[GPP_SHA256_HEX_LEN + 1];
    assert_int_equal(gpp_sha256_file(model, d, NULL), 0);
    gpp_sha256_hex(d, hex);
    snprintf(job2, sizeof job2, "%s/byo.json", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    FILE *f = fopen(job2, "w");
    assert_non_null(f);
    fprintf(f, "{\"dataset\":\"fashion-mnist\",\"model\":{\"checkpoint\":\"%s\"},"
               "\"iterations\":1,\"push\":{\"epochs\":0},\"prune\":{\"final_finetune_epochs\":0},"
               "\"data\":{\"train_limit\":600,\"test_limit\":300}}\n", hex);
    fclose(f);
    /* refusals: nothing written */
    char *no_file[6] = {"run", job2, "--out", b, "--threads", "1"};
    assert_int_equal(gpp_run_main(6, no_file), 1);
    char *wrong[8] = {"run", job2, "--out", b, "--threads", "1", "--checkpoint", job};
    assert_int_equal(gpp_run_main(8, wrong), 1);
    char *zoo[8] = {"run", job, "--out", b, "--threads", "1", "--checkpoint", model};
    assert_int_equal(gpp_run_main(8, zoo), 1);
    assert_int_not_equal(access(b, F_OK), 0);
    /* the run */
    char *ok[8] = {"run", job2, "--out", b, "--threads", "1", "--checkpoint", model};
    assert_int_equal(gpp_run_main(8, ok), 0);
    snprintf(p, sizeof p, "%s/stage-00-train.gppm", b);
    same_tensor_bits(model, p);   /* evaluated, not trained */
    snprintf(p, sizeof p, "%s/summary.json", b);
    cJSON *sum = read_json(p);
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(sum, "stages");
    assert_int_equal(cJSON_GetArraySize(stages), 2);
    const cJSON *s0 = cJSON_GetArrayItem(stages, 0), *s1 = cJSON_GetArrayItem(stages, 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s0, "evaluated_only")));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s1, "stage")), "prune");
    assert_true(num(s1, "params") < num(s0, "params"));
    cJSON_Delete(sum);
    /* --resume needs the same file */
    char *again[9] = {"run", job2, "--out", b, "--threads", "1", "--resume", "--checkpoint", job};
    assert_int_equal(gpp_run_main(9, again), 1);
    sf_rmtree(dir);
    free(dir);
}

static void test_final_recovery(void **state)
{
    (void)state;
    char job[4200], a[4200], p[4300];
    char *dir = job_dir(
        "{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\",\"train\":{\"epochs\":1},"
        "\"iterations\":3,\"prune\":{\"finetune_epochs\":1,\"final_finetune_epochs\":2,"
        "\"lr\":0.02,\"final_lr\":0.004,\"compare_cut\":false},\"push\":{\"epochs\":0},"
        "\"stop\":{\"target_params\":1000000000,\"max_accuracy_drop\":1},"
        "\"data\":{\"train_limit\":600,\"test_limit\":200}}\n",
        job, a);
    char *argv[8] = {"run", job, "--out", a, "--threads", "1", "--baselines=l1",
                     "--schedule-baselines"};
    assert_int_equal(gpp_run_main(8, argv), 0);
    static const char *const files[8] = {
        "stage-00-train.gppm", "stage-01-prune.gppm", "stage-02-finetune.gppm",
        "stage-03-l1.gppm", "stage-04-l1.gppm", "stage-05-l1.gppm", "stage-06-random.gppm",
        "stage-07-random.gppm"};
    for (int k = 0; k < 8; k++) {
        snprintf(p, sizeof p, "%s/%s", a, files[k]);
        assert_int_equal(access(p, R_OK), 0);
    }
    snprintf(p, sizeof p, "%s/stage-08-random.gppm", a);
    assert_int_not_equal(access(p, F_OK), 0);   /* two steps per chain */
    snprintf(p, sizeof p, "%s/summary.json", a);
    cJSON *sum = read_json(p);
    const char *stopped = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sum, "stopped"));
    assert_true(stopped && strstr(stopped, "target"));
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(sum, "stages");
    assert_int_equal(cJSON_GetArraySize(stages), 3);
    const cJSON *prune = cJSON_GetArrayItem(stages, 1), *ft = cJSON_GetArrayItem(stages, 2);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ft, "stage")),
                        "finetune");
    assert_int_equal((int)num(prune, "finetune_epochs"), 1);
    assert_int_equal((int)num(ft, "finetune_epochs"), 2);
    assert_int_equal((int)num(ft, "from_stage"), 1);
    assert_true(num(ft, "val_before") == num(prune, "val_accuracy"));
    same_widths(ft, prune);
    assert_true(num(ft, "params") == num(prune, "params"));
    for (int k = 0; k < 2; k++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(sum, k ? "size_first" : "accuracy_first");
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "file")),
                            "stage-02-finetune.gppm");
    }
    const cJSON *l1 = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(sum, "baselines"), "l1");
    assert_int_equal((int)num(l1, "budget_epochs"), 1 + 2);
    same_widths(l1, ft);
    for (int k = 0; k < 2; k++) {   /* step 1: the prune's widths, 1 epoch; step 2: the recovery's */
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(sum, "baselines"), k ? "random_schedule" : "l1_schedule");
        assert_int_equal((int)num(c, "iteration"), 2);
        assert_int_equal((int)num(c, "budget_epochs"), 2);
        same_widths(c, ft);
    }
    cJSON_Delete(sum);
    /* the recovery's steps: two epochs, peak lr prune.final_lr */
    double peak = 0, last_epoch = 0;
    int steps = 0;
    cJSON *recs = read_metrics(a);
    const cJSON *j;
    cJSON_ArrayForEach(j, recs) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
        const char *stage = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "stage"));
        if (type && stage && strcmp(type, "iteration") == 0 && strcmp(stage, "finetune") == 0) {
            assert_int_equal((int)num(j, "stage_index"), 2);
            if (num(j, "lr") > peak) peak = num(j, "lr");
            last_epoch = num(j, "epoch");
            steps++;
        }
    }
    cJSON_Delete(recs);
    assert_true(steps > 0);
    assert_true(peak > 0.003 && peak <= 0.004 + 1e-9);
    assert_true(fabs(last_epoch - 2.0) < 1e-6);
    /* nothing is left to do */
    snprintf(p, sizeof p, "%s/summary.json", a);
    size_t len0, len1;
    unsigned char *before = sf_read(p, &len0);
    char *argr[9] = {"run", job, "--out", a, "--threads", "1", "--baselines=l1",
                     "--schedule-baselines", "--resume"};
    assert_int_equal(gpp_run_main(9, argr), 0);
    snprintf(p, sizeof p, "%s/stage-08-random.gppm", a);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/summary.json", a);
    unsigned char *after = sf_read(p, &len1);
    cJSON *sa = cJSON_Parse((const char *)before), *sb = cJSON_Parse((const char *)after);
    cJSON_DeleteItemFromObjectCaseSensitive(sa, "elapsed_s");
    cJSON_DeleteItemFromObjectCaseSensitive(sb, "elapsed_s");
    assert_true(cJSON_Compare(sa, sb, 1));
    cJSON_Delete(sa);
    cJSON_Delete(sb);
    free(before);
    free(after);
    sf_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_baselines_list),
        cmocka_unit_test(test_final_lr),
        cmocka_unit_test(test_final_recovery),
        cmocka_unit_test(test_checkpoint_model),
        cmocka_unit_test(test_eigen_push_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
