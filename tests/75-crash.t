#!/usr/bin/env bash
# Crash safety under load: pairs relay numbered messages over SSE and
# long-poll while a responder process is killed with SIGKILL three times
# and lighttpd is restarted once. Every message whose POST got a 200
# arrives, in order per sender, exactly once (each message carries a cid,
# so a POST retried after its answer was lost is answered from the stored
# reply); the database passes integrity_check.
. "$(dirname "$0")/lib.sh"

start_server --procs 2 -- --rate-ip 100000 --rate-session 100000 || exit 1
pairs=$(make_pairs "")

python3 "$ROOT/tests/crashload.py" "$BASE" "$pairs" 12 >"$OUT/result.json" 2>"$OUT/load.err" &
LOAD=$!
BG_PIDS="$BG_PIDS $LOAD"
kills=0
for t in 2 4 6; do
	sleep 2
	pid=$(responder_pids | shuf -n 1)
	[ -n "$pid" ] && kill -9 "$pid" && kills=$((kills + 1))
	diag "t=${t}s: kill -9 responder $pid"
done
sleep 2
diag "t=8s: restarting lighttpd"
stop_server
PORT_FIXED=1 start_server --procs 2 --db "$SERVER_DB" -- --rate-ip 100000 --rate-session 100000 || exit 1
is "$kills" 3 "three responders were killed with SIGKILL"
wait $LOAD
ok $? "the load ran to the end"
cat "$OUT/result.json" | jq -c '.pairs[]' | sed 's/^/# /'
diag "send attempts that failed (retried): $(jq .send_errors "$OUT/result.json")"
total=$(jq '[.pairs[].acked] | add' "$OUT/result.json")
[ "${total:-0}" -gt 100 ]; ok $? "messages acknowledged with 200 during the chaos: $total"
is "$(jq -c '[.pairs[].lost | length] | add' "$OUT/result.json")" 0 "every acknowledged message arrived"
is "$(jq -c '[.pairs[] | select(.in_order | not)] | length' "$OUT/result.json")" 0 "in order per sender"
diag "retries answered from a stored reply (replayed): $(jq .replayed "$OUT/result.json")"
is "$(jq -c '[.pairs[].duplicates] | add' "$OUT/result.json")" 0 "no message arrived twice (duplicates: 0)"
is "$(jq -c '[.pairs[].via] | unique' "$OUT/result.json")" '["poll","sse"]' "over both SSE and long-poll"
integrity_check "the database passes integrity_check"
done_testing
