/*
 * fcgirec.h - the FastCGI record writer for held responses: STDOUT records
 * and the end of a request, appended to a byte queue that the held-stream
 * code writes to its non-blocking socket (libfcgi's own streams block).
 */
#ifndef SIG_FCGIREC_H
#define SIG_FCGIREC_H

#include <stddef.h>

struct buf;

/* Append data as STDOUT records (at most 65535 bytes each) of request_id. */
void fcgirec_stdout(struct buf *out, int request_id, const char *data, size_t len);
/* Append the end of the response: an empty STDOUT and END_REQUEST. */
void fcgirec_end(struct buf *out, int request_id);

#endif
