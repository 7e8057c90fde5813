/* The job spec: parse, validate, fill defaults, serialise (see gpp/jobspec.h).
 *
 * Plain fields (numbers, booleans, enums) are described by one table per
 * object; reading, defaults and writing all walk the same tables, so a field
 * added to a table is parsed, defaulted and written back.  `name`, `dataset`,
 * `model` and `labels` have their own code. */
#include "gpp/jobspec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/netdesc.h"
#include "jsonmsg.h"

#define PATH_LEN 192
#define MAX_SAFE_INT 9007199254740992.0   /* 2^53 */

/* ---- messages ------------------------------------------------------------ */

/* ---- string rules ---------------------------------------------------------- */

/* Well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        size_t len;
        unsigned min, cp;
        if (c < 0x80) { s++; continue; }
        if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; cp = c & 0x07; }
        else return false;
        for (size_t i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        s += len;
    }
    return true;
}

/* UTF-8 with no control characters (C0 and DEL). */
static bool printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return false;
    return utf8_valid(s);
}

/* `s` matches [first][rest]{min-1..max-1}: each class as a set of ranges. */
static bool in_class(char c, const char *cls)
{
    for (; cls[0]; cls += cls[1] == '-' && cls[2] ? 3 : 1) {
        if (cls[1] == '-' && cls[2]) { if (c >= cls[0] && c <= cls[2]) return true; }
        else if (c == cls[0]) return true;
    }
    return false;
}

static bool matches(const char *s, const char *first, const char *rest, size_t min, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (n >= max || !in_class(s[n], n == 0 ? first : rest)) return false;
    }
    return n >= min;
}

/* ---- field tables ---------------------------------------------------------- */

enum { F_INT, F_I64, F_NUM, F_BOOL, F_ENUM, F_WIDTHS, F_OBJECT, F_SPECIAL };

#define NULLABLE 1u   /* null allowed, and the default; stored as 0 */
#define LO_OPEN 2u
#define HI_OPEN 4u

struct fieldset;

typedef struct field {
    const char *key;
    int kind;
    unsigned flags;
    double lo, hi, def;
    const char *const *names;      /* F_ENUM: NULL-terminated */
    const struct fieldset *sub;    /* F_OBJECT */
    size_t off;                    /* into gpp_jobspec */
} field;

typedef struct fieldset {
    const field *f;
    size_t n;
} fieldset;

static const char *const device_names[] = {"any", "cpu", "gpu", NULL};
static const char *const schedule_names[] = {"constant", "step", "cosine", NULL};
static const char *const separation_names[] = {"diag", "eigen", NULL};
static const char *const threshold_names[] = {"eta", "ratio", NULL};
static const char *const criterion_names[] = {"gpp", "l1", "random", NULL};
static const char *const augment_names[] = {"auto", "none", "crop-flip", NULL};
static const char *const val_from_names[] = {"auto", "train", "test", NULL};
static const char *const format_names[] = {"idx", "cifar10-bin", NULL};
static const char *const zoo_names[] = {"lenet5", "lenet300-100", "vgg-small",
                                        "vgg16-cifar", "inception-base", NULL};

#define OFF(m) offsetof(gpp_jobspec, m)
#define INT(k, lo, hi, def, m) {k, F_INT, 0, lo, hi, def, NULL, NULL, OFF(m)}
#define INTN(k, lo, hi, m) {k, F_INT, NULLABLE, lo, hi, 0, NULL, NULL, OFF(m)}
#define I64N(k, lo, hi, m) {k, F_I64, NULLABLE, lo, hi, 0, NULL, NULL, OFF(m)}
#define NUM(k, fl, lo, hi, def, m) {k, F_NUM, fl, lo, hi, def, NULL, NULL, OFF(m)}
#define BOOL(k, def, m) {k, F_BOOL, 0, 0, 1, def, NULL, NULL, OFF(m)}
#define ENUM(k, names, def, m) {k, F_ENUM, 0, 0, 0, def, names, NULL, OFF(m)}
#define OBJ(k, set) {k, F_OBJECT, 0, 0, 0, 0, NULL, &set, 0}
#define SPECIAL(k) {k, F_SPECIAL, 0, 0, 0, 0, NULL, NULL, 0}
#define SET(a) {a, sizeof a / sizeof a[0]}

