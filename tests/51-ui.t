#!/usr/bin/env bash
# The call page as a person uses it (tests/browser/ui.mjs): the room link,
# three labelled tiles each for three pages, mute seen from the other side,
# the diagnostics panel (each transport, a buffered stream, relay through a
# real coturn), screenshots at laptop and phone width in tests/out/51-ui/,
# and axe-core's accessibility check. tests/browser/setup.sh installs
# chromium, coturn, playwright-core and axe-core when missing.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/51-ui
rm -rf "$OUT"; mkdir -p "$OUT"
if ! "$ROOT/tests/browser/setup.sh" >"$OUT/setup.log" 2>&1; then
	echo "not ok 1 - browser test set-up (chromium, coturn, playwright-core, axe-core)"
	sed 's/^/# /' "$OUT/setup.log" | tail -20
	echo "1..1"
	exit 1
fi
timeout 300 node "$ROOT/tests/browser/ui.mjs" "$OUT"
