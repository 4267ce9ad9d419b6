/*
 * store.h - the state store: sessions, room memberships and mailboxes.
 *
 * This is the only interface the command core has to persistent state;
 * store_sqlite.c implements it on SQLite in WAL mode, store_pg.c on
 * PostgreSQL, and store.c sends each call to the engine its handle was
 * opened on (store_ops.h: a new call goes into every engine). A store
 * handle is one connection: one per thread, never shared. Every process of
 * the service opens its own handles on the same store.
 *
 * Conventions: every call returns SIG_OK or the error that stopped it.
 * Lookups that find nothing return SIG_OK with an id of 0. Writes happen
 * inside store_begin()/store_commit(); on any error the caller rolls back
 * and nothing of the transaction remains.
 *
 * What any implementation must guarantee (the core and the delivery code
 * rely on each; store_sqlite.c gets them from SQLite's single writer):
 * - Commit order is id order within a mailbox: of two events for the same
 *   session, the one committed later has the larger id, and a reader never
 *   sees an id while a smaller one of that mailbox is still to commit. A
 *   stream reads "after its cursor", so an id that became visible late
 *   would never be delivered. (An engine with concurrent writers serialises
 *   the writers of one mailbox, e.g. by locking the session row before
 *   taking an id, or takes ids at commit.) Ids are unique store-wide and
 *   never reused.
 * - Acknowledgement: store_events_ack(sid, N) deletes sid's events up to
 *   and including N, whatever the order acks arrive in; repeating it, or
 *   acking below an earlier ack, changes nothing else. store_mark_sent only
 *   ever raises a mailbox's sent mark and its lost mark.
 * - A write transaction sees, and is judged against, the latest committed
 *   state: two transactions that read and then write the same rows (two
 *   processes pruning the same stale session, two logins of one id, two
 *   claims of one stream) cannot both commit on what they read. So pruning
 *   happens exactly once: the second pruner finds the session gone, and
 *   its members get one user-left. A claim's generation is taken under the
 *   same rule, and a release only acts on the generation it names. The
 *   core relies on this for more than rows it writes: a join counts the
 *   room's members (room limit), a login counts sessions (--max-sessions),
 *   a command looks its cid up, all before writing; an engine with
 *   concurrent writers must make those reads wait for the writers of the
 *   same room, count or session (store_pg.c: a lock taken in its own
 *   statement before the read, so the read's snapshot comes after it).
 * - Reads inside a write transaction may find that what the caller read a
 *   moment earlier is gone (a recipient pruned meanwhile): event_push then
 *   queues nothing and returns id 0, which the delivery side ignores.
 * - SIG_E_BUSY means "not now": the store's write lock (or a connection)
 *   could not be had within the busy timeout given to store_open. Nothing
 *   of the transaction happened and the caller may retry; clients see 503
 *   busy. Every other failure of the engine is SIG_E_INTERNAL. Lock waits
 *   and their queueing are the engine's own business, never the caller's.
 *   A networked engine also answers SIG_E_BUSY for a deadlock it broke, a
 *   lost connection (reconnecting on a later call) and a commit whose
 *   outcome the lost connection hid: a client's cid makes its retry safe.
 * - store_maintain is the engine's periodic upkeep (SQLite: checkpoints of
 *   its write-ahead log); an engine that needs none does nothing there.
 */
#ifndef SIG_STORE_H
#define SIG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define STORE_ID_MAX 64 /* bytes in a user or room id */
#define STORE_HASH_LEN 32

typedef struct store store;

typedef struct store_session {
	int64_t id; /* 0: not found */
	char user_id[STORE_ID_MAX + 1];
	char protocol[STORE_ID_MAX + 1];
	char room_id[STORE_ID_MAX + 1]; /* "" when in no room */
	int64_t last_seen;
	int64_t stream_owner;
	int64_t stream_gen;
	int64_t ended_id; /* ended by the admin API: the id of its last event; 0 live */
} store_session;

typedef struct store_member {
	int64_t session_id;
	char user_id[STORE_ID_MAX + 1];
	int64_t stream_owner;
} store_member;

