#!/usr/bin/env bash
# pg-local.sh - a throwaway PostgreSQL 15 for `make run STORE=postgres` and
# the tests: only on 127.0.0.1 (and a unix socket in its own directory),
# trust authentication, nothing kept.
#   pg-local.sh start DIR PORT [SETTING=VALUE...]
#                                initdb DIR if new, start the server (with
#                                those extra settings); prints its PID
#   pg-local.sh primary DIR PORT NAME
#                                start DIR as a primary whose every commit
#                                waits for the standby NAME to have it
#                                (synchronous_standby_names, synchronous_commit
#                                = on); prints its PID
#   pg-local.sh standby DIR PORT PRIMARY_PORT NAME
#                                DIR a copy of the primary on PRIMARY_PORT
#                                (pg_basebackup, if new), started as its
#                                streaming standby NAME (hot standby: it
#                                answers read-only); prints its PID once the
#                                primary reports it synchronous
#   pg-local.sh promote DIR      the standby in DIR becomes a primary
#   pg-local.sh stop DIR         fast shutdown
#   pg-local.sh createdb DIR PORT NAME
# PostgreSQL refuses to run as root, so it runs as the `postgres` user
# (runuser), and DIR must be a directory that user can reach: a checkout
# below /root cannot host it (/root is 0700), so callers put it under
# /tmp (signal-pg-PORT...), which is why it is not under var/.
# The replication settings are given on the command line, not written into
# postgresql.conf, so that pg_basebackup does not copy them: a promoted
# standby that kept synchronous_standby_names would wait for ever for a
# standby of its own.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cmd=$1 dir=$2
# start_server DIR PORT SETTING=VALUE...: pg_ctl start, waiting until it
# accepts connections; prints the postmaster's PID.
start_server() {
	local d=$1 port=$2 opts="" s
	shift 2
	for s in "$@"; do opts="$opts -c $s"; done
	# fsync off: a throwaway server; crash tests kill the responders, or
	# the whole server (its processes, not the machine's page cache).
	as_pg "$BIN/pg_ctl" -D "$d" -l "$d/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $d -c fsync=off -c max_connections=300$opts" start >/dev/null
	head -1 "$d/postmaster.pid"
}
case $cmd in
start | primary)
	port=$3
	if [ ! -f "$dir/PG_VERSION" ]; then
		mkdir -p "$dir"
		[ "$(id -u)" = 0 ] && chown postgres: "$dir"
		chmod 700 "$dir"
		as_pg "$BIN/initdb" -D "$dir" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 ||
			{ cat "$dir.initdb.log" >&2; exit 1; }
	fi
	if [ "$cmd" = primary ]; then
		# initdb's pg_hba.conf already trusts replication from 127.0.0.1.
		start_server "$dir" "$port" "synchronous_standby_names=$4" synchronous_commit=on
	else
		shift 3
		start_server "$dir" "$port" "$@"
	fi
	;;
standby)
	port=$3 pport=$4 name=$5
	if [ ! -f "$dir/PG_VERSION" ]; then
		# -R: standby.signal and primary_conninfo (which names the
		# standby, so the primary knows which one it waits for).
		as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$dir" -X stream -R \
			-d "application_name=$name" >"$dir.basebackup.log" 2>&1 ||
			{ cat "$dir.basebackup.log" >&2; exit 1; }
		chmod 700 "$dir"
	fi
	pid=$(start_server "$dir" "$port" hot_standby=on)
	# Started is not yet caught up: wait until the primary counts it as
	# its synchronous standby, so a commit from now on waits for it.
	for _ in $(seq 1 600); do
		st=$(as_pg psql -h 127.0.0.1 -p "$pport" -U postgres -d postgres -XqAtc \
			"SELECT sync_state FROM pg_stat_replication WHERE application_name = '$name'" 2>/dev/null || true)
		[ "$st" = sync ] && { echo "$pid"; exit 0; }
		sleep 0.1
	done
	echo "pg-local: the standby $name on $port never became synchronous (state '${st:-}')" >&2
	exit 1
	;;
promote)
	as_pg "$BIN/pg_ctl" -D "$dir" -w -t 60 promote >/dev/null
	;;
stop)
	[ -f "$dir/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null
	;;
createdb)
	port=$3 name=$4
	as_pg psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
		as_pg createdb -h 127.0.0.1 -p "$port" -U postgres "$name"
	;;
*) echo "usage: $0 start DIR PORT [SETTING=VALUE...] | primary DIR PORT NAME | standby DIR PORT PRIMARY_PORT NAME | promote DIR | stop DIR | createdb DIR PORT NAME" >&2; exit 2 ;;
esac
