#!/usr/bin/env bash
# The README's curl session, run as a reader would paste it (only the
# server address changes), against a fresh server.
. "$(dirname "$0")/lib.sh"

start_server || exit 1
awk '/readme-example/{f=1; next} f && /^```sh/{g=1; next} g && /^```/{exit} g' "$ROOT/README.md" \
	| sed "s|^S=http://localhost:8080|S=$BASE|" >"$OUT/example.sh"
grep -q "^S=$BASE" "$OUT/example.sh"
ok $? "found the example block"
(cd "$OUT" && bash -e example.sh >"$OUT/example.out" 2>&1 < /dev/null)
ok $? "the example runs without an error"
o=$(cat "$OUT/example.out")
like "$o" '"type":"join","success":true,"roomId":"room1","users":\["alice","bob"\]' "both users joined"
like "$o" 'data: \{"id":[0-9]+,"type":"signal","to":"bob","sdp":\{"type":"offer","sdp":"v=0..."\},"from":"alice","roomId":"room1"\}' "bob's stream printed the offer"
like "$o" '"candidate":"candidate:1 1 udp' "... and the candidate"
like "$o" '"events":\[\{"id":[0-9]+,"type":"user-joined","userId":"bob"' "alice's long-poll has bob's user-joined"
like "$o" '"type":"room-users","success":true,"roomId":"room1","users":\["alice","bob"\]' "room-users"
like "$o" '"ok":true' "health"
like "$o" '"type":"logout","success":true' "logout"
# the options block in the README is the responder's own --help
missing=""
for o in $("$ROOT/build/signal-fcgi" --help | grep -oE '^  --[a-z-]+' | grep -v -e --help -e --version); do
	grep -q -- "^  $o " "$ROOT/README.md" || missing="$missing $o"
done
is "$missing" "" "the README documents every option --help lists"
done_testing
