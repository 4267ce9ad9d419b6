/*
 * web.h - the HTTP face of the responder over FastCGI: request threads that
 * route /api/cmd, /api/events, /api/poll and /api/health, read and cap the
 * request, find the token, call the core and write the answer. Held
 * responses (SSE, long-poll) are handed to held.c.
 */
#ifndef SIG_WEB_H
#define SIG_WEB_H

#include <stdint.h>

#include "core/core.h"

/* Start `threads` request threads accepting on listen_fd. Returns 0, or -1. */
int web_start(int listen_fd, int threads, int64_t owner, core_factory make_core);

/* Graceful drain (after core_drain_begin): a listener of our own
 * (standalone, own=1) stops accepting, so the front server sends new
 * requests to another process of its upstream; one shared with siblings
 * (lighttpd's fd 0) keeps going, and its requests get the drain's answers.
 * Thread-safe. */
void web_drain(int own);
/* Requests being answered right now (held streams excluded). */
int web_inflight(void);
/* The end of a drain: the request threads accept nothing more (a shared
 * listener's queue is left to the other processes, or the next one) and
 * finish what they accepted; waits for that at most wait_us. Returns the
 * threads still running (0: every accepted request was answered). Uses
 * SIGUSR2 on the request threads. */
int web_stop(int64_t wait_us);

#endif
