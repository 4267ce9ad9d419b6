-- 004_command_keys.sql: idempotency keys. A command may carry "cid", a key
-- its client picks, unique per session; the reply of its first successful
-- run is kept here, written in the same transaction as the command's own
-- changes, so a retry of it (its answer was lost) gets that reply back
-- instead of running again. fingerprint is the SHA-256 of the command
-- without its cid: the same key with another command is a conflict. seq
-- numbers a session's keys 1, 2, 3... so the oldest beyond the per-session
-- bound can be dropped by index; keys older than the window are deleted
-- by the pruner, and all of a session's keys go with it.
CREATE TABLE command_keys (
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cid         TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    reply       TEXT    NOT NULL,  -- one-line JSON, a login's without its token
    created_at  INTEGER NOT NULL,  -- ms since the epoch
    PRIMARY KEY (session_id, cid)
) WITHOUT ROWID;
CREATE INDEX command_keys_seq ON command_keys(session_id, seq);
CREATE INDEX command_keys_age ON command_keys(created_at);
