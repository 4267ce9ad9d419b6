#!/usr/bin/env bash
# cluster.sh - the figures behind README's "Scaling out" capacity model, a
# case of its own (not in bench/run.sh's table): what one PostgreSQL here
# commits per second, and what a message costs the nodes and the database.
#   bench/cluster.sh            (SECS=20 PAIRS=12 NODES=3 PGBENCH_SECS=10 override)
# 1. pgbench with a transaction shaped like one relayed signal (a mailbox
#    lock, an event row, a NOTIFY), 1 and 8 clients, on a throwaway
#    PostgreSQL 15 with fsync off (as tools/pg-local.sh runs it) and on.
# 2. NODES nodes (lighttpd + one responder each) on one database, PAIRS
#    pairs relaying as fast as they are answered (tests/clusterload.py,
#    login at node i, stream at i+1, POST at i+2) for SECS seconds: messages
#    per second, CPU per message of the nodes (lighttpd and responders,
#    summed) and of PostgreSQL, commits per second and messages per commit,
#    cross-node POST->event p50/p99.
# Every server it starts it stops by PID.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-20} PAIRS=${PAIRS:-12} NODES=${NODES:-3} PGBENCH_SECS=${PGBENCH_SECS:-10}
BIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d /tmp/signal-cluster-bench.XXXXXX)
chmod 755 "$WORK"
TICK=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=""
PG_PID=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	[ -n "$PG_PID" ] && kill -INT "$PG_PID" 2>/dev/null
	while [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; do sleep 0.1; done
	rm -rf "$WORK"
}
trap cleanup EXIT
pg() { runuser -u postgres -- "$@"; }
psql_() { psql -h 127.0.0.1 -p "$PGP" -U postgres -X -qAt "$@"; }
# ticks of CPU (user + system) of the given PIDs
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
pg_pids() { echo "$PG_PID $(pgrep -P "$PG_PID" | tr '\n' ' ')"; }

start_pg() { # start_pg FSYNC NAME
	PGP=$(free_port)
	PGD=$WORK/pg-$2
	mkdir -p "$PGD" && chown postgres: "$PGD" && chmod 700 "$PGD"
	pg "$BIN/initdb" -D "$PGD" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
	pg "$BIN/pg_ctl" -D "$PGD" -l "$PGD/server.log" -w -o "-c listen_addresses=127.0.0.1 -p $PGP -k $PGD -c fsync=$1 -c max_connections=300" start >/dev/null
	PG_PID=$(head -1 "$PGD/postmaster.pid")
}
stop_pg() {
	kill -INT "$PG_PID"
	while kill -0 "$PG_PID" 2>/dev/null; do sleep 0.1; done
	PG_PID=""
}

echo "machine: $(nproc) cores, $(uname -sr); PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1"
cat >"$WORK/signal.sql" <<'EOF'
\set sid random(1, 1000)
BEGIN;
SELECT pg_advisory_xact_lock(1, :sid);
INSERT INTO bench_events(session_id, body) VALUES (:sid, '{"type":"signal","to":"bob","sdp":"v=0 ..."}');
SELECT pg_notify('signal_bench', :sid::text);
COMMIT;
EOF
chmod 644 "$WORK/signal.sql"
for fs in off on; do
	start_pg "$fs" "bench-$fs"
	psql_ -d postgres -c "CREATE TABLE bench_events (id bigserial PRIMARY KEY, session_id bigint, body text)"
	for c in 1 8; do
		tps=$(pgbench -h 127.0.0.1 -p "$PGP" -U postgres -n -c $c -j 2 -T "$PGBENCH_SECS" -f "$WORK/signal.sql" postgres 2>/dev/null |
			sed -n 's/^tps = \([0-9]*\).*/\1/p')
		printf 'pgbench signal-shaped commits/s  fsync=%-3s clients=%d: %s\n' "$fs" "$c" "${tps:-?}"
	done
	stop_pg
done

