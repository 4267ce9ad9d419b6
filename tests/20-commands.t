#!/usr/bin/env bash
# Every command of the contract and every error code, through a real
# lighttpd: replies, broadcasts and "a bad request changes nothing".
. "$(dirname "$0")/lib.sh"

start_server -- --room-limit 3 --mailbox-limit 3 || exit 1

counts() { curl -s "$BASE/api/health" | jq -c '[.sessions,.members,.queued]'; }

# --- login ---
post "" '{"type":"login","userId":"alice","protocol":"webrtc-v1"}'
is "$STATUS" 200 "login answers 200"
is "$(echo "$BODY" | jq -c '[.type,.success,.userId,.protocol]')" '["login",true,"alice","webrtc-v1"]' "login reply carries the seed's fields"
A=$(echo "$BODY" | jq -r .token)
like "$A" '^[0-9a-f]{64}$' "token is 256 bits of hex"
hash=$(sql "SELECT $(hex_sql token_hash) FROM sessions WHERE user_id='alice'")
is "${#hash}" 64 "the store keeps a 32-byte hash"
is "$(sql "SELECT count(*) FROM sessions WHERE token_hash='$A' OR $(hex_sql token_hash)=upper('$A')")" 0 "the token itself is not stored"

post "" '{"type":"login","userId":"alice"}'
is "$STATUS" 409 "a live userId is refused"
is "$(echo "$BODY" | jq -r .error)" user-exists "... with user-exists"
post "$A" '{"type":"login","userId":"alice"}'
is "$STATUS" 200 "the holder's own token resumes the session"
is "$(echo "$BODY" | jq -r .token)" "$A" "... with the same token"

hdr=$(curl -s -D - -o /dev/null --data-binary '{"type":"login","userId":"cookie-user"}' "$BASE/api/cmd" | tr -d '\r' | grep -i '^set-cookie')
like "$hdr" 'signal_token=[0-9a-f]{64}; Path=/api/; HttpOnly; SameSite=Strict' "login sets an HttpOnly SameSite cookie"

B=$(login bob)
C=$(login carol)
D=$(login dave)

# --- join / room-users ---
post "$A" '{"type":"join","roomId":"r1"}'
is "$STATUS" 200 "join answers 200"
is "$(echo "$BODY" | jq -c '[.type,.success,.roomId,.users]')" '["join",true,"r1",["alice"]]' "join reply lists the members"
post "$B" '{"type":"join","roomId":"r1"}'
is "$(echo "$BODY" | jq -c .users)" '["alice","bob"]' "second member sees both, in join order"
post "$A" '{"type":"join","roomId":"r1"}'
is "$STATUS" 200 "joining the room one is in is idempotent"
post "$C" '{"type":"join","roomId":"r1"}'
before=$(counts)
post "$D" '{"type":"join","roomId":"r1"}'
is "$STATUS" 409 "a full room (limit 3) is refused"
is "$(echo "$BODY" | jq -c '[.type,.success,.error]')" '["join",false,"room-full"]' "... with room-full"
is "$(counts)" "$before" "a refused join changes nothing"

post "$D" '{"type":"room-users","roomId":"r1"}'
is "$(echo "$BODY" | jq -c '[.type,.roomId,.users]')" '["room-users","r1",["alice","bob","carol"]]' "room-users lists a room"
post "$D" '{"type":"room-users","roomId":"nobody-here"}'
is "$(echo "$BODY" | jq -c .users)" '[]' "room-users of an empty room is empty"

# --- events so far, read by long-poll (timeout 0 answers at once) ---
get "/api/poll?timeout=0" -H "Authorization: Bearer $A"
is "$(echo "$BODY" | jq -c '[.events[] | [.type,.userId,.roomId,.protocol]]')" \
	'[["user-joined","bob","r1","webrtc"],["user-joined","carol","r1","webrtc"]]' "members got user-joined with protocol"
ida=$(echo "$BODY" | jq -r .last)

