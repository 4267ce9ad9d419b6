#!/usr/bin/env bash
# run-nginx.sh - what `make run SERVER=nginx` runs: the responder on a local
# port (restarted if it dies, as the systemd unit would), and nginx with the
# shipped nginx.conf in the foreground. Ctrl-C stops both.
#   tools/run-nginx.sh PORT BIND DB [responder options...]
# Its runtime files go under RUNDIR (default var/run/PORT): one directory
# per instance.
set -eu
cd "$(dirname "$0")/.."
port=$1 bind=$2 db=$3
shift 3
backend=9001
while (echo >/dev/tcp/127.0.0.1/$backend) 2>/dev/null; do backend=$((backend + 1)); done
wsport=$((backend + 1))
while (echo >/dev/tcp/127.0.0.1/$wsport) 2>/dev/null; do wsport=$((wsport + 1)); done
run=${RUNDIR:-$PWD/var/run/$port}
mkdir -p "$run/nginx"
# The WebSocket port first: the FastCGI one may become 9002. Each server
# line keeps its parameters (max_fails...).
sed -e "s|listen 127.0.0.1:8080;|listen $bind:$port;|" -e "s|server 127.0.0.1:9002\([^;]*\);|server 127.0.0.1:$wsport\1;|" \
	-e "s|server 127.0.0.1:9001\([^;]*\);|server 127.0.0.1:$backend\1;|" \
	-e "s|^pid .*|pid $run/nginx.pid;|" -e "s|var/nginx/|$run/nginx/|" nginx.conf >"$run/nginx.conf"
( set -f; while :; do build/signal-fcgi --listen "127.0.0.1:$backend" --ws-listen "127.0.0.1:$wsport" --db "$db" "$@"; sleep 1; done ) &
sup=$!
# Ctrl-C: the responder drains first (clients told to reconnect, through
# nginx, which is still up), then nginx stops gracefully. nginx runs in a
# session of its own so that the terminal's SIGINT (a fast shutdown for
# nginx) does not cut the streams before they are told.
me="signal-fcgi --listen 127.0.0.1:$backend"
stop() {
	trap - INT TERM EXIT
	kill $sup 2>/dev/null # no restart
	pkill -TERM -f "$me" 2>/dev/null # the drain (the terminal's SIGINT may have begun it)
	for _ in $(seq 1 150); do pgrep -f "$me" >/dev/null || break; sleep 0.1; done
	nginx -p "$PWD" -c "$run/nginx.conf" -s quit 2>/dev/null
	wait
	exit 0
}
trap stop INT TERM EXIT
setsid nginx -p "$PWD" -c "$run/nginx.conf" &
wait $!
