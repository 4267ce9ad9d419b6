/*
 * web.c - request threads of the FastCGI transport.
 *
 * Each thread takes a request with its own FCGX_Request, decides it from
 * the path and method, and answers through libfcgi. The body is capped
 * before it is read; query strings and cookies are parsed strictly (an
 * ambiguous request is a 400, never a guess). A stream or long-poll is
 * authenticated and claimed here, then its connection passes to held.c and
 * this thread is free again: held responses never pin a thread. The
 * connections come from fconn.c, new or kept (nginx's fastcgi_keep_conn):
 * a thread never waits on an idle one.
 *
 * It must never: touch the store (everything goes through the core), log a
 * token, or read more than --max-body bytes of a body (the rest of a body
 * refused unread is thrown away up to that, to keep its connection).
 */
#define _GNU_SOURCE
#include "transport/web.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "core/jsonv.h"
#include "core/ratelimit.h"
#include "deliver/bell.h"
#include "deliver/group.h"
#include "deliver/held.h"
#include "transport/fconn.h"
#include "transport/httpparse.h"

#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static int64_t web_owner;
static struct hp_trust web_trust; /* --trust-proxy, parsed at start */
static int web_listen_fd;
/* libfcgi keeps the web server's FCGI_KEEP_CONN flag here; FCGX has no
 * accessor for it (fcgiapp.h: "don't use anything below here"), and
 * nothing else says whether a connection outlives its request. */
#define KEPT(req) ((req)->keepConnection)
static _Atomic int web_busy; /* requests between accept and answer */
/* The drain's end (web_stop): request threads accept nothing more. */
#define WEB_THREADS_MAX 256
static _Atomic int web_stopping, web_alive, web_nthreads;
static _Atomic int web_looping; /* threads still taking connections (web_alive: still running) */
static pthread_t web_threads[WEB_THREADS_MAX];
static core_factory web_make_core;

_Static_assert(HP_TOKEN_LEN == CORE_TOKEN_LEN, "the transport and the core disagree on tokens");

/* The token and where it came from (see hp_token_pick). */
static enum hp_token_source find_token(FCGX_Request *req, const struct hp_query *q, char out[HP_TOKEN_LEN + 1])
{
	return hp_token_pick(FCGX_GetParam("HTTP_AUTHORIZATION", req->envp), q,
			  FCGX_GetParam("HTTP_COOKIE", req->envp), out);
}

/* ---- browsers from other sites ----
 * Default: same origin only. --allow-origin lists origins that may call
 * with credentials (CORS with Access-Control-Allow-Credentials); "*" lets
 * any origin call with an explicit token, never with the cookie. A request
 * without Origin (curl, native apps) is not a browser's cross-site call. */

/* Decide the Origin policy. Returns SIG_OK and fills cors (header lines,
 * "" when none are needed) or SIG_E_FORBIDDEN_ORIGIN. */
