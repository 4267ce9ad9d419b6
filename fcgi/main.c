/*
 * main.c - start-up and shutdown of one responder process: options, the
 * listening socket (inherited from the web server as fd 0, or --listen),
 * the bell, and the threads: request threads (web.c), the loop (loop.c)
 * with the held connections (held.c, ws.c) and the bell on it, and
 * maintenance (maint.c), each with its own store connection.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "core/core.h"
#include "deliver/bell.h"
#include "deliver/group.h"
#include "deliver/held.h"
#include "deliver/loop.h"
#include "deliver/maint.h"
#include "store/store.h"
#include "transport/httpparse.h"
#include "transport/web.h"
#include "transport/ws.h"

#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* Fault injection for the crash tests, never set in production: with
 * SIGNAL_TEST_EXIT_AFTER_COMMITS=N in its environment, a process exits
 * right after its Nth committed command, before answering it. */
static int64_t test_exit_after_commits(void)
{
	const char *v = getenv("SIGNAL_TEST_EXIT_AFTER_COMMITS");
	int64_t n = 0;
	if (v == NULL || util_parse_i64(v, 1, INT64_MAX, &n) != 0)
		return 0;
	return n;
}

/* The store named by --store, else the SQLite file of --db. */
static const char *store_where(void)
{
	return cfg.store ? cfg.store : cfg.db_path;
}

/* For logs: a PostgreSQL URI may carry a password, so it is never shown. */
static const char *store_shown(void)
{
	return cfg.store ? "postgresql (--store)" : cfg.db_path;
}

/* While the main thread opens the stores at start-up, the signals it will
 * later take with sigwait() are already blocked: it takes them in the
 * pauses of open_store() instead, so that a responder waiting for a
 * database that is down still stops when told (lighttpd's SIGTERM, its
 * parent's death, Ctrl-C). Only that thread: a request thread opening its
 * connection later must not take the main thread's signals. */
static const sigset_t *startup_sigs;
static pthread_t startup_thread;

/* One pause of open_store(); exits on SIGTERM or SIGINT at start-up. */
static void pause_for_store(int64_t ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	if (startup_sigs == NULL || !pthread_equal(pthread_self(), startup_thread)) {
		nanosleep(&ts, NULL);
		return;
	}
	int sig = sigtimedwait(startup_sigs, NULL, &ts);
	if (sig == SIGTERM || sig == SIGINT) {
		log_info("stopping (%s) while waiting for the store %s", strsignal(sig), store_shown());
		_exit(0);
	}
}

/* A store that cannot be reached now (SIG_E_BUSY: PostgreSQL down, or
 * SQLite locked while another process sets it up) is waited for, with a
 * growing pause: a responder that exited instead would only be restarted
 * into the same wait by its web server. */
static store *open_store(void)
{
	store *st = NULL;
	int64_t pause_ms = 100;
	sig_err e;
	while ((e = store_open(store_where(), cfg.busy_timeout, &st)) == SIG_E_BUSY) {
		if (pause_ms == 100)
			log_warn("store %s cannot be reached (or stays locked); waiting for it", store_shown());
		pause_for_store(pause_ms);
		if (pause_ms < 2000)
			pause_ms *= 2;
	}
	return e == SIG_OK ? st : NULL;
}

static core *core_on(store *st)
{
	if (st == NULL)
		return NULL;
	struct core_limits lim = {
		.room_limit = cfg.room_limit,
		.mailbox_limit = cfg.mailbox_limit,
		.replay_window = cfg.replay_window,
		.heartbeat_timeout_ms = cfg.heartbeat_timeout * 1000,
		.auth_secret = cfg.auth_secret,
		.auth_secret_len = cfg.auth_secret_len,
		.max_sessions = cfg.max_sessions,
		.max_rooms = cfg.max_rooms,
		.max_signal = cfg.max_signal,
		.rate_session = (double)cfg.rate_session,
		.rate_login = (double)cfg.rate_login / 60.0,
		/* "N a minute" lets N come at once: a whole office logging in
		 * after a restart is one burst, not a flood. */
		.login_burst = (double)cfg.rate_login,
		.ticket_ttl_ms = cfg.ticket_ttl * 1000,
		.key_window_ms = cfg.key_window * 1000,
		.keys_kept = cfg.keys_kept,
		.exit_after_commits = test_exit_after_commits(),
		.turn_secret = cfg.turn_secret,
		.turn_secret_len = cfg.turn_secret_len,
		.turn_uris = cfg.turn_uris,
		.stun_uris = cfg.stun_uris,
		.turn_ttl_s = cfg.turn_ttl,
	};
	/* The store lives as long as the thread that uses it: the process. */
	return core_new(st, &lim);
}

