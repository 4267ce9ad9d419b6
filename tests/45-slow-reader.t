#!/usr/bin/env bash
# A reader that never reads: 8 MB of events queue for it while another
# pair keeps relaying at normal speed; the slow one's events stay in its
# mailbox, its connection is closed after the write timeout, and it
# resumes by Last-Event-ID with nothing lost. (8 MB, not 1: on loopback the
# kernel's TCP send buffer alone absorbs up to 4 MB before anyone notices.)
. "$(dirname "$0")/lib.sh"

# A heartbeat timeout far beyond the test's length: on a loaded machine its
# steps take a minute or more, and a pruned sam would have no mailbox left.
start_server -- --write-timeout 3 --mailbox-limit 5000 --keepalive 1 --rate-session 100000 --rate-ip 100000 \
	--heartbeat-timeout 600 || exit 1
A=$(login alice)
B=$(login bob)
S=$(login sam)
for t in "$A" "$B" "$S"; do post "$t" '{"type":"join","roomId":"r"}'; done
sse_open bob "$B"

# sam: a raw socket that sends the request and then never reads.
rm -f "$OUT/posted"
python3 - "$PORT" "$S" "$OUT/posted" >"$OUT/sam.log" 2>&1 <<'PY' &
import os, socket, sys, time
port, tok, posted = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
print("connected", flush=True)
# Never read while the server pushes: until every signal is posted (on a busy
# machine that takes longer), then past the write timeout (3 s), so the
# server has certainly given up on this socket before it reads again.
deadline = time.time() + 600
while not os.path.exists(posted) and time.time() < deadline:
    time.sleep(0.1)
time.sleep(6)
# Then read as a normal client would: a 4 KB window takes hundreds of round
# trips through a busy front server for the megabytes it still holds.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(1)
data = b""
state = "still-open"
deadline = time.time() + 60
while time.time() < deadline:   # then take what reached us, until EOF or the deadline
    try:
        chunk = s.recv(1 << 20)
    except socket.timeout:
        continue
    if not chunk:
        state = "closed-by-server"
        break
    data += chunk
