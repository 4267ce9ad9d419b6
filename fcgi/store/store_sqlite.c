/*
 * store_sqlite.c - the store on SQLite, shared by every worker process.
 *
 * Design note. Every worker process opens the same database file in WAL
 * mode, one connection per thread, each with its statements prepared once.
 * WAL lets readers (stream pulls, token look-ups) run beside the single
 * writer. Writes are short IMMEDIATE transactions; inside one process they
 * queue on a mutex, so threads never meet SQLite's sleeping busy handler
 * among themselves, and across processes a busy handler of our own backs
 * off in microseconds, not SQLite's default milliseconds. Automatic
 * checkpoints are off: a request that happened to run one would wait on
 * readers for tens of milliseconds. The maintenance thread runs a PASSIVE
 * checkpoint instead, which never waits. synchronous=NORMAL: a commit is
 * durable against a crash of the process (the case that matters for a
 * responder that lighttpd may kill and restart); a power loss can drop the
 * last transactions but never corrupts the file.
 *
 * It must never: hold a statement un-reset across calls (an unreset reader
 * pins the WAL), or interpolate a value into SQL text.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "store/store.h"
#include "store/store_ops.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define STORE_ENGINE(name) sq_##name
STORE_CALLS(STORE_OP_DECL)
static void sq_close(store *st);
static void sq_rollback(store *st);

extern const char *const schema_migrations[];
extern const int schema_migration_count;

enum stmt_id {
	Q_SESSION_BY_TOKEN,
	Q_SESSION_BY_USER,
	Q_SESSION_CREATE,
	Q_SESSION_TOUCH,
	Q_SESSION_DELETE,
	Q_SESSIONS_STALE,
	Q_MEMBER_DELETE,
	Q_MEMBER_INSERT,
	Q_ROOM_MEMBERS,
	Q_MAILBOX_HEAD,
	Q_MAILBOX_PENDING,
	Q_EVENT_INSERT,
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
	Q_RECENT,
	Q_STATS,
	Q_BEGIN_WRITE,
	Q_BEGIN_READ,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_SAVEPOINT,
	Q_RELEASE,
	Q_ROLLBACK_TO,
	Q_SESSION_COUNT,
	Q_ROOM_COUNT,
	Q_RATE_READ,
	Q_RATE_WRITE,
	Q_RATE_GC,
	Q_TICKET_CREATE,
	Q_TICKET_TRIM,
	Q_TICKET_SESSION,
	Q_TICKET_DELETE,
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
	Q__COUNT
};

#define SESSION_COLS \
	"s.id, s.user_id, s.protocol, coalesce(m.room_id, ''), s.last_seen, s.stream_owner, s.stream_gen, " \
	"s.ended_id " \
	"FROM sessions s LEFT JOIN memberships m ON m.session_id = s.id "

static const char *const stmt_sql[Q__COUNT] = {
	[Q_SESSION_BY_TOKEN] = "SELECT " SESSION_COLS "WHERE s.token_hash = ?1",
	[Q_SESSION_BY_USER] = "SELECT " SESSION_COLS "WHERE s.user_id = ?1",
	[Q_SESSION_CREATE] = "INSERT INTO sessions(user_id, protocol, token_hash, created_at, last_seen) "
			     "VALUES (?1, ?2, ?3, ?4, ?4)",
	[Q_SESSION_TOUCH] = "UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE id = ?1",
	[Q_SESSION_DELETE] = "DELETE FROM sessions WHERE id = ?1",
	[Q_SESSIONS_STALE] = "SELECT " SESSION_COLS "WHERE s.last_seen < ?1 OR (s.ended_id <> 0 AND s.ended_at < ?3) "
			     "ORDER BY s.last_seen LIMIT ?2",
	[Q_MEMBER_DELETE] = "DELETE FROM memberships WHERE session_id = ?1",
	[Q_MEMBER_INSERT] = "INSERT INTO memberships(session_id, room_id, joined_at, seq) "
			    "VALUES (?1, ?2, ?3, (SELECT coalesce(max(seq), 0) + 1 FROM memberships WHERE room_id = ?2))",
	[Q_ROOM_MEMBERS] = "SELECT s.id, s.user_id, s.stream_owner FROM memberships m "
			   "JOIN sessions s ON s.id = m.session_id WHERE m.room_id = ?1 ORDER BY m.seq",
	[Q_MAILBOX_HEAD] = "SELECT coalesce((SELECT max(id) FROM events WHERE session_id = ?1), 0), sent_upto "
			   "FROM sessions WHERE id = ?1",
	[Q_MAILBOX_PENDING] = "SELECT count(*) FROM events WHERE session_id = ?1 AND "
			      "id > (SELECT sent_upto FROM sessions WHERE id = ?1)",
	[Q_EVENT_INSERT] = "INSERT INTO events(session_id, body, created_at) VALUES (?1, ?2, ?3)",
	[Q_EVENTS_ACK] = "DELETE FROM events WHERE session_id = ?1 AND id <= ?2",
	[Q_STREAM_CLAIM_READ] = "SELECT stream_owner, stream_gen FROM sessions WHERE id = ?1",
	[Q_STREAM_CLAIM] = "UPDATE sessions SET stream_owner = ?2, stream_gen = ?3, "
			   "last_seen = max(last_seen, ?4) WHERE id = ?1",
	[Q_STREAM_RELEASE] = "UPDATE sessions SET stream_owner = 0 WHERE id = ?1 AND stream_gen = ?2",
	[Q_STREAM_CHECK] = "SELECT stream_gen, lost_upto, ended_id FROM sessions WHERE id = ?1",
	[Q_STREAM_EVENTS] = "SELECT id, body FROM events WHERE session_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
	[Q_MARK_SENT] = "UPDATE sessions SET sent_upto = max(sent_upto, ?2) WHERE id = ?1",
	[Q_TRIM_POINT] = "SELECT id FROM events WHERE session_id = ?1 AND id <= ?2 "
			 "ORDER BY id DESC LIMIT 1 OFFSET ?3",
	[Q_TRIM] = "DELETE FROM events WHERE session_id = ?1 AND id <= ?2",
	[Q_LOST_MARK] = "UPDATE sessions SET lost_upto = max(lost_upto, ?2) WHERE id = ?1",
	[Q_STREAMS_REFRESH] = "UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE stream_owner = ?1",
	[Q_MAX_EVENT] = "SELECT coalesce(max(id), 0) FROM events",
	[Q_RECENT] = "SELECT e.id, e.session_id FROM events e JOIN sessions s ON s.id = e.session_id "
		     "WHERE e.id > ?2 AND e.id <= ?3 AND s.stream_owner = ?1 ORDER BY e.id LIMIT ?4",
	[Q_STATS] = "SELECT (SELECT count(*) FROM sessions), "
		    "(SELECT count(DISTINCT room_id) FROM memberships), "
		    "(SELECT count(*) FROM memberships), (SELECT count(*) FROM events), "
		    "(SELECT count(*) FROM sessions WHERE stream_owner <> 0)",
	[Q_BEGIN_WRITE] = "BEGIN IMMEDIATE",
	[Q_BEGIN_READ] = "BEGIN",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	[Q_SAVEPOINT] = "SAVEPOINT cmd",
	[Q_RELEASE] = "RELEASE cmd",
	[Q_ROLLBACK_TO] = "ROLLBACK TO cmd",
	[Q_SESSION_COUNT] = "SELECT count(*) FROM sessions",
	[Q_ROOM_COUNT] = "SELECT count(*) FROM (SELECT DISTINCT room_id FROM memberships)",
	[Q_RATE_READ] = "SELECT tokens, updated FROM rate_buckets WHERE key = ?1",
	[Q_RATE_WRITE] = "INSERT INTO rate_buckets(key, tokens, updated) VALUES (?1, ?2, ?3) "
			 "ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
	[Q_RATE_GC] = "DELETE FROM rate_buckets WHERE updated < ?1",
	[Q_TICKET_CREATE] = "INSERT INTO stream_tickets(hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
	[Q_TICKET_TRIM] = "DELETE FROM stream_tickets WHERE session_id = ?1 AND id NOT IN "
			  "(SELECT id FROM stream_tickets WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2)",
	[Q_TICKET_SESSION] = "SELECT " SESSION_COLS "JOIN stream_tickets t ON t.session_id = s.id "
			     "WHERE t.hash = ?1 AND t.expires_at > ?2",
	[Q_TICKET_DELETE] = "DELETE FROM stream_tickets WHERE hash = ?1",
	[Q_TICKETS_GC] = "DELETE FROM stream_tickets WHERE expires_at <= ?1",
	[Q_SESSION_RETOKEN] = "UPDATE sessions SET token_hash = ?2 WHERE id = ?1",
	[Q_KEY_GET] = "SELECT fingerprint, reply FROM command_keys "
		      "WHERE session_id = ?1 AND cid = ?2 AND created_at >= ?3",
	[Q_KEY_NEXT_SEQ] = "SELECT coalesce(max(seq), 0) + 1 FROM command_keys WHERE session_id = ?1",
	/* REPLACE: an expired key the pruner has not deleted yet is reused. */
	[Q_KEY_PUT] = "INSERT OR REPLACE INTO command_keys(session_id, cid, seq, fingerprint, reply, created_at) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[Q_KEY_TRIM] = "DELETE FROM command_keys WHERE session_id = ?1 AND seq <= ?2",
	[Q_KEYS_GC] = "DELETE FROM command_keys WHERE created_at < ?1",
	[Q_SESSION_END] = "UPDATE sessions SET ended_id = ?2, ended_at = ?3 WHERE id = ?1",
	[Q_BAN_SET] = "INSERT INTO bans(kind, value, until, reason) VALUES (?1, ?2, ?3, ?4) "
		      "ON CONFLICT(kind, value) DO UPDATE SET until = excluded.until, reason = excluded.reason",
	[Q_BAN_DELETE] = "DELETE FROM bans WHERE kind = ?1 AND value = ?2",
	[Q_BAN_FIND] = "SELECT until FROM bans WHERE kind = ?1 AND value = ?2 AND until > ?3",
	[Q_BANS_LIST] = "SELECT kind, value, until, reason FROM bans WHERE until > ?1 ORDER BY until LIMIT ?2",
	[Q_BANS_GC] = "DELETE FROM bans WHERE until <= ?1",
	[Q_ROOMS_LIST] = "SELECT m.room_id, s.id, s.user_id, s.protocol, s.last_seen, s.stream_owner "
			 "FROM memberships m JOIN sessions s ON s.id = m.session_id ORDER BY m.room_id, m.seq LIMIT ?1",
};

