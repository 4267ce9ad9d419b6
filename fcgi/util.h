/*
 * util.h - the small things every module needs: one out-of-memory policy
 * (allocation failure aborts the process: a responder that cannot allocate
 * a few bytes cannot answer honestly anyway), a growable byte buffer, and
 * clocks.
 */
#ifndef SIG_UTIL_H
#define SIG_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Aborting allocators: they never return NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* A growable byte buffer. Zero-initialise it ({0}) before first use;
 * buf_free() on a zeroed or freed buffer is harmless. */
typedef struct buf {
	char *data;
	size_t len;
	size_t cap;
} buf;

void buf_append(buf *b, const void *p, size_t n);
void buf_puts(buf *b, const char *s);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append v in decimal. */
void buf_put_i64(buf *b, int64_t v);
/* Drop the first n bytes (n <= len). */
void buf_consume(buf *b, size_t n);
void buf_free(buf *b);

/* Start n detached threads running fn(NULL). Returns 0, or -1 when one
 * could not be created. */
int start_threads(int n, void *(*fn)(void *));

/* Wall clock in milliseconds since the epoch (stored timestamps). */
int64_t now_ms(void);
/* Monotonic clock in microseconds (timeouts and measurements). */
int64_t mono_us(void);

/* Parse a whole decimal string into [min, max]. Returns 0 on success,
 * -1 (and *out untouched) on anything else: sign junk, overflow, trailing
 * bytes, empty input. */
int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
