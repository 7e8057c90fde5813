/* daemon/store.c - see store.h.  All of gppd's SQL outside migrations/. */
#include "store.h"

#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gppd_migrations.h"
#include "util.h"

const char *const store_job_states[STORE_JOB_NSTATES] = {
    "queued", "running", "succeeded", "failed", "cancelled",
};

#define JOB_COLS_SPEC(spec) \
    "seq, id, state, name, owner, dataset, model, device, " spec ", reason, priority, " \
    "stages_total, stages_done, created_at, started_at, finished_at, updated_at"
#define JOB_COLS JOB_COLS_SPEC("spec")
#define STAGE_COLS \
    "id, job_seq, idx, kind, round, state, attempt, reason, worker_id, input_sha256, " \
    "output_sha256, summary, progress, not_before, created_at, started_at, finished_at, updated_at, " \
    "failures"
#define TOKEN_COLS "id, public_id, name, role, prefix, created_at, revoked_at, hash"
#define ROLLUP_COLS \
    "n, first_iter, first_attempt, first_time, last_iter, min_iter, min_attempt, min_value, " \
    "min_time, max_iter, max_attempt, max_value, max_time"
#define STAGE_FINAL "('succeeded', 'failed', 'cancelled', 'skipped')"

/* An uploaded model's columns (row_model), with the jobs that name it. */
#define MODEL_COLS                                                                       \
    "m.id, m.sha256, m.owner, m.size, m.params, m.input, m.classes, m.created_at,"      \
    " (SELECT count(*) FROM jobs WHERE model = 'checkpoint:' || m.sha256)"

/* Every statement the store runs, prepared once on first use. */
enum stmt_id {
    S_BEGIN, S_COMMIT, S_ROLLBACK,
    S_TOKEN_INSERT, S_TOKEN_BY_HASH, S_TOKEN_BY_PUBLIC, S_TOKEN_LIST, S_TOKEN_REVOKE,
    S_TOKEN_COUNT,
    S_JOB_INSERT, S_JOB_BY_ID, S_JOB_BY_SEQ, S_JOB_COUNTS, S_JOB_SET, S_JOB_EXISTS,
    S_STAGE_INSERT, S_STAGE_LIST, S_STAGE_GET, S_STAGE_SET, S_STAGE_REASON,
    S_STAGES_OPEN, S_STAGES_CANCEL, S_STAGES_REQUEUE, S_STAGE_FIRST_OPEN,
    S_EVENT_INSERT, S_EVENTS_JOB, S_EVENTS_ALL, S_EVENT_LAST,
    S_LOG_INSERT, S_LOGS_LIST,
    S_IDEM_GET, S_IDEM_INSERT,
    S_NAME_GET, S_NAME_INSERT, S_JMN_INSERT, S_METRIC_INSERT, S_JOB_NAMES,
    S_SERIES_ALL, S_SERIES_STAGE,
    S_DATASET_INSERT, S_DATASET_GET, S_DATASET_LIST,
    S_WORKER_LIST, S_WORKER_COUNT,
    S_ARTIFACT_INSERT, S_ARTIFACT_EXISTS,
    /* 0002: the worker link and the scheduler */
    S_STAGES_RANGE, S_STAGES_SKIP, S_RUNNABLE, S_STAGE_INPUT, S_STAGE_REASON_SET,
    S_STAGE_PROGRESS, S_STAGES_ACTIVE, S_JOB_LAST_OUTPUT,
    S_WORKER_UPSERT, S_WORKER_SET, S_WORKER_SEEN, S_WORKER_GET, S_WORKERS_RESET,
    S_DSFILES_GET, S_DSFILES_DEL, S_DSFILE_INSERT, S_DATASET_SHA, S_DSFILE_BY_SHA,
    S_ARTIFACT_SIZE, S_EVENT_LAST_JOB,
    /* 0003: metric rollups */
    S_RAW_RANGE, S_OTHER_ATTEMPT, S_ROLLUP_GET, S_ROLLUP_RANGE, S_ROLLUP_PUT, S_ROLLUP_STATS,
    S_SERIES_KEYS,
    /* 0004: uploaded models */
    S_MODEL_INSERT, S_MODEL_GET, S_MODEL_LIST, S_MODEL_ACTIVE_JOBS, S_MODEL_DELETE,
    S_MODEL_REFS, S_MODEL_ARTIFACT_DROP, S_MODEL_USAGE,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_TOKEN_INSERT] =
        "INSERT INTO tokens (public_id, name, role, hash, prefix, created_at, created_by)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_TOKEN_BY_HASH] = "SELECT " TOKEN_COLS " FROM tokens WHERE hash = ?1",
    [S_TOKEN_BY_PUBLIC] = "SELECT " TOKEN_COLS " FROM tokens WHERE public_id = ?1",
    [S_TOKEN_LIST] = "SELECT " TOKEN_COLS " FROM tokens WHERE id > ?1 ORDER BY id LIMIT ?2",
    [S_TOKEN_REVOKE] =
        "UPDATE tokens SET revoked_at = ?2 WHERE public_id = ?1 AND revoked_at IS NULL",
    [S_TOKEN_COUNT] =
        "SELECT count(*) FROM tokens WHERE (?1 IS NULL OR role = ?1) AND (?2 IS NULL OR name = ?2)"
        " AND (?3 = 0 OR revoked_at IS NULL)",
    [S_JOB_INSERT] =
        "INSERT INTO jobs (id, name, owner, dataset, model, device, priority, state, spec,"
        " stages_total, stages_done, created_at, finished_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12, ?11)",
    [S_JOB_BY_ID] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [S_JOB_BY_SEQ] = "SELECT " JOB_COLS " FROM jobs WHERE seq = ?1",
    [S_JOB_COUNTS] = "SELECT state, count(*) FROM jobs GROUP BY state",
    [S_JOB_SET] =
        "UPDATE jobs SET state = ?1, reason = ?2, started_at = COALESCE(started_at, ?3),"
        " finished_at = ?4, stages_done = ?5, updated_at = ?6 WHERE seq = ?7",
    [S_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE seq = ?1",
    [S_STAGE_INSERT] =
        "INSERT INTO stages (job_seq, idx, kind, round, state, reason, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6)",
    [S_STAGE_LIST] = "SELECT " STAGE_COLS " FROM stages WHERE job_seq = ?1 ORDER BY idx",
    [S_STAGE_GET] = "SELECT " STAGE_COLS " FROM stages WHERE job_seq = ?1 AND idx = ?2",
    [S_STAGE_SET] =
        "UPDATE stages SET state = ?3, attempt = ?4, reason = ?5,"
        " worker_id = CASE WHEN ?3 = 'assigned' THEN ?6 ELSE COALESCE(?6, worker_id) END,"
        " summary = COALESCE(?7, summary), output_sha256 = COALESCE(?8, output_sha256),"
        " progress = CASE WHEN ?3 = 'succeeded' THEN 1.0 WHEN ?9 >= 0 THEN ?9"
        "            WHEN ?3 = 'assigned' THEN 0 ELSE progress END,"
        " not_before = ?10,"
        " started_at = CASE WHEN ?3 IN ('assigned', 'running') THEN COALESCE(started_at, ?11)"
        "              ELSE started_at END,"
        " finished_at = CASE WHEN ?3 IN " STAGE_FINAL " THEN ?11 ELSE NULL END,"
        " updated_at = ?11, input_sha256 = COALESCE(?12, input_sha256),"
        " failures = failures + ?13"
        " WHERE job_seq = ?1 AND idx = ?2",
    [S_STAGE_REASON] =
        "UPDATE stages SET reason = ?3, updated_at = ?4"
        " WHERE job_seq = ?1 AND idx = ?2 AND state = 'queued'",
    [S_STAGES_OPEN] =
        "SELECT idx, kind, attempt, state FROM stages WHERE job_seq = ?1"
        " AND state NOT IN ('succeeded', 'skipped', ?2, ?3) ORDER BY idx",
    [S_STAGES_CANCEL] =
        "UPDATE stages SET state = 'cancelled', reason = ?2, finished_at = ?3, updated_at = ?3"
        " WHERE job_seq = ?1 AND state NOT IN " STAGE_FINAL,
    [S_STAGES_REQUEUE] =
        "UPDATE stages SET state = 'queued',"
        " reason = CASE WHEN idx = ?2 THEN 'waiting_for_worker'"
        "          ELSE 'waiting_for_previous_stage' END,"
        " worker_id = NULL, progress = 0, not_before = NULL, started_at = NULL,"
        " finished_at = NULL, updated_at = ?3"
        " WHERE job_seq = ?1 AND state NOT IN ('succeeded', 'skipped')",
    [S_STAGE_FIRST_OPEN] =
        "SELECT min(idx) FROM stages WHERE job_seq = ?1 AND state NOT IN ('succeeded', 'skipped')",
    [S_EVENT_INSERT] = "INSERT INTO events (job_seq, time, type, data) VALUES (?1, ?2, ?3, ?4)",
    [S_EVENTS_JOB] =
        "SELECT id, job_seq, time, type, data FROM events WHERE job_seq = ?1 AND id > ?2"
        " ORDER BY id LIMIT ?3",
    [S_EVENTS_ALL] =
        "SELECT id, job_seq, time, type, data FROM events WHERE id > ?2 ORDER BY id LIMIT ?3",
    [S_EVENT_LAST] = "SELECT max(id) FROM events",
    [S_LOG_INSERT] =
        "INSERT INTO logs (job_seq, stage_idx, time, level, source, message)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_LOGS_LIST] =
        "SELECT id, stage_idx, time, level, source, message FROM logs"
        " WHERE job_seq = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [S_IDEM_GET] = "SELECT body_sha256, job_seq FROM idempotency_keys WHERE token_id = ?1 AND key = ?2",
    [S_IDEM_INSERT] =
        "INSERT INTO idempotency_keys (token_id, key, body_sha256, job_seq, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_NAME_GET] = "SELECT id FROM metric_names WHERE name = ?1",
    [S_NAME_INSERT] = "INSERT INTO metric_names (name) VALUES (?1)",
    [S_JMN_INSERT] = "INSERT OR IGNORE INTO job_metric_names (job_seq, name_id) VALUES (?1, ?2)",
    [S_METRIC_INSERT] =
        "INSERT OR IGNORE INTO metrics (job_seq, name_id, stage_idx, iteration, attempt, value, time)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_JOB_NAMES] =
        "SELECT n.name, n.id FROM job_metric_names j JOIN metric_names n ON n.id = j.name_id"
        " WHERE j.job_seq = ?1 ORDER BY n.name",
    [S_SERIES_ALL] =
        "SELECT stage_idx, iteration, attempt, value, time FROM metrics"
        " WHERE job_seq = ?1 AND name_id = ?2 AND iteration > ?4"
        " ORDER BY stage_idx, iteration, attempt",
    [S_SERIES_STAGE] =
        "SELECT stage_idx, iteration, attempt, value, time FROM metrics"
        " WHERE job_seq = ?1 AND name_id = ?2 AND stage_idx = ?3 AND iteration > ?4"
        " ORDER BY stage_idx, iteration, attempt",
    [S_DATASET_INSERT] =
        "INSERT INTO datasets (name, format, path, info, created_at, created_by)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_DATASET_GET] =
        "SELECT name, format, path, info, sha256, created_at, created_by FROM datasets"
        " WHERE name = ?1",
    [S_DATASET_LIST] =
        "SELECT name, format, path, info, sha256, created_at, created_by FROM datasets"
        " WHERE name > ?1 ORDER BY name LIMIT ?2",
    [S_WORKER_LIST] =
        "SELECT w.id, w.name, w.host, w.devices, w.labels, w.state, w.threads, w.stage_id,"
        " w.connected_at, w.last_seen, j.id, s.idx, s.kind, s.round, s.attempt, s.progress"
        " FROM workers w LEFT JOIN stages s ON s.id = w.stage_id"
        " LEFT JOIN jobs j ON j.seq = s.job_seq WHERE w.id > ?1 ORDER BY w.id LIMIT ?2",
    [S_WORKER_COUNT] = "SELECT count(*) FROM workers WHERE state NOT IN ('lost', 'gone')",
    [S_ARTIFACT_INSERT] =
        "INSERT OR IGNORE INTO artifacts (sha256, size, kind, job_seq, stage_idx, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_ARTIFACT_EXISTS] = "SELECT 1 FROM artifacts WHERE sha256 = ?1",
    [S_STAGES_RANGE] =
        "SELECT idx, kind, attempt FROM stages WHERE job_seq = ?1 AND idx > ?2 AND idx <= ?3"
        " AND state = 'queued' ORDER BY idx",
    [S_STAGES_SKIP] =
        "UPDATE stages SET state = 'skipped', reason = ?4, finished_at = ?5, updated_at = ?5"
        " WHERE job_seq = ?1 AND idx > ?2 AND idx <= ?3 AND state = 'queued'",
    [S_RUNNABLE] =
        "SELECT j.seq, j.id, j.priority, j.device, s.id, s.idx, s.kind, s.round, s.attempt,"
        " s.failures, s.reason, s.not_before"
        " FROM jobs j JOIN stages s ON s.job_seq = j.seq AND s.state = 'queued'"
        " WHERE j.state IN ('queued', 'running')"
        " AND (s.idx = 0 OR EXISTS (SELECT 1 FROM stages p WHERE p.job_seq = s.job_seq"
        "      AND p.idx = s.idx - 1 AND p.state IN ('succeeded', 'skipped')))"
        " ORDER BY j.priority DESC, j.seq, s.idx LIMIT ?1",
    [S_STAGE_INPUT] =
        "SELECT output_sha256 FROM stages WHERE job_seq = ?1 AND idx < ?2"
        " AND state = 'succeeded' AND output_sha256 IS NOT NULL ORDER BY idx DESC LIMIT 1",
    [S_STAGE_REASON_SET] =
        "UPDATE stages SET reason = ?3, updated_at = ?4"
        " WHERE job_seq = ?1 AND idx = ?2 AND state = 'queued' AND reason IS NOT ?3",
    [S_STAGE_PROGRESS] =
        "UPDATE stages SET progress = ?4, updated_at = ?5"
        " WHERE job_seq = ?1 AND idx = ?2 AND attempt = ?3 AND state IN ('assigned', 'running')",
    [S_STAGES_ACTIVE] =
        "SELECT j.seq, j.id, s.id, s.idx, s.attempt, s.state, s.worker_id"
        " FROM stages s JOIN jobs j ON j.seq = s.job_seq"
        " WHERE s.state IN ('assigned', 'running') AND j.state IN ('queued', 'running')"
        " ORDER BY s.id",
    [S_JOB_LAST_OUTPUT] =
        "SELECT s.output_sha256 FROM stages s JOIN jobs j ON j.seq = s.job_seq"
        " WHERE j.id = ?1 AND s.state = 'succeeded' AND s.output_sha256 IS NOT NULL"
        " ORDER BY s.idx DESC LIMIT 1",
    [S_WORKER_UPSERT] =
        "INSERT INTO workers (id, name, host, devices, threads, labels, state, stage_id,"
        " connected_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        " ON CONFLICT(id) DO UPDATE SET name = ?2, host = ?3, devices = ?4, threads = ?5,"
        " labels = ?6, state = ?7, stage_id = ?8, connected_at = ?9, last_seen = ?9",
    [S_WORKER_SET] =
        "UPDATE workers SET state = COALESCE(?2, state),"
        " stage_id = CASE WHEN ?3 < 0 THEN stage_id WHEN ?3 = 0 THEN NULL ELSE ?3 END,"
        " last_seen = COALESCE(?4, last_seen) WHERE id = ?1",
    [S_WORKER_SEEN] = "UPDATE workers SET last_seen = ?2 WHERE id = ?1",
    [S_WORKER_GET] =
        "SELECT state, stage_id FROM workers WHERE id = ?1",
    [S_WORKERS_RESET] =
        "UPDATE workers SET state = 'gone', stage_id = NULL"
        " WHERE state NOT IN ('lost', 'gone') AND (stage_id IS NULL OR stage_id NOT IN"
        " (SELECT id FROM stages WHERE state IN ('assigned', 'running')))",
    [S_DSFILES_GET] =
        "SELECT name, size, mtime, sha256 FROM dataset_files WHERE dataset = ?1 ORDER BY name",
    [S_DSFILES_DEL] = "DELETE FROM dataset_files WHERE dataset = ?1",
    [S_DSFILE_INSERT] =
        "INSERT INTO dataset_files (dataset, name, size, mtime, sha256)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_DATASET_SHA] = "UPDATE datasets SET sha256 = ?2 WHERE name = ?1",
    [S_DSFILE_BY_SHA] =
        "SELECT d.path, f.name, f.size FROM dataset_files f JOIN datasets d ON d.name = f.dataset"
        " WHERE f.sha256 = ?1 LIMIT 1",
    [S_ARTIFACT_SIZE] = "SELECT size FROM artifacts WHERE sha256 = ?1",
    [S_EVENT_LAST_JOB] = "SELECT max(id) FROM events WHERE job_seq = ?1",
    [S_RAW_RANGE] =
        "SELECT iteration, attempt, value, time FROM metrics"
        " WHERE job_seq = ?1 AND name_id = ?2 AND stage_idx = ?3 AND iteration BETWEEN ?4 AND ?5"
        " ORDER BY iteration, attempt",
    [S_OTHER_ATTEMPT] =
        "SELECT max(attempt) FROM metrics WHERE job_seq = ?1 AND name_id = ?2 AND stage_idx = ?3"
        " AND iteration = ?4 AND attempt <> ?5",
    [S_ROLLUP_GET] =
        "SELECT " ROLLUP_COLS " FROM metric_rollups"
        " WHERE job_seq = ?1 AND name_id = ?2 AND stage_idx = ?3 AND level = ?4 AND bucket = ?5",
    [S_ROLLUP_RANGE] =
        "SELECT " ROLLUP_COLS " FROM metric_rollups"
        " WHERE job_seq = ?1 AND name_id = ?2 AND stage_idx = ?3 AND level = ?4"
        " AND bucket BETWEEN ?5 AND ?6 ORDER BY bucket",
    [S_ROLLUP_PUT] =
        "INSERT OR REPLACE INTO metric_rollups (job_seq, name_id, stage_idx, level, bucket, "
        ROLLUP_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
        " ?15, ?16, ?17, ?18)",
    [S_ROLLUP_STATS] =
        "SELECT stage_idx, sum(n), min(first_iter), max(last_iter) FROM metric_rollups"
        " WHERE job_seq = ?1 AND name_id = ?2 AND level = ?3 AND (?4 < 0 OR stage_idx = ?4)"
        " GROUP BY stage_idx ORDER BY stage_idx",
    [S_SERIES_KEYS] = "SELECT DISTINCT job_seq, name_id, stage_idx FROM metrics",
    [S_MODEL_INSERT] =
        "INSERT OR IGNORE INTO model_uploads (sha256, owner, size, params, input, classes,"
        " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_MODEL_GET] =
        "SELECT " MODEL_COLS " FROM model_uploads m WHERE m.sha256 = ?1"
        " AND (?2 IS NULL OR m.owner = ?2) ORDER BY m.id LIMIT 1",
    [S_MODEL_LIST] =
        "SELECT " MODEL_COLS " FROM model_uploads m WHERE m.id > ?1"
        " AND (?2 IS NULL OR m.owner = ?2) ORDER BY m.id LIMIT ?3",
    [S_MODEL_ACTIVE_JOBS] =
        "SELECT count(*) FROM jobs WHERE model = 'checkpoint:' || ?1"
        " AND state IN ('queued', 'running')",
    [S_MODEL_DELETE] =
        "DELETE FROM model_uploads WHERE sha256 = ?1 AND (?2 IS NULL OR owner = ?2)",
    [S_MODEL_REFS] =
        "SELECT (SELECT count(*) FROM model_uploads WHERE sha256 = ?1)"
        " + (SELECT count(*) FROM jobs WHERE model = 'checkpoint:' || ?1)"
        " + (SELECT count(*) FROM stages WHERE input_sha256 = ?1 OR output_sha256 = ?1)"
        " + (SELECT count(*) FROM artifacts WHERE sha256 = ?1 AND job_seq IS NOT NULL)",
    [S_MODEL_USAGE] = "SELECT coalesce(sum(size), 0) FROM model_uploads WHERE owner = ?1",
    [S_MODEL_ARTIFACT_DROP] =
        "DELETE FROM artifacts WHERE sha256 = ?1 AND job_seq IS NULL AND kind = 'checkpoint'",
};