struct store {
	const struct store_ops *ops; /* first: see store_ops.h */
	sqlite3 *db;
	sqlite3_stmt *stmt[Q__COUNT];
	int64_t busy_timeout_us;
	int restarted_at; /* store_maintain: WAL frames after its last restart */
	int64_t busy_start;
	int in_txn;   /* 1 write transaction (holds write_lock), 2 read transaction */
};

/* One writer per process at a time: see the design note. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static sig_err db_error(store *st, const char *what, int rc)
{
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
		log_warn("store: %s: database busy", what);
		return SIG_E_BUSY;
	}
	log_error("store: %s: %s (%d)", what, st->db ? sqlite3_errmsg(st->db) : "?", rc);
	return SIG_E_INTERNAL;
}

/* Back off briefly and keep trying until the busy timeout has passed. */
static int busy_wait(void *ctx, int count)
{
	store *st = ctx;
	int64_t now = util_mono_us();
	if (count == 0)
		st->busy_start = now;
	if (now - st->busy_start >= st->busy_timeout_us)
		return 0;
	struct timespec ts = {0, count < 20 ? 20000 : count < 200 ? 100000 : 1000000};
	nanosleep(&ts, NULL);
	return 1;
}

static sqlite3_stmt *stmt(store *st, enum stmt_id id)
{
	return st->stmt[id];
}