static sig_err origin_policy(FCGX_Request *req, enum hp_token_source src, char *cors, size_t size)
{
	cors[0] = '\0';
	const char *origin = FCGX_GetParam("HTTP_ORIGIN", req->envp);
	const char *https = FCGX_GetParam("HTTPS", req->envp);
	switch (hp_origin_decide(origin, https && strcmp(https, "on") == 0, FCGX_GetParam("HTTP_HOST", req->envp),
			      cfg.allow_origin)) {
	case HP_ORIGIN_SAME:
		return SIG_OK;
	case HP_ORIGIN_LISTED:
		snprintf(cors, size,
			 "Access-Control-Allow-Origin: %s\r\nAccess-Control-Allow-Credentials: true\r\n"
			 "Vary: Origin\r\n", origin);
		return SIG_OK;
	case HP_ORIGIN_TOKEN_ONLY:
		if (src == HP_TOKEN_COOKIE)
			return SIG_E_FORBIDDEN_ORIGIN;
		snprintf(cors, size, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", origin);
		return SIG_OK;
	case HP_ORIGIN_FORBIDDEN:
		break;
	}
	return SIG_E_FORBIDDEN_ORIGIN;
}

static void respond(FCGX_Request *req, int status, const char *headers, json_object *body)
{
	FCGX_FPrintF(req->out,
		     "Status: %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n%s\r\n",
		     status, sig_http_reason(status), headers ? headers : "");
	const char *method = FCGX_GetParam("REQUEST_METHOD", req->envp);
	if (body && !(method && strcmp(method, "HEAD") == 0)) {
		size_t len = 0;
		const char *s = jv_text(body, &len);
		FCGX_PutStr(s, (int)len, req->out);
		FCGX_PutChar('\n', req->out);
	}
}

static void respond_error(FCGX_Request *req, sig_err e, const char *headers)
{
	metrics_error(MV_HTTP, e);
	json_object *o = core_error_reply(NULL, e);
	respond(req, sig_err_status(e), headers, o);
	json_object_put(o);
}

/* Read the body into b, at most cfg.max_body bytes. */
static sig_err read_body(FCGX_Request *req, buf *b)
{
	const char *cl = FCGX_GetParam("CONTENT_LENGTH", req->envp);
	int64_t declared = -1;
	if (cl && *cl && util_parse_i64(cl, 0, INT64_MAX, &declared) != 0)
		return SIG_E_BAD_REQUEST;
	if (declared > cfg.max_body)
		return SIG_E_TOO_LARGE;
	char chunk[8192];
	for (;;) {
		int n = FCGX_GetStr(chunk, sizeof chunk, req->in);
		if (n <= 0)
			break;
		if ((int64_t)(b->len + (size_t)n) > cfg.max_body)
			return SIG_E_TOO_LARGE;
		buf_append(b, chunk, (size_t)n);
	}
	if (b->data == NULL)
		buf_append(b, "", 0);
	return SIG_OK;
}

/* Read what is left of the input, at most max bytes. Returns 1 when all
 * of it has been read (its end seen), 0 when some is left. */
static int read_to_eof(FCGX_Request *req, int64_t max)
{
	char junk[4096];
	for (int64_t got = 0; got < max && !FCGX_HasSeenEOF(req->in);) {
		int n = FCGX_GetStr(junk, sizeof junk, req->in);
		if (n <= 0)
			break;
		got += n;
	}
	return FCGX_HasSeenEOF(req->in) != 0;
}

/* How much unread input is read (and thrown away) to keep a connection,
 * whose next request must come first on it: a body refused unread (404,
 * 405, 429...) up to --max-body, nginx's client_max_body_size as shipped.
 * Closing instead, right after the answer, races nginx sending its next
 * request on the connection (502). */
static int64_t kept_input_max(void)
{
	return cfg.max_body;
}

/* 503 draining, with the Retry-After of the drain. */
static void respond_draining(FCGX_Request *req, const char *cors)
{
	char extra[448];
	snprintf(extra, sizeof extra, "%sRetry-After: %d\r\n", cors ? cors : "", core_draining());
	respond_error(req, SIG_E_DRAINING, extra);
}

/* The credential a request presented (find_token), found once per request. */
struct cred {
	enum hp_token_source src;
	char token[HP_TOKEN_LEN + 1]; /* "" when none of token length */
};

static void handle_cmd(FCGX_Request *req, const struct cred *cr, const char *remote, const char *cors)
{
	buf body = {0};
	sig_err e = read_body(req, &body);
	if (e != SIG_OK) {
		respond_error(req, e, cors);
		buf_free(&body);
		return;
	}
	/* A stream ticket opens a stream and authenticates nothing else. */
	const char *token = cr->src != HP_TOKEN_TICKET && cr->token[0] ? cr->token : NULL;
	core_result r;
	core_result_init(&r);
	/* Through the committer: answered after the group's commit. */
	group_exec(token, remote, body.data, body.len, &r);
	buf_free(&body);
	buf headers = {0};
	buf_puts(&headers, cors);
	const char *https = FCGX_GetParam("HTTPS", req->envp);
	const char *secure = https && strcmp(https, "on") == 0 ? "; Secure" : "";
	if (r.token[0])
		buf_printf(&headers,
			   "Set-Cookie: " HP_COOKIE_NAME "=%s; Path=/api/; HttpOnly; SameSite=Strict%s\r\n", r.token,
			   secure);
	else if (r.logged_out)
		buf_printf(&headers,
			   "Set-Cookie: " HP_COOKIE_NAME "=; Path=/api/; Max-Age=0; HttpOnly; SameSite=Strict%s\r\n",
			   secure);
	if (r.retry_after > 0) {
		buf_printf(&headers, "Retry-After: %d\r\n", r.retry_after);
		if (r.err == SIG_E_RATE_LIMITED && json_object_is_type(r.reply, json_type_object))
			json_object_object_add(r.reply, "retryAfter", json_object_new_int(r.retry_after));
	} else if (r.err == SIG_E_BUSY) { /* the store: locked past --busy-timeout, or away */
		buf_printf(&headers, "Retry-After: 1\r\n");
	}
	/* Bells before the answer: the commit is done, and the event is what the
	 * other side waits for (a bell never blocks). */
	bell_ring(&r.wakes);
	int status = sig_err_status(r.err);
	metrics_error(MV_HTTP, r.err);
	sig_err_put_batch_status(r.reply, r.item_err, r.items);
	respond(req, status, headers.data ? headers.data : "", r.reply);
	buf_free(&headers);
	if (r.first_type && status == 200 &&
	    (strcmp(r.first_type, "login") == 0 || strcmp(r.first_type, "logout") == 0))
		log_info("%s: user %s from %s", r.first_type, r.user_id[0] ? r.user_id : "?", remote);
	else if (cfg.verbose || status >= 500)
		log_msg(status >= 500 ? LOG_WARN : LOG_INFO, "cmd: %s by %s -> %d",
			r.first_type ? r.first_type : "?", r.user_id[0] ? r.user_id : "-", status);
	core_result_free(&r);
}

/* A long-poll re-opened in the process that answered the last one: take
 * over the claim that poll left (held_reclaim) and record its ack later,
 * so a poll cycle needs a read here and no write transaction. Returns 1
 * when h now holds the stream. */
static int reclaim_poll(core *c, const char *token, struct held_req *h)
{
	int ours = 0;
	if (token == NULL || core_stream_lookup(c, token, web_owner, &h->stream, &ours) != SIG_OK || !ours)
		return 0;
	h->ack = h->cursor;
	if (held_reclaim(h))
		return 1;
	h->ack = h->mark = 0;
	return 0;
}

/* Open an SSE stream or a long-poll. Returns 1 when the connection was
 * handed to the loop (the caller must not finish the request). */
static int handle_hold(core *c, FCGX_Request *req, const struct hp_query *q, const struct cred *cr,
		       enum held_kind kind, const char *cors)
{
	int64_t ack = 0, wait = cfg.poll_default;
	if (kind == HELD_SSE) {
		/* EventSource reconnects to the same URL with a newer Last-Event-ID
		 * header: when both are given, the larger cursor wins. */
		const char *hdr = FCGX_GetParam("HTTP_LAST_EVENT_ID", req->envp);
		int64_t from_query = 0;
		if ((hdr && *hdr && util_parse_i64(hdr, 0, INT64_MAX, &ack) != 0) ||
		    hp_query_int(q, "lastEventId", INT64_MAX, &from_query) != 0) {
			respond_error(req, SIG_E_BAD_REQUEST, cors);
			return 0;
		}
		if (from_query > ack)
			ack = from_query;
	} else if (hp_query_int(q, "since", INT64_MAX, &ack) != 0 ||
		   hp_query_int(q, "timeout", cfg.poll_max, &wait) != 0) {
		respond_error(req, SIG_E_BAD_REQUEST, cors);
		return 0;
	}
	if (core_draining()) { /* it would be told to reconnect at once */
		respond_draining(req, cors);
		return 0;
	}
	/* Where every held request costs a process, none is held longer. */
	if (cfg.max_stream > 0)
		wait = kind == HELD_SSE ? cfg.max_stream : (wait < cfg.max_stream ? wait : cfg.max_stream);
	const char *token = cr->token[0] ? cr->token : NULL;
	core_wakes w = {0};
	struct held_req h = {.fd = req->ipcFd, .request_id = req->requestId, .kind = kind,
			     .cursor = ack, .wait_ms = wait * 1000};
	sig_err e = SIG_OK;
	if (cr->src == HP_TOKEN_TICKET) /* ?ticket= from a "ticket" command: used up here */
		e = core_stream_open_ticket(c, token, ack, web_owner, &h.stream, &w);
	else if (!(kind == HELD_POLL && reclaim_poll(c, token, &h)))
		e = core_stream_open(c, token, ack, web_owner, &h.stream, &w);
	if (e != SIG_OK) {
		core_wakes_free(&w);
		respond_error(req, e, cors);
		return 0;
	}
	snprintf(h.headers, sizeof h.headers, "%s", cors);
	bell_ring(&w); /* tell a previous holder to let go */
	core_wakes_free(&w);
	/* A kept connection comes back to fconn when the response ends, for
	 * the web server's next request, which must then be the first thing
	 * on it: the end of this one's stdin is read here, while libfcgi
	 * still parses records (the loop would throw away the next request
	 * with it). */
	if (KEPT(req) && read_to_eof(req, kept_input_max()))
		h.keep = fconn_give_back;
	/* The connection now belongs to the loop: free libfcgi's
	 * buffers without closing it or writing an end of request. */
	FCGX_Free(req, 0);
	held_submit(&h);
	return 1;
}

static void handle_health(core *c, FCGX_Request *req)
{
	if (core_draining()) { /* a load balancer takes this process out now */
		respond_draining(req, NULL);
		return;
	}
	json_object *o = NULL;
	sig_err e = core_health(c, &o);
	if (e == SIG_E_BUSY) {
		/* The store cannot be reached (PostgreSQL down) or stays locked:
		 * 503, so a load balancer sends this node nothing for now. */
		o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "store", json_object_new_string("down"));
		json_object_object_add(o, "pid", json_object_new_int64(getpid()));
		respond(req, 503, "Retry-After: 1\r\n", o);
		json_object_put(o);
		return;
	}
	if (e != SIG_OK) {
		respond_error(req, e, NULL);
		return;
	}
	json_object_object_add(o, "store", json_object_new_string("up"));
	json_object_object_add(o, "pid", json_object_new_int64(getpid()));
	json_object_object_add(o, "held", json_object_new_int64(held_count()));
	respond(req, 200, NULL, o);
	json_object_put(o);
}

