-- 0001_init: the first schema of gppd.db.
-- Times are unix milliseconds (INTEGER); JSON documents are TEXT.
-- Applied by daemon/store.c inside one transaction, recorded in
-- schema_migrations (created by store.c itself, before any migration).

-- Credentials. Only the SHA-256 of a token is stored; `prefix` (the first
-- characters, e.g. "gpp_usr_AbCd") lets people recognise a token in lists.
CREATE TABLE tokens (
  id          INTEGER PRIMARY KEY,
  public_id   TEXT    NOT NULL UNIQUE,            -- "t" + base32, used in URLs
  name        TEXT    NOT NULL,                   -- the principal: jobs.owner
  role        TEXT    NOT NULL CHECK (role IN ('admin', 'user', 'worker')),
  hash        BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
  prefix      TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  created_by  INTEGER REFERENCES tokens(id),
  revoked_at  INTEGER                             -- NULL while active
);
CREATE INDEX tokens_name ON tokens(name);

-- Jobs. seq is the creation order (cursor pagination, FIFO); id is public.
CREATE TABLE jobs (
  seq           INTEGER PRIMARY KEY,
  id            TEXT    NOT NULL UNIQUE,
  name          TEXT    NOT NULL,
  owner         TEXT    NOT NULL,
  dataset       TEXT    NOT NULL,   -- registered name, or the path of {format, path}
  model         TEXT    NOT NULL,   -- zoo name, "inline" or "checkpoint:REF"
  device        TEXT    NOT NULL CHECK (device IN ('any', 'cpu', 'gpu')),
  priority      INTEGER NOT NULL,
  state         TEXT    NOT NULL
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  reason        TEXT,               -- why it failed / who cancelled
  spec          TEXT    NOT NULL,   -- canonical job spec, defaults filled
  stages_total  INTEGER NOT NULL,
  stages_done   INTEGER NOT NULL DEFAULT 0,
  created_at    INTEGER NOT NULL,
  started_at    INTEGER,
  finished_at   INTEGER,
  updated_at    INTEGER NOT NULL
);
CREATE INDEX jobs_state   ON jobs(state, seq);
CREATE INDEX jobs_owner   ON jobs(owner, seq);
CREATE INDEX jobs_dataset ON jobs(dataset, seq);
CREATE INDEX jobs_model   ON jobs(model, seq);
-- The scheduler's queue: unfinished jobs by priority, then FIFO.
CREATE INDEX jobs_queue ON jobs(priority DESC, seq) WHERE state IN ('queued', 'running');

-- The chain of stages of a job: train, grow steps, then (push, prune) x N.
-- attempt counts assignments; it is the fencing token of the worker link.
CREATE TABLE stages (
  id            INTEGER PRIMARY KEY,
  job_seq       INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  idx           INTEGER NOT NULL,             -- 0-based position in the chain
  kind          TEXT    NOT NULL
                CHECK (kind IN ('train', 'grow', 'push', 'prune', 'finetune', 'baseline')),
  round         INTEGER NOT NULL,             -- grow step / GPP iteration (1-based), 0 for train
  state         TEXT    NOT NULL
                CHECK (state IN ('queued', 'assigned', 'running', 'succeeded', 'failed',
                                 'cancelled', 'lost', 'skipped')),
  attempt       INTEGER NOT NULL DEFAULT 0,
  reason        TEXT,                         -- waiting_for_worker, worker_lost, error text...
  worker_id     TEXT,
  input_sha256  TEXT,
  output_sha256 TEXT,
  summary       TEXT,                         -- JSON from the worker's result
  progress      REAL    NOT NULL DEFAULT 0,   -- 0..1 within the stage
  not_before    INTEGER,                      -- retry back-off
  created_at    INTEGER NOT NULL,
  started_at    INTEGER,
  finished_at   INTEGER,
  updated_at    INTEGER NOT NULL,
  UNIQUE (job_seq, idx)
);
CREATE INDEX stages_state ON stages(state, job_seq, idx);

