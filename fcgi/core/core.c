/*
 * core.c - the signaling rules. Each command runs inside one store
 * transaction: authenticate, check, change state, queue the events that the
 * change causes, commit. A command that fails rolls back, so a bad request
 * changes nothing, and an event exists exactly when its cause does.
 *
 * Events are stored as one-line JSON objects without their "id"; the
 * delivery side splices the id in when it sends them (evfmt.c).
 */
#define _GNU_SOURCE
#include "core/core.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "core/jsonv.h"
#include "core/ratelimit.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ROOM_SCAN_MAX 1024 /* members read per room; rooms are capped far lower */
#define PRUNE_BATCH 64
/* A heartbeat rewrites its session row at most this often: the timeout is
 * counted in tens of seconds, and every write costs the whole service. */
#define TOUCH_EVERY_MS 1000
#define TICKETS_KEPT 16 /* unused stream tickets per session; older ones are dropped */
/* A login without a token is matched to its earlier run by userId and cid
 * alone, and its replay hands out a token: the cid stands in for a secret
 * there, so it must be long enough not to be guessed. */
#define LOGIN_CID_MIN 16
/* A kicked session is deleted this long after it was ended: time for its
 * stream to deliver the notice (a reconnecting client still gets it). */
#define ENDED_GRACE_MS 10000
#define ADMIN_LIST_MAX 10000 /* memberships or bans in one admin listing */

struct core {
	store *st;
	int grouped; /* inside core_group_begin/end: commands use savepoints */
	struct core_limits lim;
	store_member members[ROOM_SCAN_MAX];
};

/* The state one command runs against. */
struct cmd_ctx {
	core *c;
	const char *token;  /* presented token, may be NULL */
	const uint8_t *token_hash; /* its hash when the caller knows it, else NULL */
	const char *remote; /* client address, may be NULL */
	store_session sess; /* id 0 when not authenticated */
	int64_t now;
	core_result *r;
	const char *type;
	int keep_ended; /* authenticate: a session the admin API ended still counts (its stream) */
	struct jv_fault why; /* the field a command refused (jv_check) */
};

core *core_new(store *st, const struct core_limits *limits)
{
	core *c = xcalloc(1, sizeof *c);
	c->st = st;
	c->lim = *limits;
	return c;
}

void core_free(core *c)
{
	free(c);
}

void core_result_init(core_result *r)
{
	memset(r, 0, sizeof *r); /* err SIG_OK */
}

void core_result_free(core_result *r)
{
	json_object_put(r->reply);
	core_wakes_free(&r->wakes);
	memset(r, 0, sizeof *r);
}

/* Forget the events carried by wakes from index `from` on: their command
 * was rolled back (the wakes themselves stay: ringing is harmless). */
static void wakes_drop_events(core_wakes *w, int from)
{
	for (int i = from; i < w->n; i++) {
		free(w->v[i].body);
		w->v[i].body = NULL;
		w->v[i].event_id = w->v[i].prev_id = 0;
	}
}

void core_wakes_free(core_wakes *w)
{
	wakes_drop_events(w, 0);
	free(w->v);
	memset(w, 0, sizeof *w);
}

void core_wakes_add(core_wakes *w, int64_t owner, int64_t session)
{
	if (owner == 0)
		return;
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 8;
		w->v = xrealloc(w->v, (size_t)w->cap * sizeof *w->v);
	}
	w->v[w->n] = (struct core_wake){.owner = owner, .session = session};
	w->n++;
}

/* Inside the write transaction that gathered them: ask the store to wake
 * the holders of the wakes from index `from` on when it commits, for an
 * engine whose processes may be on other machines (store_notify; nothing
 * for SQLite, whose processes bell.c reaches after the commit). */
static sig_err wakes_notify(core *c, const core_wakes *w, int from)
{
	int64_t owners[64], sessions[64];
	sig_err e = SIG_OK;
	for (int i = from; i < w->n && e == SIG_OK;) {
		int k = 0;
		for (; i < w->n && k < 64; i++, k++) {
			owners[k] = w->v[i].owner;
			sessions[k] = w->v[i].session;
		}
		e = store_notify(c->st, owners, sessions, k);
	}
	return e;
}

/* A wake for one queued event (see struct core_wake). */
static void wakes_add_event(core_wakes *w, int64_t owner, int64_t session, int64_t id, int64_t prev,
			    const char *body, size_t len)
{
	if (owner == 0)
		return;
	core_wakes_add(w, owner, session);
	struct core_wake *k = &w->v[w->n - 1];
	k->body = xmalloc(len);
	memcpy(k->body, body, len);
	k->len = len;
	k->event_id = id;
	k->prev_id = prev;
}

/* Queue one event for a session and wake its stream, carrying the event. */
static sig_err push_event(struct cmd_ctx *x, int64_t session, int64_t owner, const char *body, size_t len,
			  int64_t cap)
{
	int64_t id = 0, prev = 0;
	sig_err e = store_event_push(x->c->st, session, body, len, cap, x->now, &id, owner ? &prev : NULL);
	if (e == SIG_OK)
		x->r->queued++;
	if (e == SIG_OK)
		wakes_add_event(&x->r->wakes, owner, session, id, prev, body, len);
	return e;
}

json_object *core_error_reply(const char *type, sig_err e)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string(type ? type : "error"));
	json_object_object_add(o, "success", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(sig_err_code(e)));
	json_object_object_add(o, "msg", json_object_new_string(sig_err_msg(e)));
	return o;
}

json_object *core_error_reply_why(const char *type, sig_err e, const struct jv_fault *why)
{
	json_object *o = core_error_reply(type, e);
	if (why == NULL)
		return o;
	if (why->field)
		json_object_object_add(o, "field", json_object_new_string(why->field));
	if (why->msg[0])
		json_object_object_add(o, "msg", json_object_new_string(why->msg));
	return o;
}

static json_object *ok_reply(const char *type)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string(type));
	json_object_object_add(o, "success", json_object_new_boolean(1));
	return o;
}

/* SHA-256 fetched once: with OpenSSL 3, EVP_sha256() makes every digest
 * look the implementation up again (half the cost of hashing a token). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static int sha256(const void *data, size_t len, uint8_t out[STORE_HASH_LEN])
{
	pthread_once(&sha256_once, sha256_fetch);
	unsigned int n = 0;
	if (!EVP_Digest(data, len, out, &n, sha256_md ? sha256_md : EVP_sha256(), NULL) || n != STORE_HASH_LEN)
		return -1;
	return 0;
}

int core_token_hash(const char *token, uint8_t out[STORE_HASH_LEN])
{
	if (token == NULL || strlen(token) != CORE_TOKEN_LEN)
		return -1;
	for (int i = 0; i < CORE_TOKEN_LEN; i++) {
		char ch = token[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return -1;
	}
	return sha256(token, CORE_TOKEN_LEN, out);
}

/* Lowercase hex of n bytes into out (2n characters, no terminator). */
static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
}

static sig_err token_new(char out[CORE_TOKEN_LEN + 1])
{
	uint8_t raw[CORE_TOKEN_LEN / 2];
	size_t got = 0;
	while (got < sizeof raw) {
		ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
		if (n < 0)
			return SIG_E_INTERNAL;
		got += (size_t)n;
	}
	hex_encode(raw, sizeof raw, out);
	out[CORE_TOKEN_LEN] = '\0';
	return SIG_OK;
}

/* A new secret (a session token or a stream ticket) and its hash, which is
 * all the store keeps of it. */
static sig_err secret_new(char out[CORE_TOKEN_LEN + 1], uint8_t hash[STORE_HASH_LEN])
{
	if (token_new(out) != SIG_OK || core_token_hash(out, hash) != 0)
		return SIG_E_INTERNAL;
	return SIG_OK;
}

/* A session silent past the heartbeat timeout counts as gone (the pruner
 * will remove it): *s is cleared. */
static void drop_if_silent(const core *c, store_session *s, int64_t now)
{
	if (s->id != 0 && s->last_seen < now - c->lim.heartbeat_timeout_ms)
		memset(s, 0, sizeof *s);
}

/* ---- event fan-out ---- */

/* Queue obj in the mailbox of every member of room except `except`.
 * capped: a full mailbox fails the whole command (signals); system events
 * (user-joined/user-left) are never refused, so room state is never lost. */
