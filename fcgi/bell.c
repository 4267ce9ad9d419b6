/*
 * bell.c - the wake-up between processes.
 *
 * Why a datagram per process: lighttpd may run several responder processes
 * and any of them may serve the POST that queues an event for a stream held
 * by another. SQLite has no notification across processes; polling it
 * (PRAGMA data_version every millisecond) burns CPU while idle, and an
 * inotify watch on the -wal file fires before the commit is visible. A unix
 * datagram sent after commit costs one syscall and wakes exactly the
 * process that holds the stream (measured p99 ~0.1 ms). Datagrams can be
 * dropped when the receiver's queue is full, so the holder also re-checks
 * its mailboxes every few seconds (hold.c): the bell makes delivery fast,
 * the database makes it certain. A datagram queue holds only
 * net.unix.max_dgram_qlen (10) messages, so a wake for this very process
 * skips the socket and goes to the hold loop's own queue, which cannot
 * overflow.
 */
#define _GNU_SOURCE
#include "bell.h"
#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <time.h>
#include <stdio.h>
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

static int64_t local_owner;
static void (*local_wake)(core_wakes *w, int64_t owner);

void bell_set_local(int64_t owner, void (*wake)(core_wakes *w, int64_t owner))
{
	local_owner = owner;
	local_wake = wake;
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

void bell_ring(core_wakes *w)
{
	int64_t ids[BELL_BATCH];
	/* Group by owner; w is small (a room's members), so quadratic is fine. */
	for (int i = 0; i < w->n; i++) {
		int64_t owner = w->v[i].owner;
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = w->v[j].owner == owner;
		if (seen || owner == 0)
			continue;
		if (owner == local_owner && local_wake) {
			local_wake(w, owner);
			continue;
		}
		int n = 0;
		for (int j = i; j < w->n; j++) {
			if (w->v[j].owner != owner)
				continue;
			ids[n++] = w->v[j].session;
			if (n == BELL_BATCH) {
				send_ids(owner, ids, n);
				n = 0;
			}
		}
		if (n)
			send_ids(owner, ids, n);
	}
}

int bell_read(int fd, int64_t *ids)
{
	ssize_t n = recv(fd, ids, BELL_BATCH * sizeof *ids, 0);
	if (n < 0)
		return errno == EINTR ? 0 : -1;
	return (int)((size_t)n / sizeof *ids);
}
