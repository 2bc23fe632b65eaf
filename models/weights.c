#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dtype.h"
#include "kernels/tensor.h"
#include "models/weights.h"

int add_spec(weight_spec *s, int n, float **dst, int64_t d0, int64_t d1, const char *fmt, int layer) {
    memset(&s[n], 0, sizeof s[n]);
    snprintf(s[n].name, sizeof s[n].name, fmt, layer);
    s[n].ndim = d1 ? 2 : 1;
    s[n].shape[0] = d0;
    s[n].shape[1] = d1;
    s[n].dst = dst;
    return n + 1;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

int add_gemm_spec(weight_spec *s, int n, const void **dst, int64_t d0, int64_t d1, const char *fmt, int layer) {
    n = add_spec(s, n, NULL, d0, d1, fmt, layer);
    s[n - 1].gemm_dst = dst;
    return n;
}

cvene_status weights_resolve(cvene_ctx *ctx, const char *dir, st_archive *ar, weight_spec *s,
                             int n, const char *prefix) {
    char full[160], want[64], got[64];
    for (int i = 0; i < n; i++) {
        snprintf(full, sizeof full, "%s%s", prefix, s[i].name);
        const st_tensor *t = s[i].no_prefix ? NULL : st_archive_find(ar, full);
        if (!t) t = st_archive_find(ar, s[i].name);
        if (!t) {
            if (s[i].no_prefix)
                return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                  "%s: the output head is untied (tie_word_embeddings false) but the "
                                  "checkpoint has no tensor '%s'", dir, s[i].name);
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: checkpoint is missing tensor '%s' (also tried '%s')",
                              dir, full, s[i].name);
        }
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                              dir, t->name, st_dtype_name(t->dtype));
        int ok = t->ndim == s[i].ndim;
        for (int d = 0; ok && d < s[i].ndim; d++) ok = t->shape[d] == s[i].shape[d];
        if (!ok) {
            shape_str(want, sizeof want, s[i].ndim, s[i].shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has shape %s but config.json implies %s",
                              dir, t->name, got, want);
        }
        s[i].src = t;
        s[i].ar = ar;
    }
    return CVENE_OK;
}

int64_t weights_count(const weight_spec *s, int n) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += (int64_t)(s[i].src->nbytes / st_dtype_size(s[i].src->dtype));
    return total;
}

/* Used straight from the mapping: the CPU computes in f32, so an aligned F32 tensor
 * needs no copy (a 6.9B checkpoint is not duplicated in memory). */
static int in_place(const cvene_backend *be, const st_tensor *t) {
    return be->device == CVENE_DEVICE_CPU && t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
}

/* Point spec i's destination at p (f32 data, or the compute_dtype copy of a GEMM weight). */
static void set_dst(weight_spec *s, void *p) {
    if (s->dst) *s->dst = (float *)p;
    if (s->gemm_dst) *s->gemm_dst = p;
}

