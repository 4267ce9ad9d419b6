/*
 * ws.c - WebSocket connections at /api/ws, with the Upgrade passed on by
 * the front server's proxy (lighttpd mod_proxy, nginx proxy_pass) to the
 * --ws-listen socket.
 *
 * Design note. The socket is a held connection (held.c) on the process's
 * loop, of a kind whose handlers are here (ws_ops): the held-stream code
 * writes what this file frames, and gives this file the attached session's
 * events to send as text messages. This file accepts the connections,
 * reads the HTTP handshake (parsed by httpparse.c,
 * answered with SHA-1 and base64 from libcrypto) and then hands the bytes
 * to wslay, which does the RFC 6455 framing: masking, fragments, UTF-8 of
 * text messages, control frames, close codes and the message size cap.
 *
 * A text message is one command, run as if POSTed to /api/cmd (group
 * commit, same replies), by a small pool of command threads: the loop never
 * waits for the store. One command per connection is in flight at a time,
 * so replies keep the order of the commands; further messages wait in a
 * short inbox, and past INBOX_MAX the loop stops reading the socket (the
 * client's TCP window fills instead of our memory).
 *
 * Our close frame written, the connection lingers: it lets go of the
 * session, sends its FIN and reads (and drops) what the client still sends
 * until its EOF or LINGER_US. Closing at once, with its data unread, would
 * reset the connection and could destroy the close frame before the client
 * reads it.
 *
 * wslay's context (8.5 KB: a 4 KB read buffer, a 4 KB write buffer) exists
 * only while the connection is between frames of its own: a message half
 * read, a frame half written, a close under way. An idle socket (most of a
 * held socket's life) has none, so its memory is our small struct and the
 * held connection. It is made again when the socket turns readable or we
 * have something to send; a fresh context is exactly the state of an idle
 * one (the close state excepted, and a context in close is never let go).
 * "Between frames" is counted, not guessed: every byte read is added to
 * `fed`, every frame wslay starts adds its length (header, mask key and
 * payload; wslay refuses non-minimal lengths, so the header's length
 * follows from the payload's) to `framed`, and a context holds nothing
 * when the two are equal, no frame is open and no fragmented message is.
 *
 * A connection carries at most one session: login or {"type":"auth",
 * "token":T,"lastEventId":N} (or a token in the cookie or ?token= on the
 * upgrade request) attaches it, exactly as opening an SSE stream would;
 * logout detaches it. A dropped socket leaves the session to be resumed
 * or pruned by the heartbeat rule, as with SSE.
 *
 * It must never: run a command on the loop thread, free a connection
 * while a command of it is in flight, or log a token.
 */
#define _GNU_SOURCE
#include "transport/ws.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "core/jsonv.h"
#include "core/ratelimit.h"
#include "deliver/bell.h"
#include "deliver/evfmt.h"
#include "deliver/group.h"
#include "deliver/held.h"
#include "transport/httpparse.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define HEAD_MAX 8192             /* the upgrade request, headers included */
#define INBOX_MAX 64              /* messages waiting behind the one in flight */
#define INBOX_BYTES (1024 * 1024)
#define OUT_HIGH (256 * 1024)     /* stop reading commands while replies pile up */
#define HANDSHAKE_TIMEOUT_US (10 * 1000000LL)
#define WS_CLOSE_SESSION_ENDED 4001
#define WS_CLOSE_RESTART 1012        /* RFC 6455 registry: Service Restart (drain) */
#define WS_BATCH 64               /* jobs a command thread takes at once */
#define LINGER_US 2000000         /* a closed connection drains the client this long at most */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

struct msg {
	struct msg *next;
	size_t len;
	char data[];
};

struct ws_conn {
	held *h;                  /* NULL once the socket is gone */
	wslay_event_context_ptr ctx; /* only while a frame is on its way (design note) */
	int upgraded;             /* the handshake is done */
	int in_frame, in_msg;     /* wslay is inside a frame / a fragmented message */
	uint64_t fed, framed;     /* bytes read into wslay / in frames it started */
	uint64_t frame_len;       /* the open frame's header and payload */
	buf head;                 /* handshake bytes until the blank line */
	buf early;                /* bytes that followed the handshake, read first */
	char token[CORE_TOKEN_LEN + 1]; /* of the attached session, "" when none */
	uint8_t token_hash[CORE_TOKEN_HASH_LEN]; /* its hash, made once when it attached */
	char cookie[CORE_TOKEN_LEN + 1]; /* the upgrade's cookie token, for an auth without one */
	char remote[64];          /* client address, as the front server saw it */
	struct msg *inbox, **inbox_tail;
	int inbox_n;
	size_t inbox_bytes;
	int busy;                 /* a command is in flight */
	int end_pending;          /* the session ended while it was */
	int paused;               /* not reading: the inbox is full */
	int reading, again;       /* inside ws_readable (no re-entry); read once more */
	int eof;                  /* the socket read failed or hit EOF */
	int lingering;            /* our close is out, draining the client until EOF */
	int64_t drain_after;      /* told to reconnect while a command was in flight: after its reply */
	int64_t born_us, last_recv_us, last_ping_us, linger_until_us;
};

