-- 0002_link: what the worker link and the scheduler need.

-- Failed attempts of a stage (retryable failures and lost workers), the
-- budget that spec.max_restarts bounds.  attempt counts assignments (the
-- fencing token); a stage handed back by a stopping worker costs no failure.
ALTER TABLE stages ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;

-- The files of a registered data set, hashed once (lazily) so workers can
-- fetch and cache them by sha256.  A file whose size or mtime changed is
-- hashed again.
CREATE TABLE dataset_files (
  dataset  TEXT    NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
  name     TEXT    NOT NULL,                  -- file name inside datasets.path
  size     INTEGER NOT NULL,
  mtime    INTEGER NOT NULL,                  -- unix ms when hashed
  sha256   TEXT    NOT NULL CHECK (length(sha256) = 64),
  PRIMARY KEY (dataset, name)
) WITHOUT ROWID;
CREATE INDEX dataset_files_sha ON dataset_files(sha256);

-- The scheduler's view: queued stages by job.
CREATE INDEX stages_queued ON stages(job_seq, idx) WHERE state = 'queued';
