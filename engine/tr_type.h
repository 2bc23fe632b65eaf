/* The table of trainable intervention types (engine/trainable.h): one entry per type with its
 * tensors, compute and state dict, in its family's file (engine/tr_rotate.c, engine/tr_reft.c,
 * engine/tr_autoencoder.c); engine/trainable.c dispatches through it and holds what the families
 * share (tensors, device buffers, the orthogonal rotation, state-dict defaults). Internal to
 * those files. */
#ifndef CVENE_TR_TYPE_H
#define CVENE_TR_TYPE_H

#include <stddef.h>

#include "engine/trainable.h"
#include "kernels/backend.h"

enum {
    TR_FLAT = 1u << 0,        /* distributed: an example's units are one vector (tr_type_flattened) */
    TR_TEMPERATURE = 1u << 1, /* pyvene's IntervenableModel.set_temperature reaches it */
    TR_SUBSPACES = 1u << 2,   /* its forward reads per-row subspaces (tr_set_subspaces) */
};

typedef struct tr_type {
    cvene_intervention_type id;
    unsigned flags;
    tr_r_kind r_kind;
    /* w's tensors for w->type, D, r (checked against r_kind), initialised from seed */
    cvene_status (*init)(cvene_ctx *ctx, tr_weights *w, uint64_t seed);
    /* the type's own state (s->priv and the rotation) after the common buffers; freed by state_free
     * (which must accept a partly built state) */
    cvene_status (*state_new)(tr_state *s);
    void (*state_free)(tr_state *s);
    cvene_status (*prepare)(tr_state *s);
    /* after the common part has copied xb, xs into s->xb, s->xs and set s->n */
    cvene_status (*forward)(tr_state *s, float *out, int n);
    cvene_status (*backward)(tr_state *s, float *dxb, float *dxs, const float *g, int n);
    cvene_status (*finish_grads)(tr_state *s);
    /* NULL: tr_sd_export_default / tr_sd_import_default */
    cvene_status (*export_sd)(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd);
    cvene_status (*import_sd)(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n);
} tr_type;

/* the entries (one per type, in the family files) */
extern const tr_type tr_type_rotated_space, tr_type_low_rank, tr_type_boundless, tr_type_sigmoid_mask_rotated,
    tr_type_sigmoid_mask;
extern const tr_type tr_type_loreft, tr_type_noreft, tr_type_consreft, tr_type_lobireft, tr_type_direft,
    tr_type_nodireft;
extern const tr_type tr_type_pca, tr_type_autoencoder, tr_type_jumprelu;

/* The entry of t, or NULL when t is not in the table. */
const tr_type *tr_type_get(cvene_intervention_type t);

struct tr_state {
    cvene_ctx *ctx;
    tr_weights *w;
    const tr_type *ty;
    int n_max, D, k;            /* k: W's columns (0 without a rotation) */
    int n;                      /* rows of the last forward */
    /* the orthogonal rotation W (D, k) of the types with a rotate_layer (tr_rot_*) */
    orth_param *orth;
    double *X, *base, *Wd, *dWd, *dXd; /* host double work (D x k, D x D) */
    float *Wh, *dWh;            /* host f32 W and its gradient */
    float *W, *dW;              /* device (D, k) */
    /* per-row subspaces (tr_set_subspaces): row i's dims sub_dims[sub_off[i] .. sub_off[i + 1]) */
    int sub_rows;
    int *sub_off, *sub_dims;
    float *xb, *xs, *rb, *rs, *mix, *tmp, *d, *dd; /* device work: (n_max, D) or (n_max, k) */
    void *priv;                 /* the family's */
};

/* ---- shared helpers (engine/trainable.c) ---- */

/* w's tensors */
tr_tensor *tr_add(tr_weights *w, const char *name, int ndim, int64_t d0, int64_t d1, int trainable);
void tr_remove(tr_weights *w, const char *name);
/* a[0..na) then b[0..nb) (b may be NULL) = U(-bound, bound) from one numpy MT19937 stream seeded
 * with seed (nn.Linear's distribution for its weight and bias) */
void tr_fill_uniform(float *a, int64_t na, float *b, int64_t nb, double bound, uint32_t seed);
/* original (D, k) = -I and base (D, D) a random orthogonal matrix from seed: what torch's
 * orthogonal parametrization holds after wrapping a freshly initialised layer */
int tr_init_rotation(tr_weights *w, int D, int k, uint64_t seed);
cvene_status tr_fail_oom_init(cvene_ctx *ctx, tr_weights *w);

/* device buffers of s's backend */
cvene_status tr_dalloc(tr_state *s, float **p, size_t n);
void tr_dfree(tr_state *s, float *p);
cvene_status tr_zero_dev(tr_state *s, float *p, size_t n);
/* dst (n_max, len) = src (len) repeated on every row, both on the device */
cvene_status tr_repeat_rows(tr_state *s, float *dst, const float *src, size_t len);
/* t->grad += the device gradient dev (t->numel floats), then dev = 0 */
cvene_status tr_grad_from_dev(tr_state *s, tr_tensor *t, float *dev);
/* out (n, N) = x (n, K) @ W (K, N) with W row-major at leading dimension N */
cvene_status tr_mm(cvene_backend *be, float *out, const float *x, const float *W, int n, int K, int N);
/* out (n, K) = y (n, N) @ W^T, W (K, N) row-major */
cvene_status tr_mm_t(cvene_backend *be, float *out, const float *y, const float *W, int n, int K, int N);
/* the subspace rows as a 0/1 mask (n_max, width) on the host; rows past s->sub_rows (and every
 * row without subspaces) get def (width) or, def NULL, zeros. A dim outside [0, width) is an
 * error naming what it indexes. */
cvene_status tr_subspace_mask(tr_state *s, float *mask, int width, const float *def, const char *what);

/* the rotation W (D, k) from the tensors original / base (P_ORIGINAL, P_BASE) */
#define P_ORIGINAL "rotate_layer.parametrizations.weight.original"
#define P_BASE "rotate_layer.parametrizations.weight.0.base"
cvene_status tr_rot_new(tr_state *s, int k);
void tr_rot_free(tr_state *s);
/* materialise W in double, round to f32 (as torch keeps it) and upload */
cvene_status tr_rot_prepare(tr_state *s);
/* dW (device) -> original's grad through the parametrization's backward; dW = 0 */
cvene_status tr_rot_finish(tr_state *s);
/* W (D x k) of w's tensors, rounded to f32 (LoReFT's saved rotate_layer) */
cvene_status tr_rot_materialise(cvene_ctx *ctx, const tr_weights *w, float *W);

/* state dicts: every tensor of w, then embed_dim and interchange_dim (I64) */
cvene_status tr_sd_export_default(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd);
/* append a tensor (pointing at data, which sd does not own unless own is set) */
void tr_sd_put(tr_state_dict *sd, const char *name, int is_i64, int ndim, int64_t d0, int64_t d1, const void *data,
               int own);
/* every tensor by its name; embed_dim checked; interchange_dim, intervention_population skipped */
cvene_status tr_sd_import_default(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n);
/* one file tensor into x->value (dst: elsewhere, x's shape), its shape checked */
cvene_status tr_sd_load_into(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, const tr_weights *w,
                             const tr_tensor *x, float *dst);
/* pyvene's I64 scalar buffer must say want */
cvene_status tr_sd_check_scalar(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, int64_t want);
cvene_status tr_sd_unknown(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, const tr_weights *w);

#endif
