-- Trained networks users brought to gppd (POST /api/v1/models): who uploaded
-- which checkpoint artifact, and what it holds.  The same bytes uploaded by
-- two users are one artifact with two rows; DELETE removes the caller's row,
-- and the file goes with the last row when no job names the checkpoint.
CREATE TABLE model_uploads (
  id          INTEGER PRIMARY KEY,
  sha256      TEXT    NOT NULL REFERENCES artifacts(sha256),
  owner       TEXT    NOT NULL,
  size        INTEGER NOT NULL,
  params      INTEGER NOT NULL,
  input       TEXT    NOT NULL,   -- "CxHxW"
  classes     INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  UNIQUE (sha256, owner)
);
CREATE INDEX model_uploads_owner ON model_uploads(owner, id);
