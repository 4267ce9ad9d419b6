#!/usr/bin/env bash
# Rate limits that suit a shared address (issue 14, item 6): with the
# defaults, 2,000 users behind one address log in and reopen their streams,
# and a login flood from it is still stopped; the login burst follows
# --rate-login; a stream refused for the rate is answered so that EventSource
# reconnects by itself (200 text/event-stream, retry:, one error event; the
# browser side is in tests/browser/calls.mjs); --trust-proxy decides whose
# X-Forwarded-For / X-Real-IP name the client, and nobody's by default.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
load() { "$PY" "$ROOT/tests/shared_load.py" "$BASE" "$@"; }

# ---------- defaults: an office of 2,000 behind one address ----------
start_server || exit 1
t0=$(date +%s) # the login bucket refills from here on (50 a second)
load logins 2000 office >"$OUT/logins.json"
is "$(jq -c .codes "$OUT/logins.json")" '{"200":2000}' "2,000 logins from one address with the default limits: every one 200"
diag "2,000 logins took $(jq .secs "$OUT/logins.json") s"
jq -r '.tokens[]' "$OUT/logins.json" >"$OUT/tokens"
load streams "$OUT/tokens" >"$OUT/streams.json"
is "$(jq -c '[.codes, .opened, .refused]' "$OUT/streams.json")" '[{"200":2000},2000,0]' \
	"... and all 2,000 reopen their streams (a ticket, then /api/events) at once: every one opens"
diag "2,000 stream reopenings took $(jq .secs "$OUT/streams.json") s"
# A flood from the same address is still stopped: 3,000 logins a minute
# (--rate-login), 2,000 of them used above, the rest plus what refilled.
load flood 8000 flood >"$OUT/flood.json"
passed=$(jq .passed "$OUT/flood.json")
refill=$(( ($(date +%s) - t0 + 2) * 50 ))
ok $([ "$(jq .refused "$OUT/flood.json")" -gt 0 ] && [ "$passed" -le $((1000 + refill)) ]; echo $?) \
	"a login flood from that address is stopped: $passed more passed (at most the 1,000 left + what refilled), then 429"
is "$(jq -c '[.body.error, .body.success, .body.retryAfter >= 1, (.retry_after | tonumber) >= 1]' "$OUT/flood.json")" \
	'["rate-limited",false,true,true]' "... with the JSON error, its retryAfter and Retry-After"
stop_server

# ---------- the login burst follows --rate-login (it was a literal 10) ----------
start_server --db "$OUT/burst.db" -- --rate-login 30 || exit 1
"$PY" - "$BASE" >"$OUT/wsburst.txt" 2>&1 <<'PYEOF'
import json, sys, threading, websocket
base = sys.argv[1].replace("http://", "ws://") + "/api/ws"
socks = [websocket.create_connection(base, timeout=15) for _ in range(20)]
go = threading.Barrier(20)
codes = [None] * 20
def run(i):
    go.wait()
    socks[i].send(json.dumps({"type": "login", "userId": "burst%d" % i}))
    while True:
        m = json.loads(socks[i].recv())
        if m.get("type") in ("login", "error"):
            codes[i] = 200 if m.get("success") else m.get("status")
            return
ts = [threading.Thread(target=run, args=(i,)) for i in range(20)]
[t.start() for t in ts]
[t.join() for t in ts]
print(" ".join(str(c) for c in sorted(codes, key=str)))
PYEOF
is "$(cat "$OUT/wsburst.txt")" "$(printf '200 %.0s' $(seq 1 20) | sed 's/ $//')" \
	"--rate-login 30: 20 logins arriving at once over WebSocket all pass (the burst is the option's)"
stop_server

# ---------- a refused stream: EventSource must be able to reconnect ----------
start_server --db "$OUT/refused.db" -- --rate-ip 2 || exit 1
T=$(login streamer)
post "$T" '{"type":"ticket"}'
TK=$(echo "$BODY" | jq -r .ticket)
# at_empty_bucket PATH HEAD BODY [HEADER]: GET PATH the moment the address's
# bucket is empty, headers and body into HEAD and BODY. Requests that go out
# one after another until one is refused and the next passes leave it
# empty then (the pass took what had just refilled); then PATH has 500 ms
# before the next token (2 a second). Emptying it with a fixed number of
# requests left a loaded machine's slow requests time to refill it.
at_empty_bucket() {
	python3 - "$PORT" "$@" <<'PY'
import http.client, sys, time
port, path, head_file, body_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
extra = dict([sys.argv[5].split(": ", 1)]) if len(sys.argv) > 5 else {}
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
def status():
    c.request("POST", "/api/cmd", body="{}")
    r = c.getresponse(); r.read()
    return r.status
deadline = time.time() + 20
while status() != 429 and time.time() < deadline:
    pass
while status() == 429 and time.time() < deadline:
    pass
c.request("GET", path, headers=extra)
r = c.getresponse()
c.sock.settimeout(3)
body = b""
try:
    while True:
        d = r.read1(65536)
        if not d:
            break
        body += d
except OSError:
    pass  # a stream that opened stays open: what came is enough
with open(head_file, "w") as f:
    f.write("HTTP/1.1 %d %s\r\n" % (r.status, r.reason))
    for k, v in r.getheaders():
        f.write("%s: %s\r\n" % (k, v))
with open(body_file, "wb") as f:
    f.write(body)
PY
}
at_empty_bucket "/api/events?ticket=$TK" "$OUT/sse.head" "$OUT/sse.body"
head=$(tr -d '\r' <"$OUT/sse.head")
like "$head" '^HTTP/1.1 200' "a stream over the rate is answered 200 (EventSource gives up on anything else)"
like "$head" 'Content-Type: text/event-stream' "... as an event stream"
like "$head" 'Retry-After: [0-9]+' "... with Retry-After"
wait_s=$(echo "$head" | sed -n 's/^Retry-After: //p')
retry=$(sed -n 's/^retry: //p' "$OUT/sse.body")
ok $([ -n "$retry" ] && [ "$retry" -ge $((wait_s * 1000)) ] && [ "$retry" -le $((wait_s * 2000)) ]; echo $?) \
	"... whose retry: ($retry ms) is the wait, spread over up to twice it"