static const field train_fields[] = {
    INT("epochs", 0, 1000, 2, train.epochs),
    INT("batch_size", 1, 4096, 64, train.batch_size),
    NUM("lr", LO_OPEN, 0, 10, 0.01, train.lr),
    NUM("momentum", HI_OPEN, 0, 1, 0.9, train.momentum),
    BOOL("nesterov", 0, train.nesterov),
    NUM("weight_decay", HI_OPEN, 0, 1, 0.0005, train.weight_decay),
    ENUM("schedule", schedule_names, GPP_SCHEDULE_COSINE, train.schedule),
    INT("step_epochs", 1, 1000, 1, train.step_epochs),
    NUM("gamma", LO_OPEN, 0, 1, 0.1, train.gamma),
};

static const field grow_fields[] = {
    BOOL("enabled", 0, grow.enabled),
    INT("max_modules", 0, 16, 4, grow.max_modules),
    NUM("min_gain", 0, 0, 1, 0.002, grow.min_gain),
    INT("epochs", 0, 1000, 1, grow.epochs),
    {"widths", F_WIDTHS, NULLABLE, 1, 4096, 0, NULL, NULL, OFF(grow.widths)},
};

static const field push_fields[] = {
    INT("epochs", 0, 1000, 1, push.epochs),
    NUM("lambda", 0, 0, 100, 1, push.lambda),
    NUM("lambda_decay", 0, 0, 1, 1, push.lambda_decay),
    NUM("alpha", 0, 0, 100, 0.02, push.alpha),
    NUM("beta", 0, 0, 100, 0.01, push.beta),
    NUM("gamma", 0, 0, 100, 0.1, push.gamma),
    ENUM("separation", separation_names, GPP_SEPARATION_DIAG, push.separation),
    INTN("eigen_k", 1, 4096, push.eigen_k),
    NUM("eigen_reg", LO_OPEN, 0, 100, 1, push.eigen_reg),
    NUM("keep_fraction", LO_OPEN, 0, 1, 0.5, push.keep_fraction),
    NUM("ramp_epochs", 0, 0, 100, 1, push.ramp_epochs),
    NUM("ema", HI_OPEN, 0, 1, 0.9, push.ema),
    NUM("eps", LO_OPEN, 0, 1, 1e-6, push.eps),
    INT("min_per_class", 2, 1024, 2, push.min_per_class),
    NUM("lr", LO_OPEN | NULLABLE, 0, 10, 0, push.lr),
};

static const field prune_fields[] = {
    ENUM("threshold", threshold_names, GPP_THRESHOLD_RATIO, prune.threshold),
    NUM("ratio", LO_OPEN | HI_OPEN, 0, 1, 0.3, prune.ratio),
    NUM("eta", LO_OPEN, 0, 10, 0.1, prune.eta),
    NUM("eta_step", 0, 0, 10, 0.1, prune.eta_step),
    NUM("max_layer_fraction", LO_OPEN, 0, 1, 0.5, prune.max_layer_fraction),
    INT("min_channels", 1, 4096, 1, prune.min_channels),
    NUM("max_accuracy_drop", 0, 0, 1, 0.01, prune.max_accuracy_drop),
    INT("samples_per_class", 1, 10000, 10, prune.samples_per_class),
    INT("finetune_epochs", 0, 1000, 1, prune.finetune_epochs),
    INT("final_finetune_epochs", 0, 1000, 9, prune.final_finetune_epochs),
    NUM("distill", 0, 0, 100, 0, prune.distill),
    NUM("distill_temperature", LO_OPEN, 0, 100, 4, prune.distill_temperature),
    BOOL("reconstruct", 0, prune.reconstruct),
    INT("reconstruct_samples", 16, 65536, 512, prune.reconstruct_samples),
    ENUM("criterion", criterion_names, GPP_CRITERION_GPP, prune.criterion),
    BOOL("compare_cut", 1, prune.compare_cut),
    NUM("lr", LO_OPEN | NULLABLE, 0, 10, 0, prune.lr),
    NUM("final_lr", LO_OPEN | NULLABLE, 0, 10, 0, prune.final_lr),
    INT("bn_recalibrate", 0, 65536, 1024, prune.bn_recalibrate),
};

static const field stop_fields[] = {
    NUM("max_accuracy_drop", 0, 0, 1, 0.005, stop.max_accuracy_drop),
    I64N("target_params", 1, MAX_SAFE_INT, stop.target_params),
    INT("recover_epochs", 0, 1000, 9, stop.recover_epochs),
};

static const field data_fields[] = {
    I64N("train_limit", 1, MAX_SAFE_INT, data.train_limit),
    I64N("test_limit", 1, MAX_SAFE_INT, data.test_limit),
    NUM("val_fraction", 0, 0, 0.9, 0.1, data.val_fraction),
    ENUM("val_from", val_from_names, GPP_VAL_FROM_AUTO, data.val_from),
    ENUM("augment", augment_names, GPP_AUGMENT_AUTO, data.augment),
    BOOL("normalize", 1, data.normalize),
};

