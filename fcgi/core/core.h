/*
 * core.h - the command core: login, join, leave, signal, ping, room-users,
 * logout, stream attach/delivery and pruning, as rules over the store.
 *
 * The core knows nothing of HTTP or sockets: it takes a token and a JSON
 * body and gives back its outcome (a sig_err, which each transport maps to
 * its own terms through error.c), a JSON reply and the list of streams that
 * must be woken (the caller rings their bells after the call returns, since
 * the state they will read is committed by then). Every command is one
 * store transaction: it happens whole or not at all.
 */
#ifndef SIG_CORE_H
#define SIG_CORE_H

#include <json-c/json.h>
#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

#define CORE_TOKEN_LEN 64 /* hex characters: 256 bits from the kernel */
#define CORE_TOKEN_HASH_LEN STORE_HASH_LEN /* what core_token_hash makes */
#define CORE_BATCH_MAX 64

/* A stream that must re-read its mailbox: held by process `owner`. A wake
 * for an event the command queued also carries that event (its id, the id
 * of the recipient's newest event before it, and its text), so the process
 * holding the stream may write it without reading the store when the stream
 * has everything up to prev_id; event_id is 0 otherwise. */
struct core_wake {
	int64_t owner;
	int64_t session;
	int64_t event_id, prev_id;
	char *body; /* owned; the event without its id, as the store keeps it */
	size_t len;
};

typedef struct core_wakes {
	struct core_wake *v;
	int n, cap;
} core_wakes;

typedef struct core_result {
	sig_err err;           /* outcome of the whole request (SIG_OK for a batch) */
	json_object *reply;    /* owned; the response body */
	/* A batch (reply is an array): each command's outcome, in order. */
	int items;
	sig_err item_err[CORE_BATCH_MAX];
	const char *item_type[CORE_BATCH_MAX]; /* static command names, NULL: none */
	int queued;            /* events the request's successful commands queued */
	core_wakes wakes;
	/* Set when the request logged in (cookie to set) or out (to clear). */
	char token[CORE_TOKEN_LEN + 1];
	int logged_out;
	char user_id[STORE_ID_MAX + 1]; /* for the log line */
	const char *first_type;         /* for the log line */
	int retry_after;                /* seconds, with 429 rate-limited */
} core_result;

typedef struct core core;

/* Makes a core (with its own store connection) for one thread, or NULL. */
typedef core *(*core_factory)(void);

/* Zero in any of the optional limits means "no limit". */
struct core_limits {
	int64_t room_limit;
	int64_t mailbox_limit;
	int64_t replay_window;
	int64_t heartbeat_timeout_ms;
	/* optional */
	const unsigned char *auth_secret; /* logins must be signed with it */
	size_t auth_secret_len;
	int64_t max_sessions;
	int64_t max_rooms;
	int64_t max_signal;   /* bytes of one signal event */
	double rate_session;  /* commands per second per session, burst 2x */
	double rate_login;    /* logins per second per client address, shared */
	double login_burst;   /* logins at once per client address (0: max(rate_login, 1)) */
	int64_t ticket_ttl_ms; /* how long a stream ticket may wait to be used */
	int64_t key_window_ms; /* how long a command's "cid" is remembered */
	int64_t keys_kept;     /* and how many per session, at most */
	/* Tests only: exit the process right after this many commits, before
	 * any answer leaves (a crash between commit and reply); 0 never. */
	int64_t exit_after_commits;
	/* ICE servers for clients (optional): TURN credentials in coturn's REST
	 * scheme under turn_secret; the URI lists are comma-separated. */
	const unsigned char *turn_secret;
	size_t turn_secret_len;
	const char *turn_uris;
	const char *stun_uris;
	int64_t turn_ttl_s;
};

/* A core over an open store (the core does not own it). Free with core_free. */
core *core_new(store *st, const struct core_limits *limits);
void core_free(core *c); /* NULL is fine */

