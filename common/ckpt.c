/* The checkpoint format .gppm: writer and checking reader (see gpp/ckpt.h
 * for the byte layout).  The reader validates in this order: magic, version,
 * header bounds, end marker, CRC-32, JSON, tensor table.  Every access to the
 * input goes through an explicit bounds check against the length it was
 * given; tests/fuzz/fuzz_ckpt.c exercises that under ASan. */
#include "gpp/ckpt.h"

#include <cjson/cJSON.h>
#include <zlib.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gpp/ckpt: float32 data is stored little-endian and handed out in place; big-endian hosts are not supported"
#endif

#define MAX_COUNT (GPP_CKPT_MAX_FILE / 4)   /* most floats one tensor can hold */
#define MIN_ENTRY 21u                       /* u16 len, 1-byte name, dtype, ndim, offset, nbytes */

/* ---- little helpers ---------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)v); wr16(p + 2, (uint16_t)(v >> 16)); }
static void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

static uint64_t align_up(uint64_t v) { return (v + (GPP_CKPT_ALIGN - 1)) & ~(uint64_t)(GPP_CKPT_ALIGN - 1); }

/* zlib's crc32 takes a uInt length; feed it in chunks. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n > 0) {
        uInt chunk = n > ((size_t)1 << 30) ? (uInt)1 << 30 : (uInt)n;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

static const char *code_for(int rc)
{
    switch (rc) {
    case GPP_EINVAL: return "invalid_argument";
    case GPP_ENOMEM: return "out_of_memory";
    case GPP_EIO: return "io_error";
    case GPP_ETOOBIG: return "too_large";
    case GPP_EVERSION: return "unsupported_version";
    case GPP_ECHECKSUM: return "checksum_mismatch";
    case GPP_ENOTFOUND: return "not_found";
    default: return "malformed";
    }
}

static int fail(gpp_error *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(gpp_error *err, int rc, const char *fmt, ...)
{
    char msg[sizeof ((gpp_error *)0)->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gpp_error_set(err, rc, code_for(rc), "", "%s", msg);
}

/* A printable rendering of `n` bytes of a (possibly hostile) name for error
 * messages: at most 64 characters, other bytes as \xNN. */
static const char *name_repr(char out[static 300], const uint8_t *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < 280; i++) {
        if (i == 64) { memcpy(out + o, "...", 3); o += 3; break; }
        uint8_t ch = p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '\'') out[o++] = (char)ch;
        else o += (size_t)snprintf(out + o, 300 - o, "\\x%02x", ch);
    }
    out[o] = '\0';
    return out;
}

static bool name_char_ok(uint8_t ch) { return ch >= 0x20 && ch <= 0x7e; }

static bool is_optim_name(const char *name, size_t n)
{
    size_t p = sizeof GPP_CKPT_OPTIM_PREFIX - 1;
    return n >= p && memcmp(name, GPP_CKPT_OPTIM_PREFIX, p) == 0;
}

/* ---- the JSON document ------------------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and no control
 * bytes other than tab, newline and carriage return, so that C and Python
 * (bytes.decode + json.loads) accept exactly the same documents.  Returns
 * the offset of the first bad byte, or n. */
static size_t json_text_bad_at(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return i;
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c == 0xe0) { need = 2; lo = 0xa0; }
        else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) need = 2;
        else if (c == 0xed) { need = 2; hi = 0x9f; }
        else if (c == 0xf0) { need = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) need = 3;
        else if (c == 0xf4) { need = 3; hi = 0x8f; }
        else return i;
        if (n - i - 1 < need) return i;
        if (p[i + 1] < lo || p[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf) return i;
        i += need + 1;
    }
    return n;
}

/* Check the document: strict UTF-8 JSON, root an object with an object
 * "network".  Fills msg; returns true when good. */
static bool json_check(const uint8_t *p, size_t n, char *msg, size_t msgsz)
{
    if (n == 0) { snprintf(msg, msgsz, "JSON document is empty"); return false; }
    size_t bad = json_text_bad_at(p, n);
    if (bad < n) {
        snprintf(msg, msgsz, "JSON document has an invalid byte 0x%02x at offset %zu "
                 "(must be UTF-8 without control characters)", p[bad], bad);
        return false;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)p, n, &end, 0);
    if (!root) {
        size_t at = (end && end >= (const char *)p && end <= (const char *)p + n)
                        ? (size_t)(end - (const char *)p) : 0;
        snprintf(msg, msgsz, "JSON document is not valid JSON (error near offset %zu)", at);
        return false;
    }
    size_t off = (size_t)(end - (const char *)p);
    while (off < n && (p[off] == ' ' || p[off] == '\t' || p[off] == '\n' || p[off] == '\r')) off++;
    bool ok = false;
    if (off < n)
        snprintf(msg, msgsz, "JSON document has trailing data at offset %zu", off);
    else if (!cJSON_IsObject(root))
        snprintf(msg, msgsz, "JSON document is not an object");
    else if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "network")))
        snprintf(msg, msgsz, "JSON document has no \"network\" object");
    else
        ok = true;
    cJSON_Delete(root);
    return ok;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct writer_tensor {
    char *name;
    size_t name_len;
    int ndim;
    uint64_t dims[GPP_CKPT_MAX_NDIM];
    const float *data;
    uint64_t count;
    uint64_t offset;       /* set by layout() */
} writer_tensor;

