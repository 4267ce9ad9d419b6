/*
 * httpparse.h - pure parsers for what arrives in FastCGI parameters: the
 * query string, the token (Authorization header, ?token=, cookie) and
 * --allow-origin lists. No I/O, no libfcgi: fuzzed in tests/fuzz/.
 */
#ifndef SIG_HTTPPARSE_H
#define SIG_HTTPPARSE_H

#include <stdint.h>

#define QUERY_MAX_PAIRS 8
#define QUERY_VALUE_MAX 128
#define HTTP_TOKEN_LEN 64
#define COOKIE_NAME "signal_token"

struct query {
	int n;
	struct {
		char key[16];
		char value[QUERY_VALUE_MAX + 1];
	} kv[QUERY_MAX_PAIRS];
};

/* Parse a query string (NULL is empty). Returns 0, or -1 for a repeated
 * key, a bad or control-byte escape, an overlong key/value or too many
 * pairs; q is then unusable. */
int query_parse(const char *qs, struct query *q);
/* The decoded value of key, or NULL. */
const char *query_get(const struct query *q, const char *key);
/* key as a whole number in 0..max into *out: 0 (absent leaves *out), -1 bad. */
int query_int(const struct query *q, const char *key, int64_t max, int64_t *out);

enum token_source { TOKEN_NONE, TOKEN_EXPLICIT, TOKEN_COOKIE };
/* The presented token from the Authorization header (auth, may be NULL),
 * ?token= or the cookie header (may be NULL), in that order, copied to out
 * ("" when absent or not of token length). The cookie is the one browsers
 * send by themselves, so the caller applies the Origin policy to it. */
enum token_source token_pick(const char *auth, const struct query *q, const char *cookie,
			     char out[HTTP_TOKEN_LEN + 1]);

/* 1 if origin is one of the comma-separated origins in list (NULL: none). */
int origin_listed(const char *list, const char *origin);

#endif
