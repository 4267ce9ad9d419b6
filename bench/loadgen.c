/*
 * loadgen.c - load generator for the signaling service and, for comparison,
 * nginx's nchan module: one thread, epoll, non-blocking sockets, a minimal
 * HTTP/1.1 client (keep-alive, Content-Length and chunked bodies, SSE lines).
 *
 *   loadgen [--nchan] --port P CASE [args]
 *   loadgen --ports P1,P2,... CASE [args]   several nodes of one cluster
 *     latency sse|poll|ws N_WARM N     one pair ping-pong: one-way = RTT/2
 *     throughput ROOMS INFLIGHT SECS [ws]  pairs relaying, INFLIGHT requests each way
 *     held N [ws]                      N users each holding an SSE stream (or a
 *                                      WebSocket); then one message to each; waits
 *                                      for all (prints when)
 *     idle N SECS                      N held streams, no traffic, for SECS
 *     burst N                          one WebSocket sends N signals back to back to a
 *                                      peer reading on its own: how many were refused
 *                                      (mailbox-full), and whether all came in order
 *     oneway N_WARM N                  one sender POSTs, one SSE receiver: POST-to-event
 *                                      time (with two responder processes, lighttpd's
 *                                      least-connection balancing sends the POSTs to
 *                                      the process that does not hold the stream)
 *
 * With --ports (nodes of one cluster on one database), user i logs in (and
 * joins) at node i and holds its stream and sends its POSTs at node i+1, so
 * that every signal, sent by one member of a pair to the other, is posted at
 * one node and delivered by another (pairs are users 2r and 2r+1).
 *
 * With ws, each user has one WebSocket (/api/ws?token=T, the seed's way):
 * signals go out on it as text messages and events come back on it; the
 * framing is Debian's wslay, as in the responder.
 *
 * Prints one line of "key=value" results. Against our service it logs users
 * in and pairs them in rooms first; against nchan a user's channel is
 * /sub/USER (EventSource or long-poll) and publishing is POST /pub/USER.
 * The server's CPU and memory are measured by bench/run.sh, which pins the
 * server and this client to different cores.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

static int port;
static int ports[16], nports; /* --ports: the nodes */
static int nchan;
static int ws_mode; /* users send and receive on one WebSocket */
static int ep;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "loadgen: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* ---- blocking set-up requests ---- */

/* The node where user IDX logs in (SHIFT 0) or streams and posts (1). */
static int node_port(int idx, int shift)
{
	if (nports == 0 || idx < 0)
		return port;
	return ports[(idx + shift) % nports];
}

static int dial(int nonblock, int to_port)
{
	int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)to_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
		die("connect: %s", strerror(errno));
	return fd;
}