struct store_stats {
	int64_t sessions, rooms, memberships, events, streams;
};

/* Open (creating and migrating as needed) the store at `where`: a
 * PostgreSQL URI (postgresql://...) or conninfo ("host=... dbname=...")
 * opens store_pg.c, anything else is an SQLite file path. A write waits
 * for a lock at most busy_timeout_ms. On success *out must be freed with
 * store_close(); on failure *out is NULL, and SIG_E_BUSY there means the
 * database could not be reached (try again later). */
sig_err store_open(const char *where, int64_t busy_timeout_ms, store **out);
void store_close(store *st); /* NULL is fine */
/* How long a call may wait for a new connection when the handle's was
 * lost (the attempt runs on a thread of its own): max_ms < 0 until the
 * attempt ends (a host that never answers costs libpq's connect_timeout
 * before the next host is tried); by default 1 s, enough for a server
 * that answers; 0 not at all. A call that stops waiting answers
 * SIG_E_BUSY, and a later call takes up the connection the attempt made.
 * 0 is for the loop thread, which must not stop every held stream of the
 * process. store_open itself waits for its first connection. An engine
 * without connections (SQLite) ignores it. */
void store_connect_wait(store *st, int64_t max_ms);
/* Whether store_open would open `where` on PostgreSQL. */
int store_is_postgres(const char *where);
/* The engine of a handle, for logs: "sqlite" or "postgresql". */
const char *store_engine(store *st);

/* A write transaction: waits for the write lock up to the busy timeout
 * (then SIG_E_BUSY). */
sig_err store_begin(store *st);
/* A read transaction: one consistent snapshot that never blocks writers.
 * Ended by store_commit() or store_rollback() like a write transaction. */
sig_err store_begin_read(store *st);
sig_err store_commit(store *st);
void store_rollback(store *st);
/* Inside a write transaction: a savepoint per command of a group commit.
 * store_savepoint_end keeps (keep != 0) or undoes what came after it. */
sig_err store_savepoint(store *st);
sig_err store_savepoint_end(store *st, int keep);

/* Sessions. */
sig_err store_session_by_token(store *st, const uint8_t hash[STORE_HASH_LEN], store_session *out);
sig_err store_session_by_user(store *st, const char *user_id, store_session *out);
sig_err store_session_create(store *st, const char *user_id, const char *protocol,
			     const uint8_t hash[STORE_HASH_LEN], int64_t now, int64_t *id_out);
sig_err store_session_touch(store *st, int64_t sid, int64_t now);
/* Deletes the session with its membership and mailbox. */
sig_err store_session_delete(store *st, int64_t sid);
/* Up to max sessions whose last_seen < before, or that were ended
 * (store_session_end) before ended_before, oldest first; count in *n. */
sig_err store_sessions_stale(store *st, int64_t before, int64_t ended_before, store_session *out, int max,
			     int *n);
/* End a session (the admin API's kick): its last event is last_event. From
 * then on store_stream_pull gives its stream the events up to that one and
 * then SIG_E_UNAUTHORIZED; the core refuses its token for commands. */
sig_err store_session_end(store *st, int64_t sid, int64_t last_event, int64_t now);

/* Rooms. room NULL leaves any room. */
sig_err store_member_set(store *st, int64_t sid, const char *room, int64_t now);
/* Members of room in join order: at most max written to out, total in *n. */
sig_err store_room_members(store *st, const char *room, store_member *out, int max, int *n);

/* Mailboxes. Appends body (a JSON object without "id") to sid's mailbox.
 * With cap > 0, fails with SIG_E_MAILBOX_FULL when cap events are already
 * waiting undelivered. *id_out gets the new event's id and *prev_out (when
 * not NULL) the id of sid's newest event before it, 0 if none. */
sig_err store_event_push(store *st, int64_t sid, const char *body, size_t len, int64_t cap,
			 int64_t now, int64_t *id_out, int64_t *prev_out);
