/* Worker protocol: frames, the incremental decoder under every chunking, and
 * the typed messages (round trips, and one refusal per rule). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpp/proto.h"
#include "gpp/rng.h"

#define SHA_A "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_B "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_C "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"

/* ---- sample messages --------------------------------------------------------- */

static cJSON *g_spec, *g_summary;
static const char *g_cached[3] = {SHA_A, SHA_B, SHA_C};
static gpp_proto_point g_points[5];
static uint8_t g_blob_data[3000];
static uint8_t g_blob_sha[32];

static int setup(void **state)
{
    (void)state;
    g_spec = cJSON_Parse("{\"dataset\":\"fashion-mnist\",\"model\":\"lenet5\","
                         "\"train\":{\"epochs\":2,\"lr\":0.01},\"seed\":1,"
                         "\"name\":\"caf\\u00e9 \\u2603\"}");
    g_summary = cJSON_Parse("{\"params\":61706,\"val_accuracy\":0.8912,"
                            "\"layers\":[{\"name\":\"conv0\",\"width\":6}]}");
    if (!g_spec || !g_summary) return -1;
    const char *names[] = {"loss", "acc", "lr", "loss", "val_accuracy"};
    double values[] = {2.302585, 0.1, 0.01, 1e-300, 0.8912345678901234};
    for (int i = 0; i < 5; i++) {
        g_points[i].iteration = 1000 + i;
        g_points[i].name = names[i];
        g_points[i].value = values[i];
        g_points[i].time_ms = 1700000000000LL + i;
    }
    gpp_rng r;
    gpp_rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof g_blob_data; i++) g_blob_data[i] = (uint8_t)gpp_rng_next(&r);
    gpp_sha256(g_blob_data, sizeof g_blob_data, g_blob_sha);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cJSON_Delete(g_spec);
    cJSON_Delete(g_summary);
    return 0;
}

/* A fully populated message of the given type; `variant` 1 leaves the
 * optional fields out (or, for blob, picks an other chunk). */
static gpp_msg sample(int type, int variant)
{
    gpp_msg m;
    memset(&m, 0, sizeof m);
    m.type = (gpp_msg_type)type;
    switch (type) {
    case GPP_MSG_HELLO: {
        gpp_msg_hello *h = &m.hello;
        h->proto = 1;
        h->token = "tok-0123456789abcdef";
        h->name = "node7:4242";
        h->n_devices = 2;
        h->devices[0] = (gpp_proto_device){GPP_PROTO_DEV_CPU, 0, "AMD EPYC", 131072};
        h->devices[1] = (gpp_proto_device){GPP_PROTO_DEV_CUDA, 1, "NVIDIA H100", 81559};
        h->threads = 16;
        h->n_labels = 2;
        h->labels[0] = (gpp_proto_label){"zone", "eu-1"};
        h->labels[1] = (gpp_proto_label){"gpu", ""};
        if (variant == 0) {
            h->worker_id = "w-17";
            h->running_stage_id = "s-42";
            h->running_attempt = 3;
            h->n_cached = 3;
            h->cached = g_cached;
        }
        break;
    }
    case GPP_MSG_WELCOME:
        m.welcome = (gpp_msg_welcome){1, "w-17", 5000, 60, GPP_FRAME_MAX};
        break;
    case GPP_MSG_ASSIGN: {
        gpp_msg_assign *a = &m.assign;
        a->job_id = "j-1";
        a->stage_id = "s-42";
        a->attempt = 2;
        a->kind = variant ? GPP_PROTO_STAGE_BASELINE : GPP_PROTO_STAGE_PRUNE;
        a->index = 5;
        a->spec = g_spec;
        if (variant == 0) a->input = (gpp_proto_file){NULL, SHA_A, 123456789012LL};
        a->dataset_name = "fashion-mnist";
        a->dataset_format = "idx";
        a->n_files = variant ? 0 : 2;
        a->files[0] = (gpp_proto_file){"train-images-idx3-ubyte", SHA_B, 47040016};
        a->files[1] = (gpp_proto_file){"train-labels-idx1-ubyte", SHA_C, 60008};
        break;
    }
    case GPP_MSG_FETCH:
        m.fetch.sha256 = SHA_B;
        break;
    case GPP_MSG_BLOB:
        memcpy(m.blob.sha256, g_blob_sha, 32);
        m.blob.total = sizeof g_blob_data;
        m.blob.offset = variant ? 1000 : 0;
        m.blob.len = variant ? 2000 : 1000;
        m.blob.data = g_blob_data + m.blob.offset;
        break;
    case GPP_MSG_METRICS:
        m.metrics = (gpp_msg_metrics){"s-42", 2, 17, variant ? 1 : 5, g_points};
        break;
    case GPP_MSG_ACK:
        m.ack = (gpp_msg_ack){"s-42", 2, 17};
        break;
    case GPP_MSG_LOG:
        if (variant == 0) m.log = (gpp_msg_log){"s-42", 2, GPP_PROTO_LOG_WARN,
                                                "lr \"0.1\" too high\n\ttab \xc3\xa9", 1700000000123LL};
        else m.log = (gpp_msg_log){NULL, 0, GPP_PROTO_LOG_DEBUG, "", 0};
        break;
    case GPP_MSG_RESULT:
        m.result = (gpp_msg_result){"s-42", 2, {NULL, SHA_C, 0}, g_summary};
        break;
    case GPP_MSG_FAIL:
        m.fail = (gpp_msg_fail){"s-42", 2, variant ? GPP_PROTO_FAIL_INTERNAL : GPP_PROTO_FAIL_OOM,
                                variant ? 0 : 1, "cudaMalloc: out of memory (8 GiB)"};
        break;
    case GPP_MSG_CANCEL:
        m.cancel = (gpp_msg_cancel){"s-42", 2};
        break;
    case GPP_MSG_PING:
        if (variant == 0) m.ping = (gpp_msg_ping){1700000000999LL, "s-42", 2, 1, 0.375};
        else m.ping = (gpp_msg_ping){5, NULL, 0, 0, 0.0};
        break;
    case GPP_MSG_PONG:
        m.pong.time_ms = 1700000000999LL;
        break;
    case GPP_MSG_BYE:
        m.bye.reason = variant ? "" : "shutting down";
        break;
    default:   /* drain */
        break;
    }
    return m;
}

/* Encode m, decode the single frame, parse it into *out. */
static void round_trip(const gpp_msg *m, gpp_msg *out)
{
    gpp_buf b = {0};
    gpp_error err;
    gpp_error_clear(&err);
    int rc = gpp_msg_encode(&b, m, &err);
    if (rc) fail_msg("encode %s: %s (%s)", gpp_msg_type_name((int)m->type), err.message, err.field);
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    gpp_frame f;
    assert_int_equal(gpp_decoder_feed(&d, b.data, b.len, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(f.type, (int)m->type);
    assert_int_equal(f.len + GPP_FRAME_HEADER, b.len);
    rc = gpp_msg_parse(&f, out, &err);
    if (rc) fail_msg("parse %s: %s", gpp_msg_type_name((int)m->type), err.message);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 0);
    assert_int_equal(gpp_decoder_offset(&d), b.len);
    gpp_decoder_free(&d);
    if (m->type == GPP_MSG_BLOB) {   /* parsed blob data points into the frame: copy it */
        static uint8_t keep[sizeof g_blob_data];
        memcpy(keep, out->blob.data, out->blob.len);
        out->blob.data = keep;
    }
    gpp_buf_free(&b);
}

/* Parse a frame built from (type, payload text); returns rc, fills err. */
static int parse_text(int type, const char *text, size_t len, gpp_error *err)
{
    gpp_frame f = {.type = type, .payload = (const uint8_t *)text, .len = len};
    gpp_msg m;
    gpp_error_clear(err);
    int rc = gpp_msg_parse(&f, &m, err);
    gpp_msg_free(&m);
    return rc;
}

/* ---- names ------------------------------------------------------------------- */

static void test_type_names(void **state)
{
    (void)state;
    const char *want[] = {"hello", "welcome", "assign", "fetch", "blob", "metrics", "ack",
                          "log", "result", "fail", "cancel", "ping", "pong", "bye", "drain"};
    for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++) assert_string_equal(gpp_msg_type_name(t), want[t - 1]);
    assert_null(gpp_msg_type_name(0));
    assert_null(gpp_msg_type_name(16));
    assert_null(gpp_msg_type_name(-1));
    assert_null(gpp_msg_type_name(255));
    assert_string_equal(gpp_proto_stage_kind_name(GPP_PROTO_STAGE_FINETUNE), "finetune");
    assert_string_equal(gpp_proto_device_kind_name(GPP_PROTO_DEV_CUDA), "cuda");
    assert_string_equal(gpp_proto_log_level_name(GPP_PROTO_LOG_WARN), "warn");
    assert_string_equal(gpp_proto_fail_class_name(GPP_PROTO_FAIL_INVALID_SPEC), "invalid_spec");
    assert_null(gpp_proto_fail_class_name(6));
}

