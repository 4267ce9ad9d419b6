#!/usr/bin/env bash
# C unit tests of the core, store and parsers: once under ASan/UBSan, once
# under valgrind (which must report no error and no definite leak); and the
# layer rule of fcgi/'s folders (tools/check-layers.sh).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/out/10-unit
mkdir -p "$OUT"
make -s -C "$ROOT" build/unit build/unit-plain # rebuilt when a source changed
# The sanitizer run's own TAP is this test's output, less its plan;
# the valgrind run adds one line.
"$ROOT/build/unit" 2>"$OUT/unit.log" | grep -v '^1\.\.' >"$OUT/unit.tap"
status=${PIPESTATUS[0]}
cat "$OUT/unit.tap"
n=$(grep -cE '^(not )?ok ' "$OUT/unit.tap")
grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error' "$OUT/unit.log" | sed 's/^/# /'
n=$((n + 1))
if [ "$status" = 0 ] && ! grep -qE 'Sanitizer|runtime error' "$OUT/unit.log"; then
	echo "ok $n - the unit tests exit 0 with no sanitizer report"
else
	echo "not ok $n - the unit tests exit 0 with no sanitizer report (exit $status)"
fi
valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect "$ROOT/build/unit-plain" >"$OUT/valgrind.tap" 2>"$OUT/valgrind.log"
vstatus=$?
n=$((n + 1))
if [ "$vstatus" = 0 ]; then
	echo "ok $n - the unit tests pass under valgrind with no errors or leaks"
else
	echo "not ok $n - the unit tests pass under valgrind with no errors or leaks (exit $vstatus)"
	grep -v ' INFO ' "$OUT/valgrind.log" | head -30 | sed 's/^/#   /'
fi
# The layers (tools/check-layers.sh): no include or call upward, every module
# in its layer's folder. The objects it reads are the responder's.
make -s -C "$ROOT" build/signal-fcgi
layers=$("$ROOT/tools/check-layers.sh" 2>&1)
lstatus=$?
n=$((n + 1))
if [ "$lstatus" = 0 ]; then
	echo "ok $n - $layers"
else
	echo "not ok $n - the layers: no include or call upward"
	echo "$layers" | head -20 | sed 's/^/#   /'
fi
echo "1..$n"
