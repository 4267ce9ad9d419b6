#!/usr/bin/env bash
# The PostgreSQL store (--store postgresql://...): the integration suites
# again against it, the way 90-nginx.t runs them through nginx, on a
# throwaway PostgreSQL 15 this test starts (and stops, by PID); then what
# only a networked store has to get right: processes racing on one
# database (tests/pgrace.py), the database going away and coming back, and
# a schema newer than the binary. PG_SUITES="20-commands ..." runs only
# those suites ("" none), for working on the rest.
. "$(dirname "$0")/lib.sh"

if ! pg_start; then
	ok 1 "a throwaway PostgreSQL 15 starts (tools/pg-local.sh)"
	done_testing
	exit 1
fi
diag "PostgreSQL on 127.0.0.1:$PG_PORT, data in $PG_DIR"
for suite in ${PG_SUITES-20-commands 30-delivery 40-prune 41-restart 42-procs 45-slow-reader 52-binding 55-websocket 60-hostile 62-metrics 64-admin 65-security 66-drain 75-crash 76-exactly-once}; do
	STORE=postgres PG_PORT=$PG_PORT OUT_SUFFIX=-pg bash "$ROOT/tests/$suite.t" >"$OUT/$suite.tap" 2>&1
	if [ $? = 0 ]; then
		ok 0 "$suite on PostgreSQL ($(grep -cE '^ok ' "$OUT/$suite.tap") checks, $(grep -c '# skip' "$OUT/$suite.tap") skipped)"
	else
		ok 1 "$suite on PostgreSQL"
		grep -E '^not ok' -A3 "$OUT/$suite.tap" | head -20 | sed 's/^/#   /'
	fi
done

# The C unit tests (tests/unit.c, ASan/UBSan build) with every fixture a
# PostgreSQL database.
make -s -C "$ROOT" build/unit
SIGNAL_UNIT_PG="host=127.0.0.1 port=$PG_PORT user=postgres" "$ROOT/build/unit" >"$OUT/unit.tap" 2>"$OUT/unit.log"
rc=$?
grep -qE 'Sanitizer|runtime error' "$OUT/unit.log" && rc=98
ok $rc "the unit tests on PostgreSQL ($(grep -c '^ok' "$OUT/unit.tap") checks), no sanitizer report"
grep -E '^not ok' -A2 "$OUT/unit.tap" | head -20 | sed 's/^/#   /'

