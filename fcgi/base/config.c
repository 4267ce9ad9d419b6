/*
 * config.c - the option table. Each option is checked against its bounds
 * once, at start-up; a bad value stops the responder with a message rather
 * than running with a guess.
 *
 * Where options come from: a program spawned by mod_fcgid on a shared host
 * has no command line of its own, and a packaged service keeps its
 * settings in /etc. So a config file (one option a line), $SIGNAL_DB and
 * $SIGNAL_ARGS are turned into words before the command line's, and the
 * one table parses them all; the last word for an option wins.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/util.h"
#include "base/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
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
	.max_kept = 4096,
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
	/* Shared addresses (an office's proxy, a school, a carrier's NAT) put
	 * thousands of users behind one address: 2,000 of them reopening their
	 * streams after a restart send ~3 requests each within seconds, and
	 * logging 2,000 in takes 2,000 logins within the minute. The per-session
	 * limit does the fine work. */
	.rate_ip = 5000,
	.rate_session = 100,
	.rate_login = 3000,
	.ticket_ttl = 30,
	.key_window = 600,
	.keys_kept = 1000,
	.metrics_allow = "127.0.0.1,::1",
	.drain_timeout = 10,
	.turn_ttl = 86400,
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
	{"--max-kept", &cfg.max_kept, 0, 100000, "idle kept FastCGI connections (nginx fastcgi_keep_conn) parked at most; "
	 "beyond, one is closed after its answer"},
	{"--write-timeout", &cfg.write_timeout, 1, 3600, "seconds a stream may make no write progress before it is closed"},
	{"--max-body", &cfg.max_body, 1024, 16 * 1024 * 1024, "largest POST body, bytes"},
	{"--busy-timeout", &cfg.busy_timeout, 1, 600000, "ms to wait for the database lock before answering 503"},
	{"--wal-restart", &cfg.wal_restart, 16, 10000000, "WAL pages (4 KiB) after which the log is checkpointed and started over"},
	{"--retry", &cfg.retry_ms, 100, 600000, "SSE reconnect hint sent to clients, ms"},
	{"--recheck", &cfg.recheck, 1, 3600, "seconds between safety re-checks for a lost wake-up"},
	{"--max-sessions", &cfg.max_sessions, 1, 100000000, "live sessions at most (logins beyond: 503 server-full)"},
	{"--max-rooms", &cfg.max_rooms, 1, 100000000, "rooms at most (joins of a new room beyond: 503 server-full)"},
	{"--max-signal", &cfg.max_signal, 256, 16 * 1024 * 1024, "bytes of one signal (SDP/ICE) event (beyond: 413)"},
	{"--rate-ip", &cfg.rate_ip, 1, 1000000, "requests per second per client address and process, burst 2x (beyond: 429)"},
	{"--rate-session", &cfg.rate_session, 1, 1000000, "commands per second per session, burst 2x (beyond: 429)"},
	{"--rate-login", &cfg.rate_login, 1, 1000000, "logins per minute per client address, across processes; as many may come at once"},
	{"--ticket-ttl", &cfg.ticket_ttl, 1, 3600, "seconds a one-use stream ticket stays valid"},
	{"--idempotency-window", &cfg.key_window, 1, 86400, "seconds a command's cid is remembered (its retry is answered, not run again)"},
	{"--idempotency-keys", &cfg.keys_kept, 1, 1000000, "cids remembered per session, newest kept"},
	{"--drain-timeout", &cfg.drain_timeout, 1, 3600, "seconds a SIGTERM drains (streams told to reconnect, spread over it) before exiting"},
	{"--max-stream-seconds", &cfg.max_stream, 0, 86400, "end each SSE stream after N s and cut long-polls to N s, "
	 "where each held request costs a process (mod_fcgid); 0: no limit"},
	{"--turn-ttl", &cfg.turn_ttl, 60, 30 * 86400, "seconds a TURN credential handed out stays valid"},
};

