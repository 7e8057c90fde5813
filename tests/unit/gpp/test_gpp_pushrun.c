/* The push stage on a small run: after pushing, the pre-decision features
 * of the training set have a smaller off-diagonal scatter (relative to the
 * diagonal) and their Fisher ratios are concentrated on fewer neurons (the
 * top M' hold a larger share of sum r) than before, and than after the same
 * fine-tuning with the cross-entropy alone. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/gppmath.h"
#include "stage_fixture.h"

static const char *const SPEC =
    "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"seed\":4,\"model\":"
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":8,\"k\":3,\"pad\":1},"
    "{\"type\":\"relu\",\"name\":\"r1\"},{\"type\":\"maxpool\",\"name\":\"p1\",\"k\":2},"
    "{\"type\":\"flatten\",\"name\":\"f\"},{\"type\":\"fc\",\"name\":\"fc1\",\"out\":24},"
    "{\"type\":\"relu\",\"name\":\"r2\"},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":4}],"
    "\"train\":{\"epochs\":3,\"batch_size\":32,\"lr\":0.05},"
    "\"push\":{\"epochs\":4,\"lambda\":%g,\"alpha\":0.02,\"beta\":0.1,\"gamma\":0.2,"
    "\"keep_fraction\":0.25,\"min_per_class\":4,\"ramp_epochs\":1}}";

#define TOPK 6   /* keep_fraction 0.25 of 24 */

typedef struct stats {
    double offdiag;   /* ||offdiag Sw||^2 + ||offdiag Sb||^2 over ||diag(Sw + Sb)||^2 */
    double top;       /* share of sum r held by the TOPK largest r */
} stats;

static stats measure(const char *path, const gpp_stage_data *d)
{
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &net, NULL, NULL), 0);
    const uint32_t n = d->split->n_train;
    assert_int_equal(nn_net_reserve(net, (int)n, NULL), 0);
    float *x = sf_alloc((size_t)n * 144, sizeof(float));
    int *y = sf_alloc(n, sizeof(int));
    gpp_data_fill(x, y, d->train, d->split->train, n, &d->norm, GPP_DATA_AUG_NONE, NULL);
    assert_int_equal(nn_net_forward(net, x, NULL, (int)n, 0, NULL, NULL), 0);
    const float *H = nn_net_output(net, nn_net_predecision(net));
    gpp_push_ws *ws = NULL;
    assert_int_equal(gpp_push_ws_new((int)n, 24, 4, 0, &ws, NULL), 0);
    gpp_push_opts o;
    gpp_push_opts_default(&o);
    gpp_push_result res;
    assert_int_equal(gpp_push_loss(ws, H, y, (int)n, &o, &res, NULL, NULL), 0);
    stats s = {.offdiag = res.cov_offdiag / res.cov_denom};
    uint8_t top[24];
    assert_int_equal(gpp_push_top_set(gpp_push_ws_ratios(ws), 24, TOPK, top, NULL), 0);
    o.top = top;
    assert_int_equal(gpp_push_loss(ws, H, y, (int)n, &o, &res, NULL, NULL), 0);
    s.top = res.top_share;
    gpp_push_ws_free(ws);
    free(x);
    free(y);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return s;
}

static void run_stage(const char *spec_text, gpp_stage_kind kind, const char *in, const char *out,
                      const gpp_stage_data *d)
{
    gpp_jobspec *spec = sf_spec(spec_text);
    gpp_error err = {0};
    gpp_stage_req req = {.spec = spec, .kind = kind, .index = kind == GPP_STAGE_TRAIN ? 0 : 1,
                         .input = in, .output = out, .data = d, .threads = 1};
    if (gpp_stage_run(&req, NULL, NULL, &err) != 0) fail_msg("%s", err.message);
    gpp_jobspec_free(spec);
}

