/*
 * httpparse.c - the HTTP-side parsers of the transport, kept free of libfcgi
 * so they can be unit-tested and fuzzed on their own: query strings,
 * the token's three carriers, origin lists, and the client address behind
 * --trust-proxy (only a trusted peer's X-Forwarded-For / X-Real-IP is
 * believed; never a header by default). All of them refuse
 * rather than guess: a repeated key, a bad escape or an overlong value is
 * an error, never a best effort.
 */
#define _GNU_SOURCE
#include "transport/httpparse.h"
#include "base/buf.h"
#include "base/util.h"
#include "base/xalloc.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
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
int hp_query_parse(const char *qs, struct hp_query *q)
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
			if (q->n == HP_QUERY_MAX_PAIRS)
				return -1;
			if (url_decode(qs, klen, q->kv[q->n].key, sizeof q->kv[q->n].key - 1) != 0)
				return -1;
			const char *v = eq ? eq + 1 : qs + len;
			if (url_decode(v, (size_t)(qs + len - v), q->kv[q->n].value, HP_QUERY_VALUE_MAX) != 0)
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

const char *hp_query_get(const struct hp_query *q, const char *key)
{
	for (int i = 0; i < q->n; i++)
		if (strcmp(q->kv[i].key, key) == 0)
			return q->kv[i].value;
	return NULL;
}

/* The token from "Authorization: Bearer", ?token= or the cookie, copied
 * into out ("" when none was presented). The cookie is the one a browser
 * sends by itself, so only it is subject to the Origin policy. */
/* An address as 16 bytes (IPv4 as v4-mapped IPv6). Returns 0, or -1. */
static int addr_parse(const char *s, size_t len, unsigned char out[16])
{
	char tmp[INET6_ADDRSTRLEN + 1];
	if (len == 0 || len >= sizeof tmp)
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	struct in_addr v4;
	if (inet_pton(AF_INET, tmp, &v4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &v4, 4);
		return 0;
	}
	return inet_pton(AF_INET6, tmp, out) == 1 ? 0 : -1;
}

/* One list entry, "ADDR" or "ADDR/BITS": its address and prefix length
 * (counted in the 128 bits of the mapped form). Returns 0, or -1. */
static int entry_parse(const char *s, size_t len, unsigned char net[16], int *bits)
{
	const char *slash = memchr(s, '/', len);
	size_t alen = slash ? (size_t)(slash - s) : len;
	if (addr_parse(s, alen, net) != 0)
		return -1;
	int v4 = memcmp(net, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 && memchr(s, ':', alen) == NULL;
	*bits = 128;
	if (slash) {
		char num[8];
		size_t nlen = len - alen - 1;
		int64_t b = 0;
		if (nlen == 0 || nlen >= sizeof num)
			return -1;
		memcpy(num, slash + 1, nlen);
		num[nlen] = '\0';
		if (util_parse_i64(num, 0, v4 ? 32 : 128, &b) != 0)
			return -1;
		*bits = (int)b + (v4 ? 96 : 0);
	}
	return 0;
}

/* 1 when the first `bits` bits of a and b agree (--metrics-allow and
 * --trust-proxy both match with it). */
static int prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int whole = bits / 8, rest = bits % 8;
	if (memcmp(a, b, (size_t)whole) != 0)
		return 0;
	if (rest == 0)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

/* Call fn for each entry of list; stops at the first nonzero. */
static int each_entry(const char *list, int (*fn)(const char *s, size_t len, void *ctx), void *ctx)
{
	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len > 0 && *p == ' ')
			p++, len--;
		while (len > 0 && p[len - 1] == ' ')
			len--;
		int rc = fn(p, len, ctx);
		if (rc)
			return rc;
		p = end ? end + 1 : p + len;
	}
	return 0;
}

static int entry_matches(const char *s, size_t len, void *ctx)
{
	unsigned char net[16];
	int bits = 0;
	return entry_parse(s, len, net, &bits) == 0 && prefix_match(net, ctx, bits);
}

static int entry_bad(const char *s, size_t len, void *ctx)
{
	(void)ctx;
	unsigned char net[16];
	int bits = 0;
	return entry_parse(s, len, net, &bits) != 0;
}

int hp_addr_listed(const char *list, const char *addr)
{
	unsigned char a[16];
	if (list == NULL || addr == NULL || addr_parse(addr, strlen(addr), a) != 0)
		return 0;
	return each_entry(list, entry_matches, a);
}

