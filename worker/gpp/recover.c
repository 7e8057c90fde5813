/* Least-squares recovery after surgery (METHOD.md 4.5, ours): every layer
 * whose input lost channels is re-fitted so that, on a small batch, its
 * output from the pruned input matches the unpruned layer's output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/gppmath.h"
#include "kernels.h"
#include "stages_internal.h"

/* Relative ridge of the fit (gpp_lsq_solve's rho).  The fit is of the
 * change D from the weights surgery left, W = W_old + D, so the ridge pulls
 * towards W_old, not towards zero: with few samples per input (an fc layer
 * sees one row per image) the fit stays near the pruned layer. */
#ifndef RECOVER_RIDGE
#define RECOVER_RIDGE 1e-1
#endif
#define RECOVER_HOLDOUT 5    /* every 5th recovery sample checks the fit */

/* im2col rows of one image: in [C, H, W] -> X [OH*OW, K] (K = C*k*k (+1 for
 * the bias column of ones)). */
static void im2col_rows(float *X, const float *in, int C, int H, int W, int k, int stride,
                        int pad, int OH, int OW, int bias)
{
    int K = C * k * k + bias;
    for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
            float *r = X + ((size_t)oh * OW + ow) * K;
            int j = 0;
            for (int c = 0; c < C; c++)
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                        r[j++] = ih >= 0 && ih < H && iw >= 0 && iw < W
                                     ? in[((size_t)c * H + ih) * W + iw] : 0.0f;
                    }
            if (bias) r[j] = 1.0f;
        }
}

/* One consumer layer: fit and write its weights.  Rows of the samples
 * i % RECOVER_HOLDOUT != RECOVER_HOLDOUT - 1 are fitted, the others check:
 * the fit is kept only when it lowers the held-out residual. */
static int refit(nn_net *orig, nn_net *pruned, int id, const uint8_t *keep, int samples,
                 float *x, gpp__fill_fn fill, void *user, int K, gpp__recover_report *rep,
                 gpp_error *err)
{
    nn_node_info pi, oi, xi;
    nn_net_node(pruned, id, &pi);
    nn_net_node(orig, id, &oi);
    nn_net_node(pruned, pi.inputs[0], &xi);
    const int O = pi.C, B = nn_net_batch(pruned), conv = pi.op == NN_OP_CONV;
    const int bias = pi.bias, OHW = pi.H * pi.W, rows = conv ? OHW : 1;
    const size_t in_len = (size_t)xi.C * xi.H * xi.W;
    int *omap = malloc(sizeof(int) * (size_t)O);
    float *X = malloc(sizeof(float) * (size_t)rows * K);
    float *R = malloc(sizeof(float) * (size_t)rows * O);
    float *W0 = malloc(sizeof(float) * (size_t)K * O);
    float *D = calloc((size_t)K * O, sizeof(float));
    gpp_lsq *q = NULL, *chk = NULL;
    int rc = 0;
    if (!omap || !X || !R || !W0 || !D) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "recovery: out of memory");
        goto done;
    }
    for (int o = 0, j = 0; o < oi.C; o++)
        if (!keep || keep[o]) {
            if (j == O) break;
            omap[j++] = o;
        }
    char name[NN_TENSOR_NAME_MAX];
    nn_tensor wt, bt;
    snprintf(name, sizeof name, "%s.weight", pi.name);
    if (nn_net_tensor_find(pruned, name, &wt) != 0) goto done;
    int have_b = 0;
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", pi.name);
        have_b = nn_net_tensor_find(pruned, name, &bt) == 0;
    }
    const int per = K - bias;   /* weights per output */
    for (int o = 0; o < O; o++) {
        for (int j = 0; j < per; j++) W0[(size_t)j * O + o] = wt.data[(size_t)o * per + j];
        if (bias) W0[(size_t)per * O + o] = have_b ? bt.data[o] : 0.0f;
    }
    if ((rc = gpp_lsq_new(K, O, &q, err)) != 0 || (rc = gpp_lsq_new(K, O, &chk, err)) != 0)
        goto done;
    for (int first = 0; first < samples; first += B) {
        int n = fill(user, x, first, samples - first < B ? samples - first : B);
        if (n <= 0) break;
        if ((rc = nn_net_forward(orig, x, NULL, n, 0, NULL, err)) != 0 ||
            (rc = nn_net_forward(pruned, x, NULL, n, 0, NULL, err)) != 0)
            goto done;
        const float *in = nn_net_output(pruned, pi.inputs[0]);
        const float *y = nn_net_output(orig, id);
        for (int i = 0; i < n; i++) {
            const float *yi = y + (size_t)i * oi.C * OHW;
            if (conv) {
                im2col_rows(X, in + (size_t)i * in_len, xi.C, xi.H, xi.W, pi.k, pi.stride,
                            pi.pad, pi.H, pi.W, bias);
            } else {
                memcpy(X, in + (size_t)i * in_len, sizeof(float) * in_len);
                if (bias) X[K - 1] = 1.0f;
            }
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < O; o++) R[(size_t)r * O + o] = yi[(size_t)omap[o] * OHW + r];
            /* R = Y - X W0: what the pruned layer misses */
            nn_gemm(0, 0, rows, O, K, -1.0f, X, K, W0, O, 1.0f, R, O);
            gpp_lsq_add((first + i) % RECOVER_HOLDOUT == RECOVER_HOLDOUT - 1 ? chk : q, X, R,
                        (size_t)rows);
        }
    }
    if ((rc = gpp_lsq_solve(q, RECOVER_RIDGE, D, NULL, err)) != 0) goto done;
    /* held-out residuals: D = 0 is the pruned layer as surgery left it */
    float *zero = calloc((size_t)K * O, sizeof(float));
    if (!zero) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "recovery: out of memory");
        goto done;
    }
    double before = gpp_lsq_residual(chk, zero);
    free(zero);
    double after = gpp_lsq_residual(chk, D);
    if (after < before) {   /* never make a layer worse than surgery left it */
        for (int o = 0; o < O; o++) {
            for (int j = 0; j < per; j++)
                wt.data[(size_t)o * per + j] = W0[(size_t)j * O + o] + D[(size_t)j * O + o];
            if (bias && have_b) bt.data[o] = W0[(size_t)per * O + o] + D[(size_t)per * O + o];
        }
        rep->layers++;
    } else {
        after = before;
        rep->rejected++;
    }
    rep->res_before += before;
    rep->res_after += after;
