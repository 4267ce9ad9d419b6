/*
 * ws.h - the WebSocket transport: /api/ws, upgraded by the front server's
 * proxy and passed to --ws-listen. Text messages carry the same commands
 * and replies as POST /api/cmd; events arrive as text messages with the
 * same ids as on SSE. Connections live on the hold loop (hold.c); commands
 * run on ws.c's own worker threads so the loop never waits for the store.
 */
#ifndef SIG_WS_H
#define SIG_WS_H

#include <stddef.h>
#include <stdint.h>

#include "hold.h"
#include "web.h"

/* Listen on a unix socket path or HOST:PORT. Returns the fd, or -1 (logged). */
int ws_listen_open(const char *addr);

/* Start `threads` command threads for process `owner`. Returns 0, or -1. */
int ws_start(int threads, int64_t owner, web_core_factory make_core);

/* ---- called by hold.c, on the loop thread ---- */
struct ws_conn;
/* A new connection, awaiting its handshake. */
struct ws_conn *ws_conn_new(held *h);
/* The socket is readable (or hung up). Returns -1 when the connection was
 * destroyed, else 0. */
int ws_readable(struct ws_conn *w);
/* Queue one event (one-line JSON) as a text message. */
void ws_send_event(struct ws_conn *w, const char *json, size_t len);
/* Once a second: ping, and close a client silent past the heartbeat timeout. */
void ws_tick(struct ws_conn *w, int64_t now_us);
/* The attached session ended, or another stream took it over: close with
 * 4001 (after the reply to a command in flight, which may explain it). */
void ws_session_ended(struct ws_conn *w);
/* The connection's output queue is empty again: read on if we stopped. */
void ws_drained(struct ws_conn *w);
/* The socket is gone; w is freed once no command of it is in flight. */
void ws_conn_gone(struct ws_conn *w);

#endif