/* A command on its way to a command thread and back. */
struct ws_job {
	struct loop_job job;      /* back to the loop with the outcome (first) */
	struct ws_conn *w;
	struct ws_job *next;
	char token[CORE_TOKEN_LEN + 1];
	uint8_t token_hash[CORE_TOKEN_HASH_LEN];
	char cookie[CORE_TOKEN_LEN + 1];
	char remote[64];
	struct msg *m;            /* the command's text */
	/* results, applied on the loop thread */
	char *reply;
	size_t reply_len;
	int implicit;             /* an auth from the upgrade request's token */
	int attach, detach, release;
	core_stream stream;
	int64_t cursor;
	char new_token[CORE_TOKEN_LEN + 1];
	uint8_t new_hash[CORE_TOKEN_HASH_LEN]; /* of new_token, made on the command thread */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t ready;
	struct ws_job *head, **tail;
	int64_t owner;
	core_factory make_core;
	loop *l;
	int listen_fd;
} Q = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};

/* ---- the listener ---- */

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		log_error("ws: socket path too long: %s", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	if (rc != 0 && errno == EADDRINUSE) {
		/* A live listener keeps it (another process of ours); a dead one
		 * left its file behind. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
		if (probe >= 0)
			close(probe);
		if (live) {
			log_info("ws: %s is served by another process; this one serves no WebSocket", path);
			close(fd);
			return -2;
		}
		unlink(path);
		rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	}
	if (rc != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	/* The front server may run as another user; the directory guards it. */
	chmod(path, 0666);
	return fd;
}

static int listen_tcp(const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai) != 0 || ai == NULL)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	/* Every process of the service may listen on the same port. */
	if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
			bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

int ws_listen_open(const char *addr)
{
	int fd = strchr(addr, '/') ? listen_unix(addr) : listen_tcp(addr);
	if (fd == -2)
		return -2;
	/* thousands of browsers may reconnect at once, e.g. after a restart */
	if (fd < 0 || listen(fd, 8192) != 0) {
		log_error("ws: cannot listen on %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* ---- framing (wslay callbacks, on the loop thread) ---- */

/* Reading stops while the inbox is full or unread replies pile up: a
 * client that sends without reading costs a bounded amount of memory. */
static int may_read(struct ws_conn *w)
{
	return !w->paused && held_out(w->h)->len < OUT_HIGH;
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *data, size_t len, int flags, void *user)
{
	(void)flags;
	struct ws_conn *w = user;
	if (w->h == NULL || !may_read(w)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (w->early.len > 0) {
		size_t n = len < w->early.len ? len : w->early.len;
		memcpy(data, w->early.data, n);
		buf_consume(&w->early, n);
		if (w->early.len == 0)
			buf_free(&w->early); /* read once, never needed again */
		w->fed += n;
		return (ssize_t)n;
	}
	ssize_t n;
	do
		n = read(held_fd(w->h), data, len);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		w->fed += (uint64_t)n;
		return n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
	} else {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); /* EOF or error */
		w->eof = 1;
	}
	return -1;
}

/* Frames go to the connection's queue, which the loop writes; its size is
 * bounded by the loop reading no events above QUEUE_LOW. */
static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	(void)flags;
	struct ws_conn *w = user;
	if (w->h == NULL) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	buf_append(held_out(w->h), data, len);
	return (ssize_t)len;
}

static void dispatch(struct ws_conn *w);

static struct msg *msg_new(const char *data, size_t len)
{
	struct msg *m = xmalloc(sizeof *m + len + 1);
	m->next = NULL;
	m->len = len;
	memcpy(m->data, data, len);
	m->data[len] = '\0';
	return m;
}

static void on_message(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	struct ws_conn *w = user;
	w->last_recv_us = util_mono_us();
	if (arg->opcode == WSLAY_BINARY_FRAME) {
		static const char why[] = "commands are JSON text messages";
		metrics_ws_close(WSLAY_CODE_UNSUPPORTED_DATA);
		wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, (const uint8_t *)why, sizeof why - 1);
		return;
	}
	if (arg->opcode != WSLAY_TEXT_FRAME)
		return; /* ping (answered by wslay), pong, close */
	struct msg *m = msg_new((const char *)arg->msg, arg->msg_length);
	*w->inbox_tail = m;
	w->inbox_tail = &m->next;
	w->inbox_n++;
	w->inbox_bytes += m->len;
	if (w->inbox_n > INBOX_MAX || w->inbox_bytes > INBOX_BYTES)
		w->paused = 1; /* on_recv reads nothing more until the inbox drains */
	dispatch(w);
}

/* ---- wslay's context, only while a frame is on its way ---- */