static sig_err room_broadcast(struct cmd_ctx *x, const char *room, int64_t except, json_object *obj,
			      int capped, int *count)
{
	core *c = x->c;
	int n = 0;
	sig_err e = store_room_members(c->st, room, c->members, ROOM_SCAN_MAX, &n);
	if (e != SIG_OK)
		return e;
	if (n > ROOM_SCAN_MAX)
		n = ROOM_SCAN_MAX;
	size_t len = 0;
	const char *body = jv_text(obj, &len);
	int sent = 0;
	for (int i = 0; i < n; i++) {
		store_member *m = &c->members[i];
		if (m->session_id == except)
			continue;
		e = push_event(x, m->session_id, m->stream_owner, body, len, capped ? c->lim.mailbox_limit : 0);
		if (e != SIG_OK)
			return e;
		sent++;
	}
	if (count)
		*count = sent;
	return SIG_OK;
}

static json_object *presence_event(const char *type, const store_session *s, const char *room)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string(type));
	json_object_object_add(o, "userId", json_object_new_string(s->user_id));
	json_object_object_add(o, "roomId", json_object_new_string(room));
	if (strcmp(type, "user-joined") == 0)
		json_object_object_add(o, "protocol", json_object_new_string(s->protocol));
	return o;
}

/* Take s out of its room, telling the members who stay. */
static sig_err leave_room(struct cmd_ctx *x, const store_session *s)
{
	if (s->room_id[0] == '\0')
		return SIG_OK;
	sig_err e = store_member_set(x->c->st, s->id, NULL, x->now);
	if (e != SIG_OK)
		return e;
	json_object *ev = presence_event("user-left", s, s->room_id);
	e = room_broadcast(x, s->room_id, s->id, ev, 0, NULL);
	json_object_put(ev);
	return e;
}

/* Remove a session entirely: leave its room, end its stream, drop it. */
static sig_err remove_session(struct cmd_ctx *x, const store_session *s)
{
	sig_err e = leave_room(x, s);
	if (e != SIG_OK)
		return e;
	core_wakes_add(&x->r->wakes, s->stream_owner, s->id);
	return store_session_delete(x->c->st, s->id);
}

static json_object *users_array(core *c, int n)
{
	json_object *a = json_object_new_array();
	for (int i = 0; i < n && i < ROOM_SCAN_MAX; i++)
		json_object_array_add(a, json_object_new_string(c->members[i].user_id));
	return a;
}

/* ---- commands ---- */

static const struct jv_field login_fields[] = {
	{"userId", json_type_string, JV_REQUIRED | JV_ID, 64},
	{"protocol", json_type_string, JV_TEXT, 64},
	{"auth", json_type_string, JV_TEXT, 128},
};

/* With --auth-secret, a new login must carry "auth":"EXPIRY:HMAC" where
 * HMAC is the lowercase hex HMAC-SHA256 of `userId ":" EXPIRY` under the
 * secret, made by the application's backend (the TURN REST scheme), and
 * EXPIRY (Unix seconds) is not past. Compared in constant time. */
static sig_err check_login_auth(const struct core_limits *lim, const char *user, const char *auth,
				int64_t now_ms)
{
	if (lim->auth_secret_len == 0)
		return SIG_OK;
	const char *colon = auth ? strchr(auth, ':') : NULL;
	if (colon == NULL || colon == auth || colon - auth > 19 || strlen(colon + 1) != 64)
		return SIG_E_UNAUTHORIZED;
	char expiry[20];
	memcpy(expiry, auth, (size_t)(colon - auth));
	expiry[colon - auth] = '\0';
	int64_t exp = 0;
	if (util_parse_i64(expiry, 0, INT64_MAX, &exp) != 0 || exp < now_ms / 1000)
		return SIG_E_UNAUTHORIZED;
	char msg[STORE_ID_MAX + 1 + 20];
	int mlen = snprintf(msg, sizeof msg, "%s:%s", user, expiry);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	if (HMAC(EVP_sha256(), lim->auth_secret, (int)lim->auth_secret_len, (const unsigned char *)msg,
		 (size_t)mlen, mac, &maclen) == NULL || maclen != 32)
		return SIG_E_INTERNAL;
	char want[64];
	hex_encode(mac, 32, want);
	return CRYPTO_memcmp(want, colon + 1, 64) == 0 ? SIG_OK : SIG_E_UNAUTHORIZED;
}

/* A ban (admin API) of the userId or of the client's address: 403, and
 * the time left in Retry-After (and the reply's retryAfter). */
static sig_err check_bans(struct cmd_ctx *x, const char *user)
{
	int64_t until = 0, u2 = 0;
	char addr[UTIL_ADDR_MAX];
	sig_err e = store_ban_find(x->c->st, "user", user, x->now, &until);
	/* Bans are kept in the canonical spelling; the front server's is not always it. */
	if (e == SIG_OK && x->remote && util_canon_addr(x->remote, addr) == 0 &&
	    (e = store_ban_find(x->c->st, "address", addr, x->now, &u2)) == SIG_OK && u2 > until)
		until = u2;
	if (e != SIG_OK || until == 0)
		return e;
	x->r->retry_after = (int)((until - x->now + 999) / 1000);
	return SIG_E_BANNED;
}

static _Atomic int draining; /* Retry-After seconds while draining, 0 before */

void core_drain_begin(int retry_after_s)
{
	atomic_store(&draining, retry_after_s > 0 ? retry_after_s : 1);
}

int core_draining(void)
{
	return atomic_load(&draining);
}

/* ---- ICE servers (--turn-secret, --turn-uris, --stun-uris) ---- */

int core_turn_credential(const unsigned char *secret, size_t secret_len, const char *user_id, int64_t expiry,
			 char user[CORE_TURN_USER_MAX], char cred[CORE_TURN_CRED_MAX])
{
	int ulen = snprintf(user, CORE_TURN_USER_MAX, "%lld:%s", (long long)expiry, user_id);
	if (ulen < 0 || ulen >= CORE_TURN_USER_MAX)
		return -1;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	if (HMAC(EVP_sha1(), secret, (int)secret_len, (const unsigned char *)user, (size_t)ulen, mac, &maclen) ==
		    NULL ||
	    maclen != 20)
		return -1;
	EVP_EncodeBlock((unsigned char *)cred, mac, 20); /* 28 characters and a NUL */
	return 0;
}

/* A comma-separated URI list (checked at start-up) as a JSON array. */
static json_object *uri_array(const char *list)
{
	json_object *a = json_object_new_array();
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		json_object_array_add(a, json_object_new_string_len(p, (int)len));
		p += len + (p[len] == ',');
	}
	return a;
}

/* The RTCPeerConnection iceServers for user_id, or NULL when none are
 * configured: the STUN URIs as one entry, the TURN URIs as another with a
 * credential valid --turn-ttl seconds from now (*expiry, Unix seconds). */
static json_object *ice_servers(const struct core_limits *lim, const char *user_id, int64_t now_ms,
				int64_t *expiry)
{
	*expiry = 0;
	if (lim->stun_uris == NULL && lim->turn_uris == NULL)
		return NULL;
	json_object *a = json_object_new_array();
	if (lim->stun_uris) {
		json_object *s = json_object_new_object();
		json_object_object_add(s, "urls", uri_array(lim->stun_uris));
		json_object_array_add(a, s);
	}
	char user[CORE_TURN_USER_MAX], cred[CORE_TURN_CRED_MAX];
	int64_t exp = now_ms / 1000 + lim->turn_ttl_s;
	if (lim->turn_uris && lim->turn_secret_len &&
	    core_turn_credential(lim->turn_secret, lim->turn_secret_len, user_id, exp, user, cred) == 0) {
		json_object *t = json_object_new_object();
		json_object_object_add(t, "urls", uri_array(lim->turn_uris));
		json_object_object_add(t, "username", json_object_new_string(user));
		json_object_object_add(t, "credential", json_object_new_string(cred));
		json_object_array_add(a, t);
		*expiry = exp;
	}
	return a;
}

/* Add "iceServers" (and "iceExpiresAt" with TURN credentials) to a reply. */
static void add_ice(const struct cmd_ctx *x, const char *user_id, json_object *o)
{
	int64_t expiry = 0;
	json_object *ice = ice_servers(&x->c->lim, user_id, x->now, &expiry);
	if (ice == NULL)
		return;
	json_object_object_add(o, "iceServers", ice);
	if (expiry)
		json_object_object_add(o, "iceExpiresAt", json_object_new_int64(expiry));
}

/* {"type":"ice"}: fresh ICE servers (a new TURN credential), for a client
 * whose credential nears its iceExpiresAt. An empty list when the service
 * hands none out. */
