/* The worker wire protocol: frames, the incremental decoder, and the typed
 * messages (see gpp/proto.h for the format and every field's rule). */
#include "gpp/proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---------------------------------------------------------------- */

static const char *const type_names[GPP_MSG_TYPE_MAX + 1] = {
    NULL, "hello", "welcome", "assign", "fetch", "blob", "metrics", "ack",
    "log", "result", "fail", "cancel", "ping", "pong", "bye", "drain",
};
static const char *const device_kinds[] = {"cpu", "cuda"};
static const char *const stage_kinds[] = {"train", "grow", "push", "prune", "finetune", "baseline"};
static const char *const log_levels[] = {"debug", "info", "warn", "error"};
static const char *const fail_classes[] = {"retryable", "oom", "invalid_data",
                                           "invalid_spec", "cancelled", "internal"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *name_in(const char *const *names, int n, int v)
{
    return v >= 0 && v < n ? names[v] : NULL;
}

const char *gpp_msg_type_name(int type)
{
    return name_in(type_names, COUNT(type_names), type);
}

const char *gpp_proto_device_kind_name(int kind) { return name_in(device_kinds, COUNT(device_kinds), kind); }
const char *gpp_proto_stage_kind_name(int kind) { return name_in(stage_kinds, COUNT(stage_kinds), kind); }
const char *gpp_proto_log_level_name(int level) { return name_in(log_levels, COUNT(log_levels), level); }
const char *gpp_proto_fail_class_name(int cls) { return name_in(fail_classes, COUNT(fail_classes), cls); }

/* ---- byte buffer ------------------------------------------------------------ */

int gpp_buf_reserve(gpp_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return GPP_ETOOBIG;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return GPP_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int gpp_buf_append(gpp_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    int rc = gpp_buf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void gpp_buf_free(gpp_buf *b)
{
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- frames ----------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

/* Reserve room for a frame with an L-byte payload and write its header. */
static int frame_begin(gpp_buf *out, int type, size_t len)
{
    if (!gpp_msg_type_name(type)) return GPP_EINVAL;
    if (len > GPP_FRAME_MAX) return GPP_ETOOBIG;
    int rc = gpp_buf_reserve(out, GPP_FRAME_HEADER + len);
    if (rc) return rc;
    put_be32(out->data + out->len, (uint32_t)len);
    out->data[out->len + 4] = (uint8_t)type;
    out->len += GPP_FRAME_HEADER;
    return 0;
}

int gpp_frame_append(gpp_buf *out, int type, const void *payload, size_t len)
{
    int rc = frame_begin(out, type, len);
    if (rc) return rc;
    if (len) memcpy(out->data + out->len, payload, len);
    out->len += len;
    return 0;
}

int gpp_frame_append_json(gpp_buf *out, int type, const cJSON *obj)
{
    if (type == GPP_MSG_BLOB || !gpp_msg_type_name(type) || !cJSON_IsObject(obj))
        return GPP_EINVAL;
    char *text = cJSON_PrintUnformatted(obj);
    if (!text) return GPP_ENOMEM;
    int rc = gpp_frame_append(out, type, text, strlen(text));
    cJSON_free(text);
    return rc;
}

int gpp_frame_append_blob(gpp_buf *out, const uint8_t sha[GPP_SHA256_LEN],
                          uint64_t offset, uint64_t total,
                          const void *data, size_t len)
{
    if (len > GPP_BLOB_CHUNK || total > GPP_BLOB_TOTAL_MAX || offset > total ||
        len > total - offset)
        return GPP_EINVAL;
    int rc = frame_begin(out, GPP_MSG_BLOB, GPP_BLOB_HEADER + len);
    if (rc) return rc;
    uint8_t *p = out->data + out->len;
    memcpy(p, sha, GPP_SHA256_LEN);
    put_be64(p + 32, offset);
    put_be64(p + 40, total);
    if (len) memcpy(p + GPP_BLOB_HEADER, data, len);
    out->len += GPP_BLOB_HEADER + len;
    return 0;
}

/* ---- incremental decoder ---------------------------------------------------- */

void gpp_decoder_init(gpp_decoder *d, size_t max_payload)
{
    memset(d, 0, sizeof *d);
    if (max_payload == 0) max_payload = GPP_FRAME_MAX;
    if (max_payload > UINT32_MAX) max_payload = UINT32_MAX;   /* L is a u32 anyway */
    d->max_payload = max_payload;
}

void gpp_decoder_free(gpp_decoder *d)
{
    if (!d) return;
    free(d->buf);
    memset(d, 0, sizeof *d);
}

uint64_t gpp_decoder_offset(const gpp_decoder *d)
{
    return d->offset;
}

static int decoder_fail(gpp_decoder *d, gpp_error *err)
{
    d->in = NULL;      /* consume nothing more */
    d->in_len = 0;
    if (err) *err = d->error;
    return d->failed;
}

/* Check a complete header: the length against the maximum, the type. */
static int decoder_check_header(gpp_decoder *d, const uint8_t *h, uint64_t at,
                                size_t *len, int *type)
{
    uint32_t l = get_be32(h);
    int t = h[4];
    if (l > d->max_payload) {
        d->failed = gpp_error_set(&d->error, GPP_ETOOBIG, "frame_too_large", "length",
                                  "frame of type %d at stream offset %llu has a %lu-byte "
                                  "payload, over the %zu-byte maximum", t,
                                  (unsigned long long)at, (unsigned long)l, d->max_payload);
        return d->failed;
    }
    if (!gpp_msg_type_name(t)) {
        d->failed = gpp_error_set(&d->error, GPP_EFORMAT, "unknown_type", "type",
                                  "frame at stream offset %llu has unknown type %d",
                                  (unsigned long long)at, t);
        return d->failed;
    }
    *len = l;
    *type = t;
    return 0;
}

/* Copy n bytes of the caller's input into the partial-frame buffer; `frame`
 * is the whole frame's size, so the buffer never grows past it. */
static int decoder_take(gpp_decoder *d, size_t n, size_t frame)
{
    size_t need = d->buf_len + n;
    if (need > d->buf_cap) {
        size_t cap = d->buf_cap ? d->buf_cap : 64;
        while (cap < need) cap *= 2;
        if (cap > frame) cap = frame > 64 ? frame : 64;
        if (cap < need) cap = need;
        uint8_t *p = realloc(d->buf, cap);
        if (!p) {
            d->failed = gpp_error_set(&d->error, GPP_ENOMEM, "out_of_memory", "",
                                      "no memory for a %zu-byte frame", frame);
            return d->failed;
        }
        d->buf = p;
        d->buf_cap = cap;
    }
    memcpy(d->buf + d->buf_len, d->in, n);
    d->buf_len += n;
    d->in += n;
    d->in_len -= n;
    d->offset += n;
    return 0;
}

int gpp_decoder_feed(gpp_decoder *d, const void *data, size_t len, gpp_error *err)
{
    if (d->failed) return decoder_fail(d, err);
    if (d->in_len > 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "",
                             "%zu bytes fed earlier are not consumed yet: call "
                             "gpp_decoder_next until it returns 0", d->in_len);
    if (len > 0 && !data)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "data is NULL");
    d->in = data;
    d->in_len = len;
    return 0;
}

int gpp_decoder_next(gpp_decoder *d, gpp_frame *out, gpp_error *err)
{
    size_t len;
    int type;
    if (d->failed) return decoder_fail(d, err);
    if (d->buf_done) {      /* the frame handed out last time is no longer needed */
        d->buf_len = 0;
        d->buf_done = 0;
        if (d->buf_cap > GPP_FRAME_HEADER + GPP_BLOB_HEADER + GPP_BLOB_CHUNK) {
            free(d->buf);   /* an idle connection does not keep a huge buffer */
            d->buf = NULL;
            d->buf_cap = 0;
        }
    }
    if (d->buf_len == 0) {
        if (d->in_len < GPP_FRAME_HEADER) {
            if (d->in_len == 0) return 0;
            if (decoder_take(d, d->in_len, GPP_FRAME_HEADER)) return decoder_fail(d, err);
            return 0;
        }
        if (decoder_check_header(d, d->in, d->offset, &len, &type)) {
            d->offset += GPP_FRAME_HEADER;   /* the bad header is consumed, nothing more */
            return decoder_fail(d, err);
        }
        if (d->in_len - GPP_FRAME_HEADER >= len) {   /* whole frame in the input: no copy */
            out->type = type;
            out->payload = d->in + GPP_FRAME_HEADER;
            out->len = len;
            d->in += GPP_FRAME_HEADER + len;
            d->in_len -= GPP_FRAME_HEADER + len;
            d->offset += GPP_FRAME_HEADER + len;
            return 1;
        }
        /* a partial frame: keep it */
        if (decoder_take(d, d->in_len, GPP_FRAME_HEADER + len)) return decoder_fail(d, err);
        return 0;
    }
    if (d->buf_len < GPP_FRAME_HEADER) {
        size_t n = GPP_FRAME_HEADER - d->buf_len;
        if (n > d->in_len) n = d->in_len;
        if (decoder_take(d, n, GPP_FRAME_HEADER)) return decoder_fail(d, err);
        if (d->buf_len < GPP_FRAME_HEADER) return 0;
    }
    if (decoder_check_header(d, d->buf, d->offset - d->buf_len, &len, &type))
        return decoder_fail(d, err);
    size_t n = GPP_FRAME_HEADER + len - d->buf_len;
    if (n > d->in_len) n = d->in_len;
    if (n > 0 && decoder_take(d, n, GPP_FRAME_HEADER + len)) return decoder_fail(d, err);
    if (d->buf_len < GPP_FRAME_HEADER + len) return 0;
    out->type = type;
    out->payload = d->buf + GPP_FRAME_HEADER;
    out->len = len;
    d->buf_done = 1;
    return 1;
}

/* ---- JSON checks ------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, <= U+10FFFF), or 0 when it is not valid. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t k;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < k) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return k;
}

/* Before cJSON sees a payload: valid UTF-8, no NUL byte, no raw control
 * character inside a string (RFC 8259), nesting bounded. */
static int json_prescan(const uint8_t *p, size_t n, const char *msg, gpp_error *err)
{
    int depth = 0, in_str = 0, esc = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c == 0)
            return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: NUL byte at "
                                 "payload offset %zu", msg, i);
        if (c >= 0x80) {
            size_t k = utf8_seq(p + i, n - i);
            if (!k)
                return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: invalid "
                                     "UTF-8 at payload offset %zu", msg, i);
            i += k;
            esc = 0;
            continue;
        }
        if (in_str) {
            if (c < 0x20)
                return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: unescaped "
                                     "control character in a string at payload offset %zu",
                                     msg, i);
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > GPP_PROTO_JSON_DEPTH)
                return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: JSON nested "
                                     "deeper than %d at payload offset %zu", msg,
                                     GPP_PROTO_JSON_DEPTH, i);
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i++;
    }
    return 0;
}