/* The job-list statements, one per combination of filters (bit 0 state,
 * 1 owner, 2 dataset, 3 model). */
#define JOB_LIST_VARIANTS 16

struct store {
    sqlite3 *db;
    pthread_mutex_t mu;                        /* one user of db at a time */
    sqlite3_stmt *stmts[S_COUNT];
    sqlite3_stmt *job_list[JOB_LIST_VARIANTS];
    int schema_version;
    int st_rc;                                 /* what the last failed prepare returned */
    int64_t busy_start;                        /* monotonic ms: this wait for a lock began */
    int64_t busy_until;                        /* monotonic ms: found locked until then */
    struct racc *racc;                         /* rollup buckets of the ingest in progress */
    size_t racc_used;
};

/* ---- helpers ------------------------------------------------------------- */

/* SQLite's busy handler (the connection is used under s->mu): wait for
 * another process's lock up to STORE_BUSY_TIMEOUT_MS; once a wait has run
 * out, the database counts as locked for STORE_BUSY_HOLD_MS and later
 * writes wait only STORE_BUSY_QUICK_MS, so a long outside lock turns every
 * write into a quick 503 instead of stalling the daemon (HTTP threads and
 * the worker link share this connection). */
static int on_busy(void *arg, int count)
{
    store *s = arg;
    int64_t now = (int64_t)(gpp__mono_ns() / 1000000);
    if (count == 0)
        s->busy_start = now;
    int64_t limit = now < s->busy_until ? STORE_BUSY_QUICK_MS : STORE_BUSY_TIMEOUT_MS;
    int64_t waited = now - s->busy_start;
    if (waited >= limit) {
        s->busy_until = now + STORE_BUSY_HOLD_MS;
        return 0;
    }
    int64_t nap = count < 5 ? (int64_t)1 << count : 20;   /* 1, 2, 4, 8, 16, then 20 ms */
    if (nap > limit - waited)
        nap = limit - waited;
    sqlite3_sleep((int)nap);
    return 1;
}

static int db_fail(store *s, int rc, const char *what, gpp_error *err)
{
    int prim = rc & 0xff;
    const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    switch (prim) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return gpp_error_set(err, GPP_EUNAVAIL, "unavailable", "",
                             "the database is busy (%s); try again", what);
    case SQLITE_FULL:
        return gpp_error_set(err, GPP_EUNAVAIL, "unavailable", "",
                             "the disk is full (%s); nothing was written", what);
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_NOMEM:
        return gpp_error_set(err, GPP_EUNAVAIL, "unavailable", "",
                             "the database is unavailable (%s): %s", what, msg);
    case SQLITE_CONSTRAINT:
        return gpp_error_set(err, GPP_EINVAL, "conflict", "", "%s: %s", what, msg);
    default:
        return gpp_error_set(err, GPP_EIO, "internal", "", "database error (%s): %s", what, msg);
    }
}

/* The cached statement `id`, reset and unbound; NULL with *err on failure. */
static sqlite3_stmt *st(store *s, int id, gpp_error *err)
{
    sqlite3_stmt *q = s->stmts[id];
    if (!q) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q, NULL);
        if (rc != SQLITE_OK) {
            s->st_rc = db_fail(s, rc, "prepare", err);
            return NULL;
        }
        s->stmts[id] = q;
    }
    return q;
}

/* Reset a statement after use so it holds no locks or bindings. */
static void done(sqlite3_stmt *q)
{
    if (q) {
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
    }
}

/* Run a statement that returns no rows. */
static int exec_stmt(store *s, sqlite3_stmt *q, const char *what, gpp_error *err)
{
    int rc = sqlite3_step(q);
    done(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_fail(s, rc, what, err);
    return 0;
}

static int tx_begin(store *s, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_BEGIN, err);
    return q ? exec_stmt(s, q, "begin", err) : s->st_rc;
}

static int tx_commit(store *s, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_COMMIT, err);
    return q ? exec_stmt(s, q, "commit", err) : s->st_rc;
}

static void tx_rollback(store *s)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    sqlite3_stmt *q = st(s, S_ROLLBACK, NULL);
    if (q) {
        sqlite3_step(q);
        done(q);
    }
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static void bind_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(q, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, i);
}

static void bind_time(sqlite3_stmt *q, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(q, i, v);
    else
        sqlite3_bind_null(q, i);
}

/* Record checkpoint artifact sha256 (ignored when it is there): a stage's
 * output (job_seq, stage_idx) or an upload (job_seq 0).  Under s->mu. */
static int artifact_insert(store *s, const char *sha256, int64_t size, int64_t job_seq,
                           int stage_idx, int64_t now, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_ARTIFACT_INSERT, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, sha256);
    sqlite3_bind_int64(q, 2, size);
    bind_text(q, 3, "checkpoint");
    if (job_seq) {
        sqlite3_bind_int64(q, 4, job_seq);
        sqlite3_bind_int(q, 5, stage_idx);
    } else {
        sqlite3_bind_null(q, 4);
        sqlite3_bind_null(q, 5);
    }
    sqlite3_bind_int64(q, 6, now);
    return exec_stmt(s, q, "artifact insert", err);
}

static char *col_dup(sqlite3_stmt *q, int i)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    return t ? strdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *q, int i, char *dst, size_t n)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static int64_t col_time(sqlite3_stmt *q, int i)
{
    return sqlite3_column_type(q, i) == SQLITE_NULL ? 0 : sqlite3_column_int64(q, i);
}

static bool valid_name(const char *s, bool metric)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > STORE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-' || (metric && c == '/');
        if (!ok)
            return false;
    }
    return true;
}

/* Append an event row (inside the caller's transaction). */
static int event_add(store *s, int64_t job_seq, const char *type, const char *data,
                     gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_EVENT_INSERT, err);
    if (!q)
        return s->st_rc;
    if (job_seq)
        sqlite3_bind_int64(q, 1, job_seq);
    else
        sqlite3_bind_null(q, 1);
    sqlite3_bind_int64(q, 2, gpp__now_ms());
    bind_text(q, 3, type);
    bind_text(q, 4, data);
    return exec_stmt(s, q, "event", err);
}

static int event_job(store *s, int64_t job_seq, const char *job_id, const char *state,
                     const char *reason, gpp_error *err)
{
    gpp__buf b = {0};
    gpp__buf_puts(&b, "{\"job\":");
    gpp__buf_json_str(&b, job_id);
    gpp__buf_puts(&b, ",\"state\":");
    gpp__buf_json_str(&b, state);
    gpp__buf_puts(&b, ",\"reason\":");
    gpp__buf_json_str(&b, reason);
    gpp__buf_puts(&b, "}");
    char *data = gpp__buf_take(&b, NULL);
    if (!data)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    int rc = event_add(s, job_seq, "job", data, err);
    free(data);
    return rc;
}

static int event_stage(store *s, int64_t job_seq, const char *job_id, int idx,
                       const char *kind, const char *state, int attempt, const char *reason,
                       const char *worker, gpp_error *err)
{
    gpp__buf b = {0};
    gpp__buf_puts(&b, "{\"job\":");
    gpp__buf_json_str(&b, job_id);
    gpp__buf_printf(&b, ",\"stage\":%d,\"kind\":", idx);
    gpp__buf_json_str(&b, kind);
    gpp__buf_puts(&b, ",\"state\":");
    gpp__buf_json_str(&b, state);
    gpp__buf_printf(&b, ",\"attempt\":%d,\"reason\":", attempt);
    gpp__buf_json_str(&b, reason);
    gpp__buf_puts(&b, ",\"worker\":");
    gpp__buf_json_str(&b, worker);
    gpp__buf_puts(&b, "}");
    char *data = gpp__buf_take(&b, NULL);
    if (!data)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    int rc = event_add(s, job_seq, "stage", data, err);
    free(data);
    return rc;
}

static int log_event_tx(store *s, int64_t job_seq, const char *job_id, int stage_idx,
                        const char *level, const char *source, const char *message,
                        gpp_error *err);

static int log_add(store *s, int64_t job_seq, int stage_idx, const char *level,
                   const char *source, const char *message, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_LOG_INSERT, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    if (stage_idx >= 0)
        sqlite3_bind_int(q, 2, stage_idx);
    else
        sqlite3_bind_null(q, 2);
    sqlite3_bind_int64(q, 3, gpp__now_ms());
    bind_text(q, 4, level);
    bind_text(q, 5, source);
    bind_text(q, 6, message);
    return exec_stmt(s, q, "log", err);
}

/* ---- open / migrations ---------------------------------------------------- */

static int rollups_backfill(store *s, gpp_error *err);

static int apply_migrations(store *s, gpp_error *err)
{
    int rc = tx_begin(s, err);
    if (rc != 0)
        return rc;
    char *emsg = NULL;
    if (sqlite3_exec(s->db,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at INTEGER NOT NULL)",
                     NULL, NULL, &emsg) != SQLITE_OK) {
        rc = gpp_error_set(err, GPP_EIO, "internal", "", "cannot create schema_migrations: %s",
                           emsg ? emsg : "?");
        sqlite3_free(emsg);
        goto fail;
    }
    int known = (int)gppd_migrations_count, have = 0;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT version, name FROM schema_migrations ORDER BY version",
                           -1, &q, NULL) != SQLITE_OK) {
        rc = db_fail(s, sqlite3_errcode(s->db), "schema_migrations", err);
        goto fail;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int v = sqlite3_column_int(q, 0);
        const char *name = (const char *)sqlite3_column_text(q, 1);
        if (v > have)
            have = v;
        if (v > known)
            continue;
        if (v < 1 || !name || strcmp(name, gppd_migrations[v - 1].name) != 0) {
            rc = gpp_error_set(err, GPP_EVERSION, "bad_schema", "",
                               "gppd.db records migration %d as '%s' but this gppd has '%s';"
                               " it was not written by this gppd", v, name ? name : "",
                               v >= 1 ? gppd_migrations[v - 1].name : "?");
            sqlite3_finalize(q);
            goto fail;
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        rc = db_fail(s, rc, "schema_migrations", err);
        goto fail;
    }
    if (have > known) {
        rc = gpp_error_set(err, GPP_EVERSION, "newer_schema", "",
                           "gppd.db was written by a newer gppd (migration %d > %d); upgrade gppd",
                           have, known);
        goto fail;
    }
    for (int v = have + 1; v <= known; v++) {
        const struct gppd_migration *m = &gppd_migrations[v - 1];
        if (sqlite3_exec(s->db, m->sql, NULL, NULL, &emsg) != SQLITE_OK) {
            rc = gpp_error_set(err, GPP_EIO, "bad_schema", "", "migration %04d_%s failed: %s",
                               m->version, m->name, emsg ? emsg : "?");
            sqlite3_free(emsg);
            goto fail;
        }
        if (strcmp(m->name, "metric_rollups") == 0 && (rc = rollups_backfill(s, err)) != 0)
            goto fail;
        sqlite3_stmt *ins = NULL;
        if (sqlite3_prepare_v2(s->db,
                               "INSERT INTO schema_migrations (version, name, applied_at)"
                               " VALUES (?1, ?2, ?3)", -1, &ins, NULL) != SQLITE_OK) {
            rc = db_fail(s, sqlite3_errcode(s->db), "schema_migrations", err);
            goto fail;
        }
        sqlite3_bind_int(ins, 1, m->version);
        sqlite3_bind_text(ins, 2, m->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, gpp__now_ms());
        int src = sqlite3_step(ins);
        sqlite3_finalize(ins);
        if (src != SQLITE_DONE) {
            rc = db_fail(s, src, "schema_migrations", err);
            goto fail;
        }
    }
    rc = tx_commit(s, err);
    if (rc != 0)
        goto fail;
    s->schema_version = known;
    return 0;
fail:
    tx_rollback(s);
    return rc;
}

