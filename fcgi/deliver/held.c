/*
 * held.c - the held connections of this process: every SSE stream, waiting
 * long-poll and WebSocket connection lives here, on the process's loop.
 *
 * Design note. A request thread authenticates a stream, claims it in the
 * store and passes the FastCGI connection here; from then on the loop
 * thread alone writes to it. libfcgi's output streams block, and one slow
 * reader must never stall a thread or the other streams, so held responses
 * are written as FastCGI records (fcgirec.c) on a non-blocking socket, from
 * a small per-connection queue.
 *
 * Wake-ups come from the bell (bell.c) and mark connections dirty; after
 * each round of the loop a dirty connection re-reads its mailbox after its
 * cursor, all dirty connections in one store transaction. A wake-up from
 * this process's own threads also carries the event it is for, which goes
 * straight to the connection when it has written everything before it
 * (deliver_now): no store read. A connection whose queue is above the
 * low-water mark reads nothing more: events wait in the mailbox, not in
 * memory, so a reader that never reads costs at most one queue. Once a
 * second the loop gives every connection its tick (keepalives, long-polls
 * that waited long enough, WebSocket pings), closes connections whose
 * writes made no progress for --write-timeout seconds and records the sent
 * marks (marks.c), which a connection that wrote a quarter of the mailbox
 * cap since its last mark records at once (wrote_upto). Every few seconds it refreshes its sessions' heartbeat
 * (an open stream counts as alive) and re-checks the store for events whose
 * bell was lost.
 *
 * What differs between kinds is in their handlers (struct held_ops): SSE
 * and long-poll here, WebSocket in ws.c, which this file never calls but
 * through the handlers a connection brought.
 *
 * It must never: block on a socket, hold the store's write lock while
 * writing to a socket, or read more events for a connection whose queue is
 * above QUEUE_LOW.
 */
#define _GNU_SOURCE
#include "deliver/held.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "deliver/bell.h"
#include "deliver/fcgirec.h"
#include "deliver/marks.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_LOW (32 * 1024)  /* read more events only below this */
#define PULL_LIMIT 64          /* events per connection per round */
#define TABLE_BITS 14
#define RECHECK_MAX 1024

struct held {
	int fd;
	int request_id;
	const struct held_ops *ops;
	void *data;            /* the kind's own state (ws.c: its connection) */
	core_stream cs;        /* session 0: attached to none (yet) */
	int64_t cursor;
	int64_t deadline_us;   /* a long-poll's end; a stream's under --max-stream-seconds */
	int64_t last_write_us; /* keepalive clock */
	int64_t stall_us;      /* when the queue last made no progress, 0 none */
	buf out;               /* FastCGI records (WebSocket frames) waiting for the socket */
	int dirty, more, ending, gone, want_out, no_input;
	int retry; /* the store failed its pull (e.g. PostgreSQL away): pull again at the next tick */
	int released;          /* the store already knows no stream holds the session */
	int expired;           /* a stream ended by --max-stream-seconds */
	char *headers;         /* extra header lines (CORS) for a poll's answer, or NULL */
	int64_t sent_mark;     /* newest event id written out, not yet recorded in the store */
	int64_t unmarked;      /* events written out since the last recorded mark */
	int64_t ack_pending;   /* a reclaimed poll's acknowledgement, not yet recorded */
	int64_t woke_us;       /* the oldest bell since the last pull was rung then (metrics), 0 none */
	int rechecked;         /* marked dirty by the re-check, not by a bell (metrics) */
	int drained;           /* told to reconnect (drain) */
	void (*keep)(int fd);  /* a kept FastCGI connection: given back here once its answer is whole */
	int whole;             /* the response ended and was all written (keep may take the fd) */
	struct held *next_dirty;
	struct held *next_dead;        /* destroyed, freed by bury() */
	struct held *hnext;            /* session hash chain */
	struct held *prev, *next;      /* all held */
};

/* A held request on its way to the loop. */
struct pending {
	struct loop_job job;
	struct held_req req;
};

