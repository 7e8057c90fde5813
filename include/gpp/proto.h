/* gpp/proto.h - the worker wire protocol between gppd and gpp-worker.
 *
 * FRAMES.  A TCP stream of frames, each
 *
 *     [u32 big-endian L][u8 type][L bytes of payload]
 *
 * L counts the payload only (not the 5 header bytes).  A frame whose L is
 * over the receiver's maximum (GPP_FRAME_MAX by default), or whose type is 0
 * or not listed below, is an error found from the 5 header bytes alone:
 * the decoder buffers nothing of its payload, and the connection is closed.
 *
 * PAYLOADS.  Every message but blob carries one compact JSON object (valid
 * UTF-8, nesting at most GPP_PROTO_JSON_DEPTH deep, no NUL byte, no raw
 * control character in a string, every number a finite double; repeated
 * keys: the first one counts).  Blob carries
 *
 *     [32 bytes: raw SHA-256 of the whole blob][u64 BE offset][u64 BE total]
 *     [data: the bytes offset .. offset+len of the blob]
 *
 * with len <= GPP_BLOB_CHUNK, offset + len <= total <= GPP_BLOB_TOTAL_MAX.
 * The receiver checks the sha256 once it has all of the blob (gpp/sha256.h).
 *
 * MESSAGES (w = worker, d = daemon).  Fields are required unless marked
 * optional; an optional field may be absent or null.  Unknown fields are
 * ignored (so a newer peer may add some); a known field with the wrong type
 * or out of range is an error.  Limits: ID = 1..64 bytes, NAME = 1..128,
 * SHA = exactly 64 lowercase hex digits, INT = an integral JSON number
 * 0..2^53-1 unless a range is given, SIZE = INT 0..GPP_BLOB_TOTAL_MAX.
 *
 *  1 hello    w->d proto (1), token (1..256 bytes), worker_id (optional ID: the
 *                  id a reconnecting worker had), name (NAME, e.g. host:pid),
 *                  devices [<=16 {kind "cpu"|"cuda", index 0..2^31-1, name NAME,
 *                  memory_mb INT}], threads (1..1024), labels {<=16 key (ID) ->
 *                  value (0..128 bytes), keys unique}, running (optional
 *                  {stage_id ID, attempt 1..2^31-1}: the stage it still runs),
 *                  cached (optional [<=1024 SHA]: blobs it already has)
 *  2 welcome  d->w proto (1), worker_id ID, heartbeat_ms (1..3600000),
 *                  grace_s (1..86400), max_frame (4096..2^31-1)
 *  3 assign   d->w job_id ID, stage_id ID, attempt (1..2^31-1), kind ("train"|
 *                  "grow"|"push"|"prune"|"finetune"|"baseline"), index
 *                  (0..2^31-1), spec {object: the job spec}, input (null or
 *                  {sha256 SHA, size SIZE}), dataset {name NAME, format ID,
 *                  files [<=16 {name NAME, sha256 SHA, size SIZE}]}
 *  4 fetch    w->d sha256 SHA                 (answered by blob frames)
 *  5 blob     both binary, see above
 *  6 metrics  w->d stage_id, attempt, seq INT (increasing per stage attempt),
 *                  points [1..4096 [iteration INT, name ID, value number|null,
 *                  time_ms INT]]        (a non-finite value is sent as null)
 *  7 ack      d->w stage_id, attempt, seq: metrics up to seq are durable
 *  8 log      w->d stage_id (optional), attempt (optional), level ("debug"|
 *                  "info"|"warn"|"error"), line (0..4096 bytes), time_ms INT
 *  9 result   w->d stage_id, attempt, output {sha256 SHA, size SIZE}, summary {object}
 * 10 fail     w->d stage_id, attempt, class ("retryable"|"oom"|"invalid_data"|
 *                  "invalid_spec"|"cancelled"|"internal"), retryable (bool),
 *                  reason (0..4096 bytes)
 * 11 cancel   d->w stage_id, attempt
 * 12 ping     both time_ms INT, stage_id (optional), attempt (optional),
 *                  progress (optional, 0..1)
 * 13 pong     both time_ms INT
 * 14 bye      both reason (0..256 bytes)
 * 15 drain    d->w {} (no fields)
 * (stage_id is always ID, attempt always 1..2^31-1.)
 *
 * ERRORS (gpp_error codes):
 *   GPP_ETOOBIG "frame_too_large"     L over the maximum
 *   GPP_EFORMAT "unknown_type"        type 0 or unlisted
 *   GPP_EFORMAT "malformed"           bad JSON, bad blob header, bad field (err->field names it)
 *   GPP_EVERSION "unsupported_version" hello/welcome proto other than 1
 *
 * USE
 *   gpp_buf out = {0};
 *   gpp_msg m = {.type = GPP_MSG_PING, .ping = {.time_ms = now}};
 *   gpp_msg_encode(&out, &m, &err);           append one frame
 *   ... write out.data[0..out.len) ...; gpp_buf_free(&out);
 *
 *   gpp_decoder d; gpp_decoder_init(&d, 0);
 *   on each read:  gpp_decoder_feed(&d, bytes, n, &err);
 *                  while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) {
 *                      gpp_msg_parse(&f, &m, &err) ... gpp_msg_free(&m);
 *                  }
 *                  rc < 0: close the connection
 */
