/*
 * fuzz_upgrade.c - the WebSocket upgrade request head (hp_upgrade_parse): any
 * bytes, as the front server would pass them on.
 */
#include "transport/httpparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hp_upgrade u;
	enum hp_upgrade_result r = hp_upgrade_parse((const char *)data, size, &u);
	if (r == HP_UPGRADE_OK && (u.key == NULL || strlen(u.key) != 24))
		abort(); /* an accepted upgrade always has a well-formed key */
	if (r != HP_UPGRADE_OK && (u.key || u.query || u.host))
		abort(); /* a refused one exposes nothing */
	hp_upgrade_free(&u);
	return 0;
}