void core_result_init(core_result *r);
void core_result_free(core_result *r); /* safe on an initialised result */
void core_wakes_add(core_wakes *w, int64_t owner, int64_t session);
void core_wakes_free(core_wakes *w);

/* Run a POST body: one command object or an array of them. token may be
 * NULL (login needs none). Always fills r (err + reply). */
void core_exec_body(core *c, const char *token, const char *body, size_t len, core_result *r);
/* The same, for a client at address remote (for per-address limits; NULL
 * when unknown). */
void core_exec_request(core *c, const char *token, const char *remote, const char *body, size_t len,
		       core_result *r);
/* The same for a body already parsed by jv_parse (req stays the caller's),
 * from a client that may know its token's hash (core_token_hash(token);
 * NULL: hashed here). A WebSocket parses each message once, to spot its
 * auth, and hashes its token once, when it attaches. */
void core_exec_json(core *c, const char *token, const uint8_t *token_hash, const char *remote, json_object *req,
		    core_result *r);

/* Group commit: between core_group_begin and core_group_end, every
 * core_exec_request runs in a savepoint of one write transaction (a failed
 * command still changes nothing). Nothing is durable, and no reply may be
 * sent or bell rung, until core_group_end returns SIG_OK; on failure the
 * whole group is undone. */
sig_err core_group_begin(core *c);
sig_err core_group_end(core *c);

/* Build the standard error reply for e (type may be NULL). */
json_object *core_error_reply(const char *type, sig_err e);
/* The same, saying which field was at fault and why (jv_check's *why):
 * "field" and a precise "msg" in place of the generic one. why NULL, or
 * with neither field nor msg: core_error_reply. */
struct jv_fault;
json_object *core_error_reply_why(const char *type, sig_err e, const struct jv_fault *why);

/* ---- streams (SSE and long-poll), for the transports ---- */
typedef struct core_stream {
	int64_t session;
	int64_t gen;
	char user_id[STORE_ID_MAX + 1];
} core_stream;

/* Authenticate, acknowledge events up to ack (0: none), and make process
 * `owner` hold the session's single stream. The previous holder, if any, is
 * added to w. On error nothing changed. */
sig_err core_stream_open(core *c, const char *token, int64_t ack, int64_t owner, core_stream *out,
			 core_wakes *w);

/* The same, authenticated by a one-use stream ticket (the "ticket"
 * command) instead of the token: the ticket is used up whether or not the
 * stream opens. SIG_E_UNAUTHORIZED for an unknown, used or expired one. */
sig_err core_stream_open_ticket(core *c, const char *ticket, int64_t ack, int64_t owner, core_stream *out,
				core_wakes *w);

/* Authenticate only, in a read transaction: the session's stream as the
 * store has it now (its current generation). *ours: process `owner` holds
 * it. A long-poll re-opened where its last one was answered takes the
 * claim over this way (held_reclaim) instead of writing a new one. */
sig_err core_stream_lookup(core *c, const char *token, int64_t owner, core_stream *out, int *ours);

/* Delivery runs many pulls in one read transaction (no write lock). */
sig_err core_delivery_begin(core *c);
void core_delivery_end(core *c, int commit);
/* Recording what was sent (core_stream_sent) needs a write transaction:
 * the loop batches those marks (marks.c) and flushes them together. End it with
 * core_delivery_end. */
sig_err core_marks_begin(core *c);
/* Pull events after `after` (see store_stream_pull). SIG_E_UNAUTHORIZED:
 * the stream must close (session gone or replaced). */
sig_err core_stream_pull(core *c, const core_stream *s, int64_t after, int limit, store_event_fn fn,
			 void *ctx, int64_t *lost_upto);
/* The protocol's events-lost event, owed to a stream resuming after
 * `after` when its events up to lost_upto were trimmed unacknowledged
 * (core_stream_pull's lost_upto > after): fn gets it once, with id
 * lost_upto, before the events that follow. Logged. */
void core_events_lost(core *c, const core_stream *s, int64_t after, int64_t lost_upto, store_event_fn fn,
		      void *ctx);
