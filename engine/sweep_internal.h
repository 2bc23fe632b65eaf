/* What the exact sweep (engine/sweep.c) and attribution patching (engine/atp.c) share: the
 * checks of a cvene_sweep_params against a model and a prompt pair (not public). */
#ifndef CVENE_SWEEP_INTERNAL_H
#define CVENE_SWEEP_INTERNAL_H

#include "cvene.h"

cvene_status sweep_check_params(cvene_ctx *ctx, const cvene_model_info *mi, const cvene_sweep_params *p, int T,
                                const int32_t *base, const int32_t *src);

/* cvene_sweep on more than one rank (engine/sweep_ranks.c) */
cvene_status sweep_on_ranks(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                            const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary);

#endif
