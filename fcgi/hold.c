/*
 * hold.c - the held-connection loop: every SSE stream, waiting long-poll
 * and WebSocket connection of this process lives here, on one epoll thread.
 *
 * Design note. A request thread authenticates a stream, claims it in the
 * store and passes the FastCGI connection here; from then on this thread
 * alone writes to it. libfcgi's output streams block, and one slow reader
 * must never stall a thread or the other streams, so held responses are
 * written by this file as FastCGI STDOUT records (the 8-byte header of
 * fastcgi.h) on a non-blocking socket, from a small per-stream queue.
 *
 * Wake-ups come as session ids on the bell (bell.c) and mark streams dirty;
 * a dirty stream re-reads its mailbox after its cursor, all dirty streams
 * in one store transaction. A wake-up from this process's own threads also
 * carries the event it is for, which goes straight to the stream when the
 * stream has written everything before it (deliver_now): no store read. A stream whose queue is above the low-water
 * mark reads nothing more: events wait in the mailbox, not in memory, so a
 * reader that never reads costs at most one queue. Once a second the loop
 * sends keepalives, ends long-polls that waited long enough, and closes
 * streams whose writes made no progress for --write-timeout seconds.
 * Every few seconds it refreshes its sessions' heartbeat (an open stream
 * counts as alive) and re-checks the store for events whose bell was lost.
 *
 * WebSocket connections (ws.c) share the loop: this file accepts them,
 * writes the bytes ws.c frames, and delivers a session's events to the
 * connection that ws.c attached to it, exactly as to an SSE stream.
 *
 * It must never: block on a socket, hold the store's write lock while
 * writing to a socket, or read more events for a stream whose queue is
 * above QUEUE_LOW.
 */
#define _GNU_SOURCE
#include "hold.h"
#include "bell.h"
#include "config.h"
#include "log.h"
#include "util.h"
#include "ws.h"

#include <errno.h>
#include <fastcgi.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define QUEUE_LOW (32 * 1024)  /* read more events only below this */
#define PULL_LIMIT 64          /* events per stream per round */
#define MAX_EVENTS 256
#define TABLE_BITS 14
#define RECHECK_MAX 1024
#define LINGER_US 2000000      /* a closed WebSocket drains the client this long at most */

struct held {
	int fd;
	int request_id;
	enum hold_kind kind;
	core_stream cs;
	int64_t cursor;
	int64_t deadline_us;   /* HOLD_POLL */
	int64_t last_write_us; /* keepalive clock */
	int64_t stall_us;      /* when the queue last made no progress, 0 none */
	buf out;               /* FastCGI records (WebSocket frames) waiting for the socket */
	int dirty, more, ending, gone, want_out, no_input;
	int lingering;         /* HOLD_WS: our close is out, draining the client until EOF */
	int released;          /* the store already knows no stream holds the session */
	struct ws_conn *ws;    /* HOLD_WS: the protocol state; cs.session is 0 until attached */
	char *headers;         /* extra header lines (CORS) for a poll's answer, or NULL */
	int64_t sent_mark;     /* newest event id written out, not yet recorded in the store */
	int64_t ack_pending;   /* a reclaimed poll's acknowledgement, not yet recorded */
	struct held *next_dirty;
	struct held *next_dead;        /* destroyed, freed by bury() */
	struct held *hnext;            /* session hash chain */
	struct held *prev, *next;      /* all held */
};

/* A wake from a thread of this process, with the event it carries if any
 * (struct core_wake). */
struct local_wake {
	int64_t session, event_id, prev_id;
	char *body; /* owned; NULL without an event */
	size_t len;
};

/* Hand-over queue from other threads: held requests, or work to run here. */
struct pending {
	struct hold_req req;
	void (*fn)(void *);
	void *arg;
	struct pending *next;
};

static struct {
	core *c;
	int64_t owner;
	int ep, efd, bell, ws_listen;
	pthread_mutex_t lock;
	struct pending *queue;
	struct local_wake *wakes; /* rung from this process's threads */
	int nwakes, capwakes;
	struct held *table[1 << TABLE_BITS];
	struct held *all;
	struct held *dirty;
	struct held *dead;     /* destroyed this round: events of the batch may still name them */
	struct poll_done {
		core_stream cs;
		int64_t mark, ack;
	} *done;               /* answered long-polls, for the next flush_marks(); under lock */
	int ndone, capdone;
	_Atomic int64_t count;
} H = {.lock = PTHREAD_MUTEX_INITIALIZER, .ws_listen = -1};

int64_t hold_count(void)
{
	return atomic_load(&H.count);
}

static unsigned slot(int64_t session)
{
	return (unsigned)(((uint64_t)session * 11400714819323198485ull) >> (64 - TABLE_BITS));
}

