/*
 * store.c - store.h's calls, dispatched to the engine a handle was opened
 * on: SQLite (a file path, the default) or PostgreSQL (a libpq URI such
 * as postgresql://host/db, or a conninfo string "host=... dbname=...").
 * It owns the choice of engine and nothing else.
 *
 * It must never: hold state of its own, or name an engine's internals.
 */
#include "store/store.h"
#include "store/store_ops.h"
#include "base/log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int store_is_postgres(const char *where)
{
	if (where == NULL)
		return 0;
	if (strncmp(where, "postgresql://", 13) == 0 || strncmp(where, "postgres://", 11) == 0)
		return 1;
	/* A conninfo string starts with a keyword and '=' ("host=db1 ..."). */
	const char *p = where;
	while (*p && (islower((unsigned char)*p) || *p == '_'))
		p++;
	while (*p == ' ')
		p++;
	return p != where && *p == '=';
}

sig_err store_open(const char *where, int64_t busy_timeout_ms, store **out)
{
#ifdef STORE_NO_PG
	/* The shared-hosting bundle links no libpq: a host has none to load. */
	if (store_is_postgres(where)) {
		*out = NULL;
		log_error("store: this build (the shared-hosting bundle) has no PostgreSQL store");
		return SIG_E_INTERNAL;
	}
	const struct store_ops *ops = &store_sqlite_ops;
#else
	const struct store_ops *ops = store_is_postgres(where) ? &store_pg_ops : &store_sqlite_ops;
#endif
	return ops->open(where, busy_timeout_ms, out);
}

static const struct store_ops *ops_of(store *st)
{
	return ((const struct store_head *)(const void *)st)->ops;
}

void store_close(store *st)
{
	if (st)
		ops_of(st)->close(st);
}

void store_rollback(store *st)
{
	ops_of(st)->rollback(st);
}

void store_connect_wait(store *st, int64_t max_ms)
{
	ops_of(st)->connect_wait(st, max_ms);
}

const char *store_engine(store *st)
{
	return ops_of(st)->name;
}

void store_key_free(struct store_key *k)
{
	free(k->reply);
	memset(k, 0, sizeof *k);
}

int store_wakes_across(const char *where)
{
#ifdef STORE_NO_PG
	(void)where;
	return 0;
#else
	return store_is_postgres(where);
#endif
}

store_listener *store_listener_new(const char *where, int64_t owner)
{
#ifdef STORE_NO_PG
	(void)where;
	(void)owner;
	return NULL;
#else
	return store_wakes_across(where) ? store_pg_listener_ops.create(where, owner) : NULL;
#endif
}

static const struct store_listener_ops *lops_of(const store_listener *ls)
{
	return ((const struct store_listener_head *)(const void *)ls)->ops;
}

void store_listener_free(store_listener *ls)
{
	if (ls)
		lops_of(ls)->destroy(ls);
}

int store_listener_fd(const store_listener *ls, unsigned *want)
{
	return lops_of(ls)->fd(ls, want);
}

int store_listener_step(store_listener *ls, int ready, int64_t now_us, store_wake_fn *fn, void *ctx)
{
	return lops_of(ls)->step(ls, ready, now_us, fn, ctx);
}

#define STORE_DISPATCH(name, params, args) \
	sig_err store_##name params \
	{ \
		return ops_of(st)->name args; \
	}
STORE_CALLS(STORE_DISPATCH)