static sig_err cmd_ice(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	(void)cmd;
	json_object *o = ok_reply("ice");
	add_ice(x, x->sess.user_id, o);
	if (!json_object_object_get_ex(o, "iceServers", NULL))
		json_object_object_add(o, "iceServers", json_object_new_array());
	*reply = o;
	return SIG_OK;
}

static sig_err cmd_login(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, login_fields, 3, &x->why);
	if (e != SIG_OK)
		return e;
	if (core_draining()) {
		/* A resume too: the stream it would open here is about to close. */
		x->r->retry_after = core_draining();
		return SIG_E_DRAINING;
	}
	core *c = x->c;
	const char *user = jv_str(cmd, "userId");
	const char *protocol = jv_str(cmd, "protocol");
	if ((e = check_bans(x, user)) != SIG_OK)
		return e;
	store_session old;
	if ((e = store_session_by_user(c->st, user, &old)) != SIG_OK)
		return e;
	char token[CORE_TOKEN_LEN + 1];
	if (old.id != 0 && x->sess.id == old.id) {
		/* The holder presented its own token: resume the session. */
		snprintf(token, sizeof token, "%s", x->token);
		if ((e = store_session_touch(c->st, old.id, x->now)) != SIG_OK)
			return e;
	} else {
		if ((e = check_login_auth(&c->lim, user, jv_str(cmd, "auth"), x->now)) != SIG_OK)
			return e;
		if (c->lim.rate_login > 0 && x->remote) {
			char key[80];
			int wait = 0;
			snprintf(key, sizeof key, "login:%s", x->remote);
			double burst = c->lim.login_burst > 0 ? c->lim.login_burst
							      : (c->lim.rate_login > 1 ? c->lim.rate_login : 1);
			if ((e = store_rate_take(c->st, key, c->lim.rate_login, burst, x->now, &wait)) != SIG_OK)
				return e;
			if (wait > 0) {
				x->r->retry_after = wait;
				return SIG_E_RATE_LIMITED;
			}
		}
		if (old.id != 0) {
			if (old.last_seen >= x->now - c->lim.heartbeat_timeout_ms && old.ended_id == 0)
				return SIG_E_USER_EXISTS;
			/* Dead but not yet pruned: prune it now rather than refuse. */
			if ((e = remove_session(x, &old)) != SIG_OK)
				return e;
		}
		int64_t live = 0;
		if (c->lim.max_sessions > 0 &&
		    ((e = store_session_count(c->st, &live)) != SIG_OK || live >= c->lim.max_sessions))
			return e != SIG_OK ? e : SIG_E_SERVER_FULL;
		uint8_t hash[STORE_HASH_LEN];
		int64_t sid = 0;
		if ((e = secret_new(token, hash)) != SIG_OK)
			return e;
		if ((e = store_session_create(c->st, user, protocol ? protocol : "", hash, x->now, &sid)) != SIG_OK)
			return e;
		memset(&old, 0, sizeof old);
		old.id = sid;
		snprintf(old.user_id, sizeof old.user_id, "%s", user);
		snprintf(old.protocol, sizeof old.protocol, "%s", protocol ? protocol : "");
	}
	json_object *o = ok_reply("login");
	json_object_object_add(o, "userId", json_object_new_string(old.user_id));
	json_object_object_add(o, "protocol", json_object_new_string(old.protocol));
	json_object_object_add(o, "token", json_object_new_string(token));
	if (old.room_id[0])
		json_object_object_add(o, "roomId", json_object_new_string(old.room_id));
	add_ice(x, old.user_id, o);
	*reply = o;
	x->sess = old;
	snprintf(x->r->token, sizeof x->r->token, "%s", token);
	return SIG_OK;
}

static const struct jv_field room_fields[] = {
	{"roomId", json_type_string, JV_REQUIRED | JV_ID, 64},
};

static sig_err cmd_join(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, room_fields, 1, &x->why);
	if (e != SIG_OK)
		return e;
	core *c = x->c;
	const char *room = jv_str(cmd, "roomId");
	int n = 0;
	if (strcmp(x->sess.room_id, room) != 0) {
		if ((e = store_room_members(c->st, room, c->members, ROOM_SCAN_MAX, &n)) != SIG_OK)
			return e;
		if (n >= c->lim.room_limit)
			return SIG_E_ROOM_FULL;
		int64_t rooms = 0;
		if (n == 0 && c->lim.max_rooms > 0 &&
		    ((e = store_room_count(c->st, &rooms)) != SIG_OK || rooms >= c->lim.max_rooms))
			return e != SIG_OK ? e : SIG_E_SERVER_FULL;
		if ((e = leave_room(x, &x->sess)) != SIG_OK ||
		    (e = store_member_set(c->st, x->sess.id, room, x->now)) != SIG_OK)
			return e;
		json_object *ev = presence_event("user-joined", &x->sess, room);
		e = room_broadcast(x, room, x->sess.id, ev, 0, NULL);
		json_object_put(ev);
		if (e != SIG_OK)
			return e;
		snprintf(x->sess.room_id, sizeof x->sess.room_id, "%s", room);
	}
	if ((e = store_room_members(c->st, room, c->members, ROOM_SCAN_MAX, &n)) != SIG_OK)
		return e;
	json_object *o = ok_reply("join");
	json_object_object_add(o, "roomId", json_object_new_string(room));
	json_object_object_add(o, "users", users_array(c, n));
	*reply = o;
	return SIG_OK;
}

static sig_err cmd_leave(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	(void)cmd;
	if (x->sess.room_id[0] == '\0')
		return SIG_E_NOT_IN_ROOM;
	sig_err e = leave_room(x, &x->sess);
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("leave");
	json_object_object_add(o, "roomId", json_object_new_string(x->sess.room_id));
	*reply = o;
	x->sess.room_id[0] = '\0';
	return SIG_OK;
}

static const struct jv_field signal_fields[] = {
	{"to", json_type_string, JV_ID, 64},
};

static sig_err cmd_signal(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, signal_fields, 1, &x->why);
	if (e != SIG_OK)
		return e;
	core *c = x->c;
	if (x->sess.room_id[0] == '\0')
		return SIG_E_NOT_IN_ROOM;
	const char *to = jv_str(cmd, "to");
	/* The event is the sender's object with the server's word on who sent
	 * it and where: a forged "from" or "roomId" is overwritten. */
	json_object_object_del(cmd, "id");
	json_object_object_add(cmd, "from", json_object_new_string(x->sess.user_id));
	json_object_object_add(cmd, "roomId", json_object_new_string(x->sess.room_id));
	size_t size = 0;
	jv_text(cmd, &size);
	if (c->lim.max_signal > 0 && (int64_t)size > c->lim.max_signal)
		return SIG_E_TOO_LARGE;
	int count = 0;
	if (to == NULL) {
		e = room_broadcast(x, x->sess.room_id, x->sess.id, cmd, 1, &count);
	} else {
		store_session peer;
		if ((e = store_session_by_user(c->st, to, &peer)) != SIG_OK)
			return e;
		if (peer.id == 0 || peer.id == x->sess.id || strcmp(peer.room_id, x->sess.room_id) != 0)
			return SIG_E_UNKNOWN_PEER;
		size_t len = 0;
		const char *body = jv_text(cmd, &len);
		e = push_event(x, peer.id, peer.stream_owner, body, len, c->lim.mailbox_limit);
		if (e == SIG_OK)
			count = 1;
	}
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("signal");
	if (to)
		json_object_object_add(o, "to", json_object_new_string(to));
	json_object_object_add(o, "recipients", json_object_new_int(count));
	*reply = o;
	return SIG_OK;
}

static const struct jv_field ping_fields[] = {
	{"ack", json_type_int, 0, 0},
};

static sig_err cmd_ping(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, ping_fields, 1, &x->why);
	if (e != SIG_OK)
		return e;
	json_object *ack = NULL;
	if (json_object_object_get_ex(cmd, "ack", &ack) &&
	    (e = store_events_ack(x->c->st, x->sess.id, json_object_get_int64(ack))) != SIG_OK)
		return e;
	*reply = ok_reply("pong");
	return SIG_OK;
}

