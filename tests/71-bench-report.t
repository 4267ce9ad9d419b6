#!/usr/bin/env bash
# bench/report.py's verdicts, on results files written here: the figures
# the docs carry come from it, so a target it calls met must be met. In the
# pg-* cases the second column is the PostgreSQL store and the target holds
# for both stores; a held case whose streams did not all connect meets
# nothing; a target whose rows are missing is not measured, never met.
. "$(dirname "$0")/lib.sh"

tsv() { # tsv FILE ROW... (each row's fields separated by ;)
	local f=$1; shift
	printf 'case\tmetric\tours\tnchan\tratio_ours_over_nchan\ttarget\n' >"$f"
	for r in "$@"; do printf '%s\n' "$r" | tr ';' '\t' >>"$f"; done
}

tsv "$OUT/pg.tsv" \
	"pg-held-10;streams connected: SQLite | PostgreSQL;10;0;-;10" \
	"pg-held-10;one message each: delivered;10;0;-;all 10" \
	"pg-held-20;streams connected: SQLite | PostgreSQL;20;20;1.00;20" \
	"pg-held-20;one message each: delivered;20;19;-;all 20" \
	"pg-held-30;streams connected: SQLite | PostgreSQL;30;30;1.00;30" \
	"pg-held-30;one message each: delivered;30;30;-;all 30"
out=$(python3 "$ROOT/bench/report.py" verdicts "$OUT/pg.tsv")
is "$(echo "$out" | grep -c 'NOT met  pg-held-10 ')" 2 "PostgreSQL connected none of 10: both rows not met"
like "$out" 'pg-held-10 .*delivered.*PostgreSQL 0: only 0 of 10 connected' "... and the delivery row says why"
like "$out" 'NOT met  pg-held-20 .*delivered.*PostgreSQL 19' "PostgreSQL delivered 19 of 20: not met"
is "$(echo "$out" | grep -c '^  met      pg-held-30 ')" 2 "both stores all 30: met"

tsv "$OUT/held.tsv" \
	"held-10;streams connected;9;10;0.90;10" \
	"held-10;server RSS per stream (KB, total/N);2.0;3.0;0.67;<= 8 KB" \
	"latency-ws;one-way p50 (us);120;-;-;p50 <= 150 us" \
	"latency-sse;one-way p50 (us);100;90;1.11;-"
out=$(python3 "$ROOT/bench/report.py" verdicts "$OUT/held.tsv")
like "$out" 'NOT met  held-10 .*RSS.*only 9 of 10 connected' "a held case short of streams: its memory row is not met"
like "$out" 'NOT met  held-10 .*streams connected' "... nor its connected row (nchan's 10 do not count)"
like "$out" '^  met      latency-ws .*p50 <= 150 us' "a plain target: met"
like "$out" 'met      WebSocket one-way p50 <= 1.5 x nchan.s SSE p50: 120 against 135' "a cross-row target from the rows"
like "$out" 'not measured WebSocket relay throughput' "a cross-row target without its rows: not measured"
like "$(python3 "$ROOT/bench/report.py" markdown "$OUT/held.tsv")" '\| held-10 \| server RSS per stream \(KB, total/N\) \| 2.0 \| 3.0 \| 0.67 \| <= 8 KB \| \*\*no\*\* \|' "the Markdown table says no"
done_testing
