/* libFuzzer target for the request line and headers gppd reads itself
 * (daemon/api_route.h): URL path decoding, routing with path parameters,
 * the static-file path rule, the bearer token in Authorization and the
 * Content-Type / Content-Length checks of JSON bodies.
 *
 * Input: METHOD \n RAW-URI \n AUTHORIZATION \n CONTENT-TYPE \n CONTENT-LENGTH
 * (a missing field is an absent header; each field is cut at a NUL byte,
 * as libmicrohttpd hands over C strings).  Every field lives in a heap
 * buffer of exactly its size, so reading past it is an ASan report.
 *
 * Checks (abort() on failure):
 *   - decode: a path starts with '/', holds no NUL (its length is the raw
 *     length less 2 per escape) and each %XX became that byte; NULL only for
 *     a URI not starting with '/', a bad or cut escape or %00;
 *   - match, for every route: the count of parameters is the pattern's
 *     count of {x}, each 1..API_PARAM_MAX-1 bytes without '/', nothing
 *     written past API_MAX_PARAMS rows, and the pattern with the
 *     parameters put back is the path itself; with NULL params the same;
 *   - find: a routed request names a route of its method (HEAD = GET) whose
 *     pattern matches, the first such, with the same parameters; the static
 *     route only for a GET outside /api that no table route matches; else
 *     404 (only under /api) or 405 with an Allow list of other methods; the
 *     error's code, field and message are valid UTF-8;
 *   - static: an accepted path's relative name has no "", "." or ".."
 *     segment, no backslash, no leading '/', and so cannot leave the root;
 *   - bearer: a token found lies inside the header, after "Bearer ", has
 *     the token length and shape (token_check), no spaces around it; a
 *     refusal is GPP_EFORMAT "unauthenticated" with one of three messages;
 *   - Content-Type equals a second implementation; Content-Length too big
 *     only for a decimal over the limit, with its value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "api_route.h"
#include "tokens.h"

#include "fuzz_check.h"

#define N_FIELDS 5

/* Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)?  Written apart
 * from api_route.c's on purpose. */
static int utf8_ok(const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        unsigned c = *s, need;
        uint32_t cp;
        if (c < 0x80) { s++; continue; }
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; }
        else return 0;
        for (unsigned i = 1; i <= need; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
            (need == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += need + 1;
    }
    return 1;
}

static int hex(char c)
{
    const char *d = "0123456789abcdef";
    const char *p = strchr(d, c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    return c && p ? (int)(p - d) : -1;
}

static void check_decode(const char *uri, const char *path)
{
    size_t n = strcspn(uri, "?#");
    int bad = n == 0 || uri[0] != '/';
    size_t escapes = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        if (uri[i] != '%')
            continue;
        if (i + 2 >= n || hex(uri[i + 1]) < 0 || hex(uri[i + 2]) < 0 ||
            (uri[i + 1] == '0' && uri[i + 2] == '0'))
            bad = 1;
        escapes++;
        i += 2;
    }
    if (!path) {
        CHECK(bad);
        return;
    }
    CHECK(!bad);
    CHECK(path[0] == '/');
    CHECK(strlen(path) == n - 2 * escapes);          /* no NUL came out */
    size_t o = 0;
    for (size_t i = 0; i < n; i++, o++) {
        if (uri[i] == '%') {
            CHECK((unsigned char)path[o] == hex(uri[i + 1]) * 16 + hex(uri[i + 2]));
            i += 2;
        } else {
            CHECK(path[o] == uri[i]);
        }
    }
}

static int count_params(const char *pattern)
{
    int k = 0;
    for (const char *p = pattern; *p; p++)
        k += *p == '{';
    return k;
}

/* Put params back into pattern; compare with path. */
static int rebuilds(const char *pattern, char (*params)[API_PARAM_MAX], const char *path)
{
    size_t o = 0, plen = strlen(path);
    int k = 0;
    for (const char *p = pattern; *p; p++) {
        if (*p == '{') {
            size_t n = strlen(params[k]);
            if (o + n > plen || memcmp(path + o, params[k], n) != 0)
                return 0;
            o += n;
            k++;
            p = strchr(p, '}');
            continue;
        }
        if (o >= plen || path[o] != *p)
            return 0;
        o++;
    }
    return o == plen;
}

