/*
 * jsonv.h - strict JSON intake: parse a request body with json-c under a
 * depth cap and UTF-8 validation, then check an object against a table of
 * fields (name, json type, flags, length) before any value is read.
 */
#ifndef SIG_JSONV_H
#define SIG_JSONV_H

#include <json-c/json.h>
#include <stddef.h>

#include "base/error.h"

#define JV_MAX_DEPTH 16

enum {
	JV_REQUIRED = 1 << 0, /* absent -> SIG_E_INVALID_FIELD */
	JV_ID = 1 << 1,       /* string of 1-64 bytes of [A-Za-z0-9._~@+-] */
	JV_TEXT = 1 << 2,     /* string without control characters */
};

struct jv_field {
	const char *name;
	json_type type;
	unsigned flags;
	size_t max_len; /* strings: bytes; ints: 0 = any non-negative */
};

/* Parse body[0..len) as exactly one JSON value. Control characters
 * (raw NUL included) outside whitespace are refused. On success returns
 * SIG_OK and *out (free with json_object_put); else SIG_E_INVALID_JSON
 * and *out is NULL. */
sig_err jv_parse(const char *body, size_t len, json_object **out);

/* Which field a check refused and why, for the error reply: "field" names
 * it (the table's string, static) and msg says what was wrong with it in
 * one line ("protocol: at most 64 bytes"). field NULL: no field is at
 * fault (msg may still say what was, "" when nothing does). */
struct jv_fault {
	const char *field;
	char msg[128];
};

/* Check obj against the table, in table order: the first field at fault
 * decides. Fields not in the table are allowed. Returns SIG_OK, or
 * SIG_E_INVALID_FIELD with *why filled (why may be NULL), or
 * SIG_E_INVALID_JSON when obj is no object. */
sig_err jv_check(json_object *obj, const struct jv_field *fields, size_t n, struct jv_fault *why);

/* 1 if s (of length len) is a valid id. */
int jv_is_id(const char *s, size_t len);

/* The string value of a field checked by jv_check, or NULL when absent. */
const char *jv_str(json_object *obj, const char *name);

/* obj as the one-line JSON text the service sends and stores (the one
 * place that picks json-c's flags: plain, '/' not escaped), its length in
 * *len. Owned by obj: valid until obj changes or is freed. */
const char *jv_text(json_object *obj, size_t *len);

#endif
