/*
 * store_pg.c - the store on PostgreSQL (libpq), for a service whose state
 * must outlive one machine: `--store postgresql://...` (any libpq URI or
 * conninfo, multi-host with target_session_attrs=read-write included).
 *
 * Design note.
 *
 * Connections. A handle is one connection (store.h: one per thread), its
 * statements prepared once per connection (PQprepare, then only
 * PQexecPrepared with parameters; transaction control is constant text).
 * lock_timeout is the busy timeout given to store_open, so a lock wait
 * ends in SQLSTATE 55P03, which is SIG_E_BUSY like SQLite's busy lock.
 * When the server cannot be reached, store_open returns SIG_E_BUSY (the
 * caller tries again later; nothing exits), and a handle whose connection
 * broke answers SIG_E_BUSY and reconnects at its next store_begin,
 * store_begin_read or call outside a transaction, no sooner than a backoff
 * (50 ms doubling to 2 s) after the last failed try. A connection found
 * closed at the start of a transaction (or of a call outside one), before
 * anything was done on it, as after a restart of the server, is replaced
 * at once, once, so the first command after a restart does not fail. The
 * schema is checked on every connect (a reconnect may reach a promoted
 * standby). Outages are logged once per process. A COMMIT whose
 * connection broke has an unknown outcome: it is SIG_E_BUSY too, and a
 * client's retry with the same cid gets the stored reply if it did commit.
 *
 * Failover. With a multi-host URI and target_session_attrs=read-write,
 * libpq tries each host in turn and keeps the one that takes writes; a
 * primary whose machine is gone does not refuse, it stays silent, and
 * libpq waits connect_timeout on it (2 s here, per host) before the next.
 * Two things keep that wait from spreading. A reconnect runs on a thread
 * of its own (struct attempt), and a handle waits for it at most
 * store_connect_wait (1 s; the loop thread's handle not at all, so every
 * held stream of the process keeps being served): a handle that stopped
 * waiting answers SIG_E_BUSY and takes the connection up at a later call.
 * And the process remembers which host answered last (good_host) and
 * tries it first, so once one handle has found the promoted standby the
 * others go straight to it. tcp_user_timeout and keepalives end a
 * statement stuck on a host that vanished in the middle of it.
 *
 * Isolation. Write transactions are READ COMMITTED: each statement sees
 * what was committed before it began, and row locks (FOR UPDATE, the
 * locks of UPDATE/DELETE) wait for, then see, the latest version. Where a
 * call reads and then writes on what it read, it first takes a lock in a
 * statement of its own, so that the read after it (a new statement, a
 * new snapshot) sees every transaction that held the lock before:
 * - a mailbox: a transaction-level advisory lock (LK_MAILBOX, sid) before
 *   the session row is locked FOR KEY SHARE and an id is taken from the
 *   events sequence. Two writers of one mailbox therefore run one after
 *   the other, the second taking its id only after the first committed,
 *   and PostgreSQL makes a commit visible before it releases its locks:
 *   within a mailbox, ids increase in commit order, and a reader that sees
 *   id N also sees every smaller id of that mailbox (store.h's first
 *   guarantee). Across mailboxes ids may commit out of order; see
 *   pgs_recent_recipients for how the re-check copes.
 * - a room: (LK_ROOM, hashtext(room)) when its members are read inside a
 *   write transaction, so a join's "is it full?" and its insert are judged
 *   against the latest members (exactly room-limit members, never more).
 * - the counts behind --max-sessions and --max-rooms: (LK_COUNT, 1 or 2).
 * - a session's idempotency keys: (LK_KEYS, sid) before a key is read in
 *   a write transaction, so two runs of one cid cannot both miss it.
 * - logins: the unique constraint on user_id (23505: user-exists).
 * - pruning: stale sessions are read FOR NO KEY UPDATE SKIP LOCKED, so a
 *   second pruner skips a session the first is removing and never sends a
 *   second user-left. That lock does not conflict with a sender's FOR KEY
 *   SHARE, so a sender never waits for a pruner.
 * - stream claims: the row FOR NO KEY UPDATE before the generation is
 *   bumped; tickets: DELETE ... RETURNING, so one ticket opens one stream.
 * - acks: the session row FOR NO KEY UPDATE before its events are
 *   deleted, so a mailbox's row is always locked before its events.
 * - the login rate bucket: its row FOR UPDATE.
 * Read transactions (stream pulls) are REPEATABLE READ READ ONLY: one
 * snapshot, never blocking a writer.
 *
 * Round trips. On one machine a statement's round trip, not its work,
 * is most of what it costs the responder (the send that wakes the backend,
 * the sleep in poll until it answers: bench/pg-profile.sh, issue 13), so
 * a signal is made of as few as can be: a group commit's savepoint is sent
 * with its command's first statement (libpq's pipeline mode, run_pipelined)
 * and never released (the next one nests inside it), and the mailbox lock
 * goes in one pipeline with the statement that reads the head and inserts
 * the event. Pipelined statements stay separate statements, each with its
 * own snapshot taken when it starts, after the one before has finished.
 *
 * Deadlocks. One call takes its locks in one order (advisory lock, then
 * rows; several rows by id), but a transaction makes several calls in the
 * core's order (a join locks the new room and then the room it leaves; a
 * group commit runs several commands), so two transactions can still lock
 * two things in opposite orders. PostgreSQL detects that (40P01) and a
 * serialization failure (40001) the same way; both, and a lock wait past
 * lock_timeout, surface as SIG_E_BUSY: 503 busy, and the client retries
 * safely thanks to its cid. Retrying the whole transaction inside the
 * store is not done: the core keeps state (the wakes, the reply) of a
 * transaction's steps, and it does not support running them again today.
 *
 * Migrations: schema/postgres/NNN_*.sql, compiled in (build/schema_pg.c),
 * applied in one transaction under a transaction-level advisory lock
 * (LK_MIGRATE), so processes and nodes starting together migrate once;
 * the version is the row of signal_schema. A database at a version newer
 * than this binary knows is refused (store_open fails, the log says so).
 *
 * It must never: interpolate a value into SQL text, log a conninfo (it may
 * carry a password) or a row's values, or share a connection between
 * threads.
 */
#define _GNU_SOURCE
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "store/store.h"
#include "store/store_ops.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_ENGINE(name) pgs_##name
STORE_CALLS(STORE_OP_DECL)
static void pgs_close(store *st);
static void pgs_rollback(store *st);
static void pgs_connect_wait(store *st, int64_t max_ms);

extern const char *const pg_schema_migrations[];
extern const int pg_schema_migration_count;

/* Advisory lock classes (the first key of the two-int4 form; the second
 * is a session id or a hash of a room id). Arbitrary, but distinct from
 * small numbers another application on the database might use. */
enum {
	LK_MAILBOX = 0x53470001,
	LK_ROOM = 0x53470002,
	LK_COUNT = 0x53470003,
	LK_KEYS = 0x53470004,
	LK_MIGRATE = 0x53470005,
};

#define BACKOFF_MIN_US 50000
#define BACKOFF_MAX_US 2000000
/* store_connect_wait's default: long enough for a server that answers
 * (tens of ms, more on a busy machine), short of a host that never does. */
#define CONNECT_WAIT_MS 1000

enum q {
	Q_SESSION_BY_TOKEN,
	Q_SESSION_BY_USER,
	Q_SESSION_BY_ID,
	Q_SESSION_CREATE,
	Q_SESSION_TOUCH,
	Q_SESSION_DELETE,
	Q_SESSIONS_STALE,
	Q_LOCK_ID,
	Q_LOCK_NAME,
	Q_MEMBER_DELETE,
	Q_MEMBER_INSERT,
	Q_ROOM_MEMBERS,
	Q_MAILBOX_PENDING,
	Q_EVENT_INSERT,
	Q_EVENT_PUSH,
	Q_EVENTS_ACK,
	Q_STREAM_CLAIM_READ,
	Q_STREAM_CLAIM,
	Q_STREAM_RELEASE,
	Q_STREAM_CHECK,
	Q_STREAM_EVENTS,
	Q_MARK_SENT,
	Q_TRIM_POINT,
	Q_TRIM,
	Q_LOST_MARK,
	Q_STREAMS_REFRESH,
	Q_MAX_EVENT,
	Q_SEQ_NOW,
	Q_SNAPSHOT,
	Q_RECENT,
	Q_STATS,
	Q_SESSION_COUNT,
	Q_ROOM_COUNT,
	Q_RATE_INIT,
	Q_RATE_READ,
	Q_RATE_WRITE,
	Q_RATE_GC,
	Q_TICKET_CREATE,
	Q_TICKET_TRIM,
	Q_TICKET_TAKE,
	Q_TICKETS_GC,
	Q_SESSION_RETOKEN,
	Q_KEY_GET,
	Q_KEY_NEXT_SEQ,
	Q_KEY_PUT,
	Q_KEY_TRIM,
	Q_KEYS_GC,
	Q_SESSION_END,
	Q_BAN_SET,
	Q_BAN_DELETE,
	Q_BAN_FIND,
	Q_BANS_LIST,
	Q_BANS_GC,
	Q_ROOMS_LIST,
	Q_NOTIFY,
	Q__COUNT
};

#define SESSION_COLS \
	"s.id, s.user_id, s.protocol, coalesce(m.room_id, ''), s.last_seen, s.stream_owner, s.stream_gen, " \
	"s.ended_id " \
	"FROM sessions s LEFT JOIN memberships m ON m.session_id = s.id "

