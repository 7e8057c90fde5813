/* common/jsonmsg.h - internal: the message and field-path helpers shared by
 * the job-spec and network-description validators (common/jobspec.c,
 * common/netdesc.c).  Not a public API. */
#ifndef GPP_COMMON_JSONMSG_H
#define GPP_COMMON_JSONMSG_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "gpp/error.h"

/* "a number", "a string", ... ("nothing" for NULL). */
const char *gpp__json_type_name(const cJSON *v);
/* Shortest text that reads back as `v`; integers without decimals. */
void gpp__fmt_number(char *buf, size_t n, double v);
/* A printable, truncated rendering of arbitrary bytes for messages/paths. */
void gpp__fmt_bytes(char *buf, size_t n, const char *s);
/* "What we got": the value for scalars, the type otherwise. */
void gpp__fmt_value(char *buf, size_t n, const cJSON *v);
/* snprintf that truncates on purpose (paths and messages are capped). */
void gpp__bufprintf(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "base.key" (or "key" when base is empty) into buf. */
void gpp__path_key(char *buf, size_t n, const char *base, const char *key);
/* "base[i]" into buf. */
void gpp__path_index(char *buf, size_t n, const char *base, size_t i);
/* Fill *err as invalid_argument at `field`; returns GPP_EINVAL. */
int gpp__fail(gpp_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fill *err as out_of_memory; returns GPP_ENOMEM. */
int gpp__oom(gpp_error *err);

#endif
