#!/usr/bin/env python3
"""pgfailload.py - load for tests/95-pg-failover.t: pairs relaying numbered
messages while the test takes the PostgreSQL primary away underneath
(kill -9 and a promoted standby, then the database stopped for seconds).

Like crashload.py (75-crash.t), each sender POSTs
{"type":"signal","to":peer,"seq":n,"cid":"FROM-n"} and retries the same
command (same cid) until it gets a 200; receivers read over SSE (one
`curl -N` per receiver, reopened with Last-Event-ID only if it ends) or
long-poll (since=last), dropping an event id they already have. What this
one adds, for a database that goes away rather than a responder:
- every answer that is not 200 is counted by status, and each 503 is
  checked for a Retry-After header of at least 1 second (a sender retries
  after 0.1 s all the same: the test measures when service is back);
- how often each SSE stream had to be reopened (an open stream must
  survive the database going away: 0), and every long-poll that was held
  when a fault began (sent a second or more before it), with its answer
  (each must be a 200);
- marks: the test sends SIGUSR1 when a fault begins and SIGUSR2 when the
  database is back; for each mark, the delay until the first 200 answered
  after it and until the first message answered 200 after it arrives at
  its receiver (the first relay that succeeds again). SIGHUP ends the
  sending early (the test's faults take what time they take).

usage: pgfailload.py BASE PAIRS_JSON SECONDS (at most)
At the end it prints one JSON object (per pair what was acknowledged,
what arrived, the duplicates: the same n under two event ids).
"""
import json, signal, subprocess, sys, threading, time, urllib.error, urllib.request

base, pairs, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
stop_send = threading.Event()
stop_recv = threading.Event()
lock = threading.Lock()
acked = {}      # sender -> [(seq, time sent, time answered)]
received = {}   # receiver -> [(event id, from, seq, time received)]
seen = {}       # receiver -> event ids it has (a resume may repeat one)
statuses = {}   # POST answers other than 200: status (or "conn") -> count
busy = {"count": 0, "retry_after_ok": 0, "retry_after_bad": []}
replayed = [0]  # 200s answered from a stored reply: a retry of a commit that did happen
sse_opens = {}  # SSE receiver -> streams opened
polls = []      # long-polls: (receiver, started, ended, status)
marks = []      # (kind, time): "fault" (SIGUSR1) or "back" (SIGUSR2)


def on_mark(signum, frame):
    marks.append(("fault" if signum == signal.SIGUSR1 else "back", time.monotonic()))


signal.signal(signal.SIGUSR1, on_mark)
signal.signal(signal.SIGUSR2, on_mark)
signal.signal(signal.SIGHUP, lambda signum, frame: stop_send.set())


def count(key):
    with lock:
        statuses[key] = statuses.get(key, 0) + 1


