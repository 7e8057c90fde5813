/* libFuzzer target for the query strings (and the two headers) gppd reads
 * (daemon/api_parse.h).
 *
 * The input is the raw text after '?' in a request line.  It is split the
 * way libmicrohttpd 0.9.x splits GET arguments (MHD_parse_arguments_: '&'
 * between arguments, the first '=' between key and value, a key without
 * '=' has no value), '+' becomes ' ' and %XX escapes are decoded by
 * libmicrohttpd's own MHD_http_unescape; a lookup returns the first
 * argument with that key, as MHD_lookup_connection_value does.  The parsed
 * arguments then go through every query parser: the five list pages, the
 * jobs list filters, metrics (without an Accept header, with "text/csv", and
 * with the value of a "Accept" argument), the model download and the event
 * stream start (its header taken from a "Last-Event-ID" argument).  Each
 * argument value is also tried as a cursor of every kind.
 *
 * Checks (abort() on failure):
 *   - a failure is GPP_EFORMAT "malformed" (HTTP 400) naming a field, with a
 *     message; nothing else is left set in the output struct that matters;
 *   - a success gives values within the documented ranges (limits, stage,
 *     max_points, every, names: 1..64 characters without ',', at most 64);
 *   - cursors: a cursor that decodes re-encodes to the very same text, and
 *     a page's cursor value survives make -> parse. */
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_parse.h"

#include "fuzz_check.h"

#define MAX_ARGS 64

typedef struct args {
    size_t n;
    const char *key[MAX_ARGS];
    const char *value[MAX_ARGS];    /* NULL: the key had no '=' */
} args;

static void unescape_plus(char *s)
{
    for (; *s; s++)
        if (*s == '+')
            *s = ' ';
}

static void add_arg(args *a, char *key, char *value)
{
    unescape_plus(key);
    MHD_http_unescape(key);
    if (value) {
        unescape_plus(value);
        MHD_http_unescape(value);
    }
    if (a->n < MAX_ARGS) {
        a->key[a->n] = key;
        a->value[a->n] = value;
        a->n++;
    }
}

/* MHD_parse_arguments_ of libmicrohttpd 0.9.75, minus the callbacks. */
static void split_args(char *s, args *a)
{
    a->n = 0;
    while (s && *s) {
        char *equals = strchr(s, '=');
        char *amper = strchr(s, '&');
        if (!amper) {
            if (!equals) {
                add_arg(a, s, NULL);
                break;
            }
            *equals++ = '\0';
            add_arg(a, s, equals);
            break;
        }
        *amper++ = '\0';
        if (!equals || equals >= amper) {
            add_arg(a, s, NULL);
            s = amper;
            continue;
        }
        *equals++ = '\0';
        add_arg(a, s, equals);
        s = amper;
    }
}

/* MHD_lookup_connection_value: the first argument with the key (its value
 * may be NULL). */
static const char *get(void *ctx, const char *name)
{
    const args *a = ctx;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->key[i], name) == 0)
            return a->value[i];
    return NULL;
}

static void check_error(int rc, const gpp_error *e)
{
    CHECK(rc == GPP_EFORMAT);
    CHECK(api_parse_status(rc) == 400);
    CHECK(strcmp(e->code, "malformed") == 0);
    CHECK(e->message[0] != '\0');
}

static const char kinds[] = {'j', 'l', 't', 'd', 'w'};

static void check_page(api_page_kind kind, const api_page *pg, int64_t max)
{
    CHECK(pg->limit >= 1 && pg->limit <= max);
    if (!pg->has_cursor) {
        CHECK(pg->after_num == 0 && pg->after[0] == '\0');
        return;
    }
    char value[256], cur[400], back[256];
    if (kind <= API_PAGE_TOKENS) {
        CHECK(pg->after_num >= (kind == API_PAGE_JOBS ? 1 : 0));
        snprintf(value, sizeof value, "%lld", (long long)pg->after_num);
    } else {
        snprintf(value, sizeof value, "%s", pg->after);
    }
    api_parse_cursor_make(kinds[kind], value, cur, sizeof cur);
    if (strlen(value) > 0) {
        CHECK(cur[0] != '\0');
        CHECK(api_parse_cursor(kinds[kind], cur, back, sizeof back) == 0);
        CHECK(strcmp(back, value) == 0);
    }
}