static void on_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *arg,
			   void *user)
{
	(void)ctx;
	struct ws_conn *w = user;
	uint64_t len = arg->payload_length;
	/* 2 bytes, the minimal extended length, the client's mask key */
	w->frame_len = 2 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + 4 + len;
	w->in_frame = 1;
	if (!(arg->opcode & 0x8)) /* a data frame: a message goes on until fin */
		w->in_msg = !arg->fin;
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user)
{
	(void)ctx;
	struct ws_conn *w = user;
	w->framed += w->frame_len;
	w->in_frame = 0;
}

/* The connection's wslay context, made when it has none. NULL: out of memory. */
static wslay_event_context_ptr ctx_of(struct ws_conn *w)
{
	if (w->ctx)
		return w->ctx;
	struct wslay_event_callbacks cb = {.recv_callback = on_recv, .send_callback = on_send,
					   .on_msg_recv_callback = on_message,
					   .on_frame_recv_start_callback = on_frame_start,
					   .on_frame_recv_end_callback = on_frame_end};
	if (wslay_event_context_server_init(&w->ctx, &cb, w) != 0) {
		log_error("ws: out of memory");
		w->ctx = NULL;
		return NULL;
	}
	wslay_event_config_set_max_recv_msg_length(w->ctx, (uint64_t)cfg.max_body);
	w->fed = w->framed = 0;
	return w->ctx;
}

/* Let the context go if it holds nothing (see the design note). */
static void ctx_release_if_idle(struct ws_conn *w)
{
	wslay_event_context_ptr c = w->ctx;
	if (c == NULL || w->in_frame || w->in_msg || w->fed != w->framed || w->early.len > 0 ||
	    !wslay_event_get_read_enabled(c) || !wslay_event_get_write_enabled(c) ||
	    wslay_event_get_close_sent(c) || wslay_event_get_close_received(c) ||
	    wslay_event_want_write(c) || wslay_event_get_queued_msg_count(c) > 0)
		return;
	wslay_event_context_free(c);
	w->ctx = NULL;
}

/* Queue a text message (copied by wslay) and frame it into the queue. */
static void send_text(struct ws_conn *w, const char *text, size_t len)
{
	struct wslay_event_msg m = {.opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)text, .msg_length = len};
	wslay_event_context_ptr c = ctx_of(w);
	if (c && wslay_event_queue_msg(c, &m) == 0)
		wslay_event_send(c);
}

/* Queue a close frame and close the socket once it is written. Returns -1
 * when the connection is already destroyed (w may be freed). */
static int close_with(struct ws_conn *w, uint16_t code, const char *reason)
{
	metrics_ws_close(code);
	wslay_event_context_ptr c = w->upgraded ? ctx_of(w) : NULL;
	if (c) {
		wslay_event_queue_close(c, code, (const uint8_t *)reason, strlen(reason));
		wslay_event_send(c);
	}
	return held_close_after_flush(w->h);
}

/* After reading: write what wslay framed, and close once a close frame
 * has gone out, ours or the answer to the client's. We do not wait for the
 * client's answer to ours: a front server that got the client's FIN with
 * its last frame may never pass it on, and would hold both sockets. */
static int after_io(struct ws_conn *w)
{
	wslay_event_context_ptr c = w->ctx;
	if (c) {
		wslay_event_send(c);
		if (wslay_event_get_close_sent(c) || (!wslay_event_want_read(c) && !wslay_event_want_write(c)))
			return held_close_after_flush(w->h);
		ctx_release_if_idle(w);
	}
	held_want_input(w->h, may_read(w));
	return held_flush(w->h);
}

/* ---- the handshake ---- */

static void accept_key(const char *key, char out[29])
{
	unsigned char sha[SHA_DIGEST_LENGTH];
	char in[128];
	int n = snprintf(in, sizeof in, "%s%s", key, ws_guid);
	SHA1((const unsigned char *)in, (size_t)n, sha);
	EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

/* A handshake refused: an HTTP answer with the standard JSON error. */
static int refuse(struct ws_conn *w, sig_err e, const char *extra)
{
	json_object *o = core_error_reply(NULL, e);
	size_t len = 0;
	const char *body = jv_text(o, &len);
	int status = sig_err_status(e);
	metrics_error(MV_WS, e);
	buf_printf(held_out(w->h),
		   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n%s\n",
		   status, sig_http_reason(status), len + 1, extra ? extra : "", body);
	json_object_put(o);
	if (cfg.verbose)
		log_info("ws: handshake refused (%d)", status);
	return held_close_after_flush(w->h);
}

/* May a browser on this Origin use the socket, and may its cookie count?
 * The policy of the HTTP API (hp_origin_decide). */
static sig_err origin_check(const struct hp_upgrade *u, int *cookie_ok)
{
	enum hp_origin_verdict v = hp_origin_decide(u->origin, u->proto && strcasecmp(u->proto, "https") == 0, u->host,
					      cfg.allow_origin);
	*cookie_ok = v == HP_ORIGIN_SAME || v == HP_ORIGIN_LISTED;
	return v == HP_ORIGIN_FORBIDDEN ? SIG_E_FORBIDDEN_ORIGIN : SIG_OK;
}

static struct hp_trust ws_trust; /* --trust-proxy, parsed at start */

/* The client address: the last X-Forwarded-For entry is the one the front
 * server itself saw (earlier ones are the client's say); without one, the
 * peer of a TCP listener. The listener is for the front server only, so
 * that last entry is always believed; the ones before it only when it is a
 * --trust-proxy address (a load balancer in front of the front server),
 * by the rule of hp_client_addr. */
static void pick_remote(const struct hp_upgrade *u, int fd, char *out, size_t size)
{
	if (u->xff == NULL) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof sa;
		char host[64] = "-";
		if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.ss_family != AF_UNIX)
			getnameinfo((struct sockaddr *)&sa, len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
		snprintf(out, size, "%s", host);
		return;
	}
	char *before = xstrdup(u->xff);
	char *last = strrchr(before, ',');
	const char *seen = last ? last + 1 : before;
	if (last)
		*last = '\0';
	hp_client_addr(&ws_trust, seen, last ? before : NULL, NULL, out, size);
	free(before);
}

