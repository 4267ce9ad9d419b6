/*
 * fuzz_http.c - query strings, tokens (header, query, cookie), origin lists,
 * the Origin policy and Last-Event-ID numbers. The input is split at
 * newlines into: query string, Authorization header (also the host for the
 * Origin policy), Cookie header, origin list, origin.
 */
#include "base/util.h"
#include "transport/httpparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *next_line(char **p)
{
	char *s = *p;
	if (s == NULL)
		return NULL;
	char *nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = NULL;
	}
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	memcpy(copy, data, size);
	copy[size] = '\0';
	char *p = copy;
	char *qs = next_line(&p), *auth = next_line(&p), *cookie = next_line(&p);
	char *list = next_line(&p), *origin = next_line(&p);
	struct hp_query q;
	if (hp_query_parse(qs, &q) == 0) {
		int64_t v = 0;
		(void)hp_query_int(&q, "since", INT64_MAX, &v);
		(void)hp_query_get(&q, "token");
		char tok[HP_TOKEN_LEN + 1];
		enum hp_token_source src = hp_token_pick(auth, &q, cookie, tok);
		if (src != HP_TOKEN_NONE && tok[0] && strlen(tok) != HP_TOKEN_LEN)
			abort(); /* a token is exactly HP_TOKEN_LEN bytes or empty */
	}
	if (origin) {
		int listed = hp_origin_listed(list, origin);
		enum hp_origin_verdict v = hp_origin_decide(origin, qs && qs[0] == 's', auth, list);
		if (v == HP_ORIGIN_LISTED && !listed)
			abort(); /* "listed" means listed */
		if ((v == HP_ORIGIN_LISTED || v == HP_ORIGIN_TOKEN_ONLY) && (strlen(origin) > 200 || strpbrk(origin, "\r\n")))
			abort(); /* never echo a header-breaking origin */
	}
	int64_t id = 0;
	if (qs && util_parse_i64(qs, 0, INT64_MAX, &id) == 0 && id < 0)
		abort();
	free(copy);
	return 0;
}