done:
    gpp_lsq_free(q);
    gpp_lsq_free(chk);
    free(omap);
    free(X);
    free(R);
    free(W0);
    free(D);
    return rc;
}

/* gpp__recover: see stages_internal.h. */
int gpp__recover(nn_net *orig, nn_net *pruned, const uint8_t *const *out_keep, int samples,
                 int max_inputs, gpp__fill_fn fill, void *user, gpp__recover_report *rep,
                 gpp_error *err)
{
    memset(rep, 0, sizeof *rep);
    int B = nn_net_batch(pruned), n = nn_net_num_nodes(pruned);
    if (B < 1 || nn_net_batch(orig) != B || nn_net_num_nodes(orig) != n)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "recovery: the two "
                             "networks must have the same nodes and reserved batch");
    nn_node_info d;
    nn_net_node(pruned, 0, &d);
    float *x = malloc(sizeof(float) * (size_t)B * d.C * d.H * d.W);
    if (!x) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    int rc = 0;
    for (int id = 1; id < n && rc == 0; id++) {
        nn_node_info pi, oi, px, ox;
        nn_net_node(pruned, id, &pi);
        nn_net_node(orig, id, &oi);
        if (pi.op != NN_OP_CONV && pi.op != NN_OP_FC) continue;
        nn_net_node(pruned, pi.inputs[0], &px);
        nn_net_node(orig, oi.inputs[0], &ox);
        long long pin = (long long)px.C * px.H * px.W, oin = (long long)ox.C * ox.H * ox.W;
        if (pin == oin) continue;
        long long K = (pi.op == NN_OP_CONV ? (long long)px.C * pi.k * pi.k : pin) + pi.bias;
        if (K > max_inputs) {
            rep->skipped++;
            continue;
        }
        rc = refit(orig, pruned, id, out_keep ? out_keep[id] : NULL, samples, x, fill, user,
                   (int)K, rep, err);
    }
    free(x);
    return rc;
}
