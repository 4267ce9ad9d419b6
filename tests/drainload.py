#!/usr/bin/env python3
"""drainload.py - load for tests/66-drain.t: pairs relaying numbered messages
over SSE, long-poll and WebSocket while the test drains the responders
(SIGTERM) and lighttpd starts new ones.

Each sender POSTs {"type":"signal","to":peer,"seq":n}, retrying the same n
until it gets a 200 (a retry after a lost answer may deliver n twice: a
duplicate, never a loss). Each receiver honours the drain as signal.js
does: on {"type":"reconnect","after":ms} it closes, waits `after` ms and
reconnects the same transport from its cursor (Last-Event-ID, since=,
auth's lastEventId). Idle listeners only record the delays they are told.
It prints one JSON line: per pair what was acknowledged and what arrived,
and every reconnect delay received.

usage: drainload.py HOST PORT TOKENS_JSON SECONDS
"""
import http.client, json, sys, threading, time, urllib.error, urllib.request

import websocket

host, port, spec, seconds = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4])
base = "http://%s:%d" % (host, port)
stop_send = threading.Event()
stop_recv = threading.Event()
acked = {}      # sender -> seqs answered 200
received = {}   # receiver -> [(event id, from, seq)]
afters = []     # (via, ms) of every reconnect told
errors = {"send": 0, "recv": 0}
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


def told(via, ms):
    with lock:
        afters.append((via, ms))
    time.sleep(ms / 1000.0)


def record(to, ev):
    if ev.get("type") == "signal" and "id" in ev:
        received[to].append((ev["id"], ev["from"], ev["seq"]))


def backoff():
    with lock:
        errors["recv"] += 1
    time.sleep(0.1)


def sse_reader(p):
    to, last = p["to"], 0
    received.setdefault(to, [])
    while not stop_recv.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=10)
        after = None
        try:
            conn.request("GET", "/api/events", headers={"Authorization": "Bearer " + p["to_token"],
                                                       "Last-Event-ID": str(last)})
            r = conn.getresponse()
            if r.status != 200:
                r.read()
                backoff()
                continue
            while not stop_recv.is_set():
                line = r.readline()
                if not line:
                    break
                line = line.decode()
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    if ev.get("type") == "reconnect" and "id" not in ev:
                        after = ev["after"]
                        continue
                    last = max(last, ev["id"])
                    record(to, ev)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if after is not None:
            told("sse", after)
        else:
            backoff()


def poll_reader(p):
    to, last = p["to"], 0
    received.setdefault(to, [])
    while not stop_recv.is_set():
        try:
            req = urllib.request.Request("%s/api/poll?since=%d&timeout=2" % (base, last),
                                         headers={"Authorization": "Bearer " + p["to_token"]})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.load(r)
            after = None
            for ev in body["events"]:
                if ev.get("type") == "reconnect" and "id" not in ev:
                    after = ev["after"]
                else:
                    record(to, ev)
            last = body["last"]
            if after is not None:
                told("poll", after)
        except (urllib.error.URLError, OSError, ValueError):
            backoff()


def ws_reader(p):
    to, last = p["to"], 0
    received.setdefault(to, [])
    while not stop_recv.is_set():
        after = None
        try:
            ws = websocket.create_connection("ws://%s:%d/api/ws" % (host, port), timeout=5)
        except (OSError, websocket.WebSocketException):
            backoff()
            continue
        try:
            ws.send(json.dumps({"type": "auth", "token": p["to_token"], "lastEventId": last}))
            while not stop_recv.is_set():
                try:
                    msg = json.loads(ws.recv())
                except websocket.WebSocketTimeoutException:
                    continue
                if isinstance(msg, dict) and msg.get("type") == "reconnect" and "id" not in msg:
                    after = msg["after"]
                    break
                if isinstance(msg, dict) and "id" in msg:
                    last = max(last, msg["id"])
                    record(to, msg)
        except (OSError, ValueError, websocket.WebSocketException):
            pass
        finally:
            try:
                ws.close()
            except (OSError, websocket.WebSocketException):
                pass
        if after is not None:
            told("ws", after)
        else:
            backoff()


def idle_listener(tok):
    """Opens an SSE stream and records only the reconnect delay it is told."""
    while not stop_recv.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/api/events", headers={"Authorization": "Bearer " + tok})
            r = conn.getresponse()
            if r.status != 200:
                r.read()
                time.sleep(0.2)
                continue
            while not stop_recv.is_set():
                line = r.readline()
                if not line:
                    break
                line = line.decode()
                if line.startswith("data: ") and '"reconnect"' in line:
                    with lock:
                        afters.append(("idle", json.loads(line[6:])["after"]))
                    return
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(0.2)
        finally:
            conn.close()


def idle_poller(tok):
    """Holds a long-poll with nothing to receive and records only the
    reconnect delay it is told: a poll certainly held when the drain starts
    (a relaying pair's receiver is often between two polls)."""
    while not stop_recv.is_set():
        try:
            req = urllib.request.Request("%s/api/poll?since=0&timeout=25" % base,
                                         headers={"Authorization": "Bearer " + tok})
            with urllib.request.urlopen(req, timeout=40) as r:
                body = json.load(r)
            for ev in body["events"]:
                if ev.get("type") == "reconnect" and "id" not in ev:
                    with lock:
                        afters.append(("idle-poll", ev["after"]))
                    return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)


readers = {"sse": sse_reader, "poll": poll_reader, "ws": ws_reader}
threads = [threading.Thread(target=sender, args=(p,)) for p in spec["pairs"]]
recv = [threading.Thread(target=readers[p["via"]], args=(p,)) for p in spec["pairs"]]
idle = [threading.Thread(target=idle_listener, args=(t,)) for t in spec["idle"]]
idle += [threading.Thread(target=idle_poller, args=(t,)) for t in spec.get("idle_polls", [])]
for t in recv + idle + threads:
    t.daemon = True
    t.start()
time.sleep(seconds)
stop_send.set()
for t in threads:
    t.join()
# let receivers catch up: until each has every acknowledged seq, at most 30 s
deadline = time.time() + 30
pairs = spec["pairs"]
while time.time() < deadline:
    if all(set(acked[p["from"]]) <= {s for _, f, s in received[p["to"]] if f == p["from"]} for p in pairs):
        break
    time.sleep(0.2)
stop_recv.set()
out = []
for p in pairs:
    got = [s for _, f, s in sorted(received[p["to"]]) if f == p["from"]]
    first = []
    for s in got:   # the client-side dedupe by id keeps the first of each
        if s not in first:
            first.append(s)
    ack = acked[p["from"]]
    out.append({"pair": p["from"] + "->" + p["to"], "via": p["via"], "acked": len(ack),
                "lost": sorted(set(ack) - set(got)), "duplicates": len(got) - len(set(got)),
                "in_order": all(a < b for a, b in zip(first, first[1:]))})
print(json.dumps({"pairs": out, "afters": afters, "errors": errors}))
