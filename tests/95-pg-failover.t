#!/usr/bin/env bash
# PostgreSQL failover and the database away, under load. A primary with
# one synchronous standby (tools/pg-local.sh primary/standby: streaming
# replication, synchronous_commit = on, synchronous_standby_names), both
# throwaway servers on free ports of 127.0.0.1 that this test starts and
# stops by PID. Three responder processes behind lighttpd use the
# multi-host URI (127.0.0.1:P1,127.0.0.1:P2 with
# target_session_attrs=read-write), and four pairs relay numbered messages
# with cids over SSE and long-poll (tests/pgfailload.py) while
#  1. the primary is killed with SIGKILL (the postmaster and its children:
#     the machine gone) and the standby promoted (pg_ctl promote): the
#     responders reconnect through the URI to the promoted standby;
#  2. that new primary is stopped for ~5 s and started again: commands
#     meanwhile get 503 busy with Retry-After, streams stay open.
# Every message answered 200 arrives, in order per sender, none twice;
# the delays until the first relay succeeds again are printed (figures,
# not asserted: the machine may be busy).
. "$(dirname "$0")/lib.sh"

BIN=/usr/lib/postgresql/15/bin
P1=$(free_port)
P2=$(free_port)
D1=/tmp/signal-pg-test-$$-$P1
D2=/tmp/signal-pg-test-$$-$P2
PID1="" PID2=""
pg_pair_stop() {
	local p
	for p in $PID1 $PID2; do kill -INT "$p" 2>/dev/null; done
	for p in $PID1 $PID2; do
		for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
	done
	cp "$D1/server.log" "$OUT/pg-primary.log" 2>/dev/null
	cp "$D2/server.log" "$OUT/pg-standby.log" 2>/dev/null
	rm -rf "$D1" "$D2" "$D1.initdb.log" "$D2.basebackup.log"
}
trap 'cleanup; pg_pair_stop' EXIT
# wait_gone PID: until that process has exited (at most 30 s).
wait_gone() { for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done; return 1; }

PID1=$("$ROOT/tools/pg-local.sh" primary "$D1" "$P1" standby1 2>>"$OUT/pg.log")
ok $? "a primary on 127.0.0.1:$P1 that waits for the standby standby1"
PID2=$("$ROOT/tools/pg-local.sh" standby "$D2" "$P2" "$P1" standby1 2>>"$OUT/pg.log")
ok $? "its standby on 127.0.0.1:$P2, streaming and synchronous"
[ -n "$PID1" ] && [ -n "$PID2" ] || { sed 's/^/#   /' "$OUT/pg.log"; done_testing; exit 1; }
# Only now: until its standby is there, a commit on the primary waits.
PG_PORT=$P1 timeout 60 psql -h 127.0.0.1 -p "$P1" -U postgres -d postgres -XqAt -c "CREATE DATABASE signal" >>"$OUT/pg.log" 2>&1
ok $? "a database made on the primary (its commit waited for the standby)"
is "$(PG_PORT=$P1 pg_sql postgres "SELECT application_name || ' ' || sync_state FROM pg_stat_replication")" \
	"standby1 sync" "... the primary counts it as its synchronous standby"
is "$(PG_PORT=$P1 pg_sql postgres "SHOW synchronous_commit")" on "... and a commit waits for it (synchronous_commit = on)"
is "$(PG_PORT=$P2 pg_sql postgres "SELECT pg_is_in_recovery()")" t "... which answers read-only meanwhile"