static struct held *find(int64_t session)
{
	for (struct held *h = H.table[slot(session)]; h; h = h->hnext)
		if (h->cs.session == session)
			return h;
	return NULL;
}

static void table_remove(struct held *h)
{
	for (struct held **p = &H.table[slot(h->cs.session)]; *p; p = &(*p)->hnext) {
		if (*p == h) {
			*p = h->hnext;
			return;
		}
	}
}

static void mark_dirty(struct held *h)
{
	if (h->dirty || h->gone)
		return;
	h->dirty = 1;
	h->next_dirty = H.dirty;
	H.dirty = h;
}

/* ---- FastCGI records ---- */

static void record(buf *b, int type, int request_id, const char *data, size_t len)
{
	FCGI_Header hdr = {
		.version = FCGI_VERSION_1,
		.type = (unsigned char)type,
		.requestIdB1 = (unsigned char)((request_id >> 8) & 0xff),
		.requestIdB0 = (unsigned char)(request_id & 0xff),
		.contentLengthB1 = (unsigned char)((len >> 8) & 0xff),
		.contentLengthB0 = (unsigned char)(len & 0xff),
	};
	buf_append(b, &hdr, sizeof hdr);
	if (len)
		buf_append(b, data, len);
}

/* Queue data as STDOUT records of at most 65535 bytes each. */
static void put_stdout(struct held *h, const char *data, size_t len)
{
	while (len > 0) {
		size_t n = len > 65535 ? 65535 : len;
		record(&h->out, FCGI_STDOUT, h->request_id, data, n);
		data += n;
		len -= n;
	}
}

/* Queue the end of the response: an empty STDOUT and END_REQUEST. */
static void put_end(struct held *h)
{
	FCGI_EndRequestBody end = {.protocolStatus = FCGI_REQUEST_COMPLETE};
	record(&h->out, FCGI_STDOUT, h->request_id, NULL, 0);
	record(&h->out, FCGI_END_REQUEST, h->request_id, (const char *)&end, sizeof end);
	h->ending = 1;
}

/* ---- lifecycle ---- */

static void set_events(struct held *h, int out, int no_input)
{
	if (h->want_out == out && h->no_input == no_input)
		return;
	struct epoll_event ev = {.events = (no_input ? 0 : EPOLLIN | EPOLLRDHUP) | (out ? EPOLLOUT : 0),
				 .data.ptr = h};
	epoll_ctl(H.ep, EPOLL_CTL_MOD, h->fd, &ev);
	h->want_out = out;
	h->no_input = no_input;
}

static void set_epoll_out(struct held *h, int on)
{
	set_events(h, on, h->no_input);
}

static void destroy(struct held *h, int release)
{
	if (release && h->cs.session && !h->released && core_stream_close(H.c, &h->cs) != SIG_OK)
		log_warn("hold: could not release stream of session %lld", (long long)h->cs.session);
	epoll_ctl(H.ep, EPOLL_CTL_DEL, h->fd, NULL);
	close(h->fd);
	if (h->cs.session)
		table_remove(h);
	if (h->ws) {
		ws_conn_gone(h->ws);
		h->ws = NULL;
	}
	if (h->prev)
		h->prev->next = h->next;
	else
		H.all = h->next;
	if (h->next)
		h->next->prev = h->prev;
	buf_free(&h->out);
	free(h->headers);
	h->headers = NULL;
	h->gone = 1;
	atomic_fetch_sub(&H.count, 1);
	/* The current epoll batch or the dirty list may still name it: it is
	 * freed by bury(), between rounds. */
	h->next_dead = H.dead;
	H.dead = h;
}

/* Free what was destroyed, once nothing names it: no event batch is being
 * read and no dirty list holds it. */
static void bury(void)
{
	struct held **p = &H.dead;
	while (*p) {
		struct held *h = *p;
		if (h->dirty) {
			p = &h->next_dead;
			continue;
		}
		*p = h->next_dead;
		free(h);
	}
}

/* A WebSocket whose close frame is written: let go of the session, send
 * our FIN and read (and drop) what the client still sends until its EOF or
 * LINGER_US. Closing at once, with its data unread, would reset the
 * connection and could destroy our close frame before the client reads it. */
static int linger(struct held *h)
{
	if (h->lingering)
		return 0;
	held_detach(h, 1);
	h->lingering = 1;
	h->deadline_us = mono_us() + LINGER_US;
	shutdown(h->fd, SHUT_WR);
	set_events(h, 0, 0);
	return 0;
}

static void drain_lingering(struct held *h)
{
	char scratch[4096];
	for (;;) {
		ssize_t n = read(h->fd, scratch, sizeof scratch);
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		destroy(h, 0); /* EOF: the client has our close */
		return;
	}
}

