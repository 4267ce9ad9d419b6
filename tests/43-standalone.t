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
	grep -q 'signal 15: draining' "$OUT/$kind.log" && grep -q 'drained in [0-9]* ms: exiting' "$OUT/$kind.log"
	ok $? "$kind: ... after draining (nothing open), and it says so"
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
	retry recheck max-sessions max-rooms max-signal rate-ip rate-session rate-login verbose ws-listen ws-ping; do
	grep -q -- "--$o" "$OUT/help.txt" || missing="$missing --$o"
done
is "$missing" "" "--help lists every option"

is "$(grep -- '--room-limit' "$OUT/help.txt" | grep -c 'default 5')" 1 "... with its default"
# Two processes started at the same moment on a new database (as lighttpd
# starts them) both come up, and share one TCP --ws-listen port: the kernel
# spreads WebSocket connections over both.
WSPORT=$(free_port)
PIDS=""
for i in 1 2; do
	FPORT[$i]=$(free_port)
	"$BIN" --listen 127.0.0.1:${FPORT[$i]} --ws-listen 127.0.0.1:$WSPORT --db "$OUT/pair.db" --verbose --recheck 30 >"$OUT/pair$i.log" 2>&1 &
	PIDS="$PIDS $!"
done
sleep 0.5
alive=0
for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
is "$alive" 2 "two processes started together on a new database both run"
/usr/bin/python3 - "$WSPORT" >"$OUT/pair-ws.log" 2>&1 <<'PY'
import json, sys, websocket
for i in range(16):
    w = websocket.create_connection("ws://127.0.0.1:%s/api/ws" % sys.argv[1], timeout=5)
    w.send(json.dumps({"type": "ping"}))
    assert json.loads(w.recv())["error"] == "unauthorized", i
    w.close()
print("16 sockets")
PY
like "$(cat "$OUT/pair-ws.log")" '^16 sockets' "16 WebSocket connections on the shared port answered"
n1=$(grep -c 'ws: open' "$OUT/pair1.log"); n2=$(grep -c 'ws: open' "$OUT/pair2.log")
ok $([ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] && echo 0 || echo 1) "... served by both processes ($n1 + $n2)"

# A WebSocket client held by one process gets a signal POSTed to the other
# (the bell crosses processes for sockets as for SSE).
ADDR=127.0.0.1:${FPORT[1]}
r=$(fcgi POST /api/cmd '{"type":"login","userId":"sender"}')
stok=$(printf '%s' "$r" | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
/usr/bin/python3 - "$WSPORT" >"$OUT/pair-recv.log" 2>&1 <<'PY' &
import json, sys, websocket
w = websocket.create_connection("ws://127.0.0.1:%s/api/ws" % sys.argv[1], timeout=10)
w.send(json.dumps({"type": "login", "userId": "receiver"}))
print("login", json.loads(w.recv())["success"], flush=True)
w.send(json.dumps({"type": "join", "roomId": "x"}))
w.recv()
while True:
    m = json.loads(w.recv())
    if m.get("type") == "signal":
        print("got", m["n"], flush=True)
        break
PY
RPID=$!
for i in $(seq 1 100); do grep -q '^login True' "$OUT/pair-recv.log" && break; sleep 0.05; done
sleep 0.3
holder=1; grep -q 'login: user receiver' "$OUT/pair2.log" && holder=2
other=$((3 - holder))
ADDR=127.0.0.1:${FPORT[$other]}
printf '{"type":"join","roomId":"x"}' | env -i REQUEST_METHOD=POST REQUEST_URI=/api/cmd CONTENT_LENGTH=28 \
	HTTP_AUTHORIZATION="Bearer $stok" cgi-fcgi -bind -connect "$ADDR" >/dev/null
body='{"type":"signal","to":"receiver","n":7}'
printf '%s' "$body" | env -i REQUEST_METHOD=POST REQUEST_URI=/api/cmd CONTENT_LENGTH=${#body} \
	HTTP_AUTHORIZATION="Bearer $stok" cgi-fcgi -bind -connect "$ADDR" >"$OUT/pair-send.txt"
like "$(cat "$OUT/pair-send.txt")" '"recipients":1' "a signal POSTed to process $other for the socket held by process $holder"
( sleep 5; kill $RPID 2>/dev/null ) &
wait $RPID
like "$(cat "$OUT/pair-recv.log")" '^got 7' "... reaches the WebSocket within 5 s (the re-check is 30 s here: the bell woke it)"
for p in $PIDS; do kill "$p"; wait "$p" 2>/dev/null; done
done_testing