static const char *const q_sql[Q__COUNT] = {
	[Q_SESSION_BY_TOKEN] = "SELECT " SESSION_COLS "WHERE s.token_hash = $1",
	[Q_SESSION_BY_USER] = "SELECT " SESSION_COLS "WHERE s.user_id = $1",
	[Q_SESSION_BY_ID] = "SELECT " SESSION_COLS "WHERE s.id = $1",
	[Q_SESSION_CREATE] = "INSERT INTO sessions(user_id, protocol, token_hash, created_at, last_seen) "
			     "VALUES ($1, $2, $3, $4, $4) RETURNING id",
	[Q_SESSION_TOUCH] = "UPDATE sessions SET last_seen = greatest(last_seen, $2) WHERE id = $1",
	[Q_SESSION_DELETE] = "DELETE FROM sessions WHERE id = $1",
	[Q_SESSIONS_STALE] = "SELECT " SESSION_COLS "WHERE s.last_seen < $1 OR (s.ended_id <> 0 AND s.ended_at < $3) "
			     "ORDER BY s.last_seen LIMIT $2 FOR NO KEY UPDATE OF s SKIP LOCKED",
	[Q_LOCK_ID] = "SELECT pg_advisory_xact_lock($1::int4, ($2::int8 % 2147483647)::int4)",
	[Q_LOCK_NAME] = "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
	[Q_MEMBER_DELETE] = "DELETE FROM memberships WHERE session_id = $1",
	[Q_MEMBER_INSERT] = "INSERT INTO memberships(session_id, room_id, joined_at, seq) VALUES ($1, $2::text, $3, "
			    "(SELECT coalesce(max(seq), 0) + 1 FROM memberships WHERE room_id = $2::text))",
	[Q_ROOM_MEMBERS] = "SELECT s.id, s.user_id, s.stream_owner FROM memberships m "
			   "JOIN sessions s ON s.id = m.session_id WHERE m.room_id = $1 ORDER BY m.seq",
	[Q_MAILBOX_PENDING] = "SELECT count(*) FROM events WHERE session_id = $1 AND "
			      "id > (SELECT sent_upto FROM sessions WHERE id = $1)",
	[Q_EVENT_INSERT] = "INSERT INTO events(session_id, body, created_at) VALUES ($1, $2, $3) RETURNING id",
	/* The mailbox's head (newest id, sent mark) and, if its pending count
	 * is under the cap $4 (<= 0: none), the event: one statement, one
	 * round trip; the id is 0 when the event was not inserted. FOR KEY
	 * SHARE: the session cannot be deleted under the new event, and a row
	 * lock gives the transaction its xid before the id is taken (see
	 * pgs_recent_recipients): the insert reads h, so the row is locked
	 * before its nextval runs. */
	[Q_EVENT_PUSH] = "WITH h AS (SELECT coalesce((SELECT max(id) FROM events WHERE session_id = $1::int8), 0) AS newest, "
			 "sent_upto FROM sessions WHERE id = $1::int8 FOR KEY SHARE), "
			 "i AS (INSERT INTO events(session_id, body, created_at) SELECT $1::int8, $2::text, $3::int8 FROM h "
			 "WHERE $4::int8 <= 0 OR h.newest - h.sent_upto < $4::int8 RETURNING id) "
			 "SELECT h.newest, h.sent_upto, coalesce((SELECT id FROM i), 0) FROM h",
	[Q_EVENTS_ACK] = "DELETE FROM events WHERE session_id = $1 AND id <= $2",
	[Q_STREAM_CLAIM_READ] = "SELECT stream_owner, stream_gen FROM sessions WHERE id = $1 FOR NO KEY UPDATE",
	[Q_STREAM_CLAIM] = "UPDATE sessions SET stream_owner = $2, stream_gen = $3, "
			   "last_seen = greatest(last_seen, $4) WHERE id = $1",
	[Q_STREAM_RELEASE] = "UPDATE sessions SET stream_owner = 0 WHERE id = $1 AND stream_gen = $2",
	[Q_STREAM_CHECK] = "SELECT stream_gen, lost_upto, ended_id FROM sessions WHERE id = $1",
	[Q_STREAM_EVENTS] = "SELECT id, body FROM events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3",
	[Q_MARK_SENT] = "UPDATE sessions SET sent_upto = greatest(sent_upto, $2) WHERE id = $1",
	[Q_TRIM_POINT] = "SELECT id FROM events WHERE session_id = $1 AND id <= $2 "
			 "ORDER BY id DESC LIMIT 1 OFFSET $3",
	[Q_TRIM] = "DELETE FROM events WHERE session_id = $1 AND id <= $2",
	[Q_LOST_MARK] = "UPDATE sessions SET lost_upto = greatest(lost_upto, $2) WHERE id = $1",
	/* Rows locked in id order, like every multi-row lock here. */
	[Q_STREAMS_REFRESH] = "UPDATE sessions SET last_seen = greatest(last_seen, $2) WHERE id IN "
			      "(SELECT id FROM sessions WHERE stream_owner = $1 ORDER BY id FOR NO KEY UPDATE)",
	[Q_MAX_EVENT] = "SELECT coalesce(max(id), 0) FROM events",
	[Q_SEQ_NOW] = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq",
	[Q_SNAPSHOT] = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8, "
		       "pg_snapshot_xmax(pg_current_snapshot())::text::int8",
	[Q_RECENT] = "SELECT e.id, e.session_id FROM events e JOIN sessions s ON s.id = e.session_id "
		     "WHERE e.id > $2 AND e.id <= $3 AND s.stream_owner = $1 ORDER BY e.id LIMIT $4",
	[Q_STATS] = "SELECT (SELECT count(*) FROM sessions), "
		    "(SELECT count(DISTINCT room_id) FROM memberships), "
		    "(SELECT count(*) FROM memberships), (SELECT count(*) FROM events), "
		    "(SELECT count(*) FROM sessions WHERE stream_owner <> 0)",
	[Q_SESSION_COUNT] = "SELECT count(*) FROM sessions",
	[Q_ROOM_COUNT] = "SELECT count(DISTINCT room_id) FROM memberships",
	[Q_RATE_INIT] = "INSERT INTO rate_buckets(key, tokens, updated) VALUES ($1, $2, $3) "
			"ON CONFLICT (key) DO NOTHING",
	[Q_RATE_READ] = "SELECT tokens, updated FROM rate_buckets WHERE key = $1 FOR UPDATE",
	[Q_RATE_WRITE] = "UPDATE rate_buckets SET tokens = $2, updated = $3 WHERE key = $1",
	[Q_RATE_GC] = "DELETE FROM rate_buckets WHERE updated < $1",
	[Q_TICKET_CREATE] = "INSERT INTO stream_tickets(hash, session_id, expires_at) VALUES ($1, $2, $3)",
	[Q_TICKET_TRIM] = "DELETE FROM stream_tickets WHERE session_id = $1 AND id NOT IN "
			  "(SELECT id FROM stream_tickets WHERE session_id = $1 ORDER BY id DESC LIMIT $2)",
	[Q_TICKET_TAKE] = "DELETE FROM stream_tickets WHERE hash = $1 RETURNING session_id, expires_at",
	[Q_TICKETS_GC] = "DELETE FROM stream_tickets WHERE expires_at <= $1",
	[Q_SESSION_RETOKEN] = "UPDATE sessions SET token_hash = $2 WHERE id = $1",
	[Q_KEY_GET] = "SELECT fingerprint, reply FROM command_keys "
		      "WHERE session_id = $1 AND cid = $2 AND created_at >= $3",
	[Q_KEY_NEXT_SEQ] = "SELECT coalesce(max(seq), 0) + 1 FROM command_keys WHERE session_id = $1",
	/* An expired key the pruner has not deleted yet is replaced. */
	[Q_KEY_PUT] = "INSERT INTO command_keys(session_id, cid, seq, fingerprint, reply, created_at) "
		      "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id, cid) DO UPDATE SET "
		      "seq = excluded.seq, fingerprint = excluded.fingerprint, reply = excluded.reply, "
		      "created_at = excluded.created_at",
	[Q_KEY_TRIM] = "DELETE FROM command_keys WHERE session_id = $1 AND seq <= $2",
	[Q_KEYS_GC] = "DELETE FROM command_keys WHERE created_at < $1",
	[Q_SESSION_END] = "UPDATE sessions SET ended_id = $2, ended_at = $3 WHERE id = $1",
	[Q_BAN_SET] = "INSERT INTO bans(kind, value, until, reason) VALUES ($1, $2, $3, $4) "
		      "ON CONFLICT (kind, value) DO UPDATE SET until = excluded.until, reason = excluded.reason",
	[Q_BAN_DELETE] = "DELETE FROM bans WHERE kind = $1 AND value = $2",
	[Q_BAN_FIND] = "SELECT until FROM bans WHERE kind = $1 AND value = $2 AND until > $3",
	[Q_BANS_LIST] = "SELECT kind, value, until, reason FROM bans WHERE until > $1 ORDER BY until LIMIT $2",
	[Q_BANS_GC] = "DELETE FROM bans WHERE until <= $1",
	[Q_ROOMS_LIST] = "SELECT m.room_id, s.id, s.user_id, s.protocol, s.last_seen, s.stream_owner "
			 "FROM memberships m JOIN sessions s ON s.id = m.session_id ORDER BY m.room_id, m.seq LIMIT $1",
	/* One notification per owner, its sessions comma-separated (see the
	 * wake-up's design note below). */
	[Q_NOTIFY] = "SELECT pg_notify('signal_' || lpad(to_hex(o), 16, '0'), $3::text || string_agg(s::text, ',')) "
		     "FROM unnest($1::int8[], $2::int8[]) AS t(o, s) GROUP BY o",
};

struct store {
	const struct store_ops *ops; /* first: see store_ops.h */
	PGconn *conn;
	char *where;           /* the conninfo, to reconnect; never logged */
	int64_t busy_timeout_ms;
	int in_txn;            /* 1 write, 2 read */
	int failed;            /* a statement of the transaction failed: it is aborted */
	int sp_pending;        /* a SAVEPOINT asked for, sent with the next statement */
	int doomed;            /* such a SAVEPOINT failed: no ROLLBACK TO may undo the command */
	sig_err fail_err;
	int broken;            /* the connection is lost: reconnect before the next transaction */
	int ever_up;           /* connected once: a later connect is a reconnect */
	int conn_outages;      /* `outages` when this connection was made */
	int64_t retry_at_us;   /* no reconnect before this (backoff) */
	struct attempt *attempt; /* a reconnect under way on its own thread */
	int64_t connect_wait_ms; /* store_connect_wait: < 0 until it ends */
	int64_t backoff_us;
	char sqlstate[6];      /* of the last failed statement */
	/* pgs_recent_recipients: the frontier below which every id is final. */
	int64_t cand_seq, cand_xmax, safe_id;
};

/* ---- parameters ---- */

#define ARGS_MAX 8
struct args {
	int n;
	const char *v[ARGS_MAX];
	int len[ARGS_MAX];
	int fmt[ARGS_MAX];
	char num[ARGS_MAX][32];
};

static void a_i64(struct args *a, int64_t x)
{
	snprintf(a->num[a->n], sizeof a->num[a->n], "%lld", (long long)x);
	a->v[a->n] = a->num[a->n];
	a->len[a->n] = 0;
	a->fmt[a->n++] = 0;
}

static void a_f64(struct args *a, double x)
{
	snprintf(a->num[a->n], sizeof a->num[a->n], "%.17g", x);
	a->v[a->n] = a->num[a->n];
	a->len[a->n] = 0;
	a->fmt[a->n++] = 0;
}

/* Text and bytea go in binary format: their bytes as they are, no escaping. */
static void a_bytes(struct args *a, const void *p, size_t len)
{
	a->v[a->n] = p;
	a->len[a->n] = (int)len;
	a->fmt[a->n++] = 1;
}

static void a_str(struct args *a, const char *s)
{
	a_bytes(a, s, strlen(s));
}

/* ---- errors and the connection ---- */

static int state_is(const store *st, const char *code)
{
	return strcmp(st->sqlstate, code) == 0;
}

/* An outage is logged once per process, not once per connection: its
 * loss by the first connection to find it, which counts a new outage
 * (outages), its end by the first to reconnect (pg_down). A connection
 * made before the last outage began that finds itself broken later is
 * part of that outage and says nothing. */
static atomic_int pg_down, outages;

static void mark_broken(store *st)
{
	int g = st->conn_outages;
	if (!st->broken && atomic_compare_exchange_strong(&outages, &g, g + 1)) {
		atomic_store(&pg_down, 1);
		log_warn("store: the connection to PostgreSQL is lost; commands get 503 until it is back");
	}
	st->broken = 1;
}

