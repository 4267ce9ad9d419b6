#!/usr/bin/env bash
# run-cluster.sh - what `make cluster` runs: NODES nodes on one PostgreSQL,
# each a lighttpd with its responders (as `make run` starts one) on
# 127.0.0.1:PORT+1 ... PORT+NODES, and an nginx load balancer on BIND:PORT
# in front of them. STORE_ARGS (set by tools/run-postgres.sh) points every
# responder at the database. Ctrl-C stops everything it started, by PID.
#   STORE_ARGS="--store URL" tools/run-cluster.sh NODES PORT BIND PROCS [responder options...]
# No sticky sessions: the state is in the database and a wake-up crosses
# nodes (LISTEN/NOTIFY), so any node serves any request of any client.
# Runtime files: var/run/PORT/ (the balancer) and var/run/PORT+i/ (node i);
# RUNROOT instead of var/run if given (the tests).
set -eu
cd "$(dirname "$0")/.."
runroot=${RUNROOT:-$PWD/var/run}
nodes=$1 port=$2 bind=$3 procs=$4
shift 4
[ -n "${STORE_ARGS:-}" ] || { echo "run-cluster: no STORE_ARGS (run it through tools/run-postgres.sh)" >&2; exit 2; }
lb=$runroot/$port
mkdir -p "$lb/nginx"
pids=""
stop() {
	trap - INT TERM EXIT
	# lighttpd stops the responders it spawned (SIGTERM: they drain).
	for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	exit 0
}
trap stop INT TERM EXIT
ups=""
for i in $(seq 1 "$nodes"); do
	np=$((port + i))
	run=$runroot/$np
	mkdir -p "$run"
	# The metrics file lives beside --db: one per node.
	SIGNAL_ROOT=$PWD SIGNAL_BIN=$PWD/build/signal-fcgi SIGNAL_RUNDIR=$run SIGNAL_DB=$run/signal.db \
		SIGNAL_ARGS="$STORE_ARGS --trust-proxy 127.0.0.1 $*" SIGNAL_PROCS=$procs SIGNAL_BIND=127.0.0.1 PORT=$np \
		setsid lighttpd -D -f lighttpd.conf &
	pids="$pids $!"
	ups="$ups        server 127.0.0.1:$np max_fails=1 fail_timeout=2s;
"
	echo "node $i: http://127.0.0.1:$np/ (lighttpd pid $!, $procs responder(s), runtime files in $run)"
done
# The balancer: plain HTTP proxying to the nodes' front servers, streams
# unbuffered, the WebSocket Upgrade passed on. A POST is never retried on
# another node by nginx (non_idempotent is not set): a client's cid makes
# its own retry safe, a proxy's would not know the answer was lost.
cat >"$lb/balancer.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $lb/nginx.pid;
error_log stderr warn;
events { worker_connections 9000; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path $lb/nginx/body;
    proxy_temp_path $lb/nginx/proxy;
    fastcgi_temp_path $lb/nginx/fastcgi;
    scgi_temp_path $lb/nginx/scgi;
    uwsgi_temp_path $lb/nginx/uwsgi;
    upstream signal_nodes {
        least_conn;
$ups        keepalive 32;
    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    server {
        listen $bind:$port;
        client_max_body_size 1m;
        location / {
            proxy_pass http://signal_nodes;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;  # with its port: the same-origin check compares it
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
            proxy_next_upstream error timeout;
        }
    }
}
EOF
setsid nginx -p "$PWD" -c "$lb/balancer.conf" &
pids="$pids $!"
echo "balancer: http://$bind:$port/ (nginx pid $!) in front of $nodes node(s); Ctrl-C stops all of it"
wait
