/* GPT-NeoX's internals shared by its forward (models/gpt_neox.c) and its training pass
 * (models/gpt_neox_train.c); not public. */
#ifndef CVENE_GPT_NEOX_H
#define CVENE_GPT_NEOX_H

#include "models/model.h"

typedef struct {
    int vocab_size, n_positions, n_embd, n_layer, n_head, n_inner;
    int rot_dims;     /* int(head_dim * rotary_pct), even */
    float rot_base;   /* rotary_emb_base */
    float ln_eps;
    cvene_act act;
    int parallel, tied, attn_bias;
} neox_config;

typedef struct {
    float *ln_1_w, *ln_1_b; // (C) input_layernorm
    /* the GEMM weights (const void *) are in neox_params.gemm_dtype: f32, or f16 / bf16
     * when the context asked for reduced precision (cvene_ctx_params.compute_dtype) */
    const void *qkv_w;      // (3C, C) nn.Linear, per-head [q, k, v] rows
    float *qkv_b;           // (3C); may be NULL
    const void *dense_w;    // (C, C)
    float *dense_b;         // (C); may be NULL
    float *ln_2_w, *ln_2_b; // (C) post_attention_layernorm
    const void *fc_w;       // (I, C) dense_h_to_4h
    float *fc_b;            // (I)
    const void *proj_w;     // (C, I) dense_4h_to_h
    float *proj_b;          // (C)
} neox_layer;

typedef struct {
    float *embed_in;  // (V, C)
    neox_layer *layers;
    float *ln_f_w, *ln_f_b; // (C) final_layer_norm
    const void *embed_out;  // (V, C): embed_in when tied (a 16-bit copy of it in reduced precision)
    cvene_dtype gemm_dtype; // of the GEMM weights
    float *zero_row;        // (C) zeros on the device: the embedding op's position table
} neox_params;

typedef struct {
    neox_config cfg;
    neox_params p;
    cvene_backend *be; /* owner of zero_row */
} neox_model;

/* The sites of one forward: which ones are on and where a per-head site's permuted copy goes. */
typedef struct {
    cvene_model *m;
    const cvene_run_opts *o;
    int B, T;
    void *heads;  // scratch (B, H, T, D)
    cvene_dtype adt;
    float *stage; // 16-bit adt: the f32 copy a site sees
} neox_site_run;
int neox_site_on(const neox_site_run *r, cvene_component c, int l);
/* o->site_fn on data (ndim, shape) when the site is on (model_site). */
cvene_status neox_site_call(const neox_site_run *r, cvene_component c, int l, void *data, int ndim, int64_t d0,
                            int64_t d1, int64_t d2, int64_t d3);
/* A (B, T, C) site c and, if on, its per-head (B, H, T, D) form head_c (CVENE_N_COMPONENTS: none). */
cvene_status neox_site_btc(const neox_site_run *r, cvene_component c, cvene_component head_c, int l, void *data);

/* The training pass (models/gpt_neox_train.c; models/model.h). */
cvene_status neox_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o);
cvene_status neox_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                 const model_grad_sites *g);

#endif
