#!/usr/bin/env python3
"""perf-split.py PERF.DATA - the responder's samples split by what they were
doing, from their call stacks (`perf script`): each sample counts once, in
the first class (in this order) that one of its frames matches."""
import subprocess, sys, collections

def classify(frames):
    text = [f for f in frames]
    libpq = any("libpq" in f for f in text)
    has = lambda *names: any(any(n in f for n in names) for f in text)
    if libpq:
        if has("__libc_send", "__sys_sendto"):
            return "libpq: sending to PostgreSQL (kernel TCP, waking the backend)"
        if has("__poll", "do_sys_poll"):
            return "libpq: waiting for PostgreSQL's answer (poll, sleep, wake)"
        if has("recv"):
            return "libpq: receiving from PostgreSQL (kernel)"
        return "libpq itself (protocol, results)"
    if has("json_"):
        return "json-c"
    if has("epoll_wait", "epoll_pwait"):
        return "event loop: epoll_wait"
    if frames and frames[0].endswith("[kernel.kallsyms])"):
        return "kernel, other (FastCGI and stream sockets, futex, ...)"
    if has("libc.so"):
        if frames and "libc.so" in frames[0]:
            return "libc (malloc, string, printf) outside libpq"
    return "our code and the rest"

out = subprocess.run(["perf", "script", "-i", sys.argv[1], "-F", "ip,sym,dso"], capture_output=True, text=True).stdout
counts = collections.Counter()
total = 0
frames = []
def flush():
    global total, frames
    if frames:
        counts[classify(frames)] += 1
        total += 1
    frames = []
for line in out.splitlines():
    line = line.strip()
    if not line:
        flush()
        continue
    parts = line.split(None, 1)
    frames.append(parts[1] if len(parts) > 1 else parts[0])
flush()
for k, v in counts.most_common():
    print("%5.1f%%  %s" % (100.0 * v / total, k))
print("samples: %d" % total)
