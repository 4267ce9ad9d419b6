# tests/lib.sh - shared helpers for the curl-driven integration tests.
#
# Each test script sources this file, starts its own lighttpd (with the
# responder spawned by it) on a free 127.0.0.1 port with a fresh database,
# speaks TAP on stdout, and stops the server it started, by PID, on exit.
#
#   start_server [--procs N] [--db FILE] [-- responder options...]
#                         FRONT=nginx runs nginx (nginx.conf) in front of
#                         standalone responders instead of lighttpd,
#                         FRONT=apache Apache with mod_proxy_fcgi (apache.conf)
#                         the same way, FRONT=apache-fcgid Apache with
#                         mod_fcgid spawning the shared-hosting bundle
#                         (tests/apache-fcgid.sh);
#                         LIGHTTPD_CONF / NGINX_SED / APACHE_SED: a changed copy of the
#                         shipped config (tests/67-front-errors.t);
#                         STORE=postgres (with PG_PORT: a server pg_start
#                         started) keeps the state in PostgreSQL instead, one
#                         database per --db FILE (PG_PASSWORD: a password in
#                         its URL, which trust authentication ignores)
#   sql QUERY             -> the rows of QUERY on the store that runs (SQLite
#                         file or PostgreSQL database), `|`-separated
#   port_run N            -> the first of N consecutive free ports (a cluster's)
#   pg_start / pg_stop    a throwaway PostgreSQL on a free port: PG_PORT, PG_PID
#   stop_server           (returns once its responders have exited)
#   login USER            -> prints the token (fails the test on error)
#   post TOKEN JSON       -> sets $STATUS and $BODY
#   get PATH [curl args]  -> sets $STATUS and $BODY
#   ok COND NAME / is GOT WANT NAME / like GOT REGEX NAME / skip NAME REASON
#   done_testing

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTNAME=$(basename "$0" .t)
OUT="$ROOT/tests/out/$TESTNAME${OUT_SUFFIX:-}"
rm -rf "$OUT"
mkdir -p "$OUT"
_T_N=0
_T_FAIL=0
SERVER_PID=""
BACKEND_PGIDS=""
BG_PIDS=""
FRONT=${FRONT:-lighttpd}
STORE=${STORE:-sqlite}
PG_PID=""
PG_DIR=""
PG_MADE=" " # databases this test created (dropped and made afresh once per test)

ok() { # ok EXIT_STATUS_OR_0/1 NAME
	_T_N=$((_T_N + 1))
	if [ "$1" = 0 ] || [ "$1" = true ]; then
		echo "ok $_T_N - $2"
	else
		echo "not ok $_T_N - $2"
		_T_FAIL=$((_T_FAIL + 1))
	fi
}
is() {
	if [ "$1" = "$2" ]; then ok 0 "$3"; else
		ok 1 "$3"
		echo "#   got:      '$1'"
		echo "#   expected: '$2'"
	fi
}
like() {
	if printf '%s' "$1" | grep -Eq -- "$2"; then ok 0 "$3"; else
		ok 1 "$3"
		echo "#   got:   '$(printf '%s' "$1" | head -c 400)'"
		echo "#   match: '$2'"
	fi
}
skip() { # skip NAME REASON: a check that does not apply here, counted and shown as such
	_T_N=$((_T_N + 1))
	echo "ok $_T_N - $1 # skip $2"
}
diag() { echo "# $*"; }
done_testing() {
	echo "1..$_T_N"
	[ "$_T_FAIL" = 0 ]
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# port_run N: the first of N consecutive ports that bind now, below the
# ephemeral range, where a client connection's local port could take a
# node's port while it is down (restarted) or not yet bound.
port_run() {
	python3 -c '
import random, socket, sys
for _ in range(200):
    base, ss = random.randrange(20000, 32000), []
    try:
        for k in range(int(sys.argv[1])):
            s = socket.socket(); s.bind(("127.0.0.1", base + k)); ss.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in ss: s.close()
' "$1"
}

# start_server [--procs N] [--workers N] [--db FILE] [-- responder options]
# (--workers: lighttpd processes; lighttpd only)
start_server() {
	local procs=1 db="$OUT/signal.db" workers=1 session=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--procs) procs=$2; shift 2 ;;
		--workers) workers=$2; shift 2 ;;
		--db) db=$2; shift 2 ;;
		--) shift; break ;;
		*) break ;;
		esac
	done
	# A 10-minute heartbeat unless the test gives its own (the last one
	# given wins): on a loaded machine a suite's steps can leave a user
	# silent for over the default 60 s, and a pruned session fails checks
	# that have nothing to do with liveness (40-prune tests that).
	SERVER_ARGS="--heartbeat-timeout 600 $*"
	SERVER_DB=$db
	if [ "$STORE" = postgres ]; then
		pg_db "$db" || return 1
		SERVER_ARGS="--store $SERVER_PG_URL $SERVER_ARGS"
	fi
	SERVER_PROCS=$procs
	[ -n "${PORT_FIXED:-}" ] || PORT=$(free_port)
	BASE="http://127.0.0.1:$PORT"
	[ "$FRONT" = apache-fcgid ] && BASE="$BASE/~$FCGID_USER/signal"
	mkdir -p "$OUT/run"
	local bin=${SIGNAL_BIN:-$ROOT/build/signal-fcgi}
	if [ "$FRONT" = nginx ]; then
		start_nginx "$bin" "$procs" "$db"
	elif [ "$FRONT" = apache ]; then
		start_apache "$bin" "$procs" "$db"
	elif [ "$FRONT" = apache-fcgid ]; then
		start_apache_fcgid "$procs" "$db"
	else
		# Several workers: the master signals its process group to stop them.
		[ "$workers" -gt 1 ] && session=setsid
		SIGNAL_ROOT=$ROOT SIGNAL_BIN=$bin SIGNAL_RUNDIR=$OUT/run SIGNAL_DB=$db SIGNAL_ARGS="$SERVER_ARGS" \
			SIGNAL_PROCS=$procs SIGNAL_WORKERS=$workers SIGNAL_BIND=127.0.0.1 PORT=$PORT \
			$session lighttpd -D -f "${LIGHTTPD_CONF:-$ROOT/lighttpd.conf}" >>"$OUT/server.log" 2>&1 &
		SERVER_PID=$!
	fi
	local i
	for i in $(seq 1 ${START_TRIES:-100}); do
		if curl -sf -o /dev/null "$BASE/api/health"; then return 0; fi
		sleep 0.05
	done
	echo "# server did not come up; log:"; sed 's/^/#   /' "$OUT/server.log"
	return 1
}

