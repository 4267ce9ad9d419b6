/*
 * config.c - the option table. Each option is checked against its bounds
 * once, at start-up; a bad value stops the responder with a message rather
 * than running with a guess.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/util.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SIG_VERSION "1.0.0"

struct sig_config cfg = {
	.listen = NULL,
	.db_path = "var/signal.db",
	.room_limit = 5,
	.heartbeat_timeout = 60,
	.prune_interval = 5,
	.keepalive = 15,
	.ws_ping = 25,
	.mailbox_limit = 1000,
	.replay_window = 1000,
	.poll_default = 25,
	.poll_max = 60,
	.threads = 4,
	.write_timeout = 30,
	.max_body = 65536,
	.busy_timeout = 5000,
	.wal_restart = 4096,
	.retry_ms = 2000,
	.recheck = 2,
	.verbose = 0,
	.max_sessions = 100000,
	.max_rooms = 50000,
	.max_signal = 32768,
	.rate_ip = 1000,
	.rate_session = 100,
	.rate_login = 60,
	.ticket_ttl = 30,
	.key_window = 600,
	.keys_kept = 1000,
	.metrics_allow = "127.0.0.1,::1",
	.drain_timeout = 10,
};

struct int_opt {
	const char *name;
	int64_t *value;
	int64_t min, max;
	const char *help;
};

static const struct int_opt int_opts[] = {
	{"--room-limit", &cfg.room_limit, 1, 1000, "members per room"},
	{"--heartbeat-timeout", &cfg.heartbeat_timeout, 2, 86400, "seconds of silence before a session is pruned"},
	{"--prune-interval", &cfg.prune_interval, 1, 3600, "seconds between prune passes"},
	{"--keepalive", &cfg.keepalive, 1, 3600, "seconds between SSE keepalive comments"},
	{"--ws-ping", &cfg.ws_ping, 1, 3600, "seconds between WebSocket pings (a silent client is closed after --heartbeat-timeout)"},
	{"--mailbox-limit", &cfg.mailbox_limit, 1, 1000000, "undelivered events per recipient before senders get 429"},
	{"--replay-window", &cfg.replay_window, 1, 1000000, "delivered, unacknowledged events kept for resume"},
	{"--poll-timeout", &cfg.poll_default, 0, 3600, "default long-poll wait, seconds"},
	{"--poll-max", &cfg.poll_max, 1, 3600, "longest long-poll wait a client may ask, seconds"},
	{"--threads", &cfg.threads, 1, 256, "request threads per process (held streams need none)"},
	{"--write-timeout", &cfg.write_timeout, 1, 3600, "seconds a stream may make no write progress before it is closed"},
	{"--max-body", &cfg.max_body, 1024, 16 * 1024 * 1024, "largest POST body, bytes"},
	{"--busy-timeout", &cfg.busy_timeout, 1, 600000, "ms to wait for the database lock before answering 503"},
	{"--wal-restart", &cfg.wal_restart, 16, 10000000, "WAL pages (4 KiB) after which the log is checkpointed and started over"},
	{"--retry", &cfg.retry_ms, 100, 600000, "SSE reconnect hint sent to clients, ms"},
	{"--recheck", &cfg.recheck, 1, 3600, "seconds between safety re-checks for a lost wake-up"},
	{"--max-sessions", &cfg.max_sessions, 1, 100000000, "live sessions at most (logins beyond: 503 server-full)"},
	{"--max-rooms", &cfg.max_rooms, 1, 100000000, "rooms at most (joins of a new room beyond: 503 server-full)"},
	{"--max-signal", &cfg.max_signal, 256, 16 * 1024 * 1024, "bytes of one signal (SDP/ICE) event (beyond: 413)"},
	{"--rate-ip", &cfg.rate_ip, 1, 1000000, "requests per second per client address, burst 2x (beyond: 429)"},
	{"--rate-session", &cfg.rate_session, 1, 1000000, "commands per second per session, burst 2x (beyond: 429)"},
	{"--rate-login", &cfg.rate_login, 1, 1000000, "logins per minute per client address, across processes"},
	{"--ticket-ttl", &cfg.ticket_ttl, 1, 3600, "seconds a one-use stream ticket stays valid"},
	{"--idempotency-window", &cfg.key_window, 1, 86400, "seconds a command's cid is remembered (its retry is answered, not run again)"},
	{"--idempotency-keys", &cfg.keys_kept, 1, 1000000, "cids remembered per session, newest kept"},
	{"--drain-timeout", &cfg.drain_timeout, 1, 3600, "seconds a SIGTERM drains (streams told to reconnect, spread over it) before exiting"},
};

/* Options that take a string; their help is in usage(). */
static const struct {
	const char *name;
	const char **value;
} str_opts[] = {
	{"--listen", &cfg.listen},
	{"--ws-listen", &cfg.ws_listen},
	{"--db", &cfg.db_path},
	{"--auth-secret", &cfg.auth_secret_file},
	{"--allow-origin", &cfg.allow_origin},
	{"--metrics-allow", &cfg.metrics_allow},
	{"--admin-token", &cfg.admin_token_file},
};