int store_open(store **out, const char *path, gpp_error *err)
{
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "cannot open %s: %s", path,
                           s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, on_busy, s);
    /* WAL + synchronous=FULL: every commit is fsynced to the WAL before
     * COMMIT returns, so what gppd acknowledged survives power loss too. */
    static const char *const pragmas[] = {
        "PRAGMA foreign_keys = ON",
        "PRAGMA synchronous = FULL",
        "PRAGMA temp_store = MEMORY",
        "PRAGMA cache_size = -32768",
        "PRAGMA wal_autocheckpoint = 4000",
    };
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "%s: cannot set WAL mode: %s", path,
                           sqlite3_errmsg(s->db));
        sqlite3_finalize(q);
        goto fail;
    }
    const char *mode = (const char *)sqlite3_column_text(q, 0);
    bool wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(q);
    if (!wal) {
        rc = gpp_error_set(err, GPP_EIO, "unavailable", "",
                           "%s: the file system does not support WAL mode", path);
        goto fail;
    }
    for (size_t i = 0; i < sizeof pragmas / sizeof pragmas[0]; i++) {
        if (sqlite3_exec(s->db, pragmas[i], NULL, NULL, NULL) != SQLITE_OK) {
            rc = gpp_error_set(err, GPP_EIO, "unavailable", "", "%s: %s failed: %s", path,
                               pragmas[i], sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    rc = apply_migrations(s, err);
    if (rc != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return rc;
}

void store_close(store *s)
{
    if (!s)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    for (int i = 0; i < JOB_LIST_VARIANTS; i++)
        sqlite3_finalize(s->job_list[i]);
    if (s->db)
        sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->racc);
    free(s);
}

int store_schema_version(store *s)
{
    return s->schema_version;
}

/* ---- tokens -------------------------------------------------------------- */

static void row_token(sqlite3_stmt *q, store_token *t)
{
    memset(t, 0, sizeof *t);
    t->id = sqlite3_column_int64(q, 0);
    col_copy(q, 1, t->public_id, sizeof t->public_id);
    col_copy(q, 2, t->name, sizeof t->name);
    col_copy(q, 3, t->role, sizeof t->role);
    col_copy(q, 4, t->prefix, sizeof t->prefix);
    t->created_at = col_time(q, 5);
    t->revoked_at = col_time(q, 6);
}

/* Load a token by hash (no lock): 0, GPP_ENOTFOUND or an error. */
static int token_by_hash(store *s, const uint8_t hash[32], store_token *out, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_TOKEN_BY_HASH, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const void *h = sqlite3_column_blob(q, 7);
        bool same = h && sqlite3_column_bytes(q, 7) == 32 && gpp__ct_equal(h, hash, 32);
        if (same && out)
            row_token(q, out);
        done(q);
        return same ? 0 : gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such token");
    }
    done(q);
    if (rc == SQLITE_DONE)
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such token");
    return db_fail(s, rc, "token", err);
}

static int token_by_public(store *s, const char *public_id, store_token *out, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_TOKEN_BY_PUBLIC, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, public_id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && out)
        row_token(q, out);
    done(q);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no token with id '%s'",
                             public_id);
    return db_fail(s, rc, "token", err);
}

int store_token_insert(store *s, const char *name, const char *role, const uint8_t hash[32],
                       const char *prefix, int64_t created_by, store_token *out,
                       gpp_error *err)
{
    if (!valid_name(name, false))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "name",
                             "a token name is 1..64 characters of [A-Za-z0-9_.-]");
    if (strcmp(role, "admin") != 0 && strcmp(role, "user") != 0 && strcmp(role, "worker") != 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "role",
                             "role must be admin, user or worker");
    pthread_mutex_lock(&s->mu);
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    rc = token_by_hash(s, hash, NULL, NULL);
    if (rc == 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "", "this token exists already");
        goto out;
    }
    char pid[16];
    for (int tries = 0;; tries++) {
        rc = gpp__random_id("t", 10, pid, sizeof pid);
        if (rc != 0) {
            rc = gpp_error_set(err, rc, "internal", "", "no randomness");
            goto out;
        }
        if (token_by_public(s, pid, NULL, NULL) == GPP_ENOTFOUND)
            break;
        if (tries > 8) {
            rc = gpp_error_set(err, GPP_EIO, "internal", "", "cannot draw a token id");
            goto out;
        }
    }
    sqlite3_stmt *q = st(s, S_TOKEN_INSERT, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, pid);
    bind_text(q, 2, name);
    bind_text(q, 3, role);
    sqlite3_bind_blob(q, 4, hash, 32, SQLITE_STATIC);
    bind_text(q, 5, prefix);
    sqlite3_bind_int64(q, 6, gpp__now_ms());
    if (created_by)
        sqlite3_bind_int64(q, 7, created_by);
    else
        sqlite3_bind_null(q, 7);
    rc = exec_stmt(s, q, "token insert", err);
    if (rc == 0)
        rc = tx_commit(s, err);
    if (rc == 0 && out)
        rc = token_by_public(s, pid, out, err);
out:
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_token_by_hash(store *s, const uint8_t hash[32], store_token *out, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = token_by_hash(s, hash, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_token_list(store *s, int64_t after_id, int limit, store_token **out, size_t *n,
                     bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    store_token *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_TOKEN_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, after_id);
    sqlite3_bind_int(q, 2, limit + 1);
    size_t k = 0;
    int src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW)
        row_token(q, &arr[k++]);
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "token list", err);
        goto out;
    }
    if (k > (size_t)limit) {
        *more = true;
        k = (size_t)limit;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    free(arr);
    return rc;
}

static int64_t token_count(store *s, const char *role, const char *name, bool active_only,
                           gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_TOKEN_COUNT, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, role);
    bind_text(q, 2, name);
    sqlite3_bind_int(q, 3, active_only);
    int rc = sqlite3_step(q);
    int64_t c = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    done(q);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "token count", err);
    return c;
}

int64_t store_token_count(store *s, const char *role, const char *name, bool active_only,
                          gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int64_t c = token_count(s, role, name, active_only, err);
    pthread_mutex_unlock(&s->mu);
    return c;
}

int store_token_revoke(store *s, const char *public_id, store_token *out, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    store_token t;
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    rc = token_by_public(s, public_id, &t, err);
    if (rc != 0)
        goto out;
    if (t.revoked_at == 0 && strcmp(t.role, "admin") == 0) {
        int64_t admins = token_count(s, "admin", NULL, true, err);
        if (admins < 0) {
            rc = (int)admins;
            goto out;
        }
        if (admins <= 1) {
            rc = gpp_error_set(err, GPP_EINVAL, "conflict", "",
                               "token %s is the last active admin token; issue another admin"
                               " token before revoking it", public_id);
            goto out;
        }
    }
    sqlite3_stmt *q = st(s, S_TOKEN_REVOKE, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, public_id);
    sqlite3_bind_int64(q, 2, gpp__now_ms());
    rc = exec_stmt(s, q, "token revoke", err);
    if (rc == 0)
        rc = tx_commit(s, err);
    if (rc == 0 && out)
        rc = token_by_public(s, public_id, out, err);
out:
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- jobs ---------------------------------------------------------------- */

void store_job_clear(store_job *j)
{
    if (!j)
        return;
    free(j->name);
    free(j->owner);
    free(j->dataset);
    free(j->model);
    free(j->device);
    free(j->spec);
    free(j->reason);
    memset(j, 0, sizeof *j);
}

void store_job_free(store_job *jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++)
        store_job_clear(&jobs[i]);
    free(jobs);
}

static void row_job(sqlite3_stmt *q, store_job *j)
{
    memset(j, 0, sizeof *j);
    j->seq = sqlite3_column_int64(q, 0);
    col_copy(q, 1, j->id, sizeof j->id);
    col_copy(q, 2, j->state, sizeof j->state);
    j->name = col_dup(q, 3);
    j->owner = col_dup(q, 4);
    j->dataset = col_dup(q, 5);
    j->model = col_dup(q, 6);
    j->device = col_dup(q, 7);
    j->spec = col_dup(q, 8);
    j->reason = col_dup(q, 9);
    j->priority = sqlite3_column_int(q, 10);
    j->stages_total = sqlite3_column_int(q, 11);
    j->stages_done = sqlite3_column_int(q, 12);
    j->created_at = col_time(q, 13);
    j->started_at = col_time(q, 14);
    j->finished_at = col_time(q, 15);
    j->updated_at = col_time(q, 16);
}

static int job_load(store *s, int which, int64_t seq, const char *id, store_job *out,
                    gpp_error *err)
{
    sqlite3_stmt *q = st(s, which, err);
    if (!q)
        return s->st_rc;
    if (which == S_JOB_BY_SEQ)
        sqlite3_bind_int64(q, 1, seq);
    else
        bind_text(q, 1, id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        row_job(q, out);
    done(q);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such job");
    return db_fail(s, rc, "job", err);
}

static bool job_finished(const char *state)
{
    return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
           strcmp(state, "cancelled") == 0;
}

static int job_set(store *s, int64_t seq, const char *state, const char *reason,
                   int64_t started, int64_t finished, int stages_done, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_JOB_SET, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, state);
    bind_text(q, 2, reason);
    bind_time(q, 3, started);
    bind_time(q, 4, finished);
    sqlite3_bind_int(q, 5, stages_done);
    sqlite3_bind_int64(q, 6, gpp__now_ms());
    sqlite3_bind_int64(q, 7, seq);
    return exec_stmt(s, q, "job update", err);
}