# nginx in front of PROCS standalone responders (--listen on free ports),
# with nginx.conf as shipped but for its ports and paths.
start_nginx() {
	local bin=$1 procs=$2 db=$3 i=0 p ups="" wsups=""
	mkdir -p "$OUT/run/nginx"
	start_backends "$bin" "$procs" "$db"
	for p in $BACKEND_PORTS; do
		i=$((i + 1))
		ups="$ups server 127.0.0.1:$p\\1;"
		wsups="$wsups server unix:$OUT/run/ws-$i.sock\\1;"
	done
	# Each server line keeps the parameters (max_fails...) nginx.conf gives.
	sed -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$PORT;|" -e "s|server 127.0.0.1:9001\\([^;]*\\);|$ups|" \
		-e "s|server 127.0.0.1:9002\\([^;]*\\);|$wsups|" \
		-e "s|^pid .*|pid $OUT/run/nginx.pid;|" -e "s|var/nginx/|$OUT/run/nginx/|" ${NGINX_SED:+-e "$NGINX_SED"} \
		"$ROOT/nginx.conf" >"$OUT/nginx.conf"
	nginx -p "$ROOT" -c "$OUT/nginx.conf" >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
}

# Standalone responders for nginx and Apache, one per --procs, each on its
# own --listen port and WebSocket socket. A restart loop stands in for
# systemd's Restart=always, so a killed responder comes back.
start_backends() {
	local bin=$1 procs=$2 db=$3 i bport
	BACKEND_PORTS=""
	for i in $(seq 1 "$procs"); do
		bport=$(free_port)
		# WebSocket on a unix socket here (TCP in the shipped nginx.conf).
		setsid bash -c "set -f; while :; do $bin --listen 127.0.0.1:$bport --ws-listen $OUT/run/ws-$i.sock --db $db $SERVER_ARGS; sleep 0.2; done" \
			>>"$OUT/server.log" 2>&1 &
		BACKEND_PGIDS="$BACKEND_PGIDS $!"
		BACKEND_PORTS="$BACKEND_PORTS $bport"
	done
}

