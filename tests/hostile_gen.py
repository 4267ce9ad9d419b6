#!/usr/bin/env python3
"""hostile_gen.py - black-box hostile requests against a running service.

Sends N generated requests (a seeded mix of mutated commands, wrong
methods, junk headers, tokens, origins and query strings) over keep-alive
connections and checks every answer: 2xx for valid requests, 4xx with a
JSON error body otherwise, no 5xx but 503, no request left hanging.
Prints one JSON summary line; exits 1 on any violation.

usage: hostile_gen.py PORT N SEED TOKEN...
"""
import http.client, json, random, sys, time

port, n, seed, tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rnd = random.Random(seed)
VALID = [
    {"type": "login", "userId": "fz"}, {"type": "join", "roomId": "fuzzroom"}, {"type": "leave"},
    {"type": "signal", "to": "fzpeer", "sdp": "v=0"}, {"type": "signal", "candidate": "c"},
    {"type": "ping", "ack": 1}, {"type": "room-users", "roomId": "fuzzroom"},
]
JUNK = ["", "null", "[]", "{}", "\x00", "\xff", "\u2028", "é", "𝄞", "'", '"', "\\", "%00", "%zz",
        "a" * 300, "9" * 40, "-1", "1e309", "true", "{\"$ne\":1}", "../../etc/passwd", "\r\nX: y"]


def mutate_value(v):
    r = rnd.random()
    if r < 0.2:
        return rnd.choice(JUNK)
    if r < 0.3:
        return rnd.randint(-2**70, 2**70)
    if r < 0.4:
        return [v] * rnd.randint(0, 50)
    if r < 0.5:
        return {"x": v}
    if r < 0.6:
        return None
    return v


def body():
    r = rnd.random()
    cmd = dict(rnd.choice(VALID))
    if r < 0.15:
        return json.dumps(cmd)  # valid
    if r < 0.45:
        k = rnd.choice(list(cmd) + ["type", "to", "roomId", "userId", "extra"])
        cmd[k] = mutate_value(cmd.get(k, "x"))
        return json.dumps(cmd)
    if r < 0.6:  # byte-level damage to valid JSON
        b = bytearray(json.dumps(cmd).encode())
        for _ in range(rnd.randint(1, 5)):
            op = rnd.random()
            i = rnd.randrange(len(b) + 1)
            if op < 0.4 and b:
                b[min(i, len(b) - 1)] = rnd.randrange(256)
            elif op < 0.7:
                b[i:i] = bytes([rnd.randrange(256)])
            elif b:
                del b[min(i, len(b) - 1)]
        return bytes(b)
    if r < 0.7:
        d = rnd.randint(10, 5000)
        return "[" * d + "]" * d
    if r < 0.8:
        return json.dumps([dict(rnd.choice(VALID)) for _ in range(rnd.randint(0, 80))])
    if r < 0.9:
        return json.dumps({"type": "signal", "to": "fzpeer", "sdp": "x" * rnd.choice([10, 40000, 70000])})
    return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200)))


def headers():
    h = {}
    r = rnd.random()
    if r < 0.5 and tokens:
        h["Authorization"] = "Bearer " + rnd.choice(tokens)
    elif r < 0.6:
        h["Authorization"] = rnd.choice(["Bearer", "Bearer  ", "Basic Zm9vOmJhcg==", "Bearer " + "g" * 64,
                                         "bearer " + (tokens[0] if tokens else "")])
    elif r < 0.7:
        h["Cookie"] = rnd.choice(["signal_token=" + (tokens[0] if tokens else ""), "signal_token=x",
                                  "a=b; signal_token=; c", ";;;", "signal_token=" + "f" * 64])
    if rnd.random() < 0.2:
        h["Origin"] = rnd.choice(["https://evil.example", "null", "http://127.0.0.1:%d" % port, "x" * 300])
    if rnd.random() < 0.1:
        h["Last-Event-ID"] = rnd.choice(["1", "-1", "abc", "9" * 30, ""])
    if rnd.random() < 0.2:
        h["Content-Type"] = rnd.choice(["application/json", "text/plain", "multipart/form-data; boundary=x"])
    return h


def request():
    r = rnd.random()
    if r < 0.6:
        method, path = "POST", "/api/cmd"
    elif r < 0.7:
        method, path = "GET", "/api/poll?timeout=0&since=" + rnd.choice(["0", "5", "-1", "x", "1&since=2", "%41"])
    elif r < 0.75:
        # only without a valid token: a valid one would open a held stream
        method, path = "GET", "/api/events" + rnd.choice(["", "?lastEventId=x", "?token=" + "0" * 64])
        return method, path, None, {"Last-Event-ID": rnd.choice(["x", "1"])}
    elif r < 0.85:
        method = rnd.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "GET", "HEAD"])
        path = rnd.choice(["/api/cmd", "/api/poll?timeout=0", "/api/health", "/api/", "/api/x", "/api/cmd/"])
    else:
        method, path = "POST", rnd.choice(["/api/cmd?token=" + rnd.choice(JUNK).replace(" ", "+"),
                                           "/api/cmd?" + "&".join("k%d=v" % i for i in range(rnd.randint(0, 12)))])
    b = body() if method in ("POST", "PUT", "PATCH") else None
    return method, path, b, headers()


stats = {"sent": 0, "by_status": {}, "violations": [], "timeouts": 0}
conn = None
t0 = time.time()
for i in range(n):
    method, path, b, h = request()
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogatepass")
    path = "".join(c if 0x21 <= ord(c) < 0x7f else "%%%02X" % (ord(c) & 0xff) for c in path)
    for attempt in (1, 2):
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, path, body=b, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            break
        except (TimeoutError, http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine) as e:
            conn = None
            if isinstance(e, TimeoutError):
                stats["timeouts"] += 1
                data, resp = None, None
                break
    stats["sent"] += 1
    if resp is None:
        stats["violations"].append({"req": [method, path], "why": "hang"})
        continue
    st = resp.status
    stats["by_status"][st] = stats["by_status"].get(st, 0) + 1
    if resp.getheader("Connection", "").lower() == "close":
        conn = None
    bad = None
    if st >= 500 and st != 503:
        bad = "5xx"
    elif st >= 400 and method != "HEAD":
        try:
            j = json.loads(data)
            if not (isinstance(j, dict) and j.get("success") is False and "error" in j):
                bad = "error body lacks success/error"
        except ValueError:
            bad = "non-JSON error body"
    elif st not in (200, 204, 400, 401, 403, 404, 405, 409, 413, 429, 503):
        bad = "unexpected status"
    if bad and len(stats["violations"]) < 20:
        stats["violations"].append({"req": [method, path, (b or b"")[:80].decode("latin-1")], "status": st,
                                    "why": bad, "body": (data or b"")[:120].decode("latin-1")})
stats["seconds"] = round(time.time() - t0, 1)
print(json.dumps(stats))
sys.exit(1 if stats["violations"] else 0)
