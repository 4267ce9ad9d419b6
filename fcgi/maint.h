/*
 * maint.h - the maintenance thread: prunes silent sessions and checkpoints
 * the write-ahead log, so that no request ever pays for either.
 */
#ifndef SIG_MAINT_H
#define SIG_MAINT_H

#include "core.h"

/* Start the thread over its own core. Returns 0, or -1 (logged). */
int maint_start(core *c);

#endif
