/*
 * metrics.c - counters shared by every responder process of one database,
 * and their rendering in the Prometheus text format.
 *
 * Design note. A scrape reaches one process, but the node is all of them
 * (lighttpd spawns several; nginx's are started standalone), and none knows
 * the others. So each process counts into its own slot of a small file
 * beside the database (DB.metrics), mapped shared: a counter is one relaxed
 * atomic add on memory, no system call, no lock. The answering process
 * reads every slot and sums them.
 *
 * Which slot is whose, and which owner is alive, is told by the kernel, not
 * by pids written down: a process holds an open-file-description write lock
 * (F_OFD_SETLK) on its slot's byte range for as long as it lives, and the
 * kernel drops the lock when it dies, however it dies (kill -9 included).
 * A new process takes the first slot it can lock: an unused one, or one
 * whose owner died. A dead owner's counters stay in its slot and the new
 * owner counts on from them, so a node's counters never go down when a
 * responder is restarted; only its gauges (open streams) are zeroed, and a
 * scrape sums the gauges of slots whose lock is held (alive) only. The
 * header is initialised, and slots are taken, under a lock on the header's
 * range, so two processes starting together never take the same slot.
 *
 * The layout carries its size: a file written by another build of the
 * responder (another list of errors, say) is laid out anew, unless a
 * process of that build still holds a slot; then this process counts in
 * private memory (logged) rather than corrupt theirs.
 *
 * It must never: block a counting thread, or let a counter of the node go
 * down while the file lives.
 */
#define _GNU_SOURCE
#include "base/metrics.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOTS 64
#define MAGIC 0x5349474d45545231ull /* "SIGMETR1" */

/* Command types counted by name; anything else is "other". */
static const char *const cmd_types[] = {"login", "join", "leave", "signal", "ping",
					"room-users", "logout", "ticket", "other"};
#define CMD_TYPES (int)(sizeof cmd_types / sizeof cmd_types[0])
/* WebSocket close codes the server sends; others count as the last. */
static const int ws_codes[] = {1000, 1001, 1002, 1003, 1007, 1009, 1011, 1012, 4001, 0};
#define WS_CODES (int)(sizeof ws_codes / sizeof ws_codes[0])
static const char *const admin_names[MA__COUNT] = {"list", "kick", "ban", "unban", "close"};
/* Histogram bounds, microseconds. */
static const int64_t bounds_us[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
				    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
#define BUCKETS (int)(sizeof bounds_us / sizeof bounds_us[0])

struct hist {
	_Atomic uint64_t bucket[BUCKETS + 1]; /* the last: above every bound */
	_Atomic uint64_t count, sum_us;
};

struct slot {
	_Atomic int64_t pid; /* last owner; 0: never used */
	_Atomic int64_t draining;
	_Atomic int64_t parked; /* idle kept FastCGI connections */
	_Atomic uint64_t counters[MC__COUNT];
	_Atomic int64_t streams[MT__COUNT];
	_Atomic uint64_t commands[CMD_TYPES][SIG_E__COUNT];
	_Atomic uint64_t errors[MV__COUNT][SIG_E__COUNT];
	_Atomic uint64_t closes[WS_CODES];
	_Atomic uint64_t admin[MA__COUNT];
	struct hist hist[MH__COUNT];
};

struct header {
	uint64_t magic;
	uint64_t layout; /* sizeof(struct slot), SLOTS and the table sizes */
	char pad[4096 - 16];
};

struct file {
	struct header h;
	struct slot s[SLOTS];
};

static struct slot private_slot;
static struct {
	struct file *f; /* NULL: counting alone in private_slot */
	struct slot *me;
	int fd;
} M = {.me = &private_slot, .fd = -1};

static uint64_t layout_id(void)
{
	return (uint64_t)sizeof(struct slot) << 32 | (uint64_t)SLOTS << 16 | (uint64_t)SIG_E__COUNT << 8 |
	       (uint64_t)CMD_TYPES;
}

static off_t slot_off(int i)
{
	return (off_t)offsetof(struct file, s) + (off_t)i * (off_t)sizeof(struct slot);
}

/* An OFD lock on [start, start+len): type F_WRLCK or F_UNLCK; wait or not. */
static int range_lock(int fd, off_t start, off_t len, short type, int wait)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

/* Is slot i held by a live process other than this one? */
static int slot_live(int i)
{
	if (M.f == NULL)
		return 0;
	if (&M.f->s[i] == M.me)
		return 1;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = slot_off(i),
			   .l_len = (off_t)sizeof(struct slot)};
	if (fcntl(M.fd, F_OFD_GETLK, &fl) != 0)
		return 0;
	return fl.l_type != F_UNLCK;
}