# Apache with mod_proxy_fcgi (apache.conf) in front of PROCS standalone
# responders; with more than one, a balancer of them in an extra file.
start_apache() {
	local bin=$1 procs=$2 db=$3 p i=0 fcgi ws
	start_backends "$bin" "$procs" "$db"
	fcgi="fcgi://127.0.0.1:${BACKEND_PORTS# }"
	ws="unix:$OUT/run/ws-1.sock|http://localhost"
	sed -e "${APACHE_SED:-}" "$ROOT/apache.conf" >"$OUT/apache.conf"
	if [ "$procs" -gt 1 ]; then
		{
			echo "LoadModule proxy_balancer_module /usr/lib/apache2/modules/mod_proxy_balancer.so"
			echo "LoadModule slotmem_shm_module /usr/lib/apache2/modules/mod_slotmem_shm.so"
			echo "LoadModule lbmethod_bybusyness_module /usr/lib/apache2/modules/mod_lbmethod_bybusyness.so"
			echo "<Proxy balancer://signal_fcgi>"
			for p in $BACKEND_PORTS; do echo "    BalancerMember fcgi://127.0.0.1:$p flushpackets=on timeout=120 retry=1"; done
			echo "    ProxySet lbmethod=bybusyness"
			echo "</Proxy>"
			echo "<Proxy balancer://signal_ws>"
			for p in $BACKEND_PORTS; do
				i=$((i + 1))
				echo "    BalancerMember \"unix:$OUT/run/ws-$i.sock|http://localhost\" upgrade=websocket timeout=120 retry=1"
			done
			echo "    ProxySet lbmethod=bybusyness"
			echo "</Proxy>"
		} >"$OUT/apache-balancer.conf"
		# A balancer takes the worker parameters on its members.
		sed -i -e "/^LoadModule proxy_http_module/a Include $OUT/apache-balancer.conf" \
			-e 's|^\(ProxyPass /api/[a-z/]* [^ ]*\) .*|\1|' "$OUT/apache.conf"
		fcgi="balancer://signal_fcgi" ws="balancer://signal_ws"
	fi
	SIGNAL_ROOT=$ROOT SIGNAL_RUNDIR=$OUT/run SIGNAL_BIND=127.0.0.1 PORT=$PORT SIGNAL_FCGI_URL=$fcgi SIGNAL_WS_URL=$ws \
		apache2 -d "$ROOT" -f "$OUT/apache.conf" -DFOREGROUND >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
}

# Apache with mod_fcgid as a shared host runs it (tests/apache-fcgid.conf):
# the bundle (make shared-hosting) copied by an unprivileged user into
# ~USER/public_html/signal/, spawned by mod_fcgid through suEXEC as that
# user. The user is made for this test and removed at its exit. The
# database and the test's options go into the copy's signal.conf (the
# program has no command line there); the database's folder is the user's.
FCGID_USER=${FCGID_USER:-sfh$$} FCGID_MADE=""
start_apache_fcgid() {
	local procs=$1 db=$2 bundle=$ROOT/build/shared-hosting/signal w
	[ -x "$bundle/signal.fcgi" ] || { echo "# no $bundle: make shared-hosting"; return 1; }
	local homes=$OUT/run/home
	if [ -z "$FCGID_MADE" ]; then
		FCGID_MADE=1
		mkdir -p "$homes"
		chmod 755 "$OUT" "$OUT/run" "$homes"
		useradd --system --home-dir "$homes/$FCGID_USER" --create-home --shell /usr/sbin/nologin \
			--user-group "$FCGID_USER" >>"$OUT/server.log" 2>&1 || return 1
		chmod 711 "$homes/$FCGID_USER"
	fi
	SITE=$homes/$FCGID_USER/public_html/signal
	BASE_PATH=/~$FCGID_USER/signal
	# The user uploads the bundle (cp -r as that user: the files are theirs).
	rm -rf "$homes/$FCGID_USER/public_html"
	runuser -u "$FCGID_USER" -- sh -c "umask 022 && mkdir -p '$SITE' && cp -r '$bundle/.' '$SITE/'"
	{
		echo "# the test's own (lib.sh)"
		echo "db $db"
		for w in $SERVER_ARGS; do
			case $w in --*) printf '\n%s' "${w#--}" ;; *) printf ' %s' "$w" ;; esac
		done
		echo
	} | runuser -u "$FCGID_USER" -- sh -c "cat >>'$SITE/signal.conf'"
	mkdir -p "$(dirname "$db")"
	chown "$FCGID_USER:" "$(dirname "$db")"
	# Files the test hands the program (--admin-token, --auth-secret) are
	# the user's, as a key file they uploaded would be.
	for w in $SERVER_ARGS; do [ -f "$w" ] && chown "$FCGID_USER:" "$w"; done
	for w in "$db" "$db-wal" "$db-shm"; do [ -e "$w" ] && chown "$FCGID_USER:" "$w"; done
	mkdir -p "$OUT/run/fcgid" "$OUT/run/empty"
	chown www-data: "$OUT/run/fcgid"
	SIGNAL_RUNDIR=$OUT/run SIGNAL_HOMES=$homes PORT=$PORT \
		apache2 -d /etc/apache2 -f "$ROOT/tests/apache-fcgid.conf" -DFOREGROUND ${FCGID_DEFINE:-} >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
}