/* Every number in the tree is a finite double ("1e400" is not).  Depth is
 * bounded by the prescan. */
static int json_finite(const cJSON *node)
{
    for (const cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsNumber(c) && !isfinite(c->valuedouble)) return 0;
        if (c->child && !json_finite(c)) return 0;
    }
    return 1;
}

/* ---- field validation ---------------------------------------------------------- */

typedef struct pctx {
    const char *msg;     /* message name, for the error text */
    gpp_error *err;
} pctx;

/* field = prefix.key, prefix[key] (key starting with '['), or either alone */
static void field_join(char *out, size_t n, const char *prefix, const char *key)
{
    if (!prefix || !*prefix) snprintf(out, n, "%s", key);
    else if (!key || !*key) snprintf(out, n, "%s", prefix);
    else if (key[0] == '[') snprintf(out, n, "%s%s", prefix, key);
    else snprintf(out, n, "%s.%s", prefix, key);
}

static int bad_field(const pctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad_field(const pctx *c, const char *field, const char *fmt, ...)
{
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return gpp_error_set(c->err, GPP_EFORMAT, "malformed", field, "%s: %s %s",
                         c->msg, field, text);
}

/* Value checks on an item already found; `field` names it. */
static int v_string(const pctx *c, const cJSON *it, const char *field,
                    size_t minlen, size_t maxlen, const char **out)
{
    if (!cJSON_IsString(it) || !it->valuestring)
        return bad_field(c, field, "must be a string");
    size_t n = strlen(it->valuestring);
    if (n < minlen || n > maxlen)
        return bad_field(c, field, "must be %zu..%zu bytes long, not %zu", minlen, maxlen, n);
    *out = it->valuestring;
    return 0;
}

static int v_int(const pctx *c, const cJSON *it, const char *field,
                 int64_t min, int64_t max, int64_t *out)
{
    if (!cJSON_IsNumber(it)) return bad_field(c, field, "must be an integer");
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return bad_field(c, field, "must be an integer, not %g", v);
    if (v < (double)min || v > (double)max)
        return bad_field(c, field, "must be in %lld..%lld, not %.17g",
                         (long long)min, (long long)max, v);
    *out = (int64_t)v;
    return 0;
}

static int v_sha(const pctx *c, const cJSON *it, const char *field, const char **out)
{
    uint8_t raw[GPP_SHA256_LEN];
    if (!cJSON_IsString(it) || !it->valuestring)
        return bad_field(c, field, "must be a sha256 string");
    if (gpp_sha256_from_hex(it->valuestring, raw) != 0)
        return bad_field(c, field, "must be exactly 64 lowercase hex digits");
    *out = it->valuestring;
    return 0;
}

static int v_enum(const pctx *c, const cJSON *it, const char *field,
                  const char *const *names, int n, int *out)
{
    if (cJSON_IsString(it) && it->valuestring)
        for (int i = 0; i < n; i++)
            if (strcmp(it->valuestring, names[i]) == 0) { *out = i; return 0; }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s\"%s\"", i ? ", " : "", names[i]);
    }
    return bad_field(c, field, "must be one of %s", list);
}

