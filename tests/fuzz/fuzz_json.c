/*
 * fuzz_json.c - request bodies through jv_parse and table validation.
 * Properties: never crash, never leak; an object or array that parses
 * re-serialises to JSON that parses again, to the same text (what the core
 * stores and relays is valid and unchanged). Bare scalars are not requests.
 */
#define _GNU_SOURCE
#include "core/jsonv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct jv_field fields[] = {
	{"type", json_type_string, JV_REQUIRED | JV_ID, 64},
	{"userId", json_type_string, JV_ID, 64},
	{"protocol", json_type_string, JV_TEXT, 64},
	{"ack", json_type_int, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *obj = NULL;
	if (jv_parse((const char *)data, size, &obj) != SIG_OK)
		return 0;
	if (json_object_is_type(obj, json_type_object)) {
		struct jv_fault why;
		if (jv_check(obj, fields, sizeof fields / sizeof fields[0], &why) == SIG_E_INVALID_FIELD &&
		    (why.field == NULL || strncmp(why.msg, why.field, strlen(why.field)) != 0))
			abort(); /* a refused field is always named, first in its message */
	}
	if (json_object_is_type(obj, json_type_object) || json_object_is_type(obj, json_type_array)) {
		size_t len = 0;
		const char *text = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
		char *again = strndup(text, len);
		json_object *back = NULL;
		if (jv_parse(again, len, &back) != SIG_OK)
			abort(); /* we would store something we cannot read back */
		if (strcmp(json_object_to_json_string_ext(back, JSON_C_TO_STRING_PLAIN), again) != 0)
			abort(); /* ... or something that changes on the way */
		json_object_put(back);
		free(again);
	}
	json_object_put(obj);
	return 0;
}
