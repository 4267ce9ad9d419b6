#!/usr/bin/env python3
"""report.py - turns one results file of bench/run.sh (TSV) into the verdicts
and the Markdown table the docs carry, so that neither is typed by hand.

  bench/report.py verdicts RESULTS.tsv      every row with a target: met or not,
                                            then the targets that compare rows
  bench/report.py markdown RESULTS.tsv      the same as a Markdown table
  bench/report.py update DOC.md RESULTS.tsv rewrite the table between the
                                            <!-- bench-table --> markers of DOC.md

A row's own target is a string run.sh wrote ("p50 <= 150 us", ">= 20000",
"<= 8 KB", "all 10000", "10000", "<= 1.2 x latency-ws", ">= 20000 and >= 1/3
nchan"); the cross-row targets (issue 18: WebSocket against nchan's POST +
SSE) are listed in CROSS below. A target whose rows are missing (a case not
run) is reported as not measured, never as met.
"""
import csv
import re
import sys


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def find(rows, case, metric_prefix):
    for r in rows:
        if r["case"] == case and r["metric"].startswith(metric_prefix):
            return r
    return None


def judged_columns(r):
    """The columns a row's target applies to: ours, and in the pg-* cases,
    whose second column is the PostgreSQL store (not nchan), that one too."""
    return ("ours", "nchan") if r["case"].startswith("pg-") else ("ours",)


def own_verdict(rows, r):
    """(met, why) for a row's own target; None when it has none. Met only
    if every judged column meets it."""
    if r["target"].strip() in ("", "-"):
        return None
    cols = judged_columns(r)
    vs = [column_verdict(rows, r, c) for c in cols]
    if len(vs) == 1:
        return vs[0]
    return (all(v[0] for v in vs), "; ".join("%s %s: %s" % ({"ours": "SQLite", "nchan": "PostgreSQL"}[c], r[c], v[1])
                                            for c, v in zip(cols, vs)))


def column_verdict(rows, r, col):
    """(met, why) of one column against the row's target. The other rows
    of a held case mean nothing when not all its streams connected."""
    t = r["target"].strip()
    ours = num(r[col])
    conn = find(rows, r["case"], "streams connected") or find(rows, r["case"], "sockets connected")
    if conn is not None and conn is not r and (num(conn[col]) or 0) < (num(conn["target"]) or 0):
        return (False, "only %s of %s connected" % (conn[col], conn["target"]))
    if ours is None:
        return (False, "no figure")
    m = re.fullmatch(r"all (\d+)", t)
    if m:
        return (ours >= float(m.group(1)), t)
    if re.fullmatch(r"\d+", t):
        return (ours >= float(t), "all " + t)
    m = re.fullmatch(r"(?:p\d+ )?<= ([\d.]+) x (\S+)", t)
    if m:
        other = find(rows, m.group(2), "one-way p50")
        base = num(other["ours"]) if other else None
        if base is None:
            return (False, t + ": not measured")
        return (ours <= float(m.group(1)) * base, "%s (%g)" % (t, float(m.group(1)) * base))
    m = re.fullmatch(r">= (\d+) and >= 1/3 nchan", t)
    if m:
        n = num(r["nchan"])
        return (ours >= float(m.group(1)) and n is not None and ours >= n / 3, t)
    m = re.fullmatch(r"(?:p\d+ )?(<=|>=) ([\d.]+)(?: (?:us|KB|%))?", t)
    if m:
        lim = float(m.group(2))
        return ((ours <= lim) if m.group(1) == "<=" else (ours >= lim), t)
    return (False, "target not understood: " + t)


# (name, row of ours (case, metric prefix, column), comparison, factor,
#  row it is compared with (case, metric prefix, column))
CROSS = [
    ("WebSocket relay throughput >= nchan's POST + SSE throughput",
     ("throughput-ws", "delivered msgs/s", "ours"), ">=", 1.0, ("throughput", "delivered msgs/s", "nchan")),
    ("WebSocket one-way p50 <= 1.5 x nchan's SSE p50",
     ("latency-ws", "one-way p50", "ours"), "<=", 1.5, ("latency-sse", "one-way p50", "nchan")),
    ("WebSocket one-way p50 through nginx <= 1.2 x through lighttpd",
     ("latency-ws-nginx", "one-way p50", "ours"), "<=", 1.2, ("latency-ws", "one-way p50", "ours")),
]


def cross_verdicts(rows):
    out = []
    for name, (c, m, col), op, k, (c2, m2, col2) in CROSS:
        a, b = find(rows, c, m), find(rows, c2, m2)
        x = num(a[col]) if a else None
        y = num(b[col2]) if b else None
        if x is None or y is None:
            out.append((name, None, "not measured (run the cases %s and %s)" % (c, c2)))
            continue
        met = x >= k * y if op == ">=" else x <= k * y
        out.append((name, met, "%g against %g" % (x, k * y)))
    return out


def word(met):
    return "not measured" if met is None else ("met" if met else "NOT met")


def verdicts(rows):
    print("targets (%s):" % sys.argv[2])
    for r in rows:
        v = own_verdict(rows, r)
        if v is not None:
            print("  %-8s %-18s %-50s %s (%s)" % (word(v[0]), r["case"], r["metric"], r["ours"], v[1]))
    for name, met, why in cross_verdicts(rows):
        print("  %-8s %s: %s" % (word(met), name, why))


def markdown(rows):
    lines = ["| case | metric | ours | nchan | ours/nchan | target | met |", "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        v = own_verdict(rows, r)
        met = "" if v is None else ("yes" if v[0] else "**no**")
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["case"], r["metric"], r["ours"], r["nchan"], r["ratio_ours_over_nchan"],
            "" if r["target"] == "-" else r["target"], met))
    for name, met, why in cross_verdicts(rows):
        lines.append("| target | %s | %s | | | | %s |" % (name, why, {None: "not measured", True: "yes", False: "**no**"}[met]))
    return "\n".join(lines) + "\n"


def update(doc, path):
    text = open(doc).read()
    begin, end = "<!-- bench-table: generated by bench/report.py from ", "<!-- bench-table end -->"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        sys.exit("report.py: %s has no bench-table markers" % doc)
    block = begin + path + " -->\n" + markdown(load(path))
    open(doc, "w").write(text[:i] + block + text[j:])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "verdicts":
        verdicts(load(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "markdown":
        sys.stdout.write(markdown(load(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "update":
        update(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