static sig_err cmd_room_users(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, room_fields, 1, &x->why);
	if (e != SIG_OK)
		return e;
	const char *room = jv_str(cmd, "roomId");
	int n = 0;
	if ((e = store_room_members(x->c->st, room, x->c->members, ROOM_SCAN_MAX, &n)) != SIG_OK)
		return e;
	json_object *o = ok_reply("room-users");
	json_object_object_add(o, "roomId", json_object_new_string(room));
	json_object_object_add(o, "users", users_array(x->c, n));
	*reply = o;
	return SIG_OK;
}

static sig_err cmd_logout(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	(void)cmd;
	sig_err e = remove_session(x, &x->sess);
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("logout");
	json_object_object_add(o, "userId", json_object_new_string(x->sess.user_id));
	*reply = o;
	x->r->logged_out = 1;
	x->r->token[0] = '\0';
	memset(&x->sess, 0, sizeof x->sess);
	return SIG_OK;
}

/* {"type":"ticket"}: a one-use credential for opening one stream of this
 * session (?ticket= on /api/events or /api/poll; a WebSocket authenticates
 * with its auth message instead), valid for --ticket-ttl seconds. A page
 * asks for one before each (re)connect, so its stream is bound to its own
 * session whatever cookie the browser holds, and no token is written into
 * a URL (and so into access logs). */
static sig_err cmd_ticket(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	(void)cmd;
	char ticket[CORE_TOKEN_LEN + 1];
	uint8_t hash[STORE_HASH_LEN];
	sig_err e = secret_new(ticket, hash);
	if (e != SIG_OK)
		return e;
	e = store_ticket_create(x->c->st, x->sess.id, hash, x->now + x->c->lim.ticket_ttl_ms, TICKETS_KEPT);
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("ticket");
	json_object_object_add(o, "ticket", json_object_new_string(ticket));
	json_object_object_add(o, "expiresIn", json_object_new_int64(x->c->lim.ticket_ttl_ms / 1000));
	*reply = o;
	return SIG_OK;
}

struct command {
	const char *type;
	int needs_session;
	/* 0: a cid is accepted but its reply not kept (a ticket: it is a
	 * secret, and running it again only mints another). */
	int keeps_reply;
	sig_err (*run)(struct cmd_ctx *x, json_object *cmd, json_object **reply);
};

/* ---- idempotency keys ----
 *
 * Design note. A command may carry "cid", a key its client picks (unique
 * per session, kept across every retry of that command). The first run
 * that succeeds stores its reply under (session, cid) in the same
 * transaction as everything else it changed, so either both the effects
 * and the key are committed or neither is. A later command with that cid
 * is not run: it gets the stored reply back with "replayed":true, the
 * same status (200) and body. That is what makes a retried POST whose
 * answer was lost, or a command re-sent by POST after its socket died,
 * deliver exactly once.
 *
 * - Only successes are stored. A failed command changed nothing (it was
 *   rolled back), so running it again is safe, and it lets a retry after
 *   "busy" or "rate-limited" succeed.
 * - The fingerprint is the SHA-256 of the command as parsed, without its
 *   cid, written back as one-line JSON: the same members in the same
 *   order, whitespace aside. The same cid with another command is 409
 *   cid-conflict, never a silent replay of the wrong reply.
 * - A key lives --idempotency-window seconds, and a session keeps its
 *   --idempotency-keys newest; it is deleted with its session. A retry
 *   later than that runs again.
 * - login: a resumed login (own token presented) keys under its session.
 *   A login without a token has no session yet: its key is stored under
 *   the session it creates, and a retry is matched by userId and cid.
 *   Tokens are never stored, so the replay gives the session a new token
 *   (the first one, lost with its answer, stops working); the cid stands
 *   in for a secret there and must be at least LOGIN_CID_MIN bytes.
 * - logout: the key goes with the session it ends; a retried logout
 *   answers 401 (the session is gone, which is what was asked).
 * - ticket: its reply is a secret and is not kept; a retry mints another
 *   ticket, which changes nothing anyone else sees.
 */
struct cmd_key {
	char cid[STORE_ID_MAX + 1]; /* "" when the command has none */
	uint8_t fingerprint[STORE_HASH_LEN];
};

static const struct jv_field key_fields[] = {
	{"cid", json_type_string, JV_ID, 64},
};

/* Take the cid out of cmd (it is the sender's, never forwarded) and
 * fingerprint what is left. */
static sig_err key_read(json_object *cmd, struct cmd_key *k, struct jv_fault *why)
{
	memset(k, 0, sizeof *k);
	sig_err e = jv_check(cmd, key_fields, 1, why);
	const char *cid = e == SIG_OK ? jv_str(cmd, "cid") : NULL;
	if (e != SIG_OK || cid == NULL)
		return e;
	snprintf(k->cid, sizeof k->cid, "%s", cid);
	json_object_object_del(cmd, "cid");
	size_t len = 0;
	const char *text = jv_text(cmd, &len);
	return sha256(text, len, k->fingerprint) == 0 ? SIG_OK : SIG_E_INTERNAL;
}

/* The session a key of this command lives under: the caller's, or for a
 * login without a token the live session of its userId (id 0: none). */
static sig_err key_session(struct cmd_ctx *x, const struct command *command, json_object *cmd,
			   const struct cmd_key *k, store_session *out)
{
	*out = x->sess;
	if (x->sess.id != 0 || strcmp(command->type, "login") != 0)
		return SIG_OK;
	if (strlen(k->cid) < LOGIN_CID_MIN) {
		x->why.field = "cid";
		snprintf(x->why.msg, sizeof x->why.msg, "cid: at least %d bytes on a login without a token",
			 LOGIN_CID_MIN);
		return SIG_E_INVALID_FIELD;
	}
	sig_err e = jv_check(cmd, login_fields, 1, &x->why); /* userId */
	if (e == SIG_OK)
		e = store_session_by_user(x->c->st, jv_str(cmd, "userId"), out);
	if (e == SIG_OK)
		drop_if_silent(x->c, out, x->now);
	if (e == SIG_OK && out->ended_id)
		memset(out, 0, sizeof *out); /* kicked: its login is over, a retry logs in anew (or is banned) */
	return e;
}

/* A login's stored reply lacks its token: give it the caller's own (a
 * resume), or a new one for the session, which then is the caller's. */
static sig_err key_replay_login(struct cmd_ctx *x, const store_session *s, json_object *reply)
{
	char token[CORE_TOKEN_LEN + 1];
	if (x->sess.id == s->id) {
		snprintf(token, sizeof token, "%s", x->token);
	} else {
		uint8_t hash[STORE_HASH_LEN];
		sig_err e = secret_new(token, hash);
		if (e == SIG_OK)
			e = store_session_retoken(x->c->st, s->id, hash);
		if (e != SIG_OK)
			return e;
		x->sess = *s;
	}
	json_object_object_add(reply, "token", json_object_new_string(token));
	snprintf(x->r->token, sizeof x->r->token, "%s", token);
	return SIG_OK;
}

/* If the command's cid was seen: *reply is the stored reply, marked
 * replayed, and *replayed is set; a different command under that cid is
 * a conflict. Else nothing happens. */
static sig_err key_replay(struct cmd_ctx *x, const struct command *command, json_object *cmd,
			  const struct cmd_key *k, json_object **reply, int *replayed)
{
	*replayed = 0;
	if (k->cid[0] == '\0')
		return SIG_OK;
	store_session s;
	struct store_key stored;
	sig_err e = key_session(x, command, cmd, k, &s);
	if (e != SIG_OK || s.id == 0)
		return e;
	e = store_key_get(x->c->st, s.id, k->cid, x->now - x->c->lim.key_window_ms, &stored);
	if (e != SIG_OK || !stored.found)
		return e;
	json_object *o = NULL;
	if (CRYPTO_memcmp(stored.fingerprint, k->fingerprint, STORE_HASH_LEN) != 0)
		e = SIG_E_CID_CONFLICT;
	else if (jv_parse(stored.reply, stored.len, &o) != SIG_OK)
		e = SIG_E_INTERNAL;
	else if (strcmp(command->type, "login") == 0)
		e = key_replay_login(x, &s, o);
	store_key_free(&stored);
	if (e != SIG_OK) {
		json_object_put(o);
		return e;
	}
	json_object_object_add(o, "replayed", json_object_new_boolean(1));
	*reply = o;
	*replayed = 1;
	/* Worth knowing: each one is an answer that was lost on the way. */
	log_info("cid: %s of user %s (session %lld) answered from its stored reply, not run again", command->type,
		 x->sess.user_id, (long long)s.id);
	return SIG_OK;
}

/* After a successful run: keep its reply under the cid (a login's without
 * the token, which is never stored). */