/* ---- round trips --------------------------------------------------------------- */

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++) {
            gpp_msg m = sample(t, variant), back;
            round_trip(&m, &back);
            assert_int_equal(back.type, t);
            if (!gpp_msg_equal(&m, &back))
                fail_msg("%s variant %d differs after a round trip", gpp_msg_type_name(t), variant);
            gpp_msg_free(&back);
        }
    }
}

/* The equality used above is checked against explicit field reads. */
static void test_round_trip_fields(void **state)
{
    (void)state;
    gpp_msg m = sample(GPP_MSG_HELLO, 0), b;
    round_trip(&m, &b);
    assert_int_equal(b.hello.proto, 1);
    assert_string_equal(b.hello.token, "tok-0123456789abcdef");
    assert_string_equal(b.hello.worker_id, "w-17");
    assert_string_equal(b.hello.name, "node7:4242");
    assert_int_equal(b.hello.n_devices, 2);
    assert_int_equal(b.hello.devices[1].kind, GPP_PROTO_DEV_CUDA);
    assert_int_equal(b.hello.devices[1].index, 1);
    assert_string_equal(b.hello.devices[1].name, "NVIDIA H100");
    assert_int_equal(b.hello.devices[0].memory_mb, 131072);
    assert_int_equal(b.hello.threads, 16);
    assert_int_equal(b.hello.n_labels, 2);
    assert_string_equal(b.hello.labels[0].key, "zone");
    assert_string_equal(b.hello.labels[0].value, "eu-1");
    assert_string_equal(b.hello.labels[1].value, "");
    assert_string_equal(b.hello.running_stage_id, "s-42");
    assert_int_equal(b.hello.running_attempt, 3);
    assert_int_equal(b.hello.n_cached, 3);
    assert_string_equal(b.hello.cached[2], SHA_C);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_HELLO, 1);
    round_trip(&m, &b);
    assert_null(b.hello.worker_id);
    assert_null(b.hello.running_stage_id);
    assert_int_equal(b.hello.n_cached, 0);
    assert_null(b.hello.cached);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_ASSIGN, 0);
    round_trip(&m, &b);
    assert_string_equal(b.assign.job_id, "j-1");
    assert_int_equal(b.assign.kind, GPP_PROTO_STAGE_PRUNE);
    assert_int_equal(b.assign.index, 5);
    assert_true(cJSON_Compare(b.assign.spec, g_spec, 1));
    assert_string_equal(cJSON_GetObjectItem(b.assign.spec, "name")->valuestring, "caf\xc3\xa9 \xe2\x98\x83");
    assert_string_equal(b.assign.input.sha256, SHA_A);
    assert_int_equal(b.assign.input.size, 123456789012LL);
    assert_int_equal(b.assign.n_files, 2);
    assert_string_equal(b.assign.files[1].name, "train-labels-idx1-ubyte");
    assert_int_equal(b.assign.files[0].size, 47040016);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_ASSIGN, 1);
    round_trip(&m, &b);
    assert_null(b.assign.input.sha256);
    assert_int_equal(b.assign.n_files, 0);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_METRICS, 0);
    round_trip(&m, &b);
    assert_int_equal(b.metrics.n_points, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b.metrics.points[i].iteration, g_points[i].iteration);
        assert_string_equal(b.metrics.points[i].name, g_points[i].name);
        assert_true(b.metrics.points[i].value == g_points[i].value);   /* bit exact */
        assert_int_equal(b.metrics.points[i].time_ms, g_points[i].time_ms);
    }
    assert_int_equal(b.metrics.seq, 17);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_LOG, 0);
    round_trip(&m, &b);
    assert_string_equal(b.log.line, "lr \"0.1\" too high\n\ttab \xc3\xa9");
    assert_int_equal(b.log.level, GPP_PROTO_LOG_WARN);
    assert_int_equal(b.log.time_ms, 1700000000123LL);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_LOG, 1);
    round_trip(&m, &b);
    assert_null(b.log.stage_id);
    assert_int_equal(b.log.attempt, 0);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_FAIL, 0);
    round_trip(&m, &b);
    assert_int_equal(b.fail.cls, GPP_PROTO_FAIL_OOM);
    assert_int_equal(b.fail.retryable, 1);
    assert_string_equal(b.fail.reason, "cudaMalloc: out of memory (8 GiB)");
    gpp_msg_free(&b);

    m = sample(GPP_MSG_PING, 0);
    round_trip(&m, &b);
    assert_int_equal(b.ping.has_progress, 1);
    assert_true(b.ping.progress == 0.375);
    gpp_msg_free(&b);
    m = sample(GPP_MSG_PING, 1);
    round_trip(&m, &b);
    assert_int_equal(b.ping.has_progress, 0);
    assert_null(b.ping.stage_id);
    gpp_msg_free(&b);

    m = sample(GPP_MSG_BLOB, 1);
    round_trip(&m, &b);
    assert_int_equal(b.blob.offset, 1000);
    assert_int_equal(b.blob.total, sizeof g_blob_data);
    assert_int_equal(b.blob.len, 2000);
    assert_memory_equal(b.blob.data, g_blob_data + 1000, 2000);
    assert_memory_equal(b.blob.sha256, g_blob_sha, 32);
    gpp_msg_free(&b);

    /* gpp_msg_equal does notice a difference */
    gpp_msg x = sample(GPP_MSG_HELLO, 0), y = sample(GPP_MSG_HELLO, 0);
    assert_true(gpp_msg_equal(&x, &y));
    y.hello.labels[1].value = "x";
    assert_false(gpp_msg_equal(&x, &y));
    x = sample(GPP_MSG_METRICS, 0);
    y = sample(GPP_MSG_METRICS, 1);
    assert_false(gpp_msg_equal(&x, &y));
}

/* Control payloads are compact JSON objects; the header is [L BE][type]. */
static void test_wire_bytes(void **state)
{
    (void)state;
    gpp_buf b = {0};
    gpp_msg m = {.type = GPP_MSG_PONG, .pong = {.time_ms = 42}};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    const char *want = "{\"time_ms\":42}";
    size_t L = strlen(want);
    assert_int_equal(b.len, 5 + L);
    const uint8_t hdr[5] = {0, 0, 0, (uint8_t)L, GPP_MSG_PONG};
    assert_memory_equal(b.data, hdr, 5);
    assert_memory_equal(b.data + 5, want, L);

    m = (gpp_msg){.type = GPP_MSG_DRAIN};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);    /* appends */
    assert_int_equal(b.len, 5 + L + 5 + 2);
    assert_memory_equal(b.data + 5 + L, "\0\0\0\x02\x0f{}", 7);

    /* blob layout: sha, offset, total (big-endian), data */
    gpp_buf_free(&b);
    uint8_t sha[32];
    memset(sha, 0xab, sizeof sha);
    assert_int_equal(gpp_frame_append_blob(&b, sha, 0x0102030405ULL, 0x0102030408ULL, "xyz", 3), 0);
    assert_int_equal(b.len, 5 + 48 + 3);
    assert_memory_equal(b.data, "\0\0\0\x33\x05", 5);
    assert_memory_equal(b.data + 5, sha, 32);
    assert_memory_equal(b.data + 37, "\0\0\0\x01\x02\x03\x04\x05", 8);
    assert_memory_equal(b.data + 45, "\0\0\0\x01\x02\x03\x04\x08", 8);
    assert_memory_equal(b.data + 53, "xyz", 3);
    gpp_buf_free(&b);

    /* every control message's payload is compact (no newline, no ": ") */
    for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++) {
        if (t == GPP_MSG_BLOB) continue;
        gpp_msg s = sample(t, 0);
        assert_int_equal(gpp_msg_encode(&b, &s, NULL), 0);
        assert_int_equal(b.data[0], 0);                 /* all below 16 MiB */
        size_t len = (size_t)b.data[1] << 16 | (size_t)b.data[2] << 8 | b.data[3];
        assert_int_equal(len + 5, b.len);
        assert_int_equal(b.data[4], t);
        assert_int_equal(b.data[5], '{');
        assert_int_equal(b.data[b.len - 1], '}');
        assert_null(memchr(b.data + 5, '\n', len));
        gpp_buf_free(&b);
    }
}

