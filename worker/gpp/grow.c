/* Grow (METHOD.md 2): insert a basic Inception module just before the
 * global average pooling, keeping every old weight bit for bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/netdesc.h"
#include "stages_internal.h"

/* gpp__grow_site: see stages_internal.h. */
int gpp__grow_site(const nn_net *net)
{
    int id = nn_net_predecision(net);
    nn_node_info in;
    while (id > 0 && nn_net_node(net, id, &in) == 0) {
        if (in.op == NN_OP_GAP) return id;
        if (in.op != NN_OP_DROPOUT && in.op != NN_OP_FLATTEN && in.op != NN_OP_RELU &&
            in.op != NN_OP_BN && in.op != NN_OP_FC)   /* hidden fc layers after the pooling */
            return -1;
        id = in.inputs[0];
    }
    return -1;
}

/* Width of the conv called "<p><sfx>", or 0. */
static int conv_width(const nn_net *net, const char *p, const char *sfx)
{
    char name[GPP_JOBSPEC_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", p, sfx);
    int id = nn_net_find(net, name);
    nn_node_info in;
    if (id < 1 || nn_net_node(net, id, &in) != 0 || in.op != NN_OP_CONV) return 0;
    return in.C;
}

/* gpp__grow_widths: see stages_internal.h. */
int gpp__grow_widths(const nn_net *net, const int *given, int w[6], gpp_error *err)
{
    int site = gpp__grow_site(net);
    if (site < 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "grow",
                             "the network has no global average pooling before its "
                             "classifier: there is nowhere to grow a module");
    if (given) {
        memcpy(w, given, 6 * sizeof(int));
        return 0;
    }
    for (int id = site - 1; id >= 1; id--) {
        nn_node_info in;
        nn_net_node(net, id, &in);
        size_t len = strlen(in.name);
        if (in.op != NN_OP_CONCAT || len < 8 || strcmp(in.name + len - 7, "_concat") != 0)
            continue;
        char p[GPP_JOBSPEC_NAME_MAX + 1];
        snprintf(p, sizeof p, "%.*s", (int)(len - 7), in.name);
        static const char *const sfx[6] = {"_b1", "_b2a", "_b2b", "_b3a", "_b3b", "_b4"};
        int ok = 1;
        for (int k = 0; k < 6; k++) ok &= (w[k] = conv_width(net, p, sfx[k])) > 0;
        if (ok) return 0;
        break;
    }
    nn_node_info s, x;
    nn_net_node(net, site, &s);
    nn_net_node(net, s.inputs[0], &x);
    int C = x.C < 4 ? 4 : x.C;
    w[0] = C / 4;
    w[2] = 3 * C / 8;
    w[4] = 3 * C / 16 > 0 ? 3 * C / 16 : 1;
    w[5] = C - w[0] - w[2] - w[4];
    if (w[5] < 1) w[5] = 1;
    w[1] = 3 * w[2] / 4 > 0 ? 3 * w[2] / 4 : 1;
    w[3] = w[4] / 2 > 0 ? w[4] / 2 : 1;
    return 0;
}

/* Append a layer {"name", "type", "inputs": [input], ...} to arr (*pos
 * counts them). */
static cJSON *layer_at(cJSON *arr, int *pos, const char *name, const char *type,
                       const char *input, int *ok)
{
    cJSON *l = cJSON_CreateObject();
    cJSON *ins = NULL;
    if (!l || !cJSON_AddStringToObject(l, "name", name) ||
        !cJSON_AddStringToObject(l, "type", type) ||
        !(ins = cJSON_AddArrayToObject(l, "inputs")) ||
        !cJSON_AddItemToArray(ins, cJSON_CreateString(input)) ||
        !cJSON_AddItemToArray(arr, l)) {
        cJSON_Delete(l);
        *ok = 0;
        return NULL;
    }
    (*pos)++;
    return l;
}

/* conv (+ bn) + relu; *last gets the relu's name. */
static void unit(cJSON *arr, int *pos, const char *name, const char *input, int out, int k,
                 int with_bn, char last[GPP_NET_NAME_MAX + 1], int *ok)
{
    char n2[GPP_NET_NAME_MAX + 8], n3[GPP_NET_NAME_MAX + 8];
    cJSON *c = layer_at(arr, pos, name, "conv", input, ok);
    if (!c || !cJSON_AddNumberToObject(c, "out", out) || !cJSON_AddNumberToObject(c, "k", k) ||
        !cJSON_AddNumberToObject(c, "stride", 1) ||
        !cJSON_AddNumberToObject(c, "pad", k / 2) || !cJSON_AddBoolToObject(c, "bias", !with_bn)) {
        *ok = 0;
        return;
    }
    const char *prev = name;
    if (with_bn) {
        snprintf(n2, sizeof n2, "%s_bn", name);
        layer_at(arr, pos, n2, "bn", prev, ok);
        prev = n2;
    }
    snprintf(n3, sizeof n3, "%s_relu", name);
    layer_at(arr, pos, n3, "relu", prev, ok);
    snprintf(last, GPP_NET_NAME_MAX + 1, "%.64s", n3);
}

/* gpp__grow_insert: see stages_internal.h. */
int gpp__grow_insert(nn_ctx *ctx, nn_net *net, const char *prefix, const int w[6],
                     uint64_t seed, nn_net **out, int *fc_kept, gpp_error *err)
{
    *out = NULL;
    int site = gpp__grow_site(net);
    if (site < 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "grow",
                             "the network has no global average pooling before its classifier");
    if (strlen(prefix) > GPP_NET_NAME_MAX - 16)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "grow", "prefix too long");
    for (int k = 0; k < 6; k++)
        if (w[k] < 1)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "grow.widths",
                                 "module width %d is %d (must be >= 1)", k, w[k]);
    int with_bn = 0, n = nn_net_num_nodes(net);
    for (int id = 1; id < n; id++) {
        nn_node_info in;
        nn_net_node(net, id, &in);
        with_bn |= in.op == NN_OP_BN;
    }
    nn_node_info s, x;
    nn_net_node(net, site, &s);
    nn_net_node(net, s.inputs[0], &x);
    int width = w[0] + w[2] + w[4] + w[5];
    *fc_kept = width == x.C;

    int rc = 0, ok = 1;
    nn_net *g = NULL;
    cJSON *desc = nn_net_to_json(net);
    cJSON *layers = desc ? cJSON_GetObjectItemCaseSensitive(desc, "layers") : NULL;
    if (!layers) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    int pos = 0;
    cJSON *mod = cJSON_CreateArray();   /* the module's layers, spliced in below */
    if (!mod) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    char in[GPP_NET_NAME_MAX + 1], name[GPP_NET_NAME_MAX + 1], ends[4][GPP_NET_NAME_MAX + 1];
    snprintf(in, sizeof in, "%s", x.name);
    snprintf(name, sizeof name, "%s_b1", prefix);
    unit(mod, &pos, name, in, w[0], 1, with_bn, ends[0], &ok);
    snprintf(name, sizeof name, "%s_b2a", prefix);
    unit(mod, &pos, name, in, w[1], 1, with_bn, ends[1], &ok);
    snprintf(name, sizeof name, "%s_b2b", prefix);
    unit(mod, &pos, name, ends[1], w[2], 3, with_bn, ends[1], &ok);
    snprintf(name, sizeof name, "%s_b3a", prefix);
    unit(mod, &pos, name, in, w[3], 1, with_bn, ends[2], &ok);
    snprintf(name, sizeof name, "%s_b3b", prefix);
    unit(mod, &pos, name, ends[2], w[4], 3, with_bn, ends[2], &ok);
    snprintf(name, sizeof name, "%s_b3c", prefix);
    unit(mod, &pos, name, ends[2], w[4], 3, with_bn, ends[2], &ok);
    snprintf(name, sizeof name, "%s_b4pool", prefix);
    cJSON *mp = layer_at(mod, &pos, name, "maxpool", in, &ok);
    if (!mp || !cJSON_AddNumberToObject(mp, "k", 3) || !cJSON_AddNumberToObject(mp, "stride", 1) ||
        !cJSON_AddNumberToObject(mp, "pad", 1))
        ok = 0;
    char pooled[GPP_NET_NAME_MAX + 1];
    snprintf(pooled, sizeof pooled, "%s", name);
    snprintf(name, sizeof name, "%s_b4", prefix);
    unit(mod, &pos, name, pooled, w[5], 1, with_bn, ends[3], &ok);
    snprintf(name, sizeof name, "%s_concat", prefix);
    cJSON *cat = layer_at(mod, &pos, name, "concat", ends[0], &ok);
    if (cat) {
        cJSON *ins = cJSON_GetObjectItemCaseSensitive(cat, "inputs");
        for (int k = 1; k < 4; k++) ok &= cJSON_AddItemToArray(ins, cJSON_CreateString(ends[k]));
    }
    /* splice: the module goes just before the pooling (layer site - 1),
     * which now reads it */
    cJSON *spliced = cJSON_CreateArray();
    if (!spliced) {
        cJSON_Delete(mod);
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    for (int i = 0; cJSON_GetArraySize(layers) > 0; i++) {
        if (i == site - 1)
            while (cJSON_GetArraySize(mod) > 0)
                cJSON_AddItemToArray(spliced, cJSON_DetachItemFromArray(mod, 0));
        cJSON_AddItemToArray(spliced, cJSON_DetachItemFromArray(layers, 0));
    }
    cJSON_Delete(mod);
    cJSON_ReplaceItemInObjectCaseSensitive(desc, "layers", spliced);
    layers = spliced;
    cJSON *gap = cJSON_GetArrayItem(layers, site - 1 + pos);
    cJSON *gins = cJSON_CreateArray();
    if (!gins || !cJSON_AddItemToArray(gins, cJSON_CreateString(name)) ||
        !cJSON_ReplaceItemInObjectCaseSensitive(gap, "inputs", gins)) {
        cJSON_Delete(gins);
        ok = 0;
    }
    if (!ok) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    g = nn_net_new(ctx, desc, NULL, 0, seed, err);
    if (!g) {
        rc = err && strcmp(err->code, "out_of_memory") == 0 ? GPP_ENOMEM : GPP_EINVAL;
        goto done;
    }
    /* old tensors, bit for bit (the fc reading the pooling only when its
     * input kept its width) */
    int cls = -1;
    for (int id = site + 1; id < n && cls < 0; id++) {
        nn_node_info c;
        nn_net_node(net, id, &c);
        if (c.op == NN_OP_FC) cls = id;
    }
    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor a, b;
        nn_net_tensor(net, i, &a);
        if (!*fc_kept && a.node == cls) continue;
        if (nn_net_tensor_find(g, a.name, &b) != 0 || b.len != a.len) {
            rc = gpp_error_set(err, GPP_EINVAL, "internal", "grow",
                               "tensor \"%s\" changed shape while growing", a.name);
            goto done;
        }
        memcpy(b.data, a.data, a.len * sizeof(float));
    }
    if (nn_net_batch(net) > 0 && (rc = nn_net_reserve(g, nn_net_batch(net), err)) != 0) goto done;
    *out = g;
    g = NULL;
done:
    nn_net_free(g);
    cJSON_Delete(desc);
    return rc;
}
