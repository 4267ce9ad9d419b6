#!/usr/bin/env bash
# run.sh - the benchmark: our service and nchan, side by side, on identical
# work. The server is pinned to CPU 0 and the load generator to CPU 1.
#   bench/run.sh [CASE...]   cases: latency throughput nginx held ws burst xproc idle pg
#   cluster (default: all), and ws-held and ws-throughput (parts of ws alone), pg (SQLite and
#   PostgreSQL side by side), cluster (1 and CLUSTER_NODES=3 nodes on one
#   PostgreSQL: throughput, commands per commit, cross-node latency, what a
#   message costs the nodes and the database)
# (nginx: SSE latency and POST + SSE throughput through the shipped
# nginx.conf, kept FastCGI connections; ws: the WebSocket relay cases, ours
# only: latency through lighttpd and through nginx, throughput, held)
# Prints a table and writes it as TSV to bench/results/DATE.tsv.
# HELD="1000 5000 10000" IDLE_SECS=30 THROUGHPUT_SECS=10 override the sizes.
# PERF_OUT=DIR profiles the server side of every run (see perf_during).
# Ours runs as `make run` does: one lighttpd process (WORKERS), except in
# the held cases, which run two (HELD_WORKERS, SIGNAL_WORKERS in
# lighttpd.conf; through nginx, as many worker_processes): 10,000 streams
# need more descriptors than one may open.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/build/signal-fcgi" ] || { echo "bench: no $ROOT/build/signal-fcgi: run make bench (it builds first), or make all" >&2; exit 1; }
B=$ROOT/bench
WORK=$(mktemp -d /tmp/signal-bench.XXXXXX)
RESULTS=$B/results
mkdir -p "$RESULTS"
TSV=$RESULTS/$(date -u +%Y%m%dT%H%M%SZ).tsv
LGLOG=${TSV%.tsv}.log  # the load generator's stderr, if it said anything
HELD=${HELD:-"1000 5000 10000"}
WORKERS=${WORKERS:-1}
HELD_WORKERS=${HELD_WORKERS:-2}
IDLE_SECS=${IDLE_SECS:-30}
THROUGHPUT_SECS=${THROUGHPUT_SECS:-10}
CASES=${*:-latency throughput nginx held ws burst xproc idle pg cluster}
CLUSTER_NODES=${CLUSTER_NODES:-3}
LG=$WORK/loadgen
SERVER_PID=""
PG_PID=""       # the cases on PostgreSQL: its postmaster, whose CPU is counted too
NODE_PORTS=""   # the cluster case: its nodes, "P1,P2,P3" (the load goes to all)
TICK=$(getconf CLK_TCK)
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$LG" "$B/loadgen.c" -lwslay || exit 1
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The server process and all its descendants (lighttpd + responders, or nginx + worker).
tree() {
	local p=$1
	echo "$p"
	for c in $(pgrep -P "$p"); do tree "$c"; done
}
# One process's resident memory (KB) and CPU time (ns, every thread).
proc_rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
proc_cpu_ns() {
	local ns=0 th
	for th in /proc/$1/task/*/schedstat; do ns=$((ns + $(cut -d' ' -f1 "$th" 2>/dev/null || echo 0))); done
	echo $ns
}
# split_by_role PROBE -> "front responder": PROBE summed over the server's
# processes (front: lighttpd or nginx; responder: signal-fcgi; nchan has no
# responder).
split_by_role() {
	local f=0 r=0 p v
	for p in $(tree "$SERVER_PID"); do
		v=$($1 "$p")
		if [ "$(cat /proc/$p/comm 2>/dev/null)" = signal-fcgi ]; then r=$((r + v)); else f=$((f + v)); fi
	done
	echo "$f $r"
}
rss_split_kb() { split_by_role proc_rss_kb; }
cpu_split_ns() { split_by_role proc_cpu_ns; }
rss_kb() { local a; read -r -a a <<<"$(rss_split_kb)"; echo $((a[0] + a[1])); }
# per_msg_us "F0 R0" "F1 R1" MESSAGES -> "front_us responder_us"
per_msg_us() {
	local a b
	read -r -a a <<<"$1"; read -r -a b <<<"$2"
	awk -v f=$((b[0] - a[0])) -v r=$((b[1] - a[1])) -v n="$3" 'BEGIN{ if (n > 0) printf "%.0f %.0f", f / n / 1000, r / n / 1000; else print "- -" }'
}
# The database's CPU time (ns), all its processes; 0 on SQLite.
db_cpu_ns() {
	local ns=0 p
	[ -n "$PG_PID" ] || { echo 0; return; }
	for p in $(tree "$PG_PID"); do ns=$((ns + $(proc_cpu_ns "$p"))); done
	echo $ns
}
# The load generator's target: one port, or the cluster's nodes.
lg_target() { if [ -n "$NODE_PORTS" ]; then echo "--ports $NODE_PORTS"; else echo "--port $PORT"; fi; }
cpu_ticks() { local t=0 p; for p in $(tree "$SERVER_PID"); do t=$((t + $(awk '{sub(/.*\) /,""); print $12+$13}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
# start_failed WHAT LOG...: a server of a case did not come up. Said on
# stderr (the cases run in $(...), whose stdout is parsed as figures) and
# remembered, so that the bench ends non-zero with an incomplete table.
start_failed() {
	local what=$1; shift
	echo "bench: $what did not start" >&2; cat "$@" >&2 2>/dev/null
	touch "$WORK/start-failed"; exit 1
}

# Every responder here runs with a 600 s heartbeat: the held cases' sessions
# are silent once connected, and logging 10,000 of them in on PostgreSQL on
# a busy machine took longer than the default 60 s, so the first ones were
# pruned before their streams opened (401: 0 connected).
# ours_cmd DIR PORT PROCS WORKERS [STORE_ARG]: the command line (for bash
# -c) of one node as make run starts it: lighttpd on PORT with PROCS
# responders, its runtime files and SQLite database under DIR.
ours_cmd() {
	local args="--heartbeat-timeout 600 --rate-ip 1000000 --rate-session 1000000 --rate-login 1000000"
	args="$args --mailbox-limit ${MAILBOX_LIMIT:-100000} ${5:-}"
	printf 'SIGNAL_ROOT=%q SIGNAL_BIN=%q SIGNAL_RUNDIR=%q SIGNAL_DB=%q SIGNAL_ARGS=%q ' \
		"$ROOT" "$ROOT/build/signal-fcgi" "$1/run" "$1/bench.db" "$args"
	printf 'SIGNAL_PROCS=%q SIGNAL_WORKERS=%q SIGNAL_BIND=127.0.0.1 PORT=%q lighttpd -D -f %q' \
		"$3" "$4" "$2" "$ROOT/lighttpd.conf"
}
# pg_database NAME: a fresh database on the bench's PostgreSQL (pg_bench_start),
# echoes the --store argument that names it.
pg_database() {
	"$ROOT/tools/pg-local.sh" createdb "$BENCH_PG_DIR/data" "$BENCH_PG_PORT" "$1" >/dev/null || { echo "createdb failed" >&2; exit 1; }
	echo "--store postgresql://postgres@127.0.0.1:$BENCH_PG_PORT/$1"
}
start_ours() { # start_ours [PROCS [LIGHTTPD_WORKERS]]; PG_BENCH=1: on the bench's PostgreSQL
	local procs=${1:-1} workers=${2:-$WORKERS} store=""
	PORT=$(free_port)
	rm -rf "$WORK/ours"; mkdir -p "$WORK/ours/run"
	if [ -n "${PG_BENCH:-}" ]; then store=$(pg_database "b$PORT") || exit 1; fi
	setsid taskset -c 0 bash -c "$(ours_cmd "$WORK/ours" "$PORT" "$procs" "$workers" "$store")" >"$WORK/ours/server.log" 2>&1 &
	SERVER_PID=$!
	started
	for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/health" && return 0; sleep 0.05; done
	start_failed "our service" "$WORK/ours/server.log"
}
# Ours behind the shipped nginx.conf, as make run SERVER=nginx runs it: one
# responder on TCP ports (FastCGI and WebSocket), nginx in front. Both run
# under one shell in their own session, so the tree accounts for both and
# stop_server ends the group. start_ours_nginx [NGINX_WORKERS] (default 1;
# the held cases run HELD_WORKERS). Each held socket is two descriptors of
# its worker (the client's and the responder's), and a worker may open no
# more than the hard limit (ulimit -Hn, 20,000 here: setrlimit above it
# fails and the worker keeps the soft one), so 10,000 sockets take two
# workers (they share the connections out about evenly: 5,045 and 4,954
# in one run).
start_ours_nginx() {
	local f w workers=${1:-1} nofile conns
	PORT=$(free_port); f=$(free_port); w=$(free_port)
	rm -rf "$WORK/ours"; mkdir -p "$WORK/ours/nginx"
	nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=50000
	conns=$((nofile - 100))   # room for the listeners, logs and files served
	sed -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$PORT;|" -e "s|server 127.0.0.1:9001|server 127.0.0.1:$f|" \
		-e "s|server 127.0.0.1:9002|server 127.0.0.1:$w|" -e "s|^pid .*|pid $WORK/ours/nginx.pid;|" \
		-e "s|var/nginx/|$WORK/ours/nginx/|" -e "s|^worker_processes .*|worker_processes     $workers;|" \
		-e "s|worker_connections 9000;|worker_connections $conns;|" \
		-e "s|^worker_rlimit_nofile .*|worker_rlimit_nofile $nofile;|" "$ROOT/nginx.conf" >"$WORK/ours/nginx.conf"
	setsid taskset -c 0 bash -c "$ROOT/build/signal-fcgi --listen 127.0.0.1:$f --ws-listen 127.0.0.1:$w \
		--db $WORK/ours/bench.db --heartbeat-timeout 600 --rate-ip 1000000 --rate-session 1000000 --rate-login 1000000 --mailbox-limit 100000 &
		nginx -p $ROOT -c $WORK/ours/nginx.conf; wait" >"$WORK/ours/server.log" 2>&1 &
	SERVER_PID=$!
	SERVER_GROUP=1
	started
	for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/health" && return 0; sleep 0.05; done
	start_failed "our service behind nginx" "$WORK/ours/server.log"
}
start_nchan() {
	PORT=$(free_port)
	rm -rf "$WORK/nchan"; mkdir -p "$WORK/nchan/tmp"
	sed -e "s|@PORT@|$PORT|g" -e "s|@DIR@|$WORK/nchan|g" "$B/nchan.conf" >"$WORK/nchan/nchan.conf"
	taskset -c 0 nginx -p "$WORK/nchan" -c "$WORK/nchan/nchan.conf" >"$WORK/nchan/out.log" 2>&1 &
	SERVER_PID=$!
	started
	for i in $(seq 1 100); do
		curl -s -o /dev/null -w '%{http_code}' -X POST -d x "http://127.0.0.1:$PORT/pub/probe" | grep -q '^20' && return 0
		sleep 0.05
	done
	start_failed nchan "$WORK/nchan/out.log" "$WORK/nchan/nginx-error.log"
}
# Servers are started in the cases' subshells too (latency_runs and the
# like run in $(...)), where the exit trap does not run: each start is
# written to $WORK/servers, and the trap stops whatever is still there.
started() { echo "$SERVER_PID ${SERVER_GROUP:-}" >>"$WORK/servers"; }
kill_server() { # kill_server PID [GROUP]
	if [ -n "${2:-}" ]; then kill -- "-$1" 2>/dev/null; else kill "$1" 2>/dev/null; fi
}
stop_server() {
	[ -n "$SERVER_PID" ] || return
	kill_server "$SERVER_PID" "${SERVER_GROUP:-}"
	wait "$SERVER_PID" 2>/dev/null
	sed -i "/^$SERVER_PID /d" "$WORK/servers" 2>/dev/null # its number may be reused
	SERVER_PID="" SERVER_GROUP=""
	sleep 0.3
}
cleanup() {
	local pid group
	stop_server
	while read -r pid group; do kill_server "$pid" "$group"; done <"$WORK/servers" 2>/dev/null
	pg_bench_stop
	rm -rf "$WORK"
}
trap cleanup EXIT

# PERF_OUT=DIR: every load generator run also profiles the server side
# (perf record -g of the server's process tree and PostgreSQL's, PERF_SECS
# seconds from 1 s in), to DIR/TIME-ARGS.data, with a summary by process and
# library and by process and function in DIR/TIME-ARGS.txt. perf costs the
# server CPU of its own: take the figures from a run without it.
PERF_OUT=${PERF_OUT:-}
PERF_SECS=${PERF_SECS:-3}
perf_during() { # perf_during NAME: in the background while the load runs
	local out=$PERF_OUT/$1 pids
	sleep 1
	pids=$({ tree "$SERVER_PID"; [ -n "$PG_PID" ] && tree "$PG_PID"; } | paste -sd, -)
	perf record -q -F 999 -g -p "$pids" -o "$out.data" -- sleep "$PERF_SECS" >"$out.log" 2>&1 || return
	{
		echo "# perf record -F 999 -g, ${PERF_SECS} s of: $1 (server pids $pids)"
		perf report -i "$out.data" --no-children --sort comm,dso --stdio 2>/dev/null | grep -v '^$' | head -40
		perf report -i "$out.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -v '^$' | head -60
	} >"$out.txt"
}
lg() {
	local p=""
	if [ -n "$PERF_OUT" ] && [ -n "$SERVER_PID" ]; then
		mkdir -p "$PERF_OUT"
		# named by the time (lg may run in a subshell: no counter survives)
		perf_during "$(date +%H%M%S.%N | cut -c1-9)-$(echo "$*" | tr -c 'A-Za-z0-9\n' _ | cut -c1-60)" &
		p=$!
	fi
	# what it says on stderr (why it died, if it did) is kept beside the
	# results: a row without figures has its reason there
	taskset -c 1 "$LG" "$@" 2> >(tee -a "$LGLOG" >&2)
	local rc=$?
	[ $rc -eq 0 ] || echo "bench: loadgen $* exited $rc" | tee -a "$LGLOG" >&2
	[ -n "$p" ] && wait "$p"
	return $rc
}
# val KEY: KEY's value in the load generator's output, "-" when it printed
# none (it died, or timed out before its summary line), so that the fields
# of a record built from several values never shift into the wrong column.
val() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" | tail -1 | grep . || echo -; }

printf 'case\tmetric\tours\tnchan\tratio_ours_over_nchan\ttarget\n' >"$TSV"
row() { # row CASE METRIC OURS NCHAN TARGET
	local ratio="-"
	if [[ "$3" =~ ^[0-9.]+$ && "$4" =~ ^[0-9.]+$ ]]; then
		ratio=$(awk -v a="$3" -v b="$4" 'BEGIN{ if (b+0 == 0) print "-"; else printf "%.2f", a/b }')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:--}" "$ratio" "$5" >>"$TSV"
	printf '%-13s %-44s %12s %12s %8s   %s\n' "$1" "$2" "$3" "${4:--}" "$ratio" "$5"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); server on CPU 0, load generator on CPU 1; ours: lighttpd with $WORKERS worker(s), $HELD_WORKERS in the held cases"
printf '%-13s %-44s %12s %12s %8s   %s\n' case metric ours nchan ratio target

# Latency runs vary by about 20% from one server start to the next on this
# machine, so each side runs LATENCY_RUNS times (fresh server each time) and
# the row shows the run with the median p50; the spread gets a row of its own.
LATENCY_RUNS=${LATENCY_RUNS:-3}
# latency_runs NCHAN_FLAG TRANSPORT -> "p50 p99 min_p50 max_p50" of the median run
latency_runs() {
	local k o all="" c0 c1
	for k in $(seq 1 "$LATENCY_RUNS"); do
		if [ -n "$1" ]; then start_nchan; else ${START_OURS:-start_ours}; fi
		c0=$(cpu_split_ns)
		o=$(lg $1 $(lg_target) latency "$2" 200 2000)
		c1=$(cpu_split_ns)
		stop_server
		# 2,200 round trips: 4,400 one-way messages
		all="$all$(echo "$o" | val oneway_p50_us) $(echo "$o" | val oneway_p99_us) $(per_msg_us "$c0" "$c1" 4400)
"
	done
	echo "$all" | grep . | sort -n | awk '{p50[NR]=$1; p99[NR]=$2; f[NR]=$3; r[NR]=$4} END {m=int((NR+1)/2); print p50[m], p99[m], p50[1], p50[NR], f[m], r[m]}'
}
run_latency() {
	local t=$1 o n="- - - -"
	o=$(latency_runs "" "$t")
	[ "$t" != ws ] && n=$(latency_runs --nchan "$t")
	local tgt50="p50 <= 150 us" tgt99="p99 <= 1000 us"
	[ "$t" = poll ] && tgt50="p50 <= 400 us" && tgt99="-"
	set -- $o; local o50=$1 o99=$2 olo=$3 ohi=$4 of=$5 or=$6
	set -- $n; local n50=$1 n99=$2 nlo=$3 nhi=$4 nf=${5:--}
	row "latency-$t" "one-way p50 (us), median of $LATENCY_RUNS runs" "$o50" "$n50" "$tgt50"
	row "latency-$t" "one-way p99 (us), that run" "$o99" "$n99" "$tgt99"
	local nspread="$nlo-$nhi"
	[ "$nlo" = - ] && nspread=-
	row "latency-$t" "p50 over the runs: lowest-highest" "$olo-$ohi" "$nspread" "-"
	row "latency-$t" "CPU per message (us): front server" "$of" "$nf" "-"
	row "latency-$t" "CPU per message (us): responder" "$or" "-" "-"
}

# "commands commits" so far, from our /api/metrics (the whole node; every
# node of the cluster, summed).
cmd_commits() {
	local p
	for p in $(echo "${NODE_PORTS:-$PORT}" | tr ',' ' '); do curl -s "http://127.0.0.1:$p/api/metrics"; done |
		awk '/^signal_commands_total/ {c += $NF}
		/^signal_store_commit_duration_seconds_count/ {k += $NF} END {printf "%d %d", c, k}'
}
# per_commit "C0 K0" "C1 K1" -> commands per store commit in between (group commit)
per_commit() {
	local a b
	read -r -a a <<<"$1"; read -r -a b <<<"$2"
	awk -v c=$((b[0] - a[0])) -v k=$((b[1] - a[1])) 'BEGIN{ if (k > 0) printf "%.2f", c / k; else print "-" }'
}
# throughput_one NCHAN_FLAG [ws] -> "msgs cpu% rss_kb front_us responder_us
#   cmds_per_commit database_us" (database: PostgreSQL's CPU per message, - on SQLite)
throughput_one() {
	local c0 t0 c1 t1 out rss s0 s1 m0="" m1="" cpc=- d0 d1 dbus=-
	coproc LGP { lg $1 $(lg_target) throughput 32 8 "$THROUGHPUT_SECS" ${2:-}; }
	local lgpid=$LGP_PID lgout
	# Our own copy of its output: bash drops LGP once the load generator
	# exits, which it may do before the second read on a busy machine.
	exec {lgout}<&"${LGP[0]}"
	read -r line <&"$lgout"   # "start"
	c0=$(cpu_ticks); t0=$(date +%s%N); s0=$(cpu_split_ns); d0=$(db_cpu_ns)
	[ -z "$1" ] && m0=$(cmd_commits)
	sleep $((THROUGHPUT_SECS / 2)); rss=$(rss_kb)
	read -r out <&"$lgout"
	exec {lgout}<&-
	c1=$(cpu_ticks); t1=$(date +%s%N); s1=$(cpu_split_ns); d1=$(db_cpu_ns)
	[ -z "$1" ] && m1=$(cmd_commits) && cpc=$(per_commit "$m0" "$m1")
	wait "$lgpid" 2>/dev/null
	local msgs; msgs=$(echo "$out" | val delivered)
	[ -n "$PG_PID" ] && dbus=$(awk -v d=$((d1 - d0)) -v n="$msgs" 'BEGIN{ if (n > 0) printf "%.0f", d / n / 1000; else print "-" }')
	echo "$(echo "$out" | val msgs_per_s) $(awk -v c=$((c1 - c0)) -v t=$((t1 - t0)) -v k="$TICK" 'BEGIN{printf "%.0f", c / k / (t / 1e9) * 100}') $rss $(per_msg_us "$s0" "$s1" "$msgs") $cpc $dbus"
}
# throughput_runs NCHAN_FLAG [ws] -> throughput_one's line of the median run
# (by msgs/s) of THROUGHPUT_RUNS on fresh servers, then "lowest-highest".
THROUGHPUT_RUNS=${THROUGHPUT_RUNS:-3}
throughput_runs() {
	local k all=""
	for k in $(seq 1 "$THROUGHPUT_RUNS"); do
		if [ -n "$1" ]; then start_nchan; else ${START_OURS:-start_ours}; fi
		all="$all$(throughput_one "$1" ${2:-})
"
		stop_server
	done
	echo "$all" | grep . | sort -n | awk '{l[NR]=$0; m[NR]=$1} END {print l[int((NR+1)/2)], m[1] "-" m[NR]}'
}
run_throughput() {
	local o n
	o=$(throughput_runs "")
	n=$(throughput_runs --nchan)
	set -- $o; local om=$1 oc=$2 orss=$3 of=$4 or=$5 ocpc=$6 osp=$8
	set -- $n; local nm=$1 nc=$2 nrss=$3 nf=$4 nsp=$8
	row throughput "delivered msgs/s (32x2, 8 in flight), median of $THROUGHPUT_RUNS" "$om" "$nm" ">= 20000 and >= 1/3 nchan"
	row throughput "msgs/s over the runs: lowest-highest" "$osp" "$nsp" "-"
	row throughput "server CPU %" "$oc" "$nc" "-"
	row throughput "CPU per message (us): front server" "$of" "$nf" "-"
	row throughput "CPU per message (us): responder" "$or" "-" "-"
	row throughput "commands per store commit (group commit)" "$ocpc" "-" "-"
	row throughput "server RSS (KB)" "$orss" "$nrss" "-"
}

# POST + SSE through nginx as shipped: nginx keeps its FastCGI connections
# to the responder (fastcgi_keep_conn), no connect, accept and close per
# command. Ours only (nchan is nginx itself: its rows above compare).
run_nginx() {
	local o
	o=$(START_OURS=start_ours_nginx latency_runs "" sse)
	set -- $o
	row latency-sse-nginx "one-way p50 (us) through nginx, median of $LATENCY_RUNS" "$1" "-" "p50 <= 150 us"
	row latency-sse-nginx "one-way p99 (us), that run" "$2" "-" "-"
	row latency-sse-nginx "p50 over the runs: lowest-highest" "$3-$4" "-" "-"
	row latency-sse-nginx "CPU per message (us): front server" "$5" "-" "-"
	row latency-sse-nginx "CPU per message (us): responder" "$6" "-" "-"
	throughput_rows throughput-nginx ">= 20000" $(START_OURS=start_ours_nginx throughput_runs "")
}
# throughput_rows CASE TARGET THROUGHPUT_RUNS_LINE...: the rows of one of
# ours (no nchan column).
throughput_rows() {
	local c=$1 t=$2
	shift 2
	row "$c" "delivered msgs/s (32x2, 8 in flight), median of $THROUGHPUT_RUNS" "$1" "-" "$t"
	row "$c" "msgs/s over the runs: lowest-highest" "$8" "-" "-"
	row "$c" "server CPU %" "$2" "-" "-"
	row "$c" "CPU per message (us): front server" "$4" "-" "-"
	row "$c" "CPU per message (us): responder" "$5" "-" "-"
	row "$c" "commands per store commit (group commit)" "$6" "-" "-"
	row "$c" "server RSS (KB)" "$3" "-" "-"
}

# held_one NCHAN_FLAG N [ws] -> "connected rss_per_stream_kb rss_added_per_stream_kb delivered deliver_s
#   front_added_kb responder_added_kb" (added: over the idle server's, per stream)
held_one() {
	local base rss=0 out="connected=0" line b0 split="0 0"
	base=$(rss_kb); b0=$(rss_split_kb)
	coproc LGP { lg $1 --port "$PORT" held "$2" ${3:-}; }
	local lgpid=$LGP_PID
	while read -r line <&"${LGP[0]}"; do
		case "$line" in
		connected=*) out=$line ;;
		measure-memory) sleep 1; rss=$(rss_kb); split=$(rss_split_kb); echo go >&"${LGP[1]}" ;;
		case=held*) out="$out $line"; break ;;
		esac
	done
	wait "$lgpid" 2>/dev/null
	echo "$(echo "$out" | val connected) $(awk -v r="$rss" -v n="$2" 'BEGIN{printf "%.1f", r / n}') $(awk -v r="$rss" -v b="$base" -v n="$2" 'BEGIN{printf "%.1f", (r - b) / n}') $(echo "$out" | val delivered) $(echo "$out" | val deliver_s) $(awk -v s="$split" -v b="$b0" -v n="$2" 'BEGIN{split(s, x, " "); split(b, y, " "); printf "%.1f %.1f", (x[1] - y[1]) / n, (x[2] - y[2]) / n}')"
}
run_held() {
	local n o m
	for n in $HELD; do
		start_ours 1 "$HELD_WORKERS"; o=$(held_one "" "$n"); stop_server
		start_nchan; m=$(held_one --nchan "$n"); stop_server
		set -- $o; local oc=$1 orps=$2 odelta=$3 od=$4 ot=$5
		set -- $m; local nc=$1 nrps=$2 ndelta=$3 nd=$4 nt=$5
		row "held-$n" "streams connected" "$oc" "$nc" "$n"
		row "held-$n" "server RSS per stream (KB, total/N)" "$orps" "$nrps" "<= 8 KB"
		row "held-$n" "RSS added per stream (KB)" "$odelta" "$ndelta" "-"
		row "held-$n" "one message each: delivered" "$od" "$nd" "all $n"
		row "held-$n" "... in seconds" "$ot" "$nt" "-"
	done
}

# WebSocket: each user sends and receives on one socket (ours only: the
# nchan column stays empty).
run_ws() {
	local o n
	run_latency ws
	# The same through nginx (TCP to the responder's --ws-listen).
	o=$(START_OURS=start_ours_nginx latency_runs "" ws)
	set -- $o
	row latency-ws-nginx "one-way p50 (us) through nginx, median of $LATENCY_RUNS" "$1" "-" "<= 1.2 x latency-ws"
	row latency-ws-nginx "one-way p99 (us), that run" "$2" "-" "-"
	run_ws_throughput
	run_ws_held
}
run_ws_throughput() {
	throughput_rows throughput-ws ">= 20000" $(throughput_runs "" ws)
}

# Held WebSockets through lighttpd and through nginx: memory per socket
# (what each process added over its idle size) and one message each.
# WS_HELD_FRONTS="lighttpd" (or "nginx") runs one of the two.
run_ws_held() {
	local o n fronts=" ${WS_HELD_FRONTS:-lighttpd nginx} "
	for n in $HELD; do
		[[ $fronts == *" lighttpd "* ]] && {
		start_ours 1 "$HELD_WORKERS"; o=$(held_one "" "$n" ws); stop_server
		set -- $o
		row "held-ws-$n" "sockets connected" "$1" "-" "$n"
		row "held-ws-$n" "server RSS per socket (KB, total/N)" "$2" "-" "-"
		row "held-ws-$n" "RSS added per socket: lighttpd + responder (KB)" "$3" "-" "<= 8 KB"
		row "held-ws-$n" "... lighttpd mod_proxy (KB)" "${6:--}" "-" "-"
		row "held-ws-$n" "... responder (KB)" "${7:--}" "-" "-"
		row "held-ws-$n" "one message each: delivered" "$4" "-" "all $n"
		row "held-ws-$n" "... in seconds" "$5" "-" "-"
		}
		[[ $fronts == *" nginx "* ]] && {
		start_ours_nginx "$HELD_WORKERS"; o=$(held_one "" "$n" ws); stop_server
		set -- $o
		row "held-ws-nginx-$n" "sockets connected" "$1" "-" "$n"
		row "held-ws-nginx-$n" "RSS added per socket: nginx + responder (KB)" "$3" "-" "<= 8 KB"
		row "held-ws-nginx-$n" "... nginx proxy (KB)" "${6:--}" "-" "-"
		row "held-ws-nginx-$n" "... responder (KB)" "${7:--}" "-" "-"
		row "held-ws-nginx-$n" "one message each: delivered" "$4" "-" "all $n"
		}
	done
}

# A burst of BURST (2,000) signals pipelined on one WebSocket to a peer
# that reads its own at once, with the default mailbox cap (1,000
# undelivered): the cap is for readers that do not read, so none may be
# refused, and all must come in order.
run_burst() {
	local o n=${BURST:-2000}
	MAILBOX_LIMIT=1000 start_ours; o=$(lg --port "$PORT" burst "$n"); stop_server
	row burst "signals sent back to back on one WebSocket" "$(echo "$o" | val sent)" "-" "-"
	row burst "... refused (mailbox-full), reader reading" "$(echo "$o" | val refused)" "-" "<= 0"
	row burst "... delivered" "$(echo "$o" | val delivered)" "-" "all $n"
	row burst "... out of order" "$(echo "$o" | val out_of_order)" "-" "<= 0"
	row burst "... in seconds" "$(echo "$o" | val seconds)" "-" "-"
	echo "$o" | grep '^first refused' | sed 's/^/# /'
}

run_xproc() {
	local o
	start_ours 2; o=$(lg --port "$PORT" oneway 200 2000); stop_server
	row xproc "POST->event p50 (us), 2 processes" "$(echo "$o" | val p50_us)" "-" "-"
	row xproc "POST->event p99 (us), 2 processes" "$(echo "$o" | val p99_us)" "-" "p99 <= 1000 us"
}

# idle_one NCHAN_FLAG -> cpu%
idle_one() {
	local c0 t0 c1 t1 line
	coproc LGP { lg $1 --port "$PORT" idle 1000 "$IDLE_SECS"; }
	local lgpid=$LGP_PID
	while read -r line <&"${LGP[0]}"; do
		[ "$line" = idle-start ] && { c0=$(cpu_ticks); t0=$(date +%s%N); }
		case "$line" in case=idle*) c1=$(cpu_ticks); t1=$(date +%s%N); break ;; esac
	done
	wait "$lgpid" 2>/dev/null
	awk -v c=$((c1 - c0)) -v t=$((t1 - t0)) -v k="$TICK" 'BEGIN{printf "%.2f", c / k / (t / 1e9) * 100}'
}
run_idle() {
	local o n
	start_ours; o=$(idle_one ""); stop_server
	start_nchan; n=$(idle_one --nchan); stop_server
	row idle "server CPU %, 1000 streams, ${IDLE_SECS}s" "$o" "$n" "<= 1 %"
}

# pg_bench_start: a throwaway PostgreSQL 15 for the pg and cluster cases
# (tools/pg-local.sh, run as the postgres user under /tmp, fsync and
# synchronous_commit on: every acknowledged command durable, as SQLite's WAL
# commit is), in BENCH_PG_DIR on BENCH_PG_PORT, its postmaster BENCH_PG_PID.
# pg_bench_stop ends it; the exit trap calls it too, so an interrupted
# bench leaves no server behind.
BENCH_PG_DIR="" BENCH_PG_PORT="" BENCH_PG_PID=""
pg_bench_start() {
	BENCH_PG_DIR=$(mktemp -d /tmp/signal-bench-pg.XXXXXX); chmod 755 "$BENCH_PG_DIR"; chown postgres "$BENCH_PG_DIR"
	BENCH_PG_PORT=$(free_port)
	BENCH_PG_PID=$("$ROOT/tools/pg-local.sh" start "$BENCH_PG_DIR/data" "$BENCH_PG_PORT" fsync=on synchronous_commit=on) ||
		{ echo "no PostgreSQL"; rm -rf "$BENCH_PG_DIR"; BENCH_PG_DIR=""; return 1; }
}
pg_bench_stop() {
	[ -n "$BENCH_PG_DIR" ] || return 0
	"$ROOT/tools/pg-local.sh" stop "$BENCH_PG_DIR/data" >/dev/null 2>&1
	rm -rf "$BENCH_PG_DIR"
	BENCH_PG_DIR="" BENCH_PG_PORT="" BENCH_PG_PID=""
}

# The two stores side by side on one node (lighttpd, one responder): SSE
# one-way latency, POST + SSE throughput with commands per commit, and held
# streams, on SQLite and on the bench's PostgreSQL (pg_bench_start). The nchan column
# holds PostgreSQL here; the ratio is SQLite over PostgreSQL.
run_pg() {
	local o p n
	pg_bench_start || return
	o=$(latency_runs "" sse)
	p=$(PG_BENCH=1 latency_runs "" sse)
	set -- $o; local o50=$1 o99=$2
	set -- $p
	row pg-latency-sse "one-way p50 (us): SQLite | PostgreSQL" "$o50" "$1" "-"
	row pg-latency-sse "one-way p99 (us): SQLite | PostgreSQL" "$o99" "$2" "-"
	o=$(throughput_runs "")
	p=$(PG_PID=$BENCH_PG_PID PG_BENCH=1 throughput_runs "")
	set -- $o; local om=$1 of=$4 or=$5 oc=$6
	set -- $p
	row pg-throughput "delivered msgs/s: SQLite | PostgreSQL" "$om" "$1" "-"
	row pg-throughput "CPU per message, front (us)" "$of" "$4" "-"
	row pg-throughput "CPU per message, responder (us)" "$or" "$5" "-"
	row pg-throughput "commands per store commit" "$oc" "$6" "-"
	row pg-throughput "CPU per message, PostgreSQL (us)" "-" "$7" "-"
	for n in $HELD; do
		start_ours 1 "$HELD_WORKERS"; o=$(held_one "" "$n"); stop_server
		PG_BENCH=1 start_ours 1 "$HELD_WORKERS"; p=$(held_one "" "$n"); stop_server
		set -- $o; local oc=$1 od=$3 odl=$4
		set -- $p
		row "pg-held-$n" "streams connected: SQLite | PostgreSQL" "$oc" "$1" "$n"
		row "pg-held-$n" "RSS added per stream (KB)" "$od" "$3" "-"
		row "pg-held-$n" "one message each: delivered" "$odl" "$4" "all $n"
	done
	pg_bench_stop
}

# The cluster: NODES nodes on one database, as `make cluster` runs them (a
# lighttpd with one responder each, its own runtime directory and metrics),
# all pinned to CPU 0 under one shell, so the tree and stop_server cover
# them; the load (CPU 1) logs user i in at node i and streams and posts at
# node i+1 (loadgen --ports), so every signal is posted at one node and
# delivered by another. start_cluster NODES, on the bench's PostgreSQL.
start_cluster() {
	local n=$1 i np ports="" cmd="" store
	PORT=$(free_port)
	store=$(pg_database "c$PORT") || exit 1
	# CLUSTER_DB_SET="synchronous_commit = off": that database's setting (a diagnosis, not a way to run)
	[ -n "${CLUSTER_DB_SET:-}" ] && psql -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres -X -q -d postgres \
		-c "ALTER DATABASE c$PORT SET $CLUSTER_DB_SET" >/dev/null
	rm -rf "$WORK/ours"
	for i in $(seq 1 "$n"); do
		np=$(free_port)
		[ "$i" = 1 ] && np=$PORT
		mkdir -p "$WORK/ours/$np/run"
		ports="$ports,$np"
		cmd="$cmd $(ours_cmd "$WORK/ours/$np" "$np" 1 1 "$store") &"
	done
	NODE_PORTS=${ports#,}
	setsid taskset -c 0 bash -c "$cmd wait" >"$WORK/ours-server.log" 2>&1 &
	SERVER_PID=$!
	SERVER_GROUP=1
	started
	for np in ${NODE_PORTS//,/ }; do
		for i in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$np/api/health" && continue 2; sleep 0.05; done
		start_failed "cluster node $np" "$WORK/ours-server.log"
	done
}
run_cluster() {
	local dir port o n tps c
	pg_bench_start || return
	dir=$BENCH_PG_DIR port=$BENCH_PG_PORT
	# What this database commits per second, in a transaction shaped like
	# one relayed signal (a mailbox lock, an event row, a NOTIFY): the
	# ceiling of every node together when each command is its own commit.
	"$ROOT/tools/pg-local.sh" createdb "$dir/data" "$port" pgb >/dev/null
	printf '%s\n' '\set sid random(1, 1000)' 'BEGIN;' 'SELECT pg_advisory_xact_lock(1, :sid);' \
		"INSERT INTO bench_events(session_id, body) VALUES (:sid, '{\"type\":\"signal\",\"to\":\"bob\"}');" \
		"SELECT pg_notify('signal_bench', :sid::text);" 'COMMIT;' >"$dir/signal.sql"
	chmod 644 "$dir/signal.sql"
	psql -h 127.0.0.1 -p "$port" -U postgres -X -q -d pgb -c "CREATE TABLE bench_events (id bigserial PRIMARY KEY, session_id bigint, body text)" >/dev/null
	for c in 1 8; do
		tps=$(taskset -c 0 pgbench -h 127.0.0.1 -p "$port" -U postgres -n -c $c -j 2 -T "$THROUGHPUT_SECS" -f "$dir/signal.sql" pgb 2>/dev/null |
			sed -n 's/^tps = \([0-9]*\).*/\1/p')
		row cluster-db "signal-shaped commits/s, $c client(s) (pgbench)" "${tps:--}" "-" "-"
	done
	for n in ${CLUSTER_SIZES:-1 $CLUSTER_NODES}; do
		o=$(PG_PID=$BENCH_PG_PID START_OURS="start_cluster $n" throughput_runs "")
		set -- $o
		row "cluster-$n" "delivered msgs/s, $n node(s), median of $THROUGHPUT_RUNS" "$1" "-" "-"
		row "cluster-$n" "msgs/s over the runs: lowest-highest" "$8" "-" "-"
		row "cluster-$n" "CPU per message (us): front servers" "$4" "-" "-"
		row "cluster-$n" "CPU per message (us): responders" "$5" "-" "-"
		row "cluster-$n" "CPU per message (us): PostgreSQL" "$7" "-" "-"
		row "cluster-$n" "commands per store commit (group commit)" "$6" "-" "-"
		NODE_PORTS=""
	done
	start_cluster "$CLUSTER_NODES"
	o=$(lg $(lg_target) oneway 200 2000)
	stop_server; NODE_PORTS=""
	row cluster-xnode "POST->event p50 (us), posted at one node, streamed from another" "$(echo "$o" | val p50_us)" "-" "-"
	row cluster-xnode "POST->event p99 (us), that run" "$(echo "$o" | val p99_us)" "-" "p99 <= 10000 us"
	# The same without waiting for the disk: what the commit's WAL flush
	# adds to the cross-node time, and what the wake-up path costs alone.
	CLUSTER_DB_SET="synchronous_commit = off" start_cluster "$CLUSTER_NODES"
	o=$(lg $(lg_target) oneway 200 2000)
	stop_server; NODE_PORTS=""
	row cluster-xnode "... p50 (us) with synchronous_commit off (no WAL flush wait)" "$(echo "$o" | val p50_us)" "-" "-"
	row cluster-xnode "... p99 (us) with synchronous_commit off" "$(echo "$o" | val p99_us)" "-" "-"
	pg_bench_stop
}

for c in $CASES; do
	case $c in
	latency) run_latency sse; run_latency poll ;;
	throughput) run_throughput ;;
	nginx) run_nginx ;;
	held) run_held ;;
	ws) run_ws ;;
	ws-held) run_ws_held ;;
	ws-throughput) run_ws_throughput ;;
	pg) run_pg ;;
	cluster) run_cluster ;;
	xproc) run_xproc ;;
	burst) run_burst ;;
	idle) run_idle ;;
	*) echo "unknown case $c" ;;
	esac
done
[ -s "$LGLOG" ] || rm -f "$LGLOG"
echo "results: $TSV"
[ ! -e "$LGLOG" ] || echo "the load generator's messages: $LGLOG"
# Every target, met or not (and those that compare rows: bench/report.py).
python3 "$B/report.py" verdicts "$TSV"
[ ! -e "$WORK/start-failed" ] || { echo "bench: a server did not start; the rows of its case have no figures" >&2; exit 1; }
