#!/usr/bin/env bash
# Issue 13's "done when", run as a new user would: `make cluster` (NODES=3:
# a local PostgreSQL, three nodes on PORT+1..PORT+3, the nginx balancer on
# PORT, all on 127.0.0.1), with PostgreSQL's data in a throwaway directory
# under /tmp (PG_DIR) and the runtime files under this test's out folder
# (RUNROOT); then real WebRTC calls in headless Chromium with fake camera and
# microphone (tests/browser/cluster.mjs): the call page on node 1 calling
# the page on node 2, two pages through the balancer, and a long-poll page
# on node 1 calling an SSE page on node 3. Each call: chat channel open both
# ways, RTCPeerConnection connected, remote video playing and frames decoded
# on both sides. Then SIGTERM to run-cluster.sh (what Ctrl-C does): make
# exits, the nodes, the balancer and PostgreSQL are gone, checked by PID and
# by session (pgrep -s). tests/browser/setup.sh installs chromium and
# playwright-core when missing. About 20-45 s.
. "$(dirname "$0")/lib.sh"
t_start=$(date +%s)
if ! "$ROOT/tests/browser/setup.sh" >"$OUT/setup.log" 2>&1; then
	ok 1 "browser test set-up (chromium, playwright-core)"
	sed 's/^/# /' "$OUT/setup.log" | tail -20
	done_testing
	exit 1
fi

PORT=$(port_run 4) # the balancer; the nodes on PORT+1..PORT+3
PGPORT=$(free_port)
PGDIR=/tmp/signal-pg-cluster-browser-$$-$PGPORT
RUNROOT=$OUT/run
LOG=$OUT/cluster.log
MAKE_PID="" RPG_PID="" RC_PID="" PGPID="" LB_PID="" NODE_PIDS="" CALLS_PID="" TAIL_PID=""

