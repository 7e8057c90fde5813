/* daemon/api_route.c - see api_route.h. */
#include "api_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "tokens.h"
#include "util.h"

/* ---- the router table ------------------------------------------------------ */

static const api_route routes[] = {
    {API_R_HEALTH, "GET", "/api/v1/health", API_AUTH_NONE, false, false},
    {API_R_OPENAPI, "GET", "/api/v1/openapi.json", API_AUTH_NONE, false, false},
    {API_R_JOBS_LIST, "GET", "/api/v1/jobs", API_AUTH_USER, false, false},
    {API_R_JOBS_SUBMIT, "POST", "/api/v1/jobs", API_AUTH_USER, true, false},
    {API_R_JOB_GET, "GET", "/api/v1/jobs/{id}", API_AUTH_USER, false, false},
    {API_R_JOB_CANCEL, "POST", "/api/v1/jobs/{id}/cancel", API_AUTH_USER, false, false},
    {API_R_JOB_RETRY, "POST", "/api/v1/jobs/{id}/retry", API_AUTH_USER, false, false},
    {API_R_JOB_METRICS, "GET", "/api/v1/jobs/{id}/metrics", API_AUTH_USER, false, false},
    {API_R_JOB_LOGS, "GET", "/api/v1/jobs/{id}/logs", API_AUTH_USER, false, false},
    {API_R_JOB_ARCHITECTURE, "GET", "/api/v1/jobs/{id}/architecture", API_AUTH_USER, false, false},
    {API_R_JOB_EVENTS, "GET", "/api/v1/jobs/{id}/events", API_AUTH_USER, false, false},
    {API_R_JOB_MODEL, "GET", "/api/v1/jobs/{id}/model", API_AUTH_USER, false, false},
    {API_R_WORKERS_LIST, "GET", "/api/v1/workers", API_AUTH_USER, false, false},
    {API_R_WORKER_DRAIN, "POST", "/api/v1/workers/{id}/drain", API_AUTH_ADMIN, false, false},
    {API_R_DATASETS_LIST, "GET", "/api/v1/datasets", API_AUTH_USER, false, false},
    {API_R_DATASETS_REGISTER, "POST", "/api/v1/datasets", API_AUTH_ADMIN, true, false},
    {API_R_DATASET_GET, "GET", "/api/v1/datasets/{name}", API_AUTH_USER, false, false},
    {API_R_TOKENS_LIST, "GET", "/api/v1/tokens", API_AUTH_ADMIN, false, false},
    {API_R_TOKENS_ISSUE, "POST", "/api/v1/tokens", API_AUTH_ADMIN, true, false},
    {API_R_TOKEN_REVOKE, "DELETE", "/api/v1/tokens/{id}", API_AUTH_ADMIN, false, false},
    {API_R_PROMETHEUS, "GET", "/metrics", API_AUTH_NONE, false, false},
    {API_R_MODELS_UPLOAD, "POST", "/api/v1/models", API_AUTH_USER, false, true},
    {API_R_MODELS_LIST, "GET", "/api/v1/models", API_AUTH_USER, false, false},
    {API_R_MODEL_GET, "GET", "/api/v1/models/{sha256}", API_AUTH_USER, false, false},
    {API_R_MODEL_DELETE, "DELETE", "/api/v1/models/{sha256}", API_AUTH_USER, false, false},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

static const api_route static_route = {API_R_STATIC, "GET", "/", API_AUTH_NONE, false, false};

size_t api_route_table_size(void)
{
    return N_ROUTES;
}

const api_route *api_route_at(size_t i)
{
    return i < N_ROUTES ? &routes[i] : NULL;
}

/* The OpenAPI check's view of the table (api.h). */
size_t api_route_count(void)
{
    return N_ROUTES;
}

int api_route_get(size_t i, const char **method, const char **pattern)
{
    if (i >= N_ROUTES)
        return -1;
    *method = routes[i].method;
    *pattern = routes[i].pattern;
    return 0;
}

/* ---- the path -------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *api_route_decode_path(const char *uri)
{
    size_t n = strcspn(uri, "?#");
    if (n == 0 || uri[0] != '/')
        return NULL;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (uri[i] != '%') {
            out[o++] = uri[i];
            continue;
        }
        if (i + 2 >= n) {
            free(out);
            return NULL;
        }
        int a = hexval(uri[i + 1]), b = hexval(uri[i + 2]);
        if (a < 0 || b < 0 || (a == 0 && b == 0)) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(a * 16 + b);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

int api_route_match(const char *pattern, const char *path, char (*params)[API_PARAM_MAX])
{
    int np = 0;
    const char *p = pattern, *u = path;
    while (*p && *u) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            const char *ue = strchr(u, '/');
            size_t n = ue ? (size_t)(ue - u) : strlen(u);
            if (!pe || n == 0 || n >= API_PARAM_MAX || np >= API_MAX_PARAMS)
                return -1;
            if (params) {
                memcpy(params[np], u, n);
                params[np][n] = '\0';
            }
            np++;
            p = pe + 1;
            u += n;
            continue;
        }
        if (*p != *u)
            return -1;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0' ? np : -1;
}


/* The path as it may appear in an error message (which becomes JSON text):
 * valid UTF-8 kept, any other byte '?', at most API_ROUTE_EXCERPT bytes
 * of it, cut at a character boundary and followed by "..." when longer. */
#define API_ROUTE_EXCERPT 200
static void excerpt(const char *text, char out[API_ROUTE_EXCERPT + 4])
{
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    while (*s) {
        size_t n = gpp__utf8_len(s);
        if (o + (n ? n : 1) > API_ROUTE_EXCERPT) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (n == 0) {
            out[o++] = '?';
            s++;
            continue;
        }
        memcpy(out + o, s, n);
        o += n;
        s += n;
    }
    out[o] = '\0';
}

int api_route_find(const char *method, const char *path, api_route_hit *hit, gpp_error *err)
{
    hit->route = NULL;
    hit->status = 0;
    memset(hit->params, 0, sizeof hit->params);
    bool head = strcmp(method, "HEAD") == 0;
    const char *m = head ? "GET" : method;
    char allow[API_ALLOW_MAX] = "";
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (api_route_match(routes[i].pattern, path, NULL) < 0)
            continue;
        if (strcmp(routes[i].method, m) == 0) {
            hit->route = &routes[i];
            api_route_match(routes[i].pattern, path, hit->params);
            return 0;
        }
        if (!strstr(allow, routes[i].method)) {
            if (allow[0])
                strncat(allow, ", ", sizeof allow - strlen(allow) - 1);
            strncat(allow, routes[i].method, sizeof allow - strlen(allow) - 1);
        }
    }
    char p[API_ROUTE_EXCERPT + 4], mt[API_ROUTE_EXCERPT + 4];
    excerpt(path, p);
    excerpt(method, mt);
    if (allow[0]) {
        hit->status = 405;
        return gpp_error_set(err, GPP_ENOTFOUND, "method_not_allowed", allow,
                             "%s is not allowed on %s (allowed: %s)", mt, p, allow);
    }
    if (strncmp(path, "/api/", 5) == 0 || strcmp(path, "/api") == 0) {
        hit->status = 404;
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "", "no such endpoint: %s", p);
    }
    if (strcmp(m, "GET") != 0) {
        hit->status = 405;
        return gpp_error_set(err, GPP_ENOTFOUND, "method_not_allowed", "GET, HEAD",
                             "%s is not allowed on %s (allowed: GET, HEAD)", mt, p);
    }
    hit->route = &static_route;
    return 0;
}