/* Write what the socket takes. Returns 0, or -1 when the stream died (and
 * was destroyed). */
static int flush(struct held *h)
{
	int64_t now = mono_us();
	while (h->out.len > 0) {
		ssize_t n = write(h->fd, h->out.data, h->out.len);
		if (n > 0) {
			buf_consume(&h->out, (size_t)n);
			h->last_write_us = now;
			h->stall_us = 0;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (h->stall_us == 0)
				h->stall_us = now;
			set_epoll_out(h, 1);
			return 0;
		}
		destroy(h, !h->ending); /* the web server went away */
		return -1;
	}
	set_epoll_out(h, 0);
	if (h->out.cap > 4 * QUEUE_LOW)
		buf_free(&h->out); /* an idle stream keeps no big buffer */
	if (h->kind == HOLD_WS && h->no_input && !h->ending) {
		ws_drained(h->ws);
		return h->gone ? -1 : 0;
	}
	if (h->ending) {
		if (h->kind == HOLD_WS)
			return linger(h);
		/* A finished long-poll lets go of the session until the next poll. */
		destroy(h, h->kind == HOLD_POLL);
		return -1;
	}
	if (h->more)
		mark_dirty(h);
	return 0;
}

static const char sse_head[] = "Status: 200 OK\r\n"
			       "Content-Type: text/event-stream\r\n"
			       "Cache-Control: no-cache, no-store\r\n"
			       "X-Accel-Buffering: no\r\n";
static const char poll_head[] = "Status: 200 OK\r\n"
				"Content-Type: application/json\r\n"
				"Cache-Control: no-store\r\n";

/* A newer stream of the same session in this process ends the old one. */
static void end_older(int64_t session)
{
	struct held *old = find(session);
	if (old == NULL)
		return;
	table_remove(old);
	old->cs.session = 0; /* the newer stream holds it now: nothing to release */
	if (old->kind == HOLD_WS) {
		ws_session_ended(old->ws);
	} else if (!old->ending) {
		put_end(old);
		flush(old);
	}
}

static void adopt(const struct hold_req *r)
{
	end_older(r->stream.session);
	/* libfcgi accepted the connection blocking; from here on no write may
	 * wait, or one stuck reader would stall every stream of the process. */
	int fl = fcntl(r->fd, F_GETFL);
	if (fl < 0 || fcntl(r->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		log_error("hold: cannot make stream socket non-blocking: %s", strerror(errno));
		close(r->fd);
		return;
	}
	struct held *h = xcalloc(1, sizeof *h);
	h->fd = r->fd;
	h->request_id = r->request_id;
	h->kind = r->kind;
	h->cs = r->stream;
	h->cursor = r->cursor;
	h->sent_mark = r->mark;
	h->ack_pending = r->ack;
	h->last_write_us = mono_us();
	h->deadline_us = h->last_write_us + r->wait_ms * 1000;
	if (h->kind == HOLD_POLL && r->headers[0])
		h->headers = xstrdup(r->headers);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = h};
	if (epoll_ctl(H.ep, EPOLL_CTL_ADD, h->fd, &ev) != 0) {
		log_error("hold: epoll_ctl: %s", strerror(errno));
		close(h->fd);
		free(h);
		return;
	}
	unsigned s = slot(h->cs.session);
	h->hnext = H.table[s];
	H.table[s] = h;
	h->next = H.all;
	if (H.all)
		H.all->prev = h;
	H.all = h;
	atomic_fetch_add(&H.count, 1);
	if (h->kind == HOLD_SSE) {
		char retry[32];
		int n = snprintf(retry, sizeof retry, "retry: %lld\n\n", (long long)cfg.retry_ms);
		buf tmp = {0};
		buf_append(&tmp, sse_head, sizeof sse_head - 1);
		buf_puts(&tmp, r->headers);
		buf_append(&tmp, "\r\n", 2);
		buf_append(&tmp, retry, (size_t)n);
		put_stdout(h, tmp.data, tmp.len);
		buf_free(&tmp);
	}
	/* Events committed before we registered found no stream to wake:
	 * the first pull picks them up. */
	mark_dirty(h);
	if (cfg.verbose)
		log_info("hold: %s open for %s (session %lld) after %lld", h->kind == HOLD_SSE ? "stream" : "poll",
			 h->cs.user_id, (long long)h->cs.session, (long long)h->cursor);
}

/* ---- delivery ---- */

struct pull_ctx {
	struct held *h;
	buf *text;
	int count;
	int64_t last;
};

static void splice_event(buf *t, int64_t id, const char *body, size_t len)
{
	/* body is a JSON object from the core: "{...}"; put the id first. */
	buf_printf(t, "{\"id\":%lld", (long long)id);
	if (len > 2)
		buf_append(t, ",", 1);
	buf_append(t, body + 1, len - 1);
}