static void fuzz_pages(args *a)
{
    static const int64_t max[] = {500, 10000, 1000, 1000, 1000};
    for (int k = API_PAGE_JOBS; k <= API_PAGE_WORKERS; k++) {
        api_page pg;
        gpp_error e = {0};
        int rc = api_parse_page((api_page_kind)k, get, a, &pg, &e);
        if (rc != 0) {
            check_error(rc, &e);
            CHECK(strcmp(e.field, "limit") == 0 || strcmp(e.field, "cursor") == 0);
            continue;
        }
        check_page((api_page_kind)k, &pg, max[k]);
    }
}

static void fuzz_jobs(args *a)
{
    api_jobs_query q;
    gpp_error e = {0};
    int rc = api_parse_jobs_query(get, a, &q, &e);
    if (rc != 0) {
        check_error(rc, &e);
        return;
    }
    check_page(API_PAGE_JOBS, &q.page, 500);
    if (q.state) {
        static const char *const st[] = {"queued", "running", "succeeded", "failed",
                                         "cancelled"};
        int ok = 0;
        for (size_t i = 0; i < 5; i++)
            ok |= strcmp(q.state, st[i]) == 0;
        CHECK(ok);
    }
    const char *f[] = {q.owner, q.dataset, q.model};
    for (size_t i = 0; i < 3; i++)
        CHECK(!f[i] || strlen(f[i]) <= API_PARSE_FILTER_MAX);
}

static void fuzz_metrics(args *a, const char *accept)
{
    api_metrics_query q;
    gpp_error e = {0};
    int rc = api_parse_metrics_query(get, a, accept, &q, &e);
    if (rc != 0) {
        check_error(rc, &e);
        return;
    }
    CHECK(q.stage >= -1 && q.stage <= 100000);
    CHECK(q.limit >= 1 && q.limit <= 1000000);
    CHECK(q.max_points >= 0 && q.max_points <= 1000000);
    CHECK(q.every >= 1 && q.every <= 1000000);
    CHECK(q.has_since || q.since == 0);
    CHECK(q.n_names <= STORE_METRIC_NAMES_MAX);
    for (size_t i = 0; i < q.n_names; i++) {
        size_t n = strlen(q.names[i]);
        CHECK(n >= 1 && n <= STORE_NAME_MAX && !strchr(q.names[i], ','));
    }
    if (!get(a, "name"))
        CHECK(q.n_names == 0);
    if (!get(a, "max_points"))
        CHECK(q.max_points == (q.csv ? 0 : 1000));
}

static void fuzz_model_events(args *a)
{
    api_model_query m;
    gpp_error e = {0};
    int rc = api_parse_model_query(get, a, &m, &e);
    if (rc != 0)
        check_error(rc, &e);
    else
        CHECK(m.stage >= -1 && m.stage <= 100000);
    int64_t after = -1;
    rc = api_parse_event_start(get(a, "Last-Event-ID"), get(a, "last_event_id"), &after, &e);
    if (rc != 0) {
        check_error(rc, &e);
        CHECK(after == 0);
    } else {
        CHECK(after >= 0);
    }
}

/* A cursor that decodes is exactly what make() gives for its value. */
static void fuzz_cursor(const char *text)
{
    for (size_t k = 0; k < sizeof kinds; k++) {
        char v[256], again[400];
        if (api_parse_cursor(kinds[k], text, v, sizeof v) != 0)
            continue;
        CHECK(strlen(v) >= 1);
        api_parse_cursor_make(kinds[k], v, again, sizeof again);
        if (strcmp(again, text) != 0) {
            fprintf(stderr, "cursor '%s' decodes to '%s' which encodes to '%s'\n", text, v,
                    again);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;                /* MHD's 64 KiB per-connection memory bounds the URL */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';           /* MHD sees the URL as a C string */
    args a;
    split_args(text, &a);
    fuzz_pages(&a);
    fuzz_jobs(&a);
    fuzz_metrics(&a, NULL);
    fuzz_metrics(&a, "text/csv");
    fuzz_metrics(&a, get(&a, "Accept"));
    fuzz_model_events(&a);
    for (size_t i = 0; i < a.n; i++)
        if (a.value[i])
            fuzz_cursor(a.value[i]);
    free(text);
    return 0;
}
