/* Network state <-> .gppm (gpp_net_save / gpp_net_load): a round trip keeps
 * every tensor, momentum buffer, the SGD step count and the dropout RNG bit
 * for bit; training k steps, saving, loading into a fresh net and training m
 * more gives the same bits as k + m straight; a stage cancelled after an
 * epoch and resumed from its partial checkpoint writes the same bytes as one
 * run straight through (train and push stages). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpp/ckpt.h"
#include "stage_fixture.h"
#include "stages_internal.h"

static const char *const NET =
    "[{\"type\":\"conv\",\"name\":\"c1\",\"out\":6,\"k\":3,\"pad\":1},"
    "{\"type\":\"bn\",\"name\":\"b1\"},{\"type\":\"relu\",\"name\":\"r1\"},"
    "{\"type\":\"maxpool\",\"name\":\"p1\",\"k\":2},{\"type\":\"flatten\",\"name\":\"f\"},"
    "{\"type\":\"fc\",\"name\":\"fc1\",\"out\":16},{\"type\":\"relu\",\"name\":\"r2\"},"
    "{\"type\":\"dropout\",\"name\":\"d\",\"p\":0.2},{\"type\":\"fc\",\"name\":\"fc2\",\"out\":4}]";

static const int IN[3] = {1, 12, 12};

/* One SGD step on the iterator's next batch (rolling over epochs). */
static void step(nn_net *net, gpp_data_iter *it, float *x, int32_t *y, const nn_sgd *opt)
{
    uint32_t m = gpp_data_iter_next(it, x, y);
    if (m == 0) m = gpp_data_iter_next(it, x, y);
    assert_true(m > 0);
    nn_net_zero_grad(net);
    assert_int_equal(nn_net_forward(net, x, y, (int)m, 1, NULL, NULL), 0);
    assert_int_equal(nn_net_backward(net, NULL, 0, NULL), 0);
    nn_net_sgd_step(net, opt);
}

static void assert_same_state(nn_net *a, nn_net *b)
{
    size_t la, lb;
    float *pa = nn_net_param_block(a, &la), *pb = nn_net_param_block(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la * sizeof(float));
    assert_memory_equal(nn_net_momentum_block(a, NULL), nn_net_momentum_block(b, NULL),
                        la * sizeof(float));
    assert_int_equal(nn_net_num_tensors(a), nn_net_num_tensors(b));
    for (int i = 0; i < nn_net_num_tensors(a); i++) {   /* running statistics too */
        nn_tensor ta, tb;
        assert_int_equal(nn_net_tensor(a, i, &ta), 0);
        assert_int_equal(nn_net_tensor(b, i, &tb), 0);
        assert_string_equal(ta.name, tb.name);
        assert_int_equal(ta.len, tb.len);
        assert_memory_equal(ta.data, tb.data, ta.len * sizeof(float));
    }
    assert_int_equal(nn_net_sgd_steps(a), nn_net_sgd_steps(b));
    assert_memory_equal(nn_net_rng(a)->s, nn_net_rng(b)->s, sizeof nn_net_rng(a)->s);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char *dir = sf_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/net.gppm", dir);
    nn_ctx *ctx = nn_ctx_new("cpu", 1, NULL);
    nn_net *net = sf_net(ctx, NET, IN, 4, 3);
    assert_int_equal(nn_net_reserve(net, 8, NULL), 0);
    gpp_stage_data *d = sf_data(64, 16, 12, 4);
    gpp_data_iter_opts o = {.batch_size = 8, .order = GPP_DATA_SHUFFLE, .norm = &d->norm, .seed = 9};
    gpp_data_iter *it = NULL;
    assert_int_equal(gpp_data_iter_new(&it, d->train, d->split->train, d->split->n_train, &o, NULL), 0);
    float x[8 * 144];
    int32_t y[8];
    nn_sgd opt = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f};
    for (int i = 0; i < 3; i++) step(net, it, x, y, &opt);
    cJSON *meta = cJSON_Parse("{\"note\":\"kept\"}");
    gpp_error err = {0};
    assert_int_equal(gpp_net_save(net, path, meta, NULL, 1, &err), 0);

    nn_net *back = NULL;
    cJSON *doc = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &back, &doc, &err), 0);
    assert_int_equal(nn_net_reserve(back, 8, NULL), 0);
    assert_same_state(net, back);
    cJSON *ja = nn_net_to_json(net), *jb = nn_net_to_json(back);
    assert_true(cJSON_Compare(ja, jb, 1));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "meta"), "note")->valuestring,
                        "kept");
    /* the same logits for the same input */
    assert_int_equal(nn_net_forward(net, x, NULL, 8, 0, NULL, NULL), 0);
    float la[32];
    memcpy(la, nn_net_output(net, nn_net_logits(net)), sizeof la);
    assert_int_equal(nn_net_forward(back, x, NULL, 8, 0, NULL, NULL), 0);
    assert_memory_equal(la, nn_net_output(back, nn_net_logits(back)), sizeof la);

    /* without optimiser state: no momentum, step count 0 */
    assert_int_equal(gpp_net_save(net, path, NULL, NULL, 0, &err), 0);
    nn_net *bare = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &bare, NULL, &err), 0);
    assert_int_equal(nn_net_sgd_steps(bare), 0);
    size_t len;
    const float *mom = nn_net_momentum_block(bare, &len);
    for (size_t i = 0; i < len; i++) assert_true(mom[i] == 0.0f);

    /* a checkpoint of another architecture does not load silently */
    gpp_ckpt *ck = NULL;
    assert_int_equal(gpp_ckpt_read_file(path, &ck, NULL), 0);
    cJSON *d2 = cJSON_Parse(gpp_ckpt_json(ck));
    gpp_ckpt_free(ck);
    cJSON *layers = cJSON_GetObjectItem(cJSON_GetObjectItem(d2, "network"), "layers");
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(layers, 5), "out", cJSON_CreateNumber(17));
    char *txt = cJSON_PrintUnformatted(d2);
    gpp_ckpt_writer *w = gpp_ckpt_writer_new(txt);
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        int64_t dims[4] = {t.shape[0], t.shape[1], t.shape[2], t.shape[3]};
        assert_int_equal(gpp_ckpt_writer_add(w, t.name, t.ndim, dims, t.data, NULL), 0);
    }
    assert_int_equal(gpp_ckpt_writer_write_file(w, path, NULL), 0);
    nn_net *wrong = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &wrong, NULL, &err), GPP_EFORMAT);
    assert_null(wrong);
    assert_non_null(strstr(err.message, "fc1.weight"));

    gpp_ckpt_writer_free(w);
    free(txt);
    cJSON_Delete(d2);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    cJSON_Delete(meta);
    cJSON_Delete(doc);
    nn_net_free(bare);
    nn_net_free(back);
    nn_net_free(net);
    gpp_data_iter_free(it);
    gpp_stage_data_free(d);
    nn_ctx_free(ctx);
    sf_rmtree(dir);
    free(dir);
}