static void submit(struct ws_conn *w, struct msg *m, int implicit);
static struct msg *msg_new(const char *data, size_t len);
static int ws_readable(struct ws_conn *w);

static const sig_err upgrade_errors[] = {
	[HP_UPGRADE_BAD] = SIG_E_BAD_REQUEST,   [HP_UPGRADE_VERSION] = SIG_E_BAD_REQUEST,
	[HP_UPGRADE_TOO_LARGE] = SIG_E_TOO_LARGE, [HP_UPGRADE_NOT_FOUND] = SIG_E_NOT_FOUND,
	[HP_UPGRADE_METHOD] = SIG_E_METHOD,
};

static int handshake(struct ws_conn *w, size_t head_len)
{
	struct hp_upgrade u;
	struct hp_query q;
	int cookie_ok = 0, rc;
	int64_t last_id = 0;
	char key_out[29], token[CORE_TOKEN_LEN + 1];
	enum hp_upgrade_result ur = hp_upgrade_parse(w->head.data, head_len, &u);
	if (ur != HP_UPGRADE_OK) {
		rc = refuse(w, upgrade_errors[ur],
			    ur == HP_UPGRADE_VERSION ? "Sec-WebSocket-Version: 13\r\n"
			    : ur == HP_UPGRADE_METHOD ? "Allow: GET\r\n" : NULL);
		goto out;
	}
	if (hp_query_parse(u.query, &q) != 0 || hp_query_int(&q, "lastEventId", INT64_MAX, &last_id) != 0) {
		rc = refuse(w, SIG_E_BAD_REQUEST, NULL);
		goto out;
	}
	sig_err e = origin_check(&u, &cookie_ok);
	if (e != SIG_OK) {
		rc = refuse(w, e, NULL);
		goto out;
	}
	/* The cookie never attaches the socket by itself: it names whoever
	 * logged in last in this browser, not the page's session. It counts
	 * only for an auth message that asks for it (one without a token). */
	switch (hp_token_pick(u.auth, &q, cookie_ok ? u.cookie : NULL, token)) {
	case HP_TOKEN_COOKIE:
		memcpy(w->cookie, token, sizeof w->cookie);
		token[0] = '\0';
		break;
	case HP_TOKEN_TICKET: /* tickets are for /api/events and /api/poll; a socket has auth */
		token[0] = '\0';
		break;
	case HP_TOKEN_EXPLICIT:
	case HP_TOKEN_NONE:
		break;
	}
	pick_remote(&u, held_fd(w->h), w->remote, sizeof w->remote);

	accept_key(u.key, key_out);
	buf_printf(held_out(w->h),
		   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		   "Sec-WebSocket-Accept: %s\r\n\r\n", key_out);
	w->upgraded = 1;
	/* Bytes after the blank line already belong to the WebSocket. A
	 * buffer for them only when there are some: an append of none would
	 * still allocate one (256 bytes) and keep it for the socket's life. */
	if (w->head.len > head_len)
		buf_append(&w->early, w->head.data + head_len, w->head.len - head_len);
	buf_free(&w->head);
	w->last_recv_us = w->last_ping_us = util_mono_us();
	if (cfg.verbose)
		log_info("ws: open from %s", w->remote);
	if (token[0]) {
		/* A token on the upgrade (?token=, Authorization): as if the first
		 * message were an auth with it. */
		json_object *o = json_object_new_object();
		json_object_object_add(o, "type", json_object_new_string("auth"));
		json_object_object_add(o, "token", json_object_new_string(token));
		json_object_object_add(o, "lastEventId", json_object_new_int64(last_id));
		size_t len = 0;
		const char *text = jv_text(o, &len);
		submit(w, msg_new(text, len), 1);
		json_object_put(o);
	}
	rc = held_flush(w->h);
	if (rc == 0 && w->early.len > 0)
		rc = ws_readable(w);
out:
	hp_upgrade_free(&u);
	return rc;
}

