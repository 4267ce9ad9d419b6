/*
 * maint.h - the maintenance thread: prunes silent sessions and runs the
 * store's upkeep (SQLite: WAL checkpoints), so that no request ever pays
 * for either.
 */
#ifndef SIG_MAINT_H
#define SIG_MAINT_H

#include "core/core.h"

/* Start the thread over its own core. Returns 0, or -1 (logged). */
int maint_start(core *c);

#endif