/* The recipient acknowledged every event up to and including upto. */
sig_err store_events_ack(store *st, int64_t sid, int64_t upto);

/* Streams (SSE or long-poll). claim makes the caller's process (owner) the
 * holder of sid's one stream and returns its generation and the previous
 * holder (0 none), which must be told to let go. */
sig_err store_stream_claim(store *st, int64_t sid, int64_t owner, int64_t now, int64_t *gen_out,
			   int64_t *prev_owner);
/* Let go of the stream if generation gen still holds it. */
sig_err store_stream_release(store *st, int64_t sid, int64_t gen);

/* Called for each event pulled; return nonzero to stop early. */
typedef int (*store_event_fn)(void *ctx, int64_t id, const char *body, size_t len);
/* Read up to limit events after `after` for a stream of generation gen.
 * Returns SIG_E_UNAUTHORIZED when the session is gone or another stream
 * took over (fn was not called), and also when the session was ended
 * (store_session_end) and its last event is at or before `after`, or was
 * just given to fn (the stream ends after the events fn got).
 * *lost_upto receives the highest id trimmed unacknowledged. */
sig_err store_stream_pull(store *st, int64_t sid, int64_t gen, int64_t after, int limit,
			  store_event_fn fn, void *ctx, int64_t *lost_upto);
/* Record that events up to upto were written out; trims the delivered but
 * unacknowledged ones beyond the newest `window`. */
sig_err store_mark_sent(store *st, int64_t sid, int64_t upto, int64_t window);
/* Refresh last_seen of every session whose stream owner holds. */
sig_err store_streams_refresh(store *st, int64_t owner, int64_t now);
/* Recipients, held by owner, of the events after `after`, in event order:
 * at most max (with repeats) into sids, count in *n. *max_id is where the
 * next call should continue: the last event examined. */
sig_err store_recent_recipients(store *st, int64_t owner, int64_t after, int64_t *sids, int max,
				int *n, int64_t *max_id);

sig_err store_stats(store *st, struct store_stats *out);
sig_err store_session_count(store *st, int64_t *n);
sig_err store_room_count(store *st, int64_t *n);

/* A token bucket shared by every process (inside a write transaction):
 * take one token from `key`, refilled at rate per second up to burst.
 * *wait_s: 0 when allowed, else whole seconds until a token is there. */
sig_err store_rate_take(store *st, const char *key, double rate, double burst, int64_t now,
			int *wait_s);
/* Forget buckets untouched since `before` (ms). */
sig_err store_rate_gc(store *st, int64_t before);
/* Stream tickets: one-use credentials that open one stream of a session.
 * create stores a ticket's hash for sid until `expires` (ms) and keeps
 * only the session's `keep` newest ones. take (inside a write transaction)
 * finds the live session of an unexpired ticket (id 0 when none) and
 * deletes the ticket whatever it found, so a ticket opens at most one
 * stream. gc deletes the tickets expired by `now`. */
sig_err store_ticket_create(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN], int64_t expires,
			    int keep);
sig_err store_ticket_take(store *st, const uint8_t hash[STORE_HASH_LEN], int64_t now, store_session *out);
sig_err store_tickets_gc(store *st, int64_t now);

/* A new token for a session (its hash replaces the old one, which stops
 * working). */
sig_err store_session_retoken(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN]);

/* Idempotency keys: the reply of a session's command that carried a "cid",
 * kept with the fingerprint of that command. */
struct store_key {
	int found; /* 0: no live key of that name */
	uint8_t fingerprint[STORE_HASH_LEN];
	char *reply; /* NUL-terminated, len bytes; free with store_key_free */
	size_t len;
};
/* The key cid of sid if it was stored at or after `since` (ms). */
sig_err store_key_get(store *st, int64_t sid, const char *cid, int64_t since, struct store_key *out);
void store_key_free(struct store_key *k);
/* Inside the command's own write transaction: store (or replace an
 * expired) key, keeping only sid's `keep` newest. */
sig_err store_key_put(store *st, int64_t sid, const char *cid, const uint8_t fingerprint[STORE_HASH_LEN],
		      const char *reply, size_t len, int64_t now, int64_t keep);