URL="postgresql://postgres@127.0.0.1:$P1,127.0.0.1:$P2/signal?target_session_attrs=read-write"
start_server --procs 3 -- --store "$URL" --rate-ip 100000 --rate-session 100000 || exit 1
pairs=$(make_pairs "")
# A quiet pair besides the load: w holds a long-poll across each fault
# (nothing else touches w's session, so a second after it was sent the
# poll is surely held, not still claiming), x signals w once the database
# is back; the poll must end with that signal.
W=$(login w)
X=$(login x)
post "$W" '{"type":"join","roomId":"quiet"}'
post "$X" '{"type":"join","roomId":"quiet"}'
# until_200 TRIES CMD...: CMD (post or get) again, 0.1 s apart, until it
# sets STATUS=200; at most TRIES times.
until_200() {
	local tries=$1 _
	shift
	for _ in $(seq 1 "$tries"); do
		"$@"
		[ "$STATUS" = 200 ] && return 0
		sleep 0.1
	done
	return 1
}
# hold_poll NAME: w's long-poll after its newest event, in the background.
# Its first request (where the newest event is) may meet a process still
# reconnecting after the last fault and get 503 busy: asked again then, as
# a client does after Retry-After (a poll with since=null would be 400).
hold_poll() {
	local last=null
	until_200 100 get "/api/poll?since=0&timeout=0" -H "Authorization: Bearer $W" && last=$(jq -r .last <<<"$BODY")
	[ "$last" != null ] || diag "$1: the newest event was not found: $STATUS $BODY"
	curl -s -w '\n%{http_code}' -m 60 -H "Authorization: Bearer $W" "$BASE/api/poll?since=$last&timeout=50" \
		>"$OUT/$1.poll" &
	eval "$1=$!"
	BG_PIDS="$BG_PIDS $!"
}
# signal_until N: x signals w {"n":N} (with a cid) until it gets a 200.
signal_until() {
	until_200 300 post "$X" "{\"type\":\"signal\",\"to\":\"w\",\"n\":$1,\"cid\":\"x-$1\"}"
}
# poll_got NAME N: that poll ended with 200 and the signal N.
poll_got() {
	for _ in $(seq 1 200); do kill -0 "${!1}" 2>/dev/null || break; sleep 0.05; done
	local out
	out=$(cat "$OUT/$1.poll")
	printf '%s' "${out##*$'\n'}/$(jq -c '[.events[] | select(.type == "signal") | .n]' <<<"${out%$'\n'*}" 2>/dev/null)"
}
before=$(responder_pids | sort | tr '\n' ' ')
is "$(echo $before | wc -w)" 3 "three responder processes on the multi-host URI"

T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }
python3 "$ROOT/tests/pgfailload.py" "$BASE" "$pairs" 60 >"$OUT/result.json" 2>"$OUT/load.err" &
LOAD=$!
BG_PIDS="$BG_PIDS $LOAD"

# --- 1. the primary dies; the standby is promoted ---
hold_poll POLL1
sleep 3
kill -0 "$POLL1" 2>/dev/null; ok $? "a long-poll is held when the primary dies"
kids=$(pgrep -P "$PID1" | tr '\n' ' ')
kill -USR1 $LOAD
kill -9 "$PID1" $kids
diag "t=$(ms) ms: kill -9 of the primary (postmaster $PID1, children $kids)"
wait_gone "$PID1"; ok $? "the primary is gone"
PID1=""
# Its host does not answer any more: a listener on its port that accepts
# and never speaks, as a machine gone from the network does (its SYNs
# unanswered), so every reconnect waits connect_timeout on this host
# before it tries the next one. That wait must not stall a process's
# loop thread (the held streams).
python3 -c 'import resource, socket, sys
lim = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (lim[1], lim[1]))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512); held = []
while True: held.append(s.accept()[0])' "$P1" 2>>"$OUT/pg.log" &
HOLE=$!
BG_PIDS="$BG_PIDS $HOLE"
# What a failover manager would do once it sees the primary gone.
"$ROOT/tools/pg-local.sh" promote "$D2" 2>>"$OUT/pg.log"
ok $? "the standby is promoted (pg_ctl promote)"
kill -USR2 $LOAD
diag "t=$(ms) ms: the standby is a primary"
PG_PORT=$P2
signal_until 1; ok $? "... a signal to its user is answered 200 through the promoted standby"
is "$(poll_got POLL1)" "200/[1]" "... and the long-poll held across the failover gets it"

# --- 2. the database away for ~5 s ---
hold_poll POLL2
sleep 3
kill -0 "$POLL2" 2>/dev/null; ok $? "a long-poll is held when the database goes away"
AWAY=$(date +%s)
kill -INT "$PID2" # fast shutdown: the server closes every connection
wait_gone "$PID2"
kill -USR1 $LOAD
diag "t=$(ms) ms: PostgreSQL stopped"
out=$(curl -s -D "$OUT/away.hdr" -H "Authorization: Bearer $(jq -r '.[0].from_token' <<<"$pairs")" \
	--data-binary '{"type":"ping"}' "$BASE/api/cmd")
is "$(sed -n '1s/^HTTP[^ ]* \([0-9]*\).*/\1/p' "$OUT/away.hdr")/$(jq -r .error <<<"$out")" 503/busy \
	"database away: a command gets 503 busy"