/* Run a statement expected to produce no rows, then reset it. */
static sig_err exec_stmt(store *st, enum stmt_id id, const char *what)
{
	sqlite3_stmt *s = stmt(st, id);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE)
		return db_error(st, what, rc);
	return SIG_OK;
}

static void finish(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static sig_err exec_sql(store *st, const char *sql, const char *what)
{
	char *msg = NULL;
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		log_error("store: %s: %s", what, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return rc == SQLITE_BUSY ? SIG_E_BUSY : SIG_E_INTERNAL;
	}
	return SIG_OK;
}

/* Migrations.
 *
 * Design note. The schema is the SQL files of schema/, in file-name order,
 * compiled into the binary (build/schema.c). PRAGMA user_version in the
 * file's header is the number of them applied: migration N (1-based) sets
 * it to N in the same transaction as its statements, so a file is always
 * at a whole version, even after a crash during a migration (SQLite's DDL
 * is transactional). Opening a file at version V < N runs migrations
 * V+1..N; at N, nothing. A file newer than the binary knows (V > N, made
 * by a later release) is refused: store_open fails and the process does
 * not start, because this binary's statements may not fit it, and it
 * never downgrades a file.
 *
 * Two processes migrating at once (lighttpd starts them together): the
 * version is read inside a BEGIN IMMEDIATE transaction, so the first one
 * to get the write lock migrates and commits; the other waits for the
 * lock (the busy handler, up to --busy-timeout), then reads the new
 * version and has nothing to do. Inside one process the write mutex
 * orders the threads the same way. Processes of the older release that
 * still run against a migrated file keep working only if migrations add
 * and never drop or rename what older statements name; keep them so.
 */
static sig_err migrate(store *st)
{
	/* Statements are prepared after migrating (they name the tables), so
	 * this transaction is run by text. */
	pthread_mutex_lock(&write_lock);
	sig_err e = exec_sql(st, "BEGIN IMMEDIATE", "migration begin");
	if (e != SIG_OK) {
		pthread_mutex_unlock(&write_lock);
		return e;
	}
	sqlite3_stmt *s = NULL;
	int version = 0;
	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version > schema_migration_count) {
		log_error("store: database schema version %d is newer than this binary (%d)", version,
			  schema_migration_count);
		exec_sql(st, "ROLLBACK", "migration rollback");
		pthread_mutex_unlock(&write_lock);
		return SIG_E_INTERNAL;
	}
	for (int v = version; v < schema_migration_count; v++) {
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
		if ((e = exec_sql(st, schema_migrations[v], "migration")) != SIG_OK ||
		    (e = exec_sql(st, pragma, "migration version")) != SIG_OK) {
			exec_sql(st, "ROLLBACK", "migration rollback");
			pthread_mutex_unlock(&write_lock);
			return e;
		}
		log_info("store: schema migrated to version %d", v + 1);
	}
	e = exec_sql(st, "COMMIT", "migration commit");
	pthread_mutex_unlock(&write_lock);
	return e;
}

/* Switching a new database to WAL takes an exclusive lock that SQLite does
 * not wait for through the busy handler: processes started together (as
 * lighttpd starts them) take turns here instead of failing. */
static sig_err set_wal(store *st)
{
	int64_t deadline = util_mono_us() + st->busy_timeout_us;
	for (;;) {
		int rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			return SIG_OK;
		if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
			return db_error(st, "journal_mode", rc);
		if (util_mono_us() >= deadline) {
			log_error("store: journal_mode: database stayed locked");
			return SIG_E_BUSY;
		}
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
	}
}