/* Notices (such as "already exists, skipping") are not worth a log line. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Classify a failed statement: SIG_E_BUSY for "not now" (a lock wait, a
 * deadlock, a serialization failure, a lost or refused connection),
 * SIG_E_INTERNAL for the rest. Only the primary message is logged: the
 * detail may quote a row's values. */
static sig_err fail(store *st, PGresult *r, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	snprintf(st->sqlstate, sizeof st->sqlstate, "%s", state ? state : "");
	if (!msg)
		msg = PQerrorMessage(st->conn);
	sig_err e = SIG_E_INTERNAL;
	if (PQstatus(st->conn) == CONNECTION_BAD || strncmp(st->sqlstate, "08", 2) == 0 ||
	    strncmp(st->sqlstate, "57P", 3) == 0) {
		mark_broken(st);
		e = SIG_E_BUSY;
	} else if (state_is(st, "40001") || state_is(st, "40P01") || state_is(st, "55P03") ||
		   state_is(st, "57014")) {
		log_warn("store: %s: %s (%s): busy", what, msg, st->sqlstate);
		e = SIG_E_BUSY;
	} else if (!state_is(st, "23505") && !state_is(st, "23503")) {
		log_error("store: %s: %s (%s)", what, msg, st->sqlstate);
	}
	if (st->in_txn && !st->failed) {
		st->failed = 1;
		st->fail_err = e;
	}
	return e;
}

static sig_err reconnect(store *st);
static PGresult *run_pipelined(store *st, int cls, int64_t id, enum q q, const struct args *a, int binary,
			       sig_err *e, const char *what);

/* Before a transaction or a call outside one: a working connection. */
static sig_err ready(store *st)
{
	if (!st->broken && st->conn && PQstatus(st->conn) == CONNECTION_OK)
		return SIG_OK;
	st->broken = 1;
	if (util_mono_us() < st->retry_at_us)
		return SIG_E_BUSY;
	return reconnect(st);
}

/* Run prepared statement q. Returns the result (PQclear it) or NULL with
 * *e set. A statement in a transaction that already failed is not sent:
 * PostgreSQL would refuse it anyway. */
static PGresult *run(store *st, enum q q, const struct args *a, int binary, sig_err *e, const char *what)
{
	*e = SIG_OK;
	if (st->in_txn && st->failed) {
		*e = st->fail_err;
		return NULL;
	}
	if (st->in_txn && st->sp_pending) /* the command's SAVEPOINT goes with it */
		return run_pipelined(st, 0, 0, q, a, binary, e, what);
	if (!st->in_txn && (*e = ready(st)) != SIG_OK)
		return NULL;
	if (st->broken) {
		*e = SIG_E_BUSY;
		return NULL;
	}
	char name[16];
	snprintf(name, sizeof name, "q%d", (int)q);
	for (int attempt = 0;; attempt++) {
		PGresult *r = PQexecPrepared(st->conn, name, a ? a->n : 0, a ? a->v : NULL, a ? a->len : NULL,
					     a ? a->fmt : NULL, binary);
		ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
			return r;
		*e = fail(st, r, what);
		PQclear(r);
		/* Outside a transaction a statement on a connection the server
		 * closed is tried once more on a fresh one (see begin_txn). */
		if (st->in_txn || !st->broken || attempt > 0)
			return NULL;
		st->retry_at_us = 0;
		if ((*e = ready(st)) != SIG_OK)
			return NULL;
	}
}

/* A statement whose rows do not matter. */
static sig_err exec_q(store *st, enum q q, const struct args *a, const char *what)
{
	sig_err e;
	PGresult *r = run(st, q, a, 0, &e, what);
	PQclear(r);
	return e;
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The first column of the first row as a number (0 when no row). */
static sig_err query_i64(store *st, enum q q, const struct args *a, int64_t *out, const char *what)
{
	sig_err e;
	PGresult *r = run(st, q, a, 0, &e, what);
	*out = r && PQntuples(r) > 0 ? get_i64(r, 0, 0) : 0;
	PQclear(r);
	return e;
}

/* Constant transaction control (BEGIN, COMMIT, SAVEPOINT...). */
static sig_err exec_text(store *st, const char *sql, const char *what)
{
	PGresult *r = PQexec(st->conn, sql);
	ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	sig_err e = SIG_OK;
	if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
		e = fail(st, r, what);
	PQclear(r);
	return e;
}

/* A lock of class `cls` on an id, held until the transaction ends. */
static sig_err lock_id(store *st, int cls, int64_t id)
{
	struct args a = {0};
	a_i64(&a, cls);
	a_i64(&a, id);
	return exec_q(st, Q_LOCK_ID, &a, "advisory lock");
}

/* Statements sent together in libpq's pipeline mode, one round trip for
 * all: a prepared one (q >= 0, with a), or constant text (q < 0). They are
 * still separate statements, run in that order, each with its own
 * snapshot taken when it starts (READ COMMITTED), after the one before it
 * has finished: a lock's waiting is over before the statement after it
 * reads. If one fails the server skips the rest (their results say
 * so). Results in got[] (NULL for none: the exchange broke down). */
struct piece {
	int q;
	const char *text;
	const struct args *a;
};

static void pipeline(store *st, const struct piece *p, int n, int binary, PGresult **got)
{
	PGconn *c = st->conn;
	int sent = PQenterPipelineMode(c);
	for (int i = 0; i < n; i++) {
		got[i] = NULL;
		if (!sent)
			continue;
		const struct args *a = p[i].a;
		if (p[i].q >= 0) {
			char name[16];
			snprintf(name, sizeof name, "q%d", p[i].q);
			sent = PQsendQueryPrepared(c, name, a ? a->n : 0, a ? a->v : NULL, a ? a->len : NULL,
						   a ? a->fmt : NULL, binary);
		} else {
			sent = PQsendQueryParams(c, p[i].text, 0, NULL, NULL, NULL, NULL, 0);
		}
	}
	sent = sent && PQpipelineSync(c);
	/* Each statement's result, then NULL; then the sync's. Bounded: a
	 * connection that breaks half-way gives NULLs without a sync. */
	for (int k = 0, guard = 0; sent && guard < 4 * n + 4; guard++) {
		PGresult *r = PQgetResult(c);
		if (r == NULL) {
			if (k < n && got[k])
				k++;
			else if (k < n || PQstatus(c) != CONNECTION_OK)
				break;
			continue;
		}
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (k < n && got[k] == NULL)
			got[k] = r;
		else
			PQclear(r);
	}
	if (!PQexitPipelineMode(c))
		mark_broken(st); /* results left unread: this connection cannot be trusted any more */
}

/* In a write transaction: the pending SAVEPOINT (if any), the lock of
 * class `cls` on an id (cls 0: none) and statement q, in one round trip.
 * q runs once the lock is held, in a snapshot of its own, so it sees every
 * transaction that held the lock before (the design note). Returns q's
 * result as run() does; after a failure, *e is the first one's error. */
static PGresult *run_pipelined(store *st, int cls, int64_t id, enum q q, const struct args *a, int binary,
			       sig_err *e, const char *what)
{
	*e = SIG_OK;
	if (!st->in_txn || st->failed || st->broken) {
		*e = !st->in_txn ? SIG_E_INTERNAL : st->failed ? st->fail_err : SIG_E_BUSY;
		return NULL;
	}
	struct args l = {0};
	struct piece p[3];
	const char *whats[3];
	int n = 0, sp = st->sp_pending;
	if (sp) {
		whats[n] = "savepoint";
		p[n++] = (struct piece){.q = -1, .text = "SAVEPOINT cmd"};
		st->sp_pending = 0;
	}
	if (cls) {
		a_i64(&l, cls);
		a_i64(&l, id);
		whats[n] = "advisory lock";
		p[n++] = (struct piece){.q = Q_LOCK_ID, .a = &l};
	}
	whats[n] = what;
	p[n++] = (struct piece){.q = (int)q, .a = a};
	PGresult *got[3];
	pipeline(st, p, n, binary, got);
	PGresult *out = NULL;
	int i = 0;
	for (; i < n; i++) {
		ExecStatusType s = got[i] ? PQresultStatus(got[i]) : PGRES_FATAL_ERROR;
		if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
			break;
	}
	if (i < n) {
		*e = fail(st, got[i], whats[i]);
		/* The command's savepoint may not exist: ROLLBACK TO would
		 * undo the command before it instead (see pgs_savepoint_end). */
		if (sp && i == 0)
			st->doomed = 1;
	} else if (st->broken) {
		*e = fail(st, NULL, what);
	} else {
		out = got[n - 1];
		got[n - 1] = NULL;
	}
	for (int k = 0; k < n; k++)
		PQclear(got[k]);
	return out;
}

static sig_err lock_name(store *st, int cls, const char *name)
{
	struct args a = {0};
	a_i64(&a, cls);
	a_str(&a, name);
	return exec_q(st, Q_LOCK_NAME, &a, "advisory lock");
}

/* ---- migrations (see the design note) ---- */

static sig_err migrate(store *st)
{
	sig_err e = exec_text(st, "BEGIN", "migration begin");
	if (e != SIG_OK)
		return e;
	st->in_txn = 1;
	struct args a = {0};
	a_i64(&a, LK_MIGRATE);
	a_i64(&a, 1);
	PGresult *r = PQexecParams(st->conn, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)", a.n, NULL, a.v,
				   a.len, a.fmt, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
		e = fail(st, r, "migration lock");
	PQclear(r);
	if (e == SIG_OK)
		e = exec_text(st, "CREATE TABLE IF NOT EXISTS signal_schema (version integer NOT NULL)",
			      "migration table");
	int version = 0;
	if (e == SIG_OK) {
		r = PQexec(st->conn, "SELECT coalesce(max(version), 0) FROM signal_schema");
		if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			version = atoi(PQgetvalue(r, 0, 0));
		else
			e = fail(st, r, "migration version");
		PQclear(r);
	}
	if (e == SIG_OK && version > pg_schema_migration_count) {
		log_error("store: the PostgreSQL schema is at version %d, newer than this binary knows (%d): "
			  "refusing it (run the release that migrated it)",
			  version, pg_schema_migration_count);
		e = SIG_E_INTERNAL;
	}
	for (int v = version; e == SIG_OK && v < pg_schema_migration_count; v++) {
		char vs[16];
		snprintf(vs, sizeof vs, "%d", v + 1);
		const char *vp = vs;
		if ((e = exec_text(st, pg_schema_migrations[v], "migration")) != SIG_OK ||
		    (e = exec_text(st, "DELETE FROM signal_schema", "migration version")) != SIG_OK)
			break;
		r = PQexecParams(st->conn, "INSERT INTO signal_schema(version) VALUES ($1::int4)", 1, NULL, &vp, NULL,
				 NULL, 0);
		if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
			e = fail(st, r, "migration version");
		PQclear(r);
		if (e == SIG_OK)
			log_info("store: PostgreSQL schema migrated to version %d", v + 1);
	}
	if (e == SIG_OK)
		e = exec_text(st, "COMMIT", "migration commit");
	else
		PQclear(PQexec(st->conn, "ROLLBACK"));
	st->in_txn = 0;
	st->failed = 0;
	return e;
}

/* ---- connecting ---- */

/* Defaults for every connection, the URI's own settings winning (they
 * come after these). connect_timeout is per host, libpq's shortest: a
 * multi-host URI whose first host has gone silent costs every reconnect
 * that long. tcp_user_timeout and the keepalives bound how long a
 * statement can wait on a server whose host has gone (no answer, no
 * reset): by default the kernel would retransmit for about fifteen
 * minutes, and the thread would wait with it. */
#define CONN_DEFAULTS(X) \
	X("application_name", "signal-fcgi") \
	X("connect_timeout", "2") \
	X("tcp_user_timeout", "10000") \
	X("keepalives_idle", "10") \
	X("keepalives_interval", "5") \
	X("keepalives_count", "3")

/* Which host of a multi-host URI answered last in this process (its
 * index in the URI's list; -1: none yet). A reconnect tries it first and
 * the others after it, in the URI's order: after a failover, the handles
 * of a process that reconnect after the first one go straight to the new
 * primary, instead of each waiting connect_timeout on a dead host that no
 * longer answers. target_session_attrs still decides: a host that is no
 * longer the primary is passed over as before. */
static atomic_int good_host = -1;

/* Connections made by this process so far: an attempt that fails after
 * another one that started later succeeded (it waited on a dead host
 * meanwhile) is not news, and says nothing. */
static atomic_long connects;

/* list (comma-separated) with its element k first; NULL if it has no
 * element k. Free it. */
static char *list_first(const char *list, int k)
{
	const char *p = list, *e;
	for (int i = 0; i < k; i++) {
		p = strchr(p, ',');
		if (!p)
			return NULL;
		p++;
	}
	e = p + strcspn(p, ",");
	size_t n = strlen(list), m = (size_t)(e - p);
	char *out = xmalloc(n + 2);
	memcpy(out, p, m);
	size_t o = m;
	size_t before = (size_t)(p - list); /* the elements before k, with their commas */
	if (before) {
		out[o++] = ',';
		memcpy(out + o, list, before - 1);
		o += before - 1;
	}
	if (*e) {
		memcpy(out + o, e, strlen(e)); /* ",rest" */
		o += strlen(e);
	}
	out[o] = '\0';
	return out;
}

/* The index in list of the element equal to item (-1: none). */
static int list_index(const char *list, const char *item)
{
	size_t n = strlen(item);
	int i = 0;
	for (const char *p = list;; i++) {
		size_t m = strcspn(p, ",");
		if (m == n && strncmp(p, item, n) == 0)
			return i;
		if (!p[m])
			return -1;
		p += m + 1;
	}
}

/* Connect with our defaults, then the settings of `where`: its hosts
 * from the one that answered last (good_host), if it names several. */
static PGconn *connect_ordered(const char *where)
{
#define CONN_KEY(k, v) k,
#define CONN_VAL(k, v) v,
	static const char *const dkeys[] = {CONN_DEFAULTS(CONN_KEY)};
	static const char *const dvals[] = {CONN_DEFAULTS(CONN_VAL)};
#undef CONN_KEY
#undef CONN_VAL
	enum { ND = sizeof dkeys / sizeof dkeys[0] };
	PQconninfoOption *opts = PQconninfoParse(where, NULL);
	int k = atomic_load(&good_host);
	if (!opts || k <= 0) { /* the URI's own order; a bad URI: libpq says why */
		PQconninfoFree(opts);
		const char *keys[ND + 2], *vals[ND + 2];
		for (int i = 0; i < ND; i++)
			keys[i] = dkeys[i], vals[i] = dvals[i];
		keys[ND] = "dbname", vals[ND] = where;
		keys[ND + 1] = vals[ND + 1] = NULL;
		return PQconnectdbParams(keys, vals, 1);
	}
	int n = 0;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		n++;
	const char **keys = xcalloc((size_t)(ND + n + 1), sizeof *keys);
	const char **vals = xcalloc((size_t)(ND + n + 1), sizeof *vals);
	char *rotated[3] = {0};
	int j = 0, r = 0;
	for (int i = 0; i < ND; i++, j++)
		keys[j] = dkeys[i], vals[j] = dvals[i];
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val)
			continue;
		keys[j] = o->keyword;
		vals[j] = o->val;
		/* The parallel lists; a single port (or none) applies to all. */
		if ((!strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr") || !strcmp(o->keyword, "port")) &&
		    strchr(o->val, ',') && r < 3 && (rotated[r] = list_first(o->val, k)))
			vals[j] = rotated[r++];
		j++;
	}
	PGconn *c = PQconnectdbParams(keys, vals, 0);
	for (int i = 0; i < r; i++)
		free(rotated[i]);
	free(keys);
	free(vals);
	PQconninfoFree(opts);
	return c;
}

