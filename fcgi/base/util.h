/*
 * util.h - the small things every module needs: clocks, strict integer
 * parsing, detached threads. (Allocation: xalloc.h; byte buffers: buf.h.)
 */
#ifndef SIG_UTIL_H
#define SIG_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Start one detached thread running fn(arg). Returns 0, or -1 (logged
 * as "who: cannot start thread"). */
int util_start_thread(const char *who, void *(*fn)(void *), void *arg);
/* Start n detached threads running fn(NULL). Returns 0, or -1 when one
 * could not be created. */
int util_start_threads(int n, void *(*fn)(void *));

/* Wall clock in milliseconds since the epoch (stored timestamps). */
int64_t util_now_ms(void);
/* Monotonic clock in microseconds (timeouts and measurements). */
int64_t util_mono_us(void);

/* Parse a whole decimal string into [min, max]. Returns 0 on success,
 * -1 (and *out untouched) on anything else: sign junk, overflow, trailing
 * bytes, empty input. */
int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* An IP address in its one canonical spelling (inet_ntop's: lowercase,
 * RFC 5952's shortest IPv6 form; an IPv4-mapped IPv6 address as IPv4), so
 * that "::FFFF:10.0.0.1", "::ffff:10.0.0.1" and "10.0.0.1" are one address.
 * out holds UTIL_ADDR_MAX bytes. Returns 0, or -1 when s is no address. */
#define UTIL_ADDR_MAX 46 /* INET6_ADDRSTRLEN */
int util_canon_addr(const char *s, char out[UTIL_ADDR_MAX]);

#endif
