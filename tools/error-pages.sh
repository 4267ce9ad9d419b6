#!/usr/bin/env bash
# error-pages.sh - write errors/STATUS.html, the bodies lighttpd.conf answers
# with for the errors lighttpd makes itself (server.errorfile-prefix), from
# fcgi/base/error.c's table: the responder's JSON error shape, in its words.
# Run it after changing a code or message there; tests/67-front-errors.t
# fails until the files (and nginx.conf's named locations) agree.
#   STATUS -> error.c entry: 400, 414, 431 bad-request; 413 too-large;
#   500 internal; 502 bad-gateway; 503 unavailable; 504 gateway-timeout.
cd "$(dirname "$0")/.."
entry() { # entry CODE -> the message of error.c's entry with that wire code
	sed -n "s/.*{[0-9]*, \"$1\", \"\\(.*\\)\"},\$/\\1/p" fcgi/base/error.c
}
for pair in 400:bad-request 414:bad-request 431:bad-request 413:too-large 500:internal \
	502:bad-gateway 503:unavailable 504:gateway-timeout; do
	status=${pair%%:*} code=${pair#*:}
	msg=$(entry "$code")
	[ -n "$msg" ] || { echo "error-pages.sh: no entry for $code in error.c" >&2; exit 1; }
	printf '{"type":"error","success":false,"error":"%s","msg":"%s"}\n' "$code" "$msg" >"errors/$status.html"
done
