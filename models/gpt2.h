/* GPT-2's internals shared by its forward (models/gpt2.c) and its training pass
 * (models/gpt2_train.c); not public. */
#ifndef CVENE_GPT2_H
#define CVENE_GPT2_H

#include "models/model.h"

typedef struct {
    int vocab_size, n_positions, n_embd, n_layer, n_head, n_inner;
    float ln_eps;
    cvene_act act;
    int scale_attn_weights, scale_by_inverse_layer_idx, tied;
} gpt2_config;

/* The GEMM weights (const void *) are in the model's gemm_dtype: f32, or f16 / bf16 when
 * the context asked for reduced precision (cvene_ctx_params.compute_dtype); everything
 * else is f32. */
typedef struct {
    float *ln_1_w, *ln_1_b;           // (C)
    const void *c_attn_w;             // (C, 3C)   Conv1D [in, out]
    float *c_attn_b;                  // (3C)
    const void *attn_proj_w;          // (C, C)
    float *attn_proj_b;               // (C)
    float *ln_2_w, *ln_2_b;           // (C)
    const void *c_fc_w;               // (C, I)
    float *c_fc_b;                    // (I)
    const void *mlp_proj_w;           // (I, C)
    float *mlp_proj_b;                // (C)
} gpt2_layer;

typedef struct {
    float *wte;  // (V, C)
    float *wpe;  // (P, C)
    gpt2_layer *layers;
    float *ln_f_w, *ln_f_b; // (C)
    const void *lm_head;    // (V, C): wte when tied (a 16-bit copy of it in reduced precision)
    cvene_dtype gemm_dtype; // of the GEMM weights
} gpt2_params;

typedef struct {
    gpt2_config cfg;
    gpt2_params p;
} gpt2_model;

/* Element off of a GEMM weight w held in dtype dt (column slices of c_attn). */
const void *gpt2_wat(const void *w, cvene_dtype dt, size_t off);

/* The sites of one forward: which ones are on and where a per-head site's permuted copy goes. */
typedef struct {
    cvene_model *m;
    const cvene_run_opts *o;
    int B, T;
    void *heads;  // scratch (B, H, T, D)
    cvene_dtype adt;
    float *stage; // 16-bit adt: the f32 copy a site sees
} gpt2_site_run;
int gpt2_site_on(const gpt2_site_run *r, cvene_component c, int l);
/* o->site_fn on data (ndim, shape) when the site is on (model_site). */
cvene_status gpt2_site_call(const gpt2_site_run *r, cvene_component c, int l, void *data, int ndim, int64_t d0,
                            int64_t d1, int64_t d2, int64_t d3);
/* A (B, T, C) site c and, if on, its per-head (B, H, T, D) form head_c (CVENE_N_COMPONENTS: none). */
cvene_status gpt2_site_btc(const gpt2_site_run *r, cvene_component c, cvene_component head_c, int l, void *data);

/* The training pass (models/gpt2_train.c; models/model.h). */
cvene_status gpt2_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o);
cvene_status gpt2_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                 const model_grad_sites *g);

#endif