is "$(sed -n 's/^data: //p' "$OUT/sse.body" | jq -c '[.type,.success,.error,.status,.retryAfter >= 1]')" \
	'["error",false,"rate-limited",429,true]' "... and one error event in the shape of every error"
is "$(grep -c '^id:' "$OUT/sse.body")" 0 "... without an id (the client's cursor stays)"
sleep 3
curl -s -D "$OUT/sse2.head" -o "$OUT/sse2.body" --max-time 2 "$BASE/api/events?ticket=$TK"
like "$(cat "$OUT/sse2.body")" '^retry: 2000' "the same URL and ticket open the stream once the bucket refilled (the ticket was not used)"
at_empty_bucket "/api/poll?timeout=0" "$OUT/poll.head" "$OUT/poll.body" "Authorization: Bearer $T"
is "$(sed -n '1s/^HTTP\/1.1 \([0-9]*\).*/\1/p' "$OUT/poll.head")/$(jq -c '[.error, .retryAfter >= 1]' "$OUT/poll.body")" \
	'429/["rate-limited",true]' "a long-poll over the rate: 429 with the JSON error"
stop_server

# ---------- --trust-proxy: whose X-Forwarded-For counts ----------
codes_for() { # codes_for XFF-OR-REALIP-HEADER... : one login per header, statuses
	local h c=""
	for h in "$@"; do
		get /api/cmd -X POST --data-binary "{\"type\":\"login\",\"userId\":\"u$RANDOM$RANDOM\"}" -H "$h"
		c="$c $STATUS"
	done
	echo "${c# }"
}
start_server --db "$OUT/notrust.db" -- --rate-login 3 || exit 1
is "$(codes_for 'X-Forwarded-For: 203.0.113.1' 'X-Forwarded-For: 203.0.113.2' 'X-Real-IP: 203.0.113.3' 'X-Forwarded-For: 203.0.113.4')" \
	"200 200 200 429" "no --trust-proxy: X-Forwarded-For and X-Real-IP are ignored (one address, 3 logins a minute)"
sleep 0.5
like "$(grep 'login: user' "$OUT/server.log" | tail -1)" 'from 127\.0\.0\.1$' "... and the log names the address that connected"
stop_server
start_server --db "$OUT/trust.db" -- --rate-login 3 --trust-proxy 10.0.0.0/8,127.0.0.1 || exit 1
is "$(codes_for 'X-Forwarded-For: 203.0.113.1' 'X-Forwarded-For: 203.0.113.2' 'X-Forwarded-For: 203.0.113.3' \
	'X-Forwarded-For: 203.0.113.4' 'X-Real-IP: 203.0.113.5' 'X-Forwarded-For: 198.51.100.1, 10.1.1.1')" \
	"200 200 200 200 200 200" "--trust-proxy 127.0.0.1: each forwarded client has its own bucket"
is "$(codes_for 'X-Forwarded-For: 203.0.113.9' 'X-Forwarded-For: 203.0.113.9' 'X-Forwarded-For: 203.0.113.9' \
	'X-Forwarded-For: 203.0.113.9')" "200 200 200 429" "... and one forwarded client is limited as itself"
is "$(codes_for 'X-Forwarded-For: 192.0.2.66, 203.0.113.9')" "429" \
	"... a hop the client wrote itself, left of an untrusted one, changes nothing"
sleep 0.5
like "$(grep 'login: user' "$OUT/server.log" | grep -c 'from 198\.51\.100\.1$')" '^1$' \
	"... trusted hops (10.1.1.1) are skipped to the client, as the log says"
like "$(grep 'login: user' "$OUT/server.log" | grep -c 'from 203\.0\.113\.5$')" '^1$' "... X-Real-IP is used from a trusted peer"
# over WebSocket: lighttpd adds the address it saw to X-Forwarded-For
"$PY" - "$BASE" <<'PYEOF' >"$OUT/wsxff.txt" 2>&1
import json, sys, websocket
ws = websocket.create_connection(sys.argv[1].replace("http://", "ws://") + "/api/ws", timeout=10,
                                 header=["X-Forwarded-For: 198.51.100.77"])
ws.send(json.dumps({"type": "login", "userId": "wsxff"}))
print(json.loads(ws.recv()).get("success"))
ws.close()
PYEOF
is "$(cat "$OUT/wsxff.txt")" True "a WebSocket login through the trusted front server"
sleep 0.5
like "$(grep 'user wsxff' "$OUT/server.log")" 'from 198\.51\.100\.77 \(WebSocket\)' "... is counted for the client its proxy named"
stop_server
"$ROOT/build/signal-fcgi" --listen 127.0.0.1:1 --trust-proxy 10.1.0.0/8 >"$OUT/badtrust.log" 2>&1
is "$?" 2 "--trust-proxy with host bits set (10.1.0.0/8) stops the responder with exit 2"
like "$(cat "$OUT/badtrust.log")" 'trust-proxy' "... saying which option"
done_testing