int api_route_static_rel(const char *path, char *rel, size_t n)
{
    if (path[0] != '/' || n == 0)
        return -1;
    /* every segment must be a plain name: no "", ".", "..", backslashes */
    for (const char *s = path + 1; *s;) {
        size_t k = strcspn(s, "/");
        if ((k == 1 && s[0] == '.') || (k == 2 && s[0] == '.' && s[1] == '.') ||
            memchr(s, '\\', k) || (k == 0 && s[k] == '/'))
            return -1;
        s += k;
        if (*s == '/')
            s++;
    }
    size_t pl = strlen(path + 1);
    if (pl + 16 >= n)
        return -1;
    snprintf(rel, n, "%s%s", path + 1, pl == 0 || path[pl] == '/' ? "index.html" : "");
    return 0;
}

/* ---- headers ------------------------------------------------------------------ */

int api_route_bearer(const char *header, const char **tok, size_t *len, gpp_error *err)
{
    if (!header)
        return gpp_error_set(err, GPP_EFORMAT, "unauthenticated", "",
                             "missing Authorization: Bearer TOKEN");
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return gpp_error_set(err, GPP_EFORMAT, "unauthenticated", "",
                             "the Authorization header must be `Bearer TOKEN`");
    const char *t = header + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n > 0 && t[n - 1] == ' ')
        n--;
    if (!token_check(t, n))
        return gpp_error_set(err, GPP_EFORMAT, "unauthenticated", "", "malformed token");
    *tok = t;
    *len = n;
    return 0;
}

/* Is the media type of Content-Type `ct` exactly `type` (parameters allowed)? */
static bool media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, type, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

bool api_route_is_json(const char *ct)
{
    return media_type_is(ct, "application/json");
}

bool api_route_is_octets(const char *ct)
{
    return media_type_is(ct, "application/octet-stream");
}

bool api_route_body_too_big(const char *content_length, int64_t max, int64_t *n)
{
    int64_t v;
    if (!content_length || gpp__parse_i64(content_length, 0, INT64_MAX, &v) != 0 || v <= max)
        return false;
    *n = v;
    return true;
}
