#!/usr/bin/env bash
# fcgid-clients.sh - how many simultaneous clients Debian's Apache + mod_fcgid
# carries with the shared-hosting bundle: the test's shared host
# (tests/apache-fcgid.conf, lib.sh FRONT=apache-fcgid) with Debian's own
# mod_fcgid settings (-DHOST_DEFAULTS) or with the ones docs/deployment.md
# asks of a host, and bench/fcgid-clients.py's rounds against it.
#   bench/fcgid-clients.sh [defaults|recommended] [N ...]   (even counts; default: defaults 26 50 100 140)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-defaults}
shift || true
[ $# -gt 0 ] || set -- 26 50 100 140
make -s -C "$ROOT" shared-hosting >/dev/null || exit 1
FRONT=apache-fcgid
OUT_SUFFIX=-bench-$mode
[ "$mode" = defaults ] && FCGID_DEFINE=-DHOST_DEFAULTS
. "$ROOT/tests/lib.sh"
# one address for every client here: no per-address limits
start_server -- --rate-login 1000000 --rate-ip 1000000 || exit 1
echo "# Apache + mod_fcgid ($mode settings), bundle at $BASE"
/usr/bin/python3 "$ROOT/bench/fcgid-clients.py" "$BASE" "$@" --seconds 50 --deadline 25
echo "# processes of the bundle at the end: $(pgrep -u "$FCGID_USER" -x signal.fcgi | wc -l)"
grep -c "can't apply process slot\|Resource temporarily unavailable\|mod_fcgid: .*timeout" "$OUT/run/apache-error.log" |
	sed 's/^/# mod_fcgid errors in the log: /'