int hp_addr_list_valid(const char *list)
{
	return list != NULL && *list && !each_entry(list, entry_bad, NULL);
}

const char *hp_bearer(const char *auth)
{
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		return NULL;
	const char *t = auth + 7;
	while (*t == ' ')
		t++;
	return t;
}

enum hp_token_source hp_token_pick(const char *auth, const struct hp_query *q, const char *cookie,
			     char out[HP_TOKEN_LEN + 1])
{
	out[0] = '\0';
	if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
		const char *t = auth + 7;
		while (*t == ' ')
			t++;
		if (strlen(t) == HP_TOKEN_LEN)
			memcpy(out, t, HP_TOKEN_LEN + 1);
		return HP_TOKEN_EXPLICIT;
	}
	const char *qt = hp_query_get(q, "token");
	if (qt) {
		if (strlen(qt) == HP_TOKEN_LEN)
			memcpy(out, qt, HP_TOKEN_LEN + 1);
		return HP_TOKEN_EXPLICIT;
	}
	const char *tk = hp_query_get(q, "ticket");
	if (tk) {
		if (strlen(tk) == HP_TOKEN_LEN)
			memcpy(out, tk, HP_TOKEN_LEN + 1);
		return HP_TOKEN_TICKET;
	}
	size_t nlen = strlen(HP_COOKIE_NAME);
	for (const char *p = cookie; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == nlen + 1 + HP_TOKEN_LEN && strncmp(p, HP_COOKIE_NAME "=", nlen + 1) == 0) {
			memcpy(out, p + nlen + 1, HP_TOKEN_LEN);
			out[HP_TOKEN_LEN] = '\0';
			return HP_TOKEN_COOKIE;
		}
		p += len;
	}
	return HP_TOKEN_NONE;
}

int hp_query_int(const struct hp_query *q, const char *key, int64_t max, int64_t *out)
{
	const char *v = hp_query_get(q, key);
	if (v == NULL)
		return 0;
	return util_parse_i64(v, 0, max, out);
}

int hp_origin_listed(const char *list, const char *origin)
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

enum hp_origin_verdict hp_origin_decide(const char *origin, int https, const char *host, const char *allow)
{
	if (origin == NULL)
		return HP_ORIGIN_SAME;
	const char *scheme = https ? "https://" : "http://";
	size_t sl = strlen(scheme);
	if (host && strncmp(origin, scheme, sl) == 0 && strcmp(origin + sl, host) == 0)
		return HP_ORIGIN_SAME;
	if (strlen(origin) > 200 || strpbrk(origin, "\r\n"))
		return HP_ORIGIN_FORBIDDEN;
	if (hp_origin_listed(allow, origin))
		return HP_ORIGIN_LISTED;
	if (allow && strcmp(allow, "*") == 0)
		return HP_ORIGIN_TOKEN_ONLY;
	return HP_ORIGIN_FORBIDDEN;
}

/* ---- the WebSocket upgrade request ---- */

enum { H_HOST, H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION, H_ORIGIN, H_COOKIE, H_AUTH, H_XFF, H_PROTO, H__COUNT };
static const char *const header_names[H__COUNT] = {
	"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
	"origin", "cookie", "authorization", "x-forwarded-for", "x-forwarded-proto",
};

struct head {
	buf url, field, value;
	int in_value, too_long;
	buf got[H__COUNT];
};

static void head_store(struct head *hd)
{
	if (hd->field.len == 0)
		return;
	buf_append(&hd->field, "", 1);
	buf_append(&hd->value, "", 1);
	for (int i = 0; i < H__COUNT; i++) {
		if (strcasecmp(hd->field.data, header_names[i]) != 0)
			continue;
		if (hd->got[i].len > 0) /* a repeated header: join as a list */
			buf_append(&hd->got[i], ",", 1);
		buf_puts(&hd->got[i], hd->value.data);
		if (hd->got[i].len > HP_UPGRADE_HEADER_MAX)
			hd->too_long = 1;
	}
	hd->field.len = hd->value.len = 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct head *hd = p->data;
	buf_append(&hd->url, at, len);
	return hd->url.len > HP_UPGRADE_HEADER_MAX ? (hd->too_long = 1) : 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
	struct head *hd = p->data;
	if (hd->in_value) {
		head_store(hd);
		hd->in_value = 0;
	}
	buf_append(&hd->field, at, len);
	return hd->field.len > 64 ? (hd->too_long = 1) : 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
	struct head *hd = p->data;
	hd->in_value = 1;
	buf_append(&hd->value, at, len);
	return hd->value.len > HP_UPGRADE_HEADER_MAX ? (hd->too_long = 1) : 0;
}

