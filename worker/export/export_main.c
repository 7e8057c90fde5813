/* `gpp-worker export MODEL.gppm --onnx OUT.onnx` (see gpp/export.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"
#include "gpp/export.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpp-worker export MODEL.gppm --onnx OUT.onnx\n"
            "\n"
            "Write the network of a .gppm checkpoint as an ONNX model (opset %d):\n"
            "input \"%s\" float32 [N, C, H, W] with pixels in [0, 1] (the checkpoint's\n"
            "normalisation, meta.normalize, is part of the graph), output \"%s\"\n"
            "float32 [N, classes].  Optimiser state is left out.\n",
            GPP_ONNX_OPSET, GPP_ONNX_INPUT_NAME, GPP_ONNX_OUTPUT_NAME);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gpp-worker export: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr);
    return 2;
}

/* gpp_export_main: see gpp/export.h. */
int gpp_export_main(int argc, char **argv)
{
    const char *model = NULL, *onnx = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--onnx") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a file name", a);
            onnx = argv[++i];
        } else if (strncmp(a, "--onnx=", 7) == 0) {
            onnx = a + 7;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option %s", a);
        } else if (!model) {
            model = a;
        } else {
            return usage_error("unexpected argument %s (one checkpoint at a time)", a);
        }
    }
    if (!model) return usage_error("no checkpoint given");
    if (!onnx || !*onnx) return usage_error("no output given (--onnx OUT.onnx)");

    gpp_error err = {0};
    gpp_ckpt *ck = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    gpp__onnx_stats st = {0};
    int rc = gpp_ckpt_read_file(model, &ck, &err);
    if (rc != 0) {
        fprintf(stderr, "gpp-worker export: %s: %s\n", model, err.message);
        return 1;
    }
    rc = gpp__onnx_build(ck, &buf, &len, &st, &err);
    if (rc == 0) rc = gpp__onnx_write_file(onnx, buf, len, &err);
    if (rc != 0) {
        fprintf(stderr, "gpp-worker export: %s: %s%s%s%s\n", model, err.message,
                err.field[0] ? " [" : "", err.field, err.field[0] ? "]" : "");
    } else {
        printf("wrote %s: %zu nodes, %lld parameters, input [N,%d,%d,%d]%s, logits [N,%d], "
               "%zu bytes\n", onnx, st.nodes, st.params, st.C, st.H, st.W,
               st.normalized ? " (normalised inside)" : "", st.classes, len);
    }
    free(buf);
    gpp_ckpt_free(ck);
    return rc == 0 ? 0 : 1;
}
