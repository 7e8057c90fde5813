/* tests/integration/test_gppd_store.c - gppd's store, artifacts and the
 * downsampler, on a real SQLite file in a temporary folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "artifacts.h"
#include "gpp/sha256.h"
#include "gppd_migrations.h"
#include "store.h"
#include "util.h"

static char tmpdir[256];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gppd-store-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    (void)state;
    return 0;
}

static void db_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static store *open_store(const char *name)
{
    char p[300];
    db_path(p, sizeof p, name);
    store *s = NULL;
    gpp_error e = {0};
    int rc = store_open(&s, p, &e);
    if (rc != 0)
        fprintf(stderr, "store_open: %s\n", e.message);
    assert_int_equal(rc, 0);
    return s;
}

static int64_t count_rows(const char *name, const char *sql)
{
    char p[300];
    db_path(p, sizeof p, name);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* A job with `iterations` push/prune rounds after a train stage. */
static store_job make_job(store *s, const char *owner, int iterations, const char *key,
                          int64_t token_id, const char *spec, bool *existed, int *rc_out)
{
    store_stage_new chain[64];
    int n = 0;
    chain[n++] = (store_stage_new){"train", 0};
    for (int i = 1; i <= iterations; i++) {
        chain[n++] = (store_stage_new){"push", i};
        chain[n++] = (store_stage_new){"prune", i};
    }
    uint8_t h[32];
    gpp_sha256(spec, strlen(spec), h);
    store_job_new in = {
        .name = "job", .owner = owner, .dataset = "tiny", .model = "lenet5", .device = "any",
        .spec = spec, .priority = 0, .stages = chain, .n_stages = n,
        .first_reason = "waiting_for_worker", .token_id = token_id, .idem_key = key,
        .spec_sha256 = h,
    };
    store_job j;
    bool ex = false;
    gpp_error e = {0};
    int rc = store_job_create(s, &in, &j, &ex, &e);
    if (existed)
        *existed = ex;
    if (rc_out)
        *rc_out = rc;
    else
        assert_int_equal(rc, 0);
    return j;
}

/* ---- migrations -------------------------------------------------------------- */

static void test_migrations_apply_once(void **state)
{
    (void)state;
    store *s = open_store("m.db");
    assert_int_equal(store_schema_version(s), (int)gppd_migrations_count);
    store_close(s);
    s = open_store("m.db");           /* again: nothing re-applied */
    store_close(s);
    assert_int_equal(count_rows("m.db", "SELECT count(*) FROM schema_migrations"),
                     (int64_t)gppd_migrations_count);
    assert_int_equal(count_rows("m.db", "SELECT max(version) FROM schema_migrations"),
                     (int64_t)gppd_migrations_count);
    /* the pragmas that make "acknowledged" durable */
    assert_int_equal(count_rows("m.db", "SELECT count(*) FROM pragma_journal_mode"
                                        " WHERE journal_mode = 'wal'"), 1);
}