# --- signal ---
post "$A" '{"type":"signal","to":"bob","sdp":"v=0 offer","from":"mallory","roomId":"elsewhere","id":999}'
is "$STATUS" 200 "signal to a peer answers 200"
is "$(echo "$BODY" | jq -c '[.type,.success,.to,.recipients]')" '["signal",true,"bob",1]' "signal reply"
get "/api/poll?timeout=0" -H "Authorization: Bearer $B"
ev=$(echo "$BODY" | jq -c '[.events[] | select(.type=="signal")][0]')
is "$(echo "$ev" | jq -c '[.from,.roomId,.sdp,.to]')" '["alice","r1","v=0 offer","bob"]' "forged from/roomId are overwritten"
like "$(echo "$ev" | jq -r .id)" '^[0-9]+$' "the event id is the server's"
[ "$(echo "$ev" | jq -r .id)" != 999 ]; ok $? "a client-sent id is not kept"
get "/api/poll?since=$ida&timeout=0" -H "Authorization: Bearer $A"
is "$(echo "$BODY" | jq -c '[.events[] | select(.type=="signal")] | length')" 0 "signal is never echoed to the sender"

post "$A" '{"type":"signal","candidate":"c1"}'
is "$(echo "$BODY" | jq -c .recipients)" 2 "signal without to goes to every other member"
post "$A" '{"type":"signal","to":"dave","x":1}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 409/unknown-peer "to outside the room: 409 unknown-peer"
post "$A" '{"type":"signal","to":"alice","x":1}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 409/unknown-peer "to oneself: 409 unknown-peer"
post "$A" '{"type":"signal","to":"no such user!","x":1}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "malformed to: 400 invalid-field"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "to | to: only letters, digits and . _ ~ @ + - (1 to 64 of them)" "... naming the field and its rule"
post "$D" '{"type":"signal","to":"alice"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 409/not-in-room "signal outside a room: 409 not-in-room"

# --- mailbox cap (3 undelivered events per recipient here) ---
# Fill carol's mailbox to the cap of 3 undelivered events, then one more.
# A poll's answer is recorded as delivered within a second (as for SSE).
lastc=$(curl -s "$BASE/api/poll?timeout=0&token=$C" | jq -r .last)
undelivered() { sql "SELECT count(*) FROM events e JOIN sessions s ON s.id=e.session_id WHERE s.user_id='carol' AND e.id > s.sent_upto"; }
for i in $(seq 1 40); do [ "$(undelivered)" = 0 ] && break; sleep 0.05; done
is "$(undelivered)" 0 "a poll marks carol's events delivered (within a second)"
for i in 1 2 3; do post "$A" "{\"type\":\"signal\",\"to\":\"carol\",\"n\":$i}"; done
is "$STATUS" 200 "three signals fit carol's mailbox"
before=$(counts)
post "$A" '{"type":"signal","to":"carol","n":4}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 429/mailbox-full "the fourth: 429 mailbox-full"
post "$A" '{"type":"signal","n":5}'
is "$STATUS" 429 "a broadcast with one full recipient is refused whole"
is "$(counts)" "$before" "... and queued nothing for anyone"
get "/api/poll?since=$lastc&timeout=0" -H "Authorization: Bearer $C"
is "$(echo "$BODY" | jq -c '[.events[] | select(.type=="signal") | .n]')" '[1,2,3]' "carol gets 1..3, in order"
for i in $(seq 1 30); do
	post "$A" '{"type":"signal","to":"carol","n":6}'
	[ "$STATUS" = 429 ] || break
	sleep 0.05
done
is "$STATUS" 200 "once delivered (recorded within a second), the mailbox takes more"

# --- ping ---
post "$A" '{"type":"ping"}'
is "$STATUS" 200 "ping answers 200"
is "$(echo "$BODY" | jq -r .type)" pong "... with pong"
last=$(curl -s "$BASE/api/poll?timeout=0&token=$B" | jq -r .last)
post "$B" "{\"type\":\"ping\",\"ack\":$last}"
is "$(sql "SELECT count(*) FROM events e JOIN sessions s ON s.id=e.session_id WHERE s.user_id='bob' AND e.id <= $last")" 0 "ping with ack deletes acknowledged events"
post "$B" '{"type":"ping","ack":-1}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "a negative ack is refused"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "ack | ack: must not be negative" "... naming ack"

# --- leave ---
post "$B" '{"type":"leave"}'
is "$(echo "$BODY" | jq -c '[.type,.success,.roomId]')" '["leave",true,"r1"]' "leave reply names the room"
post "$B" '{"type":"leave"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 409/not-in-room "leave outside a room: 409 not-in-room"
get "/api/poll?timeout=0" -H "Authorization: Bearer $A"
like "$BODY" '"type":"user-left","userId":"bob","roomId":"r1"' "members get user-left"

