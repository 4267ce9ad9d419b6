/*
 * ratelimit.c - a fixed table of token buckets, direct-mapped by a 64-bit
 * hash of (kind, key). A client count never sizes an allocation: when two
 * keys land in one slot the newer resets it, which can only make the limit
 * more lenient for them, never lock anyone out.
 */
#include "core/ratelimit.h"
#include "base/util.h"

#include <pthread.h>

#define RL_SLOTS 8192

struct bucket {
	uint64_t key;
	double tokens;
	int64_t stamp_us;
};

static struct bucket table[RL_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_key(char kind, const char *key)
{
	uint64_t h = 1469598103934665603ull ^ (unsigned char)kind;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return h | 1; /* 0 marks an empty slot */
}

int rl_take(char kind, const char *key, double rate, double burst)
{
	uint64_t h = hash_key(kind, key ? key : "");
	int64_t now = util_mono_us();
	pthread_mutex_lock(&lock);
	struct bucket *b = &table[h % RL_SLOTS];
	if (b->key != h) {
		b->key = h;
		b->tokens = burst;
		b->stamp_us = now;
	}
	b->tokens += (double)(now - b->stamp_us) / 1e6 * rate;
	if (b->tokens > burst)
		b->tokens = burst;
	b->stamp_us = now;
	int wait = 0;
	if (b->tokens >= 1.0)
		b->tokens -= 1.0;
	else
		wait = (int)((1.0 - b->tokens) / rate) + 1;
	pthread_mutex_unlock(&lock);
	return wait;
}
