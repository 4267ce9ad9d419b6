#!/usr/bin/env python3
"""crashload.py - load for tests/75-crash.t: pairs relaying numbered messages
while the test kills responders and restarts lighttpd underneath.

Each sender POSTs {"type":"signal","to":peer,"seq":n,"cid":"FROM-n"},
retrying the same command (same cid) until it gets a 200. A retry whose
first answer was lost after its commit is answered from the stored reply
("replayed": counted), so it must never deliver n twice. Receivers read
over SSE (curl -N, reconnecting with Last-Event-ID) or long-poll
(since=last) and drop an event id they already have, as a client does.
At the end it prints one JSON line: per pair what was acknowledged, what
arrived, and the duplicates (the same n under two event ids).

usage: crashload.py BASE TOKENS_JSON SECONDS [--no-cid]
(--no-cid: send without keys, as a client that has none would)
"""
import json, subprocess, sys, threading, time, urllib.request, urllib.error

base, pairs, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
use_cid = "--no-cid" not in sys.argv[4:]
stop_send = threading.Event()
stop_recv = threading.Event()
acked = {}     # sender -> list of seq answered 200
received = {}  # receiver -> list of (event id, from, seq)
errors = {"send": 0, "replayed": 0}
lock = threading.Lock()


def post(token, body):
    req = urllib.request.Request(base + "/api/cmd", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.load(r)


def sender(p):
    seq = 1
    acked[p["from"]] = []
    while not stop_send.is_set():
        try:
            cmd = {"type": "signal", "to": p["to"], "seq": seq}
            if use_cid:
                cmd["cid"] = "%s-%d" % (p["from"], seq)
            status, reply = post(p["from_token"], cmd)
            if status == 200:
                acked[p["from"]].append(seq)
                seq += 1
                if reply.get("replayed"):
                    with lock:
                        errors["replayed"] += 1
        except (urllib.error.URLError, OSError, ValueError):
            with lock:
                errors["send"] += 1
            time.sleep(0.05)
            continue
        time.sleep(0.01)


seen = {}  # receiver -> event ids it has: a resume may repeat one, never skip


def record(to, ev):
    if "id" not in ev:  # a drain's {"type":"reconnect"}: it moves no cursor
        return
    if ev["id"] in seen.setdefault(to, set()):
        return
    seen[to].add(ev["id"])
    if ev.get("type") == "signal":
        received[to].append((ev["id"], ev["from"], ev["seq"]))


def sse_reader(p):
    to, last = p["to"], 0
    received[to] = []
    while not stop_recv.is_set():
        cmd = ["curl", "-s", "-N", "-m", "30", "-H", "Authorization: Bearer " + p["to_token"],
               "-H", "Last-Event-ID: %d" % last, base + "/api/events"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    if ev.get("id", 0) > last:   # the client-side dedupe by id
                        last = ev["id"]
                    record(to, ev)
                if stop_recv.is_set():
                    break
        finally:
            proc.kill()
            proc.wait()
        time.sleep(0.1)


def poll_reader(p):
    to, last = p["to"], 0
    received[to] = []
    while not stop_recv.is_set():
        try:
            req = urllib.request.Request("%s/api/poll?since=%d&timeout=2" % (base, last),
                                         headers={"Authorization": "Bearer " + p["to_token"]})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.load(r)
            for ev in body["events"]:
                record(to, ev)
            last = body["last"]
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.1)


threads = [threading.Thread(target=sender, args=(p,)) for p in pairs]
readers = [threading.Thread(target=sse_reader if p["via"] == "sse" else poll_reader, args=(p,))
           for p in pairs]
for t in readers + threads:
    t.daemon = True
    t.start()
time.sleep(seconds)
stop_send.set()
for t in threads:
    t.join()
# let receivers drain: until each has every acknowledged seq, at most 30 s
deadline = time.time() + 30
while time.time() < deadline:
    if all(set(acked[p["from"]]) <= {s for _, f, s in received[p["to"]] if f == p["from"]} for p in pairs):
        break
    time.sleep(0.2)
stop_recv.set()
out = []
for p in pairs:
    got = [s for _, f, s in sorted(received[p["to"]]) if f == p["from"]]
    ack = acked[p["from"]]
    out.append({"pair": p["from"] + "->" + p["to"], "via": p["via"], "acked": len(ack),
                "lost": sorted(set(ack) - set(got)),
                "duplicates": len(got) - len(set(got)),
                "in_order": all(a <= b for a, b in zip(got, got[1:]))})
print(json.dumps({"pairs": out, "send_errors": errors["send"], "replayed": errors["replayed"]}))
