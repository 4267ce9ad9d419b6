#!/usr/bin/env bash
# The README's curl session, run as a reader would paste it (only the
# server address changes), against a fresh server; the options list in
# docs/deployment.md is the responder's own --help; the README links every
# file in docs/, and every relative link in the README and docs/ leads to a
# file (and heading) that exists.
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
# the options block in docs/deployment.md is the responder's own --help
missing=""
opts=$("$ROOT/build/signal-fcgi" --help | grep -oE '^  --[a-z-]+' | grep -v -e --help -e --version)
ok $([ -n "$opts" ]; echo $?) "--help lists options"
for o in $opts; do
	grep -q -- "^  $o " "$ROOT/docs/deployment.md" || missing="$missing $o"
done
is "$missing" "" "docs/deployment.md documents every option --help lists"
# the README is the front door: each reference page is linked from it
unlinked=""
for f in "$ROOT"/docs/*.md; do
	grep -qF "](docs/$(basename "$f"))" "$ROOT/README.md" || grep -qF "](docs/$(basename "$f")#" "$ROOT/README.md" \
		|| unlinked="$unlinked $(basename "$f")"
done
is "$unlinked" "" "the README links every file in docs/"
broken=$(cd "$ROOT" && python3 tools/check-links.py README.md docs/*.md 2>&1)
is "$broken" "" "every relative link in README.md and docs/*.md resolves"
done_testing
