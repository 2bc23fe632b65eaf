/* Trained interventions in cvene_run: the weights of a config's trainable representations
 * (cvene_config_load_weights) and their compute state (engine/trainable.h), built on the first
 * run that needs it and kept with the config while the widths and the context stay the same.
 * A config holding this state must not run on two threads at once. */
#ifndef CVENE_TRAINED_H
#define CVENE_TRAINED_H

#include "cvene.h"
#include "engine/trainable.h"

typedef struct iv_trained iv_trained;
void iv_trained_free(iv_trained *t);

/* A representation's parameters for units of `width` floats (its stream's width, times
 * max_number_of_units for the types that flatten them), initialised from seed: what its type
 * takes from low_rank_dimension and interchange_dim (the trainer's and cvene_run's rule). */
cvene_status tr_weights_for_rep(cvene_ctx *ctx, const cvene_representation *r, int index, int width, uint64_t seed,
                                tr_weights *w);

/* 1 when representation i has weights loaded. */
int iv_trained_loaded(const cvene_config *c, int i);
/* Representation i's compute state on ctx for units of `width` floats and at least rows rows,
 * prepared (its rotation materialised); owned by the config. */
cvene_status iv_trained_state(const cvene_config *c, int i, cvene_ctx *ctx, int width, int rows, tr_state **out);

#endif
