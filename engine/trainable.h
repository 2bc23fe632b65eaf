/* Trainable interventions (issue #13): their tensors by pyvene's state-dict names, and their
 * forward and backward on the units of a site.
 *
 * An intervention acts on n units of D floats: the base's xb (n, D) and the source's xs (n, D)
 * gathered at their locations, giving out (n, D) scattered back. The backward takes g, the
 * loss's gradient for out, accumulates the gradients of the intervention's parameters and
 * gives dxb, the gradient for the base units (what the model's backward continues with), and,
 * when asked (tr_backward_ex), dxs for the source units (a trainer's sources come from a frozen
 * run: no gradient goes there). Row-vector convention as pyvene (x @ W); W is the materialised
 * rotation of an orthogonal parametrization (engine/orthogonal.h). M is the swap mask: 1 on the
 * swapped dims (interchange_dim's first k, or a row's subspaces), 0 elsewhere.
 *
 * Each type is one entry of a table (engine/tr_type.h) in its family's file:
 * engine/tr_rotate.c (pyvene's rotations and masks)
 *   RotatedSpace         W (D, D):  out = mix W^T,  mix = xb W with the dims of M from xs W
 *   LowRankRotatedSpace  W (D, r):  out = xb + ((xs W - xb W) * M) W^T  (M: rank columns; all without
 *                                   subspaces)
 *   BoundlessRotatedSpace           mix = (1 - m) * xb W + m * xs W, m_i = sig(i / t) sig((b D - i) / t),
 *                                   b = clamp(boundary, 1e-3, 1)
 *   SigmoidMaskRotatedSpace         mix as Boundless with m = sig(masks / t)
 *   SigmoidMask          (no rotation): out = (1 - m) * xb + m * xs, m = sig(mask / t)
 * engine/tr_reft.c (pyreft 0.1.0's, sourceless; W (D, r) orthonormal columns; A, a = learned_source
 * Linear(D, r); P, p = proj_layer Linear(D, r), not orthogonal; c = a learned (r) vector; act = identity)
 *   LoreftIntervention   out = xb + (xb A^T + a - xb W) W^T
 *   NoreftIntervention   out = xb + (xb A^T + a - (xb P^T + p)) P       (p only with add_bias)
 *   ConsreftIntervention out = xb + (c - xb W) W^T
 *   LobireftIntervention out = xb + c W^T
 *   DireftIntervention   out = xb + (xb A^T + a) W^T
 *   NodireftIntervention out = xb + (xb A^T + a) P                     (proj_layer.bias unused)
 * engine/tr_autoencoder.c (a basis or code from data: swap in the latent, decode)
 *   PCARotatedSpace      C (k, D) components, mu, sd (D): r* = ((x - mu) / sd) C^T;
 *                        out = (mix C) * sd + mu, mix = rb* with the dims of M from rs*; frozen (no
 *                        gradient), set by tr_pca_fit or loaded
 *   Autoencoder          z* = relu((x - b_dec) W_enc^T + b_enc), W_enc (L, D), W_dec (D, L);
 *                        out = (zb (1 - M) + zs M) W_dec^T + b_dec; M = the interchange_dim INDICES
 *   JumpReLUAutoencoder  z* = 1[pre > theta] relu(pre), pre = x W_enc + b_enc, W_enc (D, L);
 *                        out = (zb (1 - M) + zs M) W_dec + b_dec; theta gets no gradient (as torch)
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
    int trainable;      /* updated by the optimizer (torch gives it a gradient) */
    float *grad;        /* host, accumulated by backward (trainable tensors, and Boundless's temperature:
                         * torch gives it a gradient, the tutorials anneal it instead) */
    float *m, *v;       /* the optimizer's moments (trainable tensors only) */
} tr_tensor;

/* The tensors of one trainable intervention. */
typedef struct tr_weights {
    cvene_intervention_type type;
    int D, r;           /* unit width; r: the rank (LowRank, pyreft's), the interchange dims
                         * (RotatedSpace, PCARotatedSpace) or the latent width (autoencoders) */
    int n;
    tr_tensor t[TR_MAX_TENSORS];
    /* pyvene's interchange_dim where it is not r (set with tr_weights_set_interchange): the
     * Autoencoder's latent INDICES (pyvene indexes with it: an int or a list), JumpReLU's swapped
     * latent prefix (min(k, r)). n_inter 0: pyvene's default, embed_dim. */
    int n_inter, inter_list; /* inter_list: pyvene holds a list (tolist() gives one) */
    int *inter;
} tr_weights;