int store_job_create(store *s, const store_job_new *in, store_job *out, bool *existed,
                     gpp_error *err)
{
    *existed = false;
    memset(out, 0, sizeof *out);
    if (in->idem_key && !in->spec_sha256)
        return gpp_error_set(err, GPP_EINVAL, "internal", "", "idempotency key without hash");
    pthread_mutex_lock(&s->mu);
    int64_t now = gpp__now_ms(), seq = 0;
    char id[16];
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    if (in->idem_key) {
        sqlite3_stmt *q = st(s, S_IDEM_GET, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        sqlite3_bind_int64(q, 1, in->token_id);
        bind_text(q, 2, in->idem_key);
        int src = sqlite3_step(q);
        if (src == SQLITE_ROW) {
            const void *h = sqlite3_column_blob(q, 0);
            bool same = h && sqlite3_column_bytes(q, 0) == 32 &&
                        memcmp(h, in->spec_sha256, 32) == 0;
            int64_t prev = sqlite3_column_int64(q, 1);
            done(q);
            if (!same) {
                rc = gpp_error_set(err, GPP_EINVAL, "conflict", "Idempotency-Key",
                                   "Idempotency-Key '%s' was used for a different job spec",
                                   in->idem_key);
                goto out;
            }
            rc = job_load(s, S_JOB_BY_SEQ, prev, NULL, out, err);
            if (rc == 0)
                rc = tx_commit(s, err);
            if (rc == 0)
                *existed = true;
            goto out;
        }
        done(q);
        if (src != SQLITE_DONE) {
            rc = db_fail(s, src, "idempotency key", err);
            goto out;
        }
    }
    for (int tries = 0;; tries++) {
        rc = gpp__random_id("j", 12, id, sizeof id);
        if (rc != 0) {
            rc = gpp_error_set(err, rc, "internal", "", "no randomness");
            goto out;
        }
        sqlite3_stmt *q = st(s, S_JOB_INSERT, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        bool none = in->n_stages == 0;
        bind_text(q, 1, id);
        bind_text(q, 2, in->name);
        bind_text(q, 3, in->owner);
        bind_text(q, 4, in->dataset);
        bind_text(q, 5, in->model);
        bind_text(q, 6, in->device);
        sqlite3_bind_int(q, 7, in->priority);
        bind_text(q, 8, none ? "succeeded" : "queued");
        bind_text(q, 9, in->spec);
        sqlite3_bind_int(q, 10, in->n_stages);
        sqlite3_bind_int64(q, 11, now);
        bind_time(q, 12, none ? now : 0);
        int src = sqlite3_step(q);
        done(q);
        if (src == SQLITE_DONE)
            break;
        if ((src & 0xff) != SQLITE_CONSTRAINT || tries > 8) {
            rc = db_fail(s, src, "job insert", err);
            goto out;
        }
    }
    seq = sqlite3_last_insert_rowid(s->db);
    for (int i = 0; i < in->n_stages; i++) {
        sqlite3_stmt *q = st(s, S_STAGE_INSERT, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        sqlite3_bind_int64(q, 1, seq);
        sqlite3_bind_int(q, 2, i);
        bind_text(q, 3, in->stages[i].kind);
        sqlite3_bind_int(q, 4, in->stages[i].round);
        bind_text(q, 5, i == 0 ? (in->first_reason ? in->first_reason : "waiting_for_worker")
                               : "waiting_for_previous_stage");
        sqlite3_bind_int64(q, 6, now);
        rc = exec_stmt(s, q, "stage insert", err);
        if (rc != 0)
            goto out;
    }
    if (in->idem_key) {
        sqlite3_stmt *q = st(s, S_IDEM_INSERT, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        sqlite3_bind_int64(q, 1, in->token_id);
        bind_text(q, 2, in->idem_key);
        sqlite3_bind_blob(q, 3, in->spec_sha256, 32, SQLITE_STATIC);
        sqlite3_bind_int64(q, 4, seq);
        sqlite3_bind_int64(q, 5, now);
        rc = exec_stmt(s, q, "idempotency key", err);
        if (rc != 0)
            goto out;
    }
    rc = event_job(s, seq, id, in->n_stages ? "queued" : "succeeded", NULL, err);
    if (rc != 0)
        goto out;
    char msg[256];
    snprintf(msg, sizeof msg, "job submitted by %s: %d stages", in->owner, in->n_stages);
    rc = log_add(s, seq, -1, "info", "daemon", msg, err);
    if (rc != 0)
        goto out;
    rc = tx_commit(s, err);
    if (rc == 0)
        rc = job_load(s, S_JOB_BY_SEQ, seq, NULL, out, err);
out:
    if (rc != 0) {
        tx_rollback(s);
        store_job_clear(out);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_job_get(store *s, const char *id, store_job *out, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = job_load(s, S_JOB_BY_ID, 0, id, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static sqlite3_stmt *job_list_stmt(store *s, unsigned mask, gpp_error *err)
{
    if (s->job_list[mask])
        return s->job_list[mask];
    gpp__buf b = {0};
    gpp__buf_puts(&b, "SELECT " JOB_COLS_SPEC("NULL") " FROM jobs WHERE seq < :before");
    if (mask & 1) gpp__buf_puts(&b, " AND state = :state");
    if (mask & 2) gpp__buf_puts(&b, " AND owner = :owner");
    if (mask & 4) gpp__buf_puts(&b, " AND dataset = :dataset");
    if (mask & 8) gpp__buf_puts(&b, " AND model = :model");
    gpp__buf_puts(&b, " ORDER BY seq DESC LIMIT :limit");
    char *sql = gpp__buf_take(&b, NULL);
    if (!sql) {
        s->st_rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
        return NULL;
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK) {
        s->st_rc = db_fail(s, rc, "prepare", err);
        return NULL;
    }
    s->job_list[mask] = q;
    return q;
}

static void bind_named(sqlite3_stmt *q, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(q, name);
    if (i > 0)
        bind_text(q, i, v);
}

int store_job_list(store *s, const store_job_filter *f, int64_t before_seq, int limit,
                   store_job **out, size_t *n, bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    unsigned mask = (f->state ? 1u : 0) | (f->owner ? 2u : 0) | (f->dataset ? 4u : 0) |
                    (f->model ? 8u : 0);
    store_job *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    size_t k = 0;
    sqlite3_stmt *q = job_list_stmt(s, mask, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, sqlite3_bind_parameter_index(q, ":before"),
                       before_seq > 0 ? before_seq : INT64_MAX);
    bind_named(q, ":state", f->state);
    bind_named(q, ":owner", f->owner);
    bind_named(q, ":dataset", f->dataset);
    bind_named(q, ":model", f->model);
    sqlite3_bind_int(q, sqlite3_bind_parameter_index(q, ":limit"), limit + 1);
    int src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW)
        row_job(q, &arr[k++]);
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "job list", err);
        goto out;
    }
    if (k > (size_t)limit) {
        store_job_clear(&arr[limit]);
        *more = true;
        k = (size_t)limit;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_job_free(arr, k);
    return rc;
}

int store_job_counts(store *s, int64_t counts[STORE_JOB_NSTATES], gpp_error *err)
{
    memset(counts, 0, sizeof(int64_t) * STORE_JOB_NSTATES);
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    sqlite3_stmt *q = st(s, S_JOB_COUNTS, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(q, 0);
        for (int i = 0; state && i < STORE_JOB_NSTATES; i++)
            if (strcmp(state, store_job_states[i]) == 0)
                counts[i] = sqlite3_column_int64(q, 1);
    }
    done(q);
    if (src != SQLITE_DONE)
        rc = db_fail(s, src, "job counts", err);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_job_cancel(store *s, int64_t job_seq, const char *who, store_job *out,
                     int *running_stages, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    store_job j = {0};
    int running = 0;
    char reason[128];
    snprintf(reason, sizeof reason, "cancelled by %s", who ? who : "?");
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, &j, err);
    if (rc != 0)
        goto out;
    if (job_finished(j.state)) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "",
                           "job %s has finished (%s); only queued or running jobs can be"
                           " cancelled", j.id, j.state);
        goto out;
    }
    sqlite3_stmt *q = st(s, S_STAGES_OPEN, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    bind_text(q, 2, "failed");
    bind_text(q, 3, "cancelled");
    struct { int idx, attempt; char kind[12]; } open[256];
    int n_open = 0, src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(q, 3);
        if (state && (strcmp(state, "assigned") == 0 || strcmp(state, "running") == 0))
            running++;
        if (n_open < 256) {
            open[n_open].idx = sqlite3_column_int(q, 0);
            col_copy(q, 1, open[n_open].kind, sizeof open[n_open].kind);
            open[n_open].attempt = sqlite3_column_int(q, 2);
            n_open++;
        }
    }
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "stages", err);
        goto out;
    }
    int64_t now = gpp__now_ms();
    q = st(s, S_STAGES_CANCEL, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    bind_text(q, 2, reason);
    sqlite3_bind_int64(q, 3, now);
    rc = exec_stmt(s, q, "stage cancel", err);
    for (int i = 0; rc == 0 && i < n_open; i++)
        rc = event_stage(s, job_seq, j.id, open[i].idx, open[i].kind, "cancelled",
                         open[i].attempt, reason, NULL, err);
    if (rc == 0)
        rc = job_set(s, job_seq, "cancelled", reason, 0, now, j.stages_done, err);
    if (rc == 0)
        rc = event_job(s, job_seq, j.id, "cancelled", reason, err);
    if (rc == 0)
        rc = log_add(s, job_seq, -1, "info", "daemon", reason, err);
    if (rc == 0)
        rc = tx_commit(s, err);
    if (rc == 0 && out)
        rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, out, err);
out:
    if (rc != 0)
        tx_rollback(s);
    else if (running_stages)
        *running_stages = running;
    store_job_clear(&j);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_job_retry(store *s, int64_t job_seq, const char *who, store_job *out,
                    gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    store_job j = {0};
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, &j, err);
    if (rc != 0)
        goto out;
    if (strcmp(j.state, "failed") != 0 && strcmp(j.state, "cancelled") != 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "",
                           "job %s is %s; only failed or cancelled jobs can be retried", j.id,
                           j.state);
        goto out;
    }
    sqlite3_stmt *q = st(s, S_STAGE_FIRST_OPEN, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    int src = sqlite3_step(q);
    bool any = src == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL;
    int first = any ? sqlite3_column_int(q, 0) : -1;
    done(q);
    if (src != SQLITE_ROW) {
        rc = db_fail(s, src, "stages", err);
        goto out;
    }
    int64_t now = gpp__now_ms();
    /* collect the stages that go back to the queue, for their events */
    q = st(s, S_STAGES_OPEN, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    bind_text(q, 2, "succeeded");
    bind_text(q, 3, "skipped");
    struct { int idx, attempt; char kind[12]; } open[256];
    int n_open = 0;
    while ((src = sqlite3_step(q)) == SQLITE_ROW && n_open < 256) {
        open[n_open].idx = sqlite3_column_int(q, 0);
        col_copy(q, 1, open[n_open].kind, sizeof open[n_open].kind);
        open[n_open].attempt = sqlite3_column_int(q, 2);
        n_open++;
    }
    done(q);
    q = st(s, S_STAGES_REQUEUE, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int(q, 2, first);
    sqlite3_bind_int64(q, 3, now);
    rc = exec_stmt(s, q, "stage requeue", err);
    for (int i = 0; rc == 0 && i < n_open; i++)
        rc = event_stage(s, job_seq, j.id, open[i].idx, open[i].kind, "queued",
                         open[i].attempt,
                         open[i].idx == first ? "waiting_for_worker"
                                              : "waiting_for_previous_stage",
                         NULL, err);
    const char *state = any ? "queued" : "succeeded";
    if (rc == 0)
        rc = job_set(s, job_seq, state, NULL, 0, any ? 0 : now, j.stages_done, err);
    if (rc == 0)
        rc = event_job(s, job_seq, j.id, state, NULL, err);
    char msg[160];
    snprintf(msg, sizeof msg, "retried by %s from stage %d", who ? who : "?", first);
    if (rc == 0)
        rc = log_add(s, job_seq, -1, "info", "daemon", msg, err);
    if (rc == 0)
        rc = tx_commit(s, err);
    if (rc == 0 && out)
        rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, out, err);
out:
    if (rc != 0)
        tx_rollback(s);
    store_job_clear(&j);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- stages -------------------------------------------------------------- */

void store_stage_free(store_stage *stages, size_t n)
{
    if (!stages)
        return;
    for (size_t i = 0; i < n; i++) {
        free(stages[i].reason);
        free(stages[i].worker_id);
        free(stages[i].input_sha256);
        free(stages[i].output_sha256);
        free(stages[i].summary);
    }
    free(stages);
}

static void row_stage(sqlite3_stmt *q, store_stage *g)
{
    memset(g, 0, sizeof *g);
    g->id = sqlite3_column_int64(q, 0);
    g->job_seq = sqlite3_column_int64(q, 1);
    g->idx = sqlite3_column_int(q, 2);
    col_copy(q, 3, g->kind, sizeof g->kind);
    g->round = sqlite3_column_int(q, 4);
    col_copy(q, 5, g->state, sizeof g->state);
    g->attempt = sqlite3_column_int(q, 6);
    g->reason = col_dup(q, 7);
    g->worker_id = col_dup(q, 8);
    g->input_sha256 = col_dup(q, 9);
    g->output_sha256 = col_dup(q, 10);
    g->summary = col_dup(q, 11);
    g->progress = sqlite3_column_double(q, 12);
    g->not_before = col_time(q, 13);
    g->created_at = col_time(q, 14);
    g->started_at = col_time(q, 15);
    g->finished_at = col_time(q, 16);
    g->updated_at = col_time(q, 17);
    g->failures = sqlite3_column_int(q, 18);
}

int store_stage_list(store *s, int64_t job_seq, store_stage **out, size_t *n, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t cap = 0, k = 0;
    store_stage *arr = NULL;
    sqlite3_stmt *q = st(s, S_STAGE_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            store_stage *na = realloc(arr, ncap * sizeof *na);
            if (!na) {
                done(q);
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
                goto out;
            }
            arr = na;
            cap = ncap;
        }
        row_stage(q, &arr[k++]);
    }
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "stages", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_stage_free(arr, k);
    return rc;
}

static bool stage_state_valid(const char *st_)
{
    static const char *const ok[] = {"queued", "assigned", "running", "succeeded",
                                     "failed", "lost", "skipped"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(st_, ok[i]) == 0)
            return true;
    return false;
}

int store_stage_update(store *s, int64_t job_seq, int idx, const store_stage_change *c,
                       int *attempt_out, gpp_error *err)
{
    if (!c->state || !stage_state_valid(c->state))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "state",
                             "a stage cannot be moved to '%s' (cancel the job instead)",
                             c->state ? c->state : "(null)");
    pthread_mutex_lock(&s->mu);
    store_job j = {0};
    store_stage g = {0};
    bool have_stage = false;
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, &j, err);
    if (rc != 0)
        goto out;
    sqlite3_stmt *q = st(s, S_STAGE_GET, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int(q, 2, idx);
    int src = sqlite3_step(q);
    if (src == SQLITE_ROW) {
        row_stage(q, &g);
        have_stage = true;
    }
    done(q);
    if (src != SQLITE_ROW) {
        rc = src == SQLITE_DONE ? gpp_error_set(err, GPP_ENOTFOUND, "not_found", "",
                                                "job %s has no stage %d", j.id, idx)
                                : db_fail(s, src, "stage", err);
        goto out;
    }
    if (job_finished(j.state)) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "", "job %s has finished (%s)", j.id,
                           j.state);
        goto out;
    }
    if (strcmp(g.state, "succeeded") == 0 || strcmp(g.state, "failed") == 0 ||
        strcmp(g.state, "cancelled") == 0 || strcmp(g.state, "skipped") == 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "", "stage %d of job %s has finished (%s)",
                           idx, j.id, g.state);
        goto out;
    }
    if (c->expect_attempt >= 0 && c->expect_attempt != g.attempt) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "",
                           "stale attempt %d for stage %d of job %s (current %d)",
                           c->expect_attempt, idx, j.id, g.attempt);
        goto out;
    }
    bool assign = strcmp(c->state, "assigned") == 0;
    int attempt = g.attempt + (assign ? 1 : 0);
    int64_t now = gpp__now_ms();
    q = st(s, S_STAGE_SET, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int(q, 2, idx);
    bind_text(q, 3, c->state);
    sqlite3_bind_int(q, 4, attempt);
    bind_text(q, 5, c->reason);
    bind_text(q, 6, c->worker_id);
    bind_text(q, 7, c->summary);
    bind_text(q, 8, c->output_sha256);
    sqlite3_bind_double(q, 9, c->progress);
    bind_time(q, 10, strcmp(c->state, "queued") == 0 ? c->not_before : 0);
    sqlite3_bind_int64(q, 11, now);
    bind_text(q, 12, assign ? c->input_sha256 : NULL);
    sqlite3_bind_int(q, 13, c->add_failure ? 1 : 0);
    rc = exec_stmt(s, q, "stage update", err);
    if (rc == 0)
        rc = event_stage(s, job_seq, j.id, idx, g.kind, c->state, attempt, c->reason,
                         assign ? c->worker_id : g.worker_id, err);
    if (rc == 0 && c->output_sha256 && c->output_size > 0)
        rc = artifact_insert(s, c->output_sha256, c->output_size, job_seq, idx, now, err);
    if (rc != 0)
        goto out;
    /* the job follows its stages */
    const char *jstate = NULL, *jreason = j.reason;
    int64_t started = 0, finished = 0;
    int stages_done = j.stages_done;
    char why[600];
    if (assign || strcmp(c->state, "running") == 0) {
        if (strcmp(j.state, "queued") == 0) {
            jstate = "running";
            started = now;
        }
    } else if (strcmp(c->state, "succeeded") == 0 || strcmp(c->state, "skipped") == 0) {
        stages_done++;
        int next = idx + 1;
        if (strcmp(c->state, "succeeded") == 0 && c->skip_through > idx) {
            /* the stages the job no longer needs (grow stopped paying, a stop rule) */
            struct { int idx, attempt; char kind[12]; } sk[256];
            int n_sk = 0, src2;
            q = st(s, S_STAGES_RANGE, err);
            if (!q) {
                rc = s->st_rc;
                goto out;
            }
            sqlite3_bind_int64(q, 1, job_seq);
            sqlite3_bind_int(q, 2, idx);
            sqlite3_bind_int(q, 3, c->skip_through);
            while ((src2 = sqlite3_step(q)) == SQLITE_ROW && n_sk < 256) {
                sk[n_sk].idx = sqlite3_column_int(q, 0);
                col_copy(q, 1, sk[n_sk].kind, sizeof sk[n_sk].kind);
                sk[n_sk].attempt = sqlite3_column_int(q, 2);
                n_sk++;
            }
            done(q);
            q = st(s, S_STAGES_SKIP, err);
            if (!q) {
                rc = s->st_rc;
                goto out;
            }
            sqlite3_bind_int64(q, 1, job_seq);
            sqlite3_bind_int(q, 2, idx);
            sqlite3_bind_int(q, 3, c->skip_through);
            bind_text(q, 4, c->skip_reason);
            sqlite3_bind_int64(q, 5, now);
            rc = exec_stmt(s, q, "stage skip", err);
            if (rc == 0)
                stages_done += sqlite3_changes(s->db);
            /* why, in the job's log, before the skips and the job's end */
            if (rc == 0 && n_sk > 0 && c->skip_reason)
                rc = log_event_tx(s, job_seq, j.id, idx, "info", "daemon", c->skip_reason, err);
            for (int i = 0; rc == 0 && i < n_sk; i++)
                rc = event_stage(s, job_seq, j.id, sk[i].idx, sk[i].kind, "skipped",
                                 sk[i].attempt, c->skip_reason, NULL, err);
            if (rc != 0)
                goto out;
            next = c->skip_through + 1;
        }
        if (stages_done >= j.stages_total) {
            jstate = "succeeded";
            finished = now;
            if (c->job_reason)
                jreason = c->job_reason;
        } else {
            jstate = j.state;
            q = st(s, S_STAGE_REASON, err);
            if (!q) {
                rc = s->st_rc;
                goto out;
            }
            sqlite3_bind_int64(q, 1, job_seq);
            sqlite3_bind_int(q, 2, next);
            bind_text(q, 3, "waiting_for_worker");
            sqlite3_bind_int64(q, 4, now);
            rc = exec_stmt(s, q, "stage reason", err);
            if (rc != 0)
                goto out;
        }
    } else if (strcmp(c->state, "failed") == 0) {
        jstate = "failed";
        finished = now;
        snprintf(why, sizeof why, "stage %d (%s) failed: %s", idx, g.kind,
                 c->reason ? c->reason : "no reason given");
        jreason = why;
    }
    if (jstate) {
        bool changed = strcmp(jstate, j.state) != 0;
        rc = job_set(s, job_seq, jstate, jreason, started, finished, stages_done, err);
        if (rc == 0 && changed)
            rc = event_job(s, job_seq, j.id, jstate,
                           finished && (strcmp(jstate, "failed") == 0 || c->job_reason)
                               ? jreason : NULL, err);
        if (rc != 0)
            goto out;
    }
    rc = tx_commit(s, err);
    if (rc == 0 && attempt_out)
        *attempt_out = attempt;
out:
    if (rc != 0)
        tx_rollback(s);
    store_job_clear(&j);
    if (have_stage) {
        free(g.reason);
        free(g.worker_id);
        free(g.input_sha256);
        free(g.output_sha256);
        free(g.summary);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- metric rollups (migration 0003) ----------------------------------------- */

/* A summary of consecutive points of a series (see 0003_metric_rollups.sql);
 * the stage of each point it names is kept so units of several stages can
 * be merged at query time. */
typedef struct rsum {
    int64_t n;
    int first_stage, first_attempt;
    int64_t first_iter, first_time, last_iter;
    bool has_mm;
    int min_stage, min_attempt, max_stage, max_attempt;
    int64_t min_iter, min_time, max_iter, max_time;
    double min_value, max_value;
} rsum;

/* One rollup bucket touched by the ingest in progress. */
struct racc {
    bool used, dirty;
    int stage, level;
    int64_t name_id, bucket;
    rsum sum;
};

#define RACC_SLOTS 1024                /* open addressing; flushed at half full */
#define ROLLUP_ITER_BOUND ((int64_t)1 << 60)

static int64_t rollup_width(int level)
{
    int64_t w = STORE_ROLLUP_BASE;
    for (int l = 0; l < level; l++)
        w *= STORE_ROLLUP_FANOUT;
    return w;
}

static int64_t floor_div(int64_t a, int64_t w)
{
    int64_t q = a / w;
    return (a % w != 0 && a < 0) ? q - 1 : q;
}

static int64_t ceil_to(int64_t a, int64_t w)
{
    return -floor_div(-a, w) * w;
}

/* Add one shown point to *a (any order within one stage). */
static void rsum_add(rsum *a, int stage, int64_t it, int attempt, double v, int64_t time)
{
    if (a->n == 0 || it < a->first_iter) {
        a->first_stage = stage;
        a->first_iter = it;
        a->first_attempt = attempt;
        a->first_time = time;
    }
    if (a->n == 0 || it > a->last_iter)
        a->last_iter = it;
    a->n++;
    if (isnan(v))
        return;
    if (!a->has_mm || v < a->min_value || (v == a->min_value && it < a->min_iter)) {
        a->min_stage = stage;
        a->min_iter = it;
        a->min_attempt = attempt;
        a->min_value = v;
        a->min_time = time;
    }
    if (!a->has_mm || v > a->max_value || (v == a->max_value && it < a->max_iter)) {
        a->max_stage = stage;
        a->max_iter = it;
        a->max_attempt = attempt;
        a->max_value = v;
        a->max_time = time;
    }
    a->has_mm = true;
}

/* Append *b, whose points all come after those of *a, to *a. */
static void rsum_merge(rsum *a, const rsum *b)
{
    if (b->n == 0)
        return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    a->n += b->n;
    a->last_iter = b->last_iter;
    if (!b->has_mm)
        return;
    if (!a->has_mm || b->min_value < a->min_value) {
        a->min_stage = b->min_stage;
        a->min_iter = b->min_iter;
        a->min_attempt = b->min_attempt;
        a->min_value = b->min_value;
        a->min_time = b->min_time;
    }
    if (!a->has_mm || b->max_value > a->max_value) {
        a->max_stage = b->max_stage;
        a->max_iter = b->max_iter;
        a->max_attempt = b->max_attempt;
        a->max_value = b->max_value;
        a->max_time = b->max_time;
    }
    a->has_mm = true;
}

/* A rollup row (ROLLUP_COLS from column `c`) of stage `stage`. */
static void rsum_from_row(sqlite3_stmt *q, int c, int stage, rsum *a)
{
    memset(a, 0, sizeof *a);
    a->n = sqlite3_column_int64(q, c);
    a->first_stage = a->min_stage = a->max_stage = stage;
    a->first_iter = sqlite3_column_int64(q, c + 1);
    a->first_attempt = sqlite3_column_int(q, c + 2);
    a->first_time = sqlite3_column_int64(q, c + 3);
    a->last_iter = sqlite3_column_int64(q, c + 4);
    a->has_mm = sqlite3_column_type(q, c + 5) != SQLITE_NULL;
    if (!a->has_mm)
        return;
    a->min_iter = sqlite3_column_int64(q, c + 5);
    a->min_attempt = sqlite3_column_int(q, c + 6);
    a->min_value = sqlite3_column_double(q, c + 7);
    a->min_time = sqlite3_column_int64(q, c + 8);
    a->max_iter = sqlite3_column_int64(q, c + 9);
    a->max_attempt = sqlite3_column_int(q, c + 10);
    a->max_value = sqlite3_column_double(q, c + 11);
    a->max_time = sqlite3_column_int64(q, c + 12);
}

/* Reads the shown points (newest attempt per iteration) of one stage of a
 * series with iterations in [lo, hi], in order, calling fn for each. */
typedef int (*raw_fn)(void *ctx, int64_t it, int attempt, double v, int64_t time);

static int raw_range(store *s, int64_t job_seq, int64_t name_id, int stage, int64_t lo,
                     int64_t hi, raw_fn fn, void *ctx, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_RAW_RANGE, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, stage);
    sqlite3_bind_int64(q, 4, lo);
    sqlite3_bind_int64(q, 5, hi);
    bool have = false;
    int64_t it = 0, time = 0;
    int attempt = 0, src, rc = 0;
    double v = 0;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t i2 = sqlite3_column_int64(q, 0);
        if (have && i2 != it && (rc = fn(ctx, it, attempt, v, time)) != 0)
            break;
        have = true;
        it = i2;                        /* a later attempt of `it` replaces the point */
        attempt = sqlite3_column_int(q, 1);
        v = sqlite3_column_type(q, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 2);
        time = sqlite3_column_int64(q, 3);
    }
    done(q);
    if (rc != 0)
        return rc;
    if (src != SQLITE_DONE)
        return db_fail(s, src, "metric rollup", err);
    return have ? fn(ctx, it, attempt, v, time) : 0;
}

