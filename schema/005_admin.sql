-- 005_admin.sql: what the admin API decides, shared by every process and
-- kept across restarts. A kicked session is ended, not deleted at once:
-- ended_id is the id of its last event (the "kicked" notice); its token
-- opens no command any more, its stream delivers up to that event and then
-- ends, and the pruner deletes it after a grace period (ended_at, ms).
ALTER TABLE sessions ADD COLUMN ended_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN ended_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sessions_ended ON sessions(ended_at) WHERE ended_id <> 0;

-- Bans: logins of a userId (kind 'user') or from a client address (kind
-- 'address') are refused with 403 until `until` (ms since the epoch).
-- The pruner deletes expired rows.
CREATE TABLE bans (
    kind   TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    until  INTEGER NOT NULL,
    reason TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX bans_until ON bans(until);
