#!/usr/bin/env bash
# run-apache.sh - what `make run SERVER=apache` runs: the responder on a
# local port (restarted if it dies, as the systemd unit would), and Apache
# (Debian's apache2, mod_proxy_fcgi) with the shipped apache.conf in the
# foreground. Ctrl-C stops both. Apache's own log: RUNDIR/apache-error.log
# (RUNDIR default var/run/PORT: one directory per instance).
#   tools/run-apache.sh PORT BIND DB [responder options...]
set -eu
cd "$(dirname "$0")/.."
port=$1 bind=$2 db=$3
shift 3
backend=9001
while (echo >/dev/tcp/127.0.0.1/$backend) 2>/dev/null; do backend=$((backend + 1)); done
wsport=$((backend + 1))
while (echo >/dev/tcp/127.0.0.1/$wsport) 2>/dev/null; do wsport=$((wsport + 1)); done
run=${RUNDIR:-$PWD/var/run/$port}
mkdir -p "$run"
( set -f; while :; do build/signal-fcgi --listen "127.0.0.1:$backend" --ws-listen "127.0.0.1:$wsport" --db "$db" "$@"; sleep 1; done ) &
sup=$!
SIGNAL_ROOT=$PWD SIGNAL_RUNDIR=$run SIGNAL_BIND=$bind PORT=$port \
	SIGNAL_FCGI_URL=fcgi://127.0.0.1:$backend SIGNAL_WS_URL=http://127.0.0.1:$wsport \
	apache2 -d "$PWD" -f "$PWD/apache.conf" -DFOREGROUND &
web=$!
trap 'kill $web $sup 2>/dev/null; pkill -f "signal-fcgi --listen 127.0.0.1:$backend" 2>/dev/null; exit 0' INT TERM EXIT
wait $web
