#!/usr/bin/env bash
# GET /api/metrics: the Prometheus text format (promtool check metrics on a
# scrape taken under load), for the whole node: two responder processes
# share the counters, and they move exactly as this test's own traffic
# says; a killed responder's counts stay; --metrics-allow.
. "$(dirname "$0")/lib.sh"

# scrape FILE: GET /api/metrics into FILE (fails the test on a non-200).
scrape() {
	get /api/metrics
	printf '%s\n' "$BODY" >"$1"
	[ "$STATUS" = 200 ] || echo "# scrape answered $STATUS: $BODY"
}
# val FILE SERIES: the value of one series (0 when absent).
val() { awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }' "$1"; }
# delta A B SERIES: how much SERIES moved from scrape A to scrape B.
delta() { echo $(( $(val "$2" "$3") - $(val "$1" "$3") )); }
cmds() { echo "signal_commands_total{type=\"$1\",result=\"$2\"}"; }

start_server --procs 2 -- --verbose --recheck 30 || exit 1
scrape "$OUT/m0"
is "$STATUS" 200 "GET /api/metrics answers 200 from loopback"
get /api/metrics -D "$OUT/h0"
like "$(grep -i '^content-type' "$OUT/h0")" 'text/plain; version=0.0.4' "... as the Prometheus text format 0.0.4"

# The traffic: its effect on each counter is known exactly.
A=$(login alice)
B=$(login bob)
for i in 1 2 3; do login "extra$i" >/dev/null; done
post "$B" '{"type":"join","roomId":"m"}'       # the room is empty: no event
post "$A" '{"type":"join","roomId":"m"}'       # bob gets user-joined: 1 event
sse_open bob "$B"
wait_for "$OUT/bob.sse" '"type":"user-joined"' 5
for n in $(seq 1 20); do post "$A" "{\"type\":\"signal\",\"to\":\"bob\",\"n\":$n}"; done
post "$A" '{"type":"signal","to":"nobody","n":0}'   # 409 unknown-peer, queues nothing
for i in 1 2 3; do get /api/nowhere; done              # 3 x 404 not-found
for i in 1 2; do post "" '{"type":'; done              # 2 x 400 invalid-json
wait_for "$OUT/bob.sse" '"n":20[,}]' 10
sleep 0.3
scrape "$OUT/m1"

is "$(delta "$OUT/m0" "$OUT/m1" "$(cmds login ok)")" 5 "commands: 5 logins ok"
is "$(delta "$OUT/m0" "$OUT/m1" "$(cmds join ok)")" 2 "commands: 2 joins ok"
is "$(delta "$OUT/m0" "$OUT/m1" "$(cmds signal ok)")" 20 "commands: 20 signals ok"
is "$(delta "$OUT/m0" "$OUT/m1" "$(cmds signal unknown-peer)")" 1 "commands: 1 signal refused unknown-peer"
is "$(delta "$OUT/m0" "$OUT/m1" "$(cmds other invalid-json)")" 2 "commands: 2 bodies that were no JSON"
is "$(delta "$OUT/m0" "$OUT/m1" 'signal_errors_total{transport="http",code="not-found"}')" 3 "errors: 3 not-found over HTTP"
is "$(delta "$OUT/m0" "$OUT/m1" 'signal_errors_total{transport="http",code="invalid-json"}')" 2 "errors: 2 invalid-json over HTTP"
is "$(delta "$OUT/m0" "$OUT/m1" 'signal_http_errors_total{status="404"}')" 3 "errors: 3 by status 404"
is "$(delta "$OUT/m0" "$OUT/m1" 'signal_http_errors_total{status="409"}')" 1 "errors: 1 by status 409"
is "$(delta "$OUT/m0" "$OUT/m1" signal_events_queued_total)" 21 "events queued: 1 user-joined + 20 signals"
is "$(delta "$OUT/m0" "$OUT/m1" signal_events_delivered_total)" 21 "events delivered: bob's 21 on his stream"
is "$(delta "$OUT/m0" "$OUT/m1" signal_command_duration_seconds_count)" 30 "command latency: one observation per command (30)"
lat=$(delta "$OUT/m0" "$OUT/m1" signal_delivery_latency_seconds_count)
# One observation per delivery a bell woke (two events a busy loop reads in
# one pull are one observation): at least one, at most one per event.
[ "$lat" -ge 1 ] && [ "$lat" -le 21 ]; ok $? "commit-to-delivery latency: observed per bell-woken delivery ($lat for 20 signals)"
commits=$(delta "$OUT/m0" "$OUT/m1" signal_store_commit_duration_seconds_count)
[ "$commits" -ge 10 ]; ok $? "store commit time observed ($commits commits)"
is "$(val "$OUT/m1" signal_sessions)" 5 "gauge: 5 sessions"
is "$(val "$OUT/m1" signal_rooms)" 1 "gauge: 1 room"
is "$(val "$OUT/m1" 'signal_streams{transport="sse"}')" 1 "gauge: 1 SSE stream"
is "$(val "$OUT/m1" signal_responders)" 2 "gauge: 2 responder processes alive"
pids=$(grep -E 'cmd: signal by alice|login: user' "$OUT/server.log" | sed -E 's/.*\[([0-9]+)\].*/\1/' | sort -u | wc -l)
is "$pids" 2 "the traffic was served by both processes: the counts are the node's"
bells=$(delta "$OUT/m0" "$OUT/m1" signal_bell_wakeups_total)
[ "$bells" -ge 20 ]; ok $? "bell wake-ups counted ($bells)"

