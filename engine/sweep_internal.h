/* What the exact sweep (engine/sweep.c) and attribution patching (engine/atp.c) share: the
 * checks of a cvene_sweep_params against a model and a prompt pair (not public). */
#ifndef CVENE_SWEEP_INTERNAL_H
#define CVENE_SWEEP_INTERNAL_H

#include "cvene.h"

cvene_status sweep_check_params(cvene_ctx *ctx, const cvene_model_info *mi, const cvene_sweep_params *p, int T,
                                const int32_t *base, const int32_t *src);

#endif