static struct {
	loop *l;
	core *c;
	int64_t owner;
	struct held *table[1 << TABLE_BITS];
	struct held *all;
	struct held *dirty;
	struct held *dead;     /* destroyed this round: events of the batch may still name them */
	int64_t refresh_every, next_refresh, next_recheck, seen_max;
	int64_t mark_early;    /* unmarked events that make a connection's marks due now */
	int marks_due;         /* some connection reached mark_early: record after this round */
	_Atomic int64_t count;
	int64_t drain_window_ms; /* 0 until the process drains */
	uint64_t rng;            /* the drain's spread */
} H;

static int flush(struct held *h);
static void record_marks(struct held *list, int finished);
static void drain_one(struct held *h);
static void sse_start(held *h, const struct held_req *r);
static void poll_start(held *h, const struct held_req *r);
static const struct held_ops sse_ops, poll_ops;
/* What a request hands over becomes: its handlers, and how it starts. */
static const struct {
	const struct held_ops *ops;
	void (*start)(held *h, const struct held_req *r);
} kinds[] = {
	[HELD_SSE] = {&sse_ops, sse_start},
	[HELD_POLL] = {&poll_ops, poll_start},
};

int64_t held_count(void)
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

static void table_add(struct held *h)
{
	unsigned s = slot(h->cs.session);
	h->hnext = H.table[s];
	H.table[s] = h;
	metrics_stream(h->ops->transport, 1);
}

static void table_remove(struct held *h)
{
	for (struct held **p = &H.table[slot(h->cs.session)]; *p; p = &(*p)->hnext) {
		if (*p == h) {
			*p = h->hnext;
			metrics_stream(h->ops->transport, -1);
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
	loop_soon(H.l);
}

/* Queue the end of the response. */
static void put_end(struct held *h)
{
	fcgirec_end(&h->out, h->request_id);
	h->ending = 1;
}

/* ---- life cycle ---- */

void held_watch(held *h, int in, int out)
{
	if (h->want_out == out && h->no_input == !in)
		return;
	loop_set(H.l, h->fd, (in ? LOOP_READABLE : 0) | (out ? LOOP_WRITABLE : 0));
	h->want_out = out;
	h->no_input = !in;
}

void held_want_input(held *h, int on)
{
	held_watch(h, on, h->want_out);
}

void held_destroy(held *h, int release)
{
	if (release && h->cs.session && !h->released && core_stream_close(H.c, &h->cs) != SIG_OK)
		log_warn("hold: could not release stream of session %lld", (long long)h->cs.session);
	loop_del(H.l, h->fd);
	if (h->keep && h->whole)
		h->keep(h->fd); /* the web server may send its next request on it */
	else
		close(h->fd);
	if (h->cs.session)
		table_remove(h);
	if (h->ops->gone)
		h->ops->gone(h);
	h->data = NULL;
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
	/* The dirty list may still name it: it is freed by bury(), between
	 * rounds. */
	h->next_dead = H.dead;
	H.dead = h;
}

/* Free what was destroyed, once no dirty list holds it. */
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

/* Write what the socket takes. Returns 0, or -1 when the connection died
 * (and was destroyed). */
static int flush(struct held *h)
{
	int64_t now = util_mono_us();
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
			held_watch(h, !h->no_input, 1);
			return 0;
		}
		held_destroy(h, !h->ending); /* the web server went away */
		return -1;
	}
	held_watch(h, !h->no_input, 0);
	if (h->out.cap > 4 * QUEUE_LOW)
		buf_free(&h->out); /* an idle connection keeps no big buffer */
	if (h->no_input && !h->ending && h->ops->drained)
		return h->ops->drained(h);
	if (h->ending)
		return h->ops->finished(h);
	if (h->more)
		mark_dirty(h);
	return 0;
}

