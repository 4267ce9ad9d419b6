/*
 * group.h - group commit: request threads queue their POST bodies; one of
 * them at a time (the leader) runs every command waiting at that moment in
 * a single store transaction, and all are answered after its commit.
 */
#ifndef SIG_GROUP_H
#define SIG_GROUP_H

#include "core/core.h"

/* Use core c (its own store connection) for every group. Returns 0. */
int group_start(core *c);

/* Run a POST body in the next group and wait for its commit; fills r
 * exactly as core_exec_request would. Thread-safe. */
void group_exec(const char *token, const char *remote, const char *body, size_t len, core_result *r);

/* The same for n bodies at once (from different clients: each is its own
 * command, answered in its own r), waiting for all their commits. */
struct group_item {
	const char *token, *remote, *body;
	size_t len;
	json_object *req;           /* the body already parsed (jv_parse), or NULL */
	const uint8_t *token_hash;  /* core_token_hash(token) when known, or NULL */
	core_result *r;
};
void group_exec_all(const struct group_item *items, int n);

#endif
