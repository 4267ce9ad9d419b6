#!/usr/bin/env bash
# WebSocket at /api/ws through the front server (lighttpd here, nginx in
# 90-nginx.t): the seed's message flow with a stock client, a WebSocket and
# an SSE client in one room, resume after a dropped socket, a cookie that
# never binds a socket by itself, more than 1 MiB through one socket, a 60 KiB
# message, bad frames and their close codes, keepalive pings, a burst of
# 10,000 messages, an idle client closed, and a socket that never reads
# while others keep relaying. The checks are in
# tests/ws_suite.py (Debian's python3-websocket, raw frames for bad ones).
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3 # Debian's, which has python3-websocket
suite() { # suite CASE...: run cases, turn PASS/FAIL lines into TAP
	local line
	while IFS= read -r line; do
		case "$line" in
		PASS\|*) ok 0 "${line#PASS|}" ;;
		FAIL\|*)
			line=${line#FAIL|}
			ok 1 "${line%%|*}"
			diag "  ${line#*|}"
			;;
		INFO\|*) diag "${line#INFO|}" ;;
		*) diag "$line" ;;
		esac
	done < <(SERVER_LOG="$OUT/server.log" "$PY" "$ROOT/tests/ws_suite.py" "$BASE" "$@" 2>&1)
}

# Limits raised only where a case needs it (capped_burst, below, runs with
# the default mailbox cap on purpose): a 60 KiB signal (default
# --max-signal is 32 KiB), and 10,000 messages sent faster than the
# once-a-second delivery marks shrink the mailbox (default cap 1,000
# undelivered, answered 429 beyond) and faster than the rate limits (the
# suite logs in a few dozen users within a minute from one address).
start_server -- --max-signal 65536 --mailbox-limit 20000 --rate-session 100000 --rate-ip 100000 --rate-login 100000 --ws-ping 1 || exit 1
suite ${WS_CASES:-seed errors mixed resume binding cid large volume frames garbage keepalive burst}
health=$(curl -s "$BASE/api/health")
like "$health" '"ok":true' "the responder is healthy after every bad frame"
stop_server

if [ -z "${WS_CASES:-}" ]; then
	start_server -- --heartbeat-timeout 3 --ws-ping 1 --write-timeout 3 --rate-session 100000 --rate-ip 100000 || exit 1
	suite capped_burst idle slow
	stop_server
fi
if grep -E "ERROR|AddressSanitizer|runtime error" "$OUT/server.log" >/dev/null; then
	ok 1 "no errors in the server log"
	grep -E "ERROR|AddressSanitizer|runtime error" "$OUT/server.log" | head -5 | sed 's/^/#   /'
else
	ok 0 "no errors in the server log"
fi
done_testing