/* Look a key up; absent or null counts as absent.  A required absent key is
 * an error; an optional one returns 1 (nothing to read). */
static int f_lookup(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                    int optional, const cJSON **it, char *field, size_t fn)
{
    field_join(field, fn, prefix, key);
    *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (*it && !cJSON_IsNull(*it)) return 0;
    if (optional) return 1;
    return bad_field(c, field, "is required");
}

#define FIELD_LOOKUP(optional)                                                        \
    const cJSON *it;                                                                  \
    char field[128];                                                                  \
    int lrc = f_lookup(c, obj, prefix, key, optional, &it, field, sizeof field);     \
    if (lrc) return lrc > 0 ? 0 : lrc

static int f_string(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                    int optional, size_t minlen, size_t maxlen, const char **out)
{
    FIELD_LOOKUP(optional);
    return v_string(c, it, field, minlen, maxlen, out);
}

static int f_int64(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                   int optional, int64_t min, int64_t max, int64_t *out)
{
    FIELD_LOOKUP(optional);
    return v_int(c, it, field, min, max, out);
}

static int f_int(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                 int optional, int min, int max, int *out)
{
    int64_t v = 0;
    FIELD_LOOKUP(optional);
    int rc = v_int(c, it, field, min, max, &v);
    if (rc == 0) *out = (int)v;
    return rc;
}

static int f_sha(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                 const char **out)
{
    FIELD_LOOKUP(0);
    return v_sha(c, it, field, out);
}

static int f_enum(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                  const char *const *names, int n, int *out)
{
    FIELD_LOOKUP(0);
    return v_enum(c, it, field, names, n, out);
}

static int f_bool(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                  int *out)
{
    FIELD_LOOKUP(0);
    if (!cJSON_IsBool(it)) return bad_field(c, field, "must be true or false");
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return 0;
}

/* An object-valued field (required; optional ones return 1 when absent). */
static int f_object(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                    int optional, const cJSON **out)
{
    *out = NULL;
    FIELD_LOOKUP(optional);
    if (!cJSON_IsObject(it)) return bad_field(c, field, "must be an object");
    *out = it;
    return 0;
}

/* An array-valued field with minn..maxn elements; *n gets the count. */
static int f_array(const pctx *c, const cJSON *obj, const char *prefix, const char *key,
                   int optional, size_t minn, size_t maxn, const cJSON **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    FIELD_LOOKUP(optional);
    if (!cJSON_IsArray(it)) return bad_field(c, field, "must be an array");
    size_t count = 0;
    for (const cJSON *e = it->child; e; e = e->next)
        if (++count > maxn) return bad_field(c, field, "has more than %zu elements", maxn);
    if (count < minn) return bad_field(c, field, "must have at least %zu elements", minn);
    *out = it;
    *n = count;
    return 0;
}

#define STAGE_ATTEMPT_MAX 2147483647
#define TRY(expr) do { int rc_ = (expr); if (rc_) return rc_; } while (0)

/* stage_id + attempt, the pair most messages carry. */
static int f_stage(const pctx *c, const cJSON *obj, int optional,
                   const char **stage_id, int *attempt)
{
    TRY(f_string(c, obj, "", "stage_id", optional, 1, GPP_PROTO_ID_MAX, stage_id));
    return f_int(c, obj, "", "attempt", optional, 1, STAGE_ATTEMPT_MAX, attempt);
}

/* {sha256, size} (and name when with_name) at obj[key] or, key "", obj itself. */
static int v_file(const pctx *c, const cJSON *o, const char *field, int with_name,
                  gpp_proto_file *out)
{
    if (!cJSON_IsObject(o)) return bad_field(c, field, "must be an object");
    if (with_name) TRY(f_string(c, o, field, "name", 0, 1, GPP_PROTO_NAME_MAX, &out->name));
    TRY(f_sha(c, o, field, "sha256", &out->sha256));
    return f_int64(c, o, field, "size", 0, 0, (int64_t)GPP_BLOB_TOTAL_MAX, &out->size);
}

/* ---- message parsers ----------------------------------------------------------- */

static int check_version(const pctx *c, int proto)
{
    if (proto != GPP_PROTO_VERSION)
        return gpp_error_set(c->err, GPP_EVERSION, "unsupported_version", "proto",
                             "%s: protocol version %d is not supported (this side "
                             "speaks %d)", c->msg, proto, GPP_PROTO_VERSION);
    return 0;
}

static int parse_hello(const pctx *c, const cJSON *obj, gpp_msg *m)
{
    gpp_msg_hello *h = &m->hello;
    const cJSON *arr, *o;
    size_t n;
    char field[128];
    TRY(f_int(c, obj, "", "proto", 0, 1, STAGE_ATTEMPT_MAX, &h->proto));
    TRY(check_version(c, h->proto));
    TRY(f_string(c, obj, "", "token", 0, 1, GPP_PROTO_TOKEN_MAX, &h->token));
    TRY(f_string(c, obj, "", "worker_id", 1, 1, GPP_PROTO_ID_MAX, &h->worker_id));
    TRY(f_string(c, obj, "", "name", 0, 1, GPP_PROTO_NAME_MAX, &h->name));
    TRY(f_array(c, obj, "", "devices", 0, 0, GPP_PROTO_MAX_DEVICES, &arr, &n));
    h->n_devices = n;
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        gpp_proto_device *dv = &h->devices[i];
        int kind = 0;
        snprintf(field, sizeof field, "devices[%zu]", i);
        if (!cJSON_IsObject(e)) return bad_field(c, field, "must be an object");
        TRY(f_enum(c, e, field, "kind", device_kinds, COUNT(device_kinds), &kind));
        dv->kind = (gpp_proto_device_kind)kind;
        TRY(f_int(c, e, field, "index", 0, 0, STAGE_ATTEMPT_MAX, &dv->index));
        TRY(f_string(c, e, field, "name", 0, 1, GPP_PROTO_NAME_MAX, &dv->name));
        TRY(f_int64(c, e, field, "memory_mb", 0, 0, GPP_PROTO_INT_MAX, &dv->memory_mb));
    }
    TRY(f_int(c, obj, "", "threads", 0, 1, 1024, &h->threads));
    TRY(f_object(c, obj, "", "labels", 0, &o));
    i = 0;
    for (const cJSON *e = o->child; e; e = e->next, i++) {
        if (i >= GPP_PROTO_MAX_LABELS)
            return bad_field(c, "labels", "has more than %d entries", GPP_PROTO_MAX_LABELS);
        const char *key = e->string ? e->string : "";
        snprintf(field, sizeof field, "labels.%s", key);
        size_t kl = strlen(key);
        if (kl < 1 || kl > GPP_PROTO_ID_MAX)
            return bad_field(c, field, "key must be 1..%d bytes long", GPP_PROTO_ID_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(h->labels[j].key, key) == 0) return bad_field(c, field, "is repeated");
        h->labels[i].key = key;
        TRY(v_string(c, e, field, 0, GPP_PROTO_NAME_MAX, &h->labels[i].value));
    }
    h->n_labels = i;
    TRY(f_object(c, obj, "", "running", 1, &o));
    if (o) {
        TRY(f_string(c, o, "running", "stage_id", 0, 1, GPP_PROTO_ID_MAX, &h->running_stage_id));
        TRY(f_int(c, o, "running", "attempt", 0, 1, STAGE_ATTEMPT_MAX, &h->running_attempt));
    }
    TRY(f_array(c, obj, "", "cached", 1, 0, GPP_PROTO_MAX_CACHED, &arr, &n));
    if (arr && n > 0) {
        const char **cached = calloc(n, sizeof *cached);
        if (!cached) return gpp_error_set(c->err, GPP_ENOMEM, "out_of_memory", "cached",
                                          "hello: no memory for %zu cached entries", n);
        m->owned_array = cached;
        h->cached = cached;
        i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            snprintf(field, sizeof field, "cached[%zu]", i);
            TRY(v_sha(c, e, field, &cached[i]));
        }
        h->n_cached = n;
    }
    return 0;
}