/* After a connect: remember which host of `where` answered. */
static void note_good_host(const char *where, PGconn *c)
{
	PQconninfoOption *opts = PQconninfoParse(where, NULL);
	const char *hosts = NULL, *ports = NULL, *h = PQhost(c), *pt = PQport(c);
	for (PQconninfoOption *o = opts; opts && o->keyword; o++) {
		if (!strcmp(o->keyword, "host") && o->val)
			hosts = o->val;
		if (!strcmp(o->keyword, "port") && o->val)
			ports = o->val;
	}
	if (hosts && strchr(hosts, ',') && h) {
		/* The first element that matches both host and port: the same
		 * host may be named twice with two ports, as in the tests. */
		int i = 0, found = -1;
		for (const char *p = hosts; found < 0; i++) {
			size_t m = strcspn(p, ",");
			char *one = xmalloc(m + 1);
			memcpy(one, p, m);
			one[m] = '\0';
			int same = strcmp(one, h) == 0;
			free(one);
			if (same && ports && strchr(ports, ',') && pt) {
				char *pl = list_first(ports, i);
				same = pl && list_index(pl, pt) == 0;
				free(pl);
			}
			if (same)
				found = i;
			if (!p[m])
				break;
			p += m + 1;
		}
		if (found >= 0)
			atomic_store(&good_host, found);
	}
	PQconninfoFree(opts);
}

/* Connect to `where` and make the connection ready: lock_timeout, the
 * schema migrated (or checked), every statement prepared. Blocks for the
 * whole attempt: each host of a multi-host URI in turn, up to
 * connect_timeout for one that never answers. Returns the connection, or
 * NULL with *err set (SIG_E_BUSY: no server to be had now). It works on a
 * scratch handle of its own, as it may run on a thread that does not own
 * the handle it connects for. */
static PGconn *connect_new(const char *where, int64_t busy_timeout_ms, long since, sig_err *err)
{
	/* broken, as the real handle is while it reconnects: a failure here
	 * is part of the outage it is in, not a new one to log. */
	store tmp = {.ops = &store_pg_ops, .busy_timeout_ms = busy_timeout_ms, .broken = 1};
	tmp.conn = connect_ordered(where);
	sig_err e = SIG_OK;
	if (PQstatus(tmp.conn) != CONNECTION_OK) {
		/* The message names host and port, never the password. */
		const char *m = PQerrorMessage(tmp.conn);
		int n = (int)strcspn(m, "\n");
		if (atomic_load(&connects) == since && atomic_exchange(&pg_down, 1) == 0)
			log_warn("store: cannot connect to PostgreSQL: %.*s", n, m);
		e = SIG_E_BUSY;
	}
	if (e == SIG_OK) {
		PQsetNoticeProcessor(tmp.conn, ignore_notice, NULL);
		char lt[32];
		snprintf(lt, sizeof lt, "%lldms", (long long)busy_timeout_ms);
		const char *v = lt;
		PGresult *r = PQexecParams(tmp.conn, "SELECT set_config('lock_timeout', $1, false)", 1, NULL, &v, NULL,
					   NULL, 0);
		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
			e = fail(&tmp, r, "lock_timeout");
		PQclear(r);
	}
	/* On every connect: a reconnect may reach another server (failover)
	 * or, in the tests, another database; it costs a few round trips. */
	if (e == SIG_OK)
		e = migrate(&tmp);
	for (int i = 0; e == SIG_OK && i < Q__COUNT; i++) {
		char name[16];
		snprintf(name, sizeof name, "q%d", i);
		PGresult *r = PQprepare(tmp.conn, name, q_sql[i], 0, NULL);
		if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
			e = fail(&tmp, r, "prepare");
			if (e == SIG_OK)
				e = SIG_E_INTERNAL;
		}
		PQclear(r);
	}
	*err = e;
	if (e != SIG_OK) {
		PQfinish(tmp.conn);
		return NULL;
	}
	note_good_host(where, tmp.conn);
	atomic_fetch_add(&connects, 1);
	return tmp.conn;
}

/* One connection attempt on a thread of its own, shared by the handle
 * that wants the connection and that thread; whichever lets go of it last
 * frees it (with the connection, if nobody took it: a handle closed while
 * its attempt ran). */
struct attempt {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* on CLOCK_MONOTONIC */
	int refs;
	int done;
	sig_err err;
	PGconn *conn;
	char *where;
	int64_t busy_timeout_ms;
	long since; /* connects when it began */
};

static void attempt_release(struct attempt *a)
{
	pthread_mutex_lock(&a->mu);
	int last = --a->refs == 0;
	pthread_mutex_unlock(&a->mu);
	if (!last)
		return;
	if (a->conn)
		PQfinish(a->conn);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a->where);
	free(a);
}

static void *attempt_run(void *arg)
{
	struct attempt *a = arg;
	sig_err e;
	PGconn *c = connect_new(a->where, a->busy_timeout_ms, a->since, &e);
	pthread_mutex_lock(&a->mu);
	a->conn = c;
	a->err = e;
	a->done = 1;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	attempt_release(a);
	return NULL;
}

/* A new attempt for st, on a detached thread (or here, if no thread can
 * be had: then it is over when this returns). */
static void attempt_start(store *st)
{
	struct attempt *a = xcalloc(1, sizeof *a);
	pthread_mutex_init(&a->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cv, &ca);
	pthread_condattr_destroy(&ca);
	a->refs = 2;
	a->where = xstrdup(st->where);
	a->busy_timeout_ms = st->busy_timeout_ms;
	a->since = atomic_load(&connects);
	pthread_attr_t ta;
	pthread_t t;
	pthread_attr_init(&ta);
	pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &ta, attempt_run, a) != 0) {
		a->refs = 1;
		a->conn = connect_new(a->where, a->busy_timeout_ms, a->since, &a->err);
		a->done = 1;
	}
	pthread_attr_destroy(&ta);
	st->attempt = a;
}

/* Wait for st's attempt at most max_ms (< 0: until it ends). Returns 1
 * with its outcome (*conn is the caller's, NULL on failure; the attempt is
 * let go), or 0 while it still runs (nothing changed). */
