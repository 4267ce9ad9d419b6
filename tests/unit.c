/*
 * unit.c - C unit tests of the command core, the store, the JSON intake,
 * the HTTP parsers and the rate limiter, without HTTP. Built with ASan and
 * UBSan (`make build/unit`); tests/10-unit.t also runs it under valgrind.
 * Prints TAP; exits 1 on any failure.
 */
#define _GNU_SOURCE
#include "base/util.h"
#include "core/core.h"
#include "core/jsonv.h"
#include "core/ratelimit.h"
#include "store/store.h"
#include "transport/httpparse.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <poll.h>
#include <openssl/hmac.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const int schema_migration_count; /* build/schema.c */

static int n_tests, n_failed;

static void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ok(int cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s %d - ", cond ? "ok" : "not ok", ++n_tests);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (!cond)
		n_failed++;
}

static void is_str(const char *got, const char *want, const char *name)
{
	int same = got && want && strcmp(got, want) == 0;
	ok(same, "%s", name);
	if (!same)
		printf("#   got:      '%s'\n#   expected: '%s'\n", got ? got : "(null)", want ? want : "(null)");
}

static void is_int(long long got, long long want, const char *name)
{
	ok(got == want, "%s", name);
	if (got != want)
		printf("#   got: %lld, expected: %lld\n", got, want);
}

/* ---- fixture: a fresh database and a core over it ---- */

static char dir[] = "/tmp/signal-unit-XXXXXX";
static char dbpath[256];
static store *st;
static core *c;
static unsigned char secret[] = "0123456789abcdef-unit-secret";

static struct core_limits limits(void)
{
	struct core_limits lim = {.room_limit = 3, .mailbox_limit = 4, .replay_window = 3,
				  .heartbeat_timeout_ms = 1000, .ticket_ttl_ms = 30000,
				  .key_window_ms = 600000, .keys_kept = 1000};
	return lim;
}

/* With SIGNAL_UNIT_PG (a libpq conninfo without dbname, "host=... port=...
 * user=..."), every fixture is a PostgreSQL database instead of an SQLite
 * file (tests/92-postgres.t): unit_NAME, made afresh the first time. */
static const char *pg_base;
static char pg_made[1024] = " ";

static PGconn *pg_connect(const char *db)
{
	char ci[512];
	snprintf(ci, sizeof ci, "%s dbname=%s", pg_base, db);
	PGconn *conn = PQconnectdb(ci);
	if (PQstatus(conn) == CONNECTION_OK)
		PQclear(PQexec(conn, "SET client_min_messages = warning"));
	if (PQstatus(conn) != CONNECTION_OK) {
		printf("Bail out! cannot connect to PostgreSQL: %s\n", PQerrorMessage(conn));
		exit(1);
	}
	return conn;
}

/* One statement; the first column of its first row as a number (-1: none). */
static long pg_exec(const char *db, const char *sql, const char *param)
{
	PGconn *conn = pg_connect(db);
	PGresult *r = PQexecParams(conn, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
	long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = atol(PQgetvalue(r, 0, 0));
	else if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		printf("# %s: %s", sql, PQerrorMessage(conn));
	PQclear(r);
	PQfinish(conn);
	return v;
}

static void pg_fixture(const char *name)
{
	char db[80], sql[200], key[96];
	snprintf(db, sizeof db, "unit_%s", name);
	for (char *ch = db; *ch; ch++)
		if (*ch == '-')
			*ch = '_';
	snprintf(key, sizeof key, " %s ", db);
	snprintf(dbpath, sizeof dbpath, "%s dbname=%s", pg_base, db);
	if (strstr(pg_made, key))
		return;
	snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
	pg_exec("postgres", sql, NULL);
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
	pg_exec("postgres", sql, NULL);
	snprintf(pg_made + strlen(pg_made), sizeof pg_made - strlen(pg_made), "%s ", db);
}

static const char *fixture_db(void)
{
	return strstr(dbpath, "dbname=") + strlen("dbname=");
}

static void open_fixture(const char *name, const struct core_limits *lim)
{
	if (pg_base)
		pg_fixture(name);
	else
		snprintf(dbpath, sizeof dbpath, "%s/%s.db", dir, name);
	if (store_open(dbpath, 1000, &st) != SIG_OK) {
		printf("Bail out! cannot open %s\n", dbpath);
		exit(1);
	}
	c = core_new(st, lim);
}

static void close_fixture(void)
{
	core_free(c);
	store_close(st);
	c = NULL;
	st = NULL;
}

/* Run body with token; returns the status, *reply a new reference (or NULL). */
static int run(const char *token, const char *body, json_object **reply, char *token_out)
{
	core_result r;
	core_result_init(&r);
	core_exec_body(c, token, body, strlen(body), &r);
	int status = sig_err_status(r.err);
	sig_err_put_batch_status(r.reply, r.item_err, r.items); /* as the transports answer */
	if (token_out)
		strcpy(token_out, r.token);
	if (reply)
		*reply = json_object_get(r.reply);
	core_result_free(&r);
	return status;
}

static const char *field(json_object *o, const char *name)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(o, name, &v))
		return NULL;
	return json_object_get_string(v);
}

/* The error code of a reply, or "" for a success. */
static const char *error_of(json_object *o)
{
	const char *e = field(o, "error");
	return e ? e : "";
}

static void login(const char *user, char token[CORE_TOKEN_LEN + 1])
{
	char body[128];
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"%s\",\"protocol\":\"p\"}", user);
	if (run(NULL, body, NULL, token) != 200) {
		printf("Bail out! login %s failed\n", user);
		exit(1);
	}
}

static void join(const char *token, const char *room)
{
	char body[128];
	snprintf(body, sizeof body, "{\"type\":\"join\",\"roomId\":\"%s\"}", room);
	run(token, body, NULL, NULL);
}

/* The usual fixture: alice and bob logged in, both in room "r". */
static void alice_and_bob_in_r(char a[CORE_TOKEN_LEN + 1], char b[CORE_TOKEN_LEN + 1])
{
	login("alice", a);
	login("bob", b);
	join(a, "r");
	join(b, "r");
}

/* Counts from the store: "sessions/members/queued". */
static void counts(char *out, size_t size)
{
	json_object *h = NULL;
	core_health(c, &h);
	snprintf(out, size, "%s/%s/%s", field(h, "sessions"), field(h, "members"), field(h, "queued"));
	json_object_put(h);
}

/* ---- reading a mailbox through the stream API ---- */

struct mail {
	int n;
	int64_t ids[64];
	char *bodies[64];
};

static int collect(void *ctx, int64_t id, const char *body, size_t len)
{
	struct mail *m = ctx;
	if (m->n < 64) {
		m->ids[m->n] = id;
		m->bodies[m->n] = strndup(body, len);
		m->n++;
	}
	return 0;
}

static void mail_free(struct mail *m)
{
	for (int i = 0; i < m->n; i++)
		free(m->bodies[i]);
	m->n = 0;
}

/* Open a stream for token (acknowledging ack) and pull everything after it. */
static sig_err read_mail(const char *token, int64_t ack, core_stream *cs, struct mail *m, int64_t *lost)
{
	core_wakes w = {0};
	sig_err e = core_stream_open(c, token, ack, 42, cs, &w);
	core_wakes_free(&w);
	if (e != SIG_OK)
		return e;
	int64_t lost_upto = 0;
	core_delivery_begin(c);
	e = core_stream_pull(c, cs, ack, 64, collect, m, &lost_upto);
	core_delivery_end(c, 1);
	if (lost)
		*lost = lost_upto;
	return e;
}

/* A mailbox's bodies, as one string "type:from,type:from,...". */
static void summary(struct mail *m, char *out, size_t size)
{
	out[0] = '\0';
	for (int i = 0; i < m->n; i++) {
		json_object *o = json_tokener_parse(m->bodies[i]);
		const char *type = field(o, "type");
		const char *who = field(o, "from") ? field(o, "from") : field(o, "userId");
		size_t len = strlen(out);
		snprintf(out + len, size - len, "%s%s:%s", i ? "," : "", type ? type : "?", who ? who : "?");
		json_object_put(o);
	}
}

/* ---- tests ---- */

/* Read token's whole mailbox and record it as sent (a stream wrote it). */
static void deliver_all(const char *token)
{
	core_stream s;
	struct mail m = {0};
	read_mail(token, 0, &s, &m, NULL);
	if (m.n > 0) {
		core_marks_begin(c); /* a write: core.h */
		core_stream_sent(c, &s, m.ids[m.n - 1]);
		core_delivery_end(c, 1);
	}
	mail_free(&m);
}

