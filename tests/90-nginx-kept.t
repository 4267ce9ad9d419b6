#!/usr/bin/env bash
# Kept FastCGI connections (nginx.conf: fastcgi_keep_conn on, upstream
# keepalive): nginx sends request after request on a few connections, an
# idle one occupies no request thread (more of them than threads, and
# requests are still served), held requests give theirs back when they
# end, a connection nginx lets go of is reaped, and an nginx reload or a
# responder restart under load loses nothing.
FRONT=nginx
. "$(dirname "$0")/lib.sh"

scrape() { get /api/metrics; printf '%s\n' "$BODY" >"$1"; }
val() { awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }' "$1"; }
delta() { echo $(( $(val "$2" "$3") - $(val "$1" "$3") )); }

THREADS=2
start_server -- --threads $THREADS --rate-ip 100000 --rate-session 100000 || exit 1
A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"k"}'
post "$B" '{"type":"join","roomId":"k"}'

# --- many requests, few connections ---
scrape "$OUT/m0"
fails=0
for i in $(seq 1 100); do
	post "$A" "{\"type\":\"signal\",\"to\":\"bob\",\"n\":$i}"
	[ "$STATUS" = 200 ] || fails=$((fails + 1))
done
is "$fails" 0 "100 signals through nginx answered 200"
scrape "$OUT/m1"
reqs=$(delta "$OUT/m0" "$OUT/m1" signal_fcgi_requests_total)
conns=$(delta "$OUT/m0" "$OUT/m1" signal_fcgi_connections_total)
diag "101 requests (and a scrape) came on $conns new connection(s): $reqs requests"
[ "$reqs" -ge 101 ] && [ "$conns" -le 3 ]; ok $? "they came on kept connections: $reqs requests, $conns new connections"
got="" since=0
for i in 1 2 3; do # a poll answers at most 64
	get "/api/poll?since=$since&timeout=0" -H "Authorization: Bearer $B"
	got="$got$(echo "$BODY" | jq -r '.events[] | select(.n) | .n' | tr '\n' ' ')"
	since=$(echo "$BODY" | jq .last)
done
is "$got" "$(seq 1 100 | tr '\n' ' ')" "bob has all 100, in order"

# --- a body refused unread keeps its connection ---
# Closing after the answer would race nginx's next request on it (502):
# the responder reads the rest of the body instead (up to --max-body).
head -c 40000 /dev/zero | tr '\0' x >"$OUT/big.txt"
scrape "$OUT/b0"
fails=0
for i in $(seq 1 20); do
	resp=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$OUT/big.txt" "$BASE/api/health")
	[ "$resp" = 405 ] || fails=$((fails + 1))
	post "$A" '{"type":"ping"}'
	[ "$STATUS" = 200 ] || fails=$((fails + 1))
done
is "$fails" 0 "20 refused 40 KB bodies (405), each followed by a command: all answered"
scrape "$OUT/b1"
conns=$(delta "$OUT/b0" "$OUT/b1" signal_fcgi_connections_total)
[ "$conns" -le 3 ]; ok $? "... on kept connections: $conns new connection(s) for 41 requests"

# --- more idle kept connections than request threads ---
# Six long-polls at once: nginx opens a connection for each (they are
# held on the loop, no thread), and each is given back when its poll ends.
pids=""
for i in 1 2 3 4 5 6; do
	T=$(login "poller$i")
	curl -s -o "$OUT/poll$i.json" -w '%{http_code}' -H "Authorization: Bearer $T" \
		"$BASE/api/poll?since=0&timeout=2" >"$OUT/poll$i.code" &
	pids="$pids $!"
