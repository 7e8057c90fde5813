/* The network description validator and canonicaliser (see gpp/netdesc.h). */
#include "gpp/netdesc.h"
#include "jsonmsg.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    LT_CONV, LT_BN, LT_RELU, LT_MAXPOOL, LT_AVGPOOL, LT_GAP, LT_FC, LT_CONCAT,
    LT_FLATTEN, LT_DROPOUT, LT_SCE, LT_COUNT
};

static const char *const layer_types[LT_COUNT] = {
    "conv", "bn", "relu", "maxpool", "avgpool", "global-avgpool", "fc",
    "concat", "flatten", "dropout", "softmax-cross-entropy",
};

/* Every key a layer may carry; which ones a type takes is in type_keys. */
enum { K_TYPE, K_NAME, K_INPUTS, K_OUT, K_K, K_STRIDE, K_PAD, K_BIAS, K_EPS,
       K_MOMENTUM, K_P, K_COUNT };

static const char *const layer_keys[K_COUNT] = {
    "type", "name", "inputs", "out", "k", "stride", "pad", "bias", "eps",
    "momentum", "p",
};

#define BIT(k) (1u << (k))
#define COMMON_KEYS (BIT(K_TYPE) | BIT(K_NAME) | BIT(K_INPUTS))

static const unsigned type_keys[LT_COUNT] = {
    [LT_CONV] = BIT(K_OUT) | BIT(K_K) | BIT(K_STRIDE) | BIT(K_PAD) | BIT(K_BIAS),
    [LT_BN] = BIT(K_EPS) | BIT(K_MOMENTUM),
    [LT_MAXPOOL] = BIT(K_K) | BIT(K_STRIDE) | BIT(K_PAD),
    [LT_AVGPOOL] = BIT(K_K) | BIT(K_STRIDE) | BIT(K_PAD),
    [LT_FC] = BIT(K_OUT) | BIT(K_BIAS),
    [LT_DROPOUT] = BIT(K_P),
};

#define MAX_CONCAT_INPUTS 16
#define PATH_MAX_LEN 192

/* ---- small helpers ------------------------------------------------------ */

/* An integer in lo..hi; 0 with *out set, or GPP_EINVAL. */
static int get_int(const cJSON *v, const char *path, long lo, long hi, long *out,
                   gpp_error *err)
{
    char got[300];
    gpp__fmt_value(got, sizeof got, v);
    if (!cJSON_IsNumber(v))
        return gpp__fail(err, path, "%s must be an integer in %ld..%ld, got %s", path, lo, hi, got);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return gpp__fail(err, path, "%s must be an integer, got %s", path, got);
    if (d < (double)lo || d > (double)hi)
        return gpp__fail(err, path, "%s must be an integer in %ld..%ld, got %s", path, lo, hi, got);
    *out = (long)d;
    return 0;
}

/* A number in lo..hi, each end open or closed. */
static int get_num(const cJSON *v, const char *path, double lo, bool lo_open,
                   double hi, bool hi_open, double *out, gpp_error *err)
{
    char got[300], a[32], b[32];
    gpp__fmt_value(got, sizeof got, v);
    gpp__fmt_number(a, sizeof a, lo);
    gpp__fmt_number(b, sizeof b, hi);
    const char *l = lo_open ? "(" : "[", *r = hi_open ? ")" : "]";
    if (!cJSON_IsNumber(v))
        return gpp__fail(err, path, "%s must be a number in %s%s, %s%s, got %s", path, l, a, b, r, got);
    double d = v->valuedouble;
    if (!isfinite(d) || (lo_open ? d <= lo : d < lo) || (hi_open ? d >= hi : d > hi))
        return gpp__fail(err, path, "%s must be in %s%s, %s%s, got %s", path, l, a, b, r, got);
    *out = d;
    return 0;
}

static bool valid_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
        if (n >= GPP_NET_NAME_MAX) return false;
    }
    return n >= 1;
}

/* ---- canonicalisation --------------------------------------------------- */

static int add_num(cJSON *obj, const char *key, double v)
{
    return cJSON_AddItemToObject(obj, key, cJSON_CreateNumber(v)) ? 0 : -1;
}

/* Validate layer `i` (at `lp`) of `layers` and append its canonical form to
 * `out`; names[0..i-1] hold the earlier layers' names. */
