#!/usr/bin/env bash
# Every error is JSON, those the front server answers itself included
# (issue 14, item 7): a bad request line, oversized headers or URI, a body
# over the front server's cap, the responder down, broken off or silent.
# Through lighttpd here (errors/, written by tools/error-pages.sh), and
# through nginx in 90-nginx.t (FRONT=nginx) and Apache in 91-apache.t
# (FRONT=apache), the same files. Each
# shipped body is checked against fcgi/base/error.c's table, and each kind
# is provoked for real: responders are stopped and killed by PID.
. "$(dirname "$0")/lib.sh"

# error.c's entry for a wire code: "STATUS|MESSAGE"
entry() { sed -n "s/.*{\\([0-9]*\\), \"$1\", \"\\(.*\\)\"},\$/\\1|\\2/p" "$ROOT/fcgi/base/error.c"; }
want_body() { # want_body CODE -> the JSON error the front server must answer
	local e; e=$(entry "$1")
	printf '{"type":"error","success":false,"error":"%s","msg":"%s"}' "$1" "${e#*|}"
}
MAP="400:bad-request 414:bad-request 431:bad-request 413:too-large 500:internal 502:bad-gateway 503:unavailable 504:gateway-timeout"

# ---- the shipped bodies agree with error.c ----
for pair in $MAP; do
	st=${pair%%:*} code=${pair#*:}
	[ -n "$(entry "$code")" ] || { ok 1 "error.c has an entry for $code"; continue; }
	is "$(cat "$ROOT/errors/$st.html")" "$(want_body "$code")" "lighttpd's errors/$st.html is error.c's $code reply"
	grep -qE "^ErrorDocument $st /\.errors/$st\.html\$" "$ROOT/apache.conf"
	ok $? "apache.conf answers its own $st with errors/$st.html"
	[ "$st" = 431 ] && continue # nginx has no 431 of its own (494, answered 400)
	grep -qE "^ *error_page ([0-9]+ )*$st( [0-9]+)* /\.errors/$st\.html;" "$ROOT/nginx.conf"
	ok $? "nginx.conf answers its own $st with errors/$st.html"
done
for st in 502 503 504; do
	code=$(echo "$MAP" | tr ' ' '\n' | sed -n "s/^$st://p")
	is "$(entry "$code" | cut -d'|' -f1)" "$st" "error.c's $code is a $st"
done

# answer METHOD-AND-ARGS... -> "STATUS|CONTENT-TYPE|BODY" of one curl request
answer() {
	curl -s -D "$OUT/h" -o "$OUT/b" --max-time 30 "$@"
	# the last status line: a "100 Continue" (Apache's, to curl's Expect) comes first
	printf '%s|%s|%s' "$(sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$OUT/h" | tail -1)" \
		"$(tr -d '\r' <"$OUT/h" | sed -n 's/^[Cc]ontent-[Tt]ype: //p' | head -1)" "$(tr -d '\n' <"$OUT/b")"
}
expect_json() { # expect_json STATUS CODE NAME -- curl args
	local st=$1 code=$2 name=$3; shift 4
	is "$(answer "$@")" "$st|application/json|$(want_body "$code")" "$FRONT: $name: $st, error.c's $code as JSON"
}
raw() { # raw BYTES -> the answer to bytes sent as they are: "STATUS|CONTENT-TYPE|BODY"
	python3 - "$PORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
while True:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    if not d:
        break
    data += d
head, _, body = data.partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
st = lines[0].split(" ")[1] if lines[0].startswith("HTTP/") else "?"
ct = next((l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("content-type:")), "")
print("%s|%s|%s" % (st, ct, body.decode("latin-1").replace("\n", "")), end="")
PY
}

# The responder processes themselves (server_procs also lists the restart
# loops that start_nginx runs them in).
responders() {
	local p
	for p in $(server_procs); do [ "$(cat /proc/$p/comm 2>/dev/null)" = bash ] || echo "$p"; done
}

# A wrapper that runs the responder only while $OUT/up exists: with it
# gone, a killed responder cannot come back, as when it is broken.
cat >"$OUT/wrap.sh" <<EOF2
#!/bin/sh
[ -e "$OUT/up" ] || exit 1
exec "$ROOT/build/signal-fcgi" "\$@"
EOF2
chmod +x "$OUT/wrap.sh"
touch "$OUT/up"
if [ "$FRONT" = nginx ]; then
	NGINX_SED='s/fastcgi_read_timeout 120s;/fastcgi_read_timeout 2s;/' start_server || exit 1
elif [ "$FRONT" = apache ]; then
	APACHE_SED='s|^\(ProxyPass /api/ .*\) timeout=120|\1 timeout=2|' start_server || exit 1
	grep -q 'timeout=2 ' "$OUT/apache.conf"
	ok $? "apache.conf sets the FastCGI timeout (shortened to 2 s for this test)"