static core *open_core(void)
{
	return core_on(open_store());
}

/* The loop thread's: a reconnect never holds up the loop (every held
 * stream of the process) while a database host does not answer; its
 * calls answer busy until a connection made in the background is there. */
static core *open_loop_core(void)
{
	store *st = open_store();
	if (st)
		store_connect_wait(st, 0);
	return core_on(st);
}

/* Signals are taken by one thread with sigwait(): libfcgi's own handlers
 * never run. SIGTERM and SIGINT start a drain (drain() below). A shell
 * starts background jobs with SIGINT ignored, and an ignored signal never
 * reaches sigwait: both are set back to their default first. */
static void block_signals(sigset_t *set)
{
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Graceful drain, on the first SIGTERM or SIGINT (lighttpd's stop, systemd's,
 * make run's Ctrl-C). New logins and streams get 503 draining with
 * Retry-After, and /api/health too, so balancers and clients go elsewhere;
 * a listener of our own stops accepting; every open stream, poll and socket
 * is told {"type":"reconnect","after":ms}, each with its own delay spread
 * over --drain-timeout, and closed; commands in flight finish. The process
 * exits as soon as nothing is held or in flight, and at the latest after
 * --drain-timeout. Every acknowledged command is committed, so exiting then
 * loses nothing: each client resumes from its cursor after the restart, or
 * on another process. A second SIGINT exits at once. */
static void drain(const sigset_t *sigs, int sig)
{
	int64_t t0 = util_mono_us(), deadline = t0 + cfg.drain_timeout * 1000000;
	log_info("signal %d: draining (at most %llds; Ctrl-C again to exit now)", sig, (long long)cfg.drain_timeout);
	core_drain_begin((int)cfg.drain_timeout);
	metrics_set_draining(1);
	web_drain(cfg.listen != NULL);
	ws_drain();
	held_drain(cfg.drain_timeout * 1000);
	struct timespec step = {0, 50 * 1000000};
	for (;;) {
		int64_t now = util_mono_us();
		if (held_count() == 0 && web_inflight() == 0) {
			/* Nothing open: stop taking requests, answer what was taken. */
			int left = web_stop(deadline > now ? deadline - now : 0);
			log_info("drained in %lld ms: exiting%s", (long long)((util_mono_us() - t0) / 1000),
				 left ? " (a request thread still busy)" : "");
			return;
		}
		if (now >= deadline) {
			log_warn("drain: %lld connection(s) and %d request(s) still open after %llds: exiting",
				 (long long)held_count(), web_inflight(), (long long)cfg.drain_timeout);
			/* Still answer what waits in the listener's queue: an exit
			 * now would reset it (lighttpd answers 500, nginx 502). */
			web_stop(200 * 1000);
			return;
		}
		siginfo_t si;
		/* Ctrl-C twice: exit now. A repeated SIGTERM is not a person
		 * insisting (lighttpd may send its children another while it
		 * stops): the drain goes on to its end. */
		if (sigtimedwait(sigs, &si, &step) == SIGINT) {
			log_info("signal %d again: exiting now", SIGINT);
			return;
		}
	}
}

int main(int argc, char **argv)
{
	int rc = config_parse(argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	if (cfg.verbose)
		log_set_level(LOG_DEBUG);
	if (!hp_addr_list_valid(cfg.metrics_allow)) {
		fprintf(stderr, "signal-fcgi: --metrics-allow wants comma-separated addresses or CIDR prefixes\n");
		return 2;
	}
	struct hp_trust trust;
	if (hp_trust_parse(cfg.trust_proxy, &trust) != 0) {
		fprintf(stderr, "signal-fcgi: --trust-proxy wants addresses or CIDR blocks (10.0.0.0/8, ::1), "
				"comma-separated, at most %d\n", HP_TRUST_MAX);
		return 2;
	}
	if (cfg.store && !store_is_postgres(cfg.store)) {
		fprintf(stderr, "signal-fcgi: --store wants a postgresql:// URI or a libpq conninfo (host=... dbname=...)\n");
		return 2;
	}
	if (FCGX_Init() != 0) {
		log_error("FCGX_Init failed");
		return 1;
	}
	int listen_fd = 0;
	if (cfg.listen) {
		listen_fd = FCGX_OpenSocket(cfg.listen, 1024);
		if (listen_fd < 0) {
			log_error("cannot listen on %s", cfg.listen);
			return 1;
		}
	} else if (FCGX_IsCGI()) {
		fprintf(stderr, "signal-fcgi: not started by a FastCGI server; use --listen ADDR "
				"(see --help)\n");
		return 2;
	} else {
		/* Spawned by the web server: go when it goes. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
	}
	sigset_t sigs;
	block_signals(&sigs); /* after FCGX_Init, which installs its own */

	/* static: the cores live as long as the process, also when it exits
	 * early below (a WebSocket socket still taken by a draining
	 * predecessor), which LeakSanitizer would otherwise report. */
	static core *maint_core, *held_core, *group_core;
	startup_thread = pthread_self();
	startup_sigs = &sigs;
	maint_core = open_core(); /* also creates and migrates the database */
	held_core = maint_core ? open_loop_core() : NULL;
	group_core = held_core ? open_core() : NULL;
	startup_sigs = NULL; /* from here on, sigwait() below takes them */
	if (group_core == NULL) {
		log_error("cannot open the store %s", store_shown());
		return 1;
	}
	metrics_open(cfg.db_path); /* beside the database: shared by every responder of it */
	int64_t owner = bell_owner_new();
	int bell_fd = bell_open(owner);
	loop *l = loop_new();
	if (bell_fd < 0 || l == NULL || held_start(l, held_core, owner, bell_fd) != 0)
		return 1;
	/* Across machines (PostgreSQL): the database's wake-up, on the loop. */
	static store_listener *listener;
	listener = store_listener_new(store_where(), owner); /* NULL for SQLite */
	if (bell_listen_store(l, listener) != 0)
		return 1;
	int ws_fd = -1; /* -2: another process of ours serves the WebSocket */
	if (cfg.ws_listen) {
		ws_fd = ws_listen_open(cfg.ws_listen);
		if (ws_fd == -1)
			return 1;
		if (ws_fd >= 0 && ws_start(l, ws_fd, (int)cfg.threads, owner, open_core) != 0)
			return 1;
	}
	if (loop_start(l) != 0 || maint_start(maint_core) != 0 || group_start(group_core) != 0 ||
	    web_start(listen_fd, (int)cfg.threads, owner, open_core) != 0)
		return 1;
	log_info("signal-fcgi started: store=%s threads=%lld room-limit=%lld heartbeat=%llds mailbox=%lld%s%s",
		 store_shown(), (long long)cfg.threads, (long long)cfg.room_limit,
		 (long long)cfg.heartbeat_timeout, (long long)cfg.mailbox_limit, cfg.listen ? " listen=" : "",
		 cfg.listen ? cfg.listen : "");
	if (ws_fd >= 0)
		log_info("WebSocket at /api/ws through %s", cfg.ws_listen);
	if (cfg.auth_secret_len)
		log_info("logins must be signed with the --auth-secret key");
	else
		log_warn("no --auth-secret: logins are open, anyone may log in as any unused id");
	log_info("browser origins allowed: %s", cfg.allow_origin ? cfg.allow_origin : "same origin only");
	if (cfg.turn_uris || cfg.stun_uris)
		log_info("ICE servers for clients:%s%s%s%s (TURN credentials valid %llds)", cfg.stun_uris ? " " : "",
			 cfg.stun_uris ? cfg.stun_uris : "", cfg.turn_uris ? " " : "", cfg.turn_uris ? cfg.turn_uris : "",
			 (long long)cfg.turn_ttl);
	if (trust.n)
		log_info("client addresses from X-Forwarded-For / X-Real-IP of: %s", cfg.trust_proxy);
	for (;;) {
		int sig = 0;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP || sig == SIGUSR1)
			continue; /* nothing to reload; lighttpd sends these on log rotation */
		drain(&sigs, sig);
#if defined(__SANITIZE_ADDRESS__)
		__lsan_do_leak_check(); /* _exit skips the at-exit check */
#endif
		_exit(0);
	}
}