struct gpp_ckpt_writer {
    char *json;            /* owned copy of the document */
    writer_tensor *t;      /* n tensors in insertion order */
    size_t n, cap;
    uint32_t *slots;       /* open-addressing name set: index+1, 0 = empty */
    size_t nslots;         /* power of two */
};

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 16777619u; }
    return h;
}

/* Slot where `name` is, or the empty slot where it would go. */
static size_t slot_find(const gpp_ckpt_writer *w, const char *name, size_t n)
{
    size_t mask = w->nslots - 1;
    size_t i = name_hash(name, n) & mask;
    while (w->slots[i] != 0) {
        const writer_tensor *t = &w->t[w->slots[i] - 1];
        if (t->name_len == n && memcmp(t->name, name, n) == 0) break;
        i = (i + 1) & mask;
    }
    return i;
}

static int slots_grow(gpp_ckpt_writer *w)
{
    size_t ns = w->nslots ? w->nslots * 2 : 64;
    uint32_t *s = calloc(ns, sizeof *s);
    if (!s) return GPP_ENOMEM;
    free(w->slots);
    w->slots = s;
    w->nslots = ns;
    for (size_t k = 0; k < w->n; k++)
        w->slots[slot_find(w, w->t[k].name, w->t[k].name_len)] = (uint32_t)(k + 1);
    return 0;
}

/* New writer owning a copy of `json`; NULL on NULL json or no memory. */
gpp_ckpt_writer *gpp_ckpt_writer_new(const char *json)
{
    if (!json) return NULL;
    gpp_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->json = strdup(json);
    if (!w->json) { free(w); return NULL; }
    return w;
}

/* Free the writer, its names and its JSON copy; tensor data is the caller's. */
void gpp_ckpt_writer_free(gpp_ckpt_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w->slots);
    free(w->json);
    free(w);
}

/* Check and record one tensor (name copied, data referenced); 0 or
 * GPP_EINVAL / GPP_ETOOBIG / GPP_ENOMEM with *err filled. */