static int on_headers_done(http_parser *p)
{
	struct head *hd = p->data;
	if (hd->in_value)
		head_store(hd);
	return 2; /* no body: stop here, the rest is the upgraded stream */
}

/* 1 if the comma-separated list has token (case-insensitive). */
static int has_token(const buf *list, const char *token)
{
	size_t tl = strlen(token);
	for (const char *p = list->len ? list->data : ""; *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, ",");
		size_t m = n;
		while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
			m--;
		if (m == tl && strncasecmp(p, token, tl) == 0)
			return 1;
		p += n;
	}
	return 0;
}

static int is_key(const buf *key)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	/* 16 bytes in base64: 22 characters and "==" */
	return key->len == 24 && strspn(key->data, b64) == 22 && strcmp(key->data + 22, "==") == 0;
}

static char *take(buf *b)
{
	if (b->len == 0)
		return NULL;
	return b->data; /* NUL-terminated by buf_puts */
}

enum hp_upgrade_result hp_upgrade_parse(const char *head, size_t len, struct hp_upgrade *u)
{
	memset(u, 0, sizeof *u);
	struct head *hd = xcalloc(1, sizeof *hd);
	u->mem_ = hd;
	http_parser p;
	http_parser_settings s;
	http_parser_settings_init(&s);
	s.on_url = on_url;
	s.on_header_field = on_field;
	s.on_header_value = on_value;
	s.on_headers_complete = on_headers_done;
	http_parser_init(&p, HTTP_REQUEST);
	p.data = hd;
	http_parser_execute(&p, &s, head, len);
	enum http_errno pe = HTTP_PARSER_ERRNO(&p);
	if (hd->too_long)
		return HP_UPGRADE_TOO_LARGE;
	if ((pe != HPE_OK && pe != HPE_CB_headers_complete) || hd->url.len == 0)
		return HP_UPGRADE_BAD;
	buf_append(&hd->url, "", 1);
	char *target = hd->url.data;
	char *q = strchr(target, '?');
	if (q)
		*q++ = '\0';
	if (strcmp(target, "/api/ws") != 0)
		return HP_UPGRADE_NOT_FOUND;
	if (p.method != HTTP_GET)
		return HP_UPGRADE_METHOD;
	if (!has_token(&hd->got[H_UPGRADE], "websocket") || !has_token(&hd->got[H_CONNECTION], "upgrade") ||
	    !is_key(&hd->got[H_KEY]))
		return HP_UPGRADE_BAD;
	if (hd->got[H_VERSION].len == 0 || strcmp(hd->got[H_VERSION].data, "13") != 0)
		return HP_UPGRADE_VERSION;
	u->query = q;
	u->host = take(&hd->got[H_HOST]);
	u->key = take(&hd->got[H_KEY]);
	u->origin = take(&hd->got[H_ORIGIN]);
	u->cookie = take(&hd->got[H_COOKIE]);
	u->auth = take(&hd->got[H_AUTH]);
	u->xff = take(&hd->got[H_XFF]);
	u->proto = take(&hd->got[H_PROTO]);
	return HP_UPGRADE_OK;
}

void hp_upgrade_free(struct hp_upgrade *u)
{
	struct head *hd = u->mem_;
	if (hd == NULL)
		return;
	buf_free(&hd->url);
	buf_free(&hd->field);
	buf_free(&hd->value);
	for (int i = 0; i < H__COUNT; i++)
		buf_free(&hd->got[i]);
	free(hd);
	u->mem_ = NULL;
}

/* ---- client addresses behind trusted front servers ---- */

struct ip {
	int family;
	unsigned char a[16];
};

/* Parse s[0..len) as one address: "1.2.3.4", "::1", "[::1]", "[::1]:80",
 * "1.2.3.4:80" (X-Forwarded-For carries ports now and then). An
 * IPv4-mapped IPv6 address becomes IPv4. Returns 0 or -1. */
