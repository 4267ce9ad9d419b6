#!/usr/bin/env bash
# The Debian package as an admin meets it: `make deb` (lintian: no errors),
# dpkg -i, the unit's own ExecStart run as its User (systemd does not run
# here), a message relayed through Apache with the packaged snippet
# included, then dpkg --purge, after which nothing of it is left. Installs
# are system-wide: one test run at a time holds the lock (flock), so two
# worktrees testing side by side wait for each other rather than collide.
. "$(dirname "$0")/lib.sh"
VERSION=$(sed -n 's/^#define SIG_VERSION "\(.*\)"/\1/p' "$ROOT/fcgi/base/config.c")
DEB=$ROOT/build/deb/signal-fcgi_${VERSION}_amd64.deb
UNIT=/lib/systemd/system/signal-fcgi.service

make -s -C "$ROOT" deb >"$OUT/make-deb.log" 2>&1
ok $? "make deb builds build/deb/signal-fcgi_${VERSION}_amd64.deb and lintian reports no errors"
[ -f "$DEB" ] || { sed 's/^/#   /' "$OUT/make-deb.log" | tail -20; done_testing; exit 1; }
is "$(dpkg-deb -f "$DEB" Package Version Architecture | tr '\n' ' ')" "Package: signal-fcgi Version: $VERSION Architecture: amd64 " \
	"the package's name, version (the binary's) and architecture"

exec 9>/run/lock/signal-fcgi-deb-test.lock
flock -w 900 9 || { ok 1 "the package-test lock"; done_testing; exit 1; }
RESP_PID="" APACHE_PID=""
purge() {
	[ -n "$RESP_PID" ] && kill "$RESP_PID" 2>/dev/null && wait "$RESP_PID" 2>/dev/null
	[ -n "$APACHE_PID" ] && kill "$APACHE_PID" 2>/dev/null && wait "$APACHE_PID" 2>/dev/null
	RESP_PID="" APACHE_PID=""
	dpkg --purge signal-fcgi >>"$OUT/dpkg.log" 2>&1
}
trap 'purge; cleanup' EXIT
dpkg --purge signal-fcgi >/dev/null 2>&1 # what a killed earlier run may have left

dpkg -i "$DEB" >"$OUT/dpkg.log" 2>&1
ok $? "dpkg -i installs it"
for f in /usr/sbin/signal-fcgi /usr/share/signal-fcgi/www/index.html /usr/share/signal-fcgi/www/signal.js \
	/usr/share/signal-fcgi/schema/001_init.sql /etc/signal-fcgi/signal-fcgi.conf /etc/signal-fcgi/apache.conf \
	/etc/signal-fcgi/nginx.conf /etc/signal-fcgi/lighttpd.conf /usr/share/man/man8/signal-fcgi.8.gz $UNIT; do
	[ -e "$f" ] || missing="${missing:-} $f"
done
is "${missing:-}" "" "binary in /usr/sbin, www and schema in /usr/share/signal-fcgi, configs in /etc/signal-fcgi, man page, unit"
is "$(dpkg-query -W -f='${Conffiles}' signal-fcgi | awk '{print $1}' | sort | tr '\n' ' ')" \
	"/etc/signal-fcgi/apache.conf /etc/signal-fcgi/lighttpd.conf /etc/signal-fcgi/nginx.conf /etc/signal-fcgi/signal-fcgi.conf " \
	"the files in /etc are conffiles (an admin's edits survive upgrades)"
is "$(stat -c '%U:%G %a' /var/lib/signal-fcgi 2>&1)" "signal-fcgi:signal-fcgi 750" "its own system user owns /var/lib/signal-fcgi"

# The man page documents every option --help lists (help2man made it from --help).
man=$(zcat /usr/share/man/man8/signal-fcgi.8.gz | sed 's/\\-/-/g')
undocumented=""
for o in $(/usr/sbin/signal-fcgi --help | grep -oE '^  --[a-z-]+'); do
	printf '%s' "$man" | grep -q -- "$o" || undocumented="$undocumented $o"
done
is "$undocumented" "" "signal-fcgi(8) documents every option of --help"

# The unit: its own user, state directory and hardening, as the issue asks.
for k in User=signal-fcgi StateDirectory=signal-fcgi ProtectSystem=strict NoNewPrivileges=yes; do
	grep -qx "$k" "$UNIT" || badunit="${badunit:-} $k"
done
is "${badunit:-}" "" "the unit runs as its own user with StateDirectory and ProtectSystem=strict"

# Free ports in the service's config (an admin edits it the same way), and
# the packaged Apache snippet pointed at them.
fport=$(free_port); wport=$(free_port); PORT=$(free_port); BASE="http://127.0.0.1:$PORT/signal"
sed -i -e "s|^listen .*|listen 127.0.0.1:$fport|" -e "s|^ws-listen .*|ws-listen 127.0.0.1:$wport|" /etc/signal-fcgi/signal-fcgi.conf
sed -i -e "s|127.0.0.1:9001|127.0.0.1:$fport|" -e "s|127.0.0.1:9002|127.0.0.1:$wport|" /etc/signal-fcgi/apache.conf

