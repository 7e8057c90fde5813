/* The engine's logits for a checkpoint, so check_onnx.py can hold the ONNX
 * model to the engine as well as to PyTorch:
 *
 *   engine_logits MODEL.gppm IMAGES.f32 N OUT.f32
 *
 * IMAGES.f32 holds N samples float32 [N, C, H, W] with pixels in [0, 1];
 * the checkpoint's meta.normalize is applied as the data loaders do
 * ((x - mean) / std per channel), the network is built from the checkpoint's
 * description (nn_net_new), its tensors are copied in by name, and one
 * inference forward pass writes the logits float32 [N, classes] to OUT.f32.
 * Exit 0, or 1 with a message on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gpp/ckpt.h"
#include "gpp/nn.h"

static int die(const char *what, const char *msg)
{
    fprintf(stderr, "engine_logits: %s: %s\n", what, msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 5) return die("usage", "engine_logits MODEL.gppm IMAGES.f32 N OUT.f32");
    int n = atoi(argv[3]);
    gpp_error err = {0};
    gpp_ckpt *ck = NULL;
    if (gpp_ckpt_read_file(argv[1], &ck, &err) != 0) return die(argv[1], err.message);
    cJSON *doc = cJSON_Parse(gpp_ckpt_json(ck));
    const cJSON *net_json = cJSON_GetObjectItemCaseSensitive(doc, "network");
    nn_ctx *ctx = nn_ctx_new("cpu", 1, &err);
    nn_net *net = ctx ? nn_net_new(ctx, net_json, NULL, 0, 1, &err) : NULL;
    if (!net) return die("nn_net_new", err.message);
    if (nn_net_reserve(net, n, &err) != 0) return die("nn_net_reserve", err.message);

    for (int i = 0; i < nn_net_num_tensors(net); i++) {
        nn_tensor t;
        if (nn_net_tensor(net, i, &t) != 0) return die("nn_net_tensor", "out of range");
        const gpp_tensor_view *v = gpp_ckpt_find(ck, t.name);
        if (!v) return die(t.name, "not in the checkpoint");
        if (v->count != t.len) return die(t.name, "size differs from the engine's");
        memcpy(t.data, v->data, t.len * sizeof(float));
    }

    int in = nn_net_find(net, "input");
    nn_node_info info;
    if (in != 0 || nn_net_node(net, 0, &info) != 0) return die("input", "no data node");
    size_t per = (size_t)info.C * info.H * info.W;
    float *x = malloc(per * (size_t)n * sizeof *x);
    FILE *f = fopen(argv[2], "rb");
    if (!x || !f || fread(x, sizeof *x, per * (size_t)n, f) != per * (size_t)n)
        return die(argv[2], "cannot read the images");
    fclose(f);
    const cJSON *nz = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(doc, "meta"), "normalize");
    if (nz) {
        const cJSON *mean = cJSON_GetObjectItemCaseSensitive(nz, "mean");
        const cJSON *std = cJSON_GetObjectItemCaseSensitive(nz, "std");
        size_t hw = (size_t)info.H * info.W;
        for (int s = 0; s < n; s++)
            for (int c = 0; c < info.C; c++) {
                int k = cJSON_GetArraySize(mean) == 1 ? 0 : c;
                float m = (float)cJSON_GetArrayItem(mean, k)->valuedouble;
                float d = (float)cJSON_GetArrayItem(std, cJSON_GetArraySize(std) == 1 ? 0 : c)
                              ->valuedouble;
                float *p = x + (size_t)s * per + (size_t)c * hw;
                for (size_t q = 0; q < hw; q++) p[q] = (p[q] - m) / d;
            }
    }
    if (nn_net_forward(net, x, NULL, n, 0, NULL, &err) != 0) return die("forward", err.message);
    int lg = nn_net_logits(net);
    if (nn_net_node(net, lg, &info) != 0) return die("logits", "no logits node");
    const float *y = nn_net_output(net, lg);
    size_t classes = (size_t)info.C * info.H * info.W;
    f = fopen(argv[4], "wb");
    if (!f || fwrite(y, sizeof *y, classes * (size_t)n, f) != classes * (size_t)n || fclose(f) != 0)
        return die(argv[4], "cannot write the logits");
    free(x);
    nn_net_free(net);
    nn_ctx_free(ctx);
    cJSON_Delete(doc);
    gpp_ckpt_free(ck);
    return 0;
}