static int parse_welcome(const pctx *c, const cJSON *obj, gpp_msg *m)
{
    gpp_msg_welcome *w = &m->welcome;
    TRY(f_int(c, obj, "", "proto", 0, 1, STAGE_ATTEMPT_MAX, &w->proto));
    TRY(check_version(c, w->proto));
    TRY(f_string(c, obj, "", "worker_id", 0, 1, GPP_PROTO_ID_MAX, &w->worker_id));
    TRY(f_int(c, obj, "", "heartbeat_ms", 0, 1, 3600000, &w->heartbeat_ms));
    TRY(f_int(c, obj, "", "grace_s", 0, 1, 86400, &w->grace_s));
    return f_int64(c, obj, "", "max_frame", 0, 4096, STAGE_ATTEMPT_MAX, &w->max_frame);
}

static int parse_assign(const pctx *c, const cJSON *obj, gpp_msg *m)
{
    gpp_msg_assign *a = &m->assign;
    const cJSON *o, *arr;
    size_t n;
    int kind = 0;
    char field[128];
    TRY(f_string(c, obj, "", "job_id", 0, 1, GPP_PROTO_ID_MAX, &a->job_id));
    TRY(f_stage(c, obj, 0, &a->stage_id, &a->attempt));
    TRY(f_enum(c, obj, "", "kind", stage_kinds, COUNT(stage_kinds), &kind));
    a->kind = (gpp_proto_stage_kind)kind;
    TRY(f_int(c, obj, "", "index", 0, 0, STAGE_ATTEMPT_MAX, &a->index));
    TRY(f_object(c, obj, "", "spec", 0, &a->spec));
    o = cJSON_GetObjectItemCaseSensitive(obj, "input");
    if (!o) return bad_field(c, "input", "is required (null when there is none)");
    if (!cJSON_IsNull(o)) TRY(v_file(c, o, "input", 0, &a->input));
    TRY(f_object(c, obj, "", "dataset", 0, &o));
    TRY(f_string(c, o, "dataset", "name", 0, 1, GPP_PROTO_NAME_MAX, &a->dataset_name));
    TRY(f_string(c, o, "dataset", "format", 0, 1, GPP_PROTO_ID_MAX, &a->dataset_format));
    TRY(f_array(c, o, "dataset", "files", 0, 0, GPP_PROTO_MAX_FILES, &arr, &n));
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        snprintf(field, sizeof field, "dataset.files[%zu]", i);
        TRY(v_file(c, e, field, 1, &a->files[i]));
    }
    a->n_files = n;
    return 0;
}

static int parse_metrics(const pctx *c, const cJSON *obj, gpp_msg *m)
{
    gpp_msg_metrics *mt = &m->metrics;
    const cJSON *arr;
    size_t n;
    char field[128];
    TRY(f_stage(c, obj, 0, &mt->stage_id, &mt->attempt));
    TRY(f_int64(c, obj, "", "seq", 0, 0, GPP_PROTO_INT_MAX, &mt->seq));
    TRY(f_array(c, obj, "", "points", 0, 1, GPP_PROTO_MAX_POINTS, &arr, &n));
    gpp_proto_point *pts = calloc(n, sizeof *pts);
    if (!pts) return gpp_error_set(c->err, GPP_ENOMEM, "out_of_memory", "points",
                                   "metrics: no memory for %zu points", n);
    m->owned_array = pts;
    mt->points = pts;
    size_t i = 0;
    for (const cJSON *row = arr->child; row; row = row->next, i++) {
        snprintf(field, sizeof field, "points[%zu]", i);
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != 4)
            return bad_field(c, field, "must be an array [iteration, name, value, time_ms]");
        const cJSON *e = row->child;
        snprintf(field, sizeof field, "points[%zu][0]", i);
        TRY(v_int(c, e, field, 0, GPP_PROTO_INT_MAX, &pts[i].iteration));
        e = e->next;
        snprintf(field, sizeof field, "points[%zu][1]", i);
        TRY(v_string(c, e, field, 1, GPP_PROTO_ID_MAX, &pts[i].name));
        e = e->next;
        snprintf(field, sizeof field, "points[%zu][2]", i);
        if (cJSON_IsNull(e)) pts[i].value = NAN;
        else if (cJSON_IsNumber(e)) pts[i].value = e->valuedouble;
        else return bad_field(c, field, "must be a number or null");
        e = e->next;
        snprintf(field, sizeof field, "points[%zu][3]", i);
        TRY(v_int(c, e, field, 0, GPP_PROTO_INT_MAX, &pts[i].time_ms));
    }
    mt->n_points = n;
    return 0;
}