# The PIDs make cluster's scripts print: PostgreSQL's postmaster, each
# node's lighttpd, the balancer's nginx (and run-cluster.sh's, a child of
# run-postgres.sh, a child of make).
node_pid() { sed -n "s|^node $1: http://127\.0\.0\.1:$((PORT + $1))/ (lighttpd pid \([0-9]*\),.*|\1|p" "$LOG"; }
read_pids() {
	[ -n "$RPG_PID" ] || RPG_PID=$(pgrep -P "$MAKE_PID" -f 'tools/run-postgres\.sh')
	[ -n "$RPG_PID" ] && [ -z "$RC_PID" ] && RC_PID=$(pgrep -P "$RPG_PID" -f 'tools/run-cluster\.sh')
	PGPID=$(sed -n "s|^PostgreSQL 15 on 127\.0\.0\.1:$PGPORT (pid \([0-9]*\), data $PGDIR); .*|\1|p" "$LOG")
	NODE_PIDS="$(node_pid 1) $(node_pid 2) $(node_pid 3)"
	LB_PID=$(sed -n "s|^balancer: http://127\.0\.0\.1:$PORT/ (nginx pid \([0-9]*\)).*|\1|p" "$LOG")
}
# What is still running of ours: each PID we know, and every process in the
# sessions of the nodes' lighttpds (their responders), of nginx (its worker)
# and of PostgreSQL's postmaster (its backends), each started by setsid.
ours_left() {
	local p left=""
	for p in $MAKE_PID $RPG_PID $RC_PID $NODE_PIDS $LB_PID $PGPID; do
		kill -0 "$p" 2>/dev/null && left="$left $p"
	done
	for p in $NODE_PIDS $LB_PID $PGPID; do
		left="$left $(pgrep -s "$p" | tr '\n' ' ')"
	done
	for p in $MAKE_PID $RPG_PID $RC_PID; do
		left="$left $(pgrep -P "$p" | tr '\n' ' ')"
	done
	echo $left
}
# stop_cluster: SIGTERM to run-cluster.sh, as Ctrl-C: it stops its nodes and
# its balancer by PID, run-postgres.sh then stops PostgreSQL, make exits.
# Sets MAKE_RC (empty: make still runs after 90 s) and STOP_SECS.
MAKE_RC=""
stop_cluster() {
	[ -n "$MAKE_PID" ] || return 0
	local t0 k
	t0=$(date +%s%N)
	[ -n "$RC_PID" ] && kill -TERM "$RC_PID" 2>/dev/null
	[ -n "$RC_PID" ] || kill -TERM "$RPG_PID" "$MAKE_PID" 2>/dev/null # not that far yet
	for k in $(seq 1 1800); do kill -0 "$MAKE_PID" 2>/dev/null || break; sleep 0.05; done
	if ! kill -0 "$MAKE_PID" 2>/dev/null; then
		wait "$MAKE_PID"
		MAKE_RC=$?
	fi
	STOP_SECS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
# On any exit: the cluster stopped as above, then by PID whatever is left.
cluster_cleanup() {
	if [ -n "$CALLS_PID" ]; then # the browser script (timeout passes the TERM on; playwright closes chromium)
		kill -TERM "$CALLS_PID" "$TAIL_PID" 2>/dev/null
		wait "$CALLS_PID" "$TAIL_PID" 2>/dev/null
	fi
	[ -n "$MAKE_PID" ] && read_pids
	stop_cluster
	MAKE_PID=""
	local left
	left=$(ours_left)
	if [ -n "$left" ]; then
		echo "# still running at exit, stopped by PID: $left"
		kill -TERM $left 2>/dev/null
	fi
	if [ -f "$PGDIR/postmaster.pid" ]; then # one whose PID was never printed
		echo "# PostgreSQL still running at exit on $PGDIR: stopped"
		"$ROOT/tools/pg-local.sh" stop "$PGDIR"
	fi
	cleanup
	rm -rf "$PGDIR" "$PGDIR.initdb.log"
}
trap cluster_cleanup EXIT

# A new user's `make cluster` (not make test's jobserver and variables).
(
	cd "$ROOT" && unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES &&
		exec make --no-print-directory cluster NODES=3 PORT="$PORT" BIND=127.0.0.1 PGPORT="$PGPORT" \
			PG_DIR="$PGDIR" RUNROOT="$RUNROOT"
) >"$LOG" 2>&1 &
MAKE_PID=$!
diag "make cluster (pid $MAKE_PID): balancer on $PORT, nodes on $((PORT + 1))..$((PORT + 3)), PostgreSQL on $PGPORT, data in $PGDIR"

# Up: every node and the balancer answer /api/health (initdb included:
# bounded at 180 s on a busy machine), and run-cluster.sh is known by PID.
node_url() { echo "http://127.0.0.1:$((PORT + $1))"; }
health() { curl -sf --max-time 5 "$1/api/health"; }
up=1
for k in $(seq 1 1800); do
	kill -0 "$MAKE_PID" 2>/dev/null || break
	read_pids
	if [ -n "$RC_PID" ] && health "$(node_url 0)" >/dev/null && health "$(node_url 1)" >/dev/null &&
		health "$(node_url 2)" >/dev/null && health "$(node_url 3)" >/dev/null; then
		up=0
		break
	fi
	sleep 0.1
done
diag "up $(($(date +%s) - t_start)) s after the start (make, initdb, three nodes, the balancer)"
read_pids
if [ "$up" != 0 ]; then
	ok 1 "make cluster comes up: three nodes and the balancer answer /api/health"
	sed 's/^/#   /' "$LOG" | tail -30
	done_testing
	exit 1
fi

[ -n "$PGPID" ] && [ "$(head -1 "$PGDIR/postmaster.pid" 2>/dev/null)" = "$PGPID" ] && kill -0 "$PGPID"
ok $? "make cluster started PostgreSQL 15 on 127.0.0.1:$PGPORT (PGPORT), pid ${PGPID:-?}, its data in $PGDIR (PG_DIR), not var/pg"
resp=""
for i in 1 2 3; do
	np=$((PORT + i))
	lpid=$(node_pid "$i")
	h=$(health "$(node_url "$i")")
	rpid=$(printf '%s' "$h" | jq -r .pid)
	resp="$resp $rpid"
	kids=$([ -n "$lpid" ] && pgrep -s "$lpid" | grep -vx "$lpid" | tr '\n' ' ')
	[ -n "$lpid" ] && [ -S "$RUNROOT/$np/signal-ws.sock" ] && case " $kids " in *" $rpid "*) true ;; *) false ;; esac
	ok $? "node $i answers on 127.0.0.1:$np (PORT+$i): lighttpd pid $lpid, responder pid $rpid (in its session), its socket in RUNROOT/$np/"