static int on_event(void *ctx, int64_t id, const char *body, size_t len)
{
	struct pull_ctx *p = ctx;
	if (p->h->kind == HOLD_SSE) {
		buf_printf(p->text, "id: %lld\ndata: ", (long long)id);
		splice_event(p->text, id, body, len);
		buf_append(p->text, "\n\n", 2);
	} else if (p->h->kind == HOLD_WS) {
		/* One message per event; one-line JSON, so a newline separates them. */
		splice_event(p->text, id, body, len);
		buf_append(p->text, "\n", 1);
	} else {
		if (p->count > 0)
			buf_append(p->text, ",", 1);
		splice_event(p->text, id, body, len);
	}
	p->count++;
	p->last = id;
	return 0;
}

static void lost_notice(struct pull_ctx *p, int64_t lost_upto)
{
	char body[96];
	int n = snprintf(body, sizeof body, "{\"type\":\"events-lost\",\"after\":%lld}", (long long)p->h->cursor);
	on_event(p, lost_upto, body, (size_t)n);
	log_warn("hold: session %lld resumed after %lld but events up to %lld were trimmed",
		 (long long)p->h->cs.session, (long long)p->h->cursor, (long long)lost_upto);
}

static void send_ws_events(struct held *h, const char *text, size_t len)
{
	while (len > 0) {
		const char *nl = memchr(text, '\n', len);
		size_t n = nl ? (size_t)(nl - text) : len;
		ws_send_event(h->ws, text, n);
		n += nl != NULL;
		text += n;
		len -= n;
	}
}

/* Queue formatted events (on_event) on an SSE stream or a WebSocket. */
static void emit_events(struct held *h, const buf *text)
{
	if (h->kind == HOLD_SSE)
		put_stdout(h, text->data, text->len);
	else
		send_ws_events(h, text->data, text->len);
}

/* Answer a long-poll with the events in text (on_event's, comma-separated)
 * and its new cursor `last`, and end it. */
static void answer_poll(struct held *h, const buf *text, int64_t last)
{
	buf resp = {0};
	buf_append(&resp, poll_head, sizeof poll_head - 1);
	if (h->headers)
		buf_puts(&resp, h->headers);
	buf_append(&resp, "\r\n", 2);
	buf_printf(&resp, "{\"events\":[%s],\"last\":%lld}\n", text->data ? text->data : "", (long long)last);
	put_stdout(h, resp.data, resp.len);
	buf_free(&resp);
	h->cursor = last;
	put_end(h);
}

/* Pull one stream's new events into its queue. Returns 0, or -1 when the
 * stream must end (session gone or replaced). */
static int pull(struct held *h)
{
	buf text = {0};
	struct pull_ctx p = {.h = h, .text = &text};
	int64_t lost_upto = 0;
	h->more = 0;
	sig_err e = core_stream_pull(H.c, &h->cs, h->cursor, PULL_LIMIT, on_event, &p, &lost_upto);
	if (e == SIG_E_UNAUTHORIZED) {
		buf_free(&text);
		return -1;
	}
	if (e == SIG_OK && lost_upto > h->cursor) {
		/* Report the gap first, then what followed it. */
		buf rest = text;
		struct pull_ctx q = {.h = h, .text = &text};
		memset(&text, 0, sizeof text);
		lost_notice(&q, lost_upto);
		if (rest.len) {
			if (h->kind == HOLD_POLL)
				buf_append(&text, ",", 1);
			buf_append(&text, rest.data, rest.len);
		}
		buf_free(&rest);
		p.count += q.count;
		if (p.last < lost_upto)
			p.last = lost_upto;
	}
	if (e != SIG_OK) {
		buf_free(&text);
		h->more = 1; /* try again on the next round */
		return 0;
	}
	if (p.count > 0)
		h->sent_mark = p.last; /* recorded in the store by flush_marks() */
	if (h->kind == HOLD_SSE || h->kind == HOLD_WS) {
		if (p.count > 0) {
			emit_events(h, &text);
			h->cursor = p.last;
			h->more = p.count >= PULL_LIMIT;
		}
	} else if (p.count > 0 || mono_us() >= h->deadline_us) {
		answer_poll(h, &text, p.count ? p.last : h->cursor);
	}
	buf_free(&text);
	return 0;
}

/* A long-poll about to answer. */
static int answering_poll(const struct held *h)
{
	return h->kind == HOLD_POLL && h->ending && !h->gone;
}