int gpp_ckpt_writer_add(gpp_ckpt_writer *w, const char *name, int ndim,
                        const int64_t *dims, const float *data, gpp_error *err)
{
    if (!w || !name) return fail(err, GPP_EINVAL, "checkpoint writer: NULL writer or tensor name");
    char rep[300];
    size_t nl = strnlen(name, GPP_CKPT_NAME_MAX + 1);
    if (nl == 0 || nl > GPP_CKPT_NAME_MAX)
        return fail(err, GPP_EINVAL, "tensor name '%s' must be 1..%d characters",
                    name_repr(rep, (const uint8_t *)name, nl), GPP_CKPT_NAME_MAX);
    for (size_t i = 0; i < nl; i++)
        if (!name_char_ok((uint8_t)name[i]))
            return fail(err, GPP_EINVAL, "tensor name '%s' has byte 0x%02x at %zu "
                        "(names are printable ASCII)", name_repr(rep, (const uint8_t *)name, nl),
                        (uint8_t)name[i], i);
    if (ndim < 0 || ndim > GPP_CKPT_MAX_NDIM)
        return fail(err, GPP_EINVAL, "tensor '%s': ndim %d is outside 0..%d", name, ndim,
                    GPP_CKPT_MAX_NDIM);
    if (ndim > 0 && !dims) return fail(err, GPP_EINVAL, "tensor '%s': dims is NULL", name);
    if (!data) return fail(err, GPP_EINVAL, "tensor '%s': data is NULL", name);
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 1)
            return fail(err, GPP_EINVAL, "tensor '%s': dims[%d] = %lld must be >= 1", name, d,
                        (long long)dims[d]);
        if ((uint64_t)dims[d] > MAX_COUNT || count > MAX_COUNT / (uint64_t)dims[d])
            return fail(err, GPP_ETOOBIG, "tensor '%s': shape exceeds the 16 GiB limit", name);
        count *= (uint64_t)dims[d];
    }
    if (w->n >= GPP_CKPT_MAX_TENSORS)
        return fail(err, GPP_ETOOBIG, "checkpoint has more than %d tensors", GPP_CKPT_MAX_TENSORS);
    if (w->nslots == 0 || (w->n + 1) * 2 > w->nslots) {
        if (slots_grow(w) != 0) return fail(err, GPP_ENOMEM, "out of memory");
    }
    size_t slot = slot_find(w, name, nl);
    if (w->slots[slot] != 0)
        return fail(err, GPP_EINVAL, "duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 16;
        writer_tensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return fail(err, GPP_ENOMEM, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    writer_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strndup(name, nl);
    if (!t->name) return fail(err, GPP_ENOMEM, "out of memory");
    t->name_len = nl;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->dims[d] = (uint64_t)dims[d];
    t->data = data;
    t->count = count;
    w->slots[slot] = (uint32_t)(w->n + 1);
    w->n++;
    return 0;
}

/* Check the document and lay the file out: tensor offsets, data_offset,
 * total size.  Returns 0 or a GPP_E* code with *err filled. */
static int layout(gpp_ckpt_writer *w, uint64_t *data_offset, uint64_t *total, bool *optim,
                  gpp_error *err)
{
    size_t jl = strlen(w->json);
    if (jl > GPP_CKPT_MAX_JSON)
        return fail(err, GPP_ETOOBIG, "checkpoint JSON is %zu bytes, over the 16 MiB limit", jl);
    char msg[256];
    if (!json_check((const uint8_t *)w->json, jl, msg, sizeof msg))
        return fail(err, GPP_EINVAL, "checkpoint %s", msg);
    uint64_t pos = GPP_CKPT_HEADER_SIZE + (uint64_t)jl;
    *optim = false;
    for (size_t i = 0; i < w->n; i++) {
        pos += 2 + w->t[i].name_len + 2 + 8 * (uint64_t)w->t[i].ndim + 16;
        if (is_optim_name(w->t[i].name, w->t[i].name_len)) *optim = true;
    }
    *data_offset = align_up(pos);
    pos = *data_offset;
    for (size_t i = 0; i < w->n; i++) {
        pos = align_up(pos);
        w->t[i].offset = pos;
        pos += 4 * w->t[i].count;
        if (pos > GPP_CKPT_MAX_FILE)
            return fail(err, GPP_ETOOBIG, "checkpoint would exceed the 16 GiB limit");
    }
    *total = pos + GPP_CKPT_TRAILER_SIZE;
    if (*total > GPP_CKPT_MAX_FILE || *total > SIZE_MAX)
        return fail(err, GPP_ETOOBIG, "checkpoint would exceed the 16 GiB limit");
    return 0;
}

/* A sink for the serialiser: a memory buffer or a file descriptor behind a
 * small buffer; both keep the running CRC. */
typedef struct sink {
    uint32_t crc;
    uint64_t pos;
    uint8_t *mem;          /* memory mode: the whole output */
    int fd;                /* file mode */
    uint8_t io[1 << 16];
    size_t io_len;
    const char *path;      /* for messages */
    gpp_error *err;
} sink;

static int sink_flush(sink *s)
{
    size_t off = 0;
    while (off < s->io_len) {
        ssize_t k = write(s->fd, s->io + off, s->io_len - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return fail(s->err, GPP_EIO, "cannot write '%s': %s", s->path, strerror(errno));
        }
        off += (size_t)k;
    }
    s->io_len = 0;
    return 0;
}

static int sink_put(sink *s, const void *p, size_t n, bool crc)
{
    if (crc) s->crc = crc_update(s->crc, p, n);
    if (s->mem) {
        memcpy(s->mem + s->pos, p, n);
        s->pos += n;
        return 0;
    }
    s->pos += n;
    const uint8_t *b = p;
    while (n > 0) {
        if (s->io_len == sizeof s->io) {
            int rc = sink_flush(s);
            if (rc) return rc;
        }
        size_t k = sizeof s->io - s->io_len;
        if (k > n) k = n;
        memcpy(s->io + s->io_len, b, k);
        s->io_len += k;
        b += k;
        n -= k;
    }
    return 0;
}

static int sink_pad_to(sink *s, uint64_t to)
{
    static const uint8_t zero[GPP_CKPT_ALIGN];
    while (s->pos < to) {
        uint64_t k = to - s->pos;
        int rc = sink_put(s, zero, k > sizeof zero ? sizeof zero : (size_t)k, true);
        if (rc) return rc;
    }
    return 0;
}

/* Emit the whole file (layout() already run). */
static int serialise(const gpp_ckpt_writer *w, uint64_t data_offset, bool optim, sink *s)
{
    uint8_t hdr[GPP_CKPT_HEADER_SIZE];
    size_t jl = strlen(w->json);
    memcpy(hdr, GPP_CKPT_MAGIC, 8);
    wr32(hdr + 8, GPP_CKPT_VERSION);
    wr32(hdr + 12, optim ? GPP_CKPT_FLAG_OPTIM : 0);
    wr32(hdr + 16, (uint32_t)jl);
    wr32(hdr + 20, (uint32_t)w->n);
    wr64(hdr + 24, data_offset);
    int rc = sink_put(s, hdr, sizeof hdr, true);
    if (!rc) rc = sink_put(s, w->json, jl, true);
    for (size_t i = 0; !rc && i < w->n; i++) {
        const writer_tensor *t = &w->t[i];
        uint8_t e[2 + GPP_CKPT_NAME_MAX + 2 + 8 * GPP_CKPT_MAX_NDIM + 16];
        size_t o = 0;
        wr16(e, (uint16_t)t->name_len); o += 2;
        memcpy(e + o, t->name, t->name_len); o += t->name_len;
        e[o++] = GPP_CKPT_DTYPE_F32;
        e[o++] = (uint8_t)t->ndim;
        for (int d = 0; d < t->ndim; d++) { wr64(e + o, t->dims[d]); o += 8; }
        wr64(e + o, t->offset); o += 8;
        wr64(e + o, 4 * t->count); o += 8;
        rc = sink_put(s, e, o, true);
    }
    if (!rc) rc = sink_pad_to(s, data_offset);
    for (size_t i = 0; !rc && i < w->n; i++) {
        rc = sink_pad_to(s, w->t[i].offset);
        if (!rc) rc = sink_put(s, w->t[i].data, (size_t)(4 * w->t[i].count), true);
    }
    if (!rc) {
        uint8_t tr[GPP_CKPT_TRAILER_SIZE];
        wr32(tr, s->crc);
        memcpy(tr + 4, GPP_CKPT_END_MARKER, 4);
        rc = sink_put(s, tr, sizeof tr, false);
    }
    if (!rc && !s->mem) rc = sink_flush(s);
    return rc;
}

/* Serialise into one malloc'd buffer the caller frees; 0 or a GPP_E* code. */
int gpp_ckpt_writer_write_buffer(gpp_ckpt_writer *w, uint8_t **buf, size_t *len,
                                 gpp_error *err)
{
    if (buf) *buf = NULL;
    if (len) *len = 0;
    if (!w || !buf || !len) return fail(err, GPP_EINVAL, "checkpoint writer: NULL argument");
    uint64_t data_offset, total;
    bool optim;
    int rc = layout(w, &data_offset, &total, &optim, err);
    if (rc) return rc;
    sink *s = calloc(1, sizeof *s);
    uint8_t *mem = malloc((size_t)total);
    if (!s || !mem) {
        free(s);
        free(mem);
        return fail(err, GPP_ENOMEM, "out of memory for a %llu-byte checkpoint",
                    (unsigned long long)total);
    }
    s->mem = mem;
    s->err = err;
    rc = serialise(w, data_offset, optim, s);
    if (!rc && s->pos != total)
        rc = fail(err, GPP_EINVAL, "checkpoint writer: wrote %llu bytes, laid out %llu",
                  (unsigned long long)s->pos, (unsigned long long)total);
    free(s);
    if (rc) { free(mem); return rc; }
    *buf = mem;
    *len = (size_t)total;
    return 0;
}

/* fsync the directory holding `path` so that a rename into it is durable. */
static int fsync_parent(const char *path, gpp_error *err)
{
    char *dir = strdup(path);
    if (!dir) return fail(err, GPP_ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    const char *d = dir;
    if (!slash) d = ".";
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int rc = 0;
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = fail(err, GPP_EIO, "cannot open directory '%s': %s", d, strerror(errno));
    } else {
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = fail(err, GPP_EIO, "cannot fsync directory '%s': %s", d, strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}

/* Serialise to PATH.tmp.<pid>, fsync, rename over `path`, fsync the
 * directory; the temporary is removed on failure.  0 or a GPP_E* code. */
int gpp_ckpt_writer_write_file(gpp_ckpt_writer *w, const char *path, gpp_error *err)
{
    if (!w || !path || !*path) return fail(err, GPP_EINVAL, "checkpoint writer: NULL argument");
    uint64_t data_offset, total;
    bool optim;
    int rc = layout(w, &data_offset, &total, &optim, err);
    if (rc) return rc;
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    sink *s = calloc(1, sizeof *s);
    int fd = -1;
    if (!tmp || !s) { rc = fail(err, GPP_ENOMEM, "out of memory"); goto out; }
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = fail(err, GPP_EIO, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    s->fd = fd;
    s->path = tmp;
    s->err = err;
    rc = serialise(w, data_offset, optim, s);
    if (!rc && fsync(fd) != 0)
        rc = fail(err, GPP_EIO, "cannot fsync '%s': %s", tmp, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = fail(err, GPP_EIO, "cannot close '%s': %s", tmp, strerror(errno));
    fd = -1;
    if (!rc && rename(tmp, path) != 0)
        rc = fail(err, GPP_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (rc) { unlink(tmp); goto out; }
    rc = fsync_parent(path, err);
out:
    if (fd >= 0) { close(fd); unlink(tmp); }
    free(s);
    free(tmp);
    return rc;
}

/* ---- reader ------------------------------------------------------------ */

struct gpp_ckpt {
    uint8_t *buf;                 /* the whole file, 64-byte aligned */
    size_t len;
    char *json;                   /* NUL-terminated copy of the document */
    uint32_t flags;
    size_t n;
    gpp_tensor_view *views;       /* n, file order */
    const gpp_tensor_view **sorted; /* n, by name */
    char *names;                  /* all names, NUL-terminated */
};

static int cmp_view(const void *a, const void *b)
{
    const gpp_tensor_view *x = *(const gpp_tensor_view *const *)a;
    const gpp_tensor_view *y = *(const gpp_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

typedef struct header {
    uint32_t version, flags, json_len, n_tensors;
    uint64_t data_offset;
} header;

/* Parse the tensor table at [table_start, data_offset) into c->views and
 * c->names.  Tensor data must end by `limit` (the trailer's offset).  When
 * `diagnose` is set the file is known to be truncated (limit is the file
 * length) and the first tensor that runs past it is reported as such. */
static int parse_table(gpp_ckpt *c, const header *h, uint64_t limit, bool diagnose,
                       gpp_error *err)
{
    const uint8_t *b = c->buf;
    uint64_t pos = GPP_CKPT_HEADER_SIZE + (uint64_t)h->json_len;
    const uint64_t end = h->data_offset;
    size_t n = h->n_tensors;
    char rep[300];
    if ((uint64_t)n * MIN_ENTRY > end - pos)
        return fail(err, GPP_EFORMAT, "checkpoint tensor table of %zu entries cannot fit in "
                    "the %llu bytes between the JSON and the data region", n,
                    (unsigned long long)(end - pos));
    c->views = calloc(n ? n : 1, sizeof *c->views);
    c->names = malloc((size_t)(end - pos) + 1);
    if (!c->views || !c->names) return fail(err, GPP_ENOMEM, "out of memory");
    size_t name_off = 0;
    uint64_t prev_end = h->data_offset;
    for (size_t i = 0; i < n; i++) {
        if (end - pos < 4)
            return fail(err, GPP_EFORMAT, "checkpoint tensor table entry %zu runs into the data "
                        "region at %llu", i, (unsigned long long)end);
        uint16_t nl = rd16(b + pos);
        if (nl == 0 || nl > GPP_CKPT_NAME_MAX)
            return fail(err, GPP_EFORMAT, "checkpoint tensor %zu: name length %u is outside 1..%d",
                        i, nl, GPP_CKPT_NAME_MAX);
        if (end - pos < 2 + (uint64_t)nl + 2)
            return fail(err, GPP_EFORMAT, "checkpoint tensor table entry %zu runs into the data "
                        "region at %llu", i, (unsigned long long)end);
        const uint8_t *nm = b + pos + 2;
        name_repr(rep, nm, nl);
        for (size_t k = 0; k < nl; k++)
            if (!name_char_ok(nm[k]))
                return fail(err, GPP_EFORMAT, "checkpoint tensor %zu: name '%s' has byte 0x%02x "
                            "(names are printable ASCII)", i, rep, nm[k]);
        pos += 2 + (uint64_t)nl;
        uint8_t dtype = b[pos], ndim = b[pos + 1];
        pos += 2;
        if (dtype != GPP_CKPT_DTYPE_F32)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': dtype %u is not supported "
                        "(only 1 = float32)", rep, dtype);
        if (ndim > GPP_CKPT_MAX_NDIM)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': ndim %u exceeds %d", rep, ndim,
                        GPP_CKPT_MAX_NDIM);
        if (end - pos < 8 * (uint64_t)ndim + 16)
            return fail(err, GPP_EFORMAT, "checkpoint tensor table entry %zu runs into the data "
                        "region at %llu", i, (unsigned long long)end);
        gpp_tensor_view *v = &c->views[i];
        uint64_t count = 1;
        bool overflow = false;
        for (unsigned d = 0; d < ndim; d++) {
            uint64_t dim = rd64(b + pos + 8 * d);
            if (dim == 0)
                return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': dims[%u] is 0", rep, d);
            if (dim > MAX_COUNT || count > MAX_COUNT / dim) overflow = true;
            else count *= dim;
            v->dims[d] = (int64_t)(dim > MAX_COUNT ? MAX_COUNT : dim);
        }
        pos += 8 * (uint64_t)ndim;
        uint64_t off = rd64(b + pos), nbytes = rd64(b + pos + 8);
        pos += 16;
        if (overflow)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': the product of its dims "
                        "overflows the 16 GiB limit", rep);
        if (nbytes != 4 * count)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': nbytes %llu does not match its "
                        "shape (%llu elements x 4 bytes)", rep, (unsigned long long)nbytes,
                        (unsigned long long)count);
        if (off % GPP_CKPT_ALIGN != 0)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': data offset %llu is not "
                        "64-byte aligned", rep, (unsigned long long)off);
        if (off < h->data_offset)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': data offset %llu is before the "
                        "data region at %llu", rep, (unsigned long long)off,
                        (unsigned long long)h->data_offset);
        if (off < prev_end)
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': data at %llu overlaps the "
                        "previous tensor, which ends at %llu", rep, (unsigned long long)off,
                        (unsigned long long)prev_end);
        if (off > limit || nbytes > limit - off) {
            if (diagnose)
                return fail(err, GPP_EFORMAT, "checkpoint truncated: tensor '%s' data ends at "
                            "%llu but file is %llu bytes", rep,
                            (unsigned long long)(off > UINT64_MAX - nbytes ? UINT64_MAX : off + nbytes),
                            (unsigned long long)limit);
            return fail(err, GPP_EFORMAT, "checkpoint tensor '%s': data [%llu, %llu) runs past "
                        "the end of the data region at %llu", rep, (unsigned long long)off,
                        (unsigned long long)(off + nbytes), (unsigned long long)limit);
        }
        prev_end = off + nbytes;
        memcpy(c->names + name_off, nm, nl);
        c->names[name_off + nl] = '\0';
        v->name = c->names + name_off;
        name_off += (size_t)nl + 1;
        v->ndim = ndim;
        v->data = (const float *)(const void *)(b + off);
        v->count = (size_t)count;
    }
    c->n = n;
    return 0;
}

static int check_names(gpp_ckpt *c, gpp_error *err)
{
    c->sorted = malloc((c->n ? c->n : 1) * sizeof *c->sorted);
    if (!c->sorted) return fail(err, GPP_ENOMEM, "out of memory");
    bool optim = false;
    for (size_t i = 0; i < c->n; i++) {
        c->sorted[i] = &c->views[i];
        if (is_optim_name(c->views[i].name, strlen(c->views[i].name))) optim = true;
    }
    qsort(c->sorted, c->n, sizeof *c->sorted, cmp_view);
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(c->sorted[i - 1]->name, c->sorted[i]->name) == 0) {
            char rep[300];
            const char *nm = c->sorted[i]->name;
            return fail(err, GPP_EFORMAT, "checkpoint has a duplicate tensor name '%s'",
                        name_repr(rep, (const uint8_t *)nm, strlen(nm)));
        }
    bool flag = (c->flags & GPP_CKPT_FLAG_OPTIM) != 0;
    if (flag != optim)
        return fail(err, GPP_EFORMAT, flag
                    ? "checkpoint flags say optimiser state is present but no \"optim/\" tensor is"
                    : "checkpoint has \"optim/\" tensors but the optimiser-state flag is clear");
    return 0;
}

