/* A network's whole state <-> .gppm (gpp/stages.h): description, every
 * parameter and running statistic, optionally the momentum buffers, the SGD
 * step count and the dropout RNG, so a stage can stop after any step and
 * carry on bit for bit. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/ckpt.h"
#include "stages_internal.h"

static const char *const kind_names[GPP_STAGE_KIND_COUNT] = {
    "train", "grow", "push", "prune", "l1", "random", "scratch", "finetune",
};

/* gpp_stage_kind_name: see gpp/stages.h. */
const char *gpp_stage_kind_name(gpp_stage_kind kind)
{
    return (int)kind >= 0 && kind < GPP_STAGE_KIND_COUNT ? kind_names[kind] : "?";
}

/* gpp_stage_kind_parse: see gpp/stages.h. */
int gpp_stage_kind_parse(const char *name, gpp_stage_kind *kind)
{
    for (int i = 0; i < GPP_STAGE_KIND_COUNT; i++)
        if (name && strcmp(name, kind_names[i]) == 0) {
            *kind = (gpp_stage_kind)i;
            return 0;
        }
    return GPP_EINVAL;
}

/* gpp__hex_array: see stages_internal.h. */
cJSON *gpp__hex_array(const uint64_t *w, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        char buf[17];
        snprintf(buf, sizeof buf, "%016" PRIx64, w[i]);
        cJSON *s = cJSON_CreateString(buf);
        if (!s || !cJSON_AddItemToArray(a, s)) {
            cJSON_Delete(s);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* gpp__hex_read: see stages_internal.h. */
int gpp__hex_read(const cJSON *arr, uint64_t *w, int n)
{
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n) return GPP_EFORMAT;
    int i = 0;
    for (const cJSON *s = arr->child; s; s = s->next, i++) {
        if (!cJSON_IsString(s) || strlen(s->valuestring) != 16) return GPP_EFORMAT;
        uint64_t v = 0;
        for (const char *p = s->valuestring; *p; p++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
            if (d < 0) return GPP_EFORMAT;
            v = v << 4 | (uint64_t)d;
        }
        w[i] = v;
    }
    return 0;
}

static int oom(gpp_error *err)
{
    return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
}

/* Copy `src` (an object or NULL) into a new object. */
static cJSON *object_copy(const cJSON *src)
{
    return cJSON_IsObject(src) ? cJSON_Duplicate(src, 1) : cJSON_CreateObject();
}

/* Set key in obj to item, replacing an old one; 0 or -1 (item freed). */
static int set_item(cJSON *obj, const char *key, cJSON *item)
{
    if (!item) return -1;
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item) ? 0 : -1;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

/* gpp_net_save_ex: see gpp/stages.h. */
int gpp_net_save_ex(nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                    int with_optim, const gpp_extra_tensor *extra, int n_extra,
                    gpp_error *err)
{
    int rc = 0;
    char *text = NULL;
    gpp_ckpt_writer *w = NULL;
    cJSON *doc = cJSON_CreateObject();
    cJSON *st = object_copy(state);
    if (!doc || !st) {
        cJSON_Delete(st);
        rc = oom(err);
        goto done;
    }
    if (!cJSON_AddStringToObject(doc, "format", "gppm") ||
        set_item(doc, "network", nn_net_to_json(net)) != 0 ||
        set_item(doc, "meta", object_copy(meta)) != 0 ||
        set_item(doc, "state", st) != 0) {
        rc = oom(err);
        goto done;
    }
    if (set_item(st, "sgd_steps", cJSON_CreateNumber((double)nn_net_sgd_steps(net))) != 0 ||
        set_item(st, "net_rng", gpp__hex_array(nn_net_rng(net)->s, 4)) != 0) {
        rc = oom(err);
        goto done;
    }
    text = cJSON_PrintUnformatted(doc);
    if (!text || !(w = gpp_ckpt_writer_new(text))) {
        rc = oom(err);
        goto done;
    }
    int nt = nn_net_num_tensors(net);
    for (int pass = 0; pass < (with_optim ? 2 : 1) && rc == 0; pass++) {
        for (int i = 0; i < nt && rc == 0; i++) {
            nn_tensor t;
            if ((rc = nn_net_tensor(net, i, &t)) != 0) {
                gpp_error_set(err, rc, "internal", "", "tensor %d of %d is missing", i, nt);
                break;
            }
            int64_t dims[4];
            for (int d = 0; d < t.ndim; d++) dims[d] = t.shape[d];
            if (pass == 0) {
                rc = gpp_ckpt_writer_add(w, t.name, t.ndim, dims, t.data, err);
            } else if (t.momentum) {
                char name[NN_TENSOR_NAME_MAX + 8];
                snprintf(name, sizeof name, "%s%s", GPP_CKPT_OPTIM_PREFIX, t.name);
                rc = gpp_ckpt_writer_add(w, name, t.ndim, dims, t.momentum, err);
            }
        }
    }
    for (int i = 0; i < n_extra && rc == 0; i++) {
        int64_t d = extra[i].count;
        rc = gpp_ckpt_writer_add(w, extra[i].name, 1, &d, extra[i].data, err);
    }
    if (rc == 0) rc = gpp_ckpt_writer_write_file(w, path, err);
done:
    gpp_ckpt_writer_free(w);
    free(text);
    cJSON_Delete(doc);
    return rc;
}

/* gpp_net_save: see gpp/stages.h. */
int gpp_net_save(nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                 int with_optim, gpp_error *err)
{
    return gpp_net_save_ex(net, path, meta, state, with_optim, NULL, 0, err);
}

static int bad(gpp_error *err, const char *path, const char *what, const char *name)
{
    return gpp_error_set(err, GPP_EFORMAT, "malformed", "checkpoint", "%s: %s \"%s\"", path,
                         what, name);
}

/* gpp_net_load_ex: see gpp/stages.h. */
int gpp_net_load_ex(nn_ctx *ctx, const char *path, nn_net **out, cJSON **doc_out,
                    const gpp_extra_tensor *extra, int n_extra, gpp_error *err)
{
    *out = NULL;
    if (doc_out) *doc_out = NULL;
    gpp_ckpt *ck = NULL;
    cJSON *doc = NULL;
    nn_net *net = NULL;
    int rc = gpp_ckpt_read_file(path, &ck, err);
    if (rc != 0) return rc;
    doc = cJSON_Parse(gpp_ckpt_json(ck));
    if (!doc) {
        rc = oom(err);
        goto fail;
    }
    const cJSON *network = cJSON_GetObjectItemCaseSensitive(doc, "network");
    net = nn_net_new(ctx, network, NULL, 0, 1, err);
    if (!net) {
        rc = err && err->message[0] ? GPP_EFORMAT : GPP_ENOMEM;
        if (err) {
            char msg[sizeof err->message];
            snprintf(msg, sizeof msg, "%s", err->message);
            gpp_error_set(err, rc, rc == GPP_ENOMEM ? "out_of_memory" : "malformed",
                          "checkpoint", "%s: %s", path, msg);
        }
        goto fail;
    }
    int nt = nn_net_num_tensors(net);
    for (int i = 0; i < nt; i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        const gpp_tensor_view *v = gpp_ckpt_find(ck, t.name);
        if (!v) {
            rc = bad(err, path, "has no tensor", t.name);
            goto fail;
        }
        if (v->count != t.len) {
            rc = bad(err, path, "has a tensor of the wrong size:", t.name);
            goto fail;
        }
        memcpy(t.data, v->data, t.len * sizeof(float));
        if (t.momentum) {
            char name[NN_TENSOR_NAME_MAX + 8];
            snprintf(name, sizeof name, "%s%s", GPP_CKPT_OPTIM_PREFIX, t.name);
            const gpp_tensor_view *m = gpp_ckpt_find(ck, name);
            if (m && m->count != t.len) {
                rc = bad(err, path, "has a momentum buffer of the wrong size:", t.name);
                goto fail;
            }
            if (m) memcpy(t.momentum, m->data, t.len * sizeof(float));
            else memset(t.momentum, 0, t.len * sizeof(float));
        }
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "state");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(st, "sgd_steps");
    nn_net_set_sgd_steps(net, gpp_ckpt_has_optim(ck) && cJSON_IsNumber(steps)
                                  ? (long long)steps->valuedouble : 0);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(st, "net_rng");
    if (r) {
        uint64_t s[4];
        if (gpp__hex_read(r, s, 4) != 0 || (s[0] | s[1] | s[2] | s[3]) == 0) {
            rc = bad(err, path, "has a bad state value", "net_rng");
            goto fail;
        }
        memcpy(nn_net_rng(net)->s, s, sizeof s);
    }
    for (int i = 0; i < n_extra; i++) {
        const gpp_tensor_view *v = gpp_ckpt_find(ck, extra[i].name);
        if (!v || (int64_t)v->count != extra[i].count) {
            rc = bad(err, path, v ? "has a state tensor of the wrong size:" : "has no tensor",
                     extra[i].name);
            goto fail;
        }
        memcpy(extra[i].data, v->data, v->count * sizeof(float));
    }
    gpp_ckpt_free(ck);
    *out = net;
    if (doc_out) *doc_out = doc;
    else cJSON_Delete(doc);
    return 0;
fail:
    nn_net_free(net);
    cJSON_Delete(doc);
    gpp_ckpt_free(ck);
    return rc;
}

/* gpp_net_load: see gpp/stages.h. */
int gpp_net_load(nn_ctx *ctx, const char *path, nn_net **net, cJSON **doc, gpp_error *err)
{
    return gpp_net_load_ex(ctx, path, net, doc, NULL, 0, err);
}

/* gpp_net_clone: see gpp/stages.h. */
nn_net *gpp_net_clone(nn_ctx *ctx, nn_net *net, gpp_error *err)
{
    cJSON *desc = nn_net_to_json(net);
    if (!desc) {
        oom(err);
        return NULL;
    }
    nn_net *c = nn_net_new(ctx, desc, NULL, 0, 1, err);
    cJSON_Delete(desc);
    if (!c) return NULL;
    int nt = nn_net_num_tensors(net);
    for (int i = 0; i < nt; i++) {
        nn_tensor a, b;
        nn_net_tensor(net, i, &a);
        nn_net_tensor(c, i, &b);
        memcpy(b.data, a.data, a.len * sizeof(float));
        if (a.momentum && b.momentum) memcpy(b.momentum, a.momentum, a.len * sizeof(float));
    }
    nn_net_set_sgd_steps(c, nn_net_sgd_steps(net));
    *nn_net_rng(c) = *nn_net_rng(net);
    if (nn_net_batch(net) > 0 && nn_net_reserve(c, nn_net_batch(net), err) != 0) {
        nn_net_free(c);
        return NULL;
    }
    return c;
}

/* gpp_net_layers_json: see gpp/stages.h. */
cJSON *gpp_net_layers_json(const nn_net *net)
{
    cJSON *a = cJSON_CreateArray();
    int n = nn_net_num_nodes(net);
    for (int i = 1; a && i < n; i++) {
        nn_node_info in;
        nn_net_node(net, i, &in);
        if (in.op != NN_OP_CONV && in.op != NN_OP_FC) continue;
        cJSON *l = cJSON_CreateObject();
        if (!l || !cJSON_AddItemToArray(a, l)) {
            cJSON_Delete(l);
            cJSON_Delete(a);
            return NULL;
        }
        if (!cJSON_AddStringToObject(l, "name", in.name) ||
            !cJSON_AddStringToObject(l, "kind", nn_op_name(in.op)) ||
            !cJSON_AddNumberToObject(l, "width", in.C)) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}