/* Inside core_marks_begin(): events up to upto were written out. */
sig_err core_stream_sent(core *c, const core_stream *s, int64_t upto);
/* Inside core_marks_begin(): the client has the events up to upto (as the
 * ack of core_stream_open, recorded later). */
sig_err core_stream_ack(core *c, const core_stream *s, int64_t upto);
/* Inside core_marks_begin(): no stream holds the session any more (as
 * core_stream_close, without a transaction of its own). */
sig_err core_stream_release(core *c, const core_stream *s);
sig_err core_stream_close(core *c, const core_stream *s);
sig_err core_streams_refresh(core *c, int64_t owner);
sig_err core_recent_recipients(core *c, int64_t owner, int64_t after, int64_t *sids, int max,
			       int *n, int64_t *max_id);

/* Prune sessions silent for longer than the heartbeat timeout: each leaves
 * its room (members get user-left) and is deleted with its mailbox.
 * *pruned gets the count. Safe to run from any number of processes. */
sig_err core_prune(core *c, int64_t now, core_wakes *w, int *pruned);

/* ---- the admin API, for the transports (which checked the operator's
 * token) ---- */
enum core_admin_action {
	CORE_ADMIN_ROOMS, /* every room and its members */
	CORE_ADMIN_BANS,  /* the bans in force */
	CORE_ADMIN_KICK,  /* {"userId","reason"?}: "kicked" to the user, user-left to its room, session ended */
	CORE_ADMIN_BAN,   /* {"userId"|"address","seconds","reason"?}: logins refused (a banned user is kicked) */
	CORE_ADMIN_UNBAN, /* {"userId"|"address"} */
	CORE_ADMIN_CLOSE, /* {"roomId","reason"?}: "room-closed" to every member, who all leave it */
};
/* Run one admin action in its own transaction (the listings: a read one)
 * for a caller at `remote` (for the log line every action writes); body is
 * the JSON object of the actions that take one. Fills r like
 * core_exec_request (err, reply, wakes to ring after it returns); on error
 * nothing changed. */
void core_admin(core *c, enum core_admin_action a, const char *remote, const char *body, size_t len,
		core_result *r);

/* ---- graceful drain (SIGTERM) ----
 * From core_drain_begin on, this process refuses new logins with 503
 * draining and Retry-After: retry_after_s (a login elsewhere, or after the
 * restart, works); everything else goes on until the process exits.
 * Thread-safe. */
void core_drain_begin(int retry_after_s);
int core_draining(void); /* 0, or the Retry-After seconds */

/* The store's periodic upkeep (store_maintain), about once a second. */
sig_err core_maintain(core *c);

/* {"ok":true, counts...} for /api/health. */
sig_err core_health(core *c, json_object **out);
/* The store's counts (sessions, rooms, ...), for the metrics' gauges. */
sig_err core_stats(core *c, struct store_stats *out);
/* Count what a finished request did in the metrics: each command by type
 * and outcome (every one as e when its group failed to commit, e !=
 * SIG_OK), and the events it queued when it committed. */
void core_result_count(const core_result *r, sig_err group_failed);

/* The TURN REST credential (coturn's use-auth-secret) for userId, valid
 * until expiry (Unix seconds): username "EXPIRY:userId" into user, and
 * base64(HMAC-SHA1(secret, username)) into cred. Returns 0, or -1 (a
 * libcrypto failure; nothing usable was written). */
#define CORE_TURN_USER_MAX (20 + 1 + STORE_ID_MAX + 1)
#define CORE_TURN_CRED_MAX 29 /* base64 of 20 bytes, and its NUL */
int core_turn_credential(const unsigned char *secret, size_t secret_len, const char *user_id, int64_t expiry,
			 char user[CORE_TURN_USER_MAX], char cred[CORE_TURN_CRED_MAX]);

/* Hash a token (hex) for the store: SHA-256 of its bytes. Returns -1 when
 * the token is not of our format. */
int core_token_hash(const char *token, uint8_t out[STORE_HASH_LEN]);

#endif