struct add_ctx {
    rsum *sum;
    int stage;
};

static int add_point_cb(void *ctx, int64_t it, int attempt, double v, int64_t time)
{
    struct add_ctx *c = ctx;
    rsum_add(c->sum, c->stage, it, attempt, v, time);
    return 0;
}

static int rollup_put(store *s, int64_t job_seq, int64_t name_id, int stage, int level,
                      int64_t bucket, const rsum *a, gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_ROLLUP_PUT, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, stage);
    sqlite3_bind_int(q, 4, level);
    sqlite3_bind_int64(q, 5, bucket);
    sqlite3_bind_int64(q, 6, a->n);
    sqlite3_bind_int64(q, 7, a->first_iter);
    sqlite3_bind_int(q, 8, a->first_attempt);
    sqlite3_bind_int64(q, 9, a->first_time);
    sqlite3_bind_int64(q, 10, a->last_iter);
    if (a->has_mm) {
        sqlite3_bind_int64(q, 11, a->min_iter);
        sqlite3_bind_int(q, 12, a->min_attempt);
        sqlite3_bind_double(q, 13, a->min_value);
        sqlite3_bind_int64(q, 14, a->min_time);
        sqlite3_bind_int64(q, 15, a->max_iter);
        sqlite3_bind_int(q, 16, a->max_attempt);
        sqlite3_bind_double(q, 17, a->max_value);
        sqlite3_bind_int64(q, 18, a->max_time);
    }
    return exec_stmt(s, q, "metric rollup", err);
}

/* Bucket `bucket` of `level` computed again: level 0 from the points, a
 * higher level from the buckets of the level below (already up to date). */
static int rollup_recompute(store *s, int64_t job_seq, int64_t name_id, int stage, int level,
                            int64_t bucket, rsum *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    if (level == 0) {
        int64_t w = rollup_width(0);
        struct add_ctx c = {out, stage};
        int64_t lo = bucket * w, hi = lo > INT64_MAX - (w - 1) ? INT64_MAX : lo + w - 1;
        return raw_range(s, job_seq, name_id, stage, lo, hi, add_point_cb, &c, err);
    }
    sqlite3_stmt *q = st(s, S_ROLLUP_RANGE, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, stage);
    sqlite3_bind_int(q, 4, level - 1);
    sqlite3_bind_int64(q, 5, bucket * STORE_ROLLUP_FANOUT);
    sqlite3_bind_int64(q, 6, bucket * STORE_ROLLUP_FANOUT + STORE_ROLLUP_FANOUT - 1);
    int src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        rsum c;
        rsum_from_row(q, 0, stage, &c);
        rsum_merge(out, &c);
    }
    done(q);
    return src == SQLITE_DONE ? 0 : db_fail(s, src, "metric rollup", err);
}

/* Write every touched bucket (level by level, so a recomputed bucket sees
 * its children) and empty the table. */
static int racc_flush(store *s, int64_t job_seq, gpp_error *err)
{
    int rc = 0;
    for (int level = 0; level < STORE_ROLLUP_LEVELS && rc == 0 && s->racc_used; level++)
        for (size_t i = 0; i < RACC_SLOTS && rc == 0; i++) {
            struct racc *a = &s->racc[i];
            if (!a->used || a->level != level)
                continue;
            if (a->dirty)
                rc = rollup_recompute(s, job_seq, a->name_id, a->stage, level, a->bucket,
                                      &a->sum, err);
            if (rc == 0 && a->sum.n > 0)
                rc = rollup_put(s, job_seq, a->name_id, a->stage, level, a->bucket, &a->sum,
                                err);
        }
    if (s->racc)
        memset(s->racc, 0, RACC_SLOTS * sizeof *s->racc);
    s->racc_used = 0;
    return rc;
}

/* The table entry of a bucket, loaded from the database on first use. */
static int racc_get(store *s, int64_t job_seq, int64_t name_id, int stage, int level,
                    int64_t bucket, struct racc **out, gpp_error *err)
{
    uint64_t h = (uint64_t)name_id * 0x9E3779B97F4A7C15u ^ (uint64_t)stage * 0xC2B2AE3D27D4EB4Fu ^
                 (uint64_t)bucket * 0x165667B19E3779F9u ^ (uint64_t)level;
    h ^= h >> 29;
    size_t i = (size_t)(h % RACC_SLOTS);
    for (;; i = (i + 1) % RACC_SLOTS) {
        struct racc *a = &s->racc[i];
        if (!a->used)
            break;
        if (a->name_id == name_id && a->stage == stage && a->level == level &&
            a->bucket == bucket) {
            *out = a;
            return 0;
        }
    }
    struct racc *a = &s->racc[i];
    memset(a, 0, sizeof *a);
    sqlite3_stmt *q = st(s, S_ROLLUP_GET, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, stage);
    sqlite3_bind_int(q, 4, level);
    sqlite3_bind_int64(q, 5, bucket);
    int src = sqlite3_step(q);
    if (src == SQLITE_ROW)
        rsum_from_row(q, 0, stage, &a->sum);
    done(q);
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        return db_fail(s, src, "metric rollup", err);
    a->used = true;
    a->name_id = name_id;
    a->stage = stage;
    a->level = level;
    a->bucket = bucket;
    s->racc_used++;
    *out = a;
    return 0;
}

/* Account a point that the ingest has just stored (a new row) in the
 * rollups: a new shown point is added to its buckets; one that supersedes an
 * older attempt's point marks its buckets for recomputation; one hidden by
 * a newer attempt changes nothing. */
static int rollup_note(store *s, int64_t job_seq, int64_t name_id, const store_metric_point *p,
                       gpp_error *err)
{
    if (!s->racc) {
        s->racc = calloc(RACC_SLOTS, sizeof *s->racc);
        if (!s->racc)
            return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    }
    if (s->racc_used + STORE_ROLLUP_LEVELS > RACC_SLOTS / 2) {
        int rc = racc_flush(s, job_seq, err);
        if (rc != 0)
            return rc;
    }
    int64_t it = p->iteration;
    struct racc *acc[STORE_ROLLUP_LEVELS];
    for (int l = 0; l < STORE_ROLLUP_LEVELS; l++) {
        int rc = racc_get(s, job_seq, name_id, p->stage_idx, l, floor_div(it, rollup_width(l)),
                          &acc[l], err);
        if (rc != 0)
            return rc;
    }
    if (acc[0]->dirty)
        return 0;                    /* every level is recomputed at the flush */
    bool fresh = acc[0]->sum.n == 0 || it > acc[0]->sum.last_iter;
    if (!fresh) {
        sqlite3_stmt *q = st(s, S_OTHER_ATTEMPT, err);
        if (!q)
            return s->st_rc;
        sqlite3_bind_int64(q, 1, job_seq);
        sqlite3_bind_int64(q, 2, name_id);
        sqlite3_bind_int(q, 3, p->stage_idx);
        sqlite3_bind_int64(q, 4, it);
        sqlite3_bind_int(q, 5, p->attempt);
        int src = sqlite3_step(q);
        bool other = src == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL;
        int other_attempt = other ? sqlite3_column_int(q, 0) : 0;
        done(q);
        if (src != SQLITE_ROW)
            return db_fail(s, src, "metric rollup", err);
        if (other && other_attempt > p->attempt)
            return 0;                /* hidden by a newer attempt */
        if (other) {                 /* supersedes an older attempt's point */
            for (int l = 0; l < STORE_ROLLUP_LEVELS; l++)
                acc[l]->dirty = true;
            return 0;
        }
    }
    double v = isfinite(p->value) ? p->value : NAN;
    for (int l = 0; l < STORE_ROLLUP_LEVELS; l++)
        if (!acc[l]->dirty)
            rsum_add(&acc[l]->sum, p->stage_idx, it, p->attempt, v, p->time);
    return 0;
}

/* Build the rollups of every series from its points (right after migration
 * 0003, for points stored before it). */
