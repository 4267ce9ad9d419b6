#!/usr/bin/env python3
"""pgrace.py - races between responder processes on one PostgreSQL store.

Speaks FastCGI straight to standalone responders (--listen 127.0.0.1:PORT),
so each request goes to the process chosen here, not to a balancer's pick.

  pgrace.py req PORT METHOD URI [BODY [TOKEN]]   one request: prints STATUS and body
  pgrace.py race PORT1,PORT2,PORT3               the races below; prints a JSON
                                                 summary and exits 1 on a failure

The races (every thread of one starts together, at a barrier):
- logins: the same userId at three processes at once: one success;
- joins: 10 users join one room through the three processes at once, the
  room limit being 5: exactly 5 get in and the room has 5 members;
- order: 4 senders on three processes signal one recipient while a reader
  long-polls it through the processes in turn, always after its cursor:
  ids arrive strictly increasing, and every signal answered 200 arrives
  exactly once (an id committed after a larger one would be skipped).
Every loop is bounded in count and time.
"""
import json
import socket
import struct
import sys
import threading
import time


def _record(rtype, rid, content):
    out = b""
    for i in range(0, max(len(content), 1), 65535):
        chunk = content[i:i + 65535]
        out += struct.pack("!BBHHBx", 1, rtype, rid, len(chunk), 0) + chunk
    return out


def _pairs(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def fcgi(port, method, uri, body=b"", token=None, timeout=30):
    """One request; returns (status, body bytes)."""
    params = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": uri.split("?")[0],
              "QUERY_STRING": uri.partition("?")[2], "CONTENT_LENGTH": str(len(body)),
              "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1"}
    if token:
        params["HTTP_AUTHORIZATION"] = "Bearer " + token
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(_record(1, 1, struct.pack("!HB5x", 1, 0)) + _record(4, 1, _pairs(params)) + _record(4, 1, b"")
                  + (_record(5, 1, body) if body else b"") + _record(5, 1, b""))
        buf, out = b"", b""
        while True:
            while len(buf) < 8:
                got = s.recv(65536)
                if not got:
                    raise IOError("connection closed mid-answer")
                buf += got
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            while len(buf) < 8 + clen + plen:
                got = s.recv(65536)
                if not got:
                    raise IOError("connection closed mid-record")
                buf += got
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == 6:
                out += content
            elif rtype == 3:
                break
    finally:
        s.close()
    head, _, payload = out.partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            status = int(line.split()[1])
    return status, payload


def cmd(port, obj, token=None):
    status, body = fcgi(port, "POST", "/api/cmd", json.dumps(obj).encode(), token)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def at_once(fns):
    """Run the functions on threads released together; their results in order."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)

    def run(i):
        barrier.wait()
        results[i] = fns[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def login(port, user):
    status, r = cmd(port, {"type": "login", "userId": user})
    if status != 200:
        raise RuntimeError("login %s: %s %s" % (user, status, r))
    return r["token"]


def race_logins(ports, rounds=5):
    bad = []
    for k in range(rounds):
        user = "same%d" % k
        res = at_once([lambda p=p: cmd(p, {"type": "login", "userId": user}) for p in ports])
        wins = [r for r in res if r[0] == 200]
        others = sorted(r[1].get("error") for r in res if r[0] != 200)
        if len(wins) != 1 or others != ["user-exists"] * (len(ports) - 1):
            bad.append({"user": user, "answers": [[s, r.get("error")] for s, r in res]})
    return {"rounds": rounds, "bad": bad}


def race_joins(ports, rounds=3, users=10, limit=5):
    bad = []
    for k in range(rounds):
        room = "full%d" % k
        toks = [login(ports[i % len(ports)], "j%d_%d" % (k, i)) for i in range(users)]
        res = at_once([lambda i=i: cmd(ports[i % len(ports)], {"type": "join", "roomId": room}, toks[i])
                       for i in range(users)])
        ins = sum(1 for s, _ in res if s == 200)
        full = sum(1 for s, r in res if r.get("error") == "room-full")
        status, r = cmd(ports[0], {"type": "room-users", "roomId": room}, toks[0])
        members = len(r.get("users", [])) if status == 200 else -1
        if ins != limit or full != users - limit or members != limit:
            bad.append({"room": room, "joined": ins, "full": full, "members": members})
    return {"rounds": rounds, "bad": bad}


def race_order(ports, senders=4, each=200, seconds=90):
    deadline = time.time() + seconds
    rtok = login(ports[0], "rcv")
    stoks = [login(ports[i % len(ports)], "snd%d" % i) for i in range(senders)]
    for i, t in enumerate([rtok] + stoks):  # one room: the receiver and the senders
        status, r = cmd(ports[i % len(ports)], {"type": "join", "roomId": "order"}, t)
        if status != 200:
            raise RuntimeError("join: %s %s" % (status, r))
    acked = [[] for _ in range(senders)]
    sending = [True]

    def send(i):
        port = ports[i % len(ports)]
        for n in range(1, each + 1):
            if time.time() > deadline:
                break
            try:
                status, _ = cmd(port, {"type": "signal", "to": "rcv", "n": n, "s": i}, stoks[i])
            except (IOError, OSError):
                continue
            if status == 200:
                acked[i].append(n)

    got, ids, order_bad = [], [], []

    def read():
        cursor, turn = 0, 0
        while time.time() < deadline:
            port = ports[turn % len(ports)]
            turn += 1
            try:
                status, body = fcgi(port, "GET", "/api/poll?since=%d&timeout=1" % cursor, token=rtok)
            except (IOError, OSError):
                continue
            if status != 200:
                continue
            r = json.loads(body)
            for ev in r.get("events", []):
                if ev.get("type") != "signal":
                    continue
                if ev["id"] <= cursor or (ids and ev["id"] <= ids[-1]):
                    order_bad.append([ids[-1] if ids else cursor, ev["id"]])
                ids.append(ev["id"])
                got.append((ev["s"], ev["n"]))
            cursor = max(cursor, r.get("last", cursor))
            if not sending[0] and not r.get("events"):
                want = sum(len(a) for a in acked)
                if len(got) >= want:
                    break

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sending[0] = False
    reader.join()
    per = {}
    for s, n in got:
        per.setdefault(s, []).append(n)
    lost = sum(len(set(acked[i]) - set(per.get(i, []))) for i in range(senders))
    dups = len(got) - len(set(got))
    sender_order = all(per.get(i, []) == sorted(per.get(i, [])) for i in range(senders))
    return {"acked": sum(len(a) for a in acked), "received": len(got), "lost": lost, "duplicates": dups,
            "ids_increasing": not order_bad, "order_violations": order_bad[:5], "per_sender_order": sender_order}


def main():
    if sys.argv[1] == "req":
        port, method, uri = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        body = sys.argv[5].encode() if len(sys.argv) > 5 else b""
        token = sys.argv[6] if len(sys.argv) > 6 else None
        try:
            status, out = fcgi(port, method, uri, body, token, timeout=70)
        except (IOError, OSError) as e:
            print("000\n%s" % e)
            return 0
        print("%d\n%s" % (status, out.decode(errors="replace").strip()))
        return 0
    ports = [int(p) for p in sys.argv[2].split(",")]
    out = {"logins": race_logins(ports), "joins": race_joins(ports), "order": race_order(ports)}
    print(json.dumps(out))
    o = out["order"]
    ok = (not out["logins"]["bad"] and not out["joins"]["bad"] and o["lost"] == 0 and o["duplicates"] == 0
          and o["ids_increasing"] and o["per_sender_order"] and o["acked"] > 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
