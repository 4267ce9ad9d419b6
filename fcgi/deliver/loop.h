/*
 * loop.h - one event loop per process, in the shape of Redis's ae: it owns
 * file descriptors, timers and a queue of work posted from other threads,
 * and calls the handler each registration brought. It knows fds, masks
 * and callbacks, never what a connection is: a new kind of connection adds
 * its own handlers, not a branch here.
 */
#ifndef SIG_LOOP_H
#define SIG_LOOP_H

#include <stdint.h>

typedef struct loop loop;

/* What a handler is told about its fd (and what it asks for). */
enum {
	LOOP_READABLE = 1, /* data, EOF or a hang-up to read */
	LOOP_WRITABLE = 2,
	LOOP_HUP = 4,      /* told only: the peer hung up or the socket failed */
};

/* Called on the loop thread with what happened to fd. */
typedef void loop_fd_fn(loop *l, int fd, void *data, unsigned mask);
/* Called on the loop thread; now is the monotonic clock (loop_now). */
typedef void loop_timer_fn(loop *l, void *data, int64_t now_us);
typedef void loop_fn(loop *l, void *data);

/* Work posted from any thread, run on the loop in the order posted. The
 * caller embeds it in its own struct (no allocation here). */
struct loop_job {
	struct loop_job *next;
	void (*run)(struct loop_job *j);
};

/* A new loop (not running yet). Returns NULL when epoll or eventfd fail
 * (logged). */
loop *loop_new(void);
/* Run the loop on a thread of its own, for good. Returns 0, or -1. */
int loop_start(loop *l);

/* Watch fd for mask (LOOP_READABLE and/or LOOP_WRITABLE; hang-ups are
 * always reported) and call fn(l, fd, data, what) when it happens.
 * Returns 0, or -1 (errno from epoll_ctl; nothing registered). */
int loop_add(loop *l, int fd, unsigned mask, loop_fd_fn *fn, void *data);
/* Change what fd is watched for. */
void loop_set(loop *l, int fd, unsigned mask);
/* Stop watching fd (before closing it). Events already read for it in
 * this round are dropped, even if the number is reused at once. */
void loop_del(loop *l, int fd);

/* Call fn every period_us, first period_us after the loop starts. At most
 * LOOP_TIMERS timers; register before loop_start. Returns 0, or -1. */
#define LOOP_TIMERS 4
int loop_every(loop *l, int64_t period_us, loop_timer_fn *fn, void *data);
/* Call fn after every round of events (before the timers). At most
 * LOOP_HOOKS; register before loop_start. Returns 0, or -1. */
#define LOOP_HOOKS 4
int loop_after_round(loop *l, loop_fn *fn, void *data);
/* The next round must not sleep (there is work for an after-round hook). */
void loop_soon(loop *l);

/* From any thread: run j->run(j) on the loop, soon, after what was posted
 * before. Never blocks on I/O. */
void loop_post(loop *l, struct loop_job *j);
/* From any thread: run every wake hook on the loop soon (after the posted
 * jobs of that round), e.g. to drain a queue the caller filled. */
void loop_wake(loop *l);
/* Register a wake hook (before loop_start). Returns 0, or -1. */
int loop_on_wake(loop *l, loop_fn *fn, void *data);

#endif
