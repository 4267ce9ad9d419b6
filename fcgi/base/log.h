/*
 * log.h - one line per event worth knowing, to stderr:
 *   2026-11-24T19:03:56.123Z INFO  [pid] message
 * Client-supplied bytes go through log_escape() first; tokens never do.
 */
#ifndef SIG_LOG_H
#define SIG_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level min);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* Copy at most 64 bytes of untrusted s into out (size >= 4 * 64 + 4),
 * escaping every byte outside printable ASCII as \xHH; returns out. */
#define LOG_ESCAPE_SIZE 264
char *log_escape(const char *s, char *out, size_t outsz);

#endif