static int attempt_take(store *st, int64_t max_ms, PGconn **conn, sig_err *e)
{
	struct attempt *a = st->attempt;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (max_ms > 0) {
		until.tv_sec += max_ms / 1000;
		until.tv_nsec += (max_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&a->mu);
	while (!a->done && max_ms != 0) {
		if (max_ms < 0)
			pthread_cond_wait(&a->cv, &a->mu);
		else if (pthread_cond_timedwait(&a->cv, &a->mu, &until) != 0)
			break;
	}
	int done = a->done;
	if (done) {
		*conn = a->conn;
		*e = a->err;
		a->conn = NULL;
	}
	pthread_mutex_unlock(&a->mu);
	if (done) {
		st->attempt = NULL;
		attempt_release(a);
	}
	return done;
}

/* A new connection for st: the attempt that runs, or a new one, waited
 * for as long as store_connect_wait allows. A failure (or an attempt
 * still running) leaves st broken, with a backoff after a failure. */
static sig_err reconnect(store *st)
{
	if (st->conn) {
		PQfinish(st->conn);
		st->conn = NULL;
	}
	if (!st->attempt)
		attempt_start(st);
	PGconn *c = NULL;
	sig_err e;
	st->broken = 1;
	if (!attempt_take(st, st->connect_wait_ms, &c, &e))
		return SIG_E_BUSY; /* a later call takes it up */
	if (e != SIG_OK) {
		st->backoff_us = st->backoff_us ? st->backoff_us * 2 : BACKOFF_MIN_US;
		if (st->backoff_us > BACKOFF_MAX_US)
			st->backoff_us = BACKOFF_MAX_US;
		st->retry_at_us = util_mono_us() + st->backoff_us;
		return e;
	}
	st->conn = c;
	if (atomic_exchange(&pg_down, 0) == 1 && st->ever_up)
		log_info("store: connected to PostgreSQL again");
	st->ever_up = 1;
	st->conn_outages = atomic_load(&outages);
	st->broken = 0;
	st->backoff_us = 0;
	st->safe_id = st->cand_seq = st->cand_xmax = 0;
	return SIG_OK;
}

static void pgs_connect_wait(store *st, int64_t max_ms)
{
	st->connect_wait_ms = max_ms < 0 ? -1 : max_ms;
}

static sig_err pgs_open(const char *where, int64_t busy_timeout_ms, store **out)
{
	*out = NULL;
	store *st = xcalloc(1, sizeof *st);
	st->ops = &store_pg_ops;
	st->where = xstrdup(where);
	st->busy_timeout_ms = busy_timeout_ms;
	st->connect_wait_ms = -1; /* the first connect: whatever it takes */
	sig_err e = reconnect(st);
	if (e != SIG_OK) {
		pgs_close(st);
		return e;
	}
	st->connect_wait_ms = CONNECT_WAIT_MS;
	*out = st;
	return SIG_OK;
}

static void pgs_close(store *st)
{
	if (st == NULL)
		return;
	if (st->in_txn)
		pgs_rollback(st);
	if (st->conn)
		PQfinish(st->conn);
	if (st->attempt)
		attempt_release(st->attempt);
	free(st->where);
	free(st);
}

/* ---- transactions ---- */

static sig_err begin_txn(store *st, const char *sql, int kind)
{
	for (int attempt = 0;; attempt++) {
		sig_err e = ready(st);
		if (e != SIG_OK)
			return e;
		if ((e = exec_text(st, sql, "begin")) == SIG_OK) {
			st->in_txn = kind;
			st->failed = 0;
			st->sp_pending = st->doomed = 0;
			return SIG_OK;
		}
		/* A connection the server closed since its last use (it was
		 * restarted, or failed over): nothing was done yet, so a fresh
		 * connection is tried at once, once. */
		if (!st->broken || attempt > 0)
			return e;
		st->retry_at_us = 0;
	}
}

static sig_err pgs_begin(store *st)
{
	return begin_txn(st, "BEGIN ISOLATION LEVEL READ COMMITTED", 1);
}

static sig_err pgs_begin_read(store *st)
{
	return begin_txn(st, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 2);
}

static sig_err pgs_commit(store *st)
{
	sig_err e;
	if (st->failed) {
		e = st->fail_err;
		pgs_rollback(st);
		return e;
	}
	if (st->broken) {
		pgs_rollback(st);
		return SIG_E_BUSY;
	}
	int64_t t0 = util_mono_us();
	PGresult *r = PQexec(st->conn, "COMMIT");
	if (st->in_txn == 1)
		metrics_observe(MH_COMMIT, util_mono_us() - t0); /* writes only, as store_sqlite.c */
	ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	if (s == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0) {
		e = SIG_OK;
	} else if (s == PGRES_COMMAND_OK) {
		log_error("store: commit: the transaction was rolled back");
		e = SIG_E_INTERNAL;
	} else {
		e = fail(st, r, "commit");
	}
	PQclear(r);
	st->in_txn = 0;
	st->failed = 0;
	st->sp_pending = st->doomed = 0;
	return e;
}

static void pgs_rollback(store *st)
{
	if (!st->in_txn)
		return;
	if (!st->broken && PQstatus(st->conn) == CONNECTION_OK)
		PQclear(PQexec(st->conn, "ROLLBACK"));
	st->in_txn = 0;
	st->failed = 0;
	st->sp_pending = st->doomed = 0;
}

/* The SAVEPOINT is not sent here but with the command's first statement
 * (run_pipelined: one round trip for both); a command that runs none
 * needs none. */
static sig_err pgs_savepoint(store *st)
{
	if (st->broken)
		return SIG_E_BUSY;
	if (st->failed)
		return st->fail_err;
	st->sp_pending = 1;
	return SIG_OK;
}

/* A kept savepoint is not released: RELEASE would be a round trip per
 * command for nothing, as the next command's SAVEPOINT cmd nests inside it
 * and ROLLBACK TO names the innermost "cmd", which is that command's own.
 * The levels (GROUP_MAX at most) all end with the transaction. A released
 * subtransaction's xid stays in the backend's subxid cache until the top
 * commit all the same, so nesting costs PostgreSQL nothing more there. */
static sig_err pgs_savepoint_end(store *st, int keep)
{
	if (st->sp_pending) { /* the command sent nothing: nothing to keep or undo */
		st->sp_pending = 0;
		return SIG_OK;
	}
	if (st->broken)
		return SIG_E_BUSY;
	if (st->doomed) /* its SAVEPOINT failed: the group cannot commit (failed stays set) */
		return st->fail_err;
	if (!keep || st->failed) {
		int was_failed = st->failed;
		st->failed = 0; /* ROLLBACK TO makes an aborted transaction usable again */
		sig_err e = exec_text(st, "ROLLBACK TO SAVEPOINT cmd", "rollback to savepoint");
		if (e != SIG_OK)
			return e;
		if (was_failed && keep)
			return SIG_E_INTERNAL;
	}
	return SIG_OK;
}

/* ---- sessions ---- */

static void copy_text(char *dst, const PGresult *r, int row, int col)
{
	size_t n = (size_t)PQgetlength(r, row, col);
	if (n > STORE_ID_MAX)
		n = STORE_ID_MAX;
	memcpy(dst, PQgetvalue(r, row, col), n);
	dst[n] = '\0';
}

static void read_session(const PGresult *r, int row, store_session *out)
{
	out->id = get_i64(r, row, 0);
	copy_text(out->user_id, r, row, 1);
	copy_text(out->protocol, r, row, 2);
	copy_text(out->room_id, r, row, 3);
	out->last_seen = get_i64(r, row, 4);
	out->stream_owner = get_i64(r, row, 5);
	out->stream_gen = get_i64(r, row, 6);
	out->ended_id = get_i64(r, row, 7);
}

static sig_err session_query(store *st, enum q q, const struct args *a, store_session *out, const char *what)
{
	memset(out, 0, sizeof *out);
	sig_err e;
	PGresult *r = run(st, q, a, 0, &e, what);
	if (r && PQntuples(r) > 0)
		read_session(r, 0, out);
	PQclear(r);
	return e;
}

static sig_err pgs_session_by_token(store *st, const uint8_t hash[STORE_HASH_LEN], store_session *out)
{
	struct args a = {0};
	a_bytes(&a, hash, STORE_HASH_LEN);
	return session_query(st, Q_SESSION_BY_TOKEN, &a, out, "session by token");
}

static sig_err pgs_session_by_user(store *st, const char *user_id, store_session *out)
{
	struct args a = {0};
	a_str(&a, user_id);
	return session_query(st, Q_SESSION_BY_USER, &a, out, "session by user");
}

static sig_err pgs_session_create(store *st, const char *user_id, const char *protocol,
				  const uint8_t hash[STORE_HASH_LEN], int64_t now, int64_t *id_out)
{
	struct args a = {0};
	a_str(&a, user_id);
	a_str(&a, protocol);
	a_bytes(&a, hash, STORE_HASH_LEN);
	a_i64(&a, now);
	sig_err e;
	PGresult *r = run(st, Q_SESSION_CREATE, &a, 0, &e, "session create");
	if (r && PQntuples(r) == 1)
		*id_out = get_i64(r, 0, 0);
	PQclear(r);
	/* Two logins of one id at once: the unique constraint decides. */
	if (e != SIG_OK && state_is(st, "23505"))
		return SIG_E_USER_EXISTS;
	return e;
}

static sig_err pgs_session_touch(store *st, int64_t sid, int64_t now)
{
	struct args a = {0};
	a_i64(&a, sid);
	a_i64(&a, now);
	return exec_q(st, Q_SESSION_TOUCH, &a, "session touch");
}

static sig_err pgs_session_delete(store *st, int64_t sid)
{
	struct args a = {0};
	a_i64(&a, sid);
	return exec_q(st, Q_SESSION_DELETE, &a, "session delete");
}

static sig_err pgs_sessions_stale(store *st, int64_t before, int64_t ended_before, store_session *out, int max,
				  int *n)
{
	struct args a = {0};
	a_i64(&a, before);
	a_i64(&a, max);
	a_i64(&a, ended_before);
	sig_err e;
	*n = 0;
	PGresult *r = run(st, Q_SESSIONS_STALE, &a, 0, &e, "stale sessions");
	for (int i = 0; r && i < PQntuples(r) && *n < max; i++)
		read_session(r, i, &out[(*n)++]);
	PQclear(r);
	return e;
}

/* ---- rooms ---- */

/* A unique violation or a vanished row where the core read them a moment
 * ago: another transaction got there first. The caller may retry. */
static sig_err raced(store *st, sig_err e)
{
	if (e != SIG_OK && (state_is(st, "23505") || state_is(st, "23503"))) {
		log_warn("store: a concurrent change (%s): busy", st->sqlstate);
		st->fail_err = SIG_E_BUSY;
		return SIG_E_BUSY;
	}
	return e;
}

static sig_err pgs_member_set(store *st, int64_t sid, const char *room, int64_t now)
{
	struct args a = {0};
	a_i64(&a, sid);
	sig_err e = exec_q(st, Q_MEMBER_DELETE, &a, "leave room");
	if (e != SIG_OK || room == NULL)
		return e;
	if ((e = lock_name(st, LK_ROOM, room)) != SIG_OK)
		return e;
	a_str(&a, room);
	a_i64(&a, now);
	return raced(st, exec_q(st, Q_MEMBER_INSERT, &a, "join room"));
}

static sig_err pgs_room_members(store *st, const char *room, store_member *out, int max, int *n)
{
	sig_err e;
	*n = 0;
	/* In a write transaction: what is read here is what a join or a
	 * broadcast acts on, so it must be the latest (design note). */
	if (st->in_txn == 1 && (e = lock_name(st, LK_ROOM, room)) != SIG_OK)
		return e;
	struct args a = {0};
	a_str(&a, room);
	PGresult *r = run(st, Q_ROOM_MEMBERS, &a, 0, &e, "room members");
	for (int i = 0; r && i < PQntuples(r); i++) {
		if (*n < max) {
			store_member *m = &out[*n];
			m->session_id = get_i64(r, i, 0);
			copy_text(m->user_id, r, i, 1);
			m->stream_owner = get_i64(r, i, 2);
		}
		(*n)++;
	}
	PQclear(r);
	return e;
}

/* ---- mailboxes ---- */

static sig_err pgs_event_push(store *st, int64_t sid, const char *body, size_t len, int64_t cap, int64_t now,
			      int64_t *id_out, int64_t *prev_out)
{
	if (id_out)
		*id_out = 0;
	if (prev_out)
		*prev_out = 0;
	/* The mailbox lock first, then the head read in a statement of its
	 * own: it sees every earlier writer of this mailbox committed. */
	sig_err e;
	struct args a = {0};
	a_i64(&a, sid);
	a_bytes(&a, body, len);
	a_i64(&a, now);
	a_i64(&a, cap);
	PGresult *r = run_pipelined(st, LK_MAILBOX, sid, Q_EVENT_PUSH, &a, 0, &e, "event push");
	if (r == NULL)
		return raced(st, e);
	if (PQntuples(r) == 0) {
		/* The recipient was removed after the caller read it: its
		 * mailbox went with it, so there is nothing to queue. */
		PQclear(r);
		return SIG_OK;
	}
	int64_t newest = get_i64(r, 0, 0);
	int64_t pending = newest - get_i64(r, 0, 1);
	int64_t id = get_i64(r, 0, 2);
	PQclear(r);
	if (id == 0) {
		/* The head says the mailbox is full; the sent mark may lag (it
		 * is recorded once a second): count what is really pending. */
		struct args c = {0};
		a_i64(&c, sid);
		if ((e = query_i64(st, Q_MAILBOX_PENDING, &c, &pending, "mailbox count")) != SIG_OK)
			return e;
		if (pending >= cap)
			return SIG_E_MAILBOX_FULL;
		struct args b = {0};
		a_i64(&b, sid);
		a_bytes(&b, body, len);
		a_i64(&b, now);
		if ((e = raced(st, query_i64(st, Q_EVENT_INSERT, &b, &id, "event insert"))) != SIG_OK)
			return e;
	}
	if (prev_out)
		*prev_out = newest;
	if (id_out)
		*id_out = id;
	return SIG_OK;
}

/* The session row first, then its events: the order of every other
 * writer of a mailbox (a sender, a claim, the sent marks). An ack that
 * deleted the events first deadlocked with the marks of another process:
 * a poll's claim (ack, then the row) against a flush that had the row and
 * then acked (tests/95-pg-failover.t, under load). */
static sig_err pgs_events_ack(store *st, int64_t sid, int64_t upto)
{
	struct args a = {0};
	a_i64(&a, sid);
	sig_err e = exec_q(st, Q_STREAM_CLAIM_READ, &a, "ack");
	if (e != SIG_OK)
		return e;
	a_i64(&a, upto);
	return exec_q(st, Q_EVENTS_ACK, &a, "ack");
}

static sig_err pgs_stream_claim(store *st, int64_t sid, int64_t owner, int64_t now, int64_t *gen_out,
				int64_t *prev_owner)
{
	struct args a = {0};
	a_i64(&a, sid);
	sig_err e;
	PGresult *r = run(st, Q_STREAM_CLAIM_READ, &a, 0, &e, "stream claim");
	if (r == NULL)
		return e;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return SIG_E_UNAUTHORIZED;
	}
	int64_t prev = get_i64(r, 0, 0), gen = get_i64(r, 0, 1);
	PQclear(r);
	a_i64(&a, owner);
	a_i64(&a, gen + 1);
	a_i64(&a, now);
	if ((e = exec_q(st, Q_STREAM_CLAIM, &a, "stream claim")) == SIG_OK) {
		*gen_out = gen + 1;
		*prev_owner = prev;
	}
	return e;
}

