#!/usr/bin/env python3
"""clusterload.py - load and races for tests/94-cluster.t: several nodes
(each a lighttpd with its responders) on one PostgreSQL.

  clusterload.py load NODES_JSON PAIRS_JSON SECONDS
  clusterload.py race NODES_JSON

NODES_JSON is the list of the nodes' base URLs. In `load`, pair i's users
logged in at node i (the test did that), the receiver holds its stream at
node i+1 and the sender sends through node i+2 (mod the node count), so
every event crosses nodes. Each sender POSTs {"type":"signal","to":peer,
"seq":n,"cid":"FROM-n"} and retries the same command (same cid) until it
gets a 200; receivers read over SSE (resuming with Last-Event-ID) or
long-poll (since=last) and drop an event id they already have, as a client
does. A client whose node fails (refused, reset, 502/503) moves to the next
node and carries on: the test kills one node with kill -9 meanwhile. At the
end one JSON line: per pair what was acknowledged, lost and duplicated
(the same seq under two event ids), whether it arrived in order, the
clients that moved, and the POST->event latency of every message
(p50/p99, ms; from the POST's start to the event's arrival).

`race` (every thread starting together at a barrier): the same userId
logged in at every node at once (one success), and 10 users joining one
room through the nodes at once (the room limit, 5, holds): one JSON line.
Every loop is bounded in count and time. CLUSTERLOAD_GAP: seconds a
sender waits after each 200 (default 0.02; 0 sends as fast as answered).
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

lock = threading.Lock()
GAP = float(os.environ.get("CLUSTERLOAD_GAP", "0.02"))  # seconds between a sender's messages


def request(base, method, path, body=None, token=None, timeout=10, headers=None):
    """One request; returns (status, parsed JSON or None). Raises OSError."""
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, u.path.rstrip("/") + path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, None
    finally:
        c.close()


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * p))], 1)


def load(nodes, pairs, seconds):
    n = len(nodes)
    stop_send, stop_recv = threading.Event(), threading.Event()
    acked, received, sent_at, lat = {}, {}, {}, []
    lat_by = {"sse": [], "poll": []}
    via_of = {p["to"]: p["via"] for p in pairs}
    stats = {"send_errors": 0, "replayed": 0, "moved": 0}

    def moved():
        with lock:
            stats["moved"] += 1

    def sender(i, p):
        node, seq, me = (i + 2) % n, 1, p["from"]
        acked[me] = []
        while not stop_send.is_set():
            cmd = {"type": "signal", "to": p["to"], "seq": seq, "cid": "%s-%d" % (me, seq)}
            t0 = time.monotonic()
            with lock:
                sent_at.setdefault((me, seq), t0)
            try:
                status, reply = request(nodes[node], "POST", "/api/cmd", cmd, p["from_token"], timeout=5)
            except OSError:
                status, reply = 0, None
            if status == 200:
                acked[me].append(seq)
                seq += 1
                if reply and reply.get("replayed"):
                    with lock:
                        stats["replayed"] += 1
                time.sleep(GAP)
                continue
            with lock:
                stats["send_errors"] += 1
            if status in (0, 502, 503, 504):
                node = (node + 1) % n
                moved()
            time.sleep(0.05)

    seen = {}

    def record(to, ev):
        now = time.monotonic()
        if ev["id"] in seen.setdefault(to, set()):
            return
        seen[to].add(ev["id"])
        if ev.get("type") == "signal":
            received[to].append((ev["id"], ev["from"], ev["seq"]))
            with lock:
                t0 = sent_at.get((ev["from"], ev["seq"]))
            if t0 is not None:
                lat.append((now - t0) * 1000)
                lat_by[via_of[to]].append((now - t0) * 1000)

    def sse_reader(i, p):
        node, to, last = (i + 1) % n, p["to"], 0
        received[to] = []
        while not stop_recv.is_set():
            u = urllib.parse.urlsplit(nodes[node])
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
            ok = False
            try:
                c.request("GET", "/api/events", headers={"Authorization": "Bearer " + p["to_token"],
                                                         "Last-Event-ID": str(last)})
                r = c.getresponse()
                ok = r.status == 200
                while ok and not stop_recv.is_set():
                    line = r.fp.readline()
                    if not line:
                        break
                    if line.startswith(b"data: "):
                        ev = json.loads(line[6:])
                        last = max(last, ev["id"])
                        record(to, ev)
            except (OSError, ValueError, http.client.HTTPException):
                pass
            finally:
                c.close()
            if not stop_recv.is_set():  # a stream ends only when its node goes away
                node = (node + 1) % n
                moved()
                time.sleep(0.05)

    def poll_reader(i, p):
        node, to, last = (i + 1) % n, p["to"], 0
        received[to] = []
        while not stop_recv.is_set():
            try:
                status, body = request(nodes[node], "GET", "/api/poll?since=%d&timeout=2" % last,
                                       token=p["to_token"], timeout=10)
            except OSError:
                status, body = 0, None
            if status == 200 and body:
                for ev in body["events"]:
                    record(to, ev)
                last = body["last"]
                continue
            node = (node + 1) % n
            moved()
            time.sleep(0.05)

    senders = [threading.Thread(target=sender, args=(i, p)) for i, p in enumerate(pairs)]
    readers = [threading.Thread(target=sse_reader if p["via"] == "sse" else poll_reader, args=(i, p))
               for i, p in enumerate(pairs)]
    for t in readers + senders:
        t.daemon = True
        t.start()
    time.sleep(seconds)
    stop_send.set()
    for t in senders:
        t.join(10)
    deadline = time.time() + 30  # let receivers drain, at most 30 s
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
                    "lost": sorted(set(ack) - set(got)), "duplicates": len(got) - len(set(got)),
                    "in_order": all(a < b for a, b in zip(got, got[1:]))})
    print(json.dumps({"pairs": out, "send_errors": stats["send_errors"], "replayed": stats["replayed"],
                      "moved": stats["moved"], "messages": len(lat),
                      "p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99),
                      "sse_p50_ms": pct(lat_by["sse"], 0.50), "sse_p99_ms": pct(lat_by["sse"], 0.99),
                      "poll_p50_ms": pct(lat_by["poll"], 0.50), "poll_p99_ms": pct(lat_by["poll"], 0.99)}))


def race(nodes):
    n = len(nodes)
    out = {}
    # The same userId at every node at once.
    bar = threading.Barrier(n)
    codes = []

    def login(i):
        bar.wait(10)
        try:
            st, _ = request(nodes[i], "POST", "/api/cmd", {"type": "login", "userId": "twin", "protocol": "x"})
        except OSError:
            st = 0
        with lock:
            codes.append(st)

    ts = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    out["logins_ok"] = codes.count(200)
    out["logins"] = sorted(codes)
    # 10 users join one room through the nodes at once.
    toks = []
    for k in range(10):
        st, body = request(nodes[k % n], "POST", "/api/cmd", {"type": "login", "userId": "j%d" % k, "protocol": "x"})
        toks.append(body["token"] if st == 200 else None)
    bar = threading.Barrier(10)
    joins = []

    def join(k):
        bar.wait(10)
        try:
            st, body = request(nodes[k % n], "POST", "/api/cmd", {"type": "join", "roomId": "crowded"}, toks[k])
        except OSError:
            st, body = 0, None
        with lock:
            joins.append(k if st == 200 and body and body.get("success") else -1)

    ts = [threading.Thread(target=join, args=(k,)) for k in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    inside = [k for k in joins if k >= 0]
    out["joins_ok"] = len(inside)
    st, body = (request(nodes[0], "POST", "/api/cmd", {"type": "room-users", "roomId": "crowded"}, toks[inside[0]])
                if inside else (0, None))
    out["members"] = len(body.get("users", [])) if st == 200 and body else -1
    print(json.dumps(out))


if __name__ == "__main__":
    mode, nodes = sys.argv[1], json.loads(sys.argv[2])
    if mode == "load":
        load(nodes, json.loads(sys.argv[3]), float(sys.argv[4]))
    else:
        race(nodes)