/* k steps, save (net + data position), load into a fresh net and iterator,
 * m more steps == k + m steps straight, bit for bit. */
static void resume_bitwise(int threads)
{
    char *dir = sf_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/mid.gppm", dir);
    gpp_stage_data *d = sf_data(128, 16, 12, 4);   /* 102 training images: 7 batches of 16 */
    nn_ctx *ctx = nn_ctx_new("cpu", threads, NULL);
    gpp_data_iter_opts o = {.batch_size = 16, .order = GPP_DATA_SHUFFLE, .norm = &d->norm,
                            .seed = 21};
    nn_sgd opt = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};
    float x[16 * 144];
    int32_t y[16];
    const int k = 5, m = 9;   /* across the epoch boundary */

    nn_net *a = sf_net(ctx, NET, IN, 4, 77);
    assert_int_equal(nn_net_reserve(a, 16, NULL), 0);
    gpp_data_iter *ia = NULL;
    assert_int_equal(gpp_data_iter_new(&ia, d->train, d->split->train, d->split->n_train, &o, NULL), 0);
    for (int i = 0; i < k + m; i++) step(a, ia, x, y, &opt);

    nn_net *b = sf_net(ctx, NET, IN, 4, 77);
    assert_int_equal(nn_net_reserve(b, 16, NULL), 0);
    gpp_data_iter *ib = NULL;
    assert_int_equal(gpp_data_iter_new(&ib, d->train, d->split->train, d->split->n_train, &o, NULL), 0);
    for (int i = 0; i < k; i++) step(b, ib, x, y, &opt);
    gpp_data_pos pos;
    uint64_t words[GPP_DATA_POS_WORDS];
    gpp_data_iter_get_pos(ib, &pos);
    gpp_data_pos_pack(&pos, words);
    cJSON *st = cJSON_CreateObject();
    cJSON_AddItemToObject(st, "data_pos", gpp__hex_array(words, GPP_DATA_POS_WORDS));
    gpp_error err = {0};
    assert_int_equal(gpp_net_save(b, path, NULL, st, 1, &err), 0);
    cJSON_Delete(st);
    nn_net_free(b);
    gpp_data_iter_free(ib);

    nn_net *c = NULL;
    cJSON *doc = NULL;
    assert_int_equal(gpp_net_load(ctx, path, &c, &doc, &err), 0);
    assert_int_equal(nn_net_reserve(c, 16, NULL), 0);
    assert_int_equal(nn_net_sgd_steps(c), k);
    gpp_data_iter *ic = NULL;
    assert_int_equal(gpp_data_iter_new(&ic, d->train, d->split->train, d->split->n_train, &o, NULL), 0);
    uint64_t back[GPP_DATA_POS_WORDS];
    assert_int_equal(gpp__hex_read(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "state"), "data_pos"),
                                   back, GPP_DATA_POS_WORDS), 0);
    assert_memory_equal(back, words, sizeof words);
    gpp_data_pos_unpack(&pos, back);
    assert_int_equal(gpp_data_iter_set_pos(ic, &pos, NULL), 0);
    for (int i = 0; i < m; i++) step(c, ic, x, y, &opt);
    assert_same_state(a, c);

    cJSON_Delete(doc);
    nn_net_free(a);
    nn_net_free(c);
    gpp_data_iter_free(ia);
    gpp_data_iter_free(ic);
    nn_ctx_free(ctx);
    gpp_stage_data_free(d);
    sf_rmtree(dir);
    free(dir);
}