static sig_err pgs_stream_release(store *st, int64_t sid, int64_t gen)
{
	struct args a = {0};
	a_i64(&a, sid);
	a_i64(&a, gen);
	return exec_q(st, Q_STREAM_RELEASE, &a, "stream release");
}

static sig_err pgs_stream_pull(store *st, int64_t sid, int64_t gen, int64_t after, int limit, store_event_fn fn,
			       void *ctx, int64_t *lost_upto)
{
	struct args a = {0};
	a_i64(&a, sid);
	sig_err e;
	*lost_upto = 0;
	PGresult *r = run(st, Q_STREAM_CHECK, &a, 0, &e, "stream check");
	if (r == NULL)
		return e;
	int64_t cur_gen = PQntuples(r) ? get_i64(r, 0, 0) : -1;
	*lost_upto = PQntuples(r) ? get_i64(r, 0, 1) : 0;
	int64_t ended = PQntuples(r) ? get_i64(r, 0, 2) : 0;
	PQclear(r);
	if (cur_gen != gen || (ended && after >= ended))
		return SIG_E_UNAUTHORIZED;
	a_i64(&a, after);
	a_i64(&a, limit);
	if ((r = run(st, Q_STREAM_EVENTS, &a, 0, &e, "stream events")) == NULL)
		return e;
	int64_t last = after;
	for (int i = 0; i < PQntuples(r); i++) {
		last = get_i64(r, i, 0);
		if (fn(ctx, last, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))
			break;
	}
	PQclear(r);
	/* An ended session's last event is out: the stream ends after it. */
	return ended && last >= ended ? SIG_E_UNAUTHORIZED : SIG_OK;
}

static sig_err pgs_mark_sent(store *st, int64_t sid, int64_t upto, int64_t window)
{
	struct args a = {0};
	a_i64(&a, sid);
	a_i64(&a, upto);
	sig_err e = exec_q(st, Q_MARK_SENT, &a, "mark sent");
	if (e != SIG_OK)
		return e;
	/* Keep at most `window` delivered-but-unacknowledged events for resume. */
	int64_t cut = 0;
	a_i64(&a, window);
	if ((e = query_i64(st, Q_TRIM_POINT, &a, &cut, "trim point")) != SIG_OK || cut == 0)
		return e;
	struct args b = {0};
	a_i64(&b, sid);
	a_i64(&b, cut);
	if ((e = exec_q(st, Q_TRIM, &b, "trim")) != SIG_OK)
		return e;
	return exec_q(st, Q_LOST_MARK, &b, "lost mark");
}

static sig_err pgs_streams_refresh(store *st, int64_t owner, int64_t now)
{
	struct args a = {0};
	a_i64(&a, owner);
	a_i64(&a, now);
	return exec_q(st, Q_STREAMS_REFRESH, &a, "streams refresh");
}

/* The highest event id below which nothing can still commit: ids commit
 * out of order across mailboxes, so the re-check must not step past an id
 * that is still in flight, or an event whose wake-up was lost would never
 * be found.
 *
 * Every writer locks the session row (and so gets its xid) before it
 * takes an id. So when the sequence stood at S and, read afterwards, the
 * snapshot's xmax was X, every transaction holding an id <= S has an xid
 * below X; once the oldest running xid is at or past X, all of them have
 * ended and every id <= S is final. The candidate (S, X) of one call
 * becomes the frontier at a later call that finds it so. */
static sig_err frontier(store *st, int64_t *safe)
{
	int64_t seq = 0;
	sig_err e = query_i64(st, Q_SEQ_NOW, NULL, &seq, "sequence");
	if (e != SIG_OK)
		return e;
	PGresult *r = run(st, Q_SNAPSHOT, NULL, 0, &e, "snapshot");
	if (r == NULL)
		return e;
	int64_t xmin = get_i64(r, 0, 0), xmax = get_i64(r, 0, 1);
	PQclear(r);
	if (st->cand_xmax && xmin >= st->cand_xmax && st->cand_seq > st->safe_id)
		st->safe_id = st->cand_seq;
	if (xmin >= xmax && seq > st->safe_id) /* nothing was running at all */
		st->safe_id = seq;
	if (st->cand_xmax == 0 || xmin >= st->cand_xmax) {
		st->cand_seq = seq;
		st->cand_xmax = xmax;
	}
	*safe = st->safe_id;
	return SIG_OK;
}

static sig_err pgs_recent_recipients(store *st, int64_t owner, int64_t after, int64_t *sids, int max, int *n,
				     int64_t *max_id)
{
	int64_t newest = 0, safe = 0;
	*n = 0;
	*max_id = after;
	sig_err e = frontier(st, &safe);
	if (e == SIG_OK)
		e = query_i64(st, Q_MAX_EVENT, NULL, &newest, "max event");
	if (e != SIG_OK)
		return e;
	if (newest <= after) {
		*max_id = newest; /* nothing after `after`: continue from the newest id */
		return SIG_OK;
	}
	struct args a = {0};
	a_i64(&a, owner);
	a_i64(&a, after);
	a_i64(&a, newest);
	a_i64(&a, max);
	PGresult *r = run(st, Q_RECENT, &a, 0, &e, "recent recipients");
	if (r == NULL)
		return e;
	int64_t last = after;
	for (int i = 0; i < PQntuples(r) && *n < max; i++) {
		last = get_i64(r, i, 0);
		sids[(*n)++] = get_i64(r, i, 1);
	}
	PQclear(r);
	*max_id = *n == max ? last : newest;
	/* Never past the frontier: what is beyond it is looked at again (a
	 * stream woken twice only pulls once more). */
	if (*max_id > safe)
		*max_id = safe > after ? safe : after;
	return SIG_OK;
}

/* ---- counts ---- */

static sig_err pgs_stats(store *st, struct store_stats *out)
{
	memset(out, 0, sizeof *out);
	sig_err e;
	PGresult *r = run(st, Q_STATS, NULL, 0, &e, "stats");
	if (r && PQntuples(r) == 1) {
		out->sessions = get_i64(r, 0, 0);
		out->rooms = get_i64(r, 0, 1);
		out->memberships = get_i64(r, 0, 2);
		out->events = get_i64(r, 0, 3);
		out->streams = get_i64(r, 0, 4);
	}
	PQclear(r);
	return e;
}

/* In a write transaction a count decides a limit: counted under a lock,
 * so two logins (two new rooms) cannot both take the last place. */
