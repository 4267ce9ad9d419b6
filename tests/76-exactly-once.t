#!/usr/bin/env bash
# Exactly once across the window between a commit and its answer. The
# responders run with SIGNAL_TEST_EXIT_AFTER_COMMITS (a fault injected for
# tests only): each exits right after its Nth committed command, before
# answering, and is restarted (lighttpd respawns it; under nginx the
# restart loop does). The client of that command sees an error although
# the command happened; it retries with the same cid and must be answered
# from the stored reply. Pairs relay numbered messages meanwhile: every
# one acknowledged arrives, in order, and none twice.
. "$(dirname "$0")/lib.sh"

# with_fault N: the server again on the same database, its responders
# exiting after every Nth commit (the pairs are made before, without it: a
# login lost that way would end the test, not test the keys).
with_fault() {
	stop_server
	export SIGNAL_TEST_EXIT_AFTER_COMMITS=$1
	PORT_FIXED=1 start_server --procs 2 --db "$SERVER_DB" -- --rate-ip 100000 --rate-session 100000 || exit 1
	unset SIGNAL_TEST_EXIT_AFTER_COMMITS
	FAULT_FROM=$(wc -l <"$OUT/server.log")
}
faults() { tail -n +"$((FAULT_FROM + 1))" "$OUT/server.log" | grep -c 'test fault: exiting after commit'; }
start_server --procs 2 -- --rate-ip 100000 --rate-session 100000 || exit 1
pairs=$(make_pairs a)
with_fault 40
python3 "$ROOT/tests/crashload.py" "$BASE" "$pairs" 8 >"$OUT/result.json" 2>"$OUT/load.err"
ok $? "the load ran to the end"
jq -c '.pairs[]' "$OUT/result.json" | sed 's/^/# /'
crashes=$(faults)
[ "${crashes:-0}" -ge 2 ]; ok $? "responders died between a commit and its answer: $crashes times"
replayed=$(jq .replayed "$OUT/result.json")
[ "${replayed:-0}" -ge 1 ]; ok $? "retries of those commands were answered from their stored reply: $replayed"
total=$(jq '[.pairs[].acked] | add' "$OUT/result.json")
[ "${total:-0}" -gt 100 ]; ok $? "messages acknowledged with 200: $total"
is "$(jq -c '[.pairs[].lost | length] | add' "$OUT/result.json")" 0 "every acknowledged message arrived"
is "$(jq -c '[.pairs[] | select(.in_order | not)] | length' "$OUT/result.json")" 0 "in order per sender"
is "$(jq -c '[.pairs[].duplicates] | add' "$OUT/result.json")" 0 "none arrived twice"
# The same crashes without cids deliver twice: the reason the keys exist.
# A second load, on new pairs, sends without keys; a crash every 15
# commits, so that several happen however slow the machine is.
with_fault "" # none while the pairs log in
pairs=$(make_pairs b)
with_fault 15
python3 "$ROOT/tests/crashload.py" "$BASE" "$pairs" 5 --no-cid >"$OUT/nocid.json" 2>>"$OUT/load.err"
ok $? "a second load, without cids, ran to the end"
jq -c '.pairs[]' "$OUT/nocid.json" | sed 's/^/# /'
dups=$(jq -c '[.pairs[].duplicates] | add' "$OUT/nocid.json") crashes=$(faults)
[ "${crashes:-0}" -ge 2 ] && [ "${dups:-0}" -ge 1 ]
ok $? "without cids such crashes ($crashes) delivered messages twice: $dups duplicates"
is "$(jq -c '[.pairs[].lost | length] | add' "$OUT/nocid.json")" 0 "... though none was lost"
integrity_check "the database passes integrity_check"
done_testing
