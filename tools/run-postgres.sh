#!/usr/bin/env bash
# run-postgres.sh - what `make run STORE=postgres` and `make run PG_URL=...`
# run: COMMAND (the front server, as `make run` starts it) with STORE_ARGS
# set to `--store URL`, the responders' option for the PostgreSQL store.
#   tools/run-postgres.sh PG_URL PGPORT COMMAND...
# PG_URL empty: a local PostgreSQL 15 (tools/pg-local.sh) is started for
# the run, on PGPORT (empty: a free port), listening on 127.0.0.1 only,
# with its data in var/pg/ -- or, when the `postgres` user it must run as
# cannot reach the checkout (one under /root, mode 0700), in
# /tmp/signal-pg-<uid>-<checkout hash>/. The data stays between runs, like
# var/signal.db; delete the directory to start over. Ctrl-C stops the front
# server and then this PostgreSQL. With PG_URL, no server is started.
set -eu
cd "$(dirname "$0")/.."
url=$1 pgport=$2
shift 2
pgpid="" pgdir=""
if [ -z "$url" ]; then
	[ -x /usr/lib/postgresql/15/bin/initdb ] || { echo "run-postgres: postgresql-15 is not installed" >&2; exit 1; }
	[ -n "$pgport" ] || pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	if [ -n "${PG_DIR:-}" ]; then
		pgdir=$PG_DIR
	else
		pgdir=$PWD/var/pg
		if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD/var"; then
			pgdir=/tmp/signal-pg-$(id -u)-$(printf '%s' "$PWD" | md5sum | cut -c1-8)
			echo "run-postgres: the postgres user cannot enter $PWD, so the data lives in $pgdir"
		fi
	fi
	if [ -f "$pgdir/postmaster.pid" ] && kill -0 "$(head -1 "$pgdir/postmaster.pid")" 2>/dev/null; then
		echo "run-postgres: a PostgreSQL already runs on $pgdir (another make run?)" >&2
		exit 1
	fi
	rm -f "$pgdir/postmaster.pid" # left by a killed run
	# Stopped at exit however the run ends, a Ctrl-C or SIGTERM while it
	# starts included: the postmaster runs in a session of its own (pg_ctl),
	# so the signal that ends pg_ctl leaves it running, without its PID
	# known here yet (then it is stopped by its data directory).
	stop_pg() {
		if [ -n "$pgpid" ]; then
			kill -INT "$pgpid" 2>/dev/null # fast shutdown
			for _ in $(seq 1 600); do kill -0 "$pgpid" 2>/dev/null || return 0; sleep 0.1; done
			echo "run-postgres: PostgreSQL (pid $pgpid) still runs 60 s after it was told to stop" >&2
		elif [ -f "$pgdir/postmaster.pid" ]; then
			tools/pg-local.sh stop "$pgdir" || true
		fi
	}
	trap stop_pg EXIT
	trap 'exit 0' INT TERM
	pgpid=$(tools/pg-local.sh start "$pgdir" "$pgport")
	tools/pg-local.sh createdb "$pgdir" "$pgport" signal
	url=postgresql://postgres@127.0.0.1:$pgport/signal
	echo "PostgreSQL 15 on 127.0.0.1:$pgport (pid $pgpid, data $pgdir); store $url"
fi
export STORE_ARGS="--store $url"
"$@" || true