/* A newer stream of the same session in this process ends the old one. */
static void end_older(int64_t session)
{
	struct held *old = find(session);
	if (old == NULL)
		return;
	table_remove(old);
	old->cs.session = 0; /* the newer stream holds it now: nothing to release */
	old->ops->session_ended(old);
}

/* The loop's handler for every held connection's socket. */
static void on_socket(loop *l, int fd, void *data, unsigned mask)
{
	(void)l;
	(void)fd;
	struct held *h = data;
	if (mask & LOOP_READABLE && h->ops->readable(h, (mask & LOOP_HUP) != 0) != 0)
		return;
	if (mask & LOOP_WRITABLE)
		flush(h);
}

held *held_new(int fd, const struct held_ops *ops, void *data)
{
	struct held *h = xcalloc(1, sizeof *h);
	h->fd = fd;
	h->ops = ops;
	h->data = data;
	h->last_write_us = util_mono_us();
	if (loop_add(H.l, fd, LOOP_READABLE, on_socket, h) != 0) {
		log_error("hold: epoll_ctl: %s", strerror(errno));
		close(fd);
		free(h);
		return NULL;
	}
	h->next = H.all;
	if (H.all)
		H.all->prev = h;
	H.all = h;
	atomic_fetch_add(&H.count, 1);
	return h;
}

static void adopt(const struct held_req *r)
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
	struct held *h = held_new(r->fd, kinds[r->kind].ops, NULL);
	if (h == NULL)
		return;
	h->request_id = r->request_id;
	h->keep = r->keep;
	h->cs = r->stream;
	h->cursor = r->cursor;
	h->sent_mark = r->mark;
	h->ack_pending = r->ack;
	h->deadline_us = h->last_write_us + r->wait_ms * 1000;
	table_add(h);
	kinds[r->kind].start(h, r);
	/* Events committed before we registered found no stream to wake:
	 * the first pull picks them up. */
	mark_dirty(h);
	if (H.drain_window_ms) /* handed over while the drain began */
		drain_one(h);
	if (cfg.verbose)
		log_info("hold: %s open for %s (session %lld) after %lld", h->ops->name, h->cs.user_id,
			 (long long)h->cs.session, (long long)h->cursor);
}

/* ---- graceful drain ---- */

/* A delay in [min(250, window), window] ms (xorshift64*: no need for more). */
static int64_t drain_after(void)
{
	int64_t lo = H.drain_window_ms < 250 ? H.drain_window_ms : 250;
	H.rng ^= H.rng >> 12;
	H.rng ^= H.rng << 25;
	H.rng ^= H.rng >> 27;
	uint64_t r = H.rng * 2685821657736338717ull;
	return lo + (int64_t)(r % (uint64_t)(H.drain_window_ms - lo + 1));
}

static void drain_one(struct held *h)
{
	if (h->drained || h->gone || h->ending || h->ops->drain == NULL)
		return;
	h->drained = 1;
	h->ops->drain(h, drain_after()); /* may destroy h */
}

struct drain_job {
	struct loop_job job;
	int64_t window_ms;
};

static void drain_run(struct loop_job *j)
{
	struct drain_job *d = (struct drain_job *)j;
	int n = 0;
	H.drain_window_ms = d->window_ms > 0 ? d->window_ms : 1;
	H.rng = (uint64_t)util_mono_us() * 0x9e3779b97f4a7c15ull | 1;
	record_marks(H.all, 1); /* what went out so far is on record */
	for (struct held *h = H.all, *next; h; h = next) {
		next = h->next;
		n += !h->drained && !h->ending;
		drain_one(h);
	}
	log_info("hold: draining: %d connection(s) told to reconnect within %lld ms", n,
		 (long long)H.drain_window_ms);
	free(d);
}

void held_drain(int64_t window_ms)
{
	struct drain_job *d = xcalloc(1, sizeof *d);
	d->job.run = drain_run;
	d->window_ms = window_ms;
	loop_post(H.l, &d->job);
}

static void adopt_job(struct loop_job *j)
{
	struct pending *p = (struct pending *)j;
	adopt(&p->req);
	free(p);
}