static sig_err sq_open(const char *path, int64_t busy_timeout_ms, store **out)
{
	*out = NULL;
	store *st = xcalloc(1, sizeof *st);
	st->ops = &store_sqlite_ops;
	st->busy_timeout_us = busy_timeout_ms * 1000;
	/* The database holds session token hashes and messages: owner only. */
	mode_t old = umask(077);
	int rc = sqlite3_open_v2(path, &st->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	umask(old);
	sig_err e;
	if (rc != SQLITE_OK) {
		e = db_error(st, "open", rc);
		sq_close(st);
		return e;
	}
	sqlite3_busy_handler(st->db, busy_wait, st);
	if ((e = set_wal(st)) != SIG_OK ||
	    (e = exec_sql(st,
			  "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; "
			  "PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY; "
			  "PRAGMA journal_size_limit=67108864",
			  "pragmas")) != SIG_OK ||
	    (e = migrate(st)) != SIG_OK) {
		sq_close(st);
		return e;
	}
	for (int i = 0; i < Q__COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			e = db_error(st, stmt_sql[i], rc);
			sq_close(st);
			return e;
		}
	}
	*out = st;
	return SIG_OK;
}

static void sq_close(store *st)
{
	if (st == NULL)
		return;
	if (st->in_txn)
		sq_rollback(st);
	for (int i = 0; i < Q__COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	sqlite3_close(st->db);
	free(st);
}

/* Run BEGIN/COMMIT/ROLLBACK from their prepared statements. */
static int run_txn_stmt(store *st, enum stmt_id id)
{
	sqlite3_stmt *s = st->stmt[id];
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc;
}

static sig_err sq_begin(store *st)
{
	pthread_mutex_lock(&write_lock);
	int rc = run_txn_stmt(st, Q_BEGIN_WRITE);
	if (rc != SQLITE_DONE) {
		pthread_mutex_unlock(&write_lock);
		return db_error(st, "begin", rc);
	}
	st->in_txn = 1;
	return SIG_OK;
}

static sig_err sq_begin_read(store *st)
{
	int rc = run_txn_stmt(st, Q_BEGIN_READ);
	if (rc != SQLITE_DONE)
		return db_error(st, "begin read", rc);
	st->in_txn = 2;
	return SIG_OK;
}

static sig_err sq_commit(store *st)
{
	int64_t t0 = util_mono_us();
	int rc = run_txn_stmt(st, Q_COMMIT);
	if (st->in_txn == 1)
		metrics_observe(MH_COMMIT, util_mono_us() - t0); /* writes only: a read's end costs nothing */
	sig_err e = SIG_OK;
	if (rc != SQLITE_DONE) {
		e = db_error(st, "commit", rc);
		if (!sqlite3_get_autocommit(st->db))
			run_txn_stmt(st, Q_ROLLBACK);
	}
	if (st->in_txn == 1)
		pthread_mutex_unlock(&write_lock);
	st->in_txn = 0;
	return e;
}

static sig_err sq_savepoint(store *st)
{
	int rc = run_txn_stmt(st, Q_SAVEPOINT);
	return rc == SQLITE_DONE ? SIG_OK : db_error(st, "savepoint", rc);
}

static sig_err sq_savepoint_end(store *st, int keep)
{
	int rc = SQLITE_DONE;
	if (!keep)
		rc = run_txn_stmt(st, Q_ROLLBACK_TO);
	int rc2 = run_txn_stmt(st, Q_RELEASE);
	if (rc != SQLITE_DONE)
		return db_error(st, "rollback to savepoint", rc);
	return rc2 == SQLITE_DONE ? SIG_OK : db_error(st, "release savepoint", rc2);
}

static void sq_rollback(store *st)
{
	if (!st->in_txn)
		return;
	if (!sqlite3_get_autocommit(st->db))
		run_txn_stmt(st, Q_ROLLBACK);
	if (st->in_txn == 1)
		pthread_mutex_unlock(&write_lock);
	st->in_txn = 0;
}

static void copy_text(char *dst, sqlite3_stmt *s, int col)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	size_t n = t ? (size_t)sqlite3_column_bytes(s, col) : 0;
	if (n > STORE_ID_MAX)
		n = STORE_ID_MAX;
	if (n)
		memcpy(dst, t, n);
	dst[n] = '\0';
}

static void read_session(sqlite3_stmt *s, store_session *out)
{
	out->id = sqlite3_column_int64(s, 0);
	copy_text(out->user_id, s, 1);
	copy_text(out->protocol, s, 2);
	copy_text(out->room_id, s, 3);
	out->last_seen = sqlite3_column_int64(s, 4);
	out->stream_owner = sqlite3_column_int64(s, 5);
	out->stream_gen = sqlite3_column_int64(s, 6);
	out->ended_id = sqlite3_column_int64(s, 7);
}

static sig_err session_query(store *st, sqlite3_stmt *s, store_session *out, const char *what)
{
	memset(out, 0, sizeof *out);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		read_session(s, out);
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, what, rc);
	return SIG_OK;
}

static sig_err sq_session_by_token(store *st, const uint8_t hash[STORE_HASH_LEN], store_session *out)
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_BY_TOKEN);
	sqlite3_bind_blob(s, 1, hash, STORE_HASH_LEN, SQLITE_STATIC);
	return session_query(st, s, out, "session by token");
}

static sig_err sq_session_by_user(store *st, const char *user_id, store_session *out)
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_BY_USER);
	sqlite3_bind_text(s, 1, user_id, -1, SQLITE_STATIC);
	return session_query(st, s, out, "session by user");
}

