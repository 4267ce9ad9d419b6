#!/bin/sh
# mint-login.sh - what your application's backend does to let a user log in
# to a signal-fcgi started with --auth-secret FILE:
#   mint-login.sh SECRET_FILE USER_ID [TTL_SECONDS]   ->   EXPIRY:HMAC
# The client then logs in with {"type":"login","userId":USER_ID,"auth":"EXPIRY:HMAC"}.
# HMAC = lowercase hex HMAC-SHA256(secret, USER_ID ":" EXPIRY); EXPIRY in Unix seconds.
# (The secret appears in openssl's argv while it runs: mint on a host you trust,
# or use tools/mint-login.mjs in your Node backend.)
set -eu
[ $# -ge 2 ] || { echo "usage: $0 SECRET_FILE USER_ID [TTL_SECONDS]" >&2; exit 2; }
secret=$(cat "$1")
exp=$(( $(date +%s) + ${3:-300} ))
mac=$(printf '%s:%s' "$2" "$exp" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
printf '%s:%s\n' "$exp" "$mac"