/* GET /api/metrics: the node's metrics in the Prometheus text format, for
 * the addresses of --metrics-allow only (a scrape names user counts and
 * load, nothing else; Prometheus scrapes from a known address). */
static void handle_metrics(core *c, FCGX_Request *req)
{
	const char *remote = FCGX_GetParam("REMOTE_ADDR", req->envp);
	if (!hp_addr_listed(cfg.metrics_allow, remote)) {
		respond_error(req, SIG_E_FORBIDDEN, NULL);
		return;
	}
	struct store_stats s;
	sig_err e = core_stats(c, &s);
	if (e != SIG_OK) {
		respond_error(req, e, NULL);
		return;
	}
	struct metrics_store ms = {.sessions = s.sessions, .rooms = s.rooms, .members = s.memberships,
				   .queued = s.events, .streams = s.streams};
	buf out = {0};
	metrics_render(&out, &ms);
	FCGX_FPrintF(req->out, "Status: 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
			       "Cache-Control: no-store\r\n\r\n");
	const char *method = FCGX_GetParam("REQUEST_METHOD", req->envp);
	if (!(method && strcmp(method, "HEAD") == 0))
		FCGX_PutStr(out.data, (int)out.len, req->out);
	buf_free(&out);
}

/* ---- the admin API ----
 * /api/admin/ACTION for operators holding the --admin-token (Bearer);
 * without --admin-token every such path is 404, as if it did not exist. */

