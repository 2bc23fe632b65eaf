/* The trainer's internals that tests reach (not public: cvene.h has the API). */
#ifndef CVENE_TRAIN_H
#define CVENE_TRAIN_H

#include "engine/trainable.h"

/* Intervention k's tensors (parameters, their gradients and optimizer moments). */
tr_weights *train_weights(cvene_trainer *t, int k);
/* One forward and backward of examples idx[0..B) of d, without an optimizer step: the mean loss in
 * *loss and every parameter's gradient in its tensor's grad (zeroed first). */
cvene_status train_gradients(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B, double *loss);
/* Every row of every example runs from now on (the reference for live rows: model_train_pass);
 * the caches are rebuilt on the next call that needs them. */
void train_full_rows(cvene_trainer *t);
/* 1 when the last pass ran live rows only. */
int train_live_rows(const cvene_trainer *t);

#endif
