#!/usr/bin/env bash
# check-layers.sh - no module uses one from a layer above it: neither by
# #include (the sources) nor by calling its functions (the symbols of the
# built objects, `make` first). Prints each offence; exits 1 if any.
# Layers, top down (docs/architecture.md); each is a folder of fcgi/, and
# base is usable by all:
#   4 transport: main (fcgi/main.c), fcgi/transport/: web fconn ws httpparse
#   3 delivery:  fcgi/deliver/: loop held marks fcgirec evfmt bell group maint
#   2 core:      fcgi/core/: core jsonv ratelimit
#   1 store:     fcgi/store/store.h (the interface)
#   1 store:     fcgi/store/store.c (dispatches each call to the engine of the handle)
#   0 engine:    fcgi/store/store_sqlite.c, store_pg.c, store_ops.h (implement store.h: their one include upward)
#   base:        fcgi/base/: error xalloc buf util log config metrics; schema (generated)
# A module's folder must be its layer's (a file moved to the wrong folder is
# an offence too), and every include names the folder: "core/core.h".
cd "$(dirname "$0")/.."
layer() {
	case $1 in
	main | web | fconn | ws | httpparse) echo 4 ;;
	loop | held | marks | fcgirec | evfmt | bell | group | maint) echo 3 ;;
	core | jsonv | ratelimit) echo 2 ;;
	store) echo 1 ;;
	store_sqlite | store_pg | store_ops) echo 0 ;;
	error | xalloc | buf | util | log | config | metrics | schema) echo base ;;
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
	case $1 in store_sqlite | store_pg | store_ops) [ "$2" = store ] && return 1 ;; esac
	[ "$b" -gt "$a" ]
}
folder() {
	case $(layer "$1") in
	4) [ "$1" = main ] && echo . || echo transport ;;
	3) echo deliver ;;
	2) echo core ;;
	1 | 0) echo store ;;
	base) echo base ;;
	esac
}
for f in fcgi/*.c fcgi/*/*.c fcgi/*/*.h; do
	m=$(basename "${f%.*}")
	d=$(dirname "${f#fcgi/}")
	[ "$d" = "$(folder "$m")" ] || { echo "folder: $f belongs in fcgi/$(folder "$m")/"; bad=1; }
	for inc in $(sed -n 's/^#include "\([a-z_/]*\)\.h"/\1/p' "$f"); do
		h=$(basename "$inc")
		[ "$(dirname "$inc")" = "$(folder "$h")" ] || { echo "include: $f names $inc.h, not $(folder "$h")/$h.h"; bad=1; }
		[ "$h" = "$m" ] && continue
		if above "$m" "$h"; then echo "include: $f includes $inc.h"; bad=1; fi
	done
done
# Which object defines each global function, then who calls it: the objects
# of today's sources only (a build/ from an older tree may hold others).
objs=""
for f in fcgi/*.c fcgi/*/*.c; do
	o=build/$(basename "${f%.c}").o
	[ -f "$o" ] && objs="$objs $o"
done
declare -A def
for o in $objs; do
	m=$(basename "${o%.o}")
	for s in $(nm --defined-only "$o" | awk '$2 ~ /[TD]/ {print $3}'); do def[$s]=$m; done
done
for o in $objs; do
	m=$(basename "${o%.o}")
	for s in $(nm --undefined-only "$o" | awk '{print $2}'); do
		t=${def[$s]:-}
		[ -n "$t" ] && [ "$t" != "$m" ] || continue
		if above "$m" "$t"; then echo "call: $m uses $s of $t"; bad=1; fi
	done
done
[ $bad = 0 ] && echo "layers: no include or call upward"
exit $bad