static sig_err sq_session_create(store *st, const char *user_id, const char *protocol,
			     const uint8_t hash[STORE_HASH_LEN], int64_t now, int64_t *id_out)
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_CREATE);
	sqlite3_bind_text(s, 1, user_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, protocol, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 3, hash, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, now);
	int rc = sqlite3_step(s);
	finish(s);
	if (rc == SQLITE_CONSTRAINT)
		return SIG_E_USER_EXISTS;
	if (rc != SQLITE_DONE)
		return db_error(st, "session create", rc);
	*id_out = sqlite3_last_insert_rowid(st->db);
	return SIG_OK;
}

static sig_err sq_session_touch(store *st, int64_t sid, int64_t now)
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_TOUCH);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, now);
	return exec_stmt(st, Q_SESSION_TOUCH, "session touch");
}

static sig_err sq_session_delete(store *st, int64_t sid)
{
	sqlite3_bind_int64(stmt(st, Q_SESSION_DELETE), 1, sid);
	return exec_stmt(st, Q_SESSION_DELETE, "session delete");
}

static sig_err sq_sessions_stale(store *st, int64_t before, int64_t ended_before, store_session *out, int max,
				 int *n)
{
	sqlite3_stmt *s = stmt(st, Q_SESSIONS_STALE);
	sqlite3_bind_int64(s, 1, before);
	sqlite3_bind_int(s, 2, max);
	sqlite3_bind_int64(s, 3, ended_before);
	int rc;
	*n = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < max)
		read_session(s, &out[(*n)++]);
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "stale sessions", rc);
	return SIG_OK;
}

static sig_err sq_member_set(store *st, int64_t sid, const char *room, int64_t now)
{
	sig_err e;
	sqlite3_bind_int64(stmt(st, Q_MEMBER_DELETE), 1, sid);
	if ((e = exec_stmt(st, Q_MEMBER_DELETE, "leave room")) != SIG_OK || room == NULL)
		return e;
	sqlite3_stmt *s = stmt(st, Q_MEMBER_INSERT);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_text(s, 2, room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return exec_stmt(st, Q_MEMBER_INSERT, "join room");
}

static sig_err sq_room_members(store *st, const char *room, store_member *out, int max, int *n)
{
	sqlite3_stmt *s = stmt(st, Q_ROOM_MEMBERS);
	sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
	int rc;
	*n = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n < max) {
			store_member *m = &out[*n];
			m->session_id = sqlite3_column_int64(s, 0);
			copy_text(m->user_id, s, 1);
			m->stream_owner = sqlite3_column_int64(s, 2);
		}
		(*n)++;
	}
	finish(s);
	if (rc != SQLITE_DONE)
		return db_error(st, "room members", rc);
	return SIG_OK;
}

static sig_err query_int(store *st, sqlite3_stmt *s, int64_t *out, const char *what)
{
	int rc = sqlite3_step(s);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, what, rc);
	return SIG_OK;
}

static sig_err sq_event_push(store *st, int64_t sid, const char *body, size_t len, int64_t cap,
			 int64_t now, int64_t *id_out, int64_t *prev_out)
{
	sig_err e;
	if (cap > 0 || prev_out) {
		/* The mailbox's newest id and the last one sent, in one look-up.
		 * Counting the undelivered events walks each of them, so count only
		 * when there could be cap of them: ids only grow, so no more than
		 * (newest - last sent) are waiting. */
		sqlite3_stmt *h = stmt(st, Q_MAILBOX_HEAD);
		sqlite3_bind_int64(h, 1, sid);
		int rc = sqlite3_step(h);
		int64_t newest = rc == SQLITE_ROW ? sqlite3_column_int64(h, 0) : 0;
		int64_t pending = rc == SQLITE_ROW ? newest - sqlite3_column_int64(h, 1) : 0;
		finish(h);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return db_error(st, "mailbox head", rc);
		if (cap > 0 && pending >= cap) {
			sqlite3_bind_int64(stmt(st, Q_MAILBOX_PENDING), 1, sid);
			if ((e = query_int(st, stmt(st, Q_MAILBOX_PENDING), &pending, "mailbox count")) != SIG_OK)
				return e;
			if (pending >= cap)
				return SIG_E_MAILBOX_FULL;
		}
		if (prev_out)
			*prev_out = newest;
	}
	sqlite3_stmt *s = stmt(st, Q_EVENT_INSERT);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_text(s, 2, body, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	if ((e = exec_stmt(st, Q_EVENT_INSERT, "event insert")) != SIG_OK)
		return e;
	if (id_out)
		*id_out = sqlite3_last_insert_rowid(st->db);
	return SIG_OK;
}

static sig_err sq_events_ack(store *st, int64_t sid, int64_t upto)
{
	sqlite3_stmt *s = stmt(st, Q_EVENTS_ACK);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, upto);
	return exec_stmt(st, Q_EVENTS_ACK, "ack");
}

static sig_err sq_stream_claim(store *st, int64_t sid, int64_t owner, int64_t now, int64_t *gen_out,
			   int64_t *prev_owner)
{
	sqlite3_stmt *s = stmt(st, Q_STREAM_CLAIM_READ);
	sqlite3_bind_int64(s, 1, sid);
	int rc = sqlite3_step(s);
	int64_t prev = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	int64_t gen = rc == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
	finish(s);
	if (rc == SQLITE_DONE)
		return SIG_E_UNAUTHORIZED;
	if (rc != SQLITE_ROW)
		return db_error(st, "stream claim", rc);
	s = stmt(st, Q_STREAM_CLAIM);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, owner);
	sqlite3_bind_int64(s, 3, gen + 1);
	sqlite3_bind_int64(s, 4, now);
	sig_err e = exec_stmt(st, Q_STREAM_CLAIM, "stream claim");
	if (e == SIG_OK) {
		*gen_out = gen + 1;
		*prev_owner = prev;
	}
	return e;
}