# joining another room leaves the first
post "$B" '{"type":"join","roomId":"r1"}'
post "$B" '{"type":"join","roomId":"r2"}'
is "$(echo "$BODY" | jq -c .users)" '["bob"]' "join of a second room"
get "/api/poll?timeout=0" -H "Authorization: Bearer $A"
like "$BODY" '"type":"user-left","userId":"bob","roomId":"r1"' "... tells the first room user-left"

# --- logout ---
post "$C" '{"type":"logout"}'
is "$STATUS" 200 "logout answers 200"
post "$C" '{"type":"ping"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 401/unauthorized "the token is dead afterwards"
get "/api/poll?timeout=0" -H "Authorization: Bearer $A"
like "$BODY" '"type":"user-left","userId":"carol","roomId":"r1"' "logout tells the room user-left"
post "" '{"type":"login","userId":"carol"}'
is "$STATUS" 200 "the id is free again after logout"

# --- batch ---
post "" '[{"type":"login","userId":"erin"},{"type":"join","roomId":"r9"},{"type":"nope"},{"type":"ping"}]'
is "$STATUS" 200 "a batch answers 200"
is "$(echo "$BODY" | jq -c '[.[] | [.type, .success, (.status // 200)]]')" \
	'[["login",true,200],["join",true,200],["error",false,400],["pong",true,200]]' "... one reply per command, in order; login authenticates the rest"
post "$A" '[]'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "an empty batch is refused"
is "$(echo "$BODY" | jq -c '[.field, .msg]')" '[null,"a batch holds 1 to 64 commands, not 0"]' "... which is no field's fault, and says so"
big=$(python3 -c 'import json; print(json.dumps([{"type":"ping"}]*65))')
post "$A" "$big"
is "$STATUS" 400 "a batch over 64 commands is refused"
post "" '[{"type":"login","userId":"frank","protocol":"'"$(printf 'p%.0s' $(seq 1 70))"'"},{"type":"join"}]'
is "$(echo "$BODY" | jq -c '[.[] | [.status, .field, .msg]]')" '[[400,"protocol","protocol: at most 64 bytes"],[401,null,"no token, or the session is gone; log in again"]]' "in a batch each refused command names its field"

# --- auth ---
post "" '{"type":"ping"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 401/unauthorized "no token: 401"
post "0000000000000000000000000000000000000000000000000000000000000000" '{"type":"ping"}'
is "$STATUS" 401 "an unknown token: 401"
post "short" '{"type":"ping"}'
is "$STATUS" 401 "a malformed token: 401"
get "/api/cmd" -X POST --data-binary '{"type":"ping"}' -H "Cookie: signal_token=$A"
is "$STATUS" 200 "the cookie authenticates"
get "/api/cmd?token=$A" -X POST --data-binary '{"type":"ping"}'
is "$STATUS" 200 "?token= authenticates"
get "/api/events" 
is "$STATUS/$(echo "$BODY" | jq -r .error)" 401/unauthorized "a stream without a token: 401"

# --- error codes of the transport ---
get "/api/nope"
is "$STATUS/$(echo "$BODY" | jq -r .error)" 404/not-found "unknown path: 404 JSON"
get "/api/cmd"
is "$STATUS/$(echo "$BODY" | jq -r .error)" 405/method-not-allowed "GET /api/cmd: 405"
get "/api/events" -X POST --data-binary x
is "$STATUS" 405 "POST /api/events: 405"
get "/api/health" -X DELETE
if [ "$FRONT" = apache-fcgid ]; then
	# Debian's userdir.conf, as hosts have it, allows GET, POST and OPTIONS
	# only: Apache refuses the rest before the program sees them.
	is "$STATUS" 403 "DELETE /api/health: 403 from the host's Require method"
else
	is "$STATUS" 405 "DELETE /api/health: 405"
fi
post "$A" '{"type":"teleport"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/unknown-type "unknown type: 400 unknown-type"
post "$A" '{"roomId":"r1"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/unknown-type "missing type: 400 unknown-type"
post "$A" '{"type":"join"'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-json "bad JSON: 400 invalid-json"
post "$A" '{"type":"join","roomId":5}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "mistyped field: 400 invalid-field"
is "$(echo "$BODY" | jq -c 'keys')" '["error","field","msg","success","type"]' "a field's error carries type, success, error, field, msg"
is "$(echo "$BODY" | jq -c '[.type,.field,.msg]')" '["join","roomId","roomId: must be a string, not an integer"]' "... the field and its rule, in the command's reply type"
post "$A" '{"type":"teleport"}'
is "$(echo "$BODY" | jq -c 'keys')" '["error","msg","success","type"]' "other errors carry type, success, error, msg"
head -c 70000 /dev/zero | tr '\0' 'a' >"$OUT/big.json"
get "/api/cmd" -X POST --data-binary @"$OUT/big.json" -H "Authorization: Bearer $A"
is "$STATUS/$(echo "$BODY" | jq -r .error)" 413/too-large "a body over 64 KiB: 413 too-large"

