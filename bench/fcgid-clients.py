#!/usr/bin/env python3
"""fcgid-clients.py - how many simultaneous clients Apache + mod_fcgid carries.

Each client logs in, joins a room with one partner, and keeps a long-poll
open (the transport every host allows; under mod_fcgid each waiting poll
holds one process). Once all are polling, every client signals its
partner; a client counts as carried when its signal arrives within
--deadline seconds and none of its requests failed. Bounded: each round
lasts at most --seconds, each request has a timeout.
    bench/fcgid-clients.py BASE N [N ...]     (BASE: http://host:port/~user/signal)
Prints one line per round: clients, carried, signal latency p50/max,
failed requests (status or timeout).
"""
import argparse, http.client, json, threading, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument('base')
ap.add_argument('counts', type=int, nargs='+')
ap.add_argument('--seconds', type=float, default=60)
ap.add_argument('--deadline', type=float, default=30)
args = ap.parse_args()
u = urllib.parse.urlsplit(args.base)
HOST, PORT, PREFIX = u.hostname, u.port or 80, u.path.rstrip('/')


def request(method, path, body=None, token=None, timeout=40):
    c = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    h = {'Authorization': 'Bearer ' + token} if token else {}
    try:
        c.request(method, PREFIX + path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    except OSError as e:
        return 0, str(e).encode()
    finally:
        c.close()


def round_(n, tag):
    toks, fails, codes = [], [0], {}
    lock = threading.Lock()
    for i in range(n):
        st, b = request('POST', '/api/cmd', json.dumps({'type': 'login', 'userId': f'{tag}u{i}', 'protocol': 'b'}))
        if st != 200:
            return f'{n} clients: login {i} failed ({st})'
        toks.append(json.loads(b)['token'])
    for i in range(n):
        request('POST', '/api/cmd', json.dumps({'type': 'join', 'roomId': f'{tag}r{i // 2}'}), toks[i])
    sent, got = {}, {}
    end = time.time() + args.seconds
    polling = [0]

    def poller(i):
        since, first = 0, True
        while time.time() < end and i not in got:
            st, b = request('GET', f'/api/poll?since={since}&timeout=25', token=toks[i])
            if first:
                with lock:
                    polling[0] += 1
                first = False
            if st != 200:
                with lock:
                    fails[0] += 1
                    codes[st] = codes.get(st, 0) + 1
                time.sleep(0.5)
                continue
            r = json.loads(b)
            since = r.get('last', since)
            for ev in r.get('events', []):
                if ev.get('type') == 'signal' and 'n' in ev:
                    got[i] = time.time()
    ts = [threading.Thread(target=poller, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    while polling[0] < n and time.time() < end - args.deadline:
        time.sleep(0.2)
    time.sleep(1)
    for i in range(n):
        peer = i ^ 1  # n is even: every client has a partner
        sent[peer] = time.time()
        st, _ = request('POST', '/api/cmd', json.dumps({'type': 'signal', 'to': f'{tag}u{peer}', 'n': i}), toks[i], timeout=args.deadline)
        if st != 200:
            with lock:
                fails[0] += 1
                codes[st] = codes.get(st, 0) + 1
    stop = min(end, time.time() + args.deadline)
    while time.time() < stop and len(got) < n:
        time.sleep(0.2)
    lat = sorted(got[i] - sent[i] for i in got if i in sent)
    for i in range(n):
        request('POST', '/api/cmd', json.dumps({'type': 'logout'}), toks[i], timeout=10)
    p50 = lat[len(lat) // 2] if lat else float('nan')
    mx = lat[-1] if lat else float('nan')
    return (f'{n} clients: {len(got)} carried (signal arrived within {args.deadline:.0f} s), '
            f'latency p50 {p50 * 1000:.0f} ms max {mx * 1000:.0f} ms, {fails[0]} failed requests'
            + (' (status: ' + ', '.join(f'{k or "timeout"} x{v}' for k, v in sorted(codes.items())) + ')' if codes else ''))


if any(n % 2 for n in args.counts):
    raise SystemExit('counts must be even (clients go in pairs)')
for k, n in enumerate(args.counts):
    print(round_(n, f'b{k}'), flush=True)