static int ip_parse(const char *s, size_t len, struct ip *ip)
{
	char text[64];
	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len == 0 || len >= sizeof text)
		return -1;
	if (*s == '[') {
		const char *end = memchr(s, ']', len);
		if (end == NULL)
			return -1;
		len = (size_t)(end - s - 1);
		s++;
	} else {
		const char *colon = memchr(s, ':', len);
		if (colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) == NULL)
			len = (size_t)(colon - s); /* IPv4 with a port */
	}
	memcpy(text, s, len);
	text[len] = '\0';
	memset(ip, 0, sizeof *ip);
	if (inet_pton(AF_INET, text, ip->a) == 1) {
		ip->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, text, ip->a) != 1)
		return -1;
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	ip->family = AF_INET6;
	if (memcmp(ip->a, mapped, 12) == 0) {
		memmove(ip->a, ip->a + 12, 4);
		memset(ip->a + 4, 0, 12);
		ip->family = AF_INET;
	}
	return 0;
}

static int trusted(const struct hp_trust *t, const struct ip *ip)
{
	for (int i = 0; t && i < t->n; i++)
		if (t->net[i].family == ip->family && prefix_match(t->net[i].addr, ip->a, t->net[i].bits))
			return 1;
	return 0;
}

static int trust_entry(const char *s, size_t len, struct hp_trust *t)
{
	const char *slash = memchr(s, '/', len);
	struct ip ip;
	if (t->n == HP_TRUST_MAX || ip_parse(s, slash ? (size_t)(slash - s) : len, &ip) != 0)
		return -1;
	int max = ip.family == AF_INET ? 32 : 128, bits = max;
	if (slash) {
		char num[8];
		size_t nlen = len - (size_t)(slash + 1 - s);
		int64_t v = 0;
		if (nlen == 0 || nlen >= sizeof num)
			return -1;
		memcpy(num, slash + 1, nlen);
		num[nlen] = '\0';
		if (util_parse_i64(num, 0, max, &v) != 0)
			return -1;
		bits = (int)v;
	}
	/* 10.1.0.0/8 is a typo for something: refuse host bits. */
	for (int b = bits; b < max; b++)
		if (ip.a[b / 8] & (0x80 >> (b % 8)))
			return -1;
	t->net[t->n].family = ip.family;
	memcpy(t->net[t->n].addr, ip.a, 16);
	t->net[t->n].bits = bits;
	t->n++;
	return 0;
}

int hp_trust_parse(const char *list, struct hp_trust *t)
{
	memset(t, 0, sizeof *t);
	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",");
		while (len > 0 && *p == ' ')
			p++, len--;
		size_t l = len;
		while (l > 0 && p[l - 1] == ' ')
			l--;
		if (trust_entry(p, l, t) != 0) {
			memset(t, 0, sizeof *t);
			return -1;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

static void ip_format(const struct ip *ip, char *out, size_t size)
{
	char text[INET6_ADDRSTRLEN];
	if (inet_ntop(ip->family, ip->a, text, sizeof text) == NULL)
		snprintf(text, sizeof text, "-");
	snprintf(out, size, "%s", text);
}

#define HP_XFF_HOPS 16 /* hops walked at most: a header is the client's to pad */

void hp_client_addr(const struct hp_trust *t, const char *peer, const char *xff, const char *xreal, char *out,
		    size_t size)
{
	struct ip ip, hop;
	if (peer == NULL || ip_parse(peer, strlen(peer), &ip) != 0) {
		snprintf(out, size, "%.*s", HP_ADDR_MAX - 1, peer ? peer : "-");
		return;
	}
	if (trusted(t, &ip) && xff && *xff) {
		size_t end = strlen(xff);
		for (int hops = 0; end > 0 && hops < HP_XFF_HOPS && trusted(t, &ip); hops++) {
			size_t start = end;
			while (start > 0 && xff[start - 1] != ',')
				start--;
			if (ip_parse(xff + start, end - start, &hop) != 0)
				break; /* no address: the trusted hop after it is all we know */
			ip = hop;
			end = start > 0 ? start - 1 : 0;
		}
	} else if (trusted(t, &ip) && xreal && ip_parse(xreal, strlen(xreal), &hop) == 0) {
		ip = hop;
	}
	ip_format(&ip, out, size);
}
