#!/usr/bin/env bash
# Standalone mode (--listen) for spawn-fcgi or a front server that does not
# spawn: a TCP port and a unix socket, spoken to by libfcgi's own cgi-fcgi
# client; SIGTERM stops it; without --listen and without a FastCGI socket
# on fd 0 it refuses to start.
. "$(dirname "$0")/lib.sh"

BIN=$ROOT/build/signal-fcgi
# fcgi REQUEST_METHOD URI [BODY] -> raw FastCGI response (headers + body)
fcgi() {
	local method=$1 uri=$2 body=${3:-}
	printf '%s' "$body" | env -i REQUEST_METHOD="$method" REQUEST_URI="$uri" \
		CONTENT_LENGTH=${#body} SERVER_PROTOCOL=HTTP/1.1 cgi-fcgi -bind -connect "$ADDR"
}

for kind in tcp unix; do
	if [ $kind = tcp ]; then ADDR=127.0.0.1:$(free_port); else ADDR=$OUT/signal.sock; fi
	"$BIN" --listen "$ADDR" --db "$OUT/$kind.db" >>"$OUT/$kind.log" 2>&1 &
	PID=$!
	for i in $(seq 1 100); do fcgi GET /api/health 2>/dev/null | grep -q '"ok":true' && break; sleep 0.05; done
	r=$(fcgi GET /api/health)
	like "$r" '^Status: 200' "$kind: health over --listen $([ $kind = tcp ] && echo HOST:PORT || echo PATH)"
	r=$(fcgi POST /api/cmd '{"type":"login","userId":"alice"}')
	like "$r" '"type":"login","success":true' "$kind: login"
	tok=$(printf '%s' "$r" | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
	r=$(printf '{"type":"join","roomId":"r"}' | env -i REQUEST_METHOD=POST REQUEST_URI=/api/cmd CONTENT_LENGTH=28 \
		HTTP_AUTHORIZATION="Bearer $tok" cgi-fcgi -bind -connect "$ADDR")
	like "$r" '"users":\["alice"\]' "$kind: join with the token"
	r=$(fcgi GET /api/nope)
	like "$r" '^Status: 404' "$kind: unknown path is 404"
	kill -TERM $PID
	for i in $(seq 1 50); do kill -0 $PID 2>/dev/null || break; sleep 0.05; done
	kill -0 $PID 2>/dev/null
	ok $(( ! $? )) "$kind: SIGTERM stops it"
	grep -q 'signal 15: exiting' "$OUT/$kind.log"
	ok $? "$kind: ... and it says so"
done

"$BIN" --db "$OUT/x.db" </dev/null >"$OUT/nofcgi.log" 2>&1
is "$?" 2 "without --listen and no FastCGI socket on fd 0 it exits 2"
like "$(cat "$OUT/nofcgi.log")" 'use --listen' "... and says what to do"
"$BIN" --room-limit 0 >"$OUT/badopt.log" 2>&1
is "$?" 2 "an out-of-range option exits 2"
"$BIN" --help >"$OUT/help.txt"
is "$?" 0 "--help exits 0"
missing=""
for o in listen db auth-secret allow-origin room-limit heartbeat-timeout prune-interval keepalive \
	mailbox-limit replay-window poll-timeout poll-max threads write-timeout max-body busy-timeout \
	retry recheck max-sessions max-rooms max-signal rate-ip rate-session rate-login verbose; do
	grep -q -- "--$o" "$OUT/help.txt" || missing="$missing --$o"
done
is "$missing" "" "--help lists every option"
is "$(grep -- '--room-limit' "$OUT/help.txt" | grep -c 'default 5')" 1 "... with its default"
done_testing
