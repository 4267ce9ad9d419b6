/*
 * maint.c - periodic work of each responder process. Every process runs
 * it; the store's write lock makes pruning happen once: a second process
 * finds the stale sessions already gone. A session silent for longer than
 * --heartbeat-timeout is pruned within --prune-interval seconds of that.
 */
#define _GNU_SOURCE
#include "maint.h"
#include "bell.h"
#include "config.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *maint_main(void *arg)
{
	core *c = arg;
	int64_t next_prune = mono_us() + cfg.prune_interval * 1000000;
	for (;;) {
		sleep(1);
		if (core_checkpoint(c, cfg.wal_restart) != SIG_OK)
			log_warn("maint: checkpoint failed; will retry");
		if (mono_us() < next_prune)
			continue;
		next_prune = mono_us() + cfg.prune_interval * 1000000;
		core_wakes w = {0};
		int pruned = 0;
		sig_err e = core_prune(c, now_ms(), &w, &pruned);
		if (e != SIG_OK)
			log_warn("maint: prune failed (%s); will retry", sig_err_code(e));
		bell_ring(&w);
		core_wakes_free(&w);
	}
	return NULL;
}

int maint_start(core *c)
{
	pthread_t t;
	if (pthread_create(&t, NULL, maint_main, c) != 0) {
		log_error("maint: cannot start thread");
		return -1;
	}
	pthread_detach(t);
	return 0;
}