static sig_err sq_stream_release(store *st, int64_t sid, int64_t gen)
{
	sqlite3_stmt *s = stmt(st, Q_STREAM_RELEASE);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, gen);
	return exec_stmt(st, Q_STREAM_RELEASE, "stream release");
}

static sig_err sq_stream_pull(store *st, int64_t sid, int64_t gen, int64_t after, int limit,
			  store_event_fn fn, void *ctx, int64_t *lost_upto)
{
	sqlite3_stmt *s = stmt(st, Q_STREAM_CHECK);
	sqlite3_bind_int64(s, 1, sid);
	int rc = sqlite3_step(s);
	int64_t cur_gen = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	*lost_upto = rc == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
	int64_t ended = rc == SQLITE_ROW ? sqlite3_column_int64(s, 2) : 0;
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "stream check", rc);
	if (cur_gen != gen || (ended && after >= ended))
		return SIG_E_UNAUTHORIZED;
	int64_t last = after;
	s = stmt(st, Q_STREAM_EVENTS);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *body = (const char *)sqlite3_column_text(s, 1);
		size_t len = (size_t)sqlite3_column_bytes(s, 1);
		last = sqlite3_column_int64(s, 0);
		if (fn(ctx, last, body ? body : "{}", body ? len : 2))
			break;
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "stream events", rc);
	/* An ended session's last event is out: the stream ends after it. */
	return ended && last >= ended ? SIG_E_UNAUTHORIZED : SIG_OK;
}

static sig_err sq_mark_sent(store *st, int64_t sid, int64_t upto, int64_t window)
{
	sig_err e;
	sqlite3_stmt *s = stmt(st, Q_MARK_SENT);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, upto);
	if ((e = exec_stmt(st, Q_MARK_SENT, "mark sent")) != SIG_OK)
		return e;
	/* Keep at most `window` delivered-but-unacknowledged events for resume. */
	int64_t cut = 0;
	s = stmt(st, Q_TRIM_POINT);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, upto);
	sqlite3_bind_int64(s, 3, window);
	if ((e = query_int(st, s, &cut, "trim point")) != SIG_OK || cut == 0)
		return e;
	s = stmt(st, Q_TRIM);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, cut);
	if ((e = exec_stmt(st, Q_TRIM, "trim")) != SIG_OK)
		return e;
	s = stmt(st, Q_LOST_MARK);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, cut);
	return exec_stmt(st, Q_LOST_MARK, "lost mark");
}

static sig_err sq_streams_refresh(store *st, int64_t owner, int64_t now)
{
	sqlite3_stmt *s = stmt(st, Q_STREAMS_REFRESH);
	sqlite3_bind_int64(s, 1, owner);
	sqlite3_bind_int64(s, 2, now);
	return exec_stmt(st, Q_STREAMS_REFRESH, "streams refresh");
}

static sig_err sq_recent_recipients(store *st, int64_t owner, int64_t after, int64_t *sids, int max,
				int *n, int64_t *max_id)
{
	int64_t newest = 0;
	sig_err e = query_int(st, stmt(st, Q_MAX_EVENT), &newest, "max event");
	*n = 0;
	*max_id = newest; /* nothing after `after`: continue from the newest id */
	if (e != SIG_OK || newest <= after)
		return e;
	sqlite3_stmt *s = stmt(st, Q_RECENT);
	sqlite3_bind_int64(s, 1, owner);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int64(s, 3, newest);
	sqlite3_bind_int(s, 4, max);
	int rc;
	int64_t last = after;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < max) {
		last = sqlite3_column_int64(s, 0);
		sids[(*n)++] = sqlite3_column_int64(s, 1);
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "recent recipients", rc);
	/* A full page: continue after its last event next time; otherwise
	 * everything up to the newest event has been looked at. */
	*max_id = *n == max ? last : newest;
	return SIG_OK;
}

static sig_err sq_stats(store *st, struct store_stats *out)
{
	sqlite3_stmt *s = stmt(st, Q_STATS);
	int rc = sqlite3_step(s);
	memset(out, 0, sizeof *out);
	if (rc == SQLITE_ROW) {
		out->sessions = sqlite3_column_int64(s, 0);
		out->rooms = sqlite3_column_int64(s, 1);
		out->memberships = sqlite3_column_int64(s, 2);
		out->events = sqlite3_column_int64(s, 3);
		out->streams = sqlite3_column_int64(s, 4);
	}
	finish(s);
	if (rc != SQLITE_ROW)
		return db_error(st, "stats", rc);
	return SIG_OK;
}

static sig_err sq_session_count(store *st, int64_t *n)
{
	return query_int(st, stmt(st, Q_SESSION_COUNT), n, "session count");
}

static sig_err sq_room_count(store *st, int64_t *n)
{
	return query_int(st, stmt(st, Q_ROOM_COUNT), n, "room count");
}

