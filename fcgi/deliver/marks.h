/*
 * marks.h - sent-mark batching and long-poll reclaim for the held streams.
 * Delivering an event only reads the store; what each stream wrote out
 * (its sent mark) and what a client acknowledged are recorded here, for
 * many streams in one write transaction once a second. An answered
 * long-poll leaves its marks and the release of its session to that
 * flush, and the client's next poll may take the claim over instead.
 */
#ifndef SIG_MARKS_H
#define SIG_MARKS_H

#include <stdint.h>

#include "core/core.h"

/* One stream's marks not yet in the store (0: none), recorded and zeroed
 * by marks_record. */
struct marks_ref {
	const core_stream *cs;
	int64_t *sent, *ack;
};

/* Loop thread: a long-poll of cs was answered having written events up to
 * sent (0 none) and with ack still to record; the next
 * marks_record(finished) records both and releases the session. */
void marks_poll_done(const core_stream *cs, int64_t sent, int64_t ack);

/* Any thread: when cs is a claim an answered long-poll left (same session
 * and generation), take it over: the release is cancelled and its marks
 * move to *sent and *ack (the larger ack wins). Returns 1, or 0 when there
 * is no such claim. Never blocks on I/O. */
int marks_reclaim(const core_stream *cs, int64_t *sent, int64_t *ack);

/* Loop thread: record, in one write transaction of c, the marks of refs[n]
 * and, with finished, what answered long-polls left. On success the refs'
 * marks are zeroed; on failure everything stays pending for the next call.
 * The answered polls are taken off the shared list first, so a
 * marks_reclaim() sees each either still there or gone. */
void marks_record(core *c, const struct marks_ref *refs, int n, int finished);

#endif