static void test_login(void)
{
	struct core_limits lim = limits();
	/* Nothing here is about silence: a 1 s heartbeat made "a live id is
	 * taken" fail under valgrind on a loaded machine (alice counted as gone
	 * before the second login ran). */
	lim.heartbeat_timeout_ms = 600000;
	open_fixture("login", &lim);
	char a[CORE_TOKEN_LEN + 1], again[CORE_TOKEN_LEN + 1];
	json_object *r = NULL;
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"alice\",\"protocol\":\"x\"}", &r, a), 200, "login: 200");
	ok(strlen(a) == 64 && strspn(a, "0123456789abcdef") == 64, "login: token is 64 hex characters");
	is_str(field(r, "token"), a, "login: the reply carries the token");
	is_str(field(r, "protocol"), "x", "login: protocol echoed");
	json_object_put(r);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"alice\"}", &r, NULL), 409, "login: a live id is taken");
	is_str(error_of(r), "user-exists", "login: ... user-exists");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"login\",\"userId\":\"alice\"}", &r, again), 200, "login: own token resumes");
	is_str(again, a, "login: ... with the same token");
	json_object_put(r);
	const char *bad[] = {"", "a b", "a/b", "\\u00e9", "x\\u0000y",
			     "12345678901234567890123456789012345678901234567890123456789012345"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char body[200];
		snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"%s\"}", bad[i]);
		int s = run(NULL, body, &r, NULL);
		ok(s == 400 && strcmp(error_of(r), "invalid-field") == 0, "login: bad id #%zu is invalid-field", i);
		json_object_put(r);
	}
	char cnt[64];
	counts(cnt, sizeof cnt);
	is_str(cnt, "1/0/0", "login: refused logins created nothing");
	close_fixture();
}

static void test_rooms_and_signals(void)
{
	struct core_limits lim = limits();
	open_fixture("rooms", &lim);
	char a[65], b[65], cc[65], d[65], before[64], after[64], sum[512];
	json_object *r = NULL;
	login("alice", a);
	login("bob", b);
	login("carol", cc);
	login("dave", d);
	join(a, "r1");
	is_int(run(b, "{\"type\":\"join\",\"roomId\":\"r1\"}", &r, NULL), 200, "join: 200");
	is_str(json_object_to_json_string_ext(json_object_object_get(r, "users"), JSON_C_TO_STRING_PLAIN),
	       "[\"alice\",\"bob\"]", "join: users in join order");
	json_object_put(r);
	join(cc, "r1");
	counts(before, sizeof before);
	is_int(run(d, "{\"type\":\"join\",\"roomId\":\"r1\"}", &r, NULL), 409, "join: room-full at the limit");
	is_str(error_of(r), "room-full", "join: ... room-full");
	json_object_put(r);
	counts(after, sizeof after);
	is_str(after, before, "join: a refused join changes nothing");

	is_int(run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"from\":\"eve\",\"roomId\":\"x\",\"sdp\":\"o\"}", &r,
		   NULL), 200, "signal: to a peer");
	json_object_put(r);
	struct mail m = {0};
	core_stream cs;
	read_mail(b, 0, &cs, &m, NULL);
	summary(&m, sum, sizeof sum);
	is_str(sum, "user-joined:carol,signal:alice", "signal: bob's mailbox, forged from overwritten");
	ok(m.n == 2 && strstr(m.bodies[1], "\"roomId\":\"r1\"") != NULL, "signal: roomId stamped by the server");
	ok(m.n == 2 && m.ids[0] < m.ids[1], "signal: ids increase");
	mail_free(&m);
	read_mail(a, 0, &cs, &m, NULL);
	summary(&m, sum, sizeof sum);
	is_str(sum, "user-joined:bob,user-joined:carol", "signal: never echoed to the sender");
	mail_free(&m);

	is_int(run(a, "{\"type\":\"signal\",\"to\":\"dave\"}", &r, NULL), 409, "signal: to a non-member");
	is_str(error_of(r), "unknown-peer", "signal: ... unknown-peer");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"signal\",\"to\":\"alice\"}", &r, NULL), 409, "signal: to oneself is unknown-peer");
	json_object_put(r);
	is_int(run(d, "{\"type\":\"signal\"}", &r, NULL), 409, "signal: outside a room");
	is_str(error_of(r), "not-in-room", "signal: ... not-in-room");
	json_object_put(r);

	/* Mailbox cap 4 undelivered: carol has 0 after reading; fill, then refuse whole. */
	deliver_all(cc);
	/* Events for others between carol's count for nothing: bob's three
	 * put 4 ids past her last sent one, yet she has only one waiting. */
	deliver_all(b);
	run(a, "{\"type\":\"signal\",\"to\":\"carol\",\"x\":0}", NULL, NULL);
	for (int i = 0; i < 3; i++)
		run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"x\":0}", NULL, NULL);
	is_int(run(a, "{\"type\":\"signal\",\"to\":\"carol\",\"x\":0}", NULL, NULL), 200,
	       "signal: a mailbox is capped by its own undelivered events, not by others' between them");
	deliver_all(cc);
	for (int i = 0; i < 4; i++)
		run(a, "{\"type\":\"signal\",\"to\":\"carol\",\"x\":1}", NULL, NULL);
	counts(before, sizeof before);
	is_int(run(a, "{\"type\":\"signal\",\"x\":2}", &r, NULL), 429, "signal: a broadcast with one full mailbox");
	is_str(error_of(r), "mailbox-full", "signal: ... mailbox-full");
	json_object_put(r);
	counts(after, sizeof after);
	is_str(after, before, "signal: ... and nothing queued for anyone");

	/* joining a second room leaves the first */
	join(b, "r2");
	read_mail(a, 0, &cs, &m, NULL);
	summary(&m, sum, sizeof sum);
	ok(strstr(sum, "user-left:bob") != NULL, "join elsewhere: the old room gets user-left");
	mail_free(&m);
	is_int(run(d, "{\"type\":\"leave\"}", &r, NULL), 409, "leave: not in a room");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"room-users\",\"roomId\":\"r1\"}", &r, NULL), 200, "room-users: 200");
	is_str(json_object_to_json_string_ext(json_object_object_get(r, "users"), JSON_C_TO_STRING_PLAIN),
	       "[\"alice\",\"carol\"]", "room-users: the members");
	json_object_put(r);

	/* logout */
	is_int(run(cc, "{\"type\":\"logout\"}", &r, NULL), 200, "logout: 200");
	json_object_put(r);
	is_int(run(cc, "{\"type\":\"ping\"}", &r, NULL), 401, "logout: the token is dead");
	json_object_put(r);
	read_mail(a, 0, &cs, &m, NULL);
	summary(&m, sum, sizeof sum);
	ok(strstr(sum, "user-left:carol") != NULL, "logout: the room gets user-left");
	mail_free(&m);
	close_fixture();
}

/* A group commit (group.c): each command in its own savepoint of one
 * transaction. A command refused after its statements ran (a full
 * mailbox) is undone alone, one refused before any statement (no session)
 * needs nothing undone, and the commands before and after both commit. */
static void test_group_commit(void)
{
	struct core_limits lim = limits();
	open_fixture("group", &lim);
	char a[65], b[65], before[64], after[64], want[64];
	alice_and_bob_in_r(a, b);
	deliver_all(a);
	deliver_all(b);
	counts(before, sizeof before);
	ok(core_group_begin(c) == SIG_OK, "group: begins");
	int st200 = 0;
	for (int i = 0; i < 2; i++)
		st200 += run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":1}", NULL, NULL) == 200;
	is_int(run(NULL, "{\"type\":\"ping\"}", NULL, NULL), 401, "group: a command refused before any statement");
	for (int i = 0; i < 2; i++)
		st200 += run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":2}", NULL, NULL) == 200;
	is_int(st200, 4, "group: four signals fill bob's mailbox to its cap");
	is_int(run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":3}", NULL, NULL), 429,
	       "group: the fifth is refused after its statements ran");
	is_int(run(NULL, "{\"type\":\"ping\"}", NULL, NULL), 401, "group: ... another refused before any statement");
	is_int(run(b, "{\"type\":\"signal\",\"to\":\"alice\",\"n\":4}", NULL, NULL), 200,
	       "group: a signal after them");
	ok(core_group_end(c) == SIG_OK, "group: commits");
	counts(after, sizeof after);
	int s0 = 0, m0 = 0, q0 = 0;
	sscanf(before, "%d/%d/%d", &s0, &m0, &q0);
	snprintf(want, sizeof want, "%d/%d/%d", s0, m0, q0 + 5);
	is_str(after, want, "group: the five signals that succeeded are queued, the refused one is not");
	struct mail m = {0};
	core_stream cs;
	read_mail(b, 0, &cs, &m, NULL);
	int n1 = 0, n2 = 0, n3 = 0;
	for (int i = 0; i < m.n; i++) {
		n1 += strstr(m.bodies[i], "\"n\":1") != NULL;
		n2 += strstr(m.bodies[i], "\"n\":2") != NULL;
		n3 += strstr(m.bodies[i], "\"n\":3") != NULL;
	}
	ok(n1 == 2 && n2 == 2 && n3 == 0, "group: bob has the signals before and after the refused ones, not it");
	mail_free(&m);
	read_mail(a, 0, &cs, &m, NULL);
	ok(m.n > 0 && strstr(m.bodies[m.n - 1], "\"n\":4") != NULL, "group: alice has the last one");
	mail_free(&m);
	close_fixture();
}