static const fieldset train_set = SET(train_fields), grow_set = SET(grow_fields),
                      push_set = SET(push_fields), prune_set = SET(prune_fields),
                      stop_set = SET(stop_fields), data_set = SET(data_fields);

/* The top level, in the order written back. */
static const field top_fields[] = {
    SPECIAL("name"),
    SPECIAL("dataset"),
    SPECIAL("model"),
    ENUM("device", device_names, GPP_DEVICE_ANY, device),
    SPECIAL("labels"),
    INT("priority", -1000, 1000, 0, priority),
    INT("seed", 0, 2147483647, 1, seed),
    INT("max_restarts", 0, 100, 3, max_restarts),
    OBJ("train", train_set),
    OBJ("grow", grow_set),
    OBJ("push", push_set),
    OBJ("prune", prune_set),
    INT("iterations", 0, 100, 10, iterations),
    OBJ("stop", stop_set),
    OBJ("data", data_set),
};
static const fieldset top_set = SET(top_fields);

#define MAX_FIELDS 32   /* the largest table above, with room */

/* ---- defaults ---------------------------------------------------------------- */

static void *slot(gpp_jobspec *s, const field *f) { return (char *)s + f->off; }
static const void *cslot(const gpp_jobspec *s, const field *f) { return (const char *)s + f->off; }

static void set_defaults(gpp_jobspec *s, const fieldset *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        const field *f = &fs->f[i];
        switch (f->kind) {
        case F_INT: case F_ENUM: *(int *)slot(s, f) = (int)f->def; break;
        case F_I64: *(int64_t *)slot(s, f) = (int64_t)f->def; break;
        case F_NUM: *(double *)slot(s, f) = f->def; break;
        case F_BOOL: *(bool *)slot(s, f) = f->def != 0; break;
        case F_WIDTHS: memset(slot(s, f), 0, sizeof(int) * GPP_JOBSPEC_GROW_WIDTHS); break;
        case F_OBJECT: set_defaults(s, f->sub); break;
        default: break;
        }
    }
}

/* ---- reading plain fields ------------------------------------------------------ */

static void fmt_range(char *buf, size_t n, const field *f)
{
    char a[40], b[40];
    gpp__fmt_number(a, sizeof a, f->lo);
    gpp__fmt_number(b, sizeof b, f->hi);
    if (f->kind == F_NUM)
        snprintf(buf, n, "%s%s, %s%s", f->flags & LO_OPEN ? "(" : "[", a, b,
                 f->flags & HI_OPEN ? ")" : "]");
    else
        snprintf(buf, n, "%s..%s", a, b);
}

/* An integer in the field's range (also used for widths elements). */
static int read_int(const field *f, const cJSON *v, const char *p, double *out, gpp_error *err)
{
    char got[300], range[96];
    const char *nul = f->flags & NULLABLE ? "null or " : "";
    gpp__fmt_value(got, sizeof got, v);
    fmt_range(range, sizeof range, f);
    if (!cJSON_IsNumber(v))
        return gpp__fail(err, p, "%s must be %san integer in %s, got %s", p, nul, range, got);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return gpp__fail(err, p, "%s must be %san integer, got %s", p, nul, got);
    if (d < f->lo || d > f->hi)
        return gpp__fail(err, p, "%s must be %san integer in %s, got %s", p, nul, range, got);
    *out = d;
    return 0;
}

