/*
 * xalloc.h - aborting allocators: they never return NULL. Allocation
 * failure ends the process with a message (one out-of-memory policy for
 * the whole tree, not half-checked malloc calls). Prefix: x.
 */
#ifndef SIG_XALLOC_H
#define SIG_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Report that n bytes could not be had, and abort. */
void xalloc_fail(size_t n) __attribute__((noreturn));

#endif
