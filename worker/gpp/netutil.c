/* The network's channel structure as the prune step sees it: which layers
 * make channels that may go, and which layer makes a given channel. */
#include "stages_internal.h"

/* The node that makes the logits' channels (the classifier), or -1. */
static int logits_maker(const nn_net *net)
{
    int id = nn_net_logits(net);
    nn_node_info in;
    while (id > 0 && nn_net_node(net, id, &in) == 0) {
        if (in.op == NN_OP_CONV || in.op == NN_OP_FC) return id;
        if (in.n_inputs != 1) return -1;
        id = in.inputs[0];
    }
    return -1;
}

/* gpp__prunable: see stages_internal.h. */
int gpp__prunable(const nn_net *net, int id)
{
    nn_node_info in;
    if (nn_net_node(net, id, &in) != 0) return 0;
    if (in.op != NN_OP_CONV && in.op != NN_OP_FC) return 0;
    return id != logits_maker(net);
}

/* gpp__channel_maker: see stages_internal.h. */
int gpp__channel_maker(const nn_net *net, int id, int ch, int *maker, int *mch)
{
    for (;;) {
        nn_node_info in;
        if (nn_net_node(net, id, &in) != 0 || ch < 0 || ch >= in.C) return -1;
        switch (in.op) {
        case NN_OP_CONV:
        case NN_OP_FC:
            *maker = id;
            *mch = ch;
            return 0;
        case NN_OP_BN:
        case NN_OP_RELU:
        case NN_OP_MAXPOOL:
        case NN_OP_AVGPOOL:
        case NN_OP_GAP:
        case NN_OP_DROPOUT:
            id = in.inputs[0];
            break;
        case NN_OP_FLATTEN: {
            nn_node_info x;
            nn_net_node(net, in.inputs[0], &x);
            if (x.H * x.W != 1) return -1;
            id = in.inputs[0];
            break;
        }
        case NN_OP_CONCAT: {
            int off = 0, found = 0;
            for (int k = 0; k < in.n_inputs; k++) {
                nn_node_info x;
                nn_net_node(net, in.inputs[k], &x);
                if (ch < off + x.C) {
                    ch -= off;
                    id = in.inputs[k];
                    found = 1;
                    break;
                }
                off += x.C;
            }
            if (!found) return -1;
            break;
        }
        default:
            return -1;
        }
    }
}