/* Options that take a string; their help is in usage(). */
static const struct {
	const char *name;
	const char **value;
} str_opts[] = {
	{"--listen", &cfg.listen},
	{"--ws-listen", &cfg.ws_listen},
	{"--db", &cfg.db_path},
	{"--store", &cfg.store},
	{"--auth-secret", &cfg.auth_secret_file},
	{"--allow-origin", &cfg.allow_origin},
	{"--metrics-allow", &cfg.metrics_allow},
	{"--admin-token", &cfg.admin_token_file},
	{"--config", &cfg.config_file},
	{"--trust-proxy", &cfg.trust_proxy},
	{"--turn-secret", &cfg.turn_secret_file},
	{"--turn-uris", &cfg.turn_uris},
	{"--stun-uris", &cfg.stun_uris},
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
		"  --store URI            keep the state in PostgreSQL instead: a libpq URI\n"
		"                         (postgresql://user@host/db, multi-host with\n"
		"                         target_session_attrs=read-write) or conninfo; --db is then unused\n"
		"  --auth-secret FILE     require logins signed by your backend: \"auth\":\"EXPIRY:HMAC\",\n"
		"                         HMAC = hex HMAC-SHA256(secret, userId \":\" EXPIRY), EXPIRY in\n"
		"                         Unix seconds (default: none, anyone may log in as any id)\n"
		"  --allow-origin LIST    comma-separated origins (https://app.example) that browsers may\n"
		"                         call from, with CORS; \"*\" for any origin with a Bearer token\n"
		"                         (default: same origin only)\n"
		"  --metrics-allow LIST   comma-separated client addresses or CIDR prefixes that may read\n"
		"                         GET /api/metrics (default %s)\n"
		"  --admin-token FILE     enable the admin API (/api/admin/...) for callers presenting\n"
		"                         this file's token as \"Authorization: Bearer\" (default: off, 404)\n"
		"  --config FILE          read options from FILE first, one a line: \"db /var/lib/x.db\"\n"
		"                         (or \"--db ...\"), # comments; also $SIGNAL_CONFIG, else\n"
		"                         NAME.conf beside a program named NAME.fcgi; then $SIGNAL_DB\n"
		"                         and $SIGNAL_ARGS (words), then the command line\n"
		"  --trust-proxy LIST     comma-separated addresses or CIDR blocks of front servers\n"
		"                         (load balancers) whose X-Forwarded-For / X-Real-IP name the\n"
		"                         client (default: none; the address that connected is the client)\n"
		"  --turn-secret FILE     coturn's static-auth-secret (use-auth-secret): logins and the\n"
		"                         \"ice\" command hand out TURN credentials, username EXPIRY:userId,\n"
		"                         credential base64(HMAC-SHA1(secret, username)) (default: none)\n"
		"  --turn-uris LIST       comma-separated TURN URIs for those credentials\n"
		"                         (turn:host:3478?transport=udp,turns:host:5349?transport=tcp)\n"
		"  --stun-uris LIST       comma-separated STUN URIs (stun:host:3478) handed out as well\n",
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

/* A shared secret (--auth-secret, --turn-secret): the file's bytes without
 * a trailing newline, 16 to 256 of them, into out (*len). Refuse a file
 * others may read: it signs logins, or mints relay credentials. */
static int read_secret(const char *opt, const char *path, unsigned char out[256], size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "signal-fcgi: %s %s: cannot open\n", opt, path);
		return -1;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077)) {
		fprintf(stderr, "signal-fcgi: %s %s: readable by others (chmod 600 it)\n", opt, path);
		fclose(f);
		return -1;
	}
	size_t n = fread(out, 1, 256, f);
	int more = fgetc(f) != EOF;
	fclose(f);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		n--;
	if (more || n < 16) {
		fprintf(stderr, "signal-fcgi: %s %s: the secret must be 16 to 256 bytes\n", opt, path);
		return -1;
	}
	*len = n;
	return 0;
}

