/* Trainable interventions (issue #13): their tensors by pyvene's state-dict names, and their
 * forward and backward on the units of a site.
 *
 * An intervention acts on n units of D floats: the base's xb (n, D) and the source's xs (n, D)
 * gathered at their locations, giving out (n, D) scattered back. The backward takes g, the
 * loss's gradient for out, accumulates the gradients of the intervention's parameters and
 * gives dxb, the gradient for the base units (what the model's backward continues with). The
 * source comes from a frozen run: no gradient goes there. Row-vector convention as pyvene
 * (x @ W); W is the materialised rotation of an orthogonal parametrization (engine/orthogonal.h).
 *
 *   LowRankRotatedSpace  W (D, r):  out = xb + (xs W - xb W) W^T
 *   RotatedSpace         W (D, D):  out = mix W^T,  mix = xb W with its first k dims from xs W
 *   BoundlessRotatedSpace           mix = (1 - m) * xb W + m * xs W, m_i = sig(i / t) sig((b D - i) / t),
 *                                   b = clamp(boundary, 1e-3, 1)
 *   SigmoidMaskRotatedSpace         mix as Boundless with m = sig(masks / t)
 *   SigmoidMask          (no rotation): out = (1 - m) * xb + m * xs, m = sig(mask / t)
 *   LoreftIntervention   W (D, r), Linear A (r, D) + a:  out = xb + (xb A^T + a - xb W) W^T
 * Everything on the backend's device through its op table; the parametrizations and the small
 * mask vectors on the host. */
#ifndef CVENE_TRAINABLE_H
#define CVENE_TRAINABLE_H

#include <stdint.h>

#include "engine/orthogonal.h"
#include "kernels/ctx.h"

#define TR_MAX_TENSORS 8

/* One tensor of an intervention, named as pyvene's state dict names it. */
typedef struct {
    char name[80];
    int ndim;           /* 0 (a scalar), 1 or 2 */
    int64_t shape[2];
    int64_t numel;
    float *value;       /* host, f32 (torch's parameters are f32) */
    int trainable;      /* updated by the optimizer */
    float *grad;        /* host, accumulated by backward (trainable tensors only) */
    float *m, *v;       /* the optimizer's moments (trainable tensors only) */
} tr_tensor;

/* The tensors of one trainable intervention. */
typedef struct tr_weights {
    cvene_intervention_type type;
    int D, r;           /* unit width; rank (low-rank types) or interchange dims (RotatedSpace) */
    int n;
    tr_tensor t[TR_MAX_TENSORS];
} tr_weights;

/* A type's parameters for unit width D and rank / interchange dims r, initialised as pyvene
 * initialises them (an orthogonal rotation from a QR of Gaussian noise drawn from seed, the
 * parametrization's original = -I, pyvene's mask and boundary values); not the same numbers as
 * torch (its RNG), so parity runs load pyvene's initial tensors instead (tr_weights_set). */
cvene_status tr_weights_init(cvene_ctx *ctx, tr_weights *w, cvene_intervention_type type, int D, int r,
                             uint64_t seed);
void tr_weights_free(tr_weights *w);
/* The tensor called name, or NULL. */
tr_tensor *tr_weights_find(tr_weights *w, const char *name);
/* Copies (deep) src into dst (zeroed or freed before). */
cvene_status tr_weights_copy(cvene_ctx *ctx, tr_weights *dst, const tr_weights *src);
/* Zero every gradient. */
void tr_weights_zero_grad(tr_weights *w);
/* 1 for the trainable types. */
int tr_type_trainable(cvene_intervention_type t);
/* pyvene's temperature of the masked types (Boundless, SigmoidMask*): set by an annealing
 * schedule, as pyvene's set_temperature; 0 for the others. */
int tr_has_temperature(const tr_weights *w);
void tr_set_temperature(tr_weights *w, float t);

/* The compute state of one intervention for units of up to n_max rows: device buffers and the
 * parametrization. Built once per training run (or cvene_run), reused every step. */
typedef struct tr_state tr_state;
cvene_status tr_state_new(cvene_ctx *ctx, tr_weights *w, int n_max, tr_state **out);
void tr_state_free(tr_state *s);
/* Materialise the parameters for this step (the rotation from its parametrization, the mask)
 * and upload them. Call after every optimizer step, before the forward. */
cvene_status tr_prepare(tr_state *s);
/* out (n, D) = f(xb, xs) on the device; keeps what the backward needs. out may alias xb. */
cvene_status tr_forward(tr_state *s, float *out, const float *xb, const float *xs, int n);
/* Given g (n, D), the gradient for the last forward's out: accumulates the parameters' device
 * gradients and writes dxb (n, D) (NULL: not needed). dxb may alias g. */
cvene_status tr_backward(tr_state *s, float *dxb, const float *g, int n);
/* Bring the step's device gradients into the host tensors' grad (through the parametrization:
 * the gradient of `original` from the rotation's), and clear the device ones. */
cvene_status tr_finish_grads(tr_state *s);

#endif