/* Put answered long-polls (back) on the list for the next flush. */
static void done_add(const struct poll_done *d, int n)
{
	pthread_mutex_lock(&H.lock);
	if (H.ndone + n > H.capdone) {
		H.capdone = H.ndone + n > 64 ? 2 * (H.ndone + n) : 64;
		H.done = xrealloc(H.done, (size_t)H.capdone * sizeof *H.done);
	}
	memcpy(H.done + H.ndone, d, (size_t)n * sizeof *d);
	H.ndone += n;
	pthread_mutex_unlock(&H.lock);
}

/* Record what a stream or finished poll has not yet recorded. */
static sig_err record_one(const core_stream *cs, int64_t mark, int64_t ack)
{
	sig_err e = SIG_OK;
	if (ack)
		e = core_stream_ack(H.c, cs, ack);
	if (e == SIG_OK && mark)
		e = core_stream_sent(H.c, cs, mark);
	return e;
}

/* Record, in one write transaction, the sent marks (and reclaimed polls'
 * acknowledgements) of the streams in list (linked by next) and, with
 * finished, what answered long-polls left to record: their marks and the
 * release of their sessions. On failure it all stays pending for the next
 * time. The answered polls are taken off the shared list first, so a
 * request thread's hold_reclaim() sees each either still there or gone. */
static void record_marks(struct held *list, int finished)
{
	struct poll_done *done = NULL;
	int ndone = 0;
	if (finished) {
		pthread_mutex_lock(&H.lock);
		done = H.done;
		ndone = H.ndone;
		H.done = NULL;
		H.ndone = H.capdone = 0;
		pthread_mutex_unlock(&H.lock);
	}
	int any = ndone > 0;
	for (struct held *h = list; h && !any; h = h->next)
		any = (h->sent_mark || h->ack_pending) && !h->gone;
	if (!any) {
		free(done);
		return;
	}
	sig_err e = core_marks_begin(H.c);
	if (e == SIG_OK) {
		for (struct held *h = list; h && e == SIG_OK; h = h->next)
			if (!h->gone)
				e = record_one(&h->cs, h->sent_mark, h->ack_pending);
		for (int i = 0; i < ndone && e == SIG_OK; i++)
			if ((e = record_one(&done[i].cs, done[i].mark, done[i].ack)) == SIG_OK)
				e = core_stream_release(H.c, &done[i].cs);
		core_delivery_end(H.c, e == SIG_OK);
	}
	if (e == SIG_OK) {
		for (struct held *h = list; h; h = h->next)
			if (!h->gone)
				h->sent_mark = h->ack_pending = 0;
	} else if (ndone > 0) {
		done_add(done, ndone);
	}
	free(done);
}

/* An answering long-poll leaves its marks and the release of its session
 * to the next flush (within a second), so its answer waits for no commit:
 * the client's next poll acknowledges what it got anyway, the mailbox cap
 * lags a second as for SSE (erring on the side of refusing), and a newer
 * claim of the session makes the late release a no-op. A next poll of the
 * same session in this process before that flush takes the claim over
 * (hold_reclaim): a poll cycle then writes nothing at all. */
static void finish_poll(struct held *h)
{
	struct poll_done d = {.cs = h->cs, .mark = h->sent_mark, .ack = h->ack_pending};
	done_add(&d, 1);
	h->sent_mark = h->ack_pending = 0;
	h->released = 1;
}

int hold_reclaim(struct hold_req *r)
{
	int found = 0;
	pthread_mutex_lock(&H.lock);
	for (int i = 0; i < H.ndone; i++) {
		struct poll_done *d = &H.done[i];
		if (d->cs.session != r->stream.session || d->cs.gen != r->stream.gen)
			continue;
		r->mark = d->mark;
		if (d->ack > r->ack)
			r->ack = d->ack;
		*d = H.done[--H.ndone];
		found = 1;
		break;
	}
	pthread_mutex_unlock(&H.lock);
	return found;
}

static void run_dirty(void)
{
	if (H.dirty == NULL)
		return;
	struct held *list = H.dirty;
	H.dirty = NULL;
	int in_txn = core_delivery_begin(H.c) == SIG_OK;
	for (struct held *h = list; h; h = h->next_dirty) {
		if (h->gone || h->ending || !in_txn || h->cs.session == 0)
			continue;
		if (h->out.len >= QUEUE_LOW) {
			h->more = 1; /* resumes when the socket drains */
			continue;
		}
		if (pull(h) != 0) {
			h->ending = 2; /* replaced or logged out */
		}
	}
	if (in_txn)
		core_delivery_end(H.c, 1);
	for (struct held *h = list; h; h = h->next_dirty)
		if (answering_poll(h))
			finish_poll(h);
	/* Writes happen after the commit: never write while holding the lock. */
	for (struct held *h = list, *next; h; h = next) {
		next = h->next_dirty;
		h->dirty = 0;
		h->next_dirty = NULL;
		if (h->gone)
			continue; /* freed by bury() */
		if (!in_txn) {
			mark_dirty(h);
			continue;
		}
		if (h->ending == 2) {
			h->ending = 0;
			if (h->kind == HOLD_WS) {
				ws_session_ended(h->ws); /* may close, or wait for a reply in flight */
				continue;
			}
			put_end(h);
		}
		flush(h);
	}
}

