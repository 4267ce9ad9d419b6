/*
 * error.c - the single table from sig_err to HTTP status, wire code and
 * message. Nothing else in the tree decides an error's status: the core
 * returns sig_err, and the transports (web.c, ws.c) map it here. Both front
 * servers answer what they refuse themselves (a bad request
 * line, a body too large, the responder down or silent) in the words of
 * this table: both from the files in errors/ (tools/error-pages.sh writes
 * them from here; tests/67-front-errors.t checks them against this table
 * and provokes each through both servers).
 */
#include "base/error.h"

#include <json-c/json.h>

static const struct {
	int status;
	const char *code;
	const char *msg;
} sig_errors[SIG_E__COUNT] = {
	[SIG_OK] = {200, "ok", "ok"},
	[SIG_E_INVALID_JSON] = {400, "invalid-json", "body must be one JSON object or an array of them (UTF-8, nesting capped)"},
	[SIG_E_UNKNOWN_TYPE] = {400, "unknown-type", "\"type\" is missing or names no command"},
	[SIG_E_INVALID_FIELD] = {400, "invalid-field", "a field is missing, of the wrong type or out of bounds"},
	[SIG_E_BAD_REQUEST] = {400, "bad-request", "malformed or oversized request line, query string or header"},
	[SIG_E_UNAUTHORIZED] = {401, "unauthorized", "no token, or the session is gone; log in again"},
	[SIG_E_FORBIDDEN_ORIGIN] = {403, "forbidden-origin", "requests from this origin are not allowed"},
	[SIG_E_FORBIDDEN] = {403, "forbidden", "not allowed from this address or with this credential"},
	[SIG_E_BANNED] = {403, "banned", "this user or address is banned for a while; see retryAfter"},
	[SIG_E_NOT_FOUND] = {404, "not-found", "no such endpoint"},
	[SIG_E_UNKNOWN_USER] = {404, "unknown-user", "no live session has that userId"},
	[SIG_E_UNKNOWN_ROOM] = {404, "unknown-room", "no room of that id has members"},
	[SIG_E_METHOD] = {405, "method-not-allowed", "wrong HTTP method for this endpoint"},
	[SIG_E_USER_EXISTS] = {409, "user-exists", "that userId belongs to another live session"},
	[SIG_E_ROOM_FULL] = {409, "room-full", "the room is full"},
	[SIG_E_NOT_IN_ROOM] = {409, "not-in-room", "join a room first"},
	[SIG_E_UNKNOWN_PEER] = {409, "unknown-peer", "\"to\" is not a member of your room"},
	[SIG_E_CID_CONFLICT] = {409, "cid-conflict", "this session already used that cid for a different command"},
	[SIG_E_TOO_LARGE] = {413, "too-large", "request body over the size limit"},
	[SIG_E_MAILBOX_FULL] = {429, "mailbox-full", "a recipient's mailbox is full; nothing was queued, retry later"},
	[SIG_E_RATE_LIMITED] = {429, "rate-limited", "too many requests; retry after the time in Retry-After"},
	[SIG_E_SERVER_FULL] = {503, "server-full", "the service is at its session or room limit; retry later"},
	[SIG_E_DRAINING] = {503, "draining", "the server is restarting; retry after the time in Retry-After"},
	[SIG_E_BUSY] = {503, "busy", "the store is busy; retry"},
	[SIG_E_INTERNAL] = {500, "internal", "internal error"},
	[SIG_E_BAD_GATEWAY] = {502, "bad-gateway", "the signaling service broke off its answer; retry"},
	[SIG_E_UNAVAILABLE] = {503, "unavailable", "the signaling service is not running or is restarting; retry"},
	[SIG_E_GATEWAY_TIMEOUT] = {504, "gateway-timeout", "the signaling service did not answer in time; retry"},
};

static int in_range(sig_err e)
{
	return e >= 0 && e < SIG_E__COUNT;
}

int sig_err_status(sig_err e)
{
	return in_range(e) ? sig_errors[e].status : 500;
}

const char *sig_err_code(sig_err e)
{
	return in_range(e) ? sig_errors[e].code : "internal";
}

const char *sig_err_msg(sig_err e)
{
	return in_range(e) ? sig_errors[e].msg : "internal error";
}

void sig_err_put_status(json_object *reply, sig_err e)
{
	if (e != SIG_OK && json_object_is_type(reply, json_type_object) &&
	    !json_object_object_get_ex(reply, "status", NULL))
		json_object_object_add(reply, "status", json_object_new_int(sig_err_status(e)));
}

void sig_err_put_batch_status(json_object *replies, const sig_err *errs, int n)
{
	for (int i = 0; i < n; i++)
		sig_err_put_status(json_object_array_get_idx(replies, (size_t)i), errs[i]);
}

const char *sig_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Internal Server Error";
	}
}
