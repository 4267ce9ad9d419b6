#!/usr/bin/env bash
# Liveness: with a 4 s heartbeat timeout, a silent session is pruned within
# timeout + prune interval, its room is told once (two worker processes
# race to prune it), its token answers 401 and its mailbox is gone; an open
# stream keeps its session alive without pings.
. "$(dirname "$0")/lib.sh"

# 4 s, not less: alice's and carol's streams must open within the timeout
# of their logins, and on a loaded machine one curl can take 1.5 s to start.
HB=4
start_server --procs 2 -- --heartbeat-timeout $HB --prune-interval 1 || exit 1

A=$(login alice)
sse_open alice "$A"
C=$(login carol)
sse_open carol "$C"
wait_for "$OUT/alice.sse" '^retry:' 10 && wait_for "$OUT/carol.sse" '^retry:' 10
ok $? "alice's and carol's streams are open"
# The server's clock of bob's silence starts at his login, or at his join
# if that comes more than a second later (a session's last_seen is written
# at most once a second: TOUCH_EVERY_MS in core.c), so between the login's
# start (t_sent) and the join's answer (t0), which load can set far apart:
# the earliest bound counts from the one, the latest from the other.
t_sent=$(date +%s%N)
B=$(login bob)
post "$A" '{"type":"join","roomId":"r"}'
post "$B" '{"type":"join","roomId":"r"}'
t0=$(date +%s%N)
post "$C" '{"type":"join","roomId":"r"}'
post "$A" '{"type":"signal","to":"bob","x":1}'   # bob has mail when he dies

wait_for "$OUT/alice.sse" '"type":"user-left","userId":"bob"' 20
ok $? "the room is told user-left when a silent session is pruned"
now=$(date +%s%N)
ms=$(( (now - t0) / 1000000 ))
ms_sent=$(( (now - t_sent) / 1000000 ))
[ $ms_sent -ge $((HB * 1000)) ] && [ $ms -le $((HB * 1000 + 10000)) ]
ok $? "pruned within timeout + 10 s (${ms} ms after its last request was answered, ${ms_sent} ms after its login was sent)"
post "$B" '{"type":"ping"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 401/unauthorized "a pruned session's token answers 401"
is "$(sql "SELECT count(*) FROM sessions WHERE user_id='bob'")" 0 "the session row is gone"
is "$(sql "SELECT count(*) FROM events WHERE session_id NOT IN (SELECT id FROM sessions)")" 0 "its mailbox is gone"

sleep 2.5   # two more prune passes in each of the two processes
is "$(grep -c '"type":"user-left","userId":"bob"' "$OUT/alice.sse")" 1 "user-left is sent once, though two processes prune"
is "$(grep -c 'prune: user bob' "$OUT/server.log")" 1 "exactly one process pruned bob"

post "$A" '{"type":"room-users","roomId":"r"}'
is "$(echo "$BODY" | jq -c .users)" '["alice","carol"]' "sessions holding a stream stay alive without pings"
post "$C" '{"type":"ping"}'
is "$STATUS" 200 "carol's token (stream only, no pings since her join) still works"

# a silent id is free again: login as bob works (the old session is gone)
post "" '{"type":"login","userId":"bob"}'
is "$STATUS" 200 "the pruned id can log in again"

done_testing