def post(token, body):
    req = urllib.request.Request(base + "/api/cmd", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.load(r)


def sender(p):
    seq = 1
    acked[p["from"]] = []
    while not stop_send.is_set():
        cmd = {"type": "signal", "to": p["to"], "seq": seq, "cid": "%s-%d" % (p["from"], seq)}
        sent = time.monotonic()
        try:
            status, reply = post(p["from_token"], cmd)
            if status == 200:
                if reply.get("replayed"):
                    with lock:
                        replayed[0] += 1
                acked[p["from"]].append((seq, sent, time.monotonic()))
                seq += 1
                time.sleep(0.01)
                continue
            count(status)
        except urllib.error.HTTPError as e:
            count(e.code)
            if e.code == 503:
                ra = e.headers.get("Retry-After", "")
                with lock:
                    busy["count"] += 1
                    if ra.isdigit() and int(ra) >= 1:
                        busy["retry_after_ok"] += 1
                    elif len(busy["retry_after_bad"]) < 5:
                        busy["retry_after_bad"].append(ra)
        except (urllib.error.URLError, OSError, ValueError):
            count("conn")
        time.sleep(0.1)


def record(to, ev):
    if ev["id"] in seen.setdefault(to, set()):
        return
    seen[to].add(ev["id"])
    if ev.get("type") == "signal":
        received[to].append((ev["id"], ev["from"], ev["seq"], time.monotonic()))


def sse_reader(p):
    to, last = p["to"], 0
    received[to] = []
    sse_opens[to] = 0
    while not stop_recv.is_set():
        sse_opens[to] += 1
        cmd = ["curl", "-s", "-N", "-m", "300", "-H", "Authorization: Bearer " + p["to_token"],
               "-H", "Last-Event-ID: %d" % last, base + "/api/events"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    last = max(last, ev["id"])
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
        t0, status = time.monotonic(), "conn"
        try:
            req = urllib.request.Request("%s/api/poll?since=%d&timeout=4" % (base, last),
                                         headers={"Authorization": "Bearer " + p["to_token"]})
            with urllib.request.urlopen(req, timeout=15) as r:
                status = r.status
                body = json.load(r)
            for ev in body["events"]:
                record(to, ev)
            last = body["last"]
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError, ValueError):
            pass
        polls.append((to, t0, time.monotonic(), status))
        if status != 200:
            time.sleep(0.1)


threads = [threading.Thread(target=sender, args=(p,)) for p in pairs]
readers = [threading.Thread(target=sse_reader if p["via"] == "sse" else poll_reader, args=(p,))
           for p in pairs]
for t in readers + threads:
    t.daemon = True
    t.start()
end = time.monotonic() + seconds
while time.monotonic() < end and not stop_send.is_set():
    time.sleep(0.1)  # signals land in the main thread, between sleeps
stop_send.set()
for t in threads:
    t.join()


def arrived(p):
    return {s for _, f, s, _ in received[p["to"]] if f == p["from"]}


# let receivers drain: until each has every acknowledged seq, at most 30 s
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    if all({a[0] for a in acked[p["from"]]} <= arrived(p) for p in pairs):
        break
    time.sleep(0.2)
stop_recv.set()

out = []
for p in pairs:
    got = [s for _, f, s, _ in sorted(received[p["to"]]) if f == p["from"]]
    ack = [a[0] for a in acked[p["from"]]]
    out.append({"pair": p["from"] + "->" + p["to"], "via": p["via"], "acked": len(ack),
                "lost": sorted(set(ack) - set(got)), "duplicates": len(got) - len(set(got)),
                "in_order": all(a < b for a, b in zip(got, got[1:]))})

# For each mark, of the messages sent after it: the first answered 200,
# and the first that had been answered 200 and had arrived, in ms from
# the mark.
when_acked = {}  # (sender, seq) -> (time sent, time answered)
for sender_id, lst in acked.items():
    for s, ts, ta in lst:
        when_acked[(sender_id, s)] = (ts, ta)
arrivals = [(t, when_acked[(f, s)]) for r in received.values() for _, f, s, t in r if (f, s) in when_acked]
timeline = []
for kind, tm in marks:
    acks = [ta for ts, ta in when_acked.values() if ts > tm]
    relays = [max(tr, ta) for tr, (ts, ta) in arrivals if ts > tm]
    timeline.append({"mark": kind,
                     "first_200_ms": round((min(acks) - tm) * 1000) if acks else None,
                     "first_relay_ms": round((min(relays) - tm) * 1000) if relays else None})
# long-polls held when a fault began: each must end in a 200. Held: sent
# a second before it at least (a claim takes milliseconds); one sent just
# before may still have been claiming its session, which a database gone
# answers 503, as a new poll is.
across = [(to, status, i, round(t0 - tm, 3), round(t1 - tm, 3)) for to, t0, t1, status in polls
          for i, (k, tm) in enumerate(marks) if k == "fault" and t0 < tm - 1.0 and tm < t1]
print(json.dumps({"pairs": out, "statuses": {str(k): v for k, v in statuses.items()}, "busy": busy, "replayed": replayed[0],
                  "sse_opens": sse_opens, "polls": len(polls),
                  "polls_across_fault": len(across),
                  "polls_across_fault_bad": [a for a in across if a[1] != 200],
                  "timeline": timeline}))
