#!/usr/bin/env bash
# The integration suite again, with nginx in front (nginx.conf as shipped,
# the responders started standalone with --listen) instead of lighttpd.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/90-nginx
rm -rf "$OUT"; mkdir -p "$OUT"
n=0; failed=0
for suite in 20-commands 30-delivery 40-prune 41-restart 42-procs 45-slow-reader 55-websocket 60-hostile 62-metrics 64-admin 65-security 67-front-errors 68-shared-address 70-readme 75-crash 76-exactly-once 85-fuzz; do
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
# nginx answers an oversized body (and every error of its own) itself, from
# errors/ in error.c's words: 67-front-errors.t (in the list above) checks
# each file against error.c and provokes each through nginx.
echo "1..$n"
[ $failed = 0 ]