void held_submit(const struct held_req *r)
{
	struct pending *p = xcalloc(1, sizeof *p);
	p->job.run = adopt_job;
	p->req = *r;
	loop_post(H.l, &p->job);
}

/* ---- delivery ---- */

struct pull_ctx {
	struct held *h;
	buf *text;
	int count;
	int64_t last;
};

static int on_event(void *ctx, int64_t id, const char *body, size_t len)
{
	struct pull_ctx *p = ctx;
	p->h->ops->format(p->text, p->count, id, body, len);
	p->count++;
	p->last = id;
	return 0;
}

/* The sent mark moves to `last`, `count` events on. It reaches the store
 * with the next second's marks, or sooner once mark_early events wait:
 * the mailbox cap counts what no mark covers yet as undelivered, and a
 * reader that keeps up with a burst must never look like one that reads
 * nothing (it was refused 429 mailbox-full after about a thousand). */
static void wrote_upto(struct held *h, int64_t last, int count)
{
	h->sent_mark = last;
	h->unmarked += count;
	if (h->unmarked >= H.mark_early)
		H.marks_due = 1;
}

/* What a round of events did to the connection: the kind queued them
 * (deliver), and the cursor moves past them. */
static void delivered(struct held *h, const buf *text, int count, int64_t last)
{
	if (count > 0) {
		wrote_upto(h, last, count);
		metrics_add(MC_EVENTS_DELIVERED, (uint64_t)count);
		if (h->woke_us)
			metrics_observe(MH_DELIVERY, util_mono_us() - h->woke_us);
		else if (h->rechecked)
			metrics_add(MC_RECHECK_CATCHES, 1); /* no bell told us of these */
	}
	h->woke_us = 0;
	h->rechecked = 0;
	h->ops->deliver(h, text, count, last);
	if (count > 0) {
		h->cursor = last;
		h->more = count >= PULL_LIMIT;
	}
}

/* Pull one connection's new events into its queue. Returns 0, or -1 when
 * the stream must end (session gone or replaced). */
static int pull(struct held *h)
{
	buf text = {0};
	struct pull_ctx p = {.h = h, .text = &text};
	int64_t lost_upto = 0;
	h->more = 0;
	sig_err e = core_stream_pull(H.c, &h->cs, h->cursor, PULL_LIMIT, on_event, &p, &lost_upto);
	if (e == SIG_OK && lost_upto > h->cursor) {
		/* A gap: the core's events-lost first, then what followed it,
		 * read again in the same snapshot (rare: a client resuming from
		 * before the replay window). */
		buf_free(&text);
		p.count = 0;
		core_events_lost(H.c, &h->cs, h->cursor, lost_upto, on_event, &p);
		e = core_stream_pull(H.c, &h->cs, h->cursor, PULL_LIMIT, on_event, &p, &lost_upto);
	}
	if (e == SIG_E_UNAUTHORIZED) {
		/* Gone or replaced (nothing pulled), or ended by the admin API:
		 * then its last events (the kick notice) go out before the end. */
		if (p.count > 0)
			delivered(h, &text, p.count, p.last);
		buf_free(&text);
		return -1;
	}
	if (e != SIG_OK) {
		buf_free(&text);
		/* Not on the next round, which would spin while the store is
		 * away: at the next tick. */
		h->retry = 1;
		return 0;
	}
	delivered(h, &text, p.count, p.last);
	buf_free(&text);
	return 0;
}

/* The marks of the connections of list (linked by next) that have any. */
static void record_marks(struct held *list, int finished)
{
	static struct marks_ref *refs;
	static int cap;
	int n = 0;
	for (struct held *h = list; h; h = h->next) {
		if (h->gone || !(h->sent_mark || h->ack_pending))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			refs = xrealloc(refs, (size_t)cap * sizeof *refs);
		}
		refs[n++] = (struct marks_ref){.cs = &h->cs, .sent = &h->sent_mark, .ack = &h->ack_pending};
	}
	marks_record(H.c, refs, n, finished);
	for (struct held *h = list; h; h = h->next)
		if (h->sent_mark == 0)
			h->unmarked = 0;
}