/* One request on a fresh blocking connection; returns the body (static). */
static const char *request(int to_port, const char *method, const char *path, const char *token, const char *body)
{
	static char resp[65536];
	char req[4096];
	int fd = dial(0, to_port);
	int n = snprintf(req, sizeof req,
			 "%s %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n%s%s%sContent-Length: %zu\r\n\r\n%s",
			 method, path, token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
			 body ? strlen(body) : 0, body ? body : "");
	if (write(fd, req, (size_t)n) != n)
		die("write");
	size_t len = 0;
	ssize_t r;
	while ((r = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	resp[len] = '\0';
	char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : resp;
}

static void login(int to_port, const char *user, char *token)
{
	char body[128];
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"%s\"}", user);
	const char *r = request(to_port, "POST", "/api/cmd", NULL, body);
	const char *t = strstr(r, "\"token\":\"");
	if (t == NULL)
		die("login %s: %s", user, r);
	memcpy(token, t + 9, 64);
	token[64] = '\0';
}

static void join(int to_port, const char *token, const char *room)
{
	char body[128];
	snprintf(body, sizeof body, "{\"type\":\"join\",\"roomId\":\"%s\"}", room);
	const char *r = request(to_port, "POST", "/api/cmd", token, body);
	if (strstr(r, "\"success\":true") == NULL)
		die("join %s: %s", room, r);
}

/* ---- connections ---- */

enum kind { K_POST, K_SSE, K_POLL, K_WS };

struct user;

struct conn {
	int fd;
	int port;             /* the node it is connected to */
	enum kind kind;
	struct user *u;       /* owner (receiver for SSE/POLL, sender for POST) */
	char in[65536];
	size_t inlen;
	int headers_done, chunked;
	long content_left;    /* Content-Length left, or chunk bytes left */
	int chunk_state;      /* 0 size line, 1 data, 2 CRLF after data */
	char line[65536];     /* SSE line being assembled */
	size_t linelen;
	int busy;             /* POST: a request is in flight */
	int must_close;       /* the server said Connection: close */
	char pending[1024];   /* POST: the next request */
	int64_t poll_since;
	char etag[64], last_modified[64]; /* nchan long-poll cursor */
	wslay_event_context_ptr ws; /* K_WS, once upgraded */
};

struct user {
	int idx;
	char name[32];
	char token[65];
	struct user *peer;
	struct conn *rx;      /* SSE or poll */
	struct conn **tx;     /* POST slots */
	int ntx;
	int64_t got;          /* messages received */
};

static void on_message(struct user *u, const char *json, size_t len);
static void send_signal(struct conn *c, struct user *to, int64_t t);

static void arm(struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void write_all(struct conn *c, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, buf, n);
		if (w > 0) {
			buf += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EAGAIN) {
			struct timespec ts = {0, 20000};
			nanosleep(&ts, NULL); /* requests are small: this almost never happens */
		} else if (w < 0 && errno != EINTR) {
			die("write: %s", strerror(errno));
		}
	}
}

static struct conn *conn_new(enum kind kind, struct user *u)
{
	struct conn *c = calloc(1, sizeof *c);
	c->port = node_port(u->idx, 1);
	c->fd = dial(1, c->port);
	c->kind = kind;
	c->u = u;
	arm(c, EPOLLIN);
	return c;
}

static void stream_request(struct conn *c)
{
	char req[512];
	int n;
	c->headers_done = c->chunked = 0;
	c->content_left = -1;
	c->chunk_state = 0;
	c->linelen = 0;
	if (nchan && c->kind == K_SSE)
		n = snprintf(req, sizeof req, "GET /sub/%s HTTP/1.1\r\nHost: b\r\nAccept: text/event-stream\r\n\r\n", c->u->name);
	else if (nchan && c->last_modified[0])
		n = snprintf(req, sizeof req, "GET /sub/%s HTTP/1.1\r\nHost: b\r\nIf-Modified-Since: %s\r\nIf-None-Match: %s\r\n\r\n",
			     c->u->name, c->last_modified, c->etag);
	else if (nchan)
		n = snprintf(req, sizeof req, "GET /sub/%s HTTP/1.1\r\nHost: b\r\n\r\n", c->u->name);
	else if (c->kind == K_SSE)
		n = snprintf(req, sizeof req, "GET /api/events HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n\r\n",
			     c->u->token);
	else if (c->kind == K_WS)
		n = snprintf(req, sizeof req,
			     "GET /api/ws?token=%s HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
			     c->u->token);
	else
		n = snprintf(req, sizeof req,
			     "GET /api/poll?since=%lld&timeout=25 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n\r\n",
			     (long long)c->poll_since, c->u->token);
	write_all(c, req, (size_t)n);
}

/* A body chunk of a response arrived. */
static void body_bytes(struct conn *c, const char *p, size_t n)
{
	if (c->kind == K_POST)
		return;
	if (c->kind == K_POLL) {
		if (c->linelen + n < sizeof c->line) {
			memcpy(c->line + c->linelen, p, n);
			c->linelen += n;
		}
		return;
	}
	for (size_t i = 0; i < n; i++) { /* SSE: lines */
		if (p[i] == '\n') {
			c->line[c->linelen] = '\0';
			if (c->linelen > 6 && memcmp(c->line, "data: ", 6) == 0)
				on_message(c->u, c->line + 6, c->linelen - 6);
			c->linelen = 0;
		} else if (c->linelen < sizeof c->line - 1) {
			c->line[c->linelen++] = p[i];
		}
	}
}