#ifndef GPP_PROTO_H
#define GPP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/error.h"
#include "gpp/sha256.h"

#define GPP_PROTO_VERSION 1
#define GPP_FRAME_HEADER 5                      /* u32 length + u8 type */
#define GPP_FRAME_MAX (4u * 1024 * 1024)        /* default maximum payload L */
#define GPP_BLOB_HEADER 48                      /* sha256 + offset + total */
#define GPP_BLOB_CHUNK (1u * 1024 * 1024)       /* most data bytes in one blob frame */
#define GPP_BLOB_TOTAL_MAX ((uint64_t)1 << 40)  /* largest blob */

#define GPP_PROTO_JSON_DEPTH 32      /* deepest nesting of a JSON payload */
#define GPP_PROTO_ID_MAX 64          /* job_id, stage_id, worker_id, metric name, label key, format */
#define GPP_PROTO_NAME_MAX 128       /* worker, device, data set and file names, label values */
#define GPP_PROTO_TOKEN_MAX 256
#define GPP_PROTO_REASON_MAX 256     /* bye reason */
#define GPP_PROTO_TEXT_MAX 4096      /* log line, fail reason */
#define GPP_PROTO_MAX_DEVICES 16
#define GPP_PROTO_MAX_LABELS 16
#define GPP_PROTO_MAX_CACHED 1024
#define GPP_PROTO_MAX_FILES 16
#define GPP_PROTO_MAX_POINTS 4096
#define GPP_PROTO_INT_MAX 9007199254740991LL   /* 2^53 - 1: exact in a JSON number */

typedef enum gpp_msg_type {
    GPP_MSG_HELLO = 1,
    GPP_MSG_WELCOME = 2,
    GPP_MSG_ASSIGN = 3,
    GPP_MSG_FETCH = 4,
    GPP_MSG_BLOB = 5,
    GPP_MSG_METRICS = 6,
    GPP_MSG_ACK = 7,
    GPP_MSG_LOG = 8,
    GPP_MSG_RESULT = 9,
    GPP_MSG_FAIL = 10,
    GPP_MSG_CANCEL = 11,
    GPP_MSG_PING = 12,
    GPP_MSG_PONG = 13,
    GPP_MSG_BYE = 14,
    GPP_MSG_DRAIN = 15,
} gpp_msg_type;
#define GPP_MSG_TYPE_MAX 15

/* The message's wire name ("hello", ...), or NULL for an unknown type. */
const char *gpp_msg_type_name(int type);

/* ---- byte buffer --------------------------------------------------------- */

typedef struct gpp_buf {
    uint8_t *data;   /* owned; NULL while cap is 0 */
    size_t len;      /* bytes in use */
    size_t cap;      /* bytes allocated */
} gpp_buf;           /* zero-initialise ({0}) before first use */

/* Make room for `extra` more bytes after len (grows geometrically).
 * Returns 0, GPP_ENOMEM, or GPP_ETOOBIG when len + extra overflows. */
int gpp_buf_reserve(gpp_buf *b, size_t extra);

/* Append n bytes (p may be NULL when n is 0).  Returns 0 or GPP_ENOMEM. */
int gpp_buf_append(gpp_buf *b, const void *p, size_t n);

/* Release the memory and zero *b (NULL is fine). */
void gpp_buf_free(gpp_buf *b);