static void check_match(const char *path)
{
    for (size_t i = 0; i < api_route_table_size(); i++) {
        const api_route *rt = api_route_at(i);
        char params[API_MAX_PARAMS + 1][API_PARAM_MAX];
        memset(params, 0x5a, sizeof params);
        int rc = api_route_match(rt->pattern, path, params);
        CHECK(rc == api_route_match(rt->pattern, path, NULL));
        for (size_t b = 0; b < API_PARAM_MAX; b++)
            CHECK(params[API_MAX_PARAMS][b] == 0x5a);  /* the row past the end */
        if (rc < 0) {
            if (!strchr(rt->pattern, '{'))
                CHECK(strcmp(rt->pattern, path) != 0);
            continue;
        }
        CHECK(rc == count_params(rt->pattern) && rc <= API_MAX_PARAMS);
        for (int k = 0; k < rc; k++) {
            CHECK(memchr(params[k], '\0', API_PARAM_MAX) != NULL);
            size_t n = strlen(params[k]);
            CHECK(n >= 1 && n < API_PARAM_MAX && !strchr(params[k], '/'));
        }
        CHECK(rebuilds(rt->pattern, params, path));
    }
    CHECK(api_route_at(api_route_table_size()) == NULL);
}

static void check_find(const char *method, const char *path)
{
    api_route_hit hit;
    gpp_error e = {0};
    int rc = api_route_find(method, path, &hit, &e);
    const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
    size_t first = (size_t)-1, any = 0;
    for (size_t i = 0; i < api_route_table_size(); i++) {
        const api_route *rt = api_route_at(i);
        if (api_route_match(rt->pattern, path, NULL) < 0)
            continue;
        any++;
        if (first == (size_t)-1 && strcmp(rt->method, m) == 0)
            first = i;
    }
    int under_api = strncmp(path, "/api/", 5) == 0 || strcmp(path, "/api") == 0;
    if (rc == 0) {
        CHECK(hit.route && hit.status == 0);
        if (hit.route->id == API_R_STATIC) {
            CHECK(any == 0 && !under_api && strcmp(m, "GET") == 0);
            return;
        }
        CHECK(hit.route == api_route_at(first));
        char params[API_MAX_PARAMS][API_PARAM_MAX];
        int np = api_route_match(hit.route->pattern, path, params);
        CHECK(np >= 0);
        for (int k = 0; k < np; k++)
            CHECK(strcmp(params[k], hit.params[k]) == 0);
        return;
    }
    CHECK(rc == GPP_ENOTFOUND && !hit.route && first == (size_t)-1);
    CHECK(utf8_ok(e.code) && utf8_ok(e.field) && utf8_ok(e.message) && e.message[0]);
    CHECK(strlen(e.message) < sizeof e.message - 1);     /* nothing cut */
    if (hit.status == 404) {
        CHECK(under_api && any == 0 && strcmp(e.code, "not_found") == 0);
        return;
    }
    CHECK(hit.status == 405 && strcmp(e.code, "method_not_allowed") == 0 && e.field[0]);
    if (any == 0) {
        CHECK(!under_api && strcmp(m, "GET") != 0 && strcmp(e.field, "GET, HEAD") == 0);
        return;
    }
    /* every method in the Allow list has a route for this path, not ours */
    char allow[sizeof e.field];
    memcpy(allow, e.field, sizeof allow);
    for (char *save = NULL, *t = strtok_r(allow, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        CHECK(strcmp(t, m) != 0);
        int found = 0;
        for (size_t i = 0; i < api_route_table_size(); i++)
            found |= strcmp(api_route_at(i)->method, t) == 0 &&
                     api_route_match(api_route_at(i)->pattern, path, NULL) >= 0;
        CHECK(found);
    }
}

static void check_static(const char *path)
{
    char rel[4096];
    memset(rel, 0x5a, sizeof rel);
    if (api_route_static_rel(path, rel, sizeof rel) != 0)
        return;
    CHECK(memchr(rel, '\0', sizeof rel) != NULL);
    CHECK(rel[0] != '/' && !strchr(rel, '\\'));
    int depth = 0;
    for (const char *s = rel; *s;) {
        size_t n = strcspn(s, "/");
        CHECK(n > 0);                                         /* no "" segment */
        CHECK(!(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.'));
        depth++;
        s += n;
        if (*s == '/')
            CHECK(*++s != '\0');                               /* no trailing '/' */
    }
    CHECK(depth >= 1);
    CHECK(strncmp(rel, path + 1, strlen(rel) < strlen(path + 1) ? strlen(rel)
                                                                 : strlen(path + 1)) == 0);
    /* and the small-buffer edge: never written past n */
    char small[24];
    memset(small, 0x5a, sizeof small);
    if (api_route_static_rel(path, small, 20) == 0)
        CHECK(strlen(small) < 20);
    for (size_t b = 20; b < sizeof small; b++)
        CHECK(small[b] == 0x5a);
}

static void check_bearer(const char *h)
{
    const char *tok = NULL;
    size_t len = 0;
    gpp_error e = {0};
    int rc = api_route_bearer(h, &tok, &len, &e);
    if (rc == 0) {
        CHECK(h && strncasecmp(h, "Bearer ", 7) == 0);
        CHECK(tok >= h + 7 && tok + len <= h + strlen(h));
        CHECK(len == TOKEN_TEXT_LEN && token_check(tok, len) != NULL);
        CHECK(tok[0] != ' ' && tok[len - 1] != ' ');
        for (const char *s = h + 7; s < tok; s++)
            CHECK(*s == ' ');
        for (const char *s = tok + len; *s; s++)
            CHECK(*s == ' ');
        return;
    }
    CHECK(rc == GPP_EFORMAT && strcmp(e.code, "unauthenticated") == 0 && e.field[0] == '\0');
    if (!h)
        CHECK(strcmp(e.message, "missing Authorization: Bearer TOKEN") == 0);
    else if (strncasecmp(h, "Bearer ", 7) != 0)
        CHECK(strstr(e.message, "must be `Bearer TOKEN`") != NULL);
    else
        CHECK(strcmp(e.message, "malformed token") == 0);
    /* token_check itself on the header's bytes, without a NUL after them */
    if (h) {
        size_t n = strlen(h);
        char *raw = malloc(n ? n : 1);
        if (raw) {
            memcpy(raw, h, n);
            const char *role = token_check(raw, n);
            CHECK(!role || n == TOKEN_TEXT_LEN);
            free(raw);
        }
    }
}

static void check_headers(const char *ct, const char *cl)
{
    /* Content-Type, a second way: trim, cut at ';', compare */
    int want = 0;
    if (ct) {
        const char *s = ct;
        while (*s == ' ')
            s++;
        size_t n = strcspn(s, ";");
        while (n > 0 && s[n - 1] == ' ')
            n--;
        want = n == 16 && strncasecmp(s, "application/json", 16) == 0;
    }
    CHECK(api_route_is_json(ct) == (want != 0));
    /* Content-Length */
    int64_t limits[] = {0, API_BODY_MAX, INT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        int64_t n = -7;
        if (!api_route_body_too_big(cl, limits[i], &n)) {
            CHECK(n == -7);
            continue;
        }
        CHECK(cl && n > limits[i]);
        const char *s = cl + (cl[0] == '+');
        uint64_t v = 0;
        for (; *s; s++) {
            CHECK(*s >= '0' && *s <= '9');
            CHECK(v <= (UINT64_MAX - 9) / 10);
            v = v * 10 + (uint64_t)(*s - '0');
        }
        CHECK(v == (uint64_t)n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *f[N_FIELDS] = {0};
    size_t start = 0;
    for (int k = 0; k < N_FIELDS && start <= size; k++) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - data) : size;
        const uint8_t *z = memchr(data + start, '\0', end - start);
        size_t n = z ? (size_t)(z - (data + start)) : end - start;
        f[k] = malloc(n + 1);
        if (!f[k])
            goto done;
        memcpy(f[k], data + start, n);
        f[k][n] = '\0';
        start = end + 1;
        if (!nl)
            break;
    }
    const char *method = f[0] ? f[0] : "GET";
    const char *uri = f[1] ? f[1] : "";
    char *path = api_route_decode_path(uri);
    check_decode(uri, path);
    if (path) {
        check_match(path);
        check_find(method, path);
        check_find("HEAD", path);
        check_static(path);
    }
    free(path);
    check_bearer(f[2]);
    check_headers(f[3], f[4]);
done:
    for (int k = 0; k < N_FIELDS; k++)
        free(f[k]);
    return 0;
}
