#!/usr/bin/env bash
# State survives a restart of lighttpd and a crash (kill -9) of the
# responder: users, rooms and queued events; streams resume by Last-Event-ID.
. "$(dirname "$0")/lib.sh"

start_server || exit 1
A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"r"}'
post "$B" '{"type":"join","roomId":"r"}'
sse_open bob "$B"
post "$A" '{"type":"signal","to":"bob","n":1}'
wait_for "$OUT/bob.sse" '"n":1' 5
ok $? "delivered before the restart"
last=$(sse_data "$OUT/bob.sse" | jq -r .id | tail -1)
for i in 2 3; do post "$A" "{\"type\":\"signal\",\"to\":\"bob\",\"n\":$i}"; done
wait_for "$OUT/bob.sse" '"n":3' 5

# --- restart lighttpd (and with it the responder it spawned) ---
stop_server
post "$A" '{"type":"signal","to":"bob","n":99}' 2>/dev/null
[ "$STATUS" != 200 ]; ok $? "nothing is acknowledged while the service is down"
PORT_FIXED=1 start_server --db "$SERVER_DB" || exit 1
post "$A" '{"type":"room-users","roomId":"r"}'
is "$STATUS" 200 "alice's token survives the restart"
is "$(echo "$BODY" | jq -c .users)" '["alice","bob"]' "the room survives"
for i in 4 5; do post "$A" "{\"type\":\"signal\",\"to\":\"bob\",\"n\":$i}"; done
is "$STATUS" 200 "signals are accepted after the restart"
sse_open bob2 "$B" -H "Last-Event-ID: $last"
wait_for "$OUT/bob2.sse" '"n":5' 5
ok $? "bob resumes after the restart"
is "$(sse_data "$OUT/bob2.sse" | jq -r 'select(.n) | .n' | tr '\n' ' ')" "2 3 4 5 " "everything after his cursor, once, in order"

# --- crash the responder: lighttpd starts a new one, nothing is lost ---
last=$(sse_data "$OUT/bob2.sse" | jq -r .id | tail -1)
kill $SSE_PID
rpid=$(responder_pids | head -1)
[ -n "$rpid" ]; ok $? "found the responder process ($rpid)"
post "$A" '{"type":"signal","to":"bob","n":6}'
kill -9 "$rpid"
for i in $(seq 1 50); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.05; done
ok_after=""
for i in $(seq 1 50); do
	post "$A" '{"type":"signal","to":"bob","n":7}'
	[ "$STATUS" = 200 ] && { ok_after=1; break; }
	sleep 0.2
done
[ -n "$ok_after" ]; ok $? "lighttpd restarts the killed responder and commands work again"
sse_open bob3 "$B" -H "Last-Event-ID: $last"
wait_for "$OUT/bob3.sse" '"n":7' 5
ok $? "events acknowledged before the crash are delivered after it"
is "$(sse_data "$OUT/bob3.sse" | jq -r 'select(.n) | .n' | tr '\n' ' ')" "6 7 " "... exactly once, in order"
integrity_check "the database passes integrity_check"

done_testing