/* Servers end a keep-alive connection after so many requests (lighttpd and
 * nginx: 1000): open a new one in its place. */
static void redial(struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = dial(1, c->port);
	c->inlen = 0;
	c->headers_done = 0;
	c->must_close = 0;
	arm(c, EPOLLIN);
}

/* A whole response ended (POST and poll). */
static void response_done(struct conn *c)
{
	if (c->must_close)
		redial(c);
	if (c->kind == K_POST) {
		c->busy = 0;
		if (c->pending[0]) {
			size_t n = strlen(c->pending);
			c->busy = 1;
			write_all(c, c->pending, n);
			c->pending[0] = '\0';
		}
		return;
	}
	if (c->kind == K_POLL) {
		c->line[c->linelen] = '\0';
		if (nchan) {
			on_message(c->u, c->line, c->linelen);
			c->poll_since = 1;
		} else {
			/* {"events":[{...},{...}],"last":N}: each event has "t" */
			char *s = c->line;
			char *ev;
			while ((ev = strstr(s, "{\"id\":")) != NULL) {
				char *end = strchr(ev, '}');
				if (!end)
					break;
				on_message(c->u, ev, (size_t)(end - ev + 1));
				s = end + 1;
			}
			char *last = strstr(c->line, "\"last\":");
			if (last)
				c->poll_since = strtoll(last + 7, NULL, 10);
		}
		stream_request(c);
	}
}

/* A response ended; returns 1 when its connection was replaced (the
 * caller must stop parsing the old buffer). */
static int end_response(struct conn *c)
{
	int closing = c->must_close;
	c->headers_done = 0;
	response_done(c);
	return closing;
}

/* ---- WebSocket (wslay, client side) ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	(void)flags;
	struct conn *c = user;
	if (c->inlen > 0) { /* bytes that came with the 101 */
		size_t n = len < c->inlen ? len : c->inlen;
		memcpy(buf, c->in, n);
		memmove(c->in, c->in + n, c->inlen - n);
		c->inlen -= n;
		return (ssize_t)n;
	}
	ssize_t n = read(c->fd, buf, len);
	if (n > 0)
		return n;
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	die("server closed a WebSocket (%s)", c->u->name);
	return -1;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	(void)ctx;
	(void)flags;
	write_all(user, (const char *)data, len);
	return (ssize_t)len;
}

static int ws_mask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	(void)ctx;
	(void)user;
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)rand();
	return 0;
}

static void ws_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	(void)ctx;
	struct conn *c = user;
	if (arg->opcode != WSLAY_TEXT_FRAME)
		return;
	const char *m = (const char *)arg->msg;
	if (memmem(m, arg->msg_length, "\"type\":\"auth\"", 13)) {
		if (!memmem(m, arg->msg_length, "\"success\":true", 14))
			die("WebSocket auth failed: %.*s", (int)arg->msg_length, m);
		c->headers_done = 1; /* attached: events flow from here on */
		return;
	}
	on_message(c->u, m, arg->msg_length); /* replies have no "t": ignored */
}

static void ws_text(struct conn *c, const char *text, size_t len)
{
	struct wslay_event_msg m = {.opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)text, .msg_length = len};
	if (wslay_event_queue_msg(c->ws, &m) != 0 || wslay_event_send(c->ws) != 0)
		die("WebSocket send");
}

