/* pyvene's GRU: internals shared by its forward (models/gru.c) and its training pass
 * (models/gru_train.c); not public. */
#ifndef CVENE_GRU_H
#define CVENE_GRU_H

#include "models/model.h"

enum { GRU_HEAD_LM = 0, GRU_HEAD_CLS = 1 };

typedef struct {
    int vocab_size, n_positions, h_dim, n_layer, n_labels;
    int bias; /* include_bias */
    int head; /* GRU_HEAD_LM or GRU_HEAD_CLS */
    int n_out; /* logits width: vocab_size or n_labels */
} gru_config;

/* The GEMM weights (const void *: x2h, h2h, the head) are in the model's gemm_dtype: f32, or
 * f16 / bf16 when the context asked for reduced precision (cvene_ctx_params.compute_dtype),
 * multiplied through matmul_lp with f32 accumulation; embeddings, biases and the gate
 * arithmetic stay f32. */
typedef struct {
    const void *x2h_w; // (3h, h)
    float *x2h_b;      // (3h); NULL without include_bias
    const void *h2h_w; // (3h, h)
    float *h2h_b;      // (3h)
} gru_layer;

typedef struct {
    float *wte;       // (V, h)
    float *wpe;       // (P, h)
    const void *head; // (n_out, h) lm_head or score, no bias
    gru_layer *layers;
    float *zero_row;  // (h) zeros on the device: the position table when no position_ids are given
    cvene_dtype gemm_dtype; // of the GEMM weights
} gru_params;

typedef struct {
    gru_config cfg;
    gru_params p;
    cvene_backend *be; /* owner of zero_row */
} gru_model;

/* The sites of one forward (per timestep: each call is one step of (component, layer)). */
typedef struct {
    cvene_model *m;
    const cvene_run_opts *o;
    int B;
} gru_site_run;
int gru_site_on(const gru_site_run *r, cvene_component c, int l);
/* o->site_fn on one timestep of (c, l): a (B, W) view of data, when the site is on. A site
 * returning CVENE_SITE_STOP gives CVENE_SITE_STOPPED; another non-zero return fails naming it. */
cvene_status gru_site_step(const gru_site_run *r, cvene_component c, int l, float *data, int W);
/* out3 (B, 3h) = x (B, h) @ w^T + bias for a stacked (3h, h) gate matrix, its site `whole`, then
 * grouped (3, B, h) <- out3 regrouped gate-major with the per-gate sites first, first + 1, first + 2. */
cvene_status gru_gate_proj(const gru_site_run *r, float *out3, float *grouped, const float *x, const void *w,
                           const float *bias, int l, cvene_component whole, cvene_component first);

/* The training pass (models/gru_train.c; models/model.h). */
cvene_status gru_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o);
cvene_status gru_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                const model_grad_sites *g);

#endif
