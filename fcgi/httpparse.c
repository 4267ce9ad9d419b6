/*
 * httpparse.c - the HTTP-side parsers of the transport, kept free of libfcgi
 * so they can be unit-tested and fuzzed on their own: query strings,
 * the token's three carriers, and origin lists. All of them refuse
 * rather than guess: a repeated key, a bad escape or an overlong value is
 * an error, never a best effort.
 */
#define _GNU_SOURCE
#include "httpparse.h"
#include "util.h"

#include <string.h>
#include <strings.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode src[0..len) into dst (room for max bytes + NUL). Refuses
 * bad escapes, control bytes and overlong values. */
static int url_decode(const char *src, size_t len, char *dst, size_t max)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)src[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (i + 2 >= len)
				return -1;
			int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = hi * 16 + lo;
			i += 2;
		}
		if (c < 0x20 || c == 0x7f || o >= max)
			return -1;
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

/* Parse a query string. Unknown keys are kept (and ignored by the caller);
 * a repeated key, a bad escape or too many pairs is an error. */
int query_parse(const char *qs, struct query *q)
{
	q->n = 0;
	if (qs == NULL)
		return 0;
	while (*qs) {
		const char *amp = strchr(qs, '&');
		size_t len = amp ? (size_t)(amp - qs) : strlen(qs);
		if (len > 0) {
			const char *eq = memchr(qs, '=', len);
			size_t klen = eq ? (size_t)(eq - qs) : len;
			if (q->n == QUERY_MAX_PAIRS)
				return -1;
			if (url_decode(qs, klen, q->kv[q->n].key, sizeof q->kv[q->n].key - 1) != 0)
				return -1;
			const char *v = eq ? eq + 1 : qs + len;
			if (url_decode(v, (size_t)(qs + len - v), q->kv[q->n].value, QUERY_VALUE_MAX) != 0)
				return -1;
			for (int i = 0; i < q->n; i++)
				if (strcmp(q->kv[i].key, q->kv[q->n].key) == 0)
					return -1;
			q->n++;
		}
		qs += len;
		if (*qs == '&')
			qs++;
	}
	return 0;
}

const char *query_get(const struct query *q, const char *key)
{
	for (int i = 0; i < q->n; i++)
		if (strcmp(q->kv[i].key, key) == 0)
			return q->kv[i].value;
	return NULL;
}

/* The token from "Authorization: Bearer", ?token= or the cookie, copied
 * into out ("" when none was presented). The cookie is the one a browser
 * sends by itself, so only it is subject to the Origin policy. */
enum token_source token_pick(const char *auth, const struct query *q, const char *cookie,
			     char out[HTTP_TOKEN_LEN + 1])
{
	out[0] = '\0';
	if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
		const char *t = auth + 7;
		while (*t == ' ')
			t++;
		if (strlen(t) == HTTP_TOKEN_LEN)
			memcpy(out, t, HTTP_TOKEN_LEN + 1);
		return TOKEN_EXPLICIT;
	}
	const char *qt = query_get(q, "token");
	if (qt) {
		if (strlen(qt) == HTTP_TOKEN_LEN)
			memcpy(out, qt, HTTP_TOKEN_LEN + 1);
		return TOKEN_EXPLICIT;
	}
	size_t nlen = strlen(COOKIE_NAME);
	for (const char *p = cookie; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == nlen + 1 + HTTP_TOKEN_LEN && strncmp(p, COOKIE_NAME "=", nlen + 1) == 0) {
			memcpy(out, p + nlen + 1, HTTP_TOKEN_LEN);
			out[HTTP_TOKEN_LEN] = '\0';
			return TOKEN_COOKIE;
		}
		p += len;
	}
	return TOKEN_NONE;
}

int query_int(const struct query *q, const char *key, int64_t max, int64_t *out)
{
	const char *v = query_get(q, key);
	if (v == NULL)
		return 0;
	return parse_i64(v, 0, max, out);
}

int origin_listed(const char *list, const char *origin)
{
	size_t olen = strlen(origin);
	while (list && *list) {
		const char *comma = strchr(list, ',');
		size_t len = comma ? (size_t)(comma - list) : strlen(list);
		while (len > 0 && *list == ' ')
			list++, len--;
		if (len == olen && strncmp(list, origin, len) == 0)
			return 1;
		list += len;
		if (*list == ',')
			list++;
	}
	return 0;
}