static int any_live(void)
{
	for (int i = 0; i < SLOTS; i++)
		if (slot_live(i))
			return 1;
	return 0;
}

/* Under the header lock: lay the file out anew when it is not ours. */
static int check_layout(void)
{
	if (M.f->h.magic == MAGIC && M.f->h.layout == layout_id())
		return 0;
	if (any_live()) {
		log_warn("metrics: the shared file has another layout and a live owner; counting alone");
		return -1;
	}
	memset(M.f, 0, sizeof *M.f);
	M.f->h.magic = MAGIC;
	M.f->h.layout = layout_id();
	return 0;
}

/* Under the header lock: the first slot this process can lock. */
static struct slot *take_slot(void)
{
	for (int i = 0; i < SLOTS; i++) {
		if (range_lock(M.fd, slot_off(i), (off_t)sizeof(struct slot), F_WRLCK, 0) != 0)
			continue;
		struct slot *s = &M.f->s[i];
		/* A dead owner's counters carry on; what it held open is gone. */
		for (int t = 0; t < MT__COUNT; t++)
			atomic_store(&s->streams[t], 0);
		atomic_store(&s->draining, 0);
		atomic_store(&s->parked, 0);
		atomic_store(&s->pid, (int64_t)getpid());
		return s;
	}
	log_warn("metrics: all %d slots are held; counting alone", SLOTS);
	return NULL;
}

int metrics_open(const char *db_path)
{
	char path[4096];
	if (snprintf(path, sizeof path, "%s.metrics", db_path) >= (int)sizeof path)
		return -1;
	/* Never through a link, and only a plain file of ours that no one else
	 * may write: the other processes trust what is in it. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0) {
		log_warn("metrics: cannot open %s: %s; counting alone", path, strerror(errno));
		return -1;
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 022)) {
		log_warn("metrics: %s is not a regular file of this user that only it may write; counting alone", path);
		close(fd);
		return -1;
	}
	if (range_lock(fd, 0, (off_t)sizeof(struct header), F_WRLCK, 1) != 0 ||
	    (sb.st_size < (off_t)sizeof(struct file) && ftruncate(fd, (off_t)sizeof(struct file)) != 0)) {
		log_warn("metrics: cannot lock or size %s: %s; counting alone", path, strerror(errno));
		close(fd);
		return -1;
	}
	void *p = mmap(NULL, sizeof(struct file), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		log_warn("metrics: cannot map %s: %s; counting alone", path, strerror(errno));
		close(fd);
		return -1;
	}
	M.f = p;
	M.fd = fd;
	struct slot *s = check_layout() == 0 ? take_slot() : NULL;
	range_lock(fd, 0, (off_t)sizeof(struct header), F_UNLCK, 0);
	if (s == NULL) {
		munmap(p, sizeof(struct file));
		close(fd);
		M.f = NULL;
		M.fd = -1;
		return -1;
	}
	M.me = s; /* called before any thread counts */
	return 0;
}

/* ---- counting ---- */

#define ADD(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

void metrics_add(enum metrics_counter c, uint64_t n)
{
	if (c >= 0 && c < MC__COUNT && n)
		ADD(M.me->counters[c], n);
}

void metrics_stream(enum metrics_transport t, int delta)
{
	if (t >= 0 && t < MT__COUNT)
		ADD(M.me->streams[t], delta);
}

static int err_index(sig_err e)
{
	return e >= 0 && e < SIG_E__COUNT ? (int)e : SIG_E_INTERNAL;
}

void metrics_command(const char *type, sig_err e)
{
	int t = CMD_TYPES - 1;
	for (int i = 0; type && i < CMD_TYPES - 1; i++)
		if (strcmp(type, cmd_types[i]) == 0)
			t = i;
	ADD(M.me->commands[t][err_index(e)], 1);
}

void metrics_error(enum metrics_via v, sig_err e)
{
	if (v >= 0 && v < MV__COUNT && e != SIG_OK)
		ADD(M.me->errors[v][err_index(e)], 1);
}

void metrics_ws_close(int code)
{
	int k = WS_CODES - 1;
	for (int i = 0; i < WS_CODES - 1; i++)
		if (ws_codes[i] == code)
			k = i;
	ADD(M.me->closes[k], 1);
}

void metrics_admin(enum metrics_admin a)
{
	if (a >= 0 && a < MA__COUNT)
		ADD(M.me->admin[a], 1);
}

