#!/usr/bin/env bash
# Hostile input: each validation rule gets a case. Every one is refused
# with the right status and a JSON error, nothing changes in the store,
# and a control pair still relays afterwards.
. "$(dirname "$0")/lib.sh"

start_server || exit 1
A=$(login alice)
B=$(login bob)
post "$A" '{"type":"join","roomId":"r"}'
post "$B" '{"type":"join","roomId":"r"}'
snapshot() { sql "SELECT (SELECT count(*) FROM sessions),(SELECT count(*) FROM memberships),(SELECT count(*) FROM events),(SELECT $(agg_sql user_id) FROM sessions)"; }
before=$(snapshot)

# expect STATUS CODE NAME -- curl args...
expect() {
	local want=$1 code=$2 name=$3
	shift 4
	local resp
	resp=$(curl -s -w '\n%{http_code}' "$@")
	local st=${resp##*$'\n'} body=${resp%$'\n'*}
	local got_code
	got_code=$(printf '%s' "$body" | jq -r .error 2>/dev/null)
	is "$st/$got_code" "$want/$code" "$name"
}
cmd() { echo "$BASE/api/cmd"; }
auth=(-H "Authorization: Bearer $A")

# --- JSON ---
expect 400 invalid-json "not JSON" -- "${auth[@]}" --data-binary 'hello' "$(cmd)"
expect 400 invalid-json "empty body" -- "${auth[@]}" --data-binary '' "$(cmd)"
expect 400 invalid-json "a JSON string, not an object" -- "${auth[@]}" --data-binary '"ping"' "$(cmd)"
expect 400 invalid-json "trailing garbage after the object" -- "${auth[@]}" --data-binary '{"type":"ping"} x' "$(cmd)"
expect 400 invalid-json "two objects" -- "${auth[@]}" --data-binary '{"type":"ping"}{"type":"ping"}' "$(cmd)"
expect 400 invalid-json "single quotes (non-strict JSON)" -- "${auth[@]}" --data-binary "{'type':'ping'}" "$(cmd)"
printf '{"type":"ping","x":"a\0b"}' >"$OUT/nul.json"
expect 400 invalid-json "a raw NUL byte" -- "${auth[@]}" --data-binary @"$OUT/nul.json" "$(cmd)"
printf '{"type":"ping","x":"\x01"}' >"$OUT/ctl.json"
expect 400 invalid-json "a raw control character" -- "${auth[@]}" --data-binary @"$OUT/ctl.json" "$(cmd)"
printf '{"type":"signal","to":"bob","x":"\xff\xfe"}' >"$OUT/utf8.json"
expect 400 invalid-json "invalid UTF-8" -- "${auth[@]}" --data-binary @"$OUT/utf8.json" "$(cmd)"
printf '{"type":"signal","to":"bob","x":"\xc0\xaf"}' >"$OUT/overlong.json"
expect 400 invalid-json "overlong UTF-8" -- "${auth[@]}" --data-binary @"$OUT/overlong.json" "$(cmd)"
deep=$(python3 -c 'print("{\"type\":\"signal\",\"x\":" + "["*40 + "]"*40 + "}")')
expect 400 invalid-json "nesting 40 deep" -- "${auth[@]}" --data-binary "$deep" "$(cmd)"
deep=$(python3 -c 'print("["*60000)')
expect 400 invalid-json "60,000 open brackets" -- "${auth[@]}" --data-binary "$deep" "$(cmd)"
ok15=$(python3 -c 'print("{\"type\":\"signal\",\"x\":" + "["*14 + "]"*14 + "}")')
post "$A" "$ok15"
is "$STATUS" 200 "nesting within the cap (16) is fine"
head -c 65537 /dev/zero | tr '\0' ' ' >"$OUT/big"
expect 413 too-large "65,537 bytes of body" -- "${auth[@]}" --data-binary @"$OUT/big" "$(cmd)"
python3 -c 'import json; print(json.dumps({"type":"signal","to":"bob","sdp":"x"*32000}))' >"$OUT/fits.json"
post "$A" "$(cat "$OUT/fits.json")"
is "$STATUS" 200 "a 32,000-byte SDP fits under --max-signal (32 KiB)"
python3 -c 'import json; print(json.dumps({"type":"signal","to":"bob","sdp":"x"*40000}))' >"$OUT/over.json"
before_q=$(sql "SELECT count(*) FROM events")
post "$A" "$(cat "$OUT/over.json")"
is "$STATUS/$(echo "$BODY" | jq -r .error)" 413/too-large "a 40,000-byte signal is over --max-signal: 413"
is "$(sql "SELECT count(*) FROM events")" "$before_q" "... and nothing was queued"
expect 400 unknown-type "type is a number" -- "${auth[@]}" --data-binary '{"type":1}' "$(cmd)"

# --- ids ---
ID_RULE="userId: only letters, digits and . _ ~ @ + - (1 to 64 of them)"
for case in "|userId: must not be empty" " |$ID_RULE" "a b|$ID_RULE" "a/b|$ID_RULE" 'a\"b'"|$ID_RULE" "é|$ID_RULE" \
	"../etc|$ID_RULE" "$(printf 'x%.0s' $(seq 1 65))|userId: at most 64 bytes" 'a\u0000b|userId: must not contain NUL (\u0000)'; do
	bad=${case%%|*} why=${case#*|}
	post "" "{\"type\":\"login\",\"userId\":\"$bad\"}"
	is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "userId '$(printf '%.20s' "$bad")' is refused"
	is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "userId | $why" "... naming userId: $why"
done
post "" "{\"type\":\"login\",\"userId\":\"$(printf 'x%.0s' $(seq 1 64))\"}"
is "$STATUS" 200 "a 64-byte userId is accepted"
post "" '{"type":"login","userId":"ok.id_~@+-9"}'
is "$STATUS" 200 "every allowed id character"
post "" '{"type":"login","userId":["alice"]}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "userId as an array"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "userId | userId: must be a string, not an array" "... naming userId"
post "" '{"type":"login","userId":"zed","protocol":"'"$(printf 'p%.0s' $(seq 1 70))"'"}'
is "$STATUS/$(echo "$BODY" | jq -c '[.error,.field,.msg]')" '400/["invalid-field","protocol","protocol: at most 64 bytes"]' "a 70-byte protocol: the field and its bound"
post "" '{"type":"login","userId":"zed","protocol":64}'
is "$STATUS/$(echo "$BODY" | jq -c '[.field,.msg]')" '400/["protocol","protocol: must be a string, not an integer"]' "a protocol of the wrong type"
post "" '{"type":"login","userId":"zed","auth":"'"$(printf 'a%.0s' $(seq 1 129))"'"}'
is "$STATUS/$(echo "$BODY" | jq -c '[.field,.msg]')" '400/["auth","auth: at most 128 bytes"]' "an overlong auth"
post "" '{"type":"login","userId":"zed","protocol":"a\nb"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "a protocol with a newline"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "protocol | protocol: no control characters (newline, tab, DEL...)" "... naming protocol"
post "$A" '{"type":"join","roomId":"r r"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "a roomId with a space"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "roomId | roomId: only letters, digits and . _ ~ @ + - (1 to 64 of them)" "... naming roomId"
post "$A" '{"type":"join"}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "join without roomId"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "roomId | roomId: required, a string" "... naming roomId"
post "$A" '{"type":"ping","ack":1.5}'
is "$STATUS/$(echo "$BODY" | jq -r .error)" 400/invalid-field "a fractional ack"
is "$(echo "$BODY" | jq -r '.field + " | " + .msg')" "ack | ack: must be an integer, not a number" "... naming ack"

# --- query strings, headers, cookies ---
expect 400 bad-request "a bad percent escape" -- "$BASE/api/poll?since=%zz"
expect 400 bad-request "a truncated percent escape" -- "$BASE/api/poll?since=1%"
get "/api/poll?token=%01"
is "$STATUS" 400 "an escaped control byte (lighttpd or we refuse it)"
expect 400 bad-request "too many query pairs" -- "$BASE/api/poll?a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9"
expect 400 bad-request "an overlong query value" -- "$BASE/api/poll?token=$(printf 'a%.0s' $(seq 1 300))"
expect 400 bad-request "since is not a number" -- "${auth[@]}" "$BASE/api/poll?since=1e3"
expect 400 bad-request "Last-Event-ID is not a number" -- "${auth[@]}" -H 'Last-Event-ID: 12abc' "$BASE/api/events"
expect 400 bad-request "Last-Event-ID overflows" -- "${auth[@]}" -H 'Last-Event-ID: 99999999999999999999999' "$BASE/api/events"
wrong=$([ "${A:0:1}" = a ] && echo b || echo a)${A:1}
expect 401 unauthorized "Bearer with a wrong token" -- -H "Authorization: Bearer $wrong" --data-binary '{"type":"ping"}' "$(cmd)"
expect 401 unauthorized "Basic auth instead of Bearer" -- -H "Authorization: Basic YTpi" --data-binary '{"type":"ping"}' "$(cmd)"
expect 401 unauthorized "a cookie with a junk token" -- -H "Cookie: signal_token=../../etc" --data-binary '{"type":"ping"}' "$(cmd)"
expect 401 unauthorized "an upper-case token" -- -H "Authorization: Bearer $(echo "$A" | tr a-f A-F)" --data-binary '{"type":"ping"}' "$(cmd)"
expect 404 not-found "a very long path" -- "$BASE/api/$(printf 'x%.0s' $(seq 1 200))"
expect 404 not-found "a path with a trailing slash" -- "$BASE/api/cmd/"

is "$(snapshot | cut -d'|' -f1-2)" "$(echo "$before" | awk -F'|' '{print $1+2 "|" $2}')" "no refused request changed sessions or rooms (2 logins were valid)"

# --- the control pair still works ---
sse_open bob "$B"
post "$A" '{"type":"signal","to":"bob","control":true}'
wait_for "$OUT/bob.sse" '"control":true' 5
ok $? "a control pair still relays after all that"
grep -Eq '[0-9a-f]{64}' "$OUT/server.log"
ok $(( ! $? )) "no token appears in the log"
grep -q 'ERROR' "$OUT/server.log"
ok $(( ! $? )) "no ERROR lines in the log"

done_testing
