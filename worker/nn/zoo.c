/* The model zoo as network descriptions (gpp/netdesc.h). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *const zoo_names[] = {
    "lenet5", "lenet300-100", "vgg-small", "vgg16-cifar", "inception-base", NULL,
};

/* nn_zoo_names: see gpp/nn.h. */
const char *const *nn_zoo_names(void)
{
    return zoo_names;
}

/* A small builder: layers appended to an array, each named, each taking the
 * previous layer unless told otherwise. */
typedef struct zb {
    cJSON *layers;
    char last[GPP_NET_NAME_MAX + 1];
    int ok;
} zb;

static cJSON *zb_add(zb *b, const char *type, const char *name, const char *input)
{
    cJSON *l = cJSON_CreateObject();
    if (!l || !cJSON_AddItemToArray(b->layers, l)) {
        cJSON_Delete(l);
        b->ok = 0;
        return NULL;
    }
    if (!cJSON_AddStringToObject(l, "type", type) || !cJSON_AddStringToObject(l, "name", name))
        b->ok = 0;
    const char *src = input ? input : b->last;
    if (src[0]) {
        cJSON *ins = cJSON_AddArrayToObject(l, "inputs");
        if (!ins || !cJSON_AddItemToArray(ins, cJSON_CreateString(src))) b->ok = 0;
    }
    if (snprintf(b->last, sizeof b->last, "%s", name) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    return l;
}

static void zb_num(zb *b, cJSON *l, const char *key, double v)
{
    if (!l || !cJSON_AddNumberToObject(l, key, v)) b->ok = 0;
}

static void zb_conv(zb *b, const char *name, const char *input, int out, int k, int stride,
                    int pad, int bias)
{
    cJSON *l = zb_add(b, "conv", name, input);
    zb_num(b, l, "out", out);
    zb_num(b, l, "k", k);
    zb_num(b, l, "stride", stride);
    zb_num(b, l, "pad", pad);
    if (!l || !cJSON_AddBoolToObject(l, "bias", bias)) b->ok = 0;
}

static void zb_pool(zb *b, const char *type, const char *name, const char *input, int k,
                    int stride, int pad)
{
    cJSON *l = zb_add(b, type, name, input);
    zb_num(b, l, "k", k);
    zb_num(b, l, "stride", stride);
    zb_num(b, l, "pad", pad);
}

static void zb_fc(zb *b, const char *name, int out)
{
    cJSON *l = zb_add(b, "fc", name, NULL);
    zb_num(b, l, "out", out);
}

/* conv (no bias) -> bn -> relu, named PREFIX, PREFIX_bn, PREFIX_relu. */
static void zb_cbr(zb *b, const char *prefix, const char *input, int out, int k, int pad)
{
    char n1[GPP_NET_NAME_MAX + 1], n2[GPP_NET_NAME_MAX + 1];
    zb_conv(b, prefix, input, out, k, 1, pad, 0);
    if (snprintf(n1, sizeof n1, "%s_bn", prefix) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_add(b, "bn", n1, NULL);
    if (snprintf(n2, sizeof n2, "%s_relu", prefix) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_add(b, "relu", n2, NULL);
}

/* A basic Inception module (METHOD.md "Grow"): 1x1; 1x1->3x3;
 * 1x1->3x3->3x3; 3x3 maxpool stride 1 -> 1x1; concatenated.  Each conv is
 * conv-bn-relu.  w[6] = {b1, b2 reduce, b2, b3 reduce, b3, b4}. */
static void zb_inception(zb *b, const char *p, const int w[6])
{
    char in[GPP_NET_NAME_MAX + 1], n[GPP_NET_NAME_MAX + 1], n2[GPP_NET_NAME_MAX + 1];
    char ends[4][GPP_NET_NAME_MAX + 1];
    if (snprintf(in, sizeof in, "%s", b->last) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    if (snprintf(n, sizeof n, "%s_b1", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, in, w[0], 1, 0);
    if (snprintf(ends[0], sizeof ends[0], "%s", b->last) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    if (snprintf(n, sizeof n, "%s_b2a", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, in, w[1], 1, 0);
    if (snprintf(n, sizeof n, "%s_b2b", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, NULL, w[2], 3, 1);
    if (snprintf(ends[1], sizeof ends[1], "%s", b->last) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    if (snprintf(n, sizeof n, "%s_b3a", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, in, w[3], 1, 0);
    if (snprintf(n, sizeof n, "%s_b3b", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, NULL, w[4], 3, 1);
    if (snprintf(n, sizeof n, "%s_b3c", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, NULL, w[4], 3, 1);
    if (snprintf(ends[2], sizeof ends[2], "%s", b->last) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    if (snprintf(n2, sizeof n2, "%s_b4pool", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_pool(b, "maxpool", n2, in, 3, 1, 1);
    if (snprintf(n, sizeof n, "%s_b4", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    zb_cbr(b, n, NULL, w[5], 1, 0);
    if (snprintf(ends[3], sizeof ends[3], "%s", b->last) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    if (snprintf(n, sizeof n, "%s_concat", p) >= GPP_NET_NAME_MAX + 1) b->ok = 0;
    cJSON *l = zb_add(b, "concat", n, NULL);
    cJSON *ins = cJSON_CreateArray();
    if (!l || !ins) {
        cJSON_Delete(ins);
        b->ok = 0;
        return;
    }
    for (int i = 0; i < 4; i++) cJSON_AddItemToArray(ins, cJSON_CreateString(ends[i]));
    if (!cJSON_ReplaceItemInObjectCaseSensitive(l, "inputs", ins)) {
        cJSON_Delete(ins);
        b->ok = 0;
    }
}

/* nn_zoo_model: see gpp/nn.h. */
cJSON *nn_zoo_model(const char *name, const int input[3], int classes, gpp_error *err)
{
    cJSON *o = cJSON_CreateObject();
    zb b = {.layers = NULL, .last = "", .ok = 1};
    if (!o) goto oom;
    if (!cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(input, 3)) ||
        !cJSON_AddNumberToObject(o, "classes", classes) ||
        !(b.layers = cJSON_AddArrayToObject(o, "layers")))
        goto oom;
    snprintf(b.last, sizeof b.last, "input");
    if (strcmp(name, "lenet5") == 0) {
        /* Caffe's LeNet: no ReLU after the convolutions */
        zb_conv(&b, "conv1", NULL, 20, 5, 1, 0, 1);
        zb_pool(&b, "maxpool", "pool1", NULL, 2, 2, 0);
        zb_conv(&b, "conv2", NULL, 50, 5, 1, 0, 1);
        zb_pool(&b, "maxpool", "pool2", NULL, 2, 2, 0);
        zb_add(&b, "flatten", "flatten", NULL);
        zb_fc(&b, "fc1", 500);
        zb_add(&b, "relu", "relu1", NULL);
        zb_fc(&b, "fc2", classes);
    } else if (strcmp(name, "lenet300-100") == 0) {
        zb_add(&b, "flatten", "flatten", NULL);
        zb_fc(&b, "fc1", 300);
        zb_add(&b, "relu", "relu1", NULL);
        zb_fc(&b, "fc2", 100);
        zb_add(&b, "relu", "relu2", NULL);
        zb_fc(&b, "fc3", classes);
    } else if (strcmp(name, "vgg-small") == 0) {
        zb_cbr(&b, "conv1", NULL, 32, 3, 1);
        zb_cbr(&b, "conv2", NULL, 32, 3, 1);
        zb_pool(&b, "maxpool", "pool1", NULL, 2, 2, 0);
        zb_cbr(&b, "conv3", NULL, 64, 3, 1);
        zb_cbr(&b, "conv4", NULL, 64, 3, 1);
        zb_pool(&b, "maxpool", "pool2", NULL, 2, 2, 0);
        zb_cbr(&b, "conv5", NULL, 128, 3, 1);
        zb_add(&b, "global-avgpool", "gap", NULL);
        zb_fc(&b, "fc", classes);
    } else if (strcmp(name, "vgg16-cifar") == 0) {
        /* VGG-16 with batch norm for 32x32 inputs: 13 conv3x3-bn-relu in five
         * blocks, each block ending in a 2x2 max-pool; global average pool, fc. */
        static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0,
                                  512, 512, 512, 0, 512, 512, 512, 0};
        int conv = 0, pool = 0;
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            char n[32];
            if (cfg[i] == 0) {
                snprintf(n, sizeof n, "pool%d", ++pool);
                zb_pool(&b, "maxpool", n, NULL, 2, 2, 0);
            } else {
                snprintf(n, sizeof n, "conv%d", ++conv);
                zb_cbr(&b, n, NULL, cfg[i], 3, 1);
            }
        }
        zb_add(&b, "global-avgpool", "gap", NULL);
        zb_fc(&b, "fc", classes);
    } else if (strcmp(name, "inception-base") == 0) {
        /* stem conv3x3-32-bn-relu, max-pool 2; two basic Inception modules
         * (32 + 48 + 16 + 16 = 112 and 48 + 64 + 24 + 24 = 160 channels) with a
         * max-pool 2 between them; global average pool, fc */
        static const int w1[6] = {32, 32, 48, 8, 16, 16};
        static const int w2[6] = {48, 48, 64, 12, 24, 24};
        zb_cbr(&b, "stem", NULL, 32, 3, 1);
        zb_pool(&b, "maxpool", "stem_pool", NULL, 2, 2, 0);
        zb_inception(&b, "inc1", w1);
        zb_pool(&b, "maxpool", "pool1", NULL, 2, 2, 0);
        zb_inception(&b, "inc2", w2);
        zb_add(&b, "global-avgpool", "gap", NULL);
        zb_fc(&b, "fc", classes);
    } else {
        cJSON_Delete(o);
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", "model",
                      "unknown zoo model \"%s\" (lenet5, lenet300-100, vgg-small, "
                      "vgg16-cifar, inception-base)", name);
        return NULL;
    }
    if (!b.ok) goto oom;
    return o;
oom:
    cJSON_Delete(o);
    gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    return NULL;
}
