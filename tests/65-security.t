#!/usr/bin/env bash
# Security options: signed logins (--auth-secret), the Origin/CORS policy,
# rate limits and caps, cookie flags, and what the logs and the database
# file reveal. On PostgreSQL (STORE=postgres, tests/92-postgres.t) there is
# no database file of ours; what must not leak there is the password of the
# store's URL, which every server of this test then has in its --store.
. "$(dirname "$0")/lib.sh"
if [ "$STORE" = postgres ]; then PG_PASSWORD=pw65-Zq8vTr3kWm; fi # in SERVER_PG_URL (pg_db)

BIN=$ROOT/build/signal-fcgi
SECRET=$OUT/secret
printf 'correct horse battery staple 42\n' >"$SECRET"
chmod 600 "$SECRET"

# ---------- signed logins ----------
start_server --db "$OUT/signed.db" -- --auth-secret "$SECRET" || exit 1
grep -q 'logins must be signed' "$OUT/server.log"
ok $? "the start-up log says logins are signed"
post "" '{"type":"login","userId":"alice"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 401/unauthorized "an unsigned login: 401"
auth=$("$ROOT/tools/mint-login.sh" "$SECRET" alice)
post "" "{\"type\":\"login\",\"userId\":\"alice\",\"auth\":\"$auth\"}"
is "$STATUS" 200 "a login signed by tools/mint-login.sh: 200"
A=$(echo "$BODY" | jq -r .token)
authjs=$(node "$ROOT/tools/mint-login.mjs" "$SECRET" bob)
post "" "{\"type\":\"login\",\"userId\":\"bob\",\"auth\":\"$authjs\"}"
is "$STATUS" 200 "a login signed by tools/mint-login.mjs: 200"
post "$A" '{"type":"login","userId":"alice"}'
is "$STATUS" 200 "resuming with one's own token needs no new signature"
post "" "{\"type\":\"login\",\"userId\":\"carol\",\"auth\":\"$auth\"}"
is "$STATUS" 401 "alice's signature does not log in carol"
old=$("$ROOT/tools/mint-login.sh" "$SECRET" dave -10)
post "" "{\"type\":\"login\",\"userId\":\"dave\",\"auth\":\"$old\"}"
is "$STATUS" 401 "an expired signature: 401"
good=$("$ROOT/tools/mint-login.sh" "$SECRET" dave)
exp=${good%%:*}
mac=${good#*:}
for bad in "$exp" ":$mac" "x$exp:$mac" "$exp:${mac%?}" "$exp:${mac}0" "$exp:$(echo "$mac" | tr a-f A-F)" "$((exp + 1)):$mac" "-1:$mac"; do
	post "" "{\"type\":\"login\",\"userId\":\"dave\",\"auth\":\"$bad\"}"
	is "$STATUS" 401 "a malformed or wrong signature ($(printf '%.16s' "$bad")...): 401"
done
post "" "{\"type\":\"login\",\"userId\":\"dave\",\"auth\":\"$good\"}"
is "$STATUS" 200 "... and the right one still works"
stop_server
chmod 644 "$SECRET"
"$BIN" --auth-secret "$SECRET" --listen 127.0.0.1:1 >"$OUT/perm.log" 2>&1
is "$?" 2 "a secret file others can read is refused"
chmod 600 "$SECRET"
printf 'short' >"$OUT/short"; chmod 600 "$OUT/short"
"$BIN" --auth-secret "$OUT/short" --listen 127.0.0.1:1 >"$OUT/short.log" 2>&1
is "$?" 2 "a secret under 16 bytes is refused"

# ---------- origins: default same origin only ----------
start_server --db "$OUT/origin.db" -- --rate-login 600 || exit 1
grep -q 'no --auth-secret: logins are open' "$OUT/server.log"
ok $? "without --auth-secret the start-up log says logins are open"
A=$(login alice)
same="http://127.0.0.1:$PORT"
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Cookie: signal_token=$A" -H "Origin: https://evil.example"
is "$STATUS/$(echo "$BODY" | jq -r .error)" 403/forbidden-origin "a cookie request from another origin: 403 forbidden-origin"
get /api/events -H "Cookie: signal_token=$A" -H "Origin: https://evil.example"
is "$STATUS" 403 "an EventSource from another origin: 403"
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Cookie: signal_token=$A" -H "Origin: $same"
is "$STATUS" 200 "the same origin with the cookie: 200"
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Cookie: signal_token=$A"
is "$STATUS" 200 "no Origin (curl, native apps): 200"
get /api/cmd -X OPTIONS -H "Origin: https://evil.example" -H "Access-Control-Request-Method: POST"
is "$STATUS" 403 "no preflight for an origin not allowed"
stop_server

# ---------- --allow-origin LIST ----------
start_server --db "$OUT/list.db" -- --allow-origin "https://app.example,https://other.example" || exit 1
A=$(login alice)
h=$(curl -s -D - -o /dev/null -X OPTIONS "$BASE/api/cmd" -H "Origin: https://app.example" \
	-H "Access-Control-Request-Method: POST" -H "Access-Control-Request-Headers: authorization" | tr -d '\r')
like "$h" '^HTTP/1.1 204' "a preflight from an allowed origin: 204"
like "$h" 'Access-Control-Allow-Origin: https://app.example' "... allows that origin"
like "$h" 'Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID' "... and the headers a client needs"
like "$h" 'Access-Control-Allow-Credentials: true' "... with credentials"
h=$(curl -s -D - -o "$OUT/allowed.json" "$BASE/api/cmd" -H "Origin: https://other.example" -H "Cookie: signal_token=$A" --data-binary '{"type":"ping"}' | tr -d '\r')
like "$h" 'Access-Control-Allow-Origin: https://other.example' "a listed origin gets CORS headers on the answer"
like "$(cat "$OUT/allowed.json")" '"type":"pong"' "... and the answer"
curl -s -N -m 1 -D "$OUT/sse-cors.h" -o /dev/null "$BASE/api/events" -H "Origin: https://app.example" -H "Authorization: Bearer $A"
like "$(tr -d '\r' <"$OUT/sse-cors.h")" 'Access-Control-Allow-Origin: https://app.example' "the SSE stream carries CORS headers too"
curl -s -D "$OUT/poll-cors.h" -o /dev/null "$BASE/api/poll?timeout=0" -H "Origin: https://app.example" -H "Authorization: Bearer $A"
like "$(tr -d '\r' <"$OUT/poll-cors.h")" 'Access-Control-Allow-Origin: https://app.example' "... and the long-poll answer"
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Authorization: Bearer $A" -H "Origin: https://evil.example"
is "$STATUS" 403 "an unlisted origin is refused even with a Bearer token"
stop_server

# ---------- --allow-origin '*': any origin, explicit tokens only ----------
start_server --db "$OUT/any.db" -- --allow-origin '*' || exit 1
A=$(login alice)
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Authorization: Bearer $A" -H "Origin: https://anywhere.example"
is "$STATUS" 200 "'*': any origin with a Bearer token"
get /api/cmd -X POST --data-binary '{"type":"ping"}' -H "Cookie: signal_token=$A" -H "Origin: https://anywhere.example"
is "$STATUS" 403 "'*': never with the ambient cookie"
stop_server

# ---------- rate limits and caps (different client addresses through cgi-fcgi) ----------
ADDR=$OUT/fcgi.sock
LSTORE="" # the store as start_server would give it
if [ "$STORE" = postgres ]; then
	pg_db "$OUT/limits.db" || exit 1
	LSTORE="--store $SERVER_PG_URL"
fi
"$BIN" --listen "$ADDR" --db "$OUT/limits.db" $LSTORE --rate-ip 5 --rate-session 2 --rate-login 6 \
	--max-sessions 4 --max-rooms 2 >>"$OUT/limits.log" 2>&1 &
LPID=$!
BG_PIDS="$BG_PIDS $LPID"
fcgi() { # fcgi REMOTE_ADDR BODY [TOKEN] [HTTPS] -> raw response
	printf '%s' "$2" | env -i REQUEST_METHOD=POST REQUEST_URI=/api/cmd CONTENT_LENGTH=${#2} \
		REMOTE_ADDR="$1" HTTP_AUTHORIZATION="Bearer ${3:-}" HTTPS="${4:-}" cgi-fcgi -bind -connect "$ADDR"
}
for i in $(seq 1 100); do [ -S "$ADDR" ] && break; sleep 0.05; done
sleep 0.2
# burst_then_429 CODES PASSED BURST RATE T0: CODES (a space-separated list of
# statuses, sent one after another since T0 in ns, or sorted when they were
# sent at once) must start with BURST PASSED statuses, then 429s, with at
# most as many further PASSED as the bucket refilled (RATE per minute) while
# they were being sent: on a busy machine the requests take longer, a token
# may come back between two 429s, and the check must not depend on how long.
burst_then_429() {
	local codes=$1 want=$2 burst=$3 rate=$4 t0=$5 n=0 k=0 c limited=0
	local refill=$(( ($(date +%s%N) - t0) * rate / 60000000000 + 1 ))
	for c in $codes; do
		k=$((k + 1))
		if [ "$c" = "$want" ]; then n=$((n + 1))
		elif [ "$c" = 429 ] && [ $k -gt "$burst" ]; then limited=1
		else return 1; fi
	done
	[ "$n" -ge "$burst" ] && [ "$n" -le $((burst + refill)) ] && [ $limited = 1 ]
}
# At 5/s the bucket refills as fast as a busy machine forks one request
# after another (about 200 ms each under load: no 429 at all), so these 30
# are sent at once; in arrival order they would be passed, then 429s.
t0=$(date +%s%N)
pids=""
for i in $(seq 1 30); do fcgi 10.0.0.1 '{"type":"ping"}' >"$OUT/ip-$i.resp" & pids="$pids $!"; done
wait $pids
codes=" $(for i in $(seq 1 30); do sed -n 's/^Status: \([0-9]*\).*/\1/p' "$OUT/ip-$i.resp"; done | sort -n | tr '\n' ' ')"
burst_then_429 "$codes" 401 10 300 "$t0"
ok $? "10 requests (burst 2 x 5/s) from one address, then 429"
diag "statuses (sorted):$codes"
r=$(cat "$(grep -l '^Status: 429' "$OUT"/ip-*.resp | head -1)" 2>/dev/null)
like "$r" 'Retry-After: [0-9]+' "... with Retry-After"
like "$r" '"error":"rate-limited"' "... and rate-limited"
r=$(fcgi 10.0.0.2 '{"type":"login","userId":"eve"}')
like "$r" '^Status: 200' "another address is not affected"
T=$(printf '%s' "$r" | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
like "$(printf '%s' "$r" | tr -d '\r')" 'Set-Cookie: signal_token=[0-9a-f]+; Path=/api/; HttpOnly; SameSite=Strict$' "no Secure flag over plain HTTP"
r=$(fcgi 10.0.0.3 '{"type":"login","userId":"fay"}' "" on)
like "$r" 'Set-Cookie: signal_token=[0-9a-f]+; Path=/api/; HttpOnly; SameSite=Strict; Secure' "the cookie is Secure over HTTPS"
codes=""
t0=$(date +%s%N)
for i in $(seq 1 6); do codes="$codes $(fcgi 10.0.1.$i '{"type":"ping"}' "$T" | sed -n 's/^Status: \([0-9]*\).*/\1/p')"; done
burst_then_429 "$codes" 200 4 120 "$t0"
ok $? "one session: 4 commands (burst 2 x 2/s), then 429, from any address"
diag "statuses:$codes"
r=$(fcgi 10.0.0.3 '{"type":"login","userId":"gus"}')
like "$r" '^Status: 200' "other sessions are not affected"
for u in hal; do r=$(fcgi 10.0.0.4 "{\"type\":\"login\",\"userId\":\"$u\"}"); done
r=$(fcgi 10.0.0.5 '{"type":"login","userId":"ida"}')
like "$r" '^Status: 503' "--max-sessions 4: the fifth login is refused"
like "$r" '"error":"server-full"' "... with server-full"
kill $LPID; wait $LPID 2>/dev/null

# logins per address are shared by every process (kept in the database)
start_server --procs 2 --db "$OUT/logins.db" -- --rate-login 6 || exit 1
codes=""
t0=$(date +%s%N)
for i in $(seq 1 12); do post "" "{\"type\":\"login\",\"userId\":\"u$i\"}"; codes="$codes $STATUS"; done
burst_then_429 "$codes" 200 6 6 "$t0"
ok $? "logins from one address across two processes: 6 at once (the burst is --rate-login), then 429"
diag "statuses:$codes"
stop_server

# rooms cap
start_server --db "$OUT/rooms.db" -- --max-rooms 2 || exit 1
A=$(login alice); B=$(login bob); C=$(login carol)
post "$A" '{"type":"join","roomId":"one"}'
post "$B" '{"type":"join","roomId":"two"}'
post "$C" '{"type":"join","roomId":"three"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 503/server-full "--max-rooms 2: a third room is refused"
post "$C" '{"type":"join","roomId":"two"}'
is "$STATUS" 200 "... joining an existing room is fine"

# ---------- secrets: the database file and the logs ----------
if [ "$STORE" = postgres ]; then
	skip "the database file is created mode 0600" "no database file of ours on PostgreSQL (the server's data directory is its own)"
	skip "... and its WAL" "no WAL file of ours on PostgreSQL"
else
	is "$(stat -c %a "$SERVER_DB")" 600 "the database file is created mode 0600"
	is "$(stat -c %a "$SERVER_DB-wal")" 600 "... and its WAL"
fi
stop_server
leaks=$(grep -rhoE '[0-9a-f]{64}' "$OUT"/*.log "$OUT"/server.log 2>/dev/null | head -3)
is "$leaks" "" "no token (or HMAC) appears in any log"
grep -q 'correct horse' "$OUT"/*.log
ok $(( ! $? )) "the secret never appears in a log"
# ---------- TURN credentials (coturn's REST scheme) ----------
printf 'a-turn-secret-for-the-65-test\n' >"$OUT/turn.secret"; chmod 600 "$OUT/turn.secret"
start_server --db "$OUT/turn.db" -- --turn-secret "$OUT/turn.secret" --turn-ttl 120 \
	--turn-uris 'turn:127.0.0.1:3478?transport=udp,turns:turn.example:5349?transport=tcp' --stun-uris stun:127.0.0.1:3478 || exit 1
now=$(date +%s)
post "" '{"type":"login","userId":"turnuser"}'
is "$(echo "$BODY" | jq -c '[.iceServers[0].urls, .iceServers[1].urls]')" \
	'[["stun:127.0.0.1:3478"],["turn:127.0.0.1:3478?transport=udp","turns:turn.example:5349?transport=tcp"]]' "login hands out the STUN and TURN URIs"
u=$(echo "$BODY" | jq -r '.iceServers[1].username')
exp=${u%%:*}
ok $([ "${u#*:}" = turnuser ] && [ "$exp" -ge $((now + 120)) ] && [ "$exp" -le $((now + 122)) ] && [ "$(echo "$BODY" | jq .iceExpiresAt)" = "$exp" ]; echo $?) \
	"the TURN username is EXPIRY:userId, --turn-ttl from now ($u)"
want=$(printf '%s' "$u" | openssl dgst -sha1 -hmac 'a-turn-secret-for-the-65-test' -binary | base64)
is "$(echo "$BODY" | jq -r '.iceServers[1].credential')" "$want" "the credential is base64(HMAC-SHA1(secret, username)), as openssl dgst -sha1 -hmac says"
TT=$(echo "$BODY" | jq -r .token)
post "$TT" '{"type":"ice"}'
is "$STATUS/$(echo "$BODY" | jq -c '[.type, (.iceServers | length), (.iceExpiresAt > 0)]')" '200/["ice",2,true]' "the ice command gives fresh ones"
stop_server
grep -q 'a-turn-secret-for-the-65-test' "$OUT"/server.log
ok $(( ! $? )) "the TURN secret never appears in the log"
if [ "$STORE" = postgres ]; then
	# A store that cannot be reached: the log says so, naming host and
	# port (from libpq's message), with the password of its URL kept out.
	dead=$(free_port) # nothing listens there
	"$BIN" --listen "127.0.0.1:$(free_port)" --store "postgresql://postgres:$PG_PASSWORD@127.0.0.1:$dead/nowhere" \
		>"$OUT/unreachable.log" 2>&1 &
	UPID=$!
	BG_PIDS="$BG_PIDS $UPID"
	wait_for "$OUT/unreachable.log" "cannot connect to PostgreSQL: .*port $dead" 30
	ok $? "a PostgreSQL store that cannot be reached is logged, with its host and port"
	# While it waits for its store it still stops when told (lighttpd's
	# SIGTERM, or its parent's death): a responder spawned while the
	# database is down must not outlive its web server.
	kill -TERM "$UPID"
	for i in $(seq 1 100); do kill -0 "$UPID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$UPID" 2>/dev/null
	ok $(( ! $? )) "... and SIGTERM stops it while it waits for the store"
	kill -KILL "$UPID" 2>/dev/null; wait "$UPID" 2>/dev/null
	grep -q 'store=postgresql (--store)' "$OUT/server.log"
	ok $? "the start-up log names the PostgreSQL store without its URL"
	grep -qF -- "$PG_PASSWORD" "$OUT"/*.log
	ok $(( ! $? )) "the password of the store's URL never appears in a log"
	grep -q 'postgresql://' "$OUT"/*.log
	ok $(( ! $? )) "... nor the URL"
fi
"$BIN" --turn-uris turn:127.0.0.1:3478 >"$OUT/turnopt.log" 2>&1
is "$?" 2 "--turn-uris without --turn-secret: exit 2"
"$BIN" --turn-secret "$OUT/turn.secret" --turn-uris 'http://x/' >>"$OUT/turnopt.log" 2>&1
is "$?" 2 "--turn-uris that are no turn: URIs: exit 2"
"$BIN" --turn-secret "$OUT/turn.secret" --turn-uris 'turn:a b' >>"$OUT/turnopt.log" 2>&1
is "$?" 2 "--turn-uris with a space: exit 2"
"$BIN" --stun-uris 'turn:x:1' >>"$OUT/turnopt.log" 2>&1
is "$?" 2 "--stun-uris that are no stun: URIs: exit 2"
chmod 644 "$OUT/turn.secret"
"$BIN" --turn-secret "$OUT/turn.secret" --turn-uris turn:x:1 >>"$OUT/turnopt.log" 2>&1
is "$?" 2 "a --turn-secret file others may read: exit 2"
like "$(tail -1 "$OUT/turnopt.log")" 'chmod 600' "... saying so"

"$BIN" --help | grep -q -- '--auth-secret' && "$BIN" --help | grep -q -- '--allow-origin' && "$BIN" --help | grep -q -- '--rate-login'
ok $? "--help documents the security options"
done_testing