/* An answering long-poll leaves its marks and the release of its session
 * to the next flush (see marks.c). */
static void finish_poll(struct held *h)
{
	marks_poll_done(&h->cs, h->sent_mark, h->ack_pending);
	h->sent_mark = h->ack_pending = 0;
	h->released = 1;
}

int held_reclaim(struct held_req *r)
{
	return marks_reclaim(&r->stream, &r->mark, &r->ack);
}

/* After each round: pull every dirty connection's mailbox in one read
 * transaction, then write (never while holding a transaction). */
static void run_dirty(loop *l, void *data)
{
	(void)l;
	(void)data;
	if (H.marks_due) {
		H.marks_due = 0;
		record_marks(H.all, 0);
	}
	if (H.dirty == NULL) {
		bury();
		return;
	}
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
		if (pull(h) != 0 && !h->ending)
			h->ending = 2; /* replaced, logged out or kicked (a poll that answered ends anyway) */
	}
	if (in_txn)
		core_delivery_end(H.c, 1);
	for (struct held *h = list, *next; h; h = next) {
		next = h->next_dirty;
		h->dirty = 0;
		h->next_dirty = NULL;
		if (h->gone)
			continue; /* freed by bury() */
		if (!in_txn) {
			h->retry = 1; /* see pull() */
			continue;
		}
		if (h->ending == 2) {
			h->ending = 0;
			h->ops->session_ended(h); /* may close, or wait for a reply in flight */
			continue;
		}
		flush(h);
	}
	bury();
}

/* Write an event that a thread of this process has just committed straight
 * to its connection (or as the answer of a waiting long-poll), without
 * reading the store. Only when nothing can be missing before it (the
 * connection has written every event of the session up to the one before
 * it) and nothing else is pending for it. Returns 1 when the event needs
 * nothing more, 0 when the connection must pull. */
static int deliver_now(struct held *h, const struct bell_wake *w)
{
	if (w->event_id <= h->cursor && !h->dirty)
		return 1; /* a pull got it first */
	if (h->dirty || h->ending || h->more || h->out.len >= QUEUE_LOW || h->cursor < w->prev_id)
		return 0;
	buf text = {0};
	struct pull_ctx p = {.h = h, .text = &text};
	on_event(&p, w->event_id, w->body, w->len);
	wrote_upto(h, w->event_id, 1);
	metrics_add(MC_EVENTS_DELIVERED, 1);
	if (w->rung_us)
		metrics_observe(MH_DELIVERY, util_mono_us() - w->rung_us);
	h->ops->deliver(h, &text, 1, w->event_id);
	h->cursor = w->event_id;
	buf_free(&text);
	flush(h); /* may destroy h */
	return 1;
}

/* The bell's handler: a wake for one session, maybe with its event. */
static void on_wake(void *data, const struct bell_wake *w)
{
	(void)data;
	metrics_add(MC_BELL_WAKES, 1);
	if (w->session == 0) { /* wakes may have been lost (bell.h): every stream */
		for (struct held *a = H.all; a; a = a->next)
			mark_dirty(a);
		return;
	}
	struct held *h = find(w->session);
	if (h && !(w->event_id && w->body && deliver_now(h, w))) {
		if (w->rung_us && (h->woke_us == 0 || w->rung_us < h->woke_us))
			h->woke_us = w->rung_us;
		mark_dirty(h);
	}
}

/* ---- SSE and long-poll ---- */

/* The web server sends nothing more on a held request but its end of
 * stdin; anything readable is drained, EOF means it hung up. */
static int fcgi_readable(held *h, int hup)
{
	(void)hup;
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
			held_destroy(h, !h->ending);
			return -1;
		}
		return 0;
	}
}

static void fcgi_session_ended(held *h)
{
	if (!h->ending) {
		put_end(h);
		flush(h);
	}
}