static int layer_build(const cJSON *layer, size_t i, const char *lp,
                       char (*names)[GPP_NET_NAME_MAX + 1], cJSON *out, gpp_error *err)
{
    char p[PATH_MAX_LEN], got[300];
    const cJSON *val[K_COUNT] = {0};

    if (!cJSON_IsObject(layer))
        return gpp__fail(err, lp, "%s must be an object (a layer), got %s", lp, gpp__json_type_name(layer));
    for (const cJSON *c = layer->child; c; c = c->next) {
        int k = 0;
        while (k < K_COUNT && strcmp(c->string ? c->string : "", layer_keys[k]) != 0) k++;
        gpp__path_key(p, sizeof p, lp, c->string);
        if (k == K_COUNT) return gpp__fail(err, p, "unknown field %s", p);
        if (val[k]) return gpp__fail(err, p, "duplicate field %s", p);
        val[k] = c;
    }

    gpp__path_key(p, sizeof p, lp, "type");
    if (!val[K_TYPE]) return gpp__fail(err, p, "%s is required", p);
    if (!cJSON_IsString(val[K_TYPE]) || !val[K_TYPE]->valuestring)
        return gpp__fail(err, p, "%s must be a string, got %s", p, gpp__json_type_name(val[K_TYPE]));
    int t = 0;
    while (t < LT_COUNT && strcmp(val[K_TYPE]->valuestring, layer_types[t]) != 0) t++;
    if (t == LT_COUNT) {
        gpp__fmt_value(got, sizeof got, val[K_TYPE]);
        return gpp__fail(err, p, "%s must be one of conv, bn, relu, maxpool, avgpool, "
                    "global-avgpool, fc, concat, flatten, dropout, "
                    "softmax-cross-entropy, got %s", p, got);
    }
    for (int k = 0; k < K_COUNT; k++) {
        if (val[k] && !((COMMON_KEYS | type_keys[t]) & BIT(k))) {
            gpp__path_key(p, sizeof p, lp, layer_keys[k]);
            return gpp__fail(err, p, "unknown field %s: %s layers take no \"%s\"", p,
                        layer_types[t], layer_keys[k]);
        }
    }

    /* name */
    char *name = names[i];
    gpp__path_key(p, sizeof p, lp, "name");
    if (val[K_NAME]) {
        const cJSON *v = val[K_NAME];
        gpp__fmt_value(got, sizeof got, v);
        if (!cJSON_IsString(v) || !v->valuestring)
            return gpp__fail(err, p, "%s must be a string, got %s", p, gpp__json_type_name(v));
        if (!valid_name(v->valuestring))
            return gpp__fail(err, p, "%s must match [A-Za-z0-9_.-]{1,64}, got %s", p, got);
        if (strcmp(v->valuestring, "input") == 0)
            return gpp__fail(err, p, "%s: \"input\" is reserved for the data", p);
        snprintf(name, GPP_NET_NAME_MAX + 1, "%s", v->valuestring);
    } else {
        snprintf(name, GPP_NET_NAME_MAX + 1, "%s%zu", layer_types[t], i);
    }
    for (size_t j = 0; j < i; j++)
        if (strcmp(names[j], name) == 0)
            return gpp__fail(err, p, "%s: name \"%s\" is already used by layer %zu", p, name, j);

    cJSON *cl = cJSON_CreateObject();
    if (!cl || !cJSON_AddItemToArray(out, cl)) { cJSON_Delete(cl); return gpp__oom(err); }
    if (!cJSON_AddStringToObject(cl, "name", name) ||
        !cJSON_AddStringToObject(cl, "type", layer_types[t]))
        return gpp__oom(err);

    /* inputs */
    cJSON *ins = cJSON_AddArrayToObject(cl, "inputs");
    if (!ins) return gpp__oom(err);
    gpp__path_key(p, sizeof p, lp, "inputs");
    size_t lo = t == LT_CONCAT ? 2 : 1, hi = t == LT_CONCAT ? MAX_CONCAT_INPUTS : 1;
    if (val[K_INPUTS]) {
        const cJSON *v = val[K_INPUTS];
        if (!cJSON_IsArray(v))
            return gpp__fail(err, p, "%s must be an array of layer names, got %s", p, gpp__json_type_name(v));
        size_t n = 0;
        for (const cJSON *c = v->child; c; c = c->next) n++;
        if (n < lo || n > hi) {
            if (t == LT_CONCAT)
                return gpp__fail(err, p, "%s: concat takes 2..16 inputs, got %zu", p, n);
            return gpp__fail(err, p, "%s: %s takes exactly 1 input (only concat takes more), got %zu",
                        p, layer_types[t], n);
        }
        n = 0;
        for (const cJSON *c = v->child; c; c = c->next, n++) {
            char ip[PATH_MAX_LEN];
            gpp__path_index(ip, sizeof ip, p, n);
            if (!cJSON_IsString(c) || !c->valuestring)
                return gpp__fail(err, ip, "%s must be a layer name (a string), got %s", ip, gpp__json_type_name(c));
            bool found = strcmp(c->valuestring, "input") == 0;
            for (size_t j = 0; !found && j < i; j++) found = strcmp(names[j], c->valuestring) == 0;
            if (!found) {
                gpp__fmt_value(got, sizeof got, c);
                return gpp__fail(err, ip, "%s must name an earlier layer or \"input\", got %s", ip, got);
            }
            cJSON *s = cJSON_CreateString(c->valuestring);
            if (!s || !cJSON_AddItemToArray(ins, s)) { cJSON_Delete(s); return gpp__oom(err); }
        }
    } else {
        if (t == LT_CONCAT)
            return gpp__fail(err, p, "%s is required for concat (2..16 layer names)", p);
        cJSON *s = cJSON_CreateString(i == 0 ? "input" : names[i - 1]);
        if (!s || !cJSON_AddItemToArray(ins, s)) { cJSON_Delete(s); return gpp__oom(err); }
    }

    /* per-type fields, in canonical order */
    long iv;
    double dv;
    int rc;
#define REQ_INT(key, lo_, hi_)                                                  \
    do {                                                                        \
        gpp__path_key(p, sizeof p, lp, layer_keys[key]);                             \
        if (!val[key]) return gpp__fail(err, p, "%s is required for %s layers", p, layer_types[t]); \
        if ((rc = get_int(val[key], p, lo_, hi_, &iv, err)) != 0) return rc;    \
        if (add_num(cl, layer_keys[key], (double)iv) != 0) return gpp__oom(err);     \
    } while (0)
#define OPT_INT(key, lo_, hi_, def)                                             \
    do {                                                                        \
        gpp__path_key(p, sizeof p, lp, layer_keys[key]);                             \
        iv = (def);                                                             \
        if (val[key] && (rc = get_int(val[key], p, lo_, hi_, &iv, err)) != 0) return rc; \
        if (add_num(cl, layer_keys[key], (double)iv) != 0) return gpp__oom(err);     \
    } while (0)
#define OPT_NUM(key, lo_, lopen, hi_, hopen, def)                               \
    do {                                                                        \
        gpp__path_key(p, sizeof p, lp, layer_keys[key]);                             \
        dv = (def);                                                             \
        if (val[key] && (rc = get_num(val[key], p, lo_, lopen, hi_, hopen, &dv, err)) != 0) return rc; \
        if (add_num(cl, layer_keys[key], dv) != 0) return gpp__oom(err);             \
    } while (0)
#define OPT_BOOL(key, def)                                                      \
    do {                                                                        \
        gpp__path_key(p, sizeof p, lp, layer_keys[key]);                             \
        bool bv = (def);                                                        \
        if (val[key]) {                                                         \
            if (!cJSON_IsBool(val[key])) {                                      \
                gpp__fmt_value(got, sizeof got, val[key]);                           \
                return gpp__fail(err, p, "%s must be a boolean, got %s", p, got);    \
            }                                                                   \
            bv = cJSON_IsTrue(val[key]);                                        \
        }                                                                       \
        if (!cJSON_AddBoolToObject(cl, layer_keys[key], bv)) return gpp__oom(err);   \
    } while (0)

    switch (t) {
    case LT_CONV:
        REQ_INT(K_OUT, 1, 65536);
        REQ_INT(K_K, 1, 31);
        OPT_INT(K_STRIDE, 1, 16, 1);
        OPT_INT(K_PAD, 0, 15, 0);
        OPT_BOOL(K_BIAS, true);
        break;
    case LT_FC:
        REQ_INT(K_OUT, 1, 1048576);
        OPT_BOOL(K_BIAS, true);
        break;
    case LT_MAXPOOL:
    case LT_AVGPOOL: {
        REQ_INT(K_K, 1, 31);
        long k = iv;
        OPT_INT(K_STRIDE, 1, 31, k);
        OPT_INT(K_PAD, 0, 15, 0);
        break;
    }
    case LT_BN:
        OPT_NUM(K_EPS, 0.0, true, 1.0, true, 1e-5);
        OPT_NUM(K_MOMENTUM, 0.0, true, 1.0, false, 0.1);
        break;
    case LT_DROPOUT:
        OPT_NUM(K_P, 0.0, false, 1.0, true, 0.5);
        break;
    default:
        break;
    }
#undef REQ_INT
#undef OPT_INT
#undef OPT_NUM
#undef OPT_BOOL
    return 0;
}

