#!/usr/bin/env bash
# pg-profile.sh - where the responder's time goes on PostgreSQL (issue 13):
# bench/run.sh's pg-throughput setting (a local PostgreSQL 15 with fsync on,
# lighttpd + one responder on CPU 0, `loadgen throughput 32 8 SECS` on CPU
# 1), with one of these watching the responder:
#   bench/pg-profile.sh perf     perf record (cpu-clock, DWARF call graphs)
#                                of the responder for PERF_SECS (5) in the
#                                middle of the run; the report goes to OUT
#   bench/pg-profile.sh strace   strace -c -f of the responder over the run:
#                                system calls per relayed message
#   bench/pg-profile.sh stmts    pg_stat_statements over the run: calls of
#                                each statement per signal command
#   bench/pg-profile.sh cpu      only the CPU per message (responder, front,
#                                PostgreSQL), as bench/run.sh's rows
# BIN=path/to/signal-fcgi (default build/signal-fcgi), SECS (10), OUT
# (/tmp/pg-profile) override. Prints what it measured; keeps OUT.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-cpu}
SECS=${SECS:-10}
PERF_SECS=${PERF_SECS:-5}
BIN=${BIN:-$ROOT/build/signal-fcgi}
OUT=${OUT:-/tmp/pg-profile}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/signal-pgprof.XXXXXX)
LG=$WORK/loadgen
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$LG" "$ROOT/bench/loadgen.c" -lwslay || exit 1
ulimit -n "$(ulimit -Hn)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p"); do tree "$c"; done; }
cpu_ns() { # the CPU time (ns) of the processes given, every thread
	local ns=0 p th
	for p in "$@"; do
		for th in /proc/$p/task/*/schedstat; do ns=$((ns + $(cut -d' ' -f1 "$th" 2>/dev/null || echo 0))); done
	done
	echo $ns
}

PGDIR=$WORK/pg PGPORT=$(free_port) SERVER_PID="" TRACER=""
cleanup() {
	[ -n "$TRACER" ] && kill "$TRACER" 2>/dev/null && wait "$TRACER" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	"$ROOT/tools/pg-local.sh" stop "$PGDIR/data" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$PGDIR"; chmod 755 "$WORK" "$PGDIR"; chown postgres "$PGDIR" 2>/dev/null
extra=""
[ "$MODE" = stmts ] && extra="shared_preload_libraries=pg_stat_statements pg_stat_statements.track=all"
PG_PID=$("$ROOT/tools/pg-local.sh" start "$PGDIR/data" "$PGPORT" fsync=on synchronous_commit=on $extra) ||
	{ echo "no PostgreSQL"; exit 1; }
PORT=$(free_port)
"$ROOT/tools/pg-local.sh" createdb "$PGDIR/data" "$PGPORT" "b$PORT" >/dev/null || { echo "createdb failed"; exit 1; }
psql_() { psql -h 127.0.0.1 -p "$PGPORT" -U postgres -X -q -At -d "b$PORT" "$@"; }
mkdir -p "$WORK/ours/run"
SIGNAL_ROOT=$ROOT SIGNAL_BIN=$BIN SIGNAL_RUNDIR=$WORK/ours/run SIGNAL_DB=$WORK/ours/bench.db \
	SIGNAL_ARGS="--rate-ip 1000000 --rate-session 1000000 --rate-login 1000000 --mailbox-limit 100000 --store postgresql://postgres@127.0.0.1:$PGPORT/b$PORT" \
	SIGNAL_PROCS=1 SIGNAL_WORKERS=1 SIGNAL_BIND=127.0.0.1 PORT=$PORT \
	setsid taskset -c 0 lighttpd -D -f "$ROOT/lighttpd.conf" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/health" && break; sleep 0.05; done
RESP=$(pgrep -P "$SERVER_PID" -x signal-fcgi | head -1)
[ -n "$RESP" ] || { echo "no responder"; cat "$WORK/server.log"; exit 1; }
[ "$MODE" = stmts ] && psql_ -c "CREATE EXTENSION pg_stat_statements" >/dev/null

metric() { curl -s "http://127.0.0.1:$PORT/api/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $NF} END {printf "%d", s}'; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
coproc LGP { taskset -c 1 "$LG" --port "$PORT" throughput 32 8 "$SECS"; }
lgpid=$LGP_PID
exec {lgout}<&"${LGP[0]}"
read -r _ <&"$lgout" # "start": logins and joins done, the relaying begins
c0=$(metric signal_commands_total); k0=$(metric signal_store_commit_duration_seconds_count)
# f: lighttpd itself (the responder is its child)
r0=$(cpu_ns "$RESP"); f0=$(cpu_ns "$SERVER_PID"); d0=$(cpu_ns $(tree "$PG_PID"))
case $MODE in
perf)
	sleep 2
	perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$RESP" -o "$OUT/perf.data" -- sleep "$PERF_SECS" \
		>"$OUT/perf-record.log" 2>&1
	;;
strace)
	strace -c -f -p "$RESP" -o "$OUT/strace.txt" &
	TRACER=$!
	;;
stmts)
	psql_ -c "SELECT pg_stat_statements_reset()" >/dev/null
	c0=$(metric signal_commands_total); k0=$(metric signal_store_commit_duration_seconds_count)
	;;
esac
read -r out <&"$lgout"
exec {lgout}<&-
c1=$(metric signal_commands_total); k1=$(metric signal_store_commit_duration_seconds_count)
r1=$(cpu_ns "$RESP"); f1=$(cpu_ns "$SERVER_PID"); d1=$(cpu_ns $(tree "$PG_PID"))
wait "$lgpid" 2>/dev/null
if [ -n "$TRACER" ]; then kill -INT "$TRACER"; wait "$TRACER" 2>/dev/null; TRACER=""; fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$out"
msgs=$(echo "$out" | sed -n 's/.*delivered=\([0-9]*\).*/\1/p')
cmds=$((c1 - c0))
awk -v r=$((r1 - r0)) -v f=$((f1 - f0)) -v d=$((d1 - d0)) -v n="$msgs" -v c="$cmds" -v k=$((k1 - k0)) 'BEGIN {
	printf "messages %d, commands %d, commits %d (%.2f commands per commit)\n", n, c, k, k ? c / k : 0
	printf "CPU per message (us): responder %.0f, front %.0f, PostgreSQL %.0f\n", r / n / 1000, f / n / 1000, d / n / 1000 }'
