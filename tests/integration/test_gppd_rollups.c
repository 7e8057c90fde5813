/* tests/integration/test_gppd_rollups.c - the metric rollups of gppd's store
 * (migration 0003): random series with restarted attempts (points that
 * supersede older attempts', stale points of older attempts that stay
 * hidden, resent batches, out-of-order batches, runs of nulls) are ingested
 * through store_metrics_insert, and every downsampled query is compared
 * with a naive computation from the points, for both ways the store
 * answers (store_series.level -1 = from the points, >= 0 = from rollups;
 * the rules are in store.h above store_metrics_query_run).  Then the
 * rollups are dropped and rebuilt by the migration's backfill, and the
 * comparison runs again. */
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

#include "store.h"

static char tmpdir[256];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gppd-rollups-XXXXXX");
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

static store *open_store(const char *path)
{
    store *s = NULL;
    gpp_error e = {0};
    int rc = store_open(&s, path, &e);
    if (rc != 0)
        fprintf(stderr, "store_open: %s\n", e.message);
    assert_int_equal(rc, 0);
    return s;
}

static uint64_t rng_state = 88172645463325252u;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int64_t rnd_in(int64_t lo, int64_t hi)        /* [lo, hi] */
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

/* ---- the model: every row sent ---- */

#define NAMES 2
static const char *const names[NAMES] = {"loss", "acc"};

typedef struct row {
    int name, stage, attempt;
    int64_t it, time;
    double v;
    size_t order;                   /* when it was sent */
} row;

typedef struct model {
    row *rows;                      /* what was sent, in order (duplicates included) */
    size_t n, cap;
} model;

static void model_push(model *m, row r)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 4096;
        m->rows = realloc(m->rows, m->cap * sizeof *m->rows);
        assert_non_null(m->rows);
    }
    r.order = m->n;
    m->rows[m->n++] = r;
}

static double rnd_value(int *null_run)
{
    if (*null_run > 0) {
        (*null_run)--;
        return NAN;
    }
    uint64_t k = rnd() % 100;
    if (k == 0)
        *null_run = (int)rnd_in(20, 80);      /* a run of nulls: whole buckets of them */
    if (k < 4)
        return NAN;
    if (k < 6)
        return (double)rnd_in(-1000, 1000);   /* spikes */
    return (double)rnd_in(0, 80) / 4.0;       /* coarse: many ties */
}

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->name != y->name) return x->name < y->name ? -1 : 1;
    if (x->stage != y->stage) return x->stage < y->stage ? -1 : 1;
    if (x->it != y->it) return x->it < y->it ? -1 : 1;
    if (x->attempt != y->attempt) return x->attempt < y->attempt ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* The points the API shows for one name: per (stage, iteration) the newest
 * attempt's (the first row sent of that attempt: resends are ignored). */
static size_t model_shown(const model *m, int name, row **out)
{
    row *r = malloc((m->n + 1) * sizeof *r);
    assert_non_null(r);
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->rows[i].name == name)
            r[k++] = m->rows[i];
    qsort(r, k, sizeof *r, cmp_row);
    size_t o = 0;
    for (size_t i = 0; i < k; i++) {
        if (o > 0 && r[o - 1].stage == r[i].stage && r[o - 1].it == r[i].it) {
            if (r[o - 1].attempt != r[i].attempt)
                r[o - 1] = r[i];         /* a higher attempt wins; a resend changes nothing */
        } else {
            r[o++] = r[i];
        }
    }
    *out = r;
    return o;
}

/* Generate and send, for both names, 3 stages: attempt 1, then restarts
 * (attempt 2, sometimes 3) from a random iteration, then stale points of
 * attempt 1 (hidden where a newer attempt has the iteration, new in gaps). */