/* ---- frames -------------------------------------------------------------- */

typedef struct gpp_frame {
    int type;                 /* a gpp_msg_type */
    const uint8_t *payload;   /* borrowed, see gpp_decoder_next */
    size_t len;               /* payload bytes (L) */
} gpp_frame;

/* Append one frame [L][type][payload] to out.  Returns 0, GPP_EINVAL (unknown
 * type), GPP_ETOOBIG (len > GPP_FRAME_MAX) or GPP_ENOMEM; out is unchanged
 * on error. */
int gpp_frame_append(gpp_buf *out, int type, const void *payload, size_t len);

/* Append a frame whose payload is obj printed as compact JSON.  No check of
 * the message's fields (gpp_msg_encode does that).  Returns 0, GPP_EINVAL
 * (unknown type, blob, or obj not a JSON object), GPP_ETOOBIG or GPP_ENOMEM. */
int gpp_frame_append_json(gpp_buf *out, int type, const cJSON *obj);

/* Append one blob frame: the chunk data[0..len) found at `offset` of a blob
 * of `total` bytes whose SHA-256 is sha.  Returns 0, GPP_EINVAL (len >
 * GPP_BLOB_CHUNK, offset + len > total, total > GPP_BLOB_TOTAL_MAX) or
 * GPP_ENOMEM. */
int gpp_frame_append_blob(gpp_buf *out, const uint8_t sha[GPP_SHA256_LEN],
                          uint64_t offset, uint64_t total,
                          const void *data, size_t len);

/* ---- incremental decoder ------------------------------------------------- */

/* Feed it the stream in any chunking; gpp_decoder_next hands out whole frames.
 * It reads complete frames straight from the caller's bytes (no copy) and
 * copies only a frame that is split across feeds, so it holds at most one
 * partial frame, <= GPP_FRAME_HEADER + max_payload bytes, and never more
 * (a buffer bigger than one blob frame is released once its frame is used). */
typedef struct gpp_decoder {
    size_t max_payload;      /* frames with a longer payload are refused */
    uint8_t *buf;            /* the partial frame copied so far (owned) */
    size_t buf_len, buf_cap;
    int buf_done;            /* buf holds a frame handed out; drop it on the next call */
    const uint8_t *in;       /* caller's bytes not yet consumed (borrowed) */
    size_t in_len;
    uint64_t offset;         /* stream bytes consumed so far */
    int failed;              /* 0, or the error that stopped the decoder */
    gpp_error error;         /* that error, repeated to every later call */
} gpp_decoder;

/* Set up *d; max_payload 0 means GPP_FRAME_MAX.  Cannot fail; no allocation. */
void gpp_decoder_init(gpp_decoder *d, size_t max_payload);

/* Release the buffer (NULL is fine).  *d can be init'ed again. */
void gpp_decoder_free(gpp_decoder *d);

/* Give the decoder the next `len` bytes of the stream.  Nothing is copied
 * here: `data` must stay valid until gpp_decoder_next has returned 0 or an
 * error.  Returns 0; GPP_EINVAL when the previous bytes were not drained
 * yet (call gpp_decoder_next until it returns 0 first); or, once the
 * decoder has failed, that error again (the bytes are refused). */
int gpp_decoder_feed(gpp_decoder *d, const void *data, size_t len, gpp_error *err);

/* The next frame.  Returns 1 and fills *out (its payload points into the
 * fed bytes or the decoder's buffer, valid until the next call on d or
 * until the fed bytes go away); 0 when it needs more bytes (everything fed
 * is consumed: a partial frame was copied); or <0: GPP_ETOOBIG
 * ("frame_too_large") or GPP_EFORMAT ("unknown_type") found from the header
 * alone.  After an error the decoder has consumed nothing past that
 * header, stays failed, and every later call returns the same error. */
int gpp_decoder_next(gpp_decoder *d, gpp_frame *out, gpp_error *err);

/* Stream bytes consumed so far (complete frames, plus what a partial frame
 * or a refused header holds). */
uint64_t gpp_decoder_offset(const gpp_decoder *d);

/* ---- typed messages ------------------------------------------------------- */
/* Strings are `const char *`.  In a parsed message they point into the
 * message's own parse tree (valid until gpp_msg_free); in a message you
 * build, they are yours.  Optional strings are NULL when absent. */

