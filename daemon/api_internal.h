/* daemon/api_internal.h - what the api*.c files share (prefix api__). */
#ifndef GPPD_API_INTERNAL_H
#define GPPD_API_INTERNAL_H

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "api_route.h"
#include "gppd.h"
#include "store.h"
#include "util.h"

/* Who made the request (from the bearer token). */
typedef struct api_principal {
    int64_t token_id;              /* 0: anonymous */
    char name[STORE_NAME_MAX + 1];
    char role[8];                  /* "admin", "user" */
} api_principal;

struct api_req;
typedef enum MHD_Result (*api_handler)(struct api_req *r);

/* One HTTP request; created by the URI-log callback, freed when done. */
typedef struct api_req {
    api *api;
    struct gppd *d;
    struct MHD_Connection *conn;
    const char *method;
    char *path;                    /* decoded path (no query) */
    uint64_t t0;                   /* monotonic ns at start */
    bool started;
    const api_route *route;        /* api_route.h: table entry, auth, body */
    char params[API_MAX_PARAMS][API_PARAM_MAX];
    api_principal who;
    char *body;                    /* request body, NUL-terminated */
    size_t body_len, body_cap;
    size_t discarded;              /* body bytes dropped while a reply waits */
    struct artifacts_writer *up;   /* an upload route's body on its way to disk */
    int64_t up_len;
    bool pending;                  /* an error reply waits for the body to end */
    unsigned pending_status;
    gpp_error pending_err;
    unsigned status;               /* the status sent */
} api_req;

/* ---- replies (all return what the access handler returns) ---------------- */

/* Send a malloc'd body (taken over) with status and content type; extra
 * headers as name/value pairs (NULL-terminated list, may be NULL). */
enum MHD_Result api__reply(api_req *r, unsigned status, const char *ctype, char *body,
                           size_t len, const char *const *headers);
/* Queue a response made by the caller (destroyed here) and count it. */
enum MHD_Result api__reply_response(api_req *r, unsigned status, struct MHD_Response *resp);
/* Send a cJSON value (deleted) as application/json. */
enum MHD_Result api__reply_json(api_req *r, unsigned status, cJSON *v,
                                const char *const *headers);
/* Send {"error":{"code","message","field"}}; field "" is null. */
enum MHD_Result api__reply_error(api_req *r, unsigned status, const char *code,
                                 const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Send a gpp_error with the status its code maps to (not_found 404,
 * conflict 409, invalid_argument 422, malformed 400, too_large 413,
 * unavailable 503, anything else 500). */
enum MHD_Result api__reply_gpp(api_req *r, const gpp_error *e);

/* ---- request helpers ------------------------------------------------------ */

/* A query parameter, or NULL. */
const char *api__query(api_req *r, const char *name);
/* Cursor text: base64url of "KIND:VALUE". encode into out (>= 2*len+8). */
void api__cursor_make(char kind, const char *value, char *out, size_t n);
/* Format unix ms (0: null) as an RFC 3339 string item. */
cJSON *api__time(int64_t ms);
/* Is the caller allowed to see this job? (admin: all; user: own) */
bool api__can_see(const api_req *r, const char *owner);

/* ---- handlers -------------------------------------------------------------- */
enum MHD_Result api__health(api_req *r);
enum MHD_Result api__openapi(api_req *r);
enum MHD_Result api__prometheus(api_req *r);
enum MHD_Result api__static(api_req *r);
enum MHD_Result api__jobs_list(api_req *r);
enum MHD_Result api__jobs_submit(api_req *r);
enum MHD_Result api__job_get(api_req *r);
enum MHD_Result api__job_cancel(api_req *r);
enum MHD_Result api__job_retry(api_req *r);
enum MHD_Result api__job_metrics(api_req *r);
enum MHD_Result api__job_logs(api_req *r);
enum MHD_Result api__job_architecture(api_req *r);
enum MHD_Result api__workers_list(api_req *r);
enum MHD_Result api__datasets_list(api_req *r);
enum MHD_Result api__datasets_register(api_req *r);
enum MHD_Result api__dataset_get(api_req *r);
enum MHD_Result api__tokens_list(api_req *r);
enum MHD_Result api__tokens_issue(api_req *r);
enum MHD_Result api__token_revoke(api_req *r);
enum MHD_Result api__job_events(api_req *r);
enum MHD_Result api__job_model(api_req *r);
enum MHD_Result api__worker_drain(api_req *r);
enum MHD_Result api__models_upload(api_req *r);
enum MHD_Result api__models_list(api_req *r);
enum MHD_Result api__model_get(api_req *r);
enum MHD_Result api__model_delete(api_req *r);

/* ---- Server-Sent Events (api_events.c) --------------------------------------- */
/* Every event stream of one HTTP server: a stream with nothing to send is
 * suspended (MHD_suspend_connection: no thread waits for it) and one pump
 * thread resumes it when its job has new events, for a heartbeat comment
 * every API_SSE_HEARTBEAT_MS, or when the server stops. */
#define API_SSE_HEARTBEAT_MS 15000
#define API_SSE_PUMP_MS 200
typedef struct sse_hub sse_hub;
/* A hub with its pump thread; NULL when out of resources. */
sse_hub *api__sse_hub_new(struct gppd *d);
/* End every stream (suspended ones are resumed and finish at once); new
 * ones end at once too.  Call before waiting for in-flight requests. */
void api__sse_hub_close(sse_hub *h);
/* Stop the pump thread and free (after the MHD daemon stopped).  NULL is fine. */
void api__sse_hub_free(sse_hub *h);
/* The hub of the request's server. */
sse_hub *api__sse(api_req *r);
/* Streams open now (for /metrics). */
int api__sse_count(sse_hub *h);

/* ---- counters for /metrics ------------------------------------------------- */
#define API_LAT_BUCKETS 12
extern const double api__lat_bounds[API_LAT_BUCKETS];   /* seconds */
/* Snapshot of the HTTP counters: per status (100..599), latency buckets
 * (cumulative counts), sum in seconds, count. */
void api__counters(const api *a, uint64_t by_status[500], uint64_t buckets[API_LAT_BUCKETS],
                   double *sum_s, uint64_t *count);

#endif
