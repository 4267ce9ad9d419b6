#!/usr/bin/env bash
# The integration suites again through Apache (Debian's apache2), as
# 90-nginx.t runs them through nginx: with mod_proxy_fcgi (apache.conf as
# shipped, the responders standalone with --listen and --ws-listen), and
# with mod_fcgid spawning the shared-hosting bundle from a user's folder
# (FRONT=apache-fcgid: tests/apache-fcgid.conf, the bundle copied in by a
# user made for the test, run as that user by suEXEC); the browser calls
# once through each.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/91-apache
rm -rf "$OUT"; mkdir -p "$OUT"
n=0; failed=0
check() { # check NAME STATUS [TAP file]
	n=$((n + 1))
	if [ "$2" = 0 ]; then
		echo "ok $n - $1${3:+ ($(grep -cE '^ok ' "$3") checks)}"
	else
		failed=$((failed + 1))
		echo "not ok $n - $1"
		[ -n "${3:-}" ] && grep -E '^not ok|^# server did not' -A3 "$3" | head -20 | sed 's/^/#   /'
	fi
}
for p in apache2 /usr/lib/apache2/modules/mod_proxy_fcgi.so /usr/lib/apache2/modules/mod_fcgid.so /usr/lib/apache2/suexec; do
	command -v "$p" >/dev/null || [ -e "$p" ] || { echo "not ok 1 - $p is installed (make deps-test)"; echo "1..1"; exit 1; }
done

# apache.conf parses as shipped (with the addresses make run gives it).
SIGNAL_ROOT=$ROOT SIGNAL_RUNDIR=$OUT SIGNAL_BIND=127.0.0.1 PORT=8080 SIGNAL_FCGI_URL=fcgi://127.0.0.1:9001 \
	SIGNAL_WS_URL=http://127.0.0.1:9002 apache2 -d "$ROOT" -f "$ROOT/apache.conf" -t >"$OUT/configtest.log" 2>&1
check "apache.conf passes apache2 -t" $?

# The suites that exercise what a front server does (requests, held
# streams, resume across its restart, WebSocket through its proxy, hostile
# input, a responder dying mid-request); the rest test the responder alone
# and already run through lighttpd and nginx. make test stays short.
for suite in 20-commands 30-delivery 41-restart 55-websocket 60-hostile 67-front-errors 76-exactly-once; do
	FRONT=apache OUT_SUFFIX=-apache bash "$ROOT/tests/$suite.t" >"$OUT/$suite.tap" 2>&1
	check "$suite through Apache + mod_proxy_fcgi" $? "$OUT/$suite.tap"
done
FRONT=apache OUT_SUFFIX=-apache ONLY='two pages talk|the call over|survives a restart mid-setup|remote video' \
	bash "$ROOT/tests/50-browser.t" >"$OUT/50-browser.tap" 2>&1
check "browser calls through Apache + mod_proxy_fcgi" $? "$OUT/50-browser.tap"

# mod_fcgid: the commands, delivery, resume and hostile-input suites (the
# others need a --ws-listen, a process count or a command line, which a
# program spawned by mod_fcgid has not), and the calls without WebSocket.
make -s -C "$ROOT" shared-hosting >"$OUT/shared-hosting.log" 2>&1
check "make shared-hosting" $?
for suite in 20-commands 30-delivery 41-restart 60-hostile; do
	FRONT=apache-fcgid OUT_SUFFIX=-apache-fcgid bash "$ROOT/tests/$suite.t" >"$OUT/$suite-fcgid.tap" 2>&1
	check "$suite through Apache + mod_fcgid (the bundle in a user's folder)" $? "$OUT/$suite-fcgid.tap"
done
FRONT=apache-fcgid OUT_SUFFIX=-apache-fcgid ONLY='two pages talk|the call over SSE|the call over long-poll|survives a restart mid-setup' \
	bash "$ROOT/tests/50-browser.t" >"$OUT/50-browser-fcgid.tap" 2>&1
check "browser calls through Apache + mod_fcgid" $? "$OUT/50-browser-fcgid.tap"
echo "1..$n"
[ $failed = 0 ]
