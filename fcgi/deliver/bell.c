/*
 * bell.c - the wake-up, between processes and within one.
 *
 * Why a datagram per process: lighttpd may run several responder processes
 * and any of them may serve the POST that queues an event for a stream held
 * by another. SQLite has no notification across processes; polling it
 * (PRAGMA data_version every millisecond) burns CPU while idle, and an
 * inotify watch on the -wal file fires before the commit is visible. A unix
 * datagram sent after commit costs one syscall and wakes exactly the
 * process that holds the stream (measured p99 ~0.1 ms). Datagrams can be
 * dropped when the receiver's queue is full, so the holder also re-checks
 * its mailboxes every few seconds (held.c): the bell makes delivery fast,
 * the database makes it certain. A datagram queue holds only
 * net.unix.max_dgram_qlen (10) messages, so a wake for this very process
 * skips the socket and goes to a queue in memory, which cannot overflow,
 * and takes the event it carries along. The socket and the queue (through
 * the loop's eventfd) are registered on the loop like any other fd, and
 * both end in the one handler bell_listen was given.
 *
 * Across machines (the PostgreSQL store): a datagram reaches only this
 * machine, so there the database carries the wake-up between processes.
 * The sender's transaction asks for it (core.c: store_notify, a NOTIFY
 * that rings only if the commit happens), and each process's listener
 * (store_listener_*, the connection's design note in store_pg.c) sits on
 * the loop like the socket: its fd watched for what it asks, a timer for
 * its retries, and each session it hears of handed to the same handler.
 * With it, bell_ring sends no datagrams (the notification reaches this
 * machine's processes as well, and a second wake would cost a second
 * mailbox read); wakes within the process still take the memory queue.
 * When the listener comes back after losing its connection, what was
 * notified meanwhile is lost, so the handler gets a wake for session 0:
 * every stream re-reads its mailbox at once.
 *
 * It must never: block a ringing thread, call the database's library
 * itself (only through store.h's listener), or know what the woken side
 * does.
 */
#define _GNU_SOURCE
#include "deliver/bell.h"
#include "base/log.h"
#include "base/util.h"
#include "base/xalloc.h"
#include "core/core.h"
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t bell_addr(int64_t owner, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	/* sun_path[0] = 0: the abstract namespace, nothing to clean up. */
	int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "signal-fcgi/bell/%016llx",
			 (unsigned long long)owner);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int64_t bell_owner_new(void)
{
	uint64_t v = 0;
	while (v == 0) {
		if (getrandom(&v, sizeof v, 0) != sizeof v)
			v = (uint64_t)getpid() * 2654435761u ^ (uint64_t)time(NULL);
		v &= INT64_MAX;
	}
	return (int64_t)v;
}

int bell_open(int64_t owner)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("bell: socket: %s", strerror(errno));
		return -1;
	}
	struct sockaddr_un sa;
	socklen_t len = bell_addr(owner, &sa);
	if (bind(fd, (struct sockaddr *)&sa, len) != 0) {
		log_error("bell: bind: %s", strerror(errno));
		close(fd);
		return -1;
	}
	int rcv = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	return fd;
}

/* A wake rung by a thread of this process, with the body it took over. */
struct local_wake {
	int64_t session, event_id, prev_id, rung_us;
	char *body; /* owned; NULL without an event */
	size_t len;
};

static struct {
	loop *l; /* NULL until bell_listen: every wake goes to a socket */
	int64_t owner;
	bell_fn *fn;
	void *data;
	pthread_mutex_t lock;
	struct local_wake *v; /* under lock */
	int n, cap;
	store_listener *ls; /* the store's wake-up across machines; NULL: datagrams */
	int ls_fd;          /* registered on the loop, -1 none */
	unsigned ls_want;
} B = {.lock = PTHREAD_MUTEX_INITIALIZER, .ls_fd = -1};

/* Queue the wakes of w for this process for the loop, each taking over
 * the event it carries. */
static void ring_local(struct core_wakes *w, int64_t owner, int64_t now)
{
	pthread_mutex_lock(&B.lock);
	if (B.n + w->n > B.cap) {
		B.cap = (B.n + w->n) * 2;
		B.v = xrealloc(B.v, (size_t)B.cap * sizeof *B.v);
	}
	for (int i = 0; i < w->n; i++) {
		struct core_wake *k = &w->v[i];
		if (k->owner != owner)
			continue;
		struct local_wake *lw = &B.v[B.n++];
		*lw = (struct local_wake){.session = k->session, .rung_us = now};
		if (k->event_id && k->body) {
			lw->body = k->body; /* taken: the wake's owner frees NULL */
			k->body = NULL;
			lw->len = k->len;
			lw->event_id = k->event_id;
			lw->prev_id = k->prev_id;
		}
	}
	pthread_mutex_unlock(&B.lock);
	loop_wake(B.l);
}

/* Loop thread (a wake hook): hand over what this process's threads rang. */
static void take_local(loop *l, void *data)
{
	(void)l;
	(void)data;
	static struct local_wake *mine;
	static int cap;
	pthread_mutex_lock(&B.lock);
	int n = B.n;
	if (n > cap) {
		cap = n;
		mine = xrealloc(mine, (size_t)cap * sizeof *mine);
	}
	if (n)
		memcpy(mine, B.v, (size_t)n * sizeof *mine);
	B.n = 0;
	pthread_mutex_unlock(&B.lock);
	for (int i = 0; i < n; i++) {
		struct bell_wake w = {.session = mine[i].session, .event_id = mine[i].event_id,
				      .prev_id = mine[i].prev_id, .body = mine[i].body, .len = mine[i].len,
				      .rung_us = mine[i].rung_us};
		B.fn(B.data, &w);
		free(mine[i].body);
	}
}

