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
# check STATUS NAME [DIAG-FILE]: one more TAP line; on failure up to 30
# lines of DIAG-FILE follow as comments.
check() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2 (exit $1)"
		[ -n "${3:-}" ] && grep -v ' INFO ' "$3" | head -30 | sed 's/^/#   /'
	fi
}
grep -qE 'Sanitizer|runtime error' "$OUT/unit.log" && status=${status/#0/98}
check "$status" "the unit tests exit 0 with no sanitizer report" "$OUT/unit.log"
valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect "$ROOT/build/unit-plain" >"$OUT/valgrind.tap" 2>"$OUT/valgrind.log"
check $? "the unit tests pass under valgrind with no errors or leaks" "$OUT/valgrind.log"
# The layers (tools/check-layers.sh): no include or call upward, every module
# in its layer's folder. The objects it reads are the responder's.
make -s -C "$ROOT" build/signal-fcgi
"$ROOT/tools/check-layers.sh" >"$OUT/layers.log" 2>&1
check $? "layers: no include or call upward, every module in its layer's folder" "$OUT/layers.log"
echo "1..$n"