static sig_err pgs_session_count(store *st, int64_t *n)
{
	sig_err e;
	*n = 0;
	if (st->in_txn == 1 && (e = lock_id(st, LK_COUNT, 1)) != SIG_OK)
		return e;
	return query_i64(st, Q_SESSION_COUNT, NULL, n, "session count");
}

static sig_err pgs_room_count(store *st, int64_t *n)
{
	sig_err e;
	*n = 0;
	if (st->in_txn == 1 && (e = lock_id(st, LK_COUNT, 2)) != SIG_OK)
		return e;
	return query_i64(st, Q_ROOM_COUNT, NULL, n, "room count");
}

/* ---- rate buckets, tickets, tokens ---- */

static sig_err pgs_rate_take(store *st, const char *key, double rate, double burst, int64_t now, int *wait_s)
{
	struct args a = {0};
	a_str(&a, key);
	a_f64(&a, burst);
	a_i64(&a, now);
	*wait_s = 0;
	sig_err e = exec_q(st, Q_RATE_INIT, &a, "rate init");
	if (e != SIG_OK)
		return e;
	a.n = 1;
	PGresult *r = run(st, Q_RATE_READ, &a, 0, &e, "rate read");
	if (r == NULL)
		return e;
	double tokens = burst;
	if (PQntuples(r) == 1) {
		/* Another process may have written a later `now` (its clock read
		 * before ours waited for the row): no time has passed then, and
		 * the bucket keeps that later time. */
		int64_t updated = get_i64(r, 0, 1);
		tokens = strtod(PQgetvalue(r, 0, 0), NULL);
		if (now > updated)
			tokens += (double)(now - updated) / 1000.0 * rate;
		else
			now = updated;
		if (tokens > burst)
			tokens = burst;
	}
	PQclear(r);
	if (tokens >= 1.0)
		tokens -= 1.0;
	else
		*wait_s = (int)((1.0 - tokens) / rate) + 1;
	a.n = 1;
	a_f64(&a, tokens);
	a_i64(&a, now);
	return exec_q(st, Q_RATE_WRITE, &a, "rate write");
}

static sig_err pgs_rate_gc(store *st, int64_t before)
{
	struct args a = {0};
	a_i64(&a, before);
	return exec_q(st, Q_RATE_GC, &a, "rate gc");
}

static sig_err pgs_ticket_create(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN], int64_t expires,
				 int keep)
{
	struct args a = {0};
	a_bytes(&a, hash, STORE_HASH_LEN);
	a_i64(&a, sid);
	a_i64(&a, expires);
	sig_err e = raced(st, exec_q(st, Q_TICKET_CREATE, &a, "ticket create"));
	if (e != SIG_OK)
		return e;
	struct args b = {0};
	a_i64(&b, sid);
	a_i64(&b, keep);
	return exec_q(st, Q_TICKET_TRIM, &b, "ticket trim");
}

static sig_err pgs_ticket_take(store *st, const uint8_t hash[STORE_HASH_LEN], int64_t now, store_session *out)
{
	memset(out, 0, sizeof *out);
	/* Deleted first, whatever it names: of two takers, one gets the row. */
	struct args a = {0};
	a_bytes(&a, hash, STORE_HASH_LEN);
	sig_err e;
	PGresult *r = run(st, Q_TICKET_TAKE, &a, 0, &e, "ticket take");
	if (r == NULL)
		return e;
	int64_t sid = 0;
	if (PQntuples(r) == 1 && get_i64(r, 0, 1) > now)
		sid = get_i64(r, 0, 0);
	PQclear(r);
	if (sid == 0)
		return SIG_OK;
	struct args b = {0};
	a_i64(&b, sid);
	return session_query(st, Q_SESSION_BY_ID, &b, out, "ticket session");
}

static sig_err pgs_tickets_gc(store *st, int64_t now)
{
	struct args a = {0};
	a_i64(&a, now);
	return exec_q(st, Q_TICKETS_GC, &a, "tickets gc");
}

static sig_err pgs_session_retoken(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN])
{
	struct args a = {0};
	a_i64(&a, sid);
	a_bytes(&a, hash, STORE_HASH_LEN);
	return exec_q(st, Q_SESSION_RETOKEN, &a, "session retoken");
}

/* ---- idempotency keys ---- */

static sig_err pgs_key_get(store *st, int64_t sid, const char *cid, int64_t since, struct store_key *out)
{
	memset(out, 0, sizeof *out);
	sig_err e;
	/* In the command's write transaction: a second run of the same cid
	 * waits here until the first has committed its key, then finds it. */
	if (st->in_txn == 1 && (e = lock_id(st, LK_KEYS, sid)) != SIG_OK)
		return e;
	struct args a = {0};
	a_i64(&a, sid);
	a_str(&a, cid);
	a_i64(&a, since);
	/* Binary results: the fingerprint's 32 bytes, the reply's text. */
	PGresult *r = run(st, Q_KEY_GET, &a, 1, &e, "key get");
	if (r && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == STORE_HASH_LEN) {
		out->len = (size_t)PQgetlength(r, 0, 1);
		memcpy(out->fingerprint, PQgetvalue(r, 0, 0), STORE_HASH_LEN);
		out->reply = xmalloc(out->len + 1);
		memcpy(out->reply, PQgetvalue(r, 0, 1), out->len);
		out->reply[out->len] = '\0';
		out->found = 1;
	}
	PQclear(r);
	return e;
}

static sig_err pgs_key_put(store *st, int64_t sid, const char *cid, const uint8_t fingerprint[STORE_HASH_LEN],
			   const char *reply, size_t len, int64_t now, int64_t keep)
{
	struct args a = {0};
	a_i64(&a, sid);
	int64_t seq = 0;
	sig_err e = query_i64(st, Q_KEY_NEXT_SEQ, &a, &seq, "key seq");
	if (e != SIG_OK)
		return e;
	a_str(&a, cid);
	a_i64(&a, seq);
	a_bytes(&a, fingerprint, STORE_HASH_LEN);
	a_bytes(&a, reply, len);
	a_i64(&a, now);
	if ((e = raced(st, exec_q(st, Q_KEY_PUT, &a, "key put"))) != SIG_OK || seq <= keep)
		return e;
	struct args b = {0};
	a_i64(&b, sid);
	a_i64(&b, seq - keep);
	return exec_q(st, Q_KEY_TRIM, &b, "key trim");
}

static sig_err pgs_keys_gc(store *st, int64_t before)
{
	struct args a = {0};
	a_i64(&a, before);
	return exec_q(st, Q_KEYS_GC, &a, "keys gc");
}

/* ---- the admin API: ended sessions, bans, the room listing ---- */

static sig_err pgs_session_end(store *st, int64_t sid, int64_t last_event, int64_t now)
{
	struct args a = {0};
	a_i64(&a, sid);
	a_i64(&a, last_event);
	a_i64(&a, now);
	return exec_q(st, Q_SESSION_END, &a, "session end");
}

static sig_err pgs_ban_set(store *st, const char *kind, const char *value, int64_t until, const char *reason)
{
	struct args a = {0};
	a_str(&a, kind);
	a_str(&a, value);
	a_i64(&a, until);
	a_str(&a, reason ? reason : "");
	return exec_q(st, Q_BAN_SET, &a, "ban set");
}

static sig_err pgs_ban_delete(store *st, const char *kind, const char *value, int *removed)
{
	struct args a = {0};
	a_str(&a, kind);
	a_str(&a, value);
	sig_err e;
	*removed = 0;
	PGresult *r = run(st, Q_BAN_DELETE, &a, 0, &e, "ban delete");
	if (r)
		*removed = atoi(PQcmdTuples(r)) > 0;
	PQclear(r);
	return e;
}

static sig_err pgs_ban_find(store *st, const char *kind, const char *value, int64_t now, int64_t *until)
{
	struct args a = {0};
	a_str(&a, kind);
	a_str(&a, value);
	a_i64(&a, now);
	return query_i64(st, Q_BAN_FIND, &a, until, "ban find");
}

static sig_err pgs_bans_list(store *st, int64_t now, int max, store_ban_fn fn, void *ctx)
{
	struct args a = {0};
	a_i64(&a, now);
	a_i64(&a, max);
	sig_err e;
	PGresult *r = run(st, Q_BANS_LIST, &a, 0, &e, "bans list");
	for (int i = 0; r && i < PQntuples(r); i++)
		if (fn(ctx, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), get_i64(r, i, 2), PQgetvalue(r, i, 3)))
			break;
	PQclear(r);
	return e;
}

static sig_err pgs_bans_gc(store *st, int64_t now)
{
	struct args a = {0};
	a_i64(&a, now);
	return exec_q(st, Q_BANS_GC, &a, "bans gc");
}

static sig_err pgs_rooms_list(store *st, int max, store_membership_fn fn, void *ctx)
{
	struct args a = {0};
	a_i64(&a, max);
	sig_err e;
	PGresult *r = run(st, Q_ROOMS_LIST, &a, 0, &e, "rooms list");
	for (int i = 0; r && i < PQntuples(r); i++) {
		store_session m = {0};
		copy_text(m.room_id, r, i, 0);
		m.id = get_i64(r, i, 1);
		copy_text(m.user_id, r, i, 2);
		copy_text(m.protocol, r, i, 3);
		m.last_seen = get_i64(r, i, 4);
		m.stream_owner = get_i64(r, i, 5);
		if (fn(ctx, &m))
			break;
	}
	PQclear(r);
	return e;
}

/* PostgreSQL keeps itself (autovacuum); the maintenance thread's call is
 * where its handle reconnects after the server came back. */
static sig_err pgs_maintain(store *st)
{
	if (!st->in_txn)
		(void)ready(st);
	return SIG_OK;
}

/* ---- the wake-up across machines (store.h: store_notify, store_listener_*) ----
 *
 * Design note. Every process LISTENs on a channel of its own,
 * signal_<its owner nonce in 16 hex digits>, the value its streams'
 * session rows carry as stream_owner. A sender whose transaction queues an
 * event for a stream held elsewhere calls pg_notify(that channel, the
 * session ids) in the same transaction: PostgreSQL delivers a notification
 * only when its transaction commits, after the commit is visible, so the
 * woken process always finds the event, and a rolled-back command (or
 * savepoint) rings nothing. That works the same between processes of one
 * machine and of many, so with this engine bell.c sends no datagrams
 * between processes (two wakes per event would mean two mailbox reads);
 * a wake within one process still goes through bell.c's queue in memory,
 * and a process never notifies itself (own_owner).
 *
 * The listening connection is a connection of its own (a LISTEN holds no
 * transaction, but it must not share a connection with a thread's
 * transactions), driven by the process's event loop like any socket:
 * connected with PQconnectStartParams/PQconnectPoll and LISTEN sent with
 * PQsendQuery, so the loop never waits on the network (only a host name's
 * lookup may block it, as in every libpq asynchronous connect). While it
 * is down it reconnects with the same backoff as a handle (50 ms doubling
 * to 2 s); a connect or LISTEN that takes more than LISTEN_DEADLINE_US is
 * given up and tried again. NOTIFY is not replayed: what was sent while
 * the listener was away is lost, so when it listens again it says so
 * (STORE_LISTEN_UP) and the process re-reads every stream's mailbox at
 * once; the periodic re-check (held.c) stays as the net under both.
 * TCP keepalives end a connection to a host that vanished without a word.
 *
 * Costs: a notifying commit takes PostgreSQL's notification queue lock
 * for a moment, so commits that notify are serialised across the whole
 * cluster at that point; the group commit keeps their number to one per
 * group per node. A payload is "m<machine>t<time>:" and at most
 * NOTIFY_MAX session ids, comma-separated (PostgreSQL's limit is 8000
 * bytes; 64 ids of 20 characters are 1280). The time is the sender's
 * monotonic clock when it asked, which means something only on its own
 * machine: the machine is a hash of the kernel's boot id, and a listener
 * on another one takes the time as unknown (it feeds the delivery latency
 * metric, nothing else).
 *
 * It must never: block the loop on a socket, take a lock or a transaction
 * on the listening connection, or let a notification's text size
 * anything (ids are parsed within the payload, each checked). */

