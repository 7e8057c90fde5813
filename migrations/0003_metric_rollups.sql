-- 0003_metric_rollups: per-series summaries so a downsampled metrics query
-- reads ~1000 rows instead of every point.
--
-- A row summarises the points of one series (job, name, stage) whose
-- iteration falls in bucket `bucket` of level `level`: iterations
-- [bucket * W, bucket * W + W - 1] with W = 16 * 4^level (levels 0..6).
-- Only the point the API shows counts: for each iteration, the newest
-- attempt's.  n counts those points; first_* is the first of them (by
-- iteration); min_* / max_* the earliest point holding the smallest /
-- largest non-null value (NULL when every value is null); last_iter the
-- highest iteration.  Maintained in the ingest transaction (store.c); a
-- point that supersedes an older attempt's makes the store recompute the
-- buckets that hold it.  Rows for points stored before this migration are
-- built by gppd right after it runs.
CREATE TABLE metric_rollups (
  job_seq        INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
  name_id        INTEGER NOT NULL REFERENCES metric_names(id),
  stage_idx      INTEGER NOT NULL,
  level          INTEGER NOT NULL,
  bucket         INTEGER NOT NULL,
  n              INTEGER NOT NULL,
  first_iter     INTEGER NOT NULL,
  first_attempt  INTEGER NOT NULL,
  first_time     INTEGER NOT NULL,
  last_iter      INTEGER NOT NULL,
  min_iter       INTEGER,
  min_attempt    INTEGER,
  min_value      REAL,
  min_time       INTEGER,
  max_iter       INTEGER,
  max_attempt    INTEGER,
  max_value      REAL,
  max_time       INTEGER,
  PRIMARY KEY (job_seq, name_id, stage_idx, level, bucket)
) WITHOUT ROWID;