static sig_err sq_rate_take(store *st, const char *key, double rate, double burst, int64_t now,
			int *wait_s)
{
	sqlite3_stmt *s = stmt(st, Q_RATE_READ);
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	double tokens = burst;
	if (rc == SQLITE_ROW) {
		int64_t updated = sqlite3_column_int64(s, 1);
		tokens = sqlite3_column_double(s, 0) + (double)(now - updated) / 1000.0 * rate;
		if (tokens > burst)
			tokens = burst;
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "rate read", rc);
	*wait_s = 0;
	if (tokens >= 1.0)
		tokens -= 1.0;
	else
		*wait_s = (int)((1.0 - tokens) / rate) + 1;
	s = stmt(st, Q_RATE_WRITE);
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_double(s, 2, tokens);
	sqlite3_bind_int64(s, 3, now);
	return exec_stmt(st, Q_RATE_WRITE, "rate write");
}

static sig_err sq_rate_gc(store *st, int64_t before)
{
	sqlite3_bind_int64(stmt(st, Q_RATE_GC), 1, before);
	return exec_stmt(st, Q_RATE_GC, "rate gc");
}

static sig_err sq_ticket_create(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN], int64_t expires,
			    int keep)
{
	sqlite3_stmt *s = stmt(st, Q_TICKET_CREATE);
	sqlite3_bind_blob(s, 1, hash, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, sid);
	sqlite3_bind_int64(s, 3, expires);
	sig_err e = exec_stmt(st, Q_TICKET_CREATE, "ticket create");
	if (e != SIG_OK)
		return e;
	s = stmt(st, Q_TICKET_TRIM);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int(s, 2, keep);
	return exec_stmt(st, Q_TICKET_TRIM, "ticket trim");
}

static sig_err sq_ticket_take(store *st, const uint8_t hash[STORE_HASH_LEN], int64_t now, store_session *out)
{
	sqlite3_stmt *s = stmt(st, Q_TICKET_SESSION);
	sqlite3_bind_blob(s, 1, hash, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, now);
	sig_err e = session_query(st, s, out, "ticket session");
	if (e != SIG_OK)
		return e;
	/* Used or expired, it never opens anything again. */
	sqlite3_bind_blob(stmt(st, Q_TICKET_DELETE), 1, hash, STORE_HASH_LEN, SQLITE_STATIC);
	return exec_stmt(st, Q_TICKET_DELETE, "ticket delete");
}

static sig_err sq_tickets_gc(store *st, int64_t now)
{
	sqlite3_bind_int64(stmt(st, Q_TICKETS_GC), 1, now);
	return exec_stmt(st, Q_TICKETS_GC, "tickets gc");
}

static sig_err sq_session_retoken(store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN])
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_RETOKEN);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_blob(s, 2, hash, STORE_HASH_LEN, SQLITE_STATIC);
	return exec_stmt(st, Q_SESSION_RETOKEN, "session retoken");
}

static sig_err sq_key_get(store *st, int64_t sid, const char *cid, int64_t since, struct store_key *out)
{
	memset(out, 0, sizeof *out);
	sqlite3_stmt *s = stmt(st, Q_KEY_GET);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_text(s, 2, cid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, since);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == STORE_HASH_LEN) {
		const unsigned char *reply = sqlite3_column_text(s, 1);
		out->len = (size_t)sqlite3_column_bytes(s, 1);
		memcpy(out->fingerprint, sqlite3_column_blob(s, 0), STORE_HASH_LEN);
		out->reply = xmalloc(out->len + 1);
		memcpy(out->reply, reply ? (const char *)reply : "", out->len);
		out->reply[out->len] = '\0';
		out->found = 1;
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_key_free(out);
		return db_error(st, "key get", rc);
	}
	return SIG_OK;
}

static sig_err sq_key_put(store *st, int64_t sid, const char *cid, const uint8_t fingerprint[STORE_HASH_LEN],
		      const char *reply, size_t len, int64_t now, int64_t keep)
{
	sqlite3_stmt *s = stmt(st, Q_KEY_NEXT_SEQ);
	sqlite3_bind_int64(s, 1, sid);
	int rc = sqlite3_step(s);
	int64_t seq = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	finish(s);
	if (rc != SQLITE_ROW)
		return db_error(st, "key seq", rc);
	s = stmt(st, Q_KEY_PUT);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_text(s, 2, cid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, seq);
	sqlite3_bind_blob(s, 4, fingerprint, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, reply, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, now);
	sig_err e = exec_stmt(st, Q_KEY_PUT, "key put");
	if (e != SIG_OK || seq <= keep)
		return e;
	s = stmt(st, Q_KEY_TRIM);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, seq - keep);
	return exec_stmt(st, Q_KEY_TRIM, "key trim");
}

static sig_err sq_keys_gc(store *st, int64_t before)
{
	sqlite3_bind_int64(stmt(st, Q_KEYS_GC), 1, before);
	return exec_stmt(st, Q_KEYS_GC, "keys gc");
}

static sig_err sq_session_end(store *st, int64_t sid, int64_t last_event, int64_t now)
{
	sqlite3_stmt *s = stmt(st, Q_SESSION_END);
	sqlite3_bind_int64(s, 1, sid);
	sqlite3_bind_int64(s, 2, last_event);
	sqlite3_bind_int64(s, 3, now);
	return exec_stmt(st, Q_SESSION_END, "session end");
}