static void test_errors_and_batches(void)
{
	struct core_limits lim = limits();
	open_fixture("errors", &lim);
	char a[65], before[64], after[64];
	json_object *r = NULL;
	login("alice", a);
	counts(before, sizeof before);
	static const struct {
		const char *body;
		int status;
		const char *code;
	} cases[] = {
		{"{\"type\":\"nope\"}", 400, "unknown-type"},
		{"{\"roomId\":\"r\"}", 400, "unknown-type"},
		{"{\"type\":\"join\"", 400, "invalid-json"},
		{"{\"type\":\"ping\"} x", 400, "invalid-json"},
		{"{\"type\":\"ping\",\"x\":\"\xff\"}", 400, "invalid-json"},
		{"{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}", 400, "invalid-json"},
		{"{\"type\":\"ping\",\"n\":99999999999999999999}", 400, "invalid-json"},
		{"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]", 400, "invalid-json"},
		{"{\"type\":\"join\",\"roomId\":7}", 400, "invalid-field"},
		{"{\"type\":\"ping\",\"ack\":-1}", 400, "invalid-field"},
		{"[]", 400, "invalid-field"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int s = run(a, cases[i].body, &r, NULL);
		ok(s == cases[i].status && strcmp(error_of(r), cases[i].code) == 0, "error case %zu -> %d %s", i,
		   cases[i].status, cases[i].code);
		ok(json_object_object_get(r, "msg") != NULL && json_object_object_get(r, "success") != NULL,
		   "error: ... carries success and msg");
		json_object_put(r);
	}
	core_result res;
	core_result_init(&res);
	const char nul_body[] = "{\"type\":\"ping\",\"x\":\"a\0b\"}";
	core_exec_body(c, a, nul_body, sizeof nul_body - 1, &res);
	is_int(sig_err_status(res.err), 400, "a raw NUL byte inside the body: 400");
	core_result_free(&res);
	is_int(run(NULL, "{\"type\":\"ping\"}", &r, NULL), 401, "no token: 401");
	json_object_put(r);
	is_int(run("zz", "{\"type\":\"ping\"}", &r, NULL), 401, "malformed token: 401");
	json_object_put(r);
	counts(after, sizeof after);
	is_str(after, before, "no failed command changed anything");

	char tok[65];
	is_int(run(NULL, "[{\"type\":\"login\",\"userId\":\"bob\"},{\"type\":\"join\",\"roomId\":\"r\"},{\"type\":\"x\"}]",
		   &r, tok), 200, "batch: 200");
	ok(json_object_is_type(r, json_type_array) && json_object_array_length(r) == 3, "batch: one reply each");
	is_str(field(json_object_array_get_idx(r, 1), "type"), "join", "batch: login authenticates the rest");
	is_str(field(json_object_array_get_idx(r, 2), "status"), "400", "batch: a failed command carries its status");
	json_object_put(r);
	char big[64 * 20 + 8] = "[";
	for (int i = 0; i < 65; i++)
		strcat(big, i ? ",{\"type\":\"ping\"}" : "{\"type\":\"ping\"}");
	strcat(big, "]");
	is_int(run(a, big, &r, NULL), 400, "batch: over 64 commands is refused");
	json_object_put(r);
	close_fixture();
}


/* Rows of the idempotency key table whose reply holds `text` ("" for
 * all), read beside the store. */
static int key_rows_with(const char *text)
{
	if (pg_base)
		return (int)pg_exec(fixture_db(), "SELECT count(*) FROM command_keys WHERE strpos(reply, $1) > 0 OR $1 = ''",
				    text);
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	int n = -1;
	if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM command_keys WHERE instr(reply, ?1) > 0 OR ?1 = ''", -1, &q,
			       NULL) == SQLITE_OK &&
	    sqlite3_bind_text(q, 1, text, -1, SQLITE_STATIC) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return n;
}

static int key_rows(void)
{
	return key_rows_with("");
}

/* Events waiting for token's session, as summary() writes them. */
static void mailbox(const char *token, char *out, size_t size)
{
	core_stream s;
	struct mail m = {0};
	read_mail(token, 0, &s, &m, NULL);
	summary(&m, out, size);
	mail_free(&m);
}

static int flag(json_object *o, const char *name)
{
	json_object *v = NULL;
	return json_object_object_get_ex(o, name, &v) && json_object_get_boolean(v);
}

static void test_idempotency(void)
{
	struct core_limits lim = limits();
	lim.mailbox_limit = 100;
	lim.keys_kept = 3;
	open_fixture("cid", &lim);
	char a[65], b[65], box[512];
	json_object *r = NULL;
	alice_and_bob_in_r(a, b);
	deliver_all(a);
	const char *sig = "{\"type\":\"signal\",\"to\":\"bob\",\"n\":1,\"cid\":\"s-1\"}";
	is_int(run(a, sig, &r, NULL), 200, "cid: first run 200");
	ok(!flag(r, "replayed"), "cid: ... not replayed");
	json_object_put(r);
	is_int(run(a, sig, &r, NULL), 200, "cid: the same command again 200");
	ok(flag(r, "replayed"), "cid: ... marked replayed");
	is_str(field(r, "recipients"), "1", "cid: ... with the stored reply's body");
	json_object_put(r);
	mailbox(b, box, sizeof box);
	is_str(box, "signal:alice", "cid: the peer got the signal once");
	core_stream cs;
	struct mail m = {0};
	read_mail(b, 0, &cs, &m, NULL);
	ok(m.n == 1 && strstr(m.bodies[0], "cid") == NULL, "cid: the event does not carry the sender's cid");
	mail_free(&m);

	is_int(run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":2,\"cid\":\"s-1\"}", &r, NULL), 409,
	       "cid: the same cid with another command is 409");
	is_str(error_of(r), "cid-conflict", "cid: ... cid-conflict");
	json_object_put(r);
	is_int(run(a, "{\"to\":\"bob\",\"type\":\"signal\",\"n\":1,\"cid\":\"s-1\"}", &r, NULL), 409,
	       "cid: members in another order are another command");
	json_object_put(r);
	is_int(run(a, "{ \"type\" : \"signal\", \"to\":\"bob\",\"n\" :1 , \"cid\":\"s-1\"}", &r, NULL), 200,
	       "cid: whitespace aside, the same command is replayed");
	ok(flag(r, "replayed"), "cid: ... replayed");
	json_object_put(r);
	mailbox(b, box, sizeof box);
	is_str(box, "signal:alice", "cid: conflicts and replays queued nothing");

	/* A batch: per element; a repeated element runs once. */
	is_int(run(a, "[{\"type\":\"signal\",\"to\":\"bob\",\"n\":3,\"cid\":\"s-2\"},"
		      "{\"type\":\"signal\",\"to\":\"bob\",\"n\":3,\"cid\":\"s-2\"},"
		      "{\"type\":\"signal\",\"to\":\"bob\",\"n\":1,\"cid\":\"s-1\"}]",
		   &r, NULL), 200, "cid: batch 200");
	ok(!flag(json_object_array_get_idx(r, 0), "replayed") && flag(json_object_array_get_idx(r, 1), "replayed") &&
		   flag(json_object_array_get_idx(r, 2), "replayed"),
	   "cid: batch: the repeated element and the earlier cid are replayed");
	json_object_put(r);
	mailbox(b, box, sizeof box);
	is_str(box, "signal:alice,signal:alice", "cid: batch: one new event");

	/* A failed command keeps no key: a retry runs again. */
	is_int(run(a, "{\"type\":\"signal\",\"to\":\"carol\",\"cid\":\"s-3\"}", &r, NULL), 409, "cid: a failed command");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":4,\"cid\":\"s-3\"}", &r, NULL), 200,
	       "cid: ... its cid is free for the command that succeeds");
	ok(!flag(r, "replayed"), "cid: ... which runs");
	json_object_put(r);

	/* Keys are per session: bob's s-1 is his own. */
	is_int(run(b, "{\"type\":\"signal\",\"to\":\"alice\",\"cid\":\"s-1\"}", &r, NULL), 200, "cid: per session");
	ok(!flag(r, "replayed"), "cid: ... another session's s-1 runs");
	json_object_put(r);

	/* At most keys_kept (3) per session: alice has s-1, s-2, s-3 and now s-4. */
	is_int(run(a, "{\"type\":\"ping\",\"cid\":\"s-4\"}", &r, NULL), 200, "cid: a fourth key");
	json_object_put(r);
	is_int(key_rows(), 4, "cid: alice keeps 3, bob 1");
	is_int(run(a, sig, &r, NULL), 200, "cid: the oldest key was dropped");
	ok(!flag(r, "replayed"), "cid: ... so its command runs again");
	json_object_put(r);

	const char *bad[] = {"\"\"", "\"a b\"", "7", "\"12345678901234567890123456789012345678901234567890123456789012345\""};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char body[200];
		snprintf(body, sizeof body, "{\"type\":\"ping\",\"cid\":%s}", bad[i]);
		ok(run(a, body, &r, NULL) == 400 && strcmp(error_of(r), "invalid-field") == 0,
		   "cid: bad cid #%zu is invalid-field", i);
		json_object_put(r);
	}

	/* A login without a token: matched by userId and cid; a new token. */
	const char *lg = "{\"type\":\"login\",\"userId\":\"carol\",\"cid\":\"0123456789abcdef\"}";
	char t1[65], t2[65];
	is_int(run(NULL, lg, &r, t1), 200, "cid: login");
	json_object_put(r);
	is_int(run(NULL, lg, &r, t2), 200, "cid: the login retried without a token is replayed");
	ok(flag(r, "replayed") && strcmp(t1, t2) != 0 && strcmp(field(r, "token"), t2) == 0,
	   "cid: ... with a new token in the reply");
	json_object_put(r);
	is_int(run(t2, "{\"type\":\"ping\"}", &r, NULL), 200, "cid: the new token works");
	json_object_put(r);
	is_int(run(t1, "{\"type\":\"ping\"}", &r, NULL), 401, "cid: the first, lost with its answer, does not");
	json_object_put(r);
	is_int(run(t2, lg, &r, t1), 200, "cid: the login resumed with its token is replayed too");
	ok(flag(r, "replayed") && strcmp(t1, t2) == 0, "cid: ... keeping the token");
	json_object_put(r);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"carol\",\"protocol\":\"x\",\"cid\":\"0123456789abcdef\"}", &r,
		   NULL), 409, "cid: a login with the same cid and another body is a conflict");
	is_str(error_of(r), "cid-conflict", "cid: ... cid-conflict");
	json_object_put(r);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"dave\",\"cid\":\"short\"}", &r, NULL), 400,
	       "cid: a login without a token needs a cid of 16 bytes or more");
	json_object_put(r);
	is_int(key_rows_with(t2), 0, "cid: no stored reply holds a token");
	is_int(key_rows_with("\"userId\":\"carol\""), 1, "cid: (the login's reply is stored)");

	/* A ticket's reply is a secret: never kept, a retry mints another. */
	json_object *r2 = NULL;
	run(a, "{\"type\":\"ticket\",\"cid\":\"t-1\"}", &r, NULL);
	run(a, "{\"type\":\"ticket\",\"cid\":\"t-1\"}", &r2, NULL);
	ok(field(r, "ticket") && field(r2, "ticket") && strcmp(field(r, "ticket"), field(r2, "ticket")) != 0 &&
		   !flag(r2, "replayed"),
	   "cid: a ticket command runs each time");
	json_object_put(r);
	json_object_put(r2);

	/* logout: the keys go with the session. */
	int rows = key_rows();
	is_int(run(b, "{\"type\":\"logout\",\"cid\":\"bye\"}", &r, NULL), 200, "cid: logout");
	json_object_put(r);
	is_int(key_rows(), rows - 1, "cid: the session's keys went with it");
	is_int(run(b, "{\"type\":\"logout\",\"cid\":\"bye\"}", &r, NULL), 401, "cid: a retried logout is 401");
	json_object_put(r);
	close_fixture();

	/* The window: a key older than it is forgotten, and pruned. 500 ms,
	 * not less: on a busy machine (and on PostgreSQL) two commands in a
	 * row took more than 50 ms, and the "within it" replay was missed. */
	lim = limits();
	lim.key_window_ms = 500;
	open_fixture("cid-window", &lim);
	login("alice", a);
	is_int(run(a, "{\"type\":\"ping\",\"cid\":\"w\"}", &r, NULL), 200, "cid window: first");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"ping\",\"cid\":\"w\"}", &r, NULL), 200, "cid window: within it");
	ok(flag(r, "replayed"), "cid window: ... replayed");
	json_object_put(r);
	usleep(600 * 1000);
	is_int(run(a, "{\"type\":\"ping\",\"cid\":\"w\"}", &r, NULL), 200, "cid window: after it");
	ok(!flag(r, "replayed"), "cid window: ... runs again");
	json_object_put(r);
	usleep(600 * 1000);
	core_wakes w = {0};
	int pruned = 0;
	core_prune(c, util_now_ms(), &w, &pruned);
	core_wakes_free(&w);
	is_int(key_rows(), 0, "cid window: the pruner deleted the expired key");
	close_fixture();
}

