/*
 * bell.h - the wake-up. Each responder process binds one unix datagram
 * socket in the abstract namespace, named by its random owner nonce (the
 * value stored in sessions.stream_owner). After a commit that queues
 * events, the sender rings the bell of each process holding a recipient's
 * stream, with the recipients' session ids as the message; a wake for this
 * very process goes through a queue in memory instead and keeps the event
 * it carries. Both arrive on the loop as calls of one handler.
 */
#ifndef SIG_BELL_H
#define SIG_BELL_H

#include <stddef.h>
#include <stdint.h>

#include "deliver/loop.h"

#define BELL_BATCH 128 /* int64s per datagram: the time it was rung (negated), then session ids */

struct core_wakes;
typedef struct store_listener store_listener;

/* A wake as the loop's side receives it: the session to wake and, from a
 * thread of this process, the event it is for (event_id 0: none; the id of
 * the recipient's newest event before it; its body, valid during the call
 * only). */
struct bell_wake {
	int64_t session, event_id, prev_id;
	int64_t rung_us; /* when it was rung (util_mono_us, the same clock in every process), 0: unknown */
	const char *body;
	size_t len;
};
typedef void bell_fn(void *data, const struct bell_wake *w);

/* A fresh random owner nonce (> 0). */
int64_t bell_owner_new(void);
/* Bind this process's bell; returns a non-blocking fd, or -1 (logged). */
int bell_open(int64_t owner);
/* Take in the wakes for owner (this process) on loop l: the datagrams of
 * fd, and the wakes this process's threads ring, each as fn(data, wake).
 * Call once, before loop_start. Returns 0, or -1. */
int bell_listen(loop *l, int fd, int64_t owner, bell_fn *fn, void *data);
/* With a store that wakes processes itself (store.h, store_listener_new):
 * drive its listener on loop l (its fd, and a timer every
 * BELL_LISTEN_TICK_US for retries), hand what it hears to the handler of
 * bell_listen, and send no datagrams to other processes from then on. A
 * handler call for session 0 means every stream: the listener came back.
 * ls NULL: nothing changes. Call after bell_listen, before loop_start and
 * before any thread rings. Returns 0, or -1. */
#define BELL_LISTEN_TICK_US 200000
int bell_listen_store(loop *l, store_listener *ls);
/* Ring every process in w (grouped per owner). Never blocks; a bell that
 * cannot be rung is left to the holder's periodic re-check. Wakes for this
 * process take the event bodies they carry (leaving NULL). */
void bell_ring(struct core_wakes *w);

#endif