# stop_server returns once the responders are gone, not when lighttpd is: it
# sends them SIGTERM and exits without waiting, and a responder's exit may
# take seconds (the ASan leak check, valgrind's, a busy machine). One still
# alive keeps the WebSocket socket, which the next server of the test (same
# $OUT/run) would find taken: its responder then serves no WebSocket (ws.c,
# "served by another process") and lighttpd answers every upgrade 503.
stop_server() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null # lighttpd signals the responders it spawned
		wait "$SERVER_PID" 2>/dev/null
		SERVER_PID=""
	fi
	local g i
	for g in $BACKEND_PGIDS; do
		kill -TERM -- "-$g" 2>/dev/null
	done
	BACKEND_PGIDS=""
	for i in $(seq 1 ${STOP_TRIES:-600}); do # 30 s
		server_procs >/dev/null || return 0
		sleep 0.05
	done
	echo "# responders still running 30 s after their server stopped: $(server_procs | tr '\n' ' ')"
}

# This test's responders, wrapped (valgrind) or not, lighttpd's, nginx's
# or Apache's: the only processes whose --ws-listen is under $OUT/run.
# Under mod_fcgid: the test's user's processes.
server_procs() {
	if [ "$FRONT" = apache-fcgid ]; then pgrep -u "$FCGID_USER" 2>/dev/null; else pgrep -f -- "--ws-listen $OUT/run/"; fi
}

# The responder processes serving this test's database.
responder_pids() {
	if [ "$FRONT" = apache-fcgid ]; then pgrep -u "$FCGID_USER" -x signal.fcgi 2>/dev/null; else pgrep -f "^[^ ]*signal-fcgi .*--db $SERVER_DB"; fi
}

# make_pairs TAG: four sender/receiver pairs (sTAGi -> rTAGi) in their own
# rooms, two read over SSE and two by long-poll, as tests/crashload.py
# takes them (a JSON array).
make_pairs() {
	local i s r via p="["
	for i in 1 2 3 4; do
		s=$(login "s$1$i"); r=$(login "r$1$i")
		post "$s" "{\"type\":\"join\",\"roomId\":\"room$1$i\"}"
		post "$r" "{\"type\":\"join\",\"roomId\":\"room$1$i\"}"
		via=$([ $i -le 2 ] && echo sse || echo poll)
		p="$p{\"from\":\"s$1$i\",\"from_token\":\"$s\",\"to\":\"r$1$i\",\"to_token\":\"$r\",\"via\":\"$via\"},"
	done
	echo "${p%,}]"
}
# pg_start: initdb and start a throwaway PostgreSQL 15 (tools/pg-local.sh)
# on a free port of 127.0.0.1, its data under /tmp (the postgres user it
# runs as may not reach the checkout); sets PG_PORT and PG_PID. pg_stop
# (also at exit) stops that PID and deletes the data.
pg_start() {
	PG_PORT=$(free_port)
	PG_DIR=/tmp/signal-pg-test-$$-$PG_PORT
	PG_PID=$("$ROOT/tools/pg-local.sh" start "$PG_DIR" "$PG_PORT" 2>>"$OUT/pg.log") || {
		echo "# PostgreSQL did not start:"; sed 's/^/#   /' "$OUT/pg.log" "$PG_DIR/server.log" 2>/dev/null | tail -20
		PG_PID=""
		return 1
	}
	export PG_PORT
}
pg_stop() {
	[ -n "$PG_PID" ] || return 0
	kill -INT "$PG_PID" 2>/dev/null # fast shutdown
	local i
	for i in $(seq 1 600); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.05; done
	PG_PID=""
	rm -rf "$PG_DIR" "$PG_DIR.initdb.log"
}
# psql as the server's superuser on 127.0.0.1:PG_PORT.
pg_sql() { # pg_sql DB QUERY
	PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -X -qAt -v ON_ERROR_STOP=1 -c "$2"
}
# pg_db FILE: the database standing for the SQLite file FILE, fresh the
# first time this test names it; sets SERVER_PG, SERVER_PG_URL (with
# PG_PASSWORD in it if set: tests/65-security.t looks for it in the logs).
pg_db() {
	SERVER_PG=t_$(printf '%s' "$1" | md5sum | cut -c1-16)
	SERVER_PG_URL="postgresql://postgres${PG_PASSWORD:+:$PG_PASSWORD}@127.0.0.1:$PG_PORT/$SERVER_PG"
	case "$PG_MADE" in *" $SERVER_PG "*) return 0 ;; esac
	pg_sql postgres "DROP DATABASE IF EXISTS $SERVER_PG" >/dev/null &&
		pg_sql postgres "CREATE DATABASE $SERVER_PG" >/dev/null || return 1
	PG_MADE="$PG_MADE$SERVER_PG "
}
# sql QUERY: on the store of the server that runs.
sql() {
	if [ "$STORE" = postgres ]; then pg_sql "$SERVER_PG" "$1"; else sqlite3 "$SERVER_DB" "$1"; fi
}
# The SQL of a column's bytes in hex, and of a comma-joined column, per store.
hex_sql() { if [ "$STORE" = postgres ]; then echo "upper(encode($1, 'hex'))"; else echo "hex($1)"; fi; }
agg_sql() { if [ "$STORE" = postgres ]; then echo "string_agg($1, ',' ORDER BY $1)"; else echo "group_concat($1)"; fi; }
# integrity_check NAME: SQLite's file check; PostgreSQL has no such file
# format to check, so there it is a visible skip.
integrity_check() {
	if [ "$STORE" = postgres ]; then
		skip "$1" "PRAGMA integrity_check is SQLite's"
	else
		is "$(sqlite3 "$SERVER_DB" 'PRAGMA integrity_check')" ok "$1"
	fi
}

