/*
 * buf.h - a growable byte buffer (output queues, formatting). Every call
 * either succeeds or aborts the process on out-of-memory (xalloc.h).
 */
#ifndef SIG_BUF_H
#define SIG_BUF_H

#include <stddef.h>
#include <stdint.h>

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

#endif
