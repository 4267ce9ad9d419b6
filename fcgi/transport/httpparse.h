/*
 * httpparse.h - pure parsers for what arrives in FastCGI parameters (the
 * query string, the token from the Authorization header, ?token= or the
 * cookie, --allow-origin lists, --trust-proxy lists and the client address
 * behind a trusted front server) and for the WebSocket upgrade request.
 * No I/O, no libfcgi: fuzzed in tests/fuzz/. Every name it exports starts
 * with hp_ (HP_ for constants).
 */
#ifndef SIG_HTTPPARSE_H
#define SIG_HTTPPARSE_H

#include <stddef.h>
#include <stdint.h>

#define HP_QUERY_MAX_PAIRS 8
#define HP_QUERY_VALUE_MAX 128
#define HP_TOKEN_LEN 64
#define HP_COOKIE_NAME "signal_token"

struct hp_query {
	int n;
	struct {
		char key[16];
		char value[HP_QUERY_VALUE_MAX + 1];
	} kv[HP_QUERY_MAX_PAIRS];
};

/* Parse a query string (NULL is empty). Returns 0, or -1 for a repeated
 * key, a bad or control-byte escape, an overlong key/value or too many
 * pairs; q is then unusable. */
int hp_query_parse(const char *qs, struct hp_query *q);
/* The decoded value of key, or NULL. */
const char *hp_query_get(const struct hp_query *q, const char *key);
/* key as a whole number in 0..max into *out: 0 (absent leaves *out), -1 bad. */
int hp_query_int(const struct hp_query *q, const char *key, int64_t max, int64_t *out);

enum hp_token_source { HP_TOKEN_NONE, HP_TOKEN_EXPLICIT, HP_TOKEN_TICKET, HP_TOKEN_COOKIE };
/* The presented credential, in this order: the token of the Authorization
 * header (auth, may be NULL) or of ?token= (HP_TOKEN_EXPLICIT), a one-use
 * stream ticket from ?ticket= (HP_TOKEN_TICKET), the token of the cookie
 * header (may be NULL; HP_TOKEN_COOKIE), copied to out ("" when absent or not
 * of token length). An explicit credential always wins over the cookie: the
 * cookie is shared by every page of a browser, so it says only who logged
 * in last there, never which session this page means. It is also the one
 * browsers send by themselves, so the caller applies the Origin policy. */
enum hp_token_source hp_token_pick(const char *auth, const struct hp_query *q, const char *cookie,
			     char out[HP_TOKEN_LEN + 1]);

/* 1 if addr (a client address as the front server gives it) is one of the
 * comma-separated addresses or CIDR prefixes in list ("10.0.0.0/8",
 * "::1", "0.0.0.0/0"); an IPv4-mapped IPv6 address counts as its IPv4
 * one. 0 for anything unparsable, NULL or empty. */
int hp_addr_listed(const char *list, const char *addr);

/* 1 if list is a valid address list for hp_addr_listed. */
int hp_addr_list_valid(const char *list);

/* The bearer credential of an Authorization header, whatever its length:
 * a pointer into auth, or NULL when there is none. */
const char *hp_bearer(const char *auth);

/* 1 if origin is one of the comma-separated origins in list (NULL: none). */
int hp_origin_listed(const char *list, const char *origin);

/* The API's policy for a browser's Origin: the same origin as
 * scheme://host (or none: not a browser), or one listed in allow
 * (--allow-origin), may use the cookie; with allow "*" any origin may call,
 * but only with an explicit token. An origin over 200 bytes or with CR/LF
 * is forbidden (it would be echoed in a header). */
enum hp_origin_verdict { HP_ORIGIN_SAME, HP_ORIGIN_LISTED, HP_ORIGIN_TOKEN_ONLY, HP_ORIGIN_FORBIDDEN };
enum hp_origin_verdict hp_origin_decide(const char *origin, int https, const char *host, const char *allow);

/* --trust-proxy: the front servers (addresses or CIDR blocks, IPv4 or
 * IPv6) whose X-Forwarded-For / X-Real-IP we believe. */
#define HP_TRUST_MAX 32
#define HP_ADDR_MAX 64 /* room for any address hp_client_addr writes */
struct hp_trust {
	int n;
	struct {
		int family; /* AF_INET or AF_INET6 */
		unsigned char addr[16];
		int bits;
	} net[HP_TRUST_MAX];
};
/* Parse a comma-separated list ("10.0.0.0/8,192.0.2.7,::1") into *t.
 * NULL or "" is the empty list. Returns 0, or -1 for a bad entry (an
 * address that does not parse, a prefix out of range, host bits set, more
 * than HP_TRUST_MAX entries); *t is then empty. */
int hp_trust_parse(const char *list, struct hp_trust *t);
/* The client's address, into out (size >= HP_ADDR_MAX): peer (the address
 * that connected to us) unless it is trusted. A trusted peer speaks for
 * the hop before it: X-Forwarded-For (xff, may be NULL) is walked from the
 * right, skipping trusted hops; the first untrusted one is the client (all
 * trusted: the leftmost). An entry that is no address ends the walk at the
 * trusted hop after it. Without X-Forwarded-For, a trusted peer's X-Real-IP
 * (xreal, may be NULL) is used when it parses. Addresses are written in
 * their canonical form (an IPv4-mapped IPv6 one as IPv4); a peer that is no
 * IP address (a unix socket, "-") is copied as it is, bounded. */
void hp_client_addr(const struct hp_trust *t, const char *peer, const char *xff, const char *xreal, char *out,
		    size_t size);

/* A WebSocket upgrade request (RFC 6455 4.2.1), parsed by http_parser and
 * checked: GET /api/ws, Upgrade: websocket, Connection: upgrade, a 16-byte
 * base64 Sec-WebSocket-Key, Sec-WebSocket-Version: 13. The strings are
 * NUL-terminated copies (NULL when absent; repeated headers joined by ","). */
#define HP_UPGRADE_HEADER_MAX 4096
struct hp_upgrade {
	char *query; /* after '?' in the request target, or NULL */
	char *host, *key, *origin, *cookie, *auth, *xff, *proto;
	void *mem_;  /* owns the strings */
};
enum hp_upgrade_result {
	HP_UPGRADE_OK,
	HP_UPGRADE_BAD,       /* not HTTP, or not a valid upgrade */
	HP_UPGRADE_VERSION,   /* a version other than 13 */
	HP_UPGRADE_TOO_LARGE, /* a header or the target over HP_UPGRADE_HEADER_MAX */
	HP_UPGRADE_NOT_FOUND, /* another path */
	HP_UPGRADE_METHOD,    /* not GET */
};
/* Parse the request head (through its blank line). Always call
 * hp_upgrade_free() afterwards, whatever the result. */
enum hp_upgrade_result hp_upgrade_parse(const char *head, size_t len, struct hp_upgrade *u);
void hp_upgrade_free(struct hp_upgrade *u);

#endif
