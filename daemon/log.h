/* daemon/log.h - structured logs: one line per event on stderr,
 *   ts=2025-01-02T03:04:05.678Z level=info msg="listening" http=127.0.0.1:8080
 * The key=value part is the caller's printf format; quote values that may
 * hold spaces with log_quote(). Lines are written with one write(2). */
#ifndef GPPD_LOG_H
#define GPPD_LOG_H

#include <stddef.h>

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Set the lowest level written (LOG_INFO by default; GPPD_LOG=debug in the
 * environment at start-up lowers it, see log_init). */
void log_set_level(int level);

/* Read GPPD_LOG (debug|info|warn|error) from the environment. */
void log_init(void);

/* True when lines of `level` are written. */
int log_enabled(int level);

/* Write one line: level, msg (quoted and escaped), then the formatted
 * key=value pairs (fmt may be NULL or ""). */
void log_write(int level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quote and escape s for a log value: "a b" -> "\"a b\"", control
 * characters as \xNN, truncated to fit buf (size n). Returns buf. */
const char *log_quote(const char *s, char *buf, size_t n);

#define log_debug(msg, ...) log_write(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)

#endif
