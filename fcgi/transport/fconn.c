/*
 * fconn.c - the FastCGI connections the request threads serve: the
 * listener, and the kept connections (FCGI_KEEP_CONN: nginx with
 * fastcgi_keep_conn on) parked between two requests. It owns which thread
 * gets which connection, and when a connection is closed for being gone
 * or over the cap. It must never: read a request (libfcgi does, in
 * web.c), let a thread wait on a connection that has nothing to read, or
 * hand one connection to two threads.
 *
 * Design note. libfcgi serves a kept connection by leaving ipcFd open at
 * the end of a request, and FCGX_Accept_r reads the next request from it
 * instead of accepting: a blocking read, so a thread that finished a
 * request on a kept connection would sit in read() until nginx sends the
 * next one, maybe never. With nginx keeping more connections than we have
 * threads, every thread ends up parked on an idle one and nothing is
 * served. So no thread waits on a connection here, only on one epoll set
 * of the process's request threads, which holds:
 *   - the listener, EPOLLONESHOT: the one thread it wakes accepts one
 *     connection (non-blocking listener) and re-arms it at once, so a burst
 *     is shared out between threads and no two race for one accept;
 *   - every parked connection, EPOLLIN|EPOLLONESHOT: the one thread woken
 *     takes it, and it is in no thread's hands until parked again.
 * Several threads in epoll_wait on one epoll fd are woken one per event
 * (the kernel queues them as exclusive waiters), and the thread woken is
 * the one that serves: no hand-off between threads on the way, which the
 * delivery loop (loop.c) would have cost, a context switch per request on
 * the hot path, behind every stream's writes. A connection taken out is
 * peeked (MSG_PEEK): bytes are a request, FCGX_Accept_r with ipcFd set
 * reads it (web.c); EOF is the web server letting go of it (nginx's
 * keepalive cap or timeout), closed here; nothing yet goes back to the
 * set, but for a new connection, whose request is usually a moment behind
 * its connect: it is waited for on the thread a few ms first (settle),
 * cheaper than a hand-off to the next thread.
 * A held response (SSE, long-poll) keeps its connection on the delivery
 * loop until it ends; its end (END_REQUEST) tells nginx the connection is
 * free again and nginx may reuse it at once, so it comes back here
 * (fconn_give_back) rather than being closed: a close after END_REQUEST
 * races nginx picking the connection for its next request, and a POST
 * sent on a connection that then closes is answered 502, never retried.
 * For the same reason the cap closes only right after an answer, and the
 * parked ones are closed only at the very end of a drain (web_stop), by
 * the last request thread, right after its last look for requests, each
 * one peeked just before its close (a request found is answered first):
 * what is left is the microseconds between a peek and a close.
 */
#define _GNU_SOURCE
#include "transport/fconn.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static struct {
	int ep, lfd, tcp, max;
	_Atomic int parked;
	_Atomic int logged_cap;
	/* Parked or not, by fd: 1 from fconn_park until a thread takes it. */
	_Atomic unsigned char *state;
	int nstate;
} F = {.ep = -1, .lfd = -1};

static int arm(int fd, int op)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.fd = fd};
	return epoll_ctl(F.ep, op, fd, &ev);
}