static void test_streams(void)
{
	struct core_limits lim = limits();
	lim.mailbox_limit = 100;
	open_fixture("streams", &lim);
	char a[65], b[65];
	alice_and_bob_in_r(a, b);
	for (int i = 0; i < 6; i++)
		run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":1}", NULL, NULL);
	struct mail m = {0};
	core_stream first, second;
	int64_t lost = 0;
	is_int(read_mail(b, 0, &first, &m, &lost), SIG_OK, "stream: open and pull");
	is_int(m.n, 6, "stream: all six queued signals");
	int64_t third = m.ids[2], last = m.ids[5];
	mail_free(&m);
	/* Acknowledge up to the third: a new stream starts after it, and the
	 * first stream is replaced. */
	core_wakes w = {0};
	is_int(core_stream_open(c, b, third, 77, &second, &w), SIG_OK, "stream: a second stream opens");
	is_int(w.n, 1, "stream: ... and names the previous holder to wake");
	ok(w.n == 1 && w.v[0].owner == 42, "stream: ... which is the first owner");
	core_wakes_free(&w);
	int64_t l2 = 0;
	core_delivery_begin(c);
	sig_err e = core_stream_pull(c, &first, 0, 64, collect, &m, &l2);
	core_delivery_end(c, 1);
	is_int(e, SIG_E_UNAUTHORIZED, "stream: the replaced stream is told to end");
	mail_free(&m);
	core_delivery_begin(c);
	core_stream_pull(c, &second, third, 64, collect, &m, &l2);
	core_delivery_end(c, 1);
	is_int(m.n, 3, "stream: events up to the ack are gone, the rest remain");
	mail_free(&m);
	/* Replay window 3: mark all six sent; older delivered ones are trimmed. */
	for (int i = 0; i < 3; i++)
		run(a, "{\"type\":\"signal\",\"to\":\"bob\",\"n\":2}", NULL, NULL);
	core_marks_begin(c); /* the pull, then the sent mark: a write */
	core_stream_pull(c, &second, third, 64, collect, &m, &l2);
	int64_t newest = m.ids[m.n - 1];
	core_stream_sent(c, &second, newest);
	core_delivery_end(c, 1);
	mail_free(&m);
	core_delivery_begin(c);
	core_stream_pull(c, &second, 0, 64, collect, &m, &l2);
	core_delivery_end(c, 1);
	is_int(m.n, 3, "stream: only the replay window of sent events is kept");
	ok(l2 > last - 10 && l2 < newest, "stream: the trimmed point is reported (lost_upto)");
	mail_free(&m);
	is_int(core_stream_close(c, &second), SIG_OK, "stream: close releases it");
	close_fixture();
}

static void test_prune(void)
{
	struct core_limits lim = limits();
	lim.heartbeat_timeout_ms = 3000;
	open_fixture("prune", &lim);
	char a[65], b[65], sum[256];
	json_object *r = NULL;
	alice_and_bob_in_r(a, b);
	core_wakes w = {0};
	int pruned = -1;
	is_int(core_prune(c, util_now_ms(), &w, &pruned), SIG_OK, "prune: runs");
	is_int(pruned, 0, "prune: fresh sessions stay");
	/* Past TOUCH_EVERY_MS (1 s), so that the ping refreshes alice's
	 * heartbeat (at exactly 1 s it may not: the flake this fixes). */
	usleep(1200000);
	run(a, "{\"type\":\"ping\"}", NULL, NULL); /* alice stays fresh, bob goes silent */
	/* As if 2.5 s after alice's ping: bob is >= 3.7 s silent, alice 2.5 s
	 * (counted from the ping, so a slow machine cannot make her late). */
	int64_t pinged = util_now_ms();
	is_int(core_prune(c, pinged + 2500, &w, &pruned), SIG_OK, "prune: runs again");
	is_int(pruned, 1, "prune: the silent session is pruned");
	core_wakes_free(&w);
	is_int(run(b, "{\"type\":\"ping\"}", &r, NULL), 401, "prune: its token answers 401");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"ping\"}", &r, NULL), 200, "prune: the one that pinged stays");
	json_object_put(r);
	struct mail m = {0};
	core_stream cs;
	read_mail(a, 0, &cs, &m, NULL);
	summary(&m, sum, sizeof sum);
	ok(strstr(sum, "user-left:bob") != NULL, "prune: the room gets user-left");
	mail_free(&m);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"bob\"}", &r, NULL), 200, "prune: the id is free again");
	json_object_put(r);
	close_fixture();
}

