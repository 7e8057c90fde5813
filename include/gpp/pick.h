/* gpp/pick.h - which results a GPP job reports (METHOD.md, "The loop"):
 * the baseline (the model pruning starts from), the accuracy-first model
 * (best validation accuracy) and the size-first model (fewest parameters
 * within stop.max_accuracy_drop of the baseline's validation accuracy).
 * `gpp-worker run` and the daemon decide with this one function, and with it
 * which model the final recovery (the `finetune` stage) starts from.
 *
 * Candidates are the prune results.  A finetune result (the final recovery
 * of a size-first prune that had only prune.finetune_epochs of recovery)
 * takes the place of the prune it recovered (`from`): that prune is no
 * longer a candidate, the finetune result is one. */
#ifndef GPP_PICK_H
#define GPP_PICK_H

typedef enum gpp_pick_role {
    GPP_PICK_OTHER = 0,     /* push, a baseline, an unfinished stage: ignored */
    GPP_PICK_BASE,          /* train / grow: the last one is the baseline */
    GPP_PICK_PRUNE,
    GPP_PICK_FINETUNE,
} gpp_pick_role;

typedef struct gpp_pick_item {
    gpp_pick_role role;
    int from;               /* GPP_PICK_FINETUNE: the index (in the same array) of
                               the prune it recovered, or -1 */
    double val;             /* validation accuracy, 0..1 */
    double params;
} gpp_pick_item;

/* *base: the last GPP_PICK_BASE item (-1 when none).  *acc_first: the
 * candidate with the best val (the first of equals); *size_first: the
 * candidate with the fewest params among those with val >= base's val -
 * max_drop (the first of equals), else *acc_first.  Both are *base while
 * there is no candidate.  Any out pointer may be NULL. */
void gpp_pick_models(const gpp_pick_item *items, int n, double max_drop, int *base,
                     int *acc_first, int *size_first);

#endif
