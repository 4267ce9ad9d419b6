#!/usr/bin/env bash
# Fuzzing, as `make test` sees it: every fuzz target replays its seed
# corpus and every crash input ever found (tests/fuzz/regress/) under
# ASan/UBSan; then >= 5,000 generated hostile requests against a running
# server get only JSON 4xx errors (or 2xx), no 5xx but 503, no hang, and a
# control pair still relays afterwards. (`make fuzz` runs the libFuzzer
# targets themselves for a bounded time.)
. "$(dirname "$0")/lib.sh"

for t in json http upgrade core; do
	make -s -C "$ROOT" "build/replay/$t" # rebuilt when a source changed
	out=$("$ROOT/build/replay/$t" "$ROOT/tests/fuzz/corpus/$t" "$ROOT/tests/fuzz/regress/$t" 2>&1 | grep -v ' INFO ')
	ok $? "fuzz target $t replays its corpus and regression inputs cleanly ($(echo "$out" | tail -1))"
done

start_server -- --rate-ip 100000 --rate-session 100000 --rate-login 100000 || exit 1
A=$(login alice); B=$(login bob); F=$(login fz); P=$(login fzpeer)
post "$F" '{"type":"join","roomId":"fuzzroom"}'; post "$P" '{"type":"join","roomId":"fuzzroom"}'
python3 "$ROOT/tests/hostile_gen.py" "$PORT" 5000 1729 "$F" "$P" >"$OUT/hostile.json" 2>"$OUT/hostile.err"
ok $? "5,000 generated hostile requests: only JSON 4xx errors or 2xx, no 5xx but 503, no hang"
jq -c '{sent, seconds, by_status, timeouts}' "$OUT/hostile.json" | sed 's/^/# /'
jq -c '.violations[]' "$OUT/hostile.json" 2>/dev/null | head -10 | sed 's/^/#   /'
is "$(jq .sent "$OUT/hostile.json")" 5000 "all 5,000 were answered"
post "$A" '{"type":"join","roomId":"control"}'; post "$B" '{"type":"join","roomId":"control"}'
sse_open bob "$B"
post "$A" '{"type":"signal","to":"bob","control":1}'
wait_for "$OUT/bob.sse" '"control":1' 5
ok $? "a control pair still relays afterwards"
is "$(curl -s "$BASE/api/health" | jq .ok)" true "health is fine"
grep -q 'ERROR' "$OUT/server.log"
ok $(( ! $? )) "no ERROR in the server log"
done_testing