static void mint(const char *user, long long expiry, char *out, size_t size)
{
	char msg[128];
	unsigned char mac[32];
	unsigned int len = 0;
	int n = snprintf(msg, sizeof msg, "%s:%lld", user, expiry);
	HMAC(EVP_sha256(), secret, (int)strlen((char *)secret), (unsigned char *)msg, (size_t)n, mac, &len);
	int o = snprintf(out, size, "%lld:", expiry);
	for (int i = 0; i < 32; i++)
		o += snprintf(out + o, size - (size_t)o, "%02x", mac[i]);
}

static void test_auth_secret(void)
{
	struct core_limits lim = limits();
	lim.auth_secret = secret;
	lim.auth_secret_len = strlen((char *)secret);
	open_fixture("auth", &lim);
	char auth[128], body[256];
	json_object *r = NULL;
	long long soon = (long long)(util_now_ms() / 1000) + 60;
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"alice\"}", &r, NULL), 401, "auth: unsigned login refused");
	json_object_put(r);
	mint("alice", soon, auth, sizeof auth);
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"alice\",\"auth\":\"%s\"}", auth);
	is_int(run(NULL, body, &r, NULL), 200, "auth: a valid signature logs in");
	json_object_put(r);
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"bob\",\"auth\":\"%s\"}", auth);
	is_int(run(NULL, body, &r, NULL), 401, "auth: another user's signature does not");
	json_object_put(r);
	mint("carol", soon - 120, auth, sizeof auth);
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"carol\",\"auth\":\"%s\"}", auth);
	is_int(run(NULL, body, &r, NULL), 401, "auth: an expired signature does not");
	json_object_put(r);
	mint("carol", soon, auth, sizeof auth);
	auth[strlen(auth) - 1] ^= 1;
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"carol\",\"auth\":\"%s\"}", auth);
	is_int(run(NULL, body, &r, NULL), 401, "auth: one flipped bit does not");
	json_object_put(r);
	close_fixture();
}

static void test_migration(void)
{
	struct core_limits lim = limits();
	open_fixture("migrate", &lim);
	char a[65];
	login("alice", a);
	close_fixture();
	open_fixture("migrate", &lim);
	json_object *r = NULL;
	is_int(run(a, "{\"type\":\"ping\"}", &r, NULL), 200, "migration: data survives a reopen");
	json_object_put(r);
	close_fixture();
	store *newer = NULL;
	if (pg_base) {
		extern const int pg_schema_migration_count;
		is_int((int)pg_exec(fixture_db(), "SELECT version FROM signal_schema", NULL), pg_schema_migration_count,
		       "migration: signal_schema is at the newest schema");
		pg_exec(fixture_db(), "UPDATE signal_schema SET version = 99", NULL);
		ok(store_open(dbpath, 1000, &newer) != SIG_OK && newer == NULL, "migration: a newer schema is refused");
		return;
	}
	sqlite3 *db = NULL;
	sqlite3_open(dbpath, &db);
	sqlite3_stmt *s = NULL;
	sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
	sqlite3_step(s);
	is_int(sqlite3_column_int(s, 0), schema_migration_count, "migration: user_version is the newest schema");
	sqlite3_finalize(s);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(store_open(dbpath, 1000, &newer) != SIG_OK && newer == NULL, "migration: a newer schema is refused");
}

static void test_httpparse(void)
{
	struct hp_query q;
	int64_t v = -1;
	ok(hp_query_parse("since=5&timeout=%31%30", &q) == 0, "query: parses");
	ok(hp_query_int(&q, "since", 100, &v) == 0 && v == 5, "query: since=5");
	ok(hp_query_int(&q, "timeout", 100, &v) == 0 && v == 10, "query: percent-decoded");
	ok(hp_query_int(&q, "timeout", 5, &v) == -1, "query: over the maximum");
	ok(hp_query_parse("a=1&a=2", &q) == -1, "query: a repeated key is refused");
	ok(hp_query_parse("a=%zz", &q) == -1, "query: a bad escape is refused");
	ok(hp_query_parse("a=%4", &q) == -1, "query: a truncated escape is refused");
	ok(hp_query_parse("a=%00", &q) == -1, "query: an escaped NUL is refused");
	ok(hp_query_parse("a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", &q) == -1, "query: too many pairs");
	char tok[HP_TOKEN_LEN + 1];
	char good[65];
	memset(good, 'a', 64);
	good[64] = '\0';
	char hdr[80], cookie[128];
	snprintf(hdr, sizeof hdr, "Bearer %s", good);
	hp_query_parse(NULL, &q);
	ok(hp_token_pick(hdr, &q, NULL, tok) == HP_TOKEN_EXPLICIT && strcmp(tok, good) == 0, "token: from the header");
	snprintf(cookie, sizeof cookie, "x=1; signal_token=%s; y=2", good);
	ok(hp_token_pick(NULL, &q, cookie, tok) == HP_TOKEN_COOKIE && strcmp(tok, good) == 0, "token: from the cookie");
	ok(hp_token_pick("Basic abc", &q, NULL, tok) == HP_TOKEN_NONE && tok[0] == '\0', "token: Basic is no token");
	ok(hp_token_pick("Bearer short", &q, NULL, tok) == HP_TOKEN_EXPLICIT && tok[0] == '\0',
	   "token: a short Bearer yields no token");
	ok(hp_origin_listed("https://a.example,https://b.example", "https://b.example"), "origin: listed");
	ok(!hp_origin_listed("https://a.example,https://b.example", "https://b.example.evil"), "origin: prefix is not a match");
	ok(!hp_origin_listed(NULL, "https://a.example"), "origin: no list, no match");
	ok(hp_addr_listed("127.0.0.1,::1", "127.0.0.1"), "addr: listed IPv4");
	ok(hp_addr_listed("127.0.0.1,::1", "::1"), "addr: listed IPv6");
	ok(hp_addr_listed("127.0.0.1", "::ffff:127.0.0.1"), "addr: a v4-mapped address is its IPv4 one");
	ok(!hp_addr_listed("127.0.0.1", "127.0.0.10"), "addr: a prefix of the text is no match");
	ok(hp_addr_listed("10.0.0.0/8", "10.200.3.4") && !hp_addr_listed("10.0.0.0/8", "11.0.0.1"), "addr: IPv4 CIDR");
	ok(hp_addr_listed("2001:db8::/32", "2001:db8:1::5") && !hp_addr_listed("2001:db8::/32", "2001:db9::1"),
	   "addr: IPv6 CIDR");
	ok(hp_addr_listed("192.168.1.0/23", "192.168.0.9") && !hp_addr_listed("192.168.1.0/23", "192.168.2.1"),
	   "addr: a prefix that is not a whole byte");
	ok(!hp_addr_listed("127.0.0.1", NULL) && !hp_addr_listed(NULL, "127.0.0.1") && !hp_addr_listed("127.0.0.1", "x"),
	   "addr: nothing, or garbage, is never listed");
	ok(hp_addr_list_valid("127.0.0.1, ::1,10.0.0.0/8") && !hp_addr_list_valid("127.0.0.1/33") &&
	   !hp_addr_list_valid("::1/129") && !hp_addr_list_valid("host.example") && !hp_addr_list_valid("") &&
	   !hp_addr_list_valid("1.2.3.4/"), "addr: list validation");
	ok(hp_bearer("Bearer abc") && strcmp(hp_bearer("bearer  abc"), "abc") == 0 && hp_bearer("Basic x") == NULL &&
	   hp_bearer(NULL) == NULL, "bearer: parsed");
}

static void test_jsonv(void)
{
	json_object *o = NULL;
	ok(jv_parse("{\"a\":\"\xf0\x9f\x98\x80\"}", 12, &o) == SIG_OK, "json: a 4-byte UTF-8 character");
	json_object_put(o);
	ok(jv_parse("{\"a\":\"\xed\xa0\x80\"}", 11, &o) != SIG_OK, "json: a UTF-16 surrogate in UTF-8 is refused");
	ok(jv_parse("{\"a\":\"\xf4\x90\x80\x80\"}", 12, &o) != SIG_OK, "json: above U+10FFFF is refused");
	ok(jv_is_id("a.b_c~d@e+f-9", 13) && !jv_is_id("a b", 3) && !jv_is_id("", 0), "json: the id alphabet");
}

/* Every rule of every command's table, each refused with its field named
 * and the words of its rule (item 5 of issue 14). */
