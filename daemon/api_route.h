/* daemon/api_route.h - the request-line and header half of the HTTP API
 * (prefix api_route_): the router table, percent-decoding of the URL path,
 * matching a path against the routes (path parameters), the static-file
 * path rule, the bearer token in Authorization, and the Content-Type /
 * Content-Length checks of JSON bodies.  No libmicrohttpd, no store, no
 * I/O: tests/fuzz/fuzz_route.c feeds them arbitrary bytes; api.c adds the
 * handlers, the token lookup and the replies. */
#ifndef GPPD_API_ROUTE_H
#define GPPD_API_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

#define API_MAX_PARAMS 2        /* {x} segments of one pattern */
#define API_PARAM_MAX 128       /* a path parameter is 1..127 bytes */
#define API_ALLOW_MAX 64        /* the Allow list of a 405 */

enum api_auth { API_AUTH_NONE, API_AUTH_USER, API_AUTH_ADMIN };

/* Which handler a route runs (api.c maps each to its function). */
enum api_route_id {
    API_R_HEALTH, API_R_OPENAPI, API_R_JOBS_LIST, API_R_JOBS_SUBMIT, API_R_JOB_GET,
    API_R_JOB_CANCEL, API_R_JOB_RETRY, API_R_JOB_METRICS, API_R_JOB_LOGS,
    API_R_JOB_ARCHITECTURE, API_R_JOB_EVENTS, API_R_JOB_MODEL, API_R_WORKERS_LIST,
    API_R_WORKER_DRAIN, API_R_DATASETS_LIST, API_R_DATASETS_REGISTER, API_R_DATASET_GET,
    API_R_TOKENS_LIST, API_R_TOKENS_ISSUE, API_R_TOKEN_REVOKE, API_R_PROMETHEUS,
    API_R_MODELS_UPLOAD, API_R_MODELS_LIST, API_R_MODEL_GET, API_R_MODEL_DELETE,
    API_R_STATIC,               /* the dashboard's files: any other GET outside /api */
    API_R_COUNT
};

typedef struct api_route {
    enum api_route_id id;
    const char *method;         /* GET, POST, DELETE */
    const char *pattern;        /* "/api/v1/jobs/{id}/cancel" */
    enum api_auth auth;
    bool json_body;             /* needs an application/json body */
    bool upload;                /* an application/octet-stream body streamed to an
                                   artifact (up to API_UPLOAD_MAX bytes) */
} api_route;

/* The router table (without the static route): its size, and route i
 * (NULL past the end).  Each API_R_* but API_R_STATIC appears once. */
size_t api_route_table_size(void);
const api_route *api_route_at(size_t i);

/* Percent-decode the path part (before '?' or '#') of a raw request URI.
 * Returns a malloc'd NUL-terminated path starting with '/', or NULL for a
 * URI not starting with '/', a bad or truncated %-escape, an encoded NUL
 * (%00), or out of memory.  '.' and ".." segments are kept (the static
 * route refuses them; api_route_static_rel). */
char *api_route_decode_path(const char *uri);

/* Match a decoded path against a pattern; each {x} takes one non-empty
 * segment (no '/') of at most API_PARAM_MAX - 1 bytes, copied NUL-terminated
 * into params[k] when params is not NULL (it has API_MAX_PARAMS rows).
 * Returns the number of parameters, or -1 when the path does not match
 * (also when the pattern has more than API_MAX_PARAMS of them). */
int api_route_match(const char *pattern, const char *path,
                    char (*params)[API_PARAM_MAX]);

/* Where a request goes. */
typedef struct api_route_hit {
    const api_route *route;                         /* NULL: no route */
    unsigned status;                                /* 0, or 404 / 405 */
    char params[API_MAX_PARAMS][API_PARAM_MAX];
} api_route_hit;

/* Route method + decoded path: the first table route whose pattern matches
 * and whose method is `method` (HEAD counts as GET) wins, with its
 * parameters; with none, a GET outside /api (not "/api" nor "/api/...")
 * goes to the static route.  Returns 0 with hit->route set, or
 * GPP_ENOTFOUND with hit->status and err filled as the reply:
 *   405 "method_not_allowed", field = the Allow list ("GET, POST"; "GET,
 *       HEAD" for the static files), when the path matches only other methods
 *       or is a static path asked with another method than GET/HEAD;
 *   404 "not_found", field "", for a path under /api that no route has.
 * The message quotes method and path as valid UTF-8 whatever they hold
 * (other bytes become '?'; past 200 bytes cut, with "..."). */
int api_route_find(const char *method, const char *path, api_route_hit *hit,
                   gpp_error *err);

/* The static route's rule: every segment of the decoded path is a plain
 * name (not "", ".", "..", no backslash), the path is short enough, and a
 * path ending in '/' means its index.html.  Writes the path relative to the
 * web root (no leading '/') into rel (n bytes) and returns 0, or -1: then
 * the reply is 404. */
int api_route_static_rel(const char *path, char *rel, size_t n);

/* The bearer token in an Authorization header value (NULL: no header):
 * "Bearer" (any case) and one space, spaces around the token ignored, and
 * the token must have the shape of one (token_check).  Returns 0 with
 * *tok / *len pointing into header (not NUL-terminated), or GPP_EFORMAT,
 * code "unauthenticated", field "" (the reply is 401) and the message
 * "missing Authorization: Bearer TOKEN", "the Authorization header must be
 * `Bearer TOKEN`" or "malformed token". */
int api_route_bearer(const char *header, const char **tok, size_t *len, gpp_error *err);

/* Is a Content-Type value (NULL: none) application/json, any case, with
 * spaces around it and optional parameters after ';'? */
bool api_route_is_json(const char *content_type);
/* The same for application/octet-stream (an upload's body). */
bool api_route_is_octets(const char *content_type);

/* Does a Content-Length value (NULL: none) announce more than max bytes?
 * True, with the length in *n, only for a valid decimal over max; anything
 * else is left to libmicrohttpd and the body limit while reading. */
bool api_route_body_too_big(const char *content_length, int64_t max, int64_t *n);

#endif
