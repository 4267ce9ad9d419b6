#!/usr/bin/python3
"""shared_load.py - many users behind one address, for tests/68-shared-address.t.
Every request comes from 127.0.0.1 (optionally with X-Forwarded-For); a few
threads with keep-alive connections stand in for an office behind one NAT.
Bounded in count and in time. Prints one JSON object with what it saw.

    shared_load.py BASE logins N PREFIX      -> {"codes":{status:n},"tokens":[...],"secs":s}
    shared_load.py BASE streams TOKENFILE    -> {"codes":{...},"refused":n,"secs":s}
    shared_load.py BASE flood N PREFIX       -> logins until N sent or a 429: {"passed":p,"first429":k,...}
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

BASE = sys.argv[1]
U = urllib.parse.urlsplit(BASE)
THREADS = 16
DEADLINE = time.time() + 240  # no run may last longer, whatever the machine


def conn():
    return http.client.HTTPConnection(U.hostname, U.port, timeout=30)


def post(c, body, token=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    c.request("POST", "/api/cmd", json.dumps(body), h)
    r = c.getresponse()
    data = r.read()
    try:
        reply = json.loads(data)
    except ValueError:
        reply = {}
    return r.status, reply, r


def run_pool(items, work):
    """work(conn, item) -> result, over THREADS threads, in item order."""
    out = [None] * len(items)
    nxt = [0]
    lock = threading.Lock()

    def worker():
        c = conn()
        while time.time() < DEADLINE:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items):
                break
            try:
                out[i] = work(c, items[i])
            except (OSError, http.client.HTTPException) as e:
                out[i] = ("error", str(e))
                c.close()
                c = conn()
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def count(codes):
    d = {}
    for c in codes:
        d[str(c)] = d.get(str(c), 0) + 1
    return d


def logins(n, prefix):
    t0 = time.time()
    res = run_pool(["%s%d" % (prefix, i) for i in range(n)],
                   lambda c, u: post(c, {"type": "login", "userId": u, "protocol": "office"})[:2])
    codes = [r[0] if r else "none" for r in res]
    tokens = [r[1].get("token") for r in res if r and r[0] == 200]
    return {"codes": count(codes), "tokens": tokens, "secs": round(time.time() - t0, 2)}


def open_stream(c, token):
    """What signal.js does to (re)open its EventSource: a ticket, then GET
    /api/events?ticket=. Returns the status and the first event (the SSE
    answer is read up to its first data line, then the connection dropped)."""
    st, reply, _ = post(c, {"type": "ticket"}, token)
    if st != 200:
        return ("ticket", st)
    s = conn()
    try:
        s.request("GET", "/api/events?ticket=" + reply["ticket"], headers={"Accept": "text/event-stream"})
        r = s.getresponse()
        first = ""
        if r.status == 200:
            for _ in range(8):
                line = r.fp.readline().decode()
                if line.startswith("retry:") or line.startswith("data:") or line.startswith(":"):
                    first = line.strip()
                    break
        return (r.status, first)
    finally:
        s.close()


def streams(tokenfile):
    tokens = [t for t in open(tokenfile).read().split() if t]
    t0 = time.time()
    res = run_pool(tokens, open_stream)
    codes = [r[0] if r else "none" for r in res]
    # A refused stream answers 200 with an error event: count those apart.
    refused = sum(1 for r in res if r and r[0] == 200 and "rate-limited" in r[1])
    return {"codes": count(codes), "refused": refused, "opened": sum(1 for r in res if r and r[0] == 200 and r[1].startswith("retry:")),
            "secs": round(time.time() - t0, 2)}


def flood(n, prefix):
    """Logins from one address as fast as THREADS connections go, until n are
    sent or one is refused (then a few more, to see the refusal hold)."""
    t0 = time.time()
    stop = [None]
    lock = threading.Lock()
    stats = {"passed": 0, "refused": 0, "sent": 0, "retry_after": None, "body": None}

    def work(c, u):
        if stop[0] is not None and stats["sent"] > stop[0] + 50:
            return None
        st, reply, r = post(c, {"type": "login", "userId": u})
        with lock:
            stats["sent"] += 1
            if st == 200:
                stats["passed"] += 1
            elif st == 429:
                stats["refused"] += 1
                if stop[0] is None:
                    stop[0] = stats["sent"]
                    stats["retry_after"] = r.getheader("Retry-After")
                    stats["body"] = reply
        return st

    run_pool(["%s%d" % (prefix, i) for i in range(n)], work)
    stats["secs"] = round(time.time() - t0, 2)
    return stats


if __name__ == "__main__":
    mode = sys.argv[2]
    if mode == "logins":
        out = logins(int(sys.argv[3]), sys.argv[4])
    elif mode == "streams":
        out = streams(sys.argv[3])
    else:
        out = flood(int(sys.argv[3]), sys.argv[4])
    print(json.dumps(out))