static void test_field_errors(void)
{
	struct core_limits lim = limits();
	open_fixture("fields", &lim);
	char a[65], b[65];
	json_object *r = NULL;
	login("alice", a);
	login("bob", b);
	join(a, "r");
	join(b, "r");
	static const struct {
		int who; /* 0: no token, 1: alice's */
		const char *body;
		const char *field, *msg;
	} cases[] = {
		{0, "{\"type\":\"login\"}", "userId", "userId: required, a string"},
		{0, "{\"type\":\"login\",\"userId\":7}", "userId", "userId: must be a string, not an integer"},
		{0, "{\"type\":\"login\",\"userId\":[\"a\"]}", "userId", "userId: must be a string, not an array"},
		{0, "{\"type\":\"login\",\"userId\":\"\"}", "userId", "userId: must not be empty"},
		{0, "{\"type\":\"login\",\"userId\":\"a b\"}", "userId",
		 "userId: only letters, digits and . _ ~ @ + - (1 to 64 of them)"},
		{0, "{\"type\":\"login\",\"userId\":\"x\\u0000y\"}", "userId", "userId: must not contain NUL (\\u0000)"},
		{0, "{\"type\":\"login\",\"userId\":\"12345678901234567890123456789012345678901234567890123456789012345\"}",
		 "userId", "userId: at most 64 bytes"},
		{0, "{\"type\":\"login\",\"userId\":\"c\",\"protocol\":"
		    "\"1234567890123456789012345678901234567890123456789012345678901234567890\"}",
		 "protocol", "protocol: at most 64 bytes"},
		{0, "{\"type\":\"login\",\"userId\":\"c\",\"protocol\":\"a\\nb\"}", "protocol",
		 "protocol: no control characters (newline, tab, DEL...)"},
		{0, "{\"type\":\"login\",\"userId\":\"c\",\"protocol\":true}", "protocol",
		 "protocol: must be a string, not true or false"},
		{0, "{\"type\":\"login\",\"userId\":\"c\",\"auth\":{}}", "auth", "auth: must be a string, not an object"},
		{1, "{\"type\":\"join\"}", "roomId", "roomId: required, a string"},
		{1, "{\"type\":\"join\",\"roomId\":null}", "roomId", "roomId: must be a string, not null"},
		{1, "{\"type\":\"join\",\"roomId\":\"r/1\"}", "roomId",
		 "roomId: only letters, digits and . _ ~ @ + - (1 to 64 of them)"},
		{1, "{\"type\":\"room-users\",\"roomId\":1.5}", "roomId", "roomId: must be a string, not a number"},
		{1, "{\"type\":\"signal\",\"to\":\"b o b\"}", "to",
		 "to: only letters, digits and . _ ~ @ + - (1 to 64 of them)"},
		{1, "{\"type\":\"signal\",\"to\":5}", "to", "to: must be a string, not an integer"},
		{1, "{\"type\":\"ping\",\"ack\":-1}", "ack", "ack: must not be negative"},
		{1, "{\"type\":\"ping\",\"ack\":\"3\"}", "ack", "ack: must be an integer, not a string"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int s = run(cases[i].who ? a : NULL, cases[i].body, &r, NULL);
		char name[160];
		snprintf(name, sizeof name, "field case %zu: 400 invalid-field", i);
		ok(s == 400 && strcmp(error_of(r), "invalid-field") == 0, "%s", name);
		snprintf(name, sizeof name, "field case %zu: field is %s", i, cases[i].field);
		is_str(field(r, "field"), cases[i].field, name);
		snprintf(name, sizeof name, "field case %zu: msg '%s'", i, cases[i].msg);
		is_str(field(r, "msg"), cases[i].msg, name);
		json_object_put(r);
	}
	/* In a batch, each refused command names its own field. */
	is_int(run(a, "[{\"type\":\"ping\",\"ack\":-2},{\"type\":\"join\",\"roomId\":\"\"}]", &r, NULL), 200,
	       "field batch: 200");
	is_str(field(json_object_array_get_idx(r, 0), "field"), "ack", "field batch: the first names ack");
	is_str(field(json_object_array_get_idx(r, 1), "field"), "roomId", "field batch: the second names roomId");
	is_str(field(json_object_array_get_idx(r, 1), "msg"), "roomId: must not be empty", "field batch: ... and why");
	json_object_put(r);
	/* Errors that are no field's fault name none. */
	is_int(run(a, "[]", &r, NULL), 400, "field: an empty batch is 400");
	ok(json_object_object_get(r, "field") == NULL, "field: ... and names no field");
	is_str(field(r, "msg"), "a batch holds 1 to 64 commands, not 0", "field: ... but says why");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"join\",\"roomId\":\"x\",\"extra\":[1]}", &r, NULL), 200,
	       "field: fields outside the table are allowed");
	json_object_put(r);
	/* jv_check on its own: the first field of the table at fault decides. */
	static const struct jv_field t[] = {
		{"a", json_type_string, JV_REQUIRED, 4},
		{"b", json_type_int, JV_REQUIRED, 0},
	};
	json_object *o = json_tokener_parse("{\"a\":\"12345\"}");
	struct jv_fault why;
	ok(jv_check(o, t, 2, &why) == SIG_E_INVALID_FIELD, "jv_check: refused");
	is_str(why.field, "a", "jv_check: the first fault in table order");
	is_str(why.msg, "a: at most 4 bytes", "jv_check: its message");
	ok(jv_check(o, t, 2, NULL) == SIG_E_INVALID_FIELD, "jv_check: why may be NULL");
	json_object_put(o);
	close_fixture();
}

/* --trust-proxy: whose X-Forwarded-For counts (item 6 of issue 14). */
static void test_client_addr(void)
{
	struct hp_trust t;
	char out[HP_ADDR_MAX];
	ok(hp_trust_parse(NULL, &t) == 0 && t.n == 0, "trust: none by default");
	ok(hp_trust_parse("10.0.0.0/8, 192.0.2.7,2001:db8::/32,::1", &t) == 0 && t.n == 4, "trust: a list of four");
	const char *bad[] = {"10.0.0.0/33", "10.1.0.0/8", "300.1.1.1", "10.0.0.0/", "host.example", "::1/129", ",,x"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct hp_trust u;
		ok(hp_trust_parse(bad[i], &u) == -1 && u.n == 0, "trust: '%s' is refused", bad[i]);
	}
	static const struct {
		const char *peer, *xff, *xreal, *want, *name;
	} cases[] = {
		{"198.51.100.9", "203.0.113.5", NULL, "198.51.100.9", "an untrusted peer's X-Forwarded-For is ignored"},
		{"198.51.100.9", NULL, "203.0.113.5", "198.51.100.9", "... and its X-Real-IP"},
		{"10.1.2.3", "203.0.113.5", NULL, "203.0.113.5", "a trusted peer's X-Forwarded-For names the client"},
		{"10.1.2.3", "1.1.1.1, 203.0.113.5, 10.9.9.9", NULL, "203.0.113.5",
		 "the walk skips trusted hops and stops at the first untrusted (1.1.1.1 is the client's say)"},
		{"10.1.2.3", "192.0.2.7, 10.2.2.2", NULL, "192.0.2.7", "all hops trusted: the leftmost"},
		{"10.1.2.3", "junk, 10.2.2.2", NULL, "10.2.2.2", "a hop that is no address ends the walk"},
		{"10.1.2.3", NULL, "203.0.113.8", "203.0.113.8", "a trusted peer's X-Real-IP without X-Forwarded-For"},
		{"10.1.2.3", NULL, "nonsense", "10.1.2.3", "an X-Real-IP that is no address is not used"},
		{"::1", "[2001:db9::1]:443", NULL, "2001:db9::1", "IPv6, with brackets and a port"},
		{"::ffff:10.1.2.3", "203.0.113.9:5000", NULL, "203.0.113.9", "an IPv4-mapped peer and a port"},
		{"2001:db8::5", "203.0.113.10", NULL, "203.0.113.10", "a trusted IPv6 block"},
		{"-", "203.0.113.5", NULL, "-", "a peer that is no address is copied"},
	};
	hp_trust_parse("10.0.0.0/8, 192.0.2.7,2001:db8::/32,::1", &t);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		hp_client_addr(&t, cases[i].peer, cases[i].xff, cases[i].xreal, out, sizeof out);
		is_str(out, cases[i].want, cases[i].name);
	}
	struct hp_trust none;
	hp_trust_parse("", &none);
	hp_client_addr(&none, "10.1.2.3", "203.0.113.5", "203.0.113.6", out, sizeof out);
	is_str(out, "10.1.2.3", "trust: nothing trusted, nothing believed");
	char many[2048] = "";
	for (int i = 0; i < 40; i++)
		strcat(many, "10.0.0.1, ");
	strcat(many, "10.0.0.2");
	hp_client_addr(&t, "10.1.2.3", many, NULL, out, sizeof out);
	ok(strncmp(out, "10.0.0.", 7) == 0, "trust: a padded header is walked a bounded way");
}

