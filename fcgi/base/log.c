/*
 * log.c - the service's single log format (UTC time, level, pid) written
 * with one write(2) per line so lines from threads and worker processes
 * never interleave.
 */
#define _GNU_SOURCE
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_INFO;

void log_set_level(enum log_level min)
{
	log_min = min;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
	if (level < log_min)
		return;
	char line[1024];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%ld] ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (long)(tv.tv_usec / 1000), names[level], (long)getpid());
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

char *log_escape(const char *s, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (s == NULL)
		s = "(null)";
	for (size_t i = 0; s[i] && i < 64 && o + 5 < outsz; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}
