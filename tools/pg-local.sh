#!/usr/bin/env bash
# pg-local.sh - a throwaway PostgreSQL 15 for `make run STORE=postgres` and
# the tests: only on 127.0.0.1 (and a unix socket in its own directory),
# trust authentication, nothing kept.
#   pg-local.sh start DIR PORT   initdb DIR if new, start the server; prints its PID
#   pg-local.sh stop DIR         fast shutdown
#   pg-local.sh createdb DIR PORT NAME
# PostgreSQL refuses to run as root, so it runs as the `postgres` user
# (runuser), and DIR must be a directory that user can reach: a checkout
# below /root cannot host it (/root is 0700), so callers put it under
# /tmp (signal-pg-PORT...), which is why it is not under var/.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cmd=$1 dir=$2
case $cmd in
start)
	port=$3
	if [ ! -f "$dir/PG_VERSION" ]; then
		mkdir -p "$dir"
		[ "$(id -u)" = 0 ] && chown postgres: "$dir"
		chmod 700 "$dir"
		as_pg "$BIN/initdb" -D "$dir" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 ||
			{ cat "$dir.initdb.log" >&2; exit 1; }
	fi
	# fsync off: a throwaway server; crash tests kill the responders, not it.
	as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null
	head -1 "$dir/postmaster.pid"
	;;
stop)
	[ -f "$dir/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null
	;;
createdb)
	port=$3 name=$4
	as_pg psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
		as_pg createdb -h 127.0.0.1 -p "$port" -U postgres "$name"
	;;
*) echo "usage: $0 start DIR PORT | stop DIR | createdb DIR PORT NAME" >&2; exit 2 ;;
esac