static int parse_json_fields(const pctx *c, const cJSON *obj, gpp_msg *m)
{
    int v = 0;
    switch (m->type) {
    case GPP_MSG_HELLO: return parse_hello(c, obj, m);
    case GPP_MSG_WELCOME: return parse_welcome(c, obj, m);
    case GPP_MSG_ASSIGN: return parse_assign(c, obj, m);
    case GPP_MSG_FETCH: return f_sha(c, obj, "", "sha256", &m->fetch.sha256);
    case GPP_MSG_METRICS: return parse_metrics(c, obj, m);
    case GPP_MSG_ACK:
        TRY(f_stage(c, obj, 0, &m->ack.stage_id, &m->ack.attempt));
        return f_int64(c, obj, "", "seq", 0, 0, GPP_PROTO_INT_MAX, &m->ack.seq);
    case GPP_MSG_LOG:
        TRY(f_stage(c, obj, 1, &m->log.stage_id, &m->log.attempt));
        TRY(f_enum(c, obj, "", "level", log_levels, COUNT(log_levels), &v));
        m->log.level = (gpp_proto_log_level)v;
        TRY(f_string(c, obj, "", "line", 0, 0, GPP_PROTO_TEXT_MAX, &m->log.line));
        return f_int64(c, obj, "", "time_ms", 0, 0, GPP_PROTO_INT_MAX, &m->log.time_ms);
    case GPP_MSG_RESULT: {
        const cJSON *o;
        TRY(f_stage(c, obj, 0, &m->result.stage_id, &m->result.attempt));
        TRY(f_object(c, obj, "", "output", 0, &o));
        TRY(v_file(c, o, "output", 0, &m->result.output));
        return f_object(c, obj, "", "summary", 0, &m->result.summary);
    }
    case GPP_MSG_FAIL:
        TRY(f_stage(c, obj, 0, &m->fail.stage_id, &m->fail.attempt));
        TRY(f_enum(c, obj, "", "class", fail_classes, COUNT(fail_classes), &v));
        m->fail.cls = (gpp_proto_fail_class)v;
        TRY(f_bool(c, obj, "", "retryable", &m->fail.retryable));
        return f_string(c, obj, "", "reason", 0, 0, GPP_PROTO_TEXT_MAX, &m->fail.reason);
    case GPP_MSG_CANCEL:
        return f_stage(c, obj, 0, &m->cancel.stage_id, &m->cancel.attempt);
    case GPP_MSG_PING: {
        const cJSON *it;
        TRY(f_int64(c, obj, "", "time_ms", 0, 0, GPP_PROTO_INT_MAX, &m->ping.time_ms));
        TRY(f_stage(c, obj, 1, &m->ping.stage_id, &m->ping.attempt));
        it = cJSON_GetObjectItemCaseSensitive(obj, "progress");
        if (it && !cJSON_IsNull(it)) {
            if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0.0 && it->valuedouble <= 1.0))
                return bad_field(c, "progress", "must be a number in 0..1");
            m->ping.has_progress = 1;
            m->ping.progress = it->valuedouble;
        }
        return 0;
    }
    case GPP_MSG_PONG:
        return f_int64(c, obj, "", "time_ms", 0, 0, GPP_PROTO_INT_MAX, &m->pong.time_ms);
    case GPP_MSG_BYE:
        return f_string(c, obj, "", "reason", 0, 0, GPP_PROTO_REASON_MAX, &m->bye.reason);
    case GPP_MSG_DRAIN:
        return 0;
    default:
        return gpp_error_set(c->err, GPP_EFORMAT, "unknown_type", "type",
                             "unknown message type %d", (int)m->type);
    }
}

static int parse_blob(const gpp_frame *f, gpp_msg *m, gpp_error *err)
{
    gpp_msg_blob *b = &m->blob;
    if (f->len < GPP_BLOB_HEADER)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "blob", "blob: payload of %zu "
                             "bytes is shorter than the %d-byte header", f->len,
                             GPP_BLOB_HEADER);
    memcpy(b->sha256, f->payload, GPP_SHA256_LEN);
    b->offset = get_be64(f->payload + 32);
    b->total = get_be64(f->payload + 40);
    b->len = f->len - GPP_BLOB_HEADER;
    b->data = f->payload + GPP_BLOB_HEADER;
    if (b->len > GPP_BLOB_CHUNK)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "blob.data", "blob: %zu data "
                             "bytes, over the %u-byte chunk limit", b->len, GPP_BLOB_CHUNK);
    if (b->total > GPP_BLOB_TOTAL_MAX)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "blob.total", "blob: total size "
                             "%llu is over %llu", (unsigned long long)b->total,
                             (unsigned long long)GPP_BLOB_TOTAL_MAX);
    if (b->offset > b->total || b->len > b->total - b->offset)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "blob.offset", "blob: offset %llu "
                             "+ %zu bytes is past the total size %llu",
                             (unsigned long long)b->offset, b->len,
                             (unsigned long long)b->total);
    return 0;
}

int gpp_msg_parse(const gpp_frame *f, gpp_msg *out, gpp_error *err)
{
    memset(out, 0, sizeof *out);
    const char *name = gpp_msg_type_name(f->type);
    if (!name)
        return gpp_error_set(err, GPP_EFORMAT, "unknown_type", "type",
                             "unknown message type %d", f->type);
    out->type = (gpp_msg_type)f->type;
    int rc;
    if (f->type == GPP_MSG_BLOB) {
        rc = parse_blob(f, out, err);
        if (rc) memset(out, 0, sizeof *out);
        return rc;
    }
    if (f->len > 0 && !f->payload)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "%s: NULL payload", name);
    rc = json_prescan(f->payload, f->len, name, err);
    if (rc) return rc;
    const char *text = (const char *)f->payload;
    const char *end = NULL;
    cJSON *root = f->len ? cJSON_ParseWithLengthOpts(text, f->len, &end, 0) : NULL;
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: payload is not valid "
                             "JSON (error near byte %zu)", name, at);
    }
    out->owned_json = root;
    size_t at = (size_t)(end - text);
    while (at < f->len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' ||
                           text[at] == '\r'))
        at++;
    if (at < f->len) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: bytes after the JSON "
                           "value at payload offset %zu", name, at);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: payload must be a JSON "
                           "object", name);
        goto fail;
    }
    if (!json_finite(root)) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "%s: a number is out of the "
                           "range of a double", name);
        goto fail;
    }
    pctx c = {.msg = name, .err = err};
    rc = parse_json_fields(&c, root, out);
    if (rc) goto fail;
    return 0;
fail:
    gpp_msg_free(out);
    return rc;
}

void gpp_msg_free(gpp_msg *m)
{
    if (!m) return;
    cJSON_Delete(m->owned_json);
    free(m->owned_array);
    memset(m, 0, sizeof *m);
}

/* ---- encoding ------------------------------------------------------------------- */

typedef struct jb {
    int oom;     /* set once any allocation failed; the tree is then dropped */
} jb;

/* Attach item to obj under key (or to the array obj when key is NULL). */
static cJSON *jadd(jb *b, cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !obj) {
        cJSON_Delete(item);
        b->oom = 1;
        return NULL;
    }
    cJSON_bool ok = key ? cJSON_AddItemToObject(obj, key, item) : cJSON_AddItemToArray(obj, item);
    if (!ok) {
        cJSON_Delete(item);
        b->oom = 1;
        return NULL;
    }
    return item;
}

