-- 001_init.sql: sessions, room memberships and per-session mailboxes.
-- Applied by the responder when PRAGMA user_version < 1 (see fcgi/store_sqlite.c).

-- One row per logged-in user. The token is never stored, only its SHA-256.
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       TEXT    NOT NULL UNIQUE,
    token_hash    BLOB    NOT NULL UNIQUE,
    protocol      TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,           -- ms since the epoch
    last_seen     INTEGER NOT NULL,           -- ms; heartbeat, pruned when too old
    stream_owner  INTEGER NOT NULL DEFAULT 0, -- process nonce holding its stream, 0 none
    stream_gen    INTEGER NOT NULL DEFAULT 0, -- bumped by each new stream: ends the old one
    sent_upto     INTEGER NOT NULL DEFAULT 0, -- highest event id written to a stream or poll
    lost_upto     INTEGER NOT NULL DEFAULT 0  -- highest event id trimmed before it was acknowledged
);
CREATE INDEX sessions_last_seen ON sessions(last_seen);
CREATE INDEX sessions_stream_owner ON sessions(stream_owner) WHERE stream_owner <> 0;

-- A session is in at most one room; a room exists while it has members.
CREATE TABLE memberships (
    session_id INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    room_id    TEXT    NOT NULL,
    joined_at  INTEGER NOT NULL,
    seq        INTEGER NOT NULL  -- join order inside the room
);
CREATE INDEX memberships_room ON memberships(room_id, seq);

-- Mailboxes: every event waiting for its recipient, in id order. AUTOINCREMENT
-- keeps ids from ever being reused, so a client's Last-Event-ID stays meaningful.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    body       TEXT    NOT NULL,  -- one-line JSON object without its "id"
    created_at INTEGER NOT NULL
);
CREATE INDEX events_mailbox ON events(session_id, id);
