/* common/pick.c - see gpp/pick.h. */
#include "gpp/pick.h"

void gpp_pick_models(const gpp_pick_item *items, int n, double max_drop, int *base,
                     int *acc_first, int *size_first)
{
    int b = -1, recovered = -1;
    for (int i = 0; i < n; i++) {
        if (items[i].role == GPP_PICK_BASE) b = i;
        if (items[i].role == GPP_PICK_FINETUNE && items[i].from >= 0) recovered = items[i].from;
    }
    double bound = (b >= 0 ? items[b].val : 0.0) - max_drop - 1e-12;
    int acc = b, size = b;
    double best = -1.0, small = 0.0;
    for (int i = 0; i < n; i++) {
        const gpp_pick_item *it = &items[i];
        if (it->role != GPP_PICK_PRUNE && it->role != GPP_PICK_FINETUNE) continue;
        if (i == recovered) continue;
        if (it->val > best) {
            best = it->val;
            acc = i;
        }
        if (it->val >= bound && (size == b || it->params < small)) {
            small = it->params;
            size = i;
        }
    }
    if (size == b) size = acc;
    if (base) *base = b;
    if (acc_first) *acc_first = acc;
    if (size_first) *size_first = size;
}