/* A list of ICE URIs: 1 to 8 comma-separated entries, each of a scheme in
 * `schemes` (e.g. "turn:", "turns:"), at most 255 bytes, of printable
 * characters without spaces, quotes or backslashes (they go to browsers
 * as they are). */
static int check_uris(const char *opt, const char *list, const char *const *schemes)
{
	int n = 0;
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		int scheme_ok = 0;
		for (const char *const *s = schemes; *s; s++)
			scheme_ok |= strncmp(p, *s, strlen(*s)) == 0 && len > strlen(*s);
		int chars_ok = len < 256;
		for (size_t i = 0; i < len && chars_ok; i++)
			chars_ok = p[i] > ' ' && p[i] < 0x7f && p[i] != '"' && p[i] != '\\';
		if (!scheme_ok || !chars_ok || ++n > 8) {
			fprintf(stderr, "signal-fcgi: %s: each of 1 to 8 comma-separated entries must be a %s%s URI "
					"(no spaces or quotes, under 256 bytes)\n",
				opt, schemes[0], schemes[1] ? " or a secure one" : "");
			return -1;
		}
		p += len;
		if (*p == ',' && *++p == '\0')
			n = 9; /* a trailing comma: an empty entry */
	}
	if (n == 0 || n > 8) {
		fprintf(stderr, "signal-fcgi: %s: 1 to 8 comma-separated URIs\n", opt);
		return -1;
	}
	return 0;
}

static int check_ice(void)
{
	static const char *const turn[] = {"turn:", "turns:", NULL}, *const stun[] = {"stun:", "stuns:", NULL};
	if (cfg.turn_secret_file &&
	    read_secret("--turn-secret", cfg.turn_secret_file, cfg.turn_secret, &cfg.turn_secret_len) != 0)
		return -1;
	if (cfg.turn_uris && check_uris("--turn-uris", cfg.turn_uris, turn) != 0)
		return -1;
	if (cfg.stun_uris && check_uris("--stun-uris", cfg.stun_uris, stun) != 0)
		return -1;
	if ((cfg.turn_uris != NULL) != (cfg.turn_secret_len != 0)) {
		fprintf(stderr, "signal-fcgi: --turn-uris and --turn-secret go together (coturn's use-auth-secret)\n");
		return -1;
	}
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

static int parse_words(int argc, char **argv)
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
	return 0;
}

/* ---- the words from the config file and the environment ----
 * They live as long as the process: cfg points into them. */
struct words {
	char **v;
	int n, cap;
};

static void words_add(struct words *w, const char *s, size_t len)
{
	if (w->n + 1 >= w->cap) {
		w->cap = w->cap ? 2 * w->cap : 32;
		w->v = xrealloc(w->v, (size_t)w->cap * sizeof *w->v);
	}
	char *c = xmalloc(len + 1);
	memcpy(c, s, len);
	c[len] = '\0';
	w->v[w->n++] = c;
	w->v[w->n] = NULL;
}

/* Whitespace-separated words of s (no quoting: a value with spaces goes in
 * the config file). */
static void words_split(struct words *w, const char *s)
{
	while (*s) {
		size_t sp = strspn(s, " \t\r\n");
		s += sp;
		size_t len = strcspn(s, " \t\r\n");
		if (len)
			words_add(w, s, len);
		s += len;
	}
}

static int is_flag(const char *name)
{
	return strcmp(name, "--verbose") == 0;
}

static int is_option(const char *name)
{
	if (is_flag(name) || str_opt(name))
		return strcmp(name, "--config") != 0;
	for (size_t k = 0; k < sizeof int_opts / sizeof int_opts[0]; k++)
		if (strcmp(name, int_opts[k].name) == 0)
			return 1;
	return 0;
}

/* One line: "NAME VALUE", "--NAME VALUE" or a flag's "NAME"; the value is
 * the rest of the line, trimmed, and may hold spaces. */