/* The login bucket's burst follows --rate-login (it was a literal 10). */
static void test_login_burst(void)
{
	struct core_limits lim = limits();
	lim.rate_login = 20.0 / 60.0;
	lim.login_burst = 20;
	open_fixture("burst", &lim);
	int passed = 0, refused = 0, retry = 0;
	for (int i = 0; i < 25; i++) {
		char body[96];
		snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"u%d\"}", i);
		core_result r;
		core_result_init(&r);
		core_exec_request(c, NULL, "192.0.2.1", body, strlen(body), &r);
		passed += r.err == SIG_OK;
		refused += r.err == SIG_E_RATE_LIMITED;
		if (r.err == SIG_E_RATE_LIMITED)
			retry = r.retry_after;
		core_result_free(&r);
	}
	ok(passed >= 20 && passed <= 21, "login burst: --rate-login 20 lets 20 at once (got %d)", passed);
	is_int(refused, 25 - passed, "login burst: the rest are rate-limited");
	ok(retry >= 1, "login burst: with a Retry-After");
	core_result r;
	core_result_init(&r);
	const char *body = "{\"type\":\"login\",\"userId\":\"other\"}";
	core_exec_request(c, NULL, "192.0.2.2", body, strlen(body), &r);
	is_int(r.err, SIG_OK, "login burst: another address has its own bucket");
	core_result_free(&r);
	close_fixture();
}

/* TURN REST credentials (coturn's use-auth-secret), against the openssl
 * command line's HMAC-SHA1 of the same username. */
static void test_turn(void)
{
	static const unsigned char key[] = "a-turn-secret-of-27-bytes!!";
	char user[CORE_TURN_USER_MAX], cred[CORE_TURN_CRED_MAX];
	ok(core_turn_credential(key, sizeof key - 1, "alice", 1893456000, user, cred) == 0, "turn: a credential");
	is_str(user, "1893456000:alice", "turn: the username is EXPIRY:userId");
	FILE *p = popen("printf '%s' '1893456000:alice' | openssl dgst -sha1 -hmac 'a-turn-secret-of-27-bytes!!' -binary "
			"| base64", "r");
	char want[64] = "";
	if (p) {
		if (fgets(want, sizeof want, p) == NULL)
			want[0] = '\0';
		pclose(p);
	}
	want[strcspn(want, "\n")] = '\0';
	ok(strlen(want) == 28, "turn: openssl dgst -sha1 -hmac gave a base64 HMAC-SHA1 (%s)", want);
	is_str(cred, want, "turn: the credential is base64(HMAC-SHA1(secret, username)), as openssl computes it");
	char longid[STORE_ID_MAX + 1];
	memset(longid, 'x', STORE_ID_MAX);
	longid[STORE_ID_MAX] = '\0';
	ok(core_turn_credential(key, sizeof key - 1, longid, INT64_MAX, user, cred) == 0 && strlen(user) == 19 + 1 + 64,
	   "turn: the longest id and expiry fit");

	struct core_limits lim = limits();
	lim.turn_secret = key;
	lim.turn_secret_len = sizeof key - 1;
	lim.turn_uris = "turn:127.0.0.1:3478?transport=udp,turns:t.example:5349?transport=tcp";
	lim.stun_uris = "stun:127.0.0.1:3478";
	lim.turn_ttl_s = 600;
	open_fixture("turn", &lim);
	char a[65];
	json_object *r = NULL;
	int64_t before = util_now_ms() / 1000;
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"alice\"}", &r, a), 200, "turn: login");
	json_object *ice = json_object_object_get(r, "iceServers");
	ok(json_object_is_type(ice, json_type_array) && json_object_array_length(ice) == 2, "turn: login carries two iceServers");
	json_object *stun = json_object_array_get_idx(ice, 0), *turn = json_object_array_get_idx(ice, 1);
	is_str(jv_text(json_object_object_get(stun, "urls"), NULL), "[\"stun:127.0.0.1:3478\"]", "turn: the STUN entry");
	ok(json_object_object_get(stun, "username") == NULL, "turn: ... without a credential");
	is_str(jv_text(json_object_object_get(turn, "urls"), NULL),
	       "[\"turn:127.0.0.1:3478?transport=udp\",\"turns:t.example:5349?transport=tcp\"]", "turn: the TURN URIs");
	const char *u = field(turn, "username");
	long long exp = u ? atoll(u) : 0;
	int64_t expires_at = json_object_get_int64(json_object_object_get(r, "iceExpiresAt"));
	ok(exp >= before + 600 && exp <= before + 601 && u && strcmp(strchr(u, ':'), ":alice") == 0 && expires_at == exp,
	   "turn: username EXPIRY:alice, EXPIRY --turn-ttl from now, iceExpiresAt the same");
	char user2[CORE_TURN_USER_MAX], cred2[CORE_TURN_CRED_MAX];
	core_turn_credential(key, sizeof key - 1, "alice", exp, user2, cred2);
	is_str(field(turn, "credential"), cred2, "turn: its credential");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"ice\"}", &r, NULL), 200, "turn: the ice command");
	ok(json_object_array_length(json_object_object_get(r, "iceServers")) == 2 && field(r, "iceExpiresAt"),
	   "turn: ... gives fresh iceServers and their expiry");
	json_object_put(r);
	is_int(run(NULL, "{\"type\":\"ice\"}", &r, NULL), 401, "turn: ice needs a session");
	json_object_put(r);
	close_fixture();
	lim = limits();
	open_fixture("noturn", &lim);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"bob\"}", &r, a), 200, "turn: login without ICE options");
	ok(json_object_object_get(r, "iceServers") == NULL, "turn: ... carries no iceServers");
	json_object_put(r);
	is_int(run(a, "{\"type\":\"ice\"}", &r, NULL), 200, "turn: ice without ICE options");
	is_str(jv_text(json_object_object_get(r, "iceServers"), NULL), "[]", "turn: ... an empty list");
	json_object_put(r);
	close_fixture();
}

static void test_ratelimit(void)
{
	int allowed = 0, wait = 0;
	for (int i = 0; i < 10; i++) {
		int w = rl_take('t', "unit", 2, 4);
		allowed += w == 0;
		if (w)
			wait = w;
	}
	is_int(allowed, 4, "rate: the burst passes, the rest wait");
	ok(wait >= 1, "rate: the wait is at least a second");
	is_int(rl_take('t', "other", 2, 4), 0, "rate: another key is not affected");
}

/* The admin API's actions, as core_admin runs them for the transports. */
static int admin(enum core_admin_action a, const char *body, json_object **reply)
{
	core_result r;
	core_result_init(&r);
	core_admin(c, a, "192.0.2.1", body, body ? strlen(body) : 0, &r);
	int status = sig_err_status(r.err);
	if (reply)
		*reply = json_object_get(r.reply);
	core_result_free(&r);
	return status;
}

/* A login from address remote: its status and error code into err. */
static int login_from(const char *user, const char *remote, char *err, size_t size)
{
	char body[128];
	snprintf(body, sizeof body, "{\"type\":\"login\",\"userId\":\"%s\"}", user);
	core_result r;
	core_result_init(&r);
	core_exec_request(c, NULL, remote, body, strlen(body), &r);
	int status = sig_err_status(r.err);
	snprintf(err, size, "%s", error_of(r.reply));
	core_result_free(&r);
	return status;
}