/* Check everything about c->buf / c->len and build the views. */
static int parse(gpp_ckpt *c, gpp_error *err)
{
    const uint8_t *b = c->buf;
    const size_t len = c->len;
    const size_t min = GPP_CKPT_HEADER_SIZE + GPP_CKPT_TRAILER_SIZE;
    if (memcmp(b, GPP_CKPT_MAGIC, len < 8 ? len : 8) != 0)
        return fail(err, GPP_EFORMAT, "not a gppm checkpoint: bad magic bytes (expected "
                    "\"GPPM\\r\\n\\x1a\\n\")");
    header h = {0};
    if (len >= 12) {
        h.version = rd32(b + 8);
        if (h.version > GPP_CKPT_VERSION)
            return fail(err, GPP_EVERSION, "checkpoint version %u is newer than this gppd "
                        "understands (%d)", h.version, GPP_CKPT_VERSION);
        if (h.version != GPP_CKPT_VERSION)
            return fail(err, GPP_EVERSION, "checkpoint version %u is not valid (this gppd reads "
                        "version %d)", h.version, GPP_CKPT_VERSION);
    }
    if (len < min)
        return fail(err, GPP_EFORMAT, "checkpoint truncated: %zu bytes, shorter than the %zu-byte "
                    "header and trailer", len, min);
    h.flags = rd32(b + 12);
    h.json_len = rd32(b + 16);
    h.n_tensors = rd32(b + 20);
    h.data_offset = rd64(b + 24);
    if (h.flags & ~GPP_CKPT_FLAG_OPTIM)
        return fail(err, GPP_EFORMAT, "checkpoint flags 0x%x have unknown bits set", h.flags);
    if (h.json_len > GPP_CKPT_MAX_JSON)
        return fail(err, GPP_EFORMAT, "checkpoint JSON length %u exceeds the 16 MiB limit",
                    h.json_len);
    if (h.n_tensors > GPP_CKPT_MAX_TENSORS)
        return fail(err, GPP_EFORMAT, "checkpoint tensor count %u exceeds the limit of %d",
                    h.n_tensors, GPP_CKPT_MAX_TENSORS);
    const uint64_t table_start = GPP_CKPT_HEADER_SIZE + (uint64_t)h.json_len;
    const uint64_t trailer = len - GPP_CKPT_TRAILER_SIZE;
    if (h.data_offset % GPP_CKPT_ALIGN != 0)
        return fail(err, GPP_EFORMAT, "checkpoint data offset %llu is not 64-byte aligned",
                    (unsigned long long)h.data_offset);
    if (h.data_offset < table_start)
        return fail(err, GPP_EFORMAT, "checkpoint data offset %llu is inside the JSON document, "
                    "which ends at %llu", (unsigned long long)h.data_offset,
                    (unsigned long long)table_start);
    if (h.data_offset > trailer)
        return fail(err, GPP_EFORMAT, "checkpoint truncated: data region starts at %llu but file "
                    "is %zu bytes", (unsigned long long)h.data_offset, len);
    if (memcmp(b + trailer + 4, GPP_CKPT_END_MARKER, 4) != 0) {
        /* Most likely cut short: name the first tensor the file is too short
         * for (a table parse bounded by the header's offsets is safe). */
        int rc = parse_table(c, &h, len, true, err);
        free(c->views);
        free(c->names);
        c->views = NULL;
        c->names = NULL;
        c->n = 0;
        if (rc == 0 || !err || strncmp(err->message, "checkpoint truncated", 20) != 0)
            fail(err, GPP_EFORMAT, "checkpoint truncated or corrupt: end marker \"MPPG\" missing "
                 "from the last 4 of %zu bytes", len);
        return GPP_EFORMAT;
    }
    uint32_t stored = rd32(b + trailer), computed = crc_update(0, b, (size_t)trailer);
    if (stored != computed)
        return fail(err, GPP_ECHECKSUM, "checkpoint checksum mismatch: stored CRC-32 %08x, "
                    "computed %08x (the file is corrupt)", stored, computed);
    /* Parse a copy of exactly json_len bytes, so that a JSON parser bug
     * could not wander into the table unnoticed (ASan sees the copy's end). */
    c->json = malloc((size_t)h.json_len + 1);
    if (!c->json) return fail(err, GPP_ENOMEM, "out of memory");
    memcpy(c->json, b + GPP_CKPT_HEADER_SIZE, h.json_len);
    c->json[h.json_len] = '\0';
    char msg[256];
    if (!json_check((const uint8_t *)c->json, h.json_len, msg, sizeof msg))
        return fail(err, GPP_EFORMAT, "checkpoint %s", msg);
    c->flags = h.flags;
    int rc = parse_table(c, &h, trailer, false, err);
    if (rc) return rc;
    return check_names(c, err);
}