/* The head of the stream and its retry: hint go out at once. */
static void sse_start(held *h, const struct held_req *r)
{
	buf tmp = {0};
	evfmt_sse_head(&tmp, r->headers, cfg.retry_ms);
	fcgirec_stdout(&h->out, h->request_id, tmp.data, tmp.len);
	buf_free(&tmp);
}

/* A stream we ended for its age lets go of the session, as a client that
 * leaves does: the client's next stream may come to another process. */
static int sse_finished(held *h)
{
	h->whole = 1;
	held_destroy(h, h->expired);
	return -1;
}

/* --max-stream-seconds: where each held request costs the front server a
 * process (mod_fcgid), a stream ends in time so that the processes turn
 * over; the client opens the next one from its cursor, nothing is lost. */
static void sse_tick(held *h, int64_t now)
{
	if (!h->ending && cfg.max_stream > 0 && now >= h->deadline_us) {
		h->expired = 1;
		put_end(h);
		flush(h);
		return;
	}
	if (h->ending || h->out.len > 0 || now - h->last_write_us < cfg.keepalive * 1000000)
		return;
	fcgirec_stdout(&h->out, h->request_id, evfmt_keepalive, evfmt_keepalive_len);
	flush(h);
}

static void sse_deliver(held *h, const buf *text, int count, int64_t last)
{
	(void)last;
	if (count > 0)
		fcgirec_stdout(&h->out, h->request_id, text->data, text->len);
}

/* The reconnect message, and a retry: of the same delay, so that a plain
 * EventSource (not signal.js) also waits that long before it reconnects
 * (with its Last-Event-ID). The message has no id: it moves no cursor. */
static void sse_drain(held *h, int64_t after)
{
	char msg[128];
	int n = snprintf(msg, sizeof msg, "retry: %lld\ndata: {\"type\":\"reconnect\",\"after\":%lld}\n\n",
			 (long long)after, (long long)after);
	fcgirec_stdout(&h->out, h->request_id, msg, (size_t)n);
	metrics_add(MC_RECONNECTS_SENT, 1);
	put_end(h);
	flush(h);
}

static const struct held_ops sse_ops = {
	.name = "stream", .transport = MT_SSE, .readable = fcgi_readable, .finished = sse_finished, .tick = sse_tick,
	.session_ended = fcgi_session_ended, .format = evfmt_sse, .deliver = sse_deliver, .drain = sse_drain,
};

/* A long-poll answers later, with its CORS lines. */
static void poll_start(held *h, const struct held_req *r)
{
	if (r->headers[0])
		h->headers = xstrdup(r->headers);
}

/* A finished long-poll lets go of the session until the next poll. */
static int poll_finished(held *h)
{
	h->whole = 1;
	held_destroy(h, 1);
	return -1;
}

static void poll_tick(held *h, int64_t now)
{
	if (!h->ending && now >= h->deadline_us)
		mark_dirty(h); /* answers with what there is, maybe nothing */
}

static void poll_session_ended(held *h)
{
	if (h->cs.session && !h->released)
		finish_poll(h);
	fcgi_session_ended(h);
}

/* Answer with the events in text (comma-separated) and the new cursor, and
 * end; with nothing before the deadline, wait on. */
static void poll_deliver(held *h, const buf *text, int count, int64_t last)
{
	if (count == 0 && util_mono_us() < h->deadline_us)
		return;
	if (count == 0)
		last = h->cursor;
	buf resp = {0};
	evfmt_poll_answer(&resp, h->headers, text, last);
	fcgirec_stdout(&h->out, h->request_id, resp.data, resp.len);
	buf_free(&resp);
	h->cursor = last;
	put_end(h);
	finish_poll(h); /* its marks and release go with the next flush */
}

/* A waiting poll answers at once: no events, its cursor unchanged, and
 * the reconnect object (no id) in the list. */