static int file_line(struct words *w, const char *path, int lineno, char *line)
{
	line += strspn(line, " \t");
	size_t end = strlen(line);
	while (end > 0 && strchr(" \t\r\n", line[end - 1]))
		line[--end] = '\0';
	if (*line == '\0' || *line == '#')
		return 0;
	char name[64] = "--";
	size_t nlen = strcspn(line, " \t");
	const char *bare = strncmp(line, "--", 2) == 0 ? line + 2 : line;
	size_t blen = nlen - (size_t)(bare - line);
	if (blen == 0 || blen + 3 > sizeof name) {
		fprintf(stderr, "signal-fcgi: %s:%d: not an option\n", path, lineno);
		return -1;
	}
	memcpy(name + 2, bare, blen);
	name[blen + 2] = '\0';
	const char *value = line + nlen;
	value += strspn(value, " \t=");
	if (!is_option(name) || (*value == '\0') != is_flag(name)) {
		fprintf(stderr, "signal-fcgi: %s:%d: %s %s\n", path, lineno, name,
			!is_option(name) ? "is not an option here" : is_flag(name) ? "takes no value" : "wants a value");
		return -1;
	}
	words_add(w, name, strlen(name));
	if (*value)
		words_add(w, value, strlen(value));
	return 0;
}

/* Read the config file's options into w. A file named explicitly must
 * exist; the NAME.conf of a NAME.fcgi program is read only if present. */
static int read_file(struct words *w, const char *path, int must)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (!must)
			return 0;
		fprintf(stderr, "signal-fcgi: --config %s: cannot open\n", path);
		return -1;
	}
	cfg.config_file = path;
	char line[4096];
	int lineno = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		lineno++;
		if (strlen(line) == sizeof line - 1 && line[sizeof line - 2] != '\n') {
			fprintf(stderr, "signal-fcgi: %s:%d: line too long\n", path, lineno);
			rc = -1;
		} else {
			rc = file_line(w, path, lineno, line);
		}
	}
	fclose(f);
	return rc;
}

/* The config file named by argv (--config FILE, the last one), else by
 * $SIGNAL_CONFIG, else "NAME.conf" when the program is "NAME.fcgi". */
static int config_file(int argc, char **argv, struct words *w)
{
	const char *named = NULL;
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--config") == 0)
			named = argv[++i];
	if (named == NULL)
		named = getenv("SIGNAL_CONFIG");
	if (named && *named)
		return read_file(w, named, 1);
	size_t len = argv[0] ? strlen(argv[0]) : 0;
	if (len > 5 && len < 4000 && strcmp(argv[0] + len - 5, ".fcgi") == 0) {
		static char beside[4096];
		memcpy(beside, argv[0], len - 5);
		memcpy(beside + len - 5, ".conf", 6);
		return read_file(w, beside, 0);
	}
	return 0;
}

int config_parse(int argc, char **argv)
{
	static struct words w; /* cfg points into its words */
	words_add(&w, argc > 0 ? argv[0] : "signal-fcgi", strlen(argc > 0 ? argv[0] : "signal-fcgi"));
	if (config_file(argc, argv, &w) != 0)
		return -1;
	const char *db = getenv("SIGNAL_DB");
	if (db && *db) {
		words_add(&w, "--db", 4);
		words_add(&w, db, strlen(db));
	}
	const char *args = getenv("SIGNAL_ARGS");
	if (args)
		words_split(&w, args);
	for (int i = 1; i < argc; i++)
		words_add(&w, argv[i], strlen(argv[i]));
	int rc = parse_words(w.n, w.v);
	if (rc != 0)
		return rc;
	if (cfg.poll_default > cfg.poll_max)
		cfg.poll_default = cfg.poll_max;
	if (cfg.auth_secret_file &&
	    read_secret("--auth-secret", cfg.auth_secret_file, cfg.auth_secret, &cfg.auth_secret_len) != 0)
		return -1;
	if (check_ice() != 0)
		return -1;
	if (cfg.admin_token_file && read_admin_token(cfg.admin_token_file) != 0)
		return -1;
	return 0;
}