static void ingest_random(store *s, int64_t job_seq, model *m, int attempt_base)
{
    row *send = NULL;
    size_t n_send = 0, cap = 0;
#define SEND(r_) do { \
        if (n_send == cap) { cap = cap ? cap * 2 : 4096; \
                             send = realloc(send, cap * sizeof *send); assert_non_null(send); } \
        send[n_send++] = (r_); } while (0)
    int null_run = 0;
    for (int stage = 0; stage < 3; stage++) {
        int64_t start = rnd_in(-50, 40000), len = rnd_in(3000, 9000);
        int attempts = 1 + (rnd() % 10 < 7) + (rnd() % 10 < 3);
        int64_t from = start;
        for (int a = 1; a <= attempts; a++) {
            int attempt = attempt_base + a;
            for (int64_t it = from; it < start + len; it += (rnd() % 64 == 0) ? rnd_in(2, 40) : 1)
                for (int nm = 0; nm < NAMES; nm++)
                    SEND(((row){nm, stage, attempt, it, it * 3 + attempt, rnd_value(&null_run),
                                0}));
            from = rnd_in(start, start + len - 1);          /* where the next attempt restarts */
        }
        for (int k = 0; k < 200; k++) {
            int64_t it = rnd_in(start, start + len + 50);
            SEND(((row){(int)(rnd() % NAMES), stage, attempt_base + 1, it, 7,
                        rnd_value(&null_run), 0}));
        }
    }
    store_metric_point *p = calloc(1000, sizeof *p);
    assert_non_null(p);
    size_t at = 0, prev_at = 0, prev_n = 0;
    gpp_error e = {0};
    while (at < n_send) {
        size_t n = (size_t)rnd_in(1, 900);
        if (n > n_send - at)
            n = n_send - at;
        row *b = &send[at];
        if (rnd() % 5 == 0)                              /* out of order within a batch */
            for (size_t i = n; i > 1; i--) {
                size_t j = (size_t)(rnd() % i);
                row t = b[i - 1];
                b[i - 1] = b[j];
                b[j] = t;
            }
        for (size_t i = 0; i < n; i++) {
            p[i] = (store_metric_point){b[i].stage, b[i].attempt, b[i].it, names[b[i].name],
                                        b[i].v, b[i].time};
            model_push(m, b[i]);
        }
        size_t ins = 0;
        assert_int_equal(store_metrics_insert(s, job_seq, p, n, &ins, &e), 0);
        if (prev_n && rnd() % 8 == 0) {                  /* the previous batch again */
            for (size_t i = 0; i < prev_n; i++) {
                row *r = &send[prev_at + i];
                p[i] = (store_metric_point){r->stage, r->attempt, r->it, names[r->name], r->v,
                                            r->time};
            }
            assert_int_equal(store_metrics_insert(s, job_seq, p, prev_n, &ins, &e), 0);
            assert_int_equal(ins, 0);
        }
        prev_at = at;
        prev_n = n;
        at += n;
    }
#undef SEND
    free(p);
    free(send);
}

/* ---- the naive answer ---- */

static int64_t floor_div_i64(int64_t a, int64_t w)
{
    int64_t q = a / w;
    return (a % w != 0 && a < 0) ? q - 1 : q;
}

static int64_t width(int l)
{
    int64_t w = STORE_ROLLUP_BASE;
    for (int i = 0; i < l; i++)
        w *= STORE_ROLLUP_FANOUT;
    return w;
}

typedef struct expect {
    int level;
    size_t n, scanned;
    bool truncated;
    row *pts;
} expect;

/* The min and max of r[a..b) (first occurrences, in order); with only
 * nulls, the first point. */
static void emit_bucket(const row *r, size_t a, size_t b, row *out, size_t *o)
{
    size_t lo = SIZE_MAX, hi = SIZE_MAX;
    for (size_t i = a; i < b; i++) {
        if (isnan(r[i].v))
            continue;
        if (lo == SIZE_MAX || r[i].v < r[lo].v)
            lo = i;
        if (hi == SIZE_MAX || r[i].v > r[hi].v)
            hi = i;
    }
    if (lo == SIZE_MAX) {
        out[(*o)++] = r[a];
        return;
    }
    out[(*o)++] = r[lo < hi ? lo : hi];
    if (lo != hi)
        out[(*o)++] = r[lo < hi ? hi : lo];
}