static int read_handshake(struct ws_conn *w)
{
	for (;;) {
		char chunk[2048];
		ssize_t n = read(held_fd(w->h), chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return held_close_after_flush(w->h);
		size_t old = w->head.len;
		buf_append(&w->head, chunk, (size_t)n);
		/* Look for the blank line, including across the chunk boundary. */
		size_t from = old > 3 ? old - 3 : 0;
		char *end = memmem(w->head.data + from, w->head.len - from, "\r\n\r\n", 4);
		if (end)
			return handshake(w, (size_t)(end - w->head.data) + 4);
		if (w->head.len > HEAD_MAX)
			return refuse(w, SIG_E_TOO_LARGE, NULL);
	}
}

/* ---- the loop's side ---- */

static struct ws_conn *conn_new(void)
{
	struct ws_conn *w = xcalloc(1, sizeof *w);
	w->inbox_tail = &w->inbox;
	w->born_us = util_mono_us();
	return w;
}

/* The socket is readable (or hung up). Returns -1 when the connection was
 * destroyed, else 0. */
static int ws_readable(struct ws_conn *w)
{
	if (!w->upgraded)
		return read_handshake(w);
	if (w->reading) {
		w->again = 1; /* the outer call reads on */
		return 0;
	}
	w->reading = 1;
	int rc;
	do {
		w->again = 0;
		w->eof = 0;
		wslay_event_context_ptr c = ctx_of(w);
		int rv = c ? wslay_event_recv(c) : WSLAY_ERR_NOMEM;
		if (rv != 0) {
			if (cfg.verbose)
				log_info("ws: %s %s", w->remote, w->eof ? "went away" : "sent a malformed frame");
			if (c)
				wslay_event_send(c); /* a close wslay queued; a half-closed peer still reads */
			rc = held_close_after_flush(w->h);
			break;
		}
		rc = after_io(w);
	} while (rc == 0 && w->again);
	if (rc == 0)
		w->reading = 0; /* else w may be freed */
	return rc;
}

/* Once a second: ping, and close a client silent past the heartbeat timeout. */
static void ws_tick(struct ws_conn *w, int64_t now)
{
	if (!w->upgraded) {
		if (now - w->born_us > HANDSHAKE_TIMEOUT_US)
			held_close_after_flush(w->h);
		return;
	}
	if (now - w->last_recv_us > cfg.heartbeat_timeout * 1000000) {
		log_info("ws: closing %s: silent for %llds", w->remote, (long long)cfg.heartbeat_timeout);
		close_with(w, WSLAY_CODE_GOING_AWAY, "idle");
		return;
	}
	if (now - w->last_ping_us >= cfg.ws_ping * 1000000) {
		/* Keeps the front server's idle timer from cutting the socket; the
		 * client's pong shows it is alive. */
		struct wslay_event_msg ping = {.opcode = WSLAY_PING};
		w->last_ping_us = now;
		wslay_event_context_ptr c = ctx_of(w);
		if (c && wslay_event_queue_msg(c, &ping) == 0)
			after_io(w);
	}
}

/* The attached session ended, or another stream took it over: close with
 * 4001 (after the reply to a command in flight, which may explain it). */
static void ws_session_ended(struct ws_conn *w)
{
	if (w->busy) {
		w->end_pending = 1; /* the reply in flight (a logout?) comes first */
		return;
	}
	held_detach(w->h, 0);
	w->token[0] = '\0';
	close_with(w, WS_CLOSE_SESSION_ENDED, "session ended or taken over");
}

/* The process drains: the reconnect message, then close 1012. */
static void ws_reconnect(struct ws_conn *w, int64_t after)
{
	char msg[64];
	int n = snprintf(msg, sizeof msg, "{\"type\":\"reconnect\",\"after\":%lld}", (long long)after);
	send_text(w, msg, (size_t)n);
	metrics_add(MC_RECONNECTS_SENT, 1);
	close_with(w, WS_CLOSE_RESTART, "service restart");
}

static void conn_free(struct ws_conn *w)
{
	while (w->inbox) {
		struct msg *m = w->inbox;
		w->inbox = m->next;
		free(m);
	}
	if (w->ctx)
		wslay_event_context_free(w->ctx);
	buf_free(&w->head);
	buf_free(&w->early);
	free(w);
}

/* ---- the handlers of a WebSocket held connection (held.h) ---- */

static void drain_lingering(held *h)
{
	char scratch[4096];
	for (;;) {
		ssize_t n = read(held_fd(h), scratch, sizeof scratch);
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		held_destroy(h, 0); /* EOF: the client has our close */
		return;
	}
}

static int on_readable(held *h, int hup)
{
	struct ws_conn *w = held_data(h);
	if (w->lingering) {
		if (hup)
			held_destroy(h, 0);
		else
			drain_lingering(h);
		return -1;
	}
	if (ws_readable(w) != 0)
		return -1; /* destroyed */
	if (hup) {
		held_destroy(h, 1); /* even while not reading */
		return -1;
	}
	return 0;
}

/* Replies were written while reading was off: read on if we stopped. */
static int on_drained(held *h)
{
	struct ws_conn *w = held_data(h);
	if (w->upgraded && may_read(w)) {
		held_want_input(h, 1);
		return ws_readable(w); /* frames wslay already holds */
	}
	return 0;
}

/* Our close frame is written: linger (see the design note). */
static int on_finished(held *h)
{
	struct ws_conn *w = held_data(h);
	if (w->lingering)
		return 0;
	held_detach(h, 1);
	w->lingering = 1;
	w->linger_until_us = util_mono_us() + LINGER_US;
	shutdown(held_fd(h), SHUT_WR);
	held_watch(h, 1, 0);
	return 0;
}

static void on_tick(held *h, int64_t now)
{
	struct ws_conn *w = held_data(h);
	if (w->lingering) {
		if (now >= w->linger_until_us)
			held_destroy(h, 0);
		return;
	}
	if (!held_ending(h))
		ws_tick(w, now); /* pings; closes a silent client */
}

static void on_session_ended(held *h)
{
	ws_session_ended(held_data(h));
}

/* A round's events (evfmt_ws: one line each), one text message each. */
static void on_deliver(held *h, const buf *text, int count, int64_t last)
{
	(void)last;
	struct ws_conn *w = held_data(h);
	const char *t = text->data;
	size_t len = count > 0 ? text->len : 0;
	while (len > 0) {
		const char *nl = memchr(t, '\n', len);
		size_t n = nl ? (size_t)(nl - t) : len;
		send_text(w, t, n);
		n += nl != NULL;
		t += n;
		len -= n;
	}
	ctx_release_if_idle(w); /* all framed into the queue: nothing left in it */
}

/* The socket is gone; w is freed once no command of it is in flight. */
static void on_gone(held *h)
{
	struct ws_conn *w = held_data(h);
	w->h = NULL;
	if (!w->busy)
		conn_free(w);
}

static void on_drain(held *h, int64_t after)
{
	struct ws_conn *w = held_data(h);
	if (w->lingering)
		return;
	if (!w->upgraded) { /* still in its handshake: nothing to tell it yet */
		held_close_after_flush(h);
		return;
	}
	if (w->busy) {
		w->drain_after = after; /* the reply in flight goes first (apply) */
		return;
	}
	ws_reconnect(w, after);
}

static const struct held_ops ws_ops = {
	.name = "websocket", .transport = MT_WS, .readable = on_readable, .drained = on_drained, .finished = on_finished,
	.tick = on_tick, .session_ended = on_session_ended, .format = evfmt_ws, .deliver = on_deliver,
	.gone = on_gone, .drain = on_drain,
};

/* Every frame we send is a whole message, written at once: Nagle's
 * algorithm could only hold it back. Through nginx's TCP proxy it did, for
 * a delayed ACK each time (one-way p50 22 ms against 0.2 ms unix-socket
 * or lighttpd). A unix socket refuses the option, which is fine. */
static void no_delay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Accept what the listener has, as connections awaiting their handshake. */
static void on_accept(loop *l, int listen_fd, void *data, unsigned mask)
{
	(void)l;
	(void)data;
	(void)mask;
	for (int i = 0; i < 64; i++) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("hold: WebSocket accept: %s", strerror(errno));
			return;
		}
		no_delay(fd);
		struct ws_conn *w = conn_new();
		if ((w->h = held_new(fd, &ws_ops, w)) == NULL) {
			conn_free(w);
			return;
		}
	}
}