/* Delete the keys stored before `before` (ms). */
sig_err store_keys_gc(store *st, int64_t before);
/* Bans (the admin API): kind "user" or "address". set creates or replaces
 * the ban of value until `until` (ms); delete sets *removed to 1 when there
 * was one; find sets *until to a live ban's end (0: none at `now`). list
 * calls fn for up to max live bans, soonest to end first (nonzero: stop);
 * gc deletes expired ones. */
typedef int (*store_ban_fn)(void *ctx, const char *kind, const char *value, int64_t until, const char *reason);
sig_err store_ban_set(store *st, const char *kind, const char *value, int64_t until, const char *reason);
sig_err store_ban_delete(store *st, const char *kind, const char *value, int *removed);
sig_err store_ban_find(store *st, const char *kind, const char *value, int64_t now, int64_t *until);
sig_err store_bans_list(store *st, int64_t now, int max, store_ban_fn fn, void *ctx);
sig_err store_bans_gc(store *st, int64_t now);
/* Every room membership, by room and join order, at most max: fn gets a
 * session with id, user_id, protocol, room_id, last_seen and stream_owner
 * (nonzero: stop). */
typedef int (*store_membership_fn)(void *ctx, const store_session *member);
sig_err store_rooms_list(store *st, int max, store_membership_fn fn, void *ctx);

/* The engine's periodic upkeep, called about once a second by each
 * process's maintenance thread, outside any transaction. It may keep
 * writers waiting a few milliseconds, never longer than the busy timeout;
 * an engine that needs none returns SIG_OK. */
sig_err store_maintain(store *st);

/* ---- the wake-up across machines ----
 * An engine whose processes may run on several machines carries the
 * wake-up between them itself (store_pg.c: LISTEN/NOTIFY). Inside the
 * write transaction that queued events, store_notify asks that each
 * owner's process be told which of its sessions to wake, once and only if
 * the transaction commits (a rolled-back savepoint takes its requests with
 * it); the listener of that process hears it. SQLite has neither, since
 * its processes share a machine, where bell.c's datagrams reach them:
 * store_notify does nothing there and store_listener_new returns NULL. An
 * owner of 0 (no stream) is skipped. */
sig_err store_notify(store *st, const int64_t *owners, const int64_t *sessions, int n);
/* Whether this engine wakes processes itself (store_notify does it). */
int store_wakes_across(const char *where);

typedef struct store_listener store_listener;
/* The listener for owner's wakes on the store at `where`, for an event
 * loop to drive: NULL when the engine has none. It connects on its first
 * store_listener_step, without blocking on the network. Free with
 * store_listener_free (NULL is fine). */
store_listener *store_listener_new(const char *where, int64_t owner);
void store_listener_free(store_listener *ls);
enum { STORE_WANT_READ = 1, STORE_WANT_WRITE = 2 };
/* The fd to watch now and what for (*want), or -1: nothing to watch until
 * the next timed step (a reconnect waits out its backoff). */
int store_listener_fd(const store_listener *ls, unsigned *want);
/* What store_listener_step tells its caller. */
enum {
	STORE_LISTEN_UP = 1,    /* listening again (or for the first time): wakes sent while it was
				   not are lost, so every stream must re-read its mailbox now */
	STORE_LISTEN_NEWFD = 2, /* the fd was closed or replaced: watch store_listener_fd anew */
};
/* rung_us: when the sender asked for the wake (util_mono_us), when it was
 * on this machine, whose monotonic clock it shares; 0: unknown. */
typedef void store_wake_fn(void *ctx, int64_t session, int64_t rung_us);
/* Advance the listener: ready is 1 when its fd is ready, 0 for the
 * caller's timer (a few times a second: retries and deadlines). Calls
 * fn(ctx, session, rung_us) for each session woken. Returns STORE_LISTEN_
 * flags. */
int store_listener_step(store_listener *ls, int ready, int64_t now_us, store_wake_fn *fn, void *ctx);

#endif