/* The upgrade's answer, then frames. */
static void ws_readable(struct conn *c)
{
	if (c->ws == NULL) {
		for (;;) {
			ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
			if (n > 0)
				c->inlen += (size_t)n;
			else if (n == 0)
				die("server closed a WebSocket during the upgrade");
			else
				break;
		}
		char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
		if (!end)
			return;
		if (strncmp(c->in, "HTTP/1.1 101", 12) != 0)
			die("upgrade refused: %.120s", c->in);
		size_t off = (size_t)(end - c->in) + 4;
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
		struct wslay_event_callbacks cb = {.recv_callback = ws_recv, .send_callback = ws_send,
						   .genmask_callback = ws_mask, .on_msg_recv_callback = ws_msg};
		if (wslay_event_context_client_init(&c->ws, &cb, c) != 0)
			die("wslay");
	}
	if (wslay_event_recv(c->ws) != 0 || wslay_event_send(c->ws) != 0)
		die("WebSocket of %s failed", c->u->name);
}

/* Parse what arrived on c. */
static void parse(struct conn *c)
{
	size_t off = 0;
	for (;;) {
		if (!c->headers_done) {
			char *end = memmem(c->in + off, c->inlen - off, "\r\n\r\n", 4);
			if (!end)
				break;
			*end = '\0';
			char *h = c->in + off;
			if (strncmp(h, "HTTP/1.1 200", 12) != 0 && strncmp(h, "HTTP/1.1 201", 12) != 0 &&
			    strncmp(h, "HTTP/1.1 202", 12) != 0)
				die("unexpected response on %s: %.120s", c->kind == K_POST ? "POST" : "stream", h);
			c->chunked = strcasestr(h, "transfer-encoding: chunked") != NULL;
			c->must_close = strcasestr(h, "connection: close") != NULL;
			if (nchan && c->kind == K_POLL) {
				char *lm = strcasestr(h, "last-modified: "), *et = strcasestr(h, "etag: ");
				if (lm)
					sscanf(lm + 15, "%63[^\r]", c->last_modified);
				if (et)
					sscanf(et + 6, "%63[^\r]", c->etag);
			}
			char *cl = strcasestr(h, "content-length:");
			c->content_left = cl ? strtol(cl + 15, NULL, 10) : -1;
			c->headers_done = 1;
			c->chunk_state = 0;
			c->linelen = 0;
			off = (size_t)(end - c->in) + 4;
			if (!c->chunked && c->content_left == 0 && end_response(c))
				return;
			continue;
		}
		if (!c->chunked) {
			size_t avail = c->inlen - off;
			if (avail == 0)
				break;
			size_t take = c->content_left >= 0 && (size_t)c->content_left < avail ? (size_t)c->content_left : avail;
			body_bytes(c, c->in + off, take);
			off += take;
			if (c->content_left >= 0) {
				c->content_left -= (long)take;
				if (c->content_left == 0 && end_response(c))
					return;
			}
			continue;
		}
		/* chunked */
		if (c->chunk_state == 0) {
			char *nl = memmem(c->in + off, c->inlen - off, "\r\n", 2);
			if (!nl)
				break;
			c->content_left = strtol(c->in + off, NULL, 16);
			off = (size_t)(nl - c->in) + 2;
			if (c->content_left == 0) {
				/* last chunk: skip the trailing CRLF */
				if (c->inlen - off < 2)
					break;
				off += 2;
				if (end_response(c))
					return;
				continue;
			}
			c->chunk_state = 1;
		} else if (c->chunk_state == 1) {
			size_t avail = c->inlen - off;
			if (avail == 0)
				break;
			size_t take = (size_t)c->content_left < avail ? (size_t)c->content_left : avail;
			body_bytes(c, c->in + off, take);
			off += take;
			c->content_left -= (long)take;
			if (c->content_left == 0)
				c->chunk_state = 2;
		} else {
			if (c->inlen - off < 2)
				break;
			off += 2;
			c->chunk_state = 0;
		}
	}
	memmove(c->in, c->in + off, c->inlen - off);
	c->inlen -= off;
}