static sig_err key_store(struct cmd_ctx *x, const struct command *command, const struct cmd_key *k,
			 json_object *reply)
{
	if (k->cid[0] == '\0' || x->sess.id == 0 || x->r->logged_out || !command->keeps_reply)
		return SIG_OK;
	json_object *token = NULL;
	if (json_object_object_get_ex(reply, "token", &token)) {
		json_object_get(token);
		json_object_object_del(reply, "token");
	}
	size_t len = 0;
	const char *text = jv_text(reply, &len);
	sig_err e = store_key_put(x->c->st, x->sess.id, k->cid, k->fingerprint, text, len, x->now,
				  x->c->lim.keys_kept);
	if (token)
		json_object_object_add(reply, "token", token);
	return e;
}

static const struct command commands[] = {
	{"login", 0, 1, cmd_login},
	{"join", 1, 1, cmd_join},
	{"leave", 1, 1, cmd_leave},
	{"signal", 1, 1, cmd_signal},
	{"ping", 1, 1, cmd_ping},
	{"room-users", 1, 1, cmd_room_users},
	{"logout", 1, 1, cmd_logout},
	{"ticket", 1, 0, cmd_ticket},
	{"ice", 1, 0, cmd_ice}, /* a fresh credential each time, like a ticket */
};

static const struct command *find_command(const char *type)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].type, type) == 0)
			return &commands[i];
	return NULL;
}

/* Resolve the presented token to a live session (id 0 when none). */
static sig_err authenticate(struct cmd_ctx *x)
{
	memset(&x->sess, 0, sizeof x->sess);
	uint8_t hash[STORE_HASH_LEN];
	if (x->token == NULL)
		return SIG_OK;
	if (x->token_hash)
		memcpy(hash, x->token_hash, sizeof hash); /* a socket's, hashed once when it attached */
	else if (core_token_hash(x->token, hash) != 0)
		return SIG_OK;
	sig_err e = store_session_by_token(x->c->st, hash, &x->sess);
	if (e == SIG_OK)
		drop_if_silent(x->c, &x->sess, x->now);
	if (e == SIG_OK && x->sess.ended_id && !x->keep_ended)
		memset(&x->sess, 0, sizeof x->sess); /* kicked: its token opens no command */
	return e;
}

/* Commands per session, per process (a flood never costs others). */
static sig_err session_rate(struct cmd_ctx *x)
{
	double rate = x->c->lim.rate_session;
	if (rate <= 0)
		return SIG_OK;
	char key[24];
	snprintf(key, sizeof key, "%lld", (long long)x->sess.id);
	int wait = rl_take('s', key, rate, 2 * rate);
	if (wait == 0)
		return SIG_OK;
	x->r->retry_after = wait;
	return SIG_E_RATE_LIMITED;
}

/* Inside the command's transaction: who is asking, whether this is a
 * retry of a command already done (its cid), the limits, the command. */
static sig_err run_command(struct cmd_ctx *x, const struct command *command, json_object *cmd,
			   json_object **reply)
{
	struct cmd_key key;
	int replayed = 0;
	sig_err e = authenticate(x);
	if (e == SIG_OK && command->needs_session && x->sess.id == 0)
		e = SIG_E_UNAUTHORIZED;
	if (e != SIG_OK)
		return e;
	/* A replay counts against the session's rate like any command. */
	if (x->sess.id != 0 && (e = session_rate(x)) != SIG_OK)
		return e;
	if (x->sess.id != 0 && x->sess.last_seen < x->now - TOUCH_EVERY_MS &&
	    (e = store_session_touch(x->c->st, x->sess.id, x->now)) != SIG_OK)
		return e;
	if ((e = key_read(cmd, &key, &x->why)) != SIG_OK || (e = key_replay(x, command, cmd, &key, reply, &replayed)) != SIG_OK ||
	    replayed)
		return e;
	if ((e = command->run(x, cmd, reply)) != SIG_OK)
		return e;
	return key_store(x, command, &key, *reply);
}

/* Commits made by this process, for SIGNAL_TEST_EXIT_AFTER_COMMITS. */
static atomic_llong commits_made;

/* Tests only: die between a commit and its answer, as a crash would. */
static void fault_after_commit(const core *c)
{
	if (c->lim.exit_after_commits <= 0)
		return;
	long long n = atomic_fetch_add(&commits_made, 1) + 1;
	if (n == c->lim.exit_after_commits) {
		log_warn("test fault: exiting after commit %lld, before its answer", n);
		_exit(70);
	}
}

/* One command in its own transaction. Returns its outcome; *reply is set. */
static sig_err exec_one(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	const char *type = NULL;
	sig_err e = SIG_OK;
	const struct command *command = NULL;
	*reply = NULL;
	memset(&x->why, 0, sizeof x->why);
	if (!json_object_is_type(cmd, json_type_object)) {
		e = SIG_E_INVALID_JSON;
		goto done;
	}
	type = jv_str(cmd, "type");
	if (type == NULL || (command = find_command(type)) == NULL) {
		e = SIG_E_UNKNOWN_TYPE;
		type = NULL;
		goto done;
	}
	type = command->type; /* a static string: outlives cmd */
	x->type = type;
	if (x->r->first_type == NULL)
		x->r->first_type = type;
	x->now = util_now_ms();
	int wakes_before = x->r->wakes.n, queued_before = x->r->queued;
	if ((e = x->c->grouped ? store_savepoint(x->c->st) : store_begin(x->c->st)) != SIG_OK)
		goto done;
	e = run_command(x, command, cmd, reply);
	if (e == SIG_OK)
		e = wakes_notify(x->c, &x->r->wakes, wakes_before);
	if (x->c->grouped) {
		sig_err se = store_savepoint_end(x->c->st, e == SIG_OK);
		if (e == SIG_OK)
			e = se;
	} else if (e == SIG_OK) {
		if ((e = store_commit(x->c->st)) == SIG_OK)
			fault_after_commit(x->c);
	} else {
		store_rollback(x->c->st);
	}
	if (x->sess.id != 0)
		snprintf(x->r->user_id, sizeof x->r->user_id, "%s", x->sess.user_id);
	if (e != SIG_OK) {
		wakes_drop_events(&x->r->wakes, wakes_before);
		x->r->queued = queued_before; /* rolled back */
	}
done:
	if (e != SIG_OK) {
		json_object_put(*reply);
		*reply = core_error_reply_why(type, e, e == SIG_E_INVALID_FIELD ? &x->why : NULL);
		if ((e == SIG_E_BANNED || e == SIG_E_DRAINING) && x->r->retry_after > 0)
			json_object_object_add(*reply, "retryAfter", json_object_new_int(x->r->retry_after));
		/* Wakes gathered by a rolled-back command point at nothing new;
		 * ringing them is harmless, so they are kept simple. */
	}
	return e;
}

void core_exec_body(core *c, const char *token, const char *body, size_t len, core_result *r)
{
	core_exec_request(c, token, NULL, body, len, r);
}

void core_exec_request(core *c, const char *token, const char *remote, const char *body, size_t len,
		       core_result *r)
{
	json_object *req = NULL;
	sig_err e = jv_parse(body, len, &req);
	if (e != SIG_OK) {
		r->err = e;
		r->reply = core_error_reply(NULL, e);
		return;
	}
	core_exec_json(c, token, NULL, remote, req, r);
	json_object_put(req);
}

void core_exec_json(core *c, const char *token, const uint8_t *token_hash, const char *remote, json_object *req,
		    core_result *r)
{
	struct cmd_ctx x = {.c = c, .token = token, .token_hash = token ? token_hash : NULL, .remote = remote, .r = r};
	if (!json_object_is_type(req, json_type_array)) {
		r->err = exec_one(&x, req, &r->reply);
		return;
	}
	size_t n = json_object_array_length(req);
	if (n == 0 || n > CORE_BATCH_MAX) {
		/* No field is at fault: the array is. */
		struct jv_fault why = {0};
		snprintf(why.msg, sizeof why.msg, "a batch holds 1 to %d commands, not %zu", CORE_BATCH_MAX, n);
		r->err = SIG_E_INVALID_FIELD;
		r->reply = core_error_reply_why(NULL, SIG_E_INVALID_FIELD, &why);
		return;
	}
	/* A batch: each command on its own, answered in order. A login inside
	 * the batch authenticates the commands after it. */
	json_object *out = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		json_object *reply = NULL;
		x.token = r->token[0] ? r->token : (r->logged_out ? NULL : token);
		x.token_hash = x.token == token ? token_hash : NULL; /* a login in the batch: its own */
		x.type = NULL;
		r->item_err[i] = exec_one(&x, json_object_array_get_idx(req, i), &reply);
		r->item_type[i] = x.type;
		json_object_array_add(out, reply);
	}
	r->err = SIG_OK;
	r->items = (int)n;
	r->reply = out;
}

