#!/usr/bin/env bash
# serve.sh - a front server with its responders, as lib.sh's start_server
# starts them for FRONT (lighttpd, nginx, apache, apache-fcgid), in the
# foreground until SIGTERM, which stops both by PID. For test drivers in
# other languages (tests/browser/calls.mjs):
#   FRONT=apache [SERVE_LOG=FILE] tests/serve.sh PORT DB [responder options...]
# SERVE_LOG: where the responders' log goes (the driver reads it), instead
# of this run's own tests/out/ folder.
PORT_FIXED=1 PORT=$1
db=$2
shift 2
. "$(dirname "$0")/lib.sh"
[ -n "${SERVE_LOG:-}" ] && ln -sf "$SERVE_LOG" "$OUT/server.log"
trap 'exit 0' TERM INT
start_server --db "$db" -- "$@" || exit 1
echo "serving on $BASE through $FRONT"
while :; do sleep 1 & wait $!; done