#define NOTIFY_MAX 64
#define LISTEN_DEADLINE_US 10000000

/* This process's own channel: wakes for it go through bell.c's memory
 * queue, never through the database. */
static _Atomic int64_t own_owner;

/* This machine, for the wake's time (see above): a hash of its boot id,
 * 0 when unreadable (every time then unknown). */
static uint64_t machine_id(void)
{
	static _Atomic uint64_t id;
	static atomic_int done;
	if (atomic_load(&done))
		return atomic_load(&id);
	char b[64] = {0};
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	uint64_t h = 0;
	if (f && fgets(b, sizeof b, f)) {
		h = 1469598103934665603ULL; /* FNV-1a */
		for (const char *p = b; *p && *p != '\n'; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	}
	if (f)
		fclose(f);
	atomic_store(&id, h);
	atomic_store(&done, 1);
	return h;
}

/* "{1,2,3}": an int8[] parameter in text form. */
static char *int8_array(const int64_t *v, int n)
{
	size_t cap = (size_t)n * 21 + 3, len = 0;
	char *s = xmalloc(cap);
	s[len++] = '{';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s%lld", i ? "," : "", (long long)v[i]);
	s[len++] = '}';
	s[len] = 0;
	return s;
}

static sig_err pgs_notify(store *st, const int64_t *owners, const int64_t *sessions, int n)
{
	int64_t self = atomic_load(&own_owner);
	int64_t o[NOTIFY_MAX], sid[NOTIFY_MAX];
	sig_err e = SIG_OK;
	for (int i = 0; i < n && e == SIG_OK;) {
		int k = 0;
		for (; i < n && k < NOTIFY_MAX; i++) {
			if (owners[i] == 0 || owners[i] == self || sessions[i] <= 0)
				continue;
			o[k] = owners[i];
			sid[k++] = sessions[i];
		}
		if (k == 0)
			continue;
		char *ao = int8_array(o, k), *as = int8_array(sid, k), head[48];
		snprintf(head, sizeof head, "m%016llxt%lld:", (unsigned long long)machine_id(),
			 (long long)util_mono_us());
		struct args a = {0};
		a_str(&a, ao);
		a.fmt[0] = 0; /* text form: an array literal */
		a_str(&a, as);
		a.fmt[1] = 0;
		a_str(&a, head);
		e = exec_q(st, Q_NOTIFY, &a, "notify");
		free(ao);
		free(as);
	}
	return e;
}

struct store_listener {
	const struct store_listener_ops *ops; /* first: see store_ops.h */
	char *where;                          /* the conninfo; never logged */
	int64_t owner;
	char listen_sql[48];                  /* LISTEN signal_<hex>: our own digits, no client text */
	PGconn *conn;
	enum { L_DOWN, L_CONNECTING, L_LISTENING, L_UP } state;
	PostgresPollingStatusType poll;       /* L_CONNECTING: what PQconnectPoll waits for */
	int64_t retry_at_us, backoff_us, deadline_us;
	int ever_up, outage_logged;
};

static store_listener *pgl_create(const char *where, int64_t owner)
{
	store_listener *ls = xcalloc(1, sizeof *ls);
	ls->ops = &store_pg_listener_ops;
	ls->where = xstrdup(where);
	ls->owner = owner;
	snprintf(ls->listen_sql, sizeof ls->listen_sql, "LISTEN signal_%016llx", (unsigned long long)owner);
	atomic_store(&own_owner, owner);
	return ls;
}

static void pgl_destroy(store_listener *ls)
{
	if (ls == NULL)
		return;
	if (ls->conn)
		PQfinish(ls->conn);
	free(ls->where);
	free(ls);
}

static int pgl_fd(const store_listener *ls, unsigned *want)
{
	*want = 0;
	if (ls->state == L_DOWN || ls->conn == NULL)
		return -1;
	*want = ls->state == L_CONNECTING && ls->poll == PGRES_POLLING_WRITING ? STORE_WANT_WRITE : STORE_WANT_READ;
	return PQsocket(ls->conn);
}

/* The connection failed or was lost: close it, retry after the backoff. */
static int pgl_down(store_listener *ls, int64_t now, const char *what)
{
	if (!ls->outage_logged) {
		const char *m = ls->conn ? PQerrorMessage(ls->conn) : "out of memory";
		log_warn("store: the wake-up listener %s: %.*s; streams rely on the periodic re-check until it is back",
			 what, (int)strcspn(m, "\n"), m);
		ls->outage_logged = 1;
	}
	if (ls->conn)
		PQfinish(ls->conn);
	ls->conn = NULL;
	ls->state = L_DOWN;
	ls->backoff_us = ls->backoff_us ? ls->backoff_us * 2 : BACKOFF_MIN_US;
	if (ls->backoff_us > BACKOFF_MAX_US)
		ls->backoff_us = BACKOFF_MAX_US;
	ls->retry_at_us = now + ls->backoff_us;
	return STORE_LISTEN_NEWFD;
}

static int pgl_connect(store_listener *ls, int64_t now)
{
	const char *keys[] = {"application_name", "connect_timeout", "keepalives", "keepalives_idle",
			      "keepalives_interval", "keepalives_count", "dbname", NULL};
	const char *vals[] = {"signal-fcgi-listen", "5", "1", "10", "5", "3", ls->where, NULL};
	ls->conn = PQconnectStartParams(keys, vals, 1);
	if (ls->conn == NULL || PQstatus(ls->conn) == CONNECTION_BAD)
		return pgl_down(ls, now, "cannot connect");
	ls->state = L_CONNECTING;
	ls->poll = PGRES_POLLING_WRITING; /* as libpq says to start */
	ls->deadline_us = now + LISTEN_DEADLINE_US;
	return STORE_LISTEN_NEWFD;
}

/* Each notification's payload: "m<machine>t<time>:", then session ids,
 * comma-separated. */
static void pgl_notified(store_listener *ls, store_wake_fn *fn, void *ctx)
{
	PGnotify *n;
	while ((n = PQnotifies(ls->conn)) != NULL) {
		const char *p = n->extra;
		unsigned long long m = 0;
		long long t = 0;
		int used = 0;
		int64_t rung = 0;
		if (p && sscanf(p, "m%16llxt%lld:%n", &m, &t, &used) == 2 && used > 0) {
			p += used;
			if (m != 0 && m == machine_id() && t > 0)
				rung = (int64_t)t;
		}
		while (p && *p) {
			char *end;
			long long v = strtoll(p, &end, 10);
			if (end == p || (*end != ',' && *end != 0))
				break; /* not ours: ignore the rest */
			if (v > 0)
				fn(ctx, (int64_t)v, rung);
			p = *end ? end + 1 : end;
		}
		PQfreemem(n);
	}
}

static int pgl_step(store_listener *ls, int ready, int64_t now, store_wake_fn *fn, void *ctx)
{
	switch (ls->state) {
	case L_DOWN:
		return now >= ls->retry_at_us ? pgl_connect(ls, now) : 0;
	case L_CONNECTING: {
		if (!ready)
			return now > ls->deadline_us ? pgl_down(ls, now, "timed out connecting") : 0;
		int before = PQsocket(ls->conn);
		ls->poll = PQconnectPoll(ls->conn);
		if (ls->poll == PGRES_POLLING_FAILED)
			return pgl_down(ls, now, "cannot connect");
		int flags = PQsocket(ls->conn) != before ? STORE_LISTEN_NEWFD : 0; /* multi-host: the next host */
		if (ls->poll != PGRES_POLLING_OK)
			return flags;
		if (PQsetnonblocking(ls->conn, 1) != 0 || !PQsendQuery(ls->conn, ls->listen_sql))
			return pgl_down(ls, now, "cannot send LISTEN");
		ls->state = L_LISTENING;
		return flags | STORE_LISTEN_NEWFD; /* now wants reading */
	}
	case L_LISTENING: {
		if (!ready)
			return now > ls->deadline_us ? pgl_down(ls, now, "timed out on LISTEN") : 0;
		if (PQflush(ls->conn) < 0 || !PQconsumeInput(ls->conn))
			return pgl_down(ls, now, "lost its connection");
		int failed = 0;
		while (!PQisBusy(ls->conn)) {
			PGresult *r = PQgetResult(ls->conn);
			if (r == NULL) {
				if (failed)
					return pgl_down(ls, now, "LISTEN failed");
				ls->state = L_UP;
				ls->backoff_us = 0;
				if (ls->ever_up || ls->outage_logged)
					log_info("store: the wake-up listener is back; every stream re-reads its mailbox");
				else
					log_info("store: listening for wake-ups from other processes and nodes (LISTEN/NOTIFY)");
				ls->ever_up = 1;
				ls->outage_logged = 0;
				pgl_notified(ls, fn, ctx);
				return STORE_LISTEN_UP;
			}
			failed |= PQresultStatus(r) != PGRES_COMMAND_OK;
			PQclear(r);
		}
		return 0;
	}
	case L_UP:
		if (!ready)
			return 0;
		if (!PQconsumeInput(ls->conn) || PQstatus(ls->conn) != CONNECTION_OK)
			return pgl_down(ls, now, "lost its connection");
		pgl_notified(ls, fn, ctx);
		/* Anything else on this connection (a notice, an error report
		 * before the server closes it) is read and dropped. */
		while (!PQisBusy(ls->conn)) {
			PGresult *r = PQgetResult(ls->conn);
			if (r == NULL)
				break;
			PQclear(r);
		}
		return PQstatus(ls->conn) == CONNECTION_OK ? 0 : pgl_down(ls, now, "lost its connection");
	}
	return 0;
}

const struct store_listener_ops store_pg_listener_ops = {
	.create = pgl_create,
	.destroy = pgl_destroy,
	.fd = pgl_fd,
	.step = pgl_step,
};

const struct store_ops store_pg_ops = {
	.name = "postgresql",
	.open = pgs_open,
	.close = pgs_close,
	.rollback = pgs_rollback,
	.connect_wait = pgs_connect_wait,
	STORE_CALLS(STORE_OP_ENTRY)
};