# Under load: four senders at once while scraping; every scrape passes
# promtool, and afterwards the counts are exact again.
for k in 1 2 3 4; do
	: >"$OUT/load-$k.curl"
	for i in $(seq 1 50); do
		[ "$i" = 1 ] || echo next >>"$OUT/load-$k.curl"
		printf 'url = "%s/api/cmd"\nheader = "Authorization: Bearer %s"\ndata-binary = "{\\"type\\":\\"signal\\",\\"to\\":\\"bob\\",\\"b\\":%d}"\noutput = /dev/null\n' \
			"$BASE" "$A" "$((k * 1000 + i))" >>"$OUT/load-$k.curl"
	done
done
senders=""
for k in 1 2 3 4; do curl -s -K "$OUT/load-$k.curl" & senders="$senders $!"; done
checked=0 passed=0
for i in 1 2 3; do
	scrape "$OUT/load$i"
	checked=$((checked + 1))
	promtool check metrics <"$OUT/load$i" >"$OUT/promtool$i.txt" 2>&1 && passed=$((passed + 1))
done
wait $senders
is "$passed/$checked" "$checked/$checked" "promtool check metrics passes on scrapes taken under load"
[ "$passed" = "$checked" ] || sed 's/^/#   /' "$OUT/promtool1.txt" | head -20
wait_for "$OUT/bob.sse" '"b":4050[,}]' 10
sleep 0.3
scrape "$OUT/m2"
is "$(delta "$OUT/m1" "$OUT/m2" "$(cmds signal ok)")" 200 "after the load: 200 more signals ok"
is "$(delta "$OUT/m1" "$OUT/m2" signal_events_delivered_total)" 200 "... and 200 more events delivered"
is "$(sse_data "$OUT/bob.sse" | jq -r 'select(.b) | .b' | wc -l)" 200 "... as bob's stream shows"

# The responder holding bob's stream killed: its counts stay in the node's
# (its slot is kept, and taken over by its successor); what it held open
# leaves the gauges.
victim=$(grep 'hold: stream open for bob' "$OUT/server.log" | sed -E 's/.*\[([0-9]+)\].*/\1/' | tail -1)
kill -9 "$victim"
for i in $(seq 1 100); do
	[ "$(responder_pids | wc -l)" -ge 2 ] && ! responder_pids | grep -qx "$victim" && break
	sleep 0.1
done
post "$A" '{"type":"ping"}'
for i in $(seq 1 50); do
	scrape "$OUT/m3"
	[ "$(val "$OUT/m3" 'signal_streams{transport="sse"}')" = 0 ] && [ "$(val "$OUT/m3" signal_responders)" = 2 ] && break
	sleep 0.1
done
[ "$(val "$OUT/m3" "$(cmds signal ok)")" -ge "$(val "$OUT/m2" "$(cmds signal ok)")" ]
ok $? "after kill -9 of responder $victim (bob's stream's): no counter went down ($(val "$OUT/m3" "$(cmds signal ok)") signals ok)"
is "$(delta "$OUT/m2" "$OUT/m3" "$(cmds ping ok)")" 1 "... and counting goes on (1 ping)"
is "$(val "$OUT/m3" signal_responders)" 2 "... 2 responders alive again"
is "$(val "$OUT/m3" 'signal_streams{transport="sse"}')" 0 "... its stream is out of the gauge"

post "" '{"type":"ping"}' >/dev/null
resp=$(curl -s -o /dev/null -w '%{http_code}' -d '' "$BASE/api/metrics")
is "$resp" 405 "POST /api/metrics: 405"
stop_server

# --metrics-allow: loopback is not on this list, so the scrape is refused.
start_server --db "$OUT/allow.db" -- --metrics-allow 192.0.2.7,2001:db8::/32 || exit 1
get /api/metrics
is "$STATUS" 403 "an address not in --metrics-allow gets 403"
is "$(echo "$BODY" | jq -r .error)" forbidden "... error forbidden"
stop_server
start_server --db "$OUT/allow2.db" -- --metrics-allow 10.0.0.0/8,127.0.0.0/8 || exit 1
get /api/metrics
is "$STATUS" 200 "a CIDR prefix in --metrics-allow admits its addresses"
stop_server

# The metrics file is trusted by every process of the database: never one
# reached through a link, or one another user may write.
if [ "$STORE" != postgres ]; then
	echo untouched >"$OUT/elsewhere"
	ln -sf "$OUT/elsewhere" "$OUT/link.db.metrics"
	start_server --db "$OUT/link.db" || exit 1
	get /api/metrics
	is "$STATUS" 200 "a metrics file that is a symbolic link: the service still answers"
	is "$(cat "$OUT/elsewhere")" untouched "... and the link's target is not written"
	like "$(cat "$OUT/server.log")" "metrics: cannot open .*link.db.metrics" "... and the log says the process counts alone"
	stop_server
	install -m 0666 /dev/null "$OUT/open.db.metrics"
	start_server --db "$OUT/open.db" || exit 1
	like "$(cat "$OUT/server.log")" "open.db.metrics is not a regular file of this user that only it may write" \
		"a metrics file others may write is refused too"
	stop_server
fi
"$ROOT/build/signal-fcgi" --listen 127.0.0.1:1 --db "$OUT/bad.db" --metrics-allow 'not an address' 2>"$OUT/bad.err"
is "$?" 2 "a bad --metrics-allow stops the responder at start"

done_testing
