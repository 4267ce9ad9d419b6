#!/usr/bin/env bash
# Graceful drain on SIGTERM: pairs relay numbered messages over SSE,
# long-poll and WebSocket while both responders are told to stop (lighttpd
# starts new ones): every message answered 200 arrives, in order; every
# stream was told {"type":"reconnect","after":ms} with delays spread over
# --drain-timeout (printed); the old processes exit. Then, with a stream
# whose reader never reads holding the drain open: /api/health and logins
# answer 503 draining with Retry-After while other commands still run, and
# the process exits at --drain-timeout.
. "$(dirname "$0")/lib.sh"

WINDOW=6
PY=/usr/bin/python3 # Debian's, which has python3-websocket
start_server --procs 2 -- --drain-timeout $WINDOW --rate-login 100000 || exit 1
pairs="[]" idle="[]"
k=0
for via in sse sse sse poll poll poll ws ws ws; do
	k=$((k + 1))
	S=$(login "s$k")
	R=$(login "r$k")
	post "$S" '{"type":"join","roomId":"room'$k'"}'
	post "$R" '{"type":"join","roomId":"room'$k'"}'
	pairs=$(echo "$pairs" | jq -c --arg f "s$k" --arg t "r$k" --arg ft "$S" --arg tt "$R" --arg v "$via" \
		'. + [{from: $f, to: $t, from_token: $ft, to_token: $tt, via: $v}]')
done
for i in $(seq 1 24); do
	idle=$(echo "$idle" | jq -c --arg t "$(login "idle$i")" '. + [$t]')
done
ipolls="[]"
for i in $(seq 1 6); do
	ipolls=$(echo "$ipolls" | jq -c --arg t "$(login "ipoll$i")" '. + [$t]')
done
old=$(responder_pids | tr '\n' ' ')
is "$(echo $old | wc -w)" 2 "two responders ($old)"

$PY "$ROOT/tests/drainload.py" 127.0.0.1 "$PORT" "{\"pairs\":$pairs,\"idle\":$idle,\"idle_polls\":$ipolls}" 8 >"$OUT/load.json" 2>"$OUT/load.err" &
loadpid=$!
sleep 3
t0=$(date +%s%N)
kill -TERM $old
gone=""
for i in $(seq 1 $(( (WINDOW + 10) * 20 ))); do
	alive=0
	for p in $old; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ $alive = 0 ] && { gone=$(( ($(date +%s%N) - t0) / 1000000 )); break; }
	sleep 0.05
done
ok $([ -n "$gone" ]; echo $?) "both drained responders exited (after ${gone:-?} ms; --drain-timeout ${WINDOW} s)"
wait $loadpid
ok $? "the load ran ($(wc -c <"$OUT/load.json") bytes of results)"
[ -s "$OUT/load.err" ] && sed 's/^/#   /' "$OUT/load.err" | tail -5
new=$(responder_pids | tr '\n' ' ')
is "$(echo $new | wc -w)" 2 "lighttpd runs two new responders ($new)"
is "$(grep -c 'draining (at most' "$OUT/server.log")" 2 "each old responder logged its drain"

for via in sse poll ws; do
	is "$(jq -c --arg v "$via" '[.pairs[] | select(.via == $v) | .lost | length] | add' "$OUT/load.json")" 0 \
		"$via: every message answered 200 arrived (acknowledged: $(jq --arg v "$via" '[.pairs[] | select(.via == $v) | .acked] | add' "$OUT/load.json"))"
	is "$(jq -c --arg v "$via" '[.pairs[] | select(.via == $v) | .in_order] | all' "$OUT/load.json")" true "$via: ... in order"
done
jq -c '.pairs[] | select((.lost | length) > 0 or (.in_order | not))' "$OUT/load.json" | head -5 | sed 's/^/#   /'
diag "duplicates (a retried POST whose first answer was lost): $(jq '[.pairs[].duplicates] | add' "$OUT/load.json"); errors: $(jq -c .errors "$OUT/load.json")"

# The reconnect delays: every receiver was told one, spread over the window.
ms=$(jq -r '.afters[] | .[1]' "$OUT/load.json" | sort -n)
n=$(echo "$ms" | grep -c .)
diag "reconnect delays told ($n, ms): $(echo $ms)"
by=$(jq -r '[.afters[] | .[0]] | group_by(.) | map("\(.[0]) \(length)") | join(", ")' "$OUT/load.json")
diag "... by transport: $by"
like "$by" "idle 24" "every open stream was told to reconnect: the 24 idle ones ($n in all; a receiver between two polls or reconnects is told by a 503 instead)"
like "$by" "idle-poll 6" "... and every held long-poll: the 6 idle ones"
# A relaying pair's poll receiver is between two polls much of the time (on
# a loaded machine, all three at once: run C), so it is counted, not required.
for via in sse ws; do
	like "$by" "(^|, )$via [1-9]" "... $via receivers among them"
done
lo=$(echo "$ms" | head -1) hi=$(echo "$ms" | tail -1)
ok $([ "$lo" -ge 0 ] && [ "$hi" -le $((WINDOW * 1000)) ]; echo $?) "all within [0, ${WINDOW}000] ms ($lo..$hi)"
ok $([ $((hi - lo)) -ge $((WINDOW * 400)) ]; echo $?) "spread over the window: $((hi - lo)) ms between the first and the last"
busiest=$(echo "$ms" | awk '{ print int($1 / 1000) }' | sort | uniq -c | sort -rn | head -1 | awk '{ print $1 }')
ok $([ "$busiest" -le $((n / 2)) ]; echo $?) "no second gets most of them (busiest: $busiest of $n)"
ok $([ "$(echo "$ms" | sort -u | grep -c .)" -ge $((n - 3)) ]; echo $?) "... each its own delay, nearly always ($(echo "$ms" | sort -u | grep -c .) distinct)"
stop_server

