/*
 * group.h - group commit: request threads hand their POST bodies to one
 * committer thread, which runs every command waiting at that moment in a
 * single store transaction and answers them all after its commit.
 */
#ifndef SIG_GROUP_H
#define SIG_GROUP_H

#include "core.h"

/* Start the committer over its own core. Returns 0, or -1 (logged). */
int group_start(core *c);

/* Run a POST body through the committer and wait for its commit; fills r
 * exactly as core_exec_request would. Thread-safe. */
void group_exec(const char *token, const char *remote, const char *body, size_t len, core_result *r);

#endif
