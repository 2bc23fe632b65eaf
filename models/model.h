/* Model internals shared by engine/ and models/ (not public). */
#ifndef CVENE_MODEL_H
#define CVENE_MODEL_H

#include "engine/ctx.h"
#include <cjson/cJSON.h>
#include "models/safetensors.h"

/* A forward resumed part-way (sweeps): start at `layer` with the residual
 * stream x of positions [past, T), attending to cached keys/values of positions
 * [0, past) shared by every row. */
typedef struct {
    int layer;
    int past;
    const float *x;              /* (B, T - past, C) residual entering `layer` (device) */
    float *const *k_cache;       /* per layer: (past, C) keys (device), or (T, C) with a longer prefix */
    float *const *v_cache;       /* per layer: values, like k_cache */
    int last_logits_only;        /* o->logits gets (B, V): position T - 1 only */
} cvene_resume;

typedef struct {
    const char *name;
    cvene_status (*forward)(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
    void (*free)(cvene_model *m); /* frees m->arch only */
    /* optional (NULL: sweeps fall back to full forwards) */
    cvene_status (*forward_from)(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o);
    /* optional: the (V, C) token-embedding matrix on the backend device */
    const float *(*token_embeddings)(cvene_model *m, int *V, int *C);
} cvene_model_vtable;

struct cvene_model {
    cvene_ctx *ctx;
    cvene_model_info info;
    const cvene_model_vtable *vt;
    void *arch;        /* the architecture's config and parameter pointers */
    void *param_mem;   /* one allocation on the backend device */
    void *act_mem;     /* the activation arena, grown to the largest (B, T) seen */
    size_t act_cap;
};

/* Loaders fill m (zeroed, m->ctx set): vt, arch, param_mem, info. On failure
 * they free m->arch; the caller frees param_mem. */
cvene_status gpt2_load(cvene_model *m, const char *dir, const cJSON *cfg);

/* Grow the activation arena to at least bytes (used by every forward). */
cvene_status model_reserve_activations(cvene_model *m, size_t bytes, int B, int T);

#endif
