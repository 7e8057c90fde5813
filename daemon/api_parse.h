/* daemon/api_parse.h - the parsing half of the HTTP API, apart from
 * libmicrohttpd and the store (prefix api_parse_): request bodies, the
 * query strings and the headers the handlers read, each to a struct or a
 * gpp_error.  No I/O, no globals, no locks: the fuzz targets in tests/fuzz/
 * feed them arbitrary bytes, and the handlers in api_*.c only add the store.
 *
 * Errors: the return code decides the HTTP status (api_parse_status):
 *   GPP_EFORMAT  400  "malformed"         the body is not a JSON object, is
 *                                         nested deeper than API_PARSE_JSON_DEPTH,
 *                                         holds a NUL byte or \u0000; a query
 *                                         value or header is not what it must be
 *   GPP_EINVAL   422  "invalid_argument"  a body field breaks a rule
 *                                         (the job spec's own code for submits)
 *   GPP_ETOOBIG  413  "too_large"         the job spec is over its limit
 *   anything else 500 "internal"          (out of memory)
 * e.field names the body field, query parameter or header ("" when none);
 * e.message is one sentence, valid UTF-8 whatever the input was.
 */
#ifndef GPPD_API_PARSE_H
#define GPPD_API_PARSE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"
#include "gpp/jobspec.h"
#include "store.h"

#define API_PARSE_JSON_DEPTH 32      /* deepest [ / { nesting of a body */
#define API_PARSE_IDEM_KEY_MAX 255   /* Idempotency-Key: 1..255 visible ASCII */
#define API_PARSE_FILTER_MAX 4096    /* jobs list owner/dataset/model filters */
#define API_PARSE_CURSOR_MAX 300     /* cursor text, characters */
#define API_PARSE_CHAIN_MAX (1 + 16 + 2 * 100 + 8)   /* stages of one job */

/* The HTTP status for a parse function's return code (see above). */
unsigned api_parse_status(int rc);

/* Looks up query parameter `name`: its decoded value, or NULL when absent
 * (libmicrohttpd's lookup in the daemon: the first occurrence wins). */
typedef const char *(*api_query_fn)(void *ctx, const char *name);

/* ---- JSON bodies ------------------------------------------------------------- */

/* Parse body[0..len) as one JSON object (whitespace around it is fine).
 * Returns 0 with *out (the caller cJSON_Delete's it), or GPP_EFORMAT
 * "malformed" (field "") for: a NUL byte or \u0000 in the text, nesting
 * deeper than API_PARSE_JSON_DEPTH, not JSON, trailing text, not an object. */
int api_parse_body_object(const char *body, size_t len, cJSON **out, gpp_error *err);

/* POST /api/v1/tokens: {"name": token name, "role": "user" | "admin" | "worker"}. */
typedef struct api_token_req {
    char name[STORE_NAME_MAX + 1];   /* 1..64 of [A-Za-z0-9_.-] */
    char role[8];                    /* ["user"] */
} api_token_req;

/* Parse a token-issue body. Returns 0, GPP_EFORMAT (see
 * api_parse_body_object) or GPP_EINVAL naming the field: an unknown key,
 * name missing / not a string / not a token name, role not a string or not
 * one of the three. */
int api_parse_token_issue(const char *body, size_t len, api_token_req *out, gpp_error *err);

/* POST /api/v1/datasets: {"name", "format", "path"}, all required strings. */
typedef struct api_dataset_req {
    char name[STORE_NAME_MAX + 1];   /* [a-z0-9][a-z0-9._-]{0,63} */
    char *format;                    /* checked by dataset_inspect; owned */
    char *path;                      /* absolute, < PATH_MAX - 64 bytes; owned */
} api_dataset_req;

/* Parse a data-set registration body. Returns 0 (*out filled; free it with
 * api_dataset_req_clear), GPP_EFORMAT, or GPP_EINVAL naming the field:
 * unknown key, a field missing or not a string, a bad name, a path that is
 * not absolute or too long.  The format and whether the folder holds a
 * data set are checked by dataset_inspect (they need the file system). */
int api_parse_dataset_register(const char *body, size_t len, api_dataset_req *out,
                               gpp_error *err);

/* Free the strings of *d and zero it (a zeroed struct is fine). */
void api_dataset_req_clear(api_dataset_req *d);

/* POST /api/v1/jobs: the job spec (common/jobspec) and what the daemon
 * derives from it before the store is asked anything. */
typedef struct api_job_submit {
    gpp_jobspec *spec;                   /* owned */
    char *canon;                         /* canonical spec JSON, owned */
    uint8_t spec_sha256[32];             /* of canon */
    const char *idem_key;                /* the Idempotency-Key header (borrowed), or NULL */
    store_stage_new chain[API_PARSE_CHAIN_MAX];   /* train, grow x k, (push, prune) x n */
    int n_stages;                        /* == gpp_jobspec_stage_count(spec) */
    char model[GPP_JOBSPEC_REF_MAX + 16];   /* zoo name, "inline", "checkpoint:REF" */
    const char *device;                  /* "any", "cpu", "gpu" (static) */
    const char *dataset;                 /* the name or the path (points into spec) */
    const char *first_reason;            /* waiting_for_gpu / waiting_for_worker (static) */
} api_job_submit;

