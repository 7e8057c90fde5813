/* worker/gpp/stages_internal.h - the pieces of the GPP stages shared between
 * the files of worker/gpp and their unit tests (tests/unit/gpp); not public
 * API.  Names are gpp__*. */
#ifndef GPP_STAGES_INTERNAL_H
#define GPP_STAGES_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gpp/error.h"
#include "gpp/nn.h"
#include "gpp/stages.h"

/* ---- hex words in JSON (state.c) -------------------------------------------
 * uint64 values do not survive a JSON number; the checkpoint's state keeps
 * them as 16-digit lower-case hex strings. */

/* A new array of n hex strings, or NULL when out of memory. */
cJSON *gpp__hex_array(const uint64_t *w, int n);
/* Read exactly n hex strings from arr into w: 0, or GPP_EFORMAT. */
int gpp__hex_read(const cJSON *arr, uint64_t *w, int n);

/* ---- the network's channel structure (netutil.c) --------------------------- */

/* 1 when node id makes channels a pruning may remove: a conv, or an fc that
 * is not the one producing the logits. */
int gpp__prunable(const nn_net *net, int id);

/* The maker of channel ch of node id's output: walks back through bn, relu,
 * pools, dropout, global-avgpool, flatten of 1x1 maps and concatenation
 * offsets to the conv or fc that makes it.  0 with *maker and *mch (the
 * channel's index there), or -1 when the channel comes from the data or
 * from a flatten of spatial maps. */
int gpp__channel_maker(const nn_net *net, int id, int ch, int *maker, int *mch);

/* ---- deconvolution tracing (trace.c, METHOD.md 4.2) -------------------------
 * A Zeiler-Fergus deconvnet from the pre-decision layer down to the data:
 * the kept pre-decision responses (the others zeroed) are projected back
 * through fc (W^T), ReLU (max(0, signal): rectified, not masked by the
 * forward activation), max-pool (unpooled through the forward's switches),
 * average and global-average pooling (spread evenly, as their gradient),
 * conv (transposed convolution), batch norm (times gamma/sqrt(var + eps),
 * shift ignored), flatten (reshape), dropout (identity) and concat (split by
 * channel range; each branch traced separately, the branches summed where
 * they meet).  Each node's signal is summed over the images; its mean is
 * the node's mean reconstruction. */
typedef struct gpp_trace gpp_trace;

/* A tracer for `net` (which must be reserved; batches up to its batch).
 * Returns 0 and *out (free with gpp__trace_free) or GPP_EINVAL (no
 * pre-decision layer) / GPP_ENOMEM. */
int gpp__trace_new(nn_net *net, gpp_trace **out, gpp_error *err);
/* Free (NULL is fine). */
void gpp__trace_free(gpp_trace *t);
/* Forward x [n, C, H, W] (evaluation mode), then trace the pre-decision
 * features h * keep (keep [M] of 0/1, M = the pre-decision's C*H*W; NULL
 * keeps all) back and add every node's signal to its sum.  0 or GPP_EINVAL. */
int gpp__trace_add(gpp_trace *t, const float *x, int n, const uint8_t *keep, gpp_error *err);
/* Images traced so far. */
long long gpp__trace_images(const gpp_trace *t);
/* Node id's summed signal [C*H*W] in double (NULL for the data node and
 * nodes after the pre-decision layer). */
const double *gpp__trace_sum(const gpp_trace *t, int id);
/* Channel utilities of node id: u[c] = max over the map of |mean
 * reconstruction| of channel c (the mean over the images traced).  u has
 * the node's C entries.  0, or GPP_EINVAL. */
int gpp__trace_channel_utility(const gpp_trace *t, int id, double *u);

/* ---- grow (grow.c, METHOD.md 2) --------------------------------------------- */

/* The global average pooling that feeds the pre-decision layer (through
 * relu, bn, dropout, flatten and hidden fc layers), or -1. */
int gpp__grow_site(const nn_net *net);