static void jstr(jb *b, cJSON *obj, const char *key, const char *s)
{
    jadd(b, obj, key, s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

/* Numbers go out as raw text we format ourselves: cJSON's printer keeps
 * only ~15 significant digits, which would change integers above 2^49 and
 * the last bit of some doubles. */
static void jint(jb *b, cJSON *obj, const char *key, int64_t v)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)v);
    jadd(b, obj, key, cJSON_CreateRaw(text));
}

/* The shortest of %.15g..%.17g that reads back as exactly v; null when v is
 * not finite (JSON has no NaN or infinity). */
static void format_double(char text[40], double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, 40, "%.*g", prec, v);
        if (strtod(text, NULL) == v) break;
    }
}

static void jdouble(jb *b, cJSON *obj, const char *key, double v)
{
    char text[40];
    if (!isfinite(v)) {
        jadd(b, obj, key, cJSON_CreateNull());
        return;
    }
    format_double(text, v);
    jadd(b, obj, key, cJSON_CreateRaw(text));
}

/* The numbers of a copied tree become raw text with all their digits, like
 * jdouble's (a non-finite one becomes null).  Returns 0 or -1 (no memory). */
static int exact_numbers(cJSON *node)
{
    cJSON *next;
    for (cJSON *c = node->child; c; c = next) {
        next = c->next;
        if (cJSON_IsNumber(c)) {
            char text[40];
            if (isfinite(c->valuedouble)) format_double(text, c->valuedouble);
            else snprintf(text, sizeof text, "null");
            cJSON *raw = cJSON_CreateRaw(text);
            if (!raw) return -1;
            raw->string = c->string;            /* the key moves to the new item */
            raw->type |= c->type & cJSON_StringIsConst;
            c->string = NULL;
            cJSON_ReplaceItemViaPointer(node, c, raw);
        } else if (c->child && exact_numbers(c) != 0) {
            return -1;
        }
    }
    return 0;
}

/* A name from a table, or null (which the validator then refuses). */
static void jenum(jb *b, cJSON *obj, const char *key, const char *name)
{
    jstr(b, obj, key, name);
}

/* stage_id and attempt; when optional, each only if set (non-NULL, non-zero) */
static void jstage(jb *b, cJSON *obj, const char *stage_id, int attempt, int optional)
{
    if (!optional || stage_id) jstr(b, obj, "stage_id", stage_id);
    if (!optional || attempt != 0) jint(b, obj, "attempt", attempt);
}

static void jfile(jb *b, cJSON *obj, const char *key, const gpp_proto_file *f, int with_name)
{
    if (!f->sha256 && !with_name) {
        jadd(b, obj, key, cJSON_CreateNull());
        return;
    }
    cJSON *o = jadd(b, obj, key, cJSON_CreateObject());
    if (with_name) jstr(b, o, "name", f->name);
    jstr(b, o, "sha256", f->sha256);
    jint(b, o, "size", f->size);
}

static void jcopy(jb *b, cJSON *obj, const char *key, const cJSON *v)
{
    cJSON *copy = v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
    if (copy && exact_numbers(copy) != 0) {
        cJSON_Delete(copy);
        copy = NULL;
    }
    jadd(b, obj, key, copy);
}

/* What the JSON could not show: counts past a fixed array or a limit, a count
 * with no array (the builder would read out of bounds), a NaN progress. */
static int check_counts(const gpp_msg *m, gpp_error *err)
{
    const char *field = NULL;
    size_t n = 0, max = 0;
    int no_array = 0;
    if (m->type == GPP_MSG_HELLO) {
        const gpp_msg_hello *h = &m->hello;
        if (h->n_devices > GPP_PROTO_MAX_DEVICES) { field = "devices"; n = h->n_devices; max = GPP_PROTO_MAX_DEVICES; }
        else if (h->n_labels > GPP_PROTO_MAX_LABELS) { field = "labels"; n = h->n_labels; max = GPP_PROTO_MAX_LABELS; }
        else if (h->n_cached > GPP_PROTO_MAX_CACHED) { field = "cached"; n = h->n_cached; max = GPP_PROTO_MAX_CACHED; }
        else if (h->n_cached > 0 && !h->cached) { field = "cached"; no_array = 1; }
    } else if (m->type == GPP_MSG_ASSIGN) {
        if (m->assign.n_files > GPP_PROTO_MAX_FILES) { field = "dataset.files"; n = m->assign.n_files; max = GPP_PROTO_MAX_FILES; }
    } else if (m->type == GPP_MSG_PING) {
        /* NaN would travel as null and silently mean "no progress" */
        if (m->ping.has_progress && !(m->ping.progress >= 0.0 && m->ping.progress <= 1.0))
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "progress",
                                 "ping: progress must be in 0..1, not %g", m->ping.progress);
    } else if (m->type == GPP_MSG_METRICS) {
        if (m->metrics.n_points > GPP_PROTO_MAX_POINTS) { field = "points"; n = m->metrics.n_points; max = GPP_PROTO_MAX_POINTS; }
        else if (m->metrics.n_points > 0 && !m->metrics.points) { field = "points"; no_array = 1; }
    }
    if (!field) return 0;
    if (no_array)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", field,
                             "%s: %s has a count but no array", gpp_msg_type_name((int)m->type), field);
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", field, "%s: %s has %zu "
                         "entries, more than %zu", gpp_msg_type_name((int)m->type), field, n, max);
}