done
wait $pids
codes=$(cat "$OUT"/poll?.code | tr -d '\n')
is "$codes" 200200200200200200 "six long-polls held at once, each answered after its wait"
scrape "$OUT/m2"
parked=$(val "$OUT/m2" signal_fcgi_parked_connections)
[ "$parked" -gt "$THREADS" ]; ok $? "$parked idle kept connections parked, more than the $THREADS request threads"
fails=0
for i in $(seq 1 20); do
	post "$A" '{"type":"ping"}'
	[ "$STATUS" = 200 ] || fails=$((fails + 1))
done
is "$fails" 0 "... and requests are still served (no thread waits on an idle one)"
t0=$(date +%s)
resp=$(curl -s -m 10 -w '%{http_code}' -o /dev/null -H "Authorization: Bearer $A" --data-binary '{"type":"ping"}' "$BASE/api/cmd")
is "$resp" 200 "a request answered in $(( $(date +%s) - t0 )) s with $parked kept connections idle"

# --- an SSE stream on a kept connection, and its end ---
sse_open bob "$B" -H "Last-Event-ID: $since"
sleep 0.5
post "$A" '{"type":"signal","to":"bob","n":"live"}'
wait_for "$OUT/bob.sse" '"n":"live"' 5
ok $? "an SSE stream delivers through a kept connection"
kill "$SSE_PID" 2>/dev/null
wait "$SSE_PID" 2>/dev/null
post "$A" '{"type":"ping"}'
is "$STATUS" 200 "a command after the stream's client went away"

# --- nginx reload: its old worker lets go of its kept connections ---
scrape "$OUT/m3"
kill -HUP "$SERVER_PID"
gone=1
for i in $(seq 1 100); do
	scrape "$OUT/m4"
	# The scrape itself holds one connection of the new worker.
	[ "$(val "$OUT/m4" signal_fcgi_parked_connections)" -le 1 ] && { gone=0; break; }
	sleep 0.1
done
ok $gone "after nginx -s reload the old worker's kept connections are reaped ($(val "$OUT/m3" signal_fcgi_parked_connections) -> $(val "$OUT/m4" signal_fcgi_parked_connections) parked)"

# --- reload and restart under load: nothing lost, nothing twice ---
# Senders retry with the same cid until answered 200 (crashload.py); the
# nginx reload and the responder's drain and restart happen meanwhile.
pairs=$(make_pairs r)
python3 "$ROOT/tests/crashload.py" "$BASE" "$pairs" 6 >"$OUT/result.json" 2>"$OUT/load.err" &
load=$!
sleep 1.5
kill -HUP "$SERVER_PID"
sleep 1.5
rpid=$(responder_pids | head -1)
kill -TERM "$rpid" 2>/dev/null
for i in $(seq 1 100); do # the restart loop starts the next one
	n=$(responder_pids | head -1)
	[ -n "$n" ] && [ "$n" != "$rpid" ] && break
	sleep 0.1
done
wait $load
ok $? "the load ran to the end"
jq -c '.pairs[]' "$OUT/result.json" | sed 's/^/# /'
[ -n "$n" ] && [ "$n" != "$rpid" ]; ok $? "the responder drained and was restarted ($rpid -> $n)"
total=$(jq '[.pairs[].acked] | add' "$OUT/result.json")
[ "${total:-0}" -gt 50 ]; ok $? "messages acknowledged with 200: $total"
is "$(jq -c '[.pairs[].lost | length] | add' "$OUT/result.json")" 0 "every acknowledged message arrived"
is "$(jq -c '[.pairs[] | select(.in_order | not)] | length' "$OUT/result.json")" 0 "in order per sender"
is "$(jq -c '[.pairs[].duplicates] | add' "$OUT/result.json")" 0 "none arrived twice"
drained=$(grep -c 'closed [0-9]* idle kept connection' "$OUT/server.log")
diag "drain log: $(grep -E 'drained in|idle kept' "$OUT/server.log" | tr '\n' ' ')"
grep -q 'AddressSanitizer\|runtime error' "$OUT/server.log"; ok $((!$?)) "no sanitizer report in the log"
done_testing
