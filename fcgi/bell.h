/*
 * bell.h - cross-process wake-up. Each responder process binds one unix
 * datagram socket in the abstract namespace, named by its random owner
 * nonce (the value stored in sessions.stream_owner). After a commit that
 * queues events, the sender rings the bell of each process holding a
 * recipient's stream, with the recipients' session ids as the message.
 */
#ifndef SIG_BELL_H
#define SIG_BELL_H

#include <stdint.h>

#include "core.h"

#define BELL_BATCH 128 /* session ids per datagram */

/* A fresh random owner nonce (> 0). */
int64_t bell_owner_new(void);
/* Bind this process's bell; returns a non-blocking fd, or -1 (logged). */
int bell_open(int64_t owner);
/* Wakes for `owner` (this process) go to wake() instead of the socket: all
 * of w's, which wake() filters by owner; it may take the events they carry
 * (their bodies, leaving NULL). */
void bell_set_local(int64_t owner, void (*wake)(core_wakes *w, int64_t owner));
/* Ring every process in w (grouped per owner). Never blocks; a bell that
 * cannot be rung is left to the holder's periodic re-check. This process's
 * own wakes may lose their event bodies to it (see bell_set_local). */
void bell_ring(core_wakes *w);
/* Read one datagram of session ids from fd into ids (room for BELL_BATCH).
 * Returns the count, 0 for an empty/foreign datagram, -1 when drained. */
int bell_read(int fd, int64_t *ids);

#endif