static void test_admin(void)
{
	struct core_limits lim = limits();
	lim.heartbeat_timeout_ms = 60000;
	open_fixture("admin", &lim);
	char a[CORE_TOKEN_LEN + 1], b[CORE_TOKEN_LEN + 1], d[CORE_TOKEN_LEN + 1], e2[CORE_TOKEN_LEN + 1];
	char s[512], err[64];
	alice_and_bob_in_r(a, b);
	json_object *o = NULL;

	/* kick: the notice is the session's last event, then its stream ends */
	is_int(admin(CORE_ADMIN_KICK, "{\"userId\":\"bob\",\"reason\":\"spam\"}", &o), 200, "admin: kick bob");
	is_str(field(o, "roomId"), "r", "admin: ... the reply names his room");
	json_object_put(o);
	is_int(run(b, "{\"type\":\"ping\"}", NULL, NULL), 401, "admin: the kicked token opens no command");
	core_stream cs;
	struct mail m = {0};
	sig_err e = read_mail(b, 0, &cs, &m, NULL);
	summary(&m, s, sizeof s);
	ok(e == SIG_E_UNAUTHORIZED && strcmp(s, "kicked:?") == 0 && m.n == 1 && strstr(m.bodies[0], "\"reason\":\"spam\""),
	   "admin: his stream gets the notice with its reason, then ends (%s)", s);
	int64_t kid = m.n ? m.ids[0] : 0;
	mail_free(&m);
	e = read_mail(b, kid, &cs, &m, NULL);
	ok(e == SIG_E_UNAUTHORIZED && m.n == 0, "admin: no stream opens past the notice");
	mail_free(&m);
	e = read_mail(a, 0, &cs, &m, NULL);
	summary(&m, s, sizeof s);
	is_str(s, "user-joined:bob,user-left:bob", "admin: the room got user-left");
	mail_free(&m);
	is_int(admin(CORE_ADMIN_KICK, "{\"userId\":\"bob\"}", &o), 404, "admin: kicking him again: 404");
	is_str(error_of(o), "unknown-user", "admin: ... unknown-user");
	json_object_put(o);
	login("bob", b); /* a kicked, unbanned user may come back */
	ok(b[0] != '\0', "admin: a kicked user logs in again");

	/* bans */
	is_int(admin(CORE_ADMIN_BAN, "{\"userId\":\"carol\",\"seconds\":60}", &o), 200, "admin: ban carol (not logged in)");
	ok(json_object_get_boolean(json_object_object_get(o, "kicked")) == 0, "admin: ... nobody kicked");
	json_object_put(o);
	is_int(login_from("carol", NULL, err, sizeof err), 403, "admin: carol's login: 403");
	is_str(err, "banned", "admin: ... banned");
	is_int(admin(CORE_ADMIN_BAN, "{\"address\":\"198.51.100.7\",\"seconds\":60}", NULL), 200, "admin: ban an address");
	is_int(login_from("dora", "198.51.100.7", err, sizeof err), 403, "admin: a login from it: 403");
	is_int(login_from("dora", "198.51.100.8", err, sizeof err), 200, "admin: ... from another address: 200");
	is_int(admin(CORE_ADMIN_BANS, NULL, &o), 200, "admin: list the bans");
	is_int((long long)json_object_array_length(json_object_object_get(o, "bans")), 2, "admin: ... both");
	json_object_put(o);
	is_int(admin(CORE_ADMIN_UNBAN, "{\"address\":\"198.51.100.7\"}", NULL), 200, "admin: unban it");
	is_int(login_from("dana", "198.51.100.7", err, sizeof err), 200, "admin: ... logins from it work again");
	const char *bad[] = {"{\"userId\":\"x\"}", "{\"userId\":\"x\",\"seconds\":0}", "{\"seconds\":5}",
			     "{\"userId\":\"x\",\"address\":\"1.2.3.4\",\"seconds\":5}", "{\"address\":\"a b\",\"seconds\":5}",
			     "{\"userId\":\"x\",\"seconds\":\"5\"}", "[1]", "nope"};
	int refused = 0;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		refused += admin(CORE_ADMIN_BAN, bad[i], NULL) == 400;
	is_int(refused, (long long)(sizeof bad / sizeof bad[0]), "admin: every malformed ban is 400");

	/* close a room: room-closed to each member, nobody left in it */
	login("dan", d);
	login("erin", e2);
	join(d, "z");
	join(e2, "z");
	is_int(admin(CORE_ADMIN_CLOSE, "{\"roomId\":\"z\",\"reason\":\"over\"}", &o), 200, "admin: close z");
	is_int(json_object_get_int(json_object_object_get(o, "members")), 2, "admin: ... its 2 members");
	json_object_put(o);
	e = read_mail(d, 0, &cs, &m, NULL);
	summary(&m, s, sizeof s);
	is_str(s, "user-joined:erin,room-closed:?", "admin: dan got room-closed (and no user-left)");
	mail_free(&m);
	is_int(run(d, "{\"type\":\"leave\"}", NULL, NULL), 409, "admin: dan is in no room, his session alive");
	is_int(admin(CORE_ADMIN_CLOSE, "{\"roomId\":\"z\"}", NULL), 404, "admin: closing it again: 404");
	is_int(admin(CORE_ADMIN_ROOMS, NULL, &o), 200, "admin: list the rooms");
	json_object *rooms = json_object_object_get(o, "rooms"), *r0 = json_object_array_get_idx(rooms, 0);
	json_object *users = json_object_object_get(r0, "users");
	ok(json_object_array_length(rooms) == 1 && strcmp(field(r0, "roomId"), "r") == 0 &&
	   json_object_array_length(users) == 1 && strcmp(field(json_object_array_get_idx(users, 0), "userId"), "alice") == 0,
	   "admin: ... alice alone in r");
	json_object_put(o);

	/* the pruner deletes a kicked session after its grace */
	is_int(admin(CORE_ADMIN_KICK, "{\"userId\":\"erin\"}", NULL), 200, "admin: kick erin");
	core_wakes w = {0};
	int pruned = 0;
	core_prune(c, util_now_ms() + 11000, &w, &pruned);
	core_wakes_free(&w);
	is_int(run(NULL, "{\"type\":\"login\",\"userId\":\"erin\"}", NULL, NULL), 200, "admin: erin's id is free again");
	ok(pruned >= 1, "admin: the pruner removed the kicked session (%d)", pruned);
	close_fixture();
}

/* ---- the wake-up across machines (store_notify, store_listener_*) ---- */

struct heard {
	int n;
	int64_t v[16];
	int64_t rung; /* of the last one */
};

static void on_heard(void *ctx, int64_t session, int64_t rung_us)
{
	struct heard *h = ctx;
	h->rung = rung_us;
	if (h->n < 16)
		h->v[h->n++] = session;
}

/* Drive ls as a loop would, for at most ms; returns the flags seen. */
static int drive(store_listener *ls, struct heard *h, int ms)
{
	int flags = 0;
	for (int64_t end = util_mono_us() + ms * 1000LL; util_mono_us() < end;) {
		unsigned want = 0;
		int fd = store_listener_fd(ls, &want), ready = 0;
		if (fd >= 0) {
			struct pollfd p = {.fd = fd, .events = (short)((want & STORE_WANT_READ ? POLLIN : 0) |
								      (want & STORE_WANT_WRITE ? POLLOUT : 0))};
			ready = poll(&p, 1, 20) > 0;
		} else {
			usleep(20000);
		}
		flags |= store_listener_step(ls, ready, util_mono_us(), on_heard, h);
	}
	return flags;
}

static void test_wake_across(void)
{
	struct core_limits lim = limits();
	open_fixture("wake", &lim);
	int64_t owners[2] = {0x1234, 0}, sessions[2] = {42, 43};
	store_listener *other = store_listener_new(dbpath, 0x1234);
	if (!pg_base) {
		ok(other == NULL, "wake: SQLite has no listener (bell.c's datagrams reach its processes)");
		is_int(store_begin(st), SIG_OK, "wake: begin");
		is_int(store_notify(st, owners, sessions, 2), SIG_OK, "wake: store_notify does nothing on SQLite");
		store_rollback(st);
		close_fixture();
		return;
	}
	/* A second listener, this process's own (the last created): a wake
	 * for it never goes through the database. */
	store_listener *self = store_listener_new(dbpath, 0x5678);
	struct heard h = {0}, hs = {0};
	int f = drive(other, &h, 3000);
	drive(self, &hs, 300);
	ok((f & STORE_LISTEN_UP) != 0, "wake: the listener connects without blocking and says it listens");
	is_int(store_begin(st), SIG_OK, "wake: begin");
	is_int(store_notify(st, owners, sessions, 2), SIG_OK, "wake: notify owner 0x1234 (and skip owner 0)");
	store_rollback(st);
	drive(other, &h, 300);
	is_int(h.n, 0, "wake: a rolled-back transaction rings nothing");
	int64_t both[2] = {0x1234, 0x5678}, ids[2] = {44, 45};
	store_begin(st);
	store_notify(st, both, ids, 2);
	is_int(store_commit(st), SIG_OK, "wake: commit");
	for (int i = 0; i < 50 && h.n == 0; i++)
		drive(other, &h, 100);
	is_int(h.n, 1, "wake: the commit rings the holder's channel once");
	is_int(h.n ? h.v[0] : 0, 44, "... with its session");
	ok(h.rung > 0 && h.rung <= util_mono_us(), "... and, on this machine, when it was asked (the delivery latency metric)");
	drive(self, &hs, 300);
	is_int(hs.n, 0, "wake: this process's own channel is never notified (its wakes stay in memory)");
	/* The listener's connection cut by the server: it comes back and
	 * says so (the streams then re-read their mailboxes). */
	pg_exec(fixture_db(), "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
		"WHERE application_name = 'signal-fcgi-listen' AND query LIKE 'LISTEN signal_0000000000001234'", NULL);
	int back = 0;
	for (int i = 0; i < 50 && !(back & STORE_LISTEN_UP); i++)
		back |= drive(other, &h, 100);
	ok((back & STORE_LISTEN_UP) != 0, "wake: after its connection is cut the listener reconnects and says so");
	h.n = 0;
	store_begin(st);
	store_notify(st, owners, sessions, 1);
	store_commit(st);
	for (int i = 0; i < 50 && h.n == 0; i++)
		drive(other, &h, 100);
	is_int(h.n ? h.v[0] : 0, 42, "wake: and hears the next commit's notification");
	store_listener_free(other);
	store_listener_free(self);
	store_listener_free(NULL);
	close_fixture();
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0); /* TAP lines survive a sanitizer abort */
	pg_base = getenv("SIGNAL_UNIT_PG");
	if (mkdtemp(dir) == NULL) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_login();
	test_rooms_and_signals();
	test_errors_and_batches();
	test_group_commit();
	test_idempotency();
	test_streams();
	test_prune();
	test_admin();
	test_auth_secret();
	test_migration();
	test_httpparse();
	test_jsonv();
	test_field_errors();
	test_client_addr();
	test_login_burst();
	test_turn();
	test_ratelimit();
	test_wake_across();
	printf("1..%d\n", n_tests);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return n_failed ? 1 : 0;
}