like "$(tr -d '\r' <"$OUT/away.hdr")" '^Retry-After: [1-9]' "... with Retry-After"
out=$(curl -s -w '\n%{http_code}' "$BASE/api/health")
is "${out##*$'\n'}/$(jq -r .store <<<"${out%$'\n'*}")" 503/down "... and /api/health answers 503 \"store\":\"down\""
left=$(( 5 - ($(date +%s) - AWAY) ))
[ $left -gt 0 ] && sleep $left
PID2=$("$ROOT/tools/pg-local.sh" start "$D2" "$P2" 2>>"$OUT/pg.log")
ok $? "PostgreSQL started again"
kill -USR2 $LOAD
diag "t=$(ms) ms: PostgreSQL is back"
signal_until 2; ok $? "... a signal to its user is answered 200 once it is back"
is "$(poll_got POLL2)" "200/[2]" "... and the long-poll held across the outage gets it"
# Until the health check says so three times in a row (any process), then
# 2 s of relaying; the senders stop, the receivers drain.
n=0
for _ in $(seq 1 300); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/health")" = 200 ] && n=$((n + 1)) || n=0
	[ $n -ge 3 ] && break
	sleep 0.1
done
sleep 2
kill -HUP $LOAD

wait $LOAD
ok $? "the load ran to the end"
R=$OUT/result.json
jq -c '.pairs[]' "$R" | sed 's/^/# /'
diag "answers other than 200 (by status; conn: no answer): $(jq -c .statuses "$R")"
total=$(jq '[.pairs[].acked] | add' "$R")
[ "${total:-0}" -gt 100 ]; ok $? "messages acknowledged with 200 across both faults: $total"
is "$(jq -c '[.pairs[].lost | length] | add' "$R")" 0 "every acknowledged message arrived (0 lost)"
is "$(jq -c '[.pairs[] | select(.in_order | not)] | length' "$R")" 0 "in order per sender"
dups=$(jq -c '[.pairs[].duplicates] | add' "$R")
diag "duplicates: $dups"
is "$dups" 0 "no message arrived twice (each carries a cid)"
is "$(jq -c '[.pairs[].via] | unique' "$R")" '["poll","sse"]' "over both SSE and long-poll"
busy=$(jq .busy.count "$R")
[ "${busy:-0}" -gt 0 ]; ok $? "commands answered 503 while the database was away: $busy"
is "$(jq .busy.retry_after_ok "$R")" "$busy" "... each with a Retry-After of at least 1 s"
is "$(jq -c '.statuses | keys - ["503"]' "$R")" '[]' "... and nothing but 503 (no 500, no 502, no dropped answer)"
diag "retries answered from a stored reply (replayed): $(jq .replayed "$R")"
is "$(jq -c '[.sse_opens[]] | unique' "$R")" '[1]' "every SSE stream stayed open through both faults"
# The load's own long-polls sent a second or more before a fault and
# still open at it: held, most likely, but a claim waiting on a row lock
# of a busy mailbox may have been cut off instead (503): a figure.
diag "the load's long-polls open across a fault: $(jq .polls_across_fault "$R") (of $(jq .polls "$R")), not answered 200: $(jq -c .polls_across_fault_bad "$R")"
after=$(responder_pids | sort | tr '\n' ' ')
is "$after" "$before" "no responder exited or crashed"
jq -r '.timeline[] | "\(.mark): of the messages sent after it, the first 200 after \(.first_200_ms) ms, first relay after \(.first_relay_ms) ms"' "$R" |
	sed 's/^/# /'
diag "first relay after the primary's kill -9: $(jq '.timeline[0].first_relay_ms' "$R") ms," \
	"after the database came back: $(jq '.timeline[3].first_relay_ms' "$R") ms"

# --- the state after the failover is the old primary's ---
is "$(pg_sql signal "SELECT pg_is_in_recovery()")" f "the promoted standby is the primary now"
S1=$(jq -r '.[0].from_token' <<<"$pairs")
post "$S1" '{"type":"room-users","roomId":"room1"}'
is "$STATUS/$(jq -c '.users | sort' <<<"$BODY")" '200/["r1","s1"]' \
	"a session made before the failover works, its room as it was"
post "" '{"type":"login","userId":"r2","protocol":"webrtc"}'
is "$STATUS/$(jq -r .error <<<"$BODY")" 409/user-exists "a user logged in before the failover still holds its id"
is "$(pg_sql signal "SELECT count(*) FROM sessions")" 10 "... the sessions are those made before, no more"
n_lost=$(grep -c "connection to PostgreSQL is lost" "$OUT/server.log")
n_back=$(grep -c "connected to PostgreSQL again" "$OUT/server.log")
diag "log: 'lost' $n_lost times, 'connected again' $n_back times"
[ "$n_back" -ge 3 ] && [ "$n_back" = "$n_lost" ]; ok $? "every process logged each outage and its end"
! grep -q "postgresql://" "$OUT/server.log"; ok $? "the store URI is never logged"
! grep -E "AddressSanitizer|runtime error| ERROR " "$OUT/server.log" | grep -q .
ok $? "no error in the responders' log"
done_testing
