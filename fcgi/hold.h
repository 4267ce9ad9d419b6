/*
 * hold.h - held responses: SSE streams and waiting long-polls, all kept by
 * one epoll thread per process with non-blocking writes, so a stream costs
 * a few hundred bytes and no thread.
 */
#ifndef SIG_HOLD_H
#define SIG_HOLD_H

#include <stdint.h>

#include "core.h"

enum hold_kind { HOLD_SSE, HOLD_POLL };

/* What a request thread hands over once it has authenticated and claimed
 * the stream. The connection (fd) passes to the hold thread for good. */
struct hold_req {
	int fd;             /* the FastCGI connection from the web server */
	int request_id;     /* FastCGI request id on that connection */
	enum hold_kind kind;
	core_stream stream;
	int64_t cursor;     /* deliver events after this id */
	int64_t wait_ms;    /* HOLD_POLL: longest wait */
	char headers[384];  /* extra response header lines (CORS), "" for none */
};

/* Start the hold thread over its own core (and store). owner is this
 * process's nonce, bell_fd its bound bell. Returns 0, or -1 (logged). */
int hold_start(core *c, int64_t owner, int bell_fd);

/* Hand a held request over (copied). Thread-safe; never blocks on I/O. */
void hold_submit(const struct hold_req *r);

/* Number of responses held right now (approximate; for health). */
int64_t hold_count(void);

#endif