static int rollups_backfill(store *s, gpp_error *err)
{
    sqlite3_stmt *q = NULL;
    int rc = 0, src = SQLITE_DONE;
    if (sqlite3_prepare_v2(s->db, stmt_sql[S_SERIES_KEYS], -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, sqlite3_errcode(s->db), "metric rollup", err);
    while (rc == 0 && (src = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t job_seq = sqlite3_column_int64(q, 0), name_id = sqlite3_column_int64(q, 1);
        int stage = sqlite3_column_int(q, 2);
        /* level 0 from the points, bucket by bucket */
        sqlite3_stmt *r = NULL;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT DISTINCT iteration FROM metrics WHERE job_seq = ?1"
                               " AND name_id = ?2 AND stage_idx = ?3 ORDER BY iteration",
                               -1, &r, NULL) != SQLITE_OK) {
            rc = db_fail(s, sqlite3_errcode(s->db), "metric rollup", err);
            break;
        }
        sqlite3_bind_int64(r, 1, job_seq);
        sqlite3_bind_int64(r, 2, name_id);
        sqlite3_bind_int(r, 3, stage);
        int64_t prev = 0;
        bool any = false;
        while (rc == 0 && (src = sqlite3_step(r)) == SQLITE_ROW) {
            int64_t b = floor_div(sqlite3_column_int64(r, 0), rollup_width(0));
            if (any && b == prev)
                continue;
            any = true;
            prev = b;
            rsum a;
            rc = rollup_recompute(s, job_seq, name_id, stage, 0, b, &a, err);
            if (rc == 0)
                rc = rollup_put(s, job_seq, name_id, stage, 0, b, &a, err);
        }
        sqlite3_finalize(r);
        if (rc == 0 && src != SQLITE_DONE)
            rc = db_fail(s, src, "metric rollup", err);
        /* higher levels from the level below, parent by parent */
        for (int l = 1; l < STORE_ROLLUP_LEVELS && rc == 0 && any; l++) {
            if (sqlite3_prepare_v2(s->db,
                                   "SELECT bucket FROM metric_rollups WHERE job_seq = ?1"
                                   " AND name_id = ?2 AND stage_idx = ?3 AND level = ?4"
                                   " ORDER BY bucket", -1, &r, NULL) != SQLITE_OK) {
                rc = db_fail(s, sqlite3_errcode(s->db), "metric rollup", err);
                break;
            }
            sqlite3_bind_int64(r, 1, job_seq);
            sqlite3_bind_int64(r, 2, name_id);
            sqlite3_bind_int(r, 3, stage);
            sqlite3_bind_int(r, 4, l - 1);
            bool have = false;
            while (rc == 0 && (src = sqlite3_step(r)) == SQLITE_ROW) {
                int64_t b = floor_div(sqlite3_column_int64(r, 0), STORE_ROLLUP_FANOUT);
                if (have && b == prev)
                    continue;
                have = true;
                prev = b;
                rsum a;
                rc = rollup_recompute(s, job_seq, name_id, stage, l, b, &a, err);
                if (rc == 0 && a.n > 0)
                    rc = rollup_put(s, job_seq, name_id, stage, l, b, &a, err);
            }
            sqlite3_finalize(r);
            if (rc == 0 && src != SQLITE_DONE)
                rc = db_fail(s, src, "metric rollup", err);
        }
        src = SQLITE_ROW;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = db_fail(s, src, "metric rollup", err);
    sqlite3_finalize(q);
    return rc;
}


/* ---- metrics ------------------------------------------------------------- */

struct name_cache {
    const char *name;
    int64_t id;
};

/* The id of metric `name`, interned on first use, and recorded for the job. */
static int metric_name_id(store *s, int64_t job_seq, const char *name, int64_t *id,
                          gpp_error *err)
{
    sqlite3_stmt *q = st(s, S_NAME_GET, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, name);
    int src = sqlite3_step(q);
    if (src == SQLITE_ROW)
        *id = sqlite3_column_int64(q, 0);
    done(q);
    if (src == SQLITE_DONE) {
        q = st(s, S_NAME_INSERT, err);
        if (!q)
            return s->st_rc;
        bind_text(q, 1, name);
        int rc = exec_stmt(s, q, "metric name", err);
        if (rc != 0)
            return rc;
        *id = sqlite3_last_insert_rowid(s->db);
    } else if (src != SQLITE_ROW) {
        return db_fail(s, src, "metric name", err);
    }
    q = st(s, S_JMN_INSERT, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, *id);
    return exec_stmt(s, q, "job metric name", err);
}

static int metrics_insert(store *s, int64_t job_seq, const store_metric_point *p, size_t n,
                          const char *event_data, size_t *inserted, gpp_error *err)
{
    if (inserted)
        *inserted = 0;
    for (size_t i = 0; i < n; i++)
        if (!valid_name(p[i].name, true))
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "name",
                                 "metric name '%.64s' is not 1..64 characters of"
                                 " [A-Za-z0-9_./-]", p[i].name ? p[i].name : "");
    pthread_mutex_lock(&s->mu);
    struct name_cache cache[32];
    size_t n_cache = 0, added = 0;
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    sqlite3_stmt *q = st(s, S_JOB_EXISTS, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    int src = sqlite3_step(q);
    done(q);
    if (src != SQLITE_ROW) {
        rc = src == SQLITE_DONE ? gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such job")
                                : db_fail(s, src, "job", err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t name_id = -1;
        for (size_t c = 0; c < n_cache; c++)
            if (cache[c].name == p[i].name || strcmp(cache[c].name, p[i].name) == 0) {
                name_id = cache[c].id;
                break;
            }
        if (name_id < 0) {
            rc = metric_name_id(s, job_seq, p[i].name, &name_id, err);
            if (rc != 0)
                goto out;
            if (n_cache < sizeof cache / sizeof cache[0])
                cache[n_cache++] = (struct name_cache){p[i].name, name_id};
        }
        q = st(s, S_METRIC_INSERT, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        sqlite3_bind_int64(q, 1, job_seq);
        sqlite3_bind_int64(q, 2, name_id);
        sqlite3_bind_int(q, 3, p[i].stage_idx);
        sqlite3_bind_int64(q, 4, p[i].iteration);
        sqlite3_bind_int(q, 5, p[i].attempt);
        if (isfinite(p[i].value))
            sqlite3_bind_double(q, 6, p[i].value);
        else
            sqlite3_bind_null(q, 6);
        sqlite3_bind_int64(q, 7, p[i].time);
        src = sqlite3_step(q);
        done(q);
        if (src != SQLITE_DONE) {
            rc = db_fail(s, src, "metric insert", err);
            goto out;
        }
        if (sqlite3_changes(s->db) > 0) {
            added++;
            rc = rollup_note(s, job_seq, name_id, &p[i], err);
            if (rc != 0)
                goto out;
        }
    }
    rc = racc_flush(s, job_seq, err);
    if (rc != 0)
        goto out;
    if (event_data) {
        rc = event_add(s, job_seq, "metrics", event_data, err);
        if (rc != 0)
            goto out;
    }
    rc = tx_commit(s, err);
out:
    if (rc != 0) {
        tx_rollback(s);
        if (s->racc)                    /* what the rolled-back ingest had summed */
            memset(s->racc, 0, RACC_SLOTS * sizeof *s->racc);
        s->racc_used = 0;
    } else if (inserted) {
        *inserted = added;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_metrics_insert(store *s, int64_t job_seq, const store_metric_point *p, size_t n,
                         size_t *inserted, gpp_error *err)
{
    return metrics_insert(s, job_seq, p, n, NULL, inserted, err);
}

int store_metrics_ingest(store *s, int64_t job_seq, const store_metric_point *p, size_t n,
                         const char *event_data, size_t *inserted, gpp_error *err)
{
    return metrics_insert(s, job_seq, p, n, event_data, inserted, err);
}

void store_metrics_result_clear(store_metrics_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_names; i++)
        free(r->names[i]);
    free(r->names);
    for (size_t i = 0; i < r->n_series; i++) {
        store_series *sr = &r->series[i];
        free(sr->stage);
        free(sr->attempt);
        free(sr->iteration);
        free(sr->time);
        free(sr->value);
    }
    free(r->series);
    memset(r, 0, sizeof *r);
}

static bool series_grow(store_series *sr, size_t *cap)
{
    size_t nc = *cap ? *cap * 2 : 256;
    int *st_ = realloc(sr->stage, nc * sizeof *st_);
    if (st_) sr->stage = st_;
    int *at = realloc(sr->attempt, nc * sizeof *at);
    if (at) sr->attempt = at;
    int64_t *it = realloc(sr->iteration, nc * sizeof *it);
    if (it) sr->iteration = it;
    int64_t *tm = realloc(sr->time, nc * sizeof *tm);
    if (tm) sr->time = tm;
    double *v = realloc(sr->value, nc * sizeof *v);
    if (v) sr->value = v;
    if (!st_ || !at || !it || !tm || !v)
        return false;
    *cap = nc;
    return true;
}

static void series_move(store_series *sr, size_t to, size_t from)
{
    sr->stage[to] = sr->stage[from];
    sr->attempt[to] = sr->attempt[from];
    sr->iteration[to] = sr->iteration[from];
    sr->time[to] = sr->time[from];
    sr->value[to] = sr->value[from];
}

size_t store_downsample_minmax(store_series *sr, size_t max_points)
{
    if (max_points < 2)
        max_points = 2;
    size_t n = sr->n;
    if (n <= max_points)
        return n;
    size_t buckets = max_points / 2;
    size_t size = (n + buckets - 1) / buckets;
    size_t o = 0;
    for (size_t a = 0; a < n; a += size) {
        size_t b = a + size < n ? a + size : n;
        size_t lo = SIZE_MAX, hi = SIZE_MAX;
        for (size_t i = a; i < b; i++) {
            double v = sr->value[i];
            if (isnan(v))
                continue;
            if (lo == SIZE_MAX || v < sr->value[lo])
                lo = i;
            if (hi == SIZE_MAX || v > sr->value[hi])
                hi = i;
        }
        if (lo == SIZE_MAX) {          /* only nulls in this bucket */
            series_move(sr, o++, a);
            continue;
        }
        size_t first = lo < hi ? lo : hi, second = lo < hi ? hi : lo;
        series_move(sr, o++, first);
        if (second != first)
            series_move(sr, o++, second);
    }
    sr->n = o;
    return o;
}

/* ---- the rollup query path ---- */

struct units {
    rsum *u;
    size_t n, cap;
};

static int units_push(struct units *us, const rsum *a, gpp_error *err)
{
    if (us->n == us->cap) {
        size_t nc = us->cap ? us->cap * 2 : 1024;
        rsum *nu = realloc(us->u, nc * sizeof *nu);
        if (!nu)
            return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
        us->u = nu;
        us->cap = nc;
    }
    us->u[us->n++] = *a;
    return 0;
}

struct unit_ctx {
    struct units *us;
    int stage;
    gpp_error *err;
};

static int unit_point_cb(void *ctx, int64_t it, int attempt, double v, int64_t time)
{
    struct unit_ctx *c = ctx;
    rsum a = {0};
    rsum_add(&a, c->stage, it, attempt, v, time);
    return units_push(c->us, &a, c->err);
}

/* Append the rows of one level with buckets in [b0, b1] as units. */
static int units_level(store *s, int64_t job_seq, int64_t name_id, int stage, int level,
                       int64_t b0, int64_t b1, struct units *us, gpp_error *err)
{
    if (b0 > b1)
        return 0;
    sqlite3_stmt *q = st(s, S_ROLLUP_RANGE, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, stage);
    sqlite3_bind_int(q, 4, level);
    sqlite3_bind_int64(q, 5, b0);
    sqlite3_bind_int64(q, 6, b1);
    int src, rc = 0;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        rsum a;
        rsum_from_row(q, 0, stage, &a);
        if ((rc = units_push(us, &a, err)) != 0)
            break;
    }
    done(q);
    if (rc == 0 && src != SQLITE_DONE)
        rc = db_fail(s, src, "metric rollup", err);
    return rc;
}

static void series_put(store_series *sr, size_t at, int stage, int64_t it, int attempt,
                       double v, int64_t time)
{
    sr->stage[at] = stage;
    sr->iteration[at] = it;
    sr->attempt[at] = attempt;
    sr->value[at] = v;
    sr->time[at] = time;
}

#define STAGES_MAX_FAST 4096

/* The downsampled series from the rollups (see store_metrics_query_run).
 * 1: done; 0: the caller reads the points instead; or a negative code. */
static int series_fast(store *s, const store_metrics_query *qr, int64_t name_id,
                       store_series *sr, gpp_error *err)
{
    if (qr->max_points == 0 || qr->every > 1 || (qr->has_since && qr->since == INT64_MAX))
        return 0;
    struct stage_stat { int stage; int64_t n, first, last; } *ss = NULL;
    size_t n_ss = 0, cap_ss = 0;
    struct units us = {0};
    int rc = 0, src;
    sqlite3_stmt *q = st(s, S_ROLLUP_STATS, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, qr->job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    sqlite3_bind_int(q, 3, STORE_ROLLUP_LEVELS - 1);
    sqlite3_bind_int(q, 4, qr->stage_idx);
    int64_t total = 0;
    bool wild = false;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (n_ss == cap_ss) {
            size_t nc = cap_ss ? cap_ss * 2 : 8;
            void *nss = nc <= STAGES_MAX_FAST ? realloc(ss, nc * sizeof *ss) : NULL;
            if (!nss) {
                wild = true;                  /* out of memory or absurd: the points */
                break;
            }
            ss = nss;
            cap_ss = nc;
        }
        struct stage_stat *t = &ss[n_ss++];
        t->stage = sqlite3_column_int(q, 0);
        t->n = sqlite3_column_int64(q, 1);
        t->first = sqlite3_column_int64(q, 2);
        t->last = sqlite3_column_int64(q, 3);
        total += t->n;
        if (t->first < -ROLLUP_ITER_BOUND || t->last > ROLLUP_ITER_BOUND)
            wild = true;
    }
    done(q);
    if (!wild && src != SQLITE_DONE) {
        rc = db_fail(s, src, "metric rollup", err);
        goto out;
    }
    size_t raw_max = qr->max_points > STORE_ROLLUP_RAW_MAX ? qr->max_points
                                                           : STORE_ROLLUP_RAW_MAX;
    if (wild || total <= (int64_t)raw_max)
        goto out;                             /* rc 0: read the points */
    int64_t lo = qr->has_since ? qr->since + 1 : INT64_MIN;
    size_t buckets = qr->max_points / 2 ? qr->max_points / 2 : 1;
    int L = 0;
    for (int l = STORE_ROLLUP_LEVELS - 1; l >= 0 && L == 0; l--) {
        int64_t w = rollup_width(l), est = 0;
        for (size_t k = 0; k < n_ss; k++) {
            if (ss[k].last < lo)
                continue;
            int64_t from = ss[k].first > lo ? ss[k].first : lo;
            est += floor_div(ss[k].last, w) - floor_div(from, w) + 1;
        }
        if (est >= (int64_t)buckets)
            L = l;
    }
    for (;;) {                                /* L steps down while units are too few */
        us.n = 0;
        for (size_t k = 0; k < n_ss && rc == 0; k++) {
            if (ss[k].last < lo)
                continue;
            int stage = ss[k].stage;
            int64_t start_l = floor_div(ss[k].first, rollup_width(L)) * rollup_width(L);
            int64_t lo_c = lo > start_l ? lo : start_l;
            int64_t start[STORE_ROLLUP_LEVELS];
            for (int l = 0; l <= L; l++)
                start[l] = ceil_to(lo_c, rollup_width(l));
            if (lo_c < start[0]) {                /* the points of a partial level-0 bucket */
                struct unit_ctx c = {&us, stage, err};
                rc = raw_range(s, qr->job_seq, name_id, stage, lo_c, start[0] - 1,
                               unit_point_cb, &c, err);
            }
            for (int l = 0; l < L && rc == 0; l++)
                rc = units_level(s, qr->job_seq, name_id, stage, l,
                                 start[l] / rollup_width(l),
                                 start[l + 1] / rollup_width(l) - 1, &us, err);
            if (rc == 0)
                rc = units_level(s, qr->job_seq, name_id, stage, L,
                                 start[L] / rollup_width(L), INT64_MAX, &us, err);
        }
        if (rc != 0)
            goto out;
        if (us.n >= buckets || L == 0)
            break;
        L--;
    }
    int64_t covered = 0;
    for (size_t i = 0; i < us.n; i++)
        covered += us.u[i].n;
    if (qr->limit != SIZE_MAX && covered > 0 && (uint64_t)covered > (uint64_t)qr->limit)
        goto out;                             /* `limit` cuts it: read the points */
    size_t m = us.n, groups = m < buckets ? m : buckets;
    size_t cap = 0;
    while (cap < 2 * groups)
        if (!series_grow(sr, &cap)) {
            rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
            goto out;
        }
    size_t o = 0;
    for (size_t k = 0; k < groups; k++) {
        size_t a = (size_t)((unsigned long long)k * m / groups);
        size_t b = (size_t)((unsigned long long)(k + 1) * m / groups);
        rsum g = {0};
        for (size_t i = a; i < b; i++)
            rsum_merge(&g, &us.u[i]);
        if (!g.has_mm) {
            series_put(sr, o++, g.first_stage, g.first_iter, g.first_attempt, NAN,
                       g.first_time);
            continue;
        }
        bool min_first = g.min_stage < g.max_stage ||
                         (g.min_stage == g.max_stage && g.min_iter <= g.max_iter);
        bool same = g.min_stage == g.max_stage && g.min_iter == g.max_iter;
        for (int pass = 0; pass < (same ? 1 : 2); pass++) {
            if ((pass == 0) == min_first)
                series_put(sr, o++, g.min_stage, g.min_iter, g.min_attempt, g.min_value,
                           g.min_time);
            else
                series_put(sr, o++, g.max_stage, g.max_iter, g.max_attempt, g.max_value,
                           g.max_time);
        }
    }
    sr->n = o;
    sr->scanned = (size_t)covered;
    sr->truncated = false;
    sr->level = L;
    rc = 1;
out:
    free(ss);
    free(us.u);
    return rc;
}

static int series_read(store *s, const store_metrics_query *qr, int64_t name_id,
                       store_series *sr, gpp_error *err)
{
    sr->level = -1;
    int fast = series_fast(s, qr, name_id, sr, err);
    if (fast != 0)
        return fast < 0 ? fast : 0;
    sqlite3_stmt *q = st(s, qr->stage_idx >= 0 ? S_SERIES_STAGE : S_SERIES_ALL, err);
    if (!q)
        return s->st_rc;
    sqlite3_bind_int64(q, 1, qr->job_seq);
    sqlite3_bind_int64(q, 2, name_id);
    if (qr->stage_idx >= 0)
        sqlite3_bind_int(q, 3, qr->stage_idx);
    sqlite3_bind_int64(q, 4, qr->has_since ? qr->since : INT64_MIN);
    size_t cap = 0, n = 0;
    int src, rc = 0;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        int stage = sqlite3_column_int(q, 0);
        int64_t it = sqlite3_column_int64(q, 1);
        size_t at;
        if (n > 0 && sr->stage[n - 1] == stage && sr->iteration[n - 1] == it) {
            at = n - 1;                 /* a later attempt replaces the point */
        } else {
            if (n >= qr->limit) {
                sr->truncated = true;
                break;
            }
            if (n == cap && !series_grow(sr, &cap)) {
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
                break;
            }
            at = n++;
        }
        sr->stage[at] = stage;
        sr->iteration[at] = it;
        sr->attempt[at] = sqlite3_column_int(q, 2);
        sr->value[at] = sqlite3_column_type(q, 3) == SQLITE_NULL ? NAN
                                                                 : sqlite3_column_double(q, 3);
        sr->time[at] = sqlite3_column_int64(q, 4);
    }
    done(q);
    if (rc == 0 && src != SQLITE_DONE && src != SQLITE_ROW)
        rc = db_fail(s, src, "metrics", err);
    sr->n = n;
    sr->scanned = n;
    if (rc != 0)
        return rc;
    if (qr->every > 1) {
        size_t o = 0;
        for (size_t i = 0; i < n; i += qr->every)
            series_move(sr, o++, i);
        sr->n = o;
    }
    if (qr->max_points > 0)
        store_downsample_minmax(sr, qr->max_points);
    return 0;
}

int store_metrics_query_run(store *s, const store_metrics_query *qr, store_metrics_result *out,
                            gpp_error *err)
{
    memset(out, 0, sizeof *out);
    if (qr->limit == 0 || qr->n_names > STORE_METRIC_NAMES_MAX)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "limit",
                             "bad metrics query");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    int64_t *ids = NULL;
    size_t cap = 0;
    sqlite3_stmt *q = st(s, S_JOB_NAMES, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, qr->job_seq);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (out->n_names == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(out->names, nc * sizeof *nn);
            int64_t *ni = nn ? realloc(ids, nc * sizeof *ni) : NULL;
            if (nn)
                out->names = nn;
            if (ni)
                ids = ni;
            if (!nn || !ni) {
                done(q);
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
                goto out;
            }
            cap = nc;
        }
        char *name = col_dup(q, 0);
        if (!name) {
            done(q);
            rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
            goto out;
        }
        ids[out->n_names] = sqlite3_column_int64(q, 1);
        out->names[out->n_names++] = name;
    }
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "metric names", err);
        goto out;
    }
    size_t want = qr->n_names ? qr->n_names : out->n_names;
    if (want > 0) {
        out->series = calloc(want, sizeof *out->series);
        if (!out->series) {
            rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
            goto out;
        }
    }
    for (size_t w = 0; w < want; w++) {
        size_t k = w;
        if (qr->n_names) {
            for (k = 0; k < out->n_names; k++)
                if (strcmp(out->names[k], qr->names[w]) == 0)
                    break;
            if (k == out->n_names)
                continue;                       /* the job has no such series */
            bool dup = false;
            for (size_t e = 0; e < out->n_series; e++)
                if (strcmp(out->series[e].name, qr->names[w]) == 0)
                    dup = true;
            if (dup)
                continue;
        }
        store_series *sr = &out->series[out->n_series++];
        snprintf(sr->name, sizeof sr->name, "%s", out->names[k]);
        rc = series_read(s, qr, ids[k], sr, err);
        if (rc != 0)
            goto out;
    }