/* ---- the decoder under every chunking -------------------------------------------- */

typedef struct stream {
    gpp_buf bytes;
    int n;              /* frames */
} stream;

/* ~50 frames: every type, both variants, blobs of several sizes (one bigger
 * than anything a single small chunk holds), zero-length-ish payloads. */
static void make_stream(stream *s)
{
    memset(s, 0, sizeof *s);
    gpp_rng r;
    gpp_rng_seed(&r, 50);
    static uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)gpp_rng_next(&r);
    for (int k = 0; k < 50; k++) {
        int t = 1 + (int)(gpp_rng_next(&r) % GPP_MSG_TYPE_MAX);
        gpp_msg m = sample(t, (int)(gpp_rng_next(&r) & 1));
        if (t == GPP_MSG_PING) m.ping.time_ms = k;
        if (t == GPP_MSG_BLOB && k % 3 == 0) {
            size_t len = (size_t)(gpp_rng_next(&r) % sizeof big);
            m.blob.data = big;
            m.blob.len = len;
            m.blob.offset = 7;
            m.blob.total = 7 + len;
        }
        gpp_error err;
        assert_int_equal(gpp_msg_encode(&s->bytes, &m, &err), 0);
        s->n++;
    }
}

typedef struct decoded {
    gpp_buf frames[64];   /* a copy of each frame's payload */
    int types[64];
    int n;
} decoded;

static void decoded_free(decoded *o)
{
    for (int i = 0; i < o->n; i++) gpp_buf_free(&o->frames[i]);
    o->n = 0;
}

/* Feed the stream in the given chunk sizes.  Each chunk lives in its own
 * heap copy that is scribbled over and freed once drained, so a decoder that
 * kept a pointer into old input would be caught (by the comparison or ASan). */
static void decode_chunked(const stream *s, const size_t *sizes, size_t nsizes, decoded *o)
{
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    gpp_error err;
    size_t off = 0;
    o->n = 0;
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i];
        uint8_t *chunk = malloc(n ? n : 1);
        assert_non_null(chunk);
        memcpy(chunk, s->bytes.data + off, n);
        off += n;
        assert_int_equal(gpp_decoder_feed(&d, chunk, n, &err), 0);
        gpp_frame f;
        int rc;
        while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) {
            assert_true(o->n < 64);
            memset(&o->frames[o->n], 0, sizeof o->frames[o->n]);
            assert_int_equal(gpp_buf_append(&o->frames[o->n], f.payload, f.len), 0);
            o->types[o->n++] = f.type;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(gpp_decoder_offset(&d), off);
        memset(chunk, 0xA5, n);
        free(chunk);
    }
    assert_int_equal(off, s->bytes.len);
    gpp_decoder_free(&d);
}

/* The same message sequence: every frame parses to a message equal to the
 * reference's. */
static void assert_same_messages(const decoded *ref, const decoded *got)
{
    assert_int_equal(got->n, ref->n);
    for (int i = 0; i < ref->n; i++) {
        assert_int_equal(got->types[i], ref->types[i]);
        assert_int_equal(got->frames[i].len, ref->frames[i].len);
        gpp_frame fa = {ref->types[i], ref->frames[i].data, ref->frames[i].len};
        gpp_frame fb = {got->types[i], got->frames[i].data, got->frames[i].len};
        gpp_msg a, b;
        gpp_error err;
        assert_int_equal(gpp_msg_parse(&fa, &a, &err), 0);
        assert_int_equal(gpp_msg_parse(&fb, &b, &err), 0);
        assert_true(gpp_msg_equal(&a, &b));
        gpp_msg_free(&a);
        gpp_msg_free(&b);
    }
}

static void test_decoder_chunkings(void **state)
{
    (void)state;
    stream s;
    make_stream(&s);
    assert_int_equal(s.n, 50);
    size_t total = s.bytes.len;
    size_t *sizes = malloc(total * sizeof *sizes);
    assert_non_null(sizes);

    /* reference: the whole stream in one feed, all frames zero-copy */
    decoded ref, got;
    sizes[0] = total;
    decode_chunked(&s, sizes, 1, &ref);
    assert_int_equal(ref.n, 50);

    /* byte by byte */
    for (size_t i = 0; i < total; i++) sizes[i] = 1;
    decode_chunked(&s, sizes, total, &got);
    assert_same_messages(&ref, &got);
    decoded_free(&got);

    /* 1000 seeded random chunkings: small, medium and large pieces, and empty feeds */
    gpp_rng r;
    gpp_rng_seed(&r, 1000);
    for (int round = 0; round < 1000; round++) {
        size_t n = 0, off = 0;
        uint64_t scale = (uint64_t[]){7, 64, 1500, 40000}[round % 4];
        while (off < total) {
            size_t c = (size_t)(gpp_rng_next(&r) % (scale + 1));
            if (c > total - off) c = total - off;
            sizes[n++] = c;
            off += c;
            if (n == total) {   /* never more pieces than bytes: finish in one */
                sizes[n - 1] += total - off;
                off = total;
            }
        }
        decode_chunked(&s, sizes, n, &got);
        assert_same_messages(&ref, &got);
        decoded_free(&got);
    }
    decoded_free(&ref);
    free(sizes);
    gpp_buf_free(&s.bytes);
}

/* A stream cut anywhere is "need more", never an error: complete frames come
 * out, the rest waits. */
static void test_truncated_stream(void **state)
{
    (void)state;
    gpp_buf b = {0};
    size_t ends[3];
    int types[3] = {GPP_MSG_HELLO, GPP_MSG_BLOB, GPP_MSG_DRAIN};
    for (int i = 0; i < 3; i++) {
        gpp_msg m = sample(types[i], 0);
        assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
        ends[i] = b.len;
    }
    for (size_t cut = 0; cut <= b.len; cut++) {
        gpp_decoder d;
        gpp_decoder_init(&d, 0);
        gpp_error err;
        gpp_frame f;
        assert_int_equal(gpp_decoder_feed(&d, b.data, cut, &err), 0);
        int frames = 0, rc;
        while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) frames++;
        assert_int_equal(rc, 0);
        int want = 0;
        for (int i = 0; i < 3; i++) want += ends[i] <= cut;
        assert_int_equal(frames, want);
        assert_int_equal(gpp_decoder_offset(&d), cut);
        /* asking again is still "need more" */
        assert_int_equal(gpp_decoder_next(&d, &f, &err), 0);
        /* the rest completes it */
        assert_int_equal(gpp_decoder_feed(&d, b.data + cut, b.len - cut, &err), 0);
        while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) frames++;
        assert_int_equal(rc, 0);
        assert_int_equal(frames, 3);
        gpp_decoder_free(&d);
    }
    gpp_buf_free(&b);
}

/* ---- frame-level refusals ---------------------------------------------------------- */

static void put_header(uint8_t *h, uint32_t len, uint8_t type)
{
    h[0] = (uint8_t)(len >> 24); h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);  h[3] = (uint8_t)len; h[4] = type;
}

/* A stream: one good ping, then a bad header, then 100 more bytes. */
static size_t bad_stream(uint8_t *out, uint32_t len, uint8_t type, size_t *good_len)
{
    gpp_buf b = {0};
    gpp_msg m = {.type = GPP_MSG_PING, .ping = {.time_ms = 1}};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    memcpy(out, b.data, b.len);
    *good_len = b.len;
    put_header(out + b.len, len, type);
    memset(out + b.len + 5, '{', 100);
    size_t n = b.len + 5 + 100;
    gpp_buf_free(&b);
    return n;
}

/* Whole and byte by byte: the error comes with exactly the 5th header byte,
 * after the good frame, and nothing past the header is consumed or buffered. */