/* ---- commands ---- */

static void job_free(struct ws_job *j)
{
	free(j->m);
	free(j->reply);
	free(j);
}

static void submit(struct ws_conn *w, struct msg *m, int implicit)
{
	struct ws_job *j = xcalloc(1, sizeof *j);
	j->w = w;
	j->implicit = implicit;
	j->m = m;
	memcpy(j->token, w->token, sizeof j->token);
	memcpy(j->token_hash, w->token_hash, sizeof j->token_hash);
	memcpy(j->cookie, w->cookie, sizeof j->cookie);
	memcpy(j->remote, w->remote, sizeof j->remote);
	w->busy = 1;
	pthread_mutex_lock(&Q.lock);
	*Q.tail = j;
	Q.tail = &j->next;
	pthread_cond_signal(&Q.ready);
	pthread_mutex_unlock(&Q.lock);
}

/* Send the next waiting message to a command thread. */
static void dispatch(struct ws_conn *w)
{
	if (w->busy || w->inbox == NULL)
		return;
	struct msg *m = w->inbox;
	w->inbox = m->next;
	if (w->inbox == NULL)
		w->inbox_tail = &w->inbox;
	w->inbox_n--;
	w->inbox_bytes -= m->len;
	m->next = NULL;
	submit(w, m, 0); /* the job owns it now */
}