out:
    pthread_mutex_unlock(&s->mu);
    free(ids);
    if (rc != 0)
        store_metrics_result_clear(out);
    return rc;
}

/* ---- events and logs ----------------------------------------------------- */

void store_event_free(store_event *ev, size_t n)
{
    if (!ev)
        return;
    for (size_t i = 0; i < n; i++)
        free(ev[i].data);
    free(ev);
}

int store_events_list(store *s, int64_t job_seq, int64_t after_id, int limit,
                      store_event **out, size_t *n, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    store_event *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0;
    sqlite3_stmt *q = st(s, job_seq ? S_EVENTS_JOB : S_EVENTS_ALL, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    if (job_seq)
        sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, after_id);
    sqlite3_bind_int(q, 3, limit);
    while ((src = sqlite3_step(q)) == SQLITE_ROW && k < (size_t)limit) {
        store_event *e = &arr[k++];
        e->id = sqlite3_column_int64(q, 0);
        e->job_seq = col_time(q, 1);
        e->time = sqlite3_column_int64(q, 2);
        col_copy(q, 3, e->type, sizeof e->type);
        e->data = col_dup(q, 4);
    }
    done(q);
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = db_fail(s, src, "events", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_event_free(arr, k);
    return rc;
}

int64_t store_event_last_id(store *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t id = 0;
    sqlite3_stmt *q = st(s, S_EVENT_LAST, NULL);
    if (q && sqlite3_step(q) == SQLITE_ROW)
        id = col_time(q, 0);
    done(q);
    pthread_mutex_unlock(&s->mu);
    return id;
}

int64_t store_event_last_id_job(store *s, int64_t job_seq)
{
    pthread_mutex_lock(&s->mu);
    int64_t id = 0;
    sqlite3_stmt *q = st(s, S_EVENT_LAST_JOB, NULL);
    if (q) {
        sqlite3_bind_int64(q, 1, job_seq);
        if (sqlite3_step(q) == SQLITE_ROW)
            id = col_time(q, 0);
    }
    done(q);
    pthread_mutex_unlock(&s->mu);
    return id;
}

int store_log_append(store *s, int64_t job_seq, int stage_idx, const char *level,
                     const char *source, const char *message, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = log_add(s, job_seq, stage_idx, level, source, message, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void store_log_free(store_log *logs, size_t n)
{
    if (!logs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(logs[i].source);
        free(logs[i].message);
    }
    free(logs);
}

int store_logs_list(store *s, int64_t job_seq, int64_t after_id, int limit, store_log **out,
                    size_t *n, bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    store_log *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0;
    sqlite3_stmt *q = st(s, S_LOGS_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int64(q, 2, after_id);
    sqlite3_bind_int(q, 3, limit + 1);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == (size_t)limit) {
            *more = true;
            break;
        }
        store_log *l = &arr[k++];
        l->id = sqlite3_column_int64(q, 0);
        l->stage_idx = sqlite3_column_type(q, 1) == SQLITE_NULL ? -1 : sqlite3_column_int(q, 1);
        l->time = sqlite3_column_int64(q, 2);
        col_copy(q, 3, l->level, sizeof l->level);
        l->source = col_dup(q, 4);
        l->message = col_dup(q, 5);
    }
    done(q);
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = db_fail(s, src, "logs", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_log_free(arr, k);
    return rc;
}

/* ---- data sets ----------------------------------------------------------- */

void store_dataset_clear(store_dataset *d)
{
    if (!d)
        return;
    free(d->path);
    free(d->info);
    free(d->sha256);
    free(d->created_by);
    memset(d, 0, sizeof *d);
}

void store_dataset_free(store_dataset *d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        store_dataset_clear(&d[i]);
    free(d);
}

static void row_dataset(sqlite3_stmt *q, store_dataset *d)
{
    memset(d, 0, sizeof *d);
    col_copy(q, 0, d->name, sizeof d->name);
    col_copy(q, 1, d->format, sizeof d->format);
    d->path = col_dup(q, 2);
    d->info = col_dup(q, 3);
    d->sha256 = col_dup(q, 4);
    d->created_at = col_time(q, 5);
    d->created_by = col_dup(q, 6);
}

int store_dataset_insert(store *s, const char *name, const char *format, const char *path,
                         const char *info, const char *created_by, gpp_error *err)
{
    if (!valid_name(name, false))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "name",
                             "a data set name is 1..64 characters of [A-Za-z0-9_.-]");
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_DATASET_INSERT, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, name);
    bind_text(q, 2, format);
    bind_text(q, 3, path);
    bind_text(q, 4, info);
    sqlite3_bind_int64(q, 5, gpp__now_ms());
    bind_text(q, 6, created_by);
    int src = sqlite3_step(q);
    done(q);
    if ((src & 0xff) == SQLITE_CONSTRAINT)
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "name",
                           "a data set named '%s' is registered already", name);
    else if (src != SQLITE_DONE)
        rc = db_fail(s, src, "data set insert", err);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_dataset_get(store *s, const char *name, store_dataset *out, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_DATASET_GET, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, name);
    int src = sqlite3_step(q);
    if (src == SQLITE_ROW)
        row_dataset(q, out);
    done(q);
    if (src == SQLITE_DONE)
        rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no data set named '%s'", name);
    else if (src != SQLITE_ROW)
        rc = db_fail(s, src, "data set", err);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_dataset_list(store *s, const char *after, int limit, store_dataset **out,
                       size_t *n, bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    store_dataset *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0;
    sqlite3_stmt *q = st(s, S_DATASET_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, after ? after : "");
    sqlite3_bind_int(q, 2, limit + 1);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == (size_t)limit) {
            *more = true;
            break;
        }
        row_dataset(q, &arr[k++]);
    }
    done(q);
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = db_fail(s, src, "data sets", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_dataset_free(arr, k);
    return rc;
}

/* ---- workers ------------------------------------------------------------- */

void store_worker_free(store_worker *w, size_t n)
{
    if (!w)
        return;
    for (size_t i = 0; i < n; i++) {
        free(w[i].id);
        free(w[i].name);
        free(w[i].host);
        free(w[i].devices);
        free(w[i].labels);
        free(w[i].state);
        free(w[i].stage_job);
    }
    free(w);
}

int store_worker_list(store *s, const char *after, int limit, store_worker **out, size_t *n,
                      bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    store_worker *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0;
    sqlite3_stmt *q = st(s, S_WORKER_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, after ? after : "");
    sqlite3_bind_int(q, 2, limit + 1);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == (size_t)limit) {
            *more = true;
            break;
        }
        store_worker *w = &arr[k++];
        w->id = col_dup(q, 0);
        w->name = col_dup(q, 1);
        w->host = col_dup(q, 2);
        w->devices = col_dup(q, 3);
        w->labels = col_dup(q, 4);
        w->state = col_dup(q, 5);
        w->threads = sqlite3_column_int(q, 6);
        w->stage_id = col_time(q, 7);
        w->connected_at = col_time(q, 8);
        w->last_seen = col_time(q, 9);
        w->stage_job = col_dup(q, 10);
        w->stage_idx = sqlite3_column_int(q, 11);
        col_copy(q, 12, w->stage_kind, sizeof w->stage_kind);
        w->stage_round = sqlite3_column_int(q, 13);
        w->stage_attempt = sqlite3_column_int(q, 14);
        w->stage_progress = sqlite3_column_double(q, 15);
    }
    done(q);
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = db_fail(s, src, "workers", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    store_worker_free(arr, k);
    return rc;
}

