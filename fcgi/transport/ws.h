/*
 * ws.h - the WebSocket transport: /api/ws, upgraded by the front server's
 * proxy and passed to --ws-listen. Text messages carry the same commands
 * and replies as POST /api/cmd; events arrive as text messages with the
 * same ids as on SSE. Connections are held connections (held.h) on the
 * process's loop, with their handlers in ws.c; commands run on ws.c's own
 * worker threads so the loop never waits for the store.
 */
#ifndef SIG_WS_H
#define SIG_WS_H

#include <stdint.h>

#include "core/core.h"
#include "deliver/loop.h"

/* Listen on a unix socket path or HOST:PORT. Returns the fd, -2 when
 * another process serves that unix socket, or -1 (logged). */
int ws_listen_open(const char *addr);

/* Accept connections from listen_fd on loop l and start `threads` command
 * threads for process `owner`. Call before loop_start. Returns 0, or -1. */
int ws_start(loop *l, int listen_fd, int threads, int64_t owner, core_factory make_core);

/* Graceful drain: stop accepting sockets (held_drain tells the open ones
 * to reconnect). Thread-safe; a no-op when ws_start never ran. */
void ws_drain(void);

#endif
