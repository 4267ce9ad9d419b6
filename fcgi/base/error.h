/*
 * error.h - the service's one list of outcomes. Every failure a client can
 * see is one of these; error.c maps each to its HTTP status, its wire code
 * and a human message, in exactly one place.
 */
#ifndef SIG_ERROR_H
#define SIG_ERROR_H

struct json_object;

typedef enum sig_err {
	SIG_OK = 0,
	/* the peer sent something we refuse */
	SIG_E_INVALID_JSON,   /* 400 body is not one JSON object/array, bad UTF-8, too deep */
	SIG_E_UNKNOWN_TYPE,   /* 400 "type" missing or not a command we know */
	SIG_E_INVALID_FIELD,  /* 400 a field is missing, mistyped or out of bounds */
	SIG_E_BAD_REQUEST,    /* 400 malformed query string or header */
	SIG_E_UNAUTHORIZED,   /* 401 no token, or a token of no live session, or a bad login signature */
	SIG_E_FORBIDDEN_ORIGIN, /* 403 a browser request from an origin not allowed */
	SIG_E_FORBIDDEN,      /* 403 an operator endpoint from an address or with a token not allowed */
	SIG_E_BANNED,         /* 403 the userId or address is banned (admin API) for a while yet */
	SIG_E_NOT_FOUND,      /* 404 unknown path */
	SIG_E_METHOD,         /* 405 wrong method for the path */
	SIG_E_UNKNOWN_USER,   /* 404 admin API: no live session has that userId */
	SIG_E_UNKNOWN_ROOM,   /* 404 admin API: the room has no members */
	SIG_E_USER_EXISTS,    /* 409 the id belongs to another live session */
	SIG_E_ROOM_FULL,      /* 409 the room is at its limit */
	SIG_E_NOT_IN_ROOM,    /* 409 a room command outside a room */
	SIG_E_UNKNOWN_PEER,   /* 409 "to" is not in the sender's room */
	SIG_E_CID_CONFLICT,   /* 409 the command's "cid" was used for another command */
	SIG_E_TOO_LARGE,      /* 413 body over the limit */
	SIG_E_MAILBOX_FULL,   /* 429 a recipient's mailbox is at its cap */
	SIG_E_RATE_LIMITED,   /* 429 this client or session is over its rate */
	/* we failed */
	SIG_E_BUSY,           /* 503 the store stayed locked past the busy timeout */
	SIG_E_SERVER_FULL,    /* 503 --max-sessions or --max-rooms reached */
	SIG_E_DRAINING,       /* 503 this process is shutting down: log in again after Retry-After */
	SIG_E_INTERNAL,       /* 500 a store or system call failed */
	/* Answered by the front server, never by the responder: lighttpd.conf
	 * and nginx.conf say them in these words (errors/) when the responder
	 * cannot (tests/67-front-errors.t checks that they agree). */
	SIG_E_BAD_GATEWAY,     /* 502 the responder broke off or answered garbage */
	SIG_E_UNAVAILABLE,     /* 503 no responder is running or accepting */
	SIG_E_GATEWAY_TIMEOUT, /* 504 the responder did not answer in time */
	SIG_E__COUNT
} sig_err;

const char *sig_err_code(sig_err e); /* wire code, e.g. "room-full" */
const char *sig_err_msg(sig_err e);  /* one English sentence */

/* ---- for the transports only: the core knows no HTTP ---- */
int sig_err_status(sig_err e);      /* HTTP status */
const char *sig_http_reason(int status);
/* A failed reply object (e != SIG_OK) says its HTTP status as "status",
 * unless it already does: a batch's failed commands, and every WebSocket
 * error reply (a socket has no status line). */
void sig_err_put_status(struct json_object *reply, sig_err e);
/* The same for each of the n replies of a batch (a JSON array), errs[i]
 * being the outcome of reply i. */
void sig_err_put_batch_status(struct json_object *replies, const sig_err *errs, int n);

#endif
