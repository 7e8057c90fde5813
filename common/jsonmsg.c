/* Message and field-path helpers of the validators (see jsonmsg.h). */
#include "jsonmsg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *gpp__json_type_name(const cJSON *v)
{
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

/* Shortest text that reads back as `v`; integers without decimals. */
void gpp__fmt_number(char *buf, size_t n, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, n, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e18) {
        snprintf(buf, n, "%lld", (long long)v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* A printable, truncated rendering of arbitrary bytes for messages/paths. */
void gpp__fmt_bytes(char *buf, size_t n, const char *s)
{
    size_t o = 0, i = 0;
    if (!s) s = "";
    for (; s[i] && o + 5 < n && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (s[i] && o + 4 < n) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o < n ? o : n - 1] = '\0';
}

/* The value for scalars, the type otherwise. */
void gpp__fmt_value(char *buf, size_t n, const cJSON *v)
{
    if (cJSON_IsNumber(v)) {
        gpp__fmt_number(buf, n, v->valuedouble);
    } else if (cJSON_IsString(v)) {
        char tmp[256];
        gpp__fmt_bytes(tmp, sizeof tmp, v->valuestring);
        snprintf(buf, n, "\"%s\"", tmp);
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else {
        snprintf(buf, n, "%s", gpp__json_type_name(v));
    }
}

/* snprintf that truncates on purpose (paths and messages are capped). */
void gpp__bufprintf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

void gpp__path_key(char *buf, size_t n, const char *base, const char *key)
{
    char k[256];
    gpp__fmt_bytes(k, sizeof k, key);
    if (base && *base) gpp__bufprintf(buf, n, "%s.%s", base, k);
    else gpp__bufprintf(buf, n, "%s", k);
}

int gpp__fail(gpp_error *err, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", field, "%s", msg);
}

int gpp__oom(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
}

void gpp__path_index(char *buf, size_t n, const char *base, size_t i)
{
    gpp__bufprintf(buf, n, "%s[%zu]", base ? base : "", i);
}