static int net_build(const cJSON *desc, const char *path, cJSON **out, gpp_error *err)
{
    char p[PATH_MAX_LEN], lp[PATH_MAX_LEN];
    const cJSON *layers = NULL, *input = NULL, *classes = NULL;
    char (*names)[GPP_NET_NAME_MAX + 1] = NULL;
    cJSON *canon = NULL, *arr;
    int rc = 0;
    const char *base = path ? path : "";

    *out = NULL;
    if (cJSON_IsArray(desc)) {
        layers = desc;
        snprintf(lp, sizeof lp, "%s", base);
    } else if (cJSON_IsObject(desc)) {
        for (const cJSON *c = desc->child; c; c = c->next) {
            const char *k = c->string ? c->string : "";
            const cJSON **slot = strcmp(k, "layers") == 0 ? &layers
                               : strcmp(k, "input") == 0 ? &input
                               : strcmp(k, "classes") == 0 ? &classes : NULL;
            gpp__path_key(p, sizeof p, base, k);
            if (!slot) return gpp__fail(err, p, "unknown field %s (a network takes \"layers\", "
                                   "\"input\", \"classes\")", p);
            if (*slot) return gpp__fail(err, p, "duplicate field %s", p);
            *slot = c;
        }
        gpp__path_key(lp, sizeof lp, base, "layers");
        if (!layers) return gpp__fail(err, lp, "%s is required", lp);
        if (!cJSON_IsArray(layers))
            return gpp__fail(err, lp, "%s must be an array of layers, got %s", lp, gpp__json_type_name(layers));
    } else {
        return gpp__fail(err, base, "%s must be an array of layers or an object with \"layers\", got %s",
                    *base ? base : "the network", gpp__json_type_name(desc));
    }

    canon = cJSON_CreateObject();
    if (!canon) return gpp__oom(err);

    if (input) {
        gpp__path_key(p, sizeof p, base, "input");
        if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) != 3) {
            rc = gpp__fail(err, p, "%s must be [C, H, W], three integers in 1..65536, got %s", p,
                      cJSON_IsArray(input) ? "an array of another length" : gpp__json_type_name(input));
            goto done;
        }
        cJSON *a = cJSON_AddArrayToObject(canon, "input");
        if (!a) { rc = gpp__oom(err); goto done; }
        size_t i = 0;
        for (const cJSON *c = input->child; c; c = c->next, i++) {
            char ip[PATH_MAX_LEN];
            long v;
            gpp__path_index(ip, sizeof ip, p, i);
            if ((rc = get_int(c, ip, 1, 65536, &v, err)) != 0) goto done;
            cJSON *n = cJSON_CreateNumber((double)v);
            if (!n || !cJSON_AddItemToArray(a, n)) { cJSON_Delete(n); rc = gpp__oom(err); goto done; }
        }
    }
    if (classes) {
        long v;
        gpp__path_key(p, sizeof p, base, "classes");
        if ((rc = get_int(classes, p, 2, 100000, &v, err)) != 0) goto done;
        if (add_num(canon, "classes", (double)v) != 0) { rc = gpp__oom(err); goto done; }
    }

    size_t n = 0;
    for (const cJSON *c = layers->child; c && n <= GPP_NET_MAX_LAYERS; c = c->next) n++;
    if (n == 0 || n > GPP_NET_MAX_LAYERS) {
        rc = gpp__fail(err, lp, "%s must hold 1..%d layers, got %s%zu", lp, GPP_NET_MAX_LAYERS,
                  n > GPP_NET_MAX_LAYERS ? "more than " : "", n > GPP_NET_MAX_LAYERS ? (size_t)GPP_NET_MAX_LAYERS : n);
        goto done;
    }
    names = calloc(n, sizeof *names);
    arr = cJSON_AddArrayToObject(canon, "layers");
    if (!names || !arr) { rc = gpp__oom(err); goto done; }
    size_t i = 0;
    for (const cJSON *c = layers->child; c; c = c->next, i++) {
        char one[PATH_MAX_LEN];
        gpp__path_index(one, sizeof one, lp, i);
        if ((rc = layer_build(c, i, one, names, arr, err)) != 0) goto done;
    }
done:
    free(names);
    if (rc != 0) { cJSON_Delete(canon); return rc; }
    *out = canon;
    return 0;
}

int gpp_netdesc_validate(const cJSON *desc, const char *path, gpp_error *err)
{
    cJSON *c = NULL;
    int rc = net_build(desc, path, &c, err);
    cJSON_Delete(c);
    return rc;
}

cJSON *gpp_netdesc_canonical(const cJSON *desc, const char *path, gpp_error *err)
{
    cJSON *c = NULL;
    if (net_build(desc, path, &c, err) != 0) return NULL;
    return c;
}