static expect naive(const row *shown, size_t n_shown, const store_metrics_query *q)
{
    expect x = {.level = -1};
    row *f = malloc((n_shown + 1) * sizeof *f);
    assert_non_null(f);
    size_t nf = 0, total = 0;
    int64_t first[64] = {0}, last[64] = {0};
    bool seen[64] = {false};
    for (size_t i = 0; i < n_shown; i++) {
        if (q->stage_idx >= 0 && shown[i].stage != q->stage_idx)
            continue;
        total++;
        int st = shown[i].stage;
        if (!seen[st])
            first[st] = shown[i].it;
        seen[st] = true;
        last[st] = shown[i].it;
        if (!q->has_since || shown[i].it > q->since)
            f[nf++] = shown[i];
    }
    size_t raw_max = q->max_points > STORE_ROLLUP_RAW_MAX ? q->max_points : STORE_ROLLUP_RAW_MAX;
    bool fast = q->max_points > 0 && q->every <= 1 && total > raw_max && nf <= q->limit;
    x.pts = malloc((nf + 1) * sizeof *x.pts);
    assert_non_null(x.pts);
    if (!fast) {                     /* the points: limit, every, fixed-size buckets */
        size_t n = nf < q->limit ? nf : q->limit;
        x.truncated = nf > q->limit;
        x.scanned = n;
        size_t k = q->every > 1 ? q->every : 1, m = 0;
        for (size_t i = 0; i < n; i += k)
            f[m++] = f[i];
        size_t mp = q->max_points < 2 ? 2 : q->max_points;
        if (q->max_points == 0 || m <= mp) {
            memcpy(x.pts, f, m * sizeof *f);
            x.n = m;
        } else {
            size_t buckets = mp / 2, size = (m + buckets - 1) / buckets;
            for (size_t a = 0; a < m; a += size)
                emit_bucket(f, a, a + size < m ? a + size : m, x.pts, &x.n);
        }
        free(f);
        return x;
    }
    int64_t lo = q->has_since ? q->since + 1 : INT64_MIN;
    size_t buckets = q->max_points / 2 ? q->max_points / 2 : 1;
    int L = 0;
    for (int l = STORE_ROLLUP_LEVELS - 1; l >= 0 && L == 0; l--) {
        int64_t est = 0;
        for (int st = 0; st < 64; st++)
            if (seen[st] && last[st] >= lo)
                est += floor_div_i64(last[st], width(l)) -
                       floor_div_i64(first[st] > lo ? first[st] : lo, width(l)) + 1;
        if (est >= (int64_t)buckets)
            L = l;
    }
    x.scanned = nf;
    /* units: a point's bucket at the largest level <= L starting after `since`;
     * L steps down while there are fewer than `buckets` */
    size_t *ustart = malloc((nf + 1) * sizeof *ustart), m;
    assert_non_null(ustart);
    for (;; L--) {
        m = 0;
        int64_t pk_stage = 0, pk_level = 0, pk_b = 0;
        for (size_t i = 0; i < nf; i++) {
            int level = -1;
            int64_t b = f[i].it;
            for (int l = L; l >= 0; l--)
                if (lo == INT64_MIN || floor_div_i64(f[i].it, width(l)) * width(l) >= lo) {
                    level = l;
                    b = floor_div_i64(f[i].it, width(l));
                    break;
                }
            if (i == 0 || level < 0 || f[i].stage != pk_stage || level != pk_level || b != pk_b)
                ustart[m++] = i;
            pk_stage = f[i].stage;
            pk_level = level;
            pk_b = b;
        }
        if (m >= buckets || L == 0)
            break;
    }
    x.level = L;
    ustart[m] = nf;
    size_t groups = m < buckets ? m : buckets;
    for (size_t k = 0; k < groups; k++) {
        size_t a = ustart[k * m / groups], b = ustart[(k + 1) * m / groups];
        emit_bucket(f, a, b, x.pts, &x.n);
    }
    free(ustart);
    free(f);
    return x;
}

/* ---- the comparison ---- */

struct tally {
    int fast, raw, coarse, with_since, cut;
};