static cJSON *build_json(const gpp_msg *m)
{
    jb b = {0};
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    switch (m->type) {
    case GPP_MSG_HELLO: {
        const gpp_msg_hello *h = &m->hello;
        jint(&b, root, "proto", h->proto);
        jstr(&b, root, "token", h->token);
        if (h->worker_id) jstr(&b, root, "worker_id", h->worker_id);
        jstr(&b, root, "name", h->name);
        cJSON *devs = jadd(&b, root, "devices", cJSON_CreateArray());
        for (size_t i = 0; i < h->n_devices; i++) {
            cJSON *d = jadd(&b, devs, NULL, cJSON_CreateObject());
            jenum(&b, d, "kind", gpp_proto_device_kind_name(h->devices[i].kind));
            jint(&b, d, "index", h->devices[i].index);
            jstr(&b, d, "name", h->devices[i].name);
            jint(&b, d, "memory_mb", h->devices[i].memory_mb);
        }
        jint(&b, root, "threads", h->threads);
        cJSON *labels = jadd(&b, root, "labels", cJSON_CreateObject());
        for (size_t i = 0; i < h->n_labels; i++)
            jstr(&b, labels, h->labels[i].key ? h->labels[i].key : "", h->labels[i].value);
        if (h->running_stage_id) {
            cJSON *r = jadd(&b, root, "running", cJSON_CreateObject());
            jstr(&b, r, "stage_id", h->running_stage_id);
            jint(&b, r, "attempt", h->running_attempt);
        }
        if (h->n_cached > 0) {
            cJSON *arr = jadd(&b, root, "cached", cJSON_CreateArray());
            for (size_t i = 0; i < h->n_cached; i++) jstr(&b, arr, NULL, h->cached[i]);
        }
        break;
    }
    case GPP_MSG_WELCOME:
        jint(&b, root, "proto", m->welcome.proto);
        jstr(&b, root, "worker_id", m->welcome.worker_id);
        jint(&b, root, "heartbeat_ms", m->welcome.heartbeat_ms);
        jint(&b, root, "grace_s", m->welcome.grace_s);
        jint(&b, root, "max_frame", m->welcome.max_frame);
        break;
    case GPP_MSG_ASSIGN: {
        const gpp_msg_assign *a = &m->assign;
        jstr(&b, root, "job_id", a->job_id);
        jstage(&b, root, a->stage_id, a->attempt, 0);
        jenum(&b, root, "kind", gpp_proto_stage_kind_name(a->kind));
        jint(&b, root, "index", a->index);
        jcopy(&b, root, "spec", a->spec);
        jfile(&b, root, "input", &a->input, 0);
        cJSON *ds = jadd(&b, root, "dataset", cJSON_CreateObject());
        jstr(&b, ds, "name", a->dataset_name);
        jstr(&b, ds, "format", a->dataset_format);
        cJSON *files = jadd(&b, ds, "files", cJSON_CreateArray());
        for (size_t i = 0; i < a->n_files; i++) jfile(&b, files, NULL, &a->files[i], 1);
        break;
    }
    case GPP_MSG_FETCH:
        jstr(&b, root, "sha256", m->fetch.sha256);
        break;
    case GPP_MSG_METRICS: {
        const gpp_msg_metrics *mt = &m->metrics;
        jstage(&b, root, mt->stage_id, mt->attempt, 0);
        jint(&b, root, "seq", mt->seq);
        cJSON *pts = jadd(&b, root, "points", cJSON_CreateArray());
        for (size_t i = 0; i < mt->n_points; i++) {
            const gpp_proto_point *p = &mt->points[i];
            cJSON *row = jadd(&b, pts, NULL, cJSON_CreateArray());
            jint(&b, row, NULL, p->iteration);
            jstr(&b, row, NULL, p->name);
            jdouble(&b, row, NULL, p->value);
            jint(&b, row, NULL, p->time_ms);
        }
        break;
    }
    case GPP_MSG_ACK:
        jstage(&b, root, m->ack.stage_id, m->ack.attempt, 0);
        jint(&b, root, "seq", m->ack.seq);
        break;
    case GPP_MSG_LOG:
        jstage(&b, root, m->log.stage_id, m->log.attempt, 1);
        jenum(&b, root, "level", gpp_proto_log_level_name(m->log.level));
        jstr(&b, root, "line", m->log.line);
        jint(&b, root, "time_ms", m->log.time_ms);
        break;
    case GPP_MSG_RESULT:
        jstage(&b, root, m->result.stage_id, m->result.attempt, 0);
        jfile(&b, root, "output", &m->result.output, 0);
        jcopy(&b, root, "summary", m->result.summary);
        break;
    case GPP_MSG_FAIL:
        jstage(&b, root, m->fail.stage_id, m->fail.attempt, 0);
        jenum(&b, root, "class", gpp_proto_fail_class_name(m->fail.cls));
        jadd(&b, root, "retryable", cJSON_CreateBool(m->fail.retryable != 0));
        jstr(&b, root, "reason", m->fail.reason);
        break;
    case GPP_MSG_CANCEL:
        jstage(&b, root, m->cancel.stage_id, m->cancel.attempt, 0);
        break;
    case GPP_MSG_PING:
        jint(&b, root, "time_ms", m->ping.time_ms);
        jstage(&b, root, m->ping.stage_id, m->ping.attempt, 1);
        if (m->ping.has_progress) jdouble(&b, root, "progress", m->ping.progress);
        break;
    case GPP_MSG_PONG:
        jint(&b, root, "time_ms", m->pong.time_ms);
        break;
    case GPP_MSG_BYE:
        jstr(&b, root, "reason", m->bye.reason);
        break;
    default:   /* drain: {} */
        break;
    }
    if (b.oom) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int gpp_msg_encode(gpp_buf *out, const gpp_msg *m, gpp_error *err)
{
    const char *name = gpp_msg_type_name((int)m->type);
    if (!name)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "type",
                             "cannot encode unknown message type %d", (int)m->type);
    if (m->type == GPP_MSG_BLOB) {
        const gpp_msg_blob *b = &m->blob;
        int rc = gpp_frame_append_blob(out, b->sha256, b->offset, b->total, b->data, b->len);
        if (rc == GPP_EINVAL)
            return gpp_error_set(err, rc, "invalid_argument", "blob", "blob: %zu bytes at "
                                 "offset %llu of %llu: over the chunk size, past the total "
                                 "or total over the limit", b->len,
                                 (unsigned long long)b->offset, (unsigned long long)b->total);
        if (rc) return gpp_error_set(err, rc, "out_of_memory", "", "blob: %s", gpp_strerror(rc));
        return 0;
    }
    int rc = check_counts(m, err);
    if (rc) return rc;
    cJSON *root = build_json(m);
    if (!root) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "%s: no memory", name);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "%s: no memory", name);
    size_t len = strlen(text);
    if (len > GPP_FRAME_MAX) {
        rc = gpp_error_set(err, GPP_ETOOBIG, "frame_too_large", "", "%s: %zu-byte payload is "
                           "over the %u-byte frame maximum", name, len, GPP_FRAME_MAX);
        goto done;
    }
    /* The receiver's rules, applied to exactly the bytes it will receive. */
    gpp_frame f = {.type = (int)m->type, .payload = (const uint8_t *)text, .len = len};
    gpp_msg check;
    rc = gpp_msg_parse(&f, &check, err);
    gpp_msg_free(&check);
    if (rc == GPP_ENOMEM) goto done;
    if (rc) {
        if (err) snprintf(err->code, sizeof err->code, "invalid_argument");
        rc = GPP_EINVAL;
        goto done;
    }
    rc = gpp_frame_append(out, (int)m->type, text, len);
    if (rc) rc = gpp_error_set(err, rc, "out_of_memory", "", "%s: no memory", name);
done:
    cJSON_free(text);
    return rc;
}

/* ---- equality ------------------------------------------------------------------- */

static int str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static int file_eq(const gpp_proto_file *a, const gpp_proto_file *b)
{
    return str_eq(a->name, b->name) && str_eq(a->sha256, b->sha256) &&
           (a->sha256 == NULL || a->size == b->size);
}

/* Structural, in order, numbers exact (cJSON_Compare looks keys up by name,
 * so it calls two equal trees with a repeated key different, and it
 * compares numbers with a tolerance). */