static void test_push_concentrates(void **state)
{
    (void)state;
    char *dir = sf_tmpdir();
    char base[4200], pushed[4200], plain[4200], text[2048];
    snprintf(base, sizeof base, "%s/base.gppm", dir);
    snprintf(pushed, sizeof pushed, "%s/pushed.gppm", dir);
    snprintf(plain, sizeof plain, "%s/plain.gppm", dir);
    gpp_stage_data *d = sf_data(400, 80, 12, 4);
    snprintf(text, sizeof text, SPEC, 1.0);
    run_stage(text, GPP_STAGE_TRAIN, NULL, base, d);
    run_stage(text, GPP_STAGE_PUSH, base, pushed, d);
    snprintf(text, sizeof text, SPEC, 0.0);   /* the same fine-tuning, cross-entropy alone */
    run_stage(text, GPP_STAGE_PUSH, base, plain, d);
    stats s0 = measure(base, d), s1 = measure(pushed, d), s2 = measure(plain, d);
    printf("off-diagonal scatter %.4f -> pushed %.4f (CE alone %.4f); top-%d share of sum r "
           "%.4f -> pushed %.4f (CE alone %.4f)\n",
           s0.offdiag, s1.offdiag, s2.offdiag, TOPK, s0.top, s1.top, s2.top);
    assert_true(s1.offdiag < 0.8 * s0.offdiag);
    assert_true(s1.offdiag < s2.offdiag);
    assert_true(s1.top > s0.top + 0.05);
    assert_true(s1.top > s2.top);
    gpp_stage_data_free(d);
    sf_rmtree(dir);
    free(dir);
}

/* push.lambda_decay: push i weighs its terms lambda * decay^i; every step's
 * reported alpha, beta and gamma say so (ramp_epochs 0: no ramp). */
typedef struct weights {
    int steps, bad;
    double want[3];
} weights;

static void on_metric(void *user, const gpp_metric *m)
{
    weights *w = user;
    if (m->evaluation) return;
    static const char *const keys[3] = {"alpha", "beta", "gamma"};
    int found = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < m->n; i++)
            if (strcmp(m->names[i], keys[k]) == 0) {
                found++;
                if (fabs(m->values[i] - w->want[k]) > 1e-12 * (1 + w->want[k])) w->bad++;
            }
    if (found == 3) w->steps++;
}

static void test_lambda_decay(void **state)
{
    (void)state;
    static const char *const spec_fmt =
        "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"seed\":4,\"model\":"
        "[{\"type\":\"flatten\",\"name\":\"f\"},{\"type\":\"fc\",\"name\":\"fc1\",\"out\":12},"
        "{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":4}],"
        "\"train\":{\"epochs\":1,\"batch_size\":32},"
        "\"push\":{\"epochs\":1,\"lambda\":2,\"lambda_decay\":%g,\"alpha\":0.02,\"beta\":0.1,"
        "\"gamma\":0.2,\"min_per_class\":4,\"ramp_epochs\":0}}";
    char *dir = sf_tmpdir();
    char base[4200], out[4200], text[2048];
    snprintf(base, sizeof base, "%s/base.gppm", dir);
    snprintf(out, sizeof out, "%s/pushed.gppm", dir);
    gpp_stage_data *d = sf_data(200, 40, 12, 4);
    static const struct { double decay; int iteration; double factor; } cases[] = {
        {1.0, 3, 2.0}, {0.5, 0, 2.0}, {0.5, 2, 0.5}, {0.0, 1, 0.0}};
    snprintf(text, sizeof text, spec_fmt, 1.0);
    run_stage(text, GPP_STAGE_TRAIN, NULL, base, d);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(text, sizeof text, spec_fmt, cases[c].decay);
        gpp_jobspec *spec = sf_spec(text);
        weights w = {.want = {0.02 * cases[c].factor, 0.1 * cases[c].factor,
                              0.2 * cases[c].factor}};
        gpp_stage_io io = {.user = &w, .metric = on_metric};
        gpp_error err = {0};
        gpp_stage_req req = {.spec = spec, .kind = GPP_STAGE_PUSH, .index = 1,
                             .iteration = cases[c].iteration, .input = base, .output = out,
                             .data = d, .threads = 1};
        if (gpp_stage_run(&req, &io, NULL, &err) != 0) fail_msg("%s", err.message);
        printf("decay %g, push %d: %d steps, %d with other weights\n", cases[c].decay,
               cases[c].iteration, w.steps, w.bad);
        assert_true(w.steps > 0);
        assert_int_equal(w.bad, 0);
        gpp_jobspec_free(spec);
    }
    gpp_stage_data_free(d);
    sf_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_concentrates),
        cmocka_unit_test(test_lambda_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