int fconn_start(int listen_fd, int max_parked)
{
	struct rlimit rl;
	F.nstate = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 20)
			   ? (int)rl.rlim_cur
			   : 1 << 20;
	F.state = xcalloc((size_t)F.nstate, sizeof *F.state);
	F.max = max_parked;
	F.lfd = listen_fd;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	F.tcp = getsockname(listen_fd, (struct sockaddr *)&ss, &sl) == 0 &&
		(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
	int fl = fcntl(listen_fd, F_GETFL);
	F.ep = epoll_create1(EPOLL_CLOEXEC);
	if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) != 0 || F.ep < 0 || arm(listen_fd, EPOLL_CTL_ADD) != 0) {
		log_error("fconn: cannot watch the listener: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* The listener fired: one new connection, or -1 (FCONN_INTR when a signal
 * came: the caller looks again at why it waits). It is armed again unless
 * it is shut (web_drain, web_stop) or failed for good, or it is empty when
 * we may not wait (web_stop: what is queued is taken, then we are done). */
static int take_new(uint32_t events, int nowait)
{
	/* Non-blocking again each time: lighttpd shares the socket's flags
	 * with us (one open file) and a spawn of a sibling clears them; a
	 * blocking accept on a listener another process emptied would hold
	 * this thread. */
	int fl = fcntl(F.lfd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(F.lfd, F_SETFL, fl | O_NONBLOCK);
	int fd = accept4(F.lfd, NULL, NULL, SOCK_CLOEXEC);
	int e = errno;
	if (fd >= 0) {
		arm(F.lfd, EPOLL_CTL_MOD);
		metrics_add(MC_FCGI_ACCEPTED, 1);
		if (F.tcp) { /* answers are small and one-way: no Nagle (libfcgi's accept did this) */
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		return fd;
	}
	int shut = (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0;
	switch (e) {
	case EAGAIN: /* another thread took it, or nothing is left */
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
		if (!nowait && !shut)
			arm(F.lfd, EPOLL_CTL_MOD);
		return e == EINTR ? FCONN_INTR : -1;
	case EMFILE:
	case ENFILE:
	case ENOBUFS:
	case ENOMEM:
		log_warn("fconn: accept: %s", strerror(e));
		usleep(10000); /* or every thread spins on the same full table */
		arm(F.lfd, EPOLL_CTL_MOD);
		return -1;
	default: /* EINVAL: web_drain shut our listener */
		return -1;
	}
}

/* Does fd have a request to read? 1 yes, 0 not yet, -1 gone (closed). */
static int ready(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	close(fd); /* EOF: the web server let go of it (or it failed) */
	return -1;
}

static void park(int fd, int capped);

/* A new connection is accepted the moment the web server connects, and
 * its request follows a moment later (lighttpd writes it on its next
 * round): wait for it that long, on this thread, rather than park it and
 * wake another one for it (a hand-off that cost lighttpd's long-polls
 * 70 us each way). Only for a few ms: a connection that sends nothing
 * holds no thread longer. Returns 1 when fd became readable. */
#define FCONN_SETTLE_MS 5
static int settle(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, FCONN_SETTLE_MS) > 0;
}

int fconn_next(int nowait)
{
	for (;;) {
		struct epoll_event ev;
		int n = epoll_wait(F.ep, &ev, 1, nowait ? 0 : -1);
		if (n < 0) {
			if (errno != EINTR)
				log_error("fconn: epoll_wait: %s", strerror(errno));
			return FCONN_INTR;
		}
		if (n == 0)
			return FCONN_NONE;
		int fd = ev.data.fd, fresh = fd == F.lfd;
		if (fresh) {
			fd = take_new(ev.events, nowait);
			if (fd == FCONN_INTR)
				return FCONN_INTR;
			if (fd < 0)
				continue;
		} else {
			if (fd < 0 || fd >= F.nstate || !atomic_exchange(&F.state[fd], 0))
				continue; /* cannot happen: only parked ones are armed */
			atomic_fetch_sub(&F.parked, 1);
			metrics_parked(-1);
		}
		int r = ready(fd);
		if (r == 0 && fresh && settle(fd))
			r = ready(fd);
		if (r > 0)
			return fd;
		if (r == 0)
			park(fd, !fresh);
	}
}

void fconn_park(int fd)
{
	park(fd, 1);
}

/* Park fd; capped: count it against --max-kept (a kept connection after
 * its answer; a new one whose request is on its way is not refused). */
static void park(int fd, int capped)
{
	if (fd < 0)
		return;
	if (fd >= F.nstate || (atomic_fetch_add(&F.parked, 1) >= F.max && capped)) {
		if (fd < F.nstate)
			atomic_fetch_sub(&F.parked, 1);
		metrics_add(MC_FCGI_KEPT_CLOSED, 1);
		if (!atomic_exchange(&F.logged_cap, 1))
			log_warn("fconn: %d kept connections are parked (--max-kept): closing one after its answer "
				 "(counted in signal_fcgi_kept_closed_total, logged once)", F.max);
		close(fd);
		return;
	}
	metrics_parked(1);
	/* Marked before it is armed: a thread may take it the moment it is. */
	atomic_store(&F.state[fd], 1);
	if (arm(fd, EPOLL_CTL_MOD) != 0 && (errno != ENOENT || arm(fd, EPOLL_CTL_ADD) != 0)) {
		log_error("fconn: cannot park a kept connection: %s", strerror(errno));
		if (atomic_exchange(&F.state[fd], 0)) {
			atomic_fetch_sub(&F.parked, 1);
			metrics_parked(-1);
		}
		close(fd);
	}
}

void fconn_give_back(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
		close(fd);
		return;
	}
	fconn_park(fd);
}

int fconn_close_parked(void (*serve)(int fd, void *arg), void *arg)
{
	int n = 0, found;
	do { /* again while a pass served one: nginx may have sent on another meanwhile */
		found = 0;
		for (int fd = 0; fd < F.nstate; fd++) {
			if (!atomic_load_explicit(&F.state[fd], memory_order_relaxed) || !atomic_exchange(&F.state[fd], 0))
				continue;
			atomic_fetch_sub(&F.parked, 1);
			metrics_parked(-1);
			epoll_ctl(F.ep, EPOLL_CTL_DEL, fd, NULL);
			int r = ready(fd); /* closes it at EOF */
			if (r > 0) {
				serve(fd, arg);
				found = 1;
			} else if (r == 0) {
				close(fd);
				n++;
			}
		}
	} while (found);
	return n;
}

int fconn_parked(void)
{
	return atomic_load(&F.parked);
}
