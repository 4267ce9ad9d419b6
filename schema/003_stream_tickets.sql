-- 003_stream_tickets.sql: one-use stream tickets. A page that holds a token
-- asks for a ticket (the "ticket" command) and opens its EventSource or
-- WebSocket with ?ticket=T, so the stream is bound to the session the page
-- logged in as (not to whichever session the browser's shared cookie names)
-- and no token ever appears in a URL. Only the SHA-256 is kept; a ticket is
-- deleted when it is used, and the pruner deletes expired ones.
CREATE TABLE stream_tickets (
    id         INTEGER PRIMARY KEY,       -- issue order: the newest are kept
    hash       BLOB    NOT NULL UNIQUE,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL           -- ms since the epoch
);
CREATE INDEX stream_tickets_expiry ON stream_tickets(expires_at);
CREATE INDEX stream_tickets_session ON stream_tickets(session_id);