done
is "$(echo $resp | tr ' ' '\n' | sort -u | wc -l)" 3 "... three nodes, three different responders"
[ -n "$LB_PID" ] && [ "$(cat "$RUNROOT/$PORT/nginx.pid" 2>/dev/null)" = "$LB_PID" ] && health "http://127.0.0.1:$PORT" >/dev/null
ok $? "the balancer answers on 127.0.0.1:$PORT (nginx pid $LB_PID, its configuration in RUNROOT/$PORT/balancer.conf)"
# Every port of the cluster, PostgreSQL's included, listens on 127.0.0.1 only.
listening=$(ss -Hltn | awk '{print $4}' | grep -E ":($PORT|$((PORT + 1))|$((PORT + 2))|$((PORT + 3))|$PGPORT)\$" | sort -u | tr '\n' ' ')
is "$(echo $listening | tr ' ' '\n' | grep -vc '^127\.0\.0\.1:')/$(echo $listening | wc -w)" 0/5 \
	"the balancer, the three nodes and PostgreSQL listen on 127.0.0.1 only ($listening)"
[ -e "$ROOT/var/run/$PORT" ] || [ -e "$ROOT/var/run/$((PORT + 1))" ]
ok $((!$?)) "... and nothing of it went to the checkout's var/run/ (RUNROOT)"

# The calls, in the browser.
t_calls=$(date +%s)
# In the background, its PID known to the clean-up; its lines shown as they come.
: >"$OUT/calls.tap"
TAP_FROM=$((_T_N + 1)) timeout 300 node "$ROOT/tests/browser/cluster.mjs" "$OUT" "http://127.0.0.1:$PORT" \
	"$(node_url 1)" "$(node_url 2)" "$(node_url 3)" >>"$OUT/calls.tap" 2>"$OUT/calls.err" &
CALLS_PID=$!
tail -n +1 -f --pid="$CALLS_PID" "$OUT/calls.tap" &
TAIL_PID=$!
wait "$CALLS_PID"
calls_rc=$?
wait "$TAIL_PID"
CALLS_PID="" TAIL_PID=""
_T_N=$((_T_N + $(grep -cE '^(not )?ok [0-9]+ ' "$OUT/calls.tap")))
_T_FAIL=$((_T_FAIL + $(grep -cE '^not ok [0-9]+ ' "$OUT/calls.tap")))
if [ "$calls_rc" != 0 ] && ! grep -q '^not ok ' "$OUT/calls.tap"; then
	ok 1 "tests/browser/cluster.mjs ran to its end (exit $calls_rc)"
	sed 's/^/#   /' "$OUT/calls.err" | tail -20
fi
diag "the three calls took $(($(date +%s) - t_calls)) s"
# Each page logged in at the node it was opened on (the responders' log
# lines carry their PIDs): the calls' signaling crossed nodes.
read -ra RESP <<<"$resp"
login_at() { # login_at NAME -> the node (1..3) whose responder logged NAME in (its last try)
	local pid i
	pid=$(grep -E "login: user $1[12] " "$LOG" | tail -1 | sed -n 's/.*\[\([0-9]*\)\] login:.*/\1/p')
	for i in 0 1 2; do [ "$pid" = "${RESP[$i]}" ] && echo $((i + 1)); done
}
where="$(login_at n1caller)$(login_at n2callee)$(login_at pollcaller)$(login_at ssecallee)"
is "$where" 1213 "the pages logged in at the nodes they were opened on: n1caller at node 1, n2callee at 2, pollcaller at 1, ssecallee at 3 (through the balancer: lbcallee at node $(login_at lbcallee), lbcaller at node $(login_at lbcaller))"

# The stop, as Ctrl-C: SIGTERM to run-cluster.sh.
stop_cluster
is "${MAKE_RC:-still running}" 0 "SIGTERM to run-cluster.sh (pid $RC_PID; what Ctrl-C does): make cluster exits 0, in $STOP_SECS ms"
left=""
for k in $(seq 1 200); do # the last processes reaped a moment after their parent's exit
	left=$(ours_left)
	[ -z "$left" ] && break
	sleep 0.05
done
is "$left" "" "nothing left running: make, run-postgres.sh, run-cluster.sh, the 3 lighttpds and their responders, nginx and its worker, PostgreSQL and its processes (by PID and pgrep -s/-P)"
pg_isready_out=$(pg_isready -h 127.0.0.1 -p "$PGPORT" 2>&1)
[ ! -f "$PGDIR/postmaster.pid" ] && ! kill -0 "$PGPID" 2>/dev/null && case $pg_isready_out in *"no response"*) true ;; *) false ;; esac
ok $? "PostgreSQL stopped by run-postgres.sh: no postmaster.pid, pid $PGPID gone, 127.0.0.1:$PGPORT silent ($pg_isready_out)"
MAKE_PID=""
diag "wall time $(($(date +%s) - t_start)) s"
done_testing
