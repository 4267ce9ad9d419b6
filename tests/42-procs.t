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

done_testing
