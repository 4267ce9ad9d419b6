#!/usr/bin/env bash
# The responder itself, not only the unit tests, under AddressSanitizer +
# UBSan and under valgrind: the integration suites run against an
# instrumented build that lighttpd spawns, and any report fails the test.
. "$(dirname "$0")/lib.sh"

SAN=$ROOT/build/san/signal-fcgi
make -s -C "$ROOT" build/san/signal-fcgi # rebuilt when a source changed
mkdir -p "$OUT/asan"

# lighttpd passes its environment on to the responders it spawns.
for suite in 20-commands 30-delivery 41-restart 55-websocket 60-hostile 62-metrics 64-admin 66-drain; do
	ASAN_OPTIONS="log_path=$OUT/asan/$suite:detect_leaks=1:abort_on_error=0" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$OUT/asan/$suite" \
	SIGNAL_BIN=$SAN OUT_SUFFIX=-asan bash "$ROOT/tests/$suite.t" >"$OUT/$suite-asan.tap" 2>&1
	ok $? "$suite passes against the ASan/UBSan responder"
done
# nginx's kept FastCGI connections (parked, given back, reaped, closed at
# the drain's end): the responders nginx talks to, instrumented.
ASAN_OPTIONS="log_path=$OUT/asan/90-nginx-kept:detect_leaks=1:abort_on_error=0" \
UBSAN_OPTIONS="print_stacktrace=1:log_path=$OUT/asan/90-nginx-kept" \
SIGNAL_BIN=$SAN OUT_SUFFIX=-asan bash "$ROOT/tests/90-nginx-kept.t" >"$OUT/90-nginx-kept-asan.tap" 2>&1
ok $? "90-nginx-kept passes against the ASan/UBSan responder"
reports=$(ls "$OUT/asan" 2>/dev/null | wc -l)
is "$reports" 0 "no sanitizer reports"
for f in "$OUT"/asan/*; do [ -f "$f" ] && sed 's/^/#   /' "$f" | head -40; done

# valgrind: slower, so the command suite and the WebSocket cases but the
# burst and the idle timeout.
VG="$(command -v valgrind) -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --log-file=$OUT/valgrind.%p $ROOT/build/signal-fcgi"
# The commands through nginx: every request after the first on a kept
# connection, parked and taken back (the ASan runs above cover lighttpd's
# connection per request).
FRONT=nginx START_TRIES=400 SIGNAL_BIN=$VG OUT_SUFFIX=-valgrind bash "$ROOT/tests/20-commands.t" >"$OUT/20-commands-valgrind.tap" 2>&1
ok $? "20-commands (through nginx, kept connections) passes against the responder under valgrind"
WS_CASES="seed errors mixed resume binding cid large frames keepalive" START_TRIES=400 SIGNAL_BIN=$VG OUT_SUFFIX=-valgrind \
	bash "$ROOT/tests/55-websocket.t" >"$OUT/55-websocket-valgrind.tap" 2>&1
ok $? "55-websocket passes against the responder under valgrind"
errs=$(cat "$OUT"/valgrind.* 2>/dev/null | grep -v '^==[0-9]*== *$' | head -50)
is "$errs" "" "valgrind reports nothing (errors, definite leaks)"
[ -z "$errs" ] || echo "$errs" | sed 's/^/#   /'
ls "$OUT"/valgrind.* >/dev/null 2>&1
ok $? "valgrind did run the responder"

done_testing