/* Free a checkpoint: its buffer, JSON copy, views and names (NULL is fine). */
void gpp_ckpt_free(gpp_ckpt *c)
{
    if (!c) return;
    free(c->buf);
    free(c->json);
    free(c->views);
    free(c->sorted);
    free(c->names);
    free(c);
}

/* A new checkpoint with a 64-byte aligned buffer of `len` bytes. */
static gpp_ckpt *ckpt_alloc(size_t len)
{
    gpp_ckpt *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    size_t cap = (size_t)align_up(len ? len : 1);
    c->buf = aligned_alloc(GPP_CKPT_ALIGN, cap);
    if (!c->buf) { free(c); return NULL; }
    c->len = len;
    return c;
}

/* Copy `len` bytes into an aligned buffer and check them; *out owns the
 * copy.  0 or a GPP_E* code with *out NULL. */
int gpp_ckpt_read_buffer(const uint8_t *buf, size_t len, gpp_ckpt **out, gpp_error *err)
{
    if (!out) return fail(err, GPP_EINVAL, "checkpoint reader: NULL argument");
    *out = NULL;
    if (!buf && len > 0) return fail(err, GPP_EINVAL, "checkpoint reader: NULL buffer");
    if ((uint64_t)len > GPP_CKPT_MAX_FILE)
        return fail(err, GPP_ETOOBIG, "checkpoint is %zu bytes, over the 16 GiB limit", len);
    gpp_ckpt *c = ckpt_alloc(len);
    if (!c) return fail(err, GPP_ENOMEM, "out of memory for a %zu-byte checkpoint", len);
    if (len) memcpy(c->buf, buf, len);
    int rc = parse(c, err);
    if (rc) { gpp_ckpt_free(c); return rc; }
    *out = c;
    return 0;
}