case $MODE in
perf)
	perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep . | head -20 \
		>"$OUT/by-dso.txt"
	perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep . |
		head -60 >"$OUT/by-sym.txt"
	perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep . |
		head -80 >"$OUT/children.txt"
	echo "== by object (self) =="; cat "$OUT/by-dso.txt"
	echo "== by symbol (self) =="; head -40 "$OUT/by-sym.txt"
	;;
strace)
	head -30 "$OUT/strace.txt"
	echo "== calls per signal command (commands $cmds) =="
	awk -v c="$cmds" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%-16s %8.2f\n", $NF, $4 / c}' "$OUT/strace.txt" | head -20
	;;
stmts)
	# Per signal command: the commands PostgreSQL saw (one SAVEPOINT
	# each), not the metrics' count, which misses the ~500 in flight when
	# the load generator stops. Nested: statements a statement ran itself
	# (foreign key checks), no round trip of ours.
	psql_ -F $'\t' -c "WITH s AS (SELECT * FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND query NOT LIKE '%pg_stat_statements%'),
		n AS (SELECT sum(calls) AS c FROM s WHERE query = 'SAVEPOINT cmd')
		SELECT calls, round(calls / n.c, 2), round((total_exec_time * 1000 / n.c)::numeric, 1),
			CASE WHEN toplevel THEN '' ELSE 'nested: ' END || left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM s, n ORDER BY calls DESC, query LIMIT 30" >"$OUT/stmts.tsv"
	echo "calls, per signal command, exec us per command, statement:"
	cat "$OUT/stmts.tsv"
	echo "signal commands seen, statements per command (our own: round trips), exec us per command:" \
		"$(psql_ -F ' ' -c "WITH s AS (SELECT * FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND query NOT LIKE '%pg_stat_statements%'),
		n AS (SELECT sum(calls) AS c FROM s WHERE query = 'SAVEPOINT cmd')
		SELECT n.c, round(sum(calls) FILTER (WHERE toplevel) / n.c, 2), round((sum(total_exec_time) * 1000 / n.c)::numeric, 1)
		FROM s, n GROUP BY n.c")"
	;;
esac
