/*
 * jsonv.c - parsing and table-driven validation of request JSON. Nothing
 * downstream reads a field that did not pass through here.
 */
#include "core/jsonv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. json-c's own check
 * (JSON_TOKENER_VALIDATE_UTF8) lets overlong forms such as C0 AF through. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (left < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/* json-c saturates integers out of the 64-bit range instead of failing,
 * so a relayed "seq":99999999999999999999 would arrive changed. Refuse
 * them: a relay is faithful or says no. (Depth is capped, so is recursion.) */
static int has_saturated_int(json_object *o)
{
	switch (json_object_get_type(o)) {
	case json_type_int: {
		int64_t v = json_object_get_int64(o);
		uint64_t u = json_object_get_uint64(o);
		return v == INT64_MIN || (v == INT64_MAX && u >= (uint64_t)INT64_MAX) || u == UINT64_MAX;
	}
	case json_type_array:
		for (size_t i = 0; i < json_object_array_length(o); i++)
			if (has_saturated_int(json_object_array_get_idx(o, i)))
				return 1;
		return 0;
	case json_type_object: {
		json_object_object_foreach(o, key, val) {
			(void)key;
			if (has_saturated_int(val))
				return 1;
		}
		return 0;
	}
	default:
		return 0;
	}
}

sig_err jv_parse(const char *body, size_t len, json_object **out)
{
	*out = NULL;
	const unsigned char *u = (const unsigned char *)body;
	for (size_t i = 0; i < len;) {
		if (u[i] < 0x20 && u[i] != '\t' && u[i] != '\n' && u[i] != '\r')
			return SIG_E_INVALID_JSON;
		size_t n = utf8_seq(u + i, len - i);
		if (n == 0)
			return SIG_E_INVALID_JSON;
		i += n;
	}
	json_tokener *tok = json_tokener_new_ex(JV_MAX_DEPTH);
	if (tok == NULL)
		return SIG_E_INTERNAL;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
	enum json_tokener_error err = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (obj == NULL || err != json_tokener_success || has_saturated_int(obj)) {
		json_object_put(obj);
		return SIG_E_INVALID_JSON;
	}
	for (size_t i = used; i < len; i++) {
		if (body[i] != ' ' && body[i] != '\t' && body[i] != '\n' && body[i] != '\r') {
			json_object_put(obj);
			return SIG_E_INVALID_JSON;
		}
	}
	*out = obj;
	return SIG_OK;
}

int jv_is_id(const char *s, size_t len)
{
	if (len < 1 || len > 64)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '~' || c == '@' || c == '+' || c == '-'))
			return 0;
	}
	return 1;
}

static int is_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* What a value of type t is called in a message. */
static const char *type_words(json_type t)
{
	switch (t) {
	case json_type_string: return "a string";
	case json_type_int: return "an integer";
	case json_type_boolean: return "true or false";
	case json_type_object: return "an object";
	case json_type_array: return "an array";
	case json_type_double: return "a number";
	default: return "null";
	}
}

/* Record the fault (when asked) and return SIG_E_INVALID_FIELD. */
static sig_err fault(struct jv_fault *why, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static sig_err fault(struct jv_fault *why, const char *field, const char *fmt, ...)
{
	if (why) {
		why->field = field;
		int n = snprintf(why->msg, sizeof why->msg, "%s: ", field);
		if (n < 0 || (size_t)n >= sizeof why->msg)
			n = 0;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why->msg + n, sizeof why->msg - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return SIG_E_INVALID_FIELD;
}

/* One present string field against its rule. */
static sig_err check_string(const struct jv_field *f, json_object *v, struct jv_fault *why)
{
	const char *s = json_object_get_string(v);
	size_t len = (size_t)json_object_get_string_len(v);
	if (strlen(s) != len) /* an escaped \u0000 inside */
		return fault(why, f->name, "must not contain NUL (\\u0000)");
	/* Length before characters: "at most 64 bytes" is the truer word for
	 * a long id than its alphabet. */
	if (f->max_len && len > f->max_len)
		return fault(why, f->name, "at most %zu bytes", f->max_len);
	if ((f->flags & JV_ID) && !jv_is_id(s, len))
		return fault(why, f->name, len == 0 ? "must not be empty"
						   : "only letters, digits and . _ ~ @ + - (1 to 64 of them)");
	if ((f->flags & JV_TEXT) && !is_text(s, len))
		return fault(why, f->name, "no control characters (newline, tab, DEL...)");
	return SIG_OK;
}

sig_err jv_check(json_object *obj, const struct jv_field *fields, size_t n, struct jv_fault *why)
{
	if (why) {
		why->field = NULL;
		why->msg[0] = '\0';
	}
	if (!json_object_is_type(obj, json_type_object))
		return SIG_E_INVALID_JSON;
	for (size_t i = 0; i < n; i++) {
		const struct jv_field *f = &fields[i];
		json_object *v = NULL;
		sig_err e = SIG_OK;
		if (!json_object_object_get_ex(obj, f->name, &v)) {
			if (f->flags & JV_REQUIRED)
				return fault(why, f->name, "required, %s", type_words(f->type));
			continue;
		}
		if (!json_object_is_type(v, f->type))
			return fault(why, f->name, "must be %s, not %s", type_words(f->type),
				     type_words(json_object_get_type(v)));
		if (f->type == json_type_string)
			e = check_string(f, v, why);
		else if (f->type == json_type_int && json_object_get_int64(v) < 0)
			e = fault(why, f->name, "must not be negative");
		if (e != SIG_OK)
			return e;
	}
	return SIG_OK;
}

const char *jv_str(json_object *obj, const char *name)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(obj, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

const char *jv_text(json_object *obj, size_t *len)
{
	return json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}