print(state, flush=True)
head, _, body = data.partition(b"\r\n\r\n")
if b"chunked" in head.lower():       # undo the HTTP chunking (front servers chunk differently)
    out, rest = b"", body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        n = int(size_line.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out += rest[:n]
        rest = rest[n + 2:]
    body = out
ids = [int(l.split()[1]) for l in body.decode("utf-8", "replace").splitlines() if l.startswith("id: ") and len(l.split()) == 2]
if body and not body.endswith(b"\n\n") and ids:
    ids.pop()                        # the last event was cut off mid-way: it was not received
print("got", len(ids), "last", ids[-1] if ids else 0, flush=True)
PY
SAM=$!
BG_PIDS="$BG_PIDS $SAM"
wait_for "$OUT/sam.log" connected 5
TOTAL=2010   # 134 batches of 15 signals of 4 KB: under the 64 KiB body cap each
# The batches are written first and posted by one curl, one request after
# another: a curl and two jq per batch would take minutes on a busy machine.
mkdir -p "$OUT/batches"
python3 - "$OUT/batches" "$TOTAL" <<'PY'
import json, sys
d, total = sys.argv[1], int(sys.argv[2])
pad = "x" * 4000
for b in range(total // 15):
    with open(f"{d}/{b}.json", "w") as f:
        json.dump([{"type": "signal", "to": "sam", "n": i, "pad": pad} for i in range(b * 15 + 1, b * 15 + 16)], f)
PY
: >"$OUT/batches.curl"
for b in $(seq 0 $((TOTAL / 15 - 1))); do
	[ "$b" = 0 ] || echo next >>"$OUT/batches.curl"
	printf 'url = "%s/api/cmd"\nheader = "Authorization: Bearer %s"\ndata-binary = "@%s"\noutput = "%s"\n' \
		"$BASE" "$A" "$OUT/batches/$b.json" "$OUT/batches/$b.out" >>"$OUT/batches.curl"
done
curl -s -K "$OUT/batches.curl"
touch "$OUT/posted"
# One jq for all the answers (a jq per batch took 60 s at a load of 14); a
# missing or cut answer leaves the count short.
jq -r '.[] | .success' "$OUT"/batches/*.out 2>/dev/null | sort | uniq -c >"$OUT/sam-codes"
is "$(cat "$OUT/sam-codes" | tr -s ' ')" " $TOTAL true" "$TOTAL x 4 KB signals to the slow reader are all accepted"
grep -l -v '"success":true' "$OUT"/batches/*.out 2>/dev/null | head -1 | xargs -r cat | jq -c '[.[] | select(.success != true)][0]' 2>/dev/null | sed 's/^/# first refused: /'

# meanwhile the other pair relays at normal speed
worst=0
relayed=0
for n in $(seq 1 10); do
	relay "$A" bob "$n" "$OUT/bob.sse" || break
	relayed=$n
	[ $RELAY_MS -gt $worst ] && worst=$RELAY_MS
done
diag "alice->bob while sam is stuck: slowest of 10 relays ${worst} ms (curl start-up included)"
# A relay stuck behind sam would wait for his socket to be let go (after
# --write-timeout 3 s); a loaded machine has made one take over 500 ms.
[ $relayed = 10 ] && [ $worst -lt 2500 ]; ok $? "other streams are not held up by the stuck one ($relayed of 10 relayed, slowest ${worst} ms < 2500)"
is "$(sse_data "$OUT/bob.sse" | jq -r 'select(.n) | .n' | tr '\n' ' ')" "$(seq 1 10 | tr '\n' ' ')" "bob got all 10, in order"

wait $SAM
cat "$OUT/sam.log" | sed 's/^/# sam: /'
if [ "$FRONT" = nginx ]; then
	# nginx keeps the client's side open while it still holds unsent data;
	# the responder's side is what --write-timeout bounds (next check).
	diag "through nginx the client saw: $(grep -E 'closed-by-server|still-open' "$OUT/sam.log")"
else
	grep -q closed-by-server "$OUT/sam.log"
	ok $? "the stuck stream was closed by the server (write timeout)"
fi
# Through nginx the responder's writes make progress for as long as nginx
# takes more into its buffers, so its --write-timeout (3 s without
# progress) may still be running when the client gives up: waited for.
wait_for "$OUT/server.log" 'no write progress' 15
ok $? "... and the server logged why"
got=$(sed -n 's/^got \([0-9]*\) last \([0-9]*\)/\1/p' "$OUT/sam.log")
last=$(sed -n 's/^got \([0-9]*\) last \([0-9]*\)/\2/p' "$OUT/sam.log")
[ "${got:-0}" -lt $TOTAL ]; ok $? "only part of the 8 MB reached the stuck socket (${got:-0} events)"
kept=$(sql "SELECT count(*) FROM events e JOIN sessions s ON s.id=e.session_id WHERE s.user_id='sam' AND e.id > ${last:-0}")
[ "$kept" -ge $((TOTAL - ${got:-0})) ]; ok $? "the rest waits in sam's mailbox ($kept events after $last)"

# sam resumes where his socket stopped
sse_open sam2 "$S" -H "Last-Event-ID: ${last:-0}"
wait_for "$OUT/sam2.sse" "\"n\":$TOTAL," 20
ok $? "sam resumes by Last-Event-ID and gets the rest"
n_resumed=$(sse_data "$OUT/sam2.sse" | jq -r 'select(.n) | .n' | wc -l)
first=$(sse_data "$OUT/sam2.sse" | jq -r 'select(.n) | .n' | head -1)
is "$((got + n_resumed))" $TOTAL "first socket + resume = $TOTAL events, none lost or doubled"
is "$first" "$((got + 1))" "the resume starts right after the last event received"
done_testing