# store_pg.c under AddressSanitizer/UBSan and under valgrind, as
# 80-sanitizers.t does for the SQLite store.
if [ -n "${PG_SUITES-x}" ]; then
	make -s -C "$ROOT" build/san/signal-fcgi
	mkdir -p "$OUT/asan"
	ASAN_OPTIONS="log_path=$OUT/asan/20-commands:detect_leaks=1:abort_on_error=0" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$OUT/asan/20-commands" \
	STORE=postgres PG_PORT=$PG_PORT SIGNAL_BIN=$ROOT/build/san/signal-fcgi OUT_SUFFIX=-pg-asan \
		bash "$ROOT/tests/20-commands.t" >"$OUT/20-commands-asan.tap" 2>&1
	ok $? "20-commands on PostgreSQL against the ASan/UBSan responder"
	is "$(ls "$OUT/asan" | wc -l)" 0 "... no sanitizer report"
	for f in "$OUT"/asan/*; do [ -f "$f" ] && sed 's/^/#   /' "$f" | head -40; done
	VG="$(command -v valgrind) -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --log-file=$OUT/valgrind.%p $ROOT/build/signal-fcgi"
	START_TRIES=400 STORE=postgres PG_PORT=$PG_PORT SIGNAL_BIN=$VG OUT_SUFFIX=-pg-valgrind \
		bash "$ROOT/tests/20-commands.t" >"$OUT/20-commands-valgrind.tap" 2>&1
	ok $? "20-commands on PostgreSQL against the responder under valgrind"
	errs=$(cat "$OUT"/valgrind.* 2>/dev/null | grep -v '^==[0-9]*== *$' | head -50)
	is "$errs" "" "... valgrind reports nothing (errors, definite leaks)"
	ls "$OUT"/valgrind.* >/dev/null 2>&1
	ok $? "... valgrind did run the responder"
fi

# --- three responder processes on one database, FastCGI straight to each ---
STORE=postgres
pg_db "$OUT/race.db" || exit 1
RACE_URL=$SERVER_PG_URL
PORTS=""
RESP=""
for i in 1 2 3; do
	p=$(free_port)
	"$ROOT/build/signal-fcgi" --listen "127.0.0.1:$p" --db "$OUT/unused.db" --store "$RACE_URL" --rate-ip 1000000 \
		--rate-session 1000000 --rate-login 1000000 --mailbox-limit 1000000 >>"$OUT/race.log" 2>&1 &
	RESP="$RESP $!"
	BG_PIDS="$BG_PIDS $!"
	PORTS="$PORTS,$p"
done
PORTS=${PORTS#,}
req() { python3 "$ROOT/tests/pgrace.py" req "$@"; } # req PORT METHOD URI [BODY [TOKEN]]
health_of() { req "$1" GET /api/health | sed -n 1p; }
status_of() { printf '%s\n' "$1" | sed -n 1p; }
body_of() { printf '%s\n' "$1" | sed -n 2p; }
up_all() { # up_all SECONDS: every responder answers its health check with 200
	local i p n
	for i in $(seq 1 $(($1 * 10))); do
		n=0
		for p in ${PORTS//,/ }; do [ "$(health_of "$p")" = 200 ] && n=$((n + 1)); done
		[ $n = 3 ] && return 0
		sleep 0.1
	done
	return 1
}
up_all 20; ok $? "three responders up on one PostgreSQL database"
python3 "$ROOT/tests/pgrace.py" race "$PORTS" >"$OUT/race.json" 2>"$OUT/race.err"
rc=$?
diag "$(cat "$OUT/race.json" "$OUT/race.err")"
ok $rc "races between processes: one login of a userId, exactly 5 of 10 joins, ids in commit order, none skipped"
is "$(jq -c '[.logins.bad, .joins.bad]' "$OUT/race.json")" '[[],[]]' "... every login race had one winner, every room 5 members"
is "$(jq -c '.order | [.lost, .duplicates, .ids_increasing, .per_sender_order]' "$OUT/race.json")" '[0,0,true,true]' \
	"... a reader after its cursor got every acknowledged signal once, ids strictly increasing"

# --- pruning exactly once: three processes prune the same silent users ---
pg_db "$OUT/prune.db" || exit 1
PPORTS=""
for i in 1 2 3; do
	p=$(free_port)
	"$ROOT/build/signal-fcgi" --listen "127.0.0.1:$p" --store "$SERVER_PG_URL" --heartbeat-timeout 20 \
		--prune-interval 1 --room-limit 20 --rate-ip 1000000 --rate-session 1000000 --rate-login 1000000 \
		>>"$OUT/prune.log" 2>&1 &
	BG_PIDS="$BG_PIDS $!"
	PRUNERS="${PRUNERS:-} $!"
	PPORTS="$PPORTS $p"
done
set -- $PPORTS
for i in $(seq 1 100); do [ "$(health_of "$3")" = 200 ] && break; sleep 0.1; done
W=$(body_of "$(req "$1" POST /api/cmd '{"type":"login","userId":"watcher"}')" | jq -r .token)
# The watcher pings from the background, each process in turn, for as long
# as the six are made and pruned: at a load of 19 one request here took
# seconds, and a watcher that pinged only between them was pruned too.
(k=0; while :; do k=$((k + 1))
	req "$(echo $PPORTS | cut -d' ' -f$((k % 3 + 1)))" POST /api/cmd '{"type":"ping"}' "$W" >/dev/null; sleep 0.5; done) &
PINGER=$!
BG_PIDS="$BG_PIDS $PINGER"
req "$1" POST /api/cmd '{"type":"join","roomId":"pr"}' "$W" >/dev/null
for i in 1 2 3 4 5 6; do
	p=$(echo $PPORTS | cut -d' ' -f$(( (i - 1) % 3 + 1 )))
	t=$(body_of "$(req "$p" POST /api/cmd "{\"type\":\"login\",\"userId\":\"silent$i\"}")" | jq -r .token)
	req "$p" POST /api/cmd '{"type":"join","roomId":"pr"}' "$t" >/dev/null
done
# The six go silent (20 s) while the watcher keeps pinging.
gone=""
for i in $(seq 1 240); do
	[ "$(sql "SELECT count(*) FROM sessions")" = 1 ] && { gone=1; break; }
	sleep 0.5
done
kill "$PINGER" 2>/dev/null; wait "$PINGER" 2>/dev/null
ok $([ -n "$gone" ]; echo $?) "six silent users pruned by three processes pruning at once"
left=$(body_of "$(req "$1" GET "/api/poll?since=0&timeout=0" "" "$W")" |
	jq -c '[.events[] | select(.type == "user-left") | .userId] | group_by(.) | map(length) | [length, unique]')
is "$left" '[6,[1]]' "... and the watcher got exactly one user-left for each"
for p in $PRUNERS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done

# --- the database goes away and comes back ---
# A long-poll waits at the second process across the outage; a signal sent
# through the first once the database is back must end it.
P1=${PORTS%%,*}
P2=$(echo "$PORTS" | cut -d, -f2)
TOK=$(body_of "$(req "$P1" POST /api/cmd '{"type":"login","userId":"away"}')" | jq -r .token)
TOK2=$(body_of "$(req "$P2" POST /api/cmd '{"type":"login","userId":"away2"}')" | jq -r .token)
req "$P1" POST /api/cmd '{"type":"join","roomId":"away"}' "$TOK" >/dev/null
req "$P2" POST /api/cmd '{"type":"join","roomId":"away"}' "$TOK2" >/dev/null
last=$(body_of "$(req "$P2" GET "/api/poll?since=0&timeout=0" "" "$TOK2")" | jq -r .last)
req "$P2" GET "/api/poll?since=$last&timeout=50" "" "$TOK2" >"$OUT/away-poll.out" &
POLL=$!
BG_PIDS="$BG_PIDS $POLL"
for i in $(seq 1 100); do [ "$(body_of "$(req "$P2" GET /api/health)" | jq .held)" = 1 ] && break; sleep 0.05; done
is "$(body_of "$(req "$P2" GET /api/health)" | jq .held)" 1 "a long-poll is held at the second process"
kill -INT "$PG_PID" # fast shutdown
for i in $(seq 1 600); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.05; done
out=$(req "$P1" GET /api/health)
is "$(status_of "$out")" 503 "database down: /api/health answers 503"
is "$(body_of "$out" | jq -r .store)" down "... saying \"store\":\"down\""
out=$(req "$P1" POST /api/cmd '{"type":"ping"}' "$TOK")
is "$(status_of "$out")/$(body_of "$out" | jq -r .error)" 503/busy "... and a command gets 503 busy"
sleep 2 # the held process's periodic work meets the outage too
kill -0 "$POLL" 2>/dev/null; ok $? "... the long-poll is still open"
alive=0
for p in $RESP; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
is "$alive" 3 "... no responder exited or crashed"
PG_PID=$("$ROOT/tools/pg-local.sh" start "$PG_DIR" "$PG_PORT" 2>>"$OUT/pg.log")
up_all 30; ok $? "database back: every responder reconnects and answers its health check with 200"
out=$(req "$P1" POST /api/cmd '{"type":"signal","to":"away2","n":7}' "$TOK")
is "$(status_of "$out")" 200 "... and the sessions made before are served again"
for i in $(seq 1 200); do kill -0 "$POLL" 2>/dev/null || break; sleep 0.05; done
out=$(cat "$OUT/away-poll.out")
is "$(status_of "$out")/$(body_of "$out" | jq -c '[.events[] | select(.type == "signal") | .n]')" '200/[7]' \
	"... and the long-poll held across the outage gets the signal"
# A restart between two commands: the connections it closed are replaced
# at once, before anything was sent on them, so the next command succeeds.
kill -INT "$PG_PID"
for i in $(seq 1 600); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.05; done
PG_PID=$("$ROOT/tools/pg-local.sh" start "$PG_DIR" "$PG_PORT" 2>>"$OUT/pg.log")
codes=""
for p in ${PORTS//,/ }; do codes="$codes $(status_of "$(req "$p" POST /api/cmd '{"type":"ping"}' "$TOK")")"; done
is "$codes" " 200 200 200" "a database restart between two commands: the next one succeeds at every process"
grep -q "connection to PostgreSQL is lost" "$OUT/race.log"; ok $? "the loss is logged"
grep -q "connected to PostgreSQL again" "$OUT/race.log"; ok $? "... and the return"
! grep -q "postgresql://" "$OUT/race.log"; ok $? "the store URI is never logged"
! grep -E "ERROR|AddressSanitizer|runtime error" "$OUT/race.log" | grep -v "auth-secret" | grep -q .
ok $? "no error in the responders' log"

# --- a schema newer than the binary knows is refused ---
for p in $RESP; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
pg_db "$OUT/race.db" # the race's database again (made already: kept)
pg_sql "$SERVER_PG" "UPDATE signal_schema SET version = 999"
timeout 20 "$ROOT/build/signal-fcgi" --listen "127.0.0.1:$(free_port)" --store "$RACE_URL" >"$OUT/newer.log" 2>&1
is "$?" 1 "a database at a newer schema version: the responder refuses to start"
grep -q "schema is at version 999, newer than this binary knows" "$OUT/newer.log"
ok $? "... and says why"

done_testing