/* Check the Idempotency-Key header (NULL: none) and parse the body as a job
 * spec.  Returns 0 (*out filled; free with api_job_submit_clear), or:
 * GPP_EFORMAT "malformed" field "Idempotency-Key" for a key that is not
 * 1..255 visible ASCII characters; the job spec's error (GPP_EINVAL with its
 * code and field, GPP_EFORMAT "malformed", GPP_ETOOBIG "too_large");
 * GPP_ENOMEM "internal". */
int api_parse_job_submit(const char *body, size_t len, const char *idem_key,
                         api_job_submit *out, gpp_error *err);

/* Free what *s owns and zero it (a zeroed struct is fine). */
void api_job_submit_clear(api_job_submit *s);

/* ---- query strings ----------------------------------------------------------- */

/* One whole decimal number in [lo, hi]: value NULL gives def.  Returns 0 or
 * GPP_EFORMAT "malformed" with field `name`. */
int api_parse_int_param(const char *value, const char *name, int64_t lo, int64_t hi,
                        int64_t def, int64_t *out, gpp_error *err);

/* Cursor text: base64url (no padding) of "KIND:VALUE".  Writes "" when the
 * text would not fit in out (n bytes) or VALUE is over 250 bytes. */
void api_parse_cursor_make(char kind, const char *value, char *out, size_t n);

/* Decode a cursor of `kind` into value (n bytes: VALUE must be shorter).
 * Returns 0, or -1 for anything this server did not give out (empty, over
 * API_PARSE_CURSOR_MAX characters, not base64url, another kind, a NUL). */
int api_parse_cursor(char kind, const char *cursor, char *value, size_t n);

/* The paginated lists and their cursors. */
typedef enum api_page_kind {
    API_PAGE_JOBS,       /* cursor 'j': a job seq >= 1;    limit 1..500 [50] */
    API_PAGE_LOGS,       /* cursor 'l': a log id >= 0;     limit 1..10000 [1000] */
    API_PAGE_TOKENS,     /* cursor 't': a token id >= 0;   limit 1..1000 [100] */
    API_PAGE_DATASETS,   /* cursor 'd': a data set name (<= 64 bytes); limit 1..1000 [100] */
    API_PAGE_WORKERS,    /* cursor 'w': a worker id (<= 255 bytes);    limit 1..1000 [100] */
    API_PAGE_MODELS,     /* cursor 'm': an upload id >= 0; limit 1..1000 [100] */
} api_page_kind;

typedef struct api_page {
    int64_t limit;
    bool has_cursor;
    int64_t after_num;   /* numeric cursors (jobs, logs, tokens, models); 0 without one */
    char after[256];     /* text cursors (data sets, workers); "" without one */
} api_page;

/* ?limit= and ?cursor= of a list.  Returns 0, or GPP_EFORMAT "malformed"
 * with field "limit" or "cursor". */
int api_parse_page(api_page_kind kind, api_query_fn get, void *ctx, api_page *out,
                   gpp_error *err);

/* GET /api/v1/jobs: ?limit ?state ?owner ?dataset ?model ?cursor. */
typedef struct api_jobs_query {
    api_page page;         /* after_num: list jobs older than this seq (0: newest first) */
    const char *state;     /* one of store_job_states, or NULL */
    const char *owner, *dataset, *model;   /* <= API_PARSE_FILTER_MAX bytes, or NULL */
} api_jobs_query;

/* The strings point into what `get` returned (valid while it is).  Returns 0
 * or GPP_EFORMAT "malformed" (field limit, state, cursor, or "" for an
 * over-long filter), checked in that order. */
int api_parse_jobs_query(api_query_fn get, void *ctx, api_jobs_query *out, gpp_error *err);

/* GET /api/v1/jobs/{id}/metrics: ?format=json|csv (else the Accept header:
 * text/csv without application/json), ?stage 0..100000, ?since (any int64
 * but the smallest), ?limit 1..1e6 [1e5], ?max_points 0..1e6 [json 1000,
 * csv 0 = all], ?every 1..1e6 [1], ?name=a,b,c (empty items skipped). */
typedef struct api_metrics_query {
    bool csv;
    int64_t stage;         /* -1: every stage */
    bool has_since;
    int64_t since;
    int64_t limit, max_points, every;
    size_t n_names;        /* 0: every name */
    char names[STORE_METRIC_NAMES_MAX][STORE_NAME_MAX + 1];
} api_metrics_query;

/* accept: the Accept header or NULL.  Returns 0 or GPP_EFORMAT "malformed"
 * naming the parameter (format, stage, since, limit, max_points, every, name). */
int api_parse_metrics_query(api_query_fn get, void *ctx, const char *accept,
                            api_metrics_query *out, gpp_error *err);

/* GET /api/v1/jobs/{id}/model: ?format=gppm|onnx [gppm], ?stage 0..100000. */
typedef struct api_model_query {
    bool onnx;
    int64_t stage;         /* -1: the newest finished stage */
} api_model_query;

/* Returns 0 or GPP_EFORMAT "malformed" (field format or stage). */
int api_parse_model_query(api_query_fn get, void *ctx, api_model_query *out, gpp_error *err);

/* GET /api/v1/jobs/{id}/events: where the stream starts.  header: the
 * Last-Event-ID header (NULL or "" for none), query: ?last_event_id (NULL
 * for none; it wins over the header).  *after: the last event id the client
 * has (0: from the start).  Returns 0 or GPP_EFORMAT "malformed" with field
 * "Last-Event-ID" or "last_event_id". */
int api_parse_event_start(const char *header, const char *query, int64_t *after,
                          gpp_error *err);

#endif