start_pg off cluster
psql_ -d postgres -c "CREATE DATABASE signal"
URL=postgresql://postgres@127.0.0.1:$PGP/signal
declare -a NP
NODE_PIDS=""
for i in $(seq 0 $((NODES - 1))); do
	NP[$i]=$(free_port)
	run=$WORK/run/${NP[$i]}
	mkdir -p "$run"
	SIGNAL_ROOT=$ROOT SIGNAL_BIN=$ROOT/build/signal-fcgi SIGNAL_RUNDIR=$run SIGNAL_DB=$run/signal.db \
		SIGNAL_ARGS="--store $URL --rate-ip 1000000 --rate-session 1000000 --rate-login 1000000 --mailbox-limit 100000" \
		SIGNAL_PROCS=1 SIGNAL_BIND=127.0.0.1 PORT=${NP[$i]} lighttpd -D -f "$ROOT/lighttpd.conf" >>"$WORK/nodes.log" 2>&1 &
	PIDS="$PIDS $!"
done
nodes="["
for i in $(seq 0 $((NODES - 1))); do
	for k in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:${NP[$i]}/api/health" && break; sleep 0.05; done
	nodes="$nodes\"http://127.0.0.1:${NP[$i]}\","
done
nodes="${nodes%,}]"
pairs="["
for i in $(seq 0 $((PAIRS - 1))); do
	b=http://127.0.0.1:${NP[$((i % NODES))]}
	s=$(curl -s "$b/api/cmd" -d "{\"type\":\"login\",\"userId\":\"bs$i\",\"protocol\":\"b\"}" | jq -r .token)
	r=$(curl -s "$b/api/cmd" -d "{\"type\":\"login\",\"userId\":\"br$i\",\"protocol\":\"b\"}" | jq -r .token)
	curl -s -o /dev/null "$b/api/cmd" -H "Authorization: Bearer $s" -d "{\"type\":\"join\",\"roomId\":\"b$i\"}"
	curl -s -o /dev/null "$b/api/cmd" -H "Authorization: Bearer $r" -d "{\"type\":\"join\",\"roomId\":\"b$i\"}"
	pairs="$pairs{\"from\":\"bs$i\",\"from_token\":\"$s\",\"to\":\"br$i\",\"to_token\":\"$r\",\"via\":\"sse\"},"
done
pairs="${pairs%,}]"
node_pids=""
for p in $PIDS; do node_pids="$node_pids $p $(pgrep -P "$p" | tr '\n' ' ')"; done
n0=$(ticks $node_pids) p0=$(ticks $(pg_pids))
c0=$(psql_ -d signal -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'signal'")
t0=$(date +%s%N)
res=$(CLUSTERLOAD_GAP=0 python3 "$ROOT/tests/clusterload.py" load "$nodes" "$pairs" "$SECS")
t1=$(date +%s%N)
n1=$(ticks $node_pids) p1=$(ticks $(pg_pids))
c1=$(psql_ -d signal -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'signal'")
msgs=$(printf '%s' "$res" | jq '[.pairs[].acked] | add')
lost=$(printf '%s' "$res" | jq '[.pairs[].lost | length] | add')
secs=$(awk "BEGIN{print ($t1 - $t0) / 1e9}")
awk -v m="$msgs" -v s="$SECS" -v nt=$((n1 - n0)) -v pt=$((p1 - p0)) -v c=$((c1 - c0)) -v tick="$TICK" -v nodes="$NODES" -v w="$secs" 'BEGIN {
	printf "cluster: %d nodes, %d messages relayed in %d s: %.0f messages/s\n", nodes, m, s, m / s
	printf "cluster: node CPU (lighttpd + responders, all nodes summed) per message: %.3f ms\n", nt * 1000 / tick / m
	printf "cluster: PostgreSQL CPU per message: %.3f ms\n", pt * 1000 / tick / m
	printf "cluster: database commits/s %.0f (every transaction of the run, reads included), %.2f commits per message\n", c / w, c / m
}'
echo "cluster: cross-node POST->event p50 $(printf '%s' "$res" | jq .p50_ms) ms, p99 $(printf '%s' "$res" | jq .p99_ms) ms; lost $lost, duplicates $(printf '%s' "$res" | jq '[.pairs[].duplicates] | add')"