static void check_bad_header(uint32_t len, uint8_t type, int want_rc, const char *want_code)
{
    uint8_t s[256];
    size_t good;
    size_t n = bad_stream(s, len, type, &good);
    gpp_error err;
    gpp_frame f;

    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    assert_int_equal(gpp_decoder_feed(&d, s, n, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(f.type, GPP_MSG_PING);
    gpp_error_clear(&err);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), want_rc);
    assert_string_equal(err.code, want_code);
    assert_int_equal(gpp_decoder_offset(&d), good + 5);
    assert_true(d.buf_len == 0 && d.buf_cap == 0);       /* nothing copied */
    gpp_decoder_free(&d);

    gpp_decoder_init(&d, 0);
    size_t i;
    int rc = 0, frames = 0;
    for (i = 0; i < n; i++) {
        assert_int_equal(gpp_decoder_feed(&d, s + i, 1, &err), 0);
        while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) frames++;
        if (rc < 0) break;
    }
    assert_int_equal(frames, 1);
    assert_int_equal(rc, want_rc);
    assert_int_equal(i, good + 4);                       /* the 5th header byte */
    assert_string_equal(err.code, want_code);
    assert_int_equal(gpp_decoder_offset(&d), good + 5);
    assert_true(d.buf_cap <= 64);                        /* only the header was held */
    gpp_decoder_free(&d);
}

static void test_oversize_header(void **state)
{
    (void)state;
    check_bad_header(GPP_FRAME_MAX + 1, GPP_MSG_LOG, GPP_ETOOBIG, "frame_too_large");
    check_bad_header(0xffffffffu, GPP_MSG_BLOB, GPP_ETOOBIG, "frame_too_large");
    gpp_error err;
    gpp_frame f;
    uint8_t h[5];
    put_header(h, GPP_FRAME_MAX + 1, GPP_MSG_LOG);
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    assert_int_equal(gpp_decoder_feed(&d, h, 5, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), GPP_ETOOBIG);
    assert_string_equal(err.field, "length");
    assert_non_null(strstr(err.message, "4194305"));
    gpp_decoder_free(&d);
}

static void test_unknown_type(void **state)
{
    (void)state;
    check_bad_header(10, 16, GPP_EFORMAT, "unknown_type");
    check_bad_header(10, 255, GPP_EFORMAT, "unknown_type");
    /* found before the payload, even a huge one, is buffered */
    check_bad_header(GPP_FRAME_MAX, 200, GPP_EFORMAT, "unknown_type");
    /* parsing a frame of unknown type refuses it too */
    gpp_error err;
    assert_int_equal(parse_text(16, "{}", 2, &err), GPP_EFORMAT);
    assert_string_equal(err.code, "unknown_type");
    /* and so does building one */
    gpp_buf b = {0};
    assert_int_equal(gpp_frame_append(&b, 16, "{}", 2), GPP_EINVAL);
    assert_int_equal(gpp_frame_append(&b, 0, "{}", 2), GPP_EINVAL);
    gpp_msg m = {.type = (gpp_msg_type)16};
    assert_int_equal(gpp_msg_encode(&b, &m, &err), GPP_EINVAL);
    assert_int_equal(b.len, 0);
    gpp_buf_free(&b);
}

static void test_zero_type(void **state)
{
    (void)state;
    check_bad_header(2, 0, GPP_EFORMAT, "unknown_type");
    check_bad_header(0, 0, GPP_EFORMAT, "unknown_type");
    gpp_error err;
    assert_int_equal(parse_text(0, "{}", 2, &err), GPP_EFORMAT);
    assert_string_equal(err.code, "unknown_type");
}