int64_t store_worker_count_active(store *s, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int64_t c = 0;
    sqlite3_stmt *q = st(s, S_WORKER_COUNT, err);
    if (!q) {
        c = s->st_rc;
    } else {
        int src = sqlite3_step(q);
        if (src == SQLITE_ROW)
            c = sqlite3_column_int64(q, 0);
        else
            c = db_fail(s, src, "workers", err);
        done(q);
    }
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* ---- artifacts ----------------------------------------------------------- */

int store_artifact_exists(store *s, const char *sha256_hex, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc;
    sqlite3_stmt *q = st(s, S_ARTIFACT_EXISTS, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, sha256_hex);
        int src = sqlite3_step(q);
        rc = src == SQLITE_ROW ? 1 : src == SQLITE_DONE ? 0 : db_fail(s, src, "artifact", err);
        done(q);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_artifact_size(store *s, const char *sha256_hex, int64_t *size, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_ARTIFACT_SIZE, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, sha256_hex);
        int src = sqlite3_step(q);
        if (src == SQLITE_ROW)
            *size = sqlite3_column_int64(q, 0);
        else if (src == SQLITE_DONE)
            rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such artifact");
        else
            rc = db_fail(s, src, "artifact", err);
        done(q);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- the scheduler and the worker link ----------------------------------- */

int store_runnable_list(store *s, int limit, store_runnable **out, size_t *n, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    store_runnable *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0;
    sqlite3_stmt *q = st(s, S_RUNNABLE, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int(q, 1, limit);
    while ((src = sqlite3_step(q)) == SQLITE_ROW && k < (size_t)limit) {
        store_runnable *r = &arr[k++];
        r->job_seq = sqlite3_column_int64(q, 0);
        col_copy(q, 1, r->job_id, sizeof r->job_id);
        r->priority = sqlite3_column_int(q, 2);
        col_copy(q, 3, r->device, sizeof r->device);
        r->stage_id = sqlite3_column_int64(q, 4);
        r->idx = sqlite3_column_int(q, 5);
        col_copy(q, 6, r->kind, sizeof r->kind);
        r->round = sqlite3_column_int(q, 7);
        r->attempt = sqlite3_column_int(q, 8);
        r->failures = sqlite3_column_int(q, 9);
        col_copy(q, 10, r->reason, sizeof r->reason);
        r->not_before = col_time(q, 11);
    }
    done(q);
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = db_fail(s, src, "runnable stages", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    free(arr);
    return rc;
}

int store_stage_set_reason(store *s, int64_t job_seq, int idx, const char *reason,
                           gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_STAGE_REASON_SET, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        sqlite3_bind_int64(q, 1, job_seq);
        sqlite3_bind_int(q, 2, idx);
        bind_text(q, 3, reason);
        sqlite3_bind_int64(q, 4, gpp__now_ms());
        rc = exec_stmt(s, q, "stage reason", err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Run a one-column text query with an int64 and an int / a text bound;
 * copy the value into hex (64 hex digits). */
static int query_hex(store *s, sqlite3_stmt *q, char hex[65], const char *what, gpp_error *err)
{
    int src = sqlite3_step(q);
    int rc = 0;
    hex[0] = '\0';
    if (src == SQLITE_ROW)
        col_copy(q, 0, hex, 65);
    else if (src == SQLITE_DONE)
        rc = GPP_ENOTFOUND;
    else
        rc = db_fail(s, src, what, err);
    done(q);
    return rc;
}

int store_stage_input(store *s, int64_t job_seq, int idx, char hex[65], gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc;
    sqlite3_stmt *q = st(s, S_STAGE_INPUT, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        sqlite3_bind_int64(q, 1, job_seq);
        sqlite3_bind_int(q, 2, idx);
        rc = query_hex(s, q, hex, "stage input", err);
        if (rc == GPP_ENOTFOUND)
            rc = 0;                  /* no earlier output: hex is "" */
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_job_last_output(store *s, const char *job_id, char hex[65], gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc;
    sqlite3_stmt *q = st(s, S_JOB_LAST_OUTPUT, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, job_id);
        rc = query_hex(s, q, hex, "job output", err);
        if (rc == GPP_ENOTFOUND)
            gpp_error_set(err, rc, "not_found", "", "job %s has no finished stage", job_id);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_job_get_seq(store *s, int64_t seq, store_job *out, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = job_load(s, S_JOB_BY_SEQ, seq, NULL, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_stage_progress(store *s, int64_t job_seq, int idx, int attempt, double progress,
                         gpp_error *err)
{
    if (!(progress >= 0.0))
        progress = 0.0;
    if (progress > 1.0)
        progress = 1.0;
    pthread_mutex_lock(&s->mu);
    store_job j = {0};
    int64_t now = gpp__now_ms();
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    sqlite3_stmt *q = st(s, S_STAGE_PROGRESS, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, job_seq);
    sqlite3_bind_int(q, 2, idx);
    sqlite3_bind_int(q, 3, attempt);
    sqlite3_bind_double(q, 4, progress);
    sqlite3_bind_int64(q, 5, now);
    rc = exec_stmt(s, q, "stage progress", err);
    if (rc == 0 && sqlite3_changes(s->db) > 0) {
        rc = job_load(s, S_JOB_BY_SEQ, job_seq, NULL, &j, err);
        if (rc == 0) {
            char data[160];
            snprintf(data, sizeof data,
                     "{\"job\":\"%s\",\"stage\":%d,\"attempt\":%d,\"progress\":%.4f}", j.id, idx,
                     attempt, progress);
            rc = event_add(s, job_seq, "progress", data, err);
        }
    }
    if (rc == 0)
        rc = tx_commit(s, err);
out:
    if (rc != 0)
        tx_rollback(s);
    store_job_clear(&j);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_stages_active(store *s, store_active **out, size_t *n, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0, cap = 0;
    store_active *arr = NULL;
    sqlite3_stmt *q = st(s, S_STAGES_ACTIVE, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            store_active *na = realloc(arr, ncap * sizeof *na);
            if (!na) {
                done(q);
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
                goto out;
            }
            arr = na;
            cap = ncap;
        }
        store_active *a = &arr[k++];
        memset(a, 0, sizeof *a);
        a->job_seq = sqlite3_column_int64(q, 0);
        col_copy(q, 1, a->job_id, sizeof a->job_id);
        a->stage_id = sqlite3_column_int64(q, 2);
        a->idx = sqlite3_column_int(q, 3);
        a->attempt = sqlite3_column_int(q, 4);
        col_copy(q, 5, a->state, sizeof a->state);
        col_copy(q, 6, a->worker_id, sizeof a->worker_id);
    }
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "active stages", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    free(arr);
    return rc;
}

int store_worker_upsert(store *s, const char *id, const char *name, const char *host,
                        const char *devices, int threads, const char *labels,
                        const char *state, int64_t stage_id, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_WORKER_UPSERT, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, id);
        bind_text(q, 2, name);
        bind_text(q, 3, host);
        bind_text(q, 4, devices ? devices : "[]");
        sqlite3_bind_int(q, 5, threads);
        bind_text(q, 6, labels ? labels : "{}");
        bind_text(q, 7, state);
        if (stage_id > 0)
            sqlite3_bind_int64(q, 8, stage_id);
        else
            sqlite3_bind_null(q, 8);
        sqlite3_bind_int64(q, 9, gpp__now_ms());
        rc = exec_stmt(s, q, "worker upsert", err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_worker_set(store *s, const char *id, const char *state, int64_t stage_id,
                     int64_t last_seen, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, state || stage_id >= 0 ? S_WORKER_SET : S_WORKER_SEEN, err);
    if (!q) {
        rc = s->st_rc;
    } else if (state || stage_id >= 0) {
        bind_text(q, 1, id);
        bind_text(q, 2, state);
        sqlite3_bind_int64(q, 3, stage_id);
        bind_time(q, 4, last_seen);
        rc = exec_stmt(s, q, "worker update", err);
    } else {
        bind_text(q, 1, id);
        sqlite3_bind_int64(q, 2, last_seen ? last_seen : gpp__now_ms());
        rc = exec_stmt(s, q, "worker seen", err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_worker_state(store *s, const char *id, char state[16], gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    state[0] = '\0';
    sqlite3_stmt *q = st(s, S_WORKER_GET, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, id);
        int src = sqlite3_step(q);
        if (src == SQLITE_ROW)
            col_copy(q, 0, state, 16);
        else if (src == SQLITE_DONE)
            rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no worker '%.64s'", id);
        else
            rc = db_fail(s, src, "worker", err);
        done(q);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_workers_reset(store *s, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_WORKERS_RESET, err);
    if (!q)
        rc = s->st_rc;
    else
        rc = exec_stmt(s, q, "workers reset", err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_dataset_files_get(store *s, const char *dataset, store_dataset_file **out,
                            size_t *n, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    int rc = 0, src;
    size_t k = 0, cap = 0;
    store_dataset_file *arr = NULL;
    sqlite3_stmt *q = st(s, S_DSFILES_GET, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, dataset);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            store_dataset_file *na = realloc(arr, ncap * sizeof *na);
            if (!na) {
                done(q);
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
                goto out;
            }
            arr = na;
            cap = ncap;
        }
        store_dataset_file *f = &arr[k++];
        memset(f, 0, sizeof *f);
        col_copy(q, 0, f->name, sizeof f->name);
        f->size = sqlite3_column_int64(q, 1);
        f->mtime = sqlite3_column_int64(q, 2);
        col_copy(q, 3, f->sha256, sizeof f->sha256);
    }
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "data set files", err);
        goto out;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    free(arr);
    return rc;
}

int store_dataset_files_put(store *s, const char *dataset, const store_dataset_file *f,
                            size_t n, const char *set_sha256, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    sqlite3_stmt *q = st(s, S_DSFILES_DEL, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, dataset);
    rc = exec_stmt(s, q, "data set files", err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        q = st(s, S_DSFILE_INSERT, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        bind_text(q, 1, dataset);
        bind_text(q, 2, f[i].name);
        sqlite3_bind_int64(q, 3, f[i].size);
        sqlite3_bind_int64(q, 4, f[i].mtime);
        bind_text(q, 5, f[i].sha256);
        rc = exec_stmt(s, q, "data set file", err);
    }
    if (rc == 0) {
        q = st(s, S_DATASET_SHA, err);
        if (!q) {
            rc = s->st_rc;
            goto out;
        }
        bind_text(q, 1, dataset);
        bind_text(q, 2, set_sha256);
        rc = exec_stmt(s, q, "data set sha256", err);
    }
    if (rc == 0)
        rc = tx_commit(s, err);
out:
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_dataset_file_by_sha(store *s, const char *sha256_hex, char **path, int64_t *size,
                              gpp_error *err)
{
    *path = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_DSFILE_BY_SHA, err);
    if (!q) {
        rc = s->st_rc;
    } else {
        bind_text(q, 1, sha256_hex);
        int src = sqlite3_step(q);
        if (src == SQLITE_ROW) {
            const char *dir = (const char *)sqlite3_column_text(q, 0);
            const char *name = (const char *)sqlite3_column_text(q, 1);
            size_t len = strlen(dir ? dir : "") + strlen(name ? name : "") + 2;
            *path = malloc(len);
            if (*path)
                snprintf(*path, len, "%s/%s", dir ? dir : "", name ? name : "");
            else
                rc = gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
            *size = sqlite3_column_int64(q, 2);
        } else if (src == SQLITE_DONE) {
            rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no data set file %.64s",
                               sha256_hex);
        } else {
            rc = db_fail(s, src, "data set file", err);
        }
        done(q);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* A log line and its "log" event, inside the caller's transaction. */
static int log_event_tx(store *s, int64_t job_seq, const char *job_id, int stage_idx,
                        const char *level, const char *source, const char *message,
                        gpp_error *err)
{
    int rc = log_add(s, job_seq, stage_idx, level, source, message, err);
    if (rc == 0) {
        int64_t id = sqlite3_last_insert_rowid(s->db);
        char t[32];
        gpp__fmt_time(gpp__now_ms(), t);
        gpp__buf b = {0};
        gpp__buf_puts(&b, "{\"job\":");
        gpp__buf_json_str(&b, job_id);
        gpp__buf_printf(&b, ",\"id\":%lld,\"stage\":", (long long)id);
        if (stage_idx >= 0)
            gpp__buf_printf(&b, "%d", stage_idx);
        else
            gpp__buf_puts(&b, "null");
        gpp__buf_printf(&b, ",\"time\":\"%s\",\"level\":", t);
        gpp__buf_json_str(&b, level);
        gpp__buf_puts(&b, ",\"source\":");
        gpp__buf_json_str(&b, source);
        gpp__buf_puts(&b, ",\"message\":");
        gpp__buf_json_str(&b, message);
        gpp__buf_puts(&b, "}");
        char *data = gpp__buf_take(&b, NULL);
        rc = data ? event_add(s, job_seq, "log", data, err)
                  : gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
        free(data);
    }
    return rc;
}

int store_log_event(store *s, int64_t job_seq, const char *job_id, int stage_idx,
                    const char *level, const char *source, const char *message,
                    gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = tx_begin(s, err);
    if (rc == 0)
        rc = log_event_tx(s, job_seq, job_id, stage_idx, level, source, message, err);
    if (rc == 0)
        rc = tx_commit(s, err);
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- uploaded models (migration 0004) ----------------------------------------- */

static void row_model(sqlite3_stmt *q, store_model *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(q, 0);
    col_copy(q, 1, m->sha256, sizeof m->sha256);
    col_copy(q, 2, m->owner, sizeof m->owner);
    m->size = sqlite3_column_int64(q, 3);
    m->params = sqlite3_column_int64(q, 4);
    const char *t = (const char *)sqlite3_column_text(q, 5);
    if (!t || sscanf(t, "%dx%dx%d", &m->C, &m->H, &m->W) != 3)
        m->C = m->H = m->W = 0;
    m->classes = sqlite3_column_int(q, 6);
    m->created_at = sqlite3_column_int64(q, 7);
    m->jobs = sqlite3_column_int64(q, 8);
}

/* store_model_add: see store.h. */
int store_model_add(store *s, const store_model *m, bool *created, gpp_error *err)
{
    char input[48];
    snprintf(input, sizeof input, "%dx%dx%d", m->C, m->H, m->W);
    pthread_mutex_lock(&s->mu);
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    const int64_t now = gpp__now_ms();
    if ((rc = artifact_insert(s, m->sha256, m->size, 0, -1, now, err)) != 0)
        goto out;
    sqlite3_stmt *q = st(s, S_MODEL_INSERT, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, m->sha256);
    bind_text(q, 2, m->owner);
    sqlite3_bind_int64(q, 3, m->size);
    sqlite3_bind_int64(q, 4, m->params);
    bind_text(q, 5, input);
    sqlite3_bind_int(q, 6, m->classes);
    sqlite3_bind_int64(q, 7, now);
    if ((rc = exec_stmt(s, q, "model upload insert", err)) != 0)
        goto out;
    if (created)
        *created = sqlite3_changes(s->db) > 0;
    rc = tx_commit(s, err);
out:
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* store_model_get: see store.h. */
int store_model_get(store *s, const char *sha256, const char *owner, store_model *out,
                    gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_MODEL_GET, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, sha256);
    bind_text(q, 2, owner);
    int src = sqlite3_step(q);
    if (src == SQLITE_ROW)
        row_model(q, out);
    else if (src == SQLITE_DONE)
        rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no uploaded model %.64s",
                           sha256);
    else
        rc = db_fail(s, src, "model upload", err);
    done(q);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* store_model_list: see store.h. */
int store_model_list(store *s, const char *owner, int64_t after_id, int limit,
                     store_model **out, size_t *n, bool *more, gpp_error *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    store_model *arr = calloc((size_t)limit + 1, sizeof *arr);
    if (!arr)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    sqlite3_stmt *q = st(s, S_MODEL_LIST, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    sqlite3_bind_int64(q, 1, after_id);
    bind_text(q, 2, owner);
    sqlite3_bind_int(q, 3, limit + 1);
    size_t k = 0;
    int src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW)
        row_model(q, &arr[k++]);
    done(q);
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "model upload list", err);
        goto out;
    }
    if (k > (size_t)limit) {
        *more = true;
        k = (size_t)limit;
    }
    *out = arr;
    *n = k;
    arr = NULL;
out:
    pthread_mutex_unlock(&s->mu);
    free(arr);
    return rc;
}

/* The one number statement `id` gives for `key` (a sha256, or an owner), or
 * a negative GPP_E* code. */
static int64_t model_count(store *s, enum stmt_id id, const char *key, gpp_error *err)
{
    sqlite3_stmt *q = st(s, id, err);
    if (!q)
        return s->st_rc;
    bind_text(q, 1, key);
    int src = sqlite3_step(q);
    int64_t n = src == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
    done(q);
    return n >= 0 ? n : db_fail(s, src, "model upload references", err);
}

/* store_model_usage: see store.h. */
int64_t store_model_usage(store *s, const char *owner, gpp_error *err)
{
    pthread_mutex_lock(&s->mu);
    int64_t n = model_count(s, S_MODEL_USAGE, owner, err);
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* store_model_delete: see store.h. */
int store_model_delete(store *s, const char *sha256, const char *owner, bool *drop_file,
                       gpp_error *err)
{
    *drop_file = false;
    pthread_mutex_lock(&s->mu);
    int rc = tx_begin(s, err);
    if (rc != 0)
        goto out;
    int64_t active = model_count(s, S_MODEL_ACTIVE_JOBS, sha256, err);
    if (active < 0) {
        rc = (int)active;
        goto out;
    }
    if (active > 0) {
        rc = gpp_error_set(err, GPP_EINVAL, "conflict", "",
                           "model %.64s is in use by %lld queued or running job(s); cancel "
                           "them or let them finish first", sha256, (long long)active);
        goto out;
    }
    sqlite3_stmt *q = st(s, S_MODEL_DELETE, err);
    if (!q) {
        rc = s->st_rc;
        goto out;
    }
    bind_text(q, 1, sha256);
    bind_text(q, 2, owner);
    if ((rc = exec_stmt(s, q, "model upload delete", err)) != 0)
        goto out;
    if (sqlite3_changes(s->db) == 0) {
        rc = gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no uploaded model %.64s",
                           sha256);
        goto out;
    }
    int64_t refs = model_count(s, S_MODEL_REFS, sha256, err);
    if (refs < 0) {
        rc = (int)refs;
        goto out;
    }
    if (refs == 0) {
        if (!(q = st(s, S_MODEL_ARTIFACT_DROP, err))) {
            rc = s->st_rc;
            goto out;
        }
        bind_text(q, 1, sha256);
        if ((rc = exec_stmt(s, q, "artifact delete", err)) != 0)
            goto out;
        *drop_file = sqlite3_changes(s->db) > 0;
    }
    rc = tx_commit(s, err);
    if (rc != 0)
        *drop_file = false;
out:
    if (rc != 0)
        tx_rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}
