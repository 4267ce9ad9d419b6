/*
 * util.c - clocks, strict integer parsing, canonical IP addresses and
 * starting detached threads, shared by every module.
 */
#define _GNU_SOURCE
#include "base/util.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	if (s == NULL || *s == '\0')
		return -1;
	for (const char *p = s; *p; p++)
		if ((*p < '0' || *p > '9') && !(p == s && *p == '-'))
			return -1;
	errno = 0;
	char *end = NULL;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int util_start_thread(const char *who, void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) != 0) {
		log_error("%s: cannot start thread", who);
		return -1;
	}
	pthread_detach(t);
	return 0;
}

int util_start_threads(int n, void *(*fn)(void *))
{
	pthread_t t;
	for (int i = 0; i < n; i++) {
		if (pthread_create(&t, NULL, fn, NULL) != 0)
			return -1;
		pthread_detach(t);
	}
	return 0;
}

int util_canon_addr(const char *s, char out[UTIL_ADDR_MAX])
{
	struct in_addr v4;
	struct in6_addr v6;
	if (inet_pton(AF_INET, s, &v4) == 1)
		return inet_ntop(AF_INET, &v4, out, UTIL_ADDR_MAX) ? 0 : -1;
	if (inet_pton(AF_INET6, s, &v6) != 1)
		return -1;
	if (IN6_IS_ADDR_V4MAPPED(&v6)) {
		memcpy(&v4, &v6.s6_addr[12], sizeof v4);
		return inet_ntop(AF_INET, &v4, out, UTIL_ADDR_MAX) ? 0 : -1;
	}
	return inet_ntop(AF_INET6, &v6, out, UTIL_ADDR_MAX) ? 0 : -1;
}