/* The widths {1x1, 3x3 reduce, 3x3, double-3x3 reduce, double-3x3,
 * pool proj} a new module gets: `given` when not NULL (grow.widths), else
 * those of the last Inception module before the site (a concat whose
 * branches are named <p>_b1, <p>_b2a, <p>_b2b, <p>_b3a, <p>_b3b, <p>_b4),
 * else widths that sum to the site's input channels C (1x1 C/4, 3x3 3C/8,
 * double-3x3 3C/16, pool proj the rest; reduces 3/4 and 1/2 of their
 * branch).  0 or GPP_EINVAL (no site). */
int gpp__grow_widths(const nn_net *net, const int *given, int w[6], gpp_error *err);

/* A new net: `net` with a basic Inception module (1x1; 1x1 -> 3x3;
 * 1x1 -> 3x3 -> 3x3; 3x3 max-pool stride 1 pad 1 -> 1x1; concatenated;
 * each conv followed by bn (when the net has any bn, with bias off) and
 * relu) named "<prefix>_b1" ... "<prefix>_concat" inserted between the
 * global average pooling and its input.  Every tensor of `net` is copied
 * bit for bit; the module is He-initialised from `seed`; the new net lives
 * on ctx.  When the concat's width equals the old input width the fc
 * reading the pooling (the classifier, or a hidden fc) is kept
 * (*fc_kept = 1); otherwise it is re-initialised (*fc_kept = 0).  The new
 * net is reserved for net's batch.  Returns 0 and *out, or a negative
 * GPP_E*. */
int gpp__grow_insert(nn_ctx *ctx, nn_net *net, const char *prefix, const int w[6],
                     uint64_t seed, nn_net **out, int *fc_kept, gpp_error *err);

/* ---- least-squares recovery (recover.c, METHOD.md 4.5) ---------------------- */

/* A batch source for recovery: fill x [n, C, H, W] with samples
 * first .. first+n-1 of the recovery set; returns n actually filled. */
typedef int (*gpp__fill_fn)(void *user, float *x, int first, int n);

typedef struct gpp__recover_report {
    int layers;          /* consumer layers re-fitted */
    int rejected;        /* fits not kept (no better on the held-out samples) */
    int skipped;         /* consumers skipped (too many inputs) */
    double res_before;   /* held-out ||X W_old' - Y||^2 summed over the consumers
                            (W_old' = the weights surgery left) */
    double res_after;    /* the same with the weights kept */
} gpp__recover_report;

/* Re-fit every conv / fc of `pruned` whose input lost channels against
 * `orig` (the same net before surgery, same node ids): its weights (and
 * bias) become W_old' + D with D solving min ||X D - (Y - X W_old')||^2 +
 * ridge ||D||^2, W_old' the weights surgery left, X the layer's input in
 * the pruned net (im2col rows for a conv), Y the unpruned layer's output
 * (its kept channels: out_keep[id] when the layer lost outputs too, else
 * all), fitted on 4 of every 5 of `samples` samples from `fill`; the fit is
 * kept only when it lowers the residual on the fifth.  Layers go in
 * topological order (each fit sees the earlier ones); layers with more than
 * max_inputs inputs are skipped.  Both nets must be reserved for the same
 * batch.  0 or a negative GPP_E*. */
int gpp__recover(nn_net *orig, nn_net *pruned, const uint8_t *const *out_keep, int samples,
                 int max_inputs, gpp__fill_fn fill, void *user, gpp__recover_report *rep,
                 gpp_error *err);

/* ---- distillation (stage.c, prune.distill) ----------------------------------
 * The term w*T^2*KL(softmax(Zt/T) || softmax(Zs/T)) averaged over the m
 * samples (like the cross-entropy) for student logits Zs [m, K] and teacher
 * logits Zt [m, K]: returns its value and writes its gradient with respect
 * to Zs into dZ [m, K] (w*T*(softmax(Zs/T) - softmax(Zt/T))/m). */
double gpp__distill_grad(const float *Zs, const float *Zt, int m, int K, double w, double T,
                         float *dZ);

#endif