/* Payload exactly at the maximum is accepted, one more byte is refused. */
static void test_max_size(void **state)
{
    (void)state;
    gpp_buf b = {0};
    uint8_t *payload = malloc(GPP_FRAME_MAX + 1);
    assert_non_null(payload);
    memset(payload, ' ', GPP_FRAME_MAX + 1);
    assert_int_equal(gpp_frame_append(&b, GPP_MSG_LOG, payload, GPP_FRAME_MAX), 0);
    assert_int_equal(b.len, 5 + (size_t)GPP_FRAME_MAX);
    assert_int_equal(gpp_frame_append(&b, GPP_MSG_LOG, payload, GPP_FRAME_MAX + 1), GPP_ETOOBIG);
    assert_int_equal(b.len, 5 + (size_t)GPP_FRAME_MAX);  /* unchanged */

    gpp_error err;
    gpp_frame f;
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    /* in two pieces, so the decoder has to hold the whole maximum */
    assert_int_equal(gpp_decoder_feed(&d, b.data, 1000, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 0);
    assert_int_equal(gpp_decoder_feed(&d, b.data + 1000, b.len - 1000, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(f.len, GPP_FRAME_MAX);
    assert_int_equal(f.type, GPP_MSG_LOG);
    assert_true(d.buf_cap <= 5 + (size_t)GPP_FRAME_MAX);
    /* the payload is 4 MiB of spaces: a frame, but not a message */
    gpp_msg m;
    assert_int_equal(gpp_msg_parse(&f, &m, &err), GPP_EFORMAT);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 0);
    assert_int_equal(d.buf_cap, 0);                       /* the 4 MiB went back */
    uint8_t h[5];
    put_header(h, GPP_FRAME_MAX + 1, GPP_MSG_LOG);
    assert_int_equal(gpp_decoder_feed(&d, h, 5, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), GPP_ETOOBIG);
    gpp_decoder_free(&d);
    gpp_buf_free(&b);

    /* a configured maximum: 100 accepted, 101 refused */
    gpp_decoder_init(&d, 100);
    assert_int_equal(gpp_frame_append(&b, GPP_MSG_BYE, payload, 100), 0);
    assert_int_equal(gpp_frame_append(&b, GPP_MSG_BYE, payload, 101), 0);
    assert_int_equal(gpp_decoder_feed(&d, b.data, b.len, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(f.len, 100);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), GPP_ETOOBIG);
    assert_int_equal(gpp_decoder_offset(&d), 105 + 5);
    gpp_decoder_free(&d);
    gpp_buf_free(&b);
    free(payload);
}

/* After an error the decoder refuses everything and consumes nothing more. */
static void test_error_is_sticky(void **state)
{
    (void)state;
    uint8_t s[256];
    size_t good;
    size_t n = bad_stream(s, 3, 99, &good);
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    gpp_error err, first;
    gpp_frame f;
    assert_int_equal(gpp_decoder_feed(&d, s, n, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(gpp_decoder_next(&d, &f, &first), GPP_EFORMAT);
    uint64_t at = gpp_decoder_offset(&d);
    gpp_buf ok = {0};
    gpp_msg m = {.type = GPP_MSG_PONG, .pong = {.time_ms = 3}};
    assert_int_equal(gpp_msg_encode(&ok, &m, NULL), 0);
    for (int i = 0; i < 3; i++) {
        gpp_error_clear(&err);
        assert_int_equal(gpp_decoder_feed(&d, ok.data, ok.len, &err), GPP_EFORMAT);
        assert_string_equal(err.code, first.code);
        assert_string_equal(err.message, first.message);
        gpp_error_clear(&err);
        assert_int_equal(gpp_decoder_next(&d, &f, &err), GPP_EFORMAT);
        assert_string_equal(err.code, "unknown_type");
        assert_int_equal(gpp_decoder_offset(&d), at);
    }
    assert_int_equal(gpp_decoder_next(&d, &f, NULL), GPP_EFORMAT);
    gpp_decoder_free(&d);
    gpp_buf_free(&ok);
}

/* Feeding again before draining is a usage error that breaks nothing. */
static void test_feed_before_drain(void **state)
{
    (void)state;
    gpp_buf b = {0};
    gpp_msg m = {.type = GPP_MSG_PONG, .pong = {.time_ms = 3}};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    gpp_error err;
    gpp_frame f;
    assert_int_equal(gpp_decoder_feed(&d, b.data, b.len, &err), 0);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(gpp_decoder_feed(&d, b.data, b.len, &err), GPP_EINVAL);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 0);
    assert_int_equal(gpp_decoder_feed(&d, b.data, b.len, &err), 0);   /* now fine */
    assert_int_equal(gpp_decoder_next(&d, &f, &err), 1);
    assert_int_equal(f.type, GPP_MSG_PONG);
    assert_int_equal(gpp_decoder_feed(&d, NULL, 0, &err), GPP_EINVAL);  /* one still pending */
    gpp_decoder_free(&d);
    gpp_decoder_free(NULL);
    gpp_buf_free(&b);
    gpp_buf_free(NULL);
    gpp_msg_free(NULL);
}

/* ---- payload-level refusals --------------------------------------------------------- */

static void test_malformed_json(void **state)
{
    (void)state;
    gpp_error err;
    const char *bad[] = {
        "{", "{\"time_ms\":1", "{\"time_ms\":}", "{'time_ms':1}", "time_ms",
        "{\"time_ms\":1} x", "{\"time_ms\":1}{}", "{\"time_ms\":1,}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(parse_text(GPP_MSG_PONG, bad[i], strlen(bad[i]), &err), GPP_EFORMAT);
        assert_string_equal(err.code, "malformed");
    }
    /* empty payload */
    assert_int_equal(parse_text(GPP_MSG_PONG, "", 0, &err), GPP_EFORMAT);
    assert_string_equal(err.code, "malformed");
    /* trailing whitespace is fine */
    assert_int_equal(parse_text(GPP_MSG_PONG, "{\"time_ms\":1} \n", 15, &err), 0);
    /* a NUL byte, invalid UTF-8 (bare continuation, overlong, surrogate, truncated) */
    assert_int_equal(parse_text(GPP_MSG_BYE, "{\"reason\":\"a\0b\"}", 16, &err), GPP_EFORMAT);
    assert_non_null(strstr(err.message, "NUL"));
    const char *utf8[] = {"{\"reason\":\"\x80\"}", "{\"reason\":\"\xc0\xaf\"}",
                          "{\"reason\":\"\xed\xa0\x80\"}", "{\"reason\":\"\xe2\x82\"}",
                          "{\"reason\":\"\xf4\x90\x80\x80\"}", "{\"reason\":\"\xff\"}"};
    for (size_t i = 0; i < sizeof utf8 / sizeof *utf8; i++) {
        assert_int_equal(parse_text(GPP_MSG_BYE, utf8[i], strlen(utf8[i]), &err), GPP_EFORMAT);
        assert_non_null(strstr(err.message, "UTF-8"));
    }
    const char *okutf = "{\"reason\":\"\xf0\x9f\x98\x80 \xe2\x82\xac \xc3\xa9\"}";
    assert_int_equal(parse_text(GPP_MSG_BYE, okutf, strlen(okutf), &err), 0);
    /* nesting: 32 levels inside an unknown field are fine, 33 are not */
    char deep[200];
    for (int levels = 31; levels <= 32; levels++) {
        size_t n = 0;
        n += (size_t)sprintf(deep, "{\"time_ms\":1,\"x\":");
        for (int i = 0; i < levels; i++) deep[n++] = '[';
        for (int i = 0; i < levels; i++) deep[n++] = ']';
        deep[n++] = '}';
        int rc = parse_text(GPP_MSG_PONG, deep, n, &err);
        if (levels == 31) assert_int_equal(rc, 0);
        else {
            assert_int_equal(rc, GPP_EFORMAT);
            assert_non_null(strstr(err.message, "deeper"));
        }
    }
    /* brackets inside strings do not count */
    char str[200];
    size_t n = (size_t)sprintf(str, "{\"reason\":\"");
    for (int i = 0; i < 60; i++) str[n++] = '[';
    n += (size_t)sprintf(str + n, "\\\"{\"}");
    assert_int_equal(parse_text(GPP_MSG_BYE, str, n, &err), 0);
}

/* Strict JSON: raw control characters in strings, numbers out of the double
 * range. */
static void test_strict_json(void **state)
{
    (void)state;
    gpp_error err;
    assert_int_equal(parse_text(GPP_MSG_BYE, "{\"reason\":\"a\tb\"}", 16, &err), GPP_EFORMAT);
    assert_non_null(strstr(err.message, "control character"));
    assert_int_equal(parse_text(GPP_MSG_BYE, "{\"reason\":\"a\\tb\"}", 17, &err), 0);
    /* whitespace between tokens is fine */
    const char *ws = "{\n\t\"reason\" :\r\n \"x\"}";
    assert_int_equal(parse_text(GPP_MSG_BYE, ws, strlen(ws), &err), 0);
    const char *inf = "{\"time_ms\":1,\"x\":{\"y\":[1e400]}}";
    assert_int_equal(parse_text(GPP_MSG_PONG, inf, strlen(inf), &err), GPP_EFORMAT);
    assert_non_null(strstr(err.message, "range"));
    const char *ninf = "{\"stage_id\":\"s\",\"attempt\":1,\"seq\":0,\"points\":[[1,\"x\",-1e999,2]]}";
    assert_int_equal(parse_text(GPP_MSG_METRICS, ninf, strlen(ninf), &err), GPP_EFORMAT);
}

/* spec and summary travel exactly: every digit, repeated keys in order. */
static void test_json_objects_exact(void **state)
{
    (void)state;
    const char *spec_text = "{\"a\":9007199254740991,\"b\":0.8912345678901234,\"c\":1e-300,"
                            "\"d\":-0.0,\"train\":\"x\",\"train\":{\"lr\":0.1},"
                            "\"e\":[1.7976931348623157e308,5e-324,123456789012345678]}";
    cJSON *spec = cJSON_Parse(spec_text);
    assert_non_null(spec);
    gpp_msg m = sample(GPP_MSG_ASSIGN, 0), b;
    m.assign.spec = spec;
    round_trip(&m, &b);
    assert_true(gpp_msg_equal(&m, &b));
    const cJSON *it = cJSON_GetObjectItem(b.assign.spec, "a");
    assert_true(it->valuedouble == 9007199254740991.0);
    it = cJSON_GetObjectItem(b.assign.spec, "b");
    assert_true(it->valuedouble == 0.8912345678901234);
    it = cJSON_GetArrayItem(cJSON_GetObjectItem(b.assign.spec, "e"), 1);
    assert_true(it->valuedouble == 5e-324);
    /* both "train" keys are still there, in order */
    const cJSON *t1 = cJSON_GetObjectItem(b.assign.spec, "train");
    assert_true(cJSON_IsString(t1));
    assert_true(cJSON_IsObject(t1->next) && strcmp(t1->next->string, "train") == 0);
    gpp_msg_free(&b);
    /* a difference in the last bit is a difference */
    cJSON *other = cJSON_Duplicate(spec, 1);
    cJSON_SetNumberValue(cJSON_GetObjectItem(other, "b"), nextafter(0.8912345678901234, 1.0));
    gpp_msg m2 = m;
    m2.assign.spec = other;
    assert_false(gpp_msg_equal(&m, &m2));
    cJSON_Delete(other);
    cJSON_Delete(spec);
}

static void test_not_an_object(void **state)
{
    (void)state;
    gpp_error err;
    const char *bad[] = {"[]", "1", "\"s\"", "null", "true", "[{\"time_ms\":1}]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++) {
            if (t == GPP_MSG_BLOB) continue;
            assert_int_equal(parse_text(t, bad[i], strlen(bad[i]), &err), GPP_EFORMAT);
            assert_string_equal(err.code, "malformed");
            assert_non_null(strstr(err.message, "object"));
        }
    }
    gpp_buf b = {0};
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(gpp_frame_append_json(&b, GPP_MSG_PONG, arr), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_json(&b, GPP_MSG_BLOB, g_spec), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_json(&b, 0, g_spec), GPP_EINVAL);
    assert_int_equal(b.len, 0);
    assert_int_equal(gpp_frame_append_json(&b, GPP_MSG_DRAIN, g_spec), 0);  /* raw: no field checks */
    assert_true(b.len > 5);
    cJSON_Delete(arr);
    gpp_buf_free(&b);
}

/* Replace the item at a '/'-separated path (keys, or indices in arrays) of
 * root with the JSON text `json` (kept as raw text); "-" deletes it. */
static void json_set(cJSON *root, const char *path, const char *json)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    cJSON *parent = root, *it = NULL;
    char *save = NULL, *last = NULL;
    for (char *tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (it) parent = it;
        if (cJSON_IsArray(parent)) it = cJSON_GetArrayItem(parent, atoi(tok));
        else it = cJSON_GetObjectItemCaseSensitive(parent, tok);
        if (!it) fail_msg("no %s in the sample", path);
        last = tok;
    }
    assert_non_null(last);
    if (strcmp(json, "-") == 0) {
        cJSON_Delete(cJSON_DetachItemViaPointer(parent, it));
        return;
    }
    cJSON *v = cJSON_CreateRaw(json);   /* printed verbatim: exact numbers */
    assert_non_null(v);
    /* (ReplaceItemViaPointer would drop the key: replace by name/index) */
    if (cJSON_IsArray(parent)) assert_true(cJSON_ReplaceItemInArray(parent, atoi(last), v));
    else assert_true(cJSON_ReplaceItemInObjectCaseSensitive(parent, last, v));
    it = cJSON_IsArray(parent) ? cJSON_GetArrayItem(parent, atoi(last))
                               : cJSON_GetObjectItemCaseSensitive(parent, last);
    assert_ptr_equal(it, v);
}

/* The sample of `type` as JSON with one change; parse it, return rc. */
static int parse_changed(int type, const char *path, const char *json, gpp_error *err)
{
    gpp_msg m = sample(type, 0);
    gpp_buf b = {0};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    cJSON *root = cJSON_ParseWithLength((const char *)b.data + 5, b.len - 5);
    assert_non_null(root);
    json_set(root, path, json);
    char *text = cJSON_PrintUnformatted(root);
    int rc = parse_text(type, text, strlen(text), err);
    cJSON_free(text);
    cJSON_Delete(root);
    gpp_buf_free(&b);
    return rc;
}

typedef struct bad_case {
    int type;
    const char *path;       /* what to change */
    const char *json;       /* its new value, "-" to delete */
    const char *field;      /* the field the error must name */
} bad_case;

static void test_bad_fields(void **state)
{
    (void)state;
    static char long_line[GPP_PROTO_TEXT_MAX + 8], long_bye[GPP_PROTO_REASON_MAX + 8];
    static char long_id[GPP_PROTO_ID_MAX + 8];
    memset(long_line, 'x', sizeof long_line - 1);
    long_line[0] = '"';
    long_line[GPP_PROTO_TEXT_MAX + 2] = '"';
    long_line[GPP_PROTO_TEXT_MAX + 3] = '\0';          /* 4097 characters */
    memset(long_bye, 'x', sizeof long_bye - 1);
    long_bye[0] = '"';
    long_bye[GPP_PROTO_REASON_MAX + 2] = '"';
    long_bye[GPP_PROTO_REASON_MAX + 3] = '\0';         /* 257 */
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[0] = '"';
    long_id[GPP_PROTO_ID_MAX + 2] = '"';
    long_id[GPP_PROTO_ID_MAX + 3] = '\0';              /* 65 */
    char many_devices[2048] = "[";
    for (int i = 0; i <= GPP_PROTO_MAX_DEVICES; i++)
        strcat(many_devices, i ? ",{\"kind\":\"cpu\",\"index\":0,\"name\":\"c\",\"memory_mb\":0}"
                               : "{\"kind\":\"cpu\",\"index\":0,\"name\":\"c\",\"memory_mb\":0}");
    strcat(many_devices, "]");

    const bad_case cases[] = {
        /* hello */
        {GPP_MSG_HELLO, "threads", "\"4\"", "threads"},
        {GPP_MSG_HELLO, "threads", "0", "threads"},
        {GPP_MSG_HELLO, "threads", "1025", "threads"},
        {GPP_MSG_HELLO, "threads", "2.5", "threads"},
        {GPP_MSG_HELLO, "token", "-", "token"},
        {GPP_MSG_HELLO, "token", "\"\"", "token"},
        {GPP_MSG_HELLO, "token", "7", "token"},
        {GPP_MSG_HELLO, "worker_id", long_id, "worker_id"},
        {GPP_MSG_HELLO, "name", "null", "name"},
        {GPP_MSG_HELLO, "devices", "{}", "devices"},
        {GPP_MSG_HELLO, "devices", many_devices, "devices"},
        {GPP_MSG_HELLO, "devices/1", "\"cuda\"", "devices[1]"},
        {GPP_MSG_HELLO, "devices/1/kind", "\"tpu\"", "devices[1].kind"},
        {GPP_MSG_HELLO, "devices/0/index", "-1", "devices[0].index"},
        {GPP_MSG_HELLO, "devices/0/memory_mb", "\"lots\"", "devices[0].memory_mb"},
        {GPP_MSG_HELLO, "labels", "[]", "labels"},
        {GPP_MSG_HELLO, "labels/zone", "1", "labels.zone"},
        {GPP_MSG_HELLO, "labels", "{\"a\":\"1\",\"a\":\"2\"}", "labels.a"},
        {GPP_MSG_HELLO, "labels", "{\"\":\"1\"}", "labels."},
        {GPP_MSG_HELLO, "running", "\"s-42\"", "running"},
        {GPP_MSG_HELLO, "running/attempt", "0", "running.attempt"},
        {GPP_MSG_HELLO, "cached", "\"x\"", "cached"},
        {GPP_MSG_HELLO, "cached/1", "\"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\"", "cached[1]"},
        /* welcome */
        {GPP_MSG_WELCOME, "heartbeat_ms", "1.5", "heartbeat_ms"},
        {GPP_MSG_WELCOME, "grace_s", "0", "grace_s"},
        {GPP_MSG_WELCOME, "max_frame", "100", "max_frame"},
        {GPP_MSG_WELCOME, "worker_id", "[]", "worker_id"},
        /* assign */
        {GPP_MSG_ASSIGN, "job_id", "1", "job_id"},
        {GPP_MSG_ASSIGN, "attempt", "0", "attempt"},
        {GPP_MSG_ASSIGN, "kind", "\"compress\"", "kind"},
        {GPP_MSG_ASSIGN, "index", "-3", "index"},
        {GPP_MSG_ASSIGN, "spec", "[]", "spec"},
        {GPP_MSG_ASSIGN, "spec", "-", "spec"},
        {GPP_MSG_ASSIGN, "input", "\"x\"", "input"},
        {GPP_MSG_ASSIGN, "input", "-", "input"},
        {GPP_MSG_ASSIGN, "input/size", "-1", "input.size"},
        {GPP_MSG_ASSIGN, "input/size", "1099511627777", "input.size"},
        {GPP_MSG_ASSIGN, "dataset", "\"fashion-mnist\"", "dataset"},
        {GPP_MSG_ASSIGN, "dataset/files/1/sha256", "\"abc\"", "dataset.files[1].sha256"},
        {GPP_MSG_ASSIGN, "dataset/files/0/name", "\"\"", "dataset.files[0].name"},
        {GPP_MSG_ASSIGN, "dataset/format", "false", "dataset.format"},
        /* fetch */
        {GPP_MSG_FETCH, "sha256", "\"" SHA_A "0\"", "sha256"},
        {GPP_MSG_FETCH, "sha256", "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g\"", "sha256"},
        {GPP_MSG_FETCH, "sha256", "1", "sha256"},
        /* metrics */
        {GPP_MSG_METRICS, "points", "[]", "points"},
        {GPP_MSG_METRICS, "points", "{}", "points"},
        {GPP_MSG_METRICS, "points/0", "[1,\"loss\",2]", "points[0]"},
        {GPP_MSG_METRICS, "points/0", "{\"iteration\":1}", "points[0]"},
        {GPP_MSG_METRICS, "points/2/0", "-1", "points[2][0]"},
        {GPP_MSG_METRICS, "points/2/1", "3", "points[2][1]"},
        {GPP_MSG_METRICS, "points/2/1", "\"\"", "points[2][1]"},
        {GPP_MSG_METRICS, "points/2/2", "\"0.5\"", "points[2][2]"},
        {GPP_MSG_METRICS, "points/4/3", "1e300", "points[4][3]"},
        {GPP_MSG_METRICS, "seq", "-1", "seq"},
        {GPP_MSG_METRICS, "stage_id", long_id, "stage_id"},
        /* ack */
        {GPP_MSG_ACK, "seq", "\"17\"", "seq"},
        {GPP_MSG_ACK, "attempt", "2147483648", "attempt"},
        /* log */
        {GPP_MSG_LOG, "level", "\"fatal\"", "level"},
        {GPP_MSG_LOG, "line", long_line, "line"},
        {GPP_MSG_LOG, "time_ms", "9007199254740992", "time_ms"},
        {GPP_MSG_LOG, "stage_id", "5", "stage_id"},
        /* result */
        {GPP_MSG_RESULT, "summary", "1", "summary"},
        {GPP_MSG_RESULT, "output", "null", "output"},
        {GPP_MSG_RESULT, "output/sha256", "\"" SHA_A " \"", "output.sha256"},
        {GPP_MSG_RESULT, "output/sha256", "-", "output.sha256"},
        /* fail */
        {GPP_MSG_FAIL, "retryable", "1", "retryable"},
        {GPP_MSG_FAIL, "class", "\"nope\"", "class"},
        {GPP_MSG_FAIL, "reason", long_line, "reason"},
        /* cancel */
        {GPP_MSG_CANCEL, "attempt", "0", "attempt"},
        {GPP_MSG_CANCEL, "stage_id", "-", "stage_id"},
        /* ping, pong, bye */
        {GPP_MSG_PING, "progress", "1.5", "progress"},
        {GPP_MSG_PING, "progress", "\"half\"", "progress"},
        {GPP_MSG_PING, "attempt", "\"2\"", "attempt"},
        {GPP_MSG_PONG, "time_ms", "true", "time_ms"},
        {GPP_MSG_PONG, "time_ms", "-", "time_ms"},
        {GPP_MSG_BYE, "reason", "1", "reason"},
        {GPP_MSG_BYE, "reason", long_bye, "reason"},
    };
    int seen[GPP_MSG_TYPE_MAX + 1] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case *c = &cases[i];
        gpp_error err;
        int rc = parse_changed(c->type, c->path, c->json, &err);
        if (rc != GPP_EFORMAT || strcmp(err.field, c->field) != 0 ||
            strcmp(err.code, "malformed") != 0)
            fail_msg("%s %s=%.40s: rc %d code %s field '%s' (%s); wanted field '%s'",
                     gpp_msg_type_name(c->type), c->path, c->json, rc, err.code, err.field,
                     err.message, c->field);
        assert_non_null(strstr(err.message, c->field));
        /* the change itself was seen, not a missing field */
        if (strcmp(c->json, "-") != 0 && strcmp(c->json, "null") != 0 &&
            strstr(err.message, "is required"))
            fail_msg("%s %s: %s", gpp_msg_type_name(c->type), c->path, err.message);
        seen[c->type] = 1;
    }
    /* a wrong field type for every message type that has fields */
    for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++)
        if (t != GPP_MSG_BLOB && t != GPP_MSG_DRAIN) assert_true(seen[t]);
}