static void on_readable(struct conn *c)
{
	if (c->kind == K_WS) {
		ws_readable(c);
		return;
	}
	for (;;) {
		ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
		if (n > 0) {
			c->inlen += (size_t)n;
			parse(c);
			continue;
		}
		if (n == 0 && c->kind == K_POST && !c->busy) {
			redial(c); /* an idle keep-alive connection timed out */
			return;
		}
		if (n == 0)
			die("server closed a connection (%s of %s)", c->kind == K_POST ? "POST" : "stream", c->u->name);
		if (errno == EAGAIN)
			return;
		if (errno != EINTR)
			die("read: %s", strerror(errno));
	}
}

static void send_signal(struct conn *c, struct user *to, int64_t t)
{
	char body[256], *req = c->busy ? c->pending : NULL, tmp[1024];
	int bl;
	if (nchan)
		bl = snprintf(body, sizeof body, "{\"type\":\"signal\",\"from\":\"%s\",\"t\":%lld}", c->u->name, (long long)t);
	else
		bl = snprintf(body, sizeof body, "{\"type\":\"signal\",\"to\":\"%s\",\"t\":%lld}", to->name, (long long)t);
	int n;
	if (c->kind == K_WS) {
		ws_text(c, body, (size_t)bl);
		return;
	}
	if (nchan)
		n = snprintf(tmp, sizeof tmp, "POST /pub/%s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s", to->name, bl, body);
	else
		n = snprintf(tmp, sizeof tmp,
			     "POST /api/cmd HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
			     c->u->token, bl, body);
	if (req) {
		memcpy(req, tmp, (size_t)n + 1);
		return;
	}
	c->busy = 1;
	write_all(c, tmp, (size_t)n);
}

/* ---- the cases ---- */

enum mode { M_LATENCY, M_THROUGHPUT, M_HELD, M_BURST } mode;
static struct user *users;
static int nusers;
static int64_t *samples;
static int nsamples, warm, want;
static int64_t delivered, deadline_us;
static int inflight;
static int oneway;
static int64_t burst_replies, burst_refused, burst_last_t, burst_out_of_order;
static char burst_first_error[256];

static int64_t field_t(const char *json, size_t len)
{
	const char *t = memmem(json, len, "\"t\":", 4);
	return t ? strtoll(t + 4, NULL, 10) : -1;
}

