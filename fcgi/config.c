/*
 * config.c - the option table. Each option is checked against its bounds
 * once, at start-up; a bad value stops the responder with a message rather
 * than running with a guess.
 */
#include "config.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define SIG_VERSION "1.0.0"

struct sig_config cfg = {
	.listen = NULL,
	.db_path = "var/signal.db",
	.room_limit = 5,
	.heartbeat_timeout = 60,
	.prune_interval = 5,
	.keepalive = 15,
	.mailbox_limit = 1000,
	.replay_window = 1000,
	.poll_default = 25,
	.poll_max = 60,
	.threads = 4,
	.write_timeout = 30,
	.max_body = 65536,
	.busy_timeout = 5000,
	.retry_ms = 2000,
	.recheck = 2,
	.verbose = 0,
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
	{"--mailbox-limit", &cfg.mailbox_limit, 1, 1000000, "undelivered events per recipient before senders get 429"},
	{"--replay-window", &cfg.replay_window, 1, 1000000, "delivered, unacknowledged events kept for resume"},
	{"--poll-timeout", &cfg.poll_default, 0, 3600, "default long-poll wait, seconds"},
	{"--poll-max", &cfg.poll_max, 1, 3600, "longest long-poll wait a client may ask, seconds"},
	{"--threads", &cfg.threads, 1, 256, "request threads per process (held streams need none)"},
	{"--write-timeout", &cfg.write_timeout, 1, 3600, "seconds a stream may make no write progress before it is closed"},
	{"--max-body", &cfg.max_body, 1024, 16 * 1024 * 1024, "largest POST body, bytes"},
	{"--busy-timeout", &cfg.busy_timeout, 1, 600000, "ms to wait for the database lock before answering 503"},
	{"--retry", &cfg.retry_ms, 100, 600000, "SSE reconnect hint sent to clients, ms"},
	{"--recheck", &cfg.recheck, 1, 3600, "seconds between safety re-checks for a lost wake-up"},
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: signal-fcgi [options]\n"
		"WebRTC signaling over HTTP: a FastCGI responder (POST commands, SSE and\n"
		"long-poll delivery) keeping its state in SQLite.\n\n"
		"  --listen ADDR          listen on HOST:PORT or a unix socket path\n"
		"                         (default: the socket the web server passes as fd 0)\n"
		"  --db PATH              SQLite database file (default %s)\n",
		cfg.db_path);
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
		if (strcmp(a, "--listen") == 0) {
			cfg.listen = v;
			continue;
		}
		if (strcmp(a, "--db") == 0) {
			cfg.db_path = v;
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
		if (parse_i64(v, int_opts[k].min, int_opts[k].max, int_opts[k].value) != 0) {
			fprintf(stderr, "signal-fcgi: %s wants a whole number in %lld..%lld\n", a,
				(long long)int_opts[k].min, (long long)int_opts[k].max);
			return -1;
		}
	}
	if (cfg.poll_default > cfg.poll_max)
		cfg.poll_default = cfg.poll_max;
	return 0;
}