static void check_queries(store *s, int64_t job_seq, const model *m, int count,
                          struct tally *t)
{
    row *shown[NAMES];
    size_t n_shown[NAMES];
    for (int nm = 0; nm < NAMES; nm++)
        n_shown[nm] = model_shown(m, nm, &shown[nm]);
    static const size_t maxps[] = {0, 1, 2, 3, 10, 50, 200, 1000, 2000, 5000, 20000};
    gpp_error e = {0};
    for (int k = 0; k < count; k++) {
        int nm = (int)(rnd() % NAMES);
        const char *nmv[1] = {names[nm]};
        store_metrics_query q = {
            .job_seq = job_seq,
            .stage_idx = rnd() % 3 == 0 ? (int)rnd_in(0, 2) : -1,
            .names = nmv,
            .n_names = 1,
            .limit = SIZE_MAX,
            .max_points = maxps[rnd() % (sizeof maxps / sizeof maxps[0])],
            .every = rnd() % 10 == 0 ? 2 : 1,
        };
        if (k == 0) {                              /* the dashboard's request */
            q.stage_idx = -1;
            q.max_points = 1000;
            q.every = 1;
        }
        if (q.max_points == 0 && rnd() % 2)
            q.max_points = (size_t)rnd_in(3, 3000);
        if (k > 0 && rnd() % 3 == 0) {
            q.has_since = true;
            q.since = rnd_in(-100, 50000);
        }
        if (k > 0 && rnd() % 5 == 0)
            q.limit = (size_t)rnd_in(1, 30000);
        expect x = naive(shown[nm], n_shown[nm], &q);
        store_metrics_result r;
        assert_int_equal(store_metrics_query_run(s, &q, &r, &e), 0);
        assert_int_equal(r.n_series, n_shown[nm] > 0 ? 1 : 0);
        const store_series *sr = &r.series[0];
        if (x.level != sr->level || x.n != sr->n || x.scanned != sr->scanned)
            fprintf(stderr, "query %d: name %s stage %d since %d:%lld limit %zu max_points %zu"
                    " every %zu: level %d/%d n %zu/%zu scanned %zu/%zu (want/got)\n", k,
                    names[nm], q.stage_idx, q.has_since, (long long)q.since, q.limit,
                    q.max_points, q.every, x.level, sr->level, x.n, sr->n, x.scanned,
                    sr->scanned);
        assert_int_equal(sr->level, x.level);
        assert_int_equal(sr->n, x.n);
        assert_int_equal(sr->scanned, x.scanned);
        assert_int_equal(sr->truncated, x.truncated);
        if (q.max_points >= 2)
            assert_true(sr->n <= q.max_points);
        for (size_t i = 0; i < x.n; i++) {
            assert_int_equal(sr->stage[i], x.pts[i].stage);
            assert_int_equal(sr->iteration[i], x.pts[i].it);
            assert_int_equal(sr->attempt[i], x.pts[i].attempt);
            assert_int_equal(sr->time[i], x.pts[i].time);
            if (isnan(x.pts[i].v))
                assert_true(isnan(sr->value[i]));
            else
                assert_true(sr->value[i] == x.pts[i].v);
        }
        if (k == 0) {
            assert_true(sr->level >= 0);              /* the rollups answer it ... */
            assert_true(sr->n > 900);                 /* ... at full resolution */
        }
        if (sr->level >= 0) {
            t->fast++;
            t->coarse += sr->level >= 2;
            t->with_since += q.has_since;
        } else {
            t->raw++;
            t->cut += sr->truncated;
        }
        free(x.pts);
        store_metrics_result_clear(&r);
    }
    for (int nm = 0; nm < NAMES; nm++)
        free(shown[nm]);
}

static int64_t scalar(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void test_rollups_match_naive(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/r.db", tmpdir);
    store *s = open_store(path);
    store_stage_new chain[3] = {{"train", 0}, {"push", 1}, {"prune", 1}};
    uint8_t h[32] = {0};
    store_job_new in = {
        .name = "job", .owner = "alice", .dataset = "tiny", .model = "lenet5",
        .device = "any", .spec = "{}", .stages = chain, .n_stages = 3,
        .first_reason = "waiting_for_worker", .token_id = 1, .spec_sha256 = h,
    };
    store_job j;
    bool existed;
    gpp_error e = {0};
    assert_int_equal(store_job_create(s, &in, &j, &existed, &e), 0);
    model m = {0};
    struct tally t = {0};
    ingest_random(s, j.seq, &m, 0);
    check_queries(s, j.seq, &m, 300, &t);

    /* the backfill of migration 0003 builds the same rollups from the points */
    int64_t rows = scalar(path, "SELECT count(*) FROM metric_rollups");
    assert_true(rows > 0);
    store_close(s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    /* back to schema 2 (later migrations undone too): opening it again
     * applies 0003 and what follows */
    assert_int_equal(sqlite3_exec(db, "DROP TABLE metric_rollups; DROP TABLE model_uploads;"
                                      " DELETE FROM schema_migrations WHERE version >= 3",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    s = open_store(path);
    assert_int_equal(scalar(path, "SELECT count(*) FROM metric_rollups"), rows);
    check_queries(s, j.seq, &m, 150, &t);

    /* attempts 2..4 of the same stages after the rebuild: more superseding */
    ingest_random(s, j.seq, &m, 1);
    check_queries(s, j.seq, &m, 300, &t);
    /* every level counts every shown point once */
    for (int l = 0; l < STORE_ROLLUP_LEVELS; l++) {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT sum(n) FROM metric_rollups WHERE level = %d", l);
        assert_int_equal(scalar(path, sql),
                         scalar(path, "SELECT count(*) FROM (SELECT DISTINCT name_id, stage_idx,"
                                      " iteration FROM metrics)"));
    }
    printf("# %d queries from rollups (%d at level >= 2, %d with since), %d from the points"
           " (%d cut by limit); %zu rows sent\n", t.fast, t.coarse, t.with_since, t.raw, t.cut,
           m.n);
    assert_true(t.fast > 100 && t.coarse > 10 && t.with_since > 20 && t.raw > 50 && t.cut > 5);
    free(m.rows);
    store_job_clear(&j);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rollups_match_naive, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