static int read_plain(gpp_jobspec *s, const field *f, const cJSON *v, const char *p,
                      gpp_error *err)
{
    char got[300], range[96];
    double d;
    int rc;

    gpp__fmt_value(got, sizeof got, v);
    if ((f->flags & NULLABLE) && cJSON_IsNull(v)) {
        set_defaults(s, &(fieldset){f, 1});
        return 0;
    }
    switch (f->kind) {
    case F_INT:
    case F_I64:
        if ((rc = read_int(f, v, p, &d, err)) != 0) return rc;
        if (f->kind == F_INT) *(int *)slot(s, f) = (int)d;
        else *(int64_t *)slot(s, f) = (int64_t)d;
        return 0;
    case F_NUM: {
        const char *nul = f->flags & NULLABLE ? "null or " : "";
        fmt_range(range, sizeof range, f);
        if (!cJSON_IsNumber(v))
            return gpp__fail(err, p, "%s must be %sa number in %s, got %s", p, nul, range, got);
        d = v->valuedouble;
        if (!isfinite(d) || (f->flags & LO_OPEN ? d <= f->lo : d < f->lo) ||
            (f->flags & HI_OPEN ? d >= f->hi : d > f->hi))
            return gpp__fail(err, p, "%s must be %sin %s, got %s", p, nul, range, got);
        *(double *)slot(s, f) = d;
        return 0;
    }
    case F_BOOL:
        if (!cJSON_IsBool(v)) return gpp__fail(err, p, "%s must be a boolean, got %s", p, got);
        *(bool *)slot(s, f) = cJSON_IsTrue(v);
        return 0;
    case F_ENUM: {
        char list[160] = "";
        size_t o = 0;
        for (size_t i = 0; f->names[i]; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s\"%s\"", i ? ", " : "", f->names[i]);
        if (!cJSON_IsString(v) || !v->valuestring)
            return gpp__fail(err, p, "%s must be a string, one of %s, got %s", p, list, got);
        for (int i = 0; f->names[i]; i++) {
            if (strcmp(v->valuestring, f->names[i]) == 0) {
                *(int *)slot(s, f) = i;
                return 0;
            }
        }
        return gpp__fail(err, p, "%s must be one of %s, got %s", p, list, got);
    }
    case F_WIDTHS: {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != GPP_JOBSPEC_GROW_WIDTHS)
            return gpp__fail(err, p, "%s must be null or an array of 6 integers in 1..4096, got %s%s",
                        p, cJSON_IsArray(v) ? "an array of length " : "",
                        cJSON_IsArray(v) ? "other than 6" : got);
        int w[GPP_JOBSPEC_GROW_WIDTHS];
        size_t i = 0;
        field elem = *f;
        elem.flags = 0;
        for (const cJSON *c = v->child; c; c = c->next, i++) {
            char ep[PATH_LEN];
            gpp__bufprintf(ep, sizeof ep, "%s[%zu]", p, i);
            if ((rc = read_int(&elem, c, ep, &d, err)) != 0) return rc;
            w[i] = (int)d;
        }
        memcpy(slot(s, f), w, sizeof w);
        return 0;
    }
    default:
        return gpp__fail(err, p, "%s: internal error", p);
    }
}

/* ---- the special fields ---------------------------------------------------------- */

/* A NUL-terminated copy of a cJSON string, or NULL when not a string. */
static const char *str_of(const cJSON *v)
{
    return cJSON_IsString(v) ? (v->valuestring ? v->valuestring : "") : NULL;
}

static int read_name(gpp_jobspec *s, const cJSON *v, const char *p, gpp_error *err)
{
    char got[300];
    const char *str = str_of(v);
    gpp__fmt_value(got, sizeof got, v);
    if (!str) return gpp__fail(err, p, "%s must be a string, got %s", p, got);
    size_t n = strlen(str);
    if (n < 1 || n > GPP_JOBSPEC_NAME_MAX)
        return gpp__fail(err, p, "%s must be 1..%d bytes, got %zu bytes (%s)", p,
                    GPP_JOBSPEC_NAME_MAX, n, got);
    if (!printable(str))
        return gpp__fail(err, p, "%s must be UTF-8 without control characters, got %s", p, got);
    memcpy(s->name, str, n + 1);
    return 0;
}

static int read_dataset(gpp_jobspec *s, const cJSON *v, const char *p, gpp_error *err)
{
    char got[300], fp[PATH_LEN];
    const char *str = str_of(v);
    gpp__fmt_value(got, sizeof got, v);
    if (str) {
        if (!matches(str, "a-z0-9", "a-z0-9._-", 1, GPP_JOBSPEC_DATASET_NAME_MAX))
            return gpp__fail(err, p, "%s must be a registered name matching [a-z0-9][a-z0-9._-]{0,63}, got %s",
                        p, got);
        s->dataset_kind = GPP_DATASET_NAME;
        snprintf(s->dataset_name, sizeof s->dataset_name, "%s", str);
        return 0;
    }
    if (!cJSON_IsObject(v))
        return gpp__fail(err, p, "%s must be a data set name (a string) or an object "
                    "{\"format\", \"path\"}, got %s", p, got);
    const cJSON *format = NULL, *path = NULL;
    for (const cJSON *c = v->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        const cJSON **sl = strcmp(k, "format") == 0 ? &format : strcmp(k, "path") == 0 ? &path : NULL;
        gpp__path_key(fp, sizeof fp, p, k);
        if (!sl) return gpp__fail(err, fp, "unknown field %s (a data set object takes \"format\" and \"path\")", fp);
        if (*sl) return gpp__fail(err, fp, "duplicate field %s", fp);
        *sl = c;
    }
    gpp__path_key(fp, sizeof fp, p, "format");
    if (!format) return gpp__fail(err, fp, "%s is required", fp);
    static const field ffield = ENUM("format", format_names, 0, dataset_format);
    int rc = read_plain(s, &ffield, format, fp, err);
    if (rc != 0) return rc;
    gpp__path_key(fp, sizeof fp, p, "path");
    if (!path) return gpp__fail(err, fp, "%s is required", fp);
    gpp__fmt_value(got, sizeof got, path);
    str = str_of(path);
    if (!str) return gpp__fail(err, fp, "%s must be a string, got %s", fp, got);
    size_t n = strlen(str);
    if (n < 1 || str[0] != '/')
        return gpp__fail(err, fp, "%s must be an absolute path, got %s", fp, got);
    if (n > GPP_JOBSPEC_PATH_MAX)
        return gpp__fail(err, fp, "%s must be at most %d bytes, got %zu bytes (%s)", fp,
                    GPP_JOBSPEC_PATH_MAX, n, got);
    if (!utf8_valid(str)) return gpp__fail(err, fp, "%s must be UTF-8, got %s", fp, got);
    s->dataset_kind = GPP_DATASET_FILES;
    memcpy(s->dataset_path, str, n + 1);
    return 0;
}

