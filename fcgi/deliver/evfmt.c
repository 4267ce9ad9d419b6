/*
 * evfmt.c - the wire form of one event for each transport. The core stores
 * an event as a one-line JSON object without its id; the id is spliced in
 * here, first, so a client sees {"id":N,"type":...}. The JSON itself is
 * never re-parsed or rebuilt: only an integer and punctuation are added
 * (by buf_put_i64, not printf).
 *
 * It must never: touch a socket, or change the bytes of the stored object.
 */
#include "deliver/evfmt.h"
#include "base/buf.h"

static const char sse_head[] = "Status: 200 OK\r\n"
			       "Content-Type: text/event-stream\r\n"
			       "Cache-Control: no-cache, no-store\r\n"
			       "X-Accel-Buffering: no\r\n";
static const char poll_head[] = "Status: 200 OK\r\n"
				"Content-Type: application/json\r\n"
				"Cache-Control: no-store\r\n";
const char evfmt_keepalive[] = ": keepalive\n\n";
const size_t evfmt_keepalive_len = sizeof evfmt_keepalive - 1;

#define PUT(b, lit) buf_append((b), lit, sizeof lit - 1)

/* body is a JSON object from the core: "{...}"; put the id first. */
static void splice(buf *t, int64_t id, const char *body, size_t len)
{
	PUT(t, "{\"id\":");
	buf_put_i64(t, id);
	if (len > 2)
		PUT(t, ",");
	buf_append(t, body + 1, len - 1);
}

void evfmt_sse(buf *t, int n, int64_t id, const char *body, size_t len)
{
	(void)n;
	PUT(t, "id: ");
	buf_put_i64(t, id);
	PUT(t, "\ndata: ");
	splice(t, id, body, len);
	PUT(t, "\n\n");
}

void evfmt_poll(buf *t, int n, int64_t id, const char *body, size_t len)
{
	if (n > 0)
		PUT(t, ",");
	splice(t, id, body, len);
}

void evfmt_ws(buf *t, int n, int64_t id, const char *body, size_t len)
{
	(void)n;
	splice(t, id, body, len);
	PUT(t, "\n");
}

void evfmt_sse_head(buf *out, const char *headers, int64_t retry_ms)
{
	PUT(out, sse_head);
	buf_puts(out, headers);
	PUT(out, "\r\nretry: ");
	buf_put_i64(out, retry_ms);
	PUT(out, "\n\n");
}

void evfmt_poll_answer(buf *out, const char *headers, const buf *text, int64_t last)
{
	PUT(out, poll_head);
	if (headers)
		buf_puts(out, headers);
	PUT(out, "\r\n{\"events\":[");
	if (text->len)
		buf_append(out, text->data, text->len);
	PUT(out, "],\"last\":");
	buf_put_i64(out, last);
	PUT(out, "}\n");
}
