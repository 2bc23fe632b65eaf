/* Loading a model's parameters from a checkpoint: a list of expected tensors
 * (name, shape, destination pointer) is resolved against the safetensors
 * archive, checked, converted to f32 and placed in one device allocation. */
#ifndef CVENE_WEIGHTS_H
#define CVENE_WEIGHTS_H

#include "models/model.h"

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float **dst;
    int no_prefix;      /* never try the architecture prefix (lm_head, embed_out) */
    const st_tensor *src;
} weight_spec;

/* Append one spec; fmt may contain one %d (the layer). Returns the new count. */
int add_spec(weight_spec *s, int n, float **dst, int64_t d0, int64_t d1, const char *fmt, int layer);
/* Find every tensor (prefix + name first, then name), check dtype and shape. */
cvene_status weights_resolve(cvene_ctx *ctx, const char *dir, const st_archive *ar, weight_spec *s,
                             int n, const char *prefix);
/* Convert to f32 into m->param_mem (one allocation) and set each *dst. */
cvene_status weights_upload(cvene_model *m, weight_spec *s, int n);
/* Parameters the specs hold. */
int64_t weights_count(const weight_spec *s, int n);

#endif
