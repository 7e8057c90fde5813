/* Channel surgery: remove output channels of a layer and update every
 * consumer (METHOD.md "Prune", step 4).
 *
 * The removal is first traced back to the layers that make the channels (a
 * conv or fc; bn, relu, pools and dropout pass channels through; a concat
 * splits them between its branches).  Then a keep-mask per node output is
 * propagated forward in topological order, which updates every consumer at
 * once: a conv drops input slices, an fc drops columns (through a flatten,
 * the whole H*W block of a channel), a bn drops entries, a concat's later
 * slices shift.  Finally the parameter, momentum and state blocks are
 * re-packed for the new layout. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct surgery {
    nn_net *net;
    unsigned char **cut;       /* per node: output channels to remove (conv/fc) */
    unsigned char **keep;      /* per node: output channels kept */
    gpp_error *err;
} surgery;

static int fail(gpp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(gpp_error *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "channels", "%s", msg);
}

/* Mark channels `ch[0..n)` of node id's output for removal at their maker. */
static int trace(surgery *s, int id, const int *ch, int n)
{
    nn_net *net = s->net;
    nn_node *nd = &net->nodes[id];
    switch (nd->op) {
    case NN_OP_CONV:
    case NN_OP_FC:
        if (!s->cut[id]) {
            s->cut[id] = calloc((size_t)nd->C, 1);
            if (!s->cut[id])
                return gpp_error_set(s->err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        }
        for (int i = 0; i < n; i++) s->cut[id][ch[i]] = 1;
        return 0;
    case NN_OP_BN:
    case NN_OP_RELU:
    case NN_OP_MAXPOOL:
    case NN_OP_AVGPOOL:
    case NN_OP_GAP:
    case NN_OP_DROPOUT:
        return trace(s, nd->in[0], ch, n);
    case NN_OP_FLATTEN: {
        const nn_node *in = &net->nodes[nd->in[0]];
        if (in->H * in->W != 1)
            return fail(s->err, "\"%s\" flattens %dx%d maps: its features are not channels "
                        "(remove channels of \"%s\" instead)", nd->name, in->H, in->W, in->name);
        return trace(s, nd->in[0], ch, n);
    }
    case NN_OP_CONCAT: {
        int off = 0, rc = 0;
        int *sub = malloc(sizeof(int) * (size_t)(n ? n : 1));
        if (!sub) return gpp_error_set(s->err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        for (int k = 0; k < nd->n_in && rc == 0; k++) {
            int ck = net->nodes[nd->in[k]].C, m = 0;
            for (int i = 0; i < n; i++)
                if (ch[i] >= off && ch[i] < off + ck) sub[m++] = ch[i] - off;
            if (m) rc = trace(s, nd->in[k], sub, m);
            off += ck;
        }
        free(sub);
        return rc;
    }
    case NN_OP_INPUT:
        return fail(s->err, "channels of the data cannot be removed");
    default:
        return fail(s->err, "cannot remove channels of \"%s\" (%s)", nd->name, nn_op_name(nd->op));
    }
}

/* Forward pass of keep-masks over every node. */
static int propagate(surgery *s)
{
    nn_net *net = s->net;
    for (int id = 0; id < net->n_nodes; id++) {
        nn_node *nd = &net->nodes[id];
        unsigned char *k = malloc((size_t)nd->C);
        if (!k) return gpp_error_set(s->err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        s->keep[id] = k;
        const unsigned char *in = id ? s->keep[nd->in[0]] : NULL;
        switch (nd->op) {
        case NN_OP_CONV:
        case NN_OP_FC:
            for (int c = 0; c < nd->C; c++) k[c] = !(s->cut[id] && s->cut[id][c]);
            break;
        case NN_OP_CONCAT: {
            int off = 0;
            for (int j = 0; j < nd->n_in; j++) {
                int cj = net->nodes[nd->in[j]].C;
                memcpy(k + off, s->keep[nd->in[j]], (size_t)cj);
                off += cj;
            }
            break;
        }
        case NN_OP_FLATTEN: {
            const nn_node *x = &net->nodes[nd->in[0]];
            int hw = x->H * x->W;
            for (int c = 0; c < nd->C; c++) k[c] = in[c / hw];
            break;
        }
        case NN_OP_INPUT:
            memset(k, 1, (size_t)nd->C);
            break;
        default:   /* channel-preserving (the softmax's are the logits) */
            memcpy(k, in, (size_t)nd->C);
            break;
        }
        int kept = 0;
        for (int c = 0; c < nd->C; c++) kept += k[c];
        if (kept == 0)
            return fail(s->err, "removing every channel of \"%s\" is not allowed", nd->name);
        if (nd->op == NN_OP_SOFTMAX_CE && kept != nd->C)
            return fail(s->err, "the logits (the classes) cannot be removed");
    }
    return 0;
}

/* Copy the kept entries of one node's tensors from the old blocks (at the
 * offsets in `old`) to the new (at the offsets in `nw`). */
static void repack_node(const surgery *s, int id, const nn_node *old, const nn_node *nw,
                        const float *const src[4], float *const dst[4])
{
    const nn_net *net = s->net;   /* its nodes are the old ones while this runs */
    const unsigned char *ko = s->keep[id];
    if (old->op == NN_OP_CONV || old->op == NN_OP_FC) {
        const nn_node *x = &net->nodes[old->in[0]];   /* shapes before surgery: x is old */
        const unsigned char *ki = s->keep[old->in[0]];
        int per_out = (int)(old->w_len / old->nout);   /* C*K*K or IN = C*H*W */
        int blk = old->op == NN_OP_CONV ? old->k * old->k : x->H * x->W;
        int nin = per_out / blk;                          /* input channels */
        for (int b = 0; b < 2; b++) {          /* params, momentum (grads zeroed) */
            const float *w = src[b] + old->w_off;
            float *o = dst[b] + nw->w_off;
            for (int oc = 0; oc < old->nout; oc++) {
                if (!ko[oc]) continue;
                for (int c = 0; c < nin; c++) {
                    if (!ki[c]) continue;
                    memcpy(o, w + ((size_t)oc * nin + c) * blk, sizeof(float) * (size_t)blk);
                    o += blk;
                }
            }
            if (old->b_len) {
                const float *bs = src[b] + old->b_off;
                float *bo = dst[b] + nw->b_off;
                for (int oc = 0; oc < old->nout; oc++)
                    if (ko[oc]) *bo++ = bs[oc];
            }
        }
    } else if (old->op == NN_OP_BN) {
        for (int b = 0; b < 2; b++) {
            const float *g = src[b] + old->w_off, *be = src[b] + old->b_off;
            float *go = dst[b] + nw->w_off, *bo = dst[b] + nw->b_off;
            for (int c = 0; c < old->C; c++)
                if (ko[c]) {
                    *go++ = g[c];
                    *bo++ = be[c];
                }
        }
        const float *rm = src[3] + old->s_off, *rv = rm + old->C;
        float *mo = dst[3] + nw->s_off, *vo = mo + nw->C;
        for (int c = 0; c < old->C; c++)
            if (ko[c]) {
                *mo++ = rm[c];
                *vo++ = rv[c];
            }
    }
}

/* nn_net_remove_channels: see gpp/nn.h. */
int nn_net_remove_channels(nn_net *net, int node, const int *channels, int n,
                           gpp_error *err)
{
    if (node < 1 || node >= net->n_nodes - 1)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "node",
                             "node %d is not a layer whose channels can be removed", node);
    const nn_node *target = &net->nodes[node];
    if (n < 1 || !channels)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "channels",
                             "no channels to remove from \"%s\"", target->name);
    unsigned char *seen = calloc((size_t)target->C, 1);
    if (!seen) return gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    for (int i = 0; i < n; i++) {
        if (channels[i] < 0 || channels[i] >= target->C || seen[channels[i]]) {
            int c = channels[i];
            free(seen);
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "channels",
                                 "channel %d of \"%s\" is out of 0..%d or repeated", c,
                                 target->name, target->C - 1);
        }
        seen[channels[i]] = 1;
    }
    free(seen);

    int rc = 0;
    nn_node *old = NULL;
    float *nb[4] = {NULL, NULL, NULL, NULL};
    surgery s = {.net = net, .err = err};
    s.cut = calloc((size_t)net->n_nodes, sizeof *s.cut);
    s.keep = calloc((size_t)net->n_nodes, sizeof *s.keep);
    old = malloc(sizeof(nn_node) * (size_t)net->n_nodes);
    if (!s.cut || !s.keep || !old) {
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
        goto done;
    }
    if ((rc = trace(&s, node, channels, n)) != 0) goto done;
    if ((rc = propagate(&s)) != 0) goto done;

    /* a device net: the host mirrors, brought up to date (old layout) */
    nn__params_host(net);
    /* the new layout: conv/fc widths shrink, the rest is inferred */
    memcpy(old, net->nodes, sizeof(nn_node) * (size_t)net->n_nodes);
    size_t old_params = net->n_params, old_state = net->n_state;
    for (int id = 1; id < net->n_nodes; id++) {
        nn_node *nd = &net->nodes[id];
        if (nd->op != NN_OP_CONV && nd->op != NN_OP_FC) continue;
        int kept = 0;
        for (int c = 0; c < nd->C; c++) kept += s.keep[id][c];
        nd->nout = kept;
    }
    if ((rc = nn__net_infer(net, err)) != 0) goto restore;
    for (int b = 0; b < 3; b++) {
        nb[b] = calloc(net->n_params ? net->n_params : 1, sizeof(float));
        if (!nb[b]) goto oom_restore;
    }
    nb[3] = calloc(net->n_state ? net->n_state : 1, sizeof(float));
    if (!nb[3]) goto oom_restore;
    {
        /* blocks: 0 params, 1 momentum, 2 grads (zero), 3 state */
        const float *src[4] = {net->hparams, net->hmom, net->hgrads, net->hstate};
        float *const dst[4] = {nb[0], nb[1], nb[2], nb[3]};
        /* shapes of inputs in repack_node are read from `old` through the
         * net: swap the old nodes in while copying */
        nn_node *cur = net->nodes;
        net->nodes = old;
        for (int id = 1; id < net->n_nodes; id++)
            repack_node(&s, id, &old[id], &cur[id], src, dst);
        net->nodes = cur;
    }
    if (nn__net_set_blocks(net, nb[0], nb[1], nb[2], nb[3]) != 0) {   /* frees nb on error */
        rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "",
                           "out of %s memory for the cut network", net->ctx->device);
        goto restore;
    }
    if (net->batch > 0) {
        int batch = net->batch;
        net->batch = 0;
        rc = nn_net_reserve(net, batch, err);
    }
    goto done;
oom_restore:
    rc = gpp_error_set(err, GPP_ENOMEM, "out_of_memory", "", "out of memory");
    for (int b = 0; b < 4; b++) free(nb[b]);
restore:
    memcpy(net->nodes, old, sizeof(nn_node) * (size_t)net->n_nodes);
    net->n_params = old_params;
    net->n_state = old_state;
done:
    if (s.cut)
        for (int i = 0; i < net->n_nodes; i++) free(s.cut[i]);
    if (s.keep)
        for (int i = 0; i < net->n_nodes; i++) free(s.keep[i]);
    free(s.cut);
    free(s.keep);
    free(old);
    return rc;
}