static const char **str_opt(const char *name)
{
	for (size_t i = 0; i < sizeof str_opts / sizeof str_opts[0]; i++)
		if (strcmp(name, str_opts[i].name) == 0)
			return str_opts[i].value;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: signal-fcgi [options]\n"
		"WebRTC signaling over HTTP: a FastCGI responder (POST commands, SSE and\n"
		"long-poll delivery) keeping its state in SQLite.\n\n"
		"  --listen ADDR          listen on HOST:PORT or a unix socket path\n"
		"                         (default: the socket the web server passes as fd 0)\n"
		"  --ws-listen ADDR       also serve WebSocket (/api/ws, the Upgrade passed on by the\n"
		"                         front server's proxy) on a unix socket path or HOST:PORT\n"
		"  --db PATH              SQLite database file (default %s)\n"
		"  --auth-secret FILE     require logins signed by your backend: \"auth\":\"EXPIRY:HMAC\",\n"
		"                         HMAC = hex HMAC-SHA256(secret, userId \":\" EXPIRY), EXPIRY in\n"
		"                         Unix seconds (default: none, anyone may log in as any id)\n"
		"  --allow-origin LIST    comma-separated origins (https://app.example) that browsers may\n"
		"                         call from, with CORS; \"*\" for any origin with a Bearer token\n"
		"                         (default: same origin only)\n"
		"  --metrics-allow LIST   comma-separated client addresses or CIDR prefixes that may read\n"
		"                         GET /api/metrics (default %s)\n"
		"  --admin-token FILE     enable the admin API (/api/admin/...) for callers presenting\n"
		"                         this file's token as \"Authorization: Bearer\" (default: off, 404)\n",
		cfg.db_path, cfg.metrics_allow);
	for (size_t i = 0; i < sizeof int_opts / sizeof int_opts[0]; i++) {
		char left[64];
		snprintf(left, sizeof left, "%s N", int_opts[i].name);
		fprintf(f, "  %-22s %s (default %lld, %lld..%lld)\n", left, int_opts[i].help,
			(long long)*int_opts[i].value, (long long)int_opts[i].min,
			(long long)int_opts[i].max);
	}
	fprintf(f,
		"  --verbose              log every request\n"
		"  --help                 this text\n"
		"  --version              print the version\n");
}

/* The shared secret: the file's bytes without a trailing newline, 16 to
 * 256 of them. Refuse a file others may read: it signs every login. */
static int read_secret(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "signal-fcgi: --auth-secret %s: cannot open\n", path);
		return -1;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077)) {
		fprintf(stderr, "signal-fcgi: --auth-secret %s: readable by others (chmod 600 it)\n", path);
		fclose(f);
		return -1;
	}
	size_t n = fread(cfg.auth_secret, 1, sizeof cfg.auth_secret, f);
	int more = fgetc(f) != EOF;
	fclose(f);
	while (n > 0 && (cfg.auth_secret[n - 1] == '\n' || cfg.auth_secret[n - 1] == '\r'))
		n--;
	if (more || n < 16) {
		fprintf(stderr, "signal-fcgi: --auth-secret %s: the secret must be 16 to 256 bytes\n", path);
		return -1;
	}
	cfg.auth_secret_len = n;
	return 0;
}

/* The admin token: one line of 16 to 256 printable bytes, in a file only
 * its owner may read (it grants every admin action). */
static int read_admin_token(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "signal-fcgi: --admin-token %s: cannot open\n", path);
		return -1;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077)) {
		fprintf(stderr, "signal-fcgi: --admin-token %s: readable by others (chmod 600 it)\n", path);
		fclose(f);
		return -1;
	}
	size_t n = fread(cfg.admin_token, 1, sizeof cfg.admin_token - 1, f);
	int more = fgetc(f) != EOF;
	fclose(f);
	while (n > 0 && (cfg.admin_token[n - 1] == '\n' || cfg.admin_token[n - 1] == '\r'))
		n--;
	cfg.admin_token[n] = '\0';
	int printable = 1;
	for (size_t i = 0; i < n; i++)
		printable &= cfg.admin_token[i] > ' ' && cfg.admin_token[i] < 127;
	if (more || n < 16 || !printable) {
		fprintf(stderr, "signal-fcgi: --admin-token %s: the token must be 16 to 256 printable bytes\n", path);
		cfg.admin_token[0] = '\0';
		return -1;
	}
	return 0;
}

int config_parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (*a == '\0')
			continue; /* lighttpd passes an empty word for an empty SIGNAL_ARGS */
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0) {
			printf("signal-fcgi %s\n", SIG_VERSION);
			return 1;
		}
		if (strcmp(a, "--verbose") == 0) {
			cfg.verbose = 1;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "signal-fcgi: unknown option or missing value: %s\n", a);
			usage(stderr);
			return -1;
		}
		const char *v = argv[++i];
		const char **target = str_opt(a);
		if (target) {
			*target = v;
			continue;
		}
		size_t k;
		for (k = 0; k < sizeof int_opts / sizeof int_opts[0]; k++)
			if (strcmp(a, int_opts[k].name) == 0)
				break;
		if (k == sizeof int_opts / sizeof int_opts[0]) {
			fprintf(stderr, "signal-fcgi: unknown option %s\n", a);
			usage(stderr);
			return -1;
		}
		if (util_parse_i64(v, int_opts[k].min, int_opts[k].max, int_opts[k].value) != 0) {
			fprintf(stderr, "signal-fcgi: %s wants a whole number in %lld..%lld\n", a,
				(long long)int_opts[k].min, (long long)int_opts[k].max);
			return -1;
		}
	}
	if (cfg.poll_default > cfg.poll_max)
		cfg.poll_default = cfg.poll_max;
	if (cfg.auth_secret_file && read_secret(cfg.auth_secret_file) != 0)
		return -1;
	if (cfg.admin_token_file && read_admin_token(cfg.admin_token_file) != 0)
		return -1;
	return 0;
}