/* On the loop: a command's outcome reaches its connection. */
static void apply(struct loop_job *job)
{
	struct ws_job *j = (struct ws_job *)job;
	struct ws_conn *w = j->w;
	w->busy = 0;
	if (w->h == NULL) {
		conn_free(w);
		job_free(j);
		return;
	}
	send_text(w, j->reply, j->reply_len);
	if (j->detach || j->attach) {
		held_detach(w->h, j->release);
		w->token[0] = '\0';
		w->end_pending = 0; /* that was our own logout or a new login */
	}
	if (j->attach) {
		memcpy(w->token, j->new_token, sizeof w->token);
		memcpy(w->token_hash, j->new_hash, sizeof w->token_hash);
		held_attach(w->h, &j->stream, j->cursor);
		if (w->ctx && !wslay_event_get_write_enabled(w->ctx))
			held_detach(w->h, 1); /* our close is out: nothing more can be delivered here */
	}
	job_free(j);
	if (w->end_pending) {
		w->end_pending = 0;
		ws_session_ended(w);
		return;
	}
	if (w->drain_after) {
		ws_reconnect(w, w->drain_after);
		return;
	}
	dispatch(w);
	if (w->paused && w->inbox_n <= INBOX_MAX / 2 && w->inbox_bytes <= INBOX_BYTES / 2) {
		w->paused = 0;
		if (may_read(w) && ws_readable(w) != 0) /* what wslay or the socket already holds */
			return;
	}
	after_io(w);
}

/* The reply's text, for outcome e (a batch: errs[n] of its commands); an
 * error reply also says its HTTP status, which a WebSocket client has no
 * other way to see. */
static void set_reply(struct ws_job *j, json_object *reply, sig_err e, const sig_err *errs, int n)
{
	metrics_error(MV_WS, e);
	sig_err_put_status(reply, e);
	sig_err_put_batch_status(reply, errs, n);
	size_t len = 0;
	const char *s = jv_text(reply, &len);
	j->reply = xmalloc(len + 1);
	memcpy(j->reply, s, len + 1);
	j->reply_len = len;
}

/* {"type":"auth","token":T,"lastEventId":N}: attach an existing session.
 * Without "token", the upgrade's cookie is used, and only then: the
 * client asked for it. */
static void run_auth(core *c, struct ws_job *j, json_object *cmd, core_wakes *w)
{
	static const struct jv_field fields[] = {
		{"token", json_type_string, 0, CORE_TOKEN_LEN},
		{"lastEventId", json_type_int, 0, 0},
	};
	struct jv_fault why;
	sig_err e = jv_check(cmd, fields, sizeof fields / sizeof fields[0], &why);
	int64_t last = 0;
	json_object *v;
	if (e == SIG_OK && json_object_object_get_ex(cmd, "lastEventId", &v))
		last = json_object_get_int64(v);
	const char *token = e == SIG_OK ? jv_str(cmd, "token") : NULL;
	if (e == SIG_OK && token == NULL)
		token = j->cookie[0] ? j->cookie : NULL;
	if (e == SIG_OK)
		e = core_stream_open(c, token, last, Q.owner, &j->stream, w);
	json_object *reply;
	if (e != SIG_OK) {
		reply = core_error_reply_why("auth", e, e == SIG_E_INVALID_FIELD ? &why : NULL);
	} else {
		reply = json_object_new_object();
		json_object_object_add(reply, "type", json_object_new_string("auth"));
		json_object_object_add(reply, "success", json_object_new_boolean(1));
		json_object_object_add(reply, "userId", json_object_new_string(j->stream.user_id));
		json_object_object_add(reply, "lastEventId", json_object_new_int64(last));
		j->attach = 1;
		j->release = 1; /* a session attached before stays alive: let its stream go */
		j->cursor = last;
		snprintf(j->new_token, sizeof j->new_token, "%s", token);
		if (core_token_hash(j->new_token, j->new_hash) != 0)
			j->new_token[0] = '\0'; /* cannot happen (libcrypto's SHA-256); then commands are refused */
	}
	if (j->implicit) /* not an answer to anything the client sent */
		json_object_object_add(reply, "source", json_object_new_string("upgrade"));
	set_reply(j, reply, e, NULL, 0);
	json_object_put(reply);
}

static int is_auth(json_object *cmd)
{
	json_object *t;
	return json_object_is_type(cmd, json_type_object) && json_object_object_get_ex(cmd, "type", &t) &&
	       json_object_is_type(t, json_type_string) && strcmp(json_object_get_string(t), "auth") == 0;
}

/* What a job needs between taking it and answering it. */
struct ws_run {
	struct ws_job *j;
	core_result r;
	core_wakes opened;
	json_object *req; /* the message, parsed once (NULL: not JSON; the core answers it) */
	int in_group; /* a command for the group commit (else already answered) */
};

/* Rate limit, auth: what is answered without the group commit. */
static void run_before(core *c, struct ws_run *x)
{
	struct ws_job *j = x->j;
	json_object *cmd = NULL;
	int wait = rl_take('a', j->remote, (double)cfg.rate_ip, 2.0 * (double)cfg.rate_ip);
	if (wait > 0) {
		json_object *o = core_error_reply(NULL, SIG_E_RATE_LIMITED);
		json_object_object_add(o, "retryAfter", json_object_new_int(wait));
		set_reply(j, o, SIG_E_RATE_LIMITED, NULL, 0);
		json_object_put(o);
	} else if (jv_parse(j->m->data, j->m->len, &cmd) == SIG_OK && is_auth(cmd)) {
		run_auth(c, j, cmd, &x->opened);
	} else {
		x->in_group = 1; /* exactly what POST /api/cmd would do with this body */
		x->req = cmd;    /* which the core runs without parsing it again */
		return;
	}
	json_object_put(cmd);
}