static int read_model(gpp_jobspec *s, const cJSON *v, const char *p, gpp_error *err)
{
    char got[300], fp[PATH_LEN];
    const char *str = str_of(v);
    gpp__fmt_value(got, sizeof got, v);
    if (str) {
        for (size_t i = 0; zoo_names[i]; i++) {
            if (strcmp(str, zoo_names[i]) == 0) {
                s->model_kind = GPP_MODEL_ZOO;
                snprintf(s->model_zoo, sizeof s->model_zoo, "%s", str);
                return 0;
            }
        }
        return gpp__fail(err, p, "%s must be one of \"lenet5\", \"lenet300-100\", \"vgg-small\", "
                    "\"vgg16-cifar\", \"inception-base\" (or an inline network or "
                    "{\"checkpoint\": ...}), got %s", p, got);
    }
    bool ckpt = false;
    if (cJSON_IsObject(v))
        for (const cJSON *c = v->child; c; c = c->next)
            if (c->string && strcmp(c->string, "checkpoint") == 0) ckpt = true;
    if (ckpt) {
        const cJSON *ref = NULL;
        for (const cJSON *c = v->child; c; c = c->next) {
            const char *k = c->string ? c->string : "";
            gpp__path_key(fp, sizeof fp, p, k);
            if (strcmp(k, "checkpoint") != 0)
                return gpp__fail(err, fp, "unknown field %s ({\"checkpoint\": ...} takes nothing else)", fp);
            if (ref) return gpp__fail(err, fp, "duplicate field %s", fp);
            ref = c;
        }
        gpp__path_key(fp, sizeof fp, p, "checkpoint");
        gpp__fmt_value(got, sizeof got, ref);
        str = str_of(ref);
        if (!str) return gpp__fail(err, fp, "%s must be a string, got %s", fp, got);
        if (!matches(str, "A-Za-z0-9_-", "A-Za-z0-9_-", 1, GPP_JOBSPEC_REF_MAX))
            return gpp__fail(err, fp, "%s must be a job id or a sha256 ([A-Za-z0-9_-]{1,64}), got %s",
                        fp, got);
        s->model_kind = GPP_MODEL_CHECKPOINT;
        snprintf(s->model_checkpoint, sizeof s->model_checkpoint, "%s", str);
        return 0;
    }
    if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
        return gpp__fail(err, p, "%s must be a zoo name, an array of layers or an object, got %s", p, got);
    gpp_error e;
    gpp_error_clear(&e);
    cJSON *net = gpp_netdesc_canonical(v, p, &e);
    if (!net) {
        if (err) *err = e;
        return strcmp(e.code, "invalid_argument") == 0 ? GPP_EINVAL : GPP_ENOMEM;
    }
    s->model_kind = GPP_MODEL_INLINE;
    s->model_net = net;
    return 0;
}

