#!/usr/bin/env bash
# Two worker processes: an event queued by one process reaches a stream
# held by the other, woken by the bell (not by the slow re-check).
. "$(dirname "$0")/lib.sh"

start_server --procs 2 -- --verbose --recheck 30 || exit 1
A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"r"}'
post "$B" '{"type":"join","roomId":"r"}'
sse_open bob "$B"
wait_for "$OUT/server.log" 'hold: stream open for bob' 5
holder=$(grep 'hold: stream open for bob' "$OUT/server.log" | sed -E 's/.*\[([0-9]+)\].*/\1/' | tail -1)
ok $([ -n "$holder" ]; echo $?) "bob's stream is held by process $holder"

cross=0
worst=0
for n in $(seq 1 20); do
	relay "$A" bob "$n" "$OUT/bob.sse" || break
	ms=$RELAY_MS
	server=$(grep 'cmd: signal by alice' "$OUT/server.log" | tail -1 | sed -E 's/.*\[([0-9]+)\].*/\1/')
	if [ "$server" != "$holder" ]; then
		cross=$((cross + 1))
		[ $ms -gt $worst ] && worst=$ms
	fi
done
diag "signals served by the other process: $cross of 20; slowest POST->event across processes: ${worst} ms (includes curl start-up)"
[ $cross -ge 1 ]; ok $? "some signals were served by the process not holding the stream"
[ $worst -lt 1000 ]; ok $? "... and reached the stream at once (re-check is 30 s: the bell woke it)"
is "$(sse_data "$OUT/bob.sse" | jq -r 'select(.n) | .n' | tr '\n' ' ')" "$(seq 1 20 | tr '\n' ' ')" "all 20 arrived once, in order"
is "$(grep -c 'signal-fcgi started' "$OUT/server.log")" 2 "two responder processes ran"
stop_server

# Two lighttpd worker processes (SIGNAL_WORKERS, for more streams than one
# process has descriptors): streams and posts land on either worker, and
# stopping the master stops everything.
if [ "$FRONT" = lighttpd ]; then
	start_server --workers 2 --db "$OUT/workers.db" || exit 1
	workers=$(pgrep -P "$SERVER_PID" -x lighttpd | tr '\n' ' ')
	is "$(echo $workers | wc -w)" 2 "lighttpd runs two workers"
	C=$(login carol)
	D=$(login dave)
	post "$C" '{"type":"join","roomId":"w"}'
	post "$D" '{"type":"join","roomId":"w"}'
	sse_open dave "$D"
	got=0
	for n in $(seq 1 10); do relay "$C" dave "$n" "$OUT/dave.sse" && got=$((got + 1)); done
	is "$got" 10 "10 signals relayed through two workers"
	is "$(sse_data "$OUT/dave.sse" | jq -r 'select(.n) | .n' | tr '\n' ' ')" "$(seq 1 10 | tr '\n' ' ')" "... once each, in order"
	kill "$SSE_PID" 2>/dev/null
	master=$SERVER_PID
	stop_server
	sleep 0.3
	left=$(pgrep -f "$OUT/workers.db" | wc -l)
	for p in $master $workers; do ps -o stat= -p "$p" | grep -qv Z && left=$((left + 1)); done
	is "$left" 0 "stopping the master stopped its workers and the responder"
fi

done_testing
