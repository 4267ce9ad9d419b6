/*
 * fcgirec.c - FastCGI records (the 8-byte header of fastcgi.h) for the
 * responses the held-stream code writes itself. It only formats: it never
 * touches a socket and knows nothing of streams or events.
 */
#include "deliver/fcgirec.h"
#include "base/buf.h"

#include <fastcgi.h>

static void record(buf *b, int type, int request_id, const char *data, size_t len)
{
	FCGI_Header hdr = {
		.version = FCGI_VERSION_1,
		.type = (unsigned char)type,
		.requestIdB1 = (unsigned char)((request_id >> 8) & 0xff),
		.requestIdB0 = (unsigned char)(request_id & 0xff),
		.contentLengthB1 = (unsigned char)((len >> 8) & 0xff),
		.contentLengthB0 = (unsigned char)(len & 0xff),
	};
	buf_append(b, &hdr, sizeof hdr);
	if (len)
		buf_append(b, data, len);
}

void fcgirec_stdout(buf *out, int request_id, const char *data, size_t len)
{
	while (len > 0) {
		size_t n = len > 65535 ? 65535 : len;
		record(out, FCGI_STDOUT, request_id, data, n);
		data += n;
		len -= n;
	}
}

void fcgirec_end(buf *out, int request_id)
{
	FCGI_EndRequestBody end = {.protocolStatus = FCGI_REQUEST_COMPLETE};
	record(out, FCGI_STDOUT, request_id, NULL, 0);
	record(out, FCGI_END_REQUEST, request_id, (const char *)&end, sizeof end);
}
