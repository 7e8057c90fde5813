/* daemon/api.h - the HTTP API on libmicrohttpd (prefix api_): router,
 * bearer-token auth, the error shape, JSON/CSV responses, static files.
 *
 * Threads: MHD's internal epoll thread pool (2 threads); handlers reach the
 * daemon through the closure.  Limits: 1 MiB JSON bodies and 512 MiB uploads
 * (413 as soon as the declared or received size passes it), connection,
 * per-IP and idle-time limits set on the MHD daemon. */
#ifndef GPPD_API_H
#define GPPD_API_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

struct gppd;
typedef struct api api;

#define API_BODY_MAX (1024 * 1024)     /* JSON request bodies */
#define API_UPLOAD_MAX (512LL << 20)    /* an uploaded checkpoint (POST /api/v1/models) */
#define API_UPLOAD_DEADLINE_S 600       /* the whole upload request, instead of 10 s */

/* Start the HTTP server on d->cfg.listen. Returns 0 with *out set, or an
 * error ("cannot listen on ..."). */
int api_start(api **out, struct gppd *d, gpp_error *err);

/* The bound port. */
uint16_t api_port(const api *a);

/* Stop accepting, wait up to 10 s for in-flight requests, stop the
 * threads, free a. NULL is fine. */
void api_stop(api *a);

/* The router table, for the OpenAPI check: route i's method and path
 * pattern ("/api/v1/jobs/{id}"). Returns 0, or -1 past the end. */
size_t api_route_count(void);
int api_route_get(size_t i, const char **method, const char **pattern);

/* The OpenAPI 3 document served at /api/v1/openapi.json (embedded at build
 * time from daemon/openapi.json). */
extern const char gppd_openapi_json[];
extern const size_t gppd_openapi_json_len;

#endif
