/*
 * loop.c - the process's event loop: epoll over every fd registered with
 * it, a few periodic timers, hooks run after each round, and a queue of
 * jobs other threads post to it (woken through one eventfd, registered like
 * any other fd).
 *
 * Design note. A registration is a slot of a table indexed by fd, as in
 * Redis's ae; epoll carries the fd and the slot's generation, which
 * loop_del bumps, so an event read in the same batch as the fd's removal
 * is dropped even when the number is reused at once (a stream destroyed
 * and a connection accepted in one round). A round is: wait (not at all
 * when loop_soon was called, else until the next timer), dispatch the
 * events, run the after-round hooks, then the timers that are due.
 *
 * It must never: know what a connection is, block anywhere but in
 * epoll_wait, or run a handler for an fd after loop_del.
 */
#define _GNU_SOURCE
#include "deliver/loop.h"
#include "base/log.h"
#include "base/util.h"
#include "base/xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct slot {
	loop_fd_fn *fn; /* NULL: not registered */
	void *data;
	unsigned mask;
	uint32_t gen;
};

struct hook {
	loop_fn *fn;
	void *data;
};

struct loop {
	int ep, efd;
	struct slot *slots;
	int nslots;
	int soon;
	struct {
		loop_timer_fn *fn;
		void *data;
		int64_t period, next;
	} timers[LOOP_TIMERS];
	int ntimers;
	struct hook after[LOOP_HOOKS], wake[LOOP_HOOKS];
	int nafter, nwake;
	pthread_mutex_t lock;
	struct loop_job *posted; /* LIFO, under lock */
};

static uint32_t epoll_mask(unsigned mask)
{
	return (mask & LOOP_READABLE ? EPOLLIN | EPOLLRDHUP : 0) | (mask & LOOP_WRITABLE ? EPOLLOUT : 0);
}

static struct slot *slot_of(loop *l, int fd)
{
	if (fd >= l->nslots) {
		int n = l->nslots ? l->nslots : 1024;
		while (n <= fd)
			n *= 2;
		l->slots = xrealloc(l->slots, (size_t)n * sizeof *l->slots);
		memset(l->slots + l->nslots, 0, (size_t)(n - l->nslots) * sizeof *l->slots);
		l->nslots = n;
	}
	return &l->slots[fd];
}

int loop_add(loop *l, int fd, unsigned mask, loop_fd_fn *fn, void *data)
{
	struct slot *s = slot_of(l, fd);
	struct epoll_event ev = {.events = epoll_mask(mask), .data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd};
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		return -1;
	s->fn = fn;
	s->data = data;
	s->mask = mask;
	return 0;
}

void loop_set(loop *l, int fd, unsigned mask)
{
	struct slot *s = slot_of(l, fd);
	if (s->fn == NULL || s->mask == mask)
		return;
	struct epoll_event ev = {.events = epoll_mask(mask), .data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd};
	epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev);
	s->mask = mask;
}

void loop_del(loop *l, int fd)
{
	struct slot *s = slot_of(l, fd);
	if (s->fn == NULL)
		return;
	epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
	s->fn = NULL;
	s->data = NULL;
	s->mask = 0;
	s->gen++;
}

int loop_every(loop *l, int64_t period_us, loop_timer_fn *fn, void *data)
{
	if (l->ntimers == LOOP_TIMERS)
		return -1;
	l->timers[l->ntimers].fn = fn;
	l->timers[l->ntimers].data = data;
	l->timers[l->ntimers].period = period_us;
	l->ntimers++;
	return 0;
}

static int add_hook(struct hook *v, int *n, loop_fn *fn, void *data)
{
	if (*n == LOOP_HOOKS)
		return -1;
	v[*n] = (struct hook){fn, data};
	(*n)++;
	return 0;
}

int loop_after_round(loop *l, loop_fn *fn, void *data)
{
	return add_hook(l->after, &l->nafter, fn, data);
}

int loop_on_wake(loop *l, loop_fn *fn, void *data)
{
	return add_hook(l->wake, &l->nwake, fn, data);
}