else
	sed 's/"read-timeout" => 120,/"read-timeout" => 2,/' "$ROOT/lighttpd.conf" >"$OUT/lighttpd.conf"
	grep -q '"read-timeout" => 2,' "$OUT/lighttpd.conf"
	ok $? "lighttpd.conf sets a read-timeout (shortened to 2 s for this test)"
	LIGHTTPD_CONF=$OUT/lighttpd.conf SIGNAL_BIN=$OUT/wrap.sh start_server || exit 1
fi

# ---- refused by the front server before the responder sees anything ----
raw_body=$(raw 'GARBAGE\r\n\r\n')
is "$raw_body" "400|application/json|$(want_body bad-request)" "$FRONT: a bad request line: 400, error.c's bad-request as JSON"
big=$(head -c 70000 /dev/zero | tr '\0' a)
got=$(answer "$BASE/api/cmd" -X POST -d '{}' -H "X-Big: $big")
like "$got" "^(400|431)\|application/json\|$(want_body bad-request | sed 's/[][\.*^$(){}+?|]/\\&/g')\$" "$FRONT: a 70 KB header: 400 or 431, bad-request as JSON"
got=$(answer "$BASE/api/health?x=$big")
like "$got" "^(400|414|431)\|application/json\|$(want_body bad-request | sed 's/[][\.*^$(){}+?|]/\\&/g')\$" "$FRONT: a 70 KB URI: bad-request as JSON"
head -c 2000000 /dev/zero | tr '\0' a >"$OUT/2mb"
expect_json 413 too-large "a 2 MB body to /api/cmd" -- "$BASE/api/cmd" -X POST --data-binary @"$OUT/2mb"
expect_json 413 too-large "a 2 MB body to a page" -- "$BASE/index.html" -X POST --data-binary @"$OUT/2mb"
# the responder's own errors pass through as they are
is "$(answer "$BASE/api/nope" | cut -d'|' -f1,2)" "404|application/json" "$FRONT: the responder's own 404 passes through"
like "$(cat "$OUT/b")" '"error":"not-found"' "... in its own words"

# ---- the responder silent (stopped): 504 ----
pids=$(responders)
kill -STOP $pids
expect_json 504 gateway-timeout "the responder stopped (SIGSTOP), a command" -- "$BASE/api/cmd" -X POST -d '{"type":"ping"}'
kill -CONT $pids
sleep 0.5
is "$(answer "$BASE/api/health" | cut -d'|' -f1)" 200 "$FRONT: after SIGCONT it answers again"

# ---- the responder killed under a held request, then down ----
T=$(login held)
curl -s -D "$OUT/poll.h" -o "$OUT/poll.b" --max-time 20 "$BASE/api/poll?timeout=15" -H "Authorization: Bearer $T" &
CPID=$!
BG_PIDS="$BG_PIDS $CPID"
sleep 1
if [ "$FRONT" = nginx ] || [ "$FRONT" = apache ]; then
	kill -STOP $BACKEND_PGIDS # the restart loops: nothing comes back
else
	rm -f "$OUT/up" # the wrapper: nothing comes back
fi
kill -9 $(responders)
wait $CPID
st=$(sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$OUT/poll.h" | tail -1)
code=$(echo "$MAP" | tr ' ' '\n' | sed -n "s/^$st://p")
# lighttpd 500 or 502, nginx 502, Apache's mod_proxy 503
ok $([ "$st" = 500 ] || [ "$st" = 502 ] || { [ "$FRONT" = apache ] && [ "$st" = 503 ]; }; echo $?) \
	"$FRONT: a held poll whose responder is killed under it: $st"
is "$(tr -d '\n' <"$OUT/poll.b")" "$(want_body "${code:-none}")" "... error.c's ${code:-?} as JSON"
if [ "$FRONT" = nginx ]; then
	expect_json 502 bad-gateway "no responder listening, a command" -- "$BASE/api/cmd" -X POST -d '{"type":"ping"}'
	expect_json 502 bad-gateway "no responder listening, the WebSocket upgrade" -- "$BASE/api/ws" \
		-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
	kill -CONT $BACKEND_PGIDS
elif [ "$FRONT" = apache ]; then # mod_proxy: a backend refusing the connection is 503
	expect_json 503 unavailable "no responder listening, a command" -- "$BASE/api/cmd" -X POST -d '{"type":"ping"}'
	expect_json 503 unavailable "no responder listening, the WebSocket upgrade" -- "$BASE/api/ws" \
		-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
	kill -CONT $BACKEND_PGIDS
else
	expect_json 503 unavailable "no responder running, a command" -- "$BASE/api/cmd" -X POST -d '{"type":"ping"}'
	expect_json 503 unavailable "no responder running, a stream" -- "$BASE/api/events"
	expect_json 503 unavailable "no responder running, the WebSocket upgrade" -- "$BASE/api/ws" \
		-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
	touch "$OUT/up"
fi
for i in $(seq 1 100); do [ "$(answer "$BASE/api/health" | cut -d'|' -f1)" = 200 ] && break; sleep 0.1; done
is "$(answer "$BASE/api/health" | cut -d'|' -f1)" 200 "$FRONT: the responder back, the service answers"
stop_server
done_testing
