#!/usr/bin/env bash
# The integration suite again, with nginx in front (nginx.conf as shipped,
# the responders started standalone with --listen) instead of lighttpd.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/90-nginx
rm -rf "$OUT"; mkdir -p "$OUT"
n=0; failed=0
for suite in 20-commands 30-delivery 40-prune 41-restart 42-procs 45-slow-reader 55-websocket 60-hostile 62-metrics 64-admin 65-security 70-readme 75-crash 76-exactly-once 85-fuzz; do
	n=$((n + 1))
	FRONT=nginx OUT_SUFFIX=-nginx bash "$ROOT/tests/$suite.t" >"$OUT/$suite.tap" 2>&1
	if [ $? = 0 ]; then
		echo "ok $n - $suite through nginx ($(grep -cE '^ok ' "$OUT/$suite.tap") checks)"
	else
		failed=$((failed + 1))
		echo "not ok $n - $suite through nginx"
		grep -E '^not ok' -A3 "$OUT/$suite.tap" | head -20 | sed 's/^/#   /'
	fi
done
# nginx answers an oversized body itself (nginx.conf, @too_large): in the
# words of error.c's SIG_E_TOO_LARGE, which the responder uses.
n=$((n + 1))
entry=$(sed -n 's/.*\[SIG_E_TOO_LARGE\] = {413, "\([^"]*\)", "\([^"]*\)"}.*/\1|\2/p' "$ROOT/fcgi/base/error.c")
want="return 413 '{\"type\":\"error\",\"success\":false,\"error\":\"${entry%%|*}\",\"msg\":\"${entry#*|}\"}\\n';"
if [ -n "$entry" ] && grep -qF "$want" "$ROOT/nginx.conf"; then
	echo "ok $n - nginx.conf's own 413 answer is error.c's too-large reply"
else
	failed=$((failed + 1))
	echo "not ok $n - nginx.conf's own 413 answer is error.c's too-large reply"
	echo "#   want in nginx.conf: $want"
fi
echo "1..$n"
[ $failed = 0 ]