static int read_labels(gpp_jobspec *s, const cJSON *v, const char *p, gpp_error *err)
{
    char got[300], fp[PATH_LEN];
    gpp__fmt_value(got, sizeof got, v);
    if (!cJSON_IsObject(v)) return gpp__fail(err, p, "%s must be an object, got %s", p, got);
    int n = 0;
    for (const cJSON *c = v->child; c; c = c->next) n++;
    if (n > GPP_JOBSPEC_MAX_LABELS)
        return gpp__fail(err, p, "%s must have at most %d entries, got %d", p, GPP_JOBSPEC_MAX_LABELS, n);
    n = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        char kq[300];
        gpp__path_key(fp, sizeof fp, p, k);
        gpp__fmt_bytes(kq, sizeof kq, k);
        if (!matches(k, "a-z0-9_.-", "a-z0-9_.-", 1, GPP_JOBSPEC_LABEL_KEY_MAX))
            return gpp__fail(err, fp, "%s: label keys must match [a-z0-9_.-]{1,32}, got \"%s\"", fp, kq);
        for (int j = 0; j < n; j++)
            if (strcmp(s->labels[j].key, k) == 0) return gpp__fail(err, fp, "duplicate field %s", fp);
        const char *str = str_of(c);
        gpp__fmt_value(got, sizeof got, c);
        if (!str) return gpp__fail(err, fp, "%s must be a string, got %s", fp, got);
        size_t len = strlen(str);
        if (len < 1 || len > GPP_JOBSPEC_LABEL_VALUE_MAX)
            return gpp__fail(err, fp, "%s must be 1..%d bytes, got %zu bytes (%s)", fp,
                        GPP_JOBSPEC_LABEL_VALUE_MAX, len, got);
        if (!printable(str))
            return gpp__fail(err, fp, "%s must be printable UTF-8, got %s", fp, got);
        /* insertion sort by key */
        int j = n;
        while (j > 0 && strcmp(s->labels[j - 1].key, k) > 0) {
            s->labels[j] = s->labels[j - 1];
            j--;
        }
        snprintf(s->labels[j].key, sizeof s->labels[j].key, "%s", k);
        memcpy(s->labels[j].value, str, len + 1);
        n++;
    }
    s->n_labels = n;
    return 0;
}

/* ---- reading objects --------------------------------------------------------------- */

static int read_object(gpp_jobspec *s, const fieldset *fs, const cJSON *obj, const char *path,
                       gpp_error *err)
{
    const cJSON *val[MAX_FIELDS] = {0};
    char p[PATH_LEN];
    int rc;

    if (!cJSON_IsObject(obj)) {
        if (!*path) return gpp__fail(err, "", "a job spec must be a JSON object, got %s", gpp__json_type_name(obj));
        return gpp__fail(err, path, "%s must be an object, got %s", path, gpp__json_type_name(obj));
    }
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        size_t i = 0;
        while (i < fs->n && strcmp(k, fs->f[i].key) != 0) i++;
        gpp__path_key(p, sizeof p, path, k);
        if (i == fs->n) return gpp__fail(err, p, "unknown field %s", p);
        if (val[i]) return gpp__fail(err, p, "duplicate field %s", p);
        val[i] = c;
    }
    for (size_t i = 0; i < fs->n; i++) {
        const field *f = &fs->f[i];
        gpp__path_key(p, sizeof p, path, f->key);
        if (f->kind == F_SPECIAL) {
            if (strcmp(f->key, "name") == 0) rc = val[i] ? read_name(s, val[i], p, err) : 0;
            else if (strcmp(f->key, "labels") == 0) rc = val[i] ? read_labels(s, val[i], p, err) : 0;
            else if (!val[i]) rc = gpp__fail(err, p, "%s is required", p);
            else if (strcmp(f->key, "dataset") == 0) rc = read_dataset(s, val[i], p, err);
            else rc = read_model(s, val[i], p, err);
        } else if (!val[i]) {
            rc = 0;
        } else if (f->kind == F_OBJECT) {
            rc = read_object(s, f->sub, val[i], p, err);
        } else {
            rc = read_plain(s, f, val[i], p, err);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

int gpp_jobspec_from_cjson(const cJSON *obj, gpp_jobspec **out, gpp_error *err)
{
    gpp_jobspec *s = NULL;
    int rc;

    gpp_error_clear(err);
    if (out) *out = NULL;
    if (!out) return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "no output pointer");
    s = calloc(1, sizeof *s);
    if (!s) return gpp__oom(err);
    set_defaults(s, &top_set);
    rc = read_object(s, &top_set, obj, "", err);
    if (rc != 0) goto fail;
    if (!s->name[0]) {
        if (s->dataset_kind == GPP_DATASET_NAME && s->model_kind == GPP_MODEL_ZOO)
            snprintf(s->name, sizeof s->name, "%s-%s", s->model_zoo, s->dataset_name);
        else
            snprintf(s->name, sizeof s->name, "job");
    }
    *out = s;
    return 0;
fail:
    gpp_jobspec_free(s);
    return rc;
}

/* ---- the text: limits before parsing -------------------------------------------- */

/* gpp_json_scan: see gpp/jobspec.h. */
gpp_json_flaw gpp_json_scan(const char *t, size_t n, int max_depth, size_t *at)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        *at = i;  /* where a flaw found at this byte is */
        if (c == '\0')
            return GPP_JSON_NUL;
        if (in_str) {
            if (c == '\\' && i + 1 < n) {
                if (t[i + 1] == 'u' && i + 5 < n && memcmp(t + i + 2, "0000", 4) == 0)
                    return GPP_JSON_NUL_ESCAPE;
                i++;
            } else if (c == '"') {
                in_str = false;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return GPP_JSON_TOO_DEEP;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return GPP_JSON_OK;
}

/* The text's limits before parsing, as the job spec's errors. */
static int scan_text(const char *t, size_t n, gpp_error *err)
{
    size_t i = 0;
    switch (gpp_json_scan(t, n, GPP_JOBSPEC_MAX_DEPTH, &i)) {
    case GPP_JSON_NUL:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "malformed JSON: NUL byte at byte %zu", i);
    case GPP_JSON_NUL_ESCAPE:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "malformed JSON: \\u0000 in a string at byte %zu", i);
    case GPP_JSON_TOO_DEEP:
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "malformed JSON: nested deeper than %d at byte %zu",
                             GPP_JOBSPEC_MAX_DEPTH, i);
    case GPP_JSON_OK:
        break;
    }
    return 0;
}