typedef enum gpp_proto_device_kind {
    GPP_PROTO_DEV_CPU = 0,
    GPP_PROTO_DEV_CUDA = 1,
} gpp_proto_device_kind;

typedef enum gpp_proto_stage_kind {
    GPP_PROTO_STAGE_TRAIN = 0,
    GPP_PROTO_STAGE_GROW,
    GPP_PROTO_STAGE_PUSH,
    GPP_PROTO_STAGE_PRUNE,
    GPP_PROTO_STAGE_FINETUNE,
    GPP_PROTO_STAGE_BASELINE,
} gpp_proto_stage_kind;

typedef enum gpp_proto_log_level {
    GPP_PROTO_LOG_DEBUG = 0,
    GPP_PROTO_LOG_INFO,
    GPP_PROTO_LOG_WARN,
    GPP_PROTO_LOG_ERROR,
} gpp_proto_log_level;

typedef enum gpp_proto_fail_class {
    GPP_PROTO_FAIL_RETRYABLE = 0,
    GPP_PROTO_FAIL_OOM,
    GPP_PROTO_FAIL_INVALID_DATA,
    GPP_PROTO_FAIL_INVALID_SPEC,
    GPP_PROTO_FAIL_CANCELLED,
    GPP_PROTO_FAIL_INTERNAL,
} gpp_proto_fail_class;

/* Wire names of the enums above ("cuda", "finetune", "warn", "oom"), or NULL
 * when the value is out of range. */
const char *gpp_proto_device_kind_name(int kind);
const char *gpp_proto_stage_kind_name(int kind);
const char *gpp_proto_log_level_name(int level);
const char *gpp_proto_fail_class_name(int cls);

typedef struct gpp_proto_device {
    gpp_proto_device_kind kind;
    int index;                  /* device ordinal */
    const char *name;           /* "cpu", "NVIDIA H100", ... */
    int64_t memory_mb;
} gpp_proto_device;

typedef struct gpp_proto_label {
    const char *key;
    const char *value;
} gpp_proto_label;

typedef struct gpp_proto_file {  /* a content-addressed file: data set file, checkpoint */
    const char *name;            /* unused (NULL) for assign.input and result.output */
    const char *sha256;          /* 64 lowercase hex; NULL for "no file" where allowed */
    int64_t size;
} gpp_proto_file;

typedef struct gpp_proto_point {
    int64_t iteration;
    const char *name;            /* metric name ("loss", "val_accuracy", ...) */
    double value;                /* NaN when the wire had null (any non-finite value) */
    int64_t time_ms;
} gpp_proto_point;

typedef struct gpp_msg_hello {
    int proto;                              /* GPP_PROTO_VERSION */
    const char *token;
    const char *worker_id;                  /* optional */
    const char *name;
    size_t n_devices;
    gpp_proto_device devices[GPP_PROTO_MAX_DEVICES];
    int threads;
    size_t n_labels;
    gpp_proto_label labels[GPP_PROTO_MAX_LABELS];
    const char *running_stage_id;           /* optional: NULL = runs nothing */
    int running_attempt;                    /* with running_stage_id */
    size_t n_cached;
    const char **cached;                    /* n_cached sha256 hex strings */
} gpp_msg_hello;

typedef struct gpp_msg_welcome {
    int proto;
    const char *worker_id;
    int heartbeat_ms;
    int grace_s;
    int64_t max_frame;
} gpp_msg_welcome;

typedef struct gpp_msg_assign {
    const char *job_id;
    const char *stage_id;
    int attempt;
    gpp_proto_stage_kind kind;
    int index;                              /* stage number within the job */
    const cJSON *spec;                      /* the job spec object (cJSON_Duplicate to keep it) */
    gpp_proto_file input;                   /* input.sha256 NULL: no input checkpoint */
    const char *dataset_name;
    const char *dataset_format;
    size_t n_files;
    gpp_proto_file files[GPP_PROTO_MAX_FILES];
} gpp_msg_assign;

typedef struct gpp_msg_fetch {
    const char *sha256;
} gpp_msg_fetch;

typedef struct gpp_msg_blob {
    uint8_t sha256[GPP_SHA256_LEN];         /* raw digest of the whole blob */
    uint64_t offset;
    uint64_t total;
    const uint8_t *data;                    /* borrowed from the frame (zero-copy) */
    size_t len;
} gpp_msg_blob;

