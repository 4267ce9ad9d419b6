#!/usr/bin/env bash
# The admin API (--admin-token FILE): off by default (404); a Bearer token
# compared in constant time; list rooms and members; kick (the user first
# gets "kicked", then its stream ends and the room gets user-left, over SSE
# and long-poll); ban a userId or an address for N seconds (403 banned,
# retryAfter and Retry-After, expiry, unban), shared by two processes and
# kept across a restart; close a room (room-closed to every member); one
# log line per action, the token never in the log.
. "$(dirname "$0")/lib.sh"

# admin METHOD ACTION [JSON] [TOKEN]: /api/admin/ACTION; sets STATUS, BODY.
admin() {
	local m=$1 action=$2 json=${3:-} tok=${4-$ADMIN} resp args=()
	[ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
	[ "$m" = POST ] && args+=(--data-binary "$json")
	resp=$(curl -s -w '\n%{http_code}' -X "$m" "${args[@]}" "$BASE/api/admin/$action")
	STATUS=${resp##*$'\n'}
	BODY=${resp%$'\n'*}
}

# --- disabled: no --admin-token ---
start_server --db "$OUT/off.db" || exit 1
ADMIN=whatever-it-is-it-is-not-set
admin GET rooms
is "$STATUS" 404 "without --admin-token: GET /api/admin/rooms is 404"
admin POST kick '{"userId":"x"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "404 not-found" "... and POST /api/admin/kick is 404 not-found"
stop_server

ADMIN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$ADMIN" >"$OUT/admin.token"
chmod 644 "$OUT/admin.token"
"$ROOT/build/signal-fcgi" --listen 127.0.0.1:1 --db "$OUT/bad.db" --admin-token "$OUT/admin.token" 2>"$OUT/bad.err"
is "$?" 2 "an admin token file others may read is refused at start"
chmod 600 "$OUT/admin.token"

start_server --procs 2 -- --admin-token "$OUT/admin.token" --verbose || exit 1

# --- the token ---
admin GET rooms "" ""
is "$STATUS $(echo "$BODY" | jq -r .error)" "401 unauthorized" "no token: 401 unauthorized"
admin GET rooms "" "${ADMIN}x"
is "$STATUS" 401 "a wrong token (one character longer): 401"
admin GET rooms "" "${ADMIN%?}g"
is "$STATUS" 401 "a wrong token (same length): 401"
hdr=$(curl -s -D - -o /dev/null "$BASE/api/admin/rooms")
like "$hdr" 'WWW-Authenticate: Bearer' "... with WWW-Authenticate: Bearer"
admin GET nothing-here
is "$STATUS" 404 "an unknown admin action: 404"
admin GET kick
is "$STATUS" 405 "GET on an action: 405"
admin POST rooms '{}'
is "$STATUS" 405 "POST on a listing: 405"

# --- list rooms ---
A=$(login alice)
B=$(login bob)
C=$(login carol)
post "$A" '{"type":"join","roomId":"r1"}'
post "$B" '{"type":"join","roomId":"r1"}'
post "$C" '{"type":"join","roomId":"r2"}'
admin GET rooms
is "$STATUS" 200 "GET /api/admin/rooms: 200"
is "$(echo "$BODY" | jq -c '[.rooms[] | {roomId, users: [.users[].userId]}]')" \
	'[{"roomId":"r1","users":["alice","bob"]},{"roomId":"r2","users":["carol"]}]' "... every room and its members, in join order"
is "$(echo "$BODY" | jq -r '.rooms[0].users[0] | "\(.protocol) \(.connected) \(.idleMs >= 0)"')" "webrtc false true" \
	"... with protocol, connected and idleMs"

# --- kick over SSE: kicked first, then the stream ends, then user-left ---
sse_open alice "$A"
sse_open bob "$B"
wait_for "$OUT/alice.sse" 'retry:' 5
wait_for "$OUT/bob.sse" 'retry:' 5
admin POST kick '{"userId":"bob","reason":"spamming the room"}'
is "$STATUS" 200 "kick bob: 200"
is "$(echo "$BODY" | jq -c '{type, userId, roomId}')" '{"type":"kick","userId":"bob","roomId":"r1"}' "... the reply names him and his room"
wait_for "$OUT/bob.sse" '"type":"kicked"' 5
is "$(sse_data "$OUT/bob.sse" | tail -1 | jq -c '{type, reason}')" '{"type":"kicked","reason":"spamming the room"}' \
	"bob's stream: the kicked notice, with the reason, is its last event"
for i in $(seq 1 100); do kill -0 "$SSE_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$SSE_PID" 2>/dev/null
ok $([ $? != 0 ]; echo $?) "... and then his stream ends"
wait_for "$OUT/alice.sse" '"type":"user-left"' 5
is "$(sse_data "$OUT/alice.sse" | jq -c 'select(.type == "user-left") | {userId, roomId}')" '{"userId":"bob","roomId":"r1"}' \
	"the room gets user-left for bob"
post "$B" '{"type":"ping"}'
is "$STATUS" 401 "bob's token is dead: 401"
kid=$(sse_data "$OUT/bob.sse" | tail -1 | jq -r .id)
get /api/events -H "Authorization: Bearer $B" -H "Last-Event-ID: $kid" --max-time 3
is "$STATUS" 401 "... his stream cannot reopen past the notice"
get /api/events -H "Authorization: Bearer $B" --max-time 3
is "$(printf '%s\n' "$BODY" | sed -n 's/^data: //p' | jq -r .type | tr '\n' ' ')" "kicked " \
	"... and a stream reopened from before it gets the notice again, then ends"
admin POST kick '{"userId":"bob"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "404 unknown-user" "kicking him again: 404 unknown-user"
B=$(login bob)
ok $([ -n "$B" ] && [ "$B" != null ]; echo $?) "a kicked (not banned) user may log in again"

# --- kick over long-poll: the waiting poll answers with the notice ---
get "/api/poll?since=0&timeout=1" -H "Authorization: Bearer $C"
since=$(echo "$BODY" | jq -r .last)
curl -s "$BASE/api/poll?since=$since&timeout=20" -H "Authorization: Bearer $C" -o "$OUT/carol.poll" &
poller=$!
sleep 0.5
admin POST kick '{"userId":"carol"}'
wait $poller
is "$(jq -c '[.events[] | {type, reason}]' "$OUT/carol.poll")" '[{"type":"kicked","reason":"removed by an operator"}]' \
	"carol's waiting poll answers with the kicked notice (default reason)"
get "/api/poll?since=$(jq -r .last "$OUT/carol.poll")&timeout=1" -H "Authorization: Bearer $C"
is "$STATUS" 401 "... and her next poll, past it, is 401"

# --- validation ---
admin POST ban '{"userId":"x"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "400 invalid-field" "ban without seconds: 400 invalid-field"
admin POST ban '{"userId":"x","address":"127.0.0.1","seconds":5}'
is "$STATUS" 400 "ban of both a userId and an address: 400"
admin POST ban '{"userId":"x","seconds":0}'
is "$STATUS" 400 "ban for 0 seconds: 400"
admin POST ban '{"address":"not an address","seconds":5}'
is "$STATUS" 400 "ban of something that is no address: 400"
admin POST kick '{"userId":"bad id!"}'
is "$STATUS" 400 "kick of a malformed userId: 400"
admin POST kick 'not json'
is "$STATUS $(echo "$BODY" | jq -r .error)" "400 invalid-json" "a body that is no JSON: 400 invalid-json"

# --- ban a userId: kicked now, logins refused until it expires ---
DLOGIN='{"type":"login","userId":"dave","cid":"dave-login-0123456789abcdef"}'
post "" "$DLOGIN"
D=$(echo "$BODY" | jq -r .token)
sse_open dave "$D"
wait_for "$OUT/dave.sse" 'retry:' 5
# 6 s: long enough for the checks below on a loaded machine (3 s ran out
# before its six logins through nginx did)
admin POST ban '{"userId":"dave","seconds":6,"reason":"cool off"}'
is "$(echo "$BODY" | jq -c '{type, userId, seconds, kicked}')" '{"type":"ban","userId":"dave","seconds":6,"kicked":true}' \
	"ban dave for 6 s: 200, his live session kicked"
wait_for "$OUT/dave.sse" '"type":"kicked"' 5
is "$(sse_data "$OUT/dave.sse" | tail -1 | jq -c '{type, reason, retryAfter}')" '{"type":"kicked","reason":"cool off","retryAfter":6}' \
	"... his stream got the notice with the reason and the time"
resp=$(curl -s -D "$OUT/ban.h" -w '\n%{http_code}' --data-binary '{"type":"login","userId":"dave"}' "$BASE/api/cmd")
is "${resp##*$'\n'}" 403 "dave logging in: 403"
is "$(echo "${resp%$'\n'*}" | jq -r .error)" banned "... error banned"
left=$(echo "${resp%$'\n'*}" | jq -r .retryAfter)
ok $([ "$left" -ge 1 ] && [ "$left" -le 6 ]; echo $?) "... with the time left as retryAfter ($left s)"
like "$(grep -i '^retry-after' "$OUT/ban.h")" "^Retry-After: [1-6]" "... and as Retry-After"
post "" "$DLOGIN"
is "$STATUS $(echo "$BODY" | jq -r .error)" "403 banned" "... and so is a retry of his login (same cid): no replay of a kicked session"
sent=0 refused=0
for i in $(seq 1 6); do # both processes: the ban is in the store
	post "" '{"type":"login","userId":"dave"}'
	sent=$((sent + 1)); [ "$STATUS" = 403 ] && refused=$((refused + 1))
done
is "$refused/$sent" "$sent/$sent" "every login of dave is refused, whichever process answers"
admin GET bans
is "$(echo "$BODY" | jq -c '[.bans[] | {kind, userId, reason}]')" '[{"kind":"user","userId":"dave","reason":"cool off"}]' \
	"GET /api/admin/bans lists it"
sleep $((left + 1))
D=$(login dave)
ok $([ -n "$D" ] && [ "$D" != null ]; echo $?) "after the ban expired, dave logs in again"

# --- ban an address; unban ---
admin POST ban '{"address":"127.0.0.1","seconds":600}'
is "$STATUS $(echo "$BODY" | jq -r .kicked)" "200 false" "ban the address 127.0.0.1 for 600 s"
post "" '{"type":"login","userId":"erin"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "403 banned" "a login from it: 403 banned"
post "$A" '{"type":"ping"}'
is "$STATUS" 200 "... sessions it already has go on"
admin POST unban '{"address":"127.0.0.1"}'
is "$(echo "$BODY" | jq -c '{type, address, removed}')" '{"type":"unban","address":"127.0.0.1","removed":true}' "unban it"
E=$(login erin)
ok $([ -n "$E" ] && [ "$E" != null ]; echo $?) "... and logins from it work again"
# One address has several spellings: the IPv4-mapped IPv6 form, hex, caps.
admin POST ban '{"address":"::FFFF:127.0.0.1","seconds":300}'
is "$STATUS $(echo "$BODY" | jq -r .address)" "200 127.0.0.1" "a ban of ::FFFF:127.0.0.1 is kept as 127.0.0.1"
post "" '{"type":"login","userId":"erin2"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "403 banned" "... and refuses a login from 127.0.0.1"
admin POST unban '{"address":"::ffff:7f00:1"}'
is "$STATUS $(echo "$BODY" | jq -r .removed)" "200 true" "unban ::ffff:7f00:1 (the same address) removes it"
admin POST ban '{"address":"2001:DB8:0:0:0:0:0:1","seconds":5}'
is "$STATUS $(echo "$BODY" | jq -r .address)" "200 2001:db8::1" "an IPv6 ban is kept in its shortest form (2001:db8::1)"
admin POST unban '{"address":"2001:db8::1"}'
is "$(echo "$BODY" | jq -r .removed)" true "... and unbanned by it"
admin POST ban '{"address":"1.2.3.4.5","seconds":5}'
is "$STATUS $(echo "$BODY" | jq -r .field)" "400 address" "1.2.3.4.5 is no address: 400 naming the field"

# --- close a room ---
F=$(login frank)
post "$F" '{"type":"join","roomId":"r1"}'
sse_open frank "$F"
wait_for "$OUT/frank.sse" 'retry:' 5
admin POST close '{"roomId":"r1","reason":"meeting over"}'
is "$(echo "$BODY" | jq -c '{type, roomId, members}')" '{"type":"close","roomId":"r1","members":2}' "close r1 (alice, frank): 200"
wait_for "$OUT/alice.sse" '"type":"room-closed"' 5
wait_for "$OUT/frank.sse" '"type":"room-closed"' 5
is "$(sse_data "$OUT/alice.sse" | jq -c 'select(.type == "room-closed") | {roomId, reason}')" '{"roomId":"r1","reason":"meeting over"}' \
	"alice gets room-closed"
is "$(sse_data "$OUT/frank.sse" | jq -c 'select(.type == "room-closed") | {roomId, reason}')" '{"roomId":"r1","reason":"meeting over"}' \
	"frank gets room-closed"
is "$(sse_data "$OUT/frank.sse" | jq -r 'select(.type == "user-left") | .userId' | wc -l)" 0 "... and no user-left (the room is gone, not left)"
post "$A" '{"type":"room-users","roomId":"r1"}'
is "$(echo "$BODY" | jq -c .users)" '[]' "r1 has no members"
post "$A" '{"type":"leave"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "409 not-in-room" "alice is in no room, her session alive"
admin POST close '{"roomId":"r1"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "404 unknown-room" "closing it again: 404 unknown-room"

# --- a ban survives a restart ---
admin POST ban '{"userId":"mallory","seconds":600}'
is "$STATUS" 200 "ban mallory for 600 s"
stop_server
PORT_FIXED=1 start_server --db "$SERVER_DB" -- --admin-token "$OUT/admin.token" || exit 1
post "" '{"type":"login","userId":"mallory"}'
is "$STATUS $(echo "$BODY" | jq -r .error)" "403 banned" "after a restart mallory is still banned"

# --- the log: one line per action, never the token ---
for what in 'admin: kick user bob from room r1 by' 'admin: ban user dave for 6s \(session kicked\) by' \
	'admin: ban address 127.0.0.1 for 600s by' 'admin: ban address 127.0.0.1 for 300s by' \
	'admin: close room r1 \(2 member\(s\)\) by' 'admin: list rooms \(2\) by'; do
	is "$(grep -cE "$what" "$OUT/server.log")" 1 "one log line: $what"
done
is "$(grep -cE 'admin: unban address 127.0.0.1 by' "$OUT/server.log")" 2 "one log line per unban of 127.0.0.1 (two, in two spellings)"
is "$(grep -c "$ADMIN" "$OUT/server.log")" 0 "the admin token is never logged"
get /api/metrics
like "$(echo "$BODY" | grep 'signal_admin_actions_total{action="kick"}')" ' [1-9]' "admin actions are counted in the metrics"

done_testing