/* ---- periodic work ---- */

/* Record in the store, in one write transaction, what each stream has
 * written out since the last flush. Deliveries themselves only read, so a
 * message costs one write transaction (its sender's) instead of two; the
 * marks only feed the mailbox cap and the replay window, which can lag a
 * second (the cap then errs on the side of refusing). */
static void flush_marks(void)
{
	record_marks(H.all, 1);
}

static void tick(int64_t now)
{
	static const char keepalive[] = ": keepalive\n\n";
	for (struct held *h = H.all, *next; h; h = next) {
		next = h->next;
		if (h->out.len > 0 && h->stall_us && now - h->stall_us > cfg.write_timeout * 1000000) {
			log_warn("hold: closing stream of %s (session %lld): no write progress for %llds, %zu bytes queued",
				 h->cs.user_id, (long long)h->cs.session, (long long)cfg.write_timeout, h->out.len);
			destroy(h, !h->ending);
			continue;
		}
		if (h->lingering && now >= h->deadline_us) {
			destroy(h, 0);
			continue;
		}
		if (h->ending)
			continue;
		if (h->kind == HOLD_WS) {
			ws_tick(h->ws, now); /* pings; closes a silent client */
		} else if (h->kind == HOLD_POLL && now >= h->deadline_us) {
			mark_dirty(h); /* answers with what there is, maybe nothing */
		} else if (h->kind == HOLD_SSE && h->out.len == 0 &&
			   now - h->last_write_us >= cfg.keepalive * 1000000) {
			put_stdout(h, keepalive, sizeof keepalive - 1);
			flush(h);
		}
	}
}

/* The safety net under the bell: look at every event committed since the
 * last look, in id order, a page at a time, and wake the streams of this
 * process they are for. A few pages per call bound the work per tick. */
static void recheck(int64_t *seen_max)
{
	static int64_t sids[RECHECK_MAX];
	int woken = 0;
	for (int page = 0; page < 8; page++) {
		int n = 0;
		int64_t next = *seen_max;
		if (core_recent_recipients(H.c, H.owner, *seen_max, sids, RECHECK_MAX, &n, &next) != SIG_OK)
			return;
		for (int i = 0; i < n; i++) {
			struct held *h = find(sids[i]);
			if (h && !h->dirty) {
				mark_dirty(h);
				woken++;
			}
		}
		*seen_max = next;
		if (n < RECHECK_MAX)
			break;
	}
	if (woken > 0)
		log_debug("hold: re-check woke %d stream(s)", woken);
}

/* ---- the loop ---- */

static void accept_ws(void);

static void take_queue(void)
{
	uint64_t v;
	ssize_t r = read(H.efd, &v, sizeof v);
	(void)r;
	pthread_mutex_lock(&H.lock);
	struct pending *q = H.queue;
	H.queue = NULL;
	pthread_mutex_unlock(&H.lock);
	/* The queue is LIFO; reverse so streams are adopted in arrival order. */
	struct pending *rev = NULL;
	while (q) {
		struct pending *n = q->next;
		q->next = rev;
		rev = q;
		q = n;
	}
	while (rev) {
		struct pending *n = rev->next;
		if (rev->fn)
			rev->fn(rev->arg);
		else
			adopt(&rev->req);
		free(rev);
		rev = n;
	}
}

/* Wake-ups from this process's own threads (bell_set_local): the wakes of
 * w for this process, each taking over the event it carries. */
static void hold_wake_local(core_wakes *w, int64_t owner)
{
	pthread_mutex_lock(&H.lock);
	if (H.nwakes + w->n > H.capwakes) {
		H.capwakes = (H.nwakes + w->n) * 2;
		H.wakes = xrealloc(H.wakes, (size_t)H.capwakes * sizeof *H.wakes);
	}
	for (int i = 0; i < w->n; i++) {
		struct core_wake *k = &w->v[i];
		if (k->owner != owner)
			continue;
		struct local_wake *lw = &H.wakes[H.nwakes++];
		*lw = (struct local_wake){.session = k->session};
		if (k->event_id && k->body) {
			lw->body = k->body; /* taken: the wake's owner frees NULL */
			k->body = NULL;
			lw->len = k->len;
			lw->event_id = k->event_id;
			lw->prev_id = k->prev_id;
		}
	}
	pthread_mutex_unlock(&H.lock);
	uint64_t one = 1;
	ssize_t r = write(H.efd, &one, sizeof one);
	(void)r;
}