typedef struct gpp_msg_metrics {
    const char *stage_id;
    int attempt;
    int64_t seq;
    size_t n_points;
    const gpp_proto_point *points;
} gpp_msg_metrics;

typedef struct gpp_msg_ack {
    const char *stage_id;
    int attempt;
    int64_t seq;
} gpp_msg_ack;

typedef struct gpp_msg_log {
    const char *stage_id;                   /* optional */
    int attempt;                            /* optional: 0 = absent */
    gpp_proto_log_level level;
    const char *line;
    int64_t time_ms;
} gpp_msg_log;

typedef struct gpp_msg_result {
    const char *stage_id;
    int attempt;
    gpp_proto_file output;                  /* name unused */
    const cJSON *summary;                   /* object */
} gpp_msg_result;

typedef struct gpp_msg_fail {
    const char *stage_id;
    int attempt;
    gpp_proto_fail_class cls;               /* wire field "class" */
    int retryable;                          /* 0 or 1 */
    const char *reason;
} gpp_msg_fail;

typedef struct gpp_msg_cancel {
    const char *stage_id;
    int attempt;
} gpp_msg_cancel;

typedef struct gpp_msg_ping {
    int64_t time_ms;
    const char *stage_id;                   /* optional */
    int attempt;                            /* optional: 0 = absent */
    int has_progress;                       /* 1 when progress is sent */
    double progress;                        /* 0..1 */
} gpp_msg_ping;

typedef struct gpp_msg_pong {
    int64_t time_ms;
} gpp_msg_pong;

typedef struct gpp_msg_bye {
    const char *reason;
} gpp_msg_bye;

/* One message.  Build one with designated initialisers and gpp_msg_encode
 * it; gpp_msg_parse fills one from a frame (then gpp_msg_free it).  drain
 * has no fields. */
typedef struct gpp_msg {
    gpp_msg_type type;
    union {
        gpp_msg_hello hello;
        gpp_msg_welcome welcome;
        gpp_msg_assign assign;
        gpp_msg_fetch fetch;
        gpp_msg_blob blob;
        gpp_msg_metrics metrics;
        gpp_msg_ack ack;
        gpp_msg_log log;
        gpp_msg_result result;
        gpp_msg_fail fail;
        gpp_msg_cancel cancel;
        gpp_msg_ping ping;
        gpp_msg_pong pong;
        gpp_msg_bye bye;
    };
    cJSON *owned_json;                      /* private: a parsed message's tree */
    void *owned_array;                      /* private: hello.cached or metrics.points */
} gpp_msg;

/* Parse and validate a frame into *out.  Returns 0, then gpp_msg_free(out)
 * when done (string fields, spec/summary point into out's tree; a blob's data
 * points into the frame's payload).  On error: GPP_EFORMAT ("malformed" with
 * err->field naming the field, or "unknown_type"), GPP_EVERSION
 * ("unsupported_version") or GPP_ENOMEM; *out is left empty (freeing it is
 * harmless). */
int gpp_msg_parse(const gpp_frame *f, gpp_msg *out, gpp_error *err);

/* Release what gpp_msg_parse allocated and zero *m (NULL is fine; a message
 * you built yourself owns nothing, freeing it only zeroes it). */
void gpp_msg_free(gpp_msg *m);

/* Append *m as one frame to out.  The message is checked with the very rules
 * gpp_msg_parse applies, so the peer will accept what this produces; a bad
 * message gives GPP_EINVAL (err names the field; out unchanged).  Otherwise
 * 0, GPP_ETOOBIG (over GPP_FRAME_MAX) or GPP_ENOMEM.  Numbers are written
 * with all their digits (they read back bit for bit, also inside spec and
 * summary); metric values that are not finite are sent as null.  A parsed
 * message always encodes again, unless its canonical form outgrows
 * GPP_FRAME_MAX (e.g. "1e9" written out as 1000000000). */
int gpp_msg_encode(gpp_buf *out, const gpp_msg *m, gpp_error *err);

/* 1 when a and b carry the same message (field by field; strings by
 * content; spec/summary structurally, keys in order, numbers exactly; all
 * non-finite metric values alike), else 0.  For tests and the fuzz target. */
int gpp_msg_equal(const gpp_msg *a, const gpp_msg *b);

#endif
