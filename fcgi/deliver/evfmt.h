/*
 * evfmt.h - event formatting: one stored event (its id and the JSON object
 * the core stored without it) as the bytes each transport sends: an SSE
 * event, an item of a long-poll answer, or the text of a WebSocket message;
 * and the heads of SSE and long-poll responses.
 */
#ifndef SIG_EVFMT_H
#define SIG_EVFMT_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/* Append the n-th event (from 0) of a round to text. One signature, so a
 * connection kind names its format as a handler (struct held_ops). */
typedef void evfmt_fn(struct buf *text, int n, int64_t id, const char *body, size_t len);

/* "id: N\ndata: {...}\n\n" */
evfmt_fn evfmt_sse;
/* {...} with a comma before every one but the first */
evfmt_fn evfmt_poll;
/* {...}\n: one message per line (the JSON is one line) */
evfmt_fn evfmt_ws;

/* The head of an SSE response (extra header lines, "" for none) and its
 * retry: hint. */
void evfmt_sse_head(struct buf *out, const char *headers, int64_t retry_ms);
/* A whole long-poll answer: head (headers may be NULL), then
 * {"events":[text],"last":N} and a newline. */
void evfmt_poll_answer(struct buf *out, const char *headers, const struct buf *text, int64_t last);
/* An SSE comment that keeps proxies from timing the stream out. */
extern const char evfmt_keepalive[];
extern const size_t evfmt_keepalive_len;

#endif
