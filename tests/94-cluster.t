#!/usr/bin/env bash
# Three nodes on one PostgreSQL, each a lighttpd with its responder (as
# `make run` starts one, its runtime files under a directory of its own),
# started, killed and restarted by this test, by PID. Every event crosses
# nodes: users log in at node i, hold their stream at node i+1 and send
# through node i+2 (tests/clusterload.py), so the wake-up is PostgreSQL's
# LISTEN/NOTIFY, never a datagram. One node is killed with kill -9 (its
# lighttpd and its responder) mid-load and restarted; its clients move to
# the next node and resume: every message answered 200 arrives, in order,
# without duplicates (cids). Then the races across nodes (one login of a
# userId, a room's limit), a node killed for good (its users pruned once,
# one user-left each), the listener's reconnect after its connection is
# cut, and `make cluster`'s script with its balancer.
. "$(dirname "$0")/lib.sh"

if ! pg_start; then
	ok 1 "a throwaway PostgreSQL 15 starts (tools/pg-local.sh)"
	done_testing
	exit 1
fi
STORE=postgres
pg_db "$OUT/cluster.db" || exit 1
URL=$SERVER_PG_URL
HB=8 # heartbeat: short, so the node killed for good has its users pruned soon
# --recheck 120: no periodic re-check within the test, so what arrives came by
# the wake-up across nodes (or the re-read when a listener comes back).
NODE_ARGS="--store $URL --heartbeat-timeout $HB --prune-interval 1 --recheck 120 --rate-ip 100000 --rate-session 100000 --rate-login 100000"
declare -a NPORT NPID
p0=$(port_run 3)
for i in 0 1 2; do NPORT[$i]=$((p0 + i)); done

node_run() { echo "$OUT/run/${NPORT[$1]}"; }
node_base() { echo "http://127.0.0.1:${NPORT[$1]}"; }
node_start() { # node_start I: lighttpd spawning one responder, its files in run/PORT/
	local run
	run=$(node_run "$1")
	mkdir -p "$run"
	SIGNAL_ROOT=$ROOT SIGNAL_BIN=$ROOT/build/signal-fcgi SIGNAL_RUNDIR=$run SIGNAL_DB=$run/signal.db \
		SIGNAL_ARGS="$NODE_ARGS" SIGNAL_PROCS=1 SIGNAL_BIND=127.0.0.1 PORT=${NPORT[$1]} \
		lighttpd -D -f "$ROOT/lighttpd.conf" >>"$OUT/node$1.log" 2>&1 &
	NPID[$1]=$!
}
node_up() { # node_up I: its health check answers 200 within 10 s
	local k
	for k in $(seq 1 200); do
		curl -sf -o /dev/null "$(node_base "$1")/api/health" && return 0
		sleep 0.05
	done
	return 1
}
node_responders() { pgrep -f -- "--ws-listen $(node_run "$1")/"; }
node_kill9() { # node_kill9 I: the front server and its responders, at once
	local pids
	pids="${NPID[$1]} $(node_responders "$1" | tr '\n' ' ')"
	kill -9 $pids 2>/dev/null
	wait "${NPID[$1]}" 2>/dev/null
	NPID[$1]=""
	local k
	for k in $(seq 1 100); do node_responders "$1" >/dev/null || return 0; sleep 0.05; done
}
node_stop() {
	[ -n "${NPID[$1]:-}" ] || return 0
	kill "${NPID[$1]}" 2>/dev/null
	wait "${NPID[$1]}" 2>/dev/null
	NPID[$1]=""
	local k
	for k in $(seq 1 400); do node_responders "$1" >/dev/null || return 0; sleep 0.05; done
}
CLUSTER_PID=""
cluster_cleanup() {
	local i
	[ -n "$CLUSTER_PID" ] && kill -TERM "$CLUSTER_PID" 2>/dev/null && wait "$CLUSTER_PID" 2>/dev/null
	for i in 0 1 2; do node_stop "$i"; done
	cleanup
}
trap cluster_cleanup EXIT

