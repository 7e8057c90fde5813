/* The network's full state in a .gppm checkpoint (gpp/ckpt.h): the
 * description, every parameter and batch-norm statistic, the momentum
 * buffers ("optim/<name>") and, in the JSON "state", the engine's own
 * counters under "engine" (SGD steps, dropout RNG). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/ckpt.h"
#include "internal.h"

/* nn_net_save: see gpp/nn.h. */
int nn_net_save(const nn_net *net, const char *path, const cJSON *meta, const cJSON *state,
                gpp_error *err)
{
    int rc = 0;
    char *json = NULL;
    gpp_ckpt_writer *w = NULL;
    cJSON *doc = cJSON_CreateObject(), *eng = NULL, *rng = NULL;
    cJSON *st = state ? cJSON_Duplicate(state, 1) : cJSON_CreateObject();
    cJSON *mt = meta ? cJSON_Duplicate(meta, 1) : cJSON_CreateObject();
    cJSON *nw = nn_net_to_json(net);
    if (!doc || !st || !mt || !nw || !cJSON_IsObject(st) || !cJSON_IsObject(mt)) {
        int bad = (st && !cJSON_IsObject(st)) || (mt && !cJSON_IsObject(mt));
        cJSON_Delete(st);
        cJSON_Delete(mt);
        cJSON_Delete(nw);
        rc = bad ? gpp_error_set(err, GPP_EINVAL, "invalid_argument", "state",
                                 "meta and state must be JSON objects")
                 : gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    cJSON_AddStringToObject(doc, "format", "gppm");
    cJSON_AddItemToObject(doc, "network", nw);
    cJSON_AddItemToObject(doc, "meta", mt);
    cJSON_AddItemToObject(doc, "state", st);
    cJSON_DeleteItemFromObjectCaseSensitive(st, "engine");
    eng = cJSON_AddObjectToObject(st, "engine");
    rng = eng ? cJSON_AddArrayToObject(eng, "dropout_rng") : NULL;
    if (!rng || !cJSON_AddNumberToObject(eng, "sgd_steps", (double)net->sgd_steps)) goto oom;
    for (int i = 0; i < 4; i++) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, net->rng.s[i]);
        if (!cJSON_AddItemToArray(rng, cJSON_CreateString(hex))) goto oom;
    }
    json = cJSON_PrintUnformatted(doc);
    w = json ? gpp_ckpt_writer_new(json) : NULL;
    if (!w) goto oom;
    for (int i = 0; i < nn_net_num_tensors(net) && rc == 0; i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        int64_t dims[4];
        for (int k = 0; k < t.ndim; k++) dims[k] = t.shape[k];
        rc = gpp_ckpt_writer_add(w, t.name, t.ndim, dims, t.data, err);
        if (rc == 0 && t.momentum && net->sgd_steps > 0) {
            char name[NN_TENSOR_NAME_MAX + 8];
            snprintf(name, sizeof name, "%s%s", GPP_CKPT_OPTIM_PREFIX, t.name);
            rc = gpp_ckpt_writer_add(w, name, t.ndim, dims, t.momentum, err);
        }
    }
    if (rc == 0) rc = gpp_ckpt_writer_write_file(w, path, err);
    goto done;
oom:
    rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
done:
    gpp_ckpt_writer_free(w);
    free(json);
    cJSON_Delete(doc);
    return rc;
}

static int restore_engine_state(nn_net *net, const cJSON *doc, int have_optim, gpp_error *err)
{
    const cJSON *eng = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(doc, "state"), "engine");
    net->sgd_steps = 0;
    if (!eng) return 0;   /* a checkpoint from elsewhere: fresh optimiser */
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(eng, "sgd_steps");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(eng, "dropout_rng");
    if (cJSON_IsNumber(steps) && steps->valuedouble >= 0 && have_optim)
        net->sgd_steps = (long long)steps->valuedouble;
    if (rng) {
        if (!cJSON_IsArray(rng) || cJSON_GetArraySize(rng) != 4)
            return gpp_error_set(err, GPP_EFORMAT, "malformed", "state.engine.dropout_rng",
                                 "state.engine.dropout_rng must be 4 hex strings");
        for (int i = 0; i < 4; i++) {
            const cJSON *h = cJSON_GetArrayItem(rng, i);
            char *end = NULL;
            uint64_t v = cJSON_IsString(h) ? strtoull(h->valuestring, &end, 16) : 0;
            if (!end || *end || end == h->valuestring)
                return gpp_error_set(err, GPP_EFORMAT, "malformed", "state.engine.dropout_rng",
                                     "state.engine.dropout_rng[%d] is not a hex string", i);
            net->rng.s[i] = v;
        }
    }
    return 0;
}

/* nn_net_load: see gpp/nn.h. */
nn_net *nn_net_load(nn_ctx *ctx, const char *path, cJSON **doc_out, gpp_error *err)
{
    gpp_ckpt *ck = NULL;
    cJSON *doc = NULL;
    nn_net *net = NULL;
    if (doc_out) *doc_out = NULL;
    if (gpp_ckpt_read_file(path, &ck, err) != 0) return NULL;
    doc = cJSON_Parse(gpp_ckpt_json(ck));
    if (!doc) {
        gpp_error_set(err, GPP_EFORMAT, "malformed", "", "checkpoint %s: unreadable JSON", path);
        goto fail;
    }
    net = nn_net_new(ctx, cJSON_GetObjectItemCaseSensitive(doc, "network"), NULL, 0, 0, err);
    if (!net) goto fail;
    int have_optim = gpp_ckpt_has_optim(ck);
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        nn_net_tensor(net, i, &t);
        const gpp_tensor_view *v = gpp_ckpt_find(ck, t.name);
        if (!v || v->count != t.len) {
            gpp_error_set(err, GPP_EFORMAT, "malformed", t.name,
                          "checkpoint %s: tensor %s is %s (the network needs %zu values)", path,
                          t.name, v ? "the wrong size" : "missing", t.len);
            goto fail;
        }
        memcpy(t.data, v->data, sizeof(float) * t.len);
        if (!t.momentum) continue;
        char name[NN_TENSOR_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s%s", GPP_CKPT_OPTIM_PREFIX, t.name);
        v = have_optim ? gpp_ckpt_find(ck, name) : NULL;
        if (v && v->count == t.len) memcpy(t.momentum, v->data, sizeof(float) * t.len);
        else if (have_optim) {
            gpp_error_set(err, GPP_EFORMAT, "malformed", name,
                          "checkpoint %s: optimiser tensor %s is missing or the wrong size",
                          path, name);
            goto fail;
        }
    }
    if (restore_engine_state(net, doc, have_optim, err) != 0) goto fail;
    gpp_ckpt_free(ck);
    if (doc_out) *doc_out = doc;
    else cJSON_Delete(doc);
    return net;
fail:
    nn_net_free(net);
    cJSON_Delete(doc);
    gpp_ckpt_free(ck);
    return NULL;
}
