#!/usr/bin/env bash
# The shared-hosting bundle (make shared-hosting) as a host runs it: Apache
# with mod_fcgid and suEXEC serving a user's folder with AllowOverride All
# (tests/apache-fcgid.conf), the bundle copied in by that unprivileged user
# (lib.sh, FRONT=apache-fcgid). What the suites do not see: the files the
# web must not reach, who the processes run as, what the program needs
# from the host, and streams that end in time and resume without loss.
FRONT=apache-fcgid
. "$(dirname "$0")/lib.sh"
BUNDLE=$ROOT/build/shared-hosting/signal
make -s -C "$ROOT" shared-hosting >"$OUT/make.log" 2>&1
ok $? "make shared-hosting builds $BUNDLE"

# Self-contained: SQLite, json-c, libfcgi, libcrypto, http-parser linked in;
# only glibc from the host, and wslay from the bundle's lib/.
libs=$(ldd "$BUNDLE/signal.fcgi" | awk '{print $1}' | grep -v linux-vdso | sort | tr '\n' ' ')
is "$libs" "/lib64/ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libwslay.so.1 " "signal.fcgi needs only glibc and the wslay it carries"
like "$(ldd "$BUNDLE/signal.fcgi" | grep wslay)" "$BUNDLE/lib/libwslay.so.1" "and finds wslay in its own lib/ (RUNPATH \$ORIGIN/lib)"

start_server -- --max-stream-seconds 3 --keepalive 1
ok $? "Apache + mod_fcgid serve the bundle from ~$FCGID_USER/public_html/signal"
get /
is "$STATUS" 200 "the call page is served"
get /signal.js
is "$STATUS" 200 "signal.js is served"
A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"host"}'
post "$B" '{"type":"join","roomId":"host"}'
open=""
for f in data/signal.db data/.htaccess signal.conf lib/libwslay.so.1 README.txt .htaccess; do
	get "/$f"
	[ "$STATUS" = 403 ] || open="$open $f:$STATUS"
done
is "$open" "" "the data folder, signal.conf, lib/, README.txt and .htaccess are refused (403)"
get /data/
is "$STATUS" 403 "the data folder lists nothing"

owners=$(ps -o user= -p "$(responder_pids | tr '\n' ',' | sed 's/,$//')" | sort -u | tr -d ' \n')
is "$owners" "$FCGID_USER" "mod_fcgid runs the program as the user who uploaded it (suEXEC)"
is "$(stat -c %U "$OUT/signal.db")" "$FCGID_USER" "the database belongs to that user"
like "$(cat "$OUT/run/apache-error.log")" "signal-fcgi started: store=$OUT/signal.db" \
	"the program took its options from signal.conf beside it (its log goes to the host's error log)"

# --max-stream-seconds 3: a stream ends after 3 s, its process is free
# again, and the client's next stream (Last-Event-ID) misses nothing.
: >"$OUT/s1.sse"
t0=$(date +%s%N)
timeout 20 curl -s -N -H "Authorization: Bearer $B" "$BASE/api/events" -o "$OUT/s1.sse"
secs=$(( ($(date +%s%N) - t0) / 1000000000 ))
ok $([ "$secs" -ge 2 ] && [ "$secs" -le 15 ]; echo $?) "an SSE stream ends by itself after --max-stream-seconds (took ${secs} s)"
last=$(sed -n 's/^id: //p' "$OUT/s1.sse" | tail -1)
post "$A" '{"type":"signal","to":"bob","n":1}'
post "$A" '{"type":"signal","to":"bob","n":2}'
: >"$OUT/s2.sse"
timeout 20 curl -s -N -H "Authorization: Bearer $B" -H "Last-Event-ID: ${last:-0}" "$BASE/api/events" -o "$OUT/s2.sse"
is "$(sse_data "$OUT/s2.sse" | jq -c 'select(.type=="signal") | .n' | tr '\n' ' ')" "1 2 " \
	"signals sent between two streams arrive on the next one, once each, in order"
get "/api/poll?since=0&timeout=0" -H "Authorization: Bearer $A"
since=$(printf '%s' "$BODY" | jq -r .last)
t0=$(date +%s%N)
get "/api/poll?since=$since&timeout=25" -H "Authorization: Bearer $A"
secs=$(( ($(date +%s%N) - t0) / 1000000000 ))
ok $([ "$STATUS" = 200 ] && [ "$secs" -ge 2 ] && [ "$secs" -le 12 ]; echo $?) \
	"a long-poll asking 25 s with nothing to say is answered after --max-stream-seconds ($STATUS after ${secs} s)"
get /api/ws -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
ok $([ "$STATUS" != 101 ]; echo $?) "no WebSocket under mod_fcgid ($STATUS): clients use SSE or long-poll"
stop_server
done_testing