/* After the commit: the reply, and a login makes this socket its stream. */
static void run_after(core *c, struct ws_run *x)
{
	struct ws_job *j = x->j;
	core_result *r = &x->r;
	set_reply(j, r->reply, r->err, r->item_err, r->items);
	if (r->logged_out)
		j->detach = 1;
	if (r->token[0]) {
		sig_err e = core_stream_open(c, r->token, 0, Q.owner, &j->stream, &x->opened);
		if (e == SIG_OK && core_token_hash(r->token, j->new_hash) == 0) {
			j->attach = 1;
			j->release = 1;
			memcpy(j->new_token, r->token, sizeof j->new_token);
		} else {
			log_warn("ws: logged in but could not open the stream (%s)", sig_err_code(e));
		}
	}
	if (r->first_type && r->err == SIG_OK &&
	    (strcmp(r->first_type, "login") == 0 || strcmp(r->first_type, "logout") == 0))
		log_info("%s: user %s from %s (WebSocket)", r->first_type, r->user_id[0] ? r->user_id : "?", j->remote);
}

/* Run what the queue held, from many sockets (one job per socket): their
 * commands go to the group commit together, not one thread each. */
static void run_jobs(core *c, struct ws_job **jobs, int n)
{
	struct ws_run *x = xcalloc((size_t)n, sizeof *x);
	struct group_item *items = xcalloc((size_t)n, sizeof *items);
	int m = 0;
	for (int i = 0; i < n; i++) {
		x[i].j = jobs[i];
		core_result_init(&x[i].r);
		run_before(c, &x[i]);
		if (x[i].in_group)
			items[m++] = (struct group_item){.token = jobs[i]->token[0] ? jobs[i]->token : NULL,
							 .token_hash = jobs[i]->token_hash, .remote = jobs[i]->remote,
							 .body = jobs[i]->m->data, .len = jobs[i]->m->len,
							 .req = x[i].req, .r = &x[i].r};
	}
	if (m > 0)
		group_exec_all(items, m);
	for (int i = 0; i < n; i++) {
		if (x[i].in_group)
			run_after(c, &x[i]);
		/* The reply reaches the loop before any bell this command rings. */
		x[i].j->job.run = apply;
		loop_post(Q.l, &x[i].j->job);
		bell_ring(&x[i].r.wakes);
		bell_ring(&x[i].opened);
		free(x[i].opened.v);
		json_object_put(x[i].req);
		core_result_free(&x[i].r);
	}
	free(items);
	free(x);
}

static void *ws_worker(void *arg)
{
	(void)arg;
	core *c = Q.make_core();
	if (c == NULL) {
		log_error("ws: cannot open the store for a command thread");
		return NULL;
	}
	for (;;) {
		struct ws_job *jobs[WS_BATCH];
		int n = 0;
		pthread_mutex_lock(&Q.lock);
		while (Q.head == NULL)
			pthread_cond_wait(&Q.ready, &Q.lock);
		while (Q.head && n < WS_BATCH) {
			jobs[n] = Q.head;
			Q.head = Q.head->next;
			jobs[n++]->next = NULL;
		}
		if (Q.head == NULL)
			Q.tail = &Q.head;
		pthread_mutex_unlock(&Q.lock);
		run_jobs(c, jobs, n);
	}
	return NULL;
}

/* On the loop: accept nothing more (a TCP listener's share goes to the
 * other processes on the port; a unix one is taken over by the next). */
static void stop_listening(struct loop_job *j)
{
	loop_del(Q.l, Q.listen_fd);
	close(Q.listen_fd);
	free(j);
}

void ws_drain(void)
{
	if (Q.l == NULL)
		return; /* not serving WebSocket */
	struct loop_job *j = xcalloc(1, sizeof *j);
	j->run = stop_listening;
	loop_post(Q.l, j);
}

int ws_start(loop *l, int listen_fd, int threads, int64_t owner, core_factory make_core)
{
	Q.tail = &Q.head;
	Q.listen_fd = listen_fd;
	Q.owner = owner;
	if (hp_trust_parse(cfg.trust_proxy, &ws_trust) != 0)
		return -1; /* main.c checked it: cannot happen */
	Q.make_core = make_core;
	Q.l = l;
	if (loop_add(l, listen_fd, LOOP_READABLE, on_accept, NULL) != 0) {
		log_error("ws: cannot watch the listener: %s", strerror(errno));
		return -1;
	}
	if (util_start_threads(threads, ws_worker) != 0) {
		log_error("ws: cannot start the command threads");
		return -1;
	}
	return 0;
}
