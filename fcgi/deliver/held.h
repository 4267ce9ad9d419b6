/*
 * held.h - held connections: SSE streams, waiting long-polls and any other
 * kind that registers its handlers (ws.c: WebSocket), all kept on the
 * process's loop with non-blocking writes, so a stream costs a few hundred
 * bytes and no thread. This module owns the connections' table by session,
 * their output queues, delivery from the mailboxes and the once-a-second
 * work; a connection kind brings what differs (struct held_ops).
 */
#ifndef SIG_HELD_H
#define SIG_HELD_H

#include <stddef.h>
#include <stdint.h>

#include "base/metrics.h"
#include "core/core.h"
#include "deliver/evfmt.h"
#include "deliver/loop.h"

enum held_kind { HELD_SSE, HELD_POLL };

/* What a request thread hands over once it has authenticated and claimed
 * the stream. The connection (fd) passes to the loop for good, or until
 * the response has ended whole when keep is set. */
struct held_req {
	int fd;             /* the FastCGI connection from the web server */
	int request_id;     /* FastCGI request id on that connection */
	enum held_kind kind;
	core_stream stream;
	int64_t cursor;     /* deliver events after this id */
	int64_t wait_ms;    /* HELD_POLL: longest wait */
	int64_t mark, ack;  /* taken over by held_reclaim: not yet in the store */
	char headers[384];  /* extra response header lines (CORS), "" for none */
	/* NULL: fd is closed at the end. Else a kept connection (the web
	 * server's FCGI_KEEP_CONN) whose stdin was read to its end: once the
	 * response has ended and been written whole, keep(fd) is called on
	 * the loop instead of close (it must not block), for the connection's
	 * next request. A connection that fails or hangs up is closed. */
	void (*keep)(int fd);
};

typedef struct held held;

/* A connection kind's handlers, called on the loop thread. Those that
 * return int return -1 when h was destroyed (the caller returns at once). */
struct held_ops {
	const char *name;  /* for the log */
	enum metrics_transport transport; /* the streams gauge it counts in */
	/* The socket is readable, at EOF or hung up (hup). Returns 0 to go on
	 * (a writable socket is then written), -1 when destroyed or done. */
	int (*readable)(held *h, int hup);
	/* Everything queued is written while input is off (may be NULL). */
	int (*drained)(held *h);
	/* Everything queued is written and the connection is ending. */
	int (*finished)(held *h);
	/* Once a second. */
	void (*tick)(held *h, int64_t now_us);
	/* The session ended or another stream took it over. */
	void (*session_ended)(held *h);
	/* How one event is formatted for this kind, and what is done with a
	 * round's events (count of them, the newest `last`; count may be 0
	 * when nothing came, e.g. for a long-poll's deadline). */
	evfmt_fn *format;
	void (*deliver)(held *h, const struct buf *text, int count, int64_t last);
	/* h is being destroyed: let go of data (may be NULL). */
	void (*gone)(held *h);
	/* The process is draining: send the client {"type":"reconnect",
	 * "after":after_ms} in the kind's own way, then close (after a reply
	 * in flight, if any). */
	void (*drain)(held *h, int64_t after_ms);
};

/* Take the held streams onto loop l over their own core (and store).
 * owner is this process's nonce, bell_fd its bound bell. Call before
 * loop_start. Returns 0, or -1 (logged). */
int held_start(loop *l, core *c, int64_t owner, int bell_fd);

/* Hand a held request over (copied). Thread-safe; never blocks on I/O. */
void held_submit(const struct held_req *r);

/* A long-poll answered by this process leaves its session claimed until
 * the loop's next flush of marks (within a second). When r->stream is that
 * claim (same session and generation), take it over for the new poll r:
 * the release is cancelled, and what the old poll still had to record
 * moves to r (with r->ack). Returns 1, or 0 when the caller must claim the
 * stream anew (core_stream_open). Thread-safe; never blocks on I/O. */
int held_reclaim(struct held_req *r);

/* Graceful drain: every connection of the process, and every one handed
 * over from now on, is told to reconnect after its own random delay in
 * [min(250 ms, window_ms), window_ms] (so thousands do not come back in the
 * same second) and closed. Thread-safe; returns at once. */
void held_drain(int64_t window_ms);

/* Number of connections held right now (approximate; for health). */
int64_t held_count(void);

/* ---- for connection kinds, on the loop thread only ---- */
/* Hold a connection fd of kind ops, with data for its handlers, attached
 * to no session yet. Returns NULL (fd closed) when the loop refuses it. */
held *held_new(int fd, const struct held_ops *ops, void *data);
void *held_data(held *h);
struct buf *held_out(held *h);
int held_fd(held *h);
/* Write what is queued now. Returns -1 when h was destroyed. */
int held_flush(held *h);
/* End once what is queued is written (-1: destroyed now). */
int held_close_after_flush(held *h);
/* Destroy now; release: let the store know no stream holds its session. */
void held_destroy(held *h, int release);
/* Stop or resume reading the socket (back-pressure on a busy client);
 * held_watch sets both directions at once. */
void held_want_input(held *h, int on);
void held_watch(held *h, int in, int out);
/* Become (or stop being) the stream of a session; cursor: deliver the
 * events after it. Detach records what was sent; release also lets the
 * store know no stream holds the session any more. */
void held_attach(held *h, const core_stream *s, int64_t cursor);
void held_detach(held *h, int release);
/* Nonzero once the connection is ending (its last bytes are queued). */
int held_ending(const held *h);

#endif