/* Valid edge values the rules allow. */
static void test_edge_values_accepted(void **state)
{
    (void)state;
    gpp_error err;
    const bad_case ok[] = {
        {GPP_MSG_HELLO, "threads", "1024", NULL},
        {GPP_MSG_HELLO, "threads", "1.0", NULL},           /* integral */
        {GPP_MSG_HELLO, "running", "null", NULL},
        {GPP_MSG_HELLO, "worker_id", "null", NULL},
        {GPP_MSG_HELLO, "cached", "[]", NULL},
        {GPP_MSG_HELLO, "devices", "[]", NULL},
        {GPP_MSG_ASSIGN, "input", "null", NULL},
        {GPP_MSG_ASSIGN, "input/size", "1099511627776", NULL},
        {GPP_MSG_METRICS, "points/0/2", "null", NULL},
        {GPP_MSG_METRICS, "points/0/2", "-1e308", NULL},
        {GPP_MSG_LOG, "time_ms", "9007199254740991", NULL},
        {GPP_MSG_PING, "progress", "0", NULL},
        {GPP_MSG_PING, "progress", "1", NULL},
        {GPP_MSG_PING, "progress", "null", NULL},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        int rc = parse_changed(ok[i].type, ok[i].path, ok[i].json, &err);
        if (rc) fail_msg("%s %s=%s refused: %s", gpp_msg_type_name(ok[i].type), ok[i].path,
                         ok[i].json, err.message);
    }
}