# --- idempotency keys (cid): a retried command runs once ---
K1=$(login key-a) K2=$(login key-b)
post "$K1" '{"type":"join","roomId":"keys"}'
post "$K2" '{"type":"join","roomId":"keys"}'
get "/api/poll?timeout=0" -H "Authorization: Bearer $K2"
kmark=$(echo "$BODY" | jq -r .last)
post "$K1" '{"type":"signal","to":"key-b","sdp":"offer","cid":"offer-1"}'
first="$STATUS $(echo "$BODY" | jq -c 'del(.replayed)')"
is "$STATUS/$(echo "$BODY" | jq -c .replayed)" 200/null "a command with a cid runs: 200"
post "$K1" '{"type":"signal","to":"key-b","sdp":"offer","cid":"offer-1"}'
is "$STATUS/$(echo "$BODY" | jq -c .replayed)" 200/true "the same command and cid again: 200, replayed"
is "$STATUS $(echo "$BODY" | jq -c 'del(.replayed)')" "$first" "... same status, same body"
post "$K1" '{"type":"signal","to":"key-b","sdp":"other","cid":"offer-1"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 409/cid-conflict "the same cid with another command: 409 cid-conflict"
post "$K1" '[{"type":"signal","to":"key-b","n":1,"cid":"b-1"},{"type":"signal","to":"key-b","n":1,"cid":"b-1"},{"type":"signal","to":"key-b","n":2,"cid":"b-2"}]'
is "$STATUS/$(echo "$BODY" | jq -c '[.[].replayed]')" '200/[null,true,null]' "a batch: a repeated element is replayed"
post "$K1" '{"type":"ping","cid":"bad cid"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "a cid outside the id alphabet: 400 invalid-field"
get "/api/poll?timeout=0&since=$kmark" -H "Authorization: Bearer $K2"
is "$(echo "$BODY" | jq -c '[.events[] | select(.type == "signal") | (.sdp // .n)]')" '["offer",1,2]' \
	"the peer got each command once"
is "$(echo "$BODY" | jq -c '[.events[] | select(has("cid"))] | length')" 0 "... without the sender's cid"

# --- 503 busy: another process holds the write lock past the busy timeout ---
stop_server
PORT_FIXED=1 start_server --db "$SERVER_DB" -- --busy-timeout 200 || exit 1
if [ "$STORE" = postgres ]; then
	# A lock on the sessions table that every command's first read waits
	# for, held past the lock_timeout (= --busy-timeout) for 2 s.
	pg_sql "$SERVER_PG" "BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT" \
		>"$OUT/locker.out" 2>&1 &
	LOCKER=$!
	for i in $(seq 1 250); do # "locked" once the lock is granted
		[ "$(sql "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE c.relname = 'sessions' AND l.mode = 'AccessExclusiveLock' AND l.granted")" = 1 ] &&
			{ echo locked >"$OUT/locker.log"; break; }
		sleep 0.02
	done
else
python3 - "$SERVER_DB" >"$OUT/locker.log" 2>&1 <<'PY' &
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(2)
db.execute("ROLLBACK")
PY
LOCKER=$!
fi
wait_for "$OUT/locker.log" locked 5
resp=$(curl -s -D "$OUT/busy.hdr" -w '\n%{http_code}' -H "Authorization: Bearer $A" --data-binary '{"type":"ping"}' "$BASE/api/cmd")
STATUS=${resp##*$'\n'}
BODY=${resp%$'\n'*}
is "$STATUS/$(echo "$BODY" | jq -r .error)" 503/busy "a store locked past --busy-timeout: 503 busy"
like "$(cat "$OUT/busy.hdr")" $'Retry-After: 1\r' "... with Retry-After"
wait $LOCKER
post "$A" '{"type":"ping"}'
is "$STATUS" 200 "... and the service recovers when the lock is gone"

done_testing