void loop_soon(loop *l)
{
	l->soon = 1;
}

void loop_wake(loop *l)
{
	uint64_t one = 1;
	ssize_t w = write(l->efd, &one, sizeof one);
	(void)w;
}

/* Only a post that finds the queue empty writes the eventfd. The post that
 * made the queue non-empty wrote it, and woken() reads the eventfd before
 * it takes the whole queue, so no job is ever left queued without a write
 * after it. A burst of replies (a group commit answering many WebSockets)
 * costs one wake-up, not a system call each. */
void loop_post(loop *l, struct loop_job *j)
{
	pthread_mutex_lock(&l->lock);
	int was_empty = l->posted == NULL;
	j->next = l->posted;
	l->posted = j;
	pthread_mutex_unlock(&l->lock);
	if (was_empty)
		loop_wake(l);
}

/* The eventfd: the posted jobs in the order posted, then the wake hooks. */
static void woken(loop *l, int fd, void *data, unsigned mask)
{
	(void)data;
	(void)mask;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof v);
	(void)r;
	pthread_mutex_lock(&l->lock);
	struct loop_job *q = l->posted;
	l->posted = NULL;
	pthread_mutex_unlock(&l->lock);
	struct loop_job *rev = NULL;
	while (q) {
		struct loop_job *n = q->next;
		q->next = rev;
		rev = q;
		q = n;
	}
	while (rev) {
		struct loop_job *n = rev->next;
		rev->run(rev); /* may free rev */
		rev = n;
	}
	for (int i = 0; i < l->nwake; i++)
		l->wake[i].fn(l, l->wake[i].data);
}

loop *loop_new(void)
{
	loop *l = xcalloc(1, sizeof *l);
	pthread_mutex_init(&l->lock, NULL);
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->ep < 0 || l->efd < 0 || loop_add(l, l->efd, LOOP_READABLE, woken, NULL) != 0) {
		log_error("loop: epoll/eventfd: %s", strerror(errno));
		return NULL;
	}
	return l;
}

static void dispatch(loop *l, const struct epoll_event *ev)
{
	int fd = (int)(uint32_t)ev->data.u64;
	struct slot *s = &l->slots[fd];
	if (s->fn == NULL || s->gen != (uint32_t)(ev->data.u64 >> 32))
		return; /* removed earlier in this round */
	unsigned what = 0;
	if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		what |= LOOP_READABLE;
	if (ev->events & EPOLLOUT)
		what |= LOOP_WRITABLE;
	if (ev->events & (EPOLLHUP | EPOLLERR))
		what |= LOOP_HUP;
	s->fn(l, fd, s->data, what);
}

static void *loop_main(void *arg)
{
	loop *l = arg;
	struct epoll_event evs[MAX_EVENTS];
	int64_t start = util_mono_us();
	for (int i = 0; i < l->ntimers; i++)
		l->timers[i].next = start + l->timers[i].period;
	for (;;) {
		int64_t now = util_mono_us(), next = now + 3600 * 1000000LL;
		for (int i = 0; i < l->ntimers; i++)
			if (l->timers[i].next < next)
				next = l->timers[i].next;
		int timeout = l->soon ? 0 : (int)((next - now) / 1000 + 1);
		if (timeout < 0)
			timeout = 0;
		int n = epoll_wait(l->ep, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("loop: epoll_wait: %s", strerror(errno));
			continue;
		}
		for (int i = 0; i < n; i++)
			dispatch(l, &evs[i]);
		l->soon = 0; /* what the hooks leave or the timers add sets it again */
		for (int i = 0; i < l->nafter; i++)
			l->after[i].fn(l, l->after[i].data);
		now = util_mono_us();
		for (int i = 0; i < l->ntimers; i++) {
			if (now >= l->timers[i].next) {
				l->timers[i].next = now + l->timers[i].period;
				l->timers[i].fn(l, l->timers[i].data, now);
			}
		}
	}
	return NULL;
}

int loop_start(loop *l)
{
	return util_start_thread("loop", loop_main, l);
}