/* Unknown fields are ignored: the message parses equal to the sample. */
static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    for (int t = 1; t <= GPP_MSG_TYPE_MAX; t++) {
        if (t == GPP_MSG_BLOB) continue;
        gpp_msg m = sample(t, 0);
        gpp_buf b = {0};
        assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
        cJSON *root = cJSON_ParseWithLength((const char *)b.data + 5, b.len - 5);
        assert_non_null(root);
        cJSON_AddItemToObject(root, "zz_future", cJSON_Parse("{\"a\":[1,2,{\"b\":null}]}"));
        cJSON_AddNumberToObject(root, "zz_version2", 7);
        char *text = cJSON_PrintUnformatted(root);
        gpp_frame f = {t, (const uint8_t *)text, strlen(text)};
        gpp_msg back;
        gpp_error err;
        int rc = gpp_msg_parse(&f, &back, &err);
        if (rc) fail_msg("%s with extra fields: %s", gpp_msg_type_name(t), err.message);
        if (t == GPP_MSG_DRAIN) assert_non_null(strstr(text, "zz_future"));
        assert_true(gpp_msg_equal(&m, &back));
        gpp_msg_free(&back);
        cJSON_free(text);
        cJSON_Delete(root);
        gpp_buf_free(&b);
    }
}

static void test_version(void **state)
{
    (void)state;
    gpp_error err;
    assert_int_equal(parse_changed(GPP_MSG_HELLO, "proto", "2", &err), GPP_EVERSION);
    assert_string_equal(err.code, "unsupported_version");
    assert_string_equal(err.field, "proto");
    assert_int_equal(parse_changed(GPP_MSG_WELCOME, "proto", "7", &err), GPP_EVERSION);
    assert_int_equal(parse_changed(GPP_MSG_HELLO, "proto", "\"1\"", &err), GPP_EFORMAT);
    assert_string_equal(err.field, "proto");
}

/* ---- blobs ---------------------------------------------------------------------------- */