/* Write an event that a thread of this process has just committed straight
 * to its stream (or as the answer of a waiting long-poll), without reading
 * the store. Only when nothing can be missing before it (the stream has
 * written every event of the session up to the one before it) and nothing
 * else is pending for the stream. Returns 1 when the event needs nothing
 * more, 0 when the stream must pull. */
static int deliver_now(struct held *h, const struct local_wake *lw)
{
	if (lw->event_id <= h->cursor && !h->dirty)
		return 1; /* a pull got it first */
	if (h->dirty || h->ending || h->lingering || h->more || h->out.len >= QUEUE_LOW ||
	    h->cursor < lw->prev_id)
		return 0;
	buf text = {0};
	struct pull_ctx p = {.h = h, .text = &text};
	on_event(&p, lw->event_id, lw->body, lw->len);
	h->sent_mark = lw->event_id;
	if (h->kind == HOLD_POLL) {
		answer_poll(h, &text, lw->event_id);
		finish_poll(h); /* its marks and release go with the next flush */
	} else {
		emit_events(h, &text);
		h->cursor = lw->event_id;
	}
	buf_free(&text);
	flush(h); /* may destroy h */
	return 1;
}

static void take_local_wakes(void)
{
	static struct local_wake *mine;
	static int cap;
	pthread_mutex_lock(&H.lock);
	int n = H.nwakes;
	if (n > cap) {
		cap = n;
		mine = xrealloc(mine, (size_t)cap * sizeof *mine);
	}
	if (n)
		memcpy(mine, H.wakes, (size_t)n * sizeof *mine);
	H.nwakes = 0;
	pthread_mutex_unlock(&H.lock);
	for (int i = 0; i < n; i++) {
		struct held *h = find(mine[i].session);
		if (h && !(mine[i].event_id && deliver_now(h, &mine[i])))
			mark_dirty(h);
		free(mine[i].body);
	}
}

static void ring_received(void)
{
	int64_t ids[BELL_BATCH];
	int n;
	while ((n = bell_read(H.bell, ids)) >= 0) {
		for (int i = 0; i < n; i++) {
			struct held *h = find(ids[i]);
			if (h)
				mark_dirty(h);
		}
	}
}

static void on_socket(struct held *h, uint32_t events)
{
	if (h->gone)
		return; /* destroyed earlier in this batch */
	if (h->kind == HOLD_WS && h->lingering) {
		if (events & (EPOLLHUP | EPOLLERR))
			destroy(h, 0);
		else
			drain_lingering(h);
		return;
	}
	if (h->kind == HOLD_WS) {
		if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			if (ws_readable(h->ws) != 0)
				return; /* destroyed */
			if (events & (EPOLLHUP | EPOLLERR)) {
				destroy(h, 1); /* even while not reading */
				return;
			}
		}
		if (!h->gone && (events & EPOLLOUT))
			flush(h);
		return;
	}
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		/* The web server sends nothing more on a held request but its end
		 * of stdin; anything readable is drained, EOF means it hung up. */
		char scratch[512];
		for (;;) {
			ssize_t n = read(h->fd, scratch, sizeof scratch);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				if (cfg.verbose)
					log_info("hold: %s (session %lld) went away", h->cs.user_id, (long long)h->cs.session);
				destroy(h, !h->ending);
				return;
			}
			break;
		}
	}
	if (events & EPOLLOUT)
		flush(h);
}

static void *hold_main(void *arg)
{
	(void)arg;
	struct epoll_event evs[MAX_EVENTS];
	int64_t next_tick = mono_us() + 1000000;
	int64_t refresh_every = cfg.heartbeat_timeout * 1000000 / 3;
	if (refresh_every > cfg.keepalive * 1000000)
		refresh_every = cfg.keepalive * 1000000;
	int64_t next_refresh = mono_us() + refresh_every;
	int64_t next_recheck = mono_us() + cfg.recheck * 1000000;
	int64_t seen_max = INT64_MAX;
	recheck(&seen_max); /* learn the newest event id: re-checks look past it */
	for (;;) {
		int64_t now = mono_us();
		int timeout = H.dirty ? 0 : (int)((next_tick - now) / 1000 + 1);
		if (timeout < 0)
			timeout = 0;
		int n = epoll_wait(H.ep, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("hold: epoll_wait: %s", strerror(errno));
			continue;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == &H.efd) {
				take_queue();
				take_local_wakes();
			}
			else if (evs[i].data.ptr == &H.bell)
				ring_received();
			else if (evs[i].data.ptr == &H.ws_listen)
				accept_ws();
			else
				on_socket(evs[i].data.ptr, evs[i].events);
		}
		run_dirty();
		bury();
		now = mono_us();
		if (now >= next_tick) {
			next_tick = now + 1000000;
			tick(now);
			flush_marks();
			if (now >= next_refresh) {
				next_refresh = now + refresh_every;
				if (H.all && core_streams_refresh(H.c, H.owner) != SIG_OK)
					log_warn("hold: heartbeat refresh failed; will retry");
			}
			if (now >= next_recheck) {
				next_recheck = now + cfg.recheck * 1000000;
				if (H.all == NULL)
					seen_max = INT64_MAX; /* nothing held: only learn the newest id */
				recheck(&seen_max);
			}
		}
	}
	return NULL;
}