static void poll_drain(held *h, int64_t after)
{
	buf text = {0}, resp = {0};
	buf_printf(&text, "{\"type\":\"reconnect\",\"after\":%lld}", (long long)after);
	evfmt_poll_answer(&resp, h->headers, &text, h->cursor);
	fcgirec_stdout(&h->out, h->request_id, resp.data, resp.len);
	buf_free(&text);
	buf_free(&resp);
	metrics_add(MC_RECONNECTS_SENT, 1);
	put_end(h);
	if (h->cs.session && !h->released)
		finish_poll(h);
	flush(h);
}

static const struct held_ops poll_ops = {
	.name = "poll", .transport = MT_POLL, .readable = fcgi_readable, .finished = poll_finished, .tick = poll_tick,
	.session_ended = poll_session_ended, .format = evfmt_poll, .deliver = poll_deliver, .drain = poll_drain,
};

/* ---- periodic work ---- */

/* The safety net under the bell: look at every event committed since the
 * last look, in id order, a page at a time, and wake the connections of
 * this process they are for. A few pages per call bound the work. */
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
				h->rechecked = 1;
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

static void tick(loop *l, void *data, int64_t now)
{
	(void)l;
	(void)data;
	for (struct held *h = H.all, *next; h; h = next) {
		next = h->next;
		if (h->out.len > 0 && h->stall_us && now - h->stall_us > cfg.write_timeout * 1000000) {
			log_warn("hold: closing stream of %s (session %lld): no write progress for %llds, %zu bytes queued",
				 h->cs.user_id, (long long)h->cs.session, (long long)cfg.write_timeout, h->out.len);
			held_destroy(h, !h->ending);
			continue;
		}
		h->ops->tick(h, now);
		if (h->retry && !h->gone) {
			h->retry = 0;
			mark_dirty(h);
		}
	}
	/* Deliveries only read: what they wrote out goes to the store here,
	 * for every connection together (marks.c). */
	record_marks(H.all, 1);
	if (now >= H.next_refresh) {
		H.next_refresh = now + H.refresh_every;
		if (H.all && core_streams_refresh(H.c, H.owner) != SIG_OK)
			log_warn("hold: heartbeat refresh failed; will retry");
	}
	if (now >= H.next_recheck) {
		H.next_recheck = now + cfg.recheck * 1000000;
		if (H.all == NULL)
			H.seen_max = INT64_MAX; /* nothing held: only learn the newest id */
		recheck(&H.seen_max);
	}
}

int held_start(loop *l, core *c, int64_t owner, int bell_fd)
{
	H.l = l;
	H.c = c;
	H.owner = owner;
	H.refresh_every = cfg.heartbeat_timeout * 1000000 / 3;
	H.mark_early = cfg.mailbox_limit / 4 > 0 ? cfg.mailbox_limit / 4 : 1;
	if (H.refresh_every > cfg.keepalive * 1000000)
		H.refresh_every = cfg.keepalive * 1000000;
	H.next_refresh = util_mono_us() + H.refresh_every;
	H.next_recheck = util_mono_us() + cfg.recheck * 1000000;
	H.seen_max = INT64_MAX;
	recheck(&H.seen_max); /* learn the newest event id: re-checks look past it */
	if (bell_listen(l, bell_fd, owner, on_wake, NULL) != 0 || loop_after_round(l, run_dirty, NULL) != 0 ||
	    loop_every(l, 1000000, tick, NULL) != 0) {
		log_error("hold: cannot register on the loop");
		return -1;
	}
	return 0;
}

/* ---- for connection kinds (ws.c) ---- */

void *held_data(held *h)
{
	return h->data;
}

struct buf *held_out(held *h)
{
	return &h->out;
}

int held_fd(held *h)
{
	return h->fd;
}

int held_ending(const held *h)
{
	return h->ending;
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

void held_attach(held *h, const core_stream *s, int64_t cursor)
{
	end_older(s->session);
	h->cs = *s;
	h->cursor = cursor;
	h->sent_mark = 0;
	table_add(h);
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
