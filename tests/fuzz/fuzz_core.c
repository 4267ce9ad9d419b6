/*
 * fuzz_core.c - the command core end to end on an in-memory store: each
 * input is a POST body run as alice (logged in, in a room with bob), and
 * every answer must be a JSON object or array with a known status.
 */
#include "core/core.h"
#include "store/store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static core *c;
static char alice[CORE_TOKEN_LEN + 1];

static void run(const char *token, const char *body, core_result *r)
{
	core_result_init(r);
	core_exec_body(c, token, body, strlen(body), r);
}

static void setup(void)
{
	store *st = NULL;
	if (store_open(":memory:", 1000, &st) != SIG_OK)
		abort();
	struct core_limits lim = {.room_limit = 5, .mailbox_limit = 50, .replay_window = 50,
				  .heartbeat_timeout_ms = 60000, .ticket_ttl_ms = 30000, .max_sessions = 200, .max_rooms = 50,
				  .max_signal = 32768};
	c = core_new(st, &lim);
	core_result r;
	run(NULL, "{\"type\":\"login\",\"userId\":\"alice\"}", &r);
	memcpy(alice, r.token, sizeof alice);
	core_result_free(&r);
	run(NULL, "[{\"type\":\"login\",\"userId\":\"bob\"},{\"type\":\"join\",\"roomId\":\"r\"}]", &r);
	core_result_free(&r);
	run(alice, "{\"type\":\"join\",\"roomId\":\"r\"}", &r);
	core_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (c == NULL)
		setup();
	if (size > 70000)
		return 0;
	core_result r;
	core_result_init(&r);
	core_exec_body(c, alice, (const char *)data, size, &r);
	int s = sig_err_status(r.err);
	if (r.reply == NULL || !(s == 200 || s == 400 || s == 401 || s == 409 || s == 413 || s == 429 || s == 503))
		abort();
	if (!json_object_is_type(r.reply, json_type_object) && !json_object_is_type(r.reply, json_type_array))
		abort();
	/* alice must stay logged in and in her room whatever the input did,
	 * unless the input itself logged her out. */
	if (r.logged_out) {
		core_result_free(&r);
		run(NULL, "{\"type\":\"login\",\"userId\":\"alice\"}", &r);
		if (r.err == SIG_OK)
			memcpy(alice, r.token, sizeof alice);
		core_result_free(&r);
		run(alice, "{\"type\":\"join\",\"roomId\":\"r\"}", &r);
	}
	core_result_free(&r);
	return 0;
}
