/* Helpers shared by the files of worker/data (not public API). */
#ifndef GPP_DATA_INTERNAL_H
#define GPP_DATA_INTERNAL_H

#include "gpp/data.h"

/* Group idx[0..n) (all images of ds when idx is NULL) by class, keeping their
 * order: class k's members are (*members)[(*start)[k] .. (*start)[k+1]);
 * *start has classes + 1 entries.  Both arrays are the caller's to free().
 * Returns 0 or GPP_ENOMEM. */
int gpp__data_by_class(const gpp_dataset *ds, const uint32_t *idx, uint32_t n,
                       uint32_t **members, uint32_t **start, gpp_error *err);


#endif
