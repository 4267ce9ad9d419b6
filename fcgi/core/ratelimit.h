/*
 * ratelimit.h - token buckets kept in this process's memory, for limits
 * that need not be exact across processes (requests per client address,
 * commands per session). Logins, which must be shared, are limited in the
 * store instead (store_rate_take).
 */
#ifndef SIG_RATELIMIT_H
#define SIG_RATELIMIT_H

#include <stdint.h>

/* Take one token from the bucket of (kind, key), which refills at `rate`
 * per second up to `burst`. Returns 0 when allowed, else the whole seconds
 * until a token is available (>= 1). Thread-safe; memory is fixed. */
int rl_take(char kind, const char *key, double rate, double burst);

#endif
