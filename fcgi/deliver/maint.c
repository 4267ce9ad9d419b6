/*
 * maint.c - the periodic work of each responder process, on a thread of
 * its own so that no request pays for it: the store's upkeep once a
 * second (store_maintain: SQLite's WAL checkpoints) and the pruner every
 * --prune-interval seconds.
 *
 * Design note (the pruner). A session is alive while anything shows it:
 * an authenticated request (which rewrites last_seen at most once a
 * second), an open stream or a waiting poll (their process refreshes
 * last_seen for all its streams every min(heartbeat/3, keepalive)
 * seconds). One silent for longer than --heartbeat-timeout is already dead
 * to the core (its token answers 401, a login for its id replaces it);
 * the pruner removes it within --prune-interval seconds: core_prune takes
 * the stale sessions oldest first, a batch per write transaction, and for
 * each one leaves its room (the members who stay get user-left), wakes
 * the process holding its stream (which then finds it gone and ends it)
 * and deletes it with its mailbox. The bells ring only after the commit.
 *
 * Every process runs the pruner and none coordinates: the stale read and
 * the delete are one write transaction, and the store's write
 * transactions are judged against the latest state (store.h), so a second
 * process finds the sessions already gone and each is pruned, and
 * announced, exactly once. A pass that fails (busy store) changes nothing
 * and is retried at the next interval.
 *
 * It must never: prune a session another request has just touched (the
 * stale test runs inside the transaction), or ring a bell before the
 * commit.
 */
#define _GNU_SOURCE
#include "deliver/maint.h"
#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "deliver/bell.h"

#include <stdlib.h>
#include <unistd.h>

static void *maint_main(void *arg)
{
	core *c = arg;
	int64_t next_prune = util_mono_us() + cfg.prune_interval * 1000000;
	for (;;) {
		sleep(1);
		if (core_maintain(c) != SIG_OK)
			log_warn("maint: store upkeep failed; will retry");
		if (util_mono_us() < next_prune)
			continue;
		next_prune = util_mono_us() + cfg.prune_interval * 1000000;
		core_wakes w = {0};
		int pruned = 0;
		sig_err e = core_prune(c, util_now_ms(), &w, &pruned);
		if (e != SIG_OK)
			log_warn("maint: prune failed (%s); will retry", sig_err_code(e));
		bell_ring(&w);
		core_wakes_free(&w);
	}
	return NULL;
}

int maint_start(core *c)
{
	return util_start_thread("maint", maint_main, c);
}
