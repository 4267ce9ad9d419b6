#!/usr/bin/env bash
# Real WebRTC calls through the service in headless Chromium: the call page
# (www/) and its client library (www/signal.js), over SSE, long-poll and a
# restart mid-call, with fake camera and microphone; through a real coturn
# relay only (TURN credentials from the service); streams refused for the
# rate of a shared address. Needs Debian's chromium and coturn and npm's
# playwright-core: tests/browser/setup.sh installs them.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/50-browser${OUT_SUFFIX:-}
rm -rf "$OUT"; mkdir -p "$OUT"
if ! "$ROOT/tests/browser/setup.sh" >"$OUT/setup.log" 2>&1; then
	echo "not ok 1 - browser test set-up (chromium, playwright-core)"
	sed 's/^/# /' "$OUT/setup.log" | tail -20
	echo "1..1"
	exit 1
fi
timeout 600 node "$ROOT/tests/browser/calls.mjs" "$OUT"
