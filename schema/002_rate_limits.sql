-- 002_rate_limits.sql: token buckets that every worker process must share
-- (logins per client address). Rows idle for an hour are deleted by the pruner.
CREATE TABLE rate_buckets (
    key     TEXT    PRIMARY KEY,
    tokens  REAL    NOT NULL,
    updated INTEGER NOT NULL   -- ms since the epoch
) WITHOUT ROWID;