static int json_eq(const cJSON *a, const cJSON *b)
{
    if (!a || !b) return a == b;
    if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
    switch (a->type & 0xFF) {
    case cJSON_Number: return a->valuedouble == b->valuedouble;
    case cJSON_String:
    case cJSON_Raw: return str_eq(a->valuestring, b->valuestring);
    case cJSON_Array:
    case cJSON_Object: {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next) {
            if ((a->type & 0xFF) == cJSON_Object && !str_eq(x->string, y->string)) return 0;
            if (!json_eq(x, y)) return 0;
        }
        return x == NULL && y == NULL;
    }
    default: return 1;   /* true, false, null */
    }
}

static int dbl_eq(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b;
}

static int hello_eq(const gpp_msg_hello *a, const gpp_msg_hello *b)
{
    if (a->proto != b->proto || !str_eq(a->token, b->token) ||
        !str_eq(a->worker_id, b->worker_id) || !str_eq(a->name, b->name) ||
        a->n_devices != b->n_devices || a->threads != b->threads ||
        a->n_labels != b->n_labels || !str_eq(a->running_stage_id, b->running_stage_id) ||
        (a->running_stage_id && a->running_attempt != b->running_attempt) ||
        a->n_cached != b->n_cached)
        return 0;
    if (a->n_devices > GPP_PROTO_MAX_DEVICES || a->n_labels > GPP_PROTO_MAX_LABELS) return 0;
    for (size_t i = 0; i < a->n_devices; i++) {
        const gpp_proto_device *x = &a->devices[i], *y = &b->devices[i];
        if (x->kind != y->kind || x->index != y->index || !str_eq(x->name, y->name) ||
            x->memory_mb != y->memory_mb)
            return 0;
    }
    for (size_t i = 0; i < a->n_labels; i++)
        if (!str_eq(a->labels[i].key, b->labels[i].key) ||
            !str_eq(a->labels[i].value, b->labels[i].value))
            return 0;
    for (size_t i = 0; i < a->n_cached; i++)
        if (!str_eq(a->cached[i], b->cached[i])) return 0;
    return 1;
}

static int assign_eq(const gpp_msg_assign *a, const gpp_msg_assign *b)
{
    if (!str_eq(a->job_id, b->job_id) || !str_eq(a->stage_id, b->stage_id) ||
        a->attempt != b->attempt || a->kind != b->kind || a->index != b->index ||
        !json_eq(a->spec, b->spec) || !file_eq(&a->input, &b->input) ||
        !str_eq(a->dataset_name, b->dataset_name) ||
        !str_eq(a->dataset_format, b->dataset_format) || a->n_files != b->n_files ||
        a->n_files > GPP_PROTO_MAX_FILES)
        return 0;
    for (size_t i = 0; i < a->n_files; i++)
        if (!file_eq(&a->files[i], &b->files[i])) return 0;
    return 1;
}

static int metrics_eq(const gpp_msg_metrics *a, const gpp_msg_metrics *b)
{
    if (!str_eq(a->stage_id, b->stage_id) || a->attempt != b->attempt ||
        a->seq != b->seq || a->n_points != b->n_points)
        return 0;
    for (size_t i = 0; i < a->n_points; i++) {
        const gpp_proto_point *x = &a->points[i], *y = &b->points[i];
        /* every non-finite value travels as null: they are all one */
        int fx = isfinite(x->value), fy = isfinite(y->value);
        if (x->iteration != y->iteration || !str_eq(x->name, y->name) ||
            x->time_ms != y->time_ms || fx != fy || (fx && !dbl_eq(x->value, y->value)))
            return 0;
    }
    return 1;
}

int gpp_msg_equal(const gpp_msg *a, const gpp_msg *b)
{
    if (a->type != b->type) return 0;
    switch (a->type) {
    case GPP_MSG_HELLO: return hello_eq(&a->hello, &b->hello);
    case GPP_MSG_WELCOME:
        return a->welcome.proto == b->welcome.proto &&
               str_eq(a->welcome.worker_id, b->welcome.worker_id) &&
               a->welcome.heartbeat_ms == b->welcome.heartbeat_ms &&
               a->welcome.grace_s == b->welcome.grace_s &&
               a->welcome.max_frame == b->welcome.max_frame;
    case GPP_MSG_ASSIGN: return assign_eq(&a->assign, &b->assign);
    case GPP_MSG_FETCH: return str_eq(a->fetch.sha256, b->fetch.sha256);
    case GPP_MSG_BLOB:
        return memcmp(a->blob.sha256, b->blob.sha256, GPP_SHA256_LEN) == 0 &&
               a->blob.offset == b->blob.offset && a->blob.total == b->blob.total &&
               a->blob.len == b->blob.len &&
               (a->blob.len == 0 || memcmp(a->blob.data, b->blob.data, a->blob.len) == 0);
    case GPP_MSG_METRICS: return metrics_eq(&a->metrics, &b->metrics);
    case GPP_MSG_ACK:
        return str_eq(a->ack.stage_id, b->ack.stage_id) && a->ack.attempt == b->ack.attempt &&
               a->ack.seq == b->ack.seq;
    case GPP_MSG_LOG:
        return str_eq(a->log.stage_id, b->log.stage_id) && a->log.attempt == b->log.attempt &&
               a->log.level == b->log.level && str_eq(a->log.line, b->log.line) &&
               a->log.time_ms == b->log.time_ms;
    case GPP_MSG_RESULT:
        return str_eq(a->result.stage_id, b->result.stage_id) &&
               a->result.attempt == b->result.attempt &&
               file_eq(&a->result.output, &b->result.output) &&
               json_eq(a->result.summary, b->result.summary);
    case GPP_MSG_FAIL:
        return str_eq(a->fail.stage_id, b->fail.stage_id) &&
               a->fail.attempt == b->fail.attempt && a->fail.cls == b->fail.cls &&
               (a->fail.retryable != 0) == (b->fail.retryable != 0) &&
               str_eq(a->fail.reason, b->fail.reason);
    case GPP_MSG_CANCEL:
        return str_eq(a->cancel.stage_id, b->cancel.stage_id) &&
               a->cancel.attempt == b->cancel.attempt;
    case GPP_MSG_PING:
        return a->ping.time_ms == b->ping.time_ms &&
               str_eq(a->ping.stage_id, b->ping.stage_id) &&
               a->ping.attempt == b->ping.attempt &&
               a->ping.has_progress == b->ping.has_progress &&
               (!a->ping.has_progress || dbl_eq(a->ping.progress, b->ping.progress));
    case GPP_MSG_PONG: return a->pong.time_ms == b->pong.time_ms;
    case GPP_MSG_BYE: return str_eq(a->bye.reason, b->bye.reason);
    case GPP_MSG_DRAIN: return 1;
    default: return 0;
    }
}