# A reader that never reads keeps its stream's reconnect message from going
# out: the drain lasts until --drain-timeout. Meanwhile the process answers.
# 10 s: the four requests below must all come while it drains, and on a
# loaded machine each curl can take a second or more.
DT=10
start_server --db "$OUT/slow.db" -- --drain-timeout $DT --max-signal 1000000 --max-body 1000000 || exit 1
A=$(login ann)
Z=$(login zed)
post "$A" '{"type":"join","roomId":"s"}'
post "$Z" '{"type":"join","roomId":"s"}'
head -c 900000 /dev/zero | tr '\0' a >"$OUT/big.txt"
for i in $(seq 1 12); do # 11 MB: more than the sockets on the way hold
	printf '{"type":"signal","to":"zed","blob":"%s"}' "$(cat "$OUT/big.txt")" >"$OUT/big.json"
	curl -s -o /dev/null -H "Authorization: Bearer $A" --data-binary @"$OUT/big.json" "$BASE/api/cmd"
done
bg python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(("GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % sys.argv[2]).encode())
time.sleep(30)' "$PORT" "$Z"
# The drain below needs that stream held: wait for it (a loaded machine
# under ASan has taken over a second), not for a fixed time.
is "$(wait_held 1 10)" 1 "the reader that never reads holds its stream"
rp=$(responder_pids)
t0=$(date +%s%N)
kill -TERM "$rp"
sleep 0.5
get /api/health -D "$OUT/health.h"
is "$STATUS $(echo "$BODY" | jq -r .error)" "503 draining" "/api/health while draining: 503 draining"
like "$(grep -i '^retry-after' "$OUT/health.h")" "^Retry-After: $DT" "... with Retry-After"
post "" '{"type":"login","userId":"late"}'
is "$STATUS $(echo "$BODY" | jq -r .error) $(echo "$BODY" | jq -r .retryAfter)" "503 draining $DT" "a login while draining: 503 draining, retryAfter $DT"
post "$A" '{"type":"ping"}'
is "$STATUS" 200 "... while a command of a session goes on: 200"
get /api/events -H "Authorization: Bearer $A" --max-time 3
is "$STATUS $(echo "$BODY" | jq -r .error)" "503 draining" "a new stream while draining: 503 draining"
for i in $(seq 1 $(((DT + 10) * 20))); do kill -0 "$rp" 2>/dev/null || break; sleep 0.05; done
took=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -0 "$rp" 2>/dev/null
ok $([ $? != 0 ] && [ $took -ge $((DT * 1000 - 500)) ] && [ $took -le $((DT * 1000 + 8000)) ]; echo $?) \
	"held open by the reader, the drain ended at --drain-timeout: exited after $took ms"
like "$(grep "still open after ${DT}s" "$OUT/server.log")" 'drain: 1 connection' "... and logged what it left open"
stop_server

# make run's Ctrl-C: SIGINT to lighttpd (its graceful shutdown: no new
# connections, the open ones may finish) and to its responder at once. The
# drained streams end, so lighttpd can finish and exit too.
start_server --db "$OUT/ctrlc.db" -- --drain-timeout 5 || exit 1
A=$(login amy)
sse_open amy "$A"
curl -s "$BASE/api/poll?since=0&timeout=30" -H "Authorization: Bearer $(login ben)" -o "$OUT/ben.poll" &
poller=$!
# Both must be held before the Ctrl-C (a poll that arrives during the drain
# is rightly refused 503): wait for the count, not for a fixed time.
is "$(wait_held 2 15)" 2 "amy's stream and ben's poll are held"
rp=$(responder_pids | tr '\n' ' ')
is "$(echo $rp | wc -w)" 1 "one responder to stop ($rp)"
t0=$(date +%s%N)
kill -INT "$SERVER_PID" $rp
wait "$SERVER_PID"
took=$(( ($(date +%s%N) - t0) / 1000000 ))
SERVER_PID=""
wait $poller
like "$(sse_data "$OUT/amy.sse" | tail -1)" '^\{"type":"reconnect","after":[0-9]+\}$' "Ctrl-C: the SSE stream was told to reconnect"
like "$(cat "$OUT/ben.poll")" '"events":\[\{"type":"reconnect","after":[0-9]+\}\]' "... the waiting poll too"
ok $([ $took -le 10000 ]; echo $?) "... and lighttpd's graceful shutdown ended with them: it exited after $took ms"
for i in $(seq 1 100); do kill -0 $rp 2>/dev/null || break; sleep 0.05; done
kill -0 $rp 2>/dev/null
alive=$?
ok $([ $alive != 0 ]; echo $?) "... its responder too"
if [ $alive = 0 ]; then # say what it waits on, and leave no process behind
	for t in /proc/${rp% }/task/*; do diag "left running: thread $(basename "$t") in $(cat "$t/wchan" 2>/dev/null)"; done
	kill -9 $rp
fi
# web_stop's threads take what is queued and end: none waits in accept on
# the shut listener until the drain's deadline.
is "$(grep -c 'a request thread still busy' "$OUT/server.log")" 0 "every drain's request threads ended at once (none still busy)"

done_testing
