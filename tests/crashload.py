#!/usr/bin/env python3
"""crashload.py - load for tests/75-crash.t: pairs relaying numbered messages
while the test kills responders and restarts lighttpd underneath.

Each sender POSTs {"type":"signal","to":peer,"seq":n}, retrying the same n
until it gets a 200 (a retry after a lost answer may deliver n twice: that
is a duplicate, counted, never a loss). Receivers read over SSE (curl -N,
reconnecting with Last-Event-ID) or long-poll (since=last). At the end it
prints one JSON line: per pair what was acknowledged and what arrived.

usage: crashload.py BASE TOKENS_JSON SECONDS
"""
import json, subprocess, sys, threading, time, urllib.request, urllib.error

base, pairs, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
stop_send = threading.Event()
stop_recv = threading.Event()
acked = {}     # sender -> list of seq answered 200
received = {}  # receiver -> list of (event id, from, seq)
errors = {"send": 0}
lock = threading.Lock()


def post(token, body):
    req = urllib.request.Request(base + "/api/cmd", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def sender(p):
    seq = 1
    acked[p["from"]] = []
    while not stop_send.is_set():
        try:
            if post(p["from_token"], {"type": "signal", "to": p["to"], "seq": seq}) == 200:
                acked[p["from"]].append(seq)
                seq += 1
        except (urllib.error.URLError, OSError, ValueError):
            with lock:
                errors["send"] += 1
            time.sleep(0.05)
            continue
        time.sleep(0.01)


def record(to, ev):
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
                    if ev["id"] > last:   # the client-side dedupe by id
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
print(json.dumps({"pairs": out, "send_errors": errors["send"]}))
