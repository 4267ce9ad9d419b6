-- postgres/002_admin.sql: what the admin API decides (schema/005_admin.sql
-- for SQLite says what each column means): ended sessions and bans.
ALTER TABLE sessions ADD COLUMN ended_id bigint NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN ended_at bigint NOT NULL DEFAULT 0;
CREATE INDEX sessions_ended ON sessions(ended_at) WHERE ended_id <> 0;

CREATE TABLE bans (
    kind   text   NOT NULL,
    value  text   NOT NULL,
    until  bigint NOT NULL,
    reason text   NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value)
);
CREATE INDEX bans_until ON bans(until);
