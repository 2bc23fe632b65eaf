/* Loading a model's parameters from a checkpoint: a list of expected tensors
 * (name, shape, destination pointer) is resolved against the safetensors
 * archive and checked. On the CPU backend, F32 tensors are used in place from
 * the memory mapping (no copy); everything else is converted to f32 and placed
 * in one device allocation. */
#ifndef CVENE_WEIGHTS_H
#define CVENE_WEIGHTS_H

#include "models/model.h"

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float **dst;        /* f32 parameters (NULL for a GEMM weight: see gemm_dst) */
    const void **gemm_dst; /* a big GEMM's weight (add_gemm_spec): set to the tensor in the
                         * context's compute_dtype (f32 by default; f16 / bf16 when asked,
                         * for the backend's matmul_lp) */
    int no_prefix;      /* never try the architecture prefix (lm_head, embed_out) */
    const st_tensor *src;
    st_archive *ar;     /* the archive src lives in (set by weights_resolve) */
} weight_spec;

/* Append one spec; fmt may contain one %d (the layer). Returns the new count. */
int add_spec(weight_spec *s, int n, float **dst, int64_t d0, int64_t d1, const char *fmt, int layer);
/* The same for a GEMM weight (attention / MLP projections, output head): stored in the
 * context's compute_dtype (cvene_ctx_params.compute_dtype) and multiplied with matmul_lp. */
int add_gemm_spec(weight_spec *s, int n, const void **dst, int64_t d0, int64_t d1, const char *fmt, int layer);
/* Find every tensor (prefix + name first, then name), check dtype and shape. */
cvene_status weights_resolve(cvene_ctx *ctx, const char *dir, st_archive *ar, weight_spec *s,
                             int n, const char *prefix);
/* Set each *dst: on the CPU backend an F32 tensor (4-byte aligned in the file) is
 * used in place from the mapping (read-only: PROT_READ, so nothing may write to
 * parameters; code that updates weights must copy them first); every other
 * tensor is converted to f32 into m->param_mem (one allocation). When any tensor
 * is used in place, the archive moves into m->map (the model keeps the mapping
 * until cvene_model_free) and the caller's st_archive is left empty, so closing
 * it afterwards is harmless; the specs' src pointers stay valid either way.
 * GEMM specs (gemm_dst) follow the context's compute_dtype: F32 as above; F16 / BF16
 * rounded (nearest even) into 16-bit copies in param_mem. Asking for F16 / BF16 with no
 * GEMM spec at all (an architecture without a reduced-precision path) fails with
 * CVENE_ERR_UNSUPPORTED rather than silently computing in f32. */
cvene_status weights_upload(cvene_model *m, weight_spec *s, int n);
/* Parameters the specs hold. */
int64_t weights_count(const weight_spec *s, int n);
/* *row = n zeros on the context's backend (GPT-NeoX and the GRU use it as the embedding op's
 * position table when there are no learned positions). */
cvene_status weights_zero_row(cvene_ctx *ctx, float **row, int n);

#endif