/* A type's parameters for unit width D and rank / interchange dims / latent width r, initialised
 * as pyvene initialises them (an orthogonal rotation from a QR of Gaussian noise drawn from seed,
 * the parametrization's original = -I, pyvene's mask and boundary values, nn.Linear's uniform
 * bounds, JumpReLU's zeros, PCA's identity basis); not the same numbers as torch (its RNG), so
 * parity runs load pyvene's initial tensors instead (tr_weights_set). */
cvene_status tr_weights_init(cvene_ctx *ctx, tr_weights *w, cvene_intervention_type type, int D, int r,
                             uint64_t seed);
void tr_weights_free(tr_weights *w);
/* The tensor called name, or NULL. */
tr_tensor *tr_weights_find(tr_weights *w, const char *name);
/* Copies (deep) src into dst (zeroed or freed before). */
cvene_status tr_weights_copy(cvene_ctx *ctx, tr_weights *dst, const tr_weights *src);
/* Zero every gradient. */
void tr_weights_zero_grad(tr_weights *w);
/* pyvene's set_interchange_dim(dims): RotatedSpace / PCARotatedSpace take one value (their r);
 * the Autoencoder its latent indices (list: pyvene got a list), JumpReLU one prefix length. Other
 * types keep embed_dim (pyvene's forward ignores it there). */
cvene_status tr_weights_set_interchange(cvene_ctx *ctx, tr_weights *w, const int *dims, int n, int list);
/* pyreft's add_bias of NoreftIntervention / NodireftIntervention: whether proj_layer has a bias
 * (tr_weights_init gives NoReFT one and NodiReFT none; a loaded state dict decides too). */
cvene_status tr_weights_set_proj_bias(cvene_ctx *ctx, tr_weights *w, int add_bias);
/* pyvene's interchange_dim of w as its buffer and config.json's intervention_dimensions hold it:
 * writes up to max values to out, their count to *n; returns 1 when pyvene holds a list. */
int tr_interchange_dim(const tr_weights *w, int64_t *out, int max, int *n);

/* 1 for the types of this table: pyvene's TrainableInterventions, pyreft's, and
 * PCARotatedSpace, whose parameters are frozen (it has weights here but nothing trains). */
int tr_type_trainable(cvene_intervention_type t);
/* Distributed types (the rotations, PCA, Autoencoder) act on an example's U units as one vector
 * of U d floats, as pyvene flattens them; the others (SigmoidMask, JumpReLU, pyreft's) per unit. */
int tr_type_flattened(cvene_intervention_type t);
/* What tr_weights_init's r is for a type. */
typedef enum {
    TR_R_NONE = 0,    /* unused (Boundless, the sigmoid masks) */
    TR_R_RANK,        /* low_rank_dimension, required, in [1, D] (LowRank, pyreft's) */
    TR_R_INTERCHANGE, /* the swapped dims, in [0, D] (RotatedSpace, PCARotatedSpace) */
    TR_R_LATENT,      /* the latent width, required, >= 1 (Autoencoder, JumpReLU) */
} tr_r_kind;
tr_r_kind tr_type_r_kind(cvene_intervention_type t);
/* pyvene's temperature of the masked types (Boundless, SigmoidMask*): set by an annealing
 * schedule, as pyvene's set_temperature; 0 for the others. */
int tr_has_temperature(const tr_weights *w);
void tr_set_temperature(tr_weights *w, float t);

/* PCARotatedSpace's basis fitted to X (n, D) host rows of collected activations, as pyvene's
 * users build it with sklearn before constructing the intervention (RAVEL's and
 * CausalAbstraction's featurizers):
 *   pca_mean = X.mean(0); pca_std = X.std(0) (population, ddof 0; entries below 1e-6 set to 1e-6,
 *   as CausalAbstraction does, so a constant dim gives no NaN); Z = (X - mean) / std;
 *   pca_components (k, D) = sklearn's PCA(n_components=k).fit(Z).components_: the eigenvectors of
 *   Z's covariance with the k largest eigenvalues, by decreasing eigenvalue (LAPACK dsyevd on the
 *   D x D covariance, in double; the exact solution sklearn's full / covariance_eigh solvers give).
 * Signs: an eigenvector's sign is arbitrary; each component is flipped so its largest-|.| entry
 * (the first on a tie) is positive: sklearn >= 1.5's convention (svd_flip with
 * u_based_decision=False). sklearn < 1.5's full solver signed by the projections instead (U), so
 * components from an older fit may differ from these by a sign per row, which leaves the
 * intervention's output unchanged (a swapped coordinate flips on both sides).
 * k <= 0: min(n, D) components, as sklearn's default; n >= 2. w must be a PCARotatedSpace of
 * width D; its components are replaced (k x D), its interchange dims kept (clipped to k). */