int gpp_jobspec_parse(const char *json, size_t len, gpp_jobspec **out, gpp_error *err)
{
    char *buf = NULL;
    cJSON *root = NULL;
    int rc;

    gpp_error_clear(err);
    if (out) *out = NULL;
    if (!out || (!json && len))
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "no text or no output pointer");
    if (len > GPP_JOBSPEC_MAX_BYTES)
        return gpp_error_set(err, GPP_ETOOBIG, "too_large", "",
                             "job spec is %zu bytes, over the limit of %d", len,
                             GPP_JOBSPEC_MAX_BYTES);
    if ((rc = scan_text(json, len, err)) != 0) return rc;
    size_t start = 0;
    while (start < len && strchr(" \t\r\n", json[start])) start++;
    if (start == len)
        return gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                             "malformed JSON: empty document at byte %zu", len);

    /* cJSON gets a NUL-terminated copy so nothing can read past `len`. */
    buf = malloc(len + 1);
    if (!buf) return gpp__oom(err);
    memcpy(buf, json, len);
    buf[len] = '\0';
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "", "malformed JSON at byte %zu", at);
        goto done;
    }
    while (end && *end && strchr(" \t\r\n", *end)) end++;
    if (end && end < buf + len) {
        rc = gpp_error_set(err, GPP_EFORMAT, "malformed", "",
                           "malformed JSON: unexpected text after the value at byte %zu",
                           (size_t)(end - buf));
        goto done;
    }
    rc = gpp_jobspec_from_cjson(root, out, err);
done:
    cJSON_Delete(root);
    free(buf);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------- */

static bool add(cJSON *obj, const char *key, cJSON *item)
{
    if (!item) return false;
    if (!cJSON_AddItemToObject(obj, key, item)) { cJSON_Delete(item); return false; }
    return true;
}

