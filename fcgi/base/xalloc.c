/*
 * xalloc.c - the one out-of-memory policy: allocation failure aborts the
 * process (a responder that cannot allocate a few bytes cannot answer
 * honestly anyway), so no caller checks for NULL.
 */
#include "base/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void xalloc_fail(size_t n)
{
	fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		xalloc_fail(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		xalloc_fail(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		xalloc_fail(n);
	return q;
}

char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xmalloc(n), s, n);
}