/* Read a regular file of at most 16 GiB into an aligned buffer and check
 * it; *out owns the buffer.  0 or a GPP_E* code with *out NULL. */
/* Open the regular file at `path` for reading: 0 with *fd and *st, or
 * GPP_ENOTFOUND / GPP_EIO (nothing left open). */
static int open_regular(const char *path, int *fd, struct stat *st, gpp_error *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        int e = errno;
        return fail(err, e == ENOENT ? GPP_ENOTFOUND : GPP_EIO, "cannot open checkpoint '%s': %s",
                    path, strerror(e));
    }
    int rc = 0;
    if (fstat(*fd, st) != 0)
        rc = fail(err, GPP_EIO, "cannot stat '%s': %s", path, strerror(errno));
    else if (!S_ISREG(st->st_mode))
        rc = fail(err, GPP_EIO, "checkpoint '%s' is not a regular file", path);
    if (rc != 0) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

int gpp_ckpt_read_file(const char *path, gpp_ckpt **out, gpp_error *err)
{
    if (!out || !path) return fail(err, GPP_EINVAL, "checkpoint reader: NULL argument");
    *out = NULL;
    gpp_ckpt *c = NULL;
    int fd;
    struct stat st;
    int rc = open_regular(path, &fd, &st, err);
    if (rc != 0) return rc;
    if ((uint64_t)st.st_size > GPP_CKPT_MAX_FILE || (uint64_t)st.st_size > SIZE_MAX / 2) {
        rc = fail(err, GPP_ETOOBIG, "checkpoint '%s' is %lld bytes, over the 16 GiB limit", path,
                  (long long)st.st_size);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    c = ckpt_alloc(len);
    if (!c) { rc = fail(err, GPP_ENOMEM, "out of memory for a %zu-byte checkpoint", len); goto out; }
    size_t got = 0;
    while (got < len) {
        ssize_t k = read(fd, c->buf + got, len - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) { rc = fail(err, GPP_EIO, "cannot read '%s': %s", path, strerror(errno)); goto out; }
        if (k == 0) break;
        got += (size_t)k;
    }
    c->len = got;   /* a file that shrank while read is judged on what was read */
    rc = parse(c, err);
out:
    close(fd);
    if (rc) { gpp_ckpt_free(c); return rc; }
    *out = c;
    return 0;
}

/* gpp_ckpt_read_json: see gpp/ckpt.h. */
int gpp_ckpt_read_json(const char *path, char **json, gpp_error *err)
{
    if (!json || !path) return fail(err, GPP_EINVAL, "checkpoint reader: NULL argument");
    *json = NULL;
    int fd;
    struct stat st;
    int rc = open_regular(path, &fd, &st, err);
    if (rc != 0) return rc;
    uint8_t h[GPP_CKPT_HEADER_SIZE];
    char *doc = NULL;
    ssize_t k;
    do k = pread(fd, h, sizeof h, 0); while (k < 0 && errno == EINTR);
    if (k != (ssize_t)sizeof h || memcmp(h, GPP_CKPT_MAGIC, 8) != 0) {
        rc = fail(err, GPP_EFORMAT, "not a gppm checkpoint: bad magic bytes or a short header");
        goto out;
    }
    if (rd32(h + 8) != GPP_CKPT_VERSION) {
        rc = fail(err, GPP_EVERSION, "checkpoint version %u (this gppd reads version %d)",
                  rd32(h + 8), GPP_CKPT_VERSION);
        goto out;
    }
    const uint32_t n = rd32(h + 16);
    if (n > GPP_CKPT_MAX_JSON ||
        (uint64_t)st.st_size < GPP_CKPT_HEADER_SIZE + (uint64_t)n + GPP_CKPT_TRAILER_SIZE) {
        rc = fail(err, GPP_EFORMAT, "checkpoint JSON length %u does not fit the %lld-byte file",
                  n, (long long)st.st_size);
        goto out;
    }
    if (!(doc = malloc((size_t)n + 1))) {
        rc = fail(err, GPP_ENOMEM, "out of memory for a %u-byte JSON document", n);
        goto out;
    }
    size_t got = 0;
    while (got < n) {
        k = pread(fd, doc + got, n - got, (off_t)(GPP_CKPT_HEADER_SIZE + got));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            rc = fail(err, GPP_EIO, "cannot read '%s': %s", path, k < 0 ? strerror(errno) : "short");
            goto out;
        }
        got += (size_t)k;
    }
    doc[n] = '\0';
    if (memchr(doc, '\0', n)) {
        rc = fail(err, GPP_EFORMAT, "checkpoint JSON holds a NUL byte");
        goto out;
    }
    *json = doc;
    doc = NULL;
out:
    free(doc);
    close(fd);
    return rc;
}

/* Accessors: the JSON, the count, a tensor by index or by name (binary
 * search over the names sorted at read time), the optimiser flag.  All
 * pointers live as long as `c`; NULL/0 for a NULL checkpoint. */
const char *gpp_ckpt_json(const gpp_ckpt *c) { return c ? c->json : NULL; }

size_t gpp_ckpt_tensor_count(const gpp_ckpt *c) { return c ? c->n : 0; }

const gpp_tensor_view *gpp_ckpt_tensor(const gpp_ckpt *c, size_t i)
{
    return c && i < c->n ? &c->views[i] : NULL;
}

const gpp_tensor_view *gpp_ckpt_find(const gpp_ckpt *c, const char *name)
{
    if (!c || !name || c->n == 0) return NULL;
    gpp_tensor_view key = {.name = name};
    const gpp_tensor_view *kp = &key;
    const gpp_tensor_view *const *hit = bsearch(&kp, c->sorted, c->n, sizeof *c->sorted, cmp_view);
    return hit ? *hit : NULL;
}

int gpp_ckpt_has_optim(const gpp_ckpt *c) { return c && (c->flags & GPP_CKPT_FLAG_OPTIM) ? 1 : 0; }
