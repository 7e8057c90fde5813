/* daemon/log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static atomic_int log_level = LOG_INFO;

void log_set_level(int level)
{
    atomic_store(&log_level, level);
}

void log_init(void)
{
    const char *e = getenv("GPPD_LOG");
    if (!e)
        return;
    if (strcmp(e, "debug") == 0) log_set_level(LOG_DEBUG);
    else if (strcmp(e, "info") == 0) log_set_level(LOG_INFO);
    else if (strcmp(e, "warn") == 0) log_set_level(LOG_WARN);
    else if (strcmp(e, "error") == 0) log_set_level(LOG_ERROR);
}

int log_enabled(int level)
{
    return level >= atomic_load(&log_level);
}

const char *log_quote(const char *s, char *buf, size_t n)
{
    size_t o = 0;
    if (n < 3) {
        if (n)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char tmp[5];
        size_t k;
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            k = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", *p);
            k = 4;
        } else {
            tmp[0] = (char)*p;
            k = 1;
        }
        if (o + k + 2 > n)
            break;
        memcpy(buf + o, tmp, k);
        o += k;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_write(int level, const char *msg, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (!log_enabled(level))
        return;
    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_ERROR;
    char line[2048];
    char ts[32], qmsg[512];
    gpp__fmt_time(gpp__now_ms(), ts);
    int n = snprintf(line, sizeof line, "ts=%s level=%s msg=%s", ts, names[level],
                     log_quote(msg, qmsg, sizeof qmsg));
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fmt && *fmt && len + 2 < sizeof line) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + len, sizeof line - len, fmt, ap);
        va_end(ap);
        if (m > 0)
            len += (size_t)m < sizeof line - len ? (size_t)m : sizeof line - len - 1;
    }
    if (len + 1 >= sizeof line)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