-- Metric names are interned: a point costs a small integer, not a string.
CREATE TABLE metric_names (
  id    INTEGER PRIMARY KEY,
  name  TEXT NOT NULL UNIQUE
);

-- Per-iteration points. The key makes (stage, attempt, iteration, name)
-- unique (a resent batch stores nothing twice) and orders each series for
-- range scans: WHERE job_seq = ? AND name_id = ? [AND stage_idx = ?].
CREATE TABLE metrics (
  job_seq    INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  name_id    INTEGER NOT NULL REFERENCES metric_names(id),
  stage_idx  INTEGER NOT NULL,
  iteration  INTEGER NOT NULL,
  attempt    INTEGER NOT NULL,
  value      REAL,                 -- NULL for NaN / infinities
  time       INTEGER NOT NULL,
  PRIMARY KEY (job_seq, name_id, stage_idx, iteration, attempt)
) WITHOUT ROWID;

-- Which names a job has (so listing them needs no scan of its points).
CREATE TABLE job_metric_names (
  job_seq  INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  name_id  INTEGER NOT NULL REFERENCES metric_names(id),
  PRIMARY KEY (job_seq, name_id)
) WITHOUT ROWID;

-- Every state change is written together with an event row (same
-- transaction); Server-Sent Events read this table by id.
CREATE TABLE events (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: SSE event ids
  job_seq  INTEGER REFERENCES jobs(seq) ON DELETE CASCADE,  -- NULL: daemon-wide
  time     INTEGER NOT NULL,
  type     TEXT    NOT NULL,                    -- job, stage, worker, ...
  data     TEXT    NOT NULL                     -- JSON object
);
CREATE INDEX events_job ON events(job_seq, id);

-- Log lines of a job, from the daemon and from workers.
CREATE TABLE logs (
  id         INTEGER PRIMARY KEY,
  job_seq    INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  stage_idx  INTEGER,
  time       INTEGER NOT NULL,
  level      TEXT    NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
  source     TEXT    NOT NULL,          -- "daemon" or "worker:ID"
  message    TEXT    NOT NULL
);
CREATE INDEX logs_job ON logs(job_seq, id);

-- Workers that connected (kept after they go, for "recently lost").
CREATE TABLE workers (
  id            TEXT    PRIMARY KEY,
  name          TEXT    NOT NULL,
  host          TEXT,
  devices       TEXT    NOT NULL DEFAULT '[]',   -- JSON list
  threads       INTEGER,
  labels        TEXT    NOT NULL DEFAULT '{}',   -- JSON object
  state         TEXT    NOT NULL
                CHECK (state IN ('idle', 'busy', 'draining', 'lost', 'gone')),
  stage_id      INTEGER REFERENCES stages(id) ON DELETE SET NULL,
  connected_at  INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL
);

-- Registered data sets (by path on the daemon host, or uploaded).
CREATE TABLE datasets (
  name        TEXT    PRIMARY KEY,
  format      TEXT    NOT NULL CHECK (format IN ('idx', 'cifar10-bin')),
  path        TEXT    NOT NULL,
  info        TEXT    NOT NULL,          -- JSON: files, shapes, classes
  sha256      TEXT,                      -- of the file set; NULL until computed
  created_at  INTEGER NOT NULL,
  created_by  TEXT    NOT NULL
);

-- Content-addressed files under DATA_DIR/artifacts/.
CREATE TABLE artifacts (
  sha256      TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
  size        INTEGER NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('checkpoint', 'dataset', 'other')),
  job_seq     INTEGER REFERENCES jobs(seq) ON DELETE SET NULL,
  stage_idx   INTEGER,
  created_at  INTEGER NOT NULL
);

-- Idempotency-Key of POST /api/v1/jobs, per token.
CREATE TABLE idempotency_keys (
  token_id     INTEGER NOT NULL REFERENCES tokens(id),
  key          TEXT    NOT NULL,
  body_sha256  BLOB    NOT NULL,        -- of the canonical spec
  job_seq      INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (token_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_job ON idempotency_keys(job_seq);