static void test_resume_bitwise_1thread(void **state)
{
    (void)state;
    resume_bitwise(1);
}

static void test_resume_bitwise_2threads(void **state)
{
    (void)state;
    resume_bitwise(2);
}

/* ---- a stage cancelled after its first epoch, then resumed ------------------------- */

typedef struct cancel_io {
    atomic_int flag;
    double at;          /* cancel once progress reaches this (0: never) */
    int metrics;
} cancel_io;

static void cio_progress(void *user, double f)
{
    cancel_io *c = user;
    if (c->at > 0 && f >= c->at) atomic_store(&c->flag, 1);
}

static void cio_metric(void *user, const gpp_metric *m)
{
    cancel_io *c = user;
    (void)m;
    c->metrics++;
}

static const char *const SPEC =
    "{\"dataset\":{\"format\":\"idx\",\"path\":\"/synthetic\"},\"model\":%s,\"seed\":3,"
    "\"train\":{\"epochs\":2,\"batch_size\":16,\"lr\":0.05},"
    "\"push\":{\"epochs\":2,\"lambda\":1,\"alpha\":0.02,\"gamma\":0.1,\"keep_fraction\":0.5}}";

static void stage_resume(gpp_stage_kind kind)
{
    char *dir = sf_tmpdir();
    char spec_text[2048], in[4200], straight[4200], resumed[4200], part[4200];
    snprintf(spec_text, sizeof spec_text, SPEC, NET);
    gpp_jobspec *spec = sf_spec(spec_text);
    gpp_stage_data *d = sf_data(160, 40, 12, 4);
    snprintf(in, sizeof in, "%s/in.gppm", dir);
    snprintf(straight, sizeof straight, "%s/straight.gppm", dir);
    snprintf(resumed, sizeof resumed, "%s/resumed.gppm", dir);
    snprintf(part, sizeof part, "%s/part.gppm", dir);
    gpp_error err = {0};
    cancel_io c = {.at = 0};
    gpp_stage_io io = {.user = &c, .progress = cio_progress, .metric = cio_metric,
                       .cancel = &c.flag};
    gpp_stage_req req = {.spec = spec, .kind = GPP_STAGE_TRAIN, .index = 0, .output = in,
                         .data = d, .threads = 1};
    if (kind != GPP_STAGE_TRAIN)   /* the push starts from a trained net */
        assert_int_equal(gpp_stage_run(&req, &io, NULL, &err), 0);
    req.kind = kind;
    req.index = 1;
    req.input = kind == GPP_STAGE_TRAIN ? NULL : in;
    req.output = straight;
    cJSON *s1 = NULL, *s2 = NULL;
    c.metrics = 0;
    assert_int_equal(gpp_stage_run(&req, &io, &s1, &err), 0);
    int full = c.metrics;

    /* cancelled in the second epoch: the partial checkpoint of epoch 1 stays */
    c.at = 0.6;
    atomic_store(&c.flag, 0);
    req.output = resumed;
    req.partial = part;
    assert_int_equal(gpp_stage_run(&req, &io, NULL, &err), GPP_EAGAIN);
    assert_string_equal(err.code, "cancelled");
    assert_int_equal(access(resumed, F_OK), -1);
    assert_int_equal(access(part, R_OK), 0);
    c.at = 0;
    atomic_store(&c.flag, 0);
    c.metrics = 0;
    assert_int_equal(gpp_stage_run(&req, &io, &s2, &err), 0);
    assert_int_equal(access(part, F_OK), -1);   /* removed when the stage ends */
    assert_true(c.metrics > 0 && c.metrics < full);   /* only the second epoch ran */
    size_t la, lb;
    unsigned char *a = sf_read(straight, &la), *b = sf_read(resumed, &lb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    assert_true(cJSON_Compare(s1, s2, 1));
    free(a);
    free(b);
    cJSON_Delete(s1);
    cJSON_Delete(s2);
    gpp_stage_data_free(d);
    gpp_jobspec_free(spec);
    sf_rmtree(dir);
    free(dir);
}

static void test_stage_resume_train(void **state)
{
    (void)state;
    stage_resume(GPP_STAGE_TRAIN);
}

static void test_stage_resume_push(void **state)
{
    (void)state;
    stage_resume(GPP_STAGE_PUSH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_resume_bitwise_1thread),
        cmocka_unit_test(test_resume_bitwise_2threads),
        cmocka_unit_test(test_stage_resume_train),
        cmocka_unit_test(test_stage_resume_push),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