int hold_start(core *c, int64_t owner, int bell_fd)
{
	H.c = c;
	H.owner = owner;
	H.bell = bell_fd;
	H.ep = epoll_create1(EPOLL_CLOEXEC);
	H.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (H.ep < 0 || H.efd < 0) {
		log_error("hold: epoll/eventfd: %s", strerror(errno));
		return -1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &H.efd};
	epoll_ctl(H.ep, EPOLL_CTL_ADD, H.efd, &ev);
	ev.data.ptr = &H.bell;
	epoll_ctl(H.ep, EPOLL_CTL_ADD, H.bell, &ev);
	if (H.ws_listen >= 0) {
		ev.data.ptr = &H.ws_listen;
		epoll_ctl(H.ep, EPOLL_CTL_ADD, H.ws_listen, &ev);
	}
	bell_set_local(owner, hold_wake_local);
	pthread_t t;
	if (pthread_create(&t, NULL, hold_main, NULL) != 0) {
		log_error("hold: cannot start thread");
		return -1;
	}
	pthread_detach(t);
	return 0;
}

static void enqueue(struct pending *p)
{
	pthread_mutex_lock(&H.lock);
	p->next = H.queue;
	H.queue = p;
	pthread_mutex_unlock(&H.lock);
	uint64_t one = 1;
	ssize_t w = write(H.efd, &one, sizeof one);
	(void)w;
}

void hold_submit(const struct hold_req *r)
{
	struct pending *p = xcalloc(1, sizeof *p);
	p->req = *r;
	enqueue(p);
}

void hold_run(void (*fn)(void *), void *arg)
{
	struct pending *p = xcalloc(1, sizeof *p);
	p->fn = fn;
	p->arg = arg;
	enqueue(p);
}

void hold_listen_ws(int listen_fd)
{
	H.ws_listen = listen_fd;
}

/* ---- WebSocket connections (see ws.c) ---- */

struct buf *held_out(held *h)
{
	return &h->out;
}

int held_fd(held *h)
{
	return h->fd;
}

int held_flush(held *h)
{
	return flush(h);
}

int held_close_after_flush(held *h)
{
	if (!h->ending)
		h->ending = 1;
	return flush(h);
}

void held_want_input(held *h, int on)
{
	set_events(h, h->want_out, !on);
}

void held_attach(held *h, const core_stream *s, int64_t cursor)
{
	end_older(s->session);
	h->cs = *s;
	h->cursor = cursor;
	h->sent_mark = 0;
	unsigned i = slot(h->cs.session);
	h->hnext = H.table[i];
	H.table[i] = h;
	mark_dirty(h); /* what waits in the mailbox goes out now */
}

void held_detach(held *h, int release)
{
	if (h->cs.session == 0)
		return;
	struct held *next = h->next;
	h->next = NULL; /* record this one's marks only */
	record_marks(h, 0);
	h->next = next;
	if (release && core_stream_close(H.c, &h->cs) != SIG_OK)
		log_warn("hold: could not release stream of session %lld", (long long)h->cs.session);
	table_remove(h);
	memset(&h->cs, 0, sizeof h->cs);
	h->sent_mark = 0;
	h->more = 0;
}

/* Accept what the listener has, as WebSocket connections awaiting their
 * handshake. */
static void accept_ws(void)
{
	for (int i = 0; i < 64; i++) {
		int fd = accept4(H.ws_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("hold: WebSocket accept: %s", strerror(errno));
			return;
		}
		struct held *h = xcalloc(1, sizeof *h);
		h->fd = fd;
		h->kind = HOLD_WS;
		h->last_write_us = mono_us();
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = h};
		if (epoll_ctl(H.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			log_error("hold: epoll_ctl: %s", strerror(errno));
			close(fd);
			free(h);
			return;
		}
		h->next = H.all;
		if (H.all)
			H.all->prev = h;
		H.all = h;
		atomic_fetch_add(&H.count, 1);
		h->ws = ws_conn_new(h);
	}
}
