#!/usr/bin/env bash
# check-layers.sh - no module uses one from a layer above it: neither by
# #include (the sources) nor by calling its functions (the symbols of the
# built objects, `make` first). Prints each offence; exits 1 if any.
# Layers, top down (README, How it works); base is usable by all:
#   4 transport: main web ws httpparse
#   3 delivery:  loop held marks fcgirec evfmt bell group maint
#   2 core:      core jsonv ratelimit
#   1 store:     store (the interface)
#   0 engine:    store_sqlite (implements store.h: its one include upward)
#   base:        error xalloc buf util log config schema
cd "$(dirname "$0")/.."
layer() {
	case $1 in
	main | web | ws | httpparse) echo 4 ;;
	loop | held | marks | fcgirec | evfmt | bell | group | maint) echo 3 ;;
	core | jsonv | ratelimit) echo 2 ;;
	store) echo 1 ;;
	store_sqlite) echo 0 ;;
	error | xalloc | buf | util | log | config | schema) echo base ;;
	*) echo unknown ;;
	esac
}
bad=0
above() { # above FROM TO: is TO's layer above FROM's?
	local a b
	a=$(layer "$1"); b=$(layer "$2")
	[ "$a" = unknown ] || [ "$b" = unknown ] && { echo "unknown module: $1 or $2"; return 0; }
	[ "$b" = base ] && return 1
	[ "$a" = base ] && return 0
	[ "$1" = store_sqlite ] && [ "$2" = store ] && return 1
	[ "$b" -gt "$a" ]
}
for f in fcgi/*.c fcgi/*.h; do
	m=$(basename "${f%.*}")
	for h in $(sed -n 's/^#include "\([a-z_]*\)\.h"/\1/p' "$f"); do
		[ "$h" = "$m" ] && continue
		if above "$m" "$h"; then echo "include: $f includes $h.h"; bad=1; fi
	done
done
# Which object defines each global function, then who calls it.
declare -A def
for o in build/*.o; do
	m=$(basename "${o%.o}")
	for s in $(nm --defined-only "$o" | awk '$2 ~ /[TD]/ {print $3}'); do def[$s]=$m; done
done
for o in build/*.o; do
	m=$(basename "${o%.o}")
	for s in $(nm --undefined-only "$o" | awk '{print $2}'); do
		t=${def[$s]:-}
		[ -n "$t" ] && [ "$t" != "$m" ] || continue
		if above "$m" "$t"; then echo "call: $m uses $s of $t"; bad=1; fi
	done
done
[ $bad = 0 ] && echo "layers: no include or call upward"
exit $bad