static void on_message(struct user *u, const char *json, size_t len)
{
	int64_t t = field_t(json, len);
	if (mode == M_BURST && t < 0 && memmem(json, len, "\"success\":", 10)) { /* a reply */
		burst_replies++;
		if (memmem(json, len, "\"success\":false", 15) && burst_refused++ == 0)
			snprintf(burst_first_error, sizeof burst_first_error, "%.*s", (int)(len < 200 ? len : 200), json);
		return;
	}
	if (t < 0)
		return; /* presence events */
	if (mode == M_BURST) {
		burst_out_of_order += t <= burst_last_t;
		burst_last_t = t;
	}
	u->got++;
	delivered++;
	int64_t now = now_us();
	if (mode == M_LATENCY && oneway) {
		if (warm > 0)
			warm--;
		else if (nsamples < want)
			samples[nsamples++] = now - t;
		if (nsamples < want)
			send_signal(u->peer->tx[0], u, now_us());
	} else if (mode == M_LATENCY) {
		/* a ping-pong: u is one end; reply to the peer, or count a round trip */
		if (u->idx == 0) {
			if (warm > 0)
				warm--;
			else if (nsamples < want)
				samples[nsamples++] = now - t;
			if (nsamples < want)
				send_signal(u->tx[0], u->peer, now);
		} else {
			send_signal(u->tx[0], u->peer, t); /* echo the originator's time back */
		}
	} else if (mode == M_THROUGHPUT) {
		if (now < deadline_us) {
			/* keep INFLIGHT messages in flight from the peer to u */
			struct user *s = u->peer;
			struct conn *slot = s->tx[u->got % s->ntx];
			send_signal(slot, u, now);
		}
	}
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void loop_until(int (*done)(void), int64_t limit_us)
{
	struct epoll_event evs[256];
	while (!done() && now_us() < limit_us) {
		int n = epoll_wait(ep, evs, 256, 100);
		for (int i = 0; i < n; i++)
			on_readable(evs[i].data.ptr);
	}
}

static void make_users(int n, int rooms_of, int ntx)
{
	nusers = n;
	users = calloc((size_t)n, sizeof *users);
	for (int i = 0; i < n; i++) {
		struct user *u = &users[i];
		u->idx = i;
		snprintf(u->name, sizeof u->name, "u%d", i);
		if (!nchan) {
			login(node_port(i, 0), u->name, u->token);
			char room[32];
			snprintf(room, sizeof room, "room%d", i / rooms_of);
			join(node_port(i, 0), u->token, room);
		}
		u->ntx = ntx;
		u->tx = calloc((size_t)(ntx ? ntx : 1), sizeof *u->tx);
		for (int k = 0; k < ntx && !ws_mode; k++)
			u->tx[k] = conn_new(K_POST, u);
	}
}

static void open_streams(enum kind kind)
{
	for (int i = 0; i < nusers; i++) {
		users[i].rx = conn_new(kind, &users[i]);
		stream_request(users[i].rx);
		/* A WebSocket carries the user's signals too. */
		for (int k = 0; kind == K_WS && k < users[i].ntx; k++)
			users[i].tx[k] = users[i].rx;
	}
}

/* Held cases: open the streams with at most OPEN_WINDOW waiting for their
 * headers, as thousands of browsers would arrive, rather than in one burst
 * that overflows the kernel's listen backlog (somaxconn) of the FastCGI
 * socket behind the front server. */
#define OPEN_WINDOW 512
static int open_waiting(int upto)
{
	int w = 0;
	for (int i = 0; i < upto; i++)
		w += users[i].rx && !users[i].rx->headers_done;
	return w;
}
static void open_streams_paced(enum kind kind, int64_t limit_us)
{
	int opened = 0;
	while (opened < nusers && now_us() < limit_us) {
		int room = OPEN_WINDOW - open_waiting(opened);
		for (; room > 0 && opened < nusers; room--, opened++) {
			users[opened].rx = conn_new(kind, &users[opened]);
			stream_request(users[opened].rx);
			for (int k = 0; kind == K_WS && k < users[opened].ntx; k++)
				users[opened].tx[k] = users[opened].rx;
		}
		struct epoll_event evs[256];
		int m = epoll_wait(ep, evs, 256, 10);
		for (int e = 0; e < m; e++)
			on_readable(evs[e].data.ptr);
	}
}

static int pending_done;
static int all_headers(void)
{
	for (int i = 0; i < nusers; i++)
		if (users[i].rx == NULL || (!users[i].rx->headers_done && (users[i].rx->kind == K_SSE || users[i].rx->kind == K_WS)))
			return 0;
	return 1;
}
static int latency_done(void)
{
	return nsamples >= want;
}
static int held_done(void)
{
	return delivered >= pending_done;
}
static int never(void)
{
	return 0;
}
static int burst_done(void)
{
	return burst_replies >= want && delivered + burst_refused >= want;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--nchan") == 0)
			nchan = 1;
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (strcmp(argv[i], "--ports") == 0 && i + 1 < argc)
			for (char *p = argv[++i]; *p && nports < 16; p += strcspn(p, ","), p += *p == ',')
				port = ports[nports++] = atoi(p);
	}
	if (port == 0 || i >= argc)
		die("usage: loadgen [--nchan] --port P latency|throughput|held|idle ...");
	ep = epoll_create1(0);
	const char *cas = argv[i++];
	if (strcmp(cas, "latency") == 0 && i + 2 < argc + 0 + 1) {
		mode = M_LATENCY;
		enum kind k = strcmp(argv[i], "poll") == 0 ? K_POLL : strcmp(argv[i], "ws") == 0 ? K_WS : K_SSE;
		ws_mode = k == K_WS;
		warm = atoi(argv[i + 1]);
		want = atoi(argv[i + 2]);
		samples = calloc((size_t)want, sizeof *samples);
		make_users(2, 2, 1);
		users[0].peer = &users[1];
		users[1].peer = &users[0];
		open_streams(k);
		loop_until(all_headers, now_us() + 5000000);
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
		send_signal(users[1].tx[0], &users[0], now_us());
		loop_until(latency_done, now_us() + 120000000);
		qsort(samples, (size_t)nsamples, sizeof *samples, cmp64);
		if (nsamples == 0)
			die("no samples");
		printf("case=latency transport=%s samples=%d oneway_p50_us=%lld oneway_p99_us=%lld oneway_max_us=%lld\n",
		       k == K_POLL ? "poll" : k == K_WS ? "ws" : "sse", nsamples, (long long)samples[nsamples / 2] / 2,
		       (long long)samples[nsamples * 99 / 100] / 2, (long long)samples[nsamples - 1] / 2);
		return 0;
	}
	if (strcmp(cas, "oneway") == 0 && i + 1 < argc) {
		mode = M_LATENCY;
		oneway = 1;
		warm = atoi(argv[i]);
		want = atoi(argv[i + 1]);
		samples = calloc((size_t)want, sizeof *samples);
		make_users(2, 2, 1);
		users[0].peer = &users[1];
		users[1].peer = &users[0];
		users[1].rx = conn_new(K_SSE, &users[1]);
		stream_request(users[1].rx);
		nusers = 2;
		users[0].rx = users[1].rx; /* all_headers() looks at both */
		loop_until(all_headers, now_us() + 5000000);
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
		send_signal(users[0].tx[0], &users[1], now_us());
		loop_until(latency_done, now_us() + 120000000);
		qsort(samples, (size_t)nsamples, sizeof *samples, cmp64);
		if (nsamples == 0)
			die("no samples");
		printf("case=oneway samples=%d p50_us=%lld p99_us=%lld max_us=%lld\n", nsamples,
		       (long long)samples[nsamples / 2], (long long)samples[nsamples * 99 / 100],
		       (long long)samples[nsamples - 1]);
		return 0;
	}
	if (strcmp(cas, "throughput") == 0 && i + 2 < argc + 1) {
		mode = M_THROUGHPUT;
		int rooms = atoi(argv[i]);
		inflight = atoi(argv[i + 1]);
		int secs = atoi(argv[i + 2]);
		ws_mode = i + 3 < argc && strcmp(argv[i + 3], "ws") == 0;
		make_users(rooms * 2, 2, inflight);
		for (int r = 0; r < rooms; r++) {
			users[2 * r].peer = &users[2 * r + 1];
			users[2 * r + 1].peer = &users[2 * r];
		}
		open_streams(ws_mode ? K_WS : K_SSE);
		loop_until(all_headers, now_us() + 10000000);
		struct timespec ts = {0, 300000000};
		nanosleep(&ts, NULL);
		int64_t t0 = now_us();
		deadline_us = t0 + (int64_t)secs * 1000000;
		printf("start\n");
		fflush(stdout);
		for (int u = 0; u < nusers; u++)
			for (int k = 0; k < inflight; k++)
				send_signal(users[u].tx[k], users[u].peer, now_us());
		loop_until(never, deadline_us);
		int64_t counted = delivered;
		int64_t t1 = now_us();
		printf("case=throughput rooms=%d inflight=%d seconds=%.2f delivered=%lld msgs_per_s=%.0f\n", rooms, inflight,
		       (double)(t1 - t0) / 1e6, (long long)counted, (double)counted * 1e6 / (double)(t1 - t0));
		return 0;
	}
	if (strcmp(cas, "burst") == 0 && i < argc) {
		mode = M_BURST;
		ws_mode = 1;
		want = atoi(argv[i]);
		make_users(2, 2, 1);
		users[0].peer = &users[1];
		users[1].peer = &users[0];
		open_streams(K_WS);
		loop_until(all_headers, now_us() + 10000000);
		int64_t t0 = now_us();
		for (int k = 0; k < want; k++) /* "t" is the sequence number here: the clock can repeat */
			send_signal(users[0].tx[0], &users[1], k + 1);
		loop_until(burst_done, now_us() + 60000000);
		printf("case=burst sent=%d replies=%lld refused=%lld delivered=%lld out_of_order=%lld seconds=%.2f\n", want,
		       (long long)burst_replies, (long long)burst_refused, (long long)delivered,
		       (long long)burst_out_of_order, (double)(now_us() - t0) / 1e6);
		if (burst_refused)
			printf("first refused: %s\n", burst_first_error);
		return 0;
	}
	if ((strcmp(cas, "held") == 0 || strcmp(cas, "idle") == 0) && i < argc) {
		mode = M_HELD;
		int n = atoi(argv[i]);
		ws_mode = strcmp(cas, "held") == 0 && i + 1 < argc && strcmp(argv[i + 1], "ws") == 0;
		make_users(n, 5, ws_mode);
		int64_t t0 = now_us();
		open_streams_paced(ws_mode ? K_WS : K_SSE, t0 + 120000000);
		loop_until(all_headers, now_us() + 120000000);
		int connected = 0;
		for (int u = 0; u < nusers; u++)
			connected += users[u].rx && users[u].rx->headers_done;
		printf("connected=%d connect_s=%.2f\n", connected, (double)(now_us() - t0) / 1e6);
		fflush(stdout);
		if (strcmp(cas, "idle") == 0) {
			int secs = i + 1 < argc ? atoi(argv[i + 1]) : 30;
			printf("idle-start\n");
			fflush(stdout);
			loop_until(never, now_us() + (int64_t)secs * 1000000);
			printf("case=idle streams=%d seconds=%d\n", connected, secs);
			return 0;
		}
		/* wait for run.sh to sample memory, then one message to each */
		printf("measure-memory\n");
		fflush(stdout);
		char go[16];
		if (fgets(go, sizeof go, stdin) == NULL)
			return 1;
		/* a few POST connections send one message to every user, round robin */
		int nslots = 16;
		struct user sender = {.idx = -1};
		snprintf(sender.name, sizeof sender.name, "sender");
		struct conn **slots = calloc((size_t)nslots, sizeof *slots);
		int64_t t1 = now_us();
		pending_done = n;
		int next = 0;
		for (int k = 0; k < nslots && !ws_mode; k++)
			slots[k] = conn_new(K_POST, nchan ? &sender : &users[0]);
		/* WebSocket: each room's first member sends to the others on its
		 * socket, and the second member to the first. */
		while (ws_mode && next < n) {
			struct user *to = &users[next];
			struct user *from = &users[(next % 5 == 0) ? (next + 1 < n ? next + 1 : next) : next - next % 5];
			send_signal(from->rx, to, now_us());
			next++;
		}
		/* ours: a signal needs a member of the same room; nchan: any publisher */
		while (next < n && now_us() - t1 < 120000000) {
			for (int k = 0; k < nslots && next < n; k++) {
				if (slots[k]->busy)
					continue;
				struct user *to = &users[next];
				struct user *from = nchan ? &sender : &users[(next % 5 == 0) ? next + 1 : next - next % 5];
				slots[k]->u = from;
				send_signal(slots[k], to, now_us());
				next++;
			}
			struct epoll_event evs[256];
			int m = epoll_wait(ep, evs, 256, 10);
			for (int e = 0; e < m; e++)
				on_readable(evs[e].data.ptr);
		}
		loop_until(held_done, now_us() + 60000000);
		printf("case=held streams=%d delivered=%lld deliver_s=%.2f\n", connected, (long long)delivered,
		       (double)(now_us() - t1) / 1e6);
		return 0;
	}
	die("unknown case %s", cas);
}