void metrics_observe(enum metrics_hist h, int64_t us)
{
	if (h < 0 || h >= MH__COUNT)
		return;
	if (us < 0)
		us = 0;
	int b = 0;
	while (b < BUCKETS && us > bounds_us[b])
		b++;
	struct hist *x = &M.me->hist[h];
	ADD(x->bucket[b], 1);
	ADD(x->count, 1);
	ADD(x->sum_us, (uint64_t)us);
}

void metrics_set_draining(int on)
{
	atomic_store(&M.me->draining, on);
}

void metrics_parked(int delta)
{
	ADD(M.me->parked, delta);
}

/* ---- the scrape ---- */

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* The slots to sum: every used slot of the file, or our private one. */
static int nslots(void)
{
	return M.f ? SLOTS : 1;
}

static struct slot *slot_at(int i)
{
	return M.f ? &M.f->s[i] : &private_slot;
}

static int slot_used(int i)
{
	return M.f == NULL || LOAD(M.f->s[i].pid) != 0;
}

static int slot_alive(int i)
{
	return M.f == NULL || slot_live(i);
}

static void help(buf *out, const char *name, const char *type, const char *text)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void gauge(buf *out, const char *name, const char *text, int64_t v)
{
	help(out, name, "gauge", text);
	buf_printf(out, "%s %lld\n", name, (long long)v);
}

static uint64_t sum_counter(enum metrics_counter c)
{
	uint64_t v = 0;
	for (int i = 0; i < nslots(); i++)
		if (slot_used(i))
			v += LOAD(slot_at(i)->counters[c]);
	return v;
}

static void counter(buf *out, const char *name, const char *text, enum metrics_counter c)
{
	help(out, name, "counter", text);
	buf_printf(out, "%s %llu\n", name, (unsigned long long)sum_counter(c));
}

static void render_hist(buf *out, const char *name, const char *text, enum metrics_hist h)
{
	uint64_t b[BUCKETS + 1] = {0}, count = 0, sum = 0;
	for (int i = 0; i < nslots(); i++) {
		if (!slot_used(i))
			continue;
		struct hist *x = &slot_at(i)->hist[h];
		for (int k = 0; k <= BUCKETS; k++)
			b[k] += LOAD(x->bucket[k]);
		count += LOAD(x->count);
		sum += LOAD(x->sum_us);
	}
	help(out, name, "histogram", text);
	uint64_t cum = 0;
	for (int k = 0; k < BUCKETS; k++) {
		cum += b[k];
		buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds_us[k] / 1e6,
			   (unsigned long long)cum);
	}
	cum += b[BUCKETS];
	/* Slots are read while others count: never let +Inf fall below a bucket. */
	if (count < cum)
		count = cum;
	buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
	buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, (double)sum / 1e6, name, (unsigned long long)count);
}

static void render_commands(buf *out)
{
	help(out, "signal_commands_total", "counter", "Commands run, by type and result (an error code, or ok).");
	for (int t = 0; t < CMD_TYPES; t++) {
		for (int e = 0; e < SIG_E__COUNT; e++) {
			uint64_t v = 0;
			for (int i = 0; i < nslots(); i++)
				if (slot_used(i))
					v += LOAD(slot_at(i)->commands[t][e]);
			/* Every type's ok line always, so a rate of it exists from the start. */
			if (v || (e == SIG_OK && t < CMD_TYPES - 1))
				buf_printf(out, "signal_commands_total{type=\"%s\",result=\"%s\"} %llu\n", cmd_types[t],
					   sig_err_code((sig_err)e), (unsigned long long)v);
		}
	}
}

static void render_errors(buf *out)
{
	static const char *const via[MV__COUNT] = {"http", "websocket"};
	help(out, "signal_errors_total", "counter",
	     "Error answers, by transport and error code (HTTP status: signal_http_errors_total).");
	for (int v = 0; v < MV__COUNT; v++)
		for (int e = 1; e < SIG_E__COUNT; e++) {
			uint64_t n = 0;
			for (int i = 0; i < nslots(); i++)
				if (slot_used(i))
					n += LOAD(slot_at(i)->errors[v][e]);
			if (n)
				buf_printf(out, "signal_errors_total{transport=\"%s\",code=\"%s\"} %llu\n", via[v],
					   sig_err_code((sig_err)e), (unsigned long long)n);
		}
	help(out, "signal_http_errors_total", "counter", "Error answers by HTTP status (WebSocket: the status POST would have had).");
	for (int status = 400; status < 600; status++) {
		uint64_t n = 0;
		for (int e = 1; e < SIG_E__COUNT; e++) {
			if (sig_err_status((sig_err)e) != status)
				continue;
			for (int i = 0; i < nslots(); i++)
				if (slot_used(i))
					for (int v = 0; v < MV__COUNT; v++)
						n += LOAD(slot_at(i)->errors[v][e]);
		}
		if (n)
			buf_printf(out, "signal_http_errors_total{status=\"%d\"} %llu\n", status, (unsigned long long)n);
	}
	help(out, "signal_websocket_closes_total", "counter", "WebSocket close frames sent, by close code (0: other).");
	for (int k = 0; k < WS_CODES; k++) {
		uint64_t n = 0;
		for (int i = 0; i < nslots(); i++)
			if (slot_used(i))
				n += LOAD(slot_at(i)->closes[k]);
		if (n)
			buf_printf(out, "signal_websocket_closes_total{code=\"%d\"} %llu\n", ws_codes[k], (unsigned long long)n);
	}
}

