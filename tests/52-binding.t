#!/usr/bin/env bash
# A stream is bound to the session its page logged in as, whatever cookie
# the browser holds (issue: two windows of one browser share one cookie jar,
# so the cookie names whoever logged in last there). One case per rule:
#   - an explicit credential (Bearer, ?token=, ?ticket=) always wins over the cookie,
#     for POST, SSE and long-poll;
#   - stream tickets: one use, expire, die with their session, open streams only,
#     at most 16 waiting per session, never logged;
#   - the WebSocket cases (the cookie never attaches a socket by itself) are in
#     tests/ws_suite.py (55-websocket.t, case "binding").
. "$(dirname "$0")/lib.sh"

start_server -- --retry 500 || exit 1

A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"r"}'
post "$B" '{"type":"join","roomId":"r"}'
COOKIE_B="Cookie: signal_token=$B"

# --- tickets ---
post "$A" '{"type":"ticket"}'
is "$STATUS" 200 "a ticket for alice's session"
TA=$(printf '%s' "$BODY" | jq -r .ticket)
like "$BODY" '"type":"ticket","success":true,"ticket":"[0-9a-f]{64}","expiresIn":30' "the reply: a 64-hex ticket and its lifetime"
[ "$TA" != "$A" ]
ok $? "the ticket is not the token"

# alice's page opens her stream with her ticket, in a browser whose cookie is bob's
: >"$OUT/a.sse"
bg curl -s -N -H "$COOKIE_B" "$BASE/api/events?ticket=$TA&lastEventId=0" -o "$OUT/a.sse"
wait_for "$OUT/a.sse" '^retry: 500' 5
ok $? "SSE opened with ?ticket= (and bob's cookie)"
post "$B" '{"type":"signal","to":"alice","n":1}'
post "$A" '{"type":"signal","to":"bob","n":2}'
post "$B" '{"type":"signal","to":"alice","n":3}'
wait_for "$OUT/a.sse" '"n":3[,}]' 5
ok $? "alice's events arrive on it"
is "$(sse_data "$OUT/a.sse" | jq -r 'select(.type=="signal") | "\(.to)<\(.from):\(.n)"' | tr '\n' ' ')" \
	"alice<bob:1 alice<bob:3 " "... and only hers: the ticket wins over the cookie"

get "/api/events?ticket=$TA" --max-time 3 -H "$COOKIE_B"
is "$STATUS/$(printf '%s' "$BODY" | jq -r .error)" 401/unauthorized "a ticket opens one stream only: reused -> 401, not bob's stream"
get "/api/events?ticket=$(printf '%064d' 7)" --max-time 3
is "$STATUS" 401 "an unknown ticket: 401"
get "/api/events?ticket=short" --max-time 3 -H "$COOKIE_B"
is "$STATUS" 401 "a malformed ticket: 401, the cookie is not used instead"
post "$A" '{"type":"ticket"}'
T2=$(printf '%s' "$BODY" | jq -r .ticket)
get "/api/cmd?ticket=$T2" -X POST --data-binary '{"type":"ping"}'
is "$STATUS" 401 "a ticket authenticates no command"
get "/api/poll?ticket=$T2&since=0&timeout=0"
is "$STATUS" 200 "the same ticket opens a long-poll"
like "$BODY" '"to":"alice","n":1' "... alice's"

# at most 16 waiting tickets per session: the oldest go
post "$A" '{"type":"ticket"}'
OLD=$(printf '%s' "$BODY" | jq -r .ticket)
post "$A" '{"type":"ticket"}'
SECOND=$(printf '%s' "$BODY" | jq -r .ticket)
for i in $(seq 1 15); do post "$A" '{"type":"ticket"}'; done
NEWEST=$(printf '%s' "$BODY" | jq -r .ticket)
get "/api/poll?ticket=$OLD&since=0&timeout=0"
is "$STATUS" 401 "a session keeps its 16 newest unused tickets: the 17th newest is void"
get "/api/poll?ticket=$SECOND&since=0&timeout=0"
is "$STATUS" 200 "... the 16th newest still works"
get "/api/poll?ticket=$NEWEST&since=0&timeout=0"
is "$STATUS" 200 "... and the newest"

# a ticket dies with its session
C=$(login carol)
post "$C" '{"type":"ticket"}'
TC=$(printf '%s' "$BODY" | jq -r .ticket)
post "$C" '{"type":"logout"}'
get "/api/events?ticket=$TC" --max-time 3
is "$STATUS" 401 "a ticket of a logged-out session: 401"

# --- an explicit token beats the cookie, everywhere ---
post "$A" '{"type":"ticket"}' # (bob's cookie and alice's Bearer)
curl -s -o "$OUT/both.json" -H "$COOKIE_B" -H "Authorization: Bearer $A" --data-binary '{"type":"signal","to":"bob","n":10}' "$BASE/api/cmd"
like "$(cat "$OUT/both.json")" '"to":"bob","recipients":1' "POST with alice's Bearer and bob's cookie runs as alice (she may signal bob)"
get "/api/poll?since=0&timeout=0" -H "$COOKIE_B" -H "Authorization: Bearer $A"
like "$BODY" '"to":"alice"' "long-poll with alice's Bearer and bob's cookie reads alice's mailbox"
[[ "$BODY" != *'"to":"bob"'* ]]
ok $? "... and nothing of bob's"
: >"$OUT/a2.sse"
bg curl -s -N -H "$COOKIE_B" "$BASE/api/events?token=$A&lastEventId=0" -o "$OUT/a2.sse"
wait_for "$OUT/a2.sse" '"to":"alice"' 5
ok $? "SSE with ?token= and bob's cookie is alice's stream"
[ "$(grep -c '"to":"bob"' "$OUT/a2.sse")" = 0 ]
ok $? "... with none of bob's events"
# bob, who may only use his cookie, still gets his own events
: >"$OUT/b.sse"
bg curl -s -N -H "$COOKIE_B" "$BASE/api/events?lastEventId=0" -o "$OUT/b.sse"
wait_for "$OUT/b.sse" '"to":"bob","n":10' 5
ok $? "a request with only the cookie is the cookie's session (bob)"

# --- expiry, on a server with a 1 s lifetime ---
stop_server
start_server -- --ticket-ttl 1 || exit 1
D=$(login dave)
post "$D" '{"type":"ticket"}'
TD=$(printf '%s' "$BODY" | jq -r .ticket)
like "$BODY" '"expiresIn":1' "--ticket-ttl sets the lifetime"
sleep 1.5
get "/api/poll?ticket=$TD&since=0&timeout=0"
is "$STATUS" 401 "an expired ticket: 401"

# --- never logged ---
leaked=$(grep -c -e "$TA" -e "$T2" -e "$TD" "$OUT"/*.log 2>/dev/null | awk -F: '{s+=$NF} END {print s+0}')
is "$leaked" 0 "no ticket appears in the server logs"
done_testing
