/*
 * store_ops.h - the calls of store.h as a table of function pointers, one
 * table per engine (store_sqlite.c, store_pg.c), and the one field every
 * engine's handle starts with. store.c picks the table in store_open by
 * the `where` string and dispatches every later call through the handle,
 * so the core and the transports never learn which engine runs.
 *
 * A new call of store.h goes into STORE_CALLS (or, if it returns void or
 * takes no handle, next to open/close here and in store.c) and into every
 * engine: a table with a missing entry fails to build, never at run time.
 * It must never: be included above the store layer.
 */
#ifndef SIG_STORE_OPS_H
#define SIG_STORE_OPS_H

#include "store/store.h"

/* X(name, parameters, arguments): every call returning sig_err whose
 * first parameter is the handle. */
#define STORE_CALLS(X) \
	X(begin, (store *st), (st)) \
	X(begin_read, (store *st), (st)) \
	X(commit, (store *st), (st)) \
	X(savepoint, (store *st), (st)) \
	X(savepoint_end, (store *st, int keep), (st, keep)) \
	X(session_by_token, (store *st, const uint8_t hash[STORE_HASH_LEN], store_session *out), (st, hash, out)) \
	X(session_by_user, (store *st, const char *user_id, store_session *out), (st, user_id, out)) \
	X(session_create, (store *st, const char *user_id, const char *protocol, const uint8_t hash[STORE_HASH_LEN], \
			   int64_t now, int64_t *id_out), (st, user_id, protocol, hash, now, id_out)) \
	X(session_touch, (store *st, int64_t sid, int64_t now), (st, sid, now)) \
	X(session_delete, (store *st, int64_t sid), (st, sid)) \
	X(sessions_stale, (store *st, int64_t before, int64_t ended_before, store_session *out, int max, int *n), \
	  (st, before, ended_before, out, max, n)) \
	X(session_end, (store *st, int64_t sid, int64_t last_event, int64_t now), (st, sid, last_event, now)) \
	X(member_set, (store *st, int64_t sid, const char *room, int64_t now), (st, sid, room, now)) \
	X(room_members, (store *st, const char *room, store_member *out, int max, int *n), (st, room, out, max, n)) \
	X(event_push, (store *st, int64_t sid, const char *body, size_t len, int64_t cap, int64_t now, int64_t *id_out, \
		       int64_t *prev_out), (st, sid, body, len, cap, now, id_out, prev_out)) \
	X(events_ack, (store *st, int64_t sid, int64_t upto), (st, sid, upto)) \
	X(stream_claim, (store *st, int64_t sid, int64_t owner, int64_t now, int64_t *gen_out, int64_t *prev_owner), \
	  (st, sid, owner, now, gen_out, prev_owner)) \
	X(stream_release, (store *st, int64_t sid, int64_t gen), (st, sid, gen)) \
	X(stream_pull, (store *st, int64_t sid, int64_t gen, int64_t after, int limit, store_event_fn fn, void *ctx, \
			int64_t *lost_upto), (st, sid, gen, after, limit, fn, ctx, lost_upto)) \
	X(mark_sent, (store *st, int64_t sid, int64_t upto, int64_t window), (st, sid, upto, window)) \
	X(streams_refresh, (store *st, int64_t owner, int64_t now), (st, owner, now)) \
	X(recent_recipients, (store *st, int64_t owner, int64_t after, int64_t *sids, int max, int *n, int64_t *max_id), \
	  (st, owner, after, sids, max, n, max_id)) \
	X(stats, (store *st, struct store_stats *out), (st, out)) \
	X(session_count, (store *st, int64_t *n), (st, n)) \
	X(room_count, (store *st, int64_t *n), (st, n)) \
	X(rate_take, (store *st, const char *key, double rate, double burst, int64_t now, int *wait_s), \
	  (st, key, rate, burst, now, wait_s)) \
	X(rate_gc, (store *st, int64_t before), (st, before)) \
	X(ticket_create, (store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN], int64_t expires, int keep), \
	  (st, sid, hash, expires, keep)) \
	X(ticket_take, (store *st, const uint8_t hash[STORE_HASH_LEN], int64_t now, store_session *out), (st, hash, now, out)) \
	X(tickets_gc, (store *st, int64_t now), (st, now)) \
	X(session_retoken, (store *st, int64_t sid, const uint8_t hash[STORE_HASH_LEN]), (st, sid, hash)) \
	X(key_get, (store *st, int64_t sid, const char *cid, int64_t since, struct store_key *out), (st, sid, cid, since, out)) \
	X(key_put, (store *st, int64_t sid, const char *cid, const uint8_t fingerprint[STORE_HASH_LEN], const char *reply, \
		    size_t len, int64_t now, int64_t keep), (st, sid, cid, fingerprint, reply, len, now, keep)) \
	X(keys_gc, (store *st, int64_t before), (st, before)) \
	X(ban_set, (store *st, const char *kind, const char *value, int64_t until, const char *reason), \
	  (st, kind, value, until, reason)) \
	X(ban_delete, (store *st, const char *kind, const char *value, int *removed), (st, kind, value, removed)) \
	X(ban_find, (store *st, const char *kind, const char *value, int64_t now, int64_t *until), (st, kind, value, now, until)) \
	X(bans_list, (store *st, int64_t now, int max, store_ban_fn fn, void *ctx), (st, now, max, fn, ctx)) \
	X(bans_gc, (store *st, int64_t now), (st, now)) \
	X(rooms_list, (store *st, int max, store_membership_fn fn, void *ctx), (st, max, fn, ctx)) \
	X(maintain, (store *st), (st)) \
	X(notify, (store *st, const int64_t *owners, const int64_t *sessions, int n), (st, owners, sessions, n))

#define STORE_OP_FIELD(name, params, args) sig_err(*name) params;
struct store_ops {
	const char *name; /* for logs: "sqlite", "postgresql" */
	sig_err (*open)(const char *where, int64_t busy_timeout_ms, store **out);
	void (*close)(store *st);
	void (*rollback)(store *st);
	void (*connect_wait)(store *st, int64_t max_ms);
	STORE_CALLS(STORE_OP_FIELD)
};
#undef STORE_OP_FIELD

/* An engine's functions for its table: `static sig_err PREFIX_name(...)`. */
#define STORE_OP_DECL(name, params, args) static sig_err STORE_ENGINE(name) params;
#define STORE_OP_ENTRY(name, params, args) .name = STORE_ENGINE(name),

/* Every engine's struct store begins with this. */
struct store_head {
	const struct store_ops *ops;
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* The cross-machine listener of an engine that has one (store.h). */
struct store_listener_ops {
	store_listener *(*create)(const char *where, int64_t owner);
	void (*destroy)(store_listener *ls);
	int (*fd)(const store_listener *ls, unsigned *want);
	int (*step)(store_listener *ls, int ready, int64_t now_us, store_wake_fn *fn, void *ctx);
};
/* Every engine's struct store_listener begins with this. */
struct store_listener_head {
	const struct store_listener_ops *ops;
};
extern const struct store_listener_ops store_pg_listener_ops;

#endif