# What systemd would run: ExecStart as User=, in the StateDirectory.
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
user=$(sed -n 's/^User=//p' "$UNIT")
like "$exec_start" "^/usr/sbin/signal-fcgi --config /etc/signal-fcgi/signal-fcgi.conf$" "ExecStart reads /etc/signal-fcgi/signal-fcgi.conf"
(cd /var/lib/signal-fcgi && exec setpriv --reuid="$user" --regid="$user" --init-groups -- $exec_start) >"$OUT/service.log" 2>&1 &
RESP_PID=$!

cat >"$OUT/apache.conf" <<CONF
ServerName localhost
ServerRoot /etc/apache2
PidFile $OUT/apache.pid
ErrorLog $OUT/apache-error.log
Listen 127.0.0.1:$PORT
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
TypesConfig /etc/mime.types
DirectoryIndex index.html
<VirtualHost 127.0.0.1:$PORT>
    Include /etc/signal-fcgi/apache.conf
</VirtualHost>
CONF
apache2 -d /etc/apache2 -f "$OUT/apache.conf" -DFOREGROUND >>"$OUT/server.log" 2>&1 &
APACHE_PID=$!
for i in $(seq 1 100); do curl -sf -o /dev/null "$BASE/api/health" && break; sleep 0.1; done
get /
is "$STATUS" 200 "the packaged call page is served at /signal/ through the Apache snippet"
A=$(login alice); B=$(login bob)
post "$A" '{"type":"join","roomId":"pkg"}'; post "$B" '{"type":"join","roomId":"pkg"}'
sse_open bob "$B"
wait_for "$OUT/bob.sse" '^retry:' 5
relay "$A" bob 1 "$OUT/bob.sse"
ok $? "a signal from alice reaches bob's SSE stream through the installed service and the Apache snippet (API at /signal/api/)"
/usr/bin/python3 - "$PORT" >"$OUT/ws.log" 2>&1 <<'PY'
import json, sys, websocket
ws = websocket.create_connection(f"ws://127.0.0.1:{sys.argv[1]}/signal/api/ws", timeout=10)
ws.send(json.dumps({"type": "login", "userId": "carol", "protocol": "webrtc"}))
print(json.loads(ws.recv())["success"])
PY
like "$(cat "$OUT/ws.log")" "^True" "a WebSocket login through the snippet's /signal/api/ws"
head -c 100000 /dev/zero | tr '\0' a >"$OUT/100k"
curl -s -D "$OUT/big.h" -o "$OUT/big.b" -H 'Expect:' --data-binary @"$OUT/100k" "$BASE/api/cmd"
is "$(sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$OUT/big.h" | tail -1) $(jq -r .error "$OUT/big.b" 2>/dev/null)" \
	"413 too-large" "a 100 KB body: Apache's own 413, as the responder's JSON (/usr/share/signal-fcgi/errors)"
like "$(ls -l /var/lib/signal-fcgi/)" "signal-fcgi +signal-fcgi .*signal.db" \
	"the database is in the StateDirectory, owned by the service's user"
kill "$SSE_PID" 2>/dev/null
grep -q "listen=127.0.0.1:$fport" "$OUT/service.log"
ok $? "the service took its listen address from /etc/signal-fcgi/signal-fcgi.conf"

# The other two snippets are accepted by their servers' config check.
mkdir -p "$OUT/nginx"
cat >"$OUT/nginx.conf" <<CONF
pid $OUT/nginx.pid;
error_log stderr;
events {}
http {
    client_body_temp_path $OUT/nginx; fastcgi_temp_path $OUT/nginx; proxy_temp_path $OUT/nginx;
    scgi_temp_path $OUT/nginx; uwsgi_temp_path $OUT/nginx; access_log off;
    server { listen 127.0.0.1:$(free_port); include /etc/signal-fcgi/nginx.conf; }
}
CONF
nginx -t -p "$OUT" -c "$OUT/nginx.conf" >"$OUT/nginx-t.log" 2>&1
ok $? "nginx -t accepts /etc/signal-fcgi/nginx.conf inside a server block"
printf 'server.document-root = "%s"\nserver.port = %s\nserver.bind = "127.0.0.1"\ninclude "/etc/signal-fcgi/lighttpd.conf"\n' \
	"$OUT" "$(free_port)" >"$OUT/lighttpd.conf"
lighttpd -tt -f "$OUT/lighttpd.conf" >"$OUT/lighttpd-tt.log" 2>&1
ok $? "lighttpd -tt accepts /etc/signal-fcgi/lighttpd.conf included from lighttpd.conf"

# Purge: nothing left in /etc, /usr, /var/lib; the user removed.
purge
ok $? "dpkg --purge removes it"
left=""
for f in /etc/signal-fcgi /usr/sbin/signal-fcgi /usr/share/signal-fcgi /usr/share/man/man8/signal-fcgi.8.gz \
	/var/lib/signal-fcgi "$UNIT" /usr/share/doc/signal-fcgi; do
	[ -e "$f" ] && left="$left $f"
done
is "$left" "" "after the purge nothing of it is left in /etc, /usr or /var/lib"
getent passwd signal-fcgi >/dev/null; is $? 2 "the service's user is gone"
dpkg -s signal-fcgi >/dev/null 2>&1; is $? 1 "dpkg knows it no more"
done_testing