/* ---- group commit ---- */

sig_err core_group_begin(core *c)
{
	sig_err e = store_begin(c->st);
	if (e == SIG_OK)
		c->grouped = 1;
	return e;
}

sig_err core_group_end(core *c)
{
	c->grouped = 0;
	sig_err e = store_commit(c->st);
	if (e == SIG_OK)
		fault_after_commit(c);
	return e;
}

/* ---- streams ---- */

/* End a transaction whose one step returned e: commit, or roll back. */
static sig_err finish_txn(core *c, sig_err e)
{
	if (e != SIG_OK) {
		store_rollback(c->st);
		return e;
	}
	return store_commit(c->st);
}

/* A stream's credential: a session token, or a one-use stream ticket. */
struct stream_cred {
	const char *token;
	const char *ticket;
};

/* Inside a write transaction (a ticket is used up): the live session of a
 * ticket, into *sess (id 0 when none). */
static sig_err ticket_session(core *c, const char *ticket, int64_t now, store_session *sess)
{
	uint8_t hash[STORE_HASH_LEN];
	memset(sess, 0, sizeof *sess);
	if (core_token_hash(ticket, hash) != 0)
		return SIG_OK;
	sig_err e = store_ticket_take(c->st, hash, now, sess);
	if (e == SIG_OK)
		drop_if_silent(c, sess, now);
	return e;
}

/* Inside a transaction: the live session of a stream's credential, into
 * *sess and (session, its stream generation, user) into *out. */
static sig_err stream_session(core *c, struct stream_cred cred, int64_t ack, store_session *sess, core_stream *out)
{
	core_result tmp;
	core_result_init(&tmp);
	struct cmd_ctx x = {.c = c, .token = cred.token, .r = &tmp, .now = util_now_ms(), .keep_ended = 1};
	sig_err e = cred.ticket ? ticket_session(c, cred.ticket, x.now, &x.sess) : authenticate(&x);
	core_result_free(&tmp);
	/* A kicked session's stream may still fetch the notice, nothing after. */
	if (e == SIG_OK && (x.sess.id == 0 || (x.sess.ended_id && ack >= x.sess.ended_id)))
		e = SIG_E_UNAUTHORIZED;
	if (e != SIG_OK)
		return e;
	*sess = x.sess;
	out->session = sess->id;
	out->gen = sess->stream_gen;
	snprintf(out->user_id, sizeof out->user_id, "%s", sess->user_id);
	return SIG_OK;
}

static sig_err stream_open(core *c, struct stream_cred cred, int64_t ack, int64_t owner, core_stream *out,
			   core_wakes *w)
{
	store_session sess;
	int64_t prev = 0;
	sig_err e = store_begin(c->st);
	if (e != SIG_OK)
		return e;
	e = stream_session(c, cred, ack, &sess, out);
	if (e == SIG_OK && ack > 0)
		e = store_events_ack(c->st, sess.id, ack);
	if (e == SIG_OK)
		e = store_stream_claim(c->st, sess.id, owner, util_now_ms(), &out->gen, &prev);
	if (e == SIG_OK && prev != 0 && prev != owner) /* the previous holder lets go */
		e = store_notify(c->st, &prev, &sess.id, 1);
	if ((e = finish_txn(c, e)) != SIG_OK)
		return e;
	core_wakes_add(w, prev, sess.id);
	return SIG_OK;
}

sig_err core_stream_open(core *c, const char *token, int64_t ack, int64_t owner, core_stream *out,
			 core_wakes *w)
{
	return stream_open(c, (struct stream_cred){.token = token}, ack, owner, out, w);
}

sig_err core_stream_open_ticket(core *c, const char *ticket, int64_t ack, int64_t owner, core_stream *out,
				core_wakes *w)
{
	/* A NULL ticket falls to the token path with no token: unauthorized. */
	return stream_open(c, (struct stream_cred){.ticket = ticket}, ack, owner, out, w);
}

sig_err core_stream_lookup(core *c, const char *token, int64_t owner, core_stream *out, int *ours)
{
	store_session sess;
	*ours = 0;
	sig_err e = store_begin_read(c->st);
	if (e != SIG_OK)
		return e;
	e = stream_session(c, (struct stream_cred){.token = token}, INT64_MAX, &sess, out);
	store_rollback(c->st); /* read only */
	if (e == SIG_OK)
		*ours = sess.stream_owner == owner;
	return e;
}

sig_err core_delivery_begin(core *c)
{
	return store_begin_read(c->st);
}

sig_err core_marks_begin(core *c)
{
	return store_begin(c->st);
}

void core_delivery_end(core *c, int commit)
{
	if (!commit || store_commit(c->st) != SIG_OK)
		store_rollback(c->st);
}

sig_err core_stream_pull(core *c, const core_stream *s, int64_t after, int limit, store_event_fn fn,
			 void *ctx, int64_t *lost_upto)
{
	return store_stream_pull(c->st, s->session, s->gen, after, limit, fn, ctx, lost_upto);
}

void core_events_lost(core *c, const core_stream *s, int64_t after, int64_t lost_upto, store_event_fn fn,
		      void *ctx)
{
	(void)c;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("events-lost"));
	json_object_object_add(o, "after", json_object_new_int64(after));
	size_t len = 0;
	const char *body = jv_text(o, &len);
	fn(ctx, lost_upto, body, len);
	json_object_put(o);
	log_warn("core: session %lld resumed after %lld but events up to %lld were trimmed", (long long)s->session,
		 (long long)after, (long long)lost_upto);
}

sig_err core_stream_sent(core *c, const core_stream *s, int64_t upto)
{
	return store_mark_sent(c->st, s->session, upto, c->lim.replay_window);
}

sig_err core_stream_ack(core *c, const core_stream *s, int64_t upto)
{
	return store_events_ack(c->st, s->session, upto);
}

sig_err core_stream_release(core *c, const core_stream *s)
{
	return store_stream_release(c->st, s->session, s->gen);
}

sig_err core_stream_close(core *c, const core_stream *s)
{
	sig_err e = store_begin(c->st);
	return e != SIG_OK ? e : finish_txn(c, store_stream_release(c->st, s->session, s->gen));
}

sig_err core_streams_refresh(core *c, int64_t owner)
{
	sig_err e = store_begin(c->st);
	return e != SIG_OK ? e : finish_txn(c, store_streams_refresh(c->st, owner, util_now_ms()));
}

sig_err core_recent_recipients(core *c, int64_t owner, int64_t after, int64_t *sids, int max,
			       int *n, int64_t *max_id)
{
	return store_recent_recipients(c->st, owner, after, sids, max, n, max_id);
}

/* ---- the admin API (the transport checked the operator's token) ---- */

static const struct jv_field kick_fields[] = {
	{"userId", json_type_string, JV_REQUIRED | JV_ID, 64},
	{"reason", json_type_string, JV_TEXT, 256},
};
static const struct jv_field ban_fields[] = {
	{"userId", json_type_string, JV_ID, 64},
	{"address", json_type_string, JV_TEXT, 64},
	{"seconds", json_type_int, 0, 0},
	{"reason", json_type_string, JV_TEXT, 256},
};
static const struct jv_field close_fields[] = {
	{"roomId", json_type_string, JV_REQUIRED | JV_ID, 64},
	{"reason", json_type_string, JV_TEXT, 256},
};

#define BAN_MAX_S (366 * 86400)

/* Inside a write transaction: tell s it is kicked, take it out of its room
 * (user-left there) and end it: its token dies now, its stream once the
 * notice is out (store_session_end). */
static sig_err kick_session(struct cmd_ctx *x, store_session *s, const char *reason, int64_t ban_s)
{
	json_object *ev = json_object_new_object();
	json_object_object_add(ev, "type", json_object_new_string("kicked"));
	json_object_object_add(ev, "reason", json_object_new_string(reason));
	if (ban_s > 0)
		json_object_object_add(ev, "retryAfter", json_object_new_int64(ban_s));
	size_t len = 0;
	const char *body = jv_text(ev, &len);
	int64_t id = 0, prev = 0;
	sig_err e = store_event_push(x->c->st, s->id, body, len, 0, x->now, &id, &prev);
	if (e == SIG_OK) {
		x->r->queued++;
		wakes_add_event(&x->r->wakes, s->stream_owner, s->id, id, prev, body, len);
	}
	json_object_put(ev);
	if (e == SIG_OK)
		e = leave_room(x, s);
	if (e == SIG_OK)
		e = store_session_end(x->c->st, s->id, id, x->now);
	return e;
}