cvene_status weights_upload(cvene_model *m, weight_spec *s, int n) {
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_dtype gdt = ctx->params.compute_dtype;
    if (gdt != CVENE_F32 && !cvene_dtype_is_half(gdt))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "compute_dtype %s: expected f32, f16 or bf16",
                          cvene_dtype_name(gdt));
    const int half = cvene_dtype_is_half(gdt);
    /* 16-bit activations (cvene_ctx_params.activation_dtype): the f32 parameters hold values
     * rounded to that dtype, as in a torch model after .to(dtype), so never the mapping */
    const cvene_dtype adt = ctx->params.activation_dtype;
    const int round_f32 = cvene_dtype_is_half(adt);
    if (half) {
        int any = 0;
        for (int i = 0; i < n; i++) any |= s[i].gemm_dst != NULL;
        if (!any)
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "compute_dtype %s: this architecture has no reduced-precision path (use f32)",
                              cvene_dtype_name(gdt));
    }
    /* bytes per tensor, each rounded up to 256 so every tensor stays 256-byte aligned */
    size_t total = 0, largest = 0, largest_half = 0;
    int n_mapped = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = s[i].src->nbytes / st_dtype_size(s[i].src->dtype);
        const int h = half && s[i].gemm_dst;
        if (!h && !round_f32 && in_place(be, s[i].src)) {
            n_mapped++;
            continue;
        }
        total += (numel * (h ? 2 : 4) + 255) & ~(size_t)255;
        if (numel > largest) largest = numel;
        if (h && numel > largest_half) largest_half = numel;
    }
    if (total && be->ops->alloc(be, &m->param_mem, total) != CVENE_OK)
        return cvene_fail(ctx, CVENE_ERR_OOM, "cannot allocate %zu bytes for parameters on %s", total,
                          be->ops->name);
    /* f32 staging: every tensor bound for a device, and every 16-bit one (converted from
     * f32 there); 16-bit staging: those bound for a device */
    const int on_dev = be->device != CVENE_DEVICE_CPU;
    float *staging = NULL;
    uint16_t *staging16 = NULL;
    if (total && (on_dev || largest_half) && !(staging = malloc(largest * sizeof(float))))
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory staging parameters");
    if (on_dev && largest_half && !(staging16 = malloc(largest_half * sizeof(uint16_t)))) {
        free(staging);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory staging parameters");
    }
    char *cur = m->param_mem;
    cvene_status st = CVENE_OK;
    for (int i = 0; i < n && st == CVENE_OK; i++) {
        size_t numel = s[i].src->nbytes / st_dtype_size(s[i].src->dtype);
        const int h = half && s[i].gemm_dst;
        if (!h && !round_f32 && in_place(be, s[i].src)) {
            set_dst(&s[i], (void *)(uintptr_t)s[i].src->data); /* read-only mapping: never written */
            continue;
        }
        if (h) { /* checkpoint dtype -> f32 (exact) -> compute dtype (one rounding) */
            uint16_t *hd = on_dev ? staging16 : (uint16_t *)(void *)cur;
            st = st_tensor_to_f32(ctx, s[i].src, staging);
            if (st == CVENE_OK) cvene_f32_to_half_array(hd, staging, numel, gdt);
            if (st == CVENE_OK && on_dev) st = be->ops->to_device(be, cur, hd, numel * sizeof(uint16_t));
        } else {
            float *f = on_dev ? staging : (float *)(void *)cur;
            st = st_tensor_to_f32(ctx, s[i].src, f);
            if (st == CVENE_OK && round_f32)
                for (size_t j = 0; j < numel; j++) f[j] = cvene_round_to_half(f[j], adt);
            if (st == CVENE_OK && on_dev) st = be->ops->to_device(be, cur, staging, numel * sizeof(float));
        }
        set_dst(&s[i], cur);
        cur += (numel * (h ? 2 : 4) + 255) & ~(size_t)255;
    }
    /* a pageable host buffer may be reused or freed once to_device returns (the CUDA
     * runtime has staged it: kernels/cuda/backend_cuda.cu, cu_to_device) */
    free(staging);
    free(staging16);
    if (st == CVENE_OK && n_mapped) { /* keep the mapping for the model's lifetime */
        st_archive *ar = s[0].ar;
        for (int i = 1; i < n; i++)
            if (s[i].ar != ar)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "weights_upload: specs from two archives");
        m->map = *ar;
        memset(ar, 0, sizeof *ar);
    }
    return st;
}

cvene_status model_reserve_activations(cvene_model *m, size_t bytes, int B, int T) {
    if (bytes <= m->act_cap) return CVENE_OK;
    cvene_backend *be = m->ctx->be;
    if (m->act_mem) be->ops->free(be, m->act_mem);
    m->act_mem = NULL;
    m->act_cap = 0;
    if (be->ops->alloc(be, &m->act_mem, bytes) != CVENE_OK)
        return cvene_fail(m->ctx, CVENE_ERR_OOM, "cannot allocate %zu bytes of activations for B=%d T=%d", bytes, B, T);
    m->act_cap = bytes;
    return CVENE_OK;
}

cvene_status model_reserve_training(cvene_model *m, size_t bytes) {
    if (bytes <= m->train_cap) return CVENE_OK;
    cvene_backend *be = m->ctx->be;
    if (m->train_mem) be->ops->free(be, m->train_mem);
    m->train_mem = NULL;
    m->train_cap = 0;
    if (be->ops->alloc(be, &m->train_mem, bytes) != CVENE_OK)
        return cvene_fail(m->ctx, CVENE_ERR_OOM, "cannot allocate %zu bytes for a training pass's activations and "
                          "gradients (a smaller batch, or a lowest trainable site nearer the output, needs less)",
                          bytes);
    m->train_cap = bytes;
    return CVENE_OK;
}

cvene_status weights_zero_row(cvene_ctx *ctx, float **row, int n) {
    cvene_backend *be = ctx->be;
    *row = NULL;
    float *zeros = calloc((size_t)n, sizeof(float));
    if (!zeros) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = CVENE_OK;
    if (be->ops->alloc(be, (void **)row, sizeof(float) * (size_t)n) != CVENE_OK) {
        *row = NULL;
        st = cvene_fail(ctx, CVENE_ERR_OOM, "cannot allocate %d floats on %s", n, be->ops->name);
    } else {
        st = be->ops->to_device(be, *row, zeros, sizeof(float) * (size_t)n);
    }
    free(zeros);
    return st; /* on failure *row may still be set: the model's free releases it */
}
