/*
 * group.c - the committer thread.
 *
 * Design note. Every command is a write transaction, and on this stack a
 * transaction's fixed cost (locks on the -shm file, WAL frame and header
 * writes, and every other connection's page cache thrown away after the
 * commit) is most of a command's cost. So request threads queue their
 * bodies here, and the first one to find no commit under way becomes the
 * leader: it takes everything waiting, runs each command in its own
 * savepoint of one transaction (a failing command still changes nothing),
 * commits once, and only then wakes the callers: no one is told "200"
 * before their command is durable. Commands that arrive meanwhile form the
 * next group. Every group goes through the one shared writer connection,
 * which keeps its page cache warm. Under light load a group is one command
 * run by its own thread, with no hand-off; under load the groups grow.
 *
 * It must never: answer before the commit, or let one command's failure
 * undo another's.
 */
#define _GNU_SOURCE
#include "deliver/group.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "base/xalloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_MAX 64

struct job {
	const char *token, *remote, *body;
	size_t len;
	json_object *req;
	const uint8_t *token_hash;
	core_result *r;
	int64_t queued_us; /* when it joined the queue: its latency counts from here */
	int done;
	struct job *next;
};

static struct {
	core *c;
	pthread_mutex_t lock;
	pthread_cond_t finished;
	struct job *head, **tail;
	int leading; /* a group is being run */
} G = {.lock = PTHREAD_MUTEX_INITIALIZER, .finished = PTHREAD_COND_INITIALIZER};

/* The whole group failed to commit: every reply becomes that error. */
static void fail_all(struct job **jobs, int n, sig_err e)
{
	for (int i = 0; i < n; i++) {
		core_result *r = jobs[i]->r;
		core_result_free(r);
		core_result_init(r);
		r->err = e;
		r->reply = core_error_reply(NULL, e);
	}
}

/* Run one group as leader. Called and returns with G.lock held. */
static void lead(void)
{
	struct job *jobs[GROUP_MAX];
	int n = 0;
	while (G.head && n < GROUP_MAX) {
		jobs[n++] = G.head;
		G.head = G.head->next;
	}
	if (G.head == NULL)
		G.tail = &G.head;
	G.leading = 1;
	pthread_mutex_unlock(&G.lock);

	sig_err e = core_group_begin(G.c);
	if (e == SIG_OK) {
		for (int i = 0; i < n; i++) {
			struct job *j = jobs[i];
			if (j->req)
				core_exec_json(G.c, j->token, j->token_hash, j->remote, j->req, j->r);
			else
				core_exec_request(G.c, j->token, j->remote, j->body, j->len, j->r);
		}
		e = core_group_end(G.c);
	}
	int64_t now = util_mono_us();
	for (int i = 0; i < n; i++) {
		core_result_count(jobs[i]->r, e);
		metrics_observe(MH_COMMAND, now - jobs[i]->queued_us);
	}
	if (e != SIG_OK) {
		log_warn("group: a group of %d command(s) failed to commit (%s)", n, sig_err_code(e));
		fail_all(jobs, n, e);
	}

	pthread_mutex_lock(&G.lock);
	G.leading = 0;
	for (int i = 0; i < n; i++)
		jobs[i]->done = 1;
	pthread_cond_broadcast(&G.finished);
}

int group_start(core *c)
{
	G.c = c;
	G.tail = &G.head;
	return 0;
}

void group_exec_all(const struct group_item *items, int n)
{
	struct job *jobs = xcalloc((size_t)n, sizeof *jobs);
	int64_t now = util_mono_us();
	pthread_mutex_lock(&G.lock);
	for (int i = 0; i < n; i++) {
		jobs[i] = (struct job){.token = items[i].token, .remote = items[i].remote, .body = items[i].body,
				       .len = items[i].len, .req = items[i].req, .token_hash = items[i].token_hash,
				       .r = items[i].r, .queued_us = now};
		*G.tail = &jobs[i];
		G.tail = &jobs[i].next;
	}
	for (int i = 0; i < n; i++) {
		while (!jobs[i].done) {
			if (!G.leading)
				lead(); /* runs our jobs and whatever queued with them */
			else
				pthread_cond_wait(&G.finished, &G.lock);
		}
	}
	pthread_mutex_unlock(&G.lock);
	free(jobs);
}

void group_exec(const char *token, const char *remote, const char *body, size_t len, core_result *r)
{
	struct group_item it = {.token = token, .remote = remote, .body = body, .len = len, .r = r};
	group_exec_all(&it, 1);
}