# Background helpers (curl -N readers) are killed at exit too.
bg() { "$@" & BG_PIDS="$BG_PIDS $!"; }
cleanup() {
	for p in $BG_PIDS; do kill "$p" 2>/dev/null; done
	stop_server
	if [ -n "${FCGID_MADE:-}" ]; then
		pkill -KILL -u "$FCGID_USER" 2>/dev/null
		userdel "$FCGID_USER" 2>/dev/null
		FCGID_MADE=""
	fi
	pg_stop
}
trap cleanup EXIT

# post TOKEN JSON: POST /api/cmd; sets STATUS and BODY.
post() {
	local tok=$1 json=$2 resp
	if [ -n "$tok" ]; then
		resp=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $tok" --data-binary "$json" "$BASE/api/cmd")
	else
		resp=$(curl -s -w '\n%{http_code}' --data-binary "$json" "$BASE/api/cmd")
	fi
	STATUS=${resp##*$'\n'}
	BODY=${resp%$'\n'*}
}

# get PATH [curl args]: GET; sets STATUS and BODY.
get() {
	local path=$1 resp
	shift
	resp=$(curl -s -w '\n%{http_code}' "$@" "$BASE$path")
	STATUS=${resp##*$'\n'}
	BODY=${resp%$'\n'*}
}

login() {
	post "" "{\"type\":\"login\",\"userId\":\"$1\",\"protocol\":\"${2:-webrtc}\"}"
	printf '%s' "$BODY" | jq -r .token
}

# sse_open NAME TOKEN [curl args]: start `curl -N` on /api/events writing to $OUT/NAME.sse
sse_open() {
	local name=$1 tok=$2
	shift 2
	: >"$OUT/$name.sse"
	bg curl -s -N -H "Authorization: Bearer $tok" "$@" "$BASE/api/events" -o "$OUT/$name.sse"
	SSE_PID=$!
}

# wait_for FILE REGEX [seconds]: wait until FILE has a line matching REGEX.
wait_for() {
	local f=$1 re=$2 t=${3:-5} i
	for i in $(seq 1 $((t * 50))); do
		grep -Eq -- "$re" "$f" 2>/dev/null && return 0
		sleep 0.02
	done
	return 1
}

# wait_held N [seconds]: wait until /api/health counts N held streams and
# polls (or more); prints the last count.
wait_held() {
	local n=$1 t=${2:-10} i
	for i in $(seq 1 $((t * 20))); do
		get /api/health
		[ "$(echo "$BODY" | jq -r .held)" -ge "$n" ] 2>/dev/null && break
		sleep 0.05
	done
	echo "$BODY" | jq -r .held
}

# relay TOKEN TO N SSEFILE: signal {"n":N} to TO and wait for it on TO's
# stream; sets RELAY_MS (curl start-up included), returns 1 on a timeout.
relay() {
	local t0
	t0=$(date +%s%N)
	post "$1" "{\"type\":\"signal\",\"to\":\"$2\",\"n\":$3}"
	wait_for "$4" "\"n\":$3[,}]" 5 || return 1
	RELAY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

# sse_data FILE: the JSON of each data: line, one per line.
sse_data() { sed -n 's/^data: //p' "$1"; }