t_start=$(date +%s)
for i in 0 1 2; do node_start "$i"; done
up=0
for i in 0 1 2; do node_up "$i" && up=$((up + 1)); done
is "$up" 3 "three nodes on one PostgreSQL answer their health checks"
[ "$up" = 3 ] || { tail -20 "$OUT"/node*.log | sed 's/^/#   /'; done_testing; exit 1; }
# lighttpd names the FastCGI socket of its first responder signal-fcgi.sock-0.
own=0
for i in 0 1 2; do
	[ -S "$(node_run "$i")/signal-fcgi.sock-0" ] && [ -S "$(node_run "$i")/signal-ws.sock" ] && own=$((own + 1))
done
is "$own $(for i in 0 1 2; do node_run "$i"; done | sort -u | wc -l)" "3 3" "each node's sockets are in a directory of its own (run/PORT/)"
listeners() { pg_sql "$SERVER_PG" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'signal-fcgi-listen' AND query LIKE 'LISTEN signal_%'"; }
for k in $(seq 1 100); do # the loop connects it, soon after the node answers
	listening=$(listeners)
	[ "$listening" = 3 ] && break
	sleep 0.1
done
is "$listening" 3 "each node's responder LISTENs on its own channel"
NODES="[\"$(node_base 0)\",\"$(node_base 1)\",\"$(node_base 2)\"]"

# --- the races, judged in the database across nodes ---
race=$(python3 "$ROOT/tests/clusterload.py" race "$NODES")
diag "races: $race"
is "$(printf '%s' "$race" | jq .logins_ok)" 1 "one userId logged in at three nodes at once: one success"
is "$(printf '%s' "$race" | jq .joins_ok)" 5 "10 joins of one room through three nodes at once: 5 get in"
is "$(printf '%s' "$race" | jq .members)" 5 "... and the room has exactly 5 members"

# --- pairs relaying across nodes while a node dies and comes back ---
# Pair i: both users log in at node i (mod 3), the receiver's stream at
# node i+1, the sender's POSTs at node i+2.
pairs="["
for i in 0 1 2 3 4 5; do
	BASE=$(node_base $((i % 3)))
	s=$(login "cs$i"); r=$(login "cr$i")
	post "$s" "{\"type\":\"join\",\"roomId\":\"cluster$i\"}"
	post "$r" "{\"type\":\"join\",\"roomId\":\"cluster$i\"}"
	via=$([ $((i % 2)) = 0 ] && echo sse || echo poll)
	pairs="$pairs{\"from\":\"cs$i\",\"from_token\":\"$s\",\"to\":\"cr$i\",\"to_token\":\"$r\",\"via\":\"$via\"},"
done
pairs="${pairs%,}]"
python3 "$ROOT/tests/clusterload.py" load "$NODES" "$pairs" 16 >"$OUT/load.json" 2>"$OUT/load.err" &
LOAD=$!
BG_PIDS="$BG_PIDS $LOAD"
sleep 6
node_kill9 2
diag "node 3 (port ${NPORT[2]}) killed with kill -9, front server and responder, at 6 s"
sleep 4
node_start 2
node_up 2
ok $? "node 3 restarted on its own runtime directory answers again"
wait "$LOAD"
res=$(cat "$OUT/load.json")
[ -n "$res" ] || { sed 's/^/#   /' "$OUT/load.err" | tail -20; res='{}'; }
diag "load: $res"
acked=$(printf '%s' "$res" | jq '[.pairs[]?.acked] | add // 0')
lost=$(printf '%s' "$res" | jq '[.pairs[]?.lost | length] | add // -1')
dups=$(printf '%s' "$res" | jq '[.pairs[]?.duplicates] | add // -1')
order=$(printf '%s' "$res" | jq '[.pairs[]?.in_order] | all')
moved=$(printf '%s' "$res" | jq '.moved // 0')
ok $([ "$acked" -gt 300 ] && echo 0 || echo 1) "six pairs relayed across nodes over SSE and long-poll ($acked messages answered 200)"
is "$lost" 0 "every message answered 200 arrived, through the kill -9 and the restart"
is "$dups" 0 "no message arrived twice (cids): $dups duplicates"
is "$order" true "in order per sender"
ok $([ "$moved" -gt 0 ] && echo 0 || echo 1) "the killed node's clients moved to another node and resumed ($moved moves)"
diag "cross-node POST->event latency: p50 $(printf '%s' "$res" | jq .p50_ms) ms, p99 $(printf '%s' "$res" | jq .p99_ms) ms over $(printf '%s' "$res" | jq .messages) messages (a figure, not a bound); SSE $(printf '%s' "$res" | jq .sse_p50_ms)/$(printf '%s' "$res" | jq .sse_p99_ms) ms, long-poll $(printf '%s' "$res" | jq .poll_p50_ms)/$(printf '%s' "$res" | jq .poll_p99_ms) ms (p50/p99, the kill included)"

# --- the listener loses its connection: it comes back and re-reads ---
BASE=$(node_base 0)
a=$(login lis-a); b=$(login lis-b)
post "$a" '{"type":"join","roomId":"lis"}'
post "$b" '{"type":"join","roomId":"lis"}'
BASE=$(node_base 1)
sse_open lis "$b"
sleep 0.5
pg_sql "$SERVER_PG" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'signal-fcgi-listen' AND pid <> pg_backend_pid()" >/dev/null
BASE=$(node_base 2)
post "$a" '{"type":"signal","to":"lis-b","n":1}' # sent while node 2's listener may be away
wait_for "$OUT/lis.sse" '"n":1[,}]' 5
ok $? "a signal sent while the listeners were cut off arrives (the streams re-read when the listener is back; no periodic re-check here)"
back=0
for k in $(seq 1 100); do
	back=$(listeners)
	[ "$back" = 3 ] && break
	sleep 0.1
done
is "$back" 3 "every node's listener reconnected and LISTENs again"
grep -q "wake-up listener is back" "$OUT"/node*.log
ok $? "... and said so in its log"
t0=$(date +%s%N)
post "$a" '{"type":"signal","to":"lis-b","n":2}'
wait_for "$OUT/lis.sse" '"n":2[,}]' 5
ok $? "after the reconnect a cross-node signal arrives by the wake-up ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
kill "$SSE_PID" 2>/dev/null

# --- a node killed for good: its users pruned once, one user-left each ---
BASE=$(node_base 0)
w=$(login watcher)
post "$w" '{"type":"join","roomId":"doomed"}'
BASE=$(node_base 1)
sse_open watcher "$w"
BASE=$(node_base 2)
for u in d1 d2 d3; do
	t=$(login "$u")
	post "$t" '{"type":"join","roomId":"doomed"}'
	sse_open "$u" "$t"
done
wait_for "$OUT/watcher.sse" '"user-joined".*"d3"' 5
node_kill9 2
diag "node 3 killed for good; waiting for the other nodes to prune its users (heartbeat ${HB} s)"
for k in $(seq 1 $(((HB + 10) * 10))); do
	[ "$(grep -c '"type":"user-left"' "$OUT/watcher.sse")" -ge 3 ] && break
	sleep 0.1
done
sleep 2 # a second pruner, had it run, would have sent its user-left by now
for u in d1 d2 d3; do
	is "$(sse_data "$OUT/watcher.sse" | jq -c "select(.type == \"user-left\" and .userId == \"$u\")" | wc -l)" 1 \
		"$u of the dead node: one user-left"
done
is "$(pg_sql "$SERVER_PG" "SELECT count(*) FROM sessions WHERE user_id IN ('d1','d2','d3')")" 0 "... and its session is gone"
is "$(cat "$OUT"/node0.log "$OUT"/node1.log | grep -cE 'prune: user d[123] ')" 3 "each pruned once across the nodes (3 prune log lines)"

for i in 0 1; do node_stop "$i"; done

# --- make cluster's script: three nodes and the balancer, stopped by Ctrl-C ---
CPORT=$(port_run 4)
mkdir -p "$OUT/cluster"
(cd "$ROOT" && RUNROOT=$OUT/cluster STORE_ARGS="--store $URL" exec tools/run-cluster.sh 3 "$CPORT" 127.0.0.1 1 --heartbeat-timeout 30) \
	>"$OUT/cluster.log" 2>&1 &
CLUSTER_PID=$!
up=1
for k in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$CPORT/api/health" && { up=0; break; }; sleep 0.05; done
ok $up "tools/run-cluster.sh (make cluster): the balancer on PORT answers"
pids=""
for k in 1 2 3; do
	for j in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$((CPORT + k))/api/health" && break; sleep 0.05; done
	get_pid=$(curl -s "http://127.0.0.1:$((CPORT + k))/api/health" | jq -r .pid)
	pids="$pids $get_pid"
done
is "$(echo $pids | tr ' ' '\n' | sort -u | grep -c '^[0-9]')" 3 "... in front of three nodes on PORT+1..PORT+3, each its own responder"
BASE=http://127.0.0.1:$CPORT
x=$(login lb-x); y=$(login lb-y)
post "$x" '{"type":"join","roomId":"lb"}'
post "$y" '{"type":"join","roomId":"lb"}'
sse_open lb "$y"
sleep 0.3
post "$x" '{"type":"signal","to":"lb-y","n":7}'
is "$STATUS" 200 "a signal through the balancer is answered 200"
wait_for "$OUT/lb.sse" '"n":7[,}]' 5
ok $? "... and arrives on a stream through the balancer (no sticky sessions)"
kill "$SSE_PID" 2>/dev/null
# The call page's own transport: a WebSocket through the balancer, its
# signal POSTed straight to node 1 (Debian's python3, which has python3-websocket).
ws=$(/usr/bin/python3 - "$CPORT" "$((CPORT + 1))" "$x" <<'PY'
import json, sys, time, urllib.request, websocket
lb, node, tok = sys.argv[1], sys.argv[2], sys.argv[3]
ws = websocket.create_connection("ws://127.0.0.1:%s/api/ws" % lb, timeout=10)
ws.send(json.dumps({"type": "login", "userId": "lb-ws", "protocol": "x"}))
ws.recv()
ws.send(json.dumps({"type": "join", "roomId": "lb"}))
deadline = time.time() + 10
while time.time() < deadline:
    m = json.loads(ws.recv())
    if m.get("type") == "join":
        break
req = urllib.request.Request("http://127.0.0.1:%s/api/cmd" % node, headers={"Authorization": "Bearer " + tok},
                             data=json.dumps({"type": "signal", "to": "lb-ws", "n": 8}).encode())
urllib.request.urlopen(req, timeout=10).read()
while time.time() < deadline:
    m = json.loads(ws.recv())
    if m.get("type") == "signal" and m.get("n") == 8:
        print("got"); break
PY
)
is "$ws" got "a WebSocket through the balancer gets a signal POSTed at a node"
# SIGTERM: a background job of a script starts with SIGINT ignored, and
# the script traps both the same way.
lbpid=$(cat "$OUT/cluster/$CPORT/nginx.pid" 2>/dev/null)
kill -TERM "$CLUSTER_PID"
wait "$CLUSTER_PID"
CLUSTER_PID=""
left=""
for k in $(seq 1 200); do
	left=""
	for p in $pids $lbpid; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
	[ -z "$left" ] && break
	sleep 0.05
done
is "$left" "" "stopping it (as Ctrl-C does) stops its nodes' responders and its balancer, by PID"
diag "wall time $(($(date +%s) - t_start)) s"
done_testing