static void test_blob(void **state)
{
    (void)state;
    gpp_error err;
    uint8_t p[GPP_BLOB_HEADER + 16];
    memset(p, 0x11, sizeof p);
    gpp_frame f = {GPP_MSG_BLOB, p, sizeof p};
    gpp_msg m;

    /* header: offset 4, total 20, 16 bytes: fits exactly */
    memset(p + 32, 0, 16);
    p[39] = 4;
    p[47] = 20;
    assert_int_equal(gpp_msg_parse(&f, &m, &err), 0);
    assert_int_equal(m.blob.offset, 4);
    assert_int_equal(m.blob.total, 20);
    assert_int_equal(m.blob.len, 16);
    assert_ptr_equal(m.blob.data, p + GPP_BLOB_HEADER);      /* zero-copy */
    gpp_msg_free(&m);

    /* offset + len > total */
    p[39] = 5;
    assert_int_equal(gpp_msg_parse(&f, &m, &err), GPP_EFORMAT);
    assert_string_equal(err.field, "blob.offset");
    /* offset > total, with a wrap-around sum */
    memset(p + 32, 0xff, 8);
    assert_int_equal(gpp_msg_parse(&f, &m, &err), GPP_EFORMAT);
    assert_string_equal(err.field, "blob.offset");
    /* total over 2^40 */
    memset(p + 32, 0, 16);
    p[42] = 0x01;
    p[47] = 1;          /* total = 2^40 + 1 */
    assert_int_equal(gpp_msg_parse(&f, &m, &err), GPP_EFORMAT);
    assert_string_equal(err.field, "blob.total");
    /* header too short: 47 bytes, and 0 bytes */
    gpp_frame shortf = {GPP_MSG_BLOB, p, GPP_BLOB_HEADER - 1};
    assert_int_equal(gpp_msg_parse(&shortf, &m, &err), GPP_EFORMAT);
    assert_string_equal(err.code, "malformed");
    assert_string_equal(err.field, "blob");
    gpp_frame empty = {GPP_MSG_BLOB, NULL, 0};
    assert_int_equal(gpp_msg_parse(&empty, &m, &err), GPP_EFORMAT);
    /* the empty blob is fine: header only, total 0 */
    memset(p + 32, 0, 16);
    gpp_frame hdr_only = {GPP_MSG_BLOB, p, GPP_BLOB_HEADER};
    assert_int_equal(gpp_msg_parse(&hdr_only, &m, &err), 0);
    assert_int_equal(m.blob.len, 0);
    gpp_msg_free(&m);

    /* data over one chunk */
    size_t big = GPP_BLOB_HEADER + GPP_BLOB_CHUNK + 1;
    uint8_t *q = calloc(1, big);
    assert_non_null(q);
    q[44] = 0x01;       /* total = 2^24 */
    gpp_frame bigf = {GPP_MSG_BLOB, q, big};
    assert_int_equal(gpp_msg_parse(&bigf, &m, &err), GPP_EFORMAT);
    assert_string_equal(err.field, "blob.data");
    bigf.len--;          /* exactly one chunk */
    assert_int_equal(gpp_msg_parse(&bigf, &m, &err), 0);
    assert_int_equal(m.blob.len, GPP_BLOB_CHUNK);
    gpp_msg_free(&m);

    /* the encoder refuses the same */
    gpp_buf b = {0};
    uint8_t sha[32] = {0};
    assert_int_equal(gpp_frame_append_blob(&b, sha, 0, GPP_BLOB_CHUNK + 1, q, GPP_BLOB_CHUNK + 1), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_blob(&b, sha, 5, 10, q, 6), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_blob(&b, sha, 11, 10, q, 0), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_blob(&b, sha, 0, GPP_BLOB_TOTAL_MAX + 1, q, 1), GPP_EINVAL);
    assert_int_equal(gpp_frame_append_blob(&b, sha, UINT64_MAX, 10, q, 2), GPP_EINVAL);
    assert_int_equal(b.len, 0);
    gpp_msg bm = {.type = GPP_MSG_BLOB, .blob = {.offset = 5, .total = 10, .data = q, .len = 6}};
    assert_int_equal(gpp_msg_encode(&b, &bm, &err), GPP_EINVAL);
    assert_string_equal(err.field, "blob");
    assert_int_equal(gpp_frame_append_blob(&b, sha, GPP_BLOB_TOTAL_MAX - 3, GPP_BLOB_TOTAL_MAX, q, 3), 0);
    free(q);
    gpp_buf_free(&b);

    /* a whole blob sent in chunks reassembles to its sha256 */
    gpp_buf s = {0};
    for (size_t off = 0; off < sizeof g_blob_data; off += 700) {
        size_t n = sizeof g_blob_data - off < 700 ? sizeof g_blob_data - off : 700;
        assert_int_equal(gpp_frame_append_blob(&s, g_blob_sha, off, sizeof g_blob_data,
                                               g_blob_data + off, n), 0);
    }
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    assert_int_equal(gpp_decoder_feed(&d, s.data, s.len, &err), 0);
    gpp_sha256_ctx c;
    gpp_sha256_init(&c);
    uint64_t next = 0;
    while (gpp_decoder_next(&d, &f, &err) == 1) {
        assert_int_equal(gpp_msg_parse(&f, &m, &err), 0);
        assert_int_equal(m.blob.offset, next);
        gpp_sha256_update(&c, m.blob.data, m.blob.len);
        next += m.blob.len;
        assert_memory_equal(m.blob.sha256, g_blob_sha, 32);
        gpp_msg_free(&m);
    }
    assert_int_equal(next, sizeof g_blob_data);
    uint8_t digest[32];
    gpp_sha256_final(&c, digest);
    assert_memory_equal(digest, g_blob_sha, 32);
    gpp_decoder_free(&d);
    gpp_buf_free(&s);
}

/* ---- metrics details ----------------------------------------------------------------------- */

static void test_metrics_non_finite(void **state)
{
    (void)state;
    gpp_proto_point pts[3] = {
        {1, "loss", INFINITY, 10}, {2, "loss", NAN, 11}, {3, "loss", -INFINITY, 12}};
    gpp_msg m = {.type = GPP_MSG_METRICS, .metrics = {"s", 1, 0, 3, pts}};
    gpp_buf b = {0};
    assert_int_equal(gpp_msg_encode(&b, &m, NULL), 0);
    const char *want = "[1,\"loss\",null,10]";
    assert_non_null(memmem(b.data + 5, b.len - 5, want, strlen(want)));
    gpp_frame f = {GPP_MSG_METRICS, b.data + 5, b.len - 5};
    gpp_msg back;
    gpp_error err;
    assert_int_equal(gpp_msg_parse(&f, &back, &err), 0);
    for (int i = 0; i < 3; i++) assert_true(isnan(back.metrics.points[i].value));
    assert_true(gpp_msg_equal(&m, &back));
    gpp_msg_free(&back);
    gpp_buf_free(&b);

    /* 4096 points are fine, 4097 are not (refused by the encoder too) */
    static gpp_proto_point many[GPP_PROTO_MAX_POINTS + 1];
    for (int i = 0; i <= GPP_PROTO_MAX_POINTS; i++)
        many[i] = (gpp_proto_point){i, "loss", i * 0.5, 1700000000000LL + i};
    m.metrics.points = many;
    m.metrics.n_points = GPP_PROTO_MAX_POINTS;
    gpp_msg got;
    round_trip(&m, &got);
    assert_int_equal(got.metrics.n_points, GPP_PROTO_MAX_POINTS);
    assert_true(gpp_msg_equal(&m, &got));
    gpp_msg_free(&got);
    m.metrics.n_points = GPP_PROTO_MAX_POINTS + 1;
    assert_int_equal(gpp_msg_encode(&b, &m, &err), GPP_EINVAL);
    assert_string_equal(err.field, "points");
    assert_int_equal(b.len, 0);
}

/* ---- the encoder checks what it sends ------------------------------------------------------- */

static void test_encode_refuses_invalid(void **state)
{
    (void)state;
    gpp_buf b = {0};
    gpp_error err;
    struct { gpp_msg m; const char *field; } cases[8];
    int n = 0;
    cases[n].m = sample(GPP_MSG_HELLO, 0); cases[n].m.hello.threads = 0; cases[n++].field = "threads";
    cases[n].m = sample(GPP_MSG_HELLO, 0); cases[n].m.hello.token = NULL; cases[n++].field = "token";
    cases[n].m = sample(GPP_MSG_HELLO, 0); cases[n].m.hello.n_devices = 17; cases[n++].field = "devices";
    cases[n].m = sample(GPP_MSG_HELLO, 0); cases[n].m.hello.proto = 2; cases[n++].field = "proto";
    cases[n].m = sample(GPP_MSG_ASSIGN, 0); cases[n].m.assign.kind = (gpp_proto_stage_kind)9; cases[n++].field = "kind";
    cases[n].m = sample(GPP_MSG_FETCH, 0); cases[n].m.fetch.sha256 = "abc"; cases[n++].field = "sha256";
    cases[n].m = sample(GPP_MSG_METRICS, 0); cases[n].m.metrics.n_points = 0; cases[n++].field = "points";
    cases[n].m = sample(GPP_MSG_RESULT, 0); cases[n].m.result.summary = NULL; cases[n++].field = "summary";
    for (int i = 0; i < n; i++) {
        gpp_error_clear(&err);
        assert_int_equal(gpp_msg_encode(&b, &cases[i].m, &err), GPP_EINVAL);
        assert_string_equal(err.code, "invalid_argument");
        assert_string_equal(err.field, cases[i].field);
        assert_int_equal(b.len, 0);
    }
    gpp_buf_free(&b);
}

/* ---- byte buffer ---------------------------------------------------------------------------- */

static void test_buf(void **state)
{
    (void)state;
    gpp_buf b = {0};
    for (int i = 0; i < 1000; i++) assert_int_equal(gpp_buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 3000);
    assert_true(b.cap >= 3000);
    assert_memory_equal(b.data + 2997, "abc", 3);
    assert_int_equal(gpp_buf_append(&b, NULL, 0), 0);
    assert_int_equal(gpp_buf_reserve(&b, SIZE_MAX), GPP_ETOOBIG);
    assert_int_equal(b.len, 3000);
    gpp_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_fields),
        cmocka_unit_test(test_wire_bytes),
        cmocka_unit_test(test_decoder_chunkings),
        cmocka_unit_test(test_truncated_stream),
        cmocka_unit_test(test_oversize_header),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_zero_type),
        cmocka_unit_test(test_max_size),
        cmocka_unit_test(test_error_is_sticky),
        cmocka_unit_test(test_feed_before_drain),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_json_objects_exact),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_edge_values_accepted),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_blob),
        cmocka_unit_test(test_metrics_non_finite),
        cmocka_unit_test(test_encode_refuses_invalid),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
