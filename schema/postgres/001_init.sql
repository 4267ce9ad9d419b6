-- postgres/001_init.sql: the PostgreSQL store's tables, the same state as
-- schema/001..004 for SQLite (see those files for what each column means).
-- Applied by store_pg.c when signal_schema.version < 1; every migration N
-- of this folder sets the version to N in the same transaction.

-- One row per logged-in user. The token is never stored, only its SHA-256.
CREATE TABLE sessions (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       text    NOT NULL UNIQUE,
    token_hash    bytea   NOT NULL UNIQUE,
    protocol      text    NOT NULL DEFAULT '',
    created_at    bigint  NOT NULL,           -- ms since the epoch
    last_seen     bigint  NOT NULL,           -- ms; heartbeat, pruned when too old
    stream_owner  bigint  NOT NULL DEFAULT 0, -- process nonce holding its stream, 0 none
    stream_gen    bigint  NOT NULL DEFAULT 0, -- bumped by each new stream: ends the old one
    sent_upto     bigint  NOT NULL DEFAULT 0, -- highest event id written to a stream or poll
    lost_upto     bigint  NOT NULL DEFAULT 0  -- highest event id trimmed before it was acknowledged
);
CREATE INDEX sessions_last_seen ON sessions(last_seen);
CREATE INDEX sessions_stream_owner ON sessions(stream_owner) WHERE stream_owner <> 0;

CREATE TABLE memberships (
    session_id bigint PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    room_id    text   NOT NULL,
    joined_at  bigint NOT NULL,
    seq        bigint NOT NULL  -- join order inside the room
);
CREATE INDEX memberships_room ON memberships(room_id, seq);

-- Mailboxes. Ids come from a sequence (never reused) and are taken only
-- while holding the recipient's mailbox lock (store_pg.c's design note),
-- so within one mailbox they increase in commit order.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    body       text   NOT NULL,  -- one-line JSON object without its "id"
    created_at bigint NOT NULL
);
CREATE INDEX events_mailbox ON events(session_id, id);

CREATE TABLE rate_buckets (
    key     text             PRIMARY KEY,
    tokens  double precision NOT NULL,
    updated bigint           NOT NULL   -- ms since the epoch
);

CREATE TABLE stream_tickets (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash       bytea  NOT NULL UNIQUE,
    session_id bigint NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    expires_at bigint NOT NULL
);
CREATE INDEX stream_tickets_expiry ON stream_tickets(expires_at);
CREATE INDEX stream_tickets_session ON stream_tickets(session_id);

CREATE TABLE command_keys (
    session_id  bigint NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cid         text   NOT NULL,
    seq         bigint NOT NULL,
    fingerprint bytea  NOT NULL,
    reply       text   NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (session_id, cid)
);
CREATE INDEX command_keys_seq ON command_keys(session_id, seq);
CREATE INDEX command_keys_age ON command_keys(created_at);