/* The live (not ended) session of user into *s, id 0 when none. */
static sig_err live_user(struct cmd_ctx *x, const char *user, store_session *s)
{
	sig_err e = store_session_by_user(x->c->st, user, s);
	if (e == SIG_OK && s->id && s->ended_id)
		memset(s, 0, sizeof *s);
	return e;
}

static sig_err admin_kick(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, kick_fields, 2, &x->why);
	if (e != SIG_OK)
		return e;
	const char *user = jv_str(cmd, "userId");
	const char *reason = jv_str(cmd, "reason");
	store_session s;
	if ((e = live_user(x, user, &s)) != SIG_OK)
		return e;
	if (s.id == 0)
		return SIG_E_UNKNOWN_USER;
	char room[STORE_ID_MAX + 1];
	snprintf(room, sizeof room, "%s", s.room_id);
	if ((e = kick_session(x, &s, reason ? reason : "removed by an operator", 0)) != SIG_OK)
		return e;
	json_object *o = ok_reply("kick");
	json_object_object_add(o, "userId", json_object_new_string(user));
	if (room[0])
		json_object_object_add(o, "roomId", json_object_new_string(room));
	*reply = o;
	log_info("admin: kick user %s%s%s by %s", user, room[0] ? " from room " : "", room, x->remote ? x->remote : "-");
	return SIG_OK;
}

/* A field fault of the admin API's own rules (beyond the tables). */
static sig_err admin_fault(struct cmd_ctx *x, const char *field, const char *msg)
{
	x->why.field = field;
	snprintf(x->why.msg, sizeof x->why.msg, "%s: %s", field, msg);
	return SIG_E_INVALID_FIELD;
}

/* ban and unban name exactly one of userId or address; an address in its
 * canonical spelling (into canon), whichever way the operator wrote it. */
static sig_err ban_target(struct cmd_ctx *x, json_object *cmd, const char **kind, const char **value,
			  char canon[UTIL_ADDR_MAX])
{
	const char *user = jv_str(cmd, "userId"), *addr = jv_str(cmd, "address");
	if ((user == NULL) == (addr == NULL))
		return admin_fault(x, user ? "address" : "userId", "give exactly one of userId and address");
	if (addr && util_canon_addr(addr, canon) != 0)
		return admin_fault(x, "address", "an IPv4 or IPv6 address");
	*kind = user ? "user" : "address";
	*value = user ? user : canon;
	return SIG_OK;
}

static sig_err admin_ban(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	const char *kind = NULL, *value = NULL;
	char canon[UTIL_ADDR_MAX];
	sig_err e = jv_check(cmd, ban_fields, 4, &x->why);
	if (e == SIG_OK)
		e = ban_target(x, cmd, &kind, &value, canon);
	json_object *sec = NULL;
	if (e == SIG_OK && !json_object_object_get_ex(cmd, "seconds", &sec))
		e = admin_fault(x, "seconds", "required, an integer");
	int64_t seconds = sec ? json_object_get_int64(sec) : 0;
	if (e == SIG_OK && (seconds < 1 || seconds > BAN_MAX_S)) {
		char msg[64];
		snprintf(msg, sizeof msg, "1 to %lld", (long long)BAN_MAX_S);
		e = admin_fault(x, "seconds", msg);
	}
	if (e != SIG_OK)
		return e;
	const char *reason = jv_str(cmd, "reason");
	if ((e = store_ban_set(x->c->st, kind, value, x->now + seconds * 1000, reason)) != SIG_OK)
		return e;
	store_session s = {0};
	if (strcmp(kind, "user") == 0 && (e = live_user(x, value, &s)) != SIG_OK)
		return e;
	if (s.id && (e = kick_session(x, &s, reason ? reason : "banned by an operator", seconds)) != SIG_OK)
		return e;
	json_object *o = ok_reply("ban");
	json_object_object_add(o, kind[0] == 'u' ? "userId" : "address", json_object_new_string(value));
	json_object_object_add(o, "seconds", json_object_new_int64(seconds));
	json_object_object_add(o, "kicked", json_object_new_boolean(s.id != 0));
	*reply = o;
	log_info("admin: ban %s %s for %llds%s by %s", kind, value, (long long)seconds, s.id ? " (session kicked)" : "",
		 x->remote ? x->remote : "-");
	return SIG_OK;
}

static sig_err admin_unban(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	const char *kind = NULL, *value = NULL;
	char canon[UTIL_ADDR_MAX];
	int removed = 0;
	sig_err e = jv_check(cmd, ban_fields, 4, &x->why);
	if (e == SIG_OK)
		e = ban_target(x, cmd, &kind, &value, canon);
	if (e == SIG_OK)
		e = store_ban_delete(x->c->st, kind, value, &removed);
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("unban");
	json_object_object_add(o, kind[0] == 'u' ? "userId" : "address", json_object_new_string(value));
	json_object_object_add(o, "removed", json_object_new_boolean(removed));
	*reply = o;
	log_info("admin: unban %s %s%s by %s", kind, value, removed ? "" : " (was not banned)", x->remote ? x->remote : "-");
	return SIG_OK;
}

static sig_err admin_close(struct cmd_ctx *x, json_object *cmd, json_object **reply)
{
	sig_err e = jv_check(cmd, close_fields, 2, &x->why);
	if (e != SIG_OK)
		return e;
	core *c = x->c;
	const char *room = jv_str(cmd, "roomId");
	const char *reason = jv_str(cmd, "reason");
	int n = 0;
	if ((e = store_room_members(c->st, room, c->members, ROOM_SCAN_MAX, &n)) != SIG_OK)
		return e;
	if (n == 0)
		return SIG_E_UNKNOWN_ROOM;
	if (n > ROOM_SCAN_MAX)
		n = ROOM_SCAN_MAX;
	json_object *ev = json_object_new_object();
	json_object_object_add(ev, "type", json_object_new_string("room-closed"));
	json_object_object_add(ev, "roomId", json_object_new_string(room));
	json_object_object_add(ev, "reason", json_object_new_string(reason ? reason : "closed by an operator"));
	size_t len = 0;
	const char *body = jv_text(ev, &len);
	/* Everyone leaves at once: no user-left, the room itself is gone. */
	for (int i = 0; e == SIG_OK && i < n; i++) {
		store_member *m = &c->members[i];
		if ((e = store_member_set(c->st, m->session_id, NULL, x->now)) == SIG_OK)
			e = push_event(x, m->session_id, m->stream_owner, body, len, 0);
	}
	json_object_put(ev);
	if (e != SIG_OK)
		return e;
	json_object *o = ok_reply("close");
	json_object_object_add(o, "roomId", json_object_new_string(room));
	json_object_object_add(o, "members", json_object_new_int(n));
	*reply = o;
	log_info("admin: close room %s (%d member(s)) by %s", room, n, x->remote ? x->remote : "-");
	return SIG_OK;
}

/* Listing: rooms in order, each with its members in join order. */
struct rooms_ctx {
	json_object *rooms, *users;
	char room[STORE_ID_MAX + 1];
	int64_t now;
	int rows;
};

static int on_membership(void *ctx, const store_session *m)
{
	struct rooms_ctx *r = ctx;
	if (r->users == NULL || strcmp(r->room, m->room_id) != 0) {
		json_object *room = json_object_new_object();
		r->users = json_object_new_array();
		snprintf(r->room, sizeof r->room, "%s", m->room_id);
		json_object_object_add(room, "roomId", json_object_new_string(m->room_id));
		json_object_object_add(room, "users", r->users);
		json_object_array_add(r->rooms, room);
	}
	json_object *u = json_object_new_object();
	json_object_object_add(u, "userId", json_object_new_string(m->user_id));
	json_object_object_add(u, "protocol", json_object_new_string(m->protocol));
	json_object_object_add(u, "connected", json_object_new_boolean(m->stream_owner != 0));
	json_object_object_add(u, "idleMs", json_object_new_int64(r->now > m->last_seen ? r->now - m->last_seen : 0));
	json_object_array_add(r->users, u);
	r->rows++;
	return 0;
}

