/* The shared error shape (see gpp/error.h). */
#include "gpp/error.h"

#include <stdio.h>
#include <string.h>

int gpp_error_set(gpp_error *err, int rc, const char *code, const char *field,
                  const char *fmt, ...)
{
    if (!err) return rc;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "error");
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return rc;
}

void gpp_error_clear(gpp_error *err)
{
    if (!err) return;
    err->code[0] = err->field[0] = err->message[0] = '\0';
}

const char *gpp_strerror(int rc)
{
    switch (rc) {
    case GPP_OK: return "ok";
    case GPP_EINVAL: return "invalid argument";
    case GPP_ENOMEM: return "out of memory";
    case GPP_EIO: return "i/o error";
    case GPP_ETOOBIG: return "too large";
    case GPP_EFORMAT: return "malformed input";
    case GPP_EVERSION: return "unsupported version";
    case GPP_ECHECKSUM: return "checksum mismatch";
    case GPP_ENOTFOUND: return "not found";
    case GPP_EAGAIN: return "need more input";
    case GPP_EUNAVAIL: return "temporarily unavailable";
    default: return "unknown error";
    }
}