cvene_status tr_pca_fit(cvene_ctx *ctx, tr_weights *w, const float *X, int64_t n, int k);

/* ---- state dicts: what pyvene's intervention.state_dict() holds, as train_io reads and writes it ---- */

/* One tensor of a state dict: f32 values (a file's F16 / BF16 converted), or int64 ones for
 * pyvene's buffers (embed_dim, interchange_dim, intervention_population). */
typedef struct {
    const char *name;
    int is_i64;
    int ndim;           /* 0, 1 or 2 */
    int64_t shape[2];
    const float *f;     /* !is_i64 */
    const int64_t *l;   /* is_i64 */
    const char *dtype;  /* the file's dtype name (messages) */
} tr_sd_tensor;

#define TR_SD_MAX (TR_MAX_TENSORS + 4)
typedef struct {
    int n;
    tr_sd_tensor t[TR_SD_MAX];
    char names[TR_SD_MAX][80];
    void *own[TR_SD_MAX]; /* buffers the export allocated */
    int n_own;
} tr_state_dict;

/* w's state dict as pyvene's save writes it: its parameters and buffers under their names
 * (embed_dim and interchange_dim as I64, Boundless's intervention_population), or pyreft's
 * override for LoReFT (weight, bias of its learned source and rotate_layer, the materialised
 * (D, r) rotation). PCARotatedSpace's too, though pyvene's save skips it (not trainable there).
 * Free with tr_state_dict_free (the tensors point into w and into sd's own buffers). */
cvene_status tr_state_dict_export(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd);
void tr_state_dict_free(tr_state_dict *sd);
/* Set w from a state dict t[0..n) read from path (messages): pyvene's (embed_dim must be w's D;
 * interchange_dim and intervention_population are pyvene's bookkeeping and skipped), or
 * pyreft's for LoReFT (weight, bias, rotate_layer: loaded as pyreft does, base[:, :r] =
 * rotate_layer with original reset to -I). A PCARotatedSpace takes its components' count from
 * the file; NoReFT / NodiReFT their proj_layer bias. A tensor the type does not have, or a wrong
 * shape, is an error naming both; w may be partly set then (train_io loads into a copy). */
cvene_status tr_state_dict_import(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n);

/* ---- compute ---- */

/* The compute state of one intervention for units of up to n_max rows: device buffers and the
 * parametrization. Built once per training run (or cvene_run), reused every step. */
typedef struct tr_state tr_state;
cvene_status tr_state_new(cvene_ctx *ctx, tr_weights *w, int n_max, tr_state **out);
void tr_state_free(tr_state *s);
/* pyvene's per-call subspaces (forward(..., subspaces=), partition ids already expanded to dims):
 * row i of the next forwards swaps dims[off[i] .. off[i + 1]) of the type's swap space (the
 * rotated dims of RotatedSpace / PCARotatedSpace, LowRank's rank columns, JumpReLU's latents);
 * n_rows must then be every forward's n. off NULL clears them (interchange_dim decides again).
 * Types whose pyvene forward ignores subspaces ignore them. Each row gets its own dims, always
 * (pyvene needs a subspace_partition for LowRank rows that differ, and on 3-D per-unit tensors
 * mixes rows: docs/pyvene_semantics.md §4). Takes effect at the next tr_prepare; a dim out of
 * range is an error there. */
cvene_status tr_set_subspaces(tr_state *s, const int *off, const int *dims, int n_rows);
/* Materialise the parameters for this step (the rotation from its parametrization, the mask)
 * and upload them. Call after every optimizer step, before the forward. */
cvene_status tr_prepare(tr_state *s);
/* out (n, D) = f(xb, xs) on the device; keeps what the backward needs. out may alias xb. */
cvene_status tr_forward(tr_state *s, float *out, const float *xb, const float *xs, int n);
/* Given g (n, D), the gradient for the last forward's out: accumulates the parameters' device
 * gradients and writes dxb (n, D) (NULL: not needed). dxb may alias g. */
cvene_status tr_backward(tr_state *s, float *dxb, const float *g, int n);
/* tr_backward, and dxs (n, D), the gradient for the source units (NULL: not needed; a sourceless
 * type leaves it alone). dxs must not alias g or dxb. */
cvene_status tr_backward_ex(tr_state *s, float *dxb, float *dxs, const float *g, int n);
/* Bring the step's device gradients into the host tensors' grad (through the parametrization:
 * the gradient of `original` from the rotation's), and clear the device ones. */
cvene_status tr_finish_grads(tr_state *s);

#endif
