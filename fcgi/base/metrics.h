/*
 * metrics.h - the node's counters, gauges and histograms, for GET
 * /api/metrics (Prometheus text format). Every layer counts what it sees
 * through these calls; each process counts into its own slot of a small
 * file shared by every responder of the database (design note in
 * metrics.c), and the process that answers a scrape sums them all.
 *
 * Every call is safe before metrics_open (it counts into this process's
 * memory only) and from any thread; none blocks or allocates.
 */
#ifndef SIG_METRICS_H
#define SIG_METRICS_H

#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

enum metrics_counter {
	MC_EVENTS_QUEUED,    /* events committed into mailboxes */
	MC_EVENTS_DELIVERED, /* events written to a stream, poll answer or socket */
	MC_PRUNED,           /* sessions pruned for silence */
	MC_BELL_WAKES,       /* wake-ups received (bell datagrams and in-process) */
	MC_RECHECK_CATCHES,  /* streams whose events only the periodic re-check found */
	MC_RECONNECTS_SENT,  /* "reconnect" told to streams while draining */
	MC_FCGI_ACCEPTED,    /* FastCGI connections accepted */
	MC_FCGI_REQUESTS,    /* FastCGI requests read (more than accepted: kept connections) */
	MC_FCGI_KEPT_CLOSED, /* kept connections closed at --max-kept instead of parked */
	MC__COUNT
};

/* Connections attached to a session, by transport (gauges). */
enum metrics_transport { MT_SSE, MT_POLL, MT_WS, MT__COUNT };
/* Where an error was answered. */
enum metrics_via { MV_HTTP, MV_WS, MV__COUNT };

enum metrics_hist {
	MH_COMMAND,  /* a command from arrival at the committer to its commit */
	MH_DELIVERY, /* an event from the commit (its bell) to its write */
	MH_COMMIT,   /* one store commit */
	MH__COUNT
};

/* Admin actions (counted by kind). */
enum metrics_admin { MA_LIST, MA_KICK, MA_BAN, MA_UNBAN, MA_CLOSE, MA__COUNT };

/* Take this process's slot in the file beside the database (db_path +
 * ".metrics", created 0600). Returns 0, or -1 when the file cannot be
 * used (logged): the process then counts alone, in private memory. */
int metrics_open(const char *db_path);

void metrics_add(enum metrics_counter c, uint64_t n);
void metrics_stream(enum metrics_transport t, int delta);
/* A command of `type` (a command name, NULL when it had none) ended with e. */
void metrics_command(const char *type, sig_err e);
void metrics_error(enum metrics_via v, sig_err e);
void metrics_ws_close(int code);
void metrics_admin(enum metrics_admin a);
/* One observation of us microseconds (negative counts as 0). */
void metrics_observe(enum metrics_hist h, int64_t us);
void metrics_set_draining(int on);
/* Idle kept FastCGI connections parked in this process (a gauge). */
void metrics_parked(int delta);

/* What the store says, for the gauges the slots cannot know. */
struct metrics_store {
	int64_t sessions, rooms, members, queued, streams;
};

/* Append the node's metrics (every slot summed; gauges of live processes
 * only) to out in the Prometheus text exposition format 0.0.4. */
void metrics_render(buf *out, const struct metrics_store *st);

#endif