/* Does the request present the admin token? Both sides are hashed first,
 * so the comparison takes the same time whatever the lengths. */
static int admin_token_ok(FCGX_Request *req)
{
	const char *t = hp_bearer(FCGX_GetParam("HTTP_AUTHORIZATION", req->envp));
	unsigned char want[32], got[32];
	unsigned int n1 = 0, n2 = 0;
	if (t == NULL ||
	    !EVP_Digest(cfg.admin_token, strlen(cfg.admin_token), want, &n1, EVP_sha256(), NULL) ||
	    !EVP_Digest(t, strlen(t), got, &n2, EVP_sha256(), NULL) || n1 != 32 || n2 != 32)
		return 0;
	return CRYPTO_memcmp(want, got, 32) == 0;
}

static void handle_admin(core *c, FCGX_Request *req, const char *action, const char *method)
{
	static const struct {
		const char *name;
		int post; /* an action (POST, a JSON body), else a listing (GET) */
		enum core_admin_action a;
	} routes[] = {
		{"rooms", 0, CORE_ADMIN_ROOMS}, {"bans", 0, CORE_ADMIN_BANS}, {"kick", 1, CORE_ADMIN_KICK},
		{"ban", 1, CORE_ADMIN_BAN},     {"unban", 1, CORE_ADMIN_UNBAN}, {"close", 1, CORE_ADMIN_CLOSE},
	};
	const char *remote = FCGX_GetParam("REMOTE_ADDR", req->envp);
	if (cfg.admin_token[0] == '\0') {
		respond_error(req, SIG_E_NOT_FOUND, NULL);
		return;
	}
	if (!admin_token_ok(req)) {
		log_warn("admin: %s refused: no or a wrong token from %s", action, remote ? remote : "-");
		respond_error(req, SIG_E_UNAUTHORIZED, "WWW-Authenticate: Bearer realm=\"signal-fcgi admin\"\r\n");
		return;
	}
	size_t k;
	for (k = 0; k < sizeof routes / sizeof routes[0]; k++)
		if (strcmp(action, routes[k].name) == 0)
			break;
	if (k == sizeof routes / sizeof routes[0]) {
		respond_error(req, SIG_E_NOT_FOUND, NULL);
		return;
	}
	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	if (routes[k].post ? strcmp(method, "POST") != 0 : !get) {
		respond_error(req, SIG_E_METHOD, routes[k].post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n");
		return;
	}
	buf body = {0};
	sig_err e = routes[k].post ? read_body(req, &body) : SIG_OK;
	if (e != SIG_OK) {
		respond_error(req, e, NULL);
		buf_free(&body);
		return;
	}
	core_result r;
	core_result_init(&r);
	core_admin(c, routes[k].a, remote, body.data, body.len, &r);
	buf_free(&body);
	bell_ring(&r.wakes); /* after the commit: the kicked and their rooms hear it now */
	metrics_error(MV_HTTP, r.err);
	respond(req, sig_err_status(r.err), NULL, r.reply);
	core_result_free(&r);
}

/* A random spread of 1..2 times wait seconds, in ms: a thousand clients
 * refused in one second must not all come back in the same one. */
static int64_t spread_ms(int wait)
{
	uint16_t r = 0;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
		r = (uint16_t)util_mono_us();
	return (int64_t)wait * 1000 + (int64_t)wait * 1000 * r / 65536;
}

/* Over the per-address rate. A command or a long-poll gets 429 with
 * Retry-After and the JSON error (with "retryAfter"). An EventSource gives
 * up for good on any answer but 200 text/event-stream (the HTML spec's
 * "fail the connection"), so a refused stream is answered inside one: a
 * retry: of the wait with a random spread, the error as one event without
 * an id (the cursor stays where it was), then the end of the stream. The
 * browser reconnects by itself after retry ms, to the same URL, ticket and
 * Last-Event-ID (the ticket was not used); signal.js reads the event and
 * waits as long with a new ticket. */
static void respond_rate_limited(FCGX_Request *req, int sse, int wait, const char *cors)
{
	metrics_error(MV_HTTP, SIG_E_RATE_LIMITED); /* counted as any refusal, whatever its form */
	json_object *o = core_error_reply(NULL, SIG_E_RATE_LIMITED);
	json_object_object_add(o, "retryAfter", json_object_new_int(wait));
	if (!sse) {
		char extra[448];
		snprintf(extra, sizeof extra, "%sRetry-After: %d\r\n", cors, wait);
		respond(req, sig_err_status(SIG_E_RATE_LIMITED), extra, o);
		json_object_put(o);
		return;
	}
	json_object_object_add(o, "status", json_object_new_int(sig_err_status(SIG_E_RATE_LIMITED)));
	size_t len = 0;
	const char *s = jv_text(o, &len);
	FCGX_FPrintF(req->out,
		     "Status: 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n%s"
		     "Retry-After: %d\r\n\r\nretry: %lld\n\ndata: ",
		     cors, wait, (long long)spread_ms(wait));
	FCGX_PutStr(s, (int)len, req->out);
	FCGX_PutS("\n\n", req->out);
	json_object_put(o);
}

/* Handle one request. Returns 1 when the connection was handed off. */
static int serve(core *c, FCGX_Request *req)
{
	const char *method = FCGX_GetParam("REQUEST_METHOD", req->envp);
	const char *uri = FCGX_GetParam("REQUEST_URI", req->envp);
	if (method == NULL || uri == NULL) {
		respond_error(req, SIG_E_BAD_REQUEST, NULL);
		return 0;
	}
	char path[64];
	size_t plen = strcspn(uri, "?");
	const char *qs = uri[plen] == '?' ? uri + plen + 1 : NULL;
	/* Served under a folder of a site (the call page at /signal/, its API
	 * at /signal/api/), the URI carries the folder: the path is ours from
	 * its first /api/ on. Run as a script (mod_fcgid: .htaccess rewrites
	 * DIR/api/X to DIR/signal.fcgi/api/X), PATH_INFO is the path below the
	 * program, which holds even for a folder itself named api. */
	const char *pinfo = FCGX_GetParam("PATH_INFO", req->envp);
	const char *pfrom = uri;
	if (pinfo && strncmp(pinfo, "/api/", 5) == 0) {
		pfrom = pinfo;
		plen = strlen(pinfo);
	} else if (strncmp(uri, "/api/", 5) != 0) {
		const char *at = strstr(uri, "/api/");
		if (at && at < uri + plen) {
			plen -= (size_t)(at - uri);
			pfrom = at;
		}
	}
	struct hp_query q;
	if (plen >= sizeof path) {
		respond_error(req, SIG_E_NOT_FOUND, NULL);
		return 0;
	}
	memcpy(path, pfrom, plen);
	path[plen] = '\0';
	if (hp_query_parse(qs, &q) != 0) {
		respond_error(req, SIG_E_BAD_REQUEST, NULL);
		return 0;
	}
	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	int is_cmd = strcmp(path, "/api/cmd") == 0;
	int is_hold = strcmp(path, "/api/events") == 0 || strcmp(path, "/api/poll") == 0;
	int is_admin = strncmp(path, "/api/admin/", 11) == 0;
	if (strcmp(path, "/api/health") == 0) {
		if (!get)
			respond_error(req, SIG_E_METHOD, "Allow: GET, HEAD\r\n");
		else
			handle_health(c, req);
		return 0;
	}
	if (strcmp(path, "/api/metrics") == 0) {
		if (!get)
			respond_error(req, SIG_E_METHOD, "Allow: GET, HEAD\r\n");
		else
			handle_metrics(c, req);
		return 0;
	}
	if (!is_cmd && !is_hold && !is_admin) {
		respond_error(req, SIG_E_NOT_FOUND, NULL);
		return 0;
	}
	struct cred cr;
	char cors[384];
	cr.src = find_token(req, &q, cr.token);
	sig_err e = origin_policy(req, strcmp(method, "OPTIONS") == 0 ? HP_TOKEN_EXPLICIT : cr.src, cors, sizeof cors);
	if (e != SIG_OK) {
		respond_error(req, e, "Vary: Origin\r\n");
		return 0;
	}
	if (strcmp(method, "OPTIONS") == 0) {
		/* CORS preflight: only an allowed cross-origin caller gets here with cors set. */
		if (cors[0] == '\0') {
			respond_error(req, SIG_E_FORBIDDEN_ORIGIN, NULL);
			return 0;
		}
		FCGX_FPrintF(req->out,
			     "Status: 204 No Content\r\n%sAccess-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
			     "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n"
			     "Access-Control-Max-Age: 600\r\n\r\n",
			     cors);
		return 0;
	}
	char remote[HP_ADDR_MAX];
	hp_client_addr(&web_trust, FCGX_GetParam("REMOTE_ADDR", req->envp), FCGX_GetParam("HTTP_X_FORWARDED_FOR", req->envp),
		       FCGX_GetParam("HTTP_X_REAL_IP", req->envp), remote, sizeof remote);
	int wait = rl_take('a', remote, (double)cfg.rate_ip, 2.0 * (double)cfg.rate_ip);
	if (wait > 0) {
		if (cfg.verbose)
			log_info("rate: %s over --rate-ip, retry after %d s", remote, wait);
		respond_rate_limited(req, is_hold && path[5] == 'e' && get, wait, cors);
		return 0;
	}
	if (is_admin) {
		handle_admin(c, req, path + 11, method);
		return 0;
	}
	if (is_cmd) {
		if (strcmp(method, "POST") != 0) {
			respond_error(req, SIG_E_METHOD, "Allow: POST, OPTIONS\r\n");
			return 0;
		}
		handle_cmd(req, &cr, remote, cors);
		return 0;
	}
	if (!get) {
		respond_error(req, SIG_E_METHOD, "Allow: GET, HEAD, OPTIONS\r\n");
		return 0;
	}
	return handle_hold(c, req, &q, &cr, path[5] == 'e' ? HELD_SSE : HELD_POLL, cors);
}

/* End a request answered by this thread. libfcgi closes with a lingering
 * close (shut down writing, then wait up to 2 s for the web server to close
 * its end), which parks this thread until the web server has run: a context
 * switch and three system calls per request. It only matters when input is
 * left unread, as closing on unread data may reset the connection before
 * our answer is read. So read what is left of a small input, and close at
 * once when it has all been read. A kept connection (nginx) is parked for
 * its next request, unless input is left (kept_input_max) or the process
 * is stopping. */
static void finish_request(FCGX_Request *req, int stopping)
{
	int all = read_to_eof(req, KEPT(req) ? kept_input_max() : 16 * 1024);
	if (all)
		req->detached = 1; /* libfcgi: a plain close() */
	if (!all || stopping)
		KEPT(req) = 0;
	FCGX_Finish_r(req); /* closes unless kept (or the connection failed) */
	if (req->ipcFd >= 0)
		fconn_park(req->ipcFd);
}

/* Serve the request waiting on connection fd (fconn_next): libfcgi reads
 * it from the connection we give it, as it does from a kept one, instead
 * of accepting one itself. */
static void serve_conn(core *c, int fd, int stopping)
{
	FCGX_Request req;
	/* No listener: should libfcgi find no request on fd, it closes fd and
	 * its accept on -1 fails at once instead of taking a connection. */
	FCGX_InitRequest(&req, -1, FCGI_FAIL_ACCEPT_ON_INTR);
	req.ipcFd = fd;
	KEPT(&req) = 1;    /* its FCGX_Finish_r of "the previous request" must not close fd */
	req.detached = 1;  /* and a broken one is closed without a lingering wait */
	int rc = FCGX_Accept_r(&req);
	if (rc < 0) { /* not a request (the web server closed, or garbage): fd is closed */
		FCGX_Free(&req, 0);
		if (cfg.verbose)
			log_info("web: a connection brought no request (%d)", rc);
		return;
	}
	req.detached = 0;
	metrics_add(MC_FCGI_REQUESTS, 1);
	/* Accepted is answered, even when web_stop has begun. */
	atomic_fetch_add(&web_busy, 1);
	if (!serve(c, &req))
		finish_request(&req, stopping);
	atomic_fetch_sub(&web_busy, 1);
}

static void serve_last(int fd, void *c)
{
	serve_conn(c, fd, 1);
}

static void *web_main(void *arg)
{
	(void)arg;
	core *c = web_make_core();
	if (c == NULL) {
		log_error("web: cannot open the store for a request thread");
		return NULL;
	}
	int me = atomic_fetch_add(&web_nthreads, 1);
	if (me < WEB_THREADS_MAX)
		web_threads[me] = pthread_self();
	atomic_fetch_add(&web_alive, 1);
	atomic_fetch_add(&web_looping, 1);
	for (;;) {
		/* web_stop: its signal (FCONN_INTR) sends us back to take what is
		 * ready without waiting; once nothing is (FCONN_NONE), we are done. */
		int stopping = atomic_load(&web_stopping);
		int fd = fconn_next(stopping);
		if (fd == FCONN_NONE)
			break;
		if (fd >= 0)
			serve_conn(c, fd, stopping);
	}
	/* The last one out closes the idle kept connections: nothing serves
	 * them any more, and nginx should see them closed now. */
	if (atomic_fetch_sub(&web_looping, 1) == 1) {
		int closed = fconn_close_parked(serve_last, c);
		if (closed)
			log_info("web: closed %d idle kept connection(s)", closed);
	}
	atomic_fetch_sub(&web_alive, 1);
	/* Parked, not gone: web_stop may still signal this thread, and a
	 * thread that has ended is no target for pthread_kill. The process
	 * exits in a moment. */
	for (;;)
		pause();
	return NULL;
}

static void on_stop_signal(int sig)
{
	(void)sig; /* only to make epoll_wait() (fconn_next) return EINTR */
}

int web_stop(int64_t wait_us)
{
	/* The listener (ours alone: lighttpd gives each process a socket of its
	 * own) dies with the process, and whatever connection waits in its
	 * queue then is reset, which lighttpd answers 500. So the threads take
	 * everything queued, without waiting for more, and answer it: the gap
	 * left before the exit is the last accept's, microseconds. Requests
	 * already sent on kept connections are answered the same way; the
	 * idle ones are closed once every thread is done, as late as can be
	 * (nginx may still send on one it has not seen closed yet). */
	/* (fconn made the listener non-blocking.) A unix listener shut for
	 * reading refuses new connections (lighttpd then starts our successor
	 * and sends the request there: it was never sent here) while what is
	 * queued can still be accepted: no gap at all.
	 * (A TCP one would reset its queue: it only gets the sweep.) */
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(web_listen_fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX)
		shutdown(web_listen_fd, SHUT_RD);
	atomic_store(&web_stopping, 1);
	int64_t until = util_mono_us() + wait_us;
	int n = atomic_load(&web_nthreads);
	if (n > WEB_THREADS_MAX)
		n = WEB_THREADS_MAX;
	/* Again and again: a thread may be just about to call accept() when a
	 * signal comes, and then blocks in it until the next. */
	while (atomic_load(&web_alive) > 0 && util_mono_us() < until) {
		for (int i = 0; i < n; i++)
			pthread_kill(web_threads[i], SIGUSR2);
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return atomic_load(&web_alive);
}

void web_drain(int own)
{
	/* Only a unix listener is shut here: it then refuses new connections
	 * (the front server sends them to another process) while what it has
	 * queued can still be accepted. A TCP listener shut down resets every
	 * connection in its queue, and nginx answers those 502 without
	 * retrying a POST: it keeps accepting until web_stop's sweep. */
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (!own || getsockname(web_listen_fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family != AF_UNIX)
		return;
	/* shutdown() makes the listener readable: the thread it wakes finds
	 * it shut and does not watch it again (close() would not wake it).
	 * Kept connections go on to be served until web_stop. */
	if (shutdown(web_listen_fd, SHUT_RDWR) != 0)
		log_warn("web: cannot shut the listener: %s", strerror(errno));
}

int web_inflight(void)
{
	return atomic_load(&web_busy);
}

int web_start(int listen_fd, int threads, int64_t owner, core_factory make_core)
{
	struct sigaction sa = {.sa_handler = on_stop_signal}; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);
	web_owner = owner;
	web_listen_fd = listen_fd;
	if (hp_trust_parse(cfg.trust_proxy, &web_trust) != 0)
		return -1; /* main.c checked it: cannot happen */
	web_make_core = make_core;
	if (fconn_start(listen_fd, (int)cfg.max_kept) != 0)
		return -1;
	if (util_start_threads(threads, web_main) != 0) {
		log_error("web: cannot start the request threads");
		return -1;
	}
	return 0;
}
