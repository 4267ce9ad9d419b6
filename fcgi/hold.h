/*
 * hold.h - held connections: SSE streams, waiting long-polls and WebSocket
 * connections, all kept by one epoll thread per process with non-blocking
 * writes, so a stream costs a few hundred bytes and no thread.
 */
#ifndef SIG_HOLD_H
#define SIG_HOLD_H

#include <stdint.h>

#include "core.h"

enum hold_kind { HOLD_SSE, HOLD_POLL, HOLD_WS };

/* What a request thread hands over once it has authenticated and claimed
 * the stream. The connection (fd) passes to the hold thread for good. */
struct hold_req {
	int fd;             /* the FastCGI connection from the web server */
	int request_id;     /* FastCGI request id on that connection */
	enum hold_kind kind;
	core_stream stream;
	int64_t cursor;     /* deliver events after this id */
	int64_t wait_ms;    /* HOLD_POLL: longest wait */
	int64_t mark, ack;  /* taken over by hold_reclaim: not yet in the store */
	char headers[384];  /* extra response header lines (CORS), "" for none */
};

/* Start the hold thread over its own core (and store). owner is this
 * process's nonce, bell_fd its bound bell. Returns 0, or -1 (logged). */
int hold_start(core *c, int64_t owner, int bell_fd);

/* Hand a held request over (copied). Thread-safe; never blocks on I/O. */
void hold_submit(const struct hold_req *r);

/* A long-poll answered by this process leaves its session claimed until
 * the loop's next flush of marks (within a second). When r->stream is that
 * claim (same session and generation), take it over for the new poll r:
 * the release is cancelled, and what the old poll still had to record
 * moves to r (with r->ack). Returns 1, or 0 when the caller must claim the
 * stream anew (core_stream_open). Thread-safe; never blocks on I/O. */
int hold_reclaim(struct hold_req *r);

/* Number of responses held right now (approximate; for health). */
int64_t hold_count(void);

/* Accept WebSocket connections (ws.c) from listen_fd on the loop. Call
 * before hold_start. */
void hold_listen_ws(int listen_fd);

/* Run fn(arg) on the loop thread, soon. Thread-safe; never blocks on I/O. */
void hold_run(void (*fn)(void *), void *arg);

/* ---- for ws.c, on the loop thread only ----
 * A held WebSocket connection: ws.c frames bytes into held_out() and the
 * loop writes them; the loop delivers the session's events through
 * ws_send_event() once ws.c has attached a session. */
typedef struct held held;
struct buf;
struct buf *held_out(held *h);
int held_fd(held *h);
/* Write what is queued now (the connection may be destroyed: callers
 * return at once when it answers -1). */
int held_flush(held *h);
/* Close once what is queued is written (-1: closed and destroyed now). */
int held_close_after_flush(held *h);
/* Stop or resume reading the socket (back-pressure on a busy client). */
void held_want_input(held *h, int on);
/* Become (or stop being) the stream of a session; cursor: deliver the
 * events after it. Detach records what was sent; release also lets the
 * store know no stream holds the session any more. */
void held_attach(held *h, const core_stream *s, int64_t cursor);
void held_detach(held *h, int release);

#endif
