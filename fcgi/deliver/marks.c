/*
 * marks.c - recording what held streams delivered, in batches.
 *
 * Design note. Deliveries only read the store, so a message costs one
 * write transaction (its sender's) instead of two; the sent marks feed
 * only the mailbox cap and the replay window, which may lag a second (the
 * cap then errs on the side of refusing). So the loop gives its streams'
 * marks here once a second and they go to the store together. An answering
 * long-poll leaves its marks and the release of its session to that flush
 * as well, so its answer waits for no commit: the client's next poll
 * acknowledges what it got anyway, and a newer claim of the session makes
 * the late release a no-op. A next poll of the same session in this
 * process before that flush takes the claim over (marks_reclaim, from a
 * request thread): a poll cycle then writes nothing at all.
 *
 * It must never: release a session a reclaimed poll holds, or drop marks
 * that failed to commit.
 */
#include "deliver/marks.h"
#include "base/xalloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct poll_done {
	core_stream cs;
	int64_t sent, ack;
};

static struct {
	pthread_mutex_t lock;
	struct poll_done *v; /* answered long-polls, for the next marks_record(finished) */
	int n, cap;
} D = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Put answered long-polls (back) on the list. */
static void done_add(const struct poll_done *d, int n)
{
	pthread_mutex_lock(&D.lock);
	if (D.n + n > D.cap) {
		D.cap = D.n + n > 64 ? 2 * (D.n + n) : 64;
		D.v = xrealloc(D.v, (size_t)D.cap * sizeof *D.v);
	}
	memcpy(D.v + D.n, d, (size_t)n * sizeof *d);
	D.n += n;
	pthread_mutex_unlock(&D.lock);
}

void marks_poll_done(const core_stream *cs, int64_t sent, int64_t ack)
{
	struct poll_done d = {.cs = *cs, .sent = sent, .ack = ack};
	done_add(&d, 1);
}

int marks_reclaim(const core_stream *cs, int64_t *sent, int64_t *ack)
{
	int found = 0;
	pthread_mutex_lock(&D.lock);
	for (int i = 0; i < D.n; i++) {
		struct poll_done *d = &D.v[i];
		if (d->cs.session != cs->session || d->cs.gen != cs->gen)
			continue;
		*sent = d->sent;
		if (d->ack > *ack)
			*ack = d->ack;
		*d = D.v[--D.n];
		found = 1;
		break;
	}
	pthread_mutex_unlock(&D.lock);
	return found;
}

/* Record what one stream or finished poll has not yet recorded. */
static sig_err record_one(core *c, const core_stream *cs, int64_t sent, int64_t ack)
{
	sig_err e = SIG_OK;
	if (ack)
		e = core_stream_ack(c, cs, ack);
	if (e == SIG_OK && sent)
		e = core_stream_sent(c, cs, sent);
	return e;
}

void marks_record(core *c, const struct marks_ref *refs, int n, int finished)
{
	struct poll_done *done = NULL;
	int ndone = 0;
	if (finished) {
		pthread_mutex_lock(&D.lock);
		done = D.v;
		ndone = D.n;
		D.v = NULL;
		D.n = D.cap = 0;
		pthread_mutex_unlock(&D.lock);
	}
	if (n == 0 && ndone == 0) {
		free(done);
		return;
	}
	sig_err e = core_marks_begin(c);
	if (e == SIG_OK) {
		for (int i = 0; i < n && e == SIG_OK; i++)
			e = record_one(c, refs[i].cs, *refs[i].sent, *refs[i].ack);
		for (int i = 0; i < ndone && e == SIG_OK; i++)
			if ((e = record_one(c, &done[i].cs, done[i].sent, done[i].ack)) == SIG_OK)
				e = core_stream_release(c, &done[i].cs);
		core_delivery_end(c, e == SIG_OK);
	}
	if (e == SIG_OK) {
		for (int i = 0; i < n; i++)
			*refs[i].sent = *refs[i].ack = 0;
	} else if (ndone > 0) {
		done_add(done, ndone);
	}
	free(done);
}
