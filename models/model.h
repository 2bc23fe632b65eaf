/* Model internals shared by engine/ and models/ (not public). */
#ifndef CVENE_MODEL_H
#define CVENE_MODEL_H

#include "engine/ctx.h"
#include <cjson/cJSON.h>
#include "models/safetensors.h"

typedef struct {
    int vocab_size, n_positions, n_embd, n_layer, n_head, n_inner;
    float ln_eps;
    cvene_act act;
    int scale_attn_weights, scale_by_inverse_layer_idx, tied;
} gpt2_config;

typedef struct {
    float *ln_1_w, *ln_1_b;     // (C)
    float *c_attn_w, *c_attn_b; // (C, 3C), (3C)   Conv1D [in, out]
    float *attn_proj_w, *attn_proj_b; // (C, C), (C)
    float *ln_2_w, *ln_2_b;     // (C)
    float *c_fc_w, *c_fc_b;     // (C, I), (I)
    float *mlp_proj_w, *mlp_proj_b; // (I, C), (C)
} gpt2_layer;

typedef struct {
    float *wte;  // (V, C)
    float *wpe;  // (P, C)
    gpt2_layer *layers;
    float *ln_f_w, *ln_f_b; // (C)
    float *lm_head;         // (V, C): wte when tied
} gpt2_params;

struct cvene_model {
    cvene_ctx *ctx;
    cvene_model_info info;
    gpt2_config cfg;
    gpt2_params p;
    void *param_mem;   /* one allocation on the backend device */
    void *act_mem;     /* the activation arena, grown to the largest (B, T) seen */
    size_t act_cap;
};

/* Fill m (zeroed, m->ctx set) from a GPT-2 directory. On failure m holds nothing to free. */
cvene_status gpt2_load(cvene_model *m, const char *dir, const cJSON *cfg);
cvene_status gpt2_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
void gpt2_free(cvene_model *m);

#endif
