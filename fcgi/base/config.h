/*
 * config.h - the responder's options, parsed once at start-up from argv and
 * read-only afterwards. config.c holds the one table of options: name,
 * default, bounds and help text.
 */
#ifndef SIG_CONFIG_H
#define SIG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct sig_config {
	const char *listen;         /* NULL: use the socket lighttpd passes as fd 0 */
	const char *ws_listen;      /* WebSocket listener (unix path or HOST:PORT), NULL: none */
	int64_t ws_ping;            /* seconds between WebSocket pings */
	const char *db_path;
	const char *store;          /* PostgreSQL URI or conninfo; NULL: the SQLite file db_path */
	int64_t room_limit;
	int64_t heartbeat_timeout;  /* seconds */
	int64_t prune_interval;     /* seconds */
	int64_t keepalive;          /* seconds between SSE keepalive comments */
	int64_t mailbox_limit;      /* undelivered events per recipient */
	int64_t replay_window;      /* delivered-but-unacknowledged events kept */
	int64_t poll_default;       /* seconds */
	int64_t poll_max;           /* seconds */
	int64_t threads;            /* request threads */
	int64_t max_kept;           /* idle kept FastCGI connections parked at most */
	int64_t write_timeout;      /* seconds a held stream may make no progress */
	int64_t max_body;           /* bytes */
	int64_t busy_timeout;       /* milliseconds */
	int64_t wal_restart;        /* WAL pages before a restart checkpoint */
	int64_t retry_ms;           /* SSE retry: hint */
	int64_t recheck;            /* seconds between safety re-checks of the mailboxes */
	int64_t max_stream;         /* seconds a stream or long-poll is held at most, 0: no limit */
	const char *config_file;    /* the options file read, or NULL */
	int verbose;
	/* security */
	const char *auth_secret_file;
	unsigned char auth_secret[256]; /* read from the file at start-up */
	size_t auth_secret_len;         /* 0: logins are open */
	const char *allow_origin;       /* comma-separated origins, "*", or NULL: same origin only */
	int64_t max_sessions;
	int64_t max_rooms;
	int64_t max_signal;             /* bytes of one signal event */
	int64_t rate_ip;                /* requests per second per remote address (burst: 2x) */
	int64_t rate_session;           /* commands per second per session (burst: 2x) */
	int64_t rate_login;             /* logins per minute per remote address, shared by processes (burst: the same) */
	const char *trust_proxy;        /* front servers whose X-Forwarded-For / X-Real-IP count, NULL: none */
	/* ICE servers handed to clients (coturn's REST scheme, use-auth-secret) */
	const char *turn_secret_file;
	unsigned char turn_secret[256]; /* read from the file at start-up */
	size_t turn_secret_len;         /* 0: no TURN credentials */
	const char *turn_uris;          /* comma-separated turn:/turns: URIs, NULL: none */
	const char *stun_uris;          /* comma-separated stun:/stuns: URIs, NULL: none */
	int64_t turn_ttl;               /* seconds a TURN credential is valid */
	int64_t ticket_ttl;             /* seconds a stream ticket may wait to be used */
	int64_t key_window;             /* seconds a command's "cid" is remembered */
	int64_t keys_kept;              /* remembered cids per session */
	/* operators */
	const char *metrics_allow;      /* addresses (or CIDR prefixes) that may read /api/metrics */
	const char *admin_token_file;
	char admin_token[257];          /* read from the file at start-up; "" when the admin API is off */
	int64_t drain_timeout;          /* seconds a SIGTERM drains the process before it exits */
};

extern struct sig_config cfg;

/* Parse the options into cfg: those of the config file (--config FILE,
 * else $SIGNAL_CONFIG, else NAME.conf beside a program named NAME.fcgi),
 * then $SIGNAL_DB (as --db) and the words of $SIGNAL_ARGS, then argv; a
 * later source wins. Returns 0 to run, 1 when --help/--version printed
 * (exit 0), -1 on a bad option (a message was printed; exit 2). */
int config_parse(int argc, char **argv);

#endif