static void test_newer_database_refused(void **state)
{
    (void)state;
    store *s = open_store("n.db");
    store_close(s);
    char p[300];
    db_path(p, sizeof p, "n.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (7, 'future', 0)",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    gpp_error e = {0};
    s = NULL;
    assert_int_equal(store_open(&s, p, &e), GPP_EVERSION);
    assert_null(s);
    assert_string_equal(e.code, "newer_schema");
    char want[128];
    snprintf(want, sizeof want,
             "gppd.db was written by a newer gppd (migration 7 > %d); upgrade gppd",
             (int)gppd_migrations_count);
    assert_string_equal(e.message, want);
}

static void test_foreign_schema_refused(void **state)
{
    (void)state;
    store *s = open_store("f.db");
    store_close(s);
    char p[300];
    db_path(p, sizeof p, "f.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE schema_migrations SET name = 'other' WHERE"
                                      " version = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    gpp_error e = {0};
    assert_int_equal(store_open(&s, p, &e), GPP_EVERSION);
    assert_string_equal(e.code, "bad_schema");
}

/* ---- tokens ------------------------------------------------------------------- */

static void test_tokens(void **state)
{
    (void)state;
    store *s = open_store("t.db");
    uint8_t h1[32], h2[32], h3[32];
    gpp_sha256("one", 3, h1);
    gpp_sha256("two", 3, h2);
    gpp_sha256("three", 5, h3);
    store_token a, u, t;
    gpp_error e = {0};
    assert_int_equal(store_token_insert(s, "admin", "admin", h1, "gpp_adm_aaaa", 0, &a, &e), 0);
    assert_int_equal(store_token_insert(s, "alice", "user", h2, "gpp_usr_bbbb", a.id, &u, &e), 0);
    assert_int_equal(store_token_insert(s, "alice", "user", h2, "x", 0, NULL, &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    assert_int_equal(store_token_insert(s, "bad name", "user", h3, "x", 0, NULL, &e), GPP_EINVAL);
    assert_int_equal(store_token_insert(s, "bob", "root", h3, "x", 0, NULL, &e), GPP_EINVAL);
    assert_int_equal(store_token_by_hash(s, h2, &t, &e), 0);
    assert_string_equal(t.name, "alice");
    assert_string_equal(t.role, "user");
    assert_int_equal(t.revoked_at, 0);
    assert_int_equal(store_token_by_hash(s, h3, &t, &e), GPP_ENOTFOUND);
    /* the last admin cannot be revoked; a user can, idempotently */
    assert_int_equal(store_token_revoke(s, a.public_id, &t, &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    assert_int_equal(store_token_revoke(s, u.public_id, &t, &e), 0);
    assert_true(t.revoked_at > 0);
    assert_int_equal(store_token_revoke(s, u.public_id, &t, &e), 0);
    assert_int_equal(store_token_revoke(s, "tnosuchtoken", &t, &e), GPP_ENOTFOUND);
    assert_int_equal(store_token_count(s, "user", "alice", true, &e), 0);
    assert_int_equal(store_token_count(s, "user", "alice", false, &e), 1);
    store_token *list;
    size_t n;
    bool more;
    assert_int_equal(store_token_list(s, 0, 1, &list, &n, &more, &e), 0);
    assert_int_equal(n, 1);
    assert_true(more);
    int64_t after = list[0].id;
    free(list);
    assert_int_equal(store_token_list(s, after, 10, &list, &n, &more, &e), 0);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_string_equal(list[0].name, "alice");
    free(list);
    store_close(s);
    /* only hashes are stored: the hash column holds the digest, no text */
    assert_int_equal(count_rows("t.db", "SELECT count(*) FROM tokens WHERE length(hash) = 32"), 2);
}

/* ---- jobs --------------------------------------------------------------------- */

static void test_job_create_and_idempotency(void **state)
{
    (void)state;
    store *s = open_store("j.db");
    uint8_t h1[32], h2[32];
    gpp_sha256("tok1", 4, h1);
    gpp_sha256("tok2", 4, h2);
    store_token t1, t2;
    gpp_error te = {0};
    assert_int_equal(store_token_insert(s, "alice", "user", h1, "p", 0, &t1, &te), 0);
    assert_int_equal(store_token_insert(s, "bob", "user", h2, "p", 0, &t2, &te), 0);
    assert_int_equal(t1.id, 1);
    assert_int_equal(t2.id, 2);
    bool existed;
    store_job j1 = make_job(s, "alice", 2, "k1", 1, "{\"a\":1}", &existed, NULL);
    assert_false(existed);
    assert_string_equal(j1.state, "queued");
    assert_int_equal(j1.stages_total, 5);
    assert_int_equal(strlen(j1.id), 13);
    assert_int_equal(j1.id[0], 'j');
    store_job j2 = make_job(s, "alice", 2, "k1", 1, "{\"a\":1}", &existed, NULL);
    assert_true(existed);
    assert_string_equal(j1.id, j2.id);
    int rc;
    store_job j3 = make_job(s, "alice", 2, "k1", 1, "{\"a\":2}", &existed, &rc);
    assert_int_equal(rc, GPP_EINVAL);
    store_job_clear(&j3);
    store_job j4 = make_job(s, "bob", 2, "k1", 2, "{\"a\":2}", &existed, NULL);  /* other token */
    assert_false(existed);
    assert_string_not_equal(j4.id, j1.id);
    store_stage *st;
    size_t n;
    gpp_error e = {0};
    assert_int_equal(store_stage_list(s, j1.seq, &st, &n, &e), 0);
    assert_int_equal(n, 5);
    assert_string_equal(st[0].kind, "train");
    assert_string_equal(st[0].reason, "waiting_for_worker");
    assert_string_equal(st[1].kind, "push");
    assert_string_equal(st[1].reason, "waiting_for_previous_stage");
    assert_string_equal(st[4].kind, "prune");
    assert_int_equal(st[4].round, 2);
    store_stage_free(st, n);
    store_job g;
    assert_int_equal(store_job_get(s, j1.id, &g, &e), 0);
    assert_non_null(g.spec);
    assert_string_equal(g.spec, "{\"a\":1}");
    store_job_clear(&g);
    assert_int_equal(store_job_get(s, "jnosuchjob", &g, &e), GPP_ENOTFOUND);
    store_job_clear(&j1);
    store_job_clear(&j2);
    store_job_clear(&j4);
    store_close(s);
    assert_int_equal(count_rows("j.db", "SELECT count(*) FROM jobs"), 2);
    assert_int_equal(count_rows("j.db", "SELECT count(*) FROM events WHERE type = 'job'"), 2);
}

static void test_job_list_pagination(void **state)
{
    (void)state;
    store *s = open_store("p.db");
    char ids[30][16];
    for (int i = 0; i < 30; i++) {
        store_job j = make_job(s, i % 2 ? "alice" : "bob", 1, NULL, 1, "{}", NULL, NULL);
        memcpy(ids[i], j.id, 16);
        store_job_clear(&j);
    }
    store_job_filter f = {0};
    int64_t before = 0;
    int seen = 0;
    gpp_error e = {0};
    for (int page = 0; page < 10; page++) {
        store_job *jobs;
        size_t n;
        bool more;
        assert_int_equal(store_job_list(s, &f, before, 7, &jobs, &n, &more, &e), 0);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(jobs[i].id, ids[29 - seen]);   /* newest first, no gaps */
            assert_null(jobs[i].spec);
            seen++;
        }
        before = n ? jobs[n - 1].seq : 0;
        store_job_free(jobs, n);
        if (!more)
            break;
    }
    assert_int_equal(seen, 30);
    f.owner = "alice";
    store_job *jobs;
    size_t n;
    bool more;
    assert_int_equal(store_job_list(s, &f, 0, 100, &jobs, &n, &more, &e), 0);
    assert_int_equal(n, 15);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(jobs[i].owner, "alice");
    store_job_free(jobs, n);
    f.state = "running";
    assert_int_equal(store_job_list(s, &f, 0, 100, &jobs, &n, &more, &e), 0);
    assert_int_equal(n, 0);
    store_job_free(jobs, n);
    store_close(s);
}

static void test_state_machine(void **state)
{
    (void)state;
    store *s = open_store("s.db");
    store_job j = make_job(s, "alice", 1, NULL, 1, "{}", NULL, NULL);   /* train push prune */
    gpp_error e = {0};
    int attempt = -1;
    store_stage_change c = {.state = "assigned", .expect_attempt = 0, .worker_id = "w1",
                            .progress = -1};
    assert_int_equal(store_stage_update(s, j.seq, 0, &c, &attempt, &e), 0);
    assert_int_equal(attempt, 1);
    /* a stale attempt (fencing) is refused */
    c = (store_stage_change){.state = "running", .expect_attempt = 0, .progress = -1};
    assert_int_equal(store_stage_update(s, j.seq, 0, &c, NULL, &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    c.expect_attempt = 1;
    c.progress = 0.5;
    assert_int_equal(store_stage_update(s, j.seq, 0, &c, NULL, &e), 0);
    store_job g;
    assert_int_equal(store_job_get(s, j.id, &g, &e), 0);
    assert_string_equal(g.state, "running");
    assert_true(g.started_at > 0);
    store_job_clear(&g);
    /* retry of a running job: 409 */
    assert_int_equal(store_job_retry(s, j.seq, "alice", NULL, &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    c = (store_stage_change){.state = "succeeded", .expect_attempt = 1, .progress = -1,
                             .summary = "{\"params\":100,\"flops\":1000}"};
    assert_int_equal(store_stage_update(s, j.seq, 0, &c, NULL, &e), 0);
    assert_int_equal(store_stage_update(s, j.seq, 0, &c, NULL, &e), GPP_EINVAL); /* finished */
    c = (store_stage_change){.state = "assigned", .expect_attempt = -1, .worker_id = "w2",
                             .progress = -1};
    assert_int_equal(store_stage_update(s, j.seq, 1, &c, NULL, &e), 0);
    c = (store_stage_change){.state = "failed", .expect_attempt = 1, .reason = "out of memory",
                             .progress = -1};
    assert_int_equal(store_stage_update(s, j.seq, 1, &c, NULL, &e), 0);
    assert_int_equal(store_job_get(s, j.id, &g, &e), 0);
    assert_string_equal(g.state, "failed");
    assert_non_null(strstr(g.reason, "out of memory"));
    assert_int_equal(g.stages_done, 1);
    store_job_clear(&g);
    /* a finished job: cancel 409, further stage moves refused */
    assert_int_equal(store_job_cancel(s, j.seq, "alice", NULL, NULL, &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    /* retry from the last good stage: train stays succeeded */
    assert_int_equal(store_job_retry(s, j.seq, "alice", &g, &e), 0);
    assert_string_equal(g.state, "queued");
    store_job_clear(&g);
    store_stage *st;
    size_t n;
    assert_int_equal(store_stage_list(s, j.seq, &st, &n, &e), 0);
    assert_string_equal(st[0].state, "succeeded");
    assert_string_equal(st[1].state, "queued");
    assert_string_equal(st[1].reason, "waiting_for_worker");
    assert_int_equal(st[1].attempt, 1);        /* attempts are kept across retries */
    assert_string_equal(st[2].state, "queued");
    store_stage_free(st, n);
    /* cancel: unfinished stages cancelled, then a second cancel is 409 */
    int running = -1;
    assert_int_equal(store_job_cancel(s, j.seq, "bob", &g, &running, &e), 0);
    assert_string_equal(g.state, "cancelled");
    assert_string_equal(g.reason, "cancelled by bob");
    assert_int_equal(running, 0);
    store_job_clear(&g);
    assert_int_equal(store_job_cancel(s, j.seq, "bob", NULL, NULL, &e), GPP_EINVAL);
    /* run to success: retry, then both remaining stages succeed */
    assert_int_equal(store_job_retry(s, j.seq, "alice", NULL, &e), 0);
    for (int idx = 1; idx <= 2; idx++) {
        c = (store_stage_change){.state = "assigned", .expect_attempt = -1, .progress = -1};
        assert_int_equal(store_stage_update(s, j.seq, idx, &c, &attempt, &e), 0);
        c = (store_stage_change){.state = "succeeded", .expect_attempt = attempt, .progress = -1};
        assert_int_equal(store_stage_update(s, j.seq, idx, &c, NULL, &e), 0);
    }
    assert_int_equal(store_job_get(s, j.id, &g, &e), 0);
    assert_string_equal(g.state, "succeeded");
    assert_int_equal(g.stages_done, 3);
    assert_true(g.finished_at > 0);
    store_job_clear(&g);
    /* every change left an event, ids increasing */
    store_event *ev;
    assert_int_equal(store_events_list(s, j.seq, 0, 1000, &ev, &n, &e), 0);
    assert_true(n >= 12);
    for (size_t i = 1; i < n; i++)
        assert_true(ev[i].id > ev[i - 1].id);
    assert_string_equal(ev[n - 1].type, "job");
    assert_non_null(strstr(ev[n - 1].data, "\"succeeded\""));
    int64_t last = ev[n - 1].id;
    store_event_free(ev, n);
    assert_int_equal(store_event_last_id(s), last);
    assert_int_equal(store_events_list(s, j.seq, last, 10, &ev, &n, &e), 0);
    assert_int_equal(n, 0);
    store_event_free(ev, n);
    store_log *logs;
    bool more;
    assert_int_equal(store_logs_list(s, j.seq, 0, 100, &logs, &n, &more, &e), 0);
    assert_true(n >= 3);
    assert_non_null(strstr(logs[0].message, "submitted by alice"));
    store_log_free(logs, n);
    store_job_clear(&j);
    store_close(s);
}

/* ---- metrics ---------------------------------------------------------------------- */

static void test_metrics_dedup_and_attempts(void **state)
{
    (void)state;
    store *s = open_store("x.db");
    store_job j = make_job(s, "alice", 1, NULL, 1, "{}", NULL, NULL);
    store_metric_point p[6] = {
        {0, 1, 1, "loss", 2.0, 1000}, {0, 1, 2, "loss", 1.5, 1001},
        {0, 1, 3, "loss", NAN, 1002}, {0, 1, 1, "acc", 0.1, 1000},
        {0, 2, 2, "loss", 1.4, 2001}, {0, 2, 3, "loss", 1.3, 2002},
    };
    size_t ins = 0;
    gpp_error e = {0};
    assert_int_equal(store_metrics_insert(s, j.seq, p, 4, &ins, &e), 0);
    assert_int_equal(ins, 4);
    assert_int_equal(store_metrics_insert(s, j.seq, p, 4, &ins, &e), 0);   /* resent */
    assert_int_equal(ins, 0);
    assert_int_equal(store_metrics_insert(s, j.seq, p + 4, 2, &ins, &e), 0); /* attempt 2 */
    assert_int_equal(ins, 2);
    store_metric_point bad = {0, 1, 1, "no spaces", 1, 1};
    assert_int_equal(store_metrics_insert(s, j.seq, &bad, 1, &ins, &e), GPP_EINVAL);
    assert_int_equal(store_metrics_insert(s, 999999, p, 1, &ins, &e), GPP_ENOTFOUND);
    store_metrics_query q = {.job_seq = j.seq, .stage_idx = -1, .limit = 1000};
    store_metrics_result r;
    assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
    assert_int_equal(r.n_names, 2);
    assert_string_equal(r.names[0], "acc");
    assert_string_equal(r.names[1], "loss");
    assert_int_equal(r.n_series, 2);
    const store_series *loss = &r.series[1];
    assert_string_equal(loss->name, "loss");
    assert_int_equal(loss->n, 3);                      /* iterations 1, 2, 3 */
    assert_int_equal(loss->iteration[0], 1);
    assert_int_equal(loss->attempt[0], 1);
    assert_int_equal(loss->attempt[1], 2);             /* attempt 2 wins */
    assert_true(loss->value[1] == 1.4);
    assert_true(loss->value[2] == 1.3);
    store_metrics_result_clear(&r);
    const char *names[] = {"loss", "nosuch"};
    q.names = names;
    q.n_names = 2;
    q.has_since = true;
    q.since = 1;
    assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
    assert_int_equal(r.n_series, 1);
    assert_int_equal(r.series[0].n, 2);
    assert_int_equal(r.series[0].iteration[0], 2);
    store_metrics_result_clear(&r);
    /* NaN is stored as null and read back as NaN */
    q = (store_metrics_query){.job_seq = j.seq, .stage_idx = 0, .limit = 1, .names = names,
                              .n_names = 1};
    assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
    assert_int_equal(r.series[0].n, 1);
    assert_true(r.series[0].truncated);
    store_metrics_result_clear(&r);
    store_job_clear(&j);
    store_close(s);
    assert_int_equal(count_rows("x.db", "SELECT count(*) FROM metrics WHERE value IS NULL"), 1);
}

static void test_downsample_keeps_min_max(void **state)
{
    (void)state;
    srand(7);
    for (int trial = 0; trial < 50; trial++) {
        size_t n = 100 + (size_t)(rand() % 5000);
        size_t maxp = 2 + (size_t)(rand() % 300);
        store_series sr = {0};
        sr.n = n;
        sr.stage = calloc(n, sizeof *sr.stage);
        sr.attempt = calloc(n, sizeof *sr.attempt);
        sr.iteration = calloc(n, sizeof *sr.iteration);
        sr.time = calloc(n, sizeof *sr.time);
        sr.value = calloc(n, sizeof *sr.value);
        double *orig = calloc(n, sizeof *orig);
        for (size_t i = 0; i < n; i++) {
            sr.iteration[i] = (int64_t)i;
            sr.value[i] = orig[i] = (rand() % 1000) / 10.0 + (i % 97 == 0 ? 500 : 0);
        }
        size_t got = store_downsample_minmax(&sr, maxp);
        assert_int_equal(got, sr.n);
        if (n <= maxp) {
            assert_int_equal(got, n);
        } else {
            assert_true(got <= maxp);
            size_t buckets = maxp / 2, size = (n + buckets - 1) / buckets;
            /* every bucket's min and max value survive, at their iterations */
            for (size_t a = 0; a < n; a += size) {
                size_t b = a + size < n ? a + size : n, lo = a, hi = a;
                for (size_t i = a; i < b; i++) {
                    if (orig[i] < orig[lo]) lo = i;
                    if (orig[i] > orig[hi]) hi = i;
                }
                bool found_lo = false, found_hi = false;
                for (size_t k = 0; k < got; k++) {
                    if (sr.iteration[k] == (int64_t)lo) found_lo = sr.value[k] == orig[lo];
                    if (sr.iteration[k] == (int64_t)hi) found_hi = sr.value[k] == orig[hi];
                }
                assert_true(found_lo);
                assert_true(found_hi);
            }
            for (size_t k = 1; k < got; k++)                 /* order kept */
                assert_true(sr.iteration[k] > sr.iteration[k - 1]);
        }
        free(orig);
        free(sr.stage);
        free(sr.attempt);
        free(sr.iteration);
        free(sr.time);
        free(sr.value);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 1,000,000 points: 10 jobs x 4 names x 25,000 iterations, inserted in
 * batches of 10,000; a downsampled query of one series. Timings printed. */
static void test_million_points(void **state)
{
    (void)state;
    store *s = open_store("big.db");
    static const char *const names[] = {"loss", "acc", "lr", "lambda"};
    enum { JOBS = 10, ITERS = 25000, BATCH = 10000 };
    int64_t seqs[JOBS];
    for (int k = 0; k < JOBS; k++) {
        store_job j = make_job(s, "alice", 1, NULL, 1, "{}", NULL, NULL);
        seqs[k] = j.seq;
        store_job_clear(&j);
    }
    store_metric_point *batch = calloc(BATCH, sizeof *batch);
    size_t fill = 0, total = 0, ins;
    gpp_error e = {0};
    double t0 = now_s();
    for (int k = 0; k < JOBS; k++)
        for (int it = 0; it < ITERS; it++)
            for (int nm = 0; nm < 4; nm++) {
                batch[fill++] = (store_metric_point){it / 10000, 1, it, names[nm],
                                                     sin(it * 0.001 * (nm + 1)) + k, it};
                if (fill == BATCH) {
                    assert_int_equal(store_metrics_insert(s, seqs[k], batch, fill, &ins, &e), 0);
                    assert_int_equal(ins, fill);
                    total += fill;
                    fill = 0;
                }
            }
    double t_ins = now_s() - t0;
    assert_int_equal(total, 1000000);
    store_metrics_query q = {.job_seq = seqs[3], .stage_idx = -1, .names = names,
                             .n_names = 1, .limit = 1000000, .max_points = 1000};
    store_metrics_result r;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        t0 = now_s();
        assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
        assert_int_equal(r.n_series, 1);
        assert_int_equal(r.series[0].scanned, ITERS);
        assert_true(r.series[0].n <= 1000 && r.series[0].n >= 900);
        store_metrics_result_clear(&r);
    }
    q.stage_idx = 2;
    t0 = now_s();
    assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
    double t_stage = now_s() - t0;
    assert_int_equal(r.series[0].scanned, ITERS - 20000);
    store_metrics_result_clear(&r);
    printf("# 1e6 points: insert %.2f s (%.0f points/s); downsampled query of one 25k-point"
           " series (of 1e6 stored) best of 5: %.2f ms; one stage: %.2f ms\n",
           t_ins, 1e6 / t_ins, best * 1e3, t_stage * 1e3);
    free(batch);
    store_close(s);
}

/* ---- data sets, artifacts ---------------------------------------------------------- */

static void test_datasets(void **state)
{
    (void)state;
    store *s = open_store("d.db");
    gpp_error e = {0};
    assert_int_equal(store_dataset_insert(s, "b", "idx", "/x", "{}", "admin", &e), 0);
    assert_int_equal(store_dataset_insert(s, "a", "cifar10-bin", "/y", "{}", "admin", &e), 0);
    assert_int_equal(store_dataset_insert(s, "a", "idx", "/z", "{}", "admin", &e), GPP_EINVAL);
    assert_string_equal(e.code, "conflict");
    store_dataset *ds;
    size_t n;
    bool more;
    assert_int_equal(store_dataset_list(s, NULL, 1, &ds, &n, &more, &e), 0);
    assert_int_equal(n, 1);
    assert_true(more);
    assert_string_equal(ds[0].name, "a");
    store_dataset_free(ds, n);
    assert_int_equal(store_dataset_list(s, "a", 10, &ds, &n, &more, &e), 0);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_string_equal(ds[0].name, "b");
    store_dataset_free(ds, n);
    store_dataset d;
    assert_int_equal(store_dataset_get(s, "nope", &d, &e), GPP_ENOTFOUND);
    store_close(s);
}

static void test_artifacts(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/artifacts", tmpdir);
    artifacts *a;
    gpp_error e = {0};
    assert_int_equal(artifacts_open(&a, dir, &e), 0);
    char hex[65], hex2[65];
    const char *data = "hello artifacts";
    assert_int_equal(artifacts_put(a, data, strlen(data), NULL, hex, &e), 0);
    uint8_t d[32];
    char want[65];
    gpp_sha256(data, strlen(data), d);
    gpp_sha256_hex(d, want);
    assert_string_equal(hex, want);
    assert_int_equal(artifacts_exists(a, hex), 1);
    assert_int_equal(artifacts_verify(a, hex, &e), 0);
    /* a wrong expected hash writes nothing */
    char wrong[65];
    memset(wrong, 'a', 64);
    wrong[64] = '\0';
    assert_int_equal(artifacts_put(a, "x", 1, wrong, hex2, &e), GPP_ECHECKSUM);
    assert_int_equal(artifacts_exists(a, wrong), 0);
    /* streaming */
    artifacts_writer *w;
    assert_int_equal(artifacts_writer_begin(a, &w, &e), 0);
    assert_int_equal(artifacts_writer_append(w, "hello ", 6, &e), 0);
    assert_int_equal(artifacts_writer_append(w, "artifacts", 9, &e), 0);
    int64_t size = 0;
    assert_int_equal(artifacts_writer_commit(w, want, hex2, &size, &e), 0);
    assert_string_equal(hex2, want);
    assert_int_equal(size, 15);
    /* corruption is detected */
    char p[400];
    assert_int_equal(artifacts_path(a, hex, p, sizeof p), 0);
    FILE *f = fopen(p, "r+");
    assert_non_null(f);
    fputc('H', f);
    fclose(f);
    assert_int_equal(artifacts_verify(a, hex, &e), GPP_ECHECKSUM);
    assert_int_equal(artifacts_exists(a, "../etc/passwd"), GPP_EINVAL);
    /* a leftover temporary file is removed at open */
    char tmpf[400];
    snprintf(tmpf, sizeof tmpf, "%s/tmp/part-leftover", dir);
    f = fopen(tmpf, "w");
    assert_non_null(f);
    fclose(f);
    artifacts_close(a);
    assert_int_equal(artifacts_open(&a, dir, &e), 0);
    assert_int_equal(access(tmpf, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    artifacts_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_apply_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_create_and_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_list_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_dedup_and_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_downsample_keeps_min_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_million_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_datasets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_artifacts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
