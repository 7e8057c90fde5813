/* gpp-worker: the worker binary.  main() dispatches on the subcommand:
 *   gpp-worker run JOB.json --out DIR [...]          (gpp/stages.h)
 *   gpp-worker export MODEL.gppm --onnx OUT.onnx      (gpp/export.h)
 *   gpp-worker bench --model NAME --batch B --steps N [--threads T]
 *                    [--input CxHxW] [--device cpu|cuda[:N]] [--warmup W] [--classes K]
 *                    [--seed S]
 *   gpp-worker zoo NAME [--input CxHxW] [--classes K]
 *   gpp-worker --version
 * Each handler gets argv from the subcommand's name on (argv[0] = "run").
 * (the daemon link joins this table when it lands). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/export.h"
#include "gpp/nn.h"
#include "gpp/stages.h"
#include "worker_link.h"
#include "gpp_config.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpp-worker COMMAND [options]\n"
            "       gpp-worker --connect HOST:PORT --token-file F [--device cpu|cuda[:N]]\n"
            "                  [--threads N] [--cache-dir DIR] [--labels k=v,...]\n"
            "        daemon mode: take stages from gppd\n"
            "commands:\n"
            "  run JOB.json --out DIR [--resume] ...   a whole job, no daemon (run -h)\n"
            "  export MODEL.gppm --onnx OUT.onnx      the model as ONNX\n"
            "  bench --model NAME --batch B --steps N [--threads T] [--input CxHxW]\n"
            "        [--device cpu|cuda[:N]] [--warmup W] [--classes K] [--seed S]\n"
            "        train/inference throughput on random data, one JSON line\n"
            "  zoo NAME [--input CxHxW] [--classes K]\n"
            "        print a zoo network's description (canonical JSON, as built)\n"
            "  version   print the version\n");
}

/* A whole decimal integer in [lo, hi], or -1 with a message. */
static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gpp-worker: %s needs an integer in %ld..%ld, got \"%s\"\n", opt, lo,
                hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_shape(const char *s, int shape[3])
{
    int c, h, w;
    char tail;
    if (!s || sscanf(s, "%dx%dx%d%c", &c, &h, &w, &tail) != 3 || c < 1 || h < 1 || w < 1 ||
        c > 4096 || h > 4096 || w > 4096) {
        fprintf(stderr, "gpp-worker: --input needs CxHxW (e.g. 1x28x28), got \"%s\"\n",
                s ? s : "");
        return -1;
    }
    shape[0] = c;
    shape[1] = h;
    shape[2] = w;
    return 0;
}

static int cmd_bench(int argc, char **argv)
{
    nn_bench_opts o = {.model = NULL, .device = "cpu", .batch = 64, .steps = 20,
                       .warmup = 3, .threads = 1, .input = {1, 28, 28}, .classes = 10,
                       .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "--model") == 0 && v) {
            o.model = v;
        } else if (strcmp(a, "--device") == 0 && v) {
            o.device = v;
        } else if (strcmp(a, "--batch") == 0) {
            if (parse_int(a, v, 1, 65536, &n)) return 2;
            o.batch = (int)n;
        } else if (strcmp(a, "--steps") == 0) {
            if (parse_int(a, v, 1, 1000000, &n)) return 2;
            o.steps = (int)n;
        } else if (strcmp(a, "--warmup") == 0) {
            if (parse_int(a, v, 0, 1000000, &n)) return 2;
            o.warmup = (int)n;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_int(a, v, 1, 256, &n)) return 2;
            o.threads = (int)n;
        } else if (strcmp(a, "--classes") == 0) {
            if (parse_int(a, v, 2, 100000, &n)) return 2;
            o.classes = (int)n;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_int(a, v, 0, 0x7fffffffL, &n)) return 2;
            o.seed = (uint64_t)n;
        } else if (strcmp(a, "--input") == 0) {
            if (parse_shape(v, o.input)) return 2;
        } else {
            fprintf(stderr, "gpp-worker bench: unknown or incomplete option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!o.model) {
        fprintf(stderr, "gpp-worker bench: --model is required\n");
        return 2;
    }
    gpp_error err = {0};
    cJSON *res = nn_bench_run(&o, &err);
    if (!res) {
        fprintf(stderr, "gpp-worker bench: %s\n", err.message);
        return 1;
    }
    char *s = cJSON_PrintUnformatted(res);
    cJSON_Delete(res);
    if (!s) {
        fprintf(stderr, "gpp-worker bench: out of memory\n");
        return 1;
    }
    printf("%s\n", s);
    free(s);
    return 0;
}

static int cmd_zoo(int argc, char **argv)
{
    int input[3] = {1, 28, 28};
    long classes = 10;
    if (argc < 2) {
        fprintf(stderr, "gpp-worker zoo: a model name is needed\n");
        return 2;
    }
    for (int i = 2; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--input") == 0) {
            if (parse_shape(v, input)) return 2;
        } else if (strcmp(argv[i], "--classes") == 0) {
            if (parse_int(argv[i], v, 2, 100000, &classes)) return 2;
        } else {
            fprintf(stderr, "gpp-worker zoo: unknown option \"%s\"\n", argv[i]);
            return 2;
        }
    }
    gpp_error err = {0};
    cJSON *desc = nn_zoo_model(argv[1], input, (int)classes, &err);
    nn_ctx *ctx = desc ? nn_ctx_new("cpu", 1, &err) : NULL;
    nn_net *net = ctx ? nn_net_new(ctx, desc, NULL, 0, 1, &err) : NULL;
    cJSON *out = net ? nn_net_to_json(net) : NULL;
    char *s = out ? cJSON_PrintUnformatted(out) : NULL;
    if (s) printf("%s\n", s);
    else fprintf(stderr, "gpp-worker zoo: %s\n", err.message[0] ? err.message : "out of memory");
    free(s);
    cJSON_Delete(out);
    nn_net_free(net);
    nn_ctx_free(ctx);
    cJSON_Delete(desc);
    return s ? 0 : 1;
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("gpp-worker %s\nblas: OpenBLAS, %s kernels\n", GPP_VERSION, nn_blas_core());
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} commands[] = {
    {"run", gpp_run_main},
    {"export", gpp_export_main},
    {"bench", cmd_bench},
    {"zoo", cmd_zoo},
    {"version", cmd_version},
    {"--version", cmd_version},
};

int main(int argc, char **argv)
{
    nn_blas_core_fix(argv);   /* may restart us once, with OpenBLAS's kernels named */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* daemon mode: gpp-worker --connect HOST:PORT --token-file F ... */
    for (int i = 1; argv[1][0] == '-' && i < argc; i++)
        if (strcmp(argv[i], "--connect") == 0 || strncmp(argv[i], "--connect=", 10) == 0)
            return gpp_worker_connect_main(argc, argv);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "gpp-worker: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