static sig_err admin_rooms(struct cmd_ctx *x, json_object **reply)
{
	struct rooms_ctx r = {.rooms = json_object_new_array(), .now = x->now};
	sig_err e = store_rooms_list(x->c->st, ADMIN_LIST_MAX + 1, on_membership, &r);
	if (e != SIG_OK) {
		json_object_put(r.rooms);
		return e;
	}
	json_object *o = ok_reply("rooms");
	json_object_object_add(o, "rooms", r.rooms);
	json_object_object_add(o, "truncated", json_object_new_boolean(r.rows > ADMIN_LIST_MAX));
	*reply = o;
	log_info("admin: list rooms (%zu) by %s", json_object_array_length(r.rooms), x->remote ? x->remote : "-");
	return SIG_OK;
}

struct bans_ctx {
	json_object *bans;
	int64_t now;
};

static int on_ban(void *ctx, const char *kind, const char *value, int64_t until, const char *reason)
{
	struct bans_ctx *b = ctx;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "kind", json_object_new_string(kind ? kind : ""));
	json_object_object_add(o, kind && kind[0] == 'u' ? "userId" : "address", json_object_new_string(value ? value : ""));
	json_object_object_add(o, "retryAfter", json_object_new_int64((until - b->now + 999) / 1000));
	json_object_object_add(o, "reason", json_object_new_string(reason));
	json_object_array_add(b->bans, o);
	return 0;
}

static sig_err admin_bans(struct cmd_ctx *x, json_object **reply)
{
	struct bans_ctx b = {.bans = json_object_new_array(), .now = x->now};
	sig_err e = store_bans_list(x->c->st, x->now, ADMIN_LIST_MAX, on_ban, &b);
	if (e != SIG_OK) {
		json_object_put(b.bans);
		return e;
	}
	json_object *o = ok_reply("bans");
	json_object_object_add(o, "bans", b.bans);
	*reply = o;
	log_info("admin: list bans (%zu) by %s", json_object_array_length(b.bans), x->remote ? x->remote : "-");
	return SIG_OK;
}

void core_admin(core *c, enum core_admin_action a, const char *remote, const char *body, size_t len,
		core_result *r)
{
	static const char *const names[] = {"rooms", "bans", "kick", "ban", "unban", "close"};
	static const enum metrics_admin counted[] = {MA_LIST, MA_LIST, MA_KICK, MA_BAN, MA_UNBAN, MA_CLOSE};
	struct cmd_ctx x = {.c = c, .remote = remote, .r = r, .now = util_now_ms()};
	json_object *cmd = NULL, *reply = NULL;
	int writes = a != CORE_ADMIN_ROOMS && a != CORE_ADMIN_BANS;
	sig_err e = SIG_OK;
	if (writes && (e = jv_parse(body, len, &cmd)) == SIG_OK && !json_object_is_type(cmd, json_type_object))
		e = SIG_E_INVALID_JSON;
	if (e == SIG_OK)
		e = writes ? store_begin(c->st) : store_begin_read(c->st);
	if (e == SIG_OK) {
		switch (a) {
		case CORE_ADMIN_ROOMS: e = admin_rooms(&x, &reply); break;
		case CORE_ADMIN_BANS: e = admin_bans(&x, &reply); break;
		case CORE_ADMIN_KICK: e = admin_kick(&x, cmd, &reply); break;
		case CORE_ADMIN_BAN: e = admin_ban(&x, cmd, &reply); break;
		case CORE_ADMIN_UNBAN: e = admin_unban(&x, cmd, &reply); break;
		case CORE_ADMIN_CLOSE: e = admin_close(&x, cmd, &reply); break;
		}
		if (e == SIG_OK && writes && (e = wakes_notify(c, &r->wakes, 0)) == SIG_OK)
			e = store_commit(c->st);
		else
			store_rollback(c->st);
	}
	json_object_put(cmd);
	r->err = e;
	if (e != SIG_OK) {
		json_object_put(reply);
		reply = core_error_reply_why(names[a], e, e == SIG_E_INVALID_FIELD ? &x.why : NULL);
		wakes_drop_events(&r->wakes, 0);
		r->queued = 0;
		log_info("admin: %s refused (%s) for %s", names[a], sig_err_code(e), remote ? remote : "-");
	} else {
		metrics_admin(counted[a]);
		metrics_add(MC_EVENTS_QUEUED, (uint64_t)r->queued);
	}
	r->reply = reply;
}

/* ---- pruning (the design note is in maint.c) ---- */

/* Forget shared rate buckets idle for an hour, expired stream tickets
 * and idempotency keys past their window. */
static sig_err gc_expired(core *c, int64_t now)
{
	sig_err e = store_begin(c->st);
	if (e != SIG_OK)
		return e;
	e = store_rate_gc(c->st, now - 3600 * 1000);
	if (e == SIG_OK)
		e = store_tickets_gc(c->st, now);
	if (e == SIG_OK)
		e = store_keys_gc(c->st, now - c->lim.key_window_ms);
	if (e == SIG_OK)
		e = store_bans_gc(c->st, now);
	return finish_txn(c, e);
}

sig_err core_prune(core *c, int64_t now, core_wakes *w, int *pruned)
{
	*pruned = 0;
	sig_err ge = gc_expired(c, now);
	if (ge != SIG_OK)
		return ge;
	store_session stale[PRUNE_BATCH];
	for (;;) {
		core_result tmp;
		core_result_init(&tmp);
		struct cmd_ctx x = {.c = c, .r = &tmp, .now = now};
		int n = 0, silent = 0;
		sig_err e = store_begin(c->st);
		if (e != SIG_OK) {
			core_result_free(&tmp);
			return e;
		}
		e = store_sessions_stale(c->st, now - c->lim.heartbeat_timeout_ms, now - ENDED_GRACE_MS, stale, PRUNE_BATCH,
					 &n);
		for (int i = 0; e == SIG_OK && i < n; i++) {
			e = remove_session(&x, &stale[i]);
			if (e == SIG_OK && stale[i].ended_id)
				log_info("prune: kicked user %s (session %lld) removed", stale[i].user_id, (long long)stale[i].id);
			else if (e == SIG_OK && ++silent)
				log_info("prune: user %s (session %lld) silent %lld ms%s%s", stale[i].user_id,
					 (long long)stale[i].id, (long long)(now - stale[i].last_seen),
					 stale[i].room_id[0] ? ", left room " : "", stale[i].room_id);
		}
		if (e == SIG_OK)
			e = wakes_notify(c, &tmp.wakes, 0);
		if (e == SIG_OK)
			e = store_commit(c->st);
		else
			store_rollback(c->st);
		if (e == SIG_OK) {
			for (int i = 0; i < tmp.wakes.n; i++)
				core_wakes_add(w, tmp.wakes.v[i].owner, tmp.wakes.v[i].session);
			*pruned += n;
			metrics_add(MC_EVENTS_QUEUED, (uint64_t)tmp.queued);
			metrics_add(MC_PRUNED, (uint64_t)silent);
		}
		core_result_free(&tmp);
		if (e != SIG_OK || n < PRUNE_BATCH)
			return e;
	}
}

sig_err core_maintain(core *c)
{
	return store_maintain(c->st);
}

sig_err core_stats(core *c, struct store_stats *out)
{
	return store_stats(c->st, out);
}

void core_result_count(const core_result *r, sig_err group_failed)
{
	if (r->items == 0) {
		metrics_command(r->first_type, group_failed != SIG_OK ? group_failed : r->err);
	} else {
		for (int i = 0; i < r->items && i < CORE_BATCH_MAX; i++)
			metrics_command(r->item_type[i], group_failed != SIG_OK ? group_failed : r->item_err[i]);
	}
	if (group_failed == SIG_OK)
		metrics_add(MC_EVENTS_QUEUED, (uint64_t)r->queued);
}

sig_err core_health(core *c, json_object **out)
{
	struct store_stats s;
	sig_err e = store_stats(c->st, &s);
	if (e != SIG_OK)
		return e;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "sessions", json_object_new_int64(s.sessions));
	json_object_object_add(o, "rooms", json_object_new_int64(s.rooms));
	json_object_object_add(o, "members", json_object_new_int64(s.memberships));
	json_object_object_add(o, "queued", json_object_new_int64(s.events));
	json_object_object_add(o, "streams", json_object_new_int64(s.streams));
	*out = o;
	return SIG_OK;
}