static sig_err sq_ban_set(store *st, const char *kind, const char *value, int64_t until, const char *reason)
{
	sqlite3_stmt *s = stmt(st, Q_BAN_SET);
	sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, until);
	sqlite3_bind_text(s, 4, reason ? reason : "", -1, SQLITE_STATIC);
	return exec_stmt(st, Q_BAN_SET, "ban set");
}

static sig_err sq_ban_delete(store *st, const char *kind, const char *value, int *removed)
{
	sqlite3_stmt *s = stmt(st, Q_BAN_DELETE);
	sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	sig_err e = exec_stmt(st, Q_BAN_DELETE, "ban delete");
	*removed = e == SIG_OK ? sqlite3_changes(st->db) : 0;
	return e;
}

static sig_err sq_ban_find(store *st, const char *kind, const char *value, int64_t now, int64_t *until)
{
	sqlite3_stmt *s = stmt(st, Q_BAN_FIND);
	sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return query_int(st, s, until, "ban find");
}

static sig_err sq_bans_list(store *st, int64_t now, int max, store_ban_fn fn, void *ctx)
{
	sqlite3_stmt *s = stmt(st, Q_BANS_LIST);
	sqlite3_bind_int64(s, 1, now);
	sqlite3_bind_int(s, 2, max);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *reason = (const char *)sqlite3_column_text(s, 3);
		if (fn(ctx, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
		       sqlite3_column_int64(s, 2), reason ? reason : ""))
			break;
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "bans list", rc);
	return SIG_OK;
}

static sig_err sq_bans_gc(store *st, int64_t now)
{
	sqlite3_bind_int64(stmt(st, Q_BANS_GC), 1, now);
	return exec_stmt(st, Q_BANS_GC, "bans gc");
}

static sig_err sq_rooms_list(store *st, int max, store_membership_fn fn, void *ctx)
{
	sqlite3_stmt *s = stmt(st, Q_ROOMS_LIST);
	sqlite3_bind_int(s, 1, max);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char room[STORE_ID_MAX + 1];
		store_session m = {0};
		copy_text(room, s, 0);
		m.id = sqlite3_column_int64(s, 1);
		copy_text(m.user_id, s, 2);
		copy_text(m.protocol, s, 3);
		m.last_seen = sqlite3_column_int64(s, 4);
		m.stream_owner = sqlite3_column_int64(s, 5);
		snprintf(m.room_id, sizeof m.room_id, "%s", room);
		if (fn(ctx, &m))
			break;
	}
	finish(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_error(st, "rooms list", rc);
	return SIG_OK;
}

/* store_maintain: a PASSIVE checkpoint, which never waits for readers or
 * writers, and once the log holds --wal-restart pages (cfg.wal_restart) a
 * RESTART of it.
 *
 * The WAL starts over from its beginning only when a writer finds every
 * frame checkpointed and no reader in it, which steady traffic never
 * allows: PASSIVE checkpoints alone let the file grow without bound (200 MB
 * in 5 s of the latency benchmark), every commit then appending to fresh
 * blocks that the file system must allocate and zero (a fifth of the
 * responder's CPU time). So once the log is restart_frames long, a RESTART
 * checkpoint makes the next writer start over; journal_size_limit then
 * trims a log that a burst made longer. */
#define RESTART_WAIT_US 200000  /* longest wait for other processes' writers and readers */

static sig_err sq_maintain(store *st)
{
	int64_t restart_frames = cfg.wal_restart;
	int log_frames = 0, done = 0;
	int rc = sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		return db_error(st, "checkpoint", rc);
	/* restarted_at: the log as the last restart left it, for as long as no
	 * writer has come since (then there is nothing to restart). */
	if (rc == SQLITE_BUSY || log_frames < restart_frames || log_frames == st->restarted_at)
		return SIG_OK;
	/* PASSIVE copied nearly everything; what RESTART adds is the last
	 * frames, a sync and waiting for readers to leave the log, during which
	 * writers wait. This process's writers wait on the mutex, not in the
	 * busy handler; other processes' back off in it. */
	int64_t t0 = util_mono_us(), patience = st->busy_timeout_us;
	st->busy_timeout_us = RESTART_WAIT_US; /* busy: try again next time */
	pthread_mutex_lock(&write_lock);
	rc = sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_RESTART, &log_frames, &done);
	pthread_mutex_unlock(&write_lock);
	st->busy_timeout_us = patience;
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		return db_error(st, "checkpoint restart", rc);
	if (rc == SQLITE_OK)
		st->restarted_at = log_frames;
	log_debug("store: WAL of %d frames checkpointed and restarted in %lld us%s", log_frames,
		  (long long)(util_mono_us() - t0), rc == SQLITE_BUSY ? " (busy: next time)" : "");
	return SIG_OK;
}

/* A file has no connection to wait for. */
static void sq_connect_wait(store *st, int64_t max_ms)
{
	(void)st;
	(void)max_ms;
}

/* Processes on one SQLite file share a machine: bell.c's datagrams wake
 * them, so there is nothing to ask of the database. */
static sig_err sq_notify(store *st, const int64_t *owners, const int64_t *sessions, int n)
{
	(void)st;
	(void)owners;
	(void)sessions;
	(void)n;
	return SIG_OK;
}

const struct store_ops store_sqlite_ops = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.rollback = sq_rollback,
	.connect_wait = sq_connect_wait,
	STORE_CALLS(STORE_OP_ENTRY)
};
