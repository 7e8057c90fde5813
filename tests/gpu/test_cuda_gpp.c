/* A seeded GPP job (train -> push -> prune with the data-dependent eta
 * threshold and the gpp criterion) through gpp_stage_run on the cpu and on
 * CUDA, on the same synthetic data: the final widths agree (printed per
 * layer; the assertion allows 2 channels in all, the float rounding of two
 * backends can move a channel whose score sits at the threshold), the
 * accuracies agree within 5 points.  The stages run their host parts (push
 * statistics, LDA, trace, surgery, checkpoints) on host views of the device
 * net.  Skipped (77) without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpu_check.h"
#include "stage_fixture.h"

static nn_ctx *G, *C;

static const char *const NET =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c1_bn\"},{\"type\":\"relu\",\"name\":\"c1_relu\"},"
    "{\"type\":\"maxpool\",\"name\":\"p1\",\"k\":2},"
    "{\"type\":\"conv\",\"name\":\"c2\",\"out\":16,\"k\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"bn\",\"name\":\"c2_bn\"},{\"type\":\"relu\",\"name\":\"c2_relu\"},"
    "{\"type\":\"global-avgpool\",\"name\":\"gap\"},{\"type\":\"fc\",\"name\":\"fc1\",\"out\":20},"
    "{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"fc\",\"name\":\"fc\",\"out\":4}]";

#define SPEC_FMT                                                                          \
    "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"model\":%s,\"seed\":2,"  \
    "\"train\":{\"epochs\":2,\"batch_size\":%d,\"lr\":0.05},"                             \
    "\"push\":{\"epochs\":1,\"min_per_class\":3},"                                        \
    "\"prune\":{\"threshold\":\"eta\",\"eta\":0.1,\"finetune_epochs\":1,"                 \
    "\"samples_per_class\":10,\"max_accuracy_drop\":0.5}}"

static int stage(nn_ctx *ctx, const char *dir, gpp_stage_data *d, int batch,
                 gpp_stage_kind kind, int index, const char *in, const char *out,
                 cJSON **summary, gpp_error *err)
{
    char text[4096], ip[600], op[600];
    snprintf(text, sizeof text, SPEC_FMT, NET, batch);
    gpp_jobspec *spec = sf_spec(text);
    snprintf(ip, sizeof ip, "%s/%s", dir, in ? in : "");
    snprintf(op, sizeof op, "%s/%s", dir, out);
    gpp_stage_req req = {.spec = spec, .kind = kind, .index = index, .iteration = 0,
                         .input = in ? ip : NULL, .output = op, .data = d, .ctx = ctx,
                         .threads = 1};
    int rc = gpp_stage_run(&req, NULL, summary, err);
    gpp_jobspec_free(spec);
    return rc;
}

static void test_gpp_job_same_widths(void **st)
{
    (void)st;
    gpp_stage_data *d = sf_data(240, 60, 12, 4);
    char *dir = sf_tmpdir();
    cJSON *sum[2] = {NULL, NULL};
    double acc[2];
    for (int k = 0; k < 2; k++) {
        nn_ctx *ctx = k ? G : C;
        gpp_error e = {0};
        char o0[32], o1[32], o2[32];
        snprintf(o0, sizeof o0, "t%d.gppm", k);
        snprintf(o1, sizeof o1, "u%d.gppm", k);
        snprintf(o2, sizeof o2, "p%d.gppm", k);
        if (stage(ctx, dir, d, 16, GPP_STAGE_TRAIN, 0, NULL, o0, NULL, &e) != 0 ||
            stage(ctx, dir, d, 16, GPP_STAGE_PUSH, 1, o0, o1, NULL, &e) != 0 ||
            stage(ctx, dir, d, 16, GPP_STAGE_PRUNE, 2, o1, o2, &sum[k], &e) != 0)
            fail_msg("%s: %s (%s)", k ? "cuda" : "cpu", e.message, e.field);
        acc[k] = cJSON_GetObjectItem(sum[k], "val_accuracy")->valuedouble;
    }
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(sum[0], "layers");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(sum[1], "layers");
    assert_non_null(la);
    assert_non_null(lb);
    assert_int_equal(cJSON_GetArraySize(la), cJSON_GetArraySize(lb));
    int total = 0, cut = 0;
    for (int i = 0; i < cJSON_GetArraySize(la); i++) {
        const cJSON *a = cJSON_GetArrayItem(la, i), *b = cJSON_GetArrayItem(lb, i);
        const char *name = cJSON_GetObjectItem(a, "name")->valuestring;
        assert_string_equal(name, cJSON_GetObjectItem(b, "name")->valuestring);
        int wa = (int)cJSON_GetObjectItem(a, "width")->valuedouble;
        int wb = (int)cJSON_GetObjectItem(b, "width")->valuedouble;
        printf("gpp_width %s cpu %d cuda %d\n", name, wa, wb);
        total += abs(wa - wb);
        cut += wa;
    }
    printf("gpp_val_accuracy cpu %.4f cuda %.4f; width difference %d channels\n", acc[0],
           acc[1], total);
    assert_true(cut > 0);
    assert_true(total <= 2);
    assert_true(fabs(acc[0] - acc[1]) <= 0.05);
    cJSON_Delete(sum[0]);
    cJSON_Delete(sum[1]);
    sf_rmtree(dir);
    free(dir);
    gpp_stage_data_free(d);
}

int main(void)
{
    G = gpu_ctx_or_skip("cuda_gpp");
    gpp_error e = {0};
    C = nn_ctx_new("cpu", 1, &e);
    if (!C) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpp_job_same_widths),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nn_ctx_free(G);
    nn_ctx_free(C);
    return rc;
}
