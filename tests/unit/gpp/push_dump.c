/* push_dump - the C push loss of a JSON input, printed as JSON, for
 * push_torch_check.py to compare with PyTorch autograd.
 *
 *   push_dump INPUT.json > OUTPUT.json
 *
 * Input: {"B", "M", "C", "H": [B*M], "y": [B], "top": [M] (0/1),
 *         "eps", "eigen_lambda",
 *         "configs": [{"separation": "diag"|"eigen", "alpha", "beta", "gamma",
 *                      "eigen_k", "cov_exact"}]}
 * Output: {"Sw": [M*M], "Sb": [M*M], "r": [M],
 *          "results": [{"loss", "sep", "cov", "align", "cov_denom", "grad": [B*M]}]}
 * Exit status 0, or 1 with a message on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gpp/gppmath.h"

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
        if (len + 1 == cap) {
            if (cap > (64u << 20)) { free(buf); buf = NULL; break; }
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

static double num(const cJSON *o, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static cJSON *darray(const double *x, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: push_dump INPUT.json\n");
        return 1;
    }
    char *text = read_all(argv[1]);
    cJSON *in = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!in) {
        fprintf(stderr, "push_dump: cannot read or parse %s\n", argv[1]);
        return 1;
    }
    int B = (int)num(in, "B", 0), M = (int)num(in, "M", 0), C = (int)num(in, "C", 0);
    const cJSON *jH = cJSON_GetObjectItemCaseSensitive(in, "H");
    const cJSON *jy = cJSON_GetObjectItemCaseSensitive(in, "y");
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(in, "top");
    const cJSON *jc = cJSON_GetObjectItemCaseSensitive(in, "configs");
    if (B < 1 || M < 1 || C < 1 || B > 4096 || M > 4096 || C > 4096 ||
        cJSON_GetArraySize(jH) != B * M || cJSON_GetArraySize(jy) != B ||
        cJSON_GetArraySize(jt) != M || !cJSON_IsArray(jc)) {
        fprintf(stderr, "push_dump: bad input shape\n");
        cJSON_Delete(in);
        return 1;
    }
    float *H = malloc(sizeof(float) * (size_t)B * M);
    float *g = malloc(sizeof(float) * (size_t)B * M);
    double *gd = malloc(sizeof(double) * (size_t)B * M);
    int *y = malloc(sizeof(int) * (size_t)B);
    uint8_t *top = malloc((size_t)M);
    if (!H || !g || !gd || !y || !top) return 1;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, jH) H[i++] = (float)it->valuedouble;
    i = 0;
    cJSON_ArrayForEach(it, jy) y[i++] = it->valueint;
    i = 0;
    cJSON_ArrayForEach(it, jt) top[i++] = (uint8_t)(it->valueint != 0);

    gpp_push_ws *ws = NULL;
    gpp_error err;
    int rc = 1;
    cJSON *out = cJSON_CreateObject(), *results = cJSON_CreateArray();
    if (gpp_push_ws_new(B, M, C, 1, &ws, &err)) {
        fprintf(stderr, "push_dump: %s\n", err.message);
        goto done;
    }
    const cJSON *cfg;
    int first = 1;
    cJSON_ArrayForEach(cfg, jc) {
        gpp_push_opts o;
        gpp_push_opts_default(&o);
        o.eps = num(in, "eps", o.eps);
        o.eigen_lambda = num(in, "eigen_lambda", o.eigen_lambda);
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(cfg, "separation");
        o.separation = cJSON_IsString(sep) && !strcmp(sep->valuestring, "eigen")
                           ? GPP_PUSH_SEP_EIGEN : GPP_PUSH_SEP_DIAG;
        o.alpha = num(cfg, "alpha", 0);
        o.beta = num(cfg, "beta", 0);
        o.gamma = num(cfg, "gamma", 0);
        o.eigen_k = (int)num(cfg, "eigen_k", 0);
        o.cov_exact = (int)num(cfg, "cov_exact", 0);
        o.top = top;
        memset(g, 0, sizeof(float) * (size_t)B * M);
        gpp_push_result res;
        if (gpp_push_loss(ws, H, y, B, &o, &res, g, &err)) {
            fprintf(stderr, "push_dump: %s\n", err.message);
            goto done;
        }
        if (first) {
            const double *Sw, *Sb;
            gpp_push_ws_scatter(ws, &Sw, &Sb);
            cJSON_AddItemToObject(out, "Sw", darray(Sw, (size_t)M * M));
            cJSON_AddItemToObject(out, "Sb", darray(Sb, (size_t)M * M));
            cJSON_AddItemToObject(out, "r", darray(gpp_push_ws_ratios(ws), (size_t)M));
            first = 0;
        }
        for (size_t k = 0; k < (size_t)B * M; k++) gd[k] = g[k];
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "loss", res.loss);
        cJSON_AddNumberToObject(r, "sep", res.sep);
        cJSON_AddNumberToObject(r, "cov", res.cov);
        cJSON_AddNumberToObject(r, "align", res.align);
        cJSON_AddNumberToObject(r, "cov_denom", res.cov_denom);
        cJSON_AddNumberToObject(r, "eigen_k", res.eigen_k);
        cJSON_AddItemToObject(r, "grad", darray(gd, (size_t)B * M));
        cJSON_AddItemToArray(results, r);
    }
    cJSON_AddItemToObject(out, "results", results);
    results = NULL;
    char *s = cJSON_PrintUnformatted(out);
    if (s) {
        puts(s);
        free(s);
        rc = 0;
    }
done:
    cJSON_Delete(results);
    cJSON_Delete(out);
    cJSON_Delete(in);
    gpp_push_ws_free(ws);
    free(H); free(g); free(gd); free(y); free(top);
    return rc;
}