/* Loop thread: the socket is readable; every datagram's ids are woken. */
static void take_rung(loop *l, int fd, void *data, unsigned mask)
{
	(void)l;
	(void)data;
	(void)mask;
	int64_t ids[BELL_BATCH];
	for (;;) {
		ssize_t n = recv(fd, ids, sizeof ids, 0);
		if (n < 0 && errno != EINTR)
			return; /* drained */
		int count = (int)(n > 0 ? (size_t)n / sizeof *ids : 0);
		/* A negative first value is the time it was rung (a sender from
		 * before that, or a stray datagram, has none). */
		int64_t rung = count > 0 && ids[0] < 0 ? -ids[0] : 0;
		for (int i = rung ? 1 : 0; i < count; i++) {
			if (ids[i] <= 0)
				continue;
			struct bell_wake w = {.session = ids[i], .rung_us = rung};
			B.fn(B.data, &w);
		}
	}
}

int bell_listen(loop *l, int fd, int64_t owner, bell_fn *fn, void *data)
{
	B.owner = owner;
	B.fn = fn;
	B.data = data;
	if (loop_add(l, fd, LOOP_READABLE, take_rung, NULL) != 0 || loop_on_wake(l, take_local, NULL) != 0) {
		log_error("bell: cannot listen on the loop: %s", strerror(errno));
		return -1;
	}
	B.l = l;
	return 0;
}

/* ---- the store's listener (across machines) ---- */

static void heard(void *ctx, int64_t session, int64_t rung_us)
{
	(void)ctx;
	struct bell_wake w = {.session = session, .rung_us = rung_us};
	B.fn(B.data, &w);
}

static void listener_ready(loop *l, int fd, void *data, unsigned mask);

/* Step the listener and keep the loop watching the fd it needs now. */
static void listener_step(loop *l, int ready, int64_t now)
{
	int f = store_listener_step(B.ls, ready, now, heard, NULL);
	unsigned want = 0;
	int fd = store_listener_fd(B.ls, &want);
	unsigned mask = (want & STORE_WANT_READ ? LOOP_READABLE : 0) | (want & STORE_WANT_WRITE ? LOOP_WRITABLE : 0);
	if ((f & STORE_LISTEN_NEWFD) || fd != B.ls_fd) {
		if (B.ls_fd >= 0)
			loop_del(l, B.ls_fd); /* libpq may have closed it already: the slot goes */
		B.ls_fd = -1;
		if (fd >= 0 && loop_add(l, fd, mask, listener_ready, NULL) == 0) {
			B.ls_fd = fd;
			B.ls_want = mask;
		}
	} else if (fd >= 0 && mask != B.ls_want) {
		loop_set(l, fd, mask);
		B.ls_want = mask;
	}
	if (f & STORE_LISTEN_UP) {
		struct bell_wake all = {.session = 0};
		B.fn(B.data, &all);
	}
}

static void listener_ready(loop *l, int fd, void *data, unsigned mask)
{
	(void)fd;
	(void)data;
	(void)mask;
	listener_step(l, 1, util_mono_us());
}

static void listener_timer(loop *l, void *data, int64_t now)
{
	(void)data;
	listener_step(l, 0, now);
}

int bell_listen_store(loop *l, store_listener *ls)
{
	if (ls == NULL)
		return 0;
	B.ls = ls;
	if (loop_every(l, BELL_LISTEN_TICK_US, listener_timer, NULL) != 0) {
		log_error("bell: cannot put the store's listener on the loop");
		return -1;
	}
	return 0;
}

static int sender_fd(void)
{
	static _Thread_local int fd = -1;
	if (fd < 0)
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	return fd;
}

static void send_ids(int64_t owner, const int64_t *ids, int n)
{
	int fd = sender_fd();
	if (fd < 0)
		return;
	struct sockaddr_un sa;
	socklen_t len = bell_addr(owner, &sa);
	if (sendto(fd, ids, (size_t)n * sizeof *ids, 0, (struct sockaddr *)&sa, len) < 0 &&
	    errno != ECONNREFUSED && errno != ENOENT)
		log_debug("bell: ring %016llx: %s", (unsigned long long)owner, strerror(errno));
}

void bell_ring(struct core_wakes *w)
{
	int64_t ids[BELL_BATCH];
	int64_t now = w->n ? util_mono_us() : 0;
	/* Group by owner; w is small (a room's members), so quadratic is fine. */
	for (int i = 0; i < w->n; i++) {
		int64_t owner = w->v[i].owner;
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = w->v[j].owner == owner;
		if (seen || owner == 0)
			continue;
		if (owner == B.owner && B.l) {
			ring_local(w, owner, now);
			continue;
		}
		if (B.ls)
			continue; /* the store notified it at commit */
		ids[0] = -now;
		int n = 1;
		for (int j = i; j < w->n; j++) {
			if (w->v[j].owner != owner)
				continue;
			ids[n++] = w->v[j].session;
			if (n == BELL_BATCH) {
				send_ids(owner, ids, n);
				n = 1;
			}
		}
		if (n > 1)
			send_ids(owner, ids, n);
	}
}