static cJSON *write_dataset(const gpp_jobspec *s)
{
    if (s->dataset_kind == GPP_DATASET_NAME) return cJSON_CreateString(s->dataset_name);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int fmt = (int)s->dataset_format;
    if (fmt < 0 || fmt > 1) fmt = 0;
    if (!add(o, "format", cJSON_CreateString(format_names[fmt])) ||
        !add(o, "path", cJSON_CreateString(s->dataset_path))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *write_model(const gpp_jobspec *s)
{
    switch (s->model_kind) {
    case GPP_MODEL_ZOO:
        return cJSON_CreateString(s->model_zoo);
    case GPP_MODEL_INLINE:
        return s->model_net ? cJSON_Duplicate(s->model_net, 1) : cJSON_CreateNull();
    case GPP_MODEL_CHECKPOINT: {
        cJSON *o = cJSON_CreateObject();
        if (o && !add(o, "checkpoint", cJSON_CreateString(s->model_checkpoint))) {
            cJSON_Delete(o);
            return NULL;
        }
        return o;
    }
    }
    return NULL;
}

static cJSON *write_labels(const gpp_jobspec *s)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < s->n_labels && i < GPP_JOBSPEC_MAX_LABELS; i++) {
        if (!add(o, s->labels[i].key, cJSON_CreateString(s->labels[i].value))) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

static cJSON *write_object(const gpp_jobspec *s, const fieldset *fs)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (size_t i = 0; i < fs->n; i++) {
        const field *f = &fs->f[i];
        cJSON *item = NULL;
        switch (f->kind) {
        case F_INT: {
            int v = *(const int *)cslot(s, f);
            item = (f->flags & NULLABLE) && v == 0 ? cJSON_CreateNull() : cJSON_CreateNumber(v);
            break;
        }
        case F_I64: {
            int64_t v = *(const int64_t *)cslot(s, f);
            item = (f->flags & NULLABLE) && v == 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)v);
            break;
        }
        case F_NUM: {
            double v = *(const double *)cslot(s, f);
            item = (f->flags & NULLABLE) && v == 0 ? cJSON_CreateNull() : cJSON_CreateNumber(v);
            break;
        }
        case F_BOOL:
            item = cJSON_CreateBool(*(const bool *)cslot(s, f));
            break;
        case F_ENUM: {
            int v = *(const int *)cslot(s, f), n = 0;
            while (f->names[n]) n++;
            item = cJSON_CreateString(f->names[v >= 0 && v < n ? v : 0]);
            break;
        }
        case F_WIDTHS: {
            const int *w = cslot(s, f);
            item = w[0] == 0 ? cJSON_CreateNull() : cJSON_CreateIntArray(w, GPP_JOBSPEC_GROW_WIDTHS);
            break;
        }
        case F_OBJECT:
            item = write_object(s, f->sub);
            break;
        case F_SPECIAL:
            if (strcmp(f->key, "name") == 0) item = cJSON_CreateString(s->name);
            else if (strcmp(f->key, "dataset") == 0) item = write_dataset(s);
            else if (strcmp(f->key, "model") == 0) item = write_model(s);
            else item = write_labels(s);
            break;
        default:
            break;
        }
        if (!add(o, f->key, item)) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

cJSON *gpp_jobspec_to_cjson(const gpp_jobspec *spec)
{
    if (!spec) return NULL;
    return write_object(spec, &top_set);
}

/* A growable buffer for the printer. */
typedef struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
} outbuf;

static void put(outbuf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) { b->failed = true; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(outbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_string(outbuf *b, const char *s)
{
    put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
        char esc[8];
        switch (*c) {
        case '"': puts_(b, "\\\""); break;
        case '\\': puts_(b, "\\\\"); break;
        case '\b': puts_(b, "\\b"); break;
        case '\f': puts_(b, "\\f"); break;
        case '\n': puts_(b, "\\n"); break;
        case '\r': puts_(b, "\\r"); break;
        case '\t': puts_(b, "\\t"); break;
        default:
            if (*c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *c);
                puts_(b, esc);
            } else {
                put(b, (const char *)c, 1);
            }
        }
    }
    put(b, "\"", 1);
}

static void put_value(outbuf *b, const cJSON *v)
{
    char num[64];
    if (cJSON_IsNull(v) || !v) {
        puts_(b, "null");
    } else if (cJSON_IsFalse(v)) {
        puts_(b, "false");
    } else if (cJSON_IsTrue(v)) {
        puts_(b, "true");
    } else if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble)) {
            puts_(b, "null");
        } else {
            gpp__fmt_number(num, sizeof num, v->valuedouble);
            puts_(b, num);
        }
    } else if (cJSON_IsString(v)) {
        put_string(b, v->valuestring);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        put(b, obj ? "{" : "[", 1);
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) put(b, ",", 1);
            if (obj) {
                put_string(b, c->string);
                put(b, ":", 1);
            }
            put_value(b, c);
        }
        put(b, obj ? "}" : "]", 1);
    } else {
        puts_(b, "null");
    }
}

char *gpp_jobspec_to_json(const gpp_jobspec *spec)
{
    cJSON *o = gpp_jobspec_to_cjson(spec);
    if (!o) return NULL;
    outbuf b = {0};
    put_value(&b, o);
    cJSON_Delete(o);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

void gpp_jobspec_free(gpp_jobspec *spec)
{
    if (!spec) return;
    cJSON_Delete(spec->model_net);
    free(spec);
}

int gpp_jobspec_stage_count(const gpp_jobspec *spec)
{
    if (!spec) return 0;
    return 1 +
           (spec->grow.enabled ? spec->grow.max_modules : 0) + 2 * spec->iterations +
           gpp_jobspec_has_finetune(spec);
}

int gpp_jobspec_has_finetune(const gpp_jobspec *spec)
{
    return spec && spec->iterations > 0 && spec->prune.final_finetune_epochs > 0;
}

int gpp_jobspec_val_from_test(const gpp_jobspec *spec)
{
    return spec->data.val_from == GPP_VAL_FROM_TEST ||
           (spec->data.val_from == GPP_VAL_FROM_AUTO && spec->model_kind == GPP_MODEL_CHECKPOINT);
}