void metrics_render(buf *out, const struct metrics_store *st)
{
	static const char *const transports[MT__COUNT] = {"sse", "poll", "websocket"};
	int64_t streams[MT__COUNT] = {0}, live = 0, draining = 0, parked = 0;
	for (int i = 0; i < nslots(); i++) {
		if (!slot_used(i) || !slot_alive(i))
			continue;
		live++;
		draining += LOAD(slot_at(i)->draining) != 0;
		parked += LOAD(slot_at(i)->parked);
		for (int t = 0; t < MT__COUNT; t++)
			streams[t] += LOAD(slot_at(i)->streams[t]);
	}
	gauge(out, "signal_sessions", "Live sessions (the store).", st->sessions);
	gauge(out, "signal_rooms", "Rooms with at least one member (the store).", st->rooms);
	gauge(out, "signal_room_members", "Room memberships (the store).", st->members);
	gauge(out, "signal_mailbox_events", "Events kept in mailboxes, delivered or not (the store).", st->queued);
	gauge(out, "signal_store_streams", "Sessions the store knows a stream holder of.", st->streams);
	help(out, "signal_streams", "gauge", "Connections attached to a session, by transport, in live processes.");
	for (int t = 0; t < MT__COUNT; t++)
		buf_printf(out, "signal_streams{transport=\"%s\"} %lld\n", transports[t], (long long)streams[t]);
	gauge(out, "signal_responders", "Responder processes alive on this node.", live);
	gauge(out, "signal_draining_responders", "Responder processes draining for shutdown.", draining);
	gauge(out, "signal_fcgi_parked_connections",
	      "Idle kept FastCGI connections (fastcgi_keep_conn) parked until their next request.", parked);
	render_commands(out);
	render_errors(out);
	counter(out, "signal_events_queued_total", "Events committed into mailboxes.", MC_EVENTS_QUEUED);
	counter(out, "signal_events_delivered_total", "Events written to a stream, a poll answer or a socket.",
		MC_EVENTS_DELIVERED);
	counter(out, "signal_prunes_total", "Sessions pruned for silence.", MC_PRUNED);
	counter(out, "signal_bell_wakeups_total", "Wake-ups received (bell datagrams and in-process).", MC_BELL_WAKES);
	counter(out, "signal_recheck_catches_total", "Streams whose new events only the periodic re-check found.",
		MC_RECHECK_CATCHES);
	counter(out, "signal_reconnects_sent_total", "Reconnect messages sent to streams while draining.",
		MC_RECONNECTS_SENT);
	counter(out, "signal_fcgi_connections_total", "FastCGI connections accepted from the web server.",
		MC_FCGI_ACCEPTED);
	counter(out, "signal_fcgi_requests_total",
		"FastCGI requests read; more than connections when the web server keeps them (nginx).", MC_FCGI_REQUESTS);
	counter(out, "signal_fcgi_kept_closed_total", "Kept FastCGI connections closed at --max-kept instead of parked.",
		MC_FCGI_KEPT_CLOSED);
	help(out, "signal_admin_actions_total", "counter", "Admin API actions done, by action.");
	for (int a = 0; a < MA__COUNT; a++) {
		uint64_t n = 0;
		for (int i = 0; i < nslots(); i++)
			if (slot_used(i))
				n += LOAD(slot_at(i)->admin[a]);
		buf_printf(out, "signal_admin_actions_total{action=\"%s\"} %llu\n", admin_names[a], (unsigned long long)n);
	}
	render_hist(out, "signal_command_duration_seconds", "Commands from arrival at the committer to their commit.",
		    MH_COMMAND);
	render_hist(out, "signal_delivery_latency_seconds", "Events from their commit to their write to the stream.",
		    MH_DELIVERY);
	render_hist(out, "signal_store_commit_duration_seconds", "Store commits.", MH_COMMIT);
}
